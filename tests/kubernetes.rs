//! The Kubernetes example (`examples/kubernetes/`): the base and every
//! overlay render with `kubectl kustomize`, validate against the Kubernetes
//! 1.29 schemas (`kubernetes-validate`, installed by tests/run.sh), and the
//! rendered pod keeps the agent away from credgate's secrets and admin API:
//! every container locked down, the lock-down installed before credgate
//! starts, the secrets mounted into credgate's container only, and every
//! path credgate writes on an emptyDir. There is no cluster here: what is
//! checked is what the manifests say.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use support::kube::{self, list, text, Pod};
use support::*;

/// The oldest Kubernetes the manifests are written for: native sidecars
/// (an init container with `restartPolicy: Always`) are on by default from
/// 1.29.
const KUBERNETES_VERSION: &str = "1.29.0";

fn pods() -> Vec<(PathBuf, Pod)> {
    kube::kustomizations()
        .into_iter()
        .map(|dir| {
            let pod = Pod::render(&dir);
            (dir, pod)
        })
        .collect()
}

fn port_of(value: &Value, what: &str) -> u16 {
    let port = value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a port number: {value:?}"));
    u16::try_from(port).unwrap()
}

/// A container's port, given by number or by name.
fn container_port(container: &Value, port: &Value) -> u16 {
    match port.as_str() {
        Some(name) => {
            let named = list(&container["ports"])
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no port named {name}"));
            port_of(&named["containerPort"], "containerPort")
        }
        None => port_of(port, "a probe's port"),
    }
}

/// The pod's configuration (the ConfigMap's credgate.yaml) and its listeners.
struct PodConfig {
    raw: Value,
    listen: SocketAddr,
    admin: SocketAddr,
}

fn pod_config(pod: &Pod) -> PodConfig {
    let yaml = pod.credgate_config();
    let raw: Value = serde_yaml::from_str(&yaml).unwrap();
    let address = |value: &Value, what: &str| -> SocketAddr {
        text(value, what)
            .parse()
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    PodConfig {
        listen: address(&raw["listen"], "listen"),
        admin: address(&raw["admin"]["listen"], "admin.listen"),
        raw,
    }
}

#[test]
fn the_base_and_every_overlay_render() {
    let rendered: Vec<(PathBuf, Vec<Value>)> = kube::kustomizations()
        .into_iter()
        .map(|dir| {
            let objects = kube::objects(&kube::render(&dir));
            (dir, objects)
        })
        .collect();
    for (dir, objects) in &rendered {
        for kind in ["Deployment", "ConfigMap", "NetworkPolicy", "ServiceAccount"] {
            kube::only(objects, kind);
        }
        // Nothing secret is rendered: the Secrets are the user's to create.
        assert!(
            !objects.iter().any(|o| o["kind"] == "Secret"),
            "{} renders a Secret",
            dir.display()
        );
    }
    // Each overlay changes something real.
    let (_, base) = &rendered[0];
    for (dir, overlay) in &rendered[1..] {
        assert_ne!(base, overlay, "{} changes nothing", dir.display());
        let deployment = kube::only(overlay, "Deployment");
        assert!(
            deployment["metadata"]["namespace"].is_string(),
            "{} names no namespace",
            dir.display()
        );
    }
}

#[test]
fn the_rendered_manifests_validate_against_the_kubernetes_schemas() {
    let scratch = TempDir::new();
    for (i, dir) in kube::kustomizations().into_iter().enumerate() {
        let file = scratch.path().join(format!("rendered-{i}.yaml"));
        std::fs::write(&file, kube::render(&dir)).unwrap();
        let mut cmd = std::process::Command::new("kubernetes-validate");
        cmd.args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
            .arg(&file);
        let out = run_bounded(cmd, COMMAND_LIMIT);
        assert_eq!(
            out.code,
            Some(0),
            "{} (pip install 'kubernetes-validate>=1.31,<2'; tests/run.sh does): {out:?}",
            dir.display()
        );
        assert!(out.all().contains("passed"), "{out:?}");
    }
}

#[test]
fn every_container_is_locked_down_and_only_the_lockdown_runs_as_root() {
    for (dir, pod) in pods() {
        let containers = pod.all_containers();
        assert!(containers.len() >= 3, "{}", dir.display());
        for container in containers {
            let name = text(&container["name"], "name");
            let sc = &container["securityContext"];
            let at = format!("{}: container {name}", dir.display());
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{at}");
            assert_eq!(list(&sc["capabilities"]["drop"]), ["ALL"], "{at}");
            let added: Vec<&str> = list(&sc["capabilities"]["add"])
                .iter()
                .map(|c| text(c, "a capability"))
                .collect();
            for field in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        container["resources"][field][resource].is_string(),
                        "{at}: no resources.{field}.{resource}"
                    );
                }
            }
            if name == "credgate-init" {
                // Root in the pod's network namespace to install nftables:
                // documented in the manifest; it exits before the rest start.
                assert_eq!(sc["runAsUser"], 0, "{at}");
                assert_eq!(sc["runAsNonRoot"], false, "{at}");
                assert_eq!(added, ["NET_ADMIN", "NET_RAW"], "{at}");
            } else {
                assert_eq!(sc["runAsNonRoot"], true, "{at}");
                assert!(added.is_empty(), "{at}: adds {added:?}");
                for id in ["runAsUser", "runAsGroup"] {
                    assert!(
                        sc[id].as_u64().is_some_and(|id| id != 0),
                        "{at}: {id} must be a non-root number"
                    );
                }
            }
        }
        // credgate and the agent are different users (and groups): every
        // process of credgate's user is exempt from the lock-down.
        let ids = |name: &str| {
            let sc = &pod.container(name)["securityContext"];
            (sc["runAsUser"].clone(), sc["runAsGroup"].clone())
        };
        let (credgate_uid, credgate_gid) = ids("credgate");
        let (agent_uid, agent_gid) = ids("agent");
        assert_ne!(credgate_uid, agent_uid, "{}", dir.display());
        assert_ne!(credgate_gid, agent_gid, "{}", dir.display());
        assert!(
            pod.spec["securityContext"]["fsGroup"].is_null(),
            "an fsGroup would give the agent a group of credgate's"
        );
    }
}

#[test]
fn the_lockdown_runs_first_and_credgate_is_a_native_sidecar_probed_on_its_admin_port() {
    for (dir, pod) in pods() {
        let at = dir.display().to_string();
        let order: Vec<&str> = pod
            .init_containers()
            .iter()
            .map(|c| text(&c["name"], "name"))
            .collect();
        assert_eq!(order, ["credgate-init", "credgate"], "{at}");
        let config = pod_config(&pod);
        let sidecar = pod.container("credgate");
        assert_eq!(sidecar["restartPolicy"], "Always", "{at}");
        assert_eq!(
            list(&sidecar["args"]),
            ["serve", "--config", "/etc/credgate/credgate.yaml"],
            "{at}"
        );
        // The proxy stays on loopback, for the pod only; the admin API is
        // on the pod address too, for the kubelet's probes.
        assert!(config.listen.ip().is_loopback(), "{at}: {}", config.listen);
        assert!(
            config.admin.ip().is_unspecified(),
            "{at}: the kubelet cannot probe {}",
            config.admin
        );
        for (probe, path) in [
            ("startupProbe", "/readyz"),
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
        ] {
            let get = &sidecar[probe]["httpGet"];
            assert_eq!(get["path"], path, "{at}: {probe}");
            assert_eq!(
                container_port(sidecar, &get["port"]),
                config.admin.port(),
                "{at}: {probe}"
            );
        }

        // The lock-down exempts credgate's user and guards its admin port.
        let uid = sidecar["securityContext"]["runAsUser"].as_u64().unwrap();
        let init = pod.container("credgate-init");
        let args: Vec<String> = list(&init["args"])
            .iter()
            .map(|a| text(a, "an argument").to_owned())
            .collect();
        let transparent_port = "15001".to_owned();
        assert_eq!(
            args,
            [
                "init".to_owned(),
                "--proxy-uid".to_owned(),
                uid.to_string(),
                "--transparent-port".to_owned(),
                transparent_port,
                "--admin-port".to_owned(),
                config.admin.port().to_string(),
            ],
            "{at}"
        );
        // The same arguments describe a valid lock-down.
        let mut cmd = credgate(&args);
        cmd.args(["--dry-run", "--dns", "10.96.0.10"]);
        let out = run_bounded(cmd, COMMAND_LIMIT);
        out.expect_code(0);
        assert!(
            out.stdout.contains(&format!("meta skuid {uid} accept")),
            "{out:?}"
        );
        assert!(
            out.stdout.contains(&format!(
                "tcp dport {} reject with tcp reset",
                config.admin.port()
            )),
            "{out:?}"
        );
        // The agent starts after both: it is a regular container.
        assert!(list(&pod.spec["containers"])
            .iter()
            .any(|c| c["name"] == "agent"));
        // Shutdown: time for credgate to end its tasks and revoke.
        let grace = pod.spec["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        assert!(grace >= 30, "{at}: {grace}s");
    }
}

#[test]
fn credgates_secrets_and_its_token_are_mounted_into_its_container_only() {
    for (dir, pod) in pods() {
        let at = dir.display().to_string();
        assert_eq!(pod.spec["automountServiceAccountToken"], false, "{at}");
        let mut secret_volumes = 0;
        for volume in list(&pod.spec["volumes"]) {
            let name = text(&volume["name"], "a volume's name");
            let secret = !volume["secret"].is_null()
                || list(&volume["projected"]["sources"])
                    .iter()
                    .any(|s| !s["secret"].is_null() || !s["serviceAccountToken"].is_null());
            if secret {
                secret_volumes += 1;
                assert_eq!(pod.mounted_by(name), ["credgate"], "{at}: volume {name}");
            }
        }
        assert!(secret_volumes >= 3, "{at}");
        // The CA key in particular.
        let ca = pod.volume("credgate-ca");
        assert_eq!(ca["secret"]["secretName"], "credgate-ca", "{at}");
        assert_eq!(pod.mounted_by("credgate-ca"), ["credgate"], "{at}");
        // The projected token is bound to an audience.
        let token = list(&pod.volume("credgate-token")["projected"]["sources"])
            .iter()
            .find_map(|s| s.get("serviceAccountToken"))
            .expect("a projected service-account token");
        assert!(
            token["audience"].as_str().is_some_and(|a| !a.is_empty()),
            "{at}: {token:?}"
        );
        // The agent mounts its CA certificate, and nothing of credgate's.
        let agent = pod.container("agent");
        for mount in list(&agent["volumeMounts"]) {
            let volume = pod.volume(text(&mount["name"], "a mount's volume"));
            assert!(
                !volume["configMap"].is_null() || !volume["emptyDir"].is_null(),
                "{at}: the agent mounts {volume:?}"
            );
            assert_ne!(volume["name"], "credgate-config", "{at}");
            assert!(
                !pod.mounted_by(text(&volume["name"], "name"))
                    .contains(&"credgate".to_owned()),
                "{at}: the agent shares the volume {volume:?} with credgate"
            );
        }
    }
}

#[test]
fn the_agent_is_pointed_at_credgate_and_trusts_the_ca_certificate_only() {
    for (dir, pod) in pods() {
        let at = dir.display().to_string();
        let config = pod_config(&pod);
        let agent = pod.container("agent");
        let env: Vec<(String, String)> = list(&agent["env"])
            .iter()
            .map(|e| {
                (
                    text(&e["name"], "an env name").to_owned(),
                    text(&e["value"], "an env value").to_owned(),
                )
            })
            .collect();
        let value = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{at}: the agent has no {name}"))
        };
        // What `credgate run` gives a command, less the task id: the
        // ambient task needs none.
        let ca = value("SSL_CERT_FILE");
        let proxy_url = format!("http://{}", config.listen);
        for (name, wanted) in credgate::cli::run::agent_env("", &proxy_url, ca) {
            if name != "CREDGATE_TASK_ID" {
                assert_eq!(value(&name), wanted, "{at}: {name}");
            }
        }
        assert!(
            !env.iter().any(|(n, _)| n.starts_with("CREDGATE_")),
            "{at}: {env:?}"
        );
        // The certificate, from a ConfigMap of its own: no key beside it.
        let (_, volume) = kube::mount_holding(&pod, agent, Path::new(ca))
            .unwrap_or_else(|| panic!("{at}: {ca} is on no mount of the agent"));
        let map = &volume["configMap"]["name"];
        assert_eq!(map, "credgate-ca-cert", "{at}");
        let file = Path::new(ca).file_name().unwrap().to_str().unwrap();
        assert_eq!(file, "ca.crt", "{at}");
    }
}

/// Calls `f` with every file path in a configuration: values of `file`,
/// `path` and the CA's `cert` and `key`, wherever they are.
fn each_path(value: &mut Value, key: Option<&str>, f: &mut impl FnMut(&str, &mut String)) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                each_path(v, k.as_str(), f);
            }
        }
        // A scope rule's `paths` are a list: URL paths, not files.
        Value::Sequence(items) => {
            for item in items {
                each_path(item, None, f);
            }
        }
        Value::String(s) => {
            if let Some(key @ ("file" | "path" | "cert" | "key")) = key {
                f(key, s);
            }
        }
        _ => {}
    }
}

#[test]
fn the_config_passes_check_and_every_path_credgate_writes_is_on_an_emptydir() {
    for (dir, pod) in pods() {
        let at = dir.display().to_string();
        let config = pod_config(&pod);
        let sidecar = pod.container("credgate");
        let workdir = Path::new(text(&sidecar["workingDir"], "credgate's workingDir"));
        let on_mount = |relative: &str| {
            let path = workdir.join(relative);
            let (mount, volume) = kube::mount_holding(&pod, sidecar, &path)
                .unwrap_or_else(|| panic!("{at}: {} is on no mount", path.display()));
            (path, mount.clone(), volume.clone())
        };
        // What serve writes: the decision log, and the admin token it
        // creates on first start.
        let writes = [
            text(&config.raw["audit"]["path"], "audit.path"),
            text(&config.raw["admin"]["token"]["file"], "admin.token.file"),
        ];
        for written in writes {
            let (path, mount, volume) = on_mount(written);
            assert!(
                !volume["emptyDir"].is_null(),
                "{at}: {} is on {volume:?}",
                path.display()
            );
            assert_ne!(mount["readOnly"], true, "{at}: {}", path.display());
        }
        // Everything else it reads is on a mount (read-only) that holds it.
        let mut read = Vec::new();
        each_path(&mut config.raw.clone(), None, &mut |key, path| {
            read.push((key.to_owned(), path.clone()));
        });
        assert!(read.len() >= 4, "{at}: {read:?}");
        for (key, file) in &read {
            if writes.contains(&file.as_str()) {
                continue;
            }
            let (path, mount, volume) = on_mount(file);
            assert_eq!(mount["readOnly"], true, "{at}: {key} {}", path.display());
            if key == "key" {
                assert_eq!(
                    volume["secret"]["secretName"],
                    "credgate-ca",
                    "{at}: {}",
                    path.display()
                );
            }
        }

        // `credgate check` reads the files the config names: lay them out
        // under a scratch root as the pod's mounts do (placeholders for the
        // Secrets' and the token's contents), point the config there, and
        // start it in the container's working directory.
        let root = TempDir::new();
        let in_root = |path: &str| -> PathBuf {
            let path = workdir.join(path);
            root.path().join(path.strip_prefix("/").unwrap())
        };
        let cwd = in_root(".");
        std::fs::create_dir_all(&cwd).unwrap();
        for (_, file) in read.iter().filter(|(_, f)| !writes.contains(&f.as_str())) {
            let placed = in_root(file);
            std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
            std::fs::write(&placed, "placeholder\n").unwrap();
        }
        let mut relocated = config.raw.clone();
        each_path(&mut relocated, None, &mut |_, path| {
            if path.starts_with('/') {
                *path = in_root(path).display().to_string();
            }
        });
        let checked = root.path().join("credgate.yaml");
        std::fs::write(&checked, serde_yaml::to_string(&relocated).unwrap()).unwrap();
        let mut cmd = credgate(["check", "--config"]);
        cmd.arg(&checked).current_dir(&cwd);
        let out = run_bounded(cmd, COMMAND_LIMIT);
        out.expect_code(0);
        assert!(
            out.stdout.contains("sidecar mode: ambient task"),
            "{at}: {out:?}"
        );
    }
}
