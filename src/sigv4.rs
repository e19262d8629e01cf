//! AWS Signature Version 4: re-signing the agent's request with the task's
//! STS credentials (the `inject` phase), and signing credgate's own calls to
//! STS (the `aws` source). A foundation both use, so neither depends on the
//! other.
//!
//! ```yaml
//! inject: { sigv4: { service: s3, region: eu-west-1 } }   # both default from the host
//! ```
//!
//! Implemented on aws-lc-rs HMAC-SHA256 (the process's one crypto provider)
//! rather than the `aws-sigv4` crate, which brings the smithy runtime crates
//! and a second SHA-2/HMAC implementation for what is a few dozen lines.
//!
//! What is signed: the method, the canonical URI and query, and the headers
//! `host`, `content-type`, `content-md5` and every `x-amz-*` header (the
//! agent's own `x-amz-*` headers were stripped by the sanitizer, so only
//! credgate's are left: its signing headers, and the payload's checksum
//! headers the sanitizer checked, see [`crate::sanitize::aws_payload`]).
//! The payload hash is always the SHA-256 of the body, which is buffered
//! already and decoded from any aws-chunked framing; S3 also gets it as
//! `x-amz-content-sha256`.

use std::time::SystemTime;

use aws_lc_rs::hmac;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// `inject: { sigv4: { ... } }` as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigV4 {
    /// The signing name of the service (`s3`, `execute-api`, ...); from the host when absent.
    #[serde(default)]
    pub service: Option<String>,
    /// The region (`eu-west-1`); from the host when absent, `us-east-1` for global endpoints.
    #[serde(default)]
    pub region: Option<String>,
}

/// The validated SigV4 settings of an injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4 {
    /// The fixed service, or `None` to derive it from the host.
    pub service: Option<String>,
    /// The fixed region, or `None` to derive it from the host.
    pub region: Option<String>,
}

impl SigV4 {
    /// Checks that the names are plain (`[a-z0-9-]`). Errors are `(field, message)`.
    pub fn compile(raw: &RawSigV4) -> Result<SigV4, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        for (field, value) in [("service", &raw.service), ("region", &raw.region)] {
            if let Some(value) = value {
                if !is_plain_name(value) {
                    errors.push((
                        field,
                        format!("{value:?} must be a non-empty name of lowercase letters, digits and '-'"),
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(SigV4 {
                service: raw.service.clone(),
                region: raw.region.clone(),
            })
        } else {
            Err(errors)
        }
    }

    /// The service and region to sign for `host`: the configured ones, else
    /// what an AWS endpoint name says (`bucket.s3.eu-west-1.amazonaws.com`
    /// → `s3`, `eu-west-1`). `None` when neither says.
    pub fn scope_for(&self, host: &str) -> Option<(String, String)> {
        let derived = scope_from_host(host);
        let service = self
            .service
            .clone()
            .or_else(|| derived.as_ref().map(|d| d.0.clone()))?;
        let region = self
            .region
            .clone()
            .or_else(|| derived.map(|d| d.1))
            .unwrap_or_else(|| "us-east-1".to_string());
        Some((service, region))
    }
}

fn is_plain_name(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `(service, region)` from an `*.amazonaws.com` host name.
fn scope_from_host(host: &str) -> Option<(String, String)> {
    let host = host.to_ascii_lowercase();
    let stem = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = stem.split('.').collect();
    let is_region =
        |l: &str| l.split('-').count() >= 3 && l.ends_with(|c: char| c.is_ascii_digit());
    // S3 virtual-hosted style names put the bucket first: find the `s3` label.
    if let Some(i) = labels
        .iter()
        .position(|l| *l == "s3" || l.starts_with("s3-"))
    {
        let region = labels[i + 1..]
            .iter()
            .chain(std::iter::once(&labels[i].trim_start_matches("s3-")))
            .find(|l| is_region(l))
            .map(|l| l.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        return Some(("s3".to_string(), region));
    }
    let service = labels.first()?.to_string();
    let region = labels
        .iter()
        .skip(1)
        .find(|l| is_region(l))
        .map(|l| l.to_string())
        .unwrap_or_else(|| "us-east-1".to_string());
    is_plain_name(&service).then_some((service, region))
}

/// The AWS keys a request is signed with.
pub struct SigningKeys<'a> {
    /// The access key id.
    pub access_key_id: &'a str,
    /// The secret access key.
    pub secret_access_key: &'a Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<&'a Secret>,
}

/// Why a request could not be signed. Never contains a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// No service/region configured and the host is not an AWS endpoint name.
    #[error(
        "cannot tell the SigV4 service and region of {0}; set inject.sigv4.service and region"
    )]
    UnknownScope(String),
    /// A key or token cannot be carried in a header.
    #[error("the {0} is not a valid header value")]
    InvalidValue(&'static str),
    /// The request has no host.
    #[error("the request has no Host")]
    NoHost,
    /// An unhashed payload for a service that needs the payload's hash.
    #[error("service {0} needs the payload's SHA-256; only S3 takes a body signed before its end")]
    NeedsPayloadHash(String),
}

/// Signs `parts` (whose `Host` header and URI are final) with `keys` for
/// `service`/`region` at `now`: removes any earlier signature, sets
/// `X-Amz-Date`, `X-Amz-Security-Token`, `X-Amz-Content-Sha256` (S3) and
/// `Authorization`. Header values carrying secrets are marked sensitive.
pub fn sign(
    parts: &mut http::request::Parts,
    body: &[u8],
    keys: &SigningKeys<'_>,
    service: &str,
    region: &str,
    now: SystemTime,
) -> Result<(), SignError> {
    let payload_hash = crate::hex::lower(&crate::secret::sha256(body));
    sign_with_payload_hash(parts, &payload_hash, keys, service, region, now)
}

/// [`sign`] for a body that is not hashed: `payload_hash` is what S3 is
/// told instead (`UNSIGNED-PAYLOAD`, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`),
/// for a body streamed before its end is known.
pub fn sign_with_payload_hash(
    parts: &mut http::request::Parts,
    payload_hash: &str,
    keys: &SigningKeys<'_>,
    service: &str,
    region: &str,
    now: SystemTime,
) -> Result<(), SignError> {
    for name in [
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
    ] {
        parts.headers.remove(name);
    }
    if !parts.headers.contains_key(http::header::HOST) {
        let authority = parts
            .uri
            .authority()
            .ok_or(SignError::NoHost)?
            .as_str()
            .to_string();
        let value = HeaderValue::from_str(&authority).map_err(|_| SignError::NoHost)?;
        parts.headers.insert(http::header::HOST, value);
    }
    let date = amz_date(now);
    parts.headers.insert(
        HeaderName::from_static("x-amz-date"),
        HeaderValue::from_str(&date).expect("digits and letters"),
    );
    if service == "s3" {
        parts.headers.insert(
            HeaderName::from_static("x-amz-content-sha256"),
            HeaderValue::from_str(payload_hash)
                .map_err(|_| SignError::InvalidValue("payload hash"))?,
        );
    }
    if let Some(token) = keys.session_token {
        let mut value = HeaderValue::from_bytes(token.expose())
            .map_err(|_| SignError::InvalidValue("session token"))?;
        value.set_sensitive(true);
        parts
            .headers
            .insert(HeaderName::from_static("x-amz-security-token"), value);
    }
    let mut signed: Vec<(String, String)> = Vec::new();
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if name == "host"
            || name == "content-type"
            || name == "content-md5"
            || name.starts_with("x-amz-")
        {
            let value = String::from_utf8_lossy(value.as_bytes());
            match signed.iter_mut().find(|(n, _)| n == name) {
                Some((_, existing)) => {
                    existing.push(',');
                    existing.push_str(&canonical_header_value(&value));
                }
                None => signed.push((name.to_string(), canonical_header_value(&value))),
            }
        }
    }
    signed.sort();
    let request = CanonicalRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &signed,
        payload_hash,
        s3: service == "s3",
    };
    let authorization = Zeroizing::new(authorization(
        &request,
        keys.access_key_id,
        keys.secret_access_key,
        &date,
        region,
        service,
    ));
    let mut value = HeaderValue::from_str(&authorization)
        .map_err(|_| SignError::InvalidValue("access key id"))?;
    value.set_sensitive(true);
    parts.headers.insert(AUTHORIZATION, value);
    Ok(())
}

/// The parts of a request that go into the signature.
struct CanonicalRequest<'a> {
    method: &'a str,
    /// The path as sent on the wire (percent-encoded).
    path: &'a str,
    /// The query as sent on the wire, without `?`.
    query: &'a str,
    /// Lowercase names with canonical values, sorted by name.
    headers: &'a [(String, String)],
    payload_hash: &'a str,
    /// S3 encodes the path once and does not normalise it; others twice.
    s3: bool,
}

impl CanonicalRequest<'_> {
    fn text(&self) -> String {
        let headers: String = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}:{v}\n"))
            .collect();
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method,
            canonical_uri(self.path, self.s3),
            canonical_query(self.query),
            headers,
            self.signed_headers(),
            self.payload_hash
        )
    }

    fn signed_headers(&self) -> String {
        self.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
fn authorization(
    request: &CanonicalRequest<'_>,
    access_key_id: &str,
    secret: &Secret,
    date: &str,
    region: &str,
    service: &str,
) -> String {
    let day = &date[..8];
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        crate::hex::lower(&crate::secret::sha256(request.text().as_bytes()))
    );
    let mut key_material = Zeroizing::new(b"AWS4".to_vec());
    key_material.extend_from_slice(secret.expose());
    let mut key = Zeroizing::new(hmac_sha256(&key_material, day.as_bytes()));
    for part in [region, service, "aws4_request"] {
        key = Zeroizing::new(hmac_sha256(&key[..], part.as_bytes()));
    }
    let signature = crate::hex::lower(&hmac_sha256(&key[..], string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={signature}",
        request.signed_headers()
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

/// `20150830T123600Z`.
pub fn amz_date(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// Everything but the unreserved characters `A-Za-z0-9-._~` is encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn uri_encode(raw: &[u8]) -> String {
    percent_encoding::percent_encode(raw, UNRESERVED).to_string()
}

/// Each segment decoded, then encoded the AWS way; other services encode
/// that once more (their canonical URI is double-encoded) and drop `.`
/// segments and empty segments inside the path.
fn canonical_uri(path: &str, s3: bool) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let segments = path.split('/').map(|segment| {
        let decoded: Vec<u8> = percent_decode_str(segment).collect();
        let once = uri_encode(&decoded);
        if s3 {
            once
        } else {
            utf8_percent_encode(&once, UNRESERVED).to_string()
        }
    });
    if s3 {
        return segments.collect::<Vec<_>>().join("/");
    }
    let mut out: Vec<String> = Vec::new();
    let segments: Vec<String> = segments.collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.into_iter().enumerate() {
        match segment.as_str() {
            "" if i != 0 && i != last => {}
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
            }
            _ => out.push(segment),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Parameters decoded, encoded the AWS way, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let enc = |s: &str| uri_encode(&percent_decode_str(s).collect::<Vec<u8>>());
            (enc(name), enc(value))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trimmed, inner runs of spaces collapsed to one.
fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2015-08-30T12:36:00Z, the date of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn date_format() {
        assert_eq!(amz_date(suite_time()), "20150830T123600Z");
    }

    /// `get-vanilla` and `get-vanilla-query-order-key-case` from AWS's SigV4 test suite.
    #[test]
    fn aws_test_suite_vectors() {
        let secret = Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let headers = vec![
            ("host".to_string(), "example.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let empty = crate::hex::lower(&crate::secret::sha256(b""));
        let auth = |path: &str, query: &str| {
            let request = CanonicalRequest {
                method: "GET",
                path,
                query,
                headers: &headers,
                payload_hash: &empty,
                s3: false,
            };
            authorization(
                &request,
                "AKIDEXAMPLE",
                &secret,
                "20150830T123600Z",
                "us-east-1",
                "service",
            )
        };
        assert_eq!(
            auth("/", ""),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(
            auth("/", "Param2=value2&Param1=value1"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_uri("/a b/%7Ec", true), "/a%20b/~c");
        assert_eq!(canonical_uri("/bucket/x%2Fy", true), "/bucket/x%2Fy");
        assert_eq!(canonical_uri("/a%20b", false), "/a%2520b");
        assert_eq!(canonical_uri("/a/./b/../c", false), "/a/c");
        assert_eq!(canonical_uri("", true), "/");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("k=a%20b&x=~*"), "k=a%20b&x=~%2A");
        assert_eq!(canonical_header_value("  a   b  c "), "a b c");
    }

    #[test]
    fn scope_from_aws_host_names() {
        let auto = SigV4 {
            service: None,
            region: None,
        };
        let scope = |h: &str| auto.scope_for(h);
        assert_eq!(
            scope("reports.s3.eu-west-1.amazonaws.com"),
            Some(("s3".into(), "eu-west-1".into()))
        );
        assert_eq!(
            scope("s3.amazonaws.com"),
            Some(("s3".into(), "us-east-1".into()))
        );
        assert_eq!(
            scope("bucket.s3-us-west-2.amazonaws.com"),
            Some(("s3".into(), "us-west-2".into()))
        );
        assert_eq!(
            scope("dynamodb.eu-central-1.amazonaws.com"),
            Some(("dynamodb".into(), "eu-central-1".into()))
        );
        assert_eq!(scope("api.example"), None);
        let fixed = SigV4 {
            service: Some("s3".into()),
            region: Some("eu-west-1".into()),
        };
        assert_eq!(
            fixed.scope_for("127.0.0.1"),
            Some(("s3".into(), "eu-west-1".into()))
        );
    }

    /// An S3 body that streams is signed with what `x-amz-content-sha256`
    /// says instead of its hash: the header and the signature both carry it.
    #[test]
    fn an_unhashed_payload_is_signed_as_s3_is_told() {
        let request = || {
            http::Request::builder()
                .method("PUT")
                .uri("https://reports.s3.eu-west-1.amazonaws.com/k")
                .header("host", "reports.s3.eu-west-1.amazonaws.com")
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let secret = Secret::new("test-secret-sak");
        let keys = SigningKeys {
            access_key_id: "AKIATEST",
            secret_access_key: &secret,
            session_token: None,
        };
        let mut unsigned = request();
        sign_with_payload_hash(
            &mut unsigned,
            "UNSIGNED-PAYLOAD",
            &keys,
            "s3",
            "eu-west-1",
            suite_time(),
        )
        .unwrap();
        assert_eq!(unsigned.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        let mut hashed = request();
        sign(&mut hashed, b"", &keys, "s3", "eu-west-1", suite_time()).unwrap();
        assert_ne!(
            unsigned.headers[AUTHORIZATION],
            hashed.headers[AUTHORIZATION]
        );
        let mut empty = request();
        let empty_hash = crate::hex::lower(&crate::secret::sha256(b""));
        sign_with_payload_hash(
            &mut empty,
            &empty_hash,
            &keys,
            "s3",
            "eu-west-1",
            suite_time(),
        )
        .unwrap();
        assert_eq!(empty.headers[AUTHORIZATION], hashed.headers[AUTHORIZATION]);
    }

    #[test]
    fn sign_replaces_any_earlier_signature_and_marks_secrets_sensitive() {
        let mut parts = http::Request::builder()
            .method("GET")
            .uri("http://reports.s3.eu-west-1.amazonaws.com/k?b=1")
            .header("host", "reports.s3.eu-west-1.amazonaws.com")
            .header("authorization", "AWS4-HMAC-SHA256 agent")
            .header("x-amz-date", "19990101T000000Z")
            .header("accept", "*/*")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let secret = Secret::new("test-secret-sak");
        let token = Secret::new("test-secret-token");
        let keys = SigningKeys {
            access_key_id: "ASIATEST",
            secret_access_key: &secret,
            session_token: Some(&token),
        };
        sign(&mut parts, b"", &keys, "s3", "eu-west-1", suite_time()).unwrap();
        let auth = parts.headers[AUTHORIZATION].to_str().unwrap().to_string();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=ASIATEST/20150830/eu-west-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
        ));
        assert!(!auth.contains("test-secret"));
        assert_eq!(parts.headers.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(parts.headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            parts.headers["x-amz-content-sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(parts.headers[AUTHORIZATION].is_sensitive());
        assert!(parts.headers["x-amz-security-token"].is_sensitive());
    }
}
