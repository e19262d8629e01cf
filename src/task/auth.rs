//! Reading the agent's `Proxy-Authorization` header.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use zeroize::Zeroize;

use crate::reason::Reason;
use crate::secret::Secret;

/// Standard base64 that accepts both padded and unpadded input: clients
/// disagree, and being strict here buys nothing since the decoded value is
/// compared against a stored digest anyway.
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What the agent presented as its task credential.
///
/// `Debug` shows only fingerprints of the secret parts.
#[derive(Debug, Clone)]
pub enum ProxyCredential {
    /// `Basic base64(user:password)`: what a proxy URL of the form
    /// `http://TASK_ID:TOKEN@host:port` makes clients send.
    Basic {
        /// Should be the task id.
        user: String,
        /// Should be the task token.
        password: Secret,
    },
    /// `Bearer TOKEN`.
    Bearer(Secret),
}

/// Why a request could not be attributed to an active task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Proxy-Authorization` header and no ambient task.
    #[error("no Proxy-Authorization header (proxy URL needs TASK_ID:TOKEN@)")]
    Missing,
    /// The header is not a well-formed Basic or Bearer credential.
    #[error("Proxy-Authorization is not a well-formed Basic or Bearer credential")]
    Malformed,
    /// The credential matches no task.
    #[error("the task token matches no task")]
    Invalid,
    /// The credential matches a task that has ended or expired.
    #[error("the task has ended or expired")]
    Ended,
}

impl AuthError {
    /// The stable reason for the response status and the decision record.
    pub fn reason(&self) -> Reason {
        match self {
            AuthError::Missing => Reason::TaskTokenMissing,
            AuthError::Malformed | AuthError::Invalid => Reason::TaskTokenInvalid,
            AuthError::Ended => Reason::TaskEnded,
        }
    }
}

/// Parses a `Proxy-Authorization` value: `Basic` or `Bearer`, scheme
/// case-insensitive, one or more spaces before the credential.
///
/// Returns [`AuthError::Malformed`] for any other scheme, a missing or
/// empty credential, bad base64, a Basic value without `:` or with an empty
/// password, or bytes that are not visible ASCII. Whether the credential
/// belongs to a task is [`crate::task::TaskStore::authenticate`]'s question.
pub fn parse_proxy_authorization(value: &http::HeaderValue) -> Result<ProxyCredential, AuthError> {
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = text.split_once([' ', '\t']).ok_or(AuthError::Malformed)?;
    let credential = rest.trim_start_matches([' ', '\t']);
    // token68: a single word; anything with inner whitespace is not one.
    if credential.is_empty() || credential.contains([' ', '\t']) {
        return Err(AuthError::Malformed);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        parse_basic(credential)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(ProxyCredential::Bearer(Secret::new(credential.as_bytes())))
    } else {
        Err(AuthError::Malformed)
    }
}

fn parse_basic(encoded: &str) -> Result<ProxyCredential, AuthError> {
    let mut decoded = BASIC_BASE64
        .decode(encoded)
        .map_err(|_| AuthError::Malformed)?;
    let result = split_basic(&decoded);
    decoded.zeroize();
    result
}

fn split_basic(decoded: &[u8]) -> Result<ProxyCredential, AuthError> {
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(AuthError::Malformed)?;
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    if password.is_empty() {
        return Err(AuthError::Malformed);
    }
    let user = std::str::from_utf8(user).map_err(|_| AuthError::Malformed)?;
    Ok(ProxyCredential::Basic {
        user: user.to_owned(),
        password: Secret::new(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use http::HeaderValue;

    fn parse(text: &str) -> Result<ProxyCredential, AuthError> {
        parse_proxy_authorization(&HeaderValue::from_str(text).unwrap())
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn basic_splits_at_the_first_colon() {
        match parse(&basic("task-0123456789abcdef:test-secret-a:b")).unwrap() {
            ProxyCredential::Basic { user, password } => {
                assert_eq!(user, "task-0123456789abcdef");
                assert_eq!(password.expose(), b"test-secret-a:b");
            }
            other => panic!("expected Basic, got {other:?}"),
        }
    }

    #[test]
    fn bearer_keeps_the_token() {
        match parse("Bearer cgt_test-secret").unwrap() {
            ProxyCredential::Bearer(token) => assert_eq!(token.expose(), b"cgt_test-secret"),
            other => panic!("expected Bearer, got {other:?}"),
        }
    }

    #[test]
    fn scheme_is_case_insensitive_and_spacing_lenient() {
        assert!(matches!(
            parse("bEaReR   cgt_x"),
            Ok(ProxyCredential::Bearer(_))
        ));
        assert!(matches!(
            parse("  BEARER\tcgt_x  "),
            Ok(ProxyCredential::Bearer(_))
        ));
        let lower = basic("task-1:test-secret").replace("Basic", "basic");
        assert!(matches!(parse(&lower), Ok(ProxyCredential::Basic { .. })));
        // Unpadded base64 ("task-1:pw" is 9 bytes, so padding would be absent anyway; use 10).
        let unpadded = format!(
            "Basic {}",
            STANDARD.encode("task-1:pw1").trim_end_matches('=')
        );
        assert!(matches!(
            parse(&unpadded),
            Ok(ProxyCredential::Basic { .. })
        ));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Digest username=\"x\"",
            "Basic !!!notbase64",
            "Basic",
            "cgt_token-without-scheme",
            "Negotiate abc",
        ] {
            assert_eq!(parse(bad).unwrap_err(), AuthError::Malformed, "{bad:?}");
        }
        // No colon, empty password.
        assert_eq!(parse(&basic("task-1")).unwrap_err(), AuthError::Malformed);
        assert_eq!(parse(&basic("task-1:")).unwrap_err(), AuthError::Malformed);
        // Not visible ASCII.
        let obs = HeaderValue::from_bytes(b"Bearer caf\xe9").unwrap();
        assert_eq!(
            parse_proxy_authorization(&obs).unwrap_err(),
            AuthError::Malformed
        );
        // User part that is not UTF-8.
        let raw = format!("Basic {}", STANDARD.encode(b"\xff\xfe:pw"));
        assert_eq!(parse(&raw).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn debug_of_a_credential_shows_no_secret() {
        let cred = parse(&basic("task-1:test-secret-visible")).unwrap();
        let shown = format!("{cred:?}");
        assert!(!shown.contains("test-secret-visible"), "{shown}");
        assert!(shown.contains("task-1"), "{shown}");
    }

    #[test]
    fn reasons_map_to_407_family() {
        assert_eq!(AuthError::Missing.reason(), Reason::TaskTokenMissing);
        assert_eq!(AuthError::Malformed.reason(), Reason::TaskTokenInvalid);
        assert_eq!(AuthError::Invalid.reason(), Reason::TaskTokenInvalid);
        assert_eq!(AuthError::Ended.reason(), Reason::TaskEnded);
    }
}
