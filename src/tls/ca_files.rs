//! The CA on disk: `ca init` writes it, `CertificateAuthority::load` reads it.
//!
//! The key file is created with mode 0600 from its first byte (never
//! tightened afterwards, which would leave a window where others can read
//! it), and a key file others can read is refused on load.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::ca::CertificateAuthority;
use super::error::TlsError;

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// Where `ca init` wrote the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// The certificate (PEM, mode 0644): what agents trust.
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
}

/// `credgate ca init`: generates a new CA (see [`CertificateAuthority::generate`])
/// and writes `dir/ca.crt` (0644) and `dir/ca.key` (0600).
///
/// Creates `dir` with mode 0700 when missing. Refuses to touch either file
/// when one exists, unless `force`; with `force` each file is replaced
/// atomically (written beside it, then renamed over it), so the old key's
/// permissions never carry over to the new key.
pub fn init_ca(dir: &Path, force: bool) -> Result<CaFiles, TlsError> {
    let files = CaFiles {
        cert: dir.join("ca.crt"),
        key: dir.join("ca.key"),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error("create", dir))?;
    if !force {
        // Checked up front so that neither file is written when either exists.
        for path in [&files.cert, &files.key] {
            match fs::symlink_metadata(path) {
                Ok(_) => return Err(TlsError::AlreadyExists { path: path.clone() }),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("inspect", path)(err)),
            }
        }
    }
    let ca = CertificateAuthority::generate()?;
    write_file(&files.key, ca.private_key_pem().as_bytes(), KEY_MODE, force)?;
    write_file(&files.cert, ca.cert_pem().as_bytes(), CERT_MODE, force)?;
    Ok(files)
}

/// Reads a PEM file that must hold exactly one certificate.
pub(super) fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let data = fs::read(path).map_err(io_error("read", path))?;
    let mut certs = read_certificates(path, &data)?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(TlsError::Pem {
            path: path.to_path_buf(),
            problem: format!("holds {n} certificates; expected exactly the CA certificate"),
        }),
    }
}

/// Every certificate in a PEM file's content; an error when there is none.
pub(super) fn read_certificates(
    path: &Path,
    data: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_path_buf(),
            problem: format!("not valid PEM: {err}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            problem: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key, refusing a file group or others can access.
///
/// The mode is taken from the opened file, not the path, so the file checked
/// is the file read. PEM errors are reported without their detail, which
/// could quote part of the key.
pub(super) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let mode = file
        .metadata()
        .map_err(io_error("inspect", path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut data = Zeroizing::new(Vec::new());
    file.read_to_end(&mut data)
        .map_err(io_error("read", path))?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|err| TlsError::Pem {
        path: path.to_path_buf(),
        problem: match err {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
            _ => "not a valid PEM private key".into(),
        },
    })
}

/// Writes `contents` to a file created with `mode`. Without `replace` the
/// file must not exist (checked atomically by `create_new`); with it, the
/// content goes to a fresh sibling that is then renamed over `path`.
fn write_file(path: &Path, contents: &[u8], mode: u32, replace: bool) -> Result<(), TlsError> {
    if !replace {
        return write_new(path, contents, mode).map_err(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => TlsError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => io_error("write", path)(err),
        });
    }
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let suffix = u64::from_be_bytes(crate::secret::random_bytes::<8>());
    let staging = path.with_file_name(format!(".{file_name}.{suffix:016x}.tmp"));
    write_new(&staging, contents, mode).map_err(io_error("write", &staging))?;
    fs::rename(&staging, path).map_err(|err| {
        // Best effort: the staging file holds the same content the caller failed to install.
        let _ = fs::remove_file(&staging);
        io_error("replace", path)(err)
    })
}

/// Creates `path` (which must not exist) with `mode` and writes `contents`;
/// removes the partial file when writing fails.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    let written = (|| {
        if mode != KEY_MODE {
            // A restrictive umask must not make the public certificate unreadable
            // to agents; widening happens before any byte is written.
            file.set_permissions(Permissions::from_mode(mode))?;
        }
        file.write_all(contents)?;
        file.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::TempDir;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    /// Writes a PEM key file the way an operator might (mode 0600 unless told otherwise).
    fn write_key(path: &Path, pem: &str) {
        write_new(path, pem.as_bytes(), KEY_MODE).unwrap();
    }

    #[test]
    fn init_writes_a_private_key_and_a_public_certificate() {
        let tmp = TempDir::new();
        let dir = tmp.path().join("nested").join(".credgate");
        let files = init_ca(&dir, false).unwrap();
        assert_eq!(files.cert, dir.join("ca.crt"));
        assert_eq!(files.key, dir.join("ca.key"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        let key = fs::read_to_string(&files.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let cert = fs::read_to_string(&files.cert).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!cert.contains("PRIVATE KEY"));

        let ca = CertificateAuthority::load(&files.cert, &files.key).unwrap();
        assert_eq!(ca.cert_pem(), cert);
    }

    #[test]
    fn init_refuses_to_overwrite_either_file() {
        let tmp = TempDir::new();
        let files = init_ca(tmp.path(), false).unwrap();
        let key_before = fs::read(&files.key).unwrap();
        let err = init_ca(tmp.path(), false).unwrap_err();
        assert!(
            matches!(&err, TlsError::AlreadyExists { path } if *path == files.cert),
            "{err}"
        );
        assert!(err.to_string().contains("--force"));
        assert_eq!(fs::read(&files.key).unwrap(), key_before);

        // Only the key left behind: still refused, and no certificate appears.
        fs::remove_file(&files.cert).unwrap();
        let err = init_ca(tmp.path(), false).unwrap_err();
        assert!(
            matches!(&err, TlsError::AlreadyExists { path } if *path == files.key),
            "{err}"
        );
        assert!(!files.cert.exists());
        assert_eq!(fs::read(&files.key).unwrap(), key_before);
    }

    #[test]
    fn force_replaces_both_files_with_a_fresh_private_key() {
        let tmp = TempDir::new();
        let files = init_ca(tmp.path(), false).unwrap();
        let key_before = fs::read(&files.key).unwrap();
        let cert_before = fs::read(&files.cert).unwrap();
        // A loosened old key must not hand its mode to the new one.
        chmod(&files.key, 0o644);
        init_ca(tmp.path(), true).unwrap();
        assert_eq!(mode(&files.key), 0o600);
        assert_ne!(fs::read(&files.key).unwrap(), key_before);
        assert_ne!(fs::read(&files.cert).unwrap(), cert_before);
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "staging files left behind: {names:?}");
        CertificateAuthority::load(&files.cert, &files.key).unwrap();
    }

    #[test]
    fn load_refuses_a_key_others_can_read() {
        let tmp = TempDir::new();
        let files = init_ca(tmp.path(), false).unwrap();
        for loose in [0o644, 0o640, 0o604, 0o660] {
            chmod(&files.key, loose);
            let err = CertificateAuthority::load(&files.cert, &files.key).unwrap_err();
            assert!(
                matches!(err, TlsError::KeyPermissions { mode, .. } if mode == loose),
                "{err}"
            );
            let message = err.to_string();
            assert!(message.contains("chmod 600"), "{message}");
            assert!(
                message.contains(&files.key.display().to_string()),
                "{message}"
            );
        }
        chmod(&files.key, 0o400);
        CertificateAuthority::load(&files.cert, &files.key).unwrap();
    }

    #[test]
    fn load_names_the_file_that_is_wrong() {
        let tmp = TempDir::new();
        let files = init_ca(tmp.path(), false).unwrap();
        let missing = tmp.path().join("missing.crt");
        let err = CertificateAuthority::load(&missing, &files.key).unwrap_err();
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let not_pem = tmp.path().join("not-pem.crt");
        fs::write(&not_pem, "hello").unwrap();
        let err = CertificateAuthority::load(&not_pem, &files.key).unwrap_err();
        assert!(err.to_string().contains("not-pem.crt"), "{err}");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");

        let two = tmp.path().join("two.crt");
        let other = CertificateAuthority::generate().unwrap();
        fs::write(
            &two,
            format!(
                "{}{}",
                other.cert_pem(),
                fs::read_to_string(&files.cert).unwrap()
            ),
        )
        .unwrap();
        let err = CertificateAuthority::load(&two, &files.key).unwrap_err();
        assert!(err.to_string().contains("holds 2 certificates"), "{err}");

        let empty_key = tmp.path().join("empty.key");
        write_key(&empty_key, "");
        let err = CertificateAuthority::load(&files.cert, &empty_key).unwrap_err();
        assert!(err.to_string().contains("empty.key"), "{err}");
        assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");
    }

    #[test]
    fn a_broken_key_file_is_reported_without_its_content() {
        let tmp = TempDir::new();
        let files = init_ca(tmp.path(), false).unwrap();
        let broken = tmp.path().join("broken.key");
        write_key(
            &broken,
            "-----BEGIN PRIVATE KEY-----\ntest-secret-not-base64!!\n-----END PRIVATE KEY-----\n",
        );
        let err = CertificateAuthority::load(&files.cert, &broken).unwrap_err();
        let message = format!("{err} {err:?}");
        assert!(message.contains("broken.key"), "{message}");
        assert!(!message.contains("test-secret"), "{message}");
    }

    #[test]
    fn load_refuses_a_key_of_another_ca() {
        let tmp = TempDir::new();
        let files = init_ca(&tmp.path().join("one"), false).unwrap();
        let other = init_ca(&tmp.path().join("two"), false).unwrap();
        let err = CertificateAuthority::load(&files.cert, &other.key).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn load_refuses_ca_certificates_agents_would_reject() {
        use rcgen::{date_time_ymd, KeyUsagePurpose};
        let tmp = TempDir::new();
        let cases = [
            (
                "expired",
                date_time_ymd(2020, 1, 1),
                date_time_ymd(2021, 1, 1),
                KeyUsagePurpose::KeyCertSign,
            ),
            (
                "not valid before",
                date_time_ymd(2100, 1, 1),
                date_time_ymd(2101, 1, 1),
                KeyUsagePurpose::KeyCertSign,
            ),
            (
                "keyCertSign",
                date_time_ymd(2020, 1, 1),
                date_time_ymd(2100, 1, 1),
                KeyUsagePurpose::DigitalSignature,
            ),
        ];
        for (index, (expected, not_before, not_after, usage)) in cases.into_iter().enumerate() {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::default();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            params.key_usages = vec![usage];
            params.not_before = not_before;
            params.not_after = not_after;
            let cert = params.self_signed(&key).unwrap();
            let cert_path = tmp.path().join(format!("case{index}.crt"));
            let key_path = tmp.path().join(format!("case{index}.key"));
            fs::write(&cert_path, cert.pem()).unwrap();
            write_key(&key_path, &key.serialize_pem());
            let err = CertificateAuthority::load(&cert_path, &key_path).unwrap_err();
            assert!(matches!(err, TlsError::CaCertificate { .. }), "{err}");
            let message = err.to_string();
            assert!(message.contains(&format!("case{index}.crt")), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn load_refuses_a_certificate_that_is_not_a_ca() {
        let tmp = TempDir::new();
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).unwrap();
        let cert_path = tmp.path().join("leaf.crt");
        let key_path = tmp.path().join("leaf.key");
        fs::write(&cert_path, cert.pem()).unwrap();
        write_key(&key_path, &signing_key.serialize_pem());
        let err = CertificateAuthority::load(&cert_path, &key_path).unwrap_err();
        assert!(matches!(err, TlsError::CaCertificate { .. }), "{err}");
        assert!(err.to_string().contains("leaf.crt"), "{err}");
        assert!(err.to_string().contains("CA:TRUE"), "{err}");
    }
}
