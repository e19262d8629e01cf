//! `credgate serve`: run the proxy and the admin API until SIGTERM/SIGINT;
//! reload the configuration on SIGHUP and when the file changes.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::AuditSink;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::provider::{ProcessEnv, Provider};
use crate::proxy::{Gateway, Resolve, SystemResolver};
use crate::secret::{random_bytes, Secret, SecretRef};
use crate::tls::CertificateAuthority;

/// Arguments of `credgate serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// A running proxy: its listeners, its background work, and how to stop it.
pub struct Running {
    /// The shared gateway state.
    pub gateway: Arc<Gateway>,
    /// The proxy's bound address.
    pub proxy_addr: SocketAddr,
    /// The admin API's bound address.
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// The proxy listener (and the transparent one, when configured): they
    /// drain their connections when stopped.
    proxy: JoinHandle<()>,
    transparent: Vec<JoinHandle<()>>,
    /// The transparent listeners' bound addresses.
    pub transparent_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Binds the listeners and starts serving `config`, with the configured
    /// decision log and the system resolver; the sources read secrets and
    /// files through `provider`.
    pub async fn start(config: Config, provider: &dyn Provider) -> anyhow::Result<Running> {
        Running::start_with(config, provider, None, Arc::new(SystemResolver)).await
    }

    /// Like [`Running::start`], with the decision log (`audit`, default: the
    /// configured file) and the resolver chosen by the caller.
    pub async fn start_with(
        config: Config,
        provider: &dyn Provider,
        audit: Option<Arc<AuditSink>>,
        resolver: Arc<dyn Resolve>,
    ) -> anyhow::Result<Running> {
        let ca =
            CertificateAuthority::load(&config.ca.cert, &config.ca.key).with_context(|| {
                "cannot load the interception CA; create one with `credgate ca init`"
            })?;
        let audit = match audit {
            Some(a) => a,
            None => AuditSink::open(&config.audit_path).with_context(|| {
                format!(
                    "cannot open the decision log {}",
                    config.audit_path.display()
                )
            })?,
        };
        let admin_token = admin_token(&config.admin.token)?;
        let proxy_listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin.listen))?;
        let mut transparent_listeners = Vec::new();
        for addr in &config.transparent_listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (transparent_listen)"))?;
            transparent_listeners.push(listener);
        }
        let proxy_addr = proxy_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        let gateway = Gateway::new(config, provider, audit, Arc::new(ca), proxy_addr, resolver)?;
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = Vec::new();
        let proxy = tokio::spawn(crate::proxy::serve(
            gateway.clone(),
            proxy_listener,
            until_stopped(stopped.clone()),
        ));
        let mut transparent_addrs = Vec::new();
        let mut transparent = Vec::new();
        for listener in transparent_listeners {
            transparent_addrs.push(listener.local_addr()?);
            transparent.push(tokio::spawn(crate::proxy::serve_transparent(
                gateway.clone(),
                listener,
                until_stopped(stopped.clone()),
            )));
        }
        let service: Arc<dyn crate::task::TaskService> = gateway.clone();
        let admin_stop = until_stopped(stopped.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                crate::admin::serve(admin_listener, service, admin_token, admin_stop).await
            {
                tracing::error!(error = %e, "admin API stopped");
            }
        }));
        let reaper_gw = gateway.clone();
        let mut reaper_stop = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => reaper_gw.reap().await,
                    _ = reaper_stop.changed() => return,
                }
            }
        }));
        Ok(Running {
            gateway,
            proxy_addr,
            admin_addr,
            stop,
            proxy,
            transparent,
            transparent_addrs,
            tasks,
        })
    }

    /// Stops accepting, ends every task (revoking its credentials, which
    /// also closes their connections), lets the remaining connections drain
    /// so their records are emitted, and only then flushes the decision log.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.gateway.end_all_tasks().await;
        let _ = self.proxy.await;
        for transparent in self.transparent {
            let _ = transparent.await;
        }
        for task in self.tasks {
            task.abort();
        }
        self.gateway.audit_sink().flush().await;
    }
}

/// Reads the admin token, creating the file with a random token (mode 0600)
/// the first time, so `credgate serve` works out of the box and
/// `credgate task` finds the same file.
fn admin_token(reference: &SecretRef) -> anyhow::Result<Secret> {
    if let SecretRef::File(path) = reference {
        if !path.exists() {
            create_token_file(path)?;
            tracing::info!(path = %path.display(), "created the admin token file");
        }
    }
    reference
        .resolve(&ProcessEnv)
        .context("cannot read the admin token")
}

fn create_token_file(path: &Path) -> anyhow::Result<()> {
    use base64::Engine;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("cgadm_{token}\n").as_bytes())?;
    Ok(())
}

/// Runs `credgate serve`.
pub async fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Signal handlers and the watcher exist before the listeners
    // are bound, so a signal sent right after the announcement is handled.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let watcher = watch_config(&args.config, reload_tx.clone());
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let running = Running::start(config, &ProcessEnv).await?;
    tracing::info!(
        proxy = %running.proxy_addr,
        admin = %running.admin_addr,
        config = %args.config.display(),
        "credgate is serving"
    );
    eprintln!(
        "credgate: proxy on {}, admin API on {} (config {})",
        running.proxy_addr,
        running.admin_addr,
        args.config.display()
    );
    for addr in &running.transparent_addrs {
        eprintln!("credgate: transparent capture on {addr}");
    }
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => reload(&running.gateway, &args.config, "SIGHUP").await,
            Some(why) = reload_rx.recv() => {
                // Editors write in several steps; let the file settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while reload_rx.try_recv().is_ok() {}
                reload(&running.gateway, &args.config, why).await;
            }
        }
    }
    watcher.abort();
    eprintln!("credgate: shutting down; ending tasks and revoking their credentials");
    running.shutdown().await;
    Ok(())
}

/// Loads the file again; keeps the running configuration when the new one is invalid.
async fn reload(gateway: &Gateway, path: &Path, why: &str) {
    match Config::load(path, &ProcessEnv) {
        Err(errors) => {
            tracing::error!(
                trigger = why,
                "configuration rejected, keeping the running one"
            );
            eprintln!("credgate: configuration rejected ({why}); the running configuration stays:\n{errors}");
        }
        Ok(config) => match gateway.reload(config, &ProcessEnv).await {
            Ok(restart) => {
                tracing::info!(trigger = why, "configuration reloaded");
                eprintln!("credgate: configuration reloaded ({why})");
                if !restart.is_empty() {
                    eprintln!(
                        "credgate: changes to {} take effect on restart",
                        restart.join(", ")
                    );
                }
            }
            Err(e) => eprintln!("credgate: configuration rejected ({why}): {e}"),
        },
    }
}

/// How often the configuration file is looked at for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Signals a reload when the configuration file changes: its metadata is
/// read once a second (following symlinks, so a replaced file, a rename
/// over it and a Kubernetes ConfigMap's symlink swap all count). A
/// directory watch would also wake for every write of a decision log kept
/// next to the configuration, a thousand times a second under load.
fn watch_config(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> JoinHandle<()> {
    let path = path.to_path_buf();
    tokio::spawn(async move {
        let mut last = file_state(&path);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = file_state(&path);
            if now != last {
                last = now;
                // A file gone for a moment (mid-rename) is not a change yet.
                if now.is_some() && tx.send("file change").is_err() {
                    return;
                }
            }
        }
    })
}

/// What identifies a version of a file: which inode, its size, and when it
/// and its metadata last changed.
fn file_state(path: &Path) -> Option<(u64, u64, u64, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}
