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
use credgate::reason::Reason;
use support::verdaccio::{Verdaccio, USER};
use support::*;

const HOST: &str = "registry.test";
const UNSCOPED: &str = "credgate-hello";
const SCOPED: &str = "@acme/leftpad";

/// How long one npm command may take: it sends a few small requests.
const NPM_LIMIT: Duration = Duration::from_secs(60);

/// The npm scopes: `npm` reads packuments and tarballs, `npm-publish` looks
/// packages up and publishes them (a PUT of the packument); both keep the
/// scoped package name's `%2f` as sent.
fn npm_scopes(port: u16) -> String {
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
  npm-publish:
    - host: {HOST}
      port: {port}
      methods: [GET, PUT]
      paths: ["/*"]
      encoded_slash: keep
      credential: registry
      allow_private: true
"#
    )
}

/// A project directory with `manifest` as its package.json, whose `.npmrc`
/// points at the registry with the agent's own (fake) token and no
/// retries; npm's cache and an empty user config lie beside it, outside
/// what `npm publish` packs.
struct Project {
    dir: TempDir,
}

impl Project {
    fn new(port: u16, agent_token: &str, manifest: &serde_json::Value) -> Project {
        let project = Project {
            dir: TempDir::new(),
        };
        std::fs::create_dir(project.path()).unwrap();
        std::fs::write(project.path().join("package.json"), manifest.to_string()).unwrap();
        let npmrc = format!(
            "registry=https://{HOST}:{port}/\n\
             //{HOST}:{port}/:_authToken={agent_token}\n\
             fetch-retries=0\n\
             fetch-timeout=20000\n\
             audit=false\n\
             fund=false\n\
             update-notifier=false\n\
             cache={cache}\n",
            cache = project.dir.path().join("npm-cache").display(),
        );
        std::fs::write(project.path().join(".npmrc"), npmrc).unwrap();
        // No user config: nothing from the machine's ~/.npmrc.
        std::fs::write(project.user_config(), "").unwrap();
        project
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("project")
    }

    fn user_config(&self) -> std::path::PathBuf {
        self.dir.path().join("user.npmrc")
    }
}

/// A registry for [`HOST`] and a credgate whose `registry` credential is
/// the registry's token, with [`npm_scopes`].
async fn setup() -> (Verdaccio, Env) {
    let registry = Verdaccio::start(HOST).await;
    let env = Env::start_trusting(
        registry.tls.authority(),
        &npm_scopes(registry.port),
        &[("NPM_TOKEN", registry.token())],
    )
    .await;
    env.resolver.map(HOST, "127.0.0.1");
    (registry, env)
}

/// `credgate run --scope SCOPE -- npm ARGS…` in `project`, bounded by
/// [`NPM_LIMIT`]; what it did and how long it took.
async fn npm_under_run(
    env: &Env,
    project: &Project,
    scope: &str,
    args: &[&str],
) -> (Outcome, Duration) {
    let command: Vec<&str> = std::iter::once("npm").chain(args.iter().copied()).collect();
    let mut cmd = env.run_cmd(scope, &command);
    cmd.current_dir(project.path())
        .env("npm_config_userconfig", project.user_config());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || run_bounded(cmd, NPM_LIMIT))
        .await
        .unwrap();
    (out, started.elapsed())
}

fn request_records(records: &[DecisionRecord]) -> Vec<&DecisionRecord> {
    records
        .iter()
        .filter(|r| r.event == Event::Request && r.method.as_deref() != Some("CONNECT"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_install_gets_the_registry_token_from_credgate() {
    let (registry, env) = setup().await;
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

    let manifest =
        serde_json::json!({ "name": "agent-project", "version": "0.0.0", "private": true });
    let project = Project::new(registry.port, &agent_token, &manifest);
    let (out, took) = npm_under_run(&env, &project, "npm", &["install", UNSCOPED, SCOPED]).await;
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

/// `npm publish` looks the package up (GET) and sends the packument,
/// tarball inside, as one PUT. Under the read-only scope the PUT is refused
/// (no rule that allows a PUT keeps its `%2f`: 400 `path_rejected`, which
/// npm shows) and never sent; under a scope that allows it the package
/// arrives, published with the registry's token in place of the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_publish_is_refused_without_a_scope_for_it_and_carries_the_token_with_one() {
    let (registry, env) = setup().await;
    let agent_token = format!("test-secret-agent-{}", random_hex(8));
    let name = "@acme/rightpad";
    let manifest = serde_json::json!({ "name": name, "version": "1.0.0", "main": "index.js" });
    let project = Project::new(registry.port, &agent_token, &manifest);
    std::fs::write(
        project.path().join("index.js"),
        "module.exports = (s, n) => s.padEnd(n);\n",
    )
    .unwrap();
    let target = "/@acme%2frightpad";
    let is_put = |r: &DecisionRecord| r.method.as_deref() == Some("PUT");
    registry.settle().await;
    let (arrived_before, logged_before) = (registry.arrived().len(), registry.logged().len());

    let (refused, _) = npm_under_run(&env, &project, "npm", &["publish"]).await;
    let shown = refused.all().replace(registry.token(), "<registry token>");
    assert_ne!(refused.code, Some(0), "{shown}");
    // npm shows the `error` field of credgate's answer (the reason code);
    // the record says why in full.
    let reason = format!(
        "400 Bad Request - PUT https://{HOST}:{}{target} - path_rejected",
        registry.port
    );
    assert!(refused.all().contains(&reason), "{shown}");
    let records = env.records().await;
    let first_run = records.len();
    let requests = request_records(&records);
    let denied: Vec<_> = requests
        .iter()
        .filter(|r| r.decision == Some(Verdict::Deny))
        .collect();
    assert_eq!(denied.len(), 1, "{requests:#?}");
    assert!(is_put(denied[0]), "{denied:#?}");
    assert_eq!(denied[0].reason, Some(Reason::PathRejected));
    assert_eq!(denied[0].path.as_deref(), Some(target));
    let message = denied[0].message.as_deref().unwrap_or_default();
    assert!(
        message.contains("no rule of scope npm allows PUT"),
        "{message}"
    );
    assert!(!registry.stores(name));

    let (published, took) = npm_under_run(&env, &project, "npm-publish", &["publish"]).await;
    let shown = published
        .all()
        .replace(registry.token(), "<registry token>");
    assert_eq!(
        published.code,
        Some(0),
        "npm publish failed in {took:?}:\n{shown}"
    );
    eprintln!("npm publish through credgate took {took:?}");
    assert!(registry.stores(name), "{shown}");
    assert!(!published.all().contains(registry.token()));
    let records = env.records().await;
    let requests = request_records(&records[first_run..]);
    for r in &requests {
        assert_eq!(r.decision, Some(Verdict::Allow), "{r:?}");
        assert_eq!(r.path.as_deref(), Some(target));
        assert_eq!(
            r.credential.as_ref().map(|c| c.name.as_str()),
            Some("registry")
        );
        assert!(r.stripped.iter().any(|h| h == "authorization"), "{r:?}");
    }
    assert_eq!(
        requests.iter().filter(|r| is_put(r)).count(),
        1,
        "{requests:#?}"
    );

    // The registry saw one PUT, the allowed one, authenticated as the
    // token's user; of the refused publish only its lookups arrived.
    registry.settle().await;
    let arrived = registry.arrived().split_off(arrived_before);
    assert!(arrived.iter().all(|a| a.url == target), "{arrived:#?}");
    assert_eq!(arrived.iter().filter(|a| a.method == "PUT").count(), 1);
    let logged = registry.logged().split_off(logged_before);
    assert!(
        logged
            .iter()
            .any(|l| l.method == "PUT" && l.user.as_deref() == Some(USER) && l.status == 201),
        "{logged:#?}"
    );
    let log = env.log_text().await;
    assert!(!log.contains(registry.token()), "token in the decision log");
    assert!(
        !log.contains(&agent_token),
        "agent's token in the decision log"
    );
    env.stop().await;
}
