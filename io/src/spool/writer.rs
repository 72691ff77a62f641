//! The writer thread: owns the LMDB write transaction (heed's `RwTxn` is not
//! `Send`), drains a queue of [`SpoolWrite`]s, applies what it drained in
//! one transaction, commits once, and reports the last committed write as
//! one [`SpoolReport::Committed`]. While it commits, new writes queue up and
//! form the next group: the fsync rate, not the task rate, bounds the pipe.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tasklane_core::spool::SpoolModelError;
use tasklane_core::{SpoolOp, SpoolWrite, WriteSeq};
use tokio::sync::mpsc::UnboundedSender;

use super::store::LmdbSpool;
use super::SpoolError;

/// Most writes in one transaction.
const MAX_BATCH_WRITES: usize = 4096;
/// Most payload bytes in one transaction (at least one write always goes).
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Retry delays while stalled.
const STALL_RETRY_FIRST: Duration = Duration::from_millis(100);
const STALL_RETRY_MAX: Duration = Duration::from_secs(5);
/// Attempts to flush at close while stalled, before giving up.
const CLOSE_ATTEMPTS: u32 = 5;

/// What the writer thread reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolReport {
    /// Every write up to and including `upto` is on disk.
    Committed {
        /// The last write of the group.
        upto: WriteSeq,
        /// How many writes the group held.
        writes: usize,
    },
    /// The spool cannot commit right now (LMDB map at its limit, disk
    /// full, I/O error). Writes wait in order and are retried; none is lost.
    Stalled {
        /// Why, in one line.
        reason: String,
    },
    /// A write did not fit the spool's content (a bug of whoever issued
    /// it); it changed nothing, as `MemorySpool::apply` refuses it.
    Refused {
        /// The write.
        seq: WriteSeq,
        /// Why.
        error: SpoolModelError,
    },
}

enum Cmd {
    Write(SpoolWrite),
    Close,
}

/// The handle of the writer thread. Dropping it lets the thread flush what
/// is queued and stop; [`SpoolWriter::close`] also waits for that.
#[derive(Debug)]
pub struct SpoolWriter {
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<Result<(), SpoolError>>>,
    dir: PathBuf,
}

impl SpoolWriter {
    pub(super) fn spawn(spool: LmdbSpool, reports: UnboundedSender<SpoolReport>) -> Result<Self, SpoolError> {
        let (tx, rx) = mpsc::channel();
        let dir = spool.dir().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("tasklane-spool".into())
            .spawn(move || run(spool, rx, reports))
            .map_err(|e| SpoolError::Io { dir: dir.clone(), source: e })?;
        Ok(Self { tx, thread: Some(thread), dir })
    }

    /// Queues a write. Never blocks.
    pub fn write(&self, write: SpoolWrite) -> Result<(), SpoolError> {
        self.tx.send(Cmd::Write(write)).map_err(|_| SpoolError::Closed(self.dir.clone()))
    }

    /// Commits what is queued, stops the thread and closes the environment
    /// (the directory can be opened again afterwards). Blocks: from async
    /// code, call it through `spawn_blocking`.
    pub fn close(mut self) -> Result<(), SpoolError> {
        let _ = self.tx.send(Cmd::Close);
        let thread = self.thread.take().expect("joined only here");
        thread.join().unwrap_or(Err(SpoolError::WriterPanicked(self.dir.clone())))
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Close);
    }
}

fn payload_len(w: &SpoolWrite) -> usize {
    match &w.op {
        SpoolOp::Insert(t) => t.task.body.len(),
        SpoolOp::Complete { result, .. } => result.body.len(),
        SpoolOp::Confirmed { .. } => 0,
    }
}

/// How many writes from the front of `queue` go into the next group.
fn group_len(queue: &VecDeque<SpoolWrite>, cap: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for w in queue.iter().take(cap) {
        bytes += payload_len(w);
        if n > 0 && bytes > MAX_BATCH_BYTES {
            break;
        }
        n += 1;
    }
    n
}

struct Writer {
    spool: LmdbSpool,
    rx: Receiver<Cmd>,
    reports: UnboundedSender<SpoolReport>,
    queue: VecDeque<SpoolWrite>,
    closing: bool,
}

impl Writer {
    fn take(&mut self, cmd: Result<Cmd, ()>) {
        match cmd {
            Ok(Cmd::Write(w)) => self.queue.push_back(w),
            Ok(Cmd::Close) | Err(()) => self.closing = true,
        }
    }

    /// Takes what is waiting without blocking.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => self.take(Ok(cmd)),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => return self.take(Err(())),
            }
        }
    }

    /// Waits for `delay`, taking writes as they come.
    fn pause(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        while !self.closing {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(cmd) => self.take(Ok(cmd)),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => self.take(Err(())),
            }
        }
    }

    fn report(&self, r: SpoolReport) {
        let _ = self.reports.send(r);
    }
}

fn run(spool: LmdbSpool, rx: Receiver<Cmd>, reports: UnboundedSender<SpoolReport>) -> Result<(), SpoolError> {
    let mut w = Writer { spool, rx, reports, queue: VecDeque::new(), closing: false };
    // A group that fails is split in halves until one fits (the longest
    // prefix that fits still commits, and writes keep their order); only a
    // single write that fails stalls the writer.
    let mut cap = MAX_BATCH_WRITES;
    let mut stall: Option<(Duration, u32)> = None;
    loop {
        if w.queue.is_empty() {
            if w.closing {
                return Ok(());
            }
            let cmd = w.rx.recv().map_err(|_| ());
            w.take(cmd);
        }
        w.drain();
        if w.queue.is_empty() {
            continue;
        }
        let n = group_len(&w.queue, cap);
        let result = w.spool.apply_batch(&w.queue.make_contiguous()[..n]);
        match result {
            Ok(refused) => {
                cap = MAX_BATCH_WRITES;
                let upto = w.queue[n - 1].seq;
                w.queue.drain(..n);
                for (seq, error) in refused {
                    tracing::error!(seq = seq.0, %error, "spool write refused");
                    w.report(SpoolReport::Refused { seq, error });
                }
                if stall.take().is_some() {
                    tracing::info!(dir = %w.spool.dir().display(), "spool writes resumed");
                }
                w.report(SpoolReport::Committed { upto, writes: n });
            }
            Err(_) if n > 1 => cap = n / 2,
            Err(e) => {
                let reason = e.to_string();
                let (delay, attempts) = match stall {
                    None => {
                        tracing::error!(dir = %w.spool.dir().display(), %reason, "spool stalled; writes wait");
                        w.report(SpoolReport::Stalled { reason: reason.clone() });
                        (STALL_RETRY_FIRST, 1)
                    }
                    Some((d, a)) => ((d * 2).min(STALL_RETRY_MAX), a + 1),
                };
                stall = Some((delay, attempts));
                if w.closing && attempts >= CLOSE_ATTEMPTS {
                    return Err(SpoolError::Unflushed { writes: w.queue.len(), reason });
                }
                w.pause(delay);
                if w.closing {
                    std::thread::sleep(delay);
                }
            }
        }
    }
}
