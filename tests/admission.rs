//! The admission phases run for every way in. A phase added to the gateway
//! sees, and can deny, an absolute-form request, a CONNECT (intercepted or
//! blind), and each request inside an intercepted tunnel; a CONNECT it
//! denies costs no DNS lookup.

mod support;

use std::sync::{Arc, Mutex};

use credgate::policy::ScopeRule;
use credgate::proxy::{AdmissionPhase, Ask, Deny};
use credgate::reason::Reason;
use credgate::task::Task;
use support::*;

/// Writes down every ask it sees, and holds back everything for one host.
struct Recorder {
    seen: Mutex<Vec<String>>,
    held: &'static str,
}

impl AdmissionPhase for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn check<'a>(
        &'a self,
        task: &'a Task,
        ask: Ask<'a>,
        rule: &'a ScopeRule,
    ) -> credgate::BoxFuture<'a, Result<(), Deny>> {
        Box::pin(async move {
            let what = match ask {
                Ask::Request(t) => format!(
                    "request {} {}:{}{} by {}",
                    t.method, t.host, t.port, t.path, rule.id
                ),
                Ask::Tunnel { host, port } => format!("tunnel {host}:{port} by {}", rule.id),
                _ => "something new".to_string(),
            };
            assert_eq!(task.agent, "test-agent");
            self.seen.lock().unwrap().push(what);
            if ask.host() == self.held {
                return Err(Deny::new(Reason::DeniedByRule, "held by the test phase"));
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_added_to_the_gateway_runs_for_every_way_in() {
    let ca = Arc::new(credgate::tls::CertificateAuthority::generate().unwrap());
    let tls = Upstream::start_tls(ca.clone(), "api.test", ok_handler()).await;
    let plain = Upstream::start_plain(ok_handler()).await;
    let (t, p) = (tls.port(), plain.port());
    let config = format!(
        r#"
scopes:
  s:
    - {{ host: api.test, port: {t}, allow_private: true }}
    - {{ host: api.test, port: {p}, schemes: [http], allow_private: true }}
    - {{ host: blind.test, port: {t}, tunnel: true, allow_private: true }}
    - {{ host: held.test, port: {t}, allow_private: true }}
    - {{ host: held.test, port: {p}, schemes: [http], allow_private: true }}
"#
    );
    let env = Env::start_trusting(ca, &config, &[]).await;
    for host in ["api.test", "blind.test", "held.test"] {
        env.resolver.map(host, "127.0.0.1");
    }
    let phase = Arc::new(Recorder {
        seen: Mutex::default(),
        held: "held.test",
    });
    env.gateway().add_admission_phase(phase.clone());
    let (id, token) = env.start_task(&["s"]);
    let proxy = env.proxy_url(&id, &token);
    let get = |url: String| curl_via(&proxy, &env.ca_cert, &url);

    // Absolute-form, then CONNECT and the request inside.
    let (status, _) = curl_status(&run_cli(get(format!("http://api.test:{p}/v1/plain"))).await);
    assert_eq!(status, 200);
    let (status, _) = curl_status(&run_cli(get(format!("https://api.test:{t}/v1/inner"))).await);
    assert_eq!(status, 200);
    // A blind tunnel is admitted like any CONNECT (its TLS then fails: the
    // upstream's certificate is for api.test, which does not matter here).
    let blind = run_cli(get(format!("https://blind.test:{t}/"))).await;
    assert_eq!(curl_status(&blind).0, 200, "the CONNECT was answered 200");

    // Held: refused as the phase said, before any lookup of the host.
    let lookups = env.resolver.count();
    let (status, _) = curl_status(&run_cli(get(format!("https://held.test:{t}/x"))).await);
    assert_eq!(status, 403);
    let (status, body) = curl_status(&run_cli(get(format!("http://held.test:{p}/x"))).await);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("held by the test phase"), "{body}");
    assert_eq!(env.resolver.count(), lookups, "a held ask caused a lookup");

    let seen = phase.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            format!("request GET api.test:{p}/v1/plain by s[1]"),
            format!("tunnel api.test:{t} by s[0]"),
            format!("request GET api.test:{t}/v1/inner by s[0]"),
            format!("tunnel blind.test:{t} by s[2]"),
            format!("tunnel held.test:{t} by s[3]"),
            format!("request GET held.test:{p}/x by s[4]"),
        ]
    );
    // Nothing held reached an upstream, and the records say why.
    assert_eq!(plain.received().len(), 1);
    assert_eq!(tls.received().len(), 1);
    let held: Vec<_> = env
        .request_records()
        .await
        .into_iter()
        .filter(|r| r.host.as_deref() == Some("held.test"))
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    for r in held {
        assert_eq!(r.reason, Some(Reason::DeniedByRule), "{r:?}");
        assert_eq!(r.message.as_deref(), Some("held by the test phase"));
        assert!(r.upstream.is_none());
    }
    env.stop().await;
}
