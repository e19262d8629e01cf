//! `credgate init`: installs the egress lock-down in this network namespace
//! (a pod's init container, a CI job, a workstation namespace), with `nft`.
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

use crate::kube::lockdown::{self, Lockdown};

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
}

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
    if args.remove {
        nft_script(&lockdown::remove_script()).context("removing the lock-down")?;
        println!("credgate init: the lock-down is removed");
        return Ok(0);
    }
    let wanted = args.lockdown()?;
    if args.dry_run {
        print!("{}", wanted.install_script());
        return Ok(0);
    }
    if args.check {
        return Ok(match installed()? {
            None => {
                println!("credgate init: no lock-down is installed");
                1
            }
            Some(listed) if lockdown::matches(&listed, &wanted) => {
                println!("credgate init: the lock-down is installed as described");
                0
            }
            Some(listed) => {
                println!(
                    "credgate init: the installed lock-down differs from the one described; \
                     run `credgate init` with the same arguments to replace it\n\
                     installed:\n{listed}\ndescribed:\n{}",
                    wanted.table()
                );
                1
            }
        });
    }
    nft_script(&wanted.install_script()).context("installing the lock-down")?;
    // What the kernel holds is what was asked for, or nothing stays.
    let listed = installed()?;
    if !listed.is_some_and(|l| lockdown::matches(&l, &wanted)) {
        let _ = nft_script(&lockdown::remove_script());
        bail!("the installed ruleset did not read back as written; removed it");
    }
    println!(
        "credgate init: lock-down installed: TCP from every user but {} goes to port {}; \
         other egress refused but DNS to {}",
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

/// The installed table as `nft` lists it; `None` when there is none.
fn installed() -> anyhow::Result<Option<String>> {
    let out = nft()
        .args(["list", "table", "inet", lockdown::TABLE])
        .output()
        .map_err(not_found)?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such file or directory") {
        return Ok(None);
    }
    Err(nft_error(&stderr))
}

/// Runs `script` with `nft -f -`, as one transaction.
fn nft_script(script: &str) -> anyhow::Result<()> {
    let mut child = nft()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(not_found)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("writing to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(nft_error(&String::from_utf8_lossy(&out.stderr)))
    }
}

fn nft() -> Command {
    Command::new("nft")
}

fn not_found(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot run nft ({e}): credgate init needs nftables (Debian package nftables)")
}

fn nft_error(stderr: &str) -> anyhow::Error {
    let stderr = stderr.trim();
    if stderr.contains("Operation not permitted") {
        anyhow::anyhow!(
            "nft: {stderr}: credgate init needs CAP_NET_ADMIN in this network namespace \
             (Kubernetes: securityContext.capabilities.add [NET_ADMIN, NET_RAW])"
        )
    } else {
        anyhow::anyhow!("nft: {stderr}")
    }
}
