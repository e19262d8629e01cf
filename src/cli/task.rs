//! `credgate task start | end | list`: manage tasks through the admin API.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::admin::{AdminClient, CreateTaskRequest};
use crate::provider::ProcessEnv;
use crate::secret::SecretRef;
use crate::task::{TaskState, TaskView};
use crate::units::parse_duration;

use super::run::{agent_env, AGENT_ENV_REMOVED};

/// `credgate task …`
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TaskCommand,
    /// How to reach the admin API.
    #[command(flatten)]
    pub admin: AdminClientArgs,
}

/// The `task` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Start a task; print its id, token, proxy URL and shell env lines.
    Start(StartArgs),
    /// End a task: its token stops working, its credentials are revoked and
    /// its connections closed.
    End {
        /// The task id (`task-…`).
        id: String,
    },
    /// List known tasks (active and recently ended).
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `credgate task start`
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Scopes, TTL, agent and labels of the task.
    #[command(flatten)]
    pub spec: TaskSpecArgs,
    /// Print the API's JSON answer (including the token) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a new task should be, shared by `task start` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskSpecArgs {
    /// A scope to grant (repeat for more).
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    pub scopes: Vec<String>,
    /// How long the task may live, e.g. `15m` (default: the gateway's).
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<String>,
    /// Name of the agent doing the work.
    #[arg(long, value_name = "NAME", default_value = "agent")]
    pub agent: String,
    /// A label copied into every decision record (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

impl TaskSpecArgs {
    /// The admin API request for these arguments.
    pub fn to_request(&self) -> CreateTaskRequest {
        CreateTaskRequest {
            agent: self.agent.clone(),
            scopes: self.scopes.clone(),
            ttl: self.ttl.clone(),
            labels: self.labels.iter().cloned().collect(),
            task_port: None,
        }
    }
}

/// Where the admin API is and how to authenticate to it; also where the
/// interception CA certificate is, for the agent's environment.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminClientArgs {
    /// Base URL of the admin API.
    #[arg(
        long = "admin",
        value_name = "URL",
        env = "CREDGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub admin_url: String,
    /// File holding the admin token.
    #[arg(
        long,
        value_name = "PATH",
        env = "CREDGATE_ADMIN_TOKEN_FILE",
        default_value = ".credgate/admin-token",
        global = true
    )]
    pub admin_token_file: PathBuf,
    /// The interception CA certificate agents must trust.
    #[arg(
        long,
        value_name = "PATH",
        env = "CREDGATE_CA",
        default_value = ".credgate/ca.crt",
        global = true
    )]
    pub ca: PathBuf,
}

impl AdminClientArgs {
    /// A client for the admin API, with the token read from its file now.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = SecretRef::File(self.admin_token_file.clone())
            .resolve(&ProcessEnv)
            .context("reading the admin token (see --admin-token-file)")?;
        Ok(AdminClient::new(&self.admin_url, token)?)
    }
}

fn parse_ttl(text: &str) -> Result<String, String> {
    parse_duration(text)?;
    Ok(text.trim().to_owned())
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Runs `credgate task …`.
pub async fn run(args: &TaskArgs) -> anyhow::Result<()> {
    let client = args.admin.client()?;
    match &args.command {
        TaskCommand::Start(start) => {
            let created = client.start_task(&start.spec.to_request()).await?;
            let token = created.token.expose_str().unwrap_or_default();
            let proxy_url = created.proxy_url.expose_str().unwrap_or_default();
            if start.json {
                let body = serde_json::json!({
                    "id": created.id,
                    "token": token,
                    "expires_at": created.expires_at,
                    "proxy_url": proxy_url,
                    "task": created.task,
                });
                println!("{body:#}");
                return Ok(());
            }
            let ca = ca_for_env(&args.admin.ca)?;
            let env = agent_env(&created.id, proxy_url, &ca);
            print!(
                "{}",
                start_text(&created.task, token, proxy_url, &env, AGENT_ENV_REMOVED)
            );
        }
        TaskCommand::End { id } => {
            let view = client.end_task(id).await?;
            println!("{} {}", view.id, state_word(view.state));
        }
        TaskCommand::List { json } => {
            let views = client.list_tasks().await?;
            if *json {
                println!("{:#}", serde_json::to_value(&views)?);
            } else {
                print!("{}", task_table(&views));
            }
        }
    }
    Ok(())
}

/// The CA path for the agent's environment: absolute (the agent may change
/// directory). A missing file is only warned about here: `task start` is
/// also used to hand settings to another machine.
fn ca_for_env(ca: &Path) -> anyhow::Result<String> {
    if !ca.is_file() {
        eprintln!(
            "credgate: warning: CA certificate {} not found; TLS clients will not trust credgate \
             (run `credgate ca init` or pass --ca)",
            ca.display()
        );
    }
    let absolute = std::path::absolute(ca).context("resolving the CA path")?;
    absolute
        .to_str()
        .map(str::to_owned)
        .context("the CA path is not valid UTF-8")
}

/// What `task start` prints: the task, its secrets and shell lines that
/// configure an agent's environment.
fn start_text(
    task: &TaskView,
    token: &str,
    proxy_url: &str,
    env: &[(String, String)],
    removed: &[&str],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "task:       {}", task.id);
    let _ = writeln!(out, "token:      {token}");
    let _ = writeln!(out, "expires_at: {}", task.expires_at);
    let _ = writeln!(out, "proxy_url:  {proxy_url}");
    let _ = writeln!(out);
    let _ = writeln!(out, "# paste into the agent's shell:");
    for (name, value) in env {
        let _ = writeln!(out, "export {name}={}", shell_quote(value));
    }
    if !removed.is_empty() {
        let _ = writeln!(out, "unset {}", removed.join(" "));
    }
    out
}

/// Single-quotes `value` for POSIX shells.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn state_word(state: TaskState) -> &'static str {
    match state {
        TaskState::Active => "active",
        TaskState::Ended => "ended",
        TaskState::Expired => "expired",
    }
}

/// `task list` as an aligned table.
fn task_table(views: &[TaskView]) -> String {
    let header = ["ID", "STATE", "AGENT", "EXPIRES", "SCOPES", "LABELS"].map(str::to_owned);
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            let labels: Vec<String> = v
                .labels
                .iter()
                .map(|(k, val)| format!("{k}={val}"))
                .collect();
            [
                v.id.clone(),
                state_word(v.state).to_owned(),
                v.agent.clone(),
                v.expires_at.clone(),
                v.scopes.join(","),
                labels.join(","),
            ]
            .map(|cell| printable(&cell))
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Task names and labels come from API callers: never let them drive the
/// terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        task: TaskArgs,
    }

    fn view(id: &str, state: TaskState, labels: &[(&str, &str)]) -> TaskView {
        TaskView {
            id: id.into(),
            agent: "agent".into(),
            scopes: vec!["github-read".into(), "ci".into()],
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            created_at: "2026-01-02T03:04:05Z".into(),
            expires_at: "2026-01-02T03:19:05Z".into(),
            state,
            ambient: false,
            ended_at: None,
            end_reason: None,
        }
    }

    #[test]
    fn start_arguments_parse() {
        let cli = Cli::try_parse_from([
            "task",
            "start",
            "--scope",
            "a",
            "--scope",
            "b",
            "--ttl",
            "15m",
            "--label",
            "ticket=T-1",
            "--label",
            "env=a=b",
            "--admin",
            "http://127.0.0.1:9",
            "--json",
        ])
        .unwrap();
        let TaskCommand::Start(start) = &cli.task.command else {
            panic!("expected start");
        };
        let request = start.spec.to_request();
        assert_eq!(request.scopes, ["a", "b"]);
        assert_eq!(request.ttl.as_deref(), Some("15m"));
        assert_eq!(request.agent, "agent");
        assert_eq!(
            request.labels,
            BTreeMap::from([
                ("ticket".into(), "T-1".into()),
                ("env".into(), "a=b".into())
            ])
        );
        assert!(start.json);
        assert_eq!(cli.task.admin.admin_url, "http://127.0.0.1:9");
    }

    #[test]
    fn the_admin_token_is_read_from_its_file() {
        let tag = crate::hex::lower(&crate::secret::random_bytes::<6>());
        let path = std::env::temp_dir().join(format!("credgate-admin-token-{tag}"));
        let args = |file: &Path| AdminClientArgs {
            admin_url: "http://127.0.0.1:8081".into(),
            admin_token_file: file.to_owned(),
            ca: "ca.crt".into(),
        };
        let err = args(&path).client().unwrap_err();
        assert!(format!("{err:#}").contains("--admin-token-file"), "{err:#}");
        std::fs::write(&path, "test-secret-admin\n").unwrap();
        let client = args(&path).client();
        let _ = std::fs::remove_file(&path);
        assert!(!format!("{:?}", client.unwrap()).contains("test-secret-admin"));
    }

    #[test]
    fn bad_start_arguments_are_refused() {
        for args in [
            &["task", "start"][..],
            &["task", "start", "--scope", "a", "--ttl", "15"],
            &["task", "start", "--scope", "a", "--label", "novalue"],
            &["task", "start", "--scope", "a", "--label", "=v"],
            &["task", "end"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn start_text_has_secrets_and_quoted_env_lines() {
        let env = vec![
            (
                "HTTPS_PROXY".to_owned(),
                "http://task-1:cgt_x@127.0.0.1:8080".to_owned(),
            ),
            ("SSL_CERT_FILE".to_owned(), "/home/o'neil/ca.crt".to_owned()),
        ];
        let text = start_text(
            &view("task-1", TaskState::Active, &[]),
            "cgt_x",
            "http://task-1:cgt_x@127.0.0.1:8080",
            &env,
            &["ALL_PROXY"],
        );
        assert!(text.contains("task:       task-1\n"), "{text}");
        assert!(text.contains("token:      cgt_x\n"), "{text}");
        assert!(text.contains("export HTTPS_PROXY='http://task-1:cgt_x@127.0.0.1:8080'\n"));
        assert!(
            text.contains(r"export SSL_CERT_FILE='/home/o'\''neil/ca.crt'"),
            "{text}"
        );
        assert!(text.ends_with("unset ALL_PROXY\n"), "{text}");
    }

    #[test]
    fn table_aligns_columns_and_neutralises_control_characters() {
        let table = task_table(&[
            view("task-1", TaskState::Active, &[("ticket", "T-1")]),
            view("task-22", TaskState::Ended, &[("x", "\u{1b}[31mred")]),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID       STATE   AGENT  EXPIRES"),
            "{table}"
        );
        assert!(
            lines[1].starts_with(
                "task-1   active  agent  2026-01-02T03:19:05Z  github-read,ci  ticket=T-1"
            ),
            "{table}"
        );
        assert!(lines[2].contains("ended"), "{table}");
        assert!(!table.contains('\u{1b}'), "{table}");
        assert_eq!(
            task_table(&[]),
            "ID  STATE  AGENT  EXPIRES  SCOPES  LABELS\n"
        );
    }
}
