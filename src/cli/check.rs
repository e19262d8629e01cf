//! `credgate check`: validate a configuration and print its scopes in plain words.

use std::path::PathBuf;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::provider::ProcessEnv;

/// Arguments of `credgate check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// Prints every problem (exit code 1) or a plain-words summary (exit code 0).
pub fn run(args: &CheckArgs) -> i32 {
    match Config::load(&args.config, &ProcessEnv) {
        Err(errors) => {
            eprint!("{errors}");
            1
        }
        Ok(config) => {
            print!("{}", summary(&config));
            println!("{} is valid.", args.config.display());
            0
        }
    }
}

/// What the configuration does, in words.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "proxy listens on {}; admin API on {}\n",
        config.listen, config.admin.listen
    ));
    out.push_str(&format!("decision log: {}\n", config.audit_path.display()));
    if let Some(ambient) = &config.ambient_task {
        out.push_str(&format!(
            "sidecar mode: ambient task for agent {} with scopes {}\n",
            ambient.agent,
            ambient.scopes.join(", ")
        ));
    }
    out.push_str(&config.describe_scopes());
    out
}
