//! The real OAuth 2.0 authorization server the credential-source tests talk
//! to: panva's oidc-provider (tests/peers/oidc), run with node on 127.0.0.1.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{curl, run_cli, TempDir};

const PEER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oidc");

/// How long the authorization server may take to start.
const PEER_START_LIMIT: Duration = Duration::from_secs(30);

/// A running oidc-provider on 127.0.0.1, killed on drop.
pub struct OidcServer {
    child: Child,
    pub port: u16,
    /// What the server wrote to stderr, for failure messages.
    pub errors: Arc<std::sync::Mutex<String>>,
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcServer {
    /// Starts the server with `config` (written into `dir`) and waits,
    /// bounded, for it to print its port. Fails the test when it cannot
    /// start: the peer is required, never skipped.
    pub fn start(dir: &TempDir, config: Value) -> OidcServer {
        assert!(
            std::path::Path::new(PEER_DIR)
                .join("node_modules/oidc-provider/package.json")
                .exists(),
            "oidc-provider is not installed: run `npm ci --prefix tests/peers/oidc` (tests/run.sh does)"
        );
        let path = dir.path().join("oidc.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut child = Command::new("node")
            .arg("server.js")
            .arg(&path)
            .current_dir(PEER_DIR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts (tests/run.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading after the port, so the server never dies of EPIPE.
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(port) = line.strip_prefix("listening on ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
            let _ = tx.send(None);
        });
        let errors = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let port = match rx.recv_timeout(PEER_START_LIMIT) {
            Ok(Some(port)) => port,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "oidc-provider did not start ({other:?}):\n{}",
                    errors.lock().unwrap()
                );
            }
        };
        OidcServer {
            child,
            port,
            errors,
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// RFC 7662 introspection of `token`, as the `introspector` client.
    pub async fn introspect(&self, token: &str, introspector_secret: &str) -> Value {
        let out = run_cli(curl([
            "--fail-with-body",
            "-u",
            &format!("introspector:{introspector_secret}"),
            "--data-urlencode",
            &format!("token={token}"),
            &format!("{}/token/introspection", self.issuer()),
        ]))
        .await;
        assert_eq!(
            out.code,
            Some(0),
            "introspection failed: {}\n--- oidc-provider stderr\n{}",
            out.all(),
            self.errors.lock().unwrap()
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }
}
