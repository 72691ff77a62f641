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

use tasklane_core::spool::SpoolModelError;
use tasklane_core::{MemorySpool, SpoolSnapshot, SpoolWrite, Task, TaskId, WriteSeq};

#[derive(Default)]
struct Inner {
    model: MemorySpool,
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

    /// Group commits so far.
    pub fn commits(&self) -> u64 {
        self.0.borrow().commits
    }
}
