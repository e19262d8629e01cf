//! git over HTTPS through credgate, as an agent uses it: `git clone` and
//! `git push` of a repository holding a file of several MiB, to a real
//! `git http-backend` behind nginx (over fcgiwrap) on loopback, with the
//! credential injected as HTTP Basic. The push's pack goes as one streamed
//! request body, larger than what credgate reads before the pipeline runs.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use support::moto::MotoTls;
use support::*;

/// A git smart-HTTP server: nginx with TLS in front of `git http-backend`,
/// which only answers requests carrying `expected` as Basic credentials.
struct GitServer {
    port: u16,
    root: PathBuf,
    nginx: Child,
    fcgi: Child,
    _dir: TempDir,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        for child in [&mut self.nginx, &mut self.fcgi] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where Debian's git keeps `git http-backend`.
fn http_backend() -> PathBuf {
    let out = Command::new("/usr/bin/git")
        .arg("--exec-path")
        .output()
        .expect("Debian's git is installed (tests/run.sh installs it)");
    let path =
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("git-http-backend");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl GitServer {
    fn start(tls: &MotoTls, expected: &str) -> GitServer {
        let dir = TempDir::new();
        let root = dir.path().join("srv");
        std::fs::create_dir_all(&root).unwrap();
        git(&root, &["init", "--bare", "-q", "-b", "main", "repo.git"]);
        git(
            &root.join("repo.git"),
            &["config", "http.receivepack", "true"],
        );
        let socket = dir.path().join("fcgi.sock");
        let fcgi = Command::new("fcgiwrap")
            .args(["-s", &format!("unix:{}", socket.display())])
            .stdin(Stdio::null())
            .spawn()
            .expect("fcgiwrap is installed (tests/run.sh installs it)");
        let port = free_port();
        let basic = base64::engine::general_purpose::STANDARD.encode(expected);
        let d = dir.path().display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            if ($http_authorization != "Basic {basic}") {{ return 403; }}
            include /etc/nginx/fastcgi_params;
            fastcgi_pass unix:{socket};
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param REMOTE_USER agent;
        }}
    }}
}}
"#,
            cert = tls.cert.display(),
            key = tls.key.display(),
            socket = socket.display(),
            backend = http_backend().display(),
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = Command::new("nginx")
            .args(["-p", &d.to_string(), "-c", &conf_path.display().to_string()])
            .args(["-e", &format!("{d}/error.log")])
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx is installed (tests/run.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx or fcgiwrap did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        GitServer {
            port,
            root,
            nginx,
            fcgi,
            _dir: dir,
        }
    }
}

/// Runs git in `dir` with a clean, prompt-free environment; panics unless it
/// succeeds; returns what it printed.
fn git(dir: &Path, args: &[&str]) -> String {
    run_git(git_command(dir, args), args)
}

fn run_git(mut cmd: Command, args: &[&str]) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git {args:?} failed:\n{text}");
    text
}

fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    clean_env(&mut cmd);
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.test")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.test")
        .stdin(Stdio::null());
    cmd
}

/// Runs git through credgate. The proxy URL (with the task token) and the
/// CA go in the environment, as `credgate run` sets them, not in arguments
/// that a failure message would print.
fn git_via(dir: &Path, args: &[&str], proxy: &str, ca: &str) -> String {
    let mut cmd = git_command(dir, args);
    cmd.env("https_proxy", proxy).env("GIT_SSL_CAINFO", ca);
    run_git(cmd, args)
}

/// credgate with a scope `repo` that may read and push `server`'s
/// repository, injecting `token` as HTTP Basic, and a task holding it.
/// Returns credgate, the task id, the proxy URL (with the task token) and
/// the CA file.
async fn start_credgate(
    tls: &MotoTls,
    server: &GitServer,
    token: &str,
) -> (Env, String, String, String) {
    let config = format!(
        "credentials:\n  git:\n    static: {{ env: GIT_TOKEN }}\n    inject: {{ basic: {{ username: x-access-token }} }}\n\
         scopes:\n  repo:\n    - host: localhost\n      port: {port}\n      methods: [GET, POST]\n      paths: [\"/repo.git/**\"]\n      credential: git\n      allow_private: true\n",
        port = server.port
    );
    let env = Env::start_trusting(tls.authority(), &config, &[("GIT_TOKEN", token)]).await;
    let (id, task_token) = env.start_task(&["repo"]);
    let proxy = env.proxy_url(&id, &task_token);
    let ca = env.ca_cert.display().to_string();
    (env, id, proxy, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_and_push_a_repository_of_several_mib_through_credgate() {
    let token = test_secret();
    let tls = MotoTls::generate();
    let server = GitServer::start(&tls, &format!("x-access-token:{token}"));
    let (env, _, proxy, ca) = start_credgate(&tls, &server, &token).await;
    let url = format!("https://localhost:{}/repo.git", server.port);
    let work = TempDir::new();
    // Noise does not compress: the pack is as large as the file.
    let file = noise(6 << 20);

    let pushed = tokio::task::spawn_blocking({
        let (work, url, file) = (work.path().to_path_buf(), url.clone(), file.clone());
        move || {
            let via = |dir: &Path, args: &[&str]| git_via(dir, args, &proxy, &ca);
            via(&work, &["clone", "-q", &url, "first"]);
            let repo = work.join("first");
            std::fs::write(repo.join("data.bin"), &file).unwrap();
            git(&repo, &["add", "data.bin"]);
            git(&repo, &["commit", "-q", "-m", "add data"]);
            let out = via(&repo, &["push", "-q", "origin", "HEAD:main"]);
            via(&work, &["clone", "-q", &url, "second"]);
            out
        }
    })
    .await
    .unwrap();
    assert!(!pushed.contains(&token), "the credential reached the agent");

    // The file came back whole through a fresh clone, and the server holds it.
    let cloned = std::fs::read(work.path().join("second/data.bin")).unwrap();
    assert!(cloned == file, "the file changed on the way");
    let log = git(
        &server.root.join("repo.git"),
        &["log", "--format=%s", "main"],
    );
    assert_eq!(log.trim(), "add data");

    // The pack went as one allowed request with all of it in its body (git
    // first sends a 4-byte probe to the same URL).
    let records = env.request_records().await;
    let push = records
        .iter()
        .filter(|r| r.path.as_deref() == Some("/repo.git/git-receive-pack"))
        .max_by_key(|r| r.bytes_in)
        .unwrap_or_else(|| panic!("no record of the push: {records:?}"));
    assert_eq!(push.method.as_deref(), Some("POST"));
    assert_eq!(
        push.reason,
        Some(credgate::reason::Reason::Allowed),
        "{push:?}"
    );
    assert!(push.bytes_in > 6 << 20, "{push:?}");
    assert_eq!(push.upstream.as_ref().and_then(|u| u.status), Some(200));
    assert!(!env.log_text().await.contains(&token));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_git_clone_leaves_no_deny_in_the_records() {
    use credgate::audit::Verdict;
    use credgate::reason::Reason;
    let token = test_secret();
    let tls = MotoTls::generate();
    let server = GitServer::start(&tls, &format!("x-access-token:{token}"));
    // A commit in the served repository, pushed there without credgate.
    let seed = TempDir::new();
    git(seed.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(seed.path().join("README"), "hello\n").unwrap();
    git(seed.path(), &["add", "README"]);
    git(seed.path(), &["commit", "-q", "-m", "first"]);
    let bare = server.root.join("repo.git").display().to_string();
    git(seed.path(), &["push", "-q", &bare, "HEAD:main"]);

    let (env, id, proxy, ca) = start_credgate(&tls, &server, &token).await;
    let url = format!("https://localhost:{}/repo.git", server.port);
    let work = TempDir::new();
    // git's default http.proxyAuthMethod is anyauth: libcurl sends its
    // first CONNECT without credentials and retries after the 407.
    tokio::task::spawn_blocking({
        let work = work.path().to_path_buf();
        move || git_via(&work, &["clone", "-q", &url, "copy"], &proxy, &ca)
    })
    .await
    .unwrap();
    let readme = std::fs::read_to_string(work.path().join("copy/README")).unwrap();
    assert_eq!(readme, "hello\n");

    // `credgate logs --decision deny` has nothing to show.
    env.gateway().audit_sink().flush().await;
    let mut logs = credgate(["logs"]);
    logs.arg(&env.audit).args(["--decision", "deny", "--json"]);
    let out = run_cli(logs).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "", "denied after a clean clone");

    // One record per request, each saying what it was; the first CONNECT of
    // a connection may be a challenge, answered on that connection.
    let records = env.request_records().await;
    for r in &records {
        assert_eq!(r.host.as_deref(), Some("localhost"), "{r:?}");
        assert_eq!(r.port, Some(server.port), "{r:?}");
        match r.method.as_deref() {
            Some("CONNECT") => assert_eq!(r.path, None, "{r:?}"),
            Some("GET" | "POST") => assert!(
                r.path
                    .as_deref()
                    .is_some_and(|p| p.starts_with("/repo.git/")),
                "{r:?}"
            ),
            _ => panic!("unexpected record {r:?}"),
        }
        match r.decision {
            Some(Verdict::Allow) => assert_eq!(r.reason, Some(Reason::Allowed), "{r:?}"),
            Some(Verdict::Challenge) => {
                assert_eq!(r.reason, Some(Reason::TaskTokenMissing), "{r:?}");
                assert_eq!(r.task.as_deref(), Some(id.as_str()), "{r:?}");
            }
            _ => panic!("a clean clone left {r:?}"),
        }
    }
    let count = |method: &str, decision| {
        records
            .iter()
            .filter(|r| r.method.as_deref() == Some(method) && r.decision == Some(decision))
            .count()
    };
    assert!(count("CONNECT", Verdict::Allow) >= 1, "{records:#?}");
    assert!(count("GET", Verdict::Allow) >= 1, "{records:#?}");
    assert!(count("POST", Verdict::Allow) >= 1, "{records:#?}");
    // Every challenge was answered by an allowed CONNECT on its connection.
    assert!(
        count("CONNECT", Verdict::Challenge) <= count("CONNECT", Verdict::Allow),
        "{records:#?}"
    );
    assert!(!env.log_text().await.contains(&token));
    env.stop().await;
}
