//! Consumer registration: exclusive consumers and single active consumer.
//!
//! - Exclusive (classic queues only; a quorum queue ignores the flag): a
//!   consume is refused with 403 ACCESS_REFUSED when it asks for exclusive
//!   use of a queue that has consumers, or when the queue already has an
//!   exclusive consumer.
//! - Single active consumer: the first registered consumer is active, the
//!   others wait in registration order; when the active one goes (its
//!   channel or connection ends) the next becomes active. As RabbitMQ on
//!   AMQP 0-9-1, the broker tells nobody who is active: a client learns it
//!   from its first delivery, or from the consumer count of a passive
//!   declare (the first registered consumer is the active one). The
//!   count differs by queue type: a classic queue counts every consumer,
//!   a quorum queue only the active one.

use super::engine::{Consumer, Engine};
use super::event::{ConnId, Event};
use super::topology::QueueKind;
use crate::wire::{code, ChannelNo, ServerMethod};

impl Engine {
    pub(super) fn consume(&mut self, conn: ConnId, ch: ChannelNo, queue: &str, exclusive: bool) {
        let channel = self.channel_ref(conn, ch);
        let Some(spec) = self.topology.queues.get(queue) else {
            let text = format!("NOT_FOUND - no queue '{queue}' in vhost '/'");
            self.channel_error(conn, ch, code::NOT_FOUND, &text);
            return;
        };
        let sac = spec.single_active_consumer;
        let enforce_exclusive = spec.kind == QueueKind::Classic;
        let list = self.consumers.entry(queue.to_owned()).or_default();
        if list.iter().any(|c| c.conn == conn && c.ch == ch) {
            let text = format!("NOT_ALLOWED - channel {ch} already consumes '{queue}'");
            self.channel_error(conn, ch, code::NOT_ALLOWED, &text);
            return;
        }
        if enforce_exclusive && !list.is_empty() && (exclusive || list.iter().any(|c| c.exclusive)) {
            self.events.push(Event::ConsumeRefused { channel, queue: queue.to_owned(), code: code::ACCESS_REFUSED });
            let text = format!("ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use");
            self.channel_error(conn, ch, code::ACCESS_REFUSED, &text);
            return;
        }
        let active = !sac || !list.iter().any(|c| c.active);
        list.push(Consumer { conn, ch, exclusive: exclusive && enforce_exclusive, active });
        self.send(conn, ServerMethod::ConsumeOk { ch, queue: queue.to_owned() });
        self.events.push(Event::ConsumerAdded { channel, queue: queue.to_owned(), exclusive, active });
    }

    /// Removes the channel's consumers and hands single-active-consumer
    /// queues over to their next waiting consumer.
    pub(super) fn remove_consumers(&mut self, conn: ConnId, ch: ChannelNo) {
        let channel = self.channel_ref(conn, ch);
        let queues: Vec<String> = self.consumers.keys().cloned().collect();
        for queue in queues {
            let list = self.consumers.get_mut(&queue).expect("listed queue");
            let Some(pos) = list.iter().position(|c| c.conn == conn && c.ch == ch) else {
                continue;
            };
            let gone = list.remove(pos);
            let mut promoted = None;
            if gone.active && !list.iter().any(|c| c.active) {
                if let Some(next) = list.first_mut() {
                    next.active = true;
                    promoted = Some((next.conn, next.ch));
                }
            }
            self.events.push(Event::ConsumerRemoved {
                channel: channel.clone(),
                queue: queue.clone(),
                was_active: gone.active,
            });
            if let Some((next_conn, next_ch)) = promoted {
                self.events.push(Event::ConsumerActivated { channel: self.channel_ref(next_conn, next_ch), queue });
            }
        }
    }

    /// A passive `queue.declare`: the counts, or 404 for a missing queue.
    /// As RabbitMQ 3.10 (measured): a classic queue counts every registered
    /// consumer, a quorum queue only the active ones, so a waiting
    /// single-active consumer is not counted there.
    pub(super) fn declare_passive(&mut self, conn: ConnId, ch: ChannelNo, queue: &str) {
        let Some(spec) = self.topology.queues.get(queue) else {
            let text = format!("NOT_FOUND - no queue '{queue}' in vhost '/'");
            self.channel_error(conn, ch, code::NOT_FOUND, &text);
            return;
        };
        let list = self.consumers.get(queue).map(Vec::as_slice).unwrap_or_default();
        let consumers = match spec.kind {
            QueueKind::Classic => list.len(),
            QueueKind::Quorum => list.iter().filter(|c| c.active).count(),
        } as u32;
        let messages = self.queues.get(queue).map_or(0, |q| q.counts().ready) as u32;
        self.send(conn, ServerMethod::DeclareOk { ch, queue: queue.to_owned(), messages, consumers });
    }

    /// Cancels every consumer of `queue` (`basic.cancel` from the broker),
    /// as RabbitMQ does when a queue's node fails over or an operator
    /// deletes consumers. Deliveries already sent stay on their channels,
    /// to be acked there or requeued when the channel closes. Returns how
    /// many consumers were cancelled.
    pub(super) fn cancel_consumers(&mut self, queue: &str) -> usize {
        let list = self.consumers.get(queue).cloned().unwrap_or_default();
        for c in &list {
            self.remove_consumers(c.conn, c.ch);
            if let Some(chan) = self.conns.get_mut(&c.conn).and_then(|k| k.channels.get_mut(&c.ch)) {
                chan.cancelled = true;
            }
            self.send(c.conn, ServerMethod::Cancel { ch: c.ch, queue: queue.to_owned() });
        }
        list.len()
    }
}
