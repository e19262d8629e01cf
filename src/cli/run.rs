//! `credgate run --scope S [--ttl D] -- CMD…`: run one command as one task.
//!
//! Starts a task through the admin API, runs CMD with the proxy and CA
//! environment set, forwards termination signals to it, and ends (revokes)
//! the task when CMD exits, whatever the reason. Exits with CMD's code. The
//! task token is only ever placed in CMD's environment, never printed, and
//! CMD inherits none of credgate's own settings (`CREDGATE_*`). wget and
//! Java, which read none of the usual variables, get per-task settings
//! files as well ([`runtimes`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::{AdminClient, CreateTaskRequest, CreatedTask, TaskPortRequest};

use super::task::{AdminClientArgs, TaskSpecArgs};

pub mod enforce;
pub mod runtimes;

use runtimes::{Inherited, JavaProxy, RuntimeSettings};

/// Inherited variables removed from CMD's environment: a catch-all proxy
/// could otherwise carry traffic for schemes the variables above miss.
pub const AGENT_ENV_REMOVED: &[&str] = &["ALL_PROXY", "all_proxy"];

/// The prefix of credgate's own settings (`CREDGATE_ADMIN_URL`,
/// `CREDGATE_ADMIN_TOKEN_FILE`, `CREDGATE_CA`, `CREDGATE_LOG`, …). CMD
/// inherits none of them: they tell it where the admin API and its token
/// are, which is how an agent would mint itself another task. The ones
/// [`agent_env`] sets on purpose (`CREDGATE_TASK_ID`) are set afresh.
pub const CONTROL_ENV_PREFIX: &str = "CREDGATE_";

/// The inherited variables, among `names`, that CMD must not get: those of
/// [`AGENT_ENV_REMOVED`] and every one of credgate's own settings.
pub fn inherited_removed<I>(names: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    names
        .into_iter()
        .filter(|name| {
            let bytes = name.as_encoded_bytes();
            bytes.starts_with(CONTROL_ENV_PREFIX.as_bytes())
                || AGENT_ENV_REMOVED.iter().any(|r| r.as_bytes() == bytes)
        })
        .collect()
}

/// Exit code when CMD could not be started (as a shell reports "not found").
const EXIT_NOT_STARTED: i32 = 127;

/// `credgate run`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scopes, TTL, agent and labels of the task.
    #[command(flatten)]
    pub spec: TaskSpecArgs,
    /// How to reach the admin API, and the CA certificate.
    #[command(flatten)]
    pub admin: AdminClientArgs,
    /// Point CMD at the shared proxy port with the task token in the proxy
    /// URL, instead of at a port of the task's own. (A task port is opened
    /// only when the admin API is on loopback, i.e. credgate runs here.)
    #[arg(long, conflicts_with = "enforce")]
    pub no_task_port: bool,
    /// Run CMD in a network namespace of its own whose only way out is the
    /// task's port: a client that ignores the proxy variables fails instead
    /// of going around credgate. Needs credgate on this machine (a loopback
    /// admin URL) and user namespaces; never falls back to running CMD
    /// without them.
    #[arg(long)]
    pub enforce: bool,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

pub use crate::agent_env::agent_env;

/// The code `credgate run` exits with for CMD's `status`: CMD's own code,
/// or 128 + the signal number when a signal killed it (as shells report).
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(1)
}

/// Runs `credgate run`; returns the exit code to exit with.
pub async fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let (program, program_args) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let ca = existing_ca(&args.admin)?;
    if args.enforce {
        anyhow::ensure!(
            is_loopback_url(&args.admin.admin_url),
            "--enforce needs credgate on this machine (a loopback --admin URL, not {}): \
             the task's own port is CMD's only way out",
            args.admin.admin_url
        );
        enforce::protect_self().context("making credgate non-dumpable for --enforce")?;
    }
    let client = args.admin.client()?;
    // Handlers go in before the task exists: from here on a Ctrl-C must not
    // kill credgate before it has ended the task.
    let mut signals = Signals::os().context("installing signal handlers")?;
    let mut request = args.spec.to_request();
    if !args.no_task_port && is_loopback_url(&args.admin.admin_url) {
        request.task_port = Some(TaskPortRequest {
            uid: Some(nix::unistd::getuid().as_raw()),
        });
    }
    let inherited = Inherited::from_process();
    let agent = Agent {
        program,
        args: program_args,
        enforce: args.enforce,
    };
    run_as_task(&client, &request, &agent, &ca, &inherited, &mut signals).await
}

/// The command `run` runs, and whether under `--enforce`.
#[derive(Clone, Copy)]
struct Agent<'a> {
    program: &'a OsStr,
    args: &'a [OsString],
    enforce: bool,
}

/// Starts the task, runs the command under it and ends the task.
async fn run_as_task(
    client: &AdminClient,
    request: &CreateTaskRequest,
    agent: &Agent<'_>,
    ca: &str,
    inherited: &Inherited,
    signals: &mut Signals,
) -> anyhow::Result<i32> {
    let Agent {
        program,
        args: program_args,
        enforce,
    } = *agent;
    let start = client.start_task(request);
    tokio::pin!(start);
    let mut interrupted = None;
    // A signal during the request must not leave a task behind: wait for the
    // answer, then end what was created.
    let created = loop {
        tokio::select! {
            created = &mut start => break created.context("starting the task")?,
            sig = signals.recv() => { interrupted.get_or_insert(sig); }
        }
    };
    if let Some(sig) = interrupted {
        end_task(client, &created).await;
        return Ok(128 + sig as i32);
    }
    eprintln!(
        "credgate: task {} (scopes {}) until {}",
        created.id,
        created.task.scopes.join(","),
        created.expires_at
    );

    // The task's own port needs no token: the token then never reaches CMD.
    let proxy_url = match &created.task_port_url {
        Some(url) => url.as_str(),
        None => created.proxy_url.expose_str().unwrap_or_default(),
    };
    // Held until the task has ended: dropping it removes the files.
    let runtime = match runtime_settings(proxy_url, ca, inherited) {
        Ok(runtime) => runtime,
        Err(e) => {
            end_task(client, &created).await;
            return Err(e);
        }
    };
    for warning in &runtime.warnings {
        eprintln!("credgate: {warning}");
    }
    let mut env = agent_env(&created.id, proxy_url, ca);
    env.extend(runtime.env.iter().cloned());
    let enforced = match enforce
        .then(|| Enforced::prepare(&created, runtime.files.dir()))
        .transpose()
    {
        Ok(enforced) => enforced,
        Err(e) => {
            end_task(client, &created).await;
            return Err(e);
        }
    };
    let mut command = match &enforced {
        None => {
            let mut command = tokio::process::Command::new(program);
            command.args(program_args);
            command
        }
        // Through credgate's helper, which makes CMD's namespaces.
        Some(enforced) => {
            let mut command = tokio::process::Command::new(enforce::SELF);
            command.arg0("credgate").args(enforce::helper_args(
                enforced.task_port,
                &enforced.path,
                program,
                program_args,
            ));
            command
        }
    };
    // Removed first, so that what `agent_env` sets is set after.
    for name in inherited_removed(std::env::vars_os().map(|(name, _)| name)) {
        command.env_remove(name);
    }
    command.envs(env);
    let code = match command.spawn() {
        Err(e) => {
            eprintln!("credgate: cannot start {}: {e}", program.to_string_lossy());
            EXIT_NOT_STARTED
        }
        Ok(mut child) => 'ran: {
            // Aborted on drop, once CMD has exited.
            let _relay = match &enforced {
                None => None,
                Some(enforced) => match enforced.hand_over(&mut child, signals).await {
                    Ok(relay) => Some(relay),
                    Err(code) => break 'ran code,
                },
            };
            loop {
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) => break exit_code(status),
                        Err(e) => {
                            eprintln!("credgate: lost track of the command: {e}");
                            break 1;
                        }
                    },
                    sig = signals.recv() => forward(child.id(), sig),
                }
            }
        }
    };
    end_task(client, &created).await;
    drop(runtime);
    Ok(code)
}

/// `--enforce`: where CMD's helper hands its listener over, and the task
/// port the listener's connections are relayed to.
struct Enforced {
    task_port: std::net::SocketAddr,
    path: std::path::PathBuf,
    listener: tokio::net::UnixListener,
}

impl Enforced {
    /// Listens for the hand-over in the task's private directory `dir`.
    fn prepare(created: &CreatedTask, dir: &Path) -> anyhow::Result<Enforced> {
        let task_port = created
            .task_port_url
            .as_deref()
            .and_then(|url| url.strip_prefix("http://"))
            .and_then(|addr| addr.parse().ok())
            .context("--enforce needs the task's own port, and credgate opened none")?;
        let path = dir.join("enforce.sock");
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("--enforce: cannot listen on {}", path.display()))?;
        Ok(Enforced {
            task_port,
            path,
            listener,
        })
    }

    /// Waits for the helper's listener and starts relaying it to the task
    /// port. Fails with the exit code to exit with when the helper exited
    /// first (it has said why), or the listener could not be used.
    async fn hand_over(
        &self,
        child: &mut tokio::process::Child,
        signals: &mut Signals,
    ) -> Result<AbortOnDrop, i32> {
        let receive = enforce::receive(&self.listener);
        tokio::pin!(receive);
        loop {
            tokio::select! {
                inside = &mut receive => {
                    // No one else may hand anything over.
                    let _ = std::fs::remove_file(&self.path);
                    let relay = inside.and_then(|inside| {
                        enforce::start_relay(inside, self.task_port)
                            .context("relaying CMD's connections")
                    });
                    return match relay {
                        Ok(relay) => Ok(AbortOnDrop(relay)),
                        Err(e) => {
                            eprintln!("credgate: --enforce: {e:#}; CMD was stopped");
                            let _ = child.kill().await;
                            Err(EXIT_NOT_STARTED)
                        }
                    };
                }
                status = child.wait() => return Err(status.map_or(1, exit_code)),
                sig = signals.recv() => forward(child.id(), sig),
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `url`'s host is a loopback address or `localhost`: the admin API,
/// and so the proxy, run on this machine.
fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The wget and Java settings of the task whose proxy is `proxy_url`.
///
/// Java is pointed at the host and port of the task's proxy URL, without
/// the token it cannot send: the task's own port, which needs none (with
/// `--no-task-port`, the shared port serves it only under an ambient task).
fn runtime_settings(
    proxy_url: &str,
    ca: &str,
    inherited: &Inherited,
) -> anyhow::Result<RuntimeSettings> {
    let java_proxy =
        JavaProxy::from_proxy_url(proxy_url).context("the task's proxy URL has no host")?;
    runtimes::prepare(Path::new(ca), &std::env::temp_dir(), &java_proxy, inherited)
        .context("writing the task's wgetrc and Java trust store")
}

/// The CA path as an absolute UTF-8 string; `run` refuses to start without
/// it because every HTTPS request of the agent would fail.
fn existing_ca(admin: &AdminClientArgs) -> anyhow::Result<String> {
    let ca = std::fs::canonicalize(&admin.ca).with_context(|| {
        format!(
            "CA certificate {} (run `credgate ca init` or pass --ca)",
            admin.ca.display()
        )
    })?;
    ca.to_str()
        .map(str::to_owned)
        .context("the CA path is not valid UTF-8")
}

async fn end_task(client: &AdminClient, created: &CreatedTask) {
    if let Err(e) = client.end_task(&created.id).await {
        eprintln!(
            "credgate: could not end task {}: {e}; its token stays valid until {} \
             (end it with `credgate task end {}`)",
            created.id, created.expires_at, created.id
        );
    }
}

/// Passes `sig` on to the child.
///
/// A terminal delivers Ctrl-C (SIGINT) and Ctrl-\ (SIGQUIT) to the whole
/// foreground process group, which includes the child; forwarding those
/// again would make an agent see two interrupts for one keypress (many
/// treat that as "quit"). So they are forwarded only when credgate is not
/// in the terminal's foreground group, i.e. when someone signalled credgate
/// alone.
fn forward(child: Option<u32>, sig: Signal) {
    let Some(pid) = child.and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    let from_terminal = matches!(sig, Signal::SIGINT | Signal::SIGQUIT) && in_terminal_foreground();
    if !from_terminal {
        // The child may have exited already; nothing to do then.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

fn in_terminal_foreground() -> bool {
    nix::unistd::tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg == nix::unistd::getpgrp())
}

/// The signals that would otherwise terminate credgate before it ends the task.
enum Signals {
    Os {
        int: tokio::signal::unix::Signal,
        term: tokio::signal::unix::Signal,
        hup: tokio::signal::unix::Signal,
        quit: tokio::signal::unix::Signal,
    },
    /// Signals injected by tests, so the test process keeps its own handlers.
    #[cfg(test)]
    Injected(tokio::sync::mpsc::UnboundedReceiver<Signal>),
}

impl Signals {
    fn os() -> std::io::Result<Signals> {
        Ok(Signals::Os {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal received. Cancel-safe.
    async fn recv(&mut self) -> Signal {
        match self {
            Signals::Os {
                int,
                term,
                hup,
                quit,
            } => tokio::select! {
                Some(()) = int.recv() => Signal::SIGINT,
                Some(()) = term.recv() => Signal::SIGTERM,
                Some(()) = hup.recv() => Signal::SIGHUP,
                Some(()) = quit.recv() => Signal::SIGQUIT,
                else => std::future::pending().await,
            },
            #[cfg(test)]
            Signals::Injected(rx) => match rx.recv().await {
                Some(sig) => sig,
                None => std::future::pending().await,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::{Harness, ADMIN_TOKEN};
    use crate::secret::random_bytes;
    use crate::task::EndReason;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn agent_env_points_every_tool_at_credgate() {
        let url = "http://task-1:cgt_test-secret@127.0.0.1:8080";
        let env: BTreeMap<String, String> = agent_env("task-1", url, "/etc/credgate/ca.crt")
            .into_iter()
            .collect();
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert_eq!(env[name], url, "{name}");
        }
        assert_eq!(env["NO_PROXY"], "");
        assert_eq!(env["no_proxy"], "");
        assert_eq!(env["NODE_USE_ENV_PROXY"], "1");
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "GIT_SSL_CAINFO",
            "AWS_CA_BUNDLE",
            "npm_config_cafile",
            "YARN_CAFILE",
        ] {
            assert_eq!(env[name], "/etc/credgate/ca.crt", "{name}");
        }
        assert_eq!(env["CREDGATE_TASK_ID"], "task-1");
        assert_eq!(env.len(), 16);
        for removed in AGENT_ENV_REMOVED {
            assert!(!env.contains_key(*removed));
        }
    }

    #[test]
    fn credgate_settings_and_catch_all_proxies_are_not_inherited() {
        let names = [
            "CREDGATE_ADMIN_URL",
            "CREDGATE_ADMIN_TOKEN_FILE",
            "CREDGATE_CA",
            "CREDGATE_LOG",
            "CREDGATE_TASK_ID",
            "ALL_PROXY",
            "all_proxy",
            "PATH",
            "HOME",
            "credgate_lowercase",
            "MY_CREDGATE_NOTE",
        ];
        let removed = inherited_removed(names.iter().map(OsString::from));
        assert_eq!(removed, &names[..7]);
    }

    #[test]
    fn exit_codes_follow_shell_conventions() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn the_command_comes_after_a_double_dash() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "run",
            "--scope",
            "ci",
            "--ttl",
            "5m",
            "--ca",
            "/ca.crt",
            "--",
            "curl",
            "-s",
            "--scope",
            "https://x",
        ])
        .unwrap();
        assert_eq!(cli.run.command, ["curl", "-s", "--scope", "https://x"]);
        assert_eq!(cli.run.spec.scopes, ["ci"]);
        assert_eq!(cli.run.admin.ca, PathBuf::from("/ca.crt"));
        assert!(
            Cli::try_parse_from(["run", "--scope", "ci"]).is_err(),
            "CMD is required"
        );
        assert!(
            Cli::try_parse_from(["run", "--", "true"]).is_err(),
            "a scope is required"
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let tag = crate::hex::lower(&random_bytes::<6>());
        std::env::temp_dir().join(format!("credgate-run-{name}-{tag}"))
    }

    fn request() -> CreateTaskRequest {
        CreateTaskRequest {
            agent: "agent".into(),
            scopes: vec!["ci".into()],
            ttl: Some("5m".into()),
            labels: BTreeMap::new(),
            task_port: None,
        }
    }

    fn sh(script: String) -> Vec<OsString> {
        vec!["-c".into(), script.into()]
    }

    /// A real CA certificate file (the trust store is built from it).
    struct CaFile(PathBuf);

    impl CaFile {
        fn new() -> CaFile {
            let path = scratch("ca");
            let ca = crate::tls::CertificateAuthority::generate().unwrap();
            std::fs::write(&path, ca.cert_pem()).unwrap();
            CaFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for CaFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn injected() -> (tokio::sync::mpsc::UnboundedSender<Signal>, Signals) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, Signals::Injected(rx))
    }

    #[tokio::test]
    async fn runs_the_command_with_the_task_env_and_ends_the_task() {
        let h = Harness::start().await;
        let ca = CaFile::new();
        let out = scratch("env");
        let script = format!(
            "printf '%s\\n' \"$HTTPS_PROXY\" \"$SSL_CERT_FILE\" \"[$NO_PROXY]\" \"$CREDGATE_TASK_ID\" \
             \"$WGETRC\" \"$JAVA_TOOL_OPTIONS\" > '{out}'; \
             grep '^ca_certificate = ' \"$WGETRC\" >> '{out}'; \
             test -s \"${{WGETRC%/wgetrc}}/truststore.p12\" && echo truststore >> '{out}'; exit 7",
            out = out.display()
        );
        let (_tx, mut signals) = injected();
        let code = run_as_task(
            &h.client(ADMIN_TOKEN),
            &request(),
            &Agent {
                program: OsStr::new("sh"),
                args: &sh(script),
                enforce: false,
            },
            ca.path(),
            &Inherited::default(),
            &mut signals,
        )
        .await
        .unwrap();
        assert_eq!(code, 7);
        let seen = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        let tasks = h.service.store.list();
        assert_eq!(tasks.len(), 1);
        let task = &tasks[0];
        assert_eq!(
            task.ended(),
            Some(EndReason::Requested),
            "the task was ended"
        );
        let lines: Vec<&str> = seen.lines().collect();
        assert!(
            lines[0].starts_with(&format!("http://{}:cgt_", task.id)),
            "{seen}"
        );
        assert!(lines[0].ends_with("@127.0.0.1:8080"), "{seen}");
        assert_eq!(lines[1..4], [ca.path(), "[]", task.id.as_str()]);
        // wget and Java got their files, which went when the task ended.
        let wgetrc = Path::new(lines[4]);
        assert!(lines[5].starts_with("-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8080 "));
        assert!(!lines[5].contains("cgt_"), "Java got no token: {seen}");
        assert_eq!(lines[6], format!("ca_certificate = {}", ca.path()));
        assert_eq!(lines[7], "truststore");
        assert!(!wgetrc.parent().unwrap().exists(), "{seen}");
        h.stop().await;
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_exits_127_and_ends_the_task() {
        let h = Harness::start().await;
        let ca = CaFile::new();
        let (_tx, mut signals) = injected();
        let code = run_as_task(
            &h.client(ADMIN_TOKEN),
            &request(),
            &Agent {
                program: OsStr::new("/nonexistent/credgate-test-program"),
                args: &[],
                enforce: false,
            },
            ca.path(),
            &Inherited::default(),
            &mut signals,
        )
        .await
        .unwrap();
        assert_eq!(code, 127);
        assert_eq!(
            h.service.store.list()[0].ended(),
            Some(EndReason::Requested)
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn termination_is_forwarded_to_the_command() {
        let h = Harness::start().await;
        let ca = CaFile::new();
        let ready = scratch("ready");
        let script = format!("touch '{}'; exec sleep 30", ready.display());
        let (tx, mut signals) = injected();
        let client = h.client(ADMIN_TOKEN);
        let (request, args, inherited) = (request(), sh(script), Inherited::default());
        let agent = Agent {
            program: OsStr::new("sh"),
            args: &args,
            enforce: false,
        };
        let running = run_as_task(
            &client,
            &request,
            &agent,
            ca.path(),
            &inherited,
            &mut signals,
        );
        tokio::pin!(running);
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    code = &mut running => panic!("command ended early: {code:?}"),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {
                        if ready.exists() { break; }
                    }
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "the command started");
        // `exec` may not have replaced the shell yet; give it a moment.
        tokio::select! {
            code = &mut running => panic!("command ended early: {code:?}"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        tx.send(Signal::SIGTERM).unwrap();
        let code = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the command stopped")
            .unwrap();
        let _ = std::fs::remove_file(&ready);
        assert_eq!(code, 128 + 15);
        assert_eq!(
            h.service.store.list()[0].ended(),
            Some(EndReason::Requested)
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn a_signal_before_the_command_starts_ends_the_task_without_running_it() {
        let h = Harness::start().await;
        let ca = CaFile::new();
        let marker = scratch("never");
        let (tx, mut signals) = injected();
        tx.send(Signal::SIGINT).unwrap();
        let code = run_as_task(
            &h.client(ADMIN_TOKEN),
            &request(),
            &Agent {
                program: OsStr::new("touch"),
                args: &[marker.clone().into_os_string()],
                enforce: false,
            },
            ca.path(),
            &Inherited::default(),
            &mut signals,
        )
        .await
        .unwrap();
        assert_eq!(code, 130);
        assert!(!marker.exists(), "the command did not run");
        let tasks = h.service.store.list();
        assert_eq!(tasks.len(), 1, "the task had been created");
        assert_eq!(tasks[0].ended(), Some(EndReason::Requested));
        h.stop().await;
    }

    #[tokio::test]
    async fn a_task_whose_files_cannot_be_written_runs_nothing_and_ends() {
        let h = Harness::start().await;
        let marker = scratch("never");
        let (_tx, mut signals) = injected();
        let err = run_as_task(
            &h.client(ADMIN_TOKEN),
            &request(),
            &Agent {
                program: OsStr::new("touch"),
                args: &[marker.clone().into_os_string()],
                enforce: false,
            },
            "/nonexistent/credgate-ca.crt",
            &Inherited::default(),
            &mut signals,
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("credgate-ca.crt"), "{err:#}");
        assert!(!marker.exists(), "the command did not run");
        assert_eq!(
            h.service.store.list()[0].ended(),
            Some(EndReason::Requested)
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn a_refused_task_runs_nothing() {
        let h = Harness::start().await;
        let ca = CaFile::new();
        let (_tx, mut signals) = injected();
        let bad = CreateTaskRequest {
            scopes: vec!["prod-admin".into()],
            ..request()
        };
        let err = run_as_task(
            &h.client(ADMIN_TOKEN),
            &bad,
            &Agent {
                program: OsStr::new("true"),
                args: &[],
                enforce: false,
            },
            ca.path(),
            &Inherited::default(),
            &mut signals,
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("prod-admin"), "{err:#}");
        assert!(h.service.store.list().is_empty());
        h.stop().await;
    }
}
