//! Human approvals through the real proxy and the real CLI: a rule with
//! `approval:` refuses a request until a person approves it, with no DNS
//! lookup and no credential fetch before; `credgate approvals` answers;
//! grants, holds, two approvers, denials and expiry behave as documented.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use credgate::audit::{Event, Verdict};
use credgate::tls::CertificateAuthority;
use support::*;

struct Setup {
    env: Env,
    upstream: Upstream,
    fetches: std::path::PathBuf,
    minted: String,
    _files: TempDir,
}

/// An upstream `api.test`, reading free and writing under `approval`.
async fn setup(approval: &str) -> Setup {
    setup_with(approval, "").await
}

async fn setup_with(approval: &str, more: &str) -> Setup {
    let files = TempDir::new();
    let fetches = files.path().join("fetches.log");
    let minted = test_secret();
    let credential = exec_credential("minted", &fetches, &minted);
    let upstream_ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = Upstream::start_tls(upstream_ca.clone(), "api.test", echo_handler()).await;
    let config = format!(
        r#"
credentials:{credential}
scopes:
  repo:
    - host: api.test
      port: {port}
      methods: [GET]
      credential: minted
      allow_private: true
    - host: api.test
      port: {port}
      methods: [POST, PUT, DELETE]
      paths: ["/repos/**"]
      credential: minted
      allow_private: true
      approval: {approval}
{more}
"#,
        port = upstream.port(),
        more = more.replace("{port}", &upstream.port().to_string()),
    );
    let env = Env::start_trusting(upstream_ca, &config, &[]).await;
    env.resolver.map("api.test", "127.0.0.1");
    Setup {
        env,
        upstream,
        fetches,
        minted,
        _files: files,
    }
}

impl Setup {
    /// `METHOD PATH` through a fresh tunnel as the task `(id, token)`.
    async fn send(&self, task: &(String, String), method: &str, path: &str) -> RawResponse {
        self.send_with(task, method, path, "X-Purpose: merge").await
    }

    /// [`Setup::send`] with `header` in place of `X-Purpose`.
    async fn send_with(
        &self,
        task: &(String, String),
        method: &str,
        path: &str,
        header: &str,
    ) -> RawResponse {
        let auth = proxy_auth(&task.0, &task.1);
        let authority = format!("api.test:{}", self.upstream.port());
        let mut tls = tunnel(&self.env, &auth, &authority, "api.test")
            .await
            .unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 2\r\n{header}\r\n\r\n{{}}"
        );
        exchange(&mut tls, request.as_bytes()).await
    }

    /// `credgate approvals ARGS…` against this server.
    async fn cli(&self, args: &[&str]) -> Outcome {
        let mut cmd = credgate(["approvals"]);
        cmd.args(args).args(admin_flags(
            self.env.admin,
            &self.env.admin_token_file,
            &self.env.ca_cert,
        ));
        run_cli(cmd).await
    }

    fn fetched(&self) -> usize {
        std::fs::read_to_string(&self.fetches)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

/// The approval id a 403 `approval_required` names, checked in both places.
fn approval_id(resp: &RawResponse, reason: &str) -> String {
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.reason(), Some(reason), "{}", resp.text());
    let body = resp.json();
    let id = body["approval"].as_str().unwrap().to_owned();
    assert_eq!(resp.header("credgate-approval"), Some(id.as_str()));
    assert!(id.starts_with("apr-") && id.len() == 36, "{id}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_a_person_then_goes_with_the_credential() {
    let s = setup("required").await;
    let task = s.env.start_task(&["repo"]);

    // Reading is free.
    let read = s.send(&task, "GET", "/repos/a/b").await;
    assert_eq!(read.status, 200, "{}", read.text());
    let (lookups, fetched) = (s.env.resolver.count(), s.fetched());

    // 1. Writing is refused with an approval id, before any lookup or fetch.
    let refused = s.send(&task, "PUT", "/repos/a/b/pulls/1/merge").await;
    let id = approval_id(&refused, "approval_required");
    assert!(refused.json()["message"].as_str().unwrap().contains(&id));
    assert_eq!(s.env.resolver.count(), lookups, "looked up before approval");
    assert_eq!(s.fetched(), fetched, "fetched a credential before approval");
    assert_eq!(s.upstream.received().len(), 1);
    // Asked again while pending: the same approval.
    let again = s.send(&task, "PUT", "/repos/a/b/pulls/1/merge").await;
    assert_eq!(approval_id(&again, "approval_required"), id);

    // The approver's view: the request, never a secret.
    let list = s.cli(&["list", "--state", "pending"]).await;
    list.expect_code(0);
    assert!(list.stdout.contains(&id) && list.stdout.contains("/repos/a/b/pulls/1/merge"));
    let show = s.cli(&["show", &id]).await;
    show.expect_code(0);
    assert!(
        show.stdout.contains("PUT https://api.test"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("x-purpose: merge"), "{}", show.stdout);
    assert!(
        show.stdout.contains("asked     2 time(s)"),
        "{}",
        show.stdout
    );
    for text in [&list.stdout, &show.stdout] {
        assert!(!text.contains(&task.1) && !text.contains(&s.minted));
    }

    // 2. Approved through the CLI.
    let approved = s.cli(&["approve", &id, "--as", "approver-1"]).await;
    approved.expect_code(0);
    assert_eq!(
        approved.stdout.trim(),
        format!("{id} granted (request) by approver-1")
    );

    // 3. The retry goes, with the credential injected.
    let merged = s.send(&task, "PUT", "/repos/a/b/pulls/1/merge").await;
    assert_eq!(merged.status, 200, "{}", merged.text());
    let received = s.upstream.received();
    assert_eq!(
        received.last().unwrap().header("authorization"),
        [format!("Bearer {}", s.minted).as_str()]
    );
    let records = s
        .env
        .wait_for_record(|r| {
            r.method.as_deref() == Some("PUT") && r.decision == Some(Verdict::Allow)
        })
        .await;
    let allowed = records
        .iter()
        .find(|r| r.method.as_deref() == Some("PUT") && r.decision == Some(Verdict::Allow))
        .unwrap();
    let approval = allowed
        .approval
        .as_ref()
        .expect("the record names the approval");
    assert_eq!(approval.id, id);
    assert_eq!(approval.state, "granted");
    assert_eq!(approval.approvers, ["approver-1"]);
    assert_eq!(approval.grant.as_deref(), Some("request"));
    let refusals: Vec<_> = records
        .iter()
        .filter(|r| r.reason == Some(credgate::reason::Reason::ApprovalRequired))
        .collect();
    assert_eq!(refusals.len(), 2);
    assert!(refusals
        .iter()
        .all(|r| r.approval.as_ref().unwrap().state == "pending"));

    // 4. Another path needs its own approval, and so does the same request
    // again: a request grant is used once.
    for path in ["/repos/a/b/pulls/2/merge", "/repos/a/b/pulls/1/merge"] {
        let next = s.send(&task, "PUT", path).await;
        assert_ne!(approval_id(&next, "approval_required"), id, "{path}");
    }

    // The approval's own records.
    let all = s.env.records().await;
    let events: Vec<_> = all
        .iter()
        .filter(|r| r.approval.as_ref().is_some_and(|a| a.id == id) && r.event != Event::Request)
        .map(|r| r.event)
        .collect();
    assert_eq!(events, [Event::ApprovalRequest, Event::ApprovalGrant]);
    let log = s.env.log_text().await;
    assert!(!log.contains(&s.minted) && !log.contains(&task.1));
    // `credgate logs --approvals`: the approval events and the requests
    // that needed one, not the free read.
    let mut logs = credgate(["logs", "--approvals", "--json"]);
    logs.arg(&s.env.audit);
    let out = run_cli(logs).await;
    out.expect_code(0);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 6, "{}", out.stdout);
    assert!(
        lines.iter().all(|l| l["approval"]["id"].is_string()),
        "{}",
        out.stdout
    );
    assert!(
        !lines.iter().any(|l| l["method"] == "GET"),
        "{}",
        out.stdout
    );
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_goes_the_moment_it_is_approved_or_is_refused_when_the_hold_ends() {
    let s = setup("{ hold: 3s }").await;
    let task = s.env.start_task(&["repo"]);
    let refused = {
        let started = Instant::now();
        let resp = s.send(&task, "POST", "/repos/a/b/issues").await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(3), "{waited:?}");
        resp
    };
    let id = approval_id(&refused, "approval_required");

    // Held again (the same pending approval), and approved meanwhile.
    let approve = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = s.cli(&["approve", &id, "--as", "approver-1"]).await;
        out.expect_code(0);
    };
    let started = Instant::now();
    let (resp, ()) = tokio::join!(s.send(&task, "POST", "/repos/a/b/issues"), approve);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited out the hold"
    );
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_must_be_two_people_and_a_timed_grant_covers_the_rule() {
    let s = setup("{ approvers: 2, grant: 10m }").await;
    let task = s.env.start_task(&["repo"]);
    let id = approval_id(
        &s.send(&task, "DELETE", "/repos/a/b").await,
        "approval_required",
    );
    s.cli(&["approve", &id, "--as", "alice"])
        .await
        .expect_code(0);
    let one = s.send(&task, "DELETE", "/repos/a/b").await;
    assert_eq!(
        approval_id(&one, "approval_required"),
        id,
        "one approval is not enough"
    );
    let twice = s.cli(&["approve", &id, "--as", "alice"]).await;
    twice.expect_code(1);
    assert!(
        twice
            .stderr
            .contains("a second approver must be someone else"),
        "{twice:?}"
    );
    let wider = s
        .cli(&["approve", &id, "--as", "bob", "--grant", "task"])
        .await;
    wider.expect_code(1);
    assert!(
        wider.stderr.contains("wider than the rule allows"),
        "{wider:?}"
    );
    let bob = s
        .cli(&["approve", &id, "--as", "bob", "--reason", "checked"])
        .await;
    bob.expect_code(0);
    assert_eq!(
        bob.stdout.trim(),
        format!("{id} granted (10m) by alice, bob")
    );
    // For ten minutes, any request of the task under that rule goes.
    for (method, path) in [("DELETE", "/repos/a/b"), ("POST", "/repos/c/d/issues")] {
        let resp = s.send(&task, method, path).await;
        assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
    }
    // Another task has no grant.
    let other = s.env.start_task(&["repo"]);
    approval_id(
        &s.send(&other, "DELETE", "/repos/a/b").await,
        "approval_required",
    );
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_is_told_to_the_agent_and_sticks() {
    let s = setup("required").await;
    let task = s.env.start_task(&["repo"]);
    let id = approval_id(
        &s.send(&task, "DELETE", "/repos/a/b").await,
        "approval_required",
    );
    let no_reason = s
        .cli(&["deny", &id, "--as", "approver-1", "--reason", " "])
        .await;
    no_reason.expect_code(1);
    s.cli(&[
        "deny",
        &id,
        "--as",
        "approver-1",
        "--reason",
        "not this repo",
    ])
    .await
    .expect_code(0);
    for _ in 0..2 {
        let denied = s.send(&task, "DELETE", "/repos/a/b").await;
        assert_eq!(approval_id(&denied, "approval_denied"), id);
        let message = denied.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("approver-1") && message.contains("not this repo"),
            "{message}"
        );
    }
    let pending = s.cli(&["list", "--state", "pending", "--json"]).await;
    pending.expect_code(0);
    assert_eq!(pending.stdout.trim(), "[]");
    // Decided: answering again is a conflict, and an unknown id is not found.
    let late = s.cli(&["approve", &id, "--as", "approver-2"]).await;
    late.expect_code(1);
    assert!(late.stderr.contains("already denied"), "{late:?}");
    let unknown = s
        .cli(&["show", "apr-00000000000000000000000000000000"])
        .await;
    unknown.expect_code(1);
    assert!(unknown.stderr.contains("no approval"), "{unknown:?}");
    assert_eq!(s.upstream.received().len(), 0);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_approvals_expire_and_end_with_their_task() {
    let s = setup_with("required", "approvals: { pending_ttl: 1s }").await;
    let task = s.env.start_task(&["repo"]);
    let id = approval_id(
        &s.send(&task, "POST", "/repos/a/b/issues").await,
        "approval_required",
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = s.cli(&["approve", &id, "--as", "approver-1"]).await;
    late.expect_code(1);
    assert!(late.stderr.contains("already expired"), "{late:?}");
    // Asked again, it is asked anew; then the task ends with it pending.
    let again = approval_id(
        &s.send(&task, "POST", "/repos/a/b/issues").await,
        "approval_required",
    );
    assert_ne!(again, id);
    s.env.end_task(&task.0).await;
    let records = s.env.records().await;
    let expired: Vec<_> = records
        .iter()
        .filter(|r| r.event == Event::ApprovalExpire)
        .map(|r| r.approval.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(expired, [id, again]);
    s.env.stop().await;
}

/// Under a rule that strips secrets, a secret the agent sent in a header
/// shows in the approval as removed, never as its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_never_shows_a_secret_the_agent_sent() {
    let more = "  strip:
    - host: api.test
      port: {port}
      methods: [POST]
      paths: [\"/strip/**\"]
      allow_private: true
      on_secret: strip
      approval: required";
    let s = setup_with("required", more).await;
    let task = s.env.start_task(&["strip"]);
    let secret = format!("ghp_{}", random_hex(18));
    let header = format!("X-Note: {secret}");
    let resp = s.send_with(&task, "POST", "/strip/a", &header).await;
    let id = approval_id(&resp, "approval_required");
    let show = s.cli(&["show", &id]).await;
    show.expect_code(0);
    assert!(
        show.stdout
            .contains("x-note: (removed: it looks like a secret)"),
        "{}",
        show.stdout
    );
    let json = s.cli(&["list", "--json"]).await;
    for out in [&show, &json] {
        assert!(!out.all().contains(&secret), "{out:?}");
    }
    assert!(!s.env.log_text().await.contains(&secret));
    s.env.stop().await;
}

/// Approvals are the admin API's alone: a task token is no admin token,
/// and the proxy listener does not serve the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_token_answers_approvals() {
    let s = setup("required").await;
    let task = s.env.start_task(&["repo"]);
    let id = approval_id(
        &s.send(&task, "DELETE", "/repos/a/b").await,
        "approval_required",
    );
    let approve = format!(
        "POST /v1/approvals/{id}/approve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 24\r\n\r\n{{\"approver\":\"approver\"}}",
        task.1
    );
    let (_conn, resp) = send_admin(&s.env, approve.as_bytes()).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    // The same request at the proxy listener is no API call.
    let (_conn, resp) = send_plain(&s.env, approve.as_bytes()).await;
    assert_ne!(resp.status, 200, "{}", resp.text());
    let show = s.cli(&["show", &id]).await;
    show.expect_code(0);
    assert!(show.stdout.contains("state     pending"), "{}", show.stdout);
    s.env.stop().await;
}

/// `bytes` sent to the admin listener as they are.
async fn send_admin(env: &Env, bytes: &[u8]) -> (tokio::net::TcpStream, RawResponse) {
    use tokio::io::AsyncWriteExt as _;
    let mut conn = tokio::net::TcpStream::connect(env.admin).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let resp = read_response(&mut conn, Duration::from_secs(5))
        .await
        .unwrap();
    (conn, resp)
}

fn provider() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::new()
}

#[test]
fn the_config_refuses_what_cannot_be_approved() {
    for (approval, says) in [
        ("sometimes", "use required"),
        ("{ approvers: 3 }", "must be 1 or 2"),
        ("{ hold: 10m }", "at most 5m"),
        ("{ grant: forever }", "approval.grant"),
        ("{ who: me }", "unknown field"),
    ] {
        let text = format!("scopes:\n  s:\n    - host: api.test\n      approval: {approval}\n");
        let err = credgate::config::Config::parse(&text, &provider())
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{approval}: {err}");
    }
    let deny =
        "scopes:\n  s:\n    - host: api.test\n      action: deny\n      approval: required\n";
    let err = credgate::config::Config::parse(deny, &provider())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot ask for it"), "{err}");
}
