//! Secret values and references to them.
//!
//! A [`Secret`] cannot be printed, formatted or serialised; it is zeroized
//! when dropped, and logs refer to it by [`Secret::fingerprint`] only.
//! Configuration never holds secrets inline: it holds a [`SecretRef`]
//! (`{ env: NAME }` or `{ file: PATH }`), resolved through a
//! [`Provider`] when the live sources are built (and checked when the
//! configuration is validated).

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use zeroize::Zeroize;

use crate::provider::Provider;

/// Bytes that must never reach the agent, a log line or a record.
pub struct Secret {
    value: Box<[u8]>,
    /// The fingerprint, computed on first use: a long-lived credential is
    /// named in every request's record, and hashing it each time is waste.
    /// Derived from the value by a one-way hash, so not secret itself.
    fingerprint: OnceLock<[u8; FINGERPRINT_LEN]>,
}

/// Length of a fingerprint: `sha256:` + 12 hex digits.
const FINGERPRINT_LEN: usize = 19;

impl Secret {
    /// Wraps the bytes; the caller's copy is moved, not duplicated.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Secret {
            value: value.into().into_boxed_slice(),
            fingerprint: OnceLock::new(),
        }
    }

    /// The raw value, for the few places that must send it (injection) or
    /// look for it (scrubbing, token comparison).
    pub fn expose(&self) -> &[u8] {
        &self.value
    }

    /// The value as UTF-8 text, when it is text.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// `true` when the secret holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// `sha256:` followed by the first 12 hex digits of the SHA-256 of the
    /// value: enough to correlate records, useless to recover the value.
    pub fn fingerprint(&self) -> String {
        let bytes = self
            .fingerprint
            .get_or_init(|| fingerprint_bytes(&self.value));
        // Only ASCII is ever written into the buffer.
        String::from_utf8(bytes.to_vec()).expect("a fingerprint is ASCII")
    }

    /// Compares with `other` in time independent of where they differ.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        constant_time_eq(&self.value, other)
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret {
            value: self.value.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

/// The SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `sha256:` + 12 lowercase hex digits of the SHA-256 of `data`.
pub fn fingerprint(data: &[u8]) -> String {
    String::from_utf8_lossy(&fingerprint_bytes(data)).into_owned()
}

/// [`fingerprint`] as ASCII bytes, without an allocation.
fn fingerprint_bytes(data: &[u8]) -> [u8; FINGERPRINT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha256(data);
    let mut out = [0u8; FINGERPRINT_LEN];
    out[..7].copy_from_slice(b"sha256:");
    for (i, byte) in digest[..6].iter().enumerate() {
        out[7 + 2 * i] = HEX[usize::from(byte >> 4)];
        out[8 + 2 * i] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

/// Equality whose running time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use aws_lc_rs::rand::SecureRandom;
    let mut out = [0u8; N];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random number generator failed");
    out
}

/// A reference to a secret held outside the configuration file, written
/// `{ env: NAME }` or `{ file: PATH }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable's value.
    Env(String),
    /// A file's content, with one trailing newline removed.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            env: Option<String>,
            #[serde(default)]
            file: Option<PathBuf>,
        }
        match Raw::deserialize(deserializer)? {
            Raw {
                env: Some(name),
                file: None,
            } if !name.is_empty() => Ok(SecretRef::Env(name)),
            Raw {
                env: None,
                file: Some(path),
            } if !path.as_os_str().is_empty() => Ok(SecretRef::File(path)),
            _ => Err(serde::de::Error::custom(
                "a secret reference is { env: NAME } or { file: PATH }, exactly one of them",
            )),
        }
    }
}

/// Why a [`SecretRef`] could not be resolved. Never contains the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretRefError {
    /// The variable is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file named by the reference.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The reference resolved to nothing.
    #[error("{0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Reads the secret now.
    pub fn resolve(&self, env: &dyn Provider) -> Result<Secret, SecretRefError> {
        let (value, what) = match self {
            SecretRef::Env(name) => (
                env.var(name)
                    .ok_or_else(|| SecretRefError::EnvMissing(name.clone()))?
                    .into_bytes(),
                format!("environment variable {name}"),
            ),
            SecretRef::File(path) => {
                let mut bytes = env.read(path).map_err(|source| SecretRefError::File {
                    path: path.clone(),
                    source,
                })?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                (bytes, format!("file {}", path.display()))
            }
        };
        if value.is_empty() {
            return Err(SecretRefError::Empty(what));
        }
        Ok(Secret::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn debug_shows_only_a_fingerprint() {
        let s = Secret::new("test-secret-abcdef");
        let shown = format!("{s:?}");
        assert!(!shown.contains("test-secret"), "{shown}");
        assert!(shown.starts_with("Secret(sha256:"), "{shown}");
        assert_eq!(s.fingerprint().len(), "sha256:".len() + 12);
    }

    #[test]
    fn env_ref_resolves_through_the_environment_trait() {
        let env: BTreeMap<String, String> =
            [("TOKEN".to_string(), "test-secret-1".to_string())].into();
        let s = SecretRef::Env("TOKEN".into()).resolve(&env).unwrap();
        assert_eq!(s.expose(), b"test-secret-1");
        let err = SecretRef::Env("NOPE".into()).resolve(&env).unwrap_err();
        assert!(err.to_string().contains("NOPE"));
    }

    #[test]
    fn fingerprint_is_sha256_prefix_and_cached_value_matches() {
        let s = Secret::new("test-secret-fingerprint");
        let digest = sha256(b"test-secret-fingerprint");
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(s.fingerprint(), format!("sha256:{hex}"));
        assert_eq!(s.fingerprint(), s.fingerprint());
        assert_eq!(s.clone().fingerprint(), s.fingerprint());
        assert_eq!(fingerprint(b"test-secret-fingerprint"), s.fingerprint());
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
