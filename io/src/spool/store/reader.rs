//! [`SpoolReader`]: the inbox tasks, bodies and all, read from the last
//! commit when the application takes them, and the outbox results' bodies,
//! read when they are published. Core and the snapshot keep no bodies
//! (SPEC §4 "Memory"): a task body is in the heap only between its read
//! here and the application dropping it, a result body between its read
//! here and amqprs writing the publish.
//!
//! The reader shares the environment with the writer thread through a
//! lock: reads take it shared (LMDB readers never block the writer's
//! transaction), while growing the map and reopening the environment take
//! it exclusive, because LMDB allows neither with a transaction open
//! anywhere in the process.
//!
//! LMDB reads through a shared, read-only mapping of `data.mdb`, so every
//! page read stays in the process's resident set until it is unmapped. The
//! reader gives the mapping's pages back every [`RELEASE_EVERY`] bytes
//! read (`madvise(MADV_DONTNEED)`: the pages stay in the page cache and
//! are read again from there on the next access), so the resident set of
//! a spool read from end to end does not grow with the spool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use heed::Env;
use tasklane_core::codec;
use tasklane_core::{OutboxSeq, Task};

use super::Db;
use crate::spool::SpoolError;

/// Bytes read from the mapping between two releases of its pages.
pub const RELEASE_EVERY: u64 = 8 << 20;

/// The environment and the inbox database while the environment is open,
/// with the pages the readers have read from its map since the last
/// release.
pub(super) type Shared = Arc<RwLock<Option<Open>>>;

pub(super) struct Open {
    pub env: Env,
    pub inbox: Db,
    pub outbox: Db,
    /// Reset whenever the map may have moved (it is grown or opened again
    /// under the exclusive lock), so a release never names an old address.
    pub pages: Mutex<PageSpan>,
}

impl Open {
    pub(super) fn new(env: Env, inbox: Db, outbox: Db) -> Self {
        Self { env, inbox, outbox, pages: Mutex::new(PageSpan::default()) }
    }
}

/// Reads inbox tasks and outbox bodies of a spool; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct SpoolReader {
    shared: Shared,
    dir: PathBuf,
}

impl std::fmt::Debug for SpoolReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolReader").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SpoolReader {
    pub(super) fn new(shared: Shared, dir: &Path) -> Self {
        Self { shared, dir: dir.to_path_buf() }
    }

    /// The inbox task at `arrival` as the last commit left it, its body
    /// copied out of the map (heed's slices live only as long as the read
    /// transaction, so one copy is the least there is); `None` when the
    /// inbox holds no task there (completed, or never committed).
    pub fn task(&self, arrival: u64) -> Result<Option<Task>, SpoolError> {
        let lmdb = |source| SpoolError::Lmdb { dir: self.dir.clone(), source };
        let slot = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        let Some(open) = slot.as_ref() else {
            return Err(SpoolError::Closed(self.dir.clone()));
        };
        let rtxn = open.env.read_txn().map_err(lmdb)?;
        let Some(record) = open.inbox.get(&rtxn, &arrival.to_be_bytes()).map_err(lmdb)? else { return Ok(None) };
        let task = codec::decode_task(record).map_err(|e| {
            lmdb(heed::Error::Io(std::io::Error::other(format!("inbox record {arrival} is damaged: {e}"))))
        })?;
        let mut pages = open.pages.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `record` lies in the map of `open.env`, which cannot move
        // while this shared lock is held; `pages` is reset when it moves.
        unsafe { pages.read(record) };
        Ok(Some(task))
    }

    /// The bodies of the outbox results at `seqs` as the last commit left
    /// them, in one read transaction, each copied once out of the map into
    /// a buffer of its own (which the publish hands to amqprs without
    /// another copy); `None` for a position the outbox holds nothing at.
    pub fn result_bodies(&self, seqs: &[OutboxSeq]) -> Result<Vec<Option<Bytes>>, SpoolError> {
        let lmdb = |source| SpoolError::Lmdb { dir: self.dir.clone(), source };
        let slot = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        let Some(open) = slot.as_ref() else {
            return Err(SpoolError::Closed(self.dir.clone()));
        };
        let rtxn = open.env.read_txn().map_err(lmdb)?;
        let mut pages = open.pages.lock().unwrap_or_else(PoisonError::into_inner);
        let mut bodies = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let Some(record) = open.outbox.get(&rtxn, &seq.0.to_be_bytes()).map_err(lmdb)? else {
                bodies.push(None);
                continue;
            };
            let (_, _, body) = codec::decode_result_parts(record).map_err(|e| {
                lmdb(heed::Error::Io(std::io::Error::other(format!("outbox record {} is damaged: {e}", seq.0))))
            })?;
            bodies.push(Some(Bytes::from(body.to_vec())));
            // SAFETY: as in `task`.
            unsafe { pages.read(record) };
        }
        Ok(bodies)
    }
}

/// The span of the map read since its pages were last given back, and how
/// many bytes were read in it.
#[derive(Debug, Default)]
pub(super) struct PageSpan {
    lo: usize,
    hi: usize,
    bytes: u64,
}

impl PageSpan {
    /// `value` was read from the map; every [`RELEASE_EVERY`] bytes, the
    /// pages of the span read are given back.
    ///
    /// # Safety
    ///
    /// `value` lies in LMDB's map (a value read in a read transaction of an
    /// environment opened without `MDB_WRITEMAP`), and every value passed
    /// since the last [`PageSpan::reset`] lies in the same map, still mapped
    /// at the same address.
    pub(super) unsafe fn read(&mut self, value: &[u8]) {
        let (start, end) = (value.as_ptr() as usize, value.as_ptr() as usize + value.len());
        if self.bytes == 0 {
            (self.lo, self.hi) = (start, end);
        }
        (self.lo, self.hi) = (self.lo.min(start), self.hi.max(end));
        self.bytes += value.len() as u64;
        if self.bytes >= RELEASE_EVERY {
            // SAFETY: the span lies in the one map (the caller's promise),
            // which is contiguous.
            unsafe { give_back(self.lo, self.hi) };
            self.reset();
        }
    }

    /// Gives back the pages of the span read so far.
    ///
    /// # Safety
    ///
    /// As for [`PageSpan::read`].
    pub(super) unsafe fn release(&mut self) {
        if self.bytes > 0 {
            // SAFETY: the caller's promise.
            unsafe { give_back(self.lo, self.hi) };
        }
        self.reset();
    }

    /// Forgets the span (the map may move, or its pages were given back).
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Takes the pages of `[lo, hi)`, a span of LMDB's map, out of this
/// process's resident set.
///
/// Sound because LMDB maps `data.mdb` shared and read-only (tasklane does
/// not use `MDB_WRITEMAP`): dropping such pages loses nothing, a later
/// access reads them again from the page cache or the file, and a reader
/// using a page at the time sees the same bytes after the refault (LMDB
/// never changes a page that a live transaction can see).
///
/// # Safety
///
/// `[lo, hi)` lies in LMDB's map, mapped.
unsafe fn give_back(lo: usize, hi: usize) {
    let page = rustix::param::page_size();
    let start = lo & !(page - 1);
    let end = hi.div_ceil(page) * page;
    // Rounding out stays inside the mapping: it is page aligned.
    // SAFETY: a shared file mapping (see above), the caller's promise.
    let done =
        unsafe { rustix::mm::madvise(start as *mut std::ffi::c_void, end - start, rustix::mm::Advice::LinuxDontNeed) };
    if let Err(e) = done {
        tracing::debug!("madvise of the spool map: {e}");
    }
}
