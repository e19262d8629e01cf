//! The audit writer thread: batches queued records into one write, and never
//! lets go of a record it could not write.
//!
//! Records are serialised here rather than by the caller: the request path
//! then only moves the record into a lock-free queue, and JSON encoding
//! (measured at four to five times the cost of the queue push for a typical
//! 400-byte record) happens off the async runtime, on a thread that batches
//! more the busier it gets.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::destination::Destination;
use super::record::{DecisionRecord, SharedJson};
use super::sink::Shared;

/// A batch grows to about this size before it is written; bounds the size
/// of one write and of the buffer kept between batches.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// The first pause after a failed write; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// After this many consecutive failures the file is reopened, in case the
/// handle itself went bad (stale NFS handle, removed mount).
const REOPEN_EVERY_FAILURES: u32 = 8;
/// Once every sender is gone, how long a failing writer keeps trying before
/// it reports the records it could not write and exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After writing a batch, how long the writer waits before taking the next
/// one. While requests keep coming, records then pile up in the queue
/// instead of each one waking this thread (a futex wake and two context
/// switches per request); a record waits at most this long for the disk.
const LINGER: Duration = Duration::from_millis(1);

/// A reopen the sink asked for and the writer has not yet done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reopen {
    /// Reopen the current path (log rotation).
    Same,
    /// Switch to another path from now on.
    To(PathBuf),
}

/// The state of the writer thread.
pub(crate) struct Writer {
    rx: Receiver<Box<DecisionRecord>>,
    shared: Arc<Shared>,
    dest: Box<dyn Destination>,
    /// Serialised records, one per line, not yet fully written.
    batch: Vec<u8>,
    /// Encodings that consecutive records share.
    shared_json: SharedJson,
    batch_records: u64,
    /// Bytes of `batch` the destination has already accepted.
    done: usize,
    /// A line was cut short in a previous destination: terminate it before
    /// writing again so the next record starts on its own line.
    newline_first: bool,
    /// A reopen that was asked for but failed; retried before every write.
    pending_reopen: Option<Reopen>,
    /// Every sender is gone and the queue is drained.
    closed: bool,
}

impl Writer {
    pub(crate) fn new(
        rx: Receiver<Box<DecisionRecord>>,
        shared: Arc<Shared>,
        dest: Box<dyn Destination>,
    ) -> Self {
        Writer {
            rx,
            shared,
            dest,
            batch: Vec::with_capacity(64 * 1024),
            shared_json: SharedJson::default(),
            batch_records: 0,
            done: 0,
            newline_first: false,
            pending_reopen: None,
            closed: false,
        }
    }

    /// The thread's body: wait for a record, take everything else queued,
    /// write it, repeat. Returns when the sink is gone and all is written
    /// (or, after [`SHUTDOWN_GRACE`], reported as unwritable).
    pub(crate) fn run(mut self) {
        let _alive = AliveGuard(Arc::clone(&self.shared));
        loop {
            if self.batch_records == 0 {
                if self.closed {
                    return;
                }
                match self.rx.recv() {
                    Ok(record) => self.push(&record),
                    Err(_) => return,
                }
            }
            self.fill();
            if !self.write_with_retry() {
                return;
            }
            if !self.closed {
                std::thread::sleep(LINGER);
                self.fill();
            }
        }
    }

    /// Moves queued records into the batch without waiting.
    fn fill(&mut self) {
        while self.batch.len() < MAX_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(record) => self.push(&record),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    fn push(&mut self, record: &DecisionRecord) {
        record.write_json_line(&mut self.batch, &mut self.shared_json);
        self.batch_records += 1;
    }

    /// Writes the batch, retrying with backoff until it is on disk. Returns
    /// `false` when the writer must stop (closed and out of grace time).
    fn write_with_retry(&mut self) -> bool {
        let mut failures = 0u32;
        let mut backoff = FIRST_BACKOFF;
        let mut closed_since: Option<Instant> = None;
        loop {
            match self.write_batch(failures) {
                Ok(()) => {
                    if failures > 0 {
                        tracing::warn!(log = %self.dest.name(), failures, "decision log writable again");
                    }
                    self.finish_batch();
                    return true;
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        self.shared.failing.store(true, Ordering::Release);
                        tracing::error!(log = %self.dest.name(), %error, records = self.batch_records,
                            "cannot write the decision log; refusing requests until it is writable");
                    }
                }
            }
            // Keep queueing what arrives meanwhile (bounded by the batch
            // size), and notice when the sink has gone away.
            self.fill();
            if self.closed {
                let since = *closed_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SHUTDOWN_GRACE {
                    self.report_lost();
                    return false;
                }
            }
            std::thread::park_timeout(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn write_batch(&mut self, failures: u32) -> std::io::Result<()> {
        if let Some(request) = self.shared.take_reopen() {
            self.pending_reopen = Some(request);
        }
        let periodic = failures > 0 && failures % REOPEN_EVERY_FAILURES == 0;
        if periodic && self.pending_reopen.is_none() {
            self.pending_reopen = Some(Reopen::Same);
        }
        if let Some(request) = &self.pending_reopen {
            let path = match request {
                Reopen::Same => None,
                Reopen::To(path) => Some(path.as_path()),
            };
            self.dest.reopen(path)?;
            self.pending_reopen = None;
            self.restart_cut_line();
        }
        if self.newline_first {
            write_fully(self.dest.as_mut(), b"\n")?;
            self.newline_first = false;
        }
        while self.done < self.batch.len() {
            match self.dest.write(&self.batch[self.done..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.dest.flush()
    }

    /// After a reopen, a line that was only partly written to the old handle
    /// is written again in full; the fragment is terminated first so the
    /// reviewer sees one bad line, not a good record glued to garbage.
    fn restart_cut_line(&mut self) {
        let line_start = self.batch[..self.done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if line_start != self.done {
            self.newline_first = true;
            self.done = line_start;
        }
    }

    fn finish_batch(&mut self) {
        let shared = &self.shared;
        shared
            .written
            .fetch_add(self.batch_records, Ordering::AcqRel);
        shared.failing.store(false, Ordering::Release);
        self.batch.clear();
        if self.batch.capacity() > 2 * MAX_BATCH_BYTES {
            self.batch.shrink_to(MAX_BATCH_BYTES);
        }
        self.batch_records = 0;
        self.done = 0;
        shared.notify_progress();
    }

    fn report_lost(&self) {
        let message = format!(
            "credgate: {} decision records could not be written to {} and are lost",
            self.batch_records,
            self.dest.name()
        );
        tracing::error!("{message}");
        // Also on stderr: at shutdown a tracing subscriber may be gone.
        eprintln!("{message}");
    }
}

fn write_fully(dest: &mut dyn Destination, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match dest.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Marks the writer gone when its thread ends for any reason, panics
/// included, so the sink reports unhealthy and flushes stop waiting.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        self.0.notify_progress();
    }
}
