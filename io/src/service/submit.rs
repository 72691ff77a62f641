//! Submitting tasks: persistent, mandatory, under publisher confirms, with
//! many messages in flight and their confirms awaited in windows; on a
//! broker list, moving to another node when the connection is lost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use amqprs::connection::Connection;
use tasklane_core::{encode_task, EndpointId, Task, TaskId};

use super::confirm::ConfirmChannel;
use super::link::{Brokers, Link};
use super::store::{StoreWrite, TaskStore};
use super::ServiceError;
use crate::amqp::{self, ChannelEvent, ConnectionInfo};

/// Publishes tasks to endpoints' queues and records them in the task store.
///
/// Each task is recorded as submitted *before* it is published (one store
/// transaction per window of tasks), so its result can never reach the
/// service before its owner is known. A task the broker returns as
/// unroutable (its endpoint was never provisioned) is removed from the
/// store again and reported as [`ServiceError::Unroutable`].
///
/// Opened with [`Submitter::connect`] on a list of brokers, it survives the
/// loss of its node: it connects to another one and publishes again what
/// the broker had not confirmed, under new confirms (a task may then reach
/// the queue twice; endpoints and the results consumer de-duplicate by
/// task id). The store records each task once, before its first publish.
pub struct Submitter {
    link: Option<Link>,
    channel: ConfirmChannel,
    store: TaskStore,
    window: usize,
    confirm_timeout: Duration,
    counters: SubmitCounters,
}

/// What a [`Submitter`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitCounters {
    /// Publishes, the second and later ones of a task included.
    pub published: u64,
    /// Tasks the broker confirmed.
    pub confirmed: u64,
    /// Tasks published again: after a lost connection, or after the broker
    /// nacked them (on a broker list).
    pub republished: u64,
    /// Negative confirms received.
    pub nacked: u64,
    /// Connections made again after a loss.
    pub failovers: u64,
}

/// Tasks of one `submit_all` call that are recorded and not yet settled.
#[derive(Default)]
struct InFlight {
    /// Recorded in the store, not published (on this connection) yet.
    unpublished: VecDeque<Task>,
    /// Published, not confirmed yet, by confirm sequence number.
    tasks: BTreeMap<u64, Task>,
    /// Ids the broker returned (unroutable), with the reason; the confirm of
    /// a returned message follows its return.
    returned: HashMap<TaskId, (u16, String)>,
    confirmed: usize,
    withdrawn: Vec<TaskId>,
    failure: Option<ServiceError>,
    /// Whether a nacked task is published again (on a broker list: a
    /// cluster nacks while a queue elects a new leader) rather than failing.
    retry_nacks: bool,
    /// Nacks per task so far, for those published again.
    nacks: HashMap<TaskId, u32>,
    /// Nacked, to be published again after a pause.
    again: Vec<Task>,
    /// When the pause of `again` ends.
    again_at: Option<tokio::time::Instant>,
}

/// Most nacks one task may get before the submission fails: with the pause
/// doubling from 100 ms to 3.2 s, about 20 s of a queue without a leader.
const MAX_NACKS: u32 = 10;

impl InFlight {
    fn settle(&mut self, endpoint: &EndpointId, tag: u64, multiple: bool, acked: bool) -> usize {
        let settled: Vec<(u64, Task)> = if multiple {
            let rest = self.tasks.split_off(&(tag + 1));
            std::mem::replace(&mut self.tasks, rest).into_iter().collect()
        } else {
            self.tasks.remove_entry(&tag).into_iter().collect()
        };
        let before = self.confirmed;
        for (_, task) in settled {
            if let Some((code, text)) = self.returned.remove(&task.id) {
                self.failure.get_or_insert(ServiceError::Unroutable { endpoint: endpoint.clone(), code, text });
                self.withdrawn.push(task.id);
            } else if !acked {
                let nacks = self.nacks.entry(task.id.clone()).or_default();
                *nacks += 1;
                if self.retry_nacks && *nacks < MAX_NACKS {
                    self.again.push(task);
                } else {
                    self.failure.get_or_insert(ServiceError::Nacked(task.id.clone()));
                    self.withdrawn.push(task.id);
                }
            } else {
                self.confirmed += 1;
            }
        }
        self.confirmed - before
    }

    /// The connection is gone: what it had not confirmed goes out again
    /// first, in the order it was published. Returns how many.
    fn requeue_unconfirmed(&mut self) -> usize {
        let again = std::mem::take(&mut self.tasks);
        let n = again.len() + self.again.len();
        for task in again.into_values().rev() {
            self.unpublished.push_front(task);
        }
        self.unpublished.extend(self.again.drain(..));
        self.again_at = None;
        self.returned.clear();
        n
    }
}

impl Submitter {
    /// Most tasks in flight (published, not confirmed) by default.
    pub const DEFAULT_WINDOW: usize = 1024;

    /// Opens a confirm-mode channel on `conn`. A lost connection ends the
    /// submitter's work with an error; [`Submitter::connect`] fails over.
    pub async fn open(conn: &Connection, store: TaskStore) -> Result<Self, ServiceError> {
        let channel = ConfirmChannel::open(conn).await?;
        Ok(Self::with(None, channel, store))
    }

    /// Connects to the first of `brokers` that answers and opens a
    /// confirm-mode channel there; moves to another node when that one
    /// fails.
    pub async fn connect(brokers: &Brokers, store: TaskStore) -> Result<Self, ServiceError> {
        let mut link = Link::open(brokers).await?;
        let opened = ConfirmChannel::open_watched(link.connection(), Some(link.lost())).await;
        match opened {
            Ok(channel) => {
                link.healthy();
                Ok(Self::with(Some(link), channel, store))
            }
            Err(e) => {
                link.close().await;
                Err(e)
            }
        }
    }

    fn with(link: Option<Link>, channel: ConfirmChannel, store: TaskStore) -> Self {
        let counters = SubmitCounters::default();
        Self { link, channel, store, window: Self::DEFAULT_WINDOW, confirm_timeout: Duration::from_secs(30), counters }
    }

    /// Sets the most tasks in flight (at least 1).
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Sets how long to wait for the broker's next confirm before giving up
    /// (or, on a broker list, before trying another node).
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// What has been done so far.
    pub fn counters(&self) -> SubmitCounters {
        self.counters
    }

    /// The connection in use, when opened with [`Submitter::connect`].
    pub fn connection(&self) -> Option<&ConnectionInfo> {
        self.link.as_ref().map(Link::info)
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
    /// returned. On a broker list ([`Submitter::connect`]) a nacked task is
    /// published again after a pause, up to ten times, before it fails.
    /// Tasks are pulled from `tasks` lazily, just before each is
    /// recorded and published.
    pub async fn submit_all<I>(
        &mut self,
        endpoint: &EndpointId,
        tasks: I,
        mut on_confirmed: impl FnMut(usize),
    ) -> Result<usize, ServiceError>
    where
        I: IntoIterator<Item = Task>,
    {
        let mut tasks = tasks.into_iter().fuse();
        let mut flight = InFlight { retry_nacks: self.link.is_some(), ..InFlight::default() };
        loop {
            match self.drive(endpoint, &mut tasks, &mut flight, &mut on_confirmed).await {
                Ok(()) => break,
                Err(e) if self.link.is_some() && is_connection_failure(&e) => self.fail_over(&mut flight, e).await?,
                Err(e) => return Err(e),
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

    /// Publishes and settles until every task is settled, or a step fails.
    async fn drive(
        &mut self,
        endpoint: &EndpointId,
        tasks: &mut impl Iterator<Item = Task>,
        flight: &mut InFlight,
        on_confirmed: &mut impl FnMut(usize),
    ) -> Result<(), ServiceError> {
        let queue = endpoint.task_queue();
        let refill_at = self.window / 2;
        loop {
            let held = flight.tasks.len() + flight.again.len();
            if flight.failure.is_none() && flight.unpublished.is_empty() && held <= refill_at {
                let room = self.window - held;
                let chunk: Vec<Task> = tasks.by_ref().take(room).collect();
                if !chunk.is_empty() {
                    let writes = chunk
                        .iter()
                        .map(|t| StoreWrite::Submitted { task: t.id.clone(), endpoint: endpoint.clone() })
                        .collect();
                    self.write_store(writes).await?;
                    flight.unpublished.extend(chunk);
                }
            }
            // What was recorded goes out even after a failure: after a
            // failover these are tasks the old connection had published.
            while let Some(task) = flight.unpublished.pop_front() {
                let raw = encode_task(&task);
                let props = amqp::publish_properties(&raw)?;
                match self.channel.publish("", &queue, props, raw.body.to_vec(), true).await {
                    Ok(seq) => {
                        flight.tasks.insert(seq, task);
                        self.counters.published += 1;
                    }
                    Err(e) => {
                        flight.unpublished.push_front(task);
                        return Err(e);
                    }
                }
            }
            // Nacked tasks whose pause is over go out again.
            if flight.again_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                self.renew_channel(flight).await?;
                continue;
            }
            // Nothing in flight: the refill above found `tasks` empty (it ran,
            // as nothing was in flight or unpublished), or a failure stops us.
            if flight.tasks.is_empty() {
                match flight.again_at {
                    None => return Ok(()),
                    Some(at) => {
                        tokio::time::sleep_until(at).await;
                        continue;
                    }
                }
            }
            // Waiting for the broker ends early when nacked tasks are due
            // (the wait is a channel receive: dropping it loses nothing).
            let event = match flight.again_at {
                None => self.channel.next_event(self.confirm_timeout).await?,
                Some(at) => match tokio::time::timeout_at(at, self.channel.next_event(self.confirm_timeout)).await {
                    Ok(event) => event?,
                    Err(_) => continue,
                },
            };
            match event {
                ChannelEvent::PublishAck { tag, multiple } => {
                    let n = flight.settle(endpoint, tag, multiple, true);
                    if let Some(link) = &mut self.link {
                        link.healthy();
                    }
                    if n > 0 {
                        self.counters.confirmed += n as u64;
                        on_confirmed(n);
                    }
                }
                ChannelEvent::PublishNack { tag, multiple } => {
                    self.counters.nacked += 1;
                    flight.settle(endpoint, tag, multiple, false);
                    if !flight.again.is_empty() && flight.again_at.is_none() {
                        let most = flight.again.iter().map(|t| flight.nacks[&t.id]).max().unwrap_or(1);
                        let pause = Duration::from_millis(100) * (1 << (most - 1).min(5));
                        flight.again_at = Some(tokio::time::Instant::now() + pause);
                    }
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
    }

    /// Publishes the nacked tasks again, on a new channel: on RabbitMQ 3.10
    /// a channel that started publishing to a quorum queue while its leader
    /// was lost can go on nacking for many seconds after a new leader is
    /// elected; a new channel finds the new leader at once. What the old
    /// channel had not confirmed goes out again on the new one.
    async fn renew_channel(&mut self, flight: &mut InFlight) -> Result<(), ServiceError> {
        let link = self.link.as_ref().expect("nacks are retried on a broker list only");
        let channel = ConfirmChannel::open_watched(link.connection(), Some(link.lost())).await?;
        let old = std::mem::replace(&mut self.channel, channel);
        tokio::spawn(old.close());
        let again = flight.requeue_unconfirmed();
        self.counters.republished += again as u64;
        tracing::warn!(tasks = again, "publishing tasks the broker nacked again, on a new channel");
        Ok(())
    }

    /// The connection failed with `cause`: connect to another node, open a
    /// new confirm channel, and queue what was not confirmed to go out again.
    async fn fail_over(&mut self, flight: &mut InFlight, cause: ServiceError) -> Result<(), ServiceError> {
        let link = self.link.as_mut().expect("fail_over needs a broker list");
        tracing::warn!(from = %link.info().peer, "submitter lost its broker connection: {cause}");
        loop {
            link.reconnect().await?;
            match ConfirmChannel::open_watched(link.connection(), Some(link.lost())).await {
                Ok(channel) => {
                    self.channel = channel;
                    link.healthy();
                    break;
                }
                Err(e) if is_connection_failure(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        self.counters.failovers = link.failovers();
        let again = flight.requeue_unconfirmed();
        self.counters.republished += again as u64;
        tracing::info!(to = %link.info().peer, republish = again, "submitter connected again");
        Ok(())
    }

    async fn write_store(&self, writes: Vec<StoreWrite>) -> Result<(), ServiceError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write(&writes)).await.map_err(|_| ServiceError::Cancelled)??;
        Ok(())
    }

    /// Closes the channel, and the connection if the submitter made it.
    pub async fn close(self) {
        self.channel.close().await;
        if let Some(link) = self.link {
            link.close().await;
        }
    }
}

/// Whether `e` means the connection (or its channel) is gone or stuck, so
/// that another node may do better: not a refusal of the broker's.
pub(crate) fn is_connection_failure(e: &ServiceError) -> bool {
    match e {
        ServiceError::ConnectionLost | ServiceError::ConsumerGone | ServiceError::ConfirmTimeout(_) => true,
        ServiceError::ChannelClosed { code, .. } => *code == 320,
        ServiceError::Amqp(amqp::Error::Amqp { .. }) => true,
        ServiceError::Amqp(amqp::Error::ChannelClosed { code, .. }) => *code == 320,
        _ => false,
    }
}
