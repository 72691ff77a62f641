//! The LMDB spool: what core's [`tasklane_core::MemorySpool`] models, on
//! disk, with group commit on one writer thread.
//!
//! [`open`] reads the spool into a [`SpoolSnapshot`] for `Lane::new` and
//! starts the writer thread; the driver queues core's
//! [`tasklane_core::SpoolWrite`]s with [`SpoolWriter::write`] and feeds
//! each [`SpoolReport::Committed`] back as `Input::SpoolCommitted`.
//!
//! ```no_run
//! # fn demo() -> Result<(), tasklane_io::spool::SpoolError> {
//! use tasklane_io::spool::{self, SpoolOptions};
//! let opened = spool::open("/var/lib/tasklane/ep-1", &SpoolOptions::default())?;
//! for damaged in &opened.corrupt {
//!     eprintln!("{damaged}");
//! }
//! // Lane::new(now, cfg, opened.snapshot) ... opened.writer.write(w)? ...
//! opened.writer.close()?;
//! # Ok(()) }
//! ```

mod lock;
mod mirror;
mod store;
mod thread;
mod writer;

use std::path::{Path, PathBuf};

use tasklane_core::SpoolSnapshot;
use tokio::sync::mpsc::{self, UnboundedReceiver};

pub use lock::{SpoolLock, LOCK_FILE};
pub use store::{CorruptRecord, LmdbSpool, RecordKind, SpoolReader, RELEASE_EVERY};
pub use thread::space;
pub use writer::{SpoolReport, SpoolWriter, DEFAULT_CLOSE_GRACE};

/// Sizes of the LMDB map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Map size to start with, in bytes (rounded up to a MiB). An existing
    /// spool that is larger keeps its size.
    pub map_size: usize,
    /// Largest the map may grow to. When a write does not fit even then,
    /// the writer stalls (reporting [`SpoolReport::Stalled`]) instead of
    /// dropping anything. Keep it above core's `max_spooled_bytes` with
    /// room for LMDB's overhead (about 2x).
    pub max_map_size: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self { map_size: 64 << 20, max_map_size: 8 << 30 }
    }
}

impl SpoolOptions {
    fn validate(&self) -> Result<(), SpoolError> {
        if self.map_size == 0 || self.max_map_size < self.map_size {
            return Err(SpoolError::Options("need 0 < map_size <= max_map_size".into()));
        }
        Ok(())
    }
}

/// Why the spool cannot be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The directory cannot be created or a thread cannot be started.
    #[error("spool {}: {source}", dir.display())]
    Io {
        /// The spool directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// LMDB failed.
    #[error("spool {}: LMDB: {source}", dir.display())]
    Lmdb {
        /// The spool directory.
        dir: PathBuf,
        /// heed's error.
        source: heed::Error,
    },
    /// This process already has the spool open (heed allows one `Env` per
    /// path and process).
    #[error("spool {} is already open in this process", .0.display())]
    AlreadyOpen(PathBuf),
    /// Another process has the spool open (it holds the lock file
    /// [`LOCK_FILE`]); `pid` is that process, when its pid could be read.
    #[error("{}", lock::locked_message(dir, pid))]
    Locked {
        /// The spool directory.
        dir: PathBuf,
        /// The process holding the lock.
        pid: Option<u32>,
    },
    /// There is no spool in the directory (see [`inspect`]).
    #[error("no spool in {} (no data.mdb)", .0.display())]
    Missing(PathBuf),
    /// The spool was written by a version of tasklane with another format.
    #[error("spool {} has format {found:02x?}; this tasklane reads format 1", dir.display())]
    Format {
        /// The spool directory.
        dir: PathBuf,
        /// The format marker found.
        found: Vec<u8>,
    },
    /// The data file is shorter than its last commit says: truncated or
    /// replaced behind tasklane's back. LMDB would fault on the missing
    /// pages; nothing is opened.
    #[error("spool {}: data.mdb is {size} bytes, its last commit needs {needed}: truncated", dir.display())]
    Truncated {
        /// The spool directory.
        dir: PathBuf,
        /// The size of data.mdb.
        size: u64,
        /// The size its newest meta page requires.
        needed: u64,
    },
    /// [`SpoolOptions`] that cannot work.
    #[error("spool options: {0}")]
    Options(String),
    /// A batch does not fit in the map at its limit.
    #[error("spool {}: LMDB map is full at its limit of {} MiB", dir.display(), map_size >> 20)]
    Full {
        /// The spool directory.
        dir: PathBuf,
        /// The map size, in bytes.
        map_size: usize,
    },
    /// The writer thread has stopped.
    #[error("spool {}: the writer thread has stopped", .0.display())]
    Closed(PathBuf),
    /// The writer thread panicked.
    #[error("spool {}: the writer thread panicked", .0.display())]
    WriterPanicked(PathBuf),
    /// At close, queued writes could not be committed.
    #[error("{writes} spool writes could not be committed at close: {reason}")]
    Unflushed {
        /// How many writes were lost from the queue (never acked to the
        /// broker, so the broker still has their tasks).
        writes: usize,
        /// The last failure.
        reason: String,
    },
}

/// An opened spool: the writer, its reports, and what it held at open.
#[derive(Debug)]
pub struct OpenedSpool {
    /// Queue writes here.
    pub writer: SpoolWriter,
    /// Commits, stalls and refusals, in order.
    pub reports: UnboundedReceiver<SpoolReport>,
    /// What the spool held, for `Lane::new` (no bodies).
    pub snapshot: SpoolSnapshot,
    /// Reads inbox tasks, bodies and all, from the last commit.
    pub reader: SpoolReader,
    /// Records found damaged, left out of `snapshot` and quarantined.
    pub corrupt: Vec<CorruptRecord>,
}

/// Opens (creating if needed) the spool in `dir` and starts its writer
/// thread. Blocking: reads the whole spool. Takes the spool's lock first,
/// so a second process opening the same directory fails at once with
/// [`SpoolError::Locked`]; the lock is held until the writer thread ends.
pub fn open(dir: impl AsRef<Path>, opts: &SpoolOptions) -> Result<OpenedSpool, SpoolError> {
    let d = dir.as_ref();
    std::fs::create_dir_all(d).map_err(|e| SpoolError::Io { dir: d.to_path_buf(), source: e })?;
    let lock = SpoolLock::acquire(d)?;
    let (spool, snapshot, corrupt) = LmdbSpool::open(dir.as_ref(), opts)?;
    for c in &corrupt {
        tracing::error!(dir = %dir.as_ref().display(), "{c}");
    }
    let (tx, reports) = mpsc::unbounded_channel();
    let reader = spool.reader();
    let writer = SpoolWriter::spawn(spool, tx, lock)?;
    Ok(OpenedSpool { writer, reports, snapshot, reader, corrupt })
}

/// What an existing spool holds, for tools (`tasklane spool inspect`,
/// `tasklane status`). Works while another process has the spool open (it
/// takes no lock; LMDB keeps readers and the writer apart). Fails with
/// [`SpoolError::Missing`] rather than creating a spool, and with
/// [`SpoolError::AlreadyOpen`] when this process has it open.
///
/// The spool returned reads the inbox tasks' bodies
/// ([`LmdbSpool::reader`]); drop it to let go of the spool.
pub fn inspect(dir: impl AsRef<Path>) -> Result<(SpoolSnapshot, Vec<CorruptRecord>, LmdbSpool), SpoolError> {
    let dir = dir.as_ref();
    if !dir.join("data.mdb").is_file() {
        return Err(SpoolError::Missing(dir.to_path_buf()));
    }
    let (spool, snapshot, corrupt) = LmdbSpool::open(dir, &SpoolOptions::default())?;
    Ok((snapshot, corrupt, spool))
}

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;
