//! Submitting tasks: persistent, mandatory, under publisher confirms, with
//! many messages in flight and their confirms awaited in windows.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use amqprs::connection::Connection;
use tasklane_core::{encode_task, EndpointId, Task, TaskId};

use super::confirm::ConfirmChannel;
use super::store::{StoreWrite, TaskStore};
use super::ServiceError;
use crate::amqp::{self, ChannelEvent};

/// Publishes tasks to endpoints' queues and records them in the task store.
///
/// Each task is recorded as submitted *before* it is published (one store
/// transaction per window of tasks), so its result can never reach the
/// service before its owner is known. A task the broker returns as
/// unroutable (its endpoint was never provisioned) is removed from the
/// store again and reported as [`ServiceError::Unroutable`].
pub struct Submitter {
    channel: ConfirmChannel,
    store: TaskStore,
    window: usize,
    confirm_timeout: Duration,
}

/// Tasks published but not confirmed yet, by confirm sequence number.
#[derive(Default)]
struct InFlight {
    tasks: BTreeMap<u64, TaskId>,
    /// Ids the broker returned (unroutable), with the reason; the confirm of
    /// a returned message follows its return.
    returned: HashMap<TaskId, (u16, String)>,
    confirmed: usize,
    withdrawn: Vec<TaskId>,
    failure: Option<ServiceError>,
}

impl InFlight {
    fn settle(&mut self, endpoint: &EndpointId, tag: u64, multiple: bool, acked: bool) -> usize {
        let settled: Vec<(u64, TaskId)> = if multiple {
            let rest = self.tasks.split_off(&(tag + 1));
            std::mem::replace(&mut self.tasks, rest).into_iter().collect()
        } else {
            self.tasks.remove_entry(&tag).into_iter().collect()
        };
        let before = self.confirmed;
        for (_, task) in settled {
            if let Some((code, text)) = self.returned.remove(&task) {
                self.failure.get_or_insert(ServiceError::Unroutable { endpoint: endpoint.clone(), code, text });
                self.withdrawn.push(task);
            } else if !acked {
                self.failure.get_or_insert(ServiceError::Nacked(task.clone()));
                self.withdrawn.push(task);
            } else {
                self.confirmed += 1;
            }
        }
        self.confirmed - before
    }
}

impl Submitter {
    /// Most tasks in flight (published, not confirmed) by default.
    pub const DEFAULT_WINDOW: usize = 1024;

    /// Opens a confirm-mode channel on `conn`.
    pub async fn open(conn: &Connection, store: TaskStore) -> Result<Self, ServiceError> {
        let channel = ConfirmChannel::open(conn).await?;
        Ok(Self { channel, store, window: Self::DEFAULT_WINDOW, confirm_timeout: Duration::from_secs(30) })
    }

    /// Sets the most tasks in flight (at least 1).
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Sets how long to wait for the broker's next confirm before giving up.
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Submits one task and waits for the broker's confirm.
    pub async fn submit(&mut self, endpoint: &EndpointId, task: Task) -> Result<(), ServiceError> {
        self.submit_all(endpoint, [task], |_| {}).await.map(|_| ())
    }

    /// Submits `tasks` in order, keeping up to the window in flight, and
    /// returns how many the broker confirmed. `on_confirmed(n)` is called as
    /// confirms arrive, with the number newly confirmed.
    ///
    /// On the first failure (unroutable, nacked) no further task is
    /// published; those in flight are still settled, and the error is
    /// returned. Tasks are pulled from `tasks` lazily, just before each is
    /// published.
    pub async fn submit_all<I>(
        &mut self,
        endpoint: &EndpointId,
        tasks: I,
        mut on_confirmed: impl FnMut(usize),
    ) -> Result<usize, ServiceError>
    where
        I: IntoIterator<Item = Task>,
    {
        let queue = endpoint.task_queue();
        let mut tasks = tasks.into_iter();
        let mut flight = InFlight::default();
        let refill_at = self.window / 2;
        loop {
            if flight.failure.is_none() && flight.tasks.len() <= refill_at {
                let room = self.window - flight.tasks.len();
                let chunk: Vec<Task> = tasks.by_ref().take(room).collect();
                if !chunk.is_empty() {
                    let writes = chunk
                        .iter()
                        .map(|t| StoreWrite::Submitted { task: t.id.clone(), endpoint: endpoint.clone() })
                        .collect();
                    self.write_store(writes).await?;
                    for task in chunk {
                        let raw = encode_task(&task);
                        let props = amqp::publish_properties(&raw)?;
                        let seq = self.channel.publish("", &queue, props, raw.body.to_vec(), true).await?;
                        flight.tasks.insert(seq, task.id);
                    }
                    continue;
                }
            }
            if flight.tasks.is_empty() {
                break;
            }
            match self.channel.next_event(self.confirm_timeout).await? {
                ChannelEvent::PublishAck { tag, multiple } => {
                    let n = flight.settle(endpoint, tag, multiple, true);
                    if n > 0 {
                        on_confirmed(n);
                    }
                }
                ChannelEvent::PublishNack { tag, multiple } => {
                    flight.settle(endpoint, tag, multiple, false);
                }
                ChannelEvent::Returned { code, text, message, .. } => {
                    let id = message.message_id.and_then(|id| String::from_utf8(id).ok());
                    if let Some(id) = id.and_then(|id| TaskId::new(id).ok()) {
                        flight.returned.insert(id, (code, text));
                    }
                }
                _ => {}
            }
        }
        if !flight.withdrawn.is_empty() {
            let writes = flight.withdrawn.drain(..).map(StoreWrite::Withdrawn).collect();
            self.write_store(writes).await?;
        }
        match flight.failure {
            Some(e) => Err(e),
            None => Ok(flight.confirmed),
        }
    }

    async fn write_store(&self, writes: Vec<StoreWrite>) -> Result<(), ServiceError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write(&writes)).await.map_err(|_| ServiceError::Cancelled)??;
        Ok(())
    }

    /// Closes the channel.
    pub async fn close(self) {
        self.channel.close().await;
    }
}
