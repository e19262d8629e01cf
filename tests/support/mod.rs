//! Shared harness for the integration tests: a real credgate server on
//! 127.0.0.1:0, TLS upstreams signed by a test CA that record what they
//! received, a resolver that counts lookups, and raw clients.

#![allow(dead_code, unreachable_pub)]

pub mod kube;
pub mod moto;
pub mod oidc;
pub mod verdaccio;
pub mod ws;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use credgate::audit::DecisionRecord;
use credgate::cli::serve::Running;
use credgate::config::Config;
use credgate::proxy::Resolve;
use credgate::task::{TaskService, TaskSpec};
use credgate::tls::{CertificateAuthority, LeafCache};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// A random lowercase hex string.
pub fn random_hex(bytes: usize) -> String {
    let raw = credgate::secret::random_bytes::<32>();
    raw.iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

/// `len` pseudo-random bytes, different every run: data that does not
/// compress and in which no secret rule fires.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x = u64::from_str_radix(&random_hex(8), 16).unwrap() | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// An obviously fake secret, different every run.
pub fn test_secret() -> String {
    format!("test-secret-{}", random_hex(12))
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("credgate-test-{}", random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts every lookup; names in `overrides` resolve to the given addresses
/// without touching the system resolver.
#[derive(Default)]
pub struct CountingResolver {
    pub lookups: AtomicUsize,
    pub overrides: Mutex<HashMap<String, Vec<IpAddr>>>,
}

impl CountingResolver {
    pub fn map(&self, host: &str, ip: &str) {
        self.overrides
            .lock()
            .unwrap()
            .entry(host.to_string())
            .or_default()
            .push(ip.parse().unwrap());
    }
    pub fn count(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Resolve for CountingResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> credgate::BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mapped = self.overrides.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            match mapped {
                Some(ips) => Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                None => Ok(tokio::net::lookup_host((host, port)).await?.collect()),
            }
        })
    }
}

/// A running credgate with its files.
pub struct Env {
    pub dir: TempDir,
    pub running: Option<Running>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub ca_cert: PathBuf,
    pub audit: PathBuf,
    pub admin_token_file: PathBuf,
    pub config_path: PathBuf,
    pub resolver: Arc<CountingResolver>,
    pub upstream_ca: Arc<CertificateAuthority>,
}

/// The config every test starts from; `extra` adds credentials, scopes, …
pub fn base_config(dir: &Path, extra: &str) -> String {
    let q = |p: PathBuf| serde_json::to_string(&p.display().to_string()).unwrap();
    format!(
        "listen: 127.0.0.1:0\n\
         admin: {{ listen: 127.0.0.1:0, token: {{ file: {admin} }} }}\n\
         ca: {{ cert: {cert}, key: {key} }}\n\
         audit: {{ path: {audit} }}\n\
         upstream: {{ extra_ca: {upstream}, connect_timeout: 5s, first_byte_timeout: 10s }}\n\
         {extra}\n",
        admin = q(dir.join("admin-token")),
        cert = q(dir.join("ca/ca.crt")),
        key = q(dir.join("ca/ca.key")),
        audit = q(dir.join("decisions.jsonl")),
        upstream = q(dir.join("upstream-ca.pem")),
    )
}

impl Env {
    /// Starts credgate with `extra` config and secrets from `vars`.
    pub async fn start(extra: &str, vars: &[(&str, &str)]) -> Env {
        let upstream_ca = Arc::new(CertificateAuthority::generate().unwrap());
        Env::start_trusting(upstream_ca, extra, vars).await
    }

    pub fn gateway(&self) -> &Arc<credgate::proxy::Gateway> {
        &self.running.as_ref().unwrap().gateway
    }

    /// Starts a task holding `scopes`; returns (id, token).
    pub fn start_task(&self, scopes: &[&str]) -> (String, String) {
        let started = self
            .gateway()
            .start_task(TaskSpec {
                agent: "test-agent".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ttl: None,
                labels: [("ticket".to_string(), "T-1".to_string())].into(),
            })
            .unwrap();
        (started.task.id.clone(), started.token.expose().to_string())
    }

    pub async fn end_task(&self, id: &str) {
        self.gateway().end_task(id).await.unwrap();
    }

    /// `http://ID:TOKEN@127.0.0.1:PORT`
    pub fn proxy_url(&self, id: &str, token: &str) -> String {
        format!("http://{id}:{token}@{}", self.proxy)
    }

    /// Every record written so far (after flushing the log).
    pub async fn records(&self) -> Vec<DecisionRecord> {
        self.gateway().audit_sink().flush().await;
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
            .collect()
    }

    /// The whole decision log as text (to assert no secret is in it).
    pub async fn log_text(&self) -> String {
        self.gateway().audit_sink().flush().await;
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }

    /// Starts a TLS upstream for `host`, signed by the test upstream CA.
    pub async fn upstream(&self, host: &str, handler: Handler) -> Upstream {
        Upstream::start_tls(self.upstream_ca.clone(), host, handler).await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What an upstream answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Sent as separate chunks, a few milliseconds apart.
    pub chunks: Vec<Vec<u8>>,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            chunks: vec![body.as_bytes().to_vec()],
        }
    }
}

pub type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// An upstream that answers "ok".
pub fn ok_handler() -> Handler {
    Arc::new(|_| Reply::ok("ok from upstream"))
}

/// An upstream that echoes every request header back in its body.
pub fn echo_handler() -> Handler {
    Arc::new(|r: &Received| {
        let text: String = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        Reply::ok(&text)
    })
}

/// `config` choosing only HTTP/1.1 in ALPN: for upstreams served by an
/// HTTP/1-only server, which must not let credgate pick `h2`.
pub fn http1_only(config: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A recording HTTPS upstream on 127.0.0.1.
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start_tls(
        ca: Arc<CertificateAuthority>,
        host: &str,
        handler: Handler,
    ) -> Upstream {
        let config = http1_only(LeafCache::new(ca).server_config(host).await.unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let rec = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                let rec = rec.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        record_and_reply(req, handler.clone(), rec.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            received,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A body sent as separate chunks with short pauses, so the proxy sees them
/// as separate reads.
pub struct ChunkedBody {
    chunks: VecDeque<Bytes>,
    pause: Option<Pin<Box<Sleep>>>,
}

impl ChunkedBody {
    pub fn new(chunks: Vec<Vec<u8>>) -> Self {
        ChunkedBody {
            chunks: chunks.into_iter().map(Bytes::from).collect(),
            pause: None,
        }
    }
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        match self.chunks.pop_front() {
            None => Poll::Ready(None),
            Some(chunk) => {
                if !self.chunks.is_empty() {
                    self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(15))));
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }
}

use std::future::Future;

/// Sends raw bytes to `addr` and returns everything read until the peer
/// closes or `wait` passes with nothing new.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_quiet(&mut stream, wait).await
}

pub async fn read_until_quiet<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Basic `Proxy-Authorization` value for a task.
pub fn proxy_auth(id: &str, token: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"))
    )
}

/// Opens a CONNECT tunnel to `target` and completes TLS with `sni`
/// (trusting the credgate CA). Returns the reply head when CONNECT fails.
pub async fn tunnel(
    env: &Env,
    auth: &str,
    target: &str,
    sni: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    tunnel_via(env.proxy, &env.ca_cert, Some(auth), target, sni).await
}

/// Like [`tunnel`], against any proxy address; without `auth` no
/// `Proxy-Authorization` is sent (the sidecar's ambient task).
pub async fn tunnel_via(
    proxy: SocketAddr,
    ca_cert: &Path,
    auth: Option<&str>,
    target: &str,
    sni: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return Err(String::from_utf8_lossy(&head).into_owned()),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        let rest = read_until_quiet(&mut stream, Duration::from_millis(300)).await;
        return Err(head + &rest);
    }
    tls_over(stream, ca_cert, sni, &[]).await
}

/// Completes TLS with `sni` over `stream`, a tunnel whose CONNECT was
/// answered with 200, trusting `ca_cert` and offering `alpn` protocols.
pub async fn tls_over(
    stream: TcpStream,
    ca_cert: &Path,
    sni: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(credgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS failed: {e}"))
}

/// Runs a command to completion off the async runtime.
pub async fn run_command(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("command runs"))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// The real binary: `credgate serve` as a child process, one-shot commands,
// and the files they share.

/// The `credgate` binary Cargo built for these tests.
pub const CREDGATE: &str = env!("CARGO_BIN_EXE_credgate");

/// How long any one command may run before the test fails.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// How long `credgate serve` may take to announce its listeners, and a
/// record or a log line to appear.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Variables of the test process that would change what the binary or an
/// agent does: the CLI's defaults, proxy settings, CA bundles.
const INHERITED_VARS: &[&str] = &[
    "CREDGATE_ADMIN_URL",
    "CREDGATE_ADMIN_TOKEN_FILE",
    "CREDGATE_CA",
    "CREDGATE_LOG",
    "CREDGATE_TASK_ID",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "NODE_USE_ENV_PROXY",
    "WGETRC",
    "JAVA_TOOL_OPTIONS",
];

/// Removes the test process's proxy, CA and credgate variables from `cmd`.
pub fn clean_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for name in INHERITED_VARS {
        cmd.env_remove(name);
    }
    cmd
}

/// `credgate ARGS…` with a clean environment (see [`clean_env`]).
pub fn credgate<I, S>(args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = std::process::Command::new(CREDGATE);
    cmd.args(args);
    clean_env(&mut cmd);
    cmd
}

/// `curl -sS --max-time 20 ARGS…` with a clean environment.
pub fn curl<I, S>(args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]).args(args);
    clean_env(&mut cmd);
    cmd
}

/// What a finished command did.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with everything the command printed unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Both streams, for "this never appears anywhere" assertions.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Sends `sig` to the process `pid` (one this test started).
pub fn send_signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    let _ = nix::sys::signal::kill(pid, sig);
}

/// Runs `cmd` to completion with stdin closed; kills it and fails the test
/// when it takes longer than `limit`.
pub fn run_bounded(mut cmd: std::process::Command, limit: Duration) -> Outcome {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(limit) {
        Ok(output) => output.expect("waiting for the command"),
        Err(_) => {
            send_signal(pid, nix::sys::signal::Signal::SIGKILL);
            let late = rx.recv_timeout(Duration::from_secs(5));
            panic!("{cmd:?} did not finish within {limit:?}: {late:?}");
        }
    };
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// [`run_bounded`] with [`COMMAND_LIMIT`], off the async runtime.
pub async fn run_cli(cmd: std::process::Command) -> Outcome {
    tokio::task::spawn_blocking(move || run_bounded(cmd, COMMAND_LIMIT))
        .await
        .unwrap()
}

/// Polls `check` every 20 ms until it gives a value or `limit` passes.
pub async fn poll_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `credgate serve` running as a child process; killed when dropped.
pub struct ServeProcess {
    child: std::process::Child,
    /// The proxy listener, as `serve` announced it.
    pub proxy: SocketAddr,
    /// The admin API, as `serve` announced it.
    pub admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // A no-op once the child has been waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Starts `credgate serve --config CONFIG` in `dir` with `vars` added to
    /// its environment, and waits for the line announcing its listeners.
    pub async fn start(config: &Path, dir: &Path, vars: &[(&str, &str)]) -> ServeProcess {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = credgate(["serve", "--config"]);
        cmd.arg(config)
            .current_dir(dir)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("credgate serve starts");
        let pipe = child.stderr.take().expect("stderr is piped");
        let stderr: Arc<Mutex<String>> = Arc::default();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let unbound: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut serve = ServeProcess {
            child,
            proxy: unbound,
            admin: unbound,
            stderr,
        };
        let announced = poll_until(WAIT_LIMIT, || {
            serve
                .stderr()
                .lines()
                .find_map(|l| l.strip_prefix("credgate: proxy on ").map(str::to_owned))
        })
        .await;
        let Some(line) = announced else {
            let status = serve.child.try_wait();
            panic!(
                "credgate serve did not announce its listeners ({status:?}):\n{}",
                serve.stderr()
            );
        };
        let (proxy, rest) = line
            .split_once(", admin API on ")
            .expect("announcement format");
        let admin = rest.split(' ').next().expect("admin address");
        serve.proxy = proxy.parse().expect("proxy address");
        serve.admin = admin.parse().expect("admin address");
        serve
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr, from byte `from` on, contains `needle`; returns
    /// that part of stderr, or all of stderr as the error.
    pub async fn wait_stderr(&self, from: usize, needle: &str) -> Result<String, String> {
        poll_until(WAIT_LIMIT, || {
            let text = self.stderr();
            let tail = text.get(from..).unwrap_or_default();
            tail.contains(needle).then(|| tail.to_owned())
        })
        .await
        .ok_or_else(|| self.stderr())
    }

    /// Sends `sig` to the serve process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        send_signal(self.pid(), sig);
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        poll_until(limit, || child.try_wait().ok().flatten()).await
    }
}

/// The files of a `credgate serve` under test: its CA, the CA of the test
/// upstreams, and its configuration, in a temporary directory.
pub struct DaemonFiles {
    pub config_path: PathBuf,
    pub ca_cert: PathBuf,
    pub audit: PathBuf,
    pub admin_token_file: PathBuf,
    pub upstream_ca: Arc<CertificateAuthority>,
    pub dir: TempDir,
}

impl DaemonFiles {
    /// Creates the interception CA and the upstream CA; the configuration
    /// is written by [`DaemonFiles::write_config`].
    pub fn new() -> DaemonFiles {
        let dir = TempDir::new();
        credgate::tls::init_ca(&dir.path().join("ca"), false).unwrap();
        let upstream_ca = Arc::new(CertificateAuthority::generate().unwrap());
        std::fs::write(dir.path().join("upstream-ca.pem"), upstream_ca.cert_pem()).unwrap();
        DaemonFiles {
            config_path: dir.path().join("credgate.yaml"),
            ca_cert: dir.path().join("ca/ca.crt"),
            audit: dir.path().join("decisions.jsonl"),
            admin_token_file: dir.path().join("admin-token"),
            upstream_ca,
            dir,
        }
    }

    /// The configuration text: [`base_config`] plus `extra`.
    pub fn config_text(&self, extra: &str) -> String {
        base_config(self.dir.path(), extra)
    }

    /// Writes [`DaemonFiles::config_text`] to the configuration path.
    pub fn write_config(&self, extra: &str) {
        std::fs::write(&self.config_path, self.config_text(extra)).unwrap();
    }

    /// A TLS upstream for `host` signed by the CA credgate trusts upstream.
    pub async fn upstream(&self, host: &str, handler: Handler) -> Upstream {
        Upstream::start_tls(self.upstream_ca.clone(), host, handler).await
    }

    /// Starts `credgate serve` on these files with `vars` in its environment.
    pub async fn serve(self, vars: &[(&str, &str)]) -> Daemon {
        let serve = ServeProcess::start(&self.config_path, self.dir.path(), vars).await;
        Daemon { serve, files: self }
    }
}

/// `--admin URL --admin-token-file F --ca F` for the admin API on `admin`.
pub fn admin_flags(admin: SocketAddr, token_file: &Path, ca: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "--admin".into(),
        format!("http://{admin}").into(),
        "--admin-token-file".into(),
        token_file.into(),
        "--ca".into(),
        ca.into(),
    ]
}

/// `credgate run --scope SCOPE FLAGS… -- COMMAND…`.
pub fn credgate_run(
    flags: Vec<std::ffi::OsString>,
    scope: &str,
    command: &[&str],
) -> std::process::Command {
    let mut cmd = credgate(["run", "--scope", scope]);
    cmd.args(flags).arg("--").args(command);
    cmd
}

impl Env {
    /// `credgate run --scope SCOPE -- COMMAND…` against this server's admin
    /// API: the binary's own `run`, with the in-process server's resolver
    /// (which maps the tests' host names) doing the proxying.
    pub fn run_cmd(&self, scope: &str, command: &[&str]) -> std::process::Command {
        credgate_run(
            admin_flags(self.admin, &self.admin_token_file, &self.ca_cert),
            scope,
            command,
        )
    }
}

/// A task as `credgate task start --json` reported it.
#[derive(Debug, Clone)]
pub struct CliTask {
    pub id: String,
    pub token: String,
    pub proxy_url: String,
}

/// `credgate serve` running on [`DaemonFiles`].
pub struct Daemon {
    /// Declared first so the process is killed before its files are removed.
    pub serve: ServeProcess,
    pub files: DaemonFiles,
}

impl Daemon {
    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.serve.admin)
    }

    /// `--admin URL --admin-token-file F --ca F`.
    pub fn admin_flags(&self) -> Vec<std::ffi::OsString> {
        admin_flags(
            self.serve.admin,
            &self.files.admin_token_file,
            &self.files.ca_cert,
        )
    }

    /// `credgate task ARGS… <admin flags>`.
    pub fn task_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = credgate(["task"]);
        cmd.args(args).args(self.admin_flags());
        cmd
    }

    /// `credgate run --scope SCOPE <admin flags> -- COMMAND…`.
    pub fn run_cmd(&self, scope: &str, command: &[&str]) -> std::process::Command {
        credgate_run(self.admin_flags(), scope, command)
    }

    /// Starts a task through `credgate task start --json`.
    pub async fn start_task(&self, scopes: &[&str]) -> CliTask {
        let mut args = vec!["start", "--json", "--agent", "cli-agent"];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        let out = run_cli(self.task_cmd(&args)).await;
        out.expect_code(0);
        let body: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("task start --json printed {}: {e}", out.stdout));
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {body}"))
                .to_owned()
        };
        CliTask {
            id: field("id"),
            token: field("token"),
            proxy_url: field("proxy_url"),
        }
    }

    /// The decision log as text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.files.audit).unwrap_or_default()
    }

    /// Every complete record in the decision log now.
    pub fn records(&self) -> Vec<DecisionRecord> {
        let text = self.log_text();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
            .collect()
    }

    /// Waits until at least `count` records satisfy `matches`; returns them
    /// (the log is written by another process, a moment after the response).
    pub async fn wait_records(
        &self,
        count: usize,
        matches: impl Fn(&DecisionRecord) -> bool,
    ) -> Vec<DecisionRecord> {
        let found = poll_until(WAIT_LIMIT, || {
            let hits: Vec<DecisionRecord> =
                self.records().into_iter().filter(|r| matches(r)).collect();
            (hits.len() >= count).then_some(hits)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "fewer than {count} matching records in:\n{}",
                self.log_text()
            )
        })
    }
}

/// Scopes over an upstream on `localhost:port` for the real binary: `api` may GET `/v1/**` with the
/// injected `api` credential; `other` may GET `/public/**` with none.
pub fn localhost_scopes(port: u16) -> String {
    format!(
        r#"
credentials:
  api:
    static: {{ env: API_TOKEN }}
scopes:
  api:
    - host: localhost
      port: {port}
      methods: [GET]
      paths: ["/v1/**"]
      credential: api
      allow_private: true
  other:
    - host: localhost
      port: {port}
      methods: [GET]
      paths: ["/public/**"]
      allow_private: true
"#
    )
}

/// `credgate serve` with [`localhost_scopes`] for a recording HTTPS
/// upstream on `localhost` that answers with `handler`, and the secret the
/// `api` credential injects.
pub async fn localhost_daemon(handler: Handler) -> (Daemon, Upstream, String) {
    let secret = test_secret();
    let files = DaemonFiles::new();
    let upstream = files.upstream("localhost", handler).await;
    files.write_config(&localhost_scopes(upstream.port()));
    let d = files.serve(&[("API_TOKEN", &secret)]).await;
    (d, upstream, secret)
}

/// The task id `credgate run` announced on stderr.
pub fn run_task_id(out: &Outcome) -> String {
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("credgate: task "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no task announced: {out:?}"))
        .to_owned()
}

/// An upstream that answers every request with `body` as JSON.
pub fn json_handler(body: &'static str) -> Handler {
    Arc::new(move |_| Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        chunks: vec![body.as_bytes().to_vec()],
    })
}

/// A request through a proxy with curl: `-x PROXY --cacert CA URL`; the
/// status codes go on the last line of stdout (see [`curl_status`]).
pub fn curl_via(proxy_url: &str, ca_cert: &Path, url: &str) -> std::process::Command {
    let mut cmd = curl([
        "-w",
        "\n%{http_code} %{http_connect}",
        "-x",
        proxy_url,
        "--cacert",
    ]);
    cmd.arg(ca_cert).arg(url);
    cmd
}

/// The status `curl_via` got, and the body before it: the response's
/// status, or the proxy's answer to CONNECT when the tunnel was refused.
pub fn curl_status(out: &Outcome) -> (u16, String) {
    let (body, codes) = out
        .stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let codes: Vec<u16> = codes
        .split(' ')
        .map(|c| c.trim().parse().unwrap_or_else(|_| panic!("{out:?}")))
        .collect();
    let status = match codes[..] {
        [0, connect] => connect,
        [status, _] => status,
        _ => panic!("{out:?}"),
    };
    (status, body.to_owned())
}

// ---------------------------------------------------------------------------
// Helpers for the adversarial and record tests.
// ---------------------------------------------------------------------------

impl Env {
    /// Like [`Env::start`], but credgate trusts `upstream_ca` for upstream
    /// TLS, so upstreams can be started first and their ports named in the
    /// config.
    pub async fn start_trusting(
        upstream_ca: Arc<CertificateAuthority>,
        extra: &str,
        vars: &[(&str, &str)],
    ) -> Env {
        let dir = TempDir::new();
        credgate::tls::init_ca(&dir.path().join("ca"), false).unwrap();
        std::fs::write(dir.path().join("upstream-ca.pem"), upstream_ca.cert_pem()).unwrap();
        let text = base_config(dir.path(), extra);
        let config_path = dir.path().join("credgate.yaml");
        std::fs::write(&config_path, &text).unwrap();
        let env: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
        let resolver = Arc::new(CountingResolver::default());
        let running = Running::start_with(config, &env, None, resolver.clone())
            .await
            .unwrap();
        Env {
            proxy: running.proxy_addr,
            admin: running.admin_addr,
            ca_cert: dir.path().join("ca/ca.crt"),
            audit: dir.path().join("decisions.jsonl"),
            admin_token_file: dir.path().join("admin-token"),
            config_path,
            running: Some(running),
            resolver,
            upstream_ca,
            dir,
        }
    }

    /// Request records only (no task or credential lifecycle events).
    pub async fn request_records(&self) -> Vec<DecisionRecord> {
        self.records()
            .await
            .into_iter()
            .filter(|r| r.event == credgate::audit::Event::Request)
            .collect()
    }

    /// Waits (bounded, about two seconds) until `pred` holds for some request
    /// record, and returns the request records then.
    pub async fn wait_for_record(
        &self,
        pred: impl Fn(&DecisionRecord) -> bool,
    ) -> Vec<DecisionRecord> {
        self.wait_for_records(1, pred).await
    }

    /// Waits (bounded, about two seconds) until `pred` holds for at least `n`
    /// request records, and returns the request records then.
    pub async fn wait_for_records(
        &self,
        n: usize,
        pred: impl Fn(&DecisionRecord) -> bool,
    ) -> Vec<DecisionRecord> {
        for _ in 0..100 {
            let records = self.request_records().await;
            if records.iter().filter(|r| pred(r)).count() >= n {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.request_records().await
    }
}

/// Answers one request on an upstream: records it, then replies as `handler` says.
async fn record_and_reply(
    req: Request<Incoming>,
    handler: Handler,
    rec: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<ChunkedBody>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let got = Received {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let reply = handler(&got);
    rec.lock().unwrap().push(got);
    let mut builder = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        builder = builder.header(k, v);
    }
    Ok(builder.body(ChunkedBody::new(reply.chunks)).unwrap())
}

impl Upstream {
    /// A recording plain-HTTP upstream on 127.0.0.1, for rules with
    /// `schemes: [http]` and `allow_private: true`.
    pub async fn start_plain(handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let rec = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let rec = rec.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        record_and_reply(req, handler.clone(), rec.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            received,
            task,
        }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// One HTTP/1 response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Every byte read for this response (head and framed body, as sent).
    pub raw: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `x-credgate-reason` header.
    pub fn reason(&self) -> Option<&str> {
        self.header("x-credgate-reason")
    }

    /// The body as JSON (credgate's error bodies).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The head and the de-chunked body, as text (to search for secrets and
    /// for messages). Not the raw bytes: chunk framing could cut a secret.
    pub fn text(&self) -> String {
        let head_end = self
            .raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.raw.len(), |p| p + 4);
        let mut all = self.raw[..head_end].to_vec();
        all.extend_from_slice(&self.body);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// The de-chunked body and the number of bytes the chunked framing took,
/// when `data` holds a complete chunked body.
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&data[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if data.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}

/// What can be made of `data` so far: a complete response, or `None` when
/// more bytes are needed. `eof` says the peer closed.
fn parse_response(data: &[u8], eof: bool) -> Result<Option<RawResponse>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(format!(
                "invalid response ({e}): {}",
                String::from_utf8_lossy(data)
            ))
        }
    };
    let status = resp.code.unwrap_or_default();
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let rest = &data[head_len..];
    let done = |body: Vec<u8>, used: usize| RawResponse {
        status,
        headers: headers.clone(),
        body,
        raw: data[..head_len + used].to_vec(),
    };
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Ok(dechunk(rest).map(|(body, used)| done(body, used)));
    }
    if let Some(len) = find("content-length") {
        let len: usize = len.trim().parse().map_err(|_| "bad content-length")?;
        return Ok((rest.len() >= len).then(|| done(rest[..len].to_vec(), len)));
    }
    // No framing: a CONNECT reply, or a status without a body. (credgate
    // frames every other response.)
    if (100..300).contains(&status) || status == 304 {
        return Ok(Some(done(Vec::new(), 0)));
    }
    // Delimited by close.
    Ok(eof.then(|| done(rest.to_vec(), rest.len())))
}

/// Reads one complete response from `stream`, waiting at most `wait`.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> Result<RawResponse, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(resp) = parse_response(&data, false)? {
            return Ok(resp);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return Err(format!(
                    "no complete response within {wait:?}: {:?}",
                    String::from_utf8_lossy(&data)
                ))
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return parse_response(&data, true)?.ok_or_else(|| {
                    format!(
                        "connection closed before a complete response: {:?}",
                        String::from_utf8_lossy(&data)
                    )
                })
            }
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `request` and reads one response (five seconds at most).
pub async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> RawResponse {
    stream.write_all(request).await.unwrap();
    stream.flush().await.unwrap();
    read_response(stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Opens a connection to the proxy, sends `request` and reads one response.
pub async fn send_plain(env: &Env, request: &[u8]) -> (TcpStream, RawResponse) {
    let mut stream = TcpStream::connect(env.proxy).await.unwrap();
    let resp = exchange(&mut stream, request).await;
    (stream, resp)
}

/// Waits (at most `wait`) for the peer to close `stream`: `Ok` on EOF or
/// reset, `Err` with what arrived instead (data, or nothing before the time
/// ran out).
pub async fn expect_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        // A reset closes the connection as surely as a FIN.
        Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
        Ok(Ok(n)) => Err(format!(
            "data after the response: {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
        Err(_) => Err(format!("still open after {wait:?}")),
    }
}

/// Sends `CONNECT target` with `auth` (if any) and reads the reply head.
pub async fn connect_raw(env: &Env, auth: Option<&str>, target: &str) -> (TcpStream, RawResponse) {
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
    send_plain(env, request.as_bytes()).await
}

/// Like [`tunnel`], offering `alpn` protocols in the TLS handshake.
pub async fn tunnel_alpn(
    env: &Env,
    auth: &str,
    target: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut stream = TcpStream::connect(env.proxy).await.unwrap();
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, Duration::from_secs(5)).await?;
    if reply.status != 200 {
        return Err(reply.text());
    }
    tls_over(stream, &env.ca_cert, sni, alpn).await
}

/// An HTTP/2 client over an intercepted tunnel negotiated with ALPN `h2`.
pub async fn h2_client(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// Sends `request` on an HTTP/2 connection and collects the response.
pub async fn h2_exchange(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    request: Request<http_body_util::Full<Bytes>>,
) -> (http::response::Parts, Vec<u8>) {
    let response = tokio::time::timeout(Duration::from_secs(5), send.send_request(request))
        .await
        .expect("an h2 response in time")
        .expect("an h2 response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts, body)
}

impl Env {
    /// Like [`Env::stop`], but hands back the directory with the decision
    /// log instead of removing it, so the log can be read after shutdown.
    pub async fn stop_keeping_files(self) -> TempDir {
        let Env { running, dir, .. } = self;
        if let Some(r) = running {
            r.shutdown().await;
        }
        dir
    }
}

/// A `credentials:` entry (indented for the map) for an `exec` credential
/// that appends a line to `fetches` each time it runs and prints `value`.
pub fn exec_credential(name: &str, fetches: &std::path::Path, value: &str) -> String {
    let command = [
        "/bin/sh",
        "-c",
        r#"echo fetched >> "$1"; printf '{"token":"%s","expires_in":300}' "$2""#,
        "mint",
        &fetches.display().to_string(),
        value,
    ]
    .iter()
    .map(|a| serde_json::to_string(a).unwrap())
    .collect::<Vec<_>>()
    .join(", ");
    format!("\n  {name}:\n    exec:\n      command: [{command}]\n")
}
