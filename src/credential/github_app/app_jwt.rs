//! The app's own credential: a short-lived JWT signed with the GitHub App's
//! private key (RS256), used only to ask for installation tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::secret::Secret;

/// How far back `iat` is set, so a GitHub clock slightly behind ours still
/// accepts the JWT (GitHub's own advice).
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How long the JWT is valid after `now`. GitHub refuses `exp` more than ten
/// minutes ahead; nine leaves room for our clock being a little fast.
const LIFETIME: Duration = Duration::from_secs(9 * 60);

/// The app's RSA signing key.
pub(super) struct AppKey {
    key: EncodingKey,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(RS256)")
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iat: u64,
    exp: u64,
    iss: &'a str,
}

impl AppKey {
    /// Reads a PEM RSA private key (PKCS#1, as GitHub issues it, or PKCS#8)
    /// and makes a trial signature, so an unusable key is a configuration
    /// error rather than a failed request. Messages never contain key
    /// material.
    pub(super) fn from_pem(pem: &Secret) -> Result<AppKey, String> {
        let key = EncodingKey::from_rsa_pem(pem.expose())
            .map_err(|_| "not a PEM RSA private key (GitHub App keys are RSA)".to_string())?;
        let app = AppKey { key };
        app.sign("0", SystemTime::now())
            .map_err(|e| format!("the private key cannot sign RS256: {e}"))?;
        Ok(app)
    }

    /// A JWT for app `app_id`: `iat` a minute ago, `exp` nine minutes ahead.
    pub(super) fn sign(&self, app_id: &str, now: SystemTime) -> Result<Secret, String> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_string())?;
        let claims = Claims {
            iat: (now - CLOCK_SKEW).as_secs(),
            exp: (now + LIFETIME).as_secs(),
            iss: app_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_rsa_keys_and_garbage_are_refused_without_echoing_them() {
        let err = AppKey::from_pem(&Secret::new("test-secret-not-a-key")).unwrap_err();
        assert!(!err.contains("test-secret"), "{err}");
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = AppKey::from_pem(&Secret::new(ec.serialize_pem())).unwrap_err();
        assert!(err.contains("RSA"), "{err}");
    }
}
