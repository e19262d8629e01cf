//! `credgate init`, for real: the lock-down installed in a network namespace
//! standing in for a pod, with a veth to a second namespace holding the
//! "internet" (addresses of the test's own). A "credgate" user and an
//! "agent" user run probes inside the pod (tests/peers/net/netcheck.py).
//!
//! Needs root (network namespaces and users), `ip`, `nft` and `setpriv`:
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
    let found = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !nix::unistd::geteuid().is_root() || !["ip", "nft", "setpriv"].iter().all(|t| found(t)) {
        eprintln!("lockdown tests need root, ip, nft and setpriv: not run here");
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
    if !can_run() {
        return;
    }
    let ns = Namespaces::new();
    let args = init_args(&[ORIGIN_V4]);
    let args = strs(&args);

    // --dry-run prints the script and installs nothing.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = ns.credgate(&dry);
    out.expect_code(0);
    assert!(
        out.stdout.contains("meta l4proto tcp redirect to :15001"),
        "{out:?}"
    );
    let mut check = args.clone();
    check.push("--check");
    ns.credgate(&check).expect_code(1);

    // Installed twice: one table, and --check agrees with it.
    ns.credgate(&args).expect_code(0);
    ns.credgate(&args).expect_code(0);
    let tables = run_bounded(
        {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.pod, "nft", "list", "tables"]);
            c
        },
        Duration::from_secs(10),
    );
    assert_eq!(tables.stdout.trim(), "table inet credgate", "{tables:?}");
    ns.credgate(&check).expect_code(0);
    // Described differently, the installed one is reported as different.
    let other = init_args(&[ORIGIN_V4, "10.77.0.9"]);
    let mut other = strs(&other);
    other.push("--check");
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
    let mut remove = vec!["init", "--remove"];
    ns.credgate(&remove).expect_code(0);
    ns.credgate(&check).expect_code(1);
    let origin = ns.listen(&ns.origin, None, "tcp", "::", "443");
    assert_eq!(ns.probe(AGENT_UID, "tcp", ORIGIN_V4, "443"), "ok");
    assert_eq!(origin.peers().len(), 1);
    // Removing what is not there is not an error.
    remove.truncate(2);
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
