//! The broker's history, as the simulation's invariant checks see it.
//!
//! Every state change that an oracle may care about is appended to one log,
//! in the order the broker performed it. Channel identities carry a
//! broker-wide generation number, so an ack on a reopened channel number is
//! never confused with one on its predecessor.

use std::net::SocketAddr;

use crate::wire::ChannelNo;

/// A broker connection, numbered from 1 for the broker's whole life
/// (restarts included).
pub type ConnId = u64;

/// One channel incarnation: connection, channel number, and a generation
/// unique across the broker's life.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelRef {
    pub conn: ConnId,
    /// The name the client gave in `ConnectionOpen`.
    pub client: String,
    pub ch: ChannelNo,
    pub gen: u64,
}

/// What a settle method asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SettleKind {
    Ack,
    Nack { requeue: bool },
    Reject { requeue: bool },
}

/// One message a settle method touched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SettledMessage {
    pub queue: String,
    pub message_id: Option<String>,
    /// The delivery tag it had on this channel.
    pub tag: u64,
}

/// One ack, nack or reject as the broker received it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SettleRecord {
    pub channel: ChannelRef,
    pub kind: SettleKind,
    pub tag: u64,
    pub multiple: bool,
    /// The messages it settled (empty when the tag was unknown).
    pub settled: Vec<SettledMessage>,
    /// The tag was not outstanding on this channel: the broker closed the
    /// channel with 406 PRECONDITION_FAILED.
    pub unknown_tag: bool,
}

/// What became of a publish.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublishOutcome {
    /// Stored in these queues.
    Routed(Vec<String>),
    /// No queue matched; `returned` if it was mandatory.
    Unroutable { returned: bool },
    /// A target queue was full (reject-publish): nacked, stored nowhere.
    Rejected,
}

/// One entry of the broker's history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The broker (re)started; `boot` counts from 1.
    Booted {
        boot: u64,
    },
    Connected {
        conn: ConnId,
        peer: SocketAddr,
    },
    /// `ConnectionOpen` named the client.
    Opened {
        conn: ConnId,
        client: String,
        heartbeat_ms: u32,
    },
    Disconnected {
        conn: ConnId,
        client: String,
        reason: String,
    },
    ChannelOpened {
        channel: ChannelRef,
    },
    /// The broker closed a channel because of an error.
    ChannelClosed {
        channel: ChannelRef,
        code: u16,
        text: String,
    },
    ConsumerAdded {
        channel: ChannelRef,
        queue: String,
        exclusive: bool,
        active: bool,
    },
    ConsumerActivated {
        channel: ChannelRef,
        queue: String,
    },
    ConsumerRemoved {
        channel: ChannelRef,
        queue: String,
        was_active: bool,
    },
    ConsumeRefused {
        channel: ChannelRef,
        queue: String,
        code: u16,
    },
    Delivered {
        channel: ChannelRef,
        tag: u64,
        queue: String,
        message_id: Option<String>,
        redelivered: bool,
    },
    /// Unacked deliveries went back to their queue because their channel
    /// or connection ended.
    Requeued {
        channel: ChannelRef,
        queue: String,
        message_id: Option<String>,
    },
    Settled(SettleRecord),
    Published {
        channel: ChannelRef,
        /// The confirm tag, in confirm mode.
        confirm_tag: Option<u64>,
        exchange: String,
        routing_key: String,
        message_id: Option<String>,
        outcome: PublishOutcome,
    },
    /// A rejected message moved to the dead-letter targets (empty: dropped).
    DeadLettered {
        queue: String,
        message_id: Option<String>,
        to: Vec<String>,
    },
}
