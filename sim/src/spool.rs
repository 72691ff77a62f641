//! The endpoint's spool in the simulation: core's reference model
//! ([`MemorySpool`]) as the durable half, outside the host so that it
//! survives a crash, and a queue of writes not yet committed inside the
//! host, which a crash loses.
//!
//! The spool port (`endpoint::spool_port`) applies writes to the durable
//! half only in a group commit (after a simulated fsync delay) and only
//! then reports `SpoolCommitted`, so anything core did not see committed
//! may vanish.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use bytes::Bytes;
use tasklane_core::spool::SpoolModelError;
use tasklane_core::{MemorySpool, OutboxSeq, SpoolSnapshot, SpoolWrite, Task, TaskId, WriteSeq};

/// What a write costs on the simulated disk beyond its payload (keys,
/// page headers): every write needs some room, a delete too.
const WRITE_OVERHEAD: u64 = 64;

/// The simulated disk under a spool, outside the host like the spool.
#[derive(Default)]
struct Disk {
    /// The filesystem's size; `None` is a disk that never fills (and the
    /// spool then reports no free space at all, as before disks could fill).
    capacity: Option<u64>,
    /// Bytes taken by something else (a fault's ballast).
    ballast: u64,
    /// Every commit fails (an I/O error), while set.
    failing: Option<String>,
}

#[derive(Default)]
struct Inner {
    model: MemorySpool,
    disk: Disk,
    /// Every task whose completion was ever committed (unbounded, unlike
    /// the dedup window): "durable" for the invariant checks.
    completed: BTreeSet<TaskId>,
    commits: u64,
}

/// The durable half of one endpoint's spool. Cheap to clone.
#[derive(Clone, Default)]
pub struct DurableSpool(Rc<RefCell<Inner>>);

impl DurableSpool {
    pub fn new() -> Self {
        Self::default()
    }

    /// What a restarting endpoint finds.
    pub fn snapshot(&self) -> SpoolSnapshot {
        self.0.borrow().model.snapshot()
    }

    /// One group commit: the writes, in order. A write the model refuses
    /// (a bug in core) changes nothing and the others still apply, as the
    /// LMDB spool does; the refused ones are returned.
    pub fn commit(&self, writes: &[SpoolWrite]) -> Vec<(WriteSeq, SpoolModelError)> {
        let mut inner = self.0.borrow_mut();
        inner.commits += 1;
        let mut refused = Vec::new();
        for w in writes {
            if let Err(e) = inner.model.apply(&w.op) {
                refused.push((w.seq, e));
                continue;
            }
            if let tasklane_core::SpoolOp::Complete { result, .. } = &w.op {
                inner.completed.insert(result.task.clone());
            }
        }
        refused
    }

    /// The inbox task at `arrival`, body and all, as the last commit left it.
    pub fn task(&self, arrival: u64) -> Option<Task> {
        self.0.borrow().model.task(arrival).cloned()
    }

    /// The body of the outbox result at `seq`, as the last commit left it.
    pub fn result_body(&self, seq: OutboxSeq) -> Option<Bytes> {
        self.0.borrow().model.result_body(seq).cloned()
    }

    /// Whether the task is durably held: in the inbox, or completed.
    pub fn holds(&self, task: &TaskId) -> bool {
        let inner = self.0.borrow();
        inner.model.inbox_contains(task) || inner.completed.contains(task)
    }

    pub fn inbox_len(&self) -> usize {
        self.0.borrow().model.inbox_len()
    }

    pub fn outbox_len(&self) -> usize {
        self.0.borrow().model.outbox_len()
    }

    /// Gives the spool a filesystem of `bytes` (disk-full faults need one).
    pub fn limit_disk(&self, bytes: u64) {
        self.0.borrow_mut().disk.capacity = Some(bytes);
    }

    /// Bytes the spool's records take on the disk.
    fn used(inner: &Inner) -> u64 {
        let snap = inner.model.snapshot();
        let inbox: u64 = snap.inbox.iter().map(|t| t.size + t.id.as_str().len() as u64 + WRITE_OVERHEAD).sum();
        let outbox: u64 = snap.outbox.iter().map(|r| r.size + WRITE_OVERHEAD).sum();
        let window: u64 = snap.completed.iter().map(|id| id.as_str().len() as u64 + 16).sum();
        inbox + outbox + window
    }

    /// Free bytes on the spool's filesystem, if it has a size.
    pub fn free_bytes(&self) -> Option<u64> {
        let inner = self.0.borrow();
        let capacity = inner.disk.capacity?;
        Some(capacity.saturating_sub(Self::used(&inner)).saturating_sub(inner.disk.ballast))
    }

    /// A disk-full fault: something else takes all but `leave` of the free
    /// bytes. Returns the ballast.
    pub fn fill_disk(&self, leave: u64) -> u64 {
        let free = self.free_bytes().unwrap_or(0);
        let ballast = free.saturating_sub(leave);
        self.0.borrow_mut().disk.ballast = ballast;
        ballast
    }

    /// The ballast goes.
    pub fn free_disk(&self) {
        self.0.borrow_mut().disk.ballast = 0;
    }

    /// A stall fault: every commit fails with `reason` until [`Self::unstall`].
    pub fn stall(&self, reason: &str) {
        self.0.borrow_mut().disk.failing = Some(reason.to_owned());
    }

    pub fn unstall(&self) {
        self.0.borrow_mut().disk.failing = None;
    }

    /// How many of `writes`, from the front, fit on the disk now (all of
    /// them on a disk without a size), or why none can be written.
    pub fn fitting(&self, writes: &[SpoolWrite]) -> Result<usize, String> {
        let inner = self.0.borrow();
        if let Some(reason) = &inner.disk.failing {
            return Err(reason.clone());
        }
        let Some(capacity) = inner.disk.capacity else { return Ok(writes.len()) };
        let mut free = capacity.saturating_sub(Self::used(&inner)).saturating_sub(inner.disk.ballast);
        let mut n = 0;
        for w in writes {
            let need = WRITE_OVERHEAD
                + match &w.op {
                    tasklane_core::SpoolOp::Insert(t) => t.task.body.len() as u64 + t.task.id.as_str().len() as u64,
                    tasklane_core::SpoolOp::Complete { result, .. } => result.body.len() as u64,
                    tasklane_core::SpoolOp::Confirmed { .. } => 0,
                };
            if need > free {
                break;
            }
            free -= need;
            n += 1;
        }
        if n == 0 && !writes.is_empty() {
            return Err("No space left on device (os error 28)".into());
        }
        Ok(n)
    }

    /// Group commits so far.
    pub fn commits(&self) -> u64 {
        self.0.borrow().commits
    }
}
