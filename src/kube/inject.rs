//! `credgate inject`: adds credgate to Kubernetes workloads, exactly as
//! `examples/kubernetes/` has it: the `credgate-init` lock-down first, then
//! credgate as a native sidecar, its volumes, and the proxy and CA
//! variables (and the CA certificate's mount) in every other container.
//!
//! Pure: YAML in, YAML out. A workload credgate cannot make safe is refused
//! with the reason, and then the whole input is refused: a careful user
//! expects no partial output. What is not a workload passes through.
//!
//! What injection does not change, on purpose: the pod's
//! `automountServiceAccountToken` (the agent may use the API; turning it
//! off would change the workload's behaviour, so it is a note instead), the
//! users the containers run as (it refuses rather than guesses), and the
//! application containers' commands, images and resources.

use serde_json::json;
use serde_yaml::{Mapping, Value};

/// The annotation on an injected pod (template): injecting it again gives
/// it back unchanged.
pub const INJECTED_ANNOTATION: &str = "credgate.dev/injected";

/// The lock-down init container's name.
pub const INIT_CONTAINER: &str = "credgate-init";

/// credgate's sidecar's name.
pub const SIDECAR: &str = "credgate";

/// Where the agent's containers find the CA certificate.
pub const CA_CERT_DIR: &str = "/etc/credgate-ca";

/// Capabilities an agent's container may not add: each could remove the
/// lock-down (`NET_ADMIN`, `SYS_ADMIN`, `BPF`) or let it run as credgate's
/// user, which the lock-down exempts (`SETUID`, `SETGID`), or all of them.
const DANGEROUS_CAPABILITIES: &[&str] = &[
    "ALL",
    "NET_ADMIN",
    "SYS_ADMIN",
    "SETUID",
    "SETGID",
    "BPF",
    "SYS_PTRACE",
    "SYS_MODULE",
];

/// What to inject: the names of the objects the pod refers to, the images,
/// credgate's user and ports.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// The ConfigMap holding `credgate.yaml`.
    pub config_map: String,
    /// The Secret holding the CA's `ca.crt` and `ca.key` (credgate only).
    pub ca_secret: String,
    /// The Secret holding the credential sources' secrets (credgate only,
    /// optional in the pod).
    pub sources_secret: String,
    /// The ConfigMap holding `ca.crt` alone, for the agent.
    pub ca_cert_config_map: String,
    /// credgate's image.
    pub image: String,
    /// The lock-down image (the Dockerfile's `lockdown` target).
    pub lockdown_image: String,
    /// credgate's user and group, exempt from the lock-down.
    pub proxy_uid: u32,
    /// The proxy's port on loopback (the config's `listen`).
    pub proxy_port: u16,
    /// The transparent listener's port (the config's `transparent_listen`).
    pub transparent_port: u16,
    /// The admin port (the config's `admin.listen`), probed by the kubelet.
    pub admin_port: u16,
    /// The audience of the projected service-account token mounted into
    /// credgate; no token when `None`.
    pub token_audience: Option<String>,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            config_map: "credgate-config".to_owned(),
            ca_secret: "credgate-ca".to_owned(),
            sources_secret: "credgate-sources".to_owned(),
            ca_cert_config_map: "credgate-ca-cert".to_owned(),
            image: "credgate".to_owned(),
            lockdown_image: "credgate-lockdown".to_owned(),
            proxy_uid: 65532,
            proxy_port: 8080,
            transparent_port: 15001,
            admin_port: 8081,
            token_audience: None,
        }
    }
}

/// Why the input was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InjectError {
    /// A document is not YAML.
    #[error("document {document}: not valid YAML: {message}")]
    Malformed {
        /// 1-based.
        document: usize,
        /// The parser's message.
        message: String,
    },
    /// One or more workloads cannot be made safe.
    #[error("{}", refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused {
        /// Every refusal, in input order.
        refusals: Vec<Refusal>,
    },
}

/// One workload credgate refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based document number.
    pub document: usize,
    /// `Kind/name` (and the item's index in a `List`).
    pub object: String,
    /// A reason a reviewer can act on.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "document {} ({}): {}",
            self.document, self.object, self.reason
        )
    }
}

/// The injected documents, and what the user should know about them.
#[derive(Debug)]
pub struct Injected {
    /// The documents, `---`-separated.
    pub yaml: String,
    /// One line per document not changed, or worth a second look.
    pub notes: Vec<String>,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// credgate was added.
    Injected(Value),
    /// Already injected: unchanged.
    AlreadyInjected,
    /// Not a workload: unchanged.
    NotAWorkload,
}

/// Injects every workload of a multi-document YAML input.
pub fn inject_documents(input: &str, options: &InjectOptions) -> Result<Injected, InjectError> {
    let mut documents = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| InjectError::Malformed {
                document: i + 1,
                message: e.to_string(),
            })?;
        documents.push(value);
    }
    let mut refusals = Vec::new();
    let mut notes = Vec::new();
    let mut out = Vec::new();
    for (i, document) in documents.into_iter().enumerate() {
        let number = i + 1;
        if document.is_null() {
            continue;
        }
        let mut record =
            |object: String, result: Result<Outcome, String>, notes_of: Vec<String>| {
                match &result {
                    Ok(Outcome::AlreadyInjected) => {
                        notes.push(format!(
                            "document {number} ({object}): already injected, unchanged"
                        ));
                    }
                    Ok(Outcome::NotAWorkload) => {
                        notes.push(format!(
                            "document {number} ({object}): not a workload, unchanged"
                        ));
                    }
                    Ok(Outcome::Injected(_)) => {
                        for note in notes_of {
                            notes.push(format!("document {number} ({object}): {note}"));
                        }
                    }
                    Err(reason) => refusals.push(Refusal {
                        document: number,
                        object,
                        reason: reason.clone(),
                    }),
                }
                result.ok()
            };
        if document["kind"] == "List" {
            let mut list = document.clone();
            if let Some(items) = list.get_mut("items").and_then(Value::as_sequence_mut) {
                for (j, item) in items.iter_mut().enumerate() {
                    let object = format!("List item {j}: {}", describe(item));
                    let mut item_notes = Vec::new();
                    let result = inject_object(item, options, &mut item_notes);
                    if let Some(Outcome::Injected(injected)) = record(object, result, item_notes) {
                        *item = injected;
                    }
                }
            }
            out.push(list);
        } else {
            let mut object_notes = Vec::new();
            let result = inject_object(&document, options, &mut object_notes);
            match record(describe(&document), result, object_notes) {
                Some(Outcome::Injected(injected)) => out.push(injected),
                _ => out.push(document),
            }
        }
    }
    if !refusals.is_empty() {
        return Err(InjectError::Refused { refusals });
    }
    let mut yaml = String::new();
    for (i, value) in out.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&serde_yaml::to_string(value).expect("a YAML value serialises"));
    }
    Ok(Injected { yaml, notes })
}

/// `Kind/name`, for messages.
fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("(no kind)");
    let name = object["metadata"]["name"]
        .as_str()
        .or_else(|| object["metadata"]["generateName"].as_str())
        .unwrap_or("(no name)");
    format!("{kind}/{name}")
}

/// The path from the object to its pod template (`metadata` + `spec`), by
/// kind; `None` for what is not a workload.
fn pod_template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects one object: the outcome, or why it cannot be made safe. `notes`
/// gets what is worth a second look in an injected object.
pub fn inject_object(
    object: &Value,
    options: &InjectOptions,
    notes: &mut Vec<String>,
) -> Result<Outcome, String> {
    let Some(path) = object["kind"].as_str().and_then(pod_template_path) else {
        return Ok(Outcome::NotAWorkload);
    };
    let mut object = object.clone();
    let mut template = &mut object;
    for key in path {
        template = template
            .get_mut(*key)
            .ok_or_else(|| format!("no {} in the object", path.join(".")))?;
    }
    if template["metadata"]["annotations"][INJECTED_ANNOTATION] == "true" {
        // The annotation alone proves nothing: anyone can write it, and a
        // webhook that trusted it would let such a pod run without credgate.
        return match check_injected(&template["spec"], options) {
            Ok(()) => Ok(Outcome::AlreadyInjected),
            Err(why) => Err(format!(
                "the pod carries the {INJECTED_ANNOTATION} annotation, but {why}; remove \
                 credgate's containers, volumes and the annotation to inject it again"
            )),
        };
    }
    let spec = template
        .get_mut("spec")
        .filter(|s| s.is_mapping())
        .ok_or("the pod has no spec")?;
    inject_pod_spec(spec, options, notes)?;
    let metadata = mapping_at(template, "metadata")?;
    let annotations = mapping_at(metadata, "annotations")?;
    annotations
        .as_mapping_mut()
        .expect("a mapping")
        .insert(INJECTED_ANNOTATION.into(), "true".into());
    Ok(Outcome::Injected(object))
}

/// The value at `key` of the mapping `value`; `empty` where it was absent
/// or null.
fn field_at<'a>(value: &'a mut Value, key: &str, empty: Value) -> Result<&'a mut Value, String> {
    let map = value
        .as_mapping_mut()
        .ok_or_else(|| format!("not a mapping where {key} belongs"))?;
    let entry = map.entry(key.into()).or_insert(Value::Null);
    if entry.is_null() {
        *entry = empty;
    }
    Ok(entry)
}

/// The mapping at `key` of `value`, created when absent.
fn mapping_at<'a>(value: &'a mut Value, key: &str) -> Result<&'a mut Value, String> {
    let entry = field_at(value, key, Value::Mapping(Mapping::new()))?;
    if entry.is_mapping() {
        Ok(entry)
    } else {
        Err(format!("{key} is not a mapping"))
    }
}

/// The sequence at `key` of `value`, created when absent.
fn sequence_at<'a>(value: &'a mut Value, key: &str) -> Result<&'a mut Vec<Value>, String> {
    field_at(value, key, Value::Sequence(Vec::new()))?
        .as_sequence_mut()
        .ok_or_else(|| format!("{key} is not a list"))
}

fn yaml(value: serde_json::Value) -> Value {
    serde_yaml::to_value(value).expect("JSON converts to YAML")
}

/// The names of the volumes injection adds.
fn volume_names(options: &InjectOptions) -> Vec<&'static str> {
    let mut names = vec![
        "credgate-config",
        "credgate-ca",
        "credgate-sources",
        "credgate-ca-cert",
        "credgate-state",
    ];
    if options.token_audience.is_some() {
        names.push("credgate-token");
    }
    names
}

/// Checks the pod can be made safe, then adds credgate to it.
fn inject_pod_spec(
    spec: &mut Value,
    options: &InjectOptions,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    check_pod(spec, options)?;
    let env = injected_env(options);
    let pod_security = spec["securityContext"].clone();
    for key in ["initContainers", "containers"] {
        for container in sequence_at(spec, key)? {
            prepare_app_container(container, &pod_security, &env, options)?;
        }
    }
    if spec["automountServiceAccountToken"] != false {
        notes.push(
            "the service account's API token is mounted into every container (credgate's \
             too); set automountServiceAccountToken: false unless the agent needs it"
                .to_owned(),
        );
    }
    let init = sequence_at(spec, "initContainers")?;
    init.insert(0, sidecar(options));
    init.insert(0, lockdown(options));
    let volumes = sequence_at(spec, "volumes")?;
    volumes.extend(credgate_volumes(options));
    Ok(())
}

/// Refuses a pod whose traffic the lock-down cannot capture, or that
/// already has something of credgate's names.
fn check_pod(spec: &Value, options: &InjectOptions) -> Result<(), String> {
    if spec["hostNetwork"] == true {
        return Err(
            "hostNetwork: true: the lock-down would be installed in the node's network \
             namespace, not the pod's"
                .to_owned(),
        );
    }
    check_pod_security(spec, options)?;
    let containers = containers(spec);
    for container in &containers {
        let name = container["name"].as_str().unwrap_or("");
        if name == SIDECAR || name == INIT_CONTAINER {
            return Err(format!(
                "a container is already named {name}, and the pod has no {INJECTED_ANNOTATION} \
                 annotation: it is not one credgate inject added"
            ));
        }
    }
    let volumes = volume_names(options);
    for volume in list(&spec["volumes"]) {
        let name = volume["name"].as_str().unwrap_or("");
        if volumes.contains(&name) {
            return Err(format!("the pod already has a volume named {name}"));
        }
    }
    Ok(())
}

/// Refuses a pod whose groups would give the agent credgate's.
fn check_pod_security(spec: &Value, options: &InjectOptions) -> Result<(), String> {
    let uid = u64::from(options.proxy_uid);
    let pod_sc = &spec["securityContext"];
    for field in ["fsGroup", "runAsGroup"] {
        if pod_sc[field].as_u64() == Some(uid) {
            return Err(format!(
                "the pod's securityContext.{field} is {uid}, credgate's group: the agent \
                 would share it"
            ));
        }
    }
    Ok(())
}

/// What the API server adds by default to a container or a volume, which
/// an injected pod carries once it has been through the server: never a
/// program, a file, an identity or a privilege.
const SERVER_DEFAULTS: &[&str] = &[
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "timeoutSeconds",
    "successThreshold",
    "periodSeconds",
    "failureThreshold",
    "scheme",
    "protocol",
    "defaultMode",
    "expirationSeconds",
    "resizePolicy",
];

/// Where Kubernetes' service-account admission mounts the API token into
/// every container, and the prefix of that volume's name.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const SERVICE_ACCOUNT_VOLUME: &str = "kube-api-access-";

/// Checks that an annotated pod spec is what injection makes of a pod:
/// credgate's two containers exactly as [`lockdown`] and [`sidecar`] give
/// them (with at most the server's defaults and its API-token mount
/// added), credgate's volumes as [`credgate_volumes`] gives them, and every
/// other container one injection would accept, pointed at credgate.
fn check_injected(spec: &Value, options: &InjectOptions) -> Result<(), String> {
    if spec["hostNetwork"] == true {
        return Err("it uses hostNetwork".to_owned());
    }
    check_pod_security(spec, options)?;
    let init = list(&spec["initContainers"]);
    for (at, expected) in [lockdown(options), sidecar(options)].iter().enumerate() {
        let name = expected["name"].as_str().unwrap_or_default();
        let same = init
            .get(at)
            .is_some_and(|actual| same_as_injected(expected, &without_api_token_mount(actual)));
        if !same {
            return Err(format!(
                "its init container number {} is not the {name} container this injection \
                 adds (its image, command, arguments, environment, mounts and security \
                 context must be exactly those)",
                at + 1
            ));
        }
    }
    let volumes = list(&spec["volumes"]);
    for expected in credgate_volumes(options) {
        let name = expected["name"].as_str().unwrap_or_default();
        let same = volumes
            .iter()
            .filter(|v| v["name"].as_str() == Some(name))
            .map(|actual| same_as_injected(&expected, actual))
            .collect::<Vec<_>>()
            == [true];
        if !same {
            return Err(format!(
                "its volume {name} is not the one this injection adds"
            ));
        }
    }
    let env = injected_env(options);
    let pod_security = &spec["securityContext"];
    let apps = init.iter().skip(2).chain(list(&spec["containers"]));
    for container in apps {
        let name = container["name"].as_str().unwrap_or("(no name)");
        if name == SIDECAR || name == INIT_CONTAINER {
            return Err(format!("a second container is named {name}"));
        }
        check_app_container(container, pod_security, &env, options)?;
        let vars = list(&container["env"]);
        if let Some((key, _)) = env
            .iter()
            .find(|(key, _)| !vars.iter().any(|e| e["name"] == key.as_str()))
        {
            return Err(format!("container {name} does not set {key}"));
        }
        let ca_mounted = list(&container["volumeMounts"])
            .iter()
            .any(|m| m["mountPath"] == CA_CERT_DIR && m["name"] == "credgate-ca-cert");
        if !ca_mounted {
            return Err(format!(
                "container {name} does not mount credgate's CA certificate at {CA_CERT_DIR}"
            ));
        }
    }
    Ok(())
}

/// Whether `actual` is `expected` with at most [`SERVER_DEFAULTS`] added.
fn same_as_injected(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Mapping(expected), Value::Mapping(actual)) => {
            expected
                .iter()
                .all(|(key, e)| actual.get(key).is_some_and(|a| same_as_injected(e, a)))
                && actual.keys().all(|key| {
                    expected.contains_key(key)
                        || key.as_str().is_some_and(|k| SERVER_DEFAULTS.contains(&k))
                })
        }
        (Value::Sequence(expected), Value::Sequence(actual)) => {
            expected.len() == actual.len()
                && expected
                    .iter()
                    .zip(actual)
                    .all(|(e, a)| same_as_injected(e, a))
        }
        _ => expected == actual,
    }
}

/// `container` without the API-token mount Kubernetes adds to every
/// container (read-only, from its `kube-api-access-…` volume).
fn without_api_token_mount(container: &Value) -> Value {
    let mut container = container.clone();
    let Some(map) = container.as_mapping_mut() else {
        return container;
    };
    if let Some(mounts) = map.get_mut("volumeMounts").and_then(Value::as_sequence_mut) {
        mounts.retain(|m| {
            !(m["mountPath"] == SERVICE_ACCOUNT_DIR
                && m["readOnly"] == true
                && m["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(SERVICE_ACCOUNT_VOLUME))
                && m.as_mapping().is_some_and(|m| m.len() == 3))
        });
        if mounts.is_empty() {
            map.remove("volumeMounts");
        }
    }
    container
}

/// The proxy and CA variables injection sets in the agent's containers.
fn injected_env(options: &InjectOptions) -> Vec<(String, String)> {
    let proxy_url = format!("http://127.0.0.1:{}", options.proxy_port);
    let ca = format!("{CA_CERT_DIR}/ca.crt");
    crate::agent_env::agent_env("", &proxy_url, &ca)
        .into_iter()
        .filter(|(name, _)| name != "CREDGATE_TASK_ID")
        .collect()
}

/// Every init container and container of a pod spec.
fn containers(spec: &Value) -> Vec<&Value> {
    list(&spec["initContainers"])
        .iter()
        .chain(list(&spec["containers"]))
        .collect()
}

fn list(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// Checks an application container's user and environment, then points it
/// at credgate: the proxy and CA variables, the CA certificate's mount, and
/// `runAsNonRoot: true` when it says nothing of it.
fn prepare_app_container(
    container: &mut Value,
    pod_security: &Value,
    env: &[(String, String)],
    options: &InjectOptions,
) -> Result<(), String> {
    check_app_container(container, pod_security, env, options)?;
    let name = container["name"].as_str().unwrap_or("(no name)");
    let ca_dir_taken = list(&container["volumeMounts"])
        .iter()
        .any(|m| m["mountPath"] == CA_CERT_DIR);
    if ca_dir_taken {
        return Err(format!(
            "container {name} already mounts something at {CA_CERT_DIR}"
        ));
    }

    let vars = sequence_at(container, "env")?;
    for (key, value) in env {
        if !vars.iter().any(|e| e["name"] == key.as_str()) {
            vars.push(yaml(json!({ "name": key, "value": value })));
        }
    }
    sequence_at(container, "volumeMounts")?.push(yaml(json!({
        "name": "credgate-ca-cert", "mountPath": CA_CERT_DIR, "readOnly": true,
    })));
    let sc = mapping_at(container, "securityContext")?
        .as_mapping_mut()
        .expect("a mapping");
    sc.entry("runAsNonRoot".into()).or_insert(Value::Bool(true));
    sc.entry("allowPrivilegeEscalation".into())
        .or_insert(Value::Bool(false));
    Ok(())
}

/// Refuses an application container that could undo the lock-down, run as
/// credgate, or not go through credgate.
fn check_app_container(
    container: &Value,
    pod_security: &Value,
    env: &[(String, String)],
    options: &InjectOptions,
) -> Result<(), String> {
    let name = container["name"].as_str().unwrap_or("(no name)");
    let sc = &container["securityContext"];
    let field = |key: &str| {
        if sc[key].is_null() {
            &pod_security[key]
        } else {
            &sc[key]
        }
    };
    let uid = u64::from(options.proxy_uid);
    match field("runAsUser").as_u64() {
        Some(0) => return Err(format!("container {name} runs as root (runAsUser 0)")),
        Some(user) if user == uid => {
            return Err(format!(
                "container {name} runs as {uid}, credgate's user, which the lock-down exempts"
            ))
        }
        Some(_) => {}
        None => {
            return Err(format!(
                "container {name} sets no runAsUser (nor does the pod): the image's user is \
                 unknown, and could be root or {uid} (distroless's nonroot), which the \
                 lock-down exempts; set runAsUser"
            ))
        }
    }
    // What could undo the lock-down or become credgate's user: a
    // privileged container, a capability over the network or the user ids,
    // or a set-user-ID binary (with privilege escalation allowed).
    if sc["privileged"] == true {
        return Err(format!(
            "container {name} is privileged: it could remove the lock-down"
        ));
    }
    for added in list(&sc["capabilities"]["add"]) {
        let cap = added.as_str().unwrap_or("").to_ascii_uppercase();
        let cap = cap.strip_prefix("CAP_").unwrap_or(&cap);
        if DANGEROUS_CAPABILITIES.contains(&cap) {
            return Err(format!(
                "container {name} adds the capability {cap}: it could remove the lock-down \
                 or take credgate's user"
            ));
        }
    }
    if sc["allowPrivilegeEscalation"] == true {
        return Err(format!(
            "container {name} sets allowPrivilegeEscalation: true: a set-user-ID program could \
             make it root, and root can take credgate's user"
        ));
    }
    if field("runAsGroup").as_u64() == Some(uid) {
        return Err(format!(
            "container {name} runs with group {uid}, credgate's group"
        ));
    }
    for (key, value) in env {
        let existing = list(&container["env"])
            .iter()
            .find(|e| e["name"] == key.as_str());
        if let Some(existing) = existing {
            if existing["value"].as_str() != Some(value.as_str())
                || !existing["valueFrom"].is_null()
            {
                return Err(format!(
                    "container {name} sets {key} to something else than {value:?}: it would \
                     not go through credgate"
                ));
            }
        }
    }
    Ok(())
}

/// The security context of every container but the lock-down's.
fn restricted(uid: u32) -> serde_json::Value {
    json!({
        "runAsUser": uid,
        "runAsGroup": uid,
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// `credgate init`: root in the pod's network namespace, `NET_ADMIN` and
/// `NET_RAW` only; it exits before any other container starts.
fn lockdown(options: &InjectOptions) -> Value {
    yaml(json!({
        "name": INIT_CONTAINER,
        "image": options.lockdown_image,
        "args": [
            "init",
            "--proxy-uid", options.proxy_uid.to_string(),
            "--transparent-port", options.transparent_port.to_string(),
            "--admin-port", options.admin_port.to_string(),
        ],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "cpu": "100m", "memory": "64Mi" },
        },
    }))
}

/// credgate as a native sidecar, probed on its admin port.
fn sidecar(options: &InjectOptions) -> Value {
    let mut mounts = vec![
        json!({ "name": "credgate-config", "mountPath": "/etc/credgate", "readOnly": true }),
        json!({ "name": "credgate-ca", "mountPath": "/var/run/secrets/credgate/ca", "readOnly": true }),
        json!({ "name": "credgate-sources", "mountPath": "/var/run/secrets/credgate/sources", "readOnly": true }),
    ];
    if options.token_audience.is_some() {
        mounts.push(json!({ "name": "credgate-token", "mountPath": "/var/run/secrets/tokens/credgate", "readOnly": true }));
    }
    mounts.push(json!({ "name": "credgate-state", "mountPath": "/home/nonroot/.credgate" }));
    yaml(json!({
        "name": SIDECAR,
        "image": options.image,
        "args": ["serve", "--config", "/etc/credgate/credgate.yaml"],
        "workingDir": "/home/nonroot",
        "restartPolicy": "Always",
        "ports": [{ "name": "admin", "containerPort": options.admin_port }],
        "startupProbe": {
            "httpGet": { "path": "/readyz", "port": "admin" },
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        "readinessProbe": {
            "httpGet": { "path": "/readyz", "port": "admin" },
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": { "path": "/healthz", "port": "admin" },
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": restricted(options.proxy_uid),
        "resources": {
            "requests": { "cpu": "100m", "memory": "64Mi" },
            "limits": { "cpu": "1", "memory": "256Mi" },
        },
        "volumeMounts": mounts,
    }))
}

/// credgate's volumes: its config, the CA (key included) and the sources'
/// secrets for credgate alone, the CA certificate for the agent, its state.
fn credgate_volumes(options: &InjectOptions) -> Vec<Value> {
    // 0444: root-owned and world-readable in credgate's container, where
    // only credgate runs (no fsGroup, which would give the agent a group).
    let mode = 0o444;
    let mut volumes = vec![
        json!({ "name": "credgate-config", "configMap": { "name": options.config_map } }),
        json!({ "name": "credgate-ca", "secret": { "secretName": options.ca_secret, "defaultMode": mode } }),
        json!({ "name": "credgate-sources", "secret": {
            "secretName": options.sources_secret, "defaultMode": mode, "optional": true,
        } }),
    ];
    if let Some(audience) = &options.token_audience {
        volumes.push(json!({ "name": "credgate-token", "projected": {
            "defaultMode": mode,
            "sources": [{ "serviceAccountToken": {
                "audience": audience, "expirationSeconds": 3600, "path": "token",
            } }],
        } }));
    }
    volumes.push(
        json!({ "name": "credgate-ca-cert", "configMap": { "name": options.ca_cert_config_map } }),
    );
    volumes.push(json!({ "name": "credgate-state", "emptyDir": { "sizeLimit": "1Gi" } }));
    volumes.into_iter().map(yaml).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_SPEC: &str = "
      containers:
        - name: agent
          image: python:3.12-slim
          securityContext: { runAsUser: 1000 }
";

    fn workload(kind: &str) -> String {
        let spec = POD_SPEC.replace("\n      ", "\n");
        let indent = |text: &str, by: usize| {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("{}{l}\n", " ".repeat(by)))
                .collect::<String>()
        };
        let api = match kind {
            "Pod" => "v1",
            "Job" | "CronJob" => "batch/v1",
            _ => "apps/v1",
        };
        let head = format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{ name: a }}\n");
        match kind {
            "Pod" => format!("{head}spec:\n{}", indent(&spec, 2)),
            "CronJob" => format!(
                "{head}spec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n{}",
                indent(&spec, 10)
            ),
            _ => format!("{head}spec:\n  template:\n    spec:\n{}", indent(&spec, 6)),
        }
    }

    fn inject(input: &str) -> Result<Injected, InjectError> {
        inject_documents(input, &InjectOptions::default())
    }

    fn one(input: &str) -> Value {
        let out = inject(input).unwrap_or_else(|e| panic!("{e}"));
        serde_yaml::from_str(&out.yaml).unwrap()
    }

    fn refusal(input: &str) -> String {
        match inject(input) {
            Err(InjectError::Refused { refusals }) => {
                assert_eq!(refusals.len(), 1, "{refusals:?}");
                refusals[0].to_string()
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    fn pod_of(object: &Value) -> &Value {
        let path = pod_template_path(object["kind"].as_str().unwrap()).unwrap();
        path.iter().fold(object, |v, k| &v[*k])
    }

    #[test]
    fn every_kind_gets_the_lockdown_then_the_sidecar_and_the_agent_env() {
        for kind in [
            "Pod",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
        ] {
            let out = one(&workload(kind));
            let pod = pod_of(&out);
            assert_eq!(
                pod["metadata"]["annotations"][INJECTED_ANNOTATION], "true",
                "{kind}"
            );
            let spec = &pod["spec"];
            let init: Vec<&str> = list(&spec["initContainers"])
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(init, [INIT_CONTAINER, SIDECAR], "{kind}");
            assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
            assert_eq!(
                spec["initContainers"][1]["securityContext"]["runAsUser"],
                65532
            );
            let agent = &spec["containers"][0];
            let env = list(&agent["env"]);
            assert!(env
                .iter()
                .any(|e| e["name"] == "HTTPS_PROXY" && e["value"] == "http://127.0.0.1:8080"));
            assert!(env
                .iter()
                .any(|e| e["name"] == "SSL_CERT_FILE" && e["value"] == "/etc/credgate-ca/ca.crt"));
            assert!(!env.iter().any(|e| e["name"] == "CREDGATE_TASK_ID"));
            assert_eq!(agent["securityContext"]["runAsNonRoot"], true);
            assert_eq!(agent["securityContext"]["allowPrivilegeEscalation"], false);
            let mounts: Vec<&str> = list(&agent["volumeMounts"])
                .iter()
                .map(|m| m["name"].as_str().unwrap())
                .collect();
            assert_eq!(mounts, ["credgate-ca-cert"]);
            let volumes: Vec<&str> = list(&spec["volumes"])
                .iter()
                .map(|v| v["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                volumes,
                [
                    "credgate-config",
                    "credgate-ca",
                    "credgate-sources",
                    "credgate-ca-cert",
                    "credgate-state"
                ]
            );
            // The agent's own settings stay.
            assert_eq!(agent["image"], "python:3.12-slim");
            assert!(spec["automountServiceAccountToken"].is_null());
        }
    }

    #[test]
    fn the_secrets_are_mounted_into_credgate_only_and_the_token_only_when_asked() {
        let options = InjectOptions {
            token_audience: Some("https://idp.example".into()),
            ..Default::default()
        };
        let out = inject_documents(&workload("Pod"), &options).unwrap();
        let out: Value = serde_yaml::from_str(&out.yaml).unwrap();
        let spec = &out["spec"];
        let sidecar = &spec["initContainers"][1];
        let mounts: Vec<&str> = list(&sidecar["volumeMounts"])
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            [
                "credgate-config",
                "credgate-ca",
                "credgate-sources",
                "credgate-token",
                "credgate-state"
            ]
        );
        assert!(list(&spec["volumes"])
            .iter()
            .any(
                |v| v["projected"]["sources"][0]["serviceAccountToken"]["audience"]
                    == "https://idp.example"
            ));
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        for kind in ["Pod", "Deployment", "CronJob"] {
            let once = inject(&workload(kind)).unwrap();
            let twice = inject(&once.yaml).unwrap();
            assert_eq!(once.yaml, twice.yaml, "{kind}");
            assert_eq!(twice.notes.len(), 1);
            assert!(
                twice.notes[0].contains("already injected"),
                "{:?}",
                twice.notes
            );
        }
    }

    /// An injected pod, changed by `change` (given its spec), injected again.
    fn tampered(change: impl Fn(&mut Value)) -> Result<Injected, InjectError> {
        let mut pod = one(&workload("Pod"));
        change(&mut pod["spec"]);
        inject(&serde_yaml::to_string(&pod).unwrap())
    }

    fn set(value: &mut Value, key: &str, to: &str) {
        value
            .as_mapping_mut()
            .unwrap()
            .insert(key.into(), serde_yaml::from_str(to).unwrap());
    }

    /// The pod as the API server gives it back: defaults filled in, and
    /// the API token mounted into every container.
    #[test]
    fn an_injected_pod_as_the_server_returns_it_is_still_injected() {
        let out = tampered(|spec| {
            let token = "{ name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true }";
            for key in ["initContainers", "containers"] {
                for c in spec[key].as_sequence_mut().unwrap() {
                    set(c, "terminationMessagePath", "/dev/termination-log");
                    set(c, "terminationMessagePolicy", "File");
                    set(c, "imagePullPolicy", "IfNotPresent");
                    let mounts = c
                        .as_mapping_mut()
                        .unwrap()
                        .entry("volumeMounts".into())
                        .or_insert(Value::Sequence(Vec::new()));
                    mounts
                        .as_sequence_mut()
                        .unwrap()
                        .push(serde_yaml::from_str(token).unwrap());
                }
            }
            let sidecar = &mut spec["initContainers"][1];
            set(&mut sidecar["readinessProbe"], "timeoutSeconds", "1");
            set(&mut sidecar["readinessProbe"]["httpGet"], "scheme", "HTTP");
            set(&mut sidecar["ports"][0], "protocol", "TCP");
            set(&mut spec["volumes"][0]["configMap"], "defaultMode", "420");
            spec["volumes"].as_sequence_mut().unwrap().push(
                serde_yaml::from_str("{ name: kube-api-access-x7k2p, projected: { sources: [] } }")
                    .unwrap(),
            );
        })
        .unwrap();
        assert!(out.notes[0].contains("already injected"), "{:?}", out.notes);
    }

    /// Containers with credgate's names and the annotation are not enough:
    /// what runs as credgate's user, or as root before the agent, must be
    /// exactly what injection adds, and the agent's containers must still
    /// be ones it accepts.
    #[test]
    fn a_pod_that_only_looks_injected_is_refused() {
        type Change = fn(&mut Value);
        let cases: [(Change, &str); 14] = [
            (
                |s| set(&mut s["initContainers"][1], "image", "evil:latest"),
                "not the credgate container",
            ),
            (
                |s| set(&mut s["initContainers"][0], "image", "evil:latest"),
                "not the credgate-init container",
            ),
            (
                |s| set(&mut s["initContainers"][0], "command", "[/bin/true]"),
                "not the credgate-init container",
            ),
            (
                |s| {
                    set(
                        &mut s["initContainers"][1],
                        "command",
                        "[sh, -c, 'nc -lk 8080']",
                    )
                },
                "not the credgate container",
            ),
            (
                |s| {
                    set(
                        &mut s["initContainers"][1],
                        "env",
                        "[{ name: LD_PRELOAD, value: /x.so }]",
                    )
                },
                "not the credgate container",
            ),
            (
                |s| {
                    set(
                        &mut s["initContainers"][1],
                        "envFrom",
                        "[{ configMapRef: { name: x } }]",
                    )
                },
                "not the credgate container",
            ),
            (
                |s| {
                    s["initContainers"][1]["args"]
                        .as_sequence_mut()
                        .unwrap()
                        .push("--check".into())
                },
                "not the credgate container",
            ),
            (
                |s| {
                    s["initContainers"][1]["volumeMounts"]
                        .as_sequence_mut()
                        .unwrap()
                        .push(
                            serde_yaml::from_str("{ name: x, mountPath: /usr/local/bin }").unwrap(),
                        )
                },
                "not the credgate container",
            ),
            (
                |s| {
                    set(
                        &mut s["volumes"][0]["configMap"],
                        "name",
                        "attackers-config",
                    )
                },
                "volume credgate-config",
            ),
            (
                |s| s["initContainers"].as_sequence_mut().unwrap().swap(0, 1),
                "not the credgate-init container",
            ),
            (
                |s| {
                    set(
                        &mut s["containers"][0]["securityContext"],
                        "runAsUser",
                        "65532",
                    )
                },
                "credgate's user",
            ),
            (
                |s| set(&mut s["containers"][0], "env", "[]"),
                "does not set HTTP_PROXY",
            ),
            (
                |s| set(&mut s["containers"][0], "volumeMounts", "[]"),
                "does not mount credgate's CA",
            ),
            (
                |s| {
                    s["containers"].as_sequence_mut().unwrap().push(
                        serde_yaml::from_str(
                            "{ name: credgate, image: evil, securityContext: { runAsUser: 1000 } }",
                        )
                        .unwrap(),
                    )
                },
                "a second container is named credgate",
            ),
        ];
        for (change, reason) in cases {
            match tampered(change) {
                Err(InjectError::Refused { refusals }) => {
                    let text = refusals[0].to_string();
                    assert!(text.contains(reason), "{reason}: {text}");
                    assert!(text.contains("annotation, but"), "{text}");
                }
                other => panic!("{reason}: not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn what_is_not_a_workload_passes_through_with_a_note() {
        let input = "apiVersion: v1\nkind: Service\nmetadata: { name: s }\nspec: { ports: [{ port: 80 }] }\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: c }\ndata: { a: b }\n";
        let out = inject(input).unwrap();
        let before: Vec<Value> = serde_yaml::Deserializer::from_str(input)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let after: Vec<Value> = serde_yaml::Deserializer::from_str(&out.yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(before, after);
        assert_eq!(out.notes.len(), 2);
        assert!(
            out.notes[0].contains("Service/s") && out.notes[0].contains("not a workload"),
            "{:?}",
            out.notes
        );
    }

    #[test]
    fn a_list_has_each_item_injected() {
        let deployment: Value = serde_yaml::from_str(&workload("Deployment")).unwrap();
        let service: Value = serde_yaml::from_str("kind: Service\nmetadata: { name: s }").unwrap();
        let list_doc =
            yaml(json!({ "apiVersion": "v1", "kind": "List", "items": [deployment, service] }));
        let out = one(&serde_yaml::to_string(&list_doc).unwrap());
        assert_eq!(out["kind"], "List");
        assert_eq!(
            pod_of(&out["items"][0])["spec"]["initContainers"][1]["name"],
            SIDECAR
        );
        assert_eq!(out["items"][1], service);
    }

    #[test]
    fn several_documents_are_each_injected() {
        let input = format!("{}---\n{}", workload("Pod"), workload("Job"));
        let out = inject(&input).unwrap();
        assert_eq!(out.yaml.matches("credgate-init").count(), 2);
    }

    #[test]
    fn a_pod_that_cannot_be_made_safe_is_refused_with_the_reason() {
        let cases = [
            ("securityContext: { runAsUser: 1000 }", "securityContext: { runAsUser: 0 }", "runs as root"),
            ("securityContext: { runAsUser: 1000 }", "securityContext: { runAsUser: 65532 }", "credgate's user"),
            ("securityContext: { runAsUser: 1000 }", "securityContext: { runAsNonRoot: false }", "sets no runAsUser"),
            ("securityContext: { runAsUser: 1000 }", "imagePullPolicy: Always", "sets no runAsUser"),
            ("securityContext: { runAsUser: 1000 }", "securityContext: { runAsUser: 1000, runAsGroup: 65532 }", "credgate's group"),
            ("- name: agent", "- name: credgate", "already named credgate"),
            ("- name: agent", "- name: credgate-init", "already named credgate-init"),
            ("image: python:3.12-slim", "image: p\n          env: [{ name: HTTPS_PROXY, value: 'http://corp:3128' }]", "sets HTTPS_PROXY"),
            ("image: python:3.12-slim", "image: p\n          env: [{ name: SSL_CERT_FILE, valueFrom: { configMapKeyRef: { name: a, key: b } } }]", "sets SSL_CERT_FILE"),
            ("containers:", "hostNetwork: true\n      containers:", "hostNetwork"),
            ("{ runAsUser: 1000 }", "{ runAsUser: 1000, privileged: true }", "is privileged"),
            ("{ runAsUser: 1000 }", "{ runAsUser: 1000, capabilities: { add: [NET_ADMIN] } }", "NET_ADMIN"),
            ("{ runAsUser: 1000 }", "{ runAsUser: 1000, capabilities: { add: [cap_setuid] } }", "SETUID"),
            ("{ runAsUser: 1000 }", "{ runAsUser: 1000, capabilities: { add: [all] } }", "ALL"),
            ("{ runAsUser: 1000 }", "{ runAsUser: 1000, allowPrivilegeEscalation: true }", "allowPrivilegeEscalation"),
            ("template:\n", "template:\n    metadata: { annotations: { credgate.dev/injected: 'true' } }\n", "init container number 1 is not the credgate-init container"),
            ("containers:", "securityContext: { runAsUser: 0 }\n      containers:\n        - { name: other, image: o }", "runs as root"),
            ("containers:", "volumes: [{ name: credgate-state, emptyDir: {} }]\n      containers:", "volume named credgate-state"),
        ];
        for (from, to, reason) in cases {
            let input = workload("Deployment").replace(from, to);
            assert_ne!(input, workload("Deployment"), "{to}");
            let text = refusal(&input);
            assert!(
                text.contains(reason) && text.contains("document 1 (Deployment/a)"),
                "{to}: {text}"
            );
        }
        // The pod's user is the default of its containers.
        let input = workload("Pod")
            .replace(
                "containers:",
                "securityContext: { runAsUser: 0 }\n  containers:",
            )
            .replace(
                "securityContext: { runAsUser: 1000 }",
                "imagePullPolicy: Always",
            );
        assert!(refusal(&input).contains("runs as root"));
    }

    #[test]
    fn one_refusal_refuses_the_whole_input() {
        let bad = workload("Pod")
            .replace("runAsUser: 1000", "runAsUser: 0")
            .replace("name: a", "name: b");
        let input = format!("{}---\n{bad}", workload("Pod"));
        match inject(&input) {
            Err(InjectError::Refused { refusals }) => {
                assert_eq!(refusals.len(), 1);
                assert_eq!(refusals[0].document, 2);
                assert_eq!(refusals[0].object, "Pod/b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_proxy_value_already_set_is_kept() {
        let input = workload("Pod").replace(
            "image: python:3.12-slim",
            "image: p\n      env: [{ name: HTTPS_PROXY, value: 'http://127.0.0.1:8080' }]",
        );
        let out = one(&input);
        let env = list(&out["spec"]["containers"][0]["env"]);
        assert_eq!(env.iter().filter(|e| e["name"] == "HTTPS_PROXY").count(), 1);
    }

    #[test]
    fn malformed_yaml_is_an_error_naming_the_document() {
        let input = format!("{}---\nkind: [unclosed\n", workload("Pod"));
        match inject(&input) {
            Err(InjectError::Malformed { document, .. }) => assert_eq!(document, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_automounted_api_token_is_noted_not_changed() {
        let out = inject(&workload("Pod")).unwrap();
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("automountServiceAccountToken")),
            "{:?}",
            out.notes
        );
        let input = workload("Pod").replace(
            "containers:",
            "automountServiceAccountToken: false\n  containers:",
        );
        assert!(inject(&input).unwrap().notes.is_empty());
    }
}
