//! npm through `credgate run` against a real registry: verdaccio over https
//! for `registry.test` (a name only credgate's resolver knows), offline,
//! closed to anyone without a token. The project's `.npmrc` names the
//! registry but holds only a fake token of the agent's; credgate strips it,
//! injects the registry's, and forwards the scoped package's `%2f` exactly
//! as npm sent it (`encoded_slash: keep`).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use credgate::audit::{DecisionRecord, Event, Verdict};
use support::verdaccio::{Verdaccio, USER};
use support::*;

const HOST: &str = "registry.test";
const UNSCOPED: &str = "credgate-hello";
const SCOPED: &str = "@acme/leftpad";

/// How long the whole install may take: it fetches four small files.
const INSTALL_LIMIT: Duration = Duration::from_secs(60);

/// The npm scope: reads of packuments and tarballs, with the scoped
/// package name's `%2f` kept as sent.
fn npm_scope(port: u16) -> String {
    format!(
        r#"
credentials:
  registry:
    static: {{ env: NPM_TOKEN }}
scopes:
  npm:
    - host: {HOST}
      port: {port}
      methods: [GET]
      paths: ["/*", "/*/-/*.tgz", "/@acme/*/-/*.tgz"]
      encoded_slash: keep
      credential: registry
      allow_private: true
"#
    )
}

/// A project whose `.npmrc` points at the registry with the agent's own
/// (fake) token and no retries, in a directory of its own.
fn project(port: u16, agent_token: &str) -> TempDir {
    let dir = TempDir::new();
    let manifest =
        serde_json::json!({ "name": "agent-project", "version": "0.0.0", "private": true });
    std::fs::write(dir.path().join("package.json"), manifest.to_string()).unwrap();
    let npmrc = format!(
        "registry=https://{HOST}:{port}/\n\
         //{HOST}:{port}/:_authToken={agent_token}\n\
         fetch-retries=0\n\
         fetch-timeout=20000\n\
         audit=false\n\
         fund=false\n\
         update-notifier=false\n\
         cache={cache}\n",
        cache = dir.path().join("npm-cache").display(),
    );
    std::fs::write(dir.path().join(".npmrc"), npmrc).unwrap();
    // No user config: nothing from the machine's ~/.npmrc.
    std::fs::write(dir.path().join("user.npmrc"), "").unwrap();
    dir
}

fn request_records(records: &[DecisionRecord]) -> Vec<&DecisionRecord> {
    records
        .iter()
        .filter(|r| r.event == Event::Request && r.method.as_deref() != Some("CONNECT"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_install_gets_the_registry_token_from_credgate() {
    let registry = Verdaccio::start(HOST).await;
    registry.publish(UNSCOPED, "1.0.0", "module.exports = 'hello';\n");
    registry.publish(
        SCOPED,
        "1.0.0",
        "module.exports = (s, n) => s.padStart(n);\n",
    );
    let agent_token = format!("test-secret-agent-{}", random_hex(8));
    // Straight to the registry, a package needs the registry's token: none
    // or the agent's is refused.
    let packument = format!("/{UNSCOPED}");
    assert_eq!(registry.status_direct(&packument, None), 401);
    assert_eq!(
        registry.status_direct(&packument, Some(&format!("Bearer {agent_token}"))),
        401
    );
    registry.settle().await;
    let (arrived_before, logged_before) = (registry.arrived().len(), registry.logged().len());

    let env = Env::start_trusting(
        registry.tls.authority(),
        &npm_scope(registry.port),
        &[("NPM_TOKEN", registry.token())],
    )
    .await;
    env.resolver.map(HOST, "127.0.0.1");
    let project = project(registry.port, &agent_token);
    let mut cmd = env.run_cmd("npm", &["npm", "install", UNSCOPED, SCOPED]);
    cmd.current_dir(project.path())
        .env("npm_config_userconfig", project.path().join("user.npmrc"));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || run_bounded(cmd, INSTALL_LIMIT))
        .await
        .unwrap();
    let took = started.elapsed();
    let shown = out.all().replace(registry.token(), "<registry token>");
    assert_eq!(
        out.code,
        Some(0),
        "npm install failed in {took:?}:\n{shown}"
    );
    eprintln!("npm install through credgate took {took:?}");

    for name in [UNSCOPED, SCOPED] {
        let manifest = project
            .path()
            .join("node_modules")
            .join(name)
            .join("package.json");
        assert!(manifest.is_file(), "{name} not installed:\n{shown}");
    }
    assert!(
        !out.all().contains(registry.token()),
        "the token reached the agent"
    );
    assert!(!out.all().contains("cgt_"), "run printed the task token");

    // One decision record per request, each allowed with the registry
    // credential in place of the agent's Authorization.
    let records = env.records().await;
    let requests = request_records(&records);
    let expected: BTreeSet<(String, String)> = [
        format!("/{UNSCOPED}"),
        format!("/{UNSCOPED}/-/{UNSCOPED}-1.0.0.tgz"),
        "/@acme%2fleftpad".to_string(),
        "/@acme/leftpad/-/leftpad-1.0.0.tgz".to_string(),
    ]
    .into_iter()
    .map(|path| ("GET".to_string(), path))
    .collect();
    let recorded: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            (
                r.method.as_deref().unwrap_or("").to_owned(),
                r.path.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        recorded.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{requests:#?}"
    );
    assert_eq!(recorded.len(), expected.len(), "{requests:#?}");
    for r in &requests {
        assert_eq!(r.host.as_deref(), Some(HOST));
        assert_eq!(r.decision, Some(Verdict::Allow), "{r:?}");
        assert_eq!(
            r.credential.as_ref().map(|c| c.name.as_str()),
            Some("registry")
        );
        assert!(r.stripped.iter().any(|h| h == "authorization"), "{r:?}");
    }
    let denied: Vec<_> = records
        .iter()
        .filter(|r| r.decision == Some(Verdict::Deny))
        .collect();
    assert!(denied.is_empty(), "denied: {denied:#?}");

    // The registry received exactly those requests, with the target npm
    // sent, each with an Authorization that authenticated it as the user
    // whose token credgate holds; nothing went to an anonymous request.
    registry.settle().await;
    let arrived = registry.arrived().split_off(arrived_before);
    let logged = registry.logged().split_off(logged_before);
    let mut at_origin: Vec<(String, String)> = arrived
        .iter()
        .map(|a| (a.method.clone(), a.url.clone()))
        .collect();
    let mut sent = recorded.clone();
    at_origin.sort();
    sent.sort();
    assert_eq!(at_origin, sent, "{arrived:#?}");
    for a in &arrived {
        assert!(a.authorization, "{a:?}");
        assert!(
            logged
                .iter()
                .any(|l| l.method == a.method && l.url == a.url && l.user.as_deref() == Some(USER)),
            "{a:?} not answered as {USER}: {logged:#?}"
        );
    }
    for l in &logged {
        assert_eq!(l.status, 200, "{l:?}");
        match &l.user {
            Some(user) => assert_eq!(user, USER, "{l:?}"),
            None => assert_eq!(l.bytes_out, 0, "served anonymously: {l:?}"),
        }
    }

    let log = env.log_text().await;
    assert!(!log.contains(registry.token()), "token in the decision log");
    assert!(
        !log.contains(&agent_token),
        "agent's token in the decision log"
    );
    assert!(
        !registry.output().contains(&agent_token),
        "the agent's token reached the registry"
    );
    env.stop().await;
}
