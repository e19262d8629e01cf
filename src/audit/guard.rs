//! One record per request, whatever happens to the request.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::record::{method_name, CredentialInfo, DecisionRecord, UpstreamInfo, Verdict};
use super::sink::AuditSink;
use crate::reason::Reason;

/// Holds a request's record while the pipeline fills it in, and emits it
/// when dropped: on return, on `?`, on panic, and when the request's future
/// is cancelled (client gone, timeout, shutdown). That makes "exactly one
/// record per parsed request" a property of ownership rather than of every
/// code path remembering to log.
#[derive(Debug)]
pub struct RecordGuard {
    sink: Arc<AuditSink>,
    /// Boxed: the guard moves with the request through the pipeline and
    /// into the response body, and the record is a few hundred bytes.
    record: Option<Box<DecisionRecord>>,
    started: Instant,
    /// Set when the exchange is over before the record is emitted.
    stopped: Option<Instant>,
}

impl RecordGuard {
    /// Starts timing the request now; the record is emitted when the guard
    /// is dropped, with `duration_ms` measured from this call.
    pub fn new(sink: Arc<AuditSink>, record: DecisionRecord) -> RecordGuard {
        RecordGuard {
            sink,
            record: Some(Box::new(record)),
            started: Instant::now(),
            stopped: None,
        }
    }

    /// The record itself: the phases fill it in through the methods below.
    pub(crate) fn record(&mut self) -> &mut DecisionRecord {
        self.record
            .as_deref_mut()
            .expect("the record is only taken when the guard is dropped")
    }

    // What the phases learn, one method each, in the order they learn it.

    /// The request's method (`CONNECT` for a tunnel).
    pub fn method(&mut self, method: &str) {
        self.record().method = Some(method_name(method));
    }

    /// identify: the task, its agent and labels.
    pub fn task(&mut self, id: &str, agent: &str, labels: &Arc<BTreeMap<String, String>>) {
        let r = self.record();
        r.task = Some(id.to_owned());
        r.agent = Some(agent.to_owned());
        r.labels = labels.clone();
    }

    /// What is asked for: scheme, host, port and, for a request, the
    /// normalised path (never the query).
    pub fn target(&mut self, scheme: &'static str, host: &str, port: u16, path: Option<&str>) {
        let r = self.record();
        r.scheme = Some(Cow::Borrowed(scheme));
        r.host = Some(host.to_owned());
        r.port = Some(port);
        r.path = path.map(str::to_owned);
    }

    /// sanitize: the path as it will be forwarded, without the secrets it
    /// held.
    pub fn path(&mut self, path: &str) {
        self.record().path = Some(path.to_owned());
    }

    /// sanitize: the header names removed, and the detection rules that
    /// fired (ids only, never a value).
    pub fn sanitized(&mut self, stripped: Vec<String>, findings: Vec<String>) {
        let r = self.record();
        r.stripped = stripped;
        r.findings = findings;
    }

    /// Detection rules that fired after admit, in a body streamed then or in
    /// a WebSocket message (ids only).
    pub fn found_in_body(&mut self, rules: impl IntoIterator<Item = String>) {
        let r = self.record();
        for rule in rules {
            if !r.findings.contains(&rule) {
                r.findings.push(rule);
            }
        }
        r.findings.sort();
    }

    /// Header names removed after admit, by a rule that strips secrets.
    pub fn also_stripped(&mut self, names: Vec<String>) {
        self.record().stripped.extend(names);
    }

    /// admit: the rule that decided, if any did.
    pub fn rule(&mut self, id: Option<Arc<str>>) {
        self.record().rule = id;
    }

    /// credential: what was injected, by fingerprint.
    pub fn credential(&mut self, info: Arc<CredentialInfo>) {
        self.record().credential = Some(info);
    }

    /// The request body's size as received.
    pub fn received(&mut self, bytes: u64) {
        self.record().bytes_in = bytes;
    }

    /// forward: the upstream's status and the time to its response head.
    pub fn upstream(&mut self, status: u16, ms: u64) {
        self.record().upstream = Some(UpstreamInfo {
            status: Some(status),
            ms: Some(ms),
        });
    }

    /// scrub: `bytes` more sent to the agent, `masked` credential
    /// occurrences masked in them.
    pub fn sent(&mut self, bytes: u64, masked: u64) {
        let r = self.record();
        r.bytes_out += bytes;
        r.scrubbed += masked;
    }

    /// A blind tunnel: nothing in it is inspected.
    pub fn tunnel(&mut self) {
        self.record().tunnel = true;
    }

    /// The bytes a blind tunnel relayed, each way.
    pub fn relayed(&mut self, to_upstream: u64, to_agent: u64) {
        let r = self.record();
        r.bytes_in = to_upstream;
        r.bytes_out = to_agent;
    }

    /// What a WebSocket relayed until now (the upgrade's record carries it).
    pub fn websocket(&mut self, info: crate::audit::WebSocketInfo) {
        self.record().websocket = Some(info);
    }

    /// The approval the request needed.
    pub fn approval(&mut self, info: crate::audit::ApprovalInfo) {
        self.record().approval = Some(info);
    }

    /// Allowed; `message` says how, where a record shows it (a tunnel).
    pub fn allow(&mut self, message: Option<String>) {
        let r = self.record();
        r.decision = Some(Verdict::Allow);
        r.reason = Some(Reason::Allowed);
        r.message = message;
    }

    /// Denied, or failed before anything was forwarded, for `reason`.
    pub fn deny(&mut self, reason: Reason, message: String) {
        let r = self.record();
        r.decision = Some(Verdict::Deny);
        r.reason = Some(reason);
        r.message = Some(message);
    }

    /// A denial for a missing task token that was a challenge after all:
    /// the client answered the 407 with credentials on the same connection.
    pub fn challenged(&mut self) {
        self.record().decision = Some(Verdict::Challenge);
    }

    /// The exchange is over, though the record waits to be emitted (a
    /// challenge, until the next request tells what it was; a tunnel, until
    /// the agent uses it): its `duration_ms` ends now.
    pub fn stop_clock(&mut self) {
        self.stopped = Some(Instant::now());
    }

    /// An allowed exchange that ended early (the upstream broke off, the
    /// task ended, the agent left): the decision stands, `reason` and
    /// `message` say how it ended.
    pub fn ended(&mut self, reason: Reason, message: String) {
        let r = self.record();
        r.reason = Some(reason);
        r.message = Some(message);
    }

    /// The record's id, as error bodies name it.
    pub fn id(&mut self) -> String {
        self.record().id.clone()
    }
}

/// The message of a record that ends as `client_disconnected` without one.
const AGENT_WENT_AWAY: &str = "the agent went away before the exchange finished";

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            if record.reason == Some(Reason::ClientDisconnected) && record.message.is_none() {
                record.message = Some(AGENT_WENT_AWAY.into());
            }
            let end = self.stopped.unwrap_or_else(Instant::now);
            let duration = end.saturating_duration_since(self.started);
            record.duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            self.sink.emit_boxed(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn guard(sink: &Arc<AuditSink>, task: &str) -> RecordGuard {
        let mut record = DecisionRecord::request(SystemTime::now());
        record.task = Some(task.to_string());
        RecordGuard::new(Arc::clone(sink), record)
    }

    #[tokio::test]
    async fn emits_exactly_once_with_the_filled_fields_and_duration() {
        let sink = AuditSink::memory();
        {
            let mut g = guard(&sink, "task-a");
            g.record().decision = Some(Verdict::Deny);
            g.record().reason = Some(Reason::NoMatchingRule);
            std::thread::sleep(Duration::from_millis(15));
            assert!(sink.records().is_empty(), "emitted before drop");
        }
        let records = sink.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].task.as_deref(), Some("task-a"));
        assert_eq!(records[0].reason, Some(Reason::NoMatchingRule));
        assert!(records[0].duration_ms >= 15, "{}", records[0].duration_ms);
    }

    #[tokio::test]
    async fn a_held_challenge_keeps_its_duration_and_says_challenge() {
        let sink = AuditSink::memory();
        let mut g = guard(&sink, "task-c");
        g.deny(Reason::TaskTokenMissing, "no task token".into());
        g.stop_clock();
        std::thread::sleep(Duration::from_millis(30));
        g.challenged();
        drop(g);
        let records = sink.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].decision, Some(Verdict::Challenge));
        assert_eq!(records[0].reason, Some(Reason::TaskTokenMissing));
        assert!(records[0].duration_ms < 30, "{}", records[0].duration_ms);
    }

    #[tokio::test]
    async fn a_record_left_as_client_disconnected_says_so() {
        let sink = AuditSink::memory();
        for message in [None, Some("the agent went away mid-body")] {
            let mut g = guard(&sink, "task-gone");
            g.record().reason = Some(Reason::ClientDisconnected);
            g.record().message = message.map(String::from);
        }
        let mut g = guard(&sink, "task-done");
        g.record().reason = Some(Reason::Allowed);
        drop(g);
        let messages: Vec<Option<String>> = sink.records().into_iter().map(|r| r.message).collect();
        assert_eq!(
            messages,
            [
                Some(AGENT_WENT_AWAY.to_string()),
                Some("the agent went away mid-body".to_string()),
                None
            ]
        );
    }

    #[tokio::test]
    async fn select_dropping_the_losing_branch_still_emits() {
        let sink = AuditSink::memory();
        let s = Arc::clone(&sink);
        let slow = async move {
            let mut g = guard(&s, "task-cancelled");
            g.record().method = Some("GET".into());
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = slow => unreachable!("pending never completes"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        let records = sink.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].task.as_deref(), Some("task-cancelled"));
        assert_eq!(records[0].method.as_deref(), Some("GET"));
    }

    #[tokio::test]
    async fn aborted_task_emits_once() {
        let sink = AuditSink::memory();
        let s = Arc::clone(&sink);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            let _g = guard(&s, "task-aborted");
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        started_rx.await.unwrap();
        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
        let records = sink.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].task.as_deref(), Some("task-aborted"));
    }

    #[tokio::test]
    async fn panicking_request_emits_once() {
        let sink = AuditSink::memory();
        let s = Arc::clone(&sink);
        let handle = tokio::spawn(async move {
            let _g = guard(&s, "task-panicked");
            panic!("test panic inside a request");
        });
        assert!(handle.await.unwrap_err().is_panic());
        let records = sink.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].task.as_deref(), Some("task-panicked"));
    }

    #[tokio::test]
    async fn completed_requests_each_emit_one_record() {
        let sink = AuditSink::memory();
        let mut handles = Vec::new();
        for i in 0..50 {
            let s = Arc::clone(&sink);
            handles.push(tokio::spawn(async move {
                let mut g = guard(&s, &format!("task-{i}"));
                tokio::task::yield_now().await;
                g.record().decision = Some(Verdict::Allow);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut tasks: Vec<String> = sink.records().into_iter().filter_map(|r| r.task).collect();
        tasks.sort();
        let mut expected: Vec<String> = (0..50).map(|i| format!("task-{i}")).collect();
        expected.sort();
        assert_eq!(tasks, expected);
    }
}
