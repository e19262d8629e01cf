//! `credgate run --enforce`: CMD in a network namespace whose only way out
//! is the task's port, against a real `credgate serve` child process.
//!
//! A client that honours the proxy variables still goes through credgate
//! and gets its credential injected. One that ignores them (Node 20's
//! global `fetch` with no proxy configuration, a raw TCP or UDP socket)
//! reaches the origin without `--enforce`, and with it fails, the origin
//! seeing nothing. credgate's admin API is out of reach too, CMD has no
//! capability, and nothing falls back to running CMD unenforced.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use credgate::audit::{Event, Verdict};
use support::*;

struct Setup {
    d: Daemon,
    upstream: Upstream,
    secret: String,
}

async fn setup() -> Setup {
    setup_with(echo_handler()).await
}

async fn setup_with(handler: Handler) -> Setup {
    let (d, upstream, secret) = localhost_daemon(handler).await;
    Setup {
        d,
        upstream,
        secret,
    }
}

impl Setup {
    /// `credgate run --enforce --scope api FLAGS… -- COMMAND…`.
    fn enforced(&self, command: &[&str]) -> std::process::Command {
        let mut cmd = credgate(["run", "--enforce", "--scope", "api"]);
        cmd.args(self.d.admin_flags()).arg("--").args(command);
        cmd
    }
}

/// A TCP origin on 127.0.0.1 that counts the connections it accepts and
/// answers each with a minimal HTTP response.
struct Origin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\norigin",
                        )
                        .await;
                });
            }
        });
        Origin { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Node's own global fetch of `url`, with no proxy configuration: it
/// prints the status, or `failed: CODE` and exits 3.
const NODE_GLOBAL_FETCH: &str = "fetch(process.argv[1])\
    .then(r => r.text().then(t => console.log(r.status, t)))\
    .catch(e => { console.log('failed:', (e.cause && e.cause.code) || e.message); process.exit(3); })";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_goes_through_credgate_with_the_credential_injected() {
    let s = setup().await;
    let url = format!("https://localhost:{}/v1/items", s.upstream.port());
    let out = run_cli(s.enforced(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-H",
        "Authorization: Bearer agent-own-token",
        &url,
    ]))
    .await;
    out.expect_code(0);
    assert!(out.stdout.contains("authorization: Bearer ****"), "{out:?}");
    assert!(
        !out.all().contains(&s.secret),
        "the credential reached the agent"
    );
    let received = s.upstream.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].header("authorization"),
        [format!("Bearer {}", s.secret).as_str()]
    );
    let task = run_task_id(&out);
    let records =
        s.d.wait_records(1, |r| {
            r.event == Event::Request && r.method.as_deref() == Some("GET")
        })
        .await;
    assert_eq!(records[0].task.as_deref(), Some(task.as_str()));
    assert_eq!(records[0].decision, Some(Verdict::Allow));
    assert_eq!(records[0].path.as_deref(), Some("/v1/items"));
}

/// Many requests at once over the relay, one connection each: none is
/// lost or mixed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_each_get_their_own_answer() {
    let s = setup_with(Arc::new(|r: &Received| Reply::ok(&r.path_and_query))).await;
    let base = format!("https://localhost:{}/v1/item", s.upstream.port());
    let script = "for i in $(seq 1 16); do \
                    curl -sS --max-time 20 -o \"$0/$i\" \"$1$i\" & \
                  done; wait; \
                  for i in $(seq 1 16); do grep -qx \"/v1/item$i\" \"$0/$i\" || exit 9; done";
    let dir = TempDir::new();
    let out = run_cli(s.enforced(&["sh", "-c", script, dir.path().to_str().unwrap(), &base])).await;
    out.expect_code(0);
    assert_eq!(s.upstream.received().len(), 16);
}

/// The class of the issue's example: without `--enforce`, Node 20's global
/// fetch ignores the proxy variables and reaches the origin itself; with
/// it, the fetch fails and the origin sees no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_global_fetch_fails_instead_of_going_around_credgate() {
    let s = setup().await;
    let origin = Origin::start().await;
    let url = format!("http://127.0.0.1:{}/", origin.addr.port());
    let node = ["node", "-e", NODE_GLOBAL_FETCH, &url];

    let bypass = run_cli(s.d.run_cmd("api", &node)).await;
    bypass.expect_code(0);
    assert!(bypass.stdout.contains("200 origin"), "{bypass:?}");
    assert_eq!(origin.accepted(), 1, "the control run went around credgate");

    let out = run_cli(s.enforced(&node)).await;
    out.expect_code(3);
    assert!(out.stdout.contains("failed: ECONNREFUSED"), "{out:?}");
    assert_eq!(
        origin.accepted(),
        1,
        "the origin was reached under --enforce"
    );
}

/// The README's line for Node 20 still works under `--enforce`: with
/// undici's EnvHttpProxyAgent as the global dispatcher, the global fetch
/// goes through credgate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_global_fetch_with_the_env_proxy_dispatcher_goes_through() {
    let s = setup().await;
    let url = format!("https://localhost:{}/v1/items", s.upstream.port());
    let script = "const { setGlobalDispatcher, EnvHttpProxyAgent } = require('undici'); \
                  setGlobalDispatcher(new EnvHttpProxyAgent()); "
        .to_owned()
        + NODE_GLOBAL_FETCH;
    let mut cmd = s.enforced(&["node", "-e", &script, &url]);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"));
    let out = run_cli(cmd).await;
    out.expect_code(0);
    assert!(out.stdout.starts_with("200 "), "{out:?}");
    assert!(out.stdout.contains("authorization: Bearer ****"), "{out:?}");
    assert_eq!(s.upstream.received().len(), 1);
}

/// Every other way out: TCP to the origin on 127.0.0.1 and ::1, TCP to
/// credgate's admin API and shared proxy port, UDP to a socket of the
/// machine. Each fails inside, and nothing arrives outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sockets_reach_nothing_outside() {
    let s = setup().await;
    let origin = Origin::start().await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let script = r#"
import socket, sys
fails = []
for family, host, port in [
    (socket.AF_INET, "127.0.0.1", int(sys.argv[1])),
    (socket.AF_INET6, "::1", int(sys.argv[1])),
    (socket.AF_INET, "127.0.0.1", int(sys.argv[2])),
    (socket.AF_INET, "127.0.0.1", int(sys.argv[3])),
]:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        print("connected", host, port)
    except OSError as e:
        fails.append(port)
for _ in range(3):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b"escaped", ("127.0.0.1", int(sys.argv[4])))
    except OSError:
        pass
print("failed", len(fails))
"#;
    let args = [
        origin.addr.port().to_string(),
        s.d.serve.admin.port().to_string(),
        s.d.serve.proxy.port().to_string(),
        udp.local_addr().unwrap().port().to_string(),
    ];
    let mut command = vec!["python3", "-c", script];
    command.extend(args.iter().map(String::as_str));
    let out = run_cli(s.enforced(&command)).await;
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "failed 4", "{out:?}");
    assert_eq!(origin.accepted(), 0);
    let mut buf = [0u8; 64];
    assert!(udp.recv_from(&mut buf).is_err(), "a datagram got out");
}

/// CMD runs with no capability, as the user credgate runs as (nobody in
/// place of root), in a namespace whose only interface is loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmd_has_no_capability_and_only_loopback() {
    let s = setup().await;
    let out = run_cli(s.enforced(&[
        "sh",
        "-c",
        "grep -E '^Cap(Eff|Prm|Amb):' /proc/self/status; id -u; \
         awk -F: 'NR > 2 { gsub(/ /, \"\", $1); print $1 }' /proc/net/dev",
    ]))
    .await;
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for line in &lines[..3] {
        assert!(line.ends_with("0000000000000000"), "{out:?}");
    }
    let outer = nix::unistd::geteuid().as_raw();
    let inside = if outer == 0 { 65534 } else { outer };
    assert_eq!(lines[3], inside.to_string(), "{out:?}");
    assert_eq!(lines[4..], ["lo"], "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_are_cmds() {
    let s = setup().await;
    run_cli(s.enforced(&["sh", "-c", "exit 7"]))
        .await
        .expect_code(7);
    let missing = run_cli(s.enforced(&["/nonexistent/agent"])).await;
    missing.expect_code(127);
    assert!(
        missing.stderr.contains("cannot start /nonexistent/agent"),
        "{missing:?}"
    );
}

/// `--enforce` never falls back: where its namespace cannot be made as
/// asked, CMD does not run at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_unenforced() {
    let s = setup().await;
    let dir = TempDir::new();
    let marker = dir.path().join("ran");
    let touch = ["touch", marker.to_str().unwrap()];

    // Without the task's own port there is nothing to relay to.
    let mut cmd = credgate(["run", "--enforce", "--no-task-port", "--scope", "api"]);
    cmd.args(s.d.admin_flags()).arg("--").args(touch);
    let out = run_cli(cmd).await;
    out.expect_code(2);
    assert!(out.stderr.contains("--no-task-port"), "{out:?}");

    // An admin API elsewhere: no task port, so no --enforce.
    let mut cmd = credgate([
        "run",
        "--enforce",
        "--scope",
        "api",
        "--admin",
        "http://192.0.2.1:9",
    ]);
    cmd.args(["--admin-token-file"])
        .arg(&s.d.files.admin_token_file)
        .arg("--ca")
        .arg(&s.d.files.ca_cert)
        .arg("--")
        .args(touch);
    let out = run_cli(cmd).await;
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("--enforce needs credgate on this machine"),
        "{out:?}"
    );

    // The helper itself, where a step fails: an address no loopback has,
    // and no credgate to hand the listener to.
    for (listen, hand_over, says) in [
        (
            "192.0.2.1:80",
            "/nonexistent/enforce.sock",
            "cannot listen on 192.0.2.1:80",
        ),
        (
            "127.0.0.1:80",
            "/nonexistent/enforce.sock",
            "cannot reach credgate",
        ),
    ] {
        let mut cmd = credgate([
            "__enforce",
            "--listen",
            listen,
            "--hand-over",
            hand_over,
            "--",
        ]);
        cmd.args(touch);
        let out = run_cli(cmd).await;
        out.expect_code(127);
        assert!(out.stderr.contains(says), "{out:?}");
        assert!(out.stderr.contains("touch was not started"), "{out:?}");
    }
    assert!(!marker.exists(), "CMD ran");
}

/// The same guarantee for a user who is not root: `credgate run
/// --enforce` as nobody (here, where the tests run as root) makes its
/// namespaces without any privilege, and CMD keeps nobody's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_root_gets_the_same_guarantee() {
    use std::os::unix::fs::{chown, PermissionsExt as _};
    if !nix::unistd::geteuid().is_root() {
        // Every other test here already runs without root.
        return;
    }
    let s = setup().await;
    let origin = Origin::start().await;
    // nobody's own copies of the admin token and CA, and a scratch directory.
    let home = TempDir::new();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = home.path().join("admin-token");
    std::fs::copy(&s.d.files.admin_token_file, &token).unwrap();
    let ca = home.path().join("ca.crt");
    std::fs::copy(&s.d.files.ca_cert, &ca).unwrap();
    let tmp = home.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for path in [&token, &ca, &tmp] {
        chown(path, Some(65534), Some(65534)).unwrap();
    }
    let url = format!("https://localhost:{}/v1/items", s.upstream.port());
    let script = "curl -sS --max-time 20 \"$0\" || exit 4; \
                  python3 -c 'import socket, sys; socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 5)' \"$1\" \
                    2>/dev/null && exit 5; \
                  id -u";
    let mut cmd = std::process::Command::new("setpriv");
    clean_env(&mut cmd);
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        CREDGATE,
    ])
    .args([
        "run",
        "--enforce",
        "--scope",
        "api",
        "--admin",
        &s.d.admin_url(),
    ])
    .arg("--admin-token-file")
    .arg(&token)
    .arg("--ca")
    .arg(&ca)
    .args([
        "--",
        "sh",
        "-c",
        script,
        &url,
        &origin.addr.port().to_string(),
    ])
    .env("TMPDIR", &tmp)
    .env("HOME", home.path());
    let out = run_cli(cmd).await;
    out.expect_code(0);
    assert!(out.stdout.contains("authorization: Bearer ****"), "{out:?}");
    assert_eq!(out.stdout.lines().last(), Some("65534"), "{out:?}");
    assert_eq!(s.upstream.received().len(), 1);
    assert_eq!(
        origin.accepted(),
        0,
        "the origin was reached under --enforce"
    );
}
