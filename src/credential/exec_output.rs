//! The documents an `exec` credential command may print on stdout.
//!
//! Pure: bytes in, value and expiry out. Two shapes are accepted:
//!
//! * `{"token": "...", "expires_at": "<RFC 3339>"}` or
//!   `{"token": "...", "expires_in": <seconds>}` (or neither expiry field: the
//!   token is then kept for the task's lifetime);
//! * the AWS `credential_process` format
//!   `{"Version": 1, "AccessKeyId": .., "SecretAccessKey": .., "SessionToken": .., "Expiration": ".."}`.
//!
//! Unknown fields are refused so that a typo such as `expire_in` cannot turn a
//! short-lived token into one cached for the whole task.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use zeroize::Zeroize;

use crate::credential::{CredentialValue, Secret};

/// What is wrong with a command's stdout. Never contains any of its content:
/// not even a field name, since a broken script may print a secret anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecOutputError {
    /// Not JSON at all (or empty).
    #[error("stdout is not valid JSON (line {line}, column {column})")]
    NotJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// JSON, but with unknown fields or wrongly typed values.
    #[error("stdout JSON has unexpected fields or types (line {line}, column {column}); expected {{\"token\", \"expires_at\"|\"expires_in\"}} or the AWS credential_process format")]
    Shape {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// A required field is absent or empty.
    #[error("{0} is missing or empty")]
    Missing(&'static str),
    /// `expires_at` and `expires_in` were both given.
    #[error("both expires_at and expires_in are given")]
    ConflictingExpiry,
    /// Token fields and AWS fields in one document.
    #[error("token fields and AWS credential_process fields are mixed")]
    MixedFormats,
    /// An AWS document with a version other than 1.
    #[error("AWS credential_process Version {0} is not supported (expected 1)")]
    UnsupportedVersion(u64),
    /// A timestamp field that is not RFC 3339.
    #[error("{0} is not an RFC 3339 timestamp")]
    BadTimestamp(&'static str),
    /// An expiry too far away to represent.
    #[error("the expiry is out of range")]
    ExpiryOutOfRange,
    /// The expiry is not in the future.
    #[error("the credential has already expired")]
    AlreadyExpired,
}

/// Every field either shape may carry. Secret fields are wiped when the
/// document is dropped, whatever path the parse took.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    token: Option<String>,
    expires_at: Option<String>,
    expires_in: Option<u64>,
    #[serde(rename = "Version")]
    version: Option<u64>,
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<String>,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: Option<String>,
    #[serde(rename = "SessionToken")]
    session_token: Option<String>,
    #[serde(rename = "Expiration")]
    expiration: Option<String>,
}

impl Drop for Document {
    fn drop(&mut self) {
        self.token.zeroize();
        self.access_key_id.zeroize();
        self.secret_access_key.zeroize();
        self.session_token.zeroize();
    }
}

/// Parses a command's stdout into a value and its expiry. `now` is when the
/// output was read: `expires_in` counts from it and anything not after it is
/// refused as already expired.
pub fn parse(
    stdout: &[u8],
    now: SystemTime,
) -> Result<(CredentialValue, Option<SystemTime>), ExecOutputError> {
    let mut doc: Document = serde_json::from_slice(stdout).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Data => ExecOutputError::Shape { line, column },
            _ => ExecOutputError::NotJson { line, column },
        }
    })?;
    let aws = doc.version.is_some()
        || doc.access_key_id.is_some()
        || doc.secret_access_key.is_some()
        || doc.session_token.is_some()
        || doc.expiration.is_some();
    let token_fields = doc.token.is_some() || doc.expires_at.is_some() || doc.expires_in.is_some();
    if aws && token_fields {
        return Err(ExecOutputError::MixedFormats);
    }
    if aws {
        parse_aws(&mut doc, now)
    } else {
        parse_token(&mut doc, now)
    }
}

fn parse_token(
    doc: &mut Document,
    now: SystemTime,
) -> Result<(CredentialValue, Option<SystemTime>), ExecOutputError> {
    let expires_at = match (&doc.expires_at, doc.expires_in) {
        (Some(_), Some(_)) => return Err(ExecOutputError::ConflictingExpiry),
        (Some(at), None) => {
            Some(parse_rfc3339(at).ok_or(ExecOutputError::BadTimestamp("expires_at"))?)
        }
        (None, Some(secs)) => Some(
            now.checked_add(Duration::from_secs(secs))
                .ok_or(ExecOutputError::ExpiryOutOfRange)?,
        ),
        (None, None) => None,
    };
    check_not_expired(expires_at, now)?;
    let token = take_non_empty(&mut doc.token, "token")?;
    Ok((CredentialValue::Token(token), expires_at))
}

fn parse_aws(
    doc: &mut Document,
    now: SystemTime,
) -> Result<(CredentialValue, Option<SystemTime>), ExecOutputError> {
    match doc.version {
        Some(1) => {}
        Some(other) => return Err(ExecOutputError::UnsupportedVersion(other)),
        None => return Err(ExecOutputError::Missing("Version")),
    }
    let expires_at = match &doc.expiration {
        Some(at) => Some(parse_rfc3339(at).ok_or(ExecOutputError::BadTimestamp("Expiration"))?),
        None => None,
    };
    check_not_expired(expires_at, now)?;
    let access_key_id = doc
        .access_key_id
        .take()
        .filter(|id| !id.is_empty())
        .ok_or(ExecOutputError::Missing("AccessKeyId"))?;
    let secret_access_key = take_non_empty(&mut doc.secret_access_key, "SecretAccessKey")?;
    let session_token = take_non_empty(&mut doc.session_token, "SessionToken").ok();
    Ok((
        CredentialValue::Aws {
            access_key_id,
            secret_access_key,
            session_token,
        },
        expires_at,
    ))
}

fn take_non_empty(
    field: &mut Option<String>,
    name: &'static str,
) -> Result<Secret, ExecOutputError> {
    match field.take() {
        Some(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => Err(ExecOutputError::Missing(name)),
    }
}

fn check_not_expired(
    expires_at: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), ExecOutputError> {
    match expires_at {
        Some(at) if at <= now => Err(ExecOutputError::AlreadyExpired),
        _ => Ok(()),
    }
}

/// Parses an RFC 3339 timestamp with `Z` or a numeric offset (`+02:00`),
/// which token endpoints and AWS both emit. `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if !text.is_ascii() || text.len() < 7 {
        return None;
    }
    let (head, offset) = text.split_at(text.len() - 6);
    let o = offset.as_bytes();
    let two_digits = |hi: u8, lo: u8| -> Option<u64> {
        (hi.is_ascii_digit() && lo.is_ascii_digit())
            .then(|| u64::from((hi - b'0') * 10 + (lo - b'0')))
    };
    if (o[0] == b'+' || o[0] == b'-') && o[3] == b':' {
        let hours = two_digits(o[1], o[2]).filter(|h| *h < 24)?;
        let minutes = two_digits(o[4], o[5]).filter(|m| *m < 60)?;
        let utc = humantime::parse_rfc3339(&format!("{head}Z")).ok()?;
        let shift = Duration::from_secs(hours * 3600 + minutes * 60);
        // Local time ahead of UTC (`+`) means the UTC instant is earlier.
        return if o[0] == b'+' {
            utc.checked_sub(shift)
        } else {
            utc.checked_add(shift)
        };
    }
    match text.strip_suffix('z') {
        Some(rest) => humantime::parse_rfc3339(&format!("{rest}Z")).ok(),
        None => humantime::parse_rfc3339(text).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap()
    }

    fn token_of(value: &CredentialValue) -> &[u8] {
        match value {
            CredentialValue::Token(token) => token.expose(),
            CredentialValue::Aws { .. } => panic!("expected a token"),
        }
    }

    #[test]
    fn token_with_expires_in_counts_from_now() {
        let (value, expires) =
            parse(br#"{"token":"test-secret-1","expires_in":300}"#, now()).unwrap();
        assert_eq!(token_of(&value), b"test-secret-1");
        assert_eq!(expires, Some(now() + Duration::from_secs(300)));
    }

    #[test]
    fn token_with_expires_at_and_trailing_newline() {
        let out = b"{\"token\":\"test-secret-2\",\"expires_at\":\"2030-01-01T00:05:00Z\"}\n";
        let (value, expires) = parse(out, now()).unwrap();
        assert_eq!(token_of(&value), b"test-secret-2");
        assert_eq!(expires, Some(now() + Duration::from_secs(300)));
    }

    #[test]
    fn token_without_expiry_is_accepted() {
        let (_, expires) = parse(br#"{"token":"test-secret-3"}"#, now()).unwrap();
        assert_eq!(expires, None);
    }

    #[test]
    fn aws_credential_process_format() {
        let out = br#"{"Version":1,"AccessKeyId":"ASIATEST","SecretAccessKey":"test-secret-sak",
            "SessionToken":"test-secret-st","Expiration":"2030-01-01T02:00:00+01:00"}"#;
        let (value, expires) = parse(out, now()).unwrap();
        assert_eq!(expires, Some(now() + Duration::from_secs(3600)));
        let CredentialValue::Aws { session_token, .. } = value else {
            panic!("expected AWS keys")
        };
        assert_eq!(session_token.unwrap().expose(), b"test-secret-st");
        // +01:00 local midnight is UTC 23:00 the day before: long expired.
        let stale = br#"{"Version":1,"AccessKeyId":"ASIATEST","SecretAccessKey":"test-secret-sak",
            "Expiration":"2030-01-01T00:00:00+01:00"}"#;
        assert_eq!(
            parse(stale, now()).unwrap_err(),
            ExecOutputError::AlreadyExpired
        );
    }

    #[test]
    fn aws_with_offset_expiry_in_the_future() {
        let out = br#"{"Version":1,"AccessKeyId":"ASIATEST","SecretAccessKey":"test-secret-sak",
            "Expiration":"2029-12-31T20:00:00-05:00"}"#;
        let (value, expires) = parse(out, now()).unwrap();
        assert_eq!(expires, Some(now() + Duration::from_secs(3600)));
        let CredentialValue::Aws {
            access_key_id,
            secret_access_key,
            session_token,
        } = value
        else {
            panic!("expected AWS keys")
        };
        assert_eq!(access_key_id, "ASIATEST");
        assert_eq!(secret_access_key.expose(), b"test-secret-sak");
        assert!(session_token.is_none());
    }

    #[test]
    fn refused_documents() {
        let cases: &[(&[u8], ExecOutputError)] = &[
            (b"", ExecOutputError::NotJson { line: 1, column: 0 }),
            (br#"{"expires_in":60}"#, ExecOutputError::Missing("token")),
            (
                br#"{"token":"","expires_in":60}"#,
                ExecOutputError::Missing("token"),
            ),
            (
                br#"{"token":"test-secret-x","expires_in":0}"#,
                ExecOutputError::AlreadyExpired,
            ),
            (
                br#"{"token":"test-secret-x","expires_at":"2029-12-31T23:59:59Z"}"#,
                ExecOutputError::AlreadyExpired,
            ),
            (
                br#"{"token":"test-secret-x","expires_in":60,"expires_at":"2031-01-01T00:00:00Z"}"#,
                ExecOutputError::ConflictingExpiry,
            ),
            (
                br#"{"token":"test-secret-x","expires_at":"tomorrow"}"#,
                ExecOutputError::BadTimestamp("expires_at"),
            ),
            (
                br#"{"token":"test-secret-x","AccessKeyId":"A"}"#,
                ExecOutputError::MixedFormats,
            ),
            (
                br#"{"Version":2,"AccessKeyId":"A","SecretAccessKey":"test-secret-x"}"#,
                ExecOutputError::UnsupportedVersion(2),
            ),
            (
                br#"{"Version":1,"AccessKeyId":"A"}"#,
                ExecOutputError::Missing("SecretAccessKey"),
            ),
            (
                br#"{"token":"test-secret-x","expires_in":18446744073709551615}"#,
                ExecOutputError::ExpiryOutOfRange,
            ),
        ];
        for (out, expected) in cases {
            assert_eq!(
                parse(out, now()).unwrap_err(),
                *expected,
                "{}",
                String::from_utf8_lossy(out)
            );
        }
    }

    #[test]
    fn errors_never_echo_the_output() {
        for out in [
            &br#"{"token":"test-secret-typo","expire_in":60}"#[..],
            br#"{"token":12345678}"#,
            br#"test-secret-not-json"#,
            br#"{"test-secret-as-key":"x"}"#,
        ] {
            let err = parse(out, now()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(
                err,
                ExecOutputError::Shape { .. } | ExecOutputError::NotJson { .. }
            ));
            assert!(
                !text.contains("test-secret") && !text.contains("12345678"),
                "{text}"
            );
        }
    }

    #[test]
    fn rfc3339_offsets() {
        let utc = parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2030-01-01T00:00:00z"), Some(utc));
        assert_eq!(parse_rfc3339("2030-01-01T02:30:00+02:30"), Some(utc));
        assert_eq!(parse_rfc3339("2029-12-31T23:00:00-01:00"), Some(utc));
        assert_eq!(
            parse_rfc3339("2030-01-01T00:00:00.500Z"),
            Some(utc + Duration::from_millis(500))
        );
        for bad in [
            "2030-01-01",
            "2030-01-01T00:00:00+25:00",
            "2030-01-01T00:00:00",
            "é2030-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
