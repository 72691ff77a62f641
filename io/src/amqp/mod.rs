//! AMQP plumbing shared by the endpoint and the service: URL parsing,
//! connecting, channel and connection callbacks, and conversions between
//! amqprs properties and core's messages.
//!
//! Rules every user of this module keeps (SPEC §1):
//! - Never cancel an amqprs RPC future mid-flight (amqprs issue #196: the
//!   late reply breaks the channel). Run each command to completion, e.g.
//!   on a task of its own, and drop the result if nobody wants it any more.
//! - Loss of the network shows up only through
//!   [`amqprs::connection::Connection::listen_network_io_failure`]; use
//!   [`watch_connection`].
//! - A refused `basic.consume` fails as a bare "channel closed" error; the
//!   broker's reply code is in the channel's [`CloseReason`]. Open channels
//!   with [`open_channel`] to get one.
//! - Publisher confirm tags count per channel from 1 after
//!   `confirm.select`; the caller tracks them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tasklane_io::amqp::Error> {
//! use tasklane_io::amqp::{self, ConnectOptions};
//! let opts = ConnectOptions::parse("amqp://guest:guest@127.0.0.1:5672/%2f")?.with_heartbeat(10);
//! let conn = amqp::connect(&opts).await?;
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let (channel, close_reason) = amqp::open_channel(&conn, "publisher", tx).await?;
//! # let _ = (channel, close_reason, rx.recv().await);
//! # Ok(()) }
//! ```

mod connect;
mod convert;
mod events;
pub mod quarantine;
mod tls;
mod url;

use amqprs::channel::{BasicPublishArguments, Channel};
use amqprs::connection::Connection;
use tokio::sync::mpsc::UnboundedSender;

pub use connect::{connect, connect_with_info, ConnectionInfo};
pub use convert::{
    header_value, headers_from_table, publish_properties, raw_message, table_from_headers, ConvertError,
};
pub use events::{
    watch_connection, watch_connection_with, ChannelEvent, ChannelEvents, CloseReason, ConnectionEvent,
    ConnectionEvents,
};
pub use url::{AmqpUrl, ConnectOptions, TlsOptions, UrlError, UrlListError, DEFAULT_HEARTBEAT};

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The connection could not be opened.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// What amqprs reported.
        source: amqprs::error::Error,
    },
    /// An operation on an open connection or channel failed.
    #[error("{op} failed: {source}")]
    Amqp {
        /// The operation, e.g. `"channel.open"`.
        op: &'static str,
        /// What amqprs reported.
        source: amqprs::error::Error,
    },
    /// The TLS settings cannot be used (a CA, certificate or key file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The broker closed the channel in answer to an operation.
    #[error("{op} failed: the broker closed the channel: {code} {text}")]
    ChannelClosed {
        /// The operation, e.g. `"basic.consume"`.
        op: &'static str,
        /// AMQP reply code (e.g. 403 ACCESS_REFUSED, 404 NOT_FOUND).
        code: u16,
        /// AMQP reply text.
        text: String,
    },
}

impl Error {
    /// The error of a failed RPC on a channel: the broker's close code and
    /// text when it closed the channel, amqprs' error otherwise.
    pub fn from_channel(op: &'static str, source: amqprs::error::Error, close: &CloseReason) -> Self {
        match close.get() {
            Some((code, text)) => Error::ChannelClosed { op, code, text },
            None => Error::Amqp { op, source },
        }
    }

    /// The broker's reply code, when the broker closed the channel.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Error::ChannelClosed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Opens a channel with a [`ChannelEvents`] callback sending `(key, event)`
/// to `tx`, and returns the channel with its [`CloseReason`].
pub async fn open_channel<K: Clone + Send + Sync + 'static>(
    conn: &Connection,
    key: K,
    tx: UnboundedSender<(K, ChannelEvent)>,
) -> Result<(Channel, CloseReason), Error> {
    open_channel_with(conn, ChannelEvents::new(key, tx)).await
}

/// [`open_channel`] with a callback of the caller's ([`ChannelEvents::with`]).
pub async fn open_channel_with(conn: &Connection, events: ChannelEvents) -> Result<(Channel, CloseReason), Error> {
    let channel = conn.open_channel(None).await.map_err(|source| Error::Amqp { op: "channel.open", source })?;
    let close = events.close_reason();
    channel.register_callback(events).await.map_err(|source| Error::Amqp { op: "channel callback", source })?;
    Ok((channel, close))
}

/// `basic.publish` arguments as tasklane publishes: `mandatory`, so an
/// unroutable message comes back as a return instead of vanishing.
pub fn publish_args(exchange: &str, routing_key: &str) -> BasicPublishArguments {
    BasicPublishArguments::new(exchange, routing_key).mandatory(true).finish()
}
