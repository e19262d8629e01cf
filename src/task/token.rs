//! Task tokens and task ids.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::secret::{random_bytes, sha256, Secret};

/// Every task token starts with this, so secret scanners (and credgate's own
/// request sanitizer) can recognise a leaked one.
pub(crate) const TOKEN_PREFIX: &str = "cgt_";

/// The secret an agent presents to credgate to act under its task.
///
/// 256 random bits, `cgt_` + base64url without padding. It exists in clear
/// only in the admin API's creation response; the store keeps its SHA-256.
/// It cannot be printed: `Debug` shows a placeholder and there is no `Display`.
pub struct TaskToken(Secret);

impl TaskToken {
    /// A fresh random token.
    pub(crate) fn generate() -> TaskToken {
        let bytes: [u8; 32] = random_bytes();
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + 43);
        text.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
        TaskToken(Secret::new(text))
    }

    /// The token text, for the single place that hands it out (the admin API
    /// creation response) and for clients that put it into a proxy URL.
    pub fn expose(&self) -> &str {
        // Always ASCII: built from the prefix and base64url above.
        self.0.expose_str().unwrap_or_default()
    }

    /// The SHA-256 digest the store keeps instead of the token.
    pub(crate) fn digest(&self) -> [u8; 32] {
        sha256(self.0.expose())
    }
}

impl fmt::Debug for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskToken(<redacted>)")
    }
}

/// A fresh task id: `task-` + 16 random hex digits.
pub(crate) fn generate_task_id() -> String {
    let bytes: [u8; 8] = random_bytes();
    let mut id = String::with_capacity(5 + 16);
    id.push_str("task-");
    for byte in bytes {
        id.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        id.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_url_safe() {
        let a = TaskToken::generate();
        let b = TaskToken::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("cgt_"));
        assert_eq!(
            a.expose().len(),
            4 + 43,
            "32 bytes of base64url without padding"
        );
        assert!(a.expose()[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a.digest(), sha256(a.expose().as_bytes()));
    }

    #[test]
    fn debug_hides_the_token() {
        let token = TaskToken::generate();
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.expose()), "{shown}");
        assert!(!shown.contains("cgt_"), "{shown}");
    }

    #[test]
    fn task_ids_have_the_documented_shape() {
        let id = generate_task_id();
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("task-"));
        assert!(id[5..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(id, generate_task_id());
    }
}
