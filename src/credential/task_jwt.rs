//! credgate's own signer: short-lived JWTs that state which task (and which
//! agent) a request is made for, used as the subject token of an RFC 8693
//! token exchange. The public key is served as a JWKS at the admin API's
//! `GET /v1/jwks`, so an identity provider can trust credgate as an issuer.
//!
//! The key pair (ECDSA P-256, ES256) is generated in memory on first use and
//! lives as long as the process: it is never written anywhere, and a restart
//! rotates it. It is one process-wide value rather than part of the
//! configuration because the token-exchange source (rebuilt on every
//! configuration reload) and the admin route must present the same key, and
//! a reload must not change the key an identity provider has cached.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};

use crate::secret::{random_bytes, sha256, Secret};

/// The process-wide signer, created on first use.
static SIGNER: LazyLock<Result<TaskJwtSigner, String>> = LazyLock::new(TaskJwtSigner::generate);

/// The process-wide signer, or why it could not be created.
pub fn signer() -> Result<&'static TaskJwtSigner, String> {
    SIGNER.as_ref().map_err(Clone::clone)
}

/// The JSON Web Key Set (RFC 7517) of the process-wide signer: public keys
/// only. Empty when no key could be made (then nothing is signed either).
pub fn jwks() -> Value {
    match signer() {
        Ok(signer) => json!({ "keys": [signer.public_jwk()] }),
        Err(_) => json!({ "keys": [] }),
    }
}

/// An ES256 signing key with its public JWK.
pub struct TaskJwtSigner {
    key: EncodingKey,
    /// The RFC 7638 thumbprint of the public key.
    kid: String,
    /// The public point, base64url.
    x: String,
    y: String,
}

impl std::fmt::Debug for TaskJwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskJwtSigner(ES256, kid {})", self.kid)
    }
}

/// What a task JWT says, besides the standard claims.
#[derive(Debug, Clone)]
pub struct TaskClaims<'a> {
    /// `iss`: who signs (the source's `issuer`).
    pub issuer: &'a str,
    /// `sub`: the agent running the task.
    pub agent: &'a str,
    /// `aud`: the party that will verify the token.
    pub audience: &'a str,
    /// The task id (`task_id`, and the `act` claim's subject).
    pub task_id: &'a str,
    /// The task's labels (`task_labels`).
    pub labels: &'a BTreeMap<String, String>,
    /// The token's life at most.
    pub ttl: Duration,
    /// The token never outlives the task.
    pub task_expires_at: SystemTime,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    /// RFC 8693 §4.1: the party acting (credgate, for this task).
    act: Actor<'a>,
    task_id: &'a str,
    task_labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Actor<'a> {
    sub: String,
    iss: &'a str,
}

impl TaskJwtSigner {
    /// A fresh P-256 key pair. A trial signature is made so a broken crypto
    /// provider shows at once.
    fn generate() -> Result<TaskJwtSigner, String> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating the task JWT key failed: {e}"))?;
        let point = pair.public_key_raw();
        if point.len() != 65 || point[0] != 4 {
            return Err("the task JWT key is not an uncompressed P-256 point".into());
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        // RFC 7638 §3.2: the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes()));
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let signer = TaskJwtSigner { key, kid, x, y };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &json!({}), &signer.key)
            .map_err(|e| format!("the task JWT key cannot sign: {e}"))?;
        Ok(signer)
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        })
    }

    /// Signs a JWT for the task in `claims`, valid from now for `ttl`, but
    /// never past the task's end. Returns the token and when it expires.
    pub fn sign(
        &self,
        claims: &TaskClaims<'_>,
        now: SystemTime,
    ) -> Result<(Secret, SystemTime), String> {
        let expires = (now + claims.ttl).min(claims.task_expires_at);
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .map_err(|_| "the system clock is before 1970".to_string())
        };
        let (iat, exp) = (secs(now)?, secs(expires)?);
        if exp <= iat {
            return Err("the task has ended or ends within a second".into());
        }
        let jti = crate::hex::lower(&random_bytes::<16>());
        let body = Claims {
            iss: claims.issuer,
            sub: claims.agent,
            aud: claims.audience,
            iat,
            exp,
            jti,
            act: Actor {
                sub: format!("task:{}", claims.task_id),
                iss: claims.issuer,
            },
            task_id: claims.task_id,
            task_labels: claims.labels,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &body, &self.key)
            .map_err(|e| format!("signing the task JWT failed: {e}"))?;
        Ok((Secret::new(token), UNIX_EPOCH + Duration::from_secs(exp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn claims<'a>(labels: &'a BTreeMap<String, String>, ends: SystemTime) -> TaskClaims<'a> {
        TaskClaims {
            issuer: "credgate",
            agent: "agent-1",
            audience: "https://idp.test",
            task_id: "task-1",
            labels,
            ttl: Duration::from_secs(300),
            task_expires_at: ends,
        }
    }

    #[test]
    fn signs_task_claims_verifiable_with_the_published_key() {
        let signer = signer().unwrap();
        let labels: BTreeMap<String, String> = [("ticket".into(), "T-1".into())].into();
        let now = SystemTime::now();
        let (token, expires) = signer
            .sign(&claims(&labels, now + Duration::from_secs(3600)), now)
            .unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwks()["keys"][0].clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://idp.test"]);
        validation.set_issuer(&["credgate"]);
        let data =
            jsonwebtoken::decode::<Value>(token.expose_str().unwrap(), &key, &validation).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some(signer.kid()));
        let c = data.claims;
        assert_eq!(c["sub"], "agent-1");
        assert_eq!(c["task_id"], "task-1");
        assert_eq!(c["task_labels"]["ticket"], "T-1");
        assert_eq!(c["act"]["sub"], "task:task-1");
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
        assert_eq!(
            expires.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            c["exp"].as_u64().unwrap()
        );
        let jwks = jwks().to_string();
        assert!(!jwks.contains("\"d\""), "private key in the JWKS: {jwks}");
    }

    #[test]
    fn never_outlives_the_task() {
        let signer = signer().unwrap();
        let labels = BTreeMap::new();
        let now = SystemTime::now();
        let (_, expires) = signer
            .sign(&claims(&labels, now + Duration::from_secs(60)), now)
            .unwrap();
        assert!(expires <= now + Duration::from_secs(60));
        let ended = signer.sign(&claims(&labels, now), now).unwrap_err();
        assert!(ended.contains("ended"), "{ended}");
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        let signer = signer().unwrap();
        assert_eq!(signer.kid().len(), 43);
        assert!(!format!("{signer:?}").contains(&signer.x));
    }
}
