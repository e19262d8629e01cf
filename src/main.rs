//! The `credgate` binary: parse the command line, call into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use credgate::cli;

/// A faster allocator for the many small, short-lived allocations of the
/// request path, freed as often on another thread (the record writer's).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// credgate: a task-scoped egress proxy that keeps credentials away from AI agents.
#[derive(Debug, Parser)]
#[command(name = "credgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy and the admin API.
    Serve(cli::serve::ServeArgs),
    /// Manage the interception CA.
    Ca(cli::ca::CaArgs),
    /// Start, end and list tasks through the admin API.
    Task(cli::task::TaskArgs),
    /// Start a task, run a command inside it, end the task when it exits.
    Run(cli::run::RunArgs),
    /// List, show, approve and deny what rules with `approval:` wait for.
    Approvals(cli::approvals::ApprovalsArgs),
    /// Review the decision log.
    Logs(cli::logs::LogsArgs),
    /// Show what would happen to one request, without sending it.
    Explain(cli::explain::ExplainArgs),
    /// Validate a configuration and print its scopes in plain words.
    Check(cli::check::CheckArgs),
    /// Install the egress lock-down in this network namespace (a pod's init container).
    Init(cli::init::InitArgs),
    /// Add credgate to Kubernetes workloads: YAML in (a file or stdin), YAML out.
    Inject(cli::inject::InjectArgs),
    /// Serve `inject`'s mutation as a Kubernetes mutating admission webhook.
    Webhook(cli::webhook::WebhookArgs),
    /// A self-contained first run: proxy, a local HTTPS API and a scripted agent.
    Demo(cli::demo::DemoArgs),
    /// `run --enforce`'s helper: makes CMD's namespaces, then executes CMD.
    #[command(name = cli::run::enforce::SUBCOMMAND, hide = true)]
    Enforce(cli::run::enforce::EnforceArgs),
}

/// One thread per core credgate may use (its affinity and cgroup quota,
/// as the standard library reads them). With one core, a current-thread
/// runtime: there is nothing to steal work from, and its scheduler costs
/// less per wake-up than a work-stealing pool of one.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut builder = if cores > 1 {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: a threaded process cannot make a user
    // namespace.
    if let Command::Enforce(args) = &cli.command {
        return ExitCode::from(cli::run::enforce::exec(args));
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credgate: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: anyhow::Result<i32> = runtime.block_on(async {
        match &cli.command {
            Command::Serve(args) => cli::serve::run(args).await.map(|()| 0),
            Command::Ca(args) => cli::ca::run(args).map(|()| 0),
            Command::Task(args) => cli::task::run(args).await.map(|()| 0),
            Command::Run(args) => cli::run::run(args).await,
            Command::Approvals(args) => cli::approvals::run(args).await.map(|()| 0),
            Command::Logs(args) => cli::logs::run(args).map(|()| 0),
            Command::Explain(args) => Ok(cli::explain::run(args)),
            Command::Check(args) => Ok(cli::check::run(args)),
            Command::Demo(args) => cli::demo::run(args).await,
            Command::Init(args) => cli::init::run(args),
            Command::Inject(args) => cli::inject::run(args),
            Command::Webhook(args) => cli::webhook::run(args).await,
            Command::Enforce(_) => unreachable!("run before the runtime"),
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("credgate: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line. Most error messages already name
/// their cause, so a cause whose text is already shown is not repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
