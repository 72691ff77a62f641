//! The service's own LMDB store: every submitted task's endpoint and state
//! (SPEC §5) under a retention bound, the persisted dedup window of
//! accepted results, and the fleet: each endpoint's last status report,
//! recent throughput samples and what the service dead-lettered.
//!
//! Writes come in groups (one transaction, one fsync per group): a batch of
//! submitted tasks, or a batch of judged results. LMDB allows several
//! processes on one store (`tasklane submit` and `tasklane results` side by
//! side); within one process open it once and share clones.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RwTxn, WithoutTls};
use tasklane_core::{EndpointId, ResultStatus, TaskId};

mod fleet;
mod record;
mod retention;

pub use fleet::{DeadLetter, FleetRecord, Sample};
pub use retention::{Retention, StateFilter, TaskCounts, TaskFilter};

use record::{decode_record, encode_record, index_key};

/// Largest the store's memory map may grow to. LMDB reserves address space,
/// not disk: the file grows with what is written.
const MAP_SIZE: usize = 4 << 30;

/// Where a submitted task stands, as the service knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskState {
    /// Published and confirmed by the broker; no result yet.
    Submitted,
    /// Its result was accepted, with this status.
    ResultReceived(ResultStatus),
    /// Its endpoint sent a result that was not valid (wrong headers, too
    /// large); the result went to `tasklane.dead`.
    DeadLettered,
}

impl TaskState {
    /// Whether the task is finished (a result, or dead-lettered).
    pub fn is_finished(self) -> bool {
        self != TaskState::Submitted
    }

    fn to_byte(self) -> u8 {
        match self {
            TaskState::Submitted => 0,
            TaskState::ResultReceived(ResultStatus::Ok) => 1,
            TaskState::ResultReceived(ResultStatus::Failed) => 2,
            TaskState::DeadLettered => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => TaskState::Submitted,
            1 => TaskState::ResultReceived(ResultStatus::Ok),
            2 => TaskState::ResultReceived(ResultStatus::Failed),
            3 => TaskState::DeadLettered,
            _ => return None,
        })
    }

    /// A short stable name: `submitted`, `ok`, `failed`, `dead-lettered`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Submitted => "submitted",
            TaskState::ResultReceived(s) => s.as_str(),
            TaskState::DeadLettered => "dead-lettered",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tracked task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedTask {
    /// The task id.
    pub id: TaskId,
    /// The endpoint it was submitted to (its owner).
    pub endpoint: EndpointId,
    /// Where it stands.
    pub state: TaskState,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub submitted_ms: u64,
    /// When its state last changed, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// A task store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// LMDB failed (I/O error, map full, ...).
    #[error("task store: {0}")]
    Lmdb(#[from] heed::Error),
    /// The store directory could not be created.
    #[error("task store {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A record in the store is damaged.
    #[error("task store: damaged record for task {0:?}")]
    Damaged(String),
    /// A fleet record in the store is damaged.
    #[error("task store: damaged fleet record {0:?}: {1}")]
    DamagedFleet(String, String),
}

/// A state change of one task, as written in a group.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreWrite {
    /// A task was submitted to `endpoint` (written before it is published,
    /// so that its result can never arrive before its owner is known).
    Submitted {
        /// The task.
        task: TaskId,
        /// Its endpoint.
        endpoint: EndpointId,
    },
    /// The task was never routed (its queue does not exist): forget it.
    Withdrawn(TaskId),
    /// The task's state changed.
    State(TaskId, TaskState),
    /// An accepted result's id entered the dedup window, and `forget` (the
    /// oldest) left it.
    Seen {
        /// The id accepted.
        task: TaskId,
        /// The id that left the window.
        forget: Option<TaskId>,
    },
    /// The service dead-lettered a message (a result or a status report):
    /// kept in a short log of the most recent ones, for the dashboard.
    Dead(DeadLetter),
}

/// The service's LMDB store. Cheap to clone; clones share the environment.
#[derive(Clone)]
pub struct TaskStore {
    env: Env<WithoutTls>,
    tasks: Database<'static, Bytes, Bytes>,
    /// Dedup window: big-endian sequence number → task id, oldest first.
    seen: Database<'static, Bytes, Bytes>,
    /// Tasks without a result yet, by submission time (`record::index_key`).
    open_idx: Database<'static, Bytes, Bytes>,
    /// Finished tasks (result or dead-lettered), by submission time.
    done_idx: Database<'static, Bytes, Bytes>,
    /// Endpoint id → its last status report and when it was seen (JSON).
    fleet: Database<'static, Bytes, Bytes>,
    /// Throughput samples: `sent_at_ms (BE) | endpoint` → `completed | pid`.
    samples: Database<'static, Bytes, Bytes>,
    /// The most recent dead letters: sequence number (BE) → JSON.
    dead: Database<'static, Bytes, Bytes>,
    retention: Retention,
}

impl fmt::Debug for TaskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskStore").field("path", &self.env.path()).field("retention", &self.retention).finish()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The store's databases by name, in the order of [`TaskStore`]'s fields.
const DATABASES: [&str; 7] = ["tasks", "seen", "open", "done", "fleet", "samples", "dead"];

impl TaskStore {
    /// Opens (creating if needed) the store in directory `dir`, with the
    /// default [`Retention`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, Retention::default())
    }

    /// Opens (creating if needed) the store in directory `dir`; every write
    /// keeps it within `retention`.
    pub fn open_with(dir: impl AsRef<Path>, retention: Retention) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(MAP_SIZE).max_dbs(8);
        // SAFETY: the store's files are only ever written through LMDB (by
        // this type, in this or another process); LMDB's own locking keeps
        // the memory map consistent.
        let env = unsafe { opts.open(dir)? };
        let wtxn = env.write_txn()?;
        let [tasks, seen, open_idx, done_idx, fleet, samples, dead] = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, heed::Error> {
                let mut dbs = Vec::with_capacity(DATABASES.len());
                for name in DATABASES {
                    dbs.push(dbo.create_database::<Bytes, Bytes>(wtxn, Some(name))?);
                }
                let dbs: [_; 7] = dbs.try_into().unwrap_or_else(|_| unreachable!("one per name"));
                Ok(CommitOrAbort::<_, ()>::Commit(dbs))
            })?
            .unwrap_commit();
        let store = Self { env, tasks, seen, open_idx, done_idx, fleet, samples, dead, retention };
        // A store written before the time indexes existed gets them now.
        let mut wtxn = store.env.write_txn()?;
        if store.open_idx.len(&wtxn)? + store.done_idx.len(&wtxn)? != store.tasks.len(&wtxn)? {
            store.rebuild_indexes(&mut wtxn)?;
        }
        wtxn.commit()?;
        Ok(store)
    }

    /// The retention bound the store keeps.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Applies `writes` in order, then the retention bound, in one
    /// transaction (one fsync).
    pub fn write(&self, writes: &[StoreWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut wtxn = self.env.write_txn()?;
        let mut next_seen = match self.seen.last(&wtxn)? {
            Some((k, _)) => u64::from_be_bytes(k.try_into().map_err(|_| StoreError::Damaged("seen".into()))?) + 1,
            None => 0,
        };
        for w in writes {
            match w {
                StoreWrite::Submitted { task, endpoint } => {
                    let key = task.as_str().as_bytes();
                    self.remove_task(&mut wtxn, key)?;
                    let v = encode_record(endpoint, TaskState::Submitted, now, now);
                    self.tasks.put(&mut wtxn, key, &v)?;
                    self.open_idx.put(&mut wtxn, &index_key(now, key), &[])?;
                }
                StoreWrite::Withdrawn(task) => {
                    self.remove_task(&mut wtxn, task.as_str().as_bytes())?;
                }
                StoreWrite::State(task, state) => {
                    let key = task.as_str().as_bytes();
                    if let Some(old) = self.tasks.get(&wtxn, key)? {
                        let old = decode_record(key, old)?;
                        let v = encode_record(&old.endpoint, *state, old.submitted_ms, now);
                        self.tasks.put(&mut wtxn, key, &v)?;
                        if old.state.is_finished() != state.is_finished() {
                            let k = index_key(old.submitted_ms, key);
                            self.index_of(old.state).delete(&mut wtxn, &k)?;
                            self.index_of(*state).put(&mut wtxn, &k, &[])?;
                        }
                    }
                }
                StoreWrite::Seen { task, forget } => {
                    self.seen.put(&mut wtxn, &next_seen.to_be_bytes(), task.as_str().as_bytes())?;
                    next_seen += 1;
                    if forget.is_some() {
                        // The window forgets its oldest id, which is the first key.
                        if let Some((k, _)) = self.seen.first(&wtxn)? {
                            let k = k.to_vec();
                            self.seen.delete(&mut wtxn, &k)?;
                        }
                    }
                }
                StoreWrite::Dead(letter) => self.put_dead(&mut wtxn, letter)?,
            }
        }
        self.enforce(&mut wtxn, now)?;
        wtxn.commit()?;
        Ok(())
    }

    /// The time index a task in `state` is kept in.
    fn index_of(&self, state: TaskState) -> Database<'static, Bytes, Bytes> {
        if state.is_finished() {
            self.done_idx
        } else {
            self.open_idx
        }
    }

    /// Deletes a task and its index entry; `false` if there was none.
    fn remove_task(&self, wtxn: &mut RwTxn, key: &[u8]) -> Result<bool, StoreError> {
        let Some(old) = self.tasks.get(wtxn, key)? else { return Ok(false) };
        let old = decode_record(key, old)?;
        self.index_of(old.state).delete(wtxn, &index_key(old.submitted_ms, key))?;
        self.tasks.delete(wtxn, key)?;
        Ok(true)
    }

    fn rebuild_indexes(&self, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        self.open_idx.clear(wtxn)?;
        self.done_idx.clear(wtxn)?;
        let mut entries = Vec::new();
        for entry in self.tasks.iter(wtxn)? {
            let (k, v) = entry?;
            let t = decode_record(k, v)?;
            entries.push((t.state, index_key(t.submitted_ms, k)));
        }
        for (state, k) in entries {
            self.index_of(state).put(wtxn, &k, &[])?;
        }
        Ok(())
    }

    /// The endpoint that owns `task`, if it was submitted.
    pub fn owner(&self, task: &TaskId) -> Result<Option<EndpointId>, StoreError> {
        Ok(self.get(task)?.map(|t| t.endpoint))
    }

    /// One task's record.
    pub fn get(&self, task: &TaskId) -> Result<Option<TrackedTask>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let key = task.as_str().as_bytes();
        self.tasks.get(&rtxn, key)?.map(|v| decode_record(key, v)).transpose()
    }

    /// Every tracked task (of `endpoint` only, if given), ordered by task id.
    pub fn list(&self, endpoint: Option<&EndpointId>) -> Result<Vec<TrackedTask>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for entry in self.tasks.iter(&rtxn)? {
            let (k, v) = entry?;
            let t = decode_record(k, v)?;
            if endpoint.is_some_and(|e| *e != t.endpoint) {
                continue;
            }
            out.push(t);
        }
        Ok(out)
    }

    /// Accepted result ids in the persisted dedup window, oldest first.
    pub fn seen(&self) -> Result<Vec<TaskId>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for entry in self.seen.iter(&rtxn)? {
            let (_, v) = entry?;
            let id = std::str::from_utf8(v).ok().and_then(|s| TaskId::new(s).ok());
            out.push(id.ok_or_else(|| StoreError::Damaged(String::from_utf8_lossy(v).into_owned()))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
