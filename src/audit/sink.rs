//! The audit sink: a queue the request path drops records into, drained by
//! one writer thread. It never drops a record; when it cannot keep up or
//! cannot write, [`AuditSink::healthy`] turns false and the proxy fails
//! closed.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use super::destination::{Destination, FileDestination, MemoryDestination};
use super::record::DecisionRecord;
use super::writer::{Reopen, Writer};

/// Records queued but not yet written beyond which the sink reports itself
/// unhealthy: past this, the disk is not keeping up and memory would grow
/// without bound, so new requests are refused until the backlog drains.
pub const MAX_BACKLOG: u64 = 100_000;

/// State shared between the sink handle and its writer thread.
pub(crate) struct Shared {
    /// Records accepted by [`AuditSink::emit`].
    emitted: AtomicU64,
    /// Records the writer has handed to the destination (and flushed).
    pub(crate) written: AtomicU64,
    /// The last write attempt failed.
    pub(crate) failing: AtomicBool,
    /// The writer thread is running.
    pub(crate) alive: AtomicBool,
    max_backlog: u64,
    reopen: Mutex<Option<Reopen>>,
    reopen_requested: AtomicBool,
    /// Blocking flushes wait on this; async ones on `progress_notify`.
    progress_lock: Mutex<()>,
    progress_cv: Condvar,
    progress_notify: tokio::sync::Notify,
}

impl Shared {
    /// The reopen asked for since the last call, if any.
    pub(crate) fn take_reopen(&self) -> Option<Reopen> {
        if !self.reopen_requested.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.reopen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Wakes everyone waiting for `written` to move (or the writer to die).
    pub(crate) fn notify_progress(&self) {
        // Taking the lock orders this wake-up after the waiter's check.
        drop(
            self.progress_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.progress_cv.notify_all();
        self.progress_notify.notify_waiters();
    }
}

/// The decision log writer. Cheap to share (`Arc`); every request holds one
/// through its [`RecordGuard`](super::RecordGuard).
pub struct AuditSink {
    tx: Sender<Box<DecisionRecord>>,
    shared: Arc<Shared>,
    writer: std::thread::Thread,
    memory: Option<Arc<Mutex<Vec<u8>>>>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("memory", &self.memory.is_some())
            .field("backlog", &self.backlog())
            .field("healthy", &self.healthy())
            .finish()
    }
}

impl AuditSink {
    /// Opens the decision log at `path` for appending (creating it with mode
    /// 0600, and missing parent directories) and starts the writer thread.
    /// An error here means credgate must not start: it could not record.
    pub fn open(path: &Path) -> io::Result<Arc<AuditSink>> {
        let dest = FileDestination::open(path)?;
        AuditSink::start(Box::new(dest), None, MAX_BACKLOG)
    }

    /// A sink that keeps the log in memory, for tests and `credgate demo`;
    /// [`AuditSink::records`] reads it back.
    pub fn memory() -> Arc<AuditSink> {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let dest = MemoryDestination(Arc::clone(&buffer));
        AuditSink::start(Box::new(dest), Some(buffer), MAX_BACKLOG)
            .expect("cannot start the audit writer thread")
    }

    pub(crate) fn start(
        dest: Box<dyn Destination>,
        memory: Option<Arc<Mutex<Vec<u8>>>>,
        max_backlog: u64,
    ) -> io::Result<Arc<AuditSink>> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            emitted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            max_backlog,
            reopen: Mutex::new(None),
            reopen_requested: AtomicBool::new(false),
            progress_lock: Mutex::new(()),
            progress_cv: Condvar::new(),
            progress_notify: tokio::sync::Notify::new(),
        });
        let writer = Writer::new(rx, Arc::clone(&shared), dest);
        let handle = std::thread::Builder::new()
            .name("credgate-audit".into())
            .spawn(move || writer.run())?;
        Ok(Arc::new(AuditSink {
            tx,
            shared,
            writer: handle.thread().clone(),
            memory,
        }))
    }

    /// Every record written so far, in order. Waits for queued records
    /// first, so it sees everything emitted before the call. Memory sinks
    /// only; a file sink returns an empty list.
    pub fn records(&self) -> Vec<DecisionRecord> {
        let Some(memory) = &self.memory else {
            return Vec::new();
        };
        self.flush_blocking();
        let bytes = memory.lock().unwrap_or_else(PoisonError::into_inner);
        bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect()
    }

    /// Queues `record` for writing. Never blocks on I/O and never drops:
    /// the queue is unbounded, and [`AuditSink::healthy`] reports when it
    /// grows too long.
    pub fn emit(&self, record: DecisionRecord) {
        self.emit_boxed(Box::new(record));
    }

    /// [`emit`](Self::emit) for a record already on the heap: what queues
    /// is a pointer, not the record's few hundred bytes.
    pub(crate) fn emit_boxed(&self, record: Box<DecisionRecord>) {
        // Counted before it is sent, so a flush that starts after this call
        // returns is sure to wait for it.
        self.shared.emitted.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(record)) = self.tx.send(record) {
            // Only when the writer thread died; healthy() is already false,
            // so the proxy refuses requests. Keep the record in the
            // operational log rather than lose it.
            let json = serde_json::to_string(&record).unwrap_or_default();
            tracing::error!(record = %json, "audit writer is gone; decision record not written to the log");
        }
    }

    /// Whether requests may proceed: `false` while the last write failed,
    /// while more than [`MAX_BACKLOG`] records wait, or when the writer is
    /// gone. The proxy checks this before anything else and denies with
    /// `Reason::AuditUnavailable` when it is `false`. It turns `true` again
    /// once the writer has caught up.
    pub fn healthy(&self) -> bool {
        let s = &self.shared;
        !s.failing.load(Ordering::Acquire)
            && s.alive.load(Ordering::Acquire)
            && self.backlog() <= s.max_backlog
    }

    /// Records emitted but not yet written: a gauge for metrics, and what a
    /// shutdown that gives up waiting should report as lost.
    pub fn backlog(&self) -> u64 {
        let s = &self.shared;
        let written = s.written.load(Ordering::Acquire);
        s.emitted.load(Ordering::Acquire).saturating_sub(written)
    }

    /// Waits until everything emitted before the call is written (or the
    /// writer is gone). While the log cannot be written this keeps waiting;
    /// bound it with `tokio::time::timeout` where that matters (shutdown).
    pub async fn flush(&self) {
        let target = self.shared.emitted.load(Ordering::Acquire);
        loop {
            let notified = self.shared.progress_notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up in between is kept.
            notified.as_mut().enable();
            if self.caught_up(target) {
                return;
            }
            notified.await;
        }
    }

    /// [`AuditSink::flush`] for code outside the async runtime. Blocks the
    /// calling thread.
    pub fn flush_blocking(&self) {
        let target = self.shared.emitted.load(Ordering::Acquire);
        let mut guard = self
            .shared
            .progress_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while !self.caught_up(target) {
            guard = self
                .shared
                .progress_cv
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn caught_up(&self, target: u64) -> bool {
        self.shared.written.load(Ordering::Acquire) >= target
            || !self.shared.alive.load(Ordering::Acquire)
    }

    /// Asks the writer to reopen the log file at the same path before its
    /// next batch (after log rotation moved the old one away).
    pub fn reopen(&self) {
        self.request_reopen(Reopen::Same);
    }

    /// Asks the writer to continue in the file at `path` from its next batch
    /// on (the configured audit path changed). Until that file can be
    /// opened, nothing is written and the sink reports unhealthy.
    pub fn reopen_to(&self, path: &Path) {
        self.request_reopen(Reopen::To(path.to_path_buf()));
    }

    fn request_reopen(&self, request: Reopen) {
        *self
            .shared
            .reopen
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(request);
        self.shared.reopen_requested.store(true, Ordering::Release);
        // Cuts short a backoff pause, so a failing sink retries right away.
        self.writer.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::new_record_id;
    use std::collections::VecDeque;
    use std::path::PathBuf;
    use std::time::{Duration, Instant, SystemTime};

    fn record(task: &str) -> DecisionRecord {
        let mut r = DecisionRecord::request(SystemTime::now());
        r.task = Some(task.to_string());
        r
    }

    fn scratch_dir() -> PathBuf {
        std::env::temp_dir().join(format!("credgate-audit-test-{}", new_record_id()))
    }

    fn parse_lines(bytes: &[u8]) -> Vec<DecisionRecord> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("every line is a record"))
            .collect()
    }

    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    async fn flush_within(sink: &AuditSink, secs: u64) {
        tokio::time::timeout(Duration::from_secs(secs), sink.flush())
            .await
            .expect("flush did not finish");
    }

    #[tokio::test]
    async fn file_sink_writes_every_record_in_order_one_per_line() {
        let dir = scratch_dir();
        let path = dir.join("nested/decisions.jsonl");
        let sink = AuditSink::open(&path).unwrap();
        for i in 0..500 {
            sink.emit(record(&format!("task-{i}")));
        }
        flush_within(&sink, 5).await;
        assert_eq!(sink.backlog(), 0);
        assert!(sink.healthy());
        let bytes = std::fs::read(&path).unwrap();
        let tasks: Vec<String> = parse_lines(&bytes)
            .into_iter()
            .filter_map(|r| r.task)
            .collect();
        let expected: Vec<String> = (0..500).map(|i| format!("task-{i}")).collect();
        assert_eq!(tasks, expected);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 500);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(sink.records().is_empty(), "records() is for memory sinks");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn reopen_after_rotation_continues_in_a_new_file() {
        let dir = scratch_dir();
        let path = dir.join("decisions.jsonl");
        let rotated = dir.join("decisions.jsonl.1");
        let sink = AuditSink::open(&path).unwrap();
        sink.emit(record("before"));
        flush_within(&sink, 5).await;
        std::fs::rename(&path, &rotated).unwrap();
        sink.reopen();
        sink.emit(record("after"));
        flush_within(&sink, 5).await;
        let old = parse_lines(&std::fs::read(&rotated).unwrap());
        let new = parse_lines(&std::fs::read(&path).unwrap());
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].task.as_deref(), Some("before"));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].task.as_deref(), Some("after"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn full_disk_turns_unhealthy_and_nothing_is_lost_after_recovery() {
        let sink = AuditSink::open(Path::new("/dev/full")).unwrap();
        assert!(sink.healthy());
        for i in 0..3 {
            sink.emit(record(&format!("task-{i}")));
        }
        wait_until("the write to fail", || !sink.healthy());
        assert_eq!(sink.backlog(), 3);
        // Still failing after a while: the writer retries rather than drops.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!sink.healthy());
        sink.emit(record("task-3"));

        let dir = scratch_dir();
        let good = dir.join("decisions.jsonl");
        sink.reopen_to(&good);
        flush_within(&sink, 5).await;
        assert!(sink.healthy());
        let tasks: Vec<String> = parse_lines(&std::fs::read(&good).unwrap())
            .into_iter()
            .filter_map(|r| r.task)
            .collect();
        assert_eq!(tasks, ["task-0", "task-1", "task-2", "task-3"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A destination whose writes follow a script, keeping one buffer per
    /// (re)open so tests can see what went to which file.
    #[derive(Default)]
    struct Script {
        /// Per write call: `Some(n)` accepts at most n bytes, `None` fails.
        steps: VecDeque<Option<usize>>,
        files: Vec<Vec<u8>>,
        writes: usize,
        reopens: usize,
    }

    struct ScriptedDestination(Arc<Mutex<Script>>);

    impl Destination for ScriptedDestination {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.writes += 1;
            let limit = match s.steps.pop_front() {
                Some(None) => return Err(io::Error::other("test: no space left")),
                Some(Some(n)) => n.min(buf.len()),
                None => buf.len(),
            };
            s.files.last_mut().unwrap().extend_from_slice(&buf[..limit]);
            Ok(limit)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }

        fn reopen(&mut self, _path: Option<&Path>) -> io::Result<()> {
            let mut s = self.0.lock().unwrap();
            s.reopens += 1;
            s.steps.clear();
            s.files.push(Vec::new());
            Ok(())
        }

        fn name(&self) -> String {
            "test destination".into()
        }
    }

    fn scripted(
        steps: impl IntoIterator<Item = Option<usize>>,
    ) -> (Arc<AuditSink>, Arc<Mutex<Script>>) {
        let script = Arc::new(Mutex::new(Script {
            steps: steps.into_iter().collect(),
            files: vec![Vec::new()],
            ..Script::default()
        }));
        let dest = ScriptedDestination(Arc::clone(&script));
        (
            AuditSink::start(Box::new(dest), None, MAX_BACKLOG).unwrap(),
            script,
        )
    }

    #[tokio::test]
    async fn a_failed_partial_write_resumes_where_it_stopped() {
        let (sink, script) = scripted([Some(10), None, Some(7), None]);
        let emitted: Vec<DecisionRecord> = (0..3).map(|i| record(&format!("task-{i}"))).collect();
        for r in &emitted {
            sink.emit(r.clone());
        }
        flush_within(&sink, 5).await;
        assert!(sink.healthy());
        let s = script.lock().unwrap();
        assert_eq!(s.files.len(), 1, "no reopen needed");
        assert_eq!(parse_lines(&s.files[0]), emitted);
    }

    #[tokio::test]
    async fn after_a_reopen_a_cut_line_is_terminated_and_written_again_in_full() {
        let (sink, script) = scripted(
            [Some(10)]
                .into_iter()
                .chain(std::iter::repeat_n(None, 1000)),
        );
        let r = record("task-cut");
        sink.emit(r.clone());
        wait_until("a failed write", || script.lock().unwrap().writes >= 2);
        wait_until("the sink to report it", || !sink.healthy());
        sink.reopen();
        flush_within(&sink, 5).await;
        assert!(sink.healthy());
        let s = script.lock().unwrap();
        assert_eq!(s.files.len(), 2);
        let line = serde_json::to_vec(&r).unwrap();
        assert_eq!(s.files[0], line[..10]);
        assert_eq!(
            s.files[1][0], b'\n',
            "the fragment's line is terminated first"
        );
        assert_eq!(parse_lines(&s.files[1]), vec![r]);
    }

    /// A destination that holds every write until the gate opens.
    struct GatedDestination(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Destination for GatedDestination {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }

        fn reopen(&mut self, _path: Option<&Path>) -> io::Result<()> {
            Ok(())
        }

        fn name(&self) -> String {
            "test destination".into()
        }
    }

    fn gated(max_backlog: u64) -> (Arc<AuditSink>, impl Fn(), Arc<Mutex<Vec<u8>>>) {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let dest = GatedDestination(Arc::clone(&gate), Arc::clone(&out));
        let sink = AuditSink::start(Box::new(dest), None, max_backlog).unwrap();
        let open = move || {
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        };
        (sink, open, out)
    }

    #[tokio::test]
    async fn flush_waits_until_the_records_are_written() {
        let (sink, open, out) = gated(MAX_BACKLOG);
        sink.emit(record("task-slow"));
        let early = tokio::time::timeout(Duration::from_millis(50), sink.flush()).await;
        assert!(early.is_err(), "flush returned before the write");
        assert!(out.lock().unwrap().is_empty());
        open();
        flush_within(&sink, 5).await;
        assert_eq!(parse_lines(&out.lock().unwrap()).len(), 1);
    }

    #[test]
    fn a_backlog_over_the_bound_is_unhealthy_until_it_drains() {
        let (sink, open, out) = gated(3);
        for i in 0..3 {
            sink.emit(record(&format!("task-{i}")));
        }
        assert!(sink.healthy(), "at the bound is still fine");
        sink.emit(record("task-3"));
        assert!(!sink.healthy());
        assert_eq!(sink.backlog(), 4);
        open();
        sink.flush_blocking();
        assert!(sink.healthy());
        assert_eq!(parse_lines(&out.lock().unwrap()).len(), 4);
    }

    struct PanickingDestination;

    impl Destination for PanickingDestination {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            panic!("test: destination bug");
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }

        fn reopen(&mut self, _path: Option<&Path>) -> io::Result<()> {
            Ok(())
        }

        fn name(&self) -> String {
            "test destination".into()
        }
    }

    #[tokio::test]
    async fn a_dead_writer_fails_closed_and_does_not_hang_flush() {
        let sink = AuditSink::start(Box::new(PanickingDestination), None, MAX_BACKLOG).unwrap();
        sink.emit(record("task-0"));
        flush_within(&sink, 5).await;
        assert!(!sink.healthy());
        // Emitting into a dead sink must not panic the request path either.
        sink.emit(record("task-1"));
        assert!(!sink.healthy());
    }

    #[test]
    fn records_from_many_threads_are_all_written() {
        let sink = AuditSink::memory();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let sink = &sink;
                scope.spawn(move || {
                    for i in 0..250 {
                        sink.emit(record(&format!("task-{t}-{i}")));
                    }
                });
            }
        });
        let records = sink.records();
        assert_eq!(records.len(), 1000);
        for t in 0..4 {
            // Each thread's records keep their relative order.
            let mine: Vec<String> = records
                .iter()
                .filter_map(|r| r.task.clone())
                .filter(|task| task.starts_with(&format!("task-{t}-")))
                .collect();
            let expected: Vec<String> = (0..250).map(|i| format!("task-{t}-{i}")).collect();
            assert_eq!(mine, expected);
        }
    }
}
