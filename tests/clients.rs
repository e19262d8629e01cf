//! Real agent clients (curl, Python requests, httpx and aiohttp, Node fetch)
//! through the real proxy, over HTTPS with interception, against a recording
//! TLS upstream: the credential is injected, the agent's own is stripped, and
//! nothing secret comes back.

mod support;

use std::process::Command;
use std::sync::Arc;

use support::*;

/// Where the client scripts are.
const CLIENTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

struct Setup {
    env: Env,
    upstream: Upstream,
    secret: String,
    id: String,
    token: String,
}

async fn setup() -> Setup {
    let secret = test_secret();
    // Bind the upstream first so the rule can name its port.
    let handler: Handler = Arc::new(|r: &Received| {
        if r.path_and_query.starts_with("/echo") {
            echo_handler()(r)
        } else {
            Reply::ok("ok from upstream")
        }
    });
    let upstream_ca = Arc::new(credgate::tls::CertificateAuthority::generate().unwrap());
    let upstream = Upstream::start_tls(upstream_ca.clone(), "api.test", handler).await;
    let extra = format!(
        r#"
credentials:
  api:
    static: {{ env: API_TOKEN }}
scopes:
  api:
    - host: api.test
      port: {port}
      methods: [GET, POST]
      paths: ["/v1/**", "/echo"]
      credential: api
      allow_private: true
"#,
        port = upstream.port()
    );
    let mut env = Env::start(&extra, &[("API_TOKEN", &secret)]).await;
    // The upstream's CA must be the one credgate trusts.
    std::fs::write(
        env.dir.path().join("upstream-ca.pem"),
        upstream_ca.cert_pem(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let provider = [("API_TOKEN".to_string(), secret.clone())]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    let config = credgate::config::Config::parse(&text, &provider).unwrap();
    env.gateway().reload(config, &provider).await.unwrap();
    env.upstream_ca = upstream_ca;
    env.resolver.map("api.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    Setup {
        env,
        upstream,
        secret,
        id,
        token,
    }
}

fn agent_command(s: &Setup, program: &str) -> Command {
    let mut cmd = Command::new(program);
    let proxy = s.env.proxy_url(&s.id, &s.token);
    let ca = s.env.ca_cert.display().to_string();
    cmd.env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env("HTTPS_PROXY", &proxy)
        .env("https_proxy", &proxy)
        .env("SSL_CERT_FILE", &ca)
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .current_dir(CLIENTS_DIR);
    cmd
}

/// Checks the upstream saw exactly the injected credential and none of the
/// agent's, and that no secret is in `output` or the decision log.
async fn assert_injected_and_clean(s: &Setup, output: &str, requests: usize) {
    let received = s.upstream.received();
    assert_eq!(received.len(), requests, "upstream received {received:?}");
    for r in &received {
        assert_eq!(
            r.header("authorization"),
            vec![format!("Bearer {}", s.secret).as_str()]
        );
        assert!(
            r.header("x-api-key").is_empty(),
            "agent's x-api-key was forwarded"
        );
        assert!(r.header("proxy-authorization").is_empty());
        assert!(r.header("cookie").is_empty());
    }
    assert!(
        !output.contains(&s.secret),
        "credential reached the agent: {output}"
    );
    assert!(!output.contains(&s.token), "task token reached the agent");
    let log = s.env.log_text().await;
    assert!(!log.contains(&s.secret), "credential in the decision log");
    assert!(!log.contains(&s.token), "task token in the decision log");
    assert!(
        !log.contains("agent-own-token"),
        "agent's header value in the decision log"
    );
    let records = s.env.records().await;
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r.host.as_deref() == Some("api.test") && r.method.as_deref() != Some("CONNECT"))
        .collect();
    assert_eq!(
        allowed.len(),
        requests,
        "one record per request: {records:?}"
    );
    let issued: Vec<_> = records
        .iter()
        .filter(|r| r.event == credgate::audit::Event::CredentialIssue)
        .collect();
    assert_eq!(
        issued.len(),
        1,
        "one credential.issue record per task: {issued:?}"
    );
    assert_eq!(
        issued[0].credential.as_ref().map(|c| c.name.as_str()),
        Some("api")
    );
    // A client that trusts the CA: each CONNECT is an allowed tunnel (or a
    // challenge its client answered).
    for r in records.iter().filter(|r| {
        r.method.as_deref() == Some("CONNECT")
            && r.decision != Some(credgate::audit::Verdict::Challenge)
    }) {
        assert_eq!(r.reason, Some(credgate::reason::Reason::Allowed), "{r:?}");
        assert!(
            r.message
                .as_deref()
                .is_some_and(|m| m.starts_with("tunnel intercepted")),
            "{r:?}"
        );
    }
    for r in allowed {
        assert_eq!(r.credential.as_ref().map(|c| c.name.as_str()), Some("api"));
        assert!(
            r.stripped.iter().any(|h| h == "authorization"),
            "{:?}",
            r.stripped
        );
    }
}

/// Runs curl, which must succeed with the upstream's answer in its output;
/// returns that output.
async fn run_curl(cmd: Command) -> String {
    let out = run_command(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok from upstream"), "{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_https_proxy() {
    let s = setup().await;
    let url = format!("https://api.test:{}", s.upstream.port());
    let mut cmd = agent_command(&s, "curl");
    cmd.args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&s.env.ca_cert)
        .args([
            "-H",
            "Authorization: Bearer agent-own-token",
            "-H",
            "X-Api-Key: agent-own-token",
        ])
        .arg(format!("{url}/v1/items"))
        .arg("--next")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&s.env.ca_cert)
        .args(["-H", "Authorization: Bearer agent-own-token"])
        .arg(format!("{url}/echo"));
    let stdout = run_curl(cmd).await;
    // The echo shows the upstream got a credential, and the agent only its mask.
    assert!(stdout.contains("authorization: Bearer ****"), "{stdout}");
    assert_injected_and_clean(&s, &stdout, 2).await;
    s.env.stop().await;
}

async fn python(library: &str) {
    let s = setup().await;
    let url = format!("https://api.test:{}", s.upstream.port());
    for path in ["/v1/items", "/echo"] {
        let mut cmd = agent_command(&s, "python3");
        cmd.args(["http_get.py", library, "GET"])
            .arg(format!("{url}{path}"))
            .arg("Authorization: Bearer agent-own-token")
            .arg("X-Api-Key: agent-own-token");
        let out = run_command(cmd).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{library} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(reply["status"], 200, "{stdout}");
        assert!(!stdout.contains(&s.secret));
    }
    let received = s.upstream.received();
    assert_eq!(received.len(), 2);
    assert_injected_and_clean(&s, "", 2).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_through_https_proxy() {
    python("requests").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_httpx_through_https_proxy() {
    python("httpx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_through_env_proxy_agent() {
    node_fetch("undici").await;
}

/// The README's line for Node 20: `setGlobalDispatcher(new
/// EnvHttpProxyAgent())` from undici makes Node's own global fetch go
/// through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_global_fetch_through_the_global_dispatcher() {
    node_fetch("global").await;
}

async fn node_fetch(which: &str) {
    let s = setup().await;
    let url = format!("https://api.test:{}", s.upstream.port());
    let mut all = String::new();
    for path in ["/v1/items", "/echo"] {
        let mut cmd = agent_command(&s, "node");
        cmd.env("FETCH", which)
            .args(["fetch.js", "GET"])
            .arg(format!("{url}{path}"))
            .arg("Authorization: Bearer agent-own-token")
            .arg("X-Api-Key: agent-own-token");
        let out = run_command(cmd).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "node failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(reply["status"], 200, "{stdout}");
        all.push_str(&stdout);
    }
    assert!(all.contains("Bearer ****"), "{all}");
    assert_injected_and_clean(&s, &all, 2).await;
    s.env.stop().await;
}

/// `http_get.py MODE GET` of `/v1/items`, then `/echo`, under one
/// `credgate run` task, both sending the agent's own Authorization and
/// X-Api-Key.
async fn python_under_run(s: &Setup, mode: &str) -> Outcome {
    let url = format!("https://api.test:{}", s.upstream.port());
    let script = format!(
        "for path in /v1/items /echo; do \
           python3 http_get.py {mode} GET \"$0$path\" \
             'Authorization: Bearer agent-own-token' 'X-Api-Key: agent-own-token' || exit 1; \
         done"
    );
    let mut cmd = s.env.run_cmd("api", &["sh", "-c", &script, &url]);
    cmd.current_dir(CLIENTS_DIR);
    run_cli(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_aiohttp_with_trust_env_through_credgate_run() {
    let s = setup().await;
    let out = python_under_run(&s, "aiohttp").await;
    out.expect_code(0);
    for line in out.stdout.lines() {
        let reply: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(reply["status"], 200, "{line}");
    }
    assert!(out.stdout.contains("Bearer ****"), "{out:?}");
    assert!(!out.all().contains("cgt_"), "run printed its task token");
    assert_injected_and_clean(&s, &out.all(), 2).await;
    s.env.stop().await;
}

/// aiohttp's default, `trust_env=False`, ignores HTTPS_PROXY: under
/// `credgate run` it goes for the host itself (here a name only credgate's
/// resolver knows, so it cannot connect), and credgate sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_aiohttp_by_default_bypasses_the_proxy() {
    let s = setup().await;
    let out = python_under_run(&s, "aiohttp-default").await;
    assert_ne!(out.code, Some(0), "{out:?}");
    // aiohttp names the host it tried to reach itself: unresolvable, or
    // (where name lookups hang) not reached in time.
    let host = format!("api.test:{}", s.upstream.port());
    assert!(
        out.stderr
            .contains(&format!("Cannot connect to host {host}"))
            || out
                .stderr
                .contains(&format!("Connection timeout to host https://{host}")),
        "{out:?}"
    );
    assert!(!out.stderr.contains(&s.env.proxy.to_string()), "{out:?}");
    assert!(s.upstream.received().is_empty());
    let records = s.env.request_records().await;
    assert!(records.is_empty(), "credgate saw a request: {records:?}");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_asking_for_the_proxy_scheme_first_leaves_a_challenge_not_a_deny() {
    use credgate::audit::Verdict;
    let s = setup().await;
    let url = format!("https://api.test:{}/v1/items", s.upstream.port());
    // As git does by default (http.proxyAuthMethod=anyauth): the first
    // CONNECT goes without credentials, the retry on the same connection
    // with them.
    let mut cmd = agent_command(&s, "curl");
    cmd.args(["-sS", "--fail-with-body", "--proxy-anyauth", "--cacert"])
        .arg(&s.env.ca_cert)
        .args(["-H", "Authorization: Bearer agent-own-token"])
        .arg(&url);
    let stdout = run_curl(cmd).await;
    let records = s.env.request_records().await;
    let decisions: Vec<_> = records
        .iter()
        .map(|r| (r.method.as_deref(), r.decision))
        .collect();
    assert_eq!(
        decisions,
        [
            (Some("CONNECT"), Some(Verdict::Challenge)),
            (Some("CONNECT"), Some(Verdict::Allow)),
            (Some("GET"), Some(Verdict::Allow)),
        ],
        "{records:#?}"
    );
    assert_eq!(records[0].host.as_deref(), Some("api.test"));
    assert_eq!(records[0].task.as_deref(), Some(s.id.as_str()));
    assert_injected_and_clean(&s, &stdout, 1).await;
    s.env.stop().await;
}

/// Runs `program` with `args` through credgate as a client that does not
/// trust the credgate CA, and checks the CONNECT's one record says so and
/// nothing reached the upstream.
async fn refused_certificate(program: &str, args: &[&str]) {
    let s = setup().await;
    let url = format!("https://api.test:{}/v1/items", s.upstream.port());
    let mut cmd = agent_command(&s, program);
    cmd.env_remove("SSL_CERT_FILE").args(args).arg(&url);
    let out = run_command(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{program} trusted credgate: {stderr}"
    );
    // The CONNECT's record is written as its connection closes, which can
    // be just after the client has exited.
    let records = s
        .env
        .wait_for_record(|r| r.method.as_deref() == Some("CONNECT"))
        .await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r.method.as_deref(), Some("CONNECT"), "{r:?}");
    assert_eq!(r.decision, Some(credgate::audit::Verdict::Deny), "{r:?}");
    assert_eq!(
        r.reason,
        Some(credgate::reason::Reason::AgentTlsFailed),
        "{r:?}"
    );
    assert!(
        r.message.as_deref().is_some_and(|m| m.starts_with(
            "the client refused credgate's certificate: does it trust the credgate CA?"
        )),
        "{r:?}"
    );
    assert!(s.upstream.received().is_empty());
    assert!(!s.env.log_text().await.contains(&s.token));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_refusing_the_certificate_in_the_handshake_is_agent_tls_failed() {
    // OpenSSL checks the certificate in the handshake and sends an alert.
    refused_certificate("curl", &["-sS", "--fail-with-body"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_refusing_the_certificate_after_the_handshake_is_agent_tls_failed() {
    // GnuTLS completes the handshake, checks the certificate, and closes.
    refused_certificate(
        "wget",
        &["--no-config", "--no-hsts", "-q", "--tries=1", "-O", "-"],
    )
    .await;
}
