//! The writer thread's handle and what the thread reports.
//!
//! The thread ([`super::thread`]) owns the LMDB write transaction (heed's
//! `RwTxn` is not `Send`), drains a queue of [`SpoolWrite`]s, applies what
//! it drained in one transaction, commits once, and reports the last
//! committed write as one [`SpoolReport::Committed`]. While it commits, new
//! writes queue up and form the next group: the fsync rate, not the task
//! rate, bounds the pipe. It also reports the free space of the spool's
//! filesystem ([`SpoolReport::Space`]) after every commit and every second
//! while idle or stalled, for the lane to decide when to stop intake.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tasklane_core::spool::SpoolModelError;
use tasklane_core::{SpoolWrite, WriteSeq};
use tokio::sync::mpsc::UnboundedSender;

use super::lock::SpoolLock;
use super::store::LmdbSpool;
use super::SpoolError;

/// How long [`SpoolWriter::close`] waits.
pub const DEFAULT_CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long the thread goes on trying to commit a stalled queue after its
/// handle was dropped without a close.
pub(super) const DROP_GRACE: Duration = Duration::from_secs(3);

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
    /// full, I/O error). Reported once per stall; writes wait in order and
    /// are retried with backoff, none is lost, and the next `Committed`
    /// says it is over.
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
    /// The spool's filesystem (`statvfs`): bytes available to the
    /// process, and its size. After every commit, at the start, and about
    /// every second while idle or stalled.
    Space {
        /// Free bytes available to unprivileged users (`f_bavail`).
        free_bytes: u64,
        /// Size of the filesystem (`f_blocks`).
        total_bytes: u64,
        /// Room inside the spool file LMDB will reuse
        /// ([`LmdbSpool::reusable_bytes`](super::LmdbSpool::reusable_bytes)).
        reusable_bytes: u64,
    },
}

pub(super) enum Cmd {
    Write(SpoolWrite),
    /// Commit what is queued; while stalled, give up at this instant.
    Close {
        give_up_at: Instant,
    },
}

/// What the handle and the thread share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Writes queued and not committed yet.
    pub pending: AtomicUsize,
    /// Why the spool is stalled, while it is.
    pub stall: Mutex<Option<String>>,
}

/// The handle of the writer thread. Dropping it lets the thread commit
/// what is queued and stop (trying for up to 3 s when stalled);
/// [`SpoolWriter::close_within`] also waits for that, for a bounded time.
#[derive(Debug)]
pub struct SpoolWriter {
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<Result<(), SpoolError>>,
    shared: Arc<Shared>,
    dir: std::path::PathBuf,
}

impl SpoolWriter {
    pub(super) fn spawn(
        spool: LmdbSpool,
        reports: UnboundedSender<SpoolReport>,
        lock: SpoolLock,
    ) -> Result<Self, SpoolError> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::sync_channel(1);
        let dir = spool.dir().to_path_buf();
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tasklane-spool".into())
            .spawn(move || {
                let result = super::thread::run(spool, rx, reports, &thread_shared);
                // The environment is closed (dropped in `run`): now the lock.
                drop(lock);
                let _ = done_tx.send(result);
            })
            .map_err(|e| SpoolError::Io { dir: dir.clone(), source: e })?;
        Ok(Self { tx, thread: Some(thread), done, shared, dir })
    }

    /// Queues a write. Never blocks.
    pub fn write(&self, write: SpoolWrite) -> Result<(), SpoolError> {
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        self.tx.send(Cmd::Write(write)).map_err(|_| {
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            SpoolError::Closed(self.dir.clone())
        })
    }

    /// Writes queued and not committed yet.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// [`Self::close_within`] [`DEFAULT_CLOSE_GRACE`].
    pub fn close(self) -> Result<(), SpoolError> {
        self.close_within(DEFAULT_CLOSE_GRACE)
    }

    /// Commits what is queued, stops the thread and closes the environment
    /// (the directory can be opened again afterwards), waiting at most
    /// `grace`. When the spool is stalled (disk full, map at its limit, I/O
    /// errors) the thread keeps retrying until `grace` is up, then gives
    /// up; a thread stuck inside a commit (a hung disk) is left behind.
    /// Either way this returns [`SpoolError::Unflushed`] with the number of
    /// writes not committed: they were never acked to the broker, which
    /// still has their tasks and delivers them again; results among them
    /// were not recorded and are made again when their tasks come back.
    /// Blocks: from async code, call it through `spawn_blocking`.
    pub fn close_within(mut self, grace: Duration) -> Result<(), SpoolError> {
        let give_up_at = Instant::now() + grace;
        let _ = self.tx.send(Cmd::Close { give_up_at });
        let thread = self.thread.take().expect("joined only here");
        match self.done.recv_timeout(grace + Duration::from_millis(100)) {
            Ok(result) => {
                let _ = thread.join();
                result
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                Err(SpoolError::WriterPanicked(self.dir.clone()))
            }
            Err(RecvTimeoutError::Timeout) => {
                let stall = self.shared.stall.lock().expect("not poisoned").clone();
                let reason = match stall {
                    Some(reason) => reason,
                    None => format!("a commit did not finish within {grace:?}"),
                };
                Err(SpoolError::Unflushed { writes: self.pending(), reason })
            }
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.tx.send(Cmd::Close { give_up_at: Instant::now() + DROP_GRACE });
        }
    }
}
