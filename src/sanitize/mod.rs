//! Request-side sanitizing: what the agent sends.
//!
//! Runs after the task is identified and before the request is authorised.
//! Three jobs, all pure:
//!
//! 1. [`aws_payload::read`] first reads the body as the upstream will: an
//!    AWS SDK's aws-chunked upload is decoded to its payload and every
//!    checksum it declares is checked, so the scan below reads the payload
//!    and the signer can carry the checksum ([`aws_payload::read_streamed`]
//!    for an S3 upload that streams: decoded and checked as it flows).
//! 2. [`Sanitizer::strip_headers`] removes hop-by-hop headers, whatever
//!    `Connection` names, and every secret-bearing header: the agent has no
//!    business sending credentials, and credgate injects its own.
//! 3. The `scan_*` methods detect secrets the agent tries to send anyway, in
//!    the target, the remaining headers and the body. A finding names the rule
//!    ([`DETECTION_RULES`]) and where it was, never the value. The pipeline
//!    denies with `Reason::SecretInRequest`, or, where configured to strip,
//!    calls the `redact_*` methods and forwards what is left.
//!
//! Configuration, under the top-level `sanitize:` key (every field optional):
//!
//! ```yaml
//! sanitize:
//!   strip_headers: [authorization, cookie, "x-amz-*"]  # replaces DEFAULT_STRIP_HEADERS
//!   also_strip_headers: [x-my-secret]                  # added to the list in effect
//!   max_body: 5GiB             # larger request bodies get 413 (from Content-Length, before any byte is read)
//!   max_buffered_body: 64MiB   # bodies that must be held whole (a SigV4 payload hash) get 413 beyond this
//! ```
//!
//! Bodies are scanned as they stream ([`BodyStreamScan`]), whatever their
//! size; only a body that must be hashed before its first byte is sent (a
//! SigV4 signature for any service but S3, which takes an unhashed
//! payload over https), or decoded whole to be scanned, is held whole, up
//! to `max_buffered_body`.

pub mod aws_payload;
mod crc;
mod decode;
mod headers;
mod payload;
mod rules;
mod stream;
mod target;

use http::HeaderMap;
use serde::Deserialize;

use crate::field::FieldError;
use crate::units::parse_size;
use headers::StripList;
use rules::{Rule, RuleSet};

pub use stream::{BodyStopped, BodyStreamScan};

/// The secret-bearing headers stripped unless `strip_headers` replaces them
/// (`prefix*` is a wildcard). See the list's source for who uses each one.
pub const DEFAULT_STRIP_HEADERS: &[&str] = headers::DEFAULT_STRIP;

/// The ids of every detection rule, as they appear in [`Finding::rule`] and in
/// decision records. The exact pattern of each is documented on the rule.
pub const DETECTION_RULES: [&str; 9] = [
    Rule::AwsAccessKeyId.id(),
    Rule::GithubToken.id(),
    Rule::SlackToken.id(),
    Rule::OpenaiApiKey.id(),
    Rule::AnthropicApiKey.id(),
    Rule::PrivateKey.id(),
    Rule::Jwt.id(),
    Rule::SecretQueryParam.id(),
    Rule::CredgateTaskToken.id(),
];

/// Query parameter names whose non-empty value counts as a secret
/// (`secret_query_param`), compared case-insensitively.
pub const SECRET_QUERY_PARAMS: &[&str] = target::SECRET_QUERY_PARAMS;

/// The largest request body accepted when `max_body` is not set (5 GiB).
pub const DEFAULT_MAX_BODY: u64 = 5 << 30;

/// How much of a body that must be held whole (to hash it for a SigV4
/// signature, or to decode an AWS SDK's aws-chunked upload) is held when
/// `max_buffered_body` is not set (64 MiB).
pub const DEFAULT_MAX_BUFFERED_BODY: usize = 64 << 20;

/// The largest accepted `max_buffered_body` (1 GiB): every such request in
/// flight may hold this much in memory.
pub const MAX_BUFFERED_BODY_LIMIT: usize = 1 << 30;

/// The `sanitize:` section as written in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSanitize {
    /// Replaces [`DEFAULT_STRIP_HEADERS`] when given.
    #[serde(default)]
    pub strip_headers: Option<Vec<String>>,
    /// Added to the list in effect (default or given).
    #[serde(default)]
    pub also_strip_headers: Vec<String>,
    /// A size such as `5GiB`; [`DEFAULT_MAX_BODY`] when absent.
    #[serde(default)]
    pub max_body: Option<String>,
    /// A size such as `64MiB`; [`DEFAULT_MAX_BUFFERED_BODY`] when absent.
    #[serde(default)]
    pub max_buffered_body: Option<String>,
    /// The setting `max_body` and streaming replaced; kept so that a
    /// configuration that still has it gets an error that says so.
    #[serde(default)]
    pub max_body_scan: Option<serde_yaml::Value>,
}

/// Where a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingLocation {
    /// The request target (path or query).
    Url,
    /// A header, by lowercase name.
    Header(String),
    /// The request body.
    Body,
}

/// One detection: which rule fired where. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule id, one of [`DETECTION_RULES`].
    pub rule: &'static str,
    /// Where the secret was.
    pub location: FindingLocation,
}

/// The validated `sanitize:` section, ready to run on every request.
#[derive(Debug, Clone)]
pub struct Sanitizer {
    strip: StripList,
    max_body: u64,
    max_buffered_body: usize,
}

impl Sanitizer {
    /// Validates `raw`. Error paths are relative to `sanitize`
    /// (`strip_headers[2]`, `max_body`); every error is reported, not the
    /// first only.
    pub fn compile(raw: &RawSanitize) -> Result<Sanitizer, Vec<FieldError>> {
        let mut errors = Vec::new();
        let strip = StripList::compile(raw.strip_headers.as_deref(), &raw.also_strip_headers)
            .map_err(|mut list_errors| errors.append(&mut list_errors))
            .ok();
        if raw.max_body_scan.is_some() {
            errors.push(FieldError::new(
                "max_body_scan",
                "max_body_scan was replaced: request bodies are scanned as they stream, whatever their size; set max_body to bound an upload",
            ));
        }
        let max_body = match raw.max_body.as_deref() {
            None => Some(DEFAULT_MAX_BODY),
            Some(text) => parse_size(text)
                .and_then(|size| match size {
                    0 => Err("must be at least 1 byte".to_string()),
                    size => Ok(size),
                })
                .map_err(|message| errors.push(FieldError::new("max_body", message)))
                .ok(),
        };
        let max_buffered_body = match raw.max_buffered_body.as_deref() {
            None => Some(DEFAULT_MAX_BUFFERED_BODY),
            Some(text) => parse_max_buffered_body(text)
                .map_err(|message| errors.push(FieldError::new("max_buffered_body", message)))
                .ok(),
        };
        match (strip, max_body, max_buffered_body) {
            (Some(strip), Some(max_body), Some(max_buffered_body)) if errors.is_empty() => {
                Ok(Sanitizer {
                    strip,
                    max_body,
                    max_buffered_body,
                })
            }
            _ => Err(errors),
        }
    }

    /// The largest request body forwarded: a larger `Content-Length` is
    /// refused with 413 before any byte is read (and without `100
    /// Continue`); a body without one is cut at this size.
    pub fn max_body(&self) -> u64 {
        self.max_body
    }

    /// The most of a body held whole when it must be (a SigV4 payload hash,
    /// an aws-chunked upload to decode); past it the request gets 413.
    pub fn max_buffered_body(&self) -> usize {
        self.max_buffered_body
    }

    /// Removes hop-by-hop headers (`connection`, `keep-alive`,
    /// `proxy-connection`, `te`, `trailer`, `transfer-encoding`, `upgrade`,
    /// `proxy-authorization`, `proxy-authenticate`), every header named in any
    /// `Connection` value, and the configured secret-bearing headers. Returns
    /// the lowercase names removed, sorted and unique, for the record.
    ///
    /// Framing checks (CL+TE, duplicate CL) must run before this, since it
    /// removes `transfer-encoding` and whatever `Connection` names; the
    /// forwarding side frames the body afresh.
    pub fn strip_headers(&self, headers: &mut HeaderMap) -> Vec<String> {
        self.strip.strip(headers)
    }

    /// Secrets in the request target, raw and percent-decoded, plus secret
    /// query parameters. One finding per rule.
    pub fn scan_target(&self, path_and_query: &str) -> Vec<Finding> {
        findings(target::scan(path_and_query), FindingLocation::Url)
    }

    /// Secrets in header names and values (raw, percent-decoded, and inside
    /// `Basic` credentials). One finding per rule and header name. Run it
    /// after [`Sanitizer::strip_headers`]: stripped headers are dropped, not
    /// findings.
    pub fn scan_headers(&self, headers: &HeaderMap) -> Vec<Finding> {
        let mut out = Vec::new();
        for (name, value) in headers {
            let found = payload::header_rules(name, value);
            if !found.is_empty() {
                let location = FindingLocation::Header(name.as_str().to_owned());
                for finding in findings(found, location) {
                    if !out.contains(&finding) {
                        out.push(finding);
                    }
                }
            }
        }
        out
    }

    /// Secrets in a buffered body, read raw, form-urlencoded and JSON-escaped.
    /// One finding per rule. Scans all of `body`; the rest of a body too
    /// large to hold goes through a [`BodyStreamScan`].
    pub fn scan_body(&self, body: &[u8]) -> Vec<Finding> {
        findings(payload::body_rules(body), FindingLocation::Body)
    }

    /// `path_and_query` without its secrets: query parameters holding one are
    /// dropped (and the `?` when none is left); a secret in the path becomes
    /// `REDACTED`, so the result is still a valid path.
    pub fn redact_target(&self, path_and_query: &str) -> String {
        target::redact(path_and_query)
    }

    /// Removes every header (all its values) in which a secret is found;
    /// returns the removed names, sorted and unique.
    pub fn redact_headers(&self, headers: &mut HeaderMap) -> Vec<String> {
        let mut doomed: Vec<_> = headers
            .iter()
            .filter(|(name, value)| !payload::header_rules(name, value).is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        doomed.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        doomed.dedup();
        for name in &doomed {
            headers.remove(name);
        }
        doomed.iter().map(|name| name.as_str().to_owned()).collect()
    }

    /// Overwrites every secret in `body` (raw or in its encoded form) with
    /// `*`, keeping the length so `Content-Length` stays valid. Returns how
    /// many separate regions were masked.
    pub fn redact_body(&self, body: &mut [u8]) -> usize {
        let spans = payload::body_spans(body);
        for span in &spans {
            body[span.clone()].fill(b'*');
        }
        spans.len()
    }
}

fn parse_max_buffered_body(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    if size == 0 {
        return Err("must be at least 1 byte".into());
    }
    usize::try_from(size)
        .ok()
        .filter(|size| *size <= MAX_BUFFERED_BODY_LIMIT)
        .ok_or_else(|| format!("{text:?} is larger than the limit of 1GiB"))
}

fn findings(found: RuleSet, location: FindingLocation) -> Vec<Finding> {
    found
        .iter()
        .map(|rule| Finding {
            rule: rule.id(),
            location: location.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
