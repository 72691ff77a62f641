//! Listing tracked tasks by endpoint, state and age, and the retention
//! bound that keeps the store from growing without end.
//!
//! Two time indexes (open tasks, finished tasks) make both cheap: a listing
//! of old tasks reads from the front of an index, and the bound removes
//! from the front, finished tasks first. An open task is removed only when
//! the bound cannot be kept otherwise (or it is older than the age bound):
//! its result, should it still come, is then dead-lettered as unknown.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use heed::types::Bytes;
use heed::{Database, RoTxn, RwTxn, WithoutTls};
use tasklane_core::{EndpointId, ResultStatus};

use super::record::{decode_record, split_index_key};
use super::{now_ms, StoreError, TaskState, TaskStore, TrackedTask};

/// How much task tracking the store keeps. Enforced by every write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Tasks submitted longer ago than this are forgotten (`None`: kept
    /// whatever their age).
    pub max_age: Option<Duration>,
    /// At most this many tasks are tracked; the oldest finished ones go
    /// first (`None`: no bound).
    pub max_tasks: Option<u64>,
}

impl Retention {
    /// Seven days.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
    /// One million tasks (about 60 MB of store).
    pub const DEFAULT_MAX_TASKS: u64 = 1_000_000;
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_age: Some(Self::DEFAULT_MAX_AGE), max_tasks: Some(Self::DEFAULT_MAX_TASKS) }
    }
}

/// Which tasks a listing shows, by state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    /// Submitted, no result yet.
    Submitted,
    /// A result arrived (`ok` or `failed`).
    Done,
    /// Its result was dead-lettered.
    Dead,
}

impl StateFilter {
    fn matches(self, state: TaskState) -> bool {
        match self {
            StateFilter::Submitted => state == TaskState::Submitted,
            StateFilter::Done => matches!(state, TaskState::ResultReceived(_)),
            StateFilter::Dead => state == TaskState::DeadLettered,
        }
    }
}

impl FromStr for StateFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "submitted" => Ok(StateFilter::Submitted),
            "done" => Ok(StateFilter::Done),
            "dead" => Ok(StateFilter::Dead),
            _ => Err(format!("state {s:?} is none of submitted, done, dead")),
        }
    }
}

impl fmt::Display for StateFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateFilter::Submitted => "submitted",
            StateFilter::Done => "done",
            StateFilter::Dead => "dead",
        })
    }
}

/// A listing's filters; the default lists everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks of this endpoint.
    pub endpoint: Option<EndpointId>,
    /// Only tasks in this state.
    pub state: Option<StateFilter>,
    /// Only tasks submitted longer ago than this.
    pub older_than: Option<Duration>,
}

/// How many tracked tasks are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// No result yet.
    pub submitted: u64,
    /// Result `ok`.
    pub ok: u64,
    /// Result `failed`.
    pub failed: u64,
    /// Result dead-lettered.
    pub dead_lettered: u64,
}

impl TaskCounts {
    /// All tracked tasks.
    pub fn total(&self) -> u64 {
        self.submitted + self.ok + self.failed + self.dead_lettered
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl TaskStore {
    /// Tracked tasks that pass `filter`, oldest submission first.
    pub fn query(&self, filter: &TaskFilter) -> Result<Vec<TrackedTask>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let cutoff = filter.older_than.map_or(u64::MAX, |d| now_ms().saturating_sub(ms(d)));
        let indexes = match filter.state {
            Some(StateFilter::Submitted) => vec![self.open_idx],
            Some(_) => vec![self.done_idx],
            None => vec![self.open_idx, self.done_idx],
        };
        let mut out = Vec::new();
        for index in indexes {
            for entry in index.iter(&rtxn)? {
                let (k, _) = entry?;
                let (submitted, id) = split_index_key(k)?;
                if submitted >= cutoff {
                    break;
                }
                let Some(v) = self.tasks.get(&rtxn, id)? else { continue };
                let t = decode_record(id, v)?;
                if filter.endpoint.as_ref().is_some_and(|e| *e != t.endpoint)
                    || filter.state.is_some_and(|s| !s.matches(t.state))
                {
                    continue;
                }
                out.push(t);
            }
        }
        out.sort_by(|a, b| (a.submitted_ms, &a.id).cmp(&(b.submitted_ms, &b.id)));
        Ok(out)
    }

    /// How many tracked tasks are in each state.
    pub fn counts(&self) -> Result<TaskCounts, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut counts = TaskCounts { submitted: self.open_idx.len(&rtxn)?, ..TaskCounts::default() };
        for entry in self.done_idx.iter(&rtxn)? {
            let (k, _) = entry?;
            let (_, id) = split_index_key(k)?;
            let Some(v) = self.tasks.get(&rtxn, id)? else { continue };
            match decode_record(id, v)?.state {
                TaskState::ResultReceived(ResultStatus::Ok) => counts.ok += 1,
                TaskState::ResultReceived(ResultStatus::Failed) => counts.failed += 1,
                TaskState::DeadLettered => counts.dead_lettered += 1,
                TaskState::Submitted => counts.submitted += 1,
            }
        }
        Ok(counts)
    }

    /// How many tasks are tracked.
    pub fn len(&self) -> Result<u64, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.tasks.len(&rtxn)?)
    }

    /// Whether no task is tracked.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.len().map(|n| n == 0)
    }

    /// Applies the retention bound now (every write does too; this is for
    /// a bound that was lowered, or tasks that aged out since the last
    /// write). Returns how many tasks were removed.
    pub fn prune(&self) -> Result<u64, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let removed = self.enforce(&mut wtxn, now_ms())?;
        wtxn.commit()?;
        Ok(removed)
    }

    /// Removes what the retention bound does not keep, inside `wtxn`.
    pub(super) fn enforce(&self, wtxn: &mut RwTxn, now: u64) -> Result<u64, StoreError> {
        let mut removed = 0;
        if let Some(age) = self.retention.max_age {
            let cutoff = now.saturating_sub(ms(age));
            for index in [self.done_idx, self.open_idx] {
                while first_submitted(index, wtxn)?.is_some_and(|t| t < cutoff) {
                    self.remove_first(index, wtxn)?;
                    removed += 1;
                }
            }
        }
        if let Some(max) = self.retention.max_tasks {
            let mut len = self.tasks.len(wtxn)?;
            while len > max {
                let index = if self.done_idx.is_empty(wtxn)? { self.open_idx } else { self.done_idx };
                self.remove_first(index, wtxn)?;
                len -= 1;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the oldest task of `index` (and its record).
    fn remove_first(&self, index: Database<'static, Bytes, Bytes>, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        let Some((k, _)) = index.first(wtxn)? else { return Ok(()) };
        let k = k.to_vec();
        let (_, id) = split_index_key(&k)?;
        self.tasks.delete(wtxn, id)?;
        index.delete(wtxn, &k)?;
        Ok(())
    }
}

fn first_submitted(index: Database<'static, Bytes, Bytes>, txn: &RoTxn<WithoutTls>) -> Result<Option<u64>, StoreError> {
    match index.first(txn)? {
        Some((k, _)) => Ok(Some(split_index_key(k)?.0)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::StoreWrite;
    use tasklane_core::TaskId;

    fn id(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    fn submit(store: &TaskStore, e: &EndpointId, ids: &[&str]) {
        let writes: Vec<StoreWrite> =
            ids.iter().map(|t| StoreWrite::Submitted { task: id(t), endpoint: e.clone() }).collect();
        store.write(&writes).unwrap();
    }

    fn ids(tasks: &[TrackedTask]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn filters_by_endpoint_state_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let (e, f) = (EndpointId::new("e").unwrap(), EndpointId::new("f").unwrap());
        submit(&store, &e, &["e1", "e2", "e3"]);
        submit(&store, &f, &["f1"]);
        store
            .write(&[
                StoreWrite::State(id("e1"), TaskState::ResultReceived(ResultStatus::Ok)),
                StoreWrite::State(id("e2"), TaskState::DeadLettered),
                StoreWrite::State(id("f1"), TaskState::ResultReceived(ResultStatus::Failed)),
            ])
            .unwrap();
        let q = |endpoint: Option<&EndpointId>, state, older_than| {
            store.query(&TaskFilter { endpoint: endpoint.cloned(), state, older_than }).unwrap()
        };
        assert_eq!(ids(&q(None, None, None)), ["e1", "e2", "e3", "f1"], "oldest first");
        assert_eq!(ids(&q(Some(&e), None, None)), ["e1", "e2", "e3"]);
        assert_eq!(ids(&q(None, Some(StateFilter::Submitted), None)), ["e3"]);
        assert_eq!(ids(&q(None, Some(StateFilter::Done), None)), ["e1", "f1"]);
        assert_eq!(ids(&q(Some(&e), Some(StateFilter::Done), None)), ["e1"]);
        assert_eq!(ids(&q(None, Some(StateFilter::Dead), None)), ["e2"]);
        assert!(q(None, None, Some(Duration::from_secs(3600))).is_empty(), "nothing is an hour old");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(q(None, None, Some(Duration::from_millis(10))).len(), 4);
        assert_eq!(store.counts().unwrap(), TaskCounts { submitted: 1, ok: 1, failed: 1, dead_lettered: 1 });
    }

    #[test]
    fn the_count_bound_drops_finished_tasks_first_and_holds_on_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention { max_age: None, max_tasks: Some(3) };
        let store = TaskStore::open_with(dir.path(), retention).unwrap();
        let e = EndpointId::new("e").unwrap();
        submit(&store, &e, &["a", "b", "c"]);
        store.write(&[StoreWrite::State(id("b"), TaskState::ResultReceived(ResultStatus::Ok))]).unwrap();
        submit(&store, &e, &["d"]);
        assert_eq!(ids(&store.query(&TaskFilter::default()).unwrap()), ["a", "c", "d"], "b was finished: it goes");
        submit(&store, &e, &["x1", "x2"]);
        assert_eq!(ids(&store.query(&TaskFilter::default()).unwrap()), ["d", "x1", "x2"], "then the oldest open");
        assert_eq!(store.len().unwrap(), 3);
        // Reopened with a lower bound: prune applies it.
        drop(store);
        let store = TaskStore::open_with(dir.path(), Retention { max_age: None, max_tasks: Some(1) }).unwrap();
        assert_eq!(store.prune().unwrap(), 2);
        assert_eq!(ids(&store.query(&TaskFilter::default()).unwrap()), ["x2"]);
    }

    #[test]
    fn the_age_bound_forgets_old_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let e = EndpointId::new("e").unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        submit(&store, &e, &["old"]);
        std::thread::sleep(Duration::from_millis(60));
        drop(store);
        let retention = Retention { max_age: Some(Duration::from_millis(50)), max_tasks: None };
        let store = TaskStore::open_with(dir.path(), retention).unwrap();
        submit(&store, &e, &["new"]);
        assert_eq!(ids(&store.query(&TaskFilter::default()).unwrap()), ["new"], "the write pruned the old one");
        assert_eq!(store.owner(&id("old")).unwrap(), None);
    }
}
