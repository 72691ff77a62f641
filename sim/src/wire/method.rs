//! The methods of the simulation's wire protocol.
//!
//! They mirror the AMQP 0-9-1 methods tasklane uses, reduced to the fields
//! that change behaviour. amqprs cannot run over turmoil's simulated TCP, so
//! the sim shell and the simulated broker speak this protocol instead.

use std::collections::BTreeMap;

use bytes::Bytes;

/// An AMQP channel number. Channel 0 is the connection itself and cannot be
/// opened.
pub type ChannelNo = u16;

/// A typed AMQP header value (a small subset of AMQP field types).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HeaderValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Bytes(Bytes),
}

impl From<&str> for HeaderValue {
    fn from(value: &str) -> Self {
        HeaderValue::Str(value.to_owned())
    }
}

impl From<String> for HeaderValue {
    fn from(value: String) -> Self {
        HeaderValue::Str(value)
    }
}

impl From<bool> for HeaderValue {
    fn from(value: bool) -> Self {
        HeaderValue::Bool(value)
    }
}

impl From<i64> for HeaderValue {
    fn from(value: i64) -> Self {
        HeaderValue::Int(value)
    }
}

/// Message headers; ordered so that encoding is deterministic.
pub type Headers = BTreeMap<String, HeaderValue>;

/// The properties and body of a message, as published and as delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Message {
    /// AMQP `message_id`; tasklane puts the task id here.
    pub message_id: Option<String>,
    /// AMQP delivery mode 2. Transient messages do not survive a broker
    /// restart.
    pub persistent: bool,
    pub headers: Headers,
    pub body: Bytes,
}

impl Message {
    /// A persistent message with a message id and a body.
    pub fn persistent(message_id: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Message { message_id: Some(message_id.into()), persistent: true, headers: Headers::new(), body: body.into() }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// The header's value if it is a string.
    pub fn header_str(&self, key: &str) -> Option<&str> {
        match self.headers.get(key) {
            Some(HeaderValue::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// Client → broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMethod {
    /// First frame of a connection. `name` identifies the client in the
    /// broker's observer log; `heartbeat_ms` is the client's proposal (0: take
    /// the broker's).
    ConnectionOpen {
        name: String,
        heartbeat_ms: u32,
    },
    OpenChannel {
        ch: ChannelNo,
    },
    /// Closes a channel, or acknowledges a `ChannelClose` from the broker.
    CloseChannel {
        ch: ChannelNo,
    },
    /// Per-channel limit of unacknowledged deliveries (0: unlimited).
    Qos {
        ch: ChannelNo,
        prefetch: u16,
    },
    Consume {
        ch: ChannelNo,
        queue: String,
        exclusive: bool,
    },
    /// A passive `queue.declare`: the queue's message and consumer counts,
    /// or a 404 channel close when it does not exist.
    DeclarePassive {
        ch: ChannelNo,
        queue: String,
    },
    Ack {
        ch: ChannelNo,
        tag: u64,
        multiple: bool,
    },
    Nack {
        ch: ChannelNo,
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        ch: ChannelNo,
        tag: u64,
        requeue: bool,
    },
    ConfirmSelect {
        ch: ChannelNo,
    },
    Publish {
        ch: ChannelNo,
        exchange: String,
        routing_key: String,
        mandatory: bool,
        message: Message,
    },
    Heartbeat,
    ConnectionClose,
}

/// Broker → client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMethod {
    /// The negotiated heartbeat interval (0: heartbeats off).
    ConnectionOpenOk {
        heartbeat_ms: u32,
    },
    ChannelOpenOk {
        ch: ChannelNo,
    },
    ChannelCloseOk {
        ch: ChannelNo,
    },
    QosOk {
        ch: ChannelNo,
    },
    /// The consumer is registered. As in RabbitMQ, nothing says whether a
    /// single active consumer is the active one.
    ConsumeOk {
        ch: ChannelNo,
        queue: String,
    },
    /// The answer to a passive declare.
    DeclareOk {
        ch: ChannelNo,
        queue: String,
        messages: u32,
        consumers: u32,
    },
    /// `basic.cancel` from the broker: the channel's consumer is gone (its
    /// unsettled deliveries stay on the channel).
    Cancel {
        ch: ChannelNo,
        queue: String,
    },
    ConfirmSelectOk {
        ch: ChannelNo,
    },
    Deliver {
        ch: ChannelNo,
        tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
        message: Message,
    },
    PublishAck {
        ch: ChannelNo,
        tag: u64,
        multiple: bool,
    },
    PublishNack {
        ch: ChannelNo,
        tag: u64,
        multiple: bool,
    },
    /// A mandatory publish that no queue took; the confirm follows it.
    Return {
        ch: ChannelNo,
        reply_code: u16,
        reply_text: String,
        exchange: String,
        routing_key: String,
        message: Message,
    },
    /// The broker closed the channel; the client answers `CloseChannel`.
    ChannelClose {
        ch: ChannelNo,
        code: u16,
        text: String,
    },
    Heartbeat,
    ConnectionClose {
        code: u16,
        text: String,
    },
}

/// AMQP reply codes the simulated broker uses.
pub mod code {
    pub const CONNECTION_FORCED: u16 = 320;
    pub const NO_ROUTE: u16 = 312;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const NOT_ALLOWED: u16 = 530;
}
