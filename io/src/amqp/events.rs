//! amqprs callbacks that turn what the broker does on its own into messages
//! on a tokio channel, tagged with a key the caller chooses (core's
//! `ChannelId` / `ConnId` in the endpoint).
//!
//! The senders are unbounded on purpose: amqprs runs callbacks on its reader
//! and dispatcher tasks, and a callback that waits for room would stall the
//! connection, including the answers the receiver may itself be waiting
//! for. Volume is bounded elsewhere (prefetch, unconfirmed-publish limit).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::Channel;
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tasklane_core::RawMessage;
use tokio::sync::mpsc::UnboundedSender;

use super::convert::raw_message;

/// Something the broker did on a channel.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// Publisher confirm `basic.ack`.
    PublishAck {
        /// Confirm tag (counted per channel from 1).
        tag: u64,
        /// Whether every tag up to `tag` is confirmed.
        multiple: bool,
    },
    /// Publisher `basic.nack`.
    PublishNack {
        /// Confirm tag.
        tag: u64,
        /// Whether every tag up to `tag` is nacked.
        multiple: bool,
    },
    /// `basic.return` of a mandatory publish nobody could route. RabbitMQ
    /// sends it before the confirm of the same message.
    Returned {
        /// AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// AMQP reply text.
        text: String,
        /// The exchange it was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
        /// The message (its `message_id` names it).
        message: RawMessage,
    },
    /// The broker closed the channel (`channel.close`).
    Closed {
        /// AMQP reply code.
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The broker cancelled a consumer (e.g. its queue was deleted).
    ConsumerCancelled {
        /// The consumer's tag.
        consumer_tag: String,
    },
}

/// The last `channel.close` the broker sent on a channel, readable after an
/// RPC on that channel failed. amqprs reports a refused `basic.consume` as
/// a bare "channel closed" error; the reply code is only known here. The
/// callback records it before amqprs fails the pending RPC.
#[derive(Clone, Debug, Default)]
pub struct CloseReason(Arc<Mutex<Option<(u16, String)>>>);

impl CloseReason {
    /// The broker's reply code and text, if the broker closed the channel.
    pub fn get(&self) -> Option<(u16, String)> {
        self.0.lock().expect("close reason lock").clone()
    }

    fn set(&self, code: u16, text: String) {
        *self.0.lock().expect("close reason lock") = Some((code, text));
    }
}

/// Where a callback sends what it learns: never blocks (amqprs runs
/// callbacks on its reader and dispatcher tasks).
type Sink<E> = Box<dyn Fn(E) + Send + Sync>;

/// A [`ChannelCallback`] that forwards every channel event to a sink.
pub struct ChannelEvents {
    sink: Sink<ChannelEvent>,
    close: CloseReason,
}

impl std::fmt::Debug for ChannelEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelEvents").field("close", &self.close).finish_non_exhaustive()
    }
}

impl ChannelEvents {
    /// A callback that sends events tagged with `key` to `tx`.
    pub fn new<K: Clone + Send + Sync + 'static>(key: K, tx: UnboundedSender<(K, ChannelEvent)>) -> Self {
        // A closed receiver means nobody listens any more: nothing to do.
        Self::with(move |event| drop(tx.send((key.clone(), event))))
    }

    /// A callback that hands every event to `sink`.
    pub fn with(sink: impl Fn(ChannelEvent) + Send + Sync + 'static) -> Self {
        Self { sink: Box::new(sink), close: CloseReason::default() }
    }

    /// A handle on the close reason this callback records.
    pub fn close_reason(&self) -> CloseReason {
        self.close.clone()
    }

    fn send(&self, event: ChannelEvent) {
        (self.sink)(event);
    }
}

#[async_trait]
impl ChannelCallback for ChannelEvents {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        let (code, text) = (close.reply_code(), close.reply_text().clone());
        self.close.set(code, text.clone());
        self.send(ChannelEvent::Closed { code, text });
        Ok(()) // an error here would make amqprs skip the close-ok
    }

    async fn cancel(&mut self, _channel: &Channel, cancel: Cancel) -> Result<(), amqprs::error::Error> {
        self.send(ChannelEvent::ConsumerCancelled { consumer_tag: cancel.consumer_tag().clone() });
        Ok(())
    }

    async fn flow(&mut self, _channel: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.send(ChannelEvent::PublishAck { tag: ack.delivery_tag(), multiple: ack.mutiple() });
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.send(ChannelEvent::PublishNack { tag: nack.delivery_tag(), multiple: nack.multiple() });
    }

    async fn publish_return(&mut self, _channel: &Channel, ret: Return, props: BasicProperties, content: Vec<u8>) {
        self.send(ChannelEvent::Returned {
            code: ret.reply_code(),
            text: ret.reply_text().clone(),
            exchange: ret.exchange().clone(),
            routing_key: ret.routing_key().clone(),
            message: raw_message(&props, content),
        });
    }
}

/// Something that happened to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// `connection.blocked` (a memory or disk alarm): publishes stall.
    Blocked {
        /// The broker's reason.
        reason: String,
    },
    /// `connection.unblocked`.
    Unblocked,
    /// The broker closed the connection (`connection.close`).
    Closed {
        /// AMQP reply code.
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The connection is gone: socket error, missed heartbeats, or a close
    /// by either side. Sent once, last.
    Lost {
        /// True for a network failure (socket error, heartbeat timeout),
        /// false for a close.
        network_failure: bool,
    },
}

/// A [`ConnectionCallback`] that forwards blocked, unblocked and close.
pub struct ConnectionEvents {
    sink: std::sync::Arc<dyn Fn(ConnectionEvent) + Send + Sync>,
}

impl std::fmt::Debug for ConnectionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionEvents").finish_non_exhaustive()
    }
}

impl ConnectionEvents {
    /// A callback that sends events tagged with `key` to `tx`.
    pub fn new<K: Clone + Send + Sync + 'static>(key: K, tx: UnboundedSender<(K, ConnectionEvent)>) -> Self {
        Self::with(move |event| drop(tx.send((key.clone(), event))))
    }

    /// A callback that hands every event to `sink`.
    pub fn with(sink: impl Fn(ConnectionEvent) + Send + Sync + 'static) -> Self {
        Self { sink: std::sync::Arc::new(sink) }
    }

    fn send(&self, event: ConnectionEvent) {
        (self.sink)(event);
    }
}

#[async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(&mut self, _connection: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        self.send(ConnectionEvent::Closed { code: close.reply_code(), text: close.reply_text().clone() });
        Ok(())
    }

    async fn blocked(&mut self, _connection: &Connection, reason: String) {
        self.send(ConnectionEvent::Blocked { reason });
    }

    async fn unblocked(&mut self, _connection: &Connection) {
        self.send(ConnectionEvent::Unblocked);
    }

    async fn secret_updated(&mut self, _connection: &Connection) {}
}

/// Registers a [`ConnectionEvents`] callback on `conn` and watches it for
/// loss: amqprs reports a dead socket or missed heartbeats only through
/// [`Connection::listen_network_io_failure`], never through the callback.
/// Exactly one [`ConnectionEvent::Lost`] follows once the connection is
/// gone, however it went.
///
/// The watcher holds a clone of `conn` until the connection closes, so
/// close the connection explicitly ([`Connection::close`]) when done with
/// it rather than only dropping it.
pub async fn watch_connection<K: Clone + Send + Sync + 'static>(
    conn: &Connection,
    key: K,
    tx: UnboundedSender<(K, ConnectionEvent)>,
) -> Result<(), amqprs::error::Error> {
    watch_connection_with(conn, move |event| drop(tx.send((key.clone(), event)))).await
}

/// [`watch_connection`], handing every event to `sink`.
pub async fn watch_connection_with(
    conn: &Connection,
    sink: impl Fn(ConnectionEvent) + Send + Sync + 'static,
) -> Result<(), amqprs::error::Error> {
    let events = ConnectionEvents::with(sink);
    let sink = events.sink.clone();
    conn.register_callback(events).await?;
    let conn = conn.clone();
    tokio::spawn(async move {
        let network_failure = {
            let listen = conn.listen_network_io_failure();
            tokio::pin!(listen);
            // listen subscribes when first polled; a connection that died
            // before that is caught by the periodic is_open check.
            loop {
                tokio::select! {
                    failure = &mut listen => break failure,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if !conn.is_open() {
                            // Let a notification already under way win.
                            let late = tokio::time::timeout(Duration::from_millis(100), &mut listen).await;
                            break late.unwrap_or(false);
                        }
                    }
                }
            }
        };
        sink(ConnectionEvent::Lost { network_failure });
    });
    Ok(())
}
