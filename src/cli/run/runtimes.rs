//! Settings for the runtimes that ignore [`super::agent_env`]'s variables.
//!
//! - **wget** built on GnuTLS (Debian's) reads no CA variable. It reads a
//!   wgetrc: `credgate run` writes one per task, with the user's own
//!   settings first and credgate's after them (wget has no include
//!   directive; a later setting wins), and points `WGETRC` at it. wget does
//!   read `https_proxy`, and sends the URL's userinfo as Basic
//!   `Proxy-Authorization` on its CONNECT, so the task token stays in the
//!   environment, never in the file.
//! - **Java** reads neither proxy nor CA variables. `JAVA_TOOL_OPTIONS`
//!   (which every JVM reads) gets the proxy properties and a per-task PKCS
//!   #12 trust store holding the system roots and credgate's CA. Java sends
//!   no proxy credentials from properties at all, so the proxy it is given
//!   must serve it without `Proxy-Authorization`: see [`JavaProxy`].
//!
//! Both files live in a fresh directory (0700, files 0600) that
//! [`RuntimeFiles`] removes when it is dropped, i.e. when the task ends or
//! anything on the way there fails.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use crate::tls::{trust_store, TrustedCertificate};

/// Where the system's CA bundle is, by distribution: Debian and Ubuntu (also
/// what Debian builds the JVM's `cacerts` from), Fedora and RHEL, openSUSE,
/// Alpine and Arch. The first that exists is used.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The wgetrc settings credgate owns, as wget compares names (lowercase,
/// without `-` and `_`). A user's line setting one of them is left out of
/// the generated wgetrc: a wgetrc proxy overrides `https_proxy` from the
/// environment (and an empty one means "no proxy", so it cannot be
/// overridden by a later line without writing the token into the file),
/// and wgetrc proxy credentials replace the URL's userinfo.
const WGETRC_OWNED: &[&str] = &[
    "httpproxy",
    "httpsproxy",
    "proxyuser",
    "proxypasswd",
    "proxypassword",
];

/// What `credgate run` inherited that the runtime settings build on. Read
/// once from the process ([`Inherited::from_process`]); tests build it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inherited {
    /// `WGETRC`: the user's wgetrc, when set.
    pub wgetrc: Option<PathBuf>,
    /// `HOME`, where wget looks for `.wgetrc` when `WGETRC` is unset.
    pub home: Option<PathBuf>,
    /// `JAVA_TOOL_OPTIONS`, which credgate's options are appended to.
    pub java_tool_options: Option<String>,
    /// The system CA bundle: the first of [`SYSTEM_BUNDLES`] that exists.
    pub system_roots: Option<PathBuf>,
}

impl Inherited {
    /// Reads the variables and looks for the system bundle.
    ///
    /// The roots Java is given are the system bundle's, not the JVM's own
    /// `cacerts`: reading that means parsing JKS or a password-protected
    /// PKCS #12, and on Debian it is built from this same bundle. The
    /// inherited `SSL_CERT_FILE` is not used either: it is an OpenSSL
    /// setting that Java never read, and `run` replaces it for the command.
    /// The roots only matter for hosts a rule tunnels (`tunnel: true`); every
    /// intercepted host presents a certificate from credgate's CA.
    pub fn from_process() -> Inherited {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Inherited {
            wgetrc: non_empty("WGETRC").map(PathBuf::from),
            home: non_empty("HOME").map(PathBuf::from),
            java_tool_options: non_empty("JAVA_TOOL_OPTIONS")
                .map(|v| v.to_string_lossy().into_owned()),
            system_roots: SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.is_file()),
        }
    }

    /// The user's wgetrc as wget would find it: `WGETRC`, else
    /// `~/.wgetrc` when it exists.
    fn user_wgetrc(&self) -> Option<PathBuf> {
        self.wgetrc.clone().or_else(|| {
            let path = self.home.as_ref()?.join(".wgetrc");
            path.exists().then_some(path)
        })
    }
}

/// The proxy the JVM is pointed at: host and port only, since Java cannot
/// send the task token. Until the admin API hands out a per-task port that
/// needs no `Proxy-Authorization`, `run` passes the task's shared proxy
/// address, which serves the JVM only when an ambient task is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaProxy {
    /// Host name or IP literal (IPv6 in brackets, as Java accepts it).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl JavaProxy {
    /// Host and port of a proxy URL (`http://ID:TOKEN@host:port`); the
    /// userinfo is dropped. `None` when the URL has no host.
    pub fn from_proxy_url(url: &str) -> Option<JavaProxy> {
        let uri: http::Uri = url.parse().ok()?;
        let host = uri.host().filter(|h| !h.is_empty())?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        Some(JavaProxy { host, port })
    }
}

/// The per-task files; dropping this removes them with their directory.
#[derive(Debug)]
pub struct RuntimeFiles {
    dir: PathBuf,
}

impl RuntimeFiles {
    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RuntimeFiles {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => eprintln!(
                "credgate: could not remove {} (the task's wgetrc and Java trust store): {e}",
                self.dir.display()
            ),
            _ => {}
        }
    }
}

/// The runtime settings of one task.
#[derive(Debug)]
pub struct RuntimeSettings {
    /// Variables to set for the command (`WGETRC`, `JAVA_TOOL_OPTIONS`).
    pub env: Vec<(String, String)>,
    /// The files the variables name; keep until the task has ended.
    pub files: RuntimeFiles,
    /// Problems that did not stop the settings from being made (an
    /// unreadable user wgetrc or system bundle), to show the user.
    pub warnings: Vec<String>,
}

/// Writes the task's wgetrc and Java trust store into a fresh directory
/// under `scratch`, and returns the variables that point wget and Java at
/// them, at credgate's CA (`ca`, a PEM file) and at `java_proxy`.
///
/// Fails when the directory or a file cannot be written, or the CA cannot
/// be read: the command would then reach credgate without trusting it, or
/// (Java) go around it. Nothing is left behind on failure.
pub fn prepare(
    ca: &Path,
    scratch: &Path,
    java_proxy: &JavaProxy,
    inherited: &Inherited,
) -> anyhow::Result<RuntimeSettings> {
    let ca_text = ca
        .to_str()
        .context("the CA path is not valid UTF-8")?
        .to_owned();
    let ca_certs = read_pem_certificates(ca)
        .with_context(|| format!("reading the CA certificate {}", ca.display()))?;
    let mut warnings = Vec::new();
    let user_wgetrc =
        inherited
            .user_wgetrc()
            .and_then(|path| match std::fs::read_to_string(&path) {
                Ok(text) => Some((path, text)),
                Err(e) => {
                    warnings.push(format!(
                        "cannot read the wgetrc {} ({e}); wget gets credgate's settings only",
                        path.display()
                    ));
                    None
                }
            });
    let system_roots = match &inherited.system_roots {
        None => Vec::new(),
        Some(path) => read_pem_certificates(path).unwrap_or_else(|e| {
            warnings.push(format!(
                "cannot read the system CA bundle {} ({e:#}); Java trusts credgate's CA only",
                path.display()
            ));
            Vec::new()
        }),
    };

    let files = RuntimeFiles {
        dir: fresh_dir(scratch)?,
    };
    let wgetrc_path = files.dir.join("wgetrc");
    let user = user_wgetrc
        .as_ref()
        .map(|(path, text)| (path.as_path(), text.as_str()));
    write_private(&wgetrc_path, wgetrc(user, &ca_text)?.as_bytes())?;
    let store_path = files.dir.join("truststore.p12");
    let store = trust_store(&trusted(ca_certs, system_roots));
    write_private(&store_path, &store)?;

    let store_text = store_path
        .to_str()
        .context("the temporary directory's path is not valid UTF-8")?;
    let wgetrc_text = wgetrc_path
        .to_str()
        .context("the temporary directory's path is not valid UTF-8")?;
    let java = java_tool_options(
        inherited.java_tool_options.as_deref(),
        java_proxy,
        store_text,
    )?;
    Ok(RuntimeSettings {
        env: vec![
            ("WGETRC".to_owned(), wgetrc_text.to_owned()),
            ("JAVA_TOOL_OPTIONS".to_owned(), java),
        ],
        files,
        warnings,
    })
}

/// The generated wgetrc: the user's wgetrc (`user`: its path and content)
/// without the lines setting what credgate owns ([`WGETRC_OWNED`]), then
/// credgate's settings, which win over anything before them (also over the
/// system wgetrc, which wget reads first): trust credgate's CA (`ca`),
/// use the proxy, and let nothing bypass it.
///
/// A left-out line is named by its setting, never quoted: its value may be
/// a password. Fails when `ca` cannot be written as one wgetrc value.
pub fn wgetrc(user: Option<(&Path, &str)>, ca: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !ca.contains(['\n', '\r']) && ca.trim() == ca,
        "the CA path cannot be written into a wgetrc"
    );
    let mut out = String::from("# Written by `credgate run` for one task; removed when it ends.\n");
    if let Some((path, text)) = user {
        // One comment line, whatever the path holds.
        let shown = path.display().to_string().replace(['\n', '\r'], "?");
        out.push_str(&format!("# From {shown}:\n"));
        for line in text.lines() {
            match wgetrc_setting(line) {
                Some((name, key)) if WGETRC_OWNED.contains(&key.as_str()) => {
                    out.push_str(&format!(
                        "# credgate: left out {name} (the task's proxy comes from the environment)\n"
                    ));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out.push_str("# credgate:\n");
    out.push_str(&format!("ca_certificate = {ca}\n"));
    out.push_str("use_proxy = on\n");
    out.push_str("no_proxy =\n");
    Ok(out)
}

/// The setting a wgetrc line sets: its name as written, and as wget
/// compares it (lowercase, `-` and `_` removed). `None` for comments,
/// blank lines and lines without `=`.
fn wgetrc_setting(line: &str) -> Option<(&str, String)> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    let name = line.split_once('=')?.0.trim_end();
    let key = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some((name, key))
}

/// `JAVA_TOOL_OPTIONS` for the command: the inherited options, then the
/// proxy properties for both schemes, an empty `http.nonProxyHosts` (Java's
/// default list sends `localhost` and `127.*` around the proxy; both
/// schemes use this one property), and the trust store (PKCS #12, no
/// password: see [`crate::tls::trust_store`]). The JVM reads the variable
/// before its command line, and a later `-D` wins, so credgate's options
/// override inherited ones; `java -D…` flags and `_JAVA_OPTIONS` still
/// override credgate's.
pub fn java_tool_options(
    inherited: Option<&str>,
    proxy: &JavaProxy,
    trust_store: &str,
) -> anyhow::Result<String> {
    let (host, port) = (&proxy.host, proxy.port);
    let mut options: Vec<String> = inherited
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .into_iter()
        .collect();
    for scheme in ["https", "http"] {
        options.push(java_option(&format!("-D{scheme}.proxyHost={host}"))?);
        options.push(format!("-D{scheme}.proxyPort={port}"));
    }
    options.push("-Dhttp.nonProxyHosts=".to_owned());
    options.push(java_option(&format!(
        "-Djavax.net.ssl.trustStore={trust_store}"
    ))?);
    options.push("-Djavax.net.ssl.trustStoreType=PKCS12".to_owned());
    Ok(options.join(" "))
}

/// One option as the JVM splits `JAVA_TOOL_OPTIONS`: at whitespace, with
/// `'…'` or `"…"` grouping (the quotes removed). Quoted only when needed.
fn java_option(option: &str) -> anyhow::Result<String> {
    if !option.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        Ok(option.to_owned())
    } else if !option.contains('"') {
        Ok(format!("\"{option}\""))
    } else if !option.contains('\'') {
        Ok(format!("'{option}'"))
    } else {
        anyhow::bail!("{option:?} cannot be passed in JAVA_TOOL_OPTIONS (it has both quote marks)")
    }
}

/// The trust store's entries: credgate's CA first, then the system roots,
/// each under a unique lowercase alias.
fn trusted(
    ca: Vec<CertificateDer<'static>>,
    system: Vec<CertificateDer<'static>>,
) -> Vec<TrustedCertificate<'static>> {
    let named = |prefix: &'static str, certs: Vec<CertificateDer<'static>>| {
        certs
            .into_iter()
            .enumerate()
            .map(move |(i, cert)| TrustedCertificate {
                alias: format!("{prefix}-{}", i + 1),
                cert,
            })
    };
    named("credgate-ca", ca)
        .chain(named("system", system))
        .collect()
}

/// Every certificate in a PEM file; an error when there is none.
fn read_pem_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .context("not valid PEM")?;
    anyhow::ensure!(!certs.is_empty(), "no CERTIFICATE block found");
    Ok(certs)
}

/// Creates `scratch/credgate-run-RANDOM` with mode 0700. The name is new:
/// an existing directory (someone else's, or a symlink) is an error, not
/// reused.
fn fresh_dir(scratch: &Path) -> anyhow::Result<PathBuf> {
    let tag = crate::hex::lower(&crate::secret::random_bytes::<8>());
    let dir = scratch.join(format!("credgate-run-{tag}"));
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes `contents` to a new file created with mode 0600.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const CA: &str = "/etc/credgate/ca.crt";

    fn proxy() -> JavaProxy {
        JavaProxy {
            host: "127.0.0.1".into(),
            port: 8080,
        }
    }

    #[test]
    fn without_a_user_wgetrc_only_credgates_settings_are_written() {
        let rc = wgetrc(None, CA).unwrap();
        let settings: Vec<&str> = rc.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            settings,
            [
                "ca_certificate = /etc/credgate/ca.crt",
                "use_proxy = on",
                "no_proxy ="
            ]
        );
    }

    #[test]
    fn a_user_wgetrc_comes_first_without_the_proxy_settings_credgate_owns() {
        let user = "# mine\n\
                    tries = 3\n\
                    use_proxy = off\n\
                    https_proxy = http://elsewhere:3128/\n\
                    \x20 HTTP-Proxy=http://elsewhere:3128/\n\
                    proxy_user = me\n\
                    proxyPassword = hunter2\n\
                    proxy_passwd = hunter2\n\
                    # https_proxy = commented out\n\
                    ca_certificate = /etc/mine.pem\n\
                    no_proxy = .internal";
        let rc = wgetrc(Some((Path::new("/home/u/.wgetrc"), user)), CA).unwrap();
        assert!(!rc.contains("elsewhere"), "{rc}");
        assert!(
            !rc.contains("hunter2"),
            "a left-out value is not quoted: {rc}"
        );
        let lines: Vec<&str> = rc.lines().collect();
        assert_eq!(
            lines[1..],
            [
                "# From /home/u/.wgetrc:",
                "# mine",
                "tries = 3",
                "use_proxy = off",
                "# credgate: left out https_proxy (the task's proxy comes from the environment)",
                "# credgate: left out HTTP-Proxy (the task's proxy comes from the environment)",
                "# credgate: left out proxy_user (the task's proxy comes from the environment)",
                "# credgate: left out proxyPassword (the task's proxy comes from the environment)",
                "# credgate: left out proxy_passwd (the task's proxy comes from the environment)",
                "# https_proxy = commented out",
                "ca_certificate = /etc/mine.pem",
                "no_proxy = .internal",
                // After the user's lines, so these win.
                "# credgate:",
                "ca_certificate = /etc/credgate/ca.crt",
                "use_proxy = on",
                "no_proxy =",
            ]
        );
    }

    #[test]
    fn the_user_wgetrc_path_cannot_add_a_setting() {
        let path = Path::new("/tmp/x\nhttps_proxy = http://elsewhere/");
        let rc = wgetrc(Some((path, "tries = 1\n")), CA).unwrap();
        assert!(
            rc.lines()
                .all(|l| l.starts_with('#') || !l.contains("elsewhere")),
            "{rc}"
        );
    }

    #[test]
    fn a_ca_path_that_is_not_one_wgetrc_value_is_refused() {
        assert!(wgetrc(None, "/tmp/a\nuse_proxy = off").is_err());
        assert!(wgetrc(None, "/tmp/ca.crt ").is_err());
    }

    #[test]
    fn java_gets_the_proxy_for_both_schemes_no_bypass_and_the_trust_store() {
        let options = java_tool_options(None, &proxy(), "/tmp/d/truststore.p12").unwrap();
        assert_eq!(
            options,
            "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8080 \
             -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=8080 \
             -Dhttp.nonProxyHosts= \
             -Djavax.net.ssl.trustStore=/tmp/d/truststore.p12 \
             -Djavax.net.ssl.trustStoreType=PKCS12"
        );
    }

    #[test]
    fn inherited_java_options_come_first_so_credgates_win() {
        let options = java_tool_options(
            Some(" -Xmx512m -Dhttps.proxyHost=elsewhere "),
            &proxy(),
            "/tmp/d/t.p12",
        )
        .unwrap();
        assert!(
            options
                .starts_with("-Xmx512m -Dhttps.proxyHost=elsewhere -Dhttps.proxyHost=127.0.0.1 "),
            "{options}"
        );
    }

    #[test]
    fn a_trust_store_path_with_spaces_is_quoted() {
        let options = java_tool_options(None, &proxy(), "/tmp/my dir/t.p12").unwrap();
        assert!(
            options.contains(" \"-Djavax.net.ssl.trustStore=/tmp/my dir/t.p12\" "),
            "{options}"
        );
        let options = java_tool_options(None, &proxy(), "/tmp/\"x\"/t.p12").unwrap();
        assert!(
            options.contains(" '-Djavax.net.ssl.trustStore=/tmp/\"x\"/t.p12' "),
            "{options}"
        );
        assert!(java_tool_options(None, &proxy(), "/tmp/'\"/t.p12").is_err());
    }

    #[test]
    fn java_gets_host_and_port_of_the_proxy_url_and_never_the_token() {
        let proxy =
            JavaProxy::from_proxy_url("http://task-1:cgt_test-secret@127.0.0.1:8080").unwrap();
        assert_eq!(
            proxy,
            JavaProxy {
                host: "127.0.0.1".into(),
                port: 8080
            }
        );
        let proxy = JavaProxy::from_proxy_url("http://t:s@[::1]:9").unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("[::1]", 9));
        assert_eq!(
            JavaProxy::from_proxy_url("http://t:s@proxy").unwrap().port,
            80
        );
        assert!(JavaProxy::from_proxy_url("not a url").is_none());
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let tag = crate::hex::lower(&crate::secret::random_bytes::<6>());
            let path = std::env::temp_dir().join(format!("credgate-runtimes-test-{tag}"));
            std::fs::create_dir(&path).unwrap();
            Scratch(path)
        }

        fn ca(&self) -> PathBuf {
            let ca = crate::tls::CertificateAuthority::generate().unwrap();
            let path = self.0.join("ca.crt");
            std::fs::write(&path, ca.cert_pem()).unwrap();
            path
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn prepare_writes_private_files_and_removes_them_when_dropped() {
        let scratch = Scratch::new();
        let ca = scratch.ca();
        let home = scratch.0.join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join(".wgetrc"), "tries = 2\n").unwrap();
        let inherited = Inherited {
            home: Some(home),
            java_tool_options: Some("-Xss1m".into()),
            system_roots: Some(ca.clone()),
            ..Inherited::default()
        };
        let settings = prepare(&ca, &scratch.0, &proxy(), &inherited).unwrap();
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
        let dir = settings.files.dir().to_path_buf();
        assert_eq!(mode(&dir), 0o700);
        let env: std::collections::BTreeMap<_, _> = settings.env.iter().cloned().collect();
        let wgetrc = PathBuf::from(&env["WGETRC"]);
        assert_eq!(wgetrc.parent(), Some(dir.as_path()));
        assert_eq!(mode(&wgetrc), 0o600);
        let text = std::fs::read_to_string(&wgetrc).unwrap();
        assert!(text.contains("tries = 2\n"), "{text}");
        assert!(
            text.contains(&format!("ca_certificate = {}\n", ca.display())),
            "{text}"
        );
        let store = dir.join("truststore.p12");
        assert_eq!(mode(&store), 0o600);
        assert!(env["JAVA_TOOL_OPTIONS"].starts_with("-Xss1m -Dhttps.proxyHost=127.0.0.1 "));
        assert!(env["JAVA_TOOL_OPTIONS"]
            .contains(&format!("-Djavax.net.ssl.trustStore={}", store.display())));
        drop(settings);
        assert!(!dir.exists(), "the files went with the guard");
        assert_eq!(scratch.entries(), ["ca.crt", "home"]);
    }

    #[test]
    fn an_unreadable_user_wgetrc_or_bundle_is_a_warning() {
        let scratch = Scratch::new();
        let ca = scratch.ca();
        let inherited = Inherited {
            wgetrc: Some(scratch.0.join("missing-wgetrc")),
            system_roots: Some(scratch.0.join("missing-bundle")),
            ..Inherited::default()
        };
        let settings = prepare(&ca, &scratch.0, &proxy(), &inherited).unwrap();
        assert_eq!(settings.warnings.len(), 2, "{:?}", settings.warnings);
        assert!(settings.warnings[0].contains("missing-wgetrc"));
        assert!(settings.warnings[1].contains("missing-bundle"));
    }

    #[test]
    fn a_missing_ca_or_scratch_dir_fails_and_leaves_nothing() {
        let scratch = Scratch::new();
        let missing = scratch.0.join("missing.crt");
        let err = prepare(&missing, &scratch.0, &proxy(), &Inherited::default()).unwrap_err();
        assert!(format!("{err:#}").contains("missing.crt"), "{err:#}");
        let ca = scratch.ca();
        let err = prepare(
            &ca,
            &scratch.0.join("nope"),
            &proxy(),
            &Inherited::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        assert_eq!(scratch.entries(), ["ca.crt"]);
    }
}
