//! Header value templates such as `Bearer {token}`.

use std::fmt;

/// The one placeholder a template must contain.
pub const PLACEHOLDER: &str = "{token}";

/// A header value format with exactly one `{token}`, split at compile time so
/// rendering is two copies and no scanning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    /// Validates `format`: exactly one `{token}`, no other braces (a `{tokne}`
    /// typo would otherwise be sent literally), and only characters that are
    /// valid in a header value. The error message is for the `format` field.
    pub fn parse(format: &str) -> Result<Template, String> {
        let count = format.matches(PLACEHOLDER).count();
        if count != 1 {
            return Err(format!(
                "must contain {PLACEHOLDER} exactly once (found {count} times)"
            ));
        }
        let (prefix, suffix) = format.split_once(PLACEHOLDER).expect("counted above");
        let literal = || prefix.chars().chain(suffix.chars());
        if literal().any(|c| c == '{' || c == '}') {
            return Err(format!("may contain no braces other than {PLACEHOLDER}"));
        }
        if literal().any(|c| !(c == ' ' || c == '\t' || c.is_ascii_graphic())) {
            return Err("may contain only printable ASCII, spaces and tabs".to_string());
        }
        Ok(Template {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        })
    }

    /// The header value bytes with `token` in place of the placeholder.
    pub fn render(&self, token: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + token.len() + self.suffix.len());
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(token);
        out.extend_from_slice(self.suffix.as_bytes());
        out
    }
}

impl fmt::Display for Template {
    /// The format as configured, placeholder included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{PLACEHOLDER}{}", self.prefix, self.suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_around_the_placeholder() {
        let t = Template::parse("Bearer {token}").unwrap();
        assert_eq!(t.render(b"test-secret-1"), b"Bearer test-secret-1");
        assert_eq!(t.to_string(), "Bearer {token}");
        let t = Template::parse("{token}; v=2").unwrap();
        assert_eq!(t.render(b"x"), b"x; v=2");
    }

    #[test]
    fn refuses_bad_formats() {
        for bad in [
            "Bearer",
            "",
            "{token}{token}",
            "Bearer {tokne}",
            "{token} {extra}",
            "Bearer\r\n{token}",
            "Bearer\u{e9} {token}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }
}
