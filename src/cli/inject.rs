//! `credgate inject`: reads Kubernetes YAML (a file or stdin, any number of
//! documents) and writes it to stdout with credgate added to every
//! workload, as `examples/kubernetes/` has it. Notes go to stderr; a
//! workload that cannot be made safe refuses the whole input, and nothing
//! is written.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::kube::inject::{self, InjectOptions};

/// `credgate inject`
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// The YAML to read; stdin when absent or `-`.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub options: InjectFlags,
}

/// What is injected: shared by `credgate inject` and `credgate webhook`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectFlags {
    /// credgate's image.
    #[arg(long, value_name = "IMAGE", default_value = "credgate")]
    pub image: String,
    /// The lock-down's image (the Dockerfile's `lockdown` target).
    #[arg(long, value_name = "IMAGE", default_value = "credgate-lockdown")]
    pub lockdown_image: String,
    /// The ConfigMap holding `credgate.yaml`.
    #[arg(long, value_name = "NAME", default_value = "credgate-config")]
    pub config_map: String,
    /// The Secret holding the CA's `ca.crt` and `ca.key`, mounted into
    /// credgate's container only.
    #[arg(long, value_name = "NAME", default_value = "credgate-ca")]
    pub ca_secret: String,
    /// The Secret holding the credential sources' secrets, mounted into
    /// credgate's container only (optional in the pod).
    #[arg(long, value_name = "NAME", default_value = "credgate-sources")]
    pub sources_secret: String,
    /// The ConfigMap holding `ca.crt` alone, mounted into the agent's
    /// containers.
    #[arg(long, value_name = "NAME", default_value = "credgate-ca-cert")]
    pub ca_cert_config_map: String,
    /// credgate's user and group (the image's), exempt from the lock-down.
    #[arg(long, value_name = "UID", default_value_t = 65532)]
    pub proxy_uid: u32,
    /// The proxy's port on loopback (the config's `listen`).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub proxy_port: u16,
    /// The transparent listener's port (the config's `transparent_listen`).
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    pub transparent_port: u16,
    /// The admin port (the config's `admin.listen`), probed by the kubelet.
    #[arg(long, value_name = "PORT", default_value_t = 8081)]
    pub admin_port: u16,
    /// Mount a projected service-account token with this audience into
    /// credgate (for `oauth2_token_exchange` or Vault's Kubernetes login).
    #[arg(long, value_name = "AUDIENCE")]
    pub token_audience: Option<String>,
}

impl InjectFlags {
    /// The options these flags describe, checked.
    pub fn to_options(&self) -> anyhow::Result<InjectOptions> {
        anyhow::ensure!(
            self.proxy_uid != 0,
            "--proxy-uid must be a non-root user: the lock-down exempts every process of it"
        );
        let ports = [self.proxy_port, self.transparent_port, self.admin_port];
        anyhow::ensure!(
            ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
            "--proxy-port, --transparent-port and --admin-port must differ"
        );
        Ok(InjectOptions {
            config_map: self.config_map.clone(),
            ca_secret: self.ca_secret.clone(),
            sources_secret: self.sources_secret.clone(),
            ca_cert_config_map: self.ca_cert_config_map.clone(),
            image: self.image.clone(),
            lockdown_image: self.lockdown_image.clone(),
            proxy_uid: self.proxy_uid,
            proxy_port: self.proxy_port,
            transparent_port: self.transparent_port,
            admin_port: self.admin_port,
            token_audience: self.token_audience.clone(),
        })
    }
}

/// Runs `credgate inject`; returns the exit code.
pub fn run(args: &InjectArgs) -> anyhow::Result<i32> {
    let options = args.options.to_options()?;
    let input = match args.file.as_deref() {
        None => read_stdin()?,
        Some(path) if path.as_os_str() == "-" => read_stdin()?,
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    let injected = match inject::inject_documents(&input, &options) {
        Ok(injected) => injected,
        Err(e) => {
            eprintln!("credgate inject: nothing written: {e}");
            return Ok(1);
        }
    };
    for note in &injected.notes {
        eprintln!("credgate inject: {note}");
    }
    std::io::stdout()
        .lock()
        .write_all(injected.yaml.as_bytes())
        .context("writing the injected YAML")?;
    Ok(0)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the YAML from stdin")?;
    Ok(input)
}
