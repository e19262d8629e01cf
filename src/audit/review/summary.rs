//! `--summary`: request counts per task, host and decision.

use std::collections::BTreeMap;

use serde::Serialize;

use super::human::printable;
use crate::audit::record::{DecisionRecord, Event, Verdict};

/// One row of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryRow {
    /// Task id, or `-`.
    pub task: String,
    /// Host, or `-`.
    pub host: String,
    /// `allow`, `deny`, `challenge`, or `-`.
    pub decision: String,
    /// Requests with these three values.
    pub count: u64,
}

/// Request counts per task × host × decision, sorted by those three.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    counts: BTreeMap<(String, String, String), u64>,
}

impl Summary {
    /// Counts `record` if it is a request; lifecycle events are not traffic.
    pub fn add(&mut self, record: &DecisionRecord) {
        if record.event != Event::Request {
            return;
        }
        let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        let key = (
            or_dash(record.task.as_deref()),
            or_dash(record.host.as_deref()).to_ascii_lowercase(),
            or_dash(record.decision.map(Verdict::as_str)),
        );
        *self.counts.entry(key).or_default() += 1;
    }

    /// The rows, sorted by task, then host, then decision.
    pub fn rows(&self) -> impl Iterator<Item = SummaryRow> + '_ {
        self.counts
            .iter()
            .map(|((task, host, decision), &count)| SummaryRow {
                task: task.clone(),
                host: host.clone(),
                decision: decision.clone(),
                count,
            })
    }

    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// An aligned table with a header and a total line.
    pub fn render_table(&self) -> String {
        let header = ("TASK", "HOST", "DECISION", "COUNT");
        let width = |f: fn(&(String, String, String)) -> usize, min: usize| {
            self.counts.keys().map(f).max().unwrap_or(0).max(min)
        };
        let tw = width(|k| printable(&k.0).chars().count(), header.0.len());
        let hw = width(|k| printable(&k.1).chars().count(), header.1.len());
        let dw = header.2.len();
        let cw = self.total().to_string().len().max(header.3.len());
        let mut out = format!(
            "{:<tw$}  {:<hw$}  {:<dw$}  {:>cw$}\n",
            header.0, header.1, header.2, header.3
        );
        for ((task, host, decision), count) in &self.counts {
            out.push_str(&format!(
                "{:<tw$}  {:<hw$}  {:<dw$}  {count:>cw$}\n",
                printable(task),
                printable(host),
                decision
            ));
        }
        out.push_str(&format!(
            "{:<tw$}  {:<hw$}  {:<dw$}  {:>cw$}\n",
            "",
            "",
            "total",
            self.total()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Event;

    fn req(task: &str, host: &str, decision: Verdict) -> DecisionRecord {
        DecisionRecord {
            task: Some(task.into()),
            host: Some(host.into()),
            decision: Some(decision),
            ..DecisionRecord::default()
        }
    }

    #[test]
    fn counts_requests_per_task_host_and_decision_sorted() {
        let mut s = Summary::default();
        for r in [
            req("task-b", "api.github.com", Verdict::Allow),
            req("task-a", "s3.amazonaws.com", Verdict::Deny),
            req("task-a", "API.GITHUB.COM", Verdict::Deny),
            req("task-a", "api.github.com", Verdict::Allow),
            req("task-a", "api.github.com", Verdict::Deny),
            DecisionRecord {
                event: Event::TaskStart,
                task: Some("task-a".into()),
                ..DecisionRecord::default()
            },
            DecisionRecord::default(),
        ] {
            s.add(&r);
        }
        let rows: Vec<(String, String, String, u64)> = s
            .rows()
            .map(|r| (r.task, r.host, r.decision, r.count))
            .collect();
        let expected = [
            ("-", "-", "-", 1),
            ("task-a", "api.github.com", "allow", 1),
            ("task-a", "api.github.com", "deny", 2),
            ("task-a", "s3.amazonaws.com", "deny", 1),
            ("task-b", "api.github.com", "allow", 1),
        ]
        .map(|(t, h, d, c)| (t.to_string(), h.to_string(), d.to_string(), c));
        assert_eq!(rows, expected);
        assert_eq!(s.total(), 6);
    }

    #[test]
    fn table_is_aligned_with_header_and_total() {
        let mut s = Summary::default();
        s.add(&req("task-a", "api.github.com", Verdict::Deny));
        for _ in 0..12 {
            s.add(&req("task-long-name", "x.io", Verdict::Allow));
        }
        let table = s.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("TASK"), "{table}");
        let widths: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(
            widths.iter().all(|&w| w == widths[0]),
            "ragged table:\n{table}"
        );
        assert!(
            lines[1].starts_with("task-a          api.github.com  deny"),
            "{table}"
        );
        assert!(
            lines[3].trim_start().starts_with("total") && lines[3].ends_with("13"),
            "{table}"
        );
    }

    #[test]
    fn table_escapes_hostile_names() {
        let mut s = Summary::default();
        s.add(&req("task-\u{1b}[31m", "h", Verdict::Deny));
        assert!(!s.render_table().contains('\u{1b}'));
    }
}
