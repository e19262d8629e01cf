//! The interception CA: load or generate it, and issue leaf certificates.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use zeroize::Zeroizing;

use super::ca_files::{read_certificate, read_private_key};
use super::error::{LeafError, TlsError};
use super::provider;
use crate::secret::{fingerprint, random_bytes};

/// How far back a certificate's validity starts, so that clients whose clock
/// runs behind ours still accept it.
const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);
/// How long a leaf is valid. Short, because leaves are cheap to re-issue and
/// a leaked leaf key should stop being useful soon.
pub(super) const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a generated CA is valid (about five years).
const CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 60 * 60);
/// The name a load-time test leaf is issued for; `.invalid` never resolves.
const SELF_TEST_HOST: &str = "self-test.credgate.invalid";
/// Below this many days of validity left, loading the CA logs a warning.
const EXPIRY_WARNING_DAYS: i64 = 30;
/// What a key file that parses as PEM but not as a usable key is told.
const UNSUPPORTED_KEY: &str = "not a supported private key (use ECDSA P-256/P-384, Ed25519 or RSA)";
/// Common names longer than this violate X.509's upper bound (RFC 5280 ub-common-name).
const MAX_COMMON_NAME: usize = 64;

/// The CA that signs the leaf certificates presented to agents.
///
/// Holds the signing key privately: nothing outside `tls` can read it, and
/// `Debug` shows only the certificate's fingerprint.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

impl CertificateAuthority {
    /// Loads the PEM certificate and PEM private key written by `ca init`
    /// (or supplied by the operator).
    ///
    /// Refuses a key file that group or others can access (like ssh does),
    /// a certificate file holding other than exactly one certificate, a
    /// certificate that is not a CA (no CA:TRUE, no keyCertSign) or not valid
    /// now, a key that does not belong to the certificate, and a CA whose test
    /// leaf does not verify. Errors name the file concerned. Logs a warning
    /// when the CA expires within 30 days.
    pub fn load(cert: &Path, key: &Path) -> Result<CertificateAuthority, TlsError> {
        let cert_der = read_certificate(cert)?;
        let key_der = read_private_key(key)?;
        check_ca_certificate(&cert_der, cert)?;
        check_key_matches(&cert_der, &key_der, cert, key)?;
        let key_pair = KeyPair::try_from(&key_der).map_err(|_| TlsError::Pem {
            path: key.to_path_buf(),
            problem: UNSUPPORTED_KEY.into(),
        })?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key_pair).map_err(|err| TlsError::Pem {
                path: cert.to_path_buf(),
                problem: format!("cannot read the certificate's issuer details: {err}"),
            })?;
        let ca = Self::from_parts(issuer, cert_der);
        ca.self_test(cert)?;
        Ok(ca)
    }

    /// Generates a fresh CA in memory: ECDSA P-256, a common name with a
    /// random suffix (so two installations never look alike), CA:true with
    /// path length 0, keyCertSign + cRLSign, valid for about five years.
    ///
    /// `ca init` uses this before writing the files; tests use it directly
    /// for throwaway CAs whose key never touches the disk.
    pub fn generate() -> Result<CertificateAuthority, TlsError> {
        let now = SystemTime::now();
        let suffix = u32::from_be_bytes(random_bytes::<4>());
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("credgate interception CA {suffix:08x}"),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "credgate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + CA_VALIDITY).into();
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TlsError::Generate)?;
        let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
        Ok(Self::from_parts(
            Issuer::new(params, key),
            cert.der().clone(),
        ))
    }

    /// The CA certificate in PEM: what agents must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER, e.g. for a `RootCertStore`.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a leaf certificate for `host` (a DNS name, or an IP literal
    /// without brackets) with its own fresh ECDSA P-256 key.
    ///
    /// The leaf carries the host as SAN (DNS or IP as appropriate) and CN,
    /// EKU serverAuth, and is valid from one hour ago for 24 hours. The
    /// returned chain is `[leaf, CA]`. Not cached: [`super::LeafCache`] is
    /// what the proxy calls.
    pub fn issue_leaf(&self, host: &str) -> Result<CertifiedKey, LeafError> {
        let san = subject_alt_name(host)?;
        let sign_error = |source| LeafError::Sign {
            host: host.to_owned(),
            source,
        };
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        if host.len() <= MAX_COMMON_NAME {
            params.distinguished_name.push(DnType::CommonName, host);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + LEAF_VALIDITY).into();

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_error)?;
        let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing_key = provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|source| LeafError::Key {
                host: host.to_owned(),
                source,
            })?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing_key,
        ))
    }

    /// The private key in PKCS#8 PEM, for `ca init` to write to its 0600 file.
    pub(super) fn private_key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.issuer.key().serialize_pem())
    }

    fn from_parts(issuer: Issuer<'static, KeyPair>, cert_der: CertificateDer<'static>) -> Self {
        let cert_pem = certificate_pem(&cert_der);
        CertificateAuthority {
            issuer,
            cert_der,
            cert_pem,
        }
    }

    /// Issues a leaf and verifies it the way an agent would, so that a CA
    /// that cannot work is reported at startup (naming `cert_path`), not on
    /// the first CONNECT.
    fn self_test(&self, cert_path: &Path) -> Result<(), TlsError> {
        let leaf = self.issue_leaf(SELF_TEST_HOST)?;
        let name = ServerName::try_from(SELF_TEST_HOST).expect("the self-test host is a DNS name");
        verify_chain(&self.cert_der, &leaf.cert, &name, UnixTime::now()).map_err(|source| {
            TlsError::CaUnusable {
                path: cert_path.to_path_buf(),
                source,
            }
        })
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert", &fingerprint(&self.cert_der))
            .finish_non_exhaustive()
    }
}

/// Verifies `chain` (leaf first) for `name` at time `now` against `ca`
/// alone, with the same verifier rustls clients use.
fn verify_chain(
    ca: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
    name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|err| rustls::Error::General(err.to_string()))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    verifier.verify_server_cert(leaf, intermediates, name, &[], now)?;
    Ok(())
}

/// The SAN for `host`: an IP address when it parses as one, else a DNS name
/// that must be syntactically valid (no wildcard, brackets or zone id).
fn subject_alt_name(host: &str) -> Result<SanType, LeafError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || LeafError::InvalidHost {
        host: host.to_owned(),
    };
    DnsName::try_from(host).map_err(|_| invalid())?;
    Ia5String::try_from(host)
        .map(SanType::DnsName)
        .map_err(|_| invalid())
}

/// Ensures the certificate is a CA and valid now. rustls takes any trust
/// anchor as an issuer and ignores its validity, but the OpenSSL-based
/// clients agents use check both, so such a CA would only fail later, in
/// the agent.
fn check_ca_certificate(cert_der: &CertificateDer<'_>, path: &Path) -> Result<(), TlsError> {
    let problem = |problem: String| TlsError::CaCertificate {
        path: path.to_path_buf(),
        problem,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| problem("not a valid X.509 certificate".into()))?;
    match cert.basic_constraints() {
        Ok(Some(constraints)) if constraints.value.ca => {}
        Ok(_) => return Err(problem("basicConstraints does not say CA:TRUE".into())),
        Err(_) => return Err(problem("basicConstraints is malformed or repeated".into())),
    }
    match cert.key_usage() {
        Ok(Some(usage)) if !usage.value.key_cert_sign() => {
            return Err(problem("keyUsage does not allow keyCertSign".into()))
        }
        Ok(_) => {}
        Err(_) => return Err(problem("keyUsage is malformed or repeated".into())),
    }
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now < validity.not_before {
        return Err(problem(format!("not valid before {}", validity.not_before)));
    }
    if now > validity.not_after {
        return Err(problem(format!("expired on {}", validity.not_after)));
    }
    if validity
        .time_to_expiration()
        .map_or(0, |left| left.whole_days())
        < EXPIRY_WARNING_DAYS
    {
        tracing::warn!(
            path = %path.display(),
            expires = %validity.not_after,
            "the interception CA expires soon; create a new one with `credgate ca init --force` and give agents the new certificate"
        );
    }
    Ok(())
}

/// Ensures the key belongs to the certificate, so a mismatched pair fails
/// here with a clear message instead of as a handshake failure later.
fn check_key_matches(
    cert_der: &CertificateDer<'static>,
    key_der: &PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
) -> Result<(), TlsError> {
    match CertifiedKey::from_der(vec![cert_der.clone()], key_der.clone_key(), &provider()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        Err(rustls::Error::InvalidCertificate(err)) => Err(TlsError::Pem {
            path: cert.to_path_buf(),
            problem: format!("not a usable certificate: {err}"),
        }),
        Err(_) => Err(TlsError::Pem {
            path: key.to_path_buf(),
            problem: UNSUPPORTED_KEY.into(),
        }),
    }
}

/// PEM-encodes a certificate (64-column base64, LF line endings).
fn certificate_pem(der: &CertificateDer<'_>) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::with_capacity(encoded.len() + encoded.len() / 64 + 60);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CertificateError, InconsistentKeys};

    fn name(host: &str) -> ServerName<'static> {
        ServerName::try_from(host.to_owned()).unwrap()
    }

    fn verify_now(
        ca: &CertificateAuthority,
        leaf: &CertifiedKey,
        host: &str,
    ) -> Result<(), rustls::Error> {
        verify_chain(ca.cert_der(), &leaf.cert, &name(host), UnixTime::now())
    }

    fn at_offset(seconds: i64) -> UnixTime {
        let now = UnixTime::now().as_secs() as i64;
        UnixTime::since_unix_epoch(Duration::from_secs((now + seconds) as u64))
    }

    /// The random suffix of the CA's common name, read from the DER.
    fn cn_suffix(ca: &CertificateAuthority) -> String {
        let der = ca.cert_der().as_ref();
        let marker = b"credgate interception CA ";
        let at = der
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("common name present");
        String::from_utf8(der[at + marker.len()..at + marker.len() + 8].to_vec()).unwrap()
    }

    #[test]
    fn a_leaf_verifies_for_its_dns_name_only() {
        let ca = CertificateAuthority::generate().unwrap();
        let leaf = ca.issue_leaf("api.example.com").unwrap();
        verify_now(&ca, &leaf, "api.example.com").unwrap();
        for other in [
            "example.com",
            "other.example.com",
            "x.api.example.com",
            "api.example.co",
        ] {
            let err = verify_now(&ca, &leaf, other).unwrap_err();
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForNameContext { .. }
                    )
                ),
                "{other}: {err:?}"
            );
        }
    }

    #[test]
    fn ip_hosts_get_ip_address_sans() {
        let ca = CertificateAuthority::generate().unwrap();
        for (host, wrong) in [("127.0.0.1", "127.0.0.2"), ("::1", "::2")] {
            let leaf = ca.issue_leaf(host).unwrap();
            verify_now(&ca, &leaf, host).unwrap();
            assert!(
                verify_now(&ca, &leaf, wrong).is_err(),
                "{host} leaf accepted for {wrong}"
            );
        }
        // A DNS leaf is no good for an address, even a well-known one.
        let leaf = ca.issue_leaf("localhost").unwrap();
        assert!(verify_now(&ca, &leaf, "127.0.0.1").is_err());
    }

    #[test]
    fn a_leaf_has_its_own_key_and_chains_to_the_ca() {
        let ca = CertificateAuthority::generate().unwrap();
        let leaf = ca.issue_leaf("example.com").unwrap();
        assert_eq!(leaf.cert.len(), 2);
        assert_eq!(&leaf.cert[1], ca.cert_der());
        leaf.keys_match().unwrap();
        let leaf_key_with_ca_cert =
            CertifiedKey::new(vec![ca.cert_der().clone()], leaf.key.clone());
        assert!(matches!(
            leaf_key_with_ca_cert.keys_match(),
            Err(rustls::Error::InconsistentKeys(
                InconsistentKeys::KeyMismatch
            ))
        ));
        let again = ca.issue_leaf("example.com").unwrap();
        assert_ne!(leaf.key.public_key(), again.key.public_key());
        assert_ne!(leaf.cert[0], again.cert[0]);
    }

    #[test]
    fn a_leaf_is_valid_from_an_hour_ago_for_a_day() {
        let ca = CertificateAuthority::generate().unwrap();
        let leaf = ca.issue_leaf("example.com").unwrap();
        let host = name("example.com");
        for ok in [-50 * 60, 0, 23 * 60 * 60] {
            verify_chain(ca.cert_der(), &leaf.cert, &host, at_offset(ok))
                .unwrap_or_else(|err| panic!("offset {ok}s: {err:?}"));
        }
        for bad in [-2 * 60 * 60, 25 * 60 * 60] {
            assert!(
                verify_chain(ca.cert_der(), &leaf.cert, &host, at_offset(bad)).is_err(),
                "offset {bad}s accepted"
            );
        }
    }

    #[test]
    fn a_leaf_from_another_ca_does_not_verify() {
        let ca = CertificateAuthority::generate().unwrap();
        let stranger = CertificateAuthority::generate().unwrap();
        let leaf = stranger.issue_leaf("example.com").unwrap();
        let err = verify_now(&ca, &leaf, "example.com").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn hosts_that_are_not_names_or_addresses_are_refused() {
        let ca = CertificateAuthority::generate().unwrap();
        for host in [
            "",
            "*.example.com",
            "[::1]",
            "fe80::1%eth0",
            "exa mple.com",
            "example.com:443",
            "a..b",
            "1.2.3",
            "bad\u{0}host",
            "exämple.com",
        ] {
            assert!(
                matches!(ca.issue_leaf(host), Err(LeafError::InvalidHost { .. })),
                "{host:?} accepted"
            );
        }
    }

    #[test]
    fn a_very_long_name_still_gets_a_leaf() {
        let ca = CertificateAuthority::generate().unwrap();
        let host = format!("{}.{}.example.com", "a".repeat(63), "b".repeat(63));
        let leaf = ca.issue_leaf(&host).unwrap();
        verify_now(&ca, &leaf, &host).unwrap();
    }

    #[test]
    fn generated_cas_differ_and_pass_the_self_test() {
        let one = CertificateAuthority::generate().unwrap();
        let two = CertificateAuthority::generate().unwrap();
        assert_ne!(cn_suffix(&one), cn_suffix(&two));
        assert!(cn_suffix(&one).chars().all(|c| c.is_ascii_hexdigit()));
        assert!(one.self_test(Path::new("generated")).is_ok());
        assert!(one.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(one.cert_pem().ends_with("-----END CERTIFICATE-----\n"));
        assert!(one.cert_pem().lines().all(|line| line.len() <= 64));
    }

    #[test]
    fn pem_round_trips_to_the_same_certificate() {
        use rustls::pki_types::pem::PemObject;
        let ca = CertificateAuthority::generate().unwrap();
        let parsed = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(&parsed, ca.cert_der());
    }

    #[test]
    fn the_ca_certificate_says_what_it_may_do() {
        let ca = CertificateAuthority::generate().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        let constraints = cert.basic_constraints().unwrap().unwrap();
        assert!(constraints.critical);
        assert!(constraints.value.ca);
        assert_eq!(constraints.value.path_len_constraint, Some(0));
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        assert!(!usage.digital_signature());
        assert!(cert.name_constraints().unwrap().is_none());
        let validity = cert.validity().time_to_expiration().unwrap();
        let years = validity.whole_days() as f64 / 365.0;
        assert!((4.9..=5.1).contains(&years), "{years} years");
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert!(cn.starts_with("credgate interception CA "), "{cn}");
    }

    #[test]
    fn the_leaf_certificate_is_a_server_certificate_for_the_host() {
        let ca = CertificateAuthority::generate().unwrap();
        let leaf = ca.issue_leaf("api.example.com").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth && !eku.any);
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "api.example.com");
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans.len(), 1);
        assert!(matches!(
            sans[0],
            x509_parser::extensions::GeneralName::DNSName("api.example.com")
        ));
        let span = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(span, 25 * 60 * 60);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert_ne!(cert.public_key().raw, ca_cert.public_key().raw);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let ca = CertificateAuthority::generate().unwrap();
        let shown = format!("{ca:?}");
        assert!(shown.contains("sha256:"), "{shown}");
        let key_pem = ca.private_key_pem();
        let key_body = key_pem.lines().nth(1).unwrap();
        assert!(!shown.contains(key_body), "{shown}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }
}
