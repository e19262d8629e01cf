//! `credgate demo`: the first run. Everything happens on loopback, offline,
//! and nothing is left running:
//!
//! 1. a local HTTPS API that only answers callers presenting its bearer token;
//! 2. the real proxy, on the default configuration plus a `demo` scope and a
//!    `demo-api` credential that only credgate knows;
//! 3. a scripted agent, a real HTTP client going through CONNECT and TLS
//!    interception, that tries five things and shows what credgate did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::serve::Running;
use crate::audit::DecisionRecord;
use crate::config::{Config, DEFAULT_CONFIG_YAML};
use crate::secret::random_bytes;
use crate::task::{TaskService, TaskSpec};
use crate::tls::{init_ca, CertificateAuthority, LeafCache};

/// Arguments of `credgate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo's directory (CA, config, decision log) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo; exit code 0 when every step behaved as credgate promises.
pub async fn run(args: &DemoArgs) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!(
        "credgate-demo-{}",
        crate::hex::lower(&random_bytes::<6>())
    ));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir).await;
    if args.keep {
        println!("\nthe demo's files are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// A random alphanumeric string (for the demo's fake secrets).
fn alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes::<64>()
        .iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

async fn run_in(dir: &Path) -> anyhow::Result<i32> {
    println!("credgate demo: everything runs on 127.0.0.1 and stops at the end.\n");

    // The upstream: a local HTTPS API with its own CA, which credgate is told to trust.
    let api_token = format!("demo-api-secret-{}", alnum(24));
    let upstream_ca_dir = dir.join("upstream-ca");
    let upstream_files = init_ca(&upstream_ca_dir, false)?;
    let upstream_ca = Arc::new(CertificateAuthority::load(
        &upstream_files.cert,
        &upstream_files.key,
    )?);
    let api_tls = LeafCache::new(upstream_ca)
        .server_config("localhost")
        .await?;
    let api_listener = TcpListener::bind("127.0.0.1:0").await?;
    let api_port = api_listener.local_addr()?.port();
    let api = tokio::spawn(serve_demo_api(api_listener, api_tls, api_token.clone()));
    println!("  local API      https://localhost:{api_port}  (answers only `Authorization: Bearer <its token>`)");

    // The proxy: the default configuration, with the demo's paths, scope and credential.
    let ca_files = init_ca(&dir.join("ca"), false)?;
    let config_text = demo_config(
        dir,
        &ca_files.cert,
        &ca_files.key,
        &upstream_files.cert,
        api_port,
    )?;
    std::fs::write(dir.join("credgate.yaml"), &config_text)?;
    let env: BTreeMap<String, String> =
        [("CREDGATE_DEMO_API_TOKEN".to_string(), api_token.clone())].into();
    let config = Config::parse(&config_text, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let audit_path = config.audit_path.clone();
    let running = Running::start(config, &env).await?;
    println!(
        "  credgate       proxy {}  admin {}",
        running.proxy_addr, running.admin_addr
    );

    let started = running.gateway.start_task(TaskSpec {
        agent: "demo-agent".into(),
        scopes: vec!["demo".into()],
        ttl: None,
        labels: [("ticket".to_string(), "DEMO-1".to_string())].into(),
    })?;
    let task_id = started.task.id.clone();
    println!("  task           {task_id}  (scope demo; the agent holds only the task token)\n");

    let agent = DemoAgent {
        proxy: running.proxy_addr,
        task_id: task_id.clone(),
        token: started.token.expose().to_string(),
        ca_cert: ca_files.cert.clone(),
    };
    let origin = format!("localhost:{api_port}");
    let mut failures = 0;

    println!("1. The agent reads reports, sending an Authorization header of its own.");
    let r = agent
        .request(
            &origin,
            "GET",
            "/v1/reports",
            &[("authorization", "Bearer agent-own-token")],
            "",
        )
        .await?;
    failures += check(
        r.status == 200 && r.body.contains("demo-service"),
        &format!("{} {}", r.status, first_line(&r.body)),
        "allowed; credgate stripped the agent's header and injected the real credential",
    );

    println!("2. The agent tries to delete a report, which no rule allows.");
    let r = agent
        .request(&origin, "DELETE", "/v1/reports/7", &[], "")
        .await?;
    failures += check(
        r.status == 403 && r.body.contains("no_matching_rule"),
        &format!("{} {}", r.status, first_line(&r.body)),
        "denied before any connection to the API",
    );

    println!("3. The agent tries to send a GitHub token it found, in a request body.");
    let leaked = format!("ghp_{}", alnum(36));
    let r = agent
        .request(
            &origin,
            "POST",
            "/v1/reports",
            &[("content-type", "application/json")],
            &format!("{{\"note\":\"{leaked}\"}}"),
        )
        .await?;
    failures += check(
        r.status == 403 && r.body.contains("secret_in_request"),
        &format!("{} {}", r.status, first_line(&r.body)),
        "blocked; the record names the detection rule, never the value",
    );

    println!("4. The API echoes back the Authorization header it received (raw and base64).");
    let r = agent.request(&origin, "GET", "/v1/echo", &[], "").await?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("Bearer {api_token}"));
    let leaked_back = r.body.contains(&api_token) || r.body.contains(&b64[4..b64.len() - 4]);
    failures += check(
        r.status == 200 && !leaked_back && r.body.contains("****"),
        &format!("{} {}", r.status, first_line(&r.body)),
        "the credential was scrubbed from the response before it reached the agent",
    );

    println!("5. The agent tries an origin outside its scope.");
    let r = agent
        .request("exfil.example:443", "GET", "/", &[], "")
        .await?;
    failures += check(
        r.status == 403,
        &format!("{} {}", r.status, first_line(&r.body)),
        "CONNECT refused before any DNS lookup",
    );

    println!("6. The task ends; credgate revokes what it issued and records it.");
    running.gateway.end_task(&task_id).await?;
    let r = agent
        .request(&origin, "GET", "/v1/reports", &[], "")
        .await?;
    failures += check(
        r.status == 407,
        &format!("{} {}", r.status, first_line(&r.body)),
        "the ended task's token no longer works",
    );

    running.shutdown().await;
    api.abort();

    println!("\nDecision records ({}):", audit_path.display());
    let text = std::fs::read_to_string(&audit_path).context("cannot read the decision log")?;
    for line in text.lines() {
        let rec: DecisionRecord =
            serde_json::from_str(line).context("a decision record is not valid")?;
        println!("  {}", summarise(&rec));
    }
    if text.contains(&api_token) || text.contains(&leaked) || text.contains(agent.token.as_str()) {
        println!("✗ a secret appeared in the decision log");
        failures += 1;
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("\"event\":\"request\"") && l.contains("\"demo-api\""))
    {
        println!("\nOne record in full:\n{line}");
    }
    if failures == 0 {
        println!("\nAll steps behaved as expected. Next: `credgate ca init`, `credgate serve`, `credgate run --scope S -- CMD` (see README).");
        Ok(0)
    } else {
        println!("\n{failures} step(s) did not behave as expected.");
        Ok(1)
    }
}

fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.len() > 110 {
        format!(
            "{}…",
            &line[..line.char_indices().nth(110).map_or(line.len(), |(i, _)| i)]
        )
    } else {
        line.to_string()
    }
}

fn check(ok: bool, got: &str, meaning: &str) -> i32 {
    if ok {
        println!("   ✓ {got}\n     {meaning}");
        0
    } else {
        println!("   ✗ unexpected: {got}");
        1
    }
}

fn summarise(rec: &DecisionRecord) -> String {
    let event = serde_json::to_value(rec.event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let decision = rec
        .decision
        .and_then(|d| serde_json::to_value(d).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    let target = match (&rec.method, &rec.host) {
        (Some(m), Some(h)) => format!("{m} {h}{}", rec.path.as_deref().unwrap_or("")),
        (Some(m), None) => m.to_string(),
        _ => String::new(),
    };
    let reason = rec.reason.map(|r| r.as_str()).unwrap_or("");
    let extra = if !rec.stripped.is_empty() {
        format!(" stripped={}", rec.stripped.join(","))
    } else if !rec.findings.is_empty() {
        format!(" findings={}", rec.findings.join(","))
    } else if rec.scrubbed > 0 {
        format!(" scrubbed={}", rec.scrubbed)
    } else if rec.event != crate::audit::Event::Request {
        rec.message.clone().unwrap_or_default()
    } else {
        String::new()
    };
    format!("{event:<17} {decision:<5} {target:<45} {reason}{extra}")
}

/// The demo configuration: the built-in default with the demo's paths, one
/// scope and one credential.
fn demo_config(
    dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    upstream_ca: &Path,
    api_port: u16,
) -> anyhow::Result<String> {
    let mut root: serde_yaml::Value = serde_yaml::from_str(DEFAULT_CONFIG_YAML)?;
    let set = |root: &mut serde_yaml::Value, key: &str, value: serde_yaml::Value| {
        if let serde_yaml::Value::Mapping(m) = root {
            m.insert(key.into(), value);
        }
    };
    set(&mut root, "listen", "127.0.0.1:0".into());
    let overlay: serde_yaml::Value = serde_yaml::from_str(&format!(
        r#"
admin: {{ listen: "127.0.0.1:0", token: {{ file: {admin} }} }}
ca: {{ cert: {cert}, key: {key} }}
audit: {{ path: {audit} }}
upstream: {{ extra_ca: {upstream_ca} }}
credentials:
  demo-api:
    static: {{ env: CREDGATE_DEMO_API_TOKEN }}
    inject: {{ header: Authorization, format: "Bearer {{token}}" }}
scopes:
  demo:
    - host: localhost
      port: {api_port}
      methods: [GET, POST]
      paths: ["/v1/reports", "/v1/reports/*", "/v1/echo"]
      credential: demo-api
      allow_private: true
"#,
        admin = serde_json::to_string(&dir.join("admin-token").display().to_string())?,
        cert = serde_json::to_string(&ca_cert.display().to_string())?,
        key = serde_json::to_string(&ca_key.display().to_string())?,
        audit = serde_json::to_string(&dir.join("decisions.jsonl").display().to_string())?,
        upstream_ca = serde_json::to_string(&upstream_ca.display().to_string())?,
    ))?;
    if let serde_yaml::Value::Mapping(m) = overlay {
        for (k, v) in m {
            let key = k.as_str().unwrap_or_default().to_string();
            set(&mut root, &key, v);
        }
    }
    Ok(serde_yaml::to_string(&root)?)
}

/// The demo API: `GET /v1/reports`, `POST /v1/reports`, and `GET /v1/echo`,
/// which reflects the Authorization header it received, as careless APIs do.
async fn serve_demo_api(listener: TcpListener, tls: Arc<rustls::ServerConfig>, token: String) {
    // The demo API speaks HTTP/1.1 only, so it must not accept `h2` in ALPN.
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let expected = format!("Bearer {token}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let expected = expected.clone();
                async move { Ok::<_, std::convert::Infallible>(demo_api_answer(req, &expected)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn demo_api_answer(req: Request<Incoming>, expected: &str) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body + "\n")))
            .expect("static response")
    };
    if auth != expected {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"missing or wrong bearer token"}"#.into(),
        );
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/v1/reports") => json(
            StatusCode::OK,
            r#"{"caller":"demo-service","reports":[{"id":7,"title":"Q3 costs"}]}"#.into(),
        ),
        ("POST", "/v1/reports") => json(StatusCode::CREATED, r#"{"id":8}"#.into()),
        ("GET", "/v1/echo") => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(auth);
            json(
                StatusCode::OK,
                serde_json::json!({ "you_sent": auth, "base64": b64 }).to_string(),
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such endpoint"}"#.into(),
        ),
    }
}

/// A scripted agent: a real HTTP client speaking to credgate over CONNECT and
/// TLS, exactly as an agent with HTTPS_PROXY set would.
struct DemoAgent {
    proxy: SocketAddr,
    task_id: String,
    token: String,
    ca_cert: PathBuf,
}

struct AgentResponse {
    status: u16,
    body: String,
}

impl DemoAgent {
    async fn request(
        &self,
        origin: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<AgentResponse> {
        let mut stream = TcpStream::connect(self.proxy).await?;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.task_id, self.token));
        stream
            .write_all(
                format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {auth}\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let (status, rest) = read_connect_reply(&mut stream).await?;
        if status != 200 {
            return Ok(AgentResponse { status, body: rest });
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(&self.ca_cert)? {
            roots.add(cert?)?;
        }
        let tls_config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = origin
            .rsplit_once(':')
            .map_or(origin, |(h, _)| h)
            .to_string();
        let name = rustls_pki_types::ServerName::try_from(host)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config))
            .connect(name, stream)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", origin);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = sender
            .send_request(builder.body(Full::new(Bytes::from(body.to_string())))?)
            .await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok(AgentResponse {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// Reads the proxy's answer to CONNECT: the status and, for a refusal, its body.
async fn read_connect_reply(stream: &mut TcpStream) -> anyhow::Result<(u16, String)> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the proxy closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("invalid CONNECT reply")?;
    if status == 200 {
        return Ok((status, String::new()));
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((
        status,
        String::from_utf8_lossy(&buf[head_end..]).to_string(),
    ))
}
