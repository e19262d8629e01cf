//! `credgate logs`: read the decision log the way a reviewer asks questions
//! of it: which requests of this task were denied, what went to this host
//! in the last ten minutes, how much did each task do.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::audit::review::{
    parse_line, parse_records, printable, BadLine, Filter, HostPattern, HumanFormat, RecordLine,
    Since, Summary,
};
use crate::audit::tail::Tail;
use crate::audit::{Verdict, DEFAULT_AUDIT_PATH};

/// How often `--follow` looks for appended records.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Arguments of `credgate logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The decision log to read; `-` reads standard input.
    #[arg(value_name = "FILE", default_value = DEFAULT_AUDIT_PATH)]
    pub file: PathBuf,
    /// Only records of this task.
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Only allowed, only denied requests, or only the 407 challenges that
    /// clients answered with credentials (not counted as denied).
    #[arg(long, value_name = "allow|deny|challenge")]
    pub decision: Option<Verdict>,
    /// Only requests to this host (case-insensitive), or to any subdomain
    /// with `*.example.com`.
    #[arg(long, value_name = "H")]
    pub host: Option<HostPattern>,
    /// Only records newer than a duration ago (`10m`, `2h`) or than a time
    /// (`2026-11-23T14:00:00Z`; UTC unless an offset is given).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<Since>,
    /// Only records about approvals: `approval.*` events, and the requests
    /// that needed one.
    #[arg(long)]
    pub approvals: bool,
    /// Keep printing records as they are appended, until interrupted.
    #[arg(long, short = 'f', conflicts_with = "summary")]
    pub follow: bool,
    /// Print request counts per task, host and decision instead of records.
    #[arg(long)]
    pub summary: bool,
    /// Print the matching records as their original JSON lines.
    #[arg(long)]
    pub json: bool,
}

impl LogsArgs {
    /// The filter these arguments ask for, with `--since` counted back
    /// from `now`.
    pub fn filter(&self, now: SystemTime) -> Filter {
        Filter {
            task: self.task.clone(),
            decision: self.decision,
            host: self.host.clone(),
            since: self.since.map(|s| s.cutoff(now)),
            approvals: self.approvals,
        }
    }
}

/// Runs `credgate logs`. Lines that are not records are reported on stderr
/// and skipped. With `--follow` it only returns on an error.
pub fn run(args: &LogsArgs) -> anyhow::Result<()> {
    let filter = args.filter(SystemTime::now());
    let stdin = args.file == Path::new("-");
    let source = args.file.display().to_string();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut err = io::stderr().lock();
    let mut printer = Printer::new(args, &filter, &source, &mut out, &mut err);

    let result = if args.follow {
        anyhow::ensure!(!stdin, "--follow needs a file, not standard input");
        follow(&args.file, &mut printer)
    } else if stdin {
        read_all(io::stdin().lock(), &mut printer)
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| {
            format!("cannot open the decision log {source} (name the file, e.g. the audit path of the configuration)")
        })?;
        read_all(BufReader::new(file), &mut printer)
    };
    match result {
        // `credgate logs | head` closing the pipe is how a reader says "enough".
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(|| format!("while reviewing {source}")),
    }
}

/// Prints every matching record of `input`, then the summary if asked.
fn read_all(input: impl BufRead, printer: &mut Printer<'_>) -> io::Result<()> {
    for item in parse_records(input) {
        printer.line(item)?;
    }
    printer.finish()
}

/// Prints what is in the file, then what is appended, forever.
fn follow(path: &Path, printer: &mut Printer<'_>) -> io::Result<()> {
    let mut tail = Tail::new(path);
    let mut told_waiting = false;
    loop {
        poll_once(&mut tail, printer)?;
        if !tail.is_open() && !told_waiting {
            writeln!(
                printer.err,
                "credgate logs: waiting for {} to appear",
                path.display()
            )?;
            told_waiting = true;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One round of `--follow`: print what was appended, and push it out now.
fn poll_once(tail: &mut Tail, printer: &mut Printer<'_>) -> io::Result<()> {
    tail.poll(|number, line| match parse_line(number, line) {
        Some(item) => printer.line(item),
        None => Ok(()),
    })?;
    printer.out.flush()
}

/// Turns parsed lines into output: records, JSON lines or summary counts.
struct Printer<'a> {
    json: bool,
    summary: Option<Summary>,
    human: HumanFormat,
    filter: &'a Filter,
    source: &'a str,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl<'a> Printer<'a> {
    fn new(
        args: &LogsArgs,
        filter: &'a Filter,
        source: &'a str,
        out: &'a mut dyn Write,
        err: &'a mut dyn Write,
    ) -> Self {
        Printer {
            json: args.json,
            summary: args.summary.then(Summary::default),
            human: HumanFormat::new(),
            filter,
            source,
            out,
            err,
        }
    }

    fn line(&mut self, item: Result<RecordLine, BadLine>) -> io::Result<()> {
        let line = match item {
            Ok(line) => line,
            Err(bad) => {
                return writeln!(
                    self.err,
                    "credgate logs: {}:{}: skipped, not a decision record: {}",
                    self.source,
                    bad.number,
                    printable(&bad.error)
                );
            }
        };
        if !self.filter.matches(&line.record) {
            return Ok(());
        }
        match (&mut self.summary, self.json) {
            (Some(summary), _) => {
                summary.add(&line.record);
                Ok(())
            }
            (None, true) => writeln!(self.out, "{}", line.raw),
            (None, false) => self
                .out
                .write_all(self.human.format(&line.record).as_bytes()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(summary) = &self.summary {
            if self.json {
                for row in summary.rows() {
                    let json = serde_json::to_string(&row).map_err(io::Error::other)?;
                    writeln!(self.out, "{json}")?;
                }
            } else {
                self.out.write_all(summary.render_table().as_bytes())?;
            }
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::new_record_id;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        logs: LogsArgs,
    }

    fn parse(args: &[&str]) -> Result<LogsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("logs").chain(args.iter().copied())).map(|c| c.logs)
    }

    #[test]
    fn arguments_parse_into_typed_filters() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.file, Path::new(DEFAULT_AUDIT_PATH));
        assert!(!a.follow && !a.summary && !a.json);

        let a = parse(&[
            "x.jsonl",
            "--task",
            "task-1",
            "--decision",
            "deny",
            "--host",
            "*.github.com",
            "--since",
            "10m",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.file, Path::new("x.jsonl"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(3600);
        let f = a.filter(now);
        assert_eq!(f.task.as_deref(), Some("task-1"));
        assert_eq!(f.decision, Some(Verdict::Deny));
        assert_eq!(f.host, Some(HostPattern::Subdomains(".github.com".into())));
        assert_eq!(f.since, Some(now - Duration::from_secs(600)));
    }

    #[test]
    fn bad_arguments_are_refused_by_the_parser() {
        for bad in [
            &["--decision", "maybe"][..],
            &["--since", "15"],
            &["--host", "a.*.com"],
            &["--follow", "--summary"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    const A_DENY: &str = r#"{"ts":"2026-11-23T14:05:01.123Z","id":"1","event":"request","task":"task-a","method":"GET","scheme":"https","host":"api.github.com","port":443,"path":"/repos/x","decision":"deny","reason":"no_matching_rule"}"#;
    const A_ALLOW: &str = r#"{"id":"2","ts":"2026-11-23T14:05:02.000Z","event":"request","task":"task-a","method":"GET","scheme":"https","host":"api.github.com","path":"/user","decision":"allow","reason":"allowed"}"#;
    const B_DENY: &str = r#"{"ts":"2026-11-23T14:06:00.000Z","id":"3","event":"request","task":"task-b","host":"s3.amazonaws.com","decision":"deny","reason":"denied_by_rule"}"#;

    fn review(args: &[&str], log: &str) -> (String, String) {
        let args = parse(args).unwrap();
        let filter = args.filter(SystemTime::now());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut printer = Printer::new(&args, &filter, "test.jsonl", &mut out, &mut err);
        read_all(log.as_bytes(), &mut printer).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    fn log() -> String {
        format!("{A_DENY}\n{{broken\n{A_ALLOW}\n{B_DENY}\n")
    }

    #[test]
    fn json_output_is_the_matching_lines_unchanged_and_bad_lines_go_to_stderr() {
        let (out, err) = review(&["--json", "--decision", "deny"], &log());
        assert_eq!(out, format!("{A_DENY}\n{B_DENY}\n"));
        assert!(
            err.starts_with("credgate logs: test.jsonl:2: skipped, not a decision record"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn a_challenge_is_shown_only_when_asked_for() {
        const A_CHALLENGE: &str = r#"{"ts":"2026-11-23T14:05:00.500Z","id":"0","event":"request","task":"task-a","method":"CONNECT","scheme":"https","host":"api.github.com","port":443,"path":null,"decision":"challenge","reason":"task_token_missing"}"#;
        let log = format!("{A_CHALLENGE}\n{}", log());
        let (out, _) = review(&["--json", "--decision", "deny"], &log);
        assert_eq!(out, format!("{A_DENY}\n{B_DENY}\n"));
        let (out, _) = review(&["--json", "--decision", "challenge"], &log);
        assert_eq!(out, format!("{A_CHALLENGE}\n"));
        let (json, _) = review(&["--summary", "--json", "--task", "task-a"], &log);
        assert!(
            json.contains(
                r#"{"task":"task-a","host":"api.github.com","decision":"challenge","count":1}"#
            ),
            "{json}"
        );
    }

    #[test]
    fn human_output_shows_matching_records_one_per_line() {
        let (out, _) = review(&["--task", "task-a"], &log());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], "--- 2026-11-23 UTC ---");
        assert!(
            lines[1].contains(
                "deny   task-a      GET https://api.github.com/repos/x  no_matching_rule"
            ),
            "{out}"
        );
        assert!(
            lines[2].contains("allow  task-a      GET https://api.github.com/user  allowed"),
            "{out}"
        );
    }

    #[test]
    fn since_a_time_keeps_only_later_records() {
        let (out, _) = review(&["--json", "--since", "2026-11-23T14:05:02Z"], &log());
        assert_eq!(out, format!("{A_ALLOW}\n{B_DENY}\n"));
    }

    #[test]
    fn summary_counts_the_filtered_records() {
        let (out, _) = review(&["--summary", "--host", "api.github.com"], &log());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[1].starts_with("task-a  api.github.com  allow") && lines[1].ends_with('1'),
            "{out}"
        );
        assert!(
            lines[2].starts_with("task-a  api.github.com  deny") && lines[2].ends_with('1'),
            "{out}"
        );
        let (json, _) = review(&["--summary", "--json"], &log());
        assert_eq!(json.lines().count(), 3);
        assert!(
            json.contains(
                r#"{"task":"task-b","host":"s3.amazonaws.com","decision":"deny","count":1}"#
            ),
            "{json}"
        );
    }

    #[test]
    fn follow_prints_appended_records_as_they_arrive() {
        let dir = std::env::temp_dir().join(format!("credgate-logs-test-{}", new_record_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("decisions.jsonl");
        std::fs::write(&path, format!("{A_DENY}\n")).unwrap();
        let args = parse(&["--json", "--follow", "--decision", "deny"]).unwrap();
        let filter = args.filter(SystemTime::now());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut tail = Tail::new(&path);
        {
            let mut printer = Printer::new(&args, &filter, "d", &mut out, &mut err);
            poll_once(&mut tail, &mut printer).unwrap();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            // B_DENY arrives in two writes: nothing of it until it is whole.
            f.write_all(format!("{A_ALLOW}\n{}", &B_DENY[..30]).as_bytes())
                .unwrap();
            poll_once(&mut tail, &mut printer).unwrap();
            f.write_all(format!("{}\nnot a record\n", &B_DENY[30..]).as_bytes())
                .unwrap();
            poll_once(&mut tail, &mut printer).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{A_DENY}\n{B_DENY}\n")
        );
        assert!(String::from_utf8(err).unwrap().contains("d:4: skipped"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
