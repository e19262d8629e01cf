//! wget and Java, untouched, through `credgate run` against a `credgate
//! serve` child process and a recording TLS upstream on `localhost`.
//!
//! Neither reads the variables curl, Python and Node do: wget on GnuTLS
//! reads no CA variable, Java reads neither CA nor proxy variables. `run`
//! gives wget a per-task wgetrc and Java a `JAVA_TOOL_OPTIONS` with a
//! per-task trust store; these tests check the credential is injected at
//! the origin and nothing secret goes anywhere else.

mod support;

use credgate::audit::{Event, Verdict};
use support::*;

struct Setup {
    d: Daemon,
    upstream: Upstream,
    secret: String,
}

async fn setup() -> Setup {
    let (d, upstream, secret) = localhost_daemon(echo_handler()).await;
    Setup {
        d,
        upstream,
        secret,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.upstream.port())
    }

    /// Checks each of `paths` reached the upstream once, with the injected
    /// credential only, and has exactly one allowed record under `task`
    /// naming its method, host and path; and that neither the credential
    /// nor a task token is in `out` or the decision log.
    async fn assert_injected_and_clean(&self, out: &Outcome, task: &str, paths: &[&str]) {
        let received = self.upstream.received();
        let seen: Vec<&str> = received.iter().map(|r| r.path_and_query.as_str()).collect();
        assert_eq!(seen, paths, "{received:?}");
        for r in &received {
            assert_eq!(
                r.header("authorization"),
                [format!("Bearer {}", self.secret).as_str()],
                "exactly the injected credential"
            );
            assert!(
                r.header("x-api-key").is_empty(),
                "the agent's key went upstream"
            );
            assert!(r.header("proxy-authorization").is_empty());
        }
        // The echo shows the credential reached the upstream and only its
        // mask came back.
        assert!(out.stdout.contains("authorization: Bearer ****"), "{out:?}");
        assert!(
            !out.all().contains(&self.secret),
            "the credential reached the agent"
        );
        assert!(!out.all().contains("cgt_"), "a task token was printed");
        let requests = self
            .d
            .wait_records(paths.len(), |r| {
                r.event == Event::Request && r.method.as_deref() == Some("GET")
            })
            .await;
        assert_eq!(requests.len(), paths.len(), "{requests:?}");
        for (record, path) in requests.iter().zip(paths) {
            assert_eq!(record.task.as_deref(), Some(task), "{record:?}");
            assert_eq!(record.decision, Some(Verdict::Allow), "{record:?}");
            assert_eq!(record.host.as_deref(), Some("localhost"), "{record:?}");
            assert_eq!(record.path.as_deref(), Some(*path), "{record:?}");
            assert_eq!(
                record.credential.as_ref().map(|c| c.name.as_str()),
                Some("api")
            );
            assert!(
                record.stripped.iter().any(|h| h == "authorization"),
                "{:?}",
                record.stripped
            );
        }
        let log = self.d.log_text();
        assert!(!log.contains(&self.secret), "the credential in the log");
        assert!(!log.contains("cgt_"), "a task token in the log");
        assert!(
            !log.contains("agent-own-token"),
            "the agent's header in the log"
        );
    }
}

/// `cmd` with its temporary files in a fresh directory, returned with it.
fn in_own_tmp(mut cmd: std::process::Command) -> (std::process::Command, TempDir) {
    let tmp = TempDir::new();
    cmd.env("TMPDIR", tmp.path());
    (cmd, tmp)
}

/// Checks `run` removed its per-task directory from `tmp` when it exited.
fn assert_files_removed(tmp: &TempDir) {
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_downloads_over_https_with_the_credential_injected() {
    let s = setup().await;
    // The user's own wgetrc sets a dead proxy and turns proxying off; its
    // other settings are kept, credgate's proxy settings win.
    let home = TempDir::new();
    std::fs::write(
        home.path().join(".wgetrc"),
        "tries = 1\nuse_proxy = off\nhttps_proxy = http://127.0.0.1:9/\n",
    )
    .unwrap();
    let (items, other) = (s.url("/v1/items"), s.url("/v1/other"));
    let mut cmd = s.d.run_cmd(
        "api",
        &[
            "wget",
            "-q",
            "-O-",
            "--timeout=20",
            "--header=Authorization: Bearer agent-own-token",
            "--header=X-Api-Key: agent-own-token",
            &items,
            &other,
        ],
    );
    cmd.env("HOME", home.path());
    let (cmd, tmp) = in_own_tmp(cmd);
    let out = run_cli(cmd).await;
    out.expect_code(0);
    // wget sent the task token from the proxy URL's userinfo: the requests
    // are the task's (a CONNECT without it is refused with 407 here).
    let task = run_task_id(&out);
    s.assert_injected_and_clean(&out, &task, &["/v1/items", "/v1/other"])
        .await;
    assert_files_removed(&tmp);
}

/// Compiles `tests/clients/JavaGet.java` into a fresh directory.
async fn java_client() -> TempDir {
    let classes = TempDir::new();
    let mut javac = std::process::Command::new("javac");
    javac.arg("-d").arg(classes.path()).arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/JavaGet.java"
    ));
    run_cli(javac).await.expect_code(0);
    classes
}

/// One GET of `/v1/items` by the Java `client` under `credgate run`.
///
/// Java cannot send the task token: it is pointed at the task's own port,
/// which needs none, and its requests are recorded under `run`'s task.
async fn java(client: &str) {
    let s = setup().await;
    let classes = java_client().await;
    let classes = classes.path().to_str().unwrap();
    let url = s.url("/v1/items");
    let (cmd, tmp) = in_own_tmp(s.d.run_cmd(
        "api",
        &[
            "java",
            "-cp",
            classes,
            "JavaGet",
            client,
            &url,
            "Authorization: Bearer agent-own-token",
            "X-Api-Key: agent-own-token",
        ],
    ));
    let out = run_cli(cmd).await;
    out.expect_code(0);
    assert_eq!(out.stdout.lines().next(), Some("200"), "{out:?}");
    let task = run_task_id(&out);
    s.assert_injected_and_clean(&out, &task, &["/v1/items"])
        .await;
    assert_files_removed(&tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_http_client_gets_with_the_credential_injected() {
    java("httpclient").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_https_url_connection_gets_with_the_credential_injected() {
    java("urlconnection").await;
}
