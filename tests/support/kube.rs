//! The Kubernetes example (`examples/kubernetes/`) as `kubectl kustomize`
//! renders it, read as YAML values: the pod, its containers, their mounts.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::{run_bounded, COMMAND_LIMIT};

/// `examples/kubernetes/`.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes")
}

/// The directories `kubectl kustomize` renders: the base and every overlay.
pub fn kustomizations() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(root().join("overlays"))
        .expect("examples/kubernetes/overlays exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    assert!(!overlays.is_empty(), "no overlay");
    overlays.sort();
    dirs.extend(overlays);
    dirs
}

/// `kubectl kustomize DIR`'s output.
pub fn render(dir: &Path) -> String {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("kustomize").arg(dir);
    let out = run_bounded(cmd, COMMAND_LIMIT);
    assert_eq!(
        out.code,
        Some(0),
        "kubectl kustomize {}: {out:?}",
        dir.display()
    );
    out.stdout
}

/// The objects of a rendered multi-document YAML.
pub fn objects(rendered: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(rendered)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The one object of `kind`.
pub fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}: {found:?}");
    found[0]
}

/// The string at `value`, or a panic naming `what`.
pub fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// The list at `value` (empty when absent).
pub fn list(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// The rendered example's pod, as the Deployment's template holds it.
pub struct Pod {
    /// `spec.template.spec`.
    pub spec: Value,
    /// Every object the kustomization rendered.
    pub objects: Vec<Value>,
}

impl Pod {
    /// Renders `dir` and finds the pod.
    pub fn render(dir: &Path) -> Pod {
        let objects = objects(&render(dir));
        let spec = only(&objects, "Deployment")["spec"]["template"]["spec"].clone();
        Pod { spec, objects }
    }

    /// The init containers, in order.
    pub fn init_containers(&self) -> &[Value] {
        list(&self.spec["initContainers"])
    }

    /// Init containers, then containers.
    pub fn all_containers(&self) -> Vec<&Value> {
        self.init_containers()
            .iter()
            .chain(list(&self.spec["containers"]))
            .collect()
    }

    /// The container (or init container) called `name`.
    pub fn container(&self, name: &str) -> &Value {
        self.all_containers()
            .into_iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// The volume called `name`.
    pub fn volume(&self, name: &str) -> &Value {
        list(&self.spec["volumes"])
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    /// The names of the containers that mount the volume `name`.
    pub fn mounted_by(&self, volume: &str) -> Vec<String> {
        self.all_containers()
            .into_iter()
            .filter(|c| list(&c["volumeMounts"]).iter().any(|m| m["name"] == volume))
            .map(|c| text(&c["name"], "a container's name").to_owned())
            .collect()
    }

    /// The `credgate.yaml` of the ConfigMap the volume `credgate-config` names.
    pub fn credgate_config(&self) -> String {
        let name = text(
            &self.volume("credgate-config")["configMap"]["name"],
            "the config volume's ConfigMap",
        );
        let map = self
            .objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name} in the rendered output"));
        text(&map["data"]["credgate.yaml"], "credgate.yaml").to_owned()
    }
}

/// The mount of `container` whose path holds `path`, and its volume.
pub fn mount_holding<'a>(
    pod: &'a Pod,
    container: &'a Value,
    path: &Path,
) -> Option<(&'a Value, &'a Value)> {
    list(&container["volumeMounts"])
        .iter()
        .filter(|m| path.starts_with(text(&m["mountPath"], "mountPath")))
        .max_by_key(|m| text(&m["mountPath"], "mountPath").len())
        .map(|m| (m, pod.volume(text(&m["name"], "a mount's volume"))))
}
