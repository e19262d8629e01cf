//! One record per request, whatever happens to the request.

use std::sync::Arc;
use std::time::Instant;

use super::record::DecisionRecord;
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
}

impl RecordGuard {
    /// Starts timing the request now; the record is emitted when the guard
    /// is dropped, with `duration_ms` measured from this call.
    pub fn new(sink: Arc<AuditSink>, record: DecisionRecord) -> RecordGuard {
        RecordGuard {
            sink,
            record: Some(Box::new(record)),
            started: Instant::now(),
        }
    }

    /// The record, to fill in as the pipeline learns things.
    pub fn record(&mut self) -> &mut DecisionRecord {
        self.record
            .as_deref_mut()
            .expect("the record is only taken when the guard is dropped")
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
            record.duration_ms =
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.sink.emit_boxed(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Verdict;
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
