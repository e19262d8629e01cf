//! TLS: the interception CA, the leaf certificates it issues, and the client
//! configuration for real upstreams.
//!
//! After a CONNECT is authorised, credgate terminates the agent's TLS with a
//! leaf certificate for the CONNECT host, issued by credgate's own CA
//! ([`CertificateAuthority`], created by [`init_ca`]) and cached by host
//! ([`LeafCache`]). Towards the real upstream it is an ordinary, always
//! verifying TLS client ([`upstream_client_config`]).
//!
//! Every rustls configuration is built from [`provider`] (aws-lc-rs), so the
//! process has exactly one crypto provider and never depends on a global
//! default being installed.

use std::sync::{Arc, OnceLock};

mod ca;
mod ca_files;
mod error;
mod leaf;
mod pkcs12;
#[cfg(test)]
mod test_support;
mod upstream;

pub use ca::CertificateAuthority;
pub use ca_files::{init_ca, CaFiles};
pub use error::{LeafError, TlsError};
pub use leaf::{intercept_server_config, LeafCache};
pub use pkcs12::{trust_store, TrustedCertificate};
pub use upstream::upstream_client_config;

/// The process-wide crypto provider (aws-lc-rs).
///
/// Use it for every `ServerConfig`/`ClientConfig`
/// (`builder_with_provider(tls::provider())`) so that no code path silently
/// falls back to another provider. Cloning the returned `Arc` is cheap; the
/// provider itself is built once.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}
