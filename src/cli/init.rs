//! `credgate init`: installs the egress lock-down in this network namespace
//! (a pod's init container, a CI job, a workstation namespace), with `nft`,
//! or with iptables and ip6tables where nft is not installed.
//!
//! `--dry-run` prints the exact script, `--check` verifies an installed
//! ruleset against the one these arguments describe, `--remove` removes it.
//! Installing is one `nft` transaction, so a failure leaves nothing half
//! installed, and installing again replaces the table rather than adding a
//! second one.

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::kube::lockdown::{self, Family, Lockdown};

/// `credgate init`
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// credgate's own user, exempt from the lock-down (its upstream
    /// connections go out). Not root: every process of this user bypasses.
    #[arg(long, value_name = "UID", required_unless_present = "remove")]
    pub proxy_uid: Option<u32>,
    /// The port of credgate's transparent listener, where every other
    /// outbound TCP connection is redirected.
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    pub transparent_port: u16,
    /// credgate's admin port, refused on loopback to every other user.
    #[arg(long, value_name = "PORT", default_value_t = 8081)]
    pub admin_port: u16,
    /// A DNS resolver every user may reach on port 53 (repeatable). Default:
    /// the nameservers of /etc/resolv.conf.
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<IpAddr>,
    /// Print the script that would be installed, and change nothing.
    #[arg(long, conflicts_with_all = ["check", "remove"])]
    pub dry_run: bool,
    /// Verify the installed ruleset is the one these arguments describe
    /// (exit 0) or say how it differs (exit 1).
    #[arg(long, conflicts_with = "remove")]
    pub check: bool,
    /// Remove the lock-down.
    #[arg(long)]
    pub remove: bool,
    /// The tool that installs it: `nft`, or `iptables` (iptables-nft or
    /// legacy, with ip6tables); `auto` takes nft where it is installed.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
}

/// `--backend`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// nft where installed, else iptables.
    Auto,
    /// One nftables table, `inet credgate`.
    Nft,
    /// Chains of credgate's own in iptables and ip6tables.
    Iptables,
}

impl Backend {
    fn resolve(self) -> Backend {
        match self {
            Backend::Auto if found("nft") => Backend::Nft,
            Backend::Auto => Backend::Iptables,
            chosen => chosen,
        }
    }

    fn install(self, wanted: &Lockdown) -> anyhow::Result<()> {
        match self {
            Backend::Iptables => {
                for family in FAMILIES {
                    restore(family, &wanted.iptables_restore(family))?;
                    for (table, chain) in JUMPS {
                        let present =
                            iptables(family, &["-t", table, "-C", "OUTPUT", "-j", chain]).is_ok();
                        if !present {
                            iptables(family, &["-t", table, "-I", "OUTPUT", "1", "-j", chain])?;
                        }
                    }
                }
                Ok(())
            }
            _ => nft_script(&wanted.install_script()),
        }
    }

    /// The installed lock-down: `None` when there is none, else whether it
    /// is `wanted`, and what is installed.
    fn state(self, wanted: &Lockdown) -> anyhow::Result<Option<(bool, String)>> {
        match self {
            Backend::Iptables => {
                let mut all = String::new();
                let mut matches = true;
                let mut any = false;
                for family in FAMILIES {
                    let saved = command_output(save_command(family), &[])?;
                    any |= saved.contains("CREDGATE_");
                    matches &= lockdown::iptables_matches(&saved, wanted, family);
                    all.extend(
                        saved
                            .lines()
                            .filter(|l| l.contains("CREDGATE_"))
                            .map(|l| format!("{l}\n")),
                    );
                }
                Ok(any.then_some((matches, all)))
            }
            _ => Ok(installed()?.map(|listed| (lockdown::matches(&listed, wanted), listed))),
        }
    }

    fn remove(self) -> anyhow::Result<()> {
        match self {
            Backend::Iptables => {
                for family in FAMILIES {
                    for (table, chain) in JUMPS {
                        // Every jump, however many were added by hand.
                        for _ in 0..100 {
                            if iptables(family, &["-t", table, "-D", "OUTPUT", "-j", chain])
                                .is_err()
                            {
                                break;
                            }
                        }
                        let exists = iptables(family, &["-t", table, "-L", chain, "-n"]).is_ok();
                        if exists {
                            iptables(family, &["-t", table, "-F", chain])?;
                            iptables(family, &["-t", table, "-X", chain])?;
                        }
                    }
                }
                Ok(())
            }
            _ => nft_script(&lockdown::remove_script()),
        }
    }
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];
const JUMPS: [(&str, &str); 2] = [
    ("nat", lockdown::CAPTURE_CHAIN),
    ("filter", lockdown::EGRESS_CHAIN),
];

impl InitArgs {
    fn lockdown(&self) -> anyhow::Result<Lockdown> {
        let proxy_uid = self.proxy_uid.context("--proxy-uid is required")?;
        if proxy_uid == 0 {
            bail!(
                "--proxy-uid 0: credgate must run as its own non-root user, since every \
                 process of that user is exempt from the lock-down"
            );
        }
        let dns = if self.dns.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            lockdown::resolv_conf_nameservers(&text)
        } else {
            self.dns.clone()
        };
        if dns.is_empty() {
            eprintln!("credgate init: no DNS resolver (none given, none in /etc/resolv.conf): DNS is refused too");
        }
        Ok(Lockdown {
            proxy_uid,
            transparent_port: self.transparent_port,
            admin_port: self.admin_port,
            dns,
        })
    }
}

/// Runs `credgate init`; returns the exit code.
pub fn run(args: &InitArgs) -> anyhow::Result<i32> {
    let backend = args.backend.resolve();
    if args.remove {
        backend.remove().context("removing the lock-down")?;
        println!("credgate init: the lock-down is removed");
        return Ok(0);
    }
    let wanted = args.lockdown()?;
    if args.dry_run {
        match backend {
            Backend::Iptables => {
                for family in FAMILIES {
                    println!("# {}-restore --noflush", family_tool(family));
                    print!("{}", wanted.iptables_restore(family));
                }
            }
            _ => print!("{}", wanted.install_script()),
        }
        return Ok(0);
    }
    if args.check {
        return Ok(match backend.state(&wanted)? {
            None => {
                println!("credgate init: no lock-down is installed");
                1
            }
            Some((true, _)) => {
                println!("credgate init: the lock-down is installed as described");
                0
            }
            Some((false, installed)) => {
                println!(
                    "credgate init: the installed lock-down differs from the one described; \
                     run `credgate init` with the same arguments to replace it\n\
                     installed:\n{installed}"
                );
                1
            }
        });
    }
    // What the kernel holds is what was asked for, or nothing stays.
    let installed = backend
        .install(&wanted)
        .context("installing the lock-down")
        .and_then(|()| match backend.state(&wanted)? {
            Some((true, _)) => Ok(()),
            _ => Err(anyhow::anyhow!(
                "the installed ruleset did not read back as written"
            )),
        });
    if let Err(e) = installed {
        let _ = backend.remove();
        return Err(e.context("nothing was left installed"));
    }
    println!(
        "credgate init: lock-down installed ({}): TCP from every user but {} goes to port {}; \
         other egress refused but DNS to {}",
        if backend == Backend::Iptables {
            "iptables"
        } else {
            "nft"
        },
        wanted.proxy_uid,
        wanted.transparent_port,
        if wanted.dns.is_empty() {
            "none".to_owned()
        } else {
            wanted
                .dns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(0)
}

fn family_tool(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn save_command(family: Family) -> Command {
    Command::new(format!("{}-save", family_tool(family)))
}

/// `iptables ARGS` (or `ip6tables`), waiting for the xtables lock.
fn iptables(family: Family, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(family_tool(family));
    cmd.arg("-w").args(args);
    command_output(cmd, &[]).map(drop)
}

/// `iptables-restore --noflush` (or `ip6tables-restore`) of `rules`.
fn restore(family: Family, rules: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new(format!("{}-restore", family_tool(family)));
    cmd.args(["-w", "--noflush"]);
    command_output(cmd, rules.as_bytes()).map(drop)
}

/// Runs `cmd` with `input` on its stdin; its stdout, or an error with its stderr.
fn command_output(cmd: Command, input: &[u8]) -> anyhow::Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    run_tool(cmd, input)?.map_err(|stderr| tool_error(&program, &stderr))
}

/// Runs `cmd` with `input` on its stdin: `Ok(stdout)` when it succeeded,
/// `Err(stderr)` when it said no; an error when it could not run at all.
fn run_tool(mut cmd: Command, input: &[u8]) -> anyhow::Result<Result<String, String>> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {program} ({e}): credgate init needs nftables or iptables \
                 (Debian packages nftables, iptables)"
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .with_context(|| format!("writing to {program}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program}"))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok(if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    })
}

/// Whether `program` is on the PATH.
fn found(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The installed table as `nft` lists it; `None` when there is none.
fn installed() -> anyhow::Result<Option<String>> {
    let mut list = Command::new("nft");
    list.args(["list", "table", "inet", lockdown::TABLE]);
    match run_tool(list, &[])? {
        Ok(listed) => Ok(Some(listed)),
        Err(stderr) if stderr.contains("No such file or directory") => Ok(None),
        Err(stderr) => Err(tool_error("nft", &stderr)),
    }
}

/// Runs `script` with `nft -f -`, as one transaction.
fn nft_script(script: &str) -> anyhow::Result<()> {
    let mut nft = Command::new("nft");
    nft.args(["-f", "-"]);
    command_output(nft, script.as_bytes()).map(drop)
}

fn tool_error(program: &str, stderr: &str) -> anyhow::Error {
    let stderr = stderr.trim();
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        anyhow::anyhow!(
            "{program}: {stderr}: credgate init needs CAP_NET_ADMIN in this network namespace \
             (Kubernetes: securityContext.capabilities.add [NET_ADMIN, NET_RAW])"
        )
    } else {
        anyhow::anyhow!("{program}: {stderr}")
    }
}
