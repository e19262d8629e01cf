//! `credgate approvals list | show | approve | deny`: answer what waits
//! for a person, through the admin API.

use std::fmt::Write as _;

use crate::admin::{ApprovalView, ApproveRequest, DenyRequest};

use super::task::AdminClientArgs;

/// `credgate approvals …`
#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ApprovalsCommand,
    /// How to reach the admin API.
    #[command(flatten)]
    pub admin: AdminClientArgs,
}

/// The `approvals` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals (pending ones first to answer).
    List {
        /// Only those of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only those in this state: pending, granted, denied or expired.
        #[arg(long)]
        state: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one approval: the task, the rule and the request it is for.
    Show {
        /// The approval id (`apr-…`).
        id: String,
    },
    /// Approve: with enough approvers, the request (or the grant) may go.
    Approve {
        /// The approval id (`apr-…`).
        id: String,
        /// Who approves (required; a second approver must be someone else).
        #[arg(long = "as", value_name = "NAME")]
        approver: String,
        /// A narrower grant than the rule's: request, a duration (10m), or task.
        #[arg(long)]
        grant: Option<String>,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny: this request, and identical ones of the task, are refused.
    Deny {
        /// The approval id (`apr-…`).
        id: String,
        /// Who denies.
        #[arg(long = "as", value_name = "NAME")]
        approver: String,
        /// Why (required; the agent is told).
        #[arg(long)]
        reason: String,
    },
}

/// Runs `credgate approvals`.
pub async fn run(args: &ApprovalsArgs) -> anyhow::Result<()> {
    let client = args.admin.client()?;
    match &args.command {
        ApprovalsCommand::List { task, state, json } => {
            let list = client
                .list_approvals(state.as_deref(), task.as_deref())
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", table(&list));
            }
        }
        ApprovalsCommand::Show { id } => {
            print!("{}", details(&client.get_approval(id).await?));
        }
        ApprovalsCommand::Approve {
            id,
            approver,
            grant,
            reason,
        } => {
            let request = ApproveRequest {
                approver: approver.clone(),
                reason: reason.clone(),
                grant: grant.clone(),
            };
            let view = client.approve(id, &request).await?;
            println!("{}", outcome(&view));
        }
        ApprovalsCommand::Deny {
            id,
            approver,
            reason,
        } => {
            let request = DenyRequest {
                approver: approver.clone(),
                reason: reason.clone(),
            };
            let view = client.deny(id, &request).await?;
            println!("{}", outcome(&view));
        }
    }
    Ok(())
}

/// `apr-… granted (request) by alice` or `apr-… pending: 1 of 2 approvers`.
fn outcome(view: &ApprovalView) -> String {
    let approvers: Vec<&str> = view.approvals.iter().map(|a| a.approver.as_str()).collect();
    match view.state.as_str() {
        "granted" => format!(
            "{} granted ({}) by {}",
            view.id,
            view.grant.as_deref().unwrap_or("-"),
            approvers.join(", ")
        ),
        "pending" => format!(
            "{} pending: {} of {} approvers ({})",
            view.id,
            approvers.len(),
            view.approvers_needed,
            approvers.join(", ")
        ),
        state => format!("{} {state}", view.id),
    }
}

fn table(list: &[ApprovalView]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("no approvals\n");
        return out;
    }
    let _ = writeln!(out, "ID\tSTATE\tTASK\tAGENT\tRULE\tREQUEST\tASKED");
    for a in list {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{} {}:{}{}\t{}",
            a.id, a.state, a.task, a.agent, a.rule, a.method, a.host, a.port, a.path, a.first_asked
        );
    }
    out
}

fn details(a: &ApprovalView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "approval  {}", a.id);
    let _ = writeln!(out, "state     {}", a.state);
    let _ = writeln!(out, "task      {} (agent {})", a.task, a.agent);
    for (key, value) in &a.labels {
        let _ = writeln!(out, "label     {key}={value}");
    }
    if let Some(purpose) = &a.purpose {
        let _ = writeln!(out, "purpose   {purpose}");
    }
    let _ = writeln!(out, "rule      {}", a.rule);
    let _ = writeln!(
        out,
        "request   {} https://{}:{}{}",
        a.method, a.host, a.port, a.path
    );
    if let Some(size) = a.body_size {
        let _ = writeln!(out, "body      {size} bytes");
    }
    for (name, value) in &a.headers {
        let _ = writeln!(out, "header    {name}: {value}");
    }
    let _ = writeln!(
        out,
        "needs     {} approver(s); grant up to {}",
        a.approvers_needed, a.grant_allowed
    );
    for approval in &a.approvals {
        let _ = writeln!(
            out,
            "approved  by {} at {}{}",
            approval.approver,
            approval.at,
            approval
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(denial) = &a.denial {
        let _ = writeln!(
            out,
            "denied    by {} at {}: {}",
            denial.approver,
            denial.at,
            denial.reason.as_deref().unwrap_or("")
        );
    }
    if let Some(grant) = &a.grant {
        let until = a
            .grant_until
            .as_deref()
            .map(|u| format!(" until {u}"))
            .unwrap_or_default();
        let _ = writeln!(out, "grant     {grant}{until}");
    }
    let _ = writeln!(
        out,
        "asked     {} time(s), first {}, last {}",
        a.asks, a.first_asked, a.last_asked
    );
    out
}
