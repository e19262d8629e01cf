//! `credgate inject`, against the reviewed example: the example's agent with
//! credgate taken out, injected again, is the example's Deployment; the
//! output of every workload kind validates against the Kubernetes 1.29
//! schemas (`kubernetes-validate`, installed by tests/run.sh); injecting
//! twice changes nothing; what is not a workload passes through with a note;
//! a pod that cannot be made safe is refused and nothing is written.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_yaml::{Mapping, Value};
use support::kube::{self, list, text};
use support::*;

const KUBERNETES_VERSION: &str = "1.29.0";

/// The base's rendered objects and its Deployment.
fn base() -> (Vec<Value>, Value) {
    let objects = kube::objects(&kube::render(&kube::root().join("base")));
    let deployment = kube::only(&objects, "Deployment").clone();
    (objects, deployment)
}

/// The example's Deployment without what `credgate inject` adds: its
/// containers, its volumes, the agent's proxy and CA variables and CA
/// mount, and the annotation.
fn without_credgate(deployment: &Value) -> Value {
    let mut out = deployment.clone();
    let template = &mut out["spec"]["template"];
    let annotations = template["metadata"]["annotations"]
        .as_mapping_mut()
        .unwrap();
    annotations.remove("credgate.dev/injected");
    if annotations.is_empty() {
        template["metadata"]
            .as_mapping_mut()
            .unwrap()
            .remove("annotations");
    }
    let spec = template["spec"].as_mapping_mut().unwrap();
    let names = |v: &Value| text(&v["name"], "name").to_owned();
    let init: Vec<Value> = list(&spec["initContainers"])
        .iter()
        .filter(|c| !["credgate-init", "credgate"].contains(&names(c).as_str()))
        .cloned()
        .collect();
    assert!(
        init.is_empty(),
        "the example has init containers of its own"
    );
    spec.remove("initContainers");
    let volumes: Vec<Value> = list(&spec["volumes"])
        .iter()
        .filter(|v| !names(v).starts_with("credgate-"))
        .cloned()
        .collect();
    spec.insert("volumes".into(), Value::Sequence(volumes));
    let proxy_env: Vec<String> = credgate::agent_env::agent_env("", "", "")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for container in spec["containers"].as_sequence_mut().unwrap() {
        let env: Vec<Value> = list(&container["env"])
            .iter()
            .filter(|e| !proxy_env.contains(&names(e)))
            .cloned()
            .collect();
        container["env"] = Value::Sequence(env);
        let mounts: Vec<Value> = list(&container["volumeMounts"])
            .iter()
            .filter(|m| names(m) != "credgate-ca-cert")
            .cloned()
            .collect();
        container["volumeMounts"] = Value::Sequence(mounts);
    }
    out
}

/// Lists whose order carries no meaning (variables, volumes, mounts) sorted
/// by name, so that two pods compare by what they say.
fn normalized(mut deployment: Value) -> Value {
    normalize_pod(&mut deployment["spec"]["template"]["spec"]);
    deployment
}

fn normalize_pod(spec: &mut Value) {
    fn sort_by_name(value: &mut Value) {
        if let Some(items) = value.as_sequence_mut() {
            items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
    }
    sort_by_name(&mut spec["volumes"]);
    for key in ["initContainers", "containers"] {
        if let Some(containers) = spec[key].as_sequence_mut() {
            for container in containers {
                sort_by_name(&mut container["env"]);
                sort_by_name(&mut container["volumeMounts"]);
            }
        }
    }
}

/// `credgate inject ARGS FILE`, with `input` in FILE.
fn inject(input: &str, args: &[&str]) -> Outcome {
    let dir = TempDir::new();
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, input).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_credgate"));
    cmd.arg("inject").args(args).arg(&file);
    run_bounded(cmd, COMMAND_LIMIT)
}

/// The flags that make `credgate inject` give the base's pod: its
/// ConfigMap's generated name and its token's audience.
fn base_flags(deployment: &Value) -> Vec<String> {
    let spec = &deployment["spec"]["template"]["spec"];
    let volume = |name: &str| {
        list(&spec["volumes"])
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let config_map = text(&volume("credgate-config")["configMap"]["name"], "name").to_owned();
    let audience = text(
        &volume("credgate-token")["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "audience",
    )
    .to_owned();
    vec![
        "--config-map".into(),
        config_map,
        "--token-audience".into(),
        audience,
    ]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap()
}

#[test]
fn injecting_the_bare_agent_gives_the_reviewed_example() {
    let (_, deployment) = base();
    let bare = without_credgate(&deployment);
    assert_ne!(bare, deployment);
    let out = inject(&yaml(&bare), &strs(&base_flags(&deployment)));
    assert_eq!(out.code, Some(0), "{out:?}");
    let injected = kube::objects(&out.stdout);
    assert_eq!(injected.len(), 1, "{out:?}");
    assert_eq!(
        normalized(injected[0].clone()),
        normalized(deployment),
        "credgate inject adds exactly what the example has"
    );
    // The example does not mount the API token: nothing to note.
    assert_eq!(out.stderr.trim(), "", "{out:?}");
}

#[test]
fn injecting_the_rendered_example_again_changes_nothing_and_passes_the_rest_through() {
    let (objects, deployment) = base();
    let rendered: String = objects.iter().map(yaml).collect::<Vec<_>>().join("---\n");
    let out = inject(&rendered, &strs(&base_flags(&deployment)));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(kube::objects(&out.stdout), objects);
    assert!(
        out.stderr
            .contains("(Deployment/agent): already injected, unchanged"),
        "{out:?}"
    );
    for kind in ["ServiceAccount", "NetworkPolicy", "ConfigMap"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(&format!("({kind}/")) && l.contains("not a workload")),
            "{kind}: {out:?}"
        );
    }
    // Read from stdin too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["inject", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml(&without_credgate(&deployment)).as_bytes())
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success(), "{piped:?}");
    let piped = kube::objects(&String::from_utf8(piped.stdout).unwrap());
    let init = list(&piped[0]["spec"]["template"]["spec"]["initContainers"]);
    assert_eq!(init.len(), 2);
}

/// The bare agent's pod template as every workload kind holds it.
fn every_kind(template: &Value) -> Vec<Value> {
    let parse = |text: &str| -> Value { serde_yaml::from_str(text).unwrap() };
    let with = |mut head: Value, path: &[&str]| -> Value {
        let mut at = &mut head;
        for key in path {
            at = &mut at[*key];
        }
        *at = template.clone();
        head
    };
    let selector = "selector: { matchLabels: { app.kubernetes.io/name: agent } }";
    let mut pod = template.clone();
    let pod_map = pod.as_mapping_mut().unwrap();
    let mut head = Mapping::new();
    head.insert("apiVersion".into(), "v1".into());
    head.insert("kind".into(), "Pod".into());
    let mut metadata = pod_map.remove("metadata").unwrap();
    metadata["name"] = "agent-pod".into();
    head.insert("metadata".into(), metadata);
    head.insert("spec".into(), pod_map.remove("spec").unwrap());
    let mut pod_spec_never = Value::Mapping(head);
    pod_spec_never["spec"]["restartPolicy"] = "Never".into();
    let never = |mut v: Value, path: &[&str]| {
        let mut at = &mut v;
        for key in path {
            at = &mut at[*key];
        }
        at["spec"]["restartPolicy"] = "Never".into();
        v
    };
    vec![
        pod_spec_never,
        with(
            parse(&format!(
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{ name: agent-set }}\nspec: {{ serviceName: agent, {selector} }}"
            )),
            &["spec", "template"],
        ),
        with(
            parse(&format!(
                "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{ name: agent-ds }}\nspec: {{ {selector} }}"
            )),
            &["spec", "template"],
        ),
        never(
            with(
                parse("apiVersion: batch/v1\nkind: Job\nmetadata: { name: agent-job }\nspec: {}"),
                &["spec", "template"],
            ),
            &["spec", "template"],
        ),
        never(
            with(
                parse(
                    "apiVersion: batch/v1\nkind: CronJob\nmetadata: { name: agent-cron }\nspec: { schedule: '@daily', jobTemplate: { spec: {} } }",
                ),
                &["spec", "jobTemplate", "spec", "template"],
            ),
            &["spec", "jobTemplate", "spec", "template"],
        ),
    ]
}

fn validate(file: &Path) -> Outcome {
    let mut cmd = Command::new("kubernetes-validate");
    cmd.args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .arg(file);
    run_bounded(cmd, COMMAND_LIMIT)
}

#[test]
fn every_workload_kind_injected_validates_against_the_kubernetes_schemas() {
    let (_, deployment) = base();
    let bare = without_credgate(&deployment);
    let workloads = every_kind(&bare["spec"]["template"]);
    let mut input = yaml(&bare);
    for workload in &workloads {
        input.push_str("---\n");
        input.push_str(&yaml(workload));
    }
    let out = inject(&input, &strs(&base_flags(&deployment)));
    assert_eq!(out.code, Some(0), "{out:?}");
    let injected = kube::objects(&out.stdout);
    assert_eq!(injected.len(), 6);
    let dir = TempDir::new();
    let file = dir.path().join("injected.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let checked = validate(&file);
    assert_eq!(
        checked.code,
        Some(0),
        "pip install 'kubernetes-validate>=1.31,<2' (tests/run.sh does): {checked:?}"
    );
    assert!(checked.all().contains("passed"), "{checked:?}");
    // The check can fail: a field of the wrong type.
    let broken = out.stdout.replacen(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: 7",
        1,
    );
    std::fs::write(&file, broken).unwrap();
    assert_ne!(validate(&file).code, Some(0));

    // Every kind's pod is the Deployment's.
    let pod_of = |object: &Value| -> Value {
        let mut spec = match object["kind"].as_str().unwrap() {
            "Pod" => object["spec"].clone(),
            "CronJob" => object["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone(),
            _ => object["spec"]["template"]["spec"].clone(),
        };
        spec.as_mapping_mut().unwrap().remove("restartPolicy");
        normalize_pod(&mut spec);
        spec
    };
    for object in &injected[1..] {
        assert_eq!(pod_of(object), pod_of(&injected[0]), "{:?}", object["kind"]);
    }
}

#[test]
fn a_pod_that_cannot_be_made_safe_is_refused_and_nothing_is_written() {
    let (_, deployment) = base();
    let bare = without_credgate(&deployment);
    let mut root = bare.clone();
    root["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0.into();
    let mut credgates = bare.clone();
    credgates["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] =
        65532.into();
    for (bad, reason) in [(root, "runs as root"), (credgates, "credgate's user")] {
        let input = format!("{}---\n{}", yaml(&bare), yaml(&bad));
        let out = inject(&input, &[]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert_eq!(out.stdout, "", "nothing is written");
        assert!(
            out.stderr.contains("document 2 (Deployment/agent)") && out.stderr.contains(reason),
            "{out:?}"
        );
    }
    let out = inject("kind: [unclosed\n", &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("not valid YAML"), "{out:?}");
    let out = inject(&yaml(&bare), &["--proxy-uid", "0"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("non-root"), "{out:?}");
}

/// `credgate webhook` on a free port, until dropped.
struct Webhook {
    child: std::process::Child,
    url: String,
    tls: support::moto::MotoTls,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    fn start(flags: &[String]) -> Webhook {
        let tls = support::moto::MotoTls::generate_for("credgate-webhook.credgate-system.svc");
        let mut child = Command::new(env!("CARGO_BIN_EXE_credgate"))
            .args(["webhook", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|url| url.starts_with("https://127.0.0.1:"))
            .unwrap_or_else(|| panic!("credgate webhook did not start: {line}"))
            .to_owned();
        Webhook { child, url, tls }
    }

    /// curl's answer to `body` POSTed to `path`: the status and the body.
    fn post(&self, path: &str, body: &[u8]) -> (String, String) {
        let dir = TempDir::new();
        let file = dir.path().join("body");
        std::fs::write(&file, body).unwrap();
        let url = self.url.replace("/mutate", path);
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(&self.tls.ca_cert)
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(url);
        let out = run_bounded(cmd, COMMAND_LIMIT);
        // An answer before the whole body was sent (one too large) leaves
        // curl with a broken pipe (55), the answer read all the same.
        assert!(matches!(out.code, Some(0 | 55)), "{out:?}");
        let (body, status) = out.stdout.rsplit_once('\n').unwrap();
        (status.to_owned(), body.to_owned())
    }
}

/// An AdmissionReview as the API server sends it when a Deployment's
/// ReplicaSet creates a pod from `template`.
fn review_of(template: &Value, uid: &str) -> serde_json::Value {
    let mut pod = serde_json::to_value(template).unwrap();
    pod["apiVersion"] = "v1".into();
    pod["kind"] = "Pod".into();
    pod["metadata"]["generateName"] = "agent-6d4cf56db6-".into();
    pod["metadata"]["namespace"] = "agents".into();
    pod["metadata"]["ownerReferences"] = serde_json::json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "agent-6d4cf56db6",
        "uid": "3c5b8f2e-0b1a-4c1e-9a57-0d7f6c2b9e11", "controller": true,
        "blockOwnerDeletion": true,
    }]);
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "agents",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "1f2e3d4c-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
        },
    })
}

/// `patch` applied to `object` by Python's `jsonpatch` (RFC 6902).
fn apply_with_jsonpatch(
    object: &serde_json::Value,
    patch: &serde_json::Value,
) -> serde_json::Value {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("object.json"), object.to_string()).unwrap();
    std::fs::write(dir.path().join("patch.json"), patch.to_string()).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(
            "import json, jsonpatch, sys\n\
             doc = json.load(open(sys.argv[1]))\n\
             ops = json.load(open(sys.argv[2]))\n\
             print(json.dumps(jsonpatch.apply_patch(doc, ops)))",
        )
        .arg(dir.path().join("object.json"))
        .arg(dir.path().join("patch.json"));
    let out = run_bounded(cmd, COMMAND_LIMIT);
    assert_eq!(
        out.code,
        Some(0),
        "pip install jsonpatch (tests/run.sh does): {out:?}"
    );
    serde_json::from_str(&out.stdout).unwrap()
}

fn response(body: &str) -> serde_json::Value {
    let review: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    review["response"].clone()
}

#[test]
fn the_webhooks_patch_applied_to_the_pod_is_what_inject_makes_of_it() {
    use base64::Engine as _;
    let (_, deployment) = base();
    let flags = base_flags(&deployment);
    let webhook = Webhook::start(&flags);
    let bare = without_credgate(&deployment);
    let review = review_of(
        &bare["spec"]["template"],
        "b1a2c3d4-0001-4000-8000-00000000abcd",
    );
    let (status, body) = webhook.post("/mutate", review.to_string().as_bytes());
    assert_eq!(status, "200", "{body}");
    let answer = response(&body);
    assert_eq!(answer["uid"], "b1a2c3d4-0001-4000-8000-00000000abcd");
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["patch"].as_str().unwrap())
        .unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    let object = &review["request"]["object"];
    let patched = apply_with_jsonpatch(object, &patch);

    // The same pod through `credgate inject`.
    let out = inject(&serde_json::to_string(object).unwrap(), &strs(&flags));
    assert_eq!(out.code, Some(0), "{out:?}");
    let injected = kube::objects(&out.stdout);
    assert_eq!(patched, serde_json::to_value(&injected[0]).unwrap());
    // And it is the example's pod.
    let mut spec: Value = serde_json::from_value(patched["spec"].clone()).unwrap();
    let mut example = deployment["spec"]["template"]["spec"].clone();
    normalize_pod(&mut spec);
    normalize_pod(&mut example);
    assert_eq!(spec, example);

    // The patched pod comes back on reinvocation: allowed as it is.
    let mut again = review.clone();
    again["request"]["object"] = patched;
    let (_, body) = webhook.post("/mutate", again.to_string().as_bytes());
    let answer = response(&body);
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(answer["patch"].is_null(), "{answer}");
}

#[test]
fn the_webhook_denies_what_it_cannot_make_safe_or_read_with_a_reason() {
    let (_, deployment) = base();
    let webhook = Webhook::start(&[]);
    let mut root = without_credgate(&deployment);
    root["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0.into();
    let review = review_of(
        &root["spec"]["template"],
        "b1a2c3d4-0002-4000-8000-00000000abcd",
    );
    let (status, body) = webhook.post("/mutate", review.to_string().as_bytes());
    assert_eq!(status, "200");
    let answer = response(&body);
    assert_eq!(answer["uid"], "b1a2c3d4-0002-4000-8000-00000000abcd");
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["status"]["code"], 403);
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(message.contains("runs as root"), "{message}");

    // An annotation alone does not pass for credgate.
    let mut claimed = without_credgate(&deployment);
    claimed["spec"]["template"]["metadata"]["annotations"] =
        serde_yaml::from_str("{ credgate.dev/injected: 'true' }").unwrap();
    let review = review_of(
        &claimed["spec"]["template"],
        "b1a2c3d4-0003-4000-8000-00000000abcd",
    );
    let (_, body) = webhook.post("/mutate", review.to_string().as_bytes());
    assert_eq!(response(&body)["allowed"], false, "{body}");

    let large = vec![b' '; 5 * 1024 * 1024];
    let v1beta1 = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#;
    let no_object =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#;
    for (body, says) in [
        (&b"{not json"[..], "not JSON"),
        (b"", "not JSON"),
        (v1beta1, "admissionReviewVersions"),
        (no_object, "no request.object"),
        (&large, "could not be read"),
    ] {
        let (status, answer) = webhook.post("/mutate", body);
        assert_eq!(status, "200", "{answer}");
        let answer = response(&answer);
        assert_eq!(answer["allowed"], false, "{answer}");
        let message = answer["status"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
    }
    // Still serving.
    let (status, _) = webhook.post("/healthz", b"");
    assert_eq!(status, "404", "a POST to /healthz is not a probe");
}

#[test]
fn the_webhook_manifests_render_and_validate_against_the_kubernetes_schemas() {
    let dir = kube::root().join("webhook");
    let rendered = kube::render(&dir);
    let objects = kube::objects(&rendered);
    let config = kube::only(&objects, "MutatingWebhookConfiguration");
    let webhooks = list(&config["webhooks"]);
    assert_eq!(webhooks.len(), 2);
    for webhook in webhooks {
        assert_eq!(webhook["failurePolicy"], "Fail", "fail closed");
        assert_eq!(list(&webhook["admissionReviewVersions"]), ["v1"]);
        assert_eq!(webhook["clientConfig"]["service"]["path"], "/mutate");
        assert_eq!(
            webhook["clientConfig"]["service"]["namespace"],
            kube::only(&objects, "Namespace")["metadata"]["name"]
        );
        assert_eq!(list(&webhook["rules"][0]["resources"]), ["pods"]);
    }
    let by_namespace = &webhooks[0]["namespaceSelector"]["matchLabels"]["credgate.dev/inject"];
    let by_pod = &webhooks[1]["objectSelector"]["matchLabels"]["credgate.dev/inject"];
    assert_eq!(
        (by_namespace.as_str(), by_pod.as_str()),
        (Some("enabled"), Some("enabled"))
    );
    let scratch = TempDir::new();
    let file = scratch.path().join("webhook.yaml");
    std::fs::write(&file, rendered).unwrap();
    let out = validate(&file);
    assert_eq!(out.code, Some(0), "{out:?}");
    // The webhook runs locked down as well.
    let pod = &kube::only(&objects, "Deployment")["spec"]["template"]["spec"];
    for container in list(&pod["containers"]) {
        let sc = &container["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(list(&sc["capabilities"]["drop"]), ["ALL"]);
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    }
}
