//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect
//! Core §9): a short-lived JWT signed with the client's private key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::secret::{random_bytes, Secret};

/// How long an assertion is valid: long enough for one token request.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// The client's signing key and the algorithm its type implies.
pub(super) struct SigningKey {
    key: EncodingKey,
    algorithm: Algorithm,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?})", self.algorithm)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

impl SigningKey {
    /// Reads a PEM private key: RSA keys sign with RS256, P-256 EC keys with
    /// ES256. A trial signature is made now, so an unusable key is a
    /// configuration error rather than a failed request. Messages never
    /// contain key material.
    pub(super) fn from_pem(pem: &Secret) -> Result<SigningKey, String> {
        let candidates = [
            (EncodingKey::from_rsa_pem(pem.expose()), Algorithm::RS256),
            (EncodingKey::from_ec_pem(pem.expose()), Algorithm::ES256),
        ];
        for (key, algorithm) in candidates {
            let Ok(key) = key else { continue };
            let signing = SigningKey { key, algorithm };
            return match signing.sign("check", "check", SystemTime::now()) {
                Ok(_) => Ok(signing),
                Err(e) => Err(format!(
                    "the private key cannot sign {algorithm:?} (an RSA or P-256 EC key is needed): {e}"
                )),
            };
        }
        Err("not a PEM RSA or EC private key (PKCS#8, PKCS#1 or SEC1)".into())
    }

    /// `RS256` or `ES256`.
    #[cfg(test)]
    pub(super) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// A fresh assertion for `client_id` addressed to `audience`, with a
    /// random `jti` so the server can refuse replays.
    pub(super) fn sign(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<Secret, String> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_string())?
            .as_secs();
        let jti = crate::hex::lower(&random_bytes::<16>());
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: audience,
            jti,
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        };
        let mut header = Header::new(self.algorithm);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_key() -> Secret {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Secret::new(key.serialize_pem())
    }

    #[test]
    fn an_ec_key_signs_es256_with_the_claims_servers_check() {
        let key = SigningKey::from_pem(&ec_key()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::ES256);
        let jwt = key
            .sign("credgate", "https://idp.test/token", SystemTime::now())
            .unwrap();
        let jwt = jwt.expose_str().unwrap();
        let header = jsonwebtoken::decode_header(jwt).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        use base64::Engine;
        let payload = jwt.split('.').nth(1).unwrap();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["iss"], "credgate");
        assert_eq!(claims["sub"], "credgate");
        assert_eq!(claims["aud"], "https://idp.test/token");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        let again = key
            .sign("credgate", "https://idp.test/token", SystemTime::now())
            .unwrap();
        assert_ne!(again.expose(), jwt.as_bytes(), "jti must differ");
    }

    #[test]
    fn garbage_is_refused_without_echoing_it() {
        let err = SigningKey::from_pem(&Secret::new("test-secret-not-a-key")).unwrap_err();
        assert!(!err.contains("test-secret"), "{err}");
    }
}
