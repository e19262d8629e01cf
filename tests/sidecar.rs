//! Sidecar mode on the real binary: with `ambient_task` in the
//! configuration, a loopback client that sends no `Proxy-Authorization` is
//! served under the ambient task, over plain HTTP and CONNECT alike; a
//! client that presents a task token is that task and nothing more.

mod support;

use credgate::audit::{DecisionRecord, Event, Verdict};
use nix::sys::signal::Signal;
use support::*;

/// `reports` (the ambient task's scope) may GET `/v1/**` over http or
/// https with the `api` credential; plain-http requests go upstream over
/// TLS. `other` may GET `/other/**` with the `other-api` credential.
fn sidecar_config(port: u16) -> String {
    format!(
        r#"
credentials:
  api:
    static: {{ env: API_TOKEN }}
  other-api:
    static: {{ env: OTHER_TOKEN }}
scopes:
  reports:
    - host: localhost
      port: {port}
      schemes: [http, https]
      methods: [GET]
      paths: ["/v1/**"]
      credential: api
      allow_private: true
      upstream_tls: true
  other:
    - host: localhost
      port: {port}
      methods: [GET]
      paths: ["/other/**"]
      credential: other-api
      allow_private: true
ambient_task:
  agent: report-writer
  scopes: [reports]
  labels: {{ ticket: OPS-1234 }}
  ttl: 1h
"#
    )
}

struct Sidecar {
    d: Daemon,
    upstream: Upstream,
    api_secret: String,
    other_secret: String,
}

async fn sidecar() -> Sidecar {
    let api_secret = test_secret();
    let other_secret = test_secret();
    let files = DaemonFiles::new();
    let upstream = files.upstream("localhost", ok_handler()).await;
    files.write_config(&sidecar_config(upstream.port()));
    let d = files
        .serve(&[("API_TOKEN", &api_secret), ("OTHER_TOKEN", &other_secret)])
        .await;
    Sidecar {
        d,
        upstream,
        api_secret,
        other_secret,
    }
}

impl Sidecar {
    /// `GET {scheme}://localhost:PORT{path}` through `proxy_url`.
    async fn get(&self, proxy_url: &str, scheme: &str, path: &str) -> Outcome {
        let url = format!("{scheme}://localhost:{}{path}", self.upstream.port());
        run_cli(curl_via(proxy_url, &self.d.files.ca_cert, &url)).await
    }

    /// The proxy URL of the pod: no userinfo, no token.
    fn bare_proxy(&self) -> String {
        format!("http://{}", self.d.serve.proxy)
    }

    /// The ambient task's id, from `task list --json`.
    async fn ambient_id(&self) -> String {
        let out = run_cli(self.d.task_cmd(&["list", "--json"])).await;
        out.expect_code(0);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        let ambient: Vec<_> = tasks.iter().filter(|t| t["ambient"] == true).collect();
        assert_eq!(ambient.len(), 1, "{tasks:?}");
        assert_eq!(ambient[0]["agent"], "report-writer");
        assert_eq!(ambient[0]["state"], "active");
        ambient[0]["id"].as_str().unwrap().to_owned()
    }

    /// The record of the GET of `path`.
    async fn record_of(&self, path: &str) -> DecisionRecord {
        let mut found = self
            .d
            .wait_records(1, |r| {
                r.method.as_deref() == Some("GET") && r.path.as_deref() == Some(path)
            })
            .await;
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    }

    fn assert_clean(&self, outputs: &[&Outcome]) {
        let log = self.d.log_text();
        for secret in [&self.api_secret, &self.other_secret] {
            assert!(!log.contains(secret.as_str()), "a credential in the log");
            for out in outputs {
                assert!(
                    !out.all().contains(secret.as_str()),
                    "a credential reached the agent"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_client_without_a_token_is_served_under_the_ambient_task() {
    let mut s = sidecar().await;
    let ambient = s.ambient_id().await;
    let proxy = s.bare_proxy();

    let plain = s.get(&proxy, "http", "/v1/plain").await;
    assert_eq!(
        curl_status(&plain),
        (200, "ok from upstream".into()),
        "{plain:?}"
    );
    let tls = s.get(&proxy, "https", "/v1/tls").await;
    assert_eq!(
        curl_status(&tls),
        (200, "ok from upstream".into()),
        "{tls:?}"
    );
    let denied = s.get(&proxy, "https", "/admin").await;
    assert_eq!(curl_status(&denied).0, 403, "{denied:?}");

    let received = s.upstream.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(
        paths,
        ["/v1/plain", "/v1/tls"],
        "the denied request went nowhere"
    );
    for r in &received {
        assert_eq!(
            r.header("authorization"),
            [format!("Bearer {}", s.api_secret).as_str()]
        );
    }

    for (path, scheme, verdict) in [
        ("/v1/plain", "http", Verdict::Allow),
        ("/v1/tls", "https", Verdict::Allow),
        ("/admin", "https", Verdict::Deny),
    ] {
        let r = s.record_of(path).await;
        assert_eq!(r.task.as_deref(), Some(ambient.as_str()), "{r:?}");
        assert_eq!(r.agent.as_deref(), Some("report-writer"), "{r:?}");
        assert_eq!(r.labels.get("ticket").map(String::as_str), Some("OPS-1234"));
        assert_eq!(r.scheme.as_deref(), Some(scheme), "{r:?}");
        assert_eq!(r.decision, Some(verdict), "{r:?}");
    }
    let connects =
        s.d.wait_records(2, |r| r.method.as_deref() == Some("CONNECT"))
            .await;
    assert!(connects
        .iter()
        .all(|r| r.agent.as_deref() == Some("report-writer")));
    let started =
        s.d.wait_records(1, |r| {
            r.event == Event::TaskStart && r.task.as_deref() == Some(ambient.as_str())
        })
        .await;
    assert_eq!(started[0].agent.as_deref(), Some("report-writer"));
    s.assert_clean(&[&plain, &tls, &denied]);

    // The ambient task lives as long as the pod: it ends at shutdown.
    s.d.serve.signal(Signal::SIGTERM);
    let status = s.d.serve.wait_exit(WAIT_LIMIT).await.expect("serve exits");
    assert_eq!(status.code(), Some(0));
    let ended: Vec<_> =
        s.d.records()
            .into_iter()
            .filter(|r| r.event == Event::TaskEnd && r.task.as_deref() == Some(ambient.as_str()))
            .collect();
    assert_eq!(ended.len(), 1, "{}", s.d.log_text());
    assert_eq!(ended[0].message.as_deref(), Some("task ended at shutdown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_token_is_used_instead_of_the_ambient_task() {
    let s = sidecar().await;
    let ambient = s.ambient_id().await;
    let task = s.d.start_task(&["other"]).await;

    let own = s.get(&task.proxy_url, "https", "/other/x").await;
    assert_eq!(
        curl_status(&own),
        (200, "ok from upstream".into()),
        "{own:?}"
    );
    let received = s.upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("authorization"),
        [format!("Bearer {}", s.other_secret).as_str()],
        "the task's credential, not the ambient one"
    );
    let r = s.record_of("/other/x").await;
    assert_eq!(r.task.as_deref(), Some(task.id.as_str()));
    assert_eq!(r.agent.as_deref(), Some("cli-agent"));
    assert_ne!(r.task.as_deref(), Some(ambient.as_str()));

    // The ambient task's scope does not come on top of the task's own.
    let ambient_path = s.get(&task.proxy_url, "https", "/v1/ambient-only").await;
    assert_eq!(curl_status(&ambient_path).0, 403, "{ambient_path:?}");
    let r = s.record_of("/v1/ambient-only").await;
    assert_eq!(r.task.as_deref(), Some(task.id.as_str()));
    assert_eq!(r.decision, Some(Verdict::Deny));

    // A token that does not work is refused, never served as the ambient task.
    let forged = format!(
        "http://{}:cgt_{}@{}",
        task.id,
        random_hex(16),
        s.d.serve.proxy
    );
    let bad = s.get(&forged, "https", "/v1/forged").await;
    assert_eq!(curl_status(&bad).0, 407, "{bad:?}");
    run_cli(s.d.task_cmd(&["end", &task.id]))
        .await
        .expect_code(0);
    let after_end = s.get(&task.proxy_url, "http", "/v1/after-end").await;
    assert_eq!(curl_status(&after_end).0, 407, "{after_end:?}");
    assert_eq!(s.upstream.received().len(), 1, "nothing more went upstream");

    s.assert_clean(&[&own, &ambient_path, &bad, &after_end]);
    assert!(!s.d.log_text().contains(&task.token));
}

/// Taking `ambient_task` out of the configuration turns sidecar mode off:
/// from the reload on, a client without a token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_ambient_task_on_reload_stops_tokenless_access() {
    let s = sidecar().await;
    let proxy = s.bare_proxy();
    let before = s.get(&proxy, "https", "/v1/before").await;
    assert_eq!(curl_status(&before).0, 200, "{before:?}");

    let full = sidecar_config(s.upstream.port());
    let without = &full[..full.find("ambient_task:").unwrap()];
    let mark = s.d.serve.stderr().len();
    s.d.files.write_config(without);
    s.d.serve
        .wait_stderr(mark, "configuration reloaded")
        .await
        .unwrap_or_else(|e| panic!("no reload:\n{e}"));

    let after = s.get(&proxy, "https", "/v1/after").await;
    assert_eq!(curl_status(&after).0, 407, "{after:?}");
    let paths: Vec<String> = s
        .upstream
        .received()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(paths, ["/v1/before"]);
}
