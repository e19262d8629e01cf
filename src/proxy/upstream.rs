//! The upstream client: pooled, TLS-verifying, never following redirects,
//! and dialling only addresses the request's rule permits.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::address::AddressPolicy;
use super::client::Client;
use crate::policy::UpstreamHttp;
use crate::reason::Reason;
use crate::stream::Io;

/// The client for one address policy.
pub(crate) type UpstreamClient = Client;

/// One pooled client per address policy, so a connection opened under a
/// permissive rule is never reused for a request under a stricter one.
pub(crate) struct Upstreams {
    public: UpstreamClient,
    private: UpstreamClient,
    loopback: UpstreamClient,
}

impl Upstreams {
    /// Builds the clients. `tls` verifies upstream certificates (webpki roots
    /// plus the configured extra bundle).
    pub(crate) fn new(
        tls: Arc<rustls::ClientConfig>,
        resolver: Arc<dyn Resolve>,
        connect_timeout: Duration,
    ) -> Self {
        let build = |policy| {
            Client::new(GuardedConnector::new(
                resolver.clone(),
                policy,
                tls.clone(),
                connect_timeout,
            ))
        };
        Upstreams {
            public: build(AddressPolicy::PublicOnly),
            private: build(AddressPolicy::AllowPrivate),
            loopback: build(AddressPolicy::LoopbackOnly),
        }
    }

    /// Closes pooled connections that have been idle too long.
    pub(crate) fn sweep(&self) {
        self.public.sweep();
        self.private.sweep();
        self.loopback.sweep();
    }

    /// The client for requests under `policy`.
    pub(crate) fn client(&self, policy: AddressPolicy) -> &UpstreamClient {
        match policy {
            AddressPolicy::PublicOnly => &self.public,
            AddressPolicy::AllowPrivate => &self.private,
            AddressPolicy::LoopbackOnly => &self.loopback,
        }
    }
}

/// Why an upstream connection was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// Every address of the host is outside what the rule permits.
    #[error("{host} resolves only to addresses this rule may not reach ({addrs})")]
    Refused {
        /// The host asked for.
        host: String,
        /// The refused addresses.
        addrs: String,
    },
    /// DNS failed.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host asked for.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The TLS handshake or certificate verification failed.
    #[error("TLS with {host} failed: {source}")]
    Tls {
        /// The host asked for.
        host: String,
        /// The TLS error.
        source: io::Error,
    },
    /// The rule says `upstream_http: http2`, and the upstream's TLS did not
    /// agree to `h2`.
    #[error("{host} did not agree to HTTP/2 in TLS (ALPN){detail}, and the rule says upstream_http: http2")]
    NoHttp2 {
        /// The host asked for.
        host: String,
        /// More about the refusal, or nothing.
        detail: String,
    },
    /// Resolve + connect + handshake took too long.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The URI has no usable host.
    #[error("upstream URI has no host")]
    NoHost,
}

impl ConnectError {
    /// The stable reason for records and responses.
    pub(crate) fn reason(&self) -> Reason {
        match self {
            ConnectError::Refused { .. } => Reason::DestinationRefused,
            ConnectError::Tls { .. } => Reason::UpstreamTlsFailed,
            ConnectError::Timeout(_) => Reason::UpstreamTimeout,
            ConnectError::NoHttp2 { .. } => Reason::UpstreamError,
            ConnectError::Resolve { .. } | ConnectError::Connect { .. } | ConnectError::NoHost => {
                Reason::UpstreamConnectFailed
            }
        }
    }
}

/// Resolves, checks the resolved addresses against the policy, dials only a
/// permitted one, and speaks TLS when the scheme is https.
#[derive(Clone)]
pub(crate) struct GuardedConnector {
    resolver: Arc<dyn Resolve>,
    policy: AddressPolicy,
    /// Offers `http/1.1` only.
    tls: TlsConnector,
    /// Offers `h2`, then `http/1.1`.
    tls_auto: TlsConnector,
    /// Offers `h2` only.
    tls_h2: TlsConnector,
    pub(crate) connect_timeout: Duration,
}

/// `config` offering `protocols` in ALPN (the configuration is shared with
/// the credential sources, whose client speaks HTTP/1.1 only).
fn offering(config: &rustls::ClientConfig, protocols: &[&[u8]]) -> TlsConnector {
    let mut config = config.clone();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

impl GuardedConnector {
    /// Dials under `policy`; TLS verified by `tls`.
    pub(crate) fn new(
        resolver: Arc<dyn Resolve>,
        policy: AddressPolicy,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Self {
        GuardedConnector {
            resolver,
            policy,
            tls: offering(&tls, &[b"http/1.1"]),
            tls_auto: offering(&tls, &[b"h2", b"http/1.1"]),
            tls_h2: offering(&tls, &[b"h2"]),
            connect_timeout,
        }
    }

    /// Dials `host:port` at an address the policy permits, with TLS when
    /// asked, offering HTTP/1.1 only.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<Io, ConnectError> {
        self.connect_offering(host, port, tls, UpstreamHttp::Http1)
            .await
    }

    /// [`GuardedConnector::connect`], offering in ALPN what `http` allows;
    /// [`Io::is_h2`] says what the upstream chose.
    pub(crate) async fn connect_offering(
        &self,
        host: &str,
        port: u16,
        tls: bool,
        http: UpstreamHttp,
    ) -> Result<Io, ConnectError> {
        let stream = dial(self.resolver.as_ref(), host, port, self.policy).await?;
        if !tls {
            return Ok(Io::Plain(stream));
        }
        let connector = match http {
            UpstreamHttp::Auto => &self.tls_auto,
            UpstreamHttp::Http1 => &self.tls,
            UpstreamHttp::Http2 => &self.tls_h2,
        };
        let name = ServerName::try_from(host.to_string()).map_err(|_| ConnectError::Tls {
            host: host.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a valid server name"),
        })?;
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|source| ConnectError::Tls {
                host: host.to_string(),
                source,
            })?;
        Ok(Io::Tls(Box::new(tls)))
    }
}

/// Name resolution, behind a trait so tests can see (and count) every lookup.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host`, each with `port`.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> crate::BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (getaddrinfo, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> crate::BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Remembers answers for a short while, so checking a destination before a
/// credential is fetched and dialling it afterwards cost one lookup. Every
/// use still checks the addresses it gets against the request's policy.
pub(crate) struct CachingResolver {
    inner: Arc<dyn Resolve>,
    answers: moka::future::Cache<String, Arc<Vec<IpAddr>>>,
}

impl CachingResolver {
    /// Caches `inner`'s answers for `ttl`.
    pub(crate) fn new(inner: Arc<dyn Resolve>, ttl: Duration) -> Self {
        CachingResolver {
            inner,
            answers: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
    }
}

impl Resolve for CachingResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> crate::BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            let ips = self
                .answers
                .try_get_with(host.to_string(), async {
                    let addrs = self.inner.resolve(host, 0).await?;
                    Ok::<_, io::Error>(Arc::new(
                        addrs.into_iter().map(|a| a.ip()).collect::<Vec<_>>(),
                    ))
                })
                .await
                .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
            Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
        })
    }
}

/// Resolves `host` and fails unless at least one address is one `policy`
/// permits: run before a credential is fetched for the destination. The
/// dial re-checks the address it actually uses.
pub(crate) async fn check_destination(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    policy: AddressPolicy,
) -> Result<(), ConnectError> {
    // An address literal needs no lookup and no list.
    if let Ok(ip) = host.parse::<IpAddr>() {
        if policy.permits(ip) {
            return Ok(());
        }
    }
    permitted(resolver, host, port, policy).await.map(drop)
}

async fn permitted(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    policy: AddressPolicy,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => resolver
            .resolve(host, port)
            .await
            .map_err(|source| ConnectError::Resolve {
                host: host.to_string(),
                source,
            })?,
    };
    let (allowed, refused): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|addr| policy.permits(addr.ip()));
    if allowed.is_empty() {
        let addrs = refused
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ConnectError::Refused {
            host: host.to_string(),
            addrs,
        });
    }
    Ok(allowed)
}

/// Resolves `host`, keeps the addresses `policy` permits, and connects to
/// one of them. The address dialled is one of the addresses just checked:
/// there is no second lookup for a rebinding resolver to answer differently.
pub(crate) async fn dial(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    policy: AddressPolicy,
) -> Result<TcpStream, ConnectError> {
    let allowed = permitted(resolver, host, port, policy).await?;
    let mut last_err = None;
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) => last_err = Some(ConnectError::Connect { addr, source }),
        }
    }
    Err(last_err.expect("at least one address was tried"))
}
