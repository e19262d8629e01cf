//! `credgate init`, for real: the lock-down installed in a network namespace
//! standing in for a pod, with a veth to a second namespace holding the
//! "internet" (addresses of the test's own). A "credgate" user and an
//! "agent" user run probes inside the pod (tests/peers/net/netcheck.py).
//!
//! Needs root (network namespaces and users), `ip`, `nft`, `iptables` and
//! `setpriv`:
//! tests/run.sh installs them; as another user the test says so and passes
//! nothing off as checked.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const CREDGATE_UID: u32 = 2000;
const AGENT_UID: u32 = 1000;
const POD_V4: &str = "10.77.0.1";
const ORIGIN_V4: &str = "10.77.0.2";
const POD_V6: &str = "fd77::1";
const ORIGIN_V6: &str = "fd77::2";
const TRANSPARENT_PORT: &str = "15001";
const ADMIN_PORT: &str = "8081";

fn can_run() -> bool {
    let tools = ["ip", "nft", "iptables", "ip6tables", "setpriv"];
    if !nix::unistd::geteuid().is_root() || !tools.iter().all(|t| found(t)) {
        eprintln!("lockdown tests need root, ip, nft, iptables and setpriv: not run here");
        return false;
    }
    true
}

/// A python3 every user can run (a per-user shim would not be).
fn python() -> String {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

fn netcheck() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/net/netcheck.py")
}

/// The pod and origin namespaces, removed on drop.
struct Namespaces {
    pod: String,
    origin: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.origin] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.pod));
    }
}

fn sh(command: &str) {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    fn new() -> Namespaces {
        let tag = random_hex(3);
        let ns = Namespaces {
            pod: format!("cgpod-{tag}"),
            origin: format!("cgorg-{tag}"),
        };
        let (a, b) = (format!("cg{tag}a"), format!("cg{tag}b"));
        let (pod, origin) = (&ns.pod, &ns.origin);
        sh(&format!(
            "ip netns add {pod} && ip netns add {origin} && \
             ip link add {a} type veth peer name {b} && \
             ip link set {a} netns {pod} && ip link set {b} netns {origin} && \
             ip -n {pod} addr add {POD_V4}/24 dev {a} && ip -n {origin} addr add {ORIGIN_V4}/24 dev {b} && \
             ip -n {pod} addr add {POD_V6}/64 dev {a} nodad && ip -n {origin} addr add {ORIGIN_V6}/64 dev {b} nodad && \
             ip -n {pod} link set {a} up && ip -n {origin} link set {b} up && \
             ip -n {pod} link set lo up && ip -n {origin} link set lo up"
        ));
        ns
    }

    /// Names the pod resolves (`ip netns exec` mounts /etc/netns/POD/hosts
    /// over /etc/hosts).
    fn hosts(&self, entries: &[(&str, &str)]) {
        let dir = format!("/etc/netns/{}", self.pod);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (ip, name) in entries {
            text.push_str(&format!("{ip} {name}\n"));
        }
        std::fs::write(format!("{dir}/hosts"), text).unwrap();
    }

    /// `credgate ARGS` inside the pod as root (the init container).
    fn credgate(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.pod])
            .arg(env!("CARGO_BIN_EXE_credgate"))
            .args(args);
        run_bounded(cmd, Duration::from_secs(30))
    }

    fn as_user(&self, ns: &str, uid: Option<u32>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            cmd.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups");
        }
        cmd
    }

    /// A listener in `ns` (as `uid`, or root), printing each peer.
    fn listen(&self, ns: &str, uid: Option<u32>, proto: &str, host: &str, port: &str) -> Listener {
        let mut cmd = self.as_user(ns, uid);
        cmd.arg(python())
            .arg(netcheck())
            .args(["listen", proto, host, port, "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // Wait until it is bound.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line.trim(), "listening", "{proto} {host}:{port}");
        Listener { child, stdout }
    }

    /// A probe from the pod as `uid`: "ok" or "refused …".
    fn probe(&self, uid: u32, proto: &str, host: &str, port: &str) -> String {
        let mut cmd = self.as_user(&self.pod, Some(uid));
        cmd.arg(python())
            .arg(netcheck())
            .args(["connect", proto, host, port]);
        let out = run_bounded(cmd, Duration::from_secs(15));
        out.stdout.trim().to_owned()
    }
}

struct Listener {
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Listener {
    /// Stops it and returns the peers it saw.
    fn peers(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        rest.lines()
            .filter_map(|l| l.strip_prefix("got "))
            .map(str::to_owned)
            .collect()
    }
}

fn init_args(dns: &[&str]) -> Vec<String> {
    let mut args = vec![
        "init".to_owned(),
        "--proxy-uid".to_owned(),
        CREDGATE_UID.to_string(),
        "--transparent-port".to_owned(),
        TRANSPARENT_PORT.to_owned(),
        "--admin-port".to_owned(),
        ADMIN_PORT.to_owned(),
    ];
    for ip in dns {
        args.extend(["--dns".to_owned(), (*ip).to_owned()]);
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn the_lockdown_redirects_the_agents_tcp_refuses_the_rest_and_comes_off_again() {
    lockdown_with("nft");
}

#[test]
fn the_iptables_lockdown_does_the_same() {
    lockdown_with("iptables");
}

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `command` inside the pod as root; its stdout.
fn in_pod(ns: &Namespaces, command: &[&str]) -> String {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.pod]).args(command);
    run_bounded(c, Duration::from_secs(10)).stdout
}

fn lockdown_with(backend: &str) {
    if !can_run() {
        return;
    }
    let ns = Namespaces::new();
    let args = init_args(&[ORIGIN_V4]);
    let mut args = strs(&args);
    args.extend(["--backend", backend]);

    // --dry-run prints the script and installs nothing.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = ns.credgate(&dry);
    out.expect_code(0);
    let redirect = if backend == "nft" {
        "meta l4proto tcp redirect to :15001"
    } else {
        "-A CREDGATE_CAPTURE -p tcp -j REDIRECT --to-ports 15001"
    };
    assert!(out.stdout.contains(redirect), "{out:?}");
    let mut check = args.clone();
    check.push("--check");
    ns.credgate(&check).expect_code(1);

    // Installed twice: one ruleset, and --check agrees with it.
    ns.credgate(&args).expect_code(0);
    ns.credgate(&args).expect_code(0);
    if backend == "nft" {
        let tables = in_pod(&ns, &["nft", "list", "tables"]);
        assert_eq!(tables.trim(), "table inet credgate");
    } else {
        for save in ["iptables-save", "ip6tables-save"] {
            let saved = in_pod(&ns, &[save]);
            for jump in [
                "-A OUTPUT -j CREDGATE_CAPTURE",
                "-A OUTPUT -j CREDGATE_EGRESS",
            ] {
                let count = saved.lines().filter(|l| *l == jump).count();
                assert_eq!(count, 1, "{save}: {saved}");
            }
        }
    }
    ns.credgate(&check).expect_code(0);
    // Described differently, the installed one is reported as different.
    let other = init_args(&[ORIGIN_V4, "10.77.0.9"]);
    let mut other = strs(&other);
    other.extend(["--backend", backend, "--check"]);
    let differs = ns.credgate(&other);
    differs.expect_code(1);
    assert!(differs.stdout.contains("differs"), "{differs:?}");

    // The agent's TCP, IPv4 and IPv6, lands on the transparent port, never
    // at the origin; credgate's own goes out and is not looped.
    let origin = ns.listen(&ns.origin, None, "tcp", "::", "443");
    let capture = ns.listen(&ns.pod, Some(CREDGATE_UID), "tcp", "::", TRANSPARENT_PORT);
    assert_eq!(ns.probe(AGENT_UID, "tcp", ORIGIN_V4, "443"), "ok");
    assert_eq!(ns.probe(AGENT_UID, "tcp", ORIGIN_V6, "443"), "ok");
    assert_eq!(ns.probe(AGENT_UID, "tcp", ORIGIN_V4, "22"), "ok");
    assert_eq!(ns.probe(CREDGATE_UID, "tcp", ORIGIN_V4, "443"), "ok");
    let captured = capture.peers();
    let reached = origin.peers();
    assert_eq!(captured.len(), 3, "captured {captured:?}");
    assert_eq!(
        reached.len(),
        1,
        "only credgate's own connection reaches the origin: {reached:?}"
    );

    // UDP (QUIC) is refused, IPv4 and IPv6; DNS to the named resolver passes.
    let quic = ns.listen(&ns.origin, None, "udp", "::", "443");
    let dns = ns.listen(&ns.origin, None, "udp", ORIGIN_V4, "53");
    assert!(ns
        .probe(AGENT_UID, "udp", ORIGIN_V4, "443")
        .starts_with("refused"));
    assert!(ns
        .probe(AGENT_UID, "udp", ORIGIN_V6, "443")
        .starts_with("refused"));
    assert_eq!(ns.probe(AGENT_UID, "udp", ORIGIN_V4, "53"), "ok");
    assert!(quic.peers().is_empty(), "a UDP datagram got out");
    assert_eq!(dns.peers().len(), 1);

    // The admin port is credgate's alone, on loopback and the pod address.
    let admin = ns.listen(&ns.pod, Some(CREDGATE_UID), "tcp", "::", ADMIN_PORT);
    assert!(ns
        .probe(AGENT_UID, "tcp", "127.0.0.1", ADMIN_PORT)
        .starts_with("refused"));
    assert!(ns
        .probe(AGENT_UID, "tcp", "::1", ADMIN_PORT)
        .starts_with("refused"));
    assert!(ns
        .probe(AGENT_UID, "tcp", POD_V4, ADMIN_PORT)
        .starts_with("refused"));
    assert_eq!(ns.probe(CREDGATE_UID, "tcp", "127.0.0.1", ADMIN_PORT), "ok");
    assert_eq!(admin.peers().len(), 1);

    // --remove restores the namespace: the agent reaches the origin again.
    let remove = vec!["init", "--remove", "--backend", backend];
    ns.credgate(&remove).expect_code(0);
    ns.credgate(&check).expect_code(1);
    let origin = ns.listen(&ns.origin, None, "tcp", "::", "443");
    assert_eq!(ns.probe(AGENT_UID, "tcp", ORIGIN_V4, "443"), "ok");
    assert_eq!(origin.peers().len(), 1);
    // Removing what is not there is not an error.
    ns.credgate(&remove).expect_code(0);
}

#[test]
fn init_without_the_capability_fails_clearly_and_installs_nothing() {
    if !can_run() {
        return;
    }
    let ns = Namespaces::new();
    let args = init_args(&[ORIGIN_V4]);
    let mut cmd = ns.as_user(&ns.pod, Some(AGENT_UID));
    cmd.arg(env!("CARGO_BIN_EXE_credgate")).args(&args);
    let out = run_bounded(cmd, Duration::from_secs(30));
    out.expect_code(1);
    assert!(out.stderr.contains("CAP_NET_ADMIN"), "{out:?}");
    let mut check = strs(&args);
    check.push("--check");
    ns.credgate(&check).expect_code(1);
    // Root is refused as credgate's user: it would exempt every root process.
    let root = ns.credgate(&["init", "--proxy-uid", "0", "--dry-run"]);
    root.expect_code(1);
    assert!(root.stderr.contains("non-root"), "{root:?}");
}

/// `credgate serve` inside the pod as credgate's user, in `dir`, until
/// dropped; its stderr goes to `dir/serve.log`.
struct PodCredgate {
    child: Child,
    log: PathBuf,
}

impl Drop for PodCredgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PodCredgate {
    fn start(ns: &Namespaces, dir: &std::path::Path, secret: &str) -> PodCredgate {
        let log = dir.join("serve.log");
        let mut cmd = ns.as_user(&ns.pod, Some(CREDGATE_UID));
        cmd.arg(env!("CARGO_BIN_EXE_credgate"))
            .args(["serve", "--config", "credgate.yaml"])
            .current_dir(dir)
            .env("API_TOKEN", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let mut me = PodCredgate { child, log };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&me.log).unwrap_or_default();
            if text.contains("transparent capture on") {
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("credgate serve exited {status}: {text}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "credgate did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGTERM: tasks end, the log is flushed) and waits.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A netcheck.py server in the origin namespace: started once it says it
/// is listening; `stop` ends it and returns the lines it printed since.
struct Server {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        Server { child, out }
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut seen = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut seen);
        seen
    }
}

#[test]
fn an_agent_without_proxy_settings_goes_through_credgate_or_nowhere() {
    if !can_run() {
        return;
    }
    let ns = Namespaces::new();
    ns.hosts(&[
        (ORIGIN_V4, "api.test"),
        (ORIGIN_V4, "other.test"),
        (ORIGIN_V4, "plain.test"),
        (ORIGIN_V4, "git.test"),
        (ORIGIN_V4, "pinned.test"),
    ]);
    let secret = test_secret();

    // credgate's files, its user's; the agent gets only the CA certificate.
    let dir = TempDir::new();
    std::os::unix::fs::chown(dir.path(), Some(CREDGATE_UID), Some(CREDGATE_UID)).unwrap();
    let origin_tls = support::moto::MotoTls::generate_for("api.test");
    std::fs::copy(&origin_tls.ca_cert, dir.path().join("upstream-ca.pem")).unwrap();
    std::fs::write(
        dir.path().join("credgate.yaml"),
        format!(
            r#"
listen: 127.0.0.1:8080
transparent_listen: [127.0.0.1:{TRANSPARENT_PORT}, "[::1]:{TRANSPARENT_PORT}"]
admin: {{ listen: "127.0.0.1:{ADMIN_PORT}" }}
upstream: {{ extra_ca: upstream-ca.pem }}
credentials:
  api:
    static: {{ env: API_TOKEN }}
scopes:
  api:
    - host: api.test
      port: 443
      methods: [GET]
      paths: ["/v1/**"]
      credential: api
      allow_private: true
    - host: plain.test
      schemes: [http]
      methods: [GET]
      paths: ["/public/**"]
      allow_private: true
    - host: git.test
      port: 22
      tunnel: true
      allow_private: true
    - host: pinned.test
      tunnel: true
      allow_private: true
ambient_task: {{ agent: pod-agent, scopes: [api], ttl: 1h }}
"#
        ),
    )
    .unwrap();
    let mut ca_init = ns.as_user(&ns.pod, Some(CREDGATE_UID));
    ca_init
        .arg(env!("CARGO_BIN_EXE_credgate"))
        .args(["ca", "init"])
        .current_dir(dir.path());
    run_bounded(ca_init, Duration::from_secs(20)).expect_code(0);
    let agent_ca = dir.path().join("agent-ca.crt");
    std::fs::copy(dir.path().join(".credgate/ca.crt"), &agent_ca).unwrap();
    let credgate = PodCredgate::start(&ns, dir.path(), &secret);

    // The origin, in the other namespace, says whether each request
    // carried exactly the credential.
    let mut origin = ns.as_user(&ns.origin, None);
    origin
        .arg(python())
        .arg(netcheck())
        .args(["https", "::", "443"])
        .arg(&origin_tls.cert)
        .arg(&origin_tls.key)
        .arg("30")
        .env("EXPECT_AUTH", format!("Bearer {secret}"));
    let origin = Server::start(origin);
    // An SSH-like server: it speaks first.
    let mut git = ns.as_user(&ns.origin, None);
    git.arg(python())
        .arg(netcheck())
        .args(["banner", "::", "22", "30"]);
    let git = Server::start(git);
    let mut plain = ns.as_user(&ns.origin, None);
    plain
        .arg(python())
        .arg(netcheck())
        .args(["https", ORIGIN_V4, "80", "-", "-", "30"]);
    let plain = Server::start(plain);

    ns.credgate(&strs(&init_args(&[ORIGIN_V4]))).expect_code(0);

    // The agent has no proxy variable at all.
    let curl = |args: &[&str]| -> Outcome {
        let mut cmd = ns.as_user(&ns.pod, Some(AGENT_UID));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["curl", "-sS", "--max-time", "10", "--cacert"])
            .arg(&agent_ca)
            .args(["-H", "Authorization: Bearer agent-own-token"])
            .args(args);
        run_bounded(cmd, Duration::from_secs(20))
    };
    let ok = curl(&["https://api.test/v1/items"]);
    assert_eq!(ok.stdout, "ok from origin", "{ok:?}");
    // The agent's resolver pointed it at another address: credgate dials
    // the one it resolved and checked for the name.
    let elsewhere = curl(&[
        "--resolve",
        "api.test:443:10.77.0.99",
        "https://api.test/v1/other",
    ]);
    assert_eq!(elsewhere.stdout, "ok from origin", "{elsewhere:?}");
    // IPv6 is captured the same way.
    let v6 = curl(&[
        "--resolve",
        &format!("api.test:443:[{ORIGIN_V6}]"),
        "https://api.test/v1/six",
    ]);
    assert_eq!(v6.stdout, "ok from origin", "{v6:?}");
    // Refused: no server name, a name outside every scope, a path no rule
    // allows, a protocol that is not TLS, a direct connect to the port.
    let no_sni = curl(&["https://10.77.0.2/v1/items"]);
    assert_ne!(no_sni.code, Some(0), "{no_sni:?}");
    let other = curl(&["https://other.test/v1/items"]);
    assert_ne!(other.code, Some(0), "{other:?}");
    let denied = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://api.test/admin",
    ]);
    assert_eq!(denied.stdout, "403", "{denied:?}");
    // The inner Host must be the server name the connection was admitted for.
    let mismatch = curl(&["-H", "Host: other.test", "https://api.test/v1/items"]);
    assert_ne!(mismatch.stdout, "ok from origin", "{mismatch:?}");
    // A tunnel rule's TLS goes through as the agent's own (here, with its
    // own Authorization and no verification of its own): not intercepted.
    let pinned = curl(&["-k", "https://pinned.test/v1/pinned"]);
    assert_eq!(pinned.stdout, "ok from origin", "{pinned:?}");
    // Plain HTTP goes to its Host on the original port, request by request,
    // under the cleartext rules: the agent's own Authorization is stripped.
    let public = curl(&["http://plain.test/public/readme"]);
    assert_eq!(public.stdout, "ok from origin", "{public:?}");
    let private = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://plain.test/private",
    ]);
    assert_eq!(private.stdout, "403", "{private:?}");
    let probe = |op: &str, host: &str, port: &str, text: &str| -> String {
        let mut cmd = ns.as_user(&ns.pod, Some(AGENT_UID));
        cmd.arg(python())
            .arg(netcheck())
            .args([op, host, port, text]);
        run_bounded(cmd, Duration::from_secs(15))
            .stdout
            .trim()
            .to_owned()
    };
    // Neither TLS nor HTTP, and no tunnel rule for the port: closed.
    assert_eq!(
        probe("send", ORIGIN_V4, "5432", "\x01\x02\x03\x08"),
        "closed"
    );
    // A tunnel rule's host resolves to the original address: relayed
    // blindly, whether the client speaks first or the server does.
    let client_first = probe("send", ORIGIN_V4, "22", "SSH-2.0-probe\r\n");
    assert!(
        client_first.starts_with("SSH-2.0-origin"),
        "{client_first:?}"
    );
    assert_eq!(
        probe("chat", ORIGIN_V4, "22", "hello"),
        "SSH-2.0-origin echo:hello"
    );
    // The same port at an address no tunnel rule's host resolves to.
    assert_eq!(
        probe("send", ORIGIN_V6, "22", "SSH-2.0-probe\r\n"),
        "closed"
    );
    let mut direct = ns.as_user(&ns.pod, Some(AGENT_UID));
    direct.arg(python()).arg(netcheck()).args([
        "send",
        "127.0.0.1",
        TRANSPARENT_PORT,
        "\x16\x03\x01",
    ]);
    let direct = run_bounded(direct, Duration::from_secs(15));
    assert_eq!(direct.stdout.trim(), "closed", "{direct:?}");

    credgate.stop();
    let seen = origin.stop();
    let seen: Vec<&str> = seen.lines().collect();
    assert_eq!(
        seen,
        [
            "request api.test /v1/items auth=ok",
            "request api.test /v1/other auth=ok",
            "request api.test /v1/six auth=ok",
            "request pinned.test /v1/pinned auth=other"
        ],
        "only the allowed requests reached the origin, each with the credential alone"
    );
    let seen = git.stop();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            format!("banner ::ffff:{POD_V4}"),
            format!("banner ::ffff:{POD_V4}")
        ],
        "only the two tunnelled streams reached the SSH server, from credgate's address"
    );
    let seen = plain.stop();
    assert_eq!(seen.trim(), "request plain.test /public/readme auth=none");

    let log = std::fs::read_to_string(dir.path().join(".credgate/decisions.jsonl")).unwrap();
    assert!(!log.contains(&secret), "the credential in the decision log");
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["event"] == "request")
        .collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| -> Vec<&serde_json::Value> {
        records.iter().filter(|r| pred(r)).collect()
    };
    let plain_gets = find(&|r| r["method"] == "GET" && r["host"] == "plain.test");
    assert_eq!(plain_gets.len(), 2, "{records:#?}");
    assert!(plain_gets
        .iter()
        .all(|r| r["port"] == 80 && r["scheme"] == "http"));
    let gets =
        find(&|r| r["method"] == "GET" && r["decision"] == "allow" && r["host"] == "api.test");
    assert_eq!(gets.len(), 3, "{records:#?}");
    for get in gets {
        assert_eq!(get["host"], "api.test");
        assert_eq!(get["credential"]["name"], "api");
    }
    let admin = find(&|r| r["method"] == "GET" && r["path"] == "/admin");
    assert_eq!(admin.len(), 1, "{records:#?}");
    assert_eq!(admin[0]["decision"], "deny");
    let mismatched = find(&|r| r["method"] == "GET" && r["reason"] == "misdirected_request");
    assert_eq!(mismatched.len(), 1, "{records:#?}");
    let message = |r: &serde_json::Value| r["message"].as_str().unwrap_or_default().to_owned();
    let refused = find(&|r| r["method"] == "CONNECT" && r["decision"] == "deny");
    let says = |needle: &str| refused.iter().any(|r| message(r).contains(needle));
    assert!(says("without a server name"), "{refused:#?}");
    assert!(says("neither TLS nor HTTP"), "{refused:#?}");
    assert!(says("direct connection"), "{refused:#?}");
    let tunnels = find(&|r| r["tunnel"] == true && r["decision"] == "allow");
    assert_eq!(tunnels.len(), 3, "{records:#?}");
    for tunnel in tunnels {
        assert_eq!(tunnel["tunnel"], true, "{tunnel:#?}");
        assert!(
            (tunnel["host"] == "git.test" && tunnel["port"] == 22)
                || (tunnel["host"] == "pinned.test" && tunnel["port"] == 443),
            "{tunnel:#?}"
        );
        assert!(message(tunnel).contains("blind tunnel"), "{tunnel:#?}");
    }
    let no_tunnel = refused
        .iter()
        .filter(|r| message(r).contains("port 22 that is neither TLS nor HTTP"))
        .count();
    assert_eq!(no_tunnel, 1, "{refused:#?}");
    assert!(
        refused
            .iter()
            .any(|r| r["host"] == "other.test" && r["port"] == 443),
        "{refused:#?}"
    );
    // Every captured connection ran as the pod's ambient task.
    let ambient = find(&|r| r["host"] == "api.test");
    assert!(
        ambient.iter().all(|r| r["agent"] == "pod-agent"),
        "{ambient:#?}"
    );
}
