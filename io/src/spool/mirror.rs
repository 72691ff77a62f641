//! What the spool holds besides the records themselves, mirrored in memory
//! so that ops can be checked (and located) without reading the database,
//! with an undo log: a transaction that fails (disk full, I/O error) puts
//! the mirror back as it was in the time it takes to undo the batch,
//! instead of rereading the whole spool.

use std::collections::{BTreeMap, BTreeSet};

use tasklane_core::spool::SpoolModelError;
use tasklane_core::{SpoolOp, TaskId};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Mirror {
    pub inbox: BTreeMap<TaskId, u64>,
    pub outbox: BTreeSet<u64>,
    pub completed: BTreeMap<u64, TaskId>,
    pub completed_keys: BTreeMap<TaskId, BTreeSet<u64>>,
    pub next_arrival: u64,
    pub next_outbox: u64,
    pub next_completed: u64,
}

/// How to put the mirror back as it was when [`Mirror::begin`] made it.
#[derive(Debug)]
pub(super) struct Undo {
    counters: (u64, u64, u64),
    steps: Vec<Step>,
}

/// The value a key had before a change.
#[derive(Debug)]
enum Step {
    Inbox(TaskId, Option<u64>),
    Outbox(u64, bool),
    Completed(u64, Option<TaskId>),
    CompletedKeys(TaskId, Option<BTreeSet<u64>>),
}

/// What completing a task changed, for the database: the inbox record
/// removed, the dedup window entry added, and the one forgotten.
pub(super) struct Completed {
    pub arrival: u64,
    pub key: u64,
    pub forgotten: Option<u64>,
}

impl Mirror {
    /// Starts a batch.
    pub fn begin(&self) -> Undo {
        Undo { counters: (self.next_arrival, self.next_outbox, self.next_completed), steps: Vec::new() }
    }

    /// Undoes a batch, last change first.
    pub fn rollback(&mut self, undo: Undo) {
        for step in undo.steps.into_iter().rev() {
            match step {
                Step::Inbox(id, Some(a)) => drop(self.inbox.insert(id, a)),
                Step::Inbox(id, None) => drop(self.inbox.remove(&id)),
                Step::Outbox(seq, true) => drop(self.outbox.insert(seq)),
                Step::Outbox(seq, false) => drop(self.outbox.remove(&seq)),
                Step::Completed(key, Some(id)) => drop(self.completed.insert(key, id)),
                Step::Completed(key, None) => drop(self.completed.remove(&key)),
                Step::CompletedKeys(id, Some(keys)) => drop(self.completed_keys.insert(id, keys)),
                Step::CompletedKeys(id, None) => drop(self.completed_keys.remove(&id)),
            }
        }
        (self.next_arrival, self.next_outbox, self.next_completed) = undo.counters;
    }

    /// Whether `op` fits the spool's content, as `MemorySpool::apply` decides.
    pub fn check(&self, op: &SpoolOp) -> Result<(), SpoolModelError> {
        match op {
            SpoolOp::Insert(t) => {
                if self.inbox.contains_key(&t.task.id) {
                    return Err(SpoolModelError::DuplicateInsert(t.task.id.clone()));
                }
                if t.arrival < self.next_arrival {
                    return Err(SpoolModelError::OutOfOrder(t.arrival));
                }
            }
            SpoolOp::Complete { seq, result, .. } => {
                if !self.inbox.contains_key(&result.task) {
                    return Err(SpoolModelError::NotInInbox(result.task.clone()));
                }
                if seq.0 < self.next_outbox {
                    return Err(SpoolModelError::OutOfOrder(seq.0));
                }
            }
            SpoolOp::Confirmed { seq } => {
                if !self.outbox.contains(&seq.0) {
                    return Err(SpoolModelError::NotInOutbox(seq.0));
                }
            }
        }
        Ok(())
    }

    pub fn insert(&mut self, undo: &mut Undo, id: &TaskId, arrival: u64) {
        let before = self.inbox.insert(id.clone(), arrival);
        undo.steps.push(Step::Inbox(id.clone(), before));
        self.next_arrival = arrival + 1;
    }

    /// Moves a checked task from the inbox to the outbox at `seq`, adds it to
    /// the dedup window, and forgets the oldest window entry of `forget`.
    pub fn complete(&mut self, undo: &mut Undo, task: &TaskId, seq: u64, forget: Option<&TaskId>) -> Completed {
        let arrival = self.inbox.remove(task).expect("checked");
        undo.steps.push(Step::Inbox(task.clone(), Some(arrival)));
        undo.steps.push(Step::Outbox(seq, !self.outbox.insert(seq)));
        self.next_outbox = seq + 1;
        let key = self.next_completed;
        self.next_completed += 1;
        undo.steps.push(Step::Completed(key, self.completed.insert(key, task.clone())));
        undo.steps.push(Step::CompletedKeys(task.clone(), self.completed_keys.get(task).cloned()));
        self.completed_keys.entry(task.clone()).or_default().insert(key);
        let mut forgotten = None;
        if let Some(f) = forget {
            if let Some(keys) = self.completed_keys.get_mut(f) {
                let before = keys.clone();
                let oldest = keys.pop_first().expect("sets in the map are never empty");
                if keys.is_empty() {
                    self.completed_keys.remove(f);
                }
                undo.steps.push(Step::CompletedKeys(f.clone(), Some(before)));
                undo.steps.push(Step::Completed(oldest, self.completed.remove(&oldest)));
                forgotten = Some(oldest);
            }
        }
        Completed { arrival, key, forgotten }
    }

    pub fn confirm(&mut self, undo: &mut Undo, seq: u64) {
        undo.steps.push(Step::Outbox(seq, self.outbox.remove(&seq)));
    }
}
