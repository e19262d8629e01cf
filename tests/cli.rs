//! The operator's commands on the real binary: `ca init`, `serve`, `task`,
//! `run`, `check`, `explain` and `logs`, against a `credgate serve` child
//! process and a recording TLS upstream on 127.0.0.1 (named `localhost`,
//! which the binary resolves through the system resolver).

mod support;

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use credgate::audit::{Event, Verdict};
use nix::sys::signal::Signal;
use support::*;

/// A serve process with [`localhost_scopes`] over a fresh upstream answering with `handler`.
async fn daemon_with(handler: Handler) -> (Daemon, Upstream, String) {
    let secret = test_secret();
    let files = DaemonFiles::new();
    let upstream = files.upstream("localhost", handler).await;
    files.write_config(&localhost_scopes(upstream.port()));
    let daemon = files.serve(&[("API_TOKEN", &secret)]).await;
    (daemon, upstream, secret)
}

async fn daemon() -> (Daemon, Upstream, String) {
    daemon_with(ok_handler()).await
}

/// `GET https://localhost:PORT{path}` through the proxy as `task`.
async fn get(d: &Daemon, task: &CliTask, port: u16, path: &str) -> (u16, String) {
    let url = format!("https://localhost:{port}{path}");
    let out = run_cli(curl_via(&task.proxy_url, &d.files.ca_cert, &url)).await;
    curl_status(&out)
}

fn task_list_json(out: &Outcome) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("task list --json printed {out:?}: {e}"))
}

fn state_of(list: &[serde_json::Value], id: &str) -> String {
    list.iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list:?}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------
// ca init

#[test]
fn ca_init_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = TempDir::new();
    let out_dir = dir.path().join("ca");
    let init = |force: bool| {
        let mut cmd = credgate(["ca", "init", "--out"]);
        cmd.arg(&out_dir);
        if force {
            cmd.arg("--force");
        }
        run_bounded(cmd, COMMAND_LIMIT)
    };

    let first = init(false);
    first.expect_code(0);
    let cert = out_dir.join("ca.crt");
    let key = out_dir.join("ca.key");
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    let key_pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        cert_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{cert_pem}"
    );
    assert!(key_pem.contains("PRIVATE KEY"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&key),
        0o600,
        "the CA key is readable by its owner only"
    );
    assert_eq!(mode(&out_dir), 0o700, "the CA directory is private");
    assert!(
        first.stdout.contains(&cert.display().to_string()),
        "{first:?}"
    );
    assert!(
        first.stdout.contains(&key.display().to_string()),
        "{first:?}"
    );
    assert!(!first.all().contains("PRIVATE KEY"), "key material printed");

    let second = init(false);
    second.expect_code(1);
    assert!(
        second.stderr.contains("already exists") && second.stderr.contains("--force"),
        "{second:?}"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_pem, "key kept");
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), cert_pem);

    init(true).expect_code(0);
    let new_key = std::fs::read_to_string(&key).unwrap();
    assert_ne!(new_key, key_pem, "--force made a new key");
    assert_ne!(std::fs::read_to_string(&cert).unwrap(), cert_pem);
    assert_eq!(mode(&key), 0o600);
}

// ---------------------------------------------------------------------------
// serve + task start / list / end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_commands_start_list_and_end_tasks_through_the_admin_api() {
    let (d, upstream, secret) = daemon().await;

    // Text form: the task, its secrets and the agent's shell lines.
    let text = run_cli(d.task_cmd(&[
        "start",
        "--scope",
        "api",
        "--agent",
        "writer",
        "--label",
        "ticket=T-9",
    ]))
    .await;
    text.expect_code(0);
    let field = |name: &str| {
        text.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {}", text.stdout))
            .trim()
            .to_owned()
    };
    let text_id = field("task:");
    let text_token = field("token:");
    let text_url = field("proxy_url:");
    assert!(text_id.starts_with("task-"), "{}", text.stdout);
    assert_eq!(
        text_url,
        format!("http://{text_id}:{text_token}@{}", d.serve.proxy)
    );
    let ca = std::fs::canonicalize(&d.files.ca_cert).unwrap();
    for line in [
        format!("export HTTPS_PROXY='{text_url}'"),
        format!("export HTTP_PROXY='{text_url}'"),
        format!("export SSL_CERT_FILE='{}'", ca.display()),
        format!("export NODE_EXTRA_CA_CERTS='{}'", ca.display()),
        "export NODE_USE_ENV_PROXY='1'".to_owned(),
        "export NO_PROXY=''".to_owned(),
        "unset ALL_PROXY all_proxy".to_owned(),
    ] {
        assert!(
            text.stdout.lines().any(|l| l == line),
            "{line} missing:\n{}",
            text.stdout
        );
    }

    // serve created the admin token file, readable by its owner only.
    let token_mode = std::fs::metadata(&d.files.admin_token_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(token_mode, 0o600);

    // JSON form.
    let json_task = d.start_task(&["api"]).await;
    assert_eq!(
        json_task.proxy_url,
        format!(
            "http://{}:{}@{}",
            json_task.id, json_task.token, d.serve.proxy
        )
    );
    assert_ne!(json_task.token, text_token);
    assert!(json_task.token.len() >= 22, "a token of at least 128 bits");

    // The token works: the request is allowed and the credential injected.
    let (status, body) = get(&d, &json_task, upstream.port(), "/v1/items").await;
    assert_eq!((status, body.as_str()), (200, "ok from upstream"));
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("authorization"),
        [format!("Bearer {secret}").as_str()]
    );

    // list: both tasks, never a token.
    let list = run_cli(d.task_cmd(&["list"])).await;
    list.expect_code(0);
    assert!(list.stdout.starts_with("ID "), "{}", list.stdout);
    for (id, token) in [(&text_id, &text_token), (&json_task.id, &json_task.token)] {
        let row = list
            .stdout
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{}", list.stdout));
        assert!(row.contains(" active "), "{row}");
        assert!(
            !list.all().contains(token.as_str()),
            "task list shows a token"
        );
    }
    assert!(list.stdout.contains("ticket=T-9"), "{}", list.stdout);
    let list_json = run_cli(d.task_cmd(&["list", "--json"])).await;
    list_json.expect_code(0);
    assert!(
        !list_json.stdout.contains(&text_token) && !list_json.stdout.contains(&json_task.token)
    );
    let tasks = task_list_json(&list_json);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert_eq!(state_of(&tasks, &text_id), "active");

    // end: the state changes, the token stops working.
    let end = run_cli(d.task_cmd(&["end", &json_task.id])).await;
    end.expect_code(0);
    assert_eq!(end.stdout.trim(), format!("{} ended", json_task.id));
    let tasks = task_list_json(&run_cli(d.task_cmd(&["list", "--json"])).await);
    assert_eq!(state_of(&tasks, &json_task.id), "ended");
    assert_eq!(state_of(&tasks, &text_id), "active");
    let table = run_cli(d.task_cmd(&["list"])).await.stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(json_task.id.as_str()) && l.contains(" ended ")),
        "{table}"
    );
    let (status, _) = get(&d, &json_task, upstream.port(), "/v1/items").await;
    assert_eq!(status, 407, "an ended task's token is refused");
    assert_eq!(upstream.received().len(), 1);
    d.wait_records(1, |r| {
        r.event == Event::TaskEnd && r.task.as_deref() == Some(json_task.id.as_str())
    })
    .await;

    // No token, a wrong token: 401, and nothing about the tasks.
    let no_token = raw_exchange(
        d.serve.admin,
        b"GET /v1/tasks HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(no_token.starts_with("HTTP/1.1 401"), "{no_token}");
    assert!(!no_token.contains(&text_id), "{no_token}");
    let wrong = raw_exchange(
        d.serve.admin,
        format!(
            "GET /v1/tasks HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            test_secret()
        )
        .as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let bad_file = d.files.dir.path().join("wrong-admin-token");
    std::fs::write(&bad_file, test_secret()).unwrap();
    let mut cmd = credgate([
        "task",
        "list",
        "--admin",
        &d.admin_url(),
        "--admin-token-file",
    ]);
    cmd.arg(&bad_file);
    let refused = run_cli(cmd).await;
    refused.expect_code(1);
    assert!(!refused.stdout.contains(&text_id), "{refused:?}");

    let log = d.log_text();
    for secret in [&secret, &text_token, &json_task.token] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret in the decision log"
        );
    }
}

// ---------------------------------------------------------------------------
// run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_executes_curl_inside_a_task_and_ends_the_task() {
    let (d, upstream, secret) = daemon_with(echo_handler()).await;
    let url = format!("https://localhost:{}/v1/items", upstream.port());
    let out = run_cli(d.run_cmd(
        "api",
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--fail-with-body",
            "-H",
            "Authorization: Bearer agent-own-token",
            &url,
        ],
    ))
    .await;
    out.expect_code(0);
    let id = run_task_id(&out);

    // curl found the proxy and the CA in its environment; the credential
    // went upstream in place of the agent's, and came back masked.
    let received = upstream.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].header("authorization"),
        [format!("Bearer {secret}").as_str()]
    );
    assert!(out.stdout.contains("authorization: Bearer ****"), "{out:?}");
    assert!(
        !out.all().contains(&secret),
        "the credential reached the agent"
    );
    assert!(!out.all().contains("cgt_"), "run printed the task token");

    // The task ended with the command.
    let tasks = task_list_json(&run_cli(d.task_cmd(&["list", "--json"])).await);
    assert_eq!(state_of(&tasks, &id), "ended");
    let ours = |r: &credgate::audit::DecisionRecord| r.task.as_deref() == Some(id.as_str());
    d.wait_records(1, |r| ours(r) && r.event == Event::TaskEnd)
        .await;
    let records: Vec<_> = d.records().into_iter().filter(|r| ours(r)).collect();
    let events: Vec<Event> = records.iter().map(|r| r.event).collect();
    assert_eq!(events.first(), Some(&Event::TaskStart), "{events:?}");
    assert_eq!(events.last(), Some(&Event::TaskEnd), "{events:?}");
    let request = records
        .iter()
        .find(|r| r.event == Event::Request && r.method.as_deref() == Some("GET"))
        .expect("the request was recorded");
    assert_eq!(request.decision, Some(Verdict::Allow));
    assert_eq!(request.path.as_deref(), Some("/v1/items"));
    assert_eq!(
        request.credential.as_ref().map(|c| c.name.as_str()),
        Some("api")
    );
    assert!(!d.log_text().contains(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_with_the_commands_code_and_ends_the_task_anyway() {
    let (d, upstream, _secret) = daemon().await;

    let failing = run_cli(d.run_cmd("api", &["sh", "-c", "exit 7"])).await;
    failing.expect_code(7);
    let failing_id = run_task_id(&failing);

    // A denied request: curl --fail exits 22, and so does run.
    let url = format!("https://localhost:{}/admin/users", upstream.port());
    let denied =
        run_cli(d.run_cmd("api", &["curl", "-sS", "--max-time", "20", "--fail", &url])).await;
    denied.expect_code(22);
    assert!(denied.stderr.contains("403"), "{denied:?}");
    let denied_id = run_task_id(&denied);
    assert!(
        upstream.received().is_empty(),
        "a denied request reached the upstream"
    );

    let tasks = task_list_json(&run_cli(d.task_cmd(&["list", "--json"])).await);
    assert_eq!(state_of(&tasks, &failing_id), "ended");
    assert_eq!(state_of(&tasks, &denied_id), "ended");
    let record = d
        .wait_records(1, |r| {
            r.task.as_deref() == Some(denied_id.as_str()) && r.method.as_deref() == Some("GET")
        })
        .await;
    assert_eq!(record[0].decision, Some(Verdict::Deny));
    assert_eq!(record[0].path.as_deref(), Some("/admin/users"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_gives_the_command_none_of_credgates_own_settings() {
    let (d, _upstream, _secret) = daemon().await;
    // The admin API, its token and the CA come from the environment alone
    // here, as an operator's shell would give them.
    let mut cmd = credgate(["run", "--scope", "api", "--", "env"]);
    cmd.env("CREDGATE_ADMIN_URL", d.admin_url())
        .env("CREDGATE_ADMIN_TOKEN_FILE", &d.files.admin_token_file)
        .env("CREDGATE_CA", &d.files.ca_cert)
        .env("CREDGATE_LOG", "warn")
        .env("CREDGATE_TASK_ID", "task-inherited-not-ours")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .env("JAVA_TOOL_OPTIONS", "-Xss2m")
        .env("UNRELATED_SETTING", "kept");
    let out = run_cli(cmd).await;
    out.expect_code(0);
    let id = run_task_id(&out);
    let env: std::collections::BTreeMap<&str, &str> = out
        .stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    for name in [
        "CREDGATE_ADMIN_URL",
        "CREDGATE_ADMIN_TOKEN_FILE",
        "CREDGATE_CA",
        "CREDGATE_LOG",
        "ALL_PROXY",
    ] {
        assert!(!env.contains_key(name), "the command inherited {name}");
    }
    let ours: Vec<&str> = env
        .keys()
        .copied()
        .filter(|name| name.starts_with("CREDGATE_"))
        .collect();
    assert_eq!(ours, ["CREDGATE_TASK_ID"]);
    // What run sets on purpose is there, and the task id is this task's.
    assert_eq!(env["CREDGATE_TASK_ID"], id);
    let ca = std::fs::canonicalize(&d.files.ca_cert).unwrap();
    for name in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "npm_config_cafile",
    ] {
        assert_eq!(env[name], ca.to_str().unwrap(), "{name}");
    }
    // The admin API is on loopback, so the command gets a port of the
    // task's own, and no task token at all.
    let port_url = env["HTTPS_PROXY"];
    assert!(port_url.starts_with("http://127.0.0.1:"), "{port_url}");
    assert_ne!(port_url, format!("http://{}", d.serve.proxy));
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(env[name], port_url, "{name}");
    }
    assert!(
        !out.stdout.contains("cgt_"),
        "the command got the task token"
    );
    assert_eq!(env["NO_PROXY"], "");
    assert_eq!(env["NODE_USE_ENV_PROXY"], "1");
    // wget and Java get their per-task files; Java's options come after the
    // inherited ones and carry the proxy's address but not the token.
    assert!(env["WGETRC"].ends_with("/wgetrc"), "{}", env["WGETRC"]);
    let java = env["JAVA_TOOL_OPTIONS"];
    assert!(
        java.starts_with("-Xss2m -Dhttps.proxyHost=127.0.0.1 "),
        "{java}"
    );
    assert!(java.contains("-Djavax.net.ssl.trustStore="), "{java}");
    assert!(!java.contains("cgt_"), "{java}");
    assert_eq!(env["UNRELATED_SETTING"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_a_task_port_puts_the_token_in_the_proxy_url() {
    let (d, _upstream, _secret) = daemon().await;
    let mut cmd = credgate(["run", "--scope", "api", "--no-task-port"]);
    cmd.args(d.admin_flags()).args(["--", "env"]);
    let out = run_cli(cmd).await;
    out.expect_code(0);
    let id = run_task_id(&out);
    for line in out.stdout.lines() {
        if let Some(url) = line.strip_prefix("HTTPS_PROXY=") {
            assert!(url.starts_with(&format!("http://{id}:cgt_")), "{url}");
            assert!(url.ends_with(&format!("@{}", d.serve.proxy)), "{url}");
            return;
        }
    }
    panic!("no HTTPS_PROXY in {out:?}");
}

/// The `HTTPS_PROXY=` line of an `env` listing.
fn proxy_of(env: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix("HTTPS_PROXY="))
        .unwrap_or_else(|| panic!("no HTTPS_PROXY in {env}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_port_is_the_task_for_its_user_only_and_closes_with_it() {
    let (d, upstream, secret) = daemon().await;
    let url = format!("https://localhost:{}/v1/items", upstream.port());
    // The same request as this user, then as another one (root only: the
    // test needs to switch users), through the port in the environment.
    let root = nix::unistd::geteuid().is_root();
    let script = format!(
        "env; curl -sS --max-time 20 -o /dev/null -w 'mine %{{http_code}}\n' {url}; \
         if {root}; then setpriv --reuid=65534 --regid=65534 --clear-groups \
           curl -sS --max-time 20 -o /dev/null -w 'other %{{http_connect}}\n' {url}; fi; true"
    );
    let out = run_cli(d.run_cmd("api", &["sh", "-c", &script])).await;
    out.expect_code(0);
    let id = run_task_id(&out);
    let port_url = proxy_of(&out.stdout);
    assert!(out.stdout.contains("mine 200"), "{out:?}");
    if root {
        assert!(
            out.stdout.contains("other 407"),
            "another user's connection to the task port must not be the task's: {out:?}"
        );
    }
    // Only the task's own request reached the upstream, with the credential.
    let received = upstream.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].header("authorization"),
        [format!("Bearer {secret}").as_str()]
    );
    let records = d.records();
    let gets: Vec<_> = records
        .iter()
        .filter(|r| r.method.as_deref() == Some("GET"))
        .collect();
    assert_eq!(gets.len(), 1, "{records:?}");
    assert_eq!(gets[0].task.as_deref(), Some(id.as_str()));
    assert_eq!(gets[0].decision, Some(Verdict::Allow));
    if root {
        let refused: Vec<_> = records
            .iter()
            .filter(|r| r.method.as_deref() == Some("CONNECT") && r.task.is_none())
            .collect();
        assert_eq!(refused.len(), 1, "{records:?}");
        assert_eq!(refused[0].decision, Some(Verdict::Deny));
    }
    // The port closed with the task.
    let addr = port_url.trim_start_matches("http://").to_owned();
    let closed = poll_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_err().then_some(())
    })
    .await;
    assert!(closed.is_some(), "the task port {addr} is still open");
}

#[test]
fn run_without_a_reachable_admin_api_runs_nothing() {
    let dir = TempDir::new();
    credgate::tls::init_ca(&dir.path().join("ca"), false).unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, test_secret()).unwrap();
    let marker = dir.path().join("ran");
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = credgate(["run", "--scope", "api", "--admin"]);
    cmd.arg(format!("http://127.0.0.1:{port}"))
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--ca")
        .arg(dir.path().join("ca/ca.crt"))
        .arg("--")
        .arg("touch")
        .arg(&marker);
    let out = run_bounded(cmd, COMMAND_LIMIT);
    out.expect_code(1);
    assert!(out.stderr.contains("cannot reach the admin API"), "{out:?}");
    assert!(!marker.exists(), "the command ran without a task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_ca_says_how_to_create_one() {
    let files = DaemonFiles::new();
    files.write_config(&localhost_scopes(9));
    std::fs::remove_dir_all(files.dir.path().join("ca")).unwrap();
    let mut cmd = credgate(["serve", "--config"]);
    cmd.arg(&files.config_path)
        .current_dir(files.dir.path())
        .env("API_TOKEN", test_secret());
    let out = run_cli(cmd).await;
    out.expect_code(1);
    assert!(out.stderr.contains("credgate ca init"), "{out:?}");
}

/// An error's cause is printed once, not once per layer that mentions it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_state_their_cause_once() {
    let files = DaemonFiles::new();
    files.write_config(&localhost_scopes(9));
    std::fs::remove_dir_all(files.dir.path().join("ca")).unwrap();
    let mut cmd = credgate(["serve", "--config"]);
    cmd.arg(&files.config_path)
        .current_dir(files.dir.path())
        .env("API_TOKEN", test_secret());
    let serve = run_cli(cmd).await;
    serve.expect_code(1);
    assert_eq!(
        serve.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        serve.stderr
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = files.dir.path().join("token");
    std::fs::write(&token, test_secret()).unwrap();
    let mut cmd = credgate(["task", "list", "--admin"]);
    cmd.arg(format!("http://127.0.0.1:{port}"))
        .arg("--admin-token-file")
        .arg(&token);
    let list = run_cli(cmd).await;
    list.expect_code(1);
    assert_eq!(
        list.stderr.matches("Connection refused").count(),
        1,
        "{}",
        list.stderr
    );
}

// ---------------------------------------------------------------------------
// check

#[test]
fn check_accepts_a_valid_config_and_describes_its_scopes() {
    let files = DaemonFiles::new();
    files.write_config(&localhost_scopes(8443));
    let secret = test_secret();
    let mut cmd = credgate(["check", "--config"]);
    cmd.arg(&files.config_path).env("API_TOKEN", &secret);
    let out = run_bounded(cmd, COMMAND_LIMIT);
    out.expect_code(0);
    for words in [
        "scope api:",
        "scope other:",
        "localhost:8443",
        "/v1/**",
        "/public/**",
        "credential api from static source",
        "is valid.",
    ] {
        assert!(
            out.stdout.contains(words),
            "{words:?} missing:\n{}",
            out.stdout
        );
    }
    assert!(!out.all().contains(&secret), "check printed the credential");
}

#[test]
fn check_reports_every_problem_with_its_field_path() {
    let files = DaemonFiles::new();
    files.write_config(
        r#"
listn: 127.0.0.1:9
tasks: { default_ttl: soon }
credentials:
  gone:
    static: { env: CREDGATE_TEST_UNSET_VARIABLE }
scopes:
  api:
    - host: localhost
      paths: ["v1/**"]
    - host: localhost
      credential: nope
      methods: [GET]
"#,
    );
    let mut cmd = credgate(["check", "--config"]);
    cmd.arg(&files.config_path)
        .env_remove("CREDGATE_TEST_UNSET_VARIABLE");
    let out = run_bounded(cmd, COMMAND_LIMIT);
    out.expect_code(1);
    for path in [
        "listn:",
        "tasks.default_ttl:",
        "credentials.gone.static:",
        "scopes.api[0].paths[0]:",
        "scopes.api[1].credential:",
    ] {
        assert!(out.stderr.contains(path), "{path} missing:\n{}", out.stderr);
    }
    assert!(out.stderr.contains("5 problem(s)"), "{}", out.stderr);
    assert!(!out.stdout.contains("is valid"), "{}", out.stdout);
}

/// Every credential source's endpoint URL, given with a password in it in
/// the shapes a person might write: `check` names the field and never the
/// password (nor any part of the URL).
#[test]
fn check_never_prints_a_password_from_a_source_url() {
    let password = format!("test-secret-{}", random_hex(6));
    for url in [
        format!("https://user:{password}@host with space/"),
        format!("https://user:{password}@idp.example/token"),
        format!("https://user:{password}/x@idp.example/"),
        format!("http://user:{password}@127.0.0.1:9/"),
    ] {
        let files = DaemonFiles::new();
        let u = serde_json::to_string(&url).unwrap();
        files.write_config(&format!(
            r#"
credentials:
  gh:
    github_app: {{ app_id: 1, installation_id: 2, private_key: {{ env: CG_TEST_UNSET }}, api: {u} }}
  bao:
    vault:
      address: {u}
      auth: {{ token: {{ env: CG_TEST_UNSET }} }}
      child_token: {{ policies: [reader] }}
      read: {{ kv2: {{ mount: secret, path: app, field: key }} }}
  s3:
    aws: {{ role_arn: "arn:aws:iam::123456789012:role/r", region: us-east-1, base: env, sts_endpoint: {u} }}
    inject: {{ sigv4: {{ service: s3 }} }}
  idp:
    oauth2_client_credentials: {{ token_url: {u}, revocation_url: {u}, client_id: c, client_secret: {{ env: CG_TEST_UNSET }} }}
  discovered:
    oauth2_client_credentials: {{ issuer: {u}, client_id: c, client_secret: {{ env: CG_TEST_UNSET }} }}
  exchange:
    oauth2_token_exchange: {{ token_url: {u}, client_id: c, client_secret: {{ env: CG_TEST_UNSET }}, subject_token: {{ credgate: {{ audience: a }} }}, audience: a }}
  exchange-discovered:
    oauth2_token_exchange: {{ issuer: {u}, client_id: c, client_secret: {{ env: CG_TEST_UNSET }}, subject_token: {{ credgate: {{ audience: a }} }}, audience: a }}
"#
        ));
        let mut cmd = credgate(["check", "--config"]);
        cmd.arg(&files.config_path).env_remove("CG_TEST_UNSET");
        let out = run_bounded(cmd, COMMAND_LIMIT);
        out.expect_code(1);
        assert!(!out.all().contains(&password), "{url}: {}", out.all());
        for field in [
            "credentials.gh.github_app.api:",
            "credentials.bao.vault.address:",
            "credentials.s3.aws.sts_endpoint:",
            "credentials.idp.oauth2_client_credentials.token_url:",
            "credentials.idp.oauth2_client_credentials.revocation_url:",
            "credentials.discovered.oauth2_client_credentials.issuer:",
            "credentials.exchange.oauth2_token_exchange.token_url:",
            "credentials.exchange-discovered.oauth2_token_exchange.issuer:",
        ] {
            assert!(
                out.stderr.contains(field),
                "{url}: {field} missing:\n{}",
                out.stderr
            );
        }
    }
}

// ---------------------------------------------------------------------------
// explain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_rule_and_credential_and_sends_nothing() {
    let files = DaemonFiles::new();
    let upstream = files.upstream("localhost", ok_handler()).await;
    let port = upstream.port();
    files.write_config(&localhost_scopes(port));
    let secret = test_secret();
    let explain = |method: &str, path: &str, scope: &str| {
        let mut cmd = credgate(["explain", "--config"]);
        cmd.arg(&files.config_path)
            .args(["--scope", scope, method])
            .arg(format!("https://localhost:{port}{path}"))
            .env("API_TOKEN", &secret);
        cmd
    };

    let allowed = run_cli(explain("GET", "/v1/items", "api")).await;
    allowed.expect_code(0);
    let connect = format!("CONNECT localhost:{port}: allowed");
    for words in [
        connect.as_str(),
        "decision: allow",
        "rule: api[0]",
        "credential: api from the static source, injected as",
        "private and loopback addresses allowed",
        "nothing was sent.",
    ] {
        assert!(
            allowed.stdout.contains(words),
            "{words:?} missing:\n{}",
            allowed.stdout
        );
    }

    let denied = run_cli(explain("DELETE", "/v1/items", "api")).await;
    denied.expect_code(3);
    assert!(
        denied.stdout.contains("decision: deny"),
        "{}",
        denied.stdout
    );
    let reason = denied
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("reason: "))
        .unwrap_or_else(|| panic!("no reason:\n{}", denied.stdout));
    assert!(!reason.trim().is_empty());
    assert!(denied.stdout.contains("why: "), "{}", denied.stdout);
    assert!(
        denied.stdout.contains("nothing was sent."),
        "{}",
        denied.stdout
    );

    // Another scope's rule does not apply.
    let other = run_cli(explain("GET", "/v1/items", "other")).await;
    other.expect_code(3);
    let unknown = run_cli(explain("GET", "/v1/items", "no-such-scope")).await;
    unknown.expect_code(1);
    assert!(unknown.stderr.contains("no-such-scope"), "{unknown:?}");

    for out in [&allowed, &denied, &other] {
        assert!(
            !out.all().contains(&secret),
            "explain printed the credential"
        );
    }
    assert!(upstream.received().is_empty(), "explain sent a request");
}

// ---------------------------------------------------------------------------
// logs

/// Traffic of two tasks: A gets one allowed and one denied request, B one
/// allowed request.
async fn traffic(d: &Daemon, port: u16) -> (CliTask, CliTask) {
    let a = d.start_task(&["api"]).await;
    let b = d.start_task(&["api"]).await;
    assert_eq!(get(d, &a, port, "/v1/a").await.0, 200);
    assert_eq!(get(d, &a, port, "/admin/a").await.0, 403);
    assert_eq!(get(d, &b, port, "/v1/b").await.0, 200);
    d.wait_records(3, |r| {
        r.event == Event::Request && r.method.as_deref() == Some("GET")
    })
    .await;
    (a, b)
}

fn logs(file: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = credgate(["logs"]);
    cmd.arg(file).args(args);
    cmd
}

fn json_lines(out: &Outcome) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_filters_and_summarises_real_traffic() {
    let (d, upstream, secret) = daemon().await;
    let (a, b) = traffic(&d, upstream.port()).await;
    let file = &d.files.audit;
    let all = d.records();

    // --task: every record of A (lifecycle and requests), nothing of B.
    let out = run_cli(logs(file, &["--task", &a.id, "--json"])).await;
    out.expect_code(0);
    let lines = json_lines(&out);
    let expected = all
        .iter()
        .filter(|r| r.task.as_deref() == Some(a.id.as_str()))
        .count();
    assert_eq!(lines.len(), expected, "{}", out.stdout);
    assert!(lines.iter().all(|l| l["task"] == a.id.as_str()));
    assert!(lines.iter().any(|l| l["path"] == "/admin/a"));
    assert!(lines.iter().any(|l| l["path"] == "/v1/a"));

    // --decision deny: only A's denied request.
    let out = run_cli(logs(file, &["--decision", "deny", "--json"])).await;
    out.expect_code(0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert_eq!(lines[0]["path"], "/admin/a");
    assert_eq!(lines[0]["task"], a.id.as_str());

    // --host: every request to localhost (CONNECTs included), none elsewhere.
    let out = run_cli(logs(file, &["--host", "LOCALHOST", "--json"])).await;
    let to_localhost = all
        .iter()
        .filter(|r| r.host.as_deref() == Some("localhost"))
        .count();
    assert!(to_localhost >= 3);
    assert_eq!(json_lines(&out).len(), to_localhost, "{}", out.stdout);
    let out = run_cli(logs(file, &["--host", "api.github.com"])).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "");

    // --since: the last ten minutes hold everything; an old record is left out.
    let copy = d.files.dir.path().join("copy.jsonl");
    let mut text = d.log_text();
    let mut old: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    old["ts"] = "2020-01-02T03:04:05.000Z".into();
    old["id"] = "00000000000000aa".into();
    text.push_str(&format!("{old}\n"));
    std::fs::write(&copy, &text).unwrap();
    let everything = run_cli(logs(&copy, &["--json"])).await;
    assert_eq!(json_lines(&everything).len(), all.len() + 1);
    let recent = run_cli(logs(&copy, &["--since", "10m", "--json"])).await;
    recent.expect_code(0);
    let recent = json_lines(&recent);
    assert_eq!(recent.len(), all.len());
    assert!(recent.iter().all(|l| l["id"] != "00000000000000aa"));
    let out = run_cli(logs(
        &copy,
        &["--since", "2020-01-01T00:00:00Z", "--until-typo"],
    ))
    .await;
    assert_eq!(out.code, Some(2), "unknown flags are refused: {out:?}");

    // --summary: counts per task, host and decision, as the records say.
    let out = run_cli(logs(file, &["--summary", "--json"])).await;
    out.expect_code(0);
    let rows = json_lines(&out);
    let count = |task: &str, decision: &str| {
        rows.iter()
            .find(|r| r["task"] == task && r["host"] == "localhost" && r["decision"] == decision)
            .and_then(|r| r["count"].as_u64())
            .unwrap_or(0)
    };
    let expected = |task: &str, verdict: Verdict| {
        all.iter()
            .filter(|r| {
                r.event == Event::Request
                    && r.task.as_deref() == Some(task)
                    && r.decision == Some(verdict)
            })
            .count() as u64
    };
    assert_eq!(count(&a.id, "deny"), 1, "{}", out.stdout);
    assert_eq!(count(&a.id, "allow"), expected(&a.id, Verdict::Allow));
    assert_eq!(count(&b.id, "allow"), expected(&b.id, Verdict::Allow));
    assert_eq!(count(&b.id, "deny"), 0);
    let table = run_cli(logs(file, &["--summary"])).await;
    table.expect_code(0);
    assert!(table.stdout.starts_with("TASK "), "{}", table.stdout);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(a.id.as_str()) && l.contains("localhost") && l.contains("deny")),
        "{}",
        table.stdout
    );

    // Human output: one line per record with the decision and the URL.
    let out = run_cli(logs(file, &["--task", &a.id, "--decision", "deny"])).await;
    out.expect_code(0);
    assert!(
        out.stdout.lines().any(|l| l.contains("deny")
            && l.contains(a.id.as_str())
            && l.contains(&format!(
                "GET https://localhost:{}/admin/a",
                upstream.port()
            ))),
        "{}",
        out.stdout
    );

    for text in [d.log_text(), out.stdout] {
        for s in [&secret, &a.token, &b.token] {
            assert!(!text.contains(s.as_str()), "a secret in the reviewed log");
        }
    }
}

/// `credgate logs --follow` as a child process, killed on drop, whose
/// stdout lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Follower {
    fn start(mut cmd: std::process::Command) -> Follower {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("logs --follow starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next line printed, waiting at most [`WAIT_LIMIT`].
    async fn next_line(&self) -> Option<String> {
        poll_until(WAIT_LIMIT, || self.lines.try_recv().ok()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_prints_records_appended_after_it_started() {
    let (d, upstream, _secret) = daemon().await;
    let (a, b) = traffic(&d, upstream.port()).await;
    let follower = Follower::start(logs(
        &d.files.audit,
        &["--follow", "--json", "--decision", "deny"],
    ));

    // What was there already…
    let first = follower.next_line().await.expect("the existing denial");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["path"], "/admin/a");
    assert_eq!(first["task"], a.id.as_str());

    // …then what is appended, and only what matches the filter.
    assert_eq!(
        get(&d, &b, upstream.port(), "/v1/allowed-late").await.0,
        200
    );
    assert_eq!(get(&d, &b, upstream.port(), "/admin/late").await.0, 403);
    let next = follower
        .next_line()
        .await
        .expect("the new denial is printed");
    let next: serde_json::Value = serde_json::from_str(&next).unwrap();
    assert_eq!(next["path"], "/admin/late", "{next}");
    assert_eq!(next["task"], b.id.as_str());
    assert_eq!(next["decision"], "deny");
}

// ---------------------------------------------------------------------------
// shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_every_open_task_and_exits_zero() {
    let (mut d, upstream, secret) = daemon().await;
    let used = d.start_task(&["api"]).await;
    let idle = d.start_task(&["other"]).await;
    let ended = d.start_task(&["api"]).await;
    run_cli(d.task_cmd(&["end", &ended.id]))
        .await
        .expect_code(0);
    assert_eq!(get(&d, &used, upstream.port(), "/v1/items").await.0, 200);
    d.wait_records(1, |r| {
        r.task.as_deref() == Some(used.id.as_str()) && r.method.as_deref() == Some("GET")
    })
    .await;

    d.serve.signal(Signal::SIGTERM);
    let status = d
        .serve
        .wait_exit(WAIT_LIMIT)
        .await
        .unwrap_or_else(|| panic!("serve did not exit on SIGTERM:\n{}", d.serve.stderr()));
    assert_eq!(status.code(), Some(0), "{}", d.serve.stderr());
    assert!(
        d.serve.stderr().contains("shutting down"),
        "{}",
        d.serve.stderr()
    );

    let records = d.records();
    let ends = |id: &str| {
        records
            .iter()
            .filter(|r| r.event == Event::TaskEnd && r.task.as_deref() == Some(id))
            .map(|r| r.message.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    for task in [&used, &idle] {
        assert_eq!(ends(&task.id), ["task ended at shutdown"], "{records:?}");
    }
    assert_eq!(
        ends(&ended.id),
        ["task ended on request"],
        "ended once only"
    );
    // The credential issued to the task that used one was given up.
    let revoked = records
        .iter()
        .filter(|r| {
            r.event == Event::CredentialRevoke && r.task.as_deref() == Some(used.id.as_str())
        })
        .count();
    assert_eq!(revoked, 1, "{records:?}");
    let position = |event: Event| {
        records
            .iter()
            .position(|r| r.event == event && r.task.as_deref() == Some(used.id.as_str()))
            .unwrap()
    };
    assert!(position(Event::CredentialRevoke) < position(Event::TaskEnd));
    assert!(!d.log_text().contains(&secret));
}
