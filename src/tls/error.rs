//! What can go wrong with the CA, leaf minting and TLS configuration.
//!
//! Messages name the file or host involved so an operator can act on them,
//! and never contain key material: the underlying rcgen/rustls errors only
//! describe structure ("could not parse key"), never bytes.

use std::path::PathBuf;

/// Why a TLS setup step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file or directory could not be read, created or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being attempted ("read", "create", "write"…).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `ca init` would overwrite an existing file.
    #[error("{path} already exists; pass --force to replace it")]
    AlreadyExists {
        /// The file that exists.
        path: PathBuf,
    },
    /// The CA key file can be read by users other than its owner.
    #[error(
        "{path} is accessible by group or others (mode {mode:04o}); the CA key must be private: run `chmod 600 {path}`"
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A PEM file did not hold what it should.
    #[error("{path}: {problem}")]
    Pem {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it, in words.
        problem: String,
    },
    /// The CA certificate and the CA key do not belong together.
    #[error("{key} is not the private key of the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate is not a currently valid CA certificate, so agents
    /// would reject the leaves it signs.
    #[error("{path} cannot act as the interception CA: {problem}")]
    CaCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is missing, in words.
        problem: String,
    },
    /// A test leaf issued by the loaded CA does not verify.
    #[error("{path} cannot act as the interception CA: a certificate it issued does not verify: {source}")]
    CaUnusable {
        /// The certificate file.
        path: PathBuf,
        /// Why a test leaf issued by it did not verify.
        source: rustls::Error,
    },
    /// Generating the CA certificate or key failed.
    #[error("cannot generate the interception CA: {0}")]
    Generate(rcgen::Error),
    /// A leaf certificate could not be issued.
    #[error(transparent)]
    Leaf(#[from] LeafError),
    /// A certificate of the extra CA bundle was rejected as a trust anchor.
    #[error("{path}: certificate #{index} cannot be used as a trust anchor: {source}")]
    BundleCertificate {
        /// The bundle file.
        path: PathBuf,
        /// The 1-based position of the certificate in the file.
        index: usize,
        /// Why it was rejected.
        source: rustls::Error,
    },
    /// rustls refused the configuration (e.g. no usable protocol version).
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Why one leaf certificate could not be issued.
///
/// Separate from [`TlsError`] and `Clone` because the leaf cache hands the
/// same failure to every caller that was waiting on one minting.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LeafError {
    /// The host is neither a valid DNS name nor an IP literal.
    #[error("cannot issue a certificate for {host:?}: not a DNS name or IP address")]
    InvalidHost {
        /// The host as given.
        host: String,
    },
    /// Generating the leaf key or signing the certificate failed.
    #[error("cannot issue a certificate for {host}: {source}")]
    Sign {
        /// The host.
        host: String,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// rustls could not load the freshly generated leaf key.
    #[error("cannot use the key issued for {host}: {source}")]
    Key {
        /// The host.
        host: String,
        /// The underlying error.
        source: rustls::Error,
    },
}
