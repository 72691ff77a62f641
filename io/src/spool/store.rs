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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, MdbError, RwTxn};
use tasklane_core::codec::{self, DecodeError};
use tasklane_core::spool::SpoolModelError;
use tasklane_core::{OutboxSeq, SpoolOp, SpoolSnapshot, SpoolWrite, StoredResult, StoredTask, TaskId, WriteSeq};

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

/// What the spool holds besides the records themselves, mirrored in memory
/// so that ops can be checked (and located) without reading the database.
#[derive(Clone, Debug, Default)]
struct Mirror {
    inbox: BTreeMap<TaskId, u64>,
    outbox: BTreeSet<u64>,
    completed: BTreeMap<u64, TaskId>,
    completed_keys: BTreeMap<TaskId, BTreeSet<u64>>,
    next_arrival: u64,
    next_outbox: u64,
    next_completed: u64,
}

/// The LMDB spool, driven synchronously. [`super::open`] wraps it in the
/// writer thread; tests and tools use it directly.
pub struct LmdbSpool {
    env: Env,
    inbox: Db,
    outbox: Db,
    completed: Db,
    meta: Db,
    quarantine: Db,
    mirror: Mirror,
    map_size: usize,
    max_map_size: usize,
    dir: PathBuf,
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
        let env = unsafe {
            // SAFETY: the spool directory belongs to this spool; tasklane
            // never modifies the files other than through LMDB.
            EnvOpenOptions::new().map_size(round_up(opts.map_size)).max_dbs(8).open(dir)
        }
        .map_err(|e| match e {
            heed::Error::EnvAlreadyOpened => SpoolError::AlreadyOpen(dir.to_path_buf()),
            e => lmdb(e),
        })?;
        let wtxn = env.write_txn().map_err(lmdb)?;
        let created = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, heed::Error> {
                let inbox = dbo.create_database::<Bytes, Bytes>(wtxn, Some("inbox"))?;
                let outbox = dbo.create_database::<Bytes, Bytes>(wtxn, Some("outbox"))?;
                let completed = dbo.create_database::<Bytes, Bytes>(wtxn, Some("completed"))?;
                let meta = dbo.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?;
                let quarantine = dbo.create_database::<Bytes, Bytes>(wtxn, Some("quarantine"))?;
                match meta.get(wtxn, FORMAT_KEY)? {
                    None => meta.put(wtxn, FORMAT_KEY, &FORMAT.to_be_bytes())?,
                    Some(v) if v == FORMAT.to_be_bytes() => {}
                    Some(v) => return Ok(CommitOrAbort::Abort(v.to_vec())),
                }
                Ok(CommitOrAbort::Commit((inbox, outbox, completed, meta, quarantine)))
            })
            .map_err(lmdb)?;
        let (inbox, outbox, completed, meta, quarantine) = match created {
            CommitOrAbort::Commit(dbs) => dbs,
            CommitOrAbort::Abort(found) => return Err(SpoolError::Format { dir: dir.to_path_buf(), found }),
        };
        let map_size = env.info().map_size;
        let mut spool = Self {
            env,
            inbox,
            outbox,
            completed,
            meta,
            quarantine,
            mirror: Mirror::default(),
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
    pub(crate) fn apply_batch(
        &mut self,
        writes: &[SpoolWrite],
    ) -> Result<Vec<(WriteSeq, SpoolModelError)>, BatchError> {
        loop {
            match self.try_apply(writes) {
                Ok(refused) => return Ok(refused),
                Err(e) => {
                    // The transaction is gone: bring the mirror back to disk.
                    self.load().map_err(BatchError::Lmdb)?;
                    if !matches!(e, heed::Error::Mdb(MdbError::MapFull)) {
                        return Err(BatchError::Lmdb(e));
                    }
                    if self.map_size >= self.max_map_size {
                        return Err(BatchError::Full { map_size: self.map_size });
                    }
                    let new_size = self.map_size.saturating_mul(2).min(self.max_map_size);
                    // SAFETY: this thread owns the environment and no
                    // transaction is open (the failed one was aborted).
                    unsafe { self.env.resize(new_size) }.map_err(BatchError::Lmdb)?;
                    self.map_size = self.env.info().map_size;
                    tracing::info!(dir = %self.dir.display(), map_mib = self.map_size / MIB, "spool map grown");
                }
            }
        }
    }

    fn try_apply(&mut self, writes: &[SpoolWrite]) -> Result<Vec<(WriteSeq, SpoolModelError)>, heed::Error> {
        let env = self.env.clone();
        let mut wtxn = env.write_txn()?;
        let mut refused = Vec::new();
        let before = (self.mirror.next_arrival, self.mirror.next_outbox);
        for w in writes {
            if let Err(e) = self.check(&w.op) {
                refused.push((w.seq, e));
                continue;
            }
            self.write_op(&mut wtxn, &w.op)?;
        }
        if self.mirror.next_arrival != before.0 {
            self.meta.put(&mut wtxn, NEXT_ARRIVAL_KEY, &self.mirror.next_arrival.to_be_bytes())?;
        }
        if self.mirror.next_outbox != before.1 {
            self.meta.put(&mut wtxn, NEXT_OUTBOX_KEY, &self.mirror.next_outbox.to_be_bytes())?;
        }
        wtxn.commit()?;
        Ok(refused)
    }

    /// Whether `op` fits the spool's content, as `MemorySpool::apply` decides.
    fn check(&self, op: &SpoolOp) -> Result<(), SpoolModelError> {
        let m = &self.mirror;
        match op {
            SpoolOp::Insert(t) => {
                if m.inbox.contains_key(&t.task.id) {
                    return Err(SpoolModelError::DuplicateInsert(t.task.id.clone()));
                }
                if t.arrival < m.next_arrival {
                    return Err(SpoolModelError::OutOfOrder(t.arrival));
                }
            }
            SpoolOp::Complete { seq, result, .. } => {
                if !m.inbox.contains_key(&result.task) {
                    return Err(SpoolModelError::NotInInbox(result.task.clone()));
                }
                if seq.0 < m.next_outbox {
                    return Err(SpoolModelError::OutOfOrder(seq.0));
                }
            }
            SpoolOp::Confirmed { seq } => {
                if !m.outbox.contains(&seq.0) {
                    return Err(SpoolModelError::NotInOutbox(seq.0));
                }
            }
        }
        Ok(())
    }

    /// Writes a checked op and updates the mirror.
    fn write_op(&mut self, wtxn: &mut RwTxn<'_>, op: &SpoolOp) -> Result<(), heed::Error> {
        let (inbox, outbox, completed) = (self.inbox, self.outbox, self.completed);
        let m = &mut self.mirror;
        match op {
            SpoolOp::Insert(t) => {
                inbox.put(wtxn, &t.arrival.to_be_bytes(), &codec::encode_task(&t.task))?;
                m.inbox.insert(t.task.id.clone(), t.arrival);
                m.next_arrival = t.arrival + 1;
            }
            SpoolOp::Complete { seq, result, forget } => {
                let arrival = m.inbox.remove(&result.task).expect("checked");
                inbox.delete(wtxn, &arrival.to_be_bytes())?;
                outbox.put(wtxn, &seq.0.to_be_bytes(), &codec::encode_result(result))?;
                m.outbox.insert(seq.0);
                m.next_outbox = seq.0 + 1;
                let key = m.next_completed;
                m.next_completed += 1;
                completed.put(wtxn, &key.to_be_bytes(), result.task.as_str().as_bytes())?;
                m.completed.insert(key, result.task.clone());
                m.completed_keys.entry(result.task.clone()).or_default().insert(key);
                if let Some(f) = forget {
                    if let Some(keys) = m.completed_keys.get_mut(f) {
                        let oldest = keys.pop_first().expect("sets in the map are never empty");
                        if keys.is_empty() {
                            m.completed_keys.remove(f);
                        }
                        m.completed.remove(&oldest);
                        completed.delete(wtxn, &oldest.to_be_bytes())?;
                    }
                }
            }
            SpoolOp::Confirmed { seq } => {
                outbox.delete(wtxn, &seq.0.to_be_bytes())?;
                m.outbox.remove(&seq.0);
            }
        }
        Ok(())
    }

    /// Reads everything, rebuilds the mirror, and lists damaged records.
    fn load(&mut self) -> Result<(SpoolSnapshot, Vec<CorruptRecord>), heed::Error> {
        let rtxn = self.env.read_txn()?;
        let mut snap = SpoolSnapshot::default();
        let mut corrupt = Vec::new();
        let mut mirror = Mirror::default();
        let mut bad = |kind, key: Option<u64>, problem: String| corrupt.push(CorruptRecord { kind, key, problem });
        for item in self.inbox.iter(&rtxn)? {
            let (k, v) = item?;
            match (key_u64(k), codec::decode_task(v)) {
                (Some(arrival), Ok(task)) if !mirror.inbox.contains_key(&task.id) => {
                    mirror.inbox.insert(task.id.clone(), arrival);
                    snap.inbox.push(StoredTask { arrival, task });
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
            match (key_u64(k), codec::decode_result(v)) {
                (Some(seq), Ok(result)) => {
                    mirror.outbox.insert(seq);
                    snap.outbox.push(StoredResult { seq: OutboxSeq(seq), result });
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
        let rtxn = self.env.read_txn()?;
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
        let mut wtxn = self.env.write_txn()?;
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

/// Refuses a `data.mdb` shorter than its newest meta page says. LMDB maps
/// the file and trusts it: a read of a page past the end of a truncated
/// file is a SIGBUS, not an error. An empty file where a spool was is
/// refused too (LMDB would start a new, empty spool over it). A missing
/// file is a new spool; a file LMDB does not recognise is left to LMDB,
/// which reports `MDB_INVALID`.
fn check_not_truncated(dir: &Path) -> Result<(), SpoolError> {
    let path = dir.join("data.mdb");
    let io = |e| SpoolError::Io { dir: dir.to_path_buf(), source: e };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let size = file.metadata().map_err(io)?.len();
    // The two meta pages, at most 64 KiB each.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, 2 * 65536), &mut bytes).map_err(io)?;
    let truncated = |needed| Err(SpoolError::Truncated { dir: dir.to_path_buf(), size, needed });
    if bytes.is_empty() {
        return truncated(2 * 4096);
    }
    // A meta page: 16 bytes of page header, then MDB_meta (64-bit LMDB):
    // magic u32, version u32, address, map size, two MDB_db of 48 bytes
    // (the first one's u32 pad holds the page size), last page, txn id.
    let word = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
    let meta = |page: usize| -> Option<(u64, u64)> {
        let magic = u32::from_ne_bytes(bytes.get(page + 16..page + 20)?.try_into().ok()?);
        (magic == 0xBEEF_C0DE).then_some((word(page + 144)?, word(page + 136)?))
    };
    let Some(first) = meta(0) else { return Ok(()) };
    let page_size = u32::from_ne_bytes(bytes[40..44].try_into().expect("4 bytes")) as usize;
    if !(512..=65536).contains(&page_size) {
        return Ok(());
    }
    // The newer of the two meta pages (by txn id) names the last page.
    let (_, last_page) = meta(page_size).map_or(first, |second| first.max(second));
    let needed = (last_page + 1).saturating_mul(page_size as u64);
    if size < needed {
        return truncated(needed);
    }
    Ok(())
}
