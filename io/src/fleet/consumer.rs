//! [`Fleet`]: the service's consumer of `tasklane.status`. Every message
//! is judged by [`StatusReport::decode`]; reports are recorded in the
//! store with the time they were seen; anything else (garbage, a report
//! whose routing key names another endpoint) is dead-lettered to
//! `tasklane.dead` with a `tasklane-reason` header, like a spoofed result.
//!
//! Order of effects per group, as for results: dead-letter publishes are
//! confirmed, then the group's reports are written in one transaction,
//! then the group is acked with one `multiple` ack. A crash in between
//! only means the reports come again.

use std::collections::BTreeSet;
use std::time::Duration;

use amqprs::channel::{BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage};
use amqprs::connection::Connection;
use amqprs::{BasicProperties, FieldTable, FieldValue};
use tasklane_core::message::REASON_HEADER;
use tokio::sync::mpsc;

use super::report::{ReportError, StatusReport};
use crate::amqp::{self, ChannelEvent, CloseReason};
use crate::service::confirm::ConfirmChannel;
use crate::service::{
    now_ms, DeadLetter, FleetRecord, ServiceError, StoreWrite, TaskStore, DEAD, REASON_DETAIL_HEADER, STATUS_QUEUE,
};

/// Most messages judged before their group is written and acked.
const GROUP: usize = 500;
/// How long to wait for the confirm of a dead-letter publish.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the consumer has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounters {
    /// Reports recorded.
    pub reports: u64,
    /// Messages dead-lettered (not a report, or from another endpoint).
    pub dead_lettered: u64,
}

/// The service's consumer of `tasklane.status`.
pub struct Fleet {
    channel: Channel,
    close: CloseReason,
    events: mpsc::UnboundedReceiver<((), ChannelEvent)>,
    deliveries: mpsc::UnboundedReceiver<ConsumerMessage>,
    dead: ConfirmChannel,
    store: TaskStore,
    counters: FleetCounters,
}

/// Judged, not yet written and acked.
#[derive(Default)]
struct Group {
    reports: Vec<FleetRecord>,
    dead: Vec<StoreWrite>,
    dead_unconfirmed: BTreeSet<u64>,
    ack_upto: Option<u64>,
    judged: usize,
}

impl Fleet {
    /// Starts consuming `tasklane.status` (declared by
    /// [`crate::service::provision`]).
    pub async fn open(conn: &Connection, store: TaskStore) -> Result<Self, ServiceError> {
        let (tx, events) = mpsc::unbounded_channel();
        let (channel, close) = amqp::open_channel(conn, (), tx).await?;
        channel
            .basic_qos(BasicQosArguments::new(0, 1000, false))
            .await
            .map_err(|e| amqp::Error::from_channel("basic.qos", e, &close))?;
        let (_, deliveries) = channel
            .basic_consume_rx(BasicConsumeArguments::new(STATUS_QUEUE, "").manual_ack(true).finish())
            .await
            .map_err(|e| amqp::Error::from_channel("basic.consume", e, &close))?;
        // Opened last, as in `Results::open`: a refused consume leaves no
        // open channel behind.
        let dead = ConfirmChannel::open(conn).await?;
        Ok(Self { channel, close, events, deliveries, dead, store, counters: FleetCounters::default() })
    }

    /// What has been done so far.
    pub fn counters(&self) -> FleetCounters {
        self.counters
    }

    /// Takes reports until none arrives for `idle`, records them and acks
    /// them; returns how many messages were judged. What already waits in
    /// the queue arrives at once, so a short `idle` drains it.
    pub async fn drain(&mut self, idle: Duration) -> Result<usize, ServiceError> {
        let mut group = Group::default();
        let mut total = 0;
        loop {
            if group.judged >= GROUP {
                self.flush(&mut group).await?;
            }
            let msg = tokio::select! {
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
                _ = tokio::time::sleep(idle) => break,
            };
            self.judge(msg, &mut group).await?;
            total += 1;
        }
        self.flush(&mut group).await?;
        Ok(total)
    }

    async fn judge(&mut self, msg: ConsumerMessage, group: &mut Group) -> Result<(), ServiceError> {
        let Some(deliver) = msg.deliver else { return Ok(()) };
        let routing_key = deliver.routing_key().clone();
        let props = msg.basic_properties.unwrap_or_default();
        let raw = amqp::raw_message(&props, msg.content.unwrap_or_default());
        group.judged += 1;
        group.ack_upto = Some(deliver.delivery_tag());
        match StatusReport::decode(&routing_key, &raw) {
            Ok(report) => {
                group.reports.push(FleetRecord { report, seen_ms: now_ms() });
                self.counters.reports += 1;
            }
            Err(reason) => {
                tracing::warn!(routing_key, reason = %reason, "status report dead-lettered");
                let message_id = props.message_id().cloned();
                group.dead.push(StoreWrite::Dead(DeadLetter {
                    at_ms: now_ms(),
                    queue: STATUS_QUEUE.into(),
                    routing_key: routing_key.clone(),
                    message_id,
                    reason: reason.label().into(),
                    detail: reason.to_string(),
                }));
                let props = with_reason(props, &reason);
                let seq = self.dead.publish(DEAD, &routing_key, props, raw.body.to_vec(), false).await?;
                group.dead_unconfirmed.insert(seq);
                self.counters.dead_lettered += 1;
            }
        }
        Ok(())
    }

    async fn flush(&mut self, group: &mut Group) -> Result<(), ServiceError> {
        while !group.dead_unconfirmed.is_empty() {
            match self.dead.next_event(CONFIRM_TIMEOUT).await? {
                ChannelEvent::PublishAck { tag, multiple: true } => {
                    group.dead_unconfirmed = group.dead_unconfirmed.split_off(&(tag + 1));
                }
                ChannelEvent::PublishAck { tag, multiple: false } => {
                    group.dead_unconfirmed.remove(&tag);
                }
                // Not acked: judged again after a restart.
                ChannelEvent::PublishNack { .. } => return Err(ServiceError::DeadLetterRefused),
                _ => {}
            }
        }
        let (reports, dead) = (std::mem::take(&mut group.reports), std::mem::take(&mut group.dead));
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.record_reports(&reports)?;
            store.write(&dead)
        })
        .await
        .map_err(|_| ServiceError::Cancelled)??;
        if let Some(tag) = group.ack_upto.take() {
            self.channel
                .basic_ack(BasicAckArguments::new(tag, true))
                .await
                .map_err(|e| amqp::Error::from_channel("basic.ack", e, &self.close))?;
        }
        group.judged = 0;
        Ok(())
    }

    /// Closes the channels (what was drained is already acked).
    pub async fn close(self) {
        if self.channel.is_open() {
            let _ = self.channel.close().await;
        }
        self.dead.close().await;
    }
}

/// The message's properties with the dead-letter reason in its headers.
fn with_reason(mut props: BasicProperties, reason: &ReportError) -> BasicProperties {
    let mut headers = props.headers().cloned().unwrap_or_else(FieldTable::new);
    headers.insert(REASON_HEADER.try_into().expect("short name"), FieldValue::from(reason.label()));
    headers.insert(REASON_DETAIL_HEADER.try_into().expect("short name"), FieldValue::from(reason.to_string()));
    props.with_headers(headers);
    props
}
