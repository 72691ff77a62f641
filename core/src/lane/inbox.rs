//! Core's view of the spool: which tasks the inbox holds and in what state,
//! the completed-id window, and how full the spool is (inbox plus outbox).

use std::collections::{BTreeMap, VecDeque};

use crate::config::Config;
use crate::ids::{TaskId, WriteSeq};
use crate::spool::{SpoolSnapshot, TaskMeta};
use crate::window::DedupWindow;

/// An inbox task, handed off to the application as soon as its insert is
/// issued (SPEC §4 "Handoff").
#[derive(Debug)]
struct Entry {
    /// The write that inserted it (`WriteSeq(0)` for a task of the
    /// snapshot): the task is durable once that write is committed.
    write: WriteSeq,
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
    /// A B-tree, not a hash map: it holds every spooled task (a million
    /// and more), and a hash table's doubling would put two tables in
    /// memory at once at the peak (SPEC §4 "Memory"); the smaller maps of
    /// the hot path (the outbox's index, the dedup window) are hashed.
    tasks: BTreeMap<TaskId, Entry>,
    /// Inserts not yet committed, in order (to count the tasks spooled).
    awaiting_commit: VecDeque<WriteSeq>,
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
            completed: DedupWindow::restore_keyed(cfg.completed_window, cfg.seed, snap.completed.iter().cloned()),
            next_arrival: snap.next_arrival(),
            spooled: 0,
            spooled_bytes: 0,
            max_spooled: cfg.max_spooled_tasks,
            max_spooled_bytes: cfg.max_spooled_bytes,
        };
        for t in &snap.inbox {
            inbox.tasks.insert(t.id.clone(), Entry { write: WriteSeq(0), bytes: t.size });
            inbox.occupy(t.size);
        }
        for r in &snap.outbox {
            inbox.occupy(r.size);
        }
        inbox
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether `id` is already known, and what an ack of it waits for, with
    /// writes up to `committed` durable.
    pub(super) fn known(&self, id: &TaskId, committed: WriteSeq) -> Option<Known> {
        match self.tasks.get(id) {
            Some(Entry { write, .. }) if *write > committed => Some(Known::Writing(*write)),
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

    /// Records an insert, by write `seq`, of task `id` with a body of
    /// `bytes`; returns what the hand-off names.
    pub(super) fn insert(&mut self, seq: WriteSeq, id: &TaskId, bytes: u64) -> TaskMeta {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.tasks.insert(id.clone(), Entry { write: seq, bytes });
        self.awaiting_commit.push_back(seq);
        self.occupy(bytes);
        TaskMeta { arrival, id: id.clone(), size: bytes }
    }

    /// How many inserts are now committed (by writes up to `upto`).
    pub(super) fn committed(&mut self, upto: WriteSeq) -> u64 {
        let mut n = 0;
        while self.awaiting_commit.front().is_some_and(|seq| *seq <= upto) {
            self.awaiting_commit.pop_front();
            n += 1;
        }
        n
    }

    /// Whether the inbox holds `id` (every inbox task is handed off).
    pub(super) fn contains(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id)
    }

    /// Moves `id` out of the inbox into the completed window (its result,
    /// of `result_bytes`, now occupies the spool instead). Returns the id
    /// that leaves the window, if any.
    pub(super) fn complete(&mut self, id: &TaskId, result_bytes: u64) -> Option<TaskId> {
        let e = self.tasks.remove(id).expect("caller checked the inbox holds the task");
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
