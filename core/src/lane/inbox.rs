//! Core's view of the spool: which tasks the inbox holds and in what state,
//! the completed-id window, and how full the spool is (inbox plus outbox).

use std::collections::{BTreeMap, VecDeque};

use crate::config::Config;
use crate::ids::{TaskId, WriteSeq};
use crate::spool::{SpoolSnapshot, TaskMeta};
use crate::window::DedupWindow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TaskState {
    /// Insert issued, not yet committed.
    Writing(WriteSeq),
    /// Committed and handed to the application.
    HandedOff,
}

#[derive(Debug)]
struct Entry {
    state: TaskState,
    bytes: u64,
}

/// What a delivery of a known task id should wait for before its ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Known {
    /// The task's insert is not committed yet.
    Writing(WriteSeq),
    /// The task is durable (in the inbox, or completed).
    Durable,
}

#[derive(Debug)]
pub(super) struct Inbox {
    tasks: BTreeMap<TaskId, Entry>,
    /// Inserted tasks waiting for their commit before hand-off, in order
    /// (what core keeps of them: no bodies).
    awaiting_commit: VecDeque<(WriteSeq, TaskMeta)>,
    completed: DedupWindow,
    next_arrival: u64,
    /// Entries (inbox plus outbox) and payload bytes the spool holds.
    spooled: usize,
    spooled_bytes: u64,
    max_spooled: usize,
    max_spooled_bytes: u64,
}

impl Inbox {
    pub(super) fn new(cfg: &Config, snap: &SpoolSnapshot) -> Self {
        let mut inbox = Self {
            tasks: BTreeMap::new(),
            awaiting_commit: VecDeque::new(),
            completed: DedupWindow::restore(cfg.completed_window, snap.completed.iter().cloned()),
            next_arrival: snap.next_arrival(),
            spooled: 0,
            spooled_bytes: 0,
            max_spooled: cfg.max_spooled_tasks,
            max_spooled_bytes: cfg.max_spooled_bytes,
        };
        for t in &snap.inbox {
            inbox.tasks.insert(t.id.clone(), Entry { state: TaskState::HandedOff, bytes: t.size });
            inbox.occupy(t.size);
        }
        for r in &snap.outbox {
            inbox.occupy(r.result.body.len() as u64);
        }
        inbox
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether `id` is already known, and what an ack of it waits for.
    pub(super) fn known(&self, id: &TaskId) -> Option<Known> {
        match self.tasks.get(id) {
            Some(Entry { state: TaskState::Writing(seq), .. }) => Some(Known::Writing(*seq)),
            Some(_) => Some(Known::Durable),
            None if self.completed.contains(id) => Some(Known::Durable),
            None => None,
        }
    }

    /// Whether the spool has room for one more entry of `bytes`. An empty
    /// spool always has room, so one task can always make progress.
    pub(super) fn has_room(&self, bytes: u64) -> bool {
        self.spooled == 0
            || (self.spooled < self.max_spooled && self.spooled_bytes.saturating_add(bytes) <= self.max_spooled_bytes)
    }

    /// Records an insert of task `id` with a body of `bytes`; returns the
    /// task's arrival position.
    pub(super) fn insert(&mut self, seq: WriteSeq, id: &TaskId, bytes: u64) -> u64 {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.tasks.insert(id.clone(), Entry { state: TaskState::Writing(seq), bytes });
        self.awaiting_commit.push_back((seq, TaskMeta { arrival, id: id.clone(), size: bytes }));
        self.occupy(bytes);
        arrival
    }

    /// Tasks whose insert is now committed, in order, marked handed off.
    pub(super) fn committed(&mut self, upto: WriteSeq) -> Vec<TaskMeta> {
        let mut ready = Vec::new();
        while self.awaiting_commit.front().is_some_and(|(seq, _)| *seq <= upto) {
            let (_, task) = self.awaiting_commit.pop_front().expect("front checked");
            if let Some(e) = self.tasks.get_mut(&task.id) {
                e.state = TaskState::HandedOff;
            }
            ready.push(task);
        }
        ready
    }

    pub(super) fn state(&self, id: &TaskId) -> Option<TaskState> {
        self.tasks.get(id).map(|e| e.state)
    }

    /// Moves `id` out of the inbox into the completed window (its result,
    /// of `result_bytes`, now occupies the spool instead). Returns the id
    /// that leaves the window, if any.
    pub(super) fn complete(&mut self, id: &TaskId, result_bytes: u64) -> Option<TaskId> {
        let e = self.tasks.remove(id).expect("caller checked the task is handed off");
        self.release(e.bytes);
        self.occupy(result_bytes);
        self.completed.insert(id.clone())
    }

    /// A result left the outbox.
    pub(super) fn result_confirmed(&mut self, bytes: u64) {
        self.release(bytes);
    }

    fn occupy(&mut self, bytes: u64) {
        self.spooled += 1;
        self.spooled_bytes += bytes;
    }

    fn release(&mut self, bytes: u64) {
        self.spooled -= 1;
        self.spooled_bytes -= bytes;
    }
}
