//! Helpers shared by the `tls` tests: temporary directories and a real
//! handshake over an in-memory pipe.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::provider;
use crate::secret::random_bytes;

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        let suffix = u64::from_be_bytes(random_bytes::<8>());
        let path = std::env::temp_dir().join(format!("credgate-tls-test-{suffix:016x}"));
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client configuration trusting only `ca` and offering `alpn`.
pub(super) fn client_trusting(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .expect("CA certificate is a trust anchor");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Runs a full handshake between `client` (connecting to `name`) and
/// `server` over an in-memory pipe; returns the ALPN protocol the client
/// negotiated, or the client's error.
pub(super) async fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<Option<Vec<u8>>, std::io::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).expect("valid server name");
    let server_side =
        tokio::spawn(async move { TlsAcceptor::from(server).accept(server_io).await });
    let client_side = TlsConnector::from(client).connect(name, client_io).await;
    // The server's outcome follows the client's: on a client failure it sees an alert or EOF.
    let server_side = server_side.await.expect("server task");
    let stream = client_side?;
    server_side?;
    Ok(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}
