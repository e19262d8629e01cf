//! The per-host leaf cache and the server side of an intercepted connection.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use rustls::server::ProducesTickets;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;

use super::ca::{CertificateAuthority, LEAF_VALIDITY};
use super::error::{LeafError, TlsError};
use super::provider;

/// How long a minted leaf is served: half its validity, so a leaf handed
/// out always has at least 12 more hours to live, ample for a client whose
/// clock runs ahead.
const LEAF_TTL: Duration = Duration::from_secs(LEAF_VALIDITY.as_secs() / 2);
/// Hosts kept at once; beyond this the least used are re-minted on demand.
const MAX_HOSTS: u64 = 4096;
/// ALPN offered to agents: HTTP/2 first, HTTP/1.1 for everything else.
const INTERCEPT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A leaf and the server configuration presenting it, minted together.
#[derive(Clone)]
struct Minted {
    key: Arc<CertifiedKey>,
    server_config: Arc<ServerConfig>,
}

/// Mints leaf certificates on first use of a host and caches them.
///
/// Concurrent misses for the same host wait on one minting. Entries expire
/// well before the leaf does. The cache is sharded internally (no global lock
/// on the hit path).
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    entries: Cache<String, Minted>,
    // One ticketer for every host, so a session resumes on the next CONNECT
    // to the same host without a per-host session store. rustls accepts a
    // ticket only under the SNI it was issued for.
    ticketer: Option<Arc<dyn ProducesTickets>>,
    minted: AtomicU64,
}

impl LeafCache {
    /// An empty cache issuing from `ca`.
    pub fn new(ca: Arc<CertificateAuthority>) -> LeafCache {
        let ticketer = match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(ticketer) => Some(ticketer),
            Err(err) => {
                tracing::warn!(error = %err, "TLS session tickets disabled for intercepted connections");
                None
            }
        };
        LeafCache {
            ca,
            entries: Cache::builder()
                .max_capacity(MAX_HOSTS)
                .time_to_live(LEAF_TTL)
                .build(),
            ticketer,
            minted: AtomicU64::new(0),
        }
    }

    /// The leaf for `host` (a normalised DNS name, or an IP literal without
    /// brackets), minting it on a miss. The chain is `[leaf, CA]`.
    ///
    /// Fails for a host that is neither a DNS name nor an IP address, or when
    /// signing fails; failures are not cached.
    pub async fn get(&self, host: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        self.entry(host).await.map(|minted| minted.key)
    }

    /// The server configuration presenting `host`'s leaf (see
    /// [`intercept_server_config`]), cached with it: the cheap way to serve a
    /// CONNECT, and the one that lets sessions resume.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        self.entry(host).await.map(|minted| minted.server_config)
    }

    /// How many leaves have been minted since the cache was created.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    async fn entry(&self, host: &str) -> Result<Minted, TlsError> {
        self.entries
            .try_get_with_by_ref(host, async {
                let key = Arc::new(self.ca.issue_leaf(host)?);
                self.minted.fetch_add(1, Ordering::Relaxed);
                let server_config = build_server_config(key.clone(), self.ticketer.clone());
                Ok::<_, LeafError>(Minted { key, server_config })
            })
            .await
            .map_err(|err: Arc<LeafError>| TlsError::Leaf((*err).clone()))
    }
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("hosts", &self.entries.entry_count())
            .field("minted", &self.minted())
            .finish()
    }
}

/// The server configuration for one intercepted connection presenting
/// `leaf`: ALPN `h2` then `http/1.1`, no client authentication, TLS 1.2 and
/// 1.3, no early data, rustls's default in-memory session cache.
///
/// Prefer [`LeafCache::server_config`], which builds this once per host.
pub fn intercept_server_config(leaf: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    build_server_config(leaf, None)
}

fn build_server_config(
    leaf: Arc<CertifiedKey>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
    config.alpn_protocols = INTERCEPT_ALPN.iter().map(|p| p.to_vec()).collect();
    if let Some(ticketer) = ticketer {
        config.ticketer = ticketer;
    }
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::{client_trusting, handshake};

    fn cache() -> (Arc<CertificateAuthority>, LeafCache) {
        let ca = Arc::new(CertificateAuthority::generate().unwrap());
        (ca.clone(), LeafCache::new(ca))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_for_one_host_mint_once() {
        let (_, cache) = cache();
        let cache = Arc::new(cache);
        let start = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, start) = (cache.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    cache.get("api.example.com").await.unwrap()
                })
            })
            .collect();
        let mut leaves = Vec::new();
        for task in tasks {
            leaves.push(task.await.unwrap());
        }
        assert_eq!(cache.minted(), 1);
        assert!(leaves.iter().all(|leaf| Arc::ptr_eq(leaf, &leaves[0])));

        cache.get("other.example.com").await.unwrap();
        cache.get("api.example.com").await.unwrap();
        assert_eq!(cache.minted(), 2);
    }

    #[tokio::test]
    async fn the_server_config_is_cached_with_its_leaf() {
        let (_, cache) = cache();
        let config = cache.server_config("example.com").await.unwrap();
        let again = cache.server_config("example.com").await.unwrap();
        assert!(Arc::ptr_eq(&config, &again));
        assert_eq!(cache.minted(), 1);
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let leaf = cache.get("example.com").await.unwrap();
        assert_eq!(cache.minted(), 1);
        assert_eq!(leaf.cert.len(), 2);
    }

    #[tokio::test]
    async fn invalid_hosts_fail_and_are_not_cached() {
        let (_, cache) = cache();
        for _ in 0..2 {
            let err = cache.get("*.example.com").await.unwrap_err();
            assert!(
                matches!(err, TlsError::Leaf(LeafError::InvalidHost { .. })),
                "{err}"
            );
        }
        assert_eq!(cache.minted(), 0);
        assert_eq!(cache.entries.entry_count(), 0);
    }

    #[tokio::test]
    async fn an_agent_trusting_the_ca_completes_a_handshake_with_h2() {
        let (ca, cache) = cache();
        let server = cache.server_config("api.example.com").await.unwrap();
        let both: &[&[u8]] = &[b"h2", b"http/1.1"];
        let alpn = handshake(
            client_trusting(ca.cert_der(), both),
            server.clone(),
            "api.example.com",
        )
        .await
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

        let http1: &[&[u8]] = &[b"http/1.1"];
        let alpn = handshake(
            client_trusting(ca.cert_der(), http1),
            server.clone(),
            "api.example.com",
        )
        .await
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

        let alpn = handshake(
            client_trusting(ca.cert_der(), &[]),
            server,
            "api.example.com",
        )
        .await
        .unwrap();
        assert_eq!(alpn, None);
    }

    #[tokio::test]
    async fn the_uncached_server_config_works_too() {
        let (ca, cache) = cache();
        let leaf = cache.get("127.0.0.1").await.unwrap();
        let server = intercept_server_config(leaf);
        let alpn = handshake(
            client_trusting(ca.cert_der(), &[b"h2"]),
            server,
            "127.0.0.1",
        )
        .await
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    }

    #[tokio::test]
    async fn an_agent_refuses_a_leaf_for_another_host_or_from_another_ca() {
        let (ca, cache) = cache();
        let server = cache.server_config("api.example.com").await.unwrap();
        let err = handshake(
            client_trusting(ca.cert_der(), &[]),
            server.clone(),
            "evil.example.com",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");

        let stranger = CertificateAuthority::generate().unwrap();
        let err = handshake(
            client_trusting(stranger.cert_der(), &[]),
            server,
            "api.example.com",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
