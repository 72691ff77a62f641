//! One task per AMQP connection: it opens the connection, then carries out
//! core's [`Amqp`] commands for it one after the other, each to completion
//! (amqprs issue #196: a cancelled RPC breaks its channel), and reports the
//! answers as core [`Input`]s. The driver never waits on it: a connection
//! that hangs in its handshake holds up only its own task, and core gives
//! up on it by its own deadline.
//!
//! Channels are named by core's [`ChannelId`]s; an ack goes to the amqprs
//! channel its [`tasklane_core::DeliveryTag`] names, or nowhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicQosArguments, BasicRejectArguments, Channel, ConfirmSelectArguments,
    QueueDeclareArguments,
};
use amqprs::connection::Connection;
use amqprs::consumer::AsyncConsumer;
use amqprs::{BasicProperties, Deliver};
use async_trait::async_trait;
use tasklane_core::{Amqp, ChannelId, ConnId, Input};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::amqp::{self, ChannelEvent, CloseReason, ConnectOptions, ConnectionEvent, ConnectionInfo};

/// Where a connection task sends what it learns.
#[derive(Clone, Debug)]
pub(super) struct Sinks {
    pub inputs: UnboundedSender<Input>,
    pub conn_events: UnboundedSender<(ConnId, ConnectionEvent)>,
    pub channel_events: UnboundedSender<(ChannelId, ChannelEvent)>,
    /// The live connection, for status pages: set by the newest attempt
    /// once connected, cleared by it when it ends.
    pub connection: Arc<watch::Sender<Option<(ConnId, ConnectionInfo)>>>,
}

pub(super) enum ConnCmd {
    Amqp(Amqp),
    Close(String),
}

/// The driver's handle on a connection task.
pub(super) struct ConnHandle {
    pub id: ConnId,
    pub cmds: UnboundedSender<ConnCmd>,
    pub task: JoinHandle<()>,
}

impl ConnHandle {
    /// Starts connecting as attempt `id`.
    pub fn spawn(id: ConnId, opts: ConnectOptions, sinks: Sinks) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("connection", conn = id.0, peer = tracing::field::Empty);
        let task = tokio::spawn(tracing::Instrument::instrument(run(id, opts, rx, sinks), span));
        Self { id, cmds, task }
    }
}

/// Deliveries of one consuming channel, as core inputs.
struct Deliveries {
    channel: ChannelId,
    inputs: UnboundedSender<Input>,
}

#[async_trait]
impl AsyncConsumer for Deliveries {
    async fn consume(&mut self, _channel: &Channel, deliver: Deliver, props: BasicProperties, content: Vec<u8>) {
        let _ = self.inputs.send(Input::Delivery {
            channel: self.channel,
            tag: deliver.delivery_tag(),
            redelivered: deliver.redelivered(),
            message: amqp::raw_message(&props, content),
        });
    }
}

struct Session {
    id: ConnId,
    conn: Connection,
    sinks: Sinks,
    channels: BTreeMap<ChannelId, (Channel, CloseReason)>,
}

/// Longest wait for a channel's close handshake when a connection is given up.
const CHANNEL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

async fn run(id: ConnId, opts: ConnectOptions, mut cmds: UnboundedReceiver<ConnCmd>, sinks: Sinks) {
    let (conn, info) = match amqp::connect_with_info(&opts).await {
        Ok(connected) => connected,
        Err(e) => {
            let _ = sinks.inputs.send(Input::ConnectFailed { conn: id, reason: e.to_string() });
            return;
        }
    };
    if let Err(e) = amqp::watch_connection(&conn, id, sinks.conn_events.clone()).await {
        let _ = sinks.inputs.send(Input::ConnectFailed { conn: id, reason: e.to_string() });
        let _ = conn.close().await;
        return;
    }
    tracing::Span::current().record("peer", tracing::field::display(info.peer));
    tracing::info!(url = %opts.url, name = %info.name, tls = info.tls, broker = %info.broker, "connected");
    sinks.connection.send_if_modified(|current| {
        let newer = current.as_ref().is_none_or(|(c, _)| *c <= id);
        if newer {
            *current = Some((id, info));
        }
        newer
    });
    let _ = sinks.inputs.send(Input::Connected { conn: id });
    let mut s = Session { id, conn, sinks, channels: BTreeMap::new() };
    let reason = loop {
        match cmds.recv().await {
            Some(ConnCmd::Amqp(op)) => s.execute(op).await,
            Some(ConnCmd::Close(reason)) => break reason,
            None => break "endpoint stopped".to_string(),
        }
    };
    tracing::debug!(%reason, "closing connection");
    s.sinks.connection.send_if_modified(|current| {
        let ours = current.as_ref().is_some_and(|(c, _)| *c == id);
        if ours {
            *current = None;
        }
        ours
    });
    // Close the channels first: amqprs logs an error for every channel
    // still open when the connection is gone. The connection is being
    // abandoned, so bounding these closes cannot break anything in use.
    let closes = std::mem::take(&mut s.channels).into_values().map(|(ch, _)| async move {
        let _ = tokio::time::timeout(CHANNEL_CLOSE_TIMEOUT, ch.close()).await;
    });
    futures::future::join_all(closes).await;
    // Run the close handshake to completion; its error only means the
    // connection was already gone.
    let _ = s.conn.close().await;
}

impl Session {
    fn send(&self, input: Input) {
        let _ = self.sinks.inputs.send(input);
    }

    /// The input for a failed RPC on `channel`: the broker's close, or a
    /// close with code 0 when the connection failed under it.
    fn closed(&self, channel: ChannelId, op: &str, err: amqprs::error::Error) -> Input {
        let close = self.channels.get(&channel).and_then(|(_, c)| c.get());
        let (code, text) = close.unwrap_or_else(|| (0, format!("{op} failed: {err}")));
        Input::ChannelClosed { channel, code, text }
    }

    fn channel(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(&id).map(|(c, _)| c)
    }

    async fn execute(&mut self, op: Amqp) {
        match op {
            Amqp::OpenChannel { channel } => {
                // Forget channels the broker closed (a reopened publisher).
                self.channels.retain(|_, (ch, _)| ch.is_open());
                match amqp::open_channel(&self.conn, channel, self.sinks.channel_events.clone()).await {
                    Ok((ch, close)) => {
                        self.channels.insert(channel, (ch, close));
                        self.send(Input::ChannelOpened { channel });
                    }
                    Err(e) => self.send(Input::ChannelClosed { channel, code: 0, text: e.to_string() }),
                }
            }
            Amqp::Qos { channel, prefetch } => {
                let Some(ch) = self.channel(channel) else { return };
                match ch.basic_qos(BasicQosArguments::new(0, prefetch, false)).await {
                    Ok(()) => self.send(Input::QosOk { channel }),
                    Err(e) => self.send(self.closed(channel, "basic.qos", e)),
                }
            }
            Amqp::Consume { channel, queue, exclusive } => self.consume(channel, queue, exclusive).await,
            Amqp::QueryConsumers { channel, queue } => {
                let Some(ch) = self.channel(channel).cloned() else { return };
                match consumer_count(&ch, &queue).await {
                    Ok(consumers) => self.send(Input::ConsumerCount { channel, consumers }),
                    Err(e) => self.send(self.closed(channel, "queue.declare (passive)", e)),
                }
            }
            Amqp::ConfirmSelect { channel } => {
                let Some(ch) = self.channel(channel) else { return };
                match ch.confirm_select(ConfirmSelectArguments::default()).await {
                    Ok(()) => self.send(Input::ConfirmSelectOk { channel }),
                    Err(e) => self.send(self.closed(channel, "confirm.select", e)),
                }
            }
            Amqp::Ack { tag, multiple } => {
                let Some(ch) = self.channel(tag.channel) else {
                    return tracing::debug!(channel = tag.channel.0, "ack for a channel that is gone");
                };
                if let Err(e) = ch.basic_ack(BasicAckArguments::new(tag.tag, multiple)).await {
                    tracing::debug!(channel = tag.channel.0, tag = tag.tag, "basic.ack failed: {e}");
                }
            }
            Amqp::Reject { tag } => {
                let Some(ch) = self.channel(tag.channel) else { return };
                if let Err(e) = ch.basic_reject(BasicRejectArguments::new(tag.tag, false)).await {
                    tracing::debug!(channel = tag.channel.0, tag = tag.tag, "basic.reject failed: {e}");
                }
            }
            Amqp::Publish { tag, exchange, routing_key, message } => {
                let Some(ch) = self.channel(tag.channel) else { return };
                let props = match amqp::publish_properties(&message) {
                    Ok(p) => p,
                    // Core builds results from valid task ids: unreachable in
                    // practice, and the missing confirm keeps it in the outbox.
                    Err(e) => return tracing::error!(seq = tag.seq, "result cannot be published: {e}"),
                };
                let args = amqp::publish_args(exchange, &routing_key);
                if let Err(e) = ch.basic_publish(props, message.body.to_vec(), args).await {
                    tracing::debug!(channel = tag.channel.0, seq = tag.seq, "basic.publish failed: {e}");
                }
            }
            // Connect and Disconnect are the driver's: one task per connection.
            Amqp::Connect { .. } | Amqp::Disconnect { .. } => {}
        }
    }

    async fn consume(&mut self, channel: ChannelId, queue: String, exclusive: bool) {
        let Some(ch) = self.channel(channel).cloned() else { return };
        let consumer = Deliveries { channel, inputs: self.sinks.inputs.clone() };
        let args = BasicConsumeArguments::new(&queue, &format!("tasklane-{}-{}", self.id.0, channel.0))
            .manual_ack(true)
            .exclusive(exclusive)
            .finish();
        match ch.basic_consume(consumer, args).await {
            Ok(_) => self.send(Input::ConsumeOk { channel }),
            // A refused consume (403, 405) is the broker's close: core decides.
            Err(e) => self.send(self.closed(channel, "basic.consume", e)),
        }
    }
}

async fn consumer_count(ch: &Channel, queue: &str) -> Result<u32, amqprs::error::Error> {
    let declared = ch.queue_declare(QueueDeclareArguments::new(queue).passive(true).finish()).await?;
    Ok(declared.map_or(0, |(_, _, consumers)| consumers))
}
