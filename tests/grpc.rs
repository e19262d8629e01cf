//! gRPC through interception, with real peers: Python `grpcio` as the
//! agent (`tests/peers/grpc/client.py`, going through credgate by CONNECT
//! with the `grpc.http_proxy` option) and as the upstream
//! (`tests/peers/grpc/server.py`, TLS with a certificate of a test CA that
//! credgate trusts through `upstream.extra_ca`).
//!
//! The calls go over HTTP/2 on both sides. The upstream gets credgate's
//! injected credential as `authorization` metadata instead of the agent's
//! own, echoes it in a message and in a trailer, and the agent gets both
//! masked, with `grpc-status` OK. A server-streaming call's messages reach
//! the agent as they are sent, not all at the end.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::moto::MotoTls;
use support::*;

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/grpc");
/// What the server pauses between two messages of a stream (server.py).
const PAUSE: f64 = 0.3;

/// `tests/peers/grpc/server.py`, killed on drop.
struct GrpcServer {
    child: Child,
    port: u16,
    seen_file: PathBuf,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GrpcServer {
    async fn start(tls: &MotoTls, dir: &Path) -> GrpcServer {
        let port_file = dir.join("grpc-port");
        let seen_file = dir.join("grpc-seen");
        let mut cmd = Command::new("python3");
        cmd.arg(format!("{PEERS}/server.py"))
            .arg(&tls.cert)
            .arg(&tls.key)
            .arg(&port_file)
            .arg(&seen_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        clean_env(&mut cmd);
        let child = cmd.spawn().expect("python3 runs server.py");
        let mut server = GrpcServer {
            child,
            port: 0,
            seen_file,
        };
        server.port = poll_until(WAIT_LIMIT, || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .await
        .expect("the gRPC server writes its port (is grpcio installed? see tests/run.sh)");
        server
    }

    /// Every `authorization` the server received, one per call.
    fn seen(&self) -> Vec<String> {
        std::fs::read_to_string(&self.seen_file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_server_streaming_calls_go_through_with_the_credential_masked() {
    let tls = MotoTls::generate();
    let server = GrpcServer::start(&tls, tls.dir.path()).await;
    let secret = test_secret();
    let config = format!(
        "credentials:\n  grpc:\n    static: {{ env: GRPC_TOKEN }}\n\
         scopes:\n  grpc:\n    - host: localhost\n      port: {port}\n      methods: [POST]\n      paths: ['/credgate.test.Echo/*']\n      credential: grpc\n      allow_private: true\n",
        port = server.port
    );
    let env = Env::start_trusting(tls.authority(), &config, &[("GRPC_TOKEN", &secret)]).await;
    env.resolver.map("localhost", "127.0.0.1");
    let (id, token) = env.start_task(&["grpc"]);

    let mut client = Command::new("python3");
    client
        .arg(format!("{PEERS}/client.py"))
        .arg(format!("localhost:{}", server.port))
        .arg(env.proxy_url(&id, &token))
        .arg(&env.ca_cert);
    clean_env(&mut client);
    let outcome = run_cli(client).await;
    outcome.expect_code(0);
    assert!(!outcome.all().contains(&secret), "the credential is masked");
    assert!(
        !outcome.all().contains(&token),
        "the task token is not echoed"
    );
    let out: Value = serde_json::from_str(&outcome.stdout).unwrap();

    // The upstream got credgate's credential, never the agent's own.
    let injected = format!("Bearer {secret}");
    assert_eq!(server.seen(), [injected.clone(), injected]);

    let unary = &out["unary"];
    assert_eq!(unary["code"], "OK", "{out}");
    let message = unary["message"].as_str().unwrap();
    assert!(
        message.starts_with("unary got ping; authorization Bearer "),
        "{message}"
    );
    assert!(!message.contains("agent-own-token"));
    let trailer = unary["trailers"]["x-seen-authorization"].as_str().unwrap();
    assert!(
        trailer.starts_with("Bearer ") && trailer.len() > "Bearer ".len(),
        "{trailer}"
    );

    let stream = &out["stream"];
    assert_eq!(stream["code"], "OK", "{out}");
    let messages = stream["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{out}");
    assert!(messages[0]
        .as_str()
        .unwrap()
        .starts_with("message 0; authorization Bearer "));
    assert!(stream["trailers"]["x-seen-authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));
    // Each message arrived about when it was sent: one pause after the one
    // before, not all together at the end of the call.
    let arrivals: Vec<f64> = stream["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_f64().unwrap())
        .collect();
    for pair in arrivals.windows(2) {
        assert!(pair[1] - pair[0] > PAUSE * 0.6, "arrivals {arrivals:?}");
    }

    let records = env.records().await;
    let calls: Vec<_> = records
        .iter()
        .filter(|r| r.method.as_deref() == Some("POST"))
        .collect();
    assert_eq!(calls.len(), 2, "{records:?}");
    assert!(
        calls
            .iter()
            .all(|r| r.upstream.and_then(|u| u.status) == Some(200)),
        "{calls:?}"
    );
    assert!(!env.log_text().await.contains(&secret));
    env.stop().await;
}
