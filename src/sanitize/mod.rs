//! Request-side sanitizing: what the agent sends.
//!
//! Runs after the task is identified and before the request is authorised.
//! Three jobs, all pure:
//!
//! 1. [`aws_payload::read`] first reads the body as the upstream will: an
//!    AWS SDK's aws-chunked upload is decoded to its payload and every
//!    checksum it declares is checked, so the scan below reads the payload
//!    and the signer can carry the checksum.
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
//!   max_body_scan: 1MiB                                # larger bodies are not buffered
//! ```

pub mod aws_payload;
mod crc;
mod decode;
mod headers;
mod payload;
mod rules;
mod target;

use http::HeaderMap;
use serde::Deserialize;

use crate::field::FieldError;
use crate::units::parse_size;
use headers::StripList;
use rules::{Rule, RuleSet};

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

/// Body bytes buffered and scanned when `max_body_scan` is not set (1 MiB).
pub const DEFAULT_MAX_BODY_SCAN: usize = 1 << 20;

/// The largest accepted `max_body_scan` (64 MiB): every in-flight request may
/// hold this much in memory.
pub const MAX_BODY_SCAN_LIMIT: usize = 64 << 20;

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
    /// A size such as `1MiB`; [`DEFAULT_MAX_BODY_SCAN`] when absent.
    #[serde(default)]
    pub max_body_scan: Option<String>,
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
    max_body_scan: usize,
}

impl Sanitizer {
    /// Validates `raw`. Error paths are relative to `sanitize`
    /// (`strip_headers[2]`, `max_body_scan`); every error is reported, not the
    /// first only.
    pub fn compile(raw: &RawSanitize) -> Result<Sanitizer, Vec<FieldError>> {
        let mut errors = Vec::new();
        let strip = StripList::compile(raw.strip_headers.as_deref(), &raw.also_strip_headers)
            .map_err(|mut list_errors| errors.append(&mut list_errors))
            .ok();
        let max_body_scan = match raw.max_body_scan.as_deref() {
            None => Some(DEFAULT_MAX_BODY_SCAN),
            Some(text) => parse_max_body_scan(text)
                .map_err(|message| errors.push(FieldError::new("max_body_scan", message)))
                .ok(),
        };
        match (strip, max_body_scan) {
            (Some(strip), Some(max_body_scan)) if errors.is_empty() => Ok(Sanitizer {
                strip,
                max_body_scan,
            }),
            _ => Err(errors),
        }
    }

    /// Bodies up to this many bytes are buffered and scanned; the pipeline
    /// treats a larger body that must be inspected as `BodyTooLarge`.
    pub fn max_body_scan(&self) -> usize {
        self.max_body_scan
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
    /// One finding per rule. Scans all of `body`; bounding it by
    /// [`Sanitizer::max_body_scan`] is the caller's job.
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

fn parse_max_body_scan(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    if size == 0 {
        return Err("must be at least 1 byte".into());
    }
    usize::try_from(size)
        .ok()
        .filter(|size| *size <= MAX_BODY_SCAN_LIMIT)
        .ok_or_else(|| format!("{text:?} is larger than the limit of 64MiB"))
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
