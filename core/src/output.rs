//! What to do: everything core asks a shell to carry out.

use std::time::Instant;

use crate::ids::{ChannelId, ConnId, DeliveryTag, OutboxSeq, PublishTag, TaskId};
use crate::message::{Malformed, RawMessage};
use crate::spool::{SpoolWrite, TaskMeta};

/// A command or report from [`crate::Lane::poll`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Carry out an AMQP operation.
    Amqp(Amqp),
    /// Append a write to the spool's queue; commit in groups; report
    /// `Input::SpoolCommitted`.
    Spool(SpoolWrite),
    /// Give a task to the application. Each task is handed off once per
    /// spool lifetime (again after a restart if it was not completed).
    Handoff(Handoff),
    /// Tell the application or the operator what happened.
    Event(Event),
}

/// A task handed to the application: what core knows of it. The shell
/// reads the body from the spool (by `task.arrival`) when the application
/// takes the task, so handed-off tasks waiting for the application cost no
/// body memory (SPEC §4 "Memory").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// The task.
    pub task: TaskMeta,
    /// True when the task comes from the spool at start (a previous run
    /// received it but did not complete it).
    pub recovered: bool,
}

/// AMQP operations. Each one that has a reply is answered by the matching
/// [`crate::Input`]; the shell never retries on its own.
#[derive(Clone, Debug, PartialEq)]
pub enum Amqp {
    /// Open a connection to broker address number `address` of the shell's
    /// list (URL, credentials, vhost and heartbeat are the shell's
    /// configuration). Answer: `Connected` or `ConnectFailed` with `conn`.
    /// Core gives up an attempt that takes longer than its connect timeout
    /// with `Disconnect`.
    Connect {
        /// The attempt's id.
        conn: ConnId,
        /// Which broker address, `0..Config::addresses`.
        address: usize,
    },
    /// Open a channel on the current connection. Answer: `ChannelOpened`.
    OpenChannel {
        /// The new channel's id.
        channel: ChannelId,
    },
    /// `basic.qos` with this prefetch count. Answer: `QosOk`.
    Qos {
        /// Which channel.
        channel: ChannelId,
        /// Prefetch count.
        prefetch: u16,
    },
    /// `basic.consume` on `queue` (manual acks). Answer: `ConsumeOk`, or
    /// `ChannelClosed` with the broker's code when it is refused.
    Consume {
        /// Which channel.
        channel: ChannelId,
        /// The queue, `E.tasks`.
        queue: String,
        /// Whether to ask for an exclusive consumer.
        exclusive: bool,
    },
    /// How many consumers `queue` has: a passive `queue.declare` on
    /// `channel`. Answer: `ConsumerCount`. AMQP does not say which single
    /// active consumer is the active one; the first registered one is, so
    /// core compares the count before its consume with the count after
    /// (see the lane's consumer module).
    QueryConsumers {
        /// Which channel (the consuming one, before and after its consume).
        channel: ChannelId,
        /// The queue, `E.tasks`.
        queue: String,
    },
    /// `confirm.select`. Answer: `ConfirmSelectOk`.
    ConfirmSelect {
        /// Which channel.
        channel: ChannelId,
    },
    /// `basic.ack` on the tag's channel. Never issued for a channel that is
    /// gone.
    Ack {
        /// The tag, with its channel.
        tag: DeliveryTag,
        /// Whether every delivery up to the tag is acked.
        multiple: bool,
    },
    /// `basic.reject` with `requeue=false`: the queue dead-letters it.
    Reject {
        /// The tag, with its channel.
        tag: DeliveryTag,
    },
    /// `basic.publish` of the outbox result at `result`, persistent,
    /// mandatory, under publisher confirms. The shell sends publishes on
    /// `tag.channel` in the order issued; `tag.seq` is the confirm tag the
    /// broker will use. Core keeps no result bodies (SPEC §4 "Memory"):
    /// `message.body` is empty and the shell reads the body from the
    /// spool's outbox at `result` (committed before any publish of it) as
    /// it publishes.
    Publish {
        /// Channel and confirm tag.
        tag: PublishTag,
        /// Exchange, `results`.
        exchange: &'static str,
        /// Routing key, `E.results`.
        routing_key: String,
        /// The result's outbox position, where the spool keeps its body.
        result: OutboxSeq,
        /// The message's `message_id` and headers; its body is the
        /// spool's (empty here).
        message: RawMessage,
    },
    /// `basic.publish` of a status report (SPEC §4, "Observability"):
    /// transient, not mandatory, on the publishing channel, whose confirm
    /// numbering it takes part in (`tag.seq`). The shell fills in what core
    /// does not know (the broker node, its version, the wall-clock time),
    /// encodes it in the report wire format and publishes it. Its confirm,
    /// nack or return changes nothing: a report is never retried, never
    /// spooled and never in the outbox.
    PublishReport {
        /// Channel and confirm tag.
        tag: PublishTag,
        /// Exchange, `results`.
        exchange: &'static str,
        /// Routing key, `E.status`.
        routing_key: String,
        /// What the lane knows (boxed: it is larger than other commands).
        report: Box<Report>,
    },
    /// Scan the head of `queue` (up to `max` messages) with a client of its
    /// own on broker address `address`, while the lane has no connection:
    /// move every message the lane's AMQP client cannot decode to
    /// `tasklane.dead` with the reason, give back the others. Answer:
    /// `QuarantineDone` with `scan`. See the poison policy in core's lane.
    Quarantine {
        /// The scan's id.
        scan: u64,
        /// Which broker address.
        address: usize,
        /// The queue, `E.tasks`.
        queue: String,
        /// Most messages to look at (the prefetch window).
        max: u32,
    },
    /// Close the connection (if any) politely (`connection.close`), giving
    /// up on the close handshake after a short bound, and forget it; no
    /// answer is expected beyond a possible late `ConnectionLost`, which is
    /// ignored. Also ends an attempt still connecting.
    Disconnect {
        /// The connection.
        conn: ConnId,
        /// Why, for the broker's log.
        reason: String,
    },
}

/// What a status report says, as far as the lane knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Whose report.
    pub endpoint: crate::EndpointId,
    /// Increases by one with every report of this lane, from 1.
    pub seq: u64,
    /// The status at the time of the report.
    pub status: Status,
    /// Counters so far.
    pub counters: crate::Counters,
    /// Tasks in the inbox.
    pub inbox: usize,
    /// Results in the outbox.
    pub outbox: usize,
    /// Why intake waits for the spool, if it does.
    pub spool_full: Option<String>,
    /// How often the lane reports ([`crate::Config::report_interval`]).
    pub interval: std::time::Duration,
}

/// The lane's connection status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// A connection attempt is under way.
    Connecting,
    /// Connected and receiving tasks.
    Consuming,
    /// Connected, but another endpoint with the same id holds the queue:
    /// waiting to take over.
    Standby,
    /// No connection; retrying in the background.
    Disconnected {
        /// Why the last connection or attempt ended.
        reason: String,
        /// Since when the lane has had no consuming session.
        since: Instant,
    },
    /// Connected, but the broker blocked publishing.
    Blocked {
        /// The broker's reason.
        reason: String,
    },
    /// Shut down on request.
    Closed,
}

/// Reports for the application and the operator. Faults of the broker or
/// the network show up here, never as errors or panics.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The status changed.
    Status(Status),
    /// A delivery was not a task and was rejected (dead-lettered).
    Rejected {
        /// The message id, if it had a usable one.
        message_id: Option<String>,
        /// Why.
        reason: Malformed,
    },
    /// A delivery repeated a task already in the inbox or recently
    /// completed; it was acked without a second handoff.
    DuplicateDropped {
        /// The task.
        task: TaskId,
    },
    /// The broker returned a result as unroutable; it stays in the outbox
    /// and is published again later.
    ResultReturned {
        /// The task.
        task: TaskId,
        /// AMQP reply code.
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The broker nacked a result; it stays in the outbox.
    ResultNacked {
        /// The task.
        task: TaskId,
    },
    /// The broker broke the protocol (e.g. a delivery tag that did not
    /// increase); the connection is dropped and made again.
    ProtocolViolation {
        /// What happened.
        detail: String,
    },
    /// The broker closed the publishing channel (e.g. 404 NOT_FOUND when the
    /// `results` exchange is missing). Results stay in the outbox; a new
    /// channel is opened after a backoff while intake goes on.
    PublishChannelClosed {
        /// AMQP reply code.
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The spool takes no more tasks right now (its writer cannot commit,
    /// or disk space is low); intake waits, what is spooled goes on.
    /// [`crate::Lane::spool_full`] says why while it lasts.
    SpoolFull {
        /// Why.
        reason: String,
    },
    /// The spool takes tasks again after [`Event::SpoolFull`].
    SpoolRecovered,
    /// The spool refused a write (a bug, not a fault of the peer): the
    /// write changed nothing.
    SpoolRefused {
        /// The write.
        seq: crate::ids::WriteSeq,
        /// Why.
        reason: String,
    },
    /// The broker cancelled the consumer; the connection is made again.
    ConsumerCancelled,
    /// A poison scan moved deliveries the client cannot decode to
    /// `tasklane.dead`, with the reason.
    Quarantined {
        /// Their message ids, lossily as text.
        message_ids: Vec<String>,
        /// How many messages the scan looked at.
        scanned: u32,
    },
    /// A poison scan could not be made (the broker refused it, timed out).
    QuarantineFailed {
        /// Why.
        reason: String,
    },
    /// Shutdown ended at its grace with spool writes not committed (their
    /// tasks were never acked: the broker delivers them again later).
    ShutdownIncomplete {
        /// Writes issued and not committed.
        uncommitted: u64,
    },
}
