//! One aligned line per record, for people.

use crate::audit::record::{DecisionRecord, Event, Verdict};

/// Formats records as aligned one-line summaries for a terminal, with a
/// date line whenever the (UTC) day changes, since lines show only the time.
#[derive(Debug, Clone, Default)]
pub struct HumanFormat {
    last_date: Option<String>,
}

impl HumanFormat {
    /// A formatter that has not printed a date yet.
    pub fn new() -> Self {
        HumanFormat::default()
    }

    /// The text to print for `record` (one line, or two with a new date),
    /// ending in a newline. Control and bidi characters from the record are
    /// escaped: an agent chose the path, and must not be able to write
    /// terminal escape sequences into a reviewer's screen.
    pub fn format(&mut self, record: &DecisionRecord) -> String {
        let mut out = String::with_capacity(160);
        let ts = record.ts.as_str();
        let (date, time) = match (ts.get(..10), ts.get(11..23)) {
            (Some(date), Some(time)) if ts.as_bytes().get(10) == Some(&b'T') => (date, time),
            _ => ("", ts),
        };
        if !date.is_empty() && self.last_date.as_deref() != Some(date) {
            out.push_str(&format!("--- {} UTC ---\n", printable(date)));
            self.last_date = Some(date.to_string());
        }
        let decision = record.decision.map_or("-", Verdict::as_str);
        let task = record.task.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{:<12}  {decision:<5}  {:<10}  {}",
            printable(time),
            printable(task),
            describe(record)
        ));
        if let Some(reason) = record.reason {
            out.push_str("  ");
            out.push_str(reason.as_str());
        }
        if let Some(status) = record.upstream.and_then(|u| u.status) {
            out.push_str(&format!(" {status}"));
        }
        if let Some(cred) = &record.credential {
            if record.event == Event::Request {
                out.push_str(&format!("  cred={}", printable(&cred.name)));
            }
        }
        if !record.findings.is_empty() {
            out.push_str(&format!(
                "  findings={}",
                printable(&record.findings.join(","))
            ));
        }
        if let Some(message) = &record.message {
            out.push_str(&format!("  ({})", printable(message)));
        }
        out.push('\n');
        out
    }
}

/// What the record is about: `GET https://host/path`, `CONNECT host:443`,
/// or the lifecycle event with what it concerns.
fn describe(record: &DecisionRecord) -> String {
    match record.event {
        Event::Request => {
            let method = record.method.as_deref().unwrap_or("-");
            let mut text = if record.tunnel || method.eq_ignore_ascii_case("CONNECT") {
                format!("{method} {}", authority(record, true))
            } else {
                let scheme = record.scheme.as_deref().map(|s| format!("{s}://"));
                format!(
                    "{method} {}{}{}",
                    scheme.as_deref().unwrap_or(""),
                    authority(record, false),
                    record.path.as_deref().unwrap_or("")
                )
            };
            if record.tunnel {
                text.push_str(" [tunnel]");
            }
            if let Some(a) = &record.approval {
                text.push_str(&approval_text(a));
            }
            if let Some(ws) = &record.websocket {
                text.push_str(&format!(
                    " [websocket: {} frames in, {} out",
                    ws.frames_in, ws.frames_out
                ));
                if let Some(code) = ws.close_code {
                    text.push_str(&format!(", closed {code}"));
                }
                text.push(']');
            }
            printable(&text)
        }
        Event::TaskStart | Event::TaskEnd => {
            let mut text = record.event.as_str().to_string();
            if let Some(agent) = &record.agent {
                text.push_str(&format!(" agent={agent}"));
            }
            for (key, value) in record.labels.iter() {
                text.push_str(&format!(" {key}={value}"));
            }
            printable(&text)
        }
        Event::ApprovalRequest
        | Event::ApprovalGrant
        | Event::ApprovalDeny
        | Event::ApprovalExpire => {
            let mut text = record.event.as_str().to_string();
            if let Some(method) = &record.method {
                text.push_str(&format!(
                    " {method} {}{}",
                    authority(record, false),
                    record.path.as_deref().unwrap_or("")
                ));
            }
            if let Some(a) = &record.approval {
                text.push_str(&approval_text(a));
            }
            printable(&text)
        }
        Event::CredentialIssue | Event::CredentialRevoke => {
            let mut text = record.event.as_str().to_string();
            if let Some(c) = &record.credential {
                text.push_str(&format!(
                    " {} ({}) id={} {}",
                    c.name, c.source, c.id, c.fingerprint
                ));
                if let Some(expires) = &c.expires_at {
                    text.push_str(&format!(" expires={expires}"));
                }
            }
            printable(&text)
        }
    }
}

/// ` [approval apr-… granted by a, b; grant 10m]`.
fn approval_text(a: &crate::audit::ApprovalInfo) -> String {
    let mut text = format!(" [approval {} {}", a.id, a.state);
    if !a.approvers.is_empty() {
        text.push_str(&format!(" by {}", a.approvers.join(", ")));
    }
    if let Some(grant) = &a.grant {
        text.push_str(&format!("; grant {grant}"));
    }
    text.push(']');
    text
}

/// `host[:port]`, leaving out the scheme's default port unless `always_port`.
fn authority(record: &DecisionRecord, always_port: bool) -> String {
    let Some(host) = record.host.as_deref() else {
        return "-".to_string();
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let default_port = match record.scheme.as_deref() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    match record.port {
        Some(port) if always_port || Some(port) != default_port => format!("{host}:{port}"),
        _ => host,
    }
}

/// `text` with control and bidirectional-override characters escaped.
pub fn printable(text: &str) -> String {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.contains(unsafe_char) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::record::{CredentialInfo, UpstreamInfo};
    use crate::reason::Reason;

    fn deny() -> DecisionRecord {
        DecisionRecord {
            ts: "2026-11-23T14:05:01.123Z".into(),
            task: Some("task-3f2a".into()),
            method: Some("GET".into()),
            scheme: Some("https".into()),
            host: Some("api.github.com".into()),
            port: Some(443),
            path: Some("/repos/x".into()),
            decision: Some(Verdict::Deny),
            reason: Some(Reason::NoMatchingRule),
            message: Some("no rule of scope github-read allows GET /repos/x".into()),
            ..DecisionRecord::default()
        }
    }

    #[test]
    fn a_request_reads_as_one_aligned_line_after_a_date_line() {
        let mut f = HumanFormat::new();
        let text = f.format(&deny());
        assert_eq!(
            text,
            "--- 2026-11-23 UTC ---\n\
             14:05:01.123  deny   task-3f2a   GET https://api.github.com/repos/x  no_matching_rule  \
             (no rule of scope github-read allows GET /repos/x)\n"
        );
        let again = f.format(&deny());
        assert!(
            !again.contains("---"),
            "same day, no new date line: {again}"
        );
        let next_day = f.format(&DecisionRecord {
            ts: "2026-11-24T00:00:00.000Z".into(),
            ..deny()
        });
        assert!(
            next_day.starts_with("--- 2026-11-24 UTC ---\n"),
            "{next_day}"
        );
    }

    #[test]
    fn allowed_request_shows_status_credential_and_odd_ports() {
        let r = DecisionRecord {
            decision: Some(Verdict::Allow),
            reason: Some(Reason::Allowed),
            message: None,
            scheme: Some("http".into()),
            host: Some("::1".into()),
            port: Some(8080),
            upstream: Some(UpstreamInfo {
                status: Some(201),
                ms: Some(3),
            }),
            credential: Some(Arc::new(CredentialInfo {
                name: "internal-api".into(),
                ..CredentialInfo::default()
            })),
            ..deny()
        };
        let line = HumanFormat::new().format(&r);
        assert!(line.contains("allow  task-3f2a   GET http://[::1]:8080/repos/x  allowed 201  cred=internal-api\n"), "{line}");
    }

    #[test]
    fn tunnels_and_lifecycle_events_say_what_they_are() {
        let tunnel = DecisionRecord {
            method: Some("CONNECT".into()),
            tunnel: true,
            decision: Some(Verdict::Allow),
            reason: Some(Reason::Allowed),
            message: None,
            ..deny()
        };
        assert!(HumanFormat::new()
            .format(&tunnel)
            .contains("CONNECT api.github.com:443 [tunnel]  allowed"));

        let socket = DecisionRecord {
            method: Some("GET".into()),
            decision: Some(Verdict::Allow),
            reason: Some(Reason::Allowed),
            websocket: Some(crate::audit::WebSocketInfo {
                frames_in: 2,
                frames_out: 5,
                close_code: Some(1000),
                ..Default::default()
            }),
            ..deny()
        };
        let line = HumanFormat::new().format(&socket);
        assert!(
            line.contains("[websocket: 2 frames in, 5 out, closed 1000]  allowed"),
            "{line}"
        );

        let mut revoke =
            DecisionRecord::event(Event::CredentialRevoke, std::time::SystemTime::now());
        revoke.task = Some("task-3f2a".into());
        revoke.credential = Some(Arc::new(CredentialInfo {
            source: "github_app".into(),
            name: "github".into(),
            id: "cred-7".into(),
            fingerprint: "sha256:0123456789ab".into(),
            ..CredentialInfo::default()
        }));
        let line = HumanFormat::new().format(&revoke);
        assert!(line.contains("-      task-3f2a   credential.revoke github (github_app) id=cred-7 sha256:0123456789ab"), "{line}");

        let mut start = DecisionRecord::event(Event::TaskStart, std::time::SystemTime::now());
        start.agent = Some("coder".into());
        Arc::make_mut(&mut start.labels).insert("ticket".into(), "OPS-1".into());
        assert!(HumanFormat::new()
            .format(&start)
            .contains("task.start agent=coder ticket=OPS-1"));
    }

    #[test]
    fn agent_controlled_text_cannot_drive_the_terminal() {
        let r = DecisionRecord {
            path: Some("/x\u{1b}]0;pwned\u{7}\u{1b}[2J".into()),
            message: Some("bidi \u{202e}txt.exe".into()),
            findings: vec!["aws\r\n-key".into()],
            ..deny()
        };
        let line = HumanFormat::new().format(&r);
        for c in ['\u{1b}', '\u{7}', '\u{202e}', '\r'] {
            assert!(!line.contains(c), "{c:?} reached the terminal: {line:?}");
        }
        assert_eq!(
            line.matches('\n').count(),
            2,
            "one date line and one record line: {line:?}"
        );
        assert!(line.contains("\\u{1b}]0;pwned"), "{line}");
    }

    #[test]
    fn a_malformed_timestamp_is_shown_as_is() {
        let line = HumanFormat::new().format(&DecisionRecord {
            ts: "garbage".into(),
            ..deny()
        });
        assert!(line.starts_with("garbage       deny"), "{line}");
        assert_eq!(printable("plain"), "plain");
    }
}
