//! What the simulation may see of the broker: snapshots of consumers,
//! queues and connections, and the event log, for invariant checks such as
//! "at most one endpoint consuming `E.tasks`" and "no stale-tag ack".
//!
//! Every method returns owned data, so no borrow of the broker's state
//! outlives the call (the host may run between two calls).

use std::net::SocketAddr;

use super::event::{ChannelRef, ConnId, Event, SettleRecord};
use super::store::{QueueCounts, Stored};
use super::Broker;
use crate::wire::{ChannelNo, Message};

/// A registered consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub channel: ChannelRef,
    pub queue: String,
    pub exclusive: bool,
    /// False for a waiting single active consumer.
    pub active: bool,
}

/// An open connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub conn: ConnId,
    pub client: String,
    pub peer: SocketAddr,
    pub heartbeat_ms: u32,
    pub channels: Vec<ChannelNo>,
}

/// A delivery not yet settled: which channel holds which message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub channel: ChannelRef,
    pub tag: u64,
    pub queue: String,
    pub message_id: Option<String>,
    /// Its channel's consumer was cancelled by the broker after it was
    /// delivered (RabbitMQ leaves such deliveries on the channel).
    pub orphaned: bool,
}

impl Broker {
    /// The consumers of `queue` in registration order.
    pub fn consumers(&self, queue: &str) -> Vec<ConsumerInfo> {
        let e = self.engine.borrow();
        e.consumers
            .get(queue)
            .into_iter()
            .flatten()
            .map(|c| ConsumerInfo {
                channel: e.channel_ref(c.conn, c.ch),
                queue: queue.to_owned(),
                exclusive: c.exclusive,
                active: c.active,
            })
            .collect()
    }

    /// The consumers of `queue` that the broker delivers to.
    pub fn active_consumers(&self, queue: &str) -> Vec<ConsumerInfo> {
        let mut all = self.consumers(queue);
        all.retain(|c| c.active);
        all
    }

    /// Ready and unacked message counts (zero for an unknown queue).
    pub fn counts(&self, queue: &str) -> QueueCounts {
        self.engine.borrow().queues.get(queue).map(|q| q.counts()).unwrap_or_default()
    }

    /// Every message in `queue`, ready or unacked, in enqueue order.
    pub fn messages(&self, queue: &str) -> Vec<Stored> {
        self.engine.borrow().queues.get(queue).map(|q| q.messages().into_iter().cloned().collect()).unwrap_or_default()
    }

    /// The unsettled deliveries from `queue`, by channel and tag.
    pub fn unacked(&self, queue: &str) -> Vec<Delivery> {
        let e = self.engine.borrow();
        let mut out = Vec::new();
        for (&conn, c) in &e.conns {
            for (&ch, chan) in &c.channels {
                for (&tag, (q, seq)) in &chan.unacked {
                    if q != queue {
                        continue;
                    }
                    let message_id = e.queues[q]
                        .messages()
                        .into_iter()
                        .find(|s| s.seq == *seq)
                        .and_then(|s| s.message.message_id.clone());
                    out.push(Delivery {
                        channel: e.channel_ref(conn, ch),
                        tag,
                        queue: q.clone(),
                        message_id,
                        orphaned: chan.cancelled,
                    });
                }
            }
        }
        out
    }

    /// Open connections in connection order.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.engine
            .borrow()
            .conns
            .iter()
            .map(|(&conn, c)| ConnectionInfo {
                conn,
                client: c.client.clone(),
                peer: c.peer,
                heartbeat_ms: c.heartbeat_ms,
                channels: c.channels.keys().copied().collect(),
            })
            .collect()
    }

    /// How many times the broker has booted.
    pub fn boots(&self) -> u64 {
        self.engine.borrow().boots
    }

    /// The number of events so far (a cursor for [`Broker::events_since`]).
    pub fn event_count(&self) -> usize {
        self.engine.borrow().events.len()
    }

    /// The events from index `from` on.
    pub fn events_since(&self, from: usize) -> Vec<Event> {
        let e = self.engine.borrow();
        e.events.get(from..).unwrap_or_default().to_vec()
    }

    /// The whole event log.
    pub fn events(&self) -> Vec<Event> {
        self.events_since(0)
    }

    /// Every ack, nack and reject received, with its channel identity.
    pub fn settlements(&self) -> Vec<SettleRecord> {
        self.engine
            .borrow()
            .events
            .iter()
            .filter_map(|ev| match ev {
                Event::Settled(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Closes every connection whose client name `matches`, from the broker
    /// side (an operator's `close_connection`); returns how many.
    pub fn force_close(&self, matches: impl Fn(&str) -> bool, text: &str) -> usize {
        let mut e = self.engine.borrow_mut();
        let conns: Vec<ConnId> = e.conns.iter().filter(|(_, c)| matches(&c.client)).map(|(id, _)| *id).collect();
        for conn in &conns {
            e.force_close(*conn, text);
        }
        conns.len()
    }

    /// Raises (`true`) or clears a resource alarm: while it lasts, a
    /// connection that publishes is no longer read from (no confirms, no
    /// acks), and nothing tells the client; clearing it reads what waited.
    pub fn set_alarm(&self, on: bool) {
        self.engine.borrow_mut().set_alarm(on);
    }

    /// Cancels every consumer of `queue` from the broker side
    /// (`basic.cancel`); returns how many.
    pub fn cancel_consumers(&self, queue: &str) -> usize {
        let mut e = self.engine.borrow_mut();
        let n = e.cancel_consumers(queue);
        e.dispatch();
        n
    }

    /// Stores a message in `queue` directly, as the management API would
    /// (for setting up a scenario without a publishing client). Panics on an
    /// unknown queue.
    pub fn enqueue(&self, queue: &str, message: Message) {
        let mut e = self.engine.borrow_mut();
        e.enqueue(queue, "", queue, message);
        e.dispatch();
    }
}
