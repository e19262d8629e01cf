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
    let proxy_env: Vec<String> = credgate::cli::run::agent_env("", "", "")
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
