//! What happened: everything a shell reports to core.

use crate::ids::{ChannelId, ConnId, TaskId, WriteSeq};
use crate::message::{RawMessage, ResultStatus};

use bytes::Bytes;

/// An event for [`crate::Lane::handle`]. Replies name the connection or
/// channel they belong to; a reply for one that core has already given up
/// is ignored, so a shell may report races as they happen.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Input {
    /// The connection of `Amqp::Connect { conn }` is open.
    Connected {
        /// Which attempt.
        conn: ConnId,
    },
    /// The connection of `Amqp::Connect { conn }` could not be made.
    ConnectFailed {
        /// Which attempt.
        conn: ConnId,
        /// What went wrong, for status and logs.
        reason: String,
    },
    /// An open connection died: socket error, heartbeat timeout, or a
    /// `connection.close` from the broker. Everything on it is gone; the
    /// broker requeues what was not acked. The shell releases the dead
    /// connection itself: no `Amqp::Disconnect` follows for it.
    ConnectionLost {
        /// Which connection.
        conn: ConnId,
        /// What went wrong.
        reason: String,
    },
    /// The broker blocked the connection (`connection.blocked`, e.g. a
    /// memory or disk alarm): publishing stalls until `Unblocked`.
    Blocked {
        /// Which connection.
        conn: ConnId,
        /// The broker's reason.
        reason: String,
    },
    /// The broker lifted the block.
    Unblocked {
        /// Which connection.
        conn: ConnId,
    },
    /// `Amqp::OpenChannel` succeeded.
    ChannelOpened {
        /// Which channel.
        channel: ChannelId,
    },
    /// The broker (or the library) closed a channel, with the server's code
    /// and text when there is one.
    ChannelClosed {
        /// Which channel.
        channel: ChannelId,
        /// AMQP reply code (0 when unknown).
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// `Amqp::Qos` succeeded.
    QosOk {
        /// Which channel.
        channel: ChannelId,
    },
    /// `Amqp::Consume` succeeded: the consumer is registered. Whether it
    /// receives deliveries (single active consumer) core finds out itself,
    /// with `Amqp::QueryConsumers` and from its first delivery. A refused
    /// consume (403 ACCESS_REFUSED, 405 RESOURCE_LOCKED) comes as
    /// `ChannelClosed` with the broker's code.
    ConsumeOk {
        /// Which channel.
        channel: ChannelId,
    },
    /// The answer to `Amqp::QueryConsumers`: the consumer count of a
    /// passive `queue.declare`, as the broker gives it (a classic queue
    /// counts every consumer, this lane's own included; a quorum queue
    /// only the active one).
    ConsumerCount {
        /// The channel the query was made on.
        channel: ChannelId,
        /// The queue's consumer count.
        consumers: u32,
    },
    /// The broker cancelled the consumer on `channel` (`basic.cancel` from
    /// the server, e.g. its queue was deleted). The channel stays open.
    ConsumerCancelled {
        /// Which channel.
        channel: ChannelId,
    },
    /// The answer to `Amqp::Quarantine`.
    QuarantineDone {
        /// Which scan.
        scan: u64,
        /// The message ids (lossily as text) of what was moved to
        /// `tasklane.dead` as undecodable.
        quarantined: Vec<String>,
        /// How many messages the scan looked at.
        scanned: u32,
        /// Why the scan could not finish, if it could not.
        error: Option<String>,
    },
    /// `Amqp::ConfirmSelect` succeeded.
    ConfirmSelectOk {
        /// Which channel.
        channel: ChannelId,
    },
    /// A `basic.deliver` on a consuming channel.
    Delivery {
        /// Which channel.
        channel: ChannelId,
        /// The broker's delivery tag on that channel.
        tag: u64,
        /// The broker's `redelivered` flag.
        redelivered: bool,
        /// The message, unjudged.
        message: RawMessage,
    },
    /// A publisher confirm: `basic.ack` from the broker.
    PublishAck {
        /// Which channel.
        channel: ChannelId,
        /// Confirm tag.
        tag: u64,
        /// Whether every tag up to `tag` is confirmed.
        multiple: bool,
    },
    /// A publisher `basic.nack`: the broker could not take the message.
    PublishNack {
        /// Which channel.
        channel: ChannelId,
        /// Confirm tag.
        tag: u64,
        /// Whether every tag up to `tag` is nacked.
        multiple: bool,
    },
    /// A `basic.return` of a mandatory publish (unroutable). RabbitMQ sends
    /// it before the confirm of the same message.
    Returned {
        /// Which channel.
        channel: ChannelId,
        /// The returned message's `message_id`.
        message_id: Option<Vec<u8>>,
        /// AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The spool committed every write up to and including `upto`.
    SpoolCommitted {
        /// The last write committed.
        upto: WriteSeq,
    },
    /// The spool cannot commit right now (e.g. the LMDB map is at its
    /// limit); writes wait and nothing more is acked until it recovers.
    SpoolStalled {
        /// Why, for status and logs.
        reason: String,
    },
    /// How many bytes the spool may still use: free on its filesystem plus
    /// what its file holds free for reuse. Reported after commits and now
    /// and then; intake waits while it runs low (`Config::min_free_bytes`).
    SpoolSpace {
        /// Bytes.
        available_bytes: u64,
    },
    /// The spool refused write `seq` because it does not fit what the spool
    /// holds (a bug of core or of the spool, never of the peer). The write
    /// changed nothing; later writes still apply, and a commit report still
    /// covers it.
    SpoolRefused {
        /// The write.
        seq: WriteSeq,
        /// Why, for logs.
        reason: String,
    },
    /// The application finished a task.
    Complete {
        /// Which task.
        task: TaskId,
        /// Success or failure.
        status: ResultStatus,
        /// The result payload.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::message::arbitrary_bytes))]
        body: Bytes,
    },
    /// Time passed (a deadline of `poll_timeout` may have expired). Every
    /// `handle` call also processes expired deadlines; this input does
    /// nothing else.
    Timeout,
    /// Stop: take no more deliveries, let the spool commit what was issued
    /// (acking what that makes durable), then close the connection and stay
    /// down; [`crate::Lane::is_drained`] says when the shell may stop. Bounded
    /// by `Config::shutdown_grace`: what is not durable by then is simply
    /// delivered again by the broker later. Results may still be recorded.
    Shutdown,
}

impl Input {
    /// The input's name, for errors and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Input::Connected { .. } => "Connected",
            Input::ConnectFailed { .. } => "ConnectFailed",
            Input::ConnectionLost { .. } => "ConnectionLost",
            Input::Blocked { .. } => "Blocked",
            Input::Unblocked { .. } => "Unblocked",
            Input::ChannelOpened { .. } => "ChannelOpened",
            Input::ChannelClosed { .. } => "ChannelClosed",
            Input::QosOk { .. } => "QosOk",
            Input::ConsumeOk { .. } => "ConsumeOk",
            Input::ConsumerCount { .. } => "ConsumerCount",
            Input::ConsumerCancelled { .. } => "ConsumerCancelled",
            Input::QuarantineDone { .. } => "QuarantineDone",
            Input::ConfirmSelectOk { .. } => "ConfirmSelectOk",
            Input::Delivery { .. } => "Delivery",
            Input::PublishAck { .. } => "PublishAck",
            Input::PublishNack { .. } => "PublishNack",
            Input::Returned { .. } => "Returned",
            Input::SpoolCommitted { .. } => "SpoolCommitted",
            Input::SpoolStalled { .. } => "SpoolStalled",
            Input::SpoolRefused { .. } => "SpoolRefused",
            Input::SpoolSpace { .. } => "SpoolSpace",
            Input::Complete { .. } => "Complete",
            Input::Timeout => "Timeout",
            Input::Shutdown => "Shutdown",
        }
    }
}
