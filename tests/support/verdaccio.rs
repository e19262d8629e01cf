//! The real npm registry the npm tests install from: verdaccio
//! (tests/peers/verdaccio), offline (no uplinks), over https on 127.0.0.1
//! with a certificate for a test host name, and closed to anyone without a
//! token (`access: $authenticated`).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::moto::{write_private, MotoTls};
use super::{clean_env, closed_port, curl, random_hex, run_bounded, TempDir, COMMAND_LIMIT};

const PEER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/verdaccio");

/// How long verdaccio may take to start.
const PEER_START_LIMIT: Duration = Duration::from_secs(30);

/// The registry user whose token credgate injects (and who publishes).
pub const USER: &str = "ci-publisher";

/// One request as verdaccio logged it on arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    pub method: String,
    /// The request target as verdaccio received it.
    pub url: String,
    /// Whether it carried an `Authorization` header (verdaccio logs the
    /// value as `<Classified>`).
    pub authorization: bool,
}

/// A line verdaccio logs about a request it received: once when the
/// request's body has been read, before it is authenticated or answered
/// (`user` null, nothing sent), and once more when it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub url: String,
    /// The user the request authenticated as; `None` for anonymous (or not
    /// yet authenticated).
    pub user: Option<String>,
    pub status: u16,
    /// The body bytes sent so far.
    pub bytes_out: u64,
}

/// A running verdaccio, killed on drop.
pub struct Verdaccio {
    child: Child,
    pub port: u16,
    /// The host name its certificate is for.
    pub host: String,
    /// Its certificate and the CA that signed it (credgate's `extra_ca`).
    pub tls: MotoTls,
    dir: TempDir,
    /// [`USER`]'s registry token.
    token: String,
    /// Everything verdaccio printed: JSON log lines and warnings.
    output: Arc<Mutex<String>>,
}

impl Drop for Verdaccio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Verdaccio {
    /// Starts verdaccio for `host` on a free port and registers [`USER`].
    /// Fails the test when it cannot start: the peer is required, never
    /// skipped.
    pub async fn start(host: &str) -> Verdaccio {
        let bin = std::path::Path::new(PEER_DIR).join("node_modules/.bin/verdaccio");
        assert!(
            bin.exists(),
            "verdaccio is not installed: run `npm ci --prefix tests/peers/verdaccio` (tests/run.sh does)"
        );
        let dir = TempDir::new();
        let tls = MotoTls::generate_for(host);
        let port = closed_port().await;
        let config = format!(
            r#"storage: {storage}
auth:
  htpasswd:
    file: {htpasswd}
uplinks: {{}}
packages:
  '@*/*':
    access: $authenticated
    publish: $authenticated
  '**':
    access: $authenticated
    publish: $authenticated
listen: https://127.0.0.1:{port}
https:
  key: {key}
  cert: {cert}
web:
  enable: false
log: {{ type: stdout, format: json, level: http }}
"#,
            storage = dir.path().join("storage").display(),
            htpasswd = dir.path().join("htpasswd").display(),
            key = tls.key.display(),
            cert = tls.cert.display(),
        );
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new(&bin);
        clean_env(&mut cmd)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("verdaccio starts");
        let output: Arc<Mutex<String>> = Arc::default();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut text = sink.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let listening = format!("https://127.0.0.1:{port}/");
        let up = super::poll_until(PEER_START_LIMIT, || {
            output.lock().unwrap().contains(&listening).then_some(())
        })
        .await;
        if up.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("verdaccio did not start:\n{}", output.lock().unwrap());
        }
        let mut registry = Verdaccio {
            child,
            port,
            host: host.to_string(),
            tls,
            dir,
            token: String::new(),
            output,
        };
        registry.token = registry.add_user();
        registry
    }

    /// Registers [`USER`] (verdaccio's htpasswd takes new users by default)
    /// and returns the token the registry issued.
    fn add_user(&self) -> String {
        let body =
            serde_json::json!({ "name": USER, "password": format!("pw-{}", random_hex(12)) });
        let body_file = self.dir.path().join("adduser.json");
        std::fs::write(&body_file, body.to_string()).unwrap();
        let mut cmd = self.curl_direct(&format!("/-/user/org.couchdb.user:{USER}"));
        cmd.args([
            "--fail",
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()));
        let out = run_bounded(cmd, COMMAND_LIMIT);
        assert_eq!(out.code, Some(0), "adding {USER} failed: {}", out.stderr);
        let reply: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("adduser answered no JSON ({e})"));
        reply["token"]
            .as_str()
            .unwrap_or_else(|| panic!("adduser answered no token: {}", reply["ok"]))
            .to_owned()
    }

    /// [`USER`]'s registry token: the credential credgate injects.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `curl https://HOST:PORT{path}` straight to verdaccio, not through
    /// credgate, trusting its CA.
    pub fn curl_direct(&self, path: &str) -> Command {
        let mut cmd = curl([
            "--resolve",
            &format!("{}:{}:127.0.0.1", self.host, self.port),
            "--cacert",
        ]);
        cmd.arg(&self.tls.ca_cert)
            .arg(format!("https://{}:{}{path}", self.host, self.port));
        cmd
    }

    /// The status verdaccio answers `GET path` with, straight (not through
    /// credgate), sending `authorization` if given.
    pub fn status_direct(&self, path: &str, authorization: Option<&str>) -> u16 {
        let mut cmd = self.curl_direct(path);
        cmd.args(["-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(value) = authorization {
            cmd.args(["-H", &format!("Authorization: {value}")]);
        }
        let out = run_bounded(cmd, COMMAND_LIMIT);
        out.stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl printed no status: {out:?}"))
    }

    /// Publishes package `name` at `version` with `index.js` as its code,
    /// with npm straight to verdaccio (not through credgate) as [`USER`].
    pub fn publish(&self, name: &str, version: &str, index_js: &str) {
        let package = self.dir.path().join(format!("src-{}", random_hex(4)));
        std::fs::create_dir_all(&package).unwrap();
        let manifest = serde_json::json!({ "name": name, "version": version, "main": "index.js" });
        std::fs::write(package.join("package.json"), manifest.to_string()).unwrap();
        std::fs::write(package.join("index.js"), index_js).unwrap();
        // The token goes in a file, never on a command line.
        let npmrc = self.dir.path().join("publisher.npmrc");
        write_private(
            &npmrc,
            &format!("//127.0.0.1:{}/:_authToken={}\n", self.port, self.token),
        );
        let mut cmd = Command::new("npm");
        clean_env(&mut cmd)
            .args(["publish", "--registry"])
            .arg(format!("https://127.0.0.1:{}/", self.port))
            .arg("--cafile")
            .arg(&self.tls.ca_cert)
            .arg("--cache")
            .arg(self.dir.path().join("publisher-cache"))
            .args(["--fetch-retries=0", "--audit=false", "--fund=false"])
            .env("npm_config_userconfig", &npmrc)
            .env("npm_config_update_notifier", "false")
            .current_dir(&package);
        let out = run_bounded(cmd, COMMAND_LIMIT);
        assert_eq!(
            out.code,
            Some(0),
            "npm publish {name} failed:\n{}",
            out.all().replace(&self.token, "<token>")
        );
    }

    /// Whether verdaccio's storage holds package `name` (`@scope/name` for
    /// a scoped one).
    pub fn stores(&self, name: &str) -> bool {
        self.dir
            .path()
            .join("storage")
            .join(name)
            .join("package.json")
            .is_file()
    }

    /// verdaccio's JSON log lines so far.
    fn log(&self) -> Vec<serde_json::Value> {
        let output = self.output.lock().unwrap().clone();
        output
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Every request verdaccio has received so far, in order.
    pub fn arrived(&self) -> Vec<Arrived> {
        self.log()
            .iter()
            .filter(|entry| entry["req"]["headers"].is_object())
            .map(|entry| Arrived {
                method: entry["req"]["method"].as_str().unwrap_or("").to_owned(),
                url: entry["req"]["url"].as_str().unwrap_or("").to_owned(),
                authorization: !entry["req"]["headers"]["authorization"].is_null(),
            })
            .collect()
    }

    /// Every [`Logged`] line so far, in order.
    pub fn logged(&self) -> Vec<Logged> {
        self.log()
            .iter()
            .filter(|entry| entry["request"].is_object() && entry["status"].is_u64())
            .map(|entry| Logged {
                method: entry["request"]["method"].as_str().unwrap_or("").to_owned(),
                url: entry["request"]["url"].as_str().unwrap_or("").to_owned(),
                user: entry["user"].as_str().map(str::to_owned),
                status: u16::try_from(entry["status"].as_u64().unwrap()).unwrap(),
                bytes_out: entry["bytes"]["out"].as_u64().unwrap_or(0),
            })
            .collect()
    }

    /// Waits until verdaccio has written both [`Logged`] lines of every
    /// request it received (the second may come a moment after the answer),
    /// so that what follows a snapshot of the log belongs to later requests.
    pub async fn settle(&self) {
        let settled = super::poll_until(super::WAIT_LIMIT, || {
            (self.logged().len() >= 2 * self.arrived().len()).then_some(())
        })
        .await;
        assert!(
            settled.is_some(),
            "verdaccio did not log every request twice:\n{}",
            self.output()
        );
    }

    /// Everything verdaccio printed so far (its log never holds a token:
    /// it prints `authorization` as `<Classified>`).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}
