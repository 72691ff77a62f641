//! Consuming the `results` queue: every message goes through core's
//! [`ResultIntake`] (ownership, dedup); accepted results are handed over once,
//! duplicates are acked and dropped, the rest is dead-lettered with a reason.
//!
//! Order of effects, per group of messages: hand over each accepted result
//! (returned from [`Results::next`]); then, when the caller comes back and
//! nothing more is waiting (or a group is full), wait for the dead-letter
//! publishes' confirms, write the group's state changes and dedup window in
//! one store transaction, and ack the group with one `multiple` ack. A
//! service that crashes between handoff and that ack sees the results again
//! after restart (they were neither acked nor remembered); one that does not
//! crash sees each exactly once.
//!
//! Opened with [`Results::connect`] on a list of brokers, the consumer
//! survives the loss of its node: what it handed over is written to the
//! store at once (the acks are lost with the channel), it connects to
//! another node and consumes again, and the broker's redeliveries of what
//! was handed over are judged duplicates.

use std::collections::BTreeSet;
use std::time::Duration;

use amqprs::channel::{BasicAckArguments, Channel, ConsumerMessage};
use amqprs::connection::Connection;
use amqprs::{BasicProperties, FieldTable, FieldValue};
use bytes::Bytes;
use tasklane_core::message::REASON_HEADER;
use tasklane_core::service::{ResultIntake, Verdict};
use tasklane_core::{EndpointId, Malformed, RawMessage, ResultStatus, TaskId, TaskLimits};
use tokio::sync::mpsc;

use super::confirm::ConfirmChannel;
use super::consume::{lost_or_never, Channels};
use super::link::{Brokers, Link};
use super::store::{DeadLetter, StoreWrite, TaskState, TaskStore};
use super::submit::is_connection_failure;
use super::topology::{DEAD, RESULTS};
use super::ServiceError;
use crate::amqp::{self, ChannelEvent, CloseReason, ConnectionInfo};

/// Header with the human-readable detail of a dead-letter reason.
pub const REASON_DETAIL_HEADER: &str = "tasklane-reason-detail";

/// A result accepted by the service: from the endpoint that owns the task,
/// seen for the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedResult {
    /// The task it answers.
    pub task: TaskId,
    /// The endpoint that sent it (the task's owner).
    pub endpoint: EndpointId,
    /// Success or failure.
    pub status: ResultStatus,
    /// The opaque result payload.
    pub body: Bytes,
}

/// What the consumer has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResultCounters {
    /// Results accepted and handed over.
    pub accepted: u64,
    /// Results already accepted before: acked and dropped.
    pub duplicates: u64,
    /// Messages dead-lettered (spoofed, unknown task, malformed).
    pub dead_lettered: u64,
}

/// Tuning of the results consumer.
#[derive(Clone, Copy, Debug)]
pub struct ResultsOptions {
    /// Broker prefetch window.
    pub prefetch: u16,
    /// How many accepted ids the persisted dedup window remembers.
    pub dedup_window: usize,
    /// Most messages judged before their state is written and acked.
    pub group: usize,
    /// Limits a result must respect.
    pub limits: TaskLimits,
    /// How long to wait for the confirm of a dead-letter publish.
    pub confirm_timeout: Duration,
}

impl Default for ResultsOptions {
    fn default() -> Self {
        Self {
            prefetch: 1000,
            dedup_window: 100_000,
            group: 500,
            limits: TaskLimits { max_body_bytes: 16 << 20, max_headers: 64 },
            confirm_timeout: Duration::from_secs(30),
        }
    }
}

/// Judged but not yet written and acked.
#[derive(Default)]
struct Pending {
    writes: Vec<StoreWrite>,
    ack_upto: Option<u64>,
    /// Confirm sequence numbers of dead-letter publishes not confirmed yet.
    dead_unconfirmed: BTreeSet<u64>,
    judged: usize,
}

/// The service's consumer of the `results` queue.
pub struct Results {
    channel: Channel,
    close: CloseReason,
    /// What the broker says on the consuming channel (cancel, close).
    events: mpsc::UnboundedReceiver<((), ChannelEvent)>,
    deliveries: mpsc::UnboundedReceiver<ConsumerMessage>,
    dead: ConfirmChannel,
    store: TaskStore,
    intake: ResultIntake,
    options: ResultsOptions,
    pending: Pending,
    counters: ResultCounters,
    /// The connection and its failover, when opened on a broker list.
    link: Option<Link>,
}

impl Results {
    /// Starts consuming `results`, with the dedup window restored from
    /// `store`. A lost connection ends the consumer's work with an error;
    /// [`Results::connect`] fails over.
    pub async fn open(conn: &Connection, store: TaskStore, options: ResultsOptions) -> Result<Self, ServiceError> {
        let intake = intake(&store, &options)?;
        let channels = Channels::start(conn, options.prefetch, None).await?;
        Ok(Self::with(None, channels, store, intake, options))
    }

    /// Connects to the first of `brokers` that answers and consumes
    /// `results` there; moves to another node when that one fails.
    pub async fn connect(brokers: &Brokers, store: TaskStore, options: ResultsOptions) -> Result<Self, ServiceError> {
        let intake = intake(&store, &options)?;
        let mut link = Link::open(brokers).await?;
        match Channels::start(link.connection(), options.prefetch, Some(link.lost())).await {
            Ok(channels) => {
                link.healthy();
                Ok(Self::with(Some(link), channels, store, intake, options))
            }
            Err(e) => {
                link.close().await;
                Err(e)
            }
        }
    }

    fn with(
        link: Option<Link>,
        channels: Channels,
        store: TaskStore,
        intake: ResultIntake,
        options: ResultsOptions,
    ) -> Self {
        let Channels { channel, close, events, deliveries, dead } = channels;
        Self {
            channel,
            close,
            events,
            deliveries,
            dead,
            store,
            intake,
            options,
            pending: Pending::default(),
            counters: ResultCounters::default(),
            link,
        }
    }

    /// The connection in use, when opened with [`Results::connect`].
    pub fn connection(&self) -> Option<&ConnectionInfo> {
        self.link.as_ref().map(Link::info)
    }

    /// What has been done so far.
    pub fn counters(&self) -> ResultCounters {
        self.counters
    }

    /// How many times the consumer connected again after losing its node
    /// (opened with [`Results::connect`]).
    pub fn failovers(&self) -> u64 {
        self.link.as_ref().map_or(0, Link::failovers)
    }

    /// The next accepted result, waiting as long as it takes.
    pub async fn next(&mut self) -> Result<AcceptedResult, ServiceError> {
        loop {
            if let Some(r) = self.next_timeout(Duration::from_secs(3600)).await? {
                return Ok(r);
            }
        }
    }

    /// The next accepted result, or `None` if none arrived within `wait`.
    /// Results handed over before are acked (and remembered) before this
    /// waits for more.
    pub async fn next_timeout(&mut self, wait: Duration) -> Result<Option<AcceptedResult>, ServiceError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.next_until(deadline).await {
                Err(e) if self.link.is_some() && is_connection_failure(&e) => self.fail_over(e).await?,
                outcome => return outcome,
            }
        }
    }

    async fn next_until(&mut self, deadline: tokio::time::Instant) -> Result<Option<AcceptedResult>, ServiceError> {
        let mut lost = self.link.as_ref().map(Link::lost);
        loop {
            if self.pending.judged >= self.options.group {
                self.flush().await?;
            }
            let msg = match self.deliveries.try_recv() {
                Ok(msg) => msg,
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(ServiceError::ConsumerGone),
                Err(mpsc::error::TryRecvError::Empty) => {
                    self.flush().await?;
                    tokio::select! {
                        biased;
                        msg = self.deliveries.recv() => match msg {
                            Some(msg) => msg,
                            None => return Err(ServiceError::ConsumerGone),
                        },
                        Some((_, ev)) = self.events.recv() => match ev {
                            ChannelEvent::ConsumerCancelled { .. } | ChannelEvent::Closed { .. } => {
                                return Err(ServiceError::ConsumerGone)
                            }
                            _ => continue,
                        },
                        _ = lost_or_never(&mut lost) => return Err(ServiceError::ConnectionLost),
                        _ = tokio::time::sleep_until(deadline) => return Ok(None),
                    }
                }
            };
            if let Some(link) = &mut self.link {
                link.healthy();
            }
            if let Some(accepted) = self.judge(msg).await? {
                return Ok(Some(accepted));
            }
        }
    }

    async fn judge(&mut self, msg: ConsumerMessage) -> Result<Option<AcceptedResult>, ServiceError> {
        let Some(deliver) = msg.deliver else { return Ok(None) };
        let tag = deliver.delivery_tag();
        let routing_key = deliver.routing_key().clone();
        let props = msg.basic_properties.unwrap_or_default();
        let raw = amqp::raw_message(&props, msg.content.unwrap_or_default());

        let mut store_error = None;
        let store = &self.store;
        let verdict = self.intake.judge(&routing_key, &raw, |task| {
            store.owner(task).unwrap_or_else(|e| {
                store_error = Some(e);
                None
            })
        });
        if let Some(e) = store_error {
            // Not acked: the broker hands it over again after a restart.
            return Err(e.into());
        }
        self.pending.judged += 1;
        self.pending.ack_upto = Some(tag);
        match verdict {
            Verdict::Accept { result, forget } => {
                let task = result.result.task;
                self.pending
                    .writes
                    .push(StoreWrite::State(task.clone(), TaskState::ResultReceived(result.result.status)));
                self.pending.writes.push(StoreWrite::Seen { task: task.clone(), forget });
                self.counters.accepted += 1;
                Ok(Some(AcceptedResult {
                    task,
                    endpoint: result.sender,
                    status: result.result.status,
                    body: result.result.body,
                }))
            }
            Verdict::Duplicate(_) => {
                self.counters.duplicates += 1;
                Ok(None)
            }
            Verdict::DeadLetter(reason) => {
                if let Some(task) = self.result_of_owner(&routing_key, &raw, &reason)? {
                    self.pending.writes.push(StoreWrite::State(task, TaskState::DeadLettered));
                }
                // For the dashboard's list of recent dead letters.
                self.pending.writes.push(StoreWrite::Dead(DeadLetter {
                    at_ms: super::now_ms(),
                    queue: RESULTS.into(),
                    routing_key: routing_key.clone(),
                    message_id: props.message_id().cloned(),
                    reason: reason.label().into(),
                    detail: reason.to_string(),
                }));
                let props = with_reason(props, &reason);
                let seq = self.dead.publish(DEAD, &routing_key, props, raw.body.to_vec(), false).await?;
                self.pending.dead_unconfirmed.insert(seq);
                self.counters.dead_lettered += 1;
                tracing::warn!(routing_key, reason = %reason, "result dead-lettered");
                Ok(None)
            }
        }
    }

    /// The task whose own endpoint sent an invalid result: its state becomes
    /// dead-lettered. A spoofed or unknown one changes no task's state.
    fn result_of_owner(
        &self,
        routing_key: &str,
        raw: &RawMessage,
        reason: &Malformed,
    ) -> Result<Option<TaskId>, ServiceError> {
        if matches!(reason, Malformed::NotOwner { .. } | Malformed::UnknownTask(_) | Malformed::BadRoutingKey(_)) {
            return Ok(None);
        }
        let Some(task) =
            raw.message_id.as_ref().and_then(|id| std::str::from_utf8(id).ok()).and_then(|id| TaskId::new(id).ok())
        else {
            return Ok(None);
        };
        let sender = routing_key.strip_suffix(".results");
        match self.store.owner(&task)? {
            Some(owner) if Some(owner.as_str()) == sender => Ok(Some(task)),
            _ => Ok(None),
        }
    }

    /// Waits for dead-letter confirms, writes the judged group's state in one
    /// transaction, then acks the group.
    async fn flush(&mut self) -> Result<(), ServiceError> {
        while !self.pending.dead_unconfirmed.is_empty() {
            match self.dead.next_event(self.options.confirm_timeout).await? {
                ChannelEvent::PublishAck { tag, multiple: true } => {
                    self.pending.dead_unconfirmed = self.pending.dead_unconfirmed.split_off(&(tag + 1));
                }
                ChannelEvent::PublishAck { tag, multiple: false } => {
                    self.pending.dead_unconfirmed.remove(&tag);
                }
                // Not acked: the message is judged again after a restart.
                ChannelEvent::PublishNack { .. } => return Err(ServiceError::DeadLetterRefused),
                _ => {}
            }
        }
        self.write_pending().await?;
        if let Some(tag) = self.pending.ack_upto.take() {
            self.channel
                .basic_ack(BasicAckArguments::new(tag, true))
                .await
                .map_err(|e| amqp::Error::from_channel("basic.ack", e, &self.close))?;
        }
        self.pending.judged = 0;
        Ok(())
    }

    /// Writes the judged group's state changes in one transaction.
    async fn write_pending(&mut self) -> Result<(), ServiceError> {
        let writes = std::mem::take(&mut self.pending.writes);
        if !writes.is_empty() {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.write(&writes)).await.map_err(|_| ServiceError::Cancelled)??;
        }
        Ok(())
    }

    /// The connection failed with `cause`: remember what was handed over,
    /// connect to another node and consume there.
    async fn fail_over(&mut self, cause: ServiceError) -> Result<(), ServiceError> {
        // Handed over, and its ack lost with the channel: the broker delivers
        // it again, and the window (in memory already) must hold it then and
        // after a restart.
        self.write_pending().await?;
        self.pending = Pending::default();
        let link = self.link.as_mut().expect("fail_over needs a broker list");
        tracing::warn!(from = %link.info().peer, "results consumer lost its broker connection: {cause}");
        let channels = loop {
            link.reconnect().await?;
            match Channels::start(link.connection(), self.options.prefetch, Some(link.lost())).await {
                Ok(channels) => {
                    link.healthy();
                    break channels;
                }
                Err(e) if is_connection_failure(&e) => continue,
                Err(e) => return Err(e),
            }
        };
        tracing::info!(to = %link.info().peer, "results consumer connected again");
        let Channels { channel, close, events, deliveries, dead } = channels;
        (self.channel, self.close, self.events, self.deliveries, self.dead) =
            (channel, close, events, deliveries, dead);
        Ok(())
    }

    /// Acks and remembers everything handed over, then closes the channels
    /// (and the connection, if the consumer made it).
    pub async fn close(mut self) -> Result<ResultCounters, ServiceError> {
        let flushed = self.flush().await;
        if self.channel.is_open() {
            let _ = self.channel.close().await;
        }
        self.dead.close().await;
        if let Some(link) = self.link.take() {
            link.close().await;
        }
        flushed.map(|_| self.counters)
    }
}

/// The intake, its dedup window restored from `store`.
fn intake(store: &TaskStore, options: &ResultsOptions) -> Result<ResultIntake, ServiceError> {
    Ok(ResultIntake::new(options.dedup_window, store.seen()?, options.limits))
}

/// The message's properties with the dead-letter reason added to its headers.
fn with_reason(mut props: BasicProperties, reason: &Malformed) -> BasicProperties {
    let mut headers = props.headers().cloned().unwrap_or_else(FieldTable::new);
    headers.insert(REASON_HEADER.try_into().expect("short name"), FieldValue::from(reason.label()));
    headers.insert(REASON_DETAIL_HEADER.try_into().expect("short name"), FieldValue::from(reason.to_string()));
    props.with_headers(headers);
    props
}
