//! The spool's logical model: what core asks the spool to store, and what a
//! spool hands back when a lane starts.
//!
//! A spool keeps three things: the inbox (tasks received and not yet
//! completed), the outbox (results not yet confirmed by the broker) and a
//! bounded window of completed task ids (for dedup of redeliveries). Core
//! issues [`SpoolWrite`]s in order; the spool applies them in that order,
//! commits them in groups, and reports `Input::SpoolCommitted { upto }`.
//! [`MemorySpool`] is the reference implementation: the LMDB spool of the io
//! crate and the crash-losing spool of the simulation behave like it.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::ids::{OutboxSeq, TaskId, WriteSeq};
use crate::message::{ResultStatus, Task, TaskResult};

/// A task in the inbox, with its arrival position (hand-off order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTask {
    /// Arrival position, increasing over the spool's whole life.
    pub arrival: u64,
    /// The task.
    pub task: Task,
}

impl StoredTask {
    /// What core keeps of it.
    pub fn meta(&self) -> TaskMeta {
        TaskMeta { arrival: self.arrival, id: self.task.id.clone(), size: self.task.body.len() as u64 }
    }
}

/// What core keeps of an inbox task: what policy needs (its id, where it is
/// in the inbox, how much room it takes), never its body. The body stays in
/// the spool until the application takes the task (SPEC §4 "Memory"); the
/// shell reads it from there by `arrival`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMeta {
    /// Arrival position: the task's key in the spool's inbox.
    pub arrival: u64,
    /// The task id.
    pub id: TaskId,
    /// Length of its body, in bytes.
    pub size: u64,
}

/// What core keeps of an outbox result: what policy needs (its position,
/// the task it answers, its status for the message's headers, how much
/// room it takes), never its body. The body is written to the spool by the
/// completing write and stays there until the broker confirms it (SPEC §4
/// "Memory"); the shell reads it from there by `seq` when it publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultMeta {
    /// Outbox position, increasing over the spool's whole life: the
    /// result's key in the spool's outbox.
    pub seq: OutboxSeq,
    /// The task this result answers.
    pub task: TaskId,
    /// Success or failure.
    pub status: ResultStatus,
    /// Length of its body, in bytes.
    pub size: u64,
}

impl ResultMeta {
    /// What core keeps of `result`, stored at `seq`.
    pub fn of(seq: OutboxSeq, result: &TaskResult) -> Self {
        Self { seq, task: result.task.clone(), status: result.status, size: result.body.len() as u64 }
    }
}

/// One change to the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpoolOp {
    /// Add a task to the inbox.
    Insert(StoredTask),
    /// Atomically: remove `result.task` from the inbox, add the result to the
    /// outbox at `seq`, remember the task id as completed, and forget the
    /// completed id `forget` (the window's oldest, when it is full).
    Complete {
        /// Outbox position of the result.
        seq: OutboxSeq,
        /// The result.
        result: TaskResult,
        /// A completed id that leaves the dedup window.
        forget: Option<TaskId>,
    },
    /// The broker confirmed the result at `seq`: remove it from the outbox.
    Confirmed {
        /// Outbox position.
        seq: OutboxSeq,
    },
}

/// A spool write as core issues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolWrite {
    /// Position in core's write order.
    pub seq: WriteSeq,
    /// What to change.
    pub op: SpoolOp,
}

/// What a spool holds, as handed to [`crate::Lane::new`] on start: of the
/// inbox and the outbox only what core keeps of each task and result (the
/// bodies stay on disk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolSnapshot {
    /// Inbox tasks, in arrival order.
    pub inbox: Vec<TaskMeta>,
    /// Outbox results, in outbox order.
    pub outbox: Vec<ResultMeta>,
    /// Completed task ids, oldest first.
    pub completed: Vec<TaskId>,
    /// The arrival position the next task gets (persisted: positions never
    /// go back, even when the inbox is empty).
    pub arrival_counter: u64,
    /// The outbox position the next result gets (persisted likewise).
    pub outbox_counter: u64,
}

impl SpoolSnapshot {
    /// The arrival position the next task gets: after every stored one.
    pub fn next_arrival(&self) -> u64 {
        self.inbox.last().map_or(0, |t| t.arrival + 1).max(self.arrival_counter)
    }

    /// The outbox position the next result gets: after every stored one.
    pub fn next_outbox_seq(&self) -> OutboxSeq {
        OutboxSeq(self.outbox.last().map_or(0, |r| r.seq.0 + 1).max(self.outbox_counter))
    }
}

/// An op that does not fit the spool's content: a bug in whoever issued it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolModelError {
    /// Insert of a task id already in the inbox.
    #[error("task {0} is already in the inbox")]
    DuplicateInsert(TaskId),
    /// Complete of a task that is not in the inbox.
    #[error("task {0} is not in the inbox")]
    NotInInbox(TaskId),
    /// Confirm of an outbox position that holds nothing.
    #[error("outbox position {0} is empty")]
    NotInOutbox(u64),
    /// A position that does not increase.
    #[error("position {0} does not increase")]
    OutOfOrder(u64),
}

/// An inbox task of [`MemorySpool`]: its body is known unless the spool was
/// built from a snapshot, which carries none.
#[derive(Clone, Debug)]
struct Held {
    meta: TaskMeta,
    task: Option<Task>,
}

/// An outbox result of [`MemorySpool`]: its body is known unless the spool
/// was built from a snapshot, which carries none.
#[derive(Clone, Debug)]
struct HeldResult {
    meta: ResultMeta,
    body: Option<Bytes>,
}

/// The reference spool, in memory.
#[derive(Clone, Debug, Default)]
pub struct MemorySpool {
    inbox: BTreeMap<u64, Held>,
    inbox_ids: BTreeMap<TaskId, u64>,
    outbox: BTreeMap<OutboxSeq, HeldResult>,
    completed: VecDeque<TaskId>,
    next_arrival: u64,
    next_outbox: u64,
}

impl MemorySpool {
    /// An empty spool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A spool holding `snap`. A snapshot has no bodies, so [`Self::task`]
    /// knows none of its inbox tasks and [`Self::result_body`] none of its
    /// outbox results.
    pub fn from_snapshot(snap: &SpoolSnapshot) -> Self {
        let mut s = Self::new();
        for t in &snap.inbox {
            s.inbox_ids.insert(t.id.clone(), t.arrival);
            s.inbox.insert(t.arrival, Held { meta: t.clone(), task: None });
        }
        for r in &snap.outbox {
            s.outbox.insert(r.seq, HeldResult { meta: r.clone(), body: None });
        }
        s.completed = snap.completed.iter().cloned().collect();
        s.next_arrival = snap.next_arrival();
        s.next_outbox = snap.next_outbox_seq().0;
        s
    }

    /// Applies one op, or refuses it (leaving the spool unchanged).
    pub fn apply(&mut self, op: &SpoolOp) -> Result<(), SpoolModelError> {
        match op {
            SpoolOp::Insert(t) => {
                if self.inbox_ids.contains_key(&t.task.id) {
                    return Err(SpoolModelError::DuplicateInsert(t.task.id.clone()));
                }
                if t.arrival < self.next_arrival {
                    return Err(SpoolModelError::OutOfOrder(t.arrival));
                }
                self.next_arrival = t.arrival + 1;
                self.inbox_ids.insert(t.task.id.clone(), t.arrival);
                self.inbox.insert(t.arrival, Held { meta: t.meta(), task: Some(t.task.clone()) });
            }
            SpoolOp::Complete { seq, result, forget } => {
                let Some(&arrival) = self.inbox_ids.get(&result.task) else {
                    return Err(SpoolModelError::NotInInbox(result.task.clone()));
                };
                if seq.0 < self.next_outbox {
                    return Err(SpoolModelError::OutOfOrder(seq.0));
                }
                self.next_outbox = seq.0 + 1;
                self.inbox_ids.remove(&result.task);
                self.inbox.remove(&arrival);
                let meta = ResultMeta::of(*seq, result);
                self.outbox.insert(*seq, HeldResult { meta, body: Some(result.body.clone()) });
                self.completed.push_back(result.task.clone());
                if let Some(f) = forget {
                    if let Some(i) = self.completed.iter().position(|c| c == f) {
                        self.completed.remove(i);
                    }
                }
            }
            SpoolOp::Confirmed { seq } => {
                if self.outbox.remove(seq).is_none() {
                    return Err(SpoolModelError::NotInOutbox(seq.0));
                }
            }
        }
        Ok(())
    }

    /// What the spool holds now.
    pub fn snapshot(&self) -> SpoolSnapshot {
        SpoolSnapshot {
            inbox: self.inbox.values().map(|held| held.meta.clone()).collect(),
            outbox: self.outbox.values().map(|held| held.meta.clone()).collect(),
            completed: self.completed.iter().cloned().collect(),
            arrival_counter: self.next_arrival,
            outbox_counter: self.next_outbox,
        }
    }

    /// The inbox task at `arrival`, body and all, if the spool holds it and
    /// knows its body.
    pub fn task(&self, arrival: u64) -> Option<&Task> {
        self.inbox.get(&arrival).and_then(|held| held.task.as_ref())
    }

    /// The body of the outbox result at `seq`, if the spool holds it and
    /// knows its body.
    pub fn result_body(&self, seq: OutboxSeq) -> Option<&Bytes> {
        self.outbox.get(&seq).and_then(|held| held.body.as_ref())
    }

    /// Tasks in the inbox.
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// Results in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether `task` is in the inbox.
    pub fn inbox_contains(&self, task: &TaskId) -> bool {
        self.inbox_ids.contains_key(task)
    }

    /// Whether the outbox holds a result for `task`.
    pub fn outbox_contains(&self, task: &TaskId) -> bool {
        self.outbox.values().any(|r| &r.meta.task == task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ResultStatus;

    fn task(id: &str) -> Task {
        Task { id: TaskId::new(id).unwrap(), kind: None, body: Bytes::from_static(b"p") }
    }

    #[test]
    fn insert_complete_confirm_and_window() {
        let mut s = MemorySpool::new();
        s.apply(&SpoolOp::Insert(StoredTask { arrival: 0, task: task("a") })).unwrap();
        s.apply(&SpoolOp::Insert(StoredTask { arrival: 1, task: task("b") })).unwrap();
        assert_eq!(
            s.apply(&SpoolOp::Insert(StoredTask { arrival: 2, task: task("a") })),
            Err(SpoolModelError::DuplicateInsert(TaskId::new("a").unwrap()))
        );
        let result = TaskResult { task: TaskId::new("a").unwrap(), status: ResultStatus::Ok, body: Bytes::new() };
        s.apply(&SpoolOp::Complete { seq: OutboxSeq(0), result, forget: None }).unwrap();
        let snap = s.snapshot();
        assert_eq!(snap.inbox.len(), 1);
        assert_eq!(snap.inbox[0], TaskMeta { arrival: 1, id: TaskId::new("b").unwrap(), size: 1 });
        assert_eq!(s.task(1), Some(&task("b")));
        assert_eq!(s.task(0), None, "completed");
        assert_eq!(
            snap.outbox,
            vec![ResultMeta { seq: OutboxSeq(0), task: TaskId::new("a").unwrap(), status: ResultStatus::Ok, size: 0 }]
        );
        assert_eq!(s.result_body(OutboxSeq(0)), Some(&Bytes::new()));
        assert_eq!(snap.completed, vec![TaskId::new("a").unwrap()]);
        assert_eq!(snap.next_arrival(), 2);
        assert_eq!(snap.next_outbox_seq(), OutboxSeq(1));
        s.apply(&SpoolOp::Confirmed { seq: OutboxSeq(0) }).unwrap();
        assert_eq!(s.snapshot().next_outbox_seq(), OutboxSeq(1), "positions survive an empty outbox");
        let result = TaskResult { task: TaskId::new("a").unwrap(), status: ResultStatus::Ok, body: Bytes::new() };
        assert_eq!(
            s.apply(&SpoolOp::Complete { seq: OutboxSeq(0), result, forget: None }),
            Err(SpoolModelError::NotInInbox(TaskId::new("a").unwrap()))
        );
        let result = TaskResult { task: TaskId::new("b").unwrap(), status: ResultStatus::Ok, body: Bytes::new() };
        s.apply(&SpoolOp::Complete { seq: OutboxSeq(1), result, forget: Some(TaskId::new("a").unwrap()) }).unwrap();
        assert_eq!(s.snapshot().completed, vec![TaskId::new("b").unwrap()]);
        assert_eq!(s.apply(&SpoolOp::Confirmed { seq: OutboxSeq(0) }), Err(SpoolModelError::NotInOutbox(0)));
        let again = MemorySpool::from_snapshot(&s.snapshot());
        assert_eq!(again.snapshot(), s.snapshot());
        assert_eq!(again.task(1), None, "a snapshot carries no bodies");
        assert!(s.result_body(OutboxSeq(1)).is_some());
        assert_eq!(again.result_body(OutboxSeq(1)), None, "nor result bodies");
    }
}
