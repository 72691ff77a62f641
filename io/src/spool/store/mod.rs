//! [`LmdbSpool`]: the spool's LMDB environment, used from one thread.
//!
//! Databases (keys are big-endian `u64`, so LMDB's byte order is numeric
//! order):
//! - `inbox`: arrival → task record ([`tasklane_core::codec::encode_task`]);
//! - `outbox`: outbox position → result record;
//! - `completed`: counter → task id (the dedup window, oldest first);
//! - `meta`: `format` → format version; `next_arrival`, `next_outbox` →
//!   the positions the next task and result get (they never go back, even
//!   when the inbox or outbox is empty);
//! - `quarantine`: damaged records moved aside at open, `db/key` → bytes.
//!
//! Every batch of writes is one write transaction and one commit (fsync).
//! Ops are checked against an in-memory mirror of the keys first, so an op
//! that does not fit is refused exactly where [`MemorySpool`] refuses it,
//! and the spool is left unchanged by it.
//!
//! [`MemorySpool`]: tasklane_core::MemorySpool

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, MdbError, RwTxn};
use tasklane_core::codec::{self, DecodeError};
use tasklane_core::spool::SpoolModelError;
use tasklane_core::{OutboxSeq, ResultMeta, SpoolOp, SpoolSnapshot, SpoolWrite, TaskId, TaskMeta, WriteSeq};

mod files;
mod reader;
mod recover;

pub use reader::{SpoolReader, RELEASE_EVERY};

use files::check_not_truncated;
use recover::open_env;

use super::mirror::{Completed, Mirror, Undo};
use super::{SpoolError, SpoolOptions};

const FORMAT_KEY: &[u8] = b"format";
const NEXT_ARRIVAL_KEY: &[u8] = b"next_arrival";
const NEXT_OUTBOX_KEY: &[u8] = b"next_outbox";
const FORMAT: u32 = 1;
const MIB: usize = 1 << 20;

type Db = Database<'static, Bytes, Bytes>;

/// Which database a record lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An inbox task.
    Inbox,
    /// An outbox result.
    Outbox,
    /// A completed task id of the dedup window.
    Completed,
}

impl RecordKind {
    fn name(self) -> &'static str {
        match self {
            RecordKind::Inbox => "inbox",
            RecordKind::Outbox => "outbox",
            RecordKind::Completed => "completed",
        }
    }
}

/// A record found damaged at open. It is left out of the snapshot and moved
/// to the `quarantine` database, so the rest of the spool stays usable and
/// the bytes stay available for a post-mortem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The database it was in.
    pub kind: RecordKind,
    /// Its key: arrival, outbox position or window counter (`None` when the
    /// key itself is not 8 bytes).
    pub key: Option<u64>,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for CorruptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(k) => {
                write!(f, "spool {} record {k} is damaged ({}); moved to quarantine", self.kind.name(), self.problem)
            }
            None => write!(
                f,
                "spool {} record with a bad key is damaged ({}); moved to quarantine",
                self.kind.name(),
                self.problem
            ),
        }
    }
}

/// The LMDB spool, driven synchronously. [`super::open`] wraps it in the
/// writer thread; tests and tools use it directly.
pub struct LmdbSpool {
    /// `None` after a failure that needed the environment reopened, until
    /// the reopen succeeds.
    env: Option<Env>,
    /// The environment again, for the [`SpoolReader`]s (see there).
    shared: reader::Shared,
    inbox: Db,
    outbox: Db,
    completed: Db,
    meta: Db,
    quarantine: Db,
    mirror: Mirror,
    #[cfg(test)]
    fail_after: Option<(usize, heed::Error)>,
    #[cfg(test)]
    reopens: usize,
    map_size: usize,
    max_map_size: usize,
    dir: PathBuf,
}

impl Drop for LmdbSpool {
    /// Readers let go of the environment with the spool, so that it closes
    /// (and may be opened again) when the spool is dropped.
    fn drop(&mut self) {
        *self.shared.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl fmt::Debug for LmdbSpool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmdbSpool").field("dir", &self.dir).field("map_size", &self.map_size).finish_non_exhaustive()
    }
}

/// Why a batch was not committed. Nothing of the batch is on disk.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// The map is at its configured limit.
    Full { map_size: usize },
    /// LMDB or the disk failed.
    Lmdb(heed::Error),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Full { map_size } => {
                write!(f, "LMDB map is full at its limit of {} MiB (SpoolOptions::max_map_size)", map_size / MIB)
            }
            BatchError::Lmdb(e) => write!(f, "LMDB write failed: {e}"),
        }
    }
}

impl LmdbSpool {
    /// Opens (creating if needed) the spool in `dir`. Returns the spool,
    /// what it holds, and the records found damaged (left out, quarantined).
    pub fn open(dir: &Path, opts: &SpoolOptions) -> Result<(Self, SpoolSnapshot, Vec<CorruptRecord>), SpoolError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Io { dir: dir.to_path_buf(), source: e })?;
        check_not_truncated(dir)?;
        let lmdb = |e: heed::Error| SpoolError::Lmdb { dir: dir.to_path_buf(), source: e };
        let (env, dbs) = open_env(dir, round_up(opts.map_size)).map_err(|e| match e {
            heed::Error::EnvAlreadyOpened => SpoolError::AlreadyOpen(dir.to_path_buf()),
            e => lmdb(e),
        })?;
        let [inbox, outbox, completed, meta, quarantine] = match dbs {
            CommitOrAbort::Commit(dbs) => dbs,
            CommitOrAbort::Abort(found) => return Err(SpoolError::Format { dir: dir.to_path_buf(), found }),
        };
        let map_size = env.info().map_size;
        let mut spool = Self {
            shared: Arc::new(RwLock::new(Some(reader::Open::new(env.clone(), inbox, outbox)))),
            env: Some(env),
            inbox,
            outbox,
            completed,
            meta,
            quarantine,
            mirror: Mirror::default(),
            #[cfg(test)]
            fail_after: None,
            #[cfg(test)]
            reopens: 0,
            map_size,
            max_map_size: round_up(opts.max_map_size).max(map_size),
            dir: dir.to_path_buf(),
        };
        let (snapshot, corrupt) = spool.load().map_err(lmdb)?;
        if !corrupt.is_empty() {
            spool.quarantine_records(&corrupt).map_err(lmdb)?;
        }
        Ok((spool, snapshot, corrupt))
    }

    /// Bytes inside `data.mdb` that LMDB holds free for reuse: pages below
    /// its high-water mark that no database uses. Deleting records never
    /// shrinks the file, so this is the room a full filesystem still has
    /// for the spool. Zero when it cannot be told.
    pub fn reusable_bytes(&self) -> u64 {
        let Some(env) = &self.env else { return 0 };
        let info = env.info();
        let Ok(rtxn) = env.read_txn() else { return 0 };
        let mut used: u64 = 3; // two meta pages and the main database's root
        for db in [&self.inbox, &self.outbox, &self.completed, &self.meta, &self.quarantine] {
            if let Ok(stat) = db.stat(&rtxn) {
                used += (stat.branch_pages + stat.leaf_pages + stat.overflow_pages) as u64;
            }
        }
        let page = u64::from(env.unnamed_database_stat().page_size);
        (info.last_page_number as u64 + 1).saturating_sub(used) * page
    }

    /// A reader of this spool's inbox tasks, bodies and all.
    pub fn reader(&self) -> SpoolReader {
        SpoolReader::new(self.shared.clone(), &self.dir)
    }

    /// The directory of the spool.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current size of the LMDB map, in bytes.
    pub fn map_size(&self) -> usize {
        self.map_size
    }

    /// What the spool holds, read from disk.
    pub fn snapshot(&mut self) -> Result<SpoolSnapshot, heed::Error> {
        self.load().map(|(s, _)| s)
    }

    /// Applies `writes` in order in one transaction and commits it (one
    /// fsync). Returns the writes refused as not fitting the spool's
    /// content (left out, as [`tasklane_core::MemorySpool`] leaves them),
    /// or an error after which nothing of the batch is on disk.
    pub fn apply(&mut self, writes: &[SpoolWrite]) -> Result<Vec<(WriteSeq, SpoolModelError)>, SpoolError> {
        self.apply_batch(writes).map_err(|e| match e {
            BatchError::Full { map_size } => SpoolError::Full { dir: self.dir.clone(), map_size },
            BatchError::Lmdb(source) => SpoolError::Lmdb { dir: self.dir.clone(), source },
        })
    }

    /// [`Self::apply`], growing the map when it is full, for the writer.
    ///
    /// Any failure leaves the spool as its last commit left it and usable
    /// again: the transaction is aborted, the mirror undone, and when LMDB
    /// has marked the environment unusable (`MDB_PANIC`: a failed write of
    /// its meta page) the environment is closed and opened again, here or
    /// at the next call if that fails too. A short write on a full disk
    /// (LMDB says "Input/output error") needs no reopen: the next
    /// transaction works once there is room.
    pub(crate) fn apply_batch(
        &mut self,
        writes: &[SpoolWrite],
    ) -> Result<Vec<(WriteSeq, SpoolModelError)>, BatchError> {
        loop {
            let e = match self.try_apply(writes) {
                Ok(refused) => return Ok(refused),
                Err(e) => e,
            };
            if !matches!(e, heed::Error::Mdb(MdbError::MapFull)) {
                if self.needs_reopen(&e) {
                    tracing::warn!(dir = %self.dir.display(), "LMDB environment unusable after {e}; reopening it");
                    if let Err(again) = self.reopen() {
                        tracing::error!(dir = %self.dir.display(), "reopening the LMDB environment failed: {again}");
                    }
                }
                return Err(BatchError::Lmdb(e));
            }
            if self.map_size >= self.max_map_size {
                return Err(BatchError::Full { map_size: self.map_size });
            }
            let new_size = self.map_size.saturating_mul(2).min(self.max_map_size);
            let env = self.env().map_err(BatchError::Lmdb)?;
            // Readers hold this lock for their transactions.
            let shared = self.shared.clone();
            let mut no_readers = shared.write().unwrap_or_else(PoisonError::into_inner);
            // The map may move: forget what the readers read of it.
            if let Some(open) = no_readers.as_mut() {
                open.pages.get_mut().unwrap_or_else(PoisonError::into_inner).reset();
            }
            // SAFETY: this thread owns the environment, no transaction of
            // its own is open (the failed one was aborted), and no reader
            // has one (the lock).
            unsafe { env.resize(new_size) }.map_err(BatchError::Lmdb)?;
            self.map_size = env.info().map_size;
            tracing::info!(dir = %self.dir.display(), map_mib = self.map_size / MIB, "spool map grown");
        }
    }

    fn try_apply(&mut self, writes: &[SpoolWrite]) -> Result<Vec<(WriteSeq, SpoolModelError)>, heed::Error> {
        let env = self.env()?;
        let mut wtxn = env.write_txn()?;
        let mut undo = self.mirror.begin();
        let result = self.write_all(&mut wtxn, writes, &mut undo).and_then(|refused| wtxn.commit().map(|()| refused));
        if result.is_err() {
            // The transaction is gone (aborted by drop or by the failed
            // commit): so are its changes to the mirror.
            self.mirror.rollback(undo);
        }
        result
    }

    fn write_all(
        &mut self,
        wtxn: &mut RwTxn<'_>,
        writes: &[SpoolWrite],
        undo: &mut Undo,
    ) -> Result<Vec<(WriteSeq, SpoolModelError)>, heed::Error> {
        let mut refused = Vec::new();
        let before = (self.mirror.next_arrival, self.mirror.next_outbox);
        for w in writes {
            #[cfg(test)]
            self.injected_failure()?;
            if let Err(e) = self.mirror.check(&w.op) {
                refused.push((w.seq, e));
                continue;
            }
            self.write_op(wtxn, &w.op, undo)?;
        }
        if self.mirror.next_arrival != before.0 {
            self.meta.put(wtxn, NEXT_ARRIVAL_KEY, &self.mirror.next_arrival.to_be_bytes())?;
        }
        if self.mirror.next_outbox != before.1 {
            self.meta.put(wtxn, NEXT_OUTBOX_KEY, &self.mirror.next_outbox.to_be_bytes())?;
        }
        #[cfg(test)]
        self.injected_failure()?;
        Ok(refused)
    }

    /// Counts down the writes before an injected failure.
    #[cfg(test)]
    fn injected_failure(&mut self) -> Result<(), heed::Error> {
        match &mut self.fail_after {
            Some((0, _)) => Err(self.fail_after.take().expect("set").1),
            Some((n, _)) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Writes a checked op and updates the mirror.
    fn write_op(&mut self, wtxn: &mut RwTxn<'_>, op: &SpoolOp, undo: &mut Undo) -> Result<(), heed::Error> {
        let (inbox, outbox, completed) = (self.inbox, self.outbox, self.completed);
        match op {
            SpoolOp::Insert(t) => {
                inbox.put(wtxn, &t.arrival.to_be_bytes(), &codec::encode_task(&t.task))?;
                self.mirror.insert(undo, &t.task.id, t.arrival);
            }
            SpoolOp::Complete { seq, result, forget } => {
                let Completed { arrival, key, forgotten } =
                    self.mirror.complete(undo, &result.task, seq.0, forget.as_ref());
                inbox.delete(wtxn, &arrival.to_be_bytes())?;
                outbox.put(wtxn, &seq.0.to_be_bytes(), &codec::encode_result(result))?;
                completed.put(wtxn, &key.to_be_bytes(), result.task.as_str().as_bytes())?;
                if let Some(oldest) = forgotten {
                    completed.delete(wtxn, &oldest.to_be_bytes())?;
                }
            }
            SpoolOp::Confirmed { seq } => {
                outbox.delete(wtxn, &seq.0.to_be_bytes())?;
                self.mirror.confirm(undo, seq.0);
            }
        }
        Ok(())
    }

    /// Reads everything, rebuilds the mirror, and lists damaged records.
    fn load(&mut self) -> Result<(SpoolSnapshot, Vec<CorruptRecord>), heed::Error> {
        let env = self.env()?;
        let rtxn = env.read_txn()?;
        let mut snap = SpoolSnapshot::default();
        let mut corrupt = Vec::new();
        let mut mirror = Mirror::default();
        let mut bad = |kind, key: Option<u64>, problem: String| corrupt.push(CorruptRecord { kind, key, problem });
        // Every record is read whole (its checksum covers the body), but
        // only what core keeps of a task stays in memory, and the pages
        // read are given back as the scan goes.
        let mut pages = reader::PageSpan::default();
        snap.inbox.reserve_exact(self.inbox.len(&rtxn)? as usize);
        for item in self.inbox.iter(&rtxn)? {
            let (k, v) = item?;
            // SAFETY: a value of a read transaction; the map does not move
            // during this scan (this thread alone grows it, not now).
            unsafe { pages.read(v) };
            match (key_u64(k), codec::decode_task(v)) {
                (Some(arrival), Ok(task)) if !mirror.inbox.contains_key(&task.id) => {
                    mirror.inbox.insert(task.id.clone(), arrival);
                    snap.inbox.push(TaskMeta { arrival, id: task.id, size: task.body.len() as u64 });
                }
                (Some(arrival), Ok(task)) => {
                    bad(RecordKind::Inbox, Some(arrival), format!("task {} is also at an earlier arrival", task.id))
                }
                (key, Err(e)) => bad(RecordKind::Inbox, key, problem(e)),
                (None, Ok(_)) => bad(RecordKind::Inbox, None, "key is not 8 bytes".into()),
            }
        }
        for item in self.outbox.iter(&rtxn)? {
            let (k, v) = item?;
            // SAFETY: as above.
            unsafe { pages.read(v) };
            // What core keeps of it: no body (SPEC §4 "Memory").
            match (key_u64(k), codec::decode_result_parts(v)) {
                (Some(seq), Ok((task, status, body))) => {
                    mirror.outbox.insert(seq);
                    snap.outbox.push(ResultMeta { seq: OutboxSeq(seq), task, status, size: body.len() as u64 });
                }
                (key, Err(e)) => bad(RecordKind::Outbox, key, problem(e)),
                (None, Ok(_)) => bad(RecordKind::Outbox, None, "key is not 8 bytes".into()),
            }
        }
        for item in self.completed.iter(&rtxn)? {
            let (k, v) = item?;
            let id = std::str::from_utf8(v).ok().and_then(|s| TaskId::new(s).ok());
            match (key_u64(k), id) {
                (Some(key), Some(id)) => {
                    mirror.completed.insert(key, id.clone());
                    mirror.completed_keys.entry(id.clone()).or_default().insert(key);
                    snap.completed.push(id);
                }
                (key, None) => bad(RecordKind::Completed, key, "not a task id".into()),
                (None, Some(_)) => bad(RecordKind::Completed, None, "key is not 8 bytes".into()),
            }
        }
        let counter =
            |key| -> Result<u64, heed::Error> { Ok(self.meta.get(&rtxn, key)?.and_then(key_u64).unwrap_or(0)) };
        snap.arrival_counter = counter(NEXT_ARRIVAL_KEY)?;
        snap.outbox_counter = counter(NEXT_OUTBOX_KEY)?;
        drop(rtxn);
        // SAFETY: as above; the environment is still open.
        unsafe { pages.release() };
        // Never behind what is stored, as MemorySpool::from_snapshot has it.
        snap.arrival_counter = snap.next_arrival();
        snap.outbox_counter = snap.next_outbox_seq().0;
        mirror.next_arrival = snap.arrival_counter;
        mirror.next_outbox = snap.outbox_counter;
        mirror.next_completed = mirror.completed.last_key_value().map_or(0, |(k, _)| k + 1);
        self.mirror = mirror;
        Ok((snap, corrupt))
    }

    /// Moves damaged records to the quarantine database.
    fn quarantine_records(&mut self, records: &[CorruptRecord]) -> Result<(), heed::Error> {
        let env = self.env()?;
        let rtxn = env.read_txn()?;
        let mut moves = Vec::new();
        for (db, kind) in [
            (self.inbox, RecordKind::Inbox),
            (self.outbox, RecordKind::Outbox),
            (self.completed, RecordKind::Completed),
        ] {
            for item in db.iter(&rtxn)? {
                let (k, v) = item?;
                let key = key_u64(k);
                if records.iter().any(|r| r.kind == kind && r.key == key) {
                    moves.push((db, kind, k.to_vec(), v.to_vec()));
                }
            }
        }
        drop(rtxn);
        let mut wtxn = env.write_txn()?;
        for (db, kind, k, v) in moves {
            let name = format!("{}/{}", kind.name(), hex(&k));
            self.quarantine.put(&mut wtxn, name.as_bytes(), &v)?;
            db.delete(&mut wtxn, &k)?;
        }
        wtxn.commit()
    }
}

fn key_u64(k: &[u8]) -> Option<u64> {
    k.try_into().ok().map(u64::from_be_bytes)
}

fn problem(e: DecodeError) -> String {
    e.to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rounds up to a whole MiB, a multiple of every page size in use.
fn round_up(bytes: usize) -> usize {
    bytes.div_ceil(MIB).max(1) * MIB
}
