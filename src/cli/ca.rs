//! `credgate ca`: manage the interception CA.

use std::path::PathBuf;

use crate::tls::{init_ca, CaFiles};

/// Arguments of `credgate ca`.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// What to do with the CA.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// The `credgate ca` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create the interception CA: DIR/ca.crt (what agents trust) and
    /// DIR/ca.key (mode 0600).
    Init {
        /// Directory to write the CA into (created with mode 0700 if missing).
        #[arg(long, default_value = ".credgate")]
        out: PathBuf,
        /// Replace an existing CA. Agents trusting the old one must be given the new certificate.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `credgate ca …`, printing the paths written and how agents come to
/// trust the CA. Never prints key material.
pub fn run(args: &CaArgs) -> anyhow::Result<()> {
    match &args.command {
        CaCommand::Init { out, force } => {
            let files = init_ca(out, *force)?;
            print!("{}", init_report(&files));
            Ok(())
        }
    }
}

fn init_report(files: &CaFiles) -> String {
    let cert = files.cert.display();
    format!(
        "wrote {cert} (CA certificate)\n\
         wrote {key} (CA private key, mode 0600: keep it secret)\n\
         agents trust {cert}; `credgate run` sets the CA variables for you\n",
        key = files.key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::random_bytes;

    fn temp_out() -> PathBuf {
        let suffix = u64::from_be_bytes(random_bytes::<8>());
        std::env::temp_dir().join(format!("credgate-cli-ca-test-{suffix:016x}"))
    }

    #[test]
    fn init_writes_the_ca_and_refuses_a_second_time_without_force() {
        let out = temp_out();
        let args = |force| CaArgs {
            command: CaCommand::Init {
                out: out.clone(),
                force,
            },
        };
        run(&args(false)).unwrap();
        assert!(out.join("ca.crt").is_file());
        assert!(out.join("ca.key").is_file());
        let err = run(&args(false)).unwrap_err().to_string();
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        run(&args(true)).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn report_names_both_files_and_how_agents_trust_the_ca() {
        let files = CaFiles {
            cert: PathBuf::from(".credgate/ca.crt"),
            key: PathBuf::from(".credgate/ca.key"),
        };
        let report = init_report(&files);
        assert!(report.contains("wrote .credgate/ca.crt"), "{report}");
        assert!(report.contains("wrote .credgate/ca.key"), "{report}");
        assert!(report.contains("agents trust .credgate/ca.crt"), "{report}");
        assert!(!report.contains("PRIVATE KEY"), "{report}");
    }

    #[test]
    fn parses_from_the_command_line() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            ca: Top,
        }
        #[derive(Debug, clap::Subcommand)]
        enum Top {
            Ca(CaArgs),
        }
        let Cli { ca: Top::Ca(args) } =
            Cli::try_parse_from(["credgate", "ca", "init", "--out", "/x", "--force"]).unwrap();
        let CaCommand::Init { out, force } = args.command;
        assert_eq!(out, PathBuf::from("/x"));
        assert!(force);
        let Cli { ca: Top::Ca(args) } = Cli::try_parse_from(["credgate", "ca", "init"]).unwrap();
        let CaCommand::Init { out, force } = args.command;
        assert_eq!(out, PathBuf::from(".credgate"));
        assert!(!force);
    }
}
