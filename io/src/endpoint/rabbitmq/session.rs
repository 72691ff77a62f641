//! One amqprs connection: open it, carry out core's commands on it in
//! order, translate what the broker does into core inputs, close it.

use std::collections::BTreeMap;
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
use tokio::sync::mpsc::UnboundedReceiver;

use super::ConnCmd;
use crate::amqp::{self, ChannelEvent, ChannelEvents, CloseReason, ConnectOptions, ConnectionEvent};
use crate::endpoint::ports::{BrokerSinks, InputSink};

/// Longest wait for a channel's close handshake when a connection is given up.
const CHANNEL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for the connection's close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Deliveries of one consuming channel, as core inputs.
struct Deliveries {
    channel: ChannelId,
    inputs: InputSink,
}

#[async_trait]
impl AsyncConsumer for Deliveries {
    async fn consume(&mut self, _channel: &Channel, deliver: Deliver, props: BasicProperties, content: Vec<u8>) {
        self.inputs.send(Input::Delivery {
            channel: self.channel,
            tag: deliver.delivery_tag(),
            redelivered: deliver.redelivered(),
            message: amqp::raw_message(&props, content),
        });
    }
}

/// A connection event as core's input.
fn conn_input(conn: ConnId, event: ConnectionEvent) -> Input {
    match event {
        ConnectionEvent::Blocked { reason } => Input::Blocked { conn, reason },
        ConnectionEvent::Unblocked => Input::Unblocked { conn },
        ConnectionEvent::Closed { code, text } => {
            Input::ConnectionLost { conn, reason: format!("closed by the broker: {code} {text}") }
        }
        ConnectionEvent::Lost { network_failure: true } => {
            Input::ConnectionLost { conn, reason: "network failure or missed heartbeats".into() }
        }
        ConnectionEvent::Lost { network_failure: false } => {
            Input::ConnectionLost { conn, reason: "connection closed".into() }
        }
    }
}

/// A channel event as core's input.
fn channel_input(channel: ChannelId, event: ChannelEvent) -> Input {
    match event {
        ChannelEvent::PublishAck { tag, multiple } => Input::PublishAck { channel, tag, multiple },
        ChannelEvent::PublishNack { tag, multiple } => Input::PublishNack { channel, tag, multiple },
        ChannelEvent::Returned { code, text, message, .. } => {
            Input::Returned { channel, message_id: message.message_id, code, text }
        }
        ChannelEvent::Closed { code, text } => Input::ChannelClosed { channel, code, text },
        ChannelEvent::ConsumerCancelled { .. } => Input::ConsumerCancelled { channel },
    }
}

struct Session {
    conn: ConnId,
    /// The broker node, `host:port` of the URL in use, for reports.
    node: String,
    amqp: Connection,
    inputs: InputSink,
    channels: BTreeMap<ChannelId, (Channel, CloseReason)>,
}

pub(super) async fn run(id: ConnId, opts: ConnectOptions, mut cmds: UnboundedReceiver<ConnCmd>, sinks: BrokerSinks) {
    let inputs = sinks.inputs.clone();
    // Core may give up on an attempt that hangs (connect timeout): the
    // open is abandoned then, which no channel RPC is part of yet.
    let opened = tokio::select! {
        biased;
        cmd = wait_close(&mut cmds) => {
            tracing::debug!(reason = %cmd, "connection attempt abandoned");
            return;
        }
        opened = amqp::connect_with_info(&opts) => opened,
    };
    let (amqp, info) = match opened {
        Ok(connected) => connected,
        Err(e) => {
            inputs.send(Input::ConnectFailed { conn: id, reason: e.to_string() });
            return;
        }
    };
    let lost = inputs.clone();
    if let Err(e) = amqp::watch_connection_with(&amqp, move |event| {
        lost.send(conn_input(id, event));
    })
    .await
    {
        inputs.send(Input::ConnectFailed { conn: id, reason: e.to_string() });
        let _ = amqp.close().await;
        return;
    }
    tracing::Span::current().record("peer", tracing::field::display(info.peer));
    tracing::info!(url = %opts.url, name = %info.name, tls = info.tls, broker = %info.broker, "connected");
    let node = info.node.clone();
    sinks.connection.connected(id, info);
    inputs.send(Input::Connected { conn: id });
    let mut s = Session { conn: id, node, amqp, inputs, channels: BTreeMap::new() };
    let reason = loop {
        match cmds.recv().await {
            Some(ConnCmd::Amqp(op)) => s.execute(op).await,
            Some(ConnCmd::Close(reason)) => break reason,
            None => break "endpoint stopped".to_string(),
        }
    };
    tracing::debug!(%reason, "closing connection");
    sinks.connection.ended(id);
    // Close the channels first: amqprs logs an error for every channel
    // still open when the connection is gone. The connection is being
    // abandoned, so bounding these closes cannot break anything in use.
    let closes = std::mem::take(&mut s.channels).into_values().map(|(ch, _)| async move {
        let _ = tokio::time::timeout(CHANNEL_CLOSE_TIMEOUT, ch.close()).await;
    });
    futures::future::join_all(closes).await;
    // An error only means the connection was already gone.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.amqp.close()).await;
}

/// Waits for a close (or the end of the commands), skipping anything else.
async fn wait_close(cmds: &mut UnboundedReceiver<ConnCmd>) -> String {
    loop {
        match cmds.recv().await {
            Some(ConnCmd::Close(reason)) => return reason,
            Some(ConnCmd::Amqp(_)) => {}
            None => return "endpoint stopped".into(),
        }
    }
}

impl Session {
    fn send(&self, input: Input) {
        self.inputs.send(input);
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
                let inputs = self.inputs.clone();
                let events = ChannelEvents::with(move |event| {
                    inputs.send(channel_input(channel, event));
                });
                match amqp::open_channel_with(&self.amqp, events).await {
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
            Amqp::Consume { channel, queue, exclusive } => {
                let Some(ch) = self.channel(channel).cloned() else { return };
                let consumer = Deliveries { channel, inputs: self.inputs.clone() };
                let tag = format!("tasklane-{}-{}", self.conn.0, channel.0);
                let args = BasicConsumeArguments::new(&queue, &tag).manual_ack(true).exclusive(exclusive).finish();
                match ch.basic_consume(consumer, args).await {
                    Ok(_) => self.send(Input::ConsumeOk { channel }),
                    // A refused consume (403, 405) is the broker's close: core judges.
                    Err(e) => self.send(self.closed(channel, "basic.consume", e)),
                }
            }
            Amqp::QueryConsumers { channel, queue } => {
                let Some(ch) = self.channel(channel).cloned() else { return };
                let passive = QueueDeclareArguments::new(&queue).passive(true).finish();
                match ch.queue_declare(passive).await {
                    Ok(declared) => {
                        let consumers = declared.map_or(0, |(_, _, consumers)| consumers);
                        self.send(Input::ConsumerCount { channel, consumers });
                    }
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
            Amqp::Publish { tag, exchange, routing_key, message, .. } => {
                let Some(ch) = self.channel(tag.channel) else { return };
                let props = match amqp::publish_properties(&message) {
                    Ok(p) => p,
                    // Core builds results from valid task ids: unreachable in
                    // practice, and the missing confirm keeps it in the outbox.
                    Err(e) => return tracing::error!(seq = tag.seq, "result cannot be published: {e}"),
                };
                let args = amqp::publish_args(exchange, &routing_key);
                if let Err(e) = ch.basic_publish(props, Vec::from(message.body), args).await {
                    tracing::debug!(channel = tag.channel.0, seq = tag.seq, "basic.publish failed: {e}");
                }
            }
            Amqp::PublishReport { tag, report, .. } => {
                let Some(ch) = self.channel(tag.channel) else { return };
                // Not mandatory, transient, and its confirm changes nothing
                // (core numbers it and forgets it): a report the broker
                // drops costs nothing.
                let report = crate::fleet::StatusReport::of_lane(&report, Some(self.node.clone()));
                if let Err(e) = crate::fleet::publish(ch, &report).await {
                    tracing::debug!(channel = tag.channel.0, seq = tag.seq, "status report not published: {e}");
                }
            }
            // Connect and Disconnect are the port's: one task per connection.
            Amqp::Connect { .. } | Amqp::Disconnect { .. } | Amqp::Quarantine { .. } => {}
        }
    }
}
