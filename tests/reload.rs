//! Configuration reload of the real binary: on SIGHUP and when the file
//! changes, the whole configuration is swapped; an invalid one is refused
//! and the running one keeps serving.

mod support;

use nix::sys::signal::Signal;
use support::*;

/// The `api` scope over the upstream on `port`, allowing GET on `paths`;
/// with `reports`, a second scope of that name.
fn scopes(port: u16, paths: &[&str], reports: bool) -> String {
    let paths = serde_json::to_string(paths).unwrap();
    let mut text = format!(
        r#"
credentials:
  api:
    static: {{ env: API_TOKEN }}
scopes:
  api:
    - host: localhost
      port: {port}
      methods: [GET]
      paths: {paths}
      credential: api
      allow_private: true
"#
    );
    if reports {
        text.push_str(&format!(
            "  reports:\n    - host: localhost\n      port: {port}\n      methods: [GET]\n      allow_private: true\n"
        ));
    }
    text
}

/// `GET https://localhost:PORT{path}` through the proxy as `task`; the status.
async fn status(d: &Daemon, task: &CliTask, port: u16, path: &str) -> u16 {
    let url = format!("https://localhost:{port}{path}");
    curl_status(&run_cli(curl_via(&task.proxy_url, &d.files.ca_cert, &url)).await).0
}

/// Retries the request until it gets `expected` (a reload is asynchronous).
async fn eventually(d: &Daemon, task: &CliTask, port: u16, path: &str, expected: u16) {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    let mut last = 0;
    while tokio::time::Instant::now() < deadline {
        last = status(d, task, port, path).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "{path} still answers {last}, not {expected}:\n{}",
        d.serve.stderr()
    );
}

async fn start_reports_task(d: &Daemon) -> Outcome {
    run_cli(d.task_cmd(&["start", "--scope", "reports", "--json"])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration() {
    let secret = test_secret();
    let files = DaemonFiles::new();
    let upstream = files.upstream("localhost", ok_handler()).await;
    let port = upstream.port();
    // The file credgate is given is a link into another directory: edits
    // there raise no file event where credgate watches, so only SIGHUP can
    // make it read them.
    let real_dir = files.dir.path().join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("credgate.yaml");
    std::fs::write(&real, files.config_text(&scopes(port, &["/v1/**"], false))).unwrap();
    std::os::unix::fs::symlink(&real, &files.config_path).unwrap();
    let d = files.serve(&[("API_TOKEN", &secret)]).await;

    let task = d.start_task(&["api"]).await;
    assert_eq!(status(&d, &task, port, "/v1/a").await, 200);
    assert_eq!(status(&d, &task, port, "/v2/report").await, 403);
    let refused = start_reports_task(&d).await;
    refused.expect_code(1);
    assert!(refused.stderr.contains("reports"), "{refused:?}");
    assert_eq!(upstream.received().len(), 1);

    std::fs::write(
        &real,
        d.files
            .config_text(&scopes(port, &["/v1/**", "/v2/**"], true)),
    )
    .unwrap();
    let mark = d.serve.stderr().len();
    d.serve.signal(Signal::SIGHUP);
    let said = d
        .serve
        .wait_stderr(mark, "configuration reloaded (SIGHUP)")
        .await
        .unwrap_or_else(|e| panic!("no reload on SIGHUP:\n{e}"));
    assert!(!said.contains("file change"), "{said}");

    // The running task gets the new rule, a new task the new scope.
    assert_eq!(status(&d, &task, port, "/v2/report").await, 200);
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].path_and_query, "/v2/report");
    assert_eq!(
        received[1].header("authorization"),
        [format!("Bearer {secret}").as_str()]
    );
    start_reports_task(&d).await.expect_code(0);
    assert!(!d.log_text().contains(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_reloads_the_configuration() {
    let secret = test_secret();
    let files = DaemonFiles::new();
    let upstream = files.upstream("localhost", ok_handler()).await;
    let port = upstream.port();
    files.write_config(&scopes(port, &["/v1/**"], false));
    let d = files.serve(&[("API_TOKEN", &secret)]).await;
    let task = d.start_task(&["api"]).await;
    assert_eq!(status(&d, &task, port, "/v2/report").await, 403);
    assert!(upstream.received().is_empty());

    // Written in place…
    let mark = d.serve.stderr().len();
    d.files
        .write_config(&scopes(port, &["/v1/**", "/v2/**"], false));
    d.serve
        .wait_stderr(mark, "configuration reloaded (file change)")
        .await
        .unwrap_or_else(|e| panic!("no reload on a file change:\n{e}"));
    assert_eq!(status(&d, &task, port, "/v2/report").await, 200);
    assert_eq!(upstream.received().len(), 1);

    // …and replaced by a rename, as editors and config management do.
    let staged = d.files.dir.path().join(".credgate.yaml.new");
    std::fs::write(
        &staged,
        d.files
            .config_text(&scopes(port, &["/v1/**", "/v2/**", "/v3/**"], false)),
    )
    .unwrap();
    std::fs::rename(&staged, &d.files.config_path).unwrap();
    eventually(&d, &task, port, "/v3/report", 200).await;
    let received = upstream.received();
    assert_eq!(received.last().unwrap().path_and_query, "/v3/report");
    assert_eq!(
        received.last().unwrap().header("authorization"),
        [format!("Bearer {secret}").as_str()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_rejected_and_the_running_one_stays() {
    let secret = test_secret();
    let files = DaemonFiles::new();
    let upstream = files.upstream("localhost", ok_handler()).await;
    let port = upstream.port();
    files.write_config(&scopes(port, &["/v1/**"], false));
    let mut d = files.serve(&[("API_TOKEN", &secret)]).await;
    let task = d.start_task(&["api"]).await;
    assert_eq!(status(&d, &task, port, "/v1/a").await, 200);

    // Two problems: an unknown field and a path that is not a path.
    let broken = format!(
        "{}bogus_field: 1\n",
        d.files.config_text(&scopes(port, &["v2/**"], true))
    );
    let mark = d.serve.stderr().len();
    std::fs::write(&d.files.config_path, &broken).unwrap();
    let said = d
        .serve
        .wait_stderr(mark, "configuration rejected (file change)")
        .await
        .unwrap_or_else(|e| panic!("the file change was not reported:\n{e}"));
    for words in [
        "bogus_field",
        "scopes.api[0].paths[0]",
        "running configuration stays",
    ] {
        assert!(said.contains(words), "{words:?} missing:\n{said}");
    }
    let mark = d.serve.stderr().len();
    d.serve.signal(Signal::SIGHUP);
    let said = d
        .serve
        .wait_stderr(mark, "configuration rejected (SIGHUP)")
        .await
        .unwrap_or_else(|e| panic!("the SIGHUP reload was not reported:\n{e}"));
    assert!(said.contains("bogus_field"), "{said}");
    assert!(!said.contains("configuration reloaded"), "{said}");

    // The old configuration still serves: same rules, same credential, and
    // neither the broken rule nor the broken file's new scope exists.
    assert!(d.serve.wait_exit(std::time::Duration::ZERO).await.is_none());
    assert_eq!(status(&d, &task, port, "/v1/b").await, 200);
    assert_eq!(status(&d, &task, port, "/v2/b").await, 403);
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[1].header("authorization"),
        [format!("Bearer {secret}").as_str()]
    );
    start_reports_task(&d).await.expect_code(1);
    let fresh = d.start_task(&["api"]).await;
    assert_eq!(status(&d, &fresh, port, "/v1/c").await, 200);

    // A corrected file is taken again.
    let mark = d.serve.stderr().len();
    d.files
        .write_config(&scopes(port, &["/v1/**", "/v2/**"], false));
    d.serve
        .wait_stderr(mark, "configuration reloaded (file change)")
        .await
        .unwrap_or_else(|e| panic!("the corrected file was not loaded:\n{e}"));
    assert_eq!(status(&d, &task, port, "/v2/b").await, 200);
}

/// A supervisor that reloads as soon as `serve` says it is up must get a
/// reload, not a dead proxy: the handlers have to be in place before the
/// announcement. Tried a few times, since the window is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_right_after_the_announcement_reloads() {
    let files = DaemonFiles::new();
    files.write_config(&scopes(9, &["/v1/**"], false));
    let secret = test_secret();
    for attempt in 0..5 {
        let config = files.config_path.clone();
        let dir = files.dir.path().to_owned();
        let secret = secret.clone();
        let outcome =
            tokio::task::spawn_blocking(move || sighup_on_announcement(&config, &dir, &secret))
                .await
                .unwrap();
        if let Err(what) = outcome {
            panic!("attempt {attempt}: {what}");
        }
    }
}

/// Starts `serve`, sends SIGHUP the moment the announcement is read, and
/// reports whether serve reloaded (and is still running).
fn sighup_on_announcement(
    config: &std::path::Path,
    dir: &std::path::Path,
    secret: &str,
) -> Result<(), String> {
    use std::io::BufRead;
    use std::process::Stdio;
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut cmd = credgate(["serve", "--config"]);
    cmd.arg(config)
        .current_dir(dir)
        .env("API_TOKEN", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Killed(cmd.spawn().expect("serve starts"));
    let stderr = child.0.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines
        .recv_timeout(WAIT_LIMIT)
        .map_err(|_| "no announcement".to_owned())?;
    if !first.starts_with("credgate: proxy on ") {
        return Err(format!("unexpected first line: {first}"));
    }
    send_signal(child.0.id(), Signal::SIGHUP);
    loop {
        match lines.recv_timeout(WAIT_LIMIT) {
            Ok(line) if line.contains("configuration reloaded (SIGHUP)") => break,
            Ok(_) => {}
            Err(_) => {
                let status = child.0.try_wait();
                return Err(format!("no reload after SIGHUP; serve: {status:?}"));
            }
        }
    }
    match child.0.try_wait() {
        Ok(None) => Ok(()),
        other => Err(format!("serve stopped: {other:?}")),
    }
}
