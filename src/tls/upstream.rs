//! The client side: talking TLS to real upstreams.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::ca_files::read_certificates;
use super::error::TlsError;
use super::provider;
use crate::provider::Provider;

/// The client configuration for real upstreams.
///
/// Trusts the webpki (Mozilla) roots plus every certificate in
/// `extra_ca_bundle` (a PEM file, read through `files`; non-certificate
/// blocks are ignored, a file without any certificate is an error). ALPN offers only
/// `http/1.1`: the credential sources speak nothing else. The proxy's upstream
/// connector derives configurations that also offer `h2` from it.
/// Certificate verification is always on: there is deliberately no way to
/// turn it off. Build it once per configuration load, not per request.
pub fn upstream_client_config(
    extra_ca_bundle: Option<&Path>,
    files: &dyn Provider,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_bundle {
        add_bundle(&mut roots, path, files)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn add_bundle(
    roots: &mut RootCertStore,
    path: &Path,
    files: &dyn Provider,
) -> Result<(), TlsError> {
    let data = files.read(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    for (index, cert) in read_certificates(path, &data)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|source| TlsError::BundleCertificate {
                path: path.to_path_buf(),
                index: index + 1,
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::{handshake, TempDir};
    use crate::tls::{CertificateAuthority, LeafCache};
    use rustls::CertificateError;
    use std::fs;

    async fn upstream_for(ca: CertificateAuthority, host: &str) -> Arc<rustls::ServerConfig> {
        LeafCache::new(Arc::new(ca))
            .server_config(host)
            .await
            .unwrap()
    }

    fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    }

    #[tokio::test]
    async fn an_extra_bundle_makes_a_test_ca_trusted() {
        let tmp = TempDir::new();
        let ca = CertificateAuthority::generate().unwrap();
        let unrelated = CertificateAuthority::generate().unwrap();
        let bundle = tmp.path().join("bundle.pem");
        fs::write(
            &bundle,
            format!("{}{}", unrelated.cert_pem(), ca.cert_pem()),
        )
        .unwrap();
        let server = upstream_for(ca, "localhost").await;

        let client = upstream_client_config(Some(&bundle), &crate::provider::ProcessEnv).unwrap();
        assert_eq!(client.alpn_protocols, [b"http/1.1".to_vec()]);
        let alpn = handshake(client, server.clone(), "localhost")
            .await
            .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

        let err = handshake(
            upstream_client_config(None, &crate::provider::ProcessEnv).unwrap(),
            server,
            "localhost",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                ))
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_bundle_does_not_relax_name_checks() {
        let tmp = TempDir::new();
        let ca = CertificateAuthority::generate().unwrap();
        let bundle = tmp.path().join("bundle.pem");
        fs::write(&bundle, ca.cert_pem()).unwrap();
        let server = upstream_for(ca, "localhost").await;
        let client = upstream_client_config(Some(&bundle), &crate::provider::ProcessEnv).unwrap();
        let err = handshake(client, server, "example.com").await.unwrap_err();
        assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_bad_bundle_is_an_error_naming_the_file() {
        let tmp = TempDir::new();
        let missing = tmp.path().join("missing.pem");
        let err = upstream_client_config(Some(&missing), &crate::provider::ProcessEnv).unwrap_err();
        assert!(
            matches!(err, TlsError::Io { .. }) && err.to_string().contains("missing.pem"),
            "{err}"
        );

        let empty = tmp.path().join("empty.pem");
        fs::write(&empty, "# no certificates here\n").unwrap();
        let err = upstream_client_config(Some(&empty), &crate::provider::ProcessEnv).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");

        let garbage = tmp.path().join("garbage.pem");
        fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = upstream_client_config(Some(&garbage), &crate::provider::ProcessEnv).unwrap_err();
        assert!(
            matches!(err, TlsError::BundleCertificate { index: 1, .. })
                && err.to_string().contains("garbage.pem"),
            "{err}"
        );
    }
}
