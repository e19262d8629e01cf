//! A PKCS #12 trust store (RFC 7292) that Java reads without a password.
//!
//! Java takes its trusted roots from a key store, not from a PEM bundle, so
//! `credgate run` writes one for the JVM (see `cli::run::runtimes`). The file
//! holds certificates only: one `certBag` each, in a single unencrypted
//! `data` content, and no MAC. Since JDK 8u301 / 11.0.12 / 17 such a store
//! loads with no password (`javax.net.ssl.trustStorePassword` unset): there
//! is nothing secret in it to protect, and a MAC keyed by a password written
//! next to it would protect nothing either.
//!
//! Each bag carries a `friendlyName` (the alias `keytool -list` shows; the
//! JDK keys entries by it, so aliases must be unique) and Oracle's
//! trusted-key-usage attribute set to `anyExtendedKeyUsage`: without that
//! attribute the JDK loads a certificate that has no private key beside it
//! but does not treat it as a trusted certificate entry.

use rustls::pki_types::CertificateDer;
use yasna::models::ObjectIdentifier;
use yasna::Tag;

/// `id-data` (PKCS #7).
const ID_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];
/// `certBag` (PKCS #12).
const CERT_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 3];
/// `x509Certificate` (PKCS #9), the type of certificate in a `CertBag`.
const X509_CERTIFICATE: &[u64] = &[1, 2, 840, 113_549, 1, 9, 22, 1];
/// `friendlyName` (PKCS #9): the entry's alias, a BMPString.
const FRIENDLY_NAME: &[u64] = &[1, 2, 840, 113_549, 1, 9, 20];
/// Oracle's `TrustedKeyUsage`: the purposes a certificate is trusted for.
const ORACLE_TRUSTED_KEY_USAGE: &[u64] = &[2, 16, 840, 1, 113_894, 746_875, 1, 1];
/// `anyExtendedKeyUsage` (RFC 5280): trusted for every purpose.
const ANY_EXTENDED_KEY_USAGE: &[u64] = &[2, 5, 29, 37, 0];

/// One certificate of a trust store and the alias it is listed under.
#[derive(Debug, Clone)]
pub struct TrustedCertificate<'a> {
    /// The alias; must be unique within the store (the JDK compares aliases
    /// case-insensitively, so keep them lowercase).
    pub alias: String,
    /// The certificate, DER.
    pub cert: CertificateDer<'a>,
}

/// The DER of a PKCS #12 file trusting exactly `certs`: `PFX { version 3,
/// authSafe = data(AuthenticatedSafe [data(SafeContents [certBag…])]) }`,
/// with no MAC (see the module documentation).
pub fn trust_store(certs: &[TrustedCertificate<'_>]) -> Vec<u8> {
    let safe_contents = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for cert in certs {
                write_cert_bag(w.next(), cert);
            }
        });
    });
    let authenticated_safe = yasna::construct_der(|w| {
        w.write_sequence_of(|w| write_data(w.next(), &safe_contents));
    });
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(3);
            write_data(w.next(), &authenticated_safe);
        });
    })
}

/// `ContentInfo { id-data, [0] EXPLICIT OCTET STRING content }`.
fn write_data(w: yasna::DERWriter<'_>, content: &[u8]) {
    w.write_sequence(|w| {
        w.next().write_oid(&oid(ID_DATA));
        w.next()
            .write_tagged(Tag::context(0), |w| w.write_bytes(content));
    });
}

/// `SafeBag { certBag, [0] EXPLICIT CertBag, SET OF attributes }`.
fn write_cert_bag(w: yasna::DERWriter<'_>, cert: &TrustedCertificate<'_>) {
    w.write_sequence(|w| {
        w.next().write_oid(&oid(CERT_BAG));
        w.next().write_tagged(Tag::context(0), |w| {
            w.write_sequence(|w| {
                w.next().write_oid(&oid(X509_CERTIFICATE));
                w.next()
                    .write_tagged(Tag::context(0), |w| w.write_bytes(cert.cert.as_ref()));
            });
        });
        w.next().write_set_of(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(FRIENDLY_NAME));
                w.next()
                    .write_set_of(|w| w.next().write_bmp_string(&cert.alias));
            });
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(ORACLE_TRUSTED_KEY_USAGE));
                w.next()
                    .write_set_of(|w| w.next().write_oid(&oid(ANY_EXTENDED_KEY_USAGE)));
            });
        });
    });
}

fn oid(components: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(components)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yasna::{ASN1Result, BERReader, BERReaderSeq};

    /// What a parsed bag holds: alias, certificate, trusted purposes.
    #[derive(Debug, PartialEq, Eq)]
    struct Bag {
        alias: String,
        cert: Vec<u8>,
        trusted_for: Vec<ObjectIdentifier>,
    }

    fn read_data(r: BERReader<'_, '_>) -> ASN1Result<Vec<u8>> {
        r.read_sequence(|r| {
            assert_eq!(r.next().read_oid()?, oid(ID_DATA));
            r.next().read_tagged(Tag::context(0), |r| r.read_bytes())
        })
    }

    fn read_bag(r: &mut BERReaderSeq<'_, '_>) -> ASN1Result<Bag> {
        assert_eq!(r.next().read_oid()?, oid(CERT_BAG));
        let cert = r.next().read_tagged(Tag::context(0), |r| {
            r.read_sequence(|r| {
                assert_eq!(r.next().read_oid()?, oid(X509_CERTIFICATE));
                r.next().read_tagged(Tag::context(0), |r| r.read_bytes())
            })
        })?;
        let (mut alias, mut trusted_for) = (String::new(), Vec::new());
        r.next().read_set_of(|r| {
            r.read_sequence(|r| {
                let id = r.next().read_oid()?;
                r.next().read_set_of(|r| {
                    if id == oid(FRIENDLY_NAME) {
                        alias = r.read_bmp_string()?;
                    } else {
                        assert_eq!(id, oid(ORACLE_TRUSTED_KEY_USAGE));
                        trusted_for.push(r.read_oid()?);
                    }
                    Ok(())
                })
            })
        })?;
        Ok(Bag {
            alias,
            cert,
            trusted_for,
        })
    }

    /// Parses `der` as [`trust_store`] writes it; panics on anything else
    /// (a MAC, another version, another content type). `parse_der` also
    /// refuses a SET OF whose members are not in DER order.
    fn parse(der: &[u8]) -> Vec<Bag> {
        let authenticated_safe = yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                assert_eq!(r.next().read_u8()?, 3);
                read_data(r.next())
            })
        })
        .unwrap();
        let contents =
            yasna::parse_der(&authenticated_safe, |r| r.collect_sequence_of(read_data)).unwrap();
        contents
            .iter()
            .flat_map(|safe_contents| {
                yasna::parse_der(safe_contents, |r| {
                    r.collect_sequence_of(|r| r.read_sequence(read_bag))
                })
                .unwrap()
            })
            .collect()
    }

    fn certificate(name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn every_certificate_is_a_trusted_bag_under_its_alias() {
        let certs = [
            TrustedCertificate {
                alias: "credgate-ca".into(),
                cert: certificate("ca.example"),
            },
            TrustedCertificate {
                alias: "system-1".into(),
                cert: certificate("root.example"),
            },
        ];
        let bags = parse(&trust_store(&certs));
        let expected: Vec<Bag> = certs
            .iter()
            .map(|c| Bag {
                alias: c.alias.clone(),
                cert: c.cert.to_vec(),
                trusted_for: vec![oid(ANY_EXTENDED_KEY_USAGE)],
            })
            .collect();
        assert_eq!(bags, expected);
    }

    #[test]
    fn an_empty_store_is_still_a_valid_pfx() {
        assert!(parse(&trust_store(&[])).is_empty());
    }
}
