//! Ack, nack and reject, with `multiple`, requeue and dead-lettering.
//!
//! As in RabbitMQ, a tag that is not outstanding on the channel (already
//! settled, never delivered, or from an earlier channel with the same
//! number) closes the channel with 406 PRECONDITION_FAILED and settles
//! nothing; `multiple` with tag 0 settles everything outstanding.

use super::engine::Engine;
use super::event::{ConnId, Event, SettleKind, SettleRecord, SettledMessage};
use crate::wire::{code, ChannelNo, HeaderValue};

/// Header names RabbitMQ sets on a dead-lettered message.
pub const DEATH_REASON: &str = "x-first-death-reason";
pub const DEATH_QUEUE: &str = "x-first-death-queue";
pub const DEATH_EXCHANGE: &str = "x-first-death-exchange";

impl Engine {
    pub(super) fn settle(&mut self, conn: ConnId, ch: ChannelNo, kind: SettleKind, tag: u64, multiple: bool) {
        let channel = self.channel_ref(conn, ch);
        let chan = self.channel_mut(conn, ch);
        let all = multiple && tag == 0;
        if !all && !chan.unacked.contains_key(&tag) {
            self.events.push(Event::Settled(SettleRecord {
                channel,
                kind,
                tag,
                multiple,
                settled: Vec::new(),
                unknown_tag: true,
            }));
            let text = format!("PRECONDITION_FAILED - unknown delivery tag {tag}");
            self.channel_error(conn, ch, code::PRECONDITION_FAILED, &text);
            return;
        }
        let tags: Vec<u64> = if all {
            chan.unacked.keys().copied().collect()
        } else if multiple {
            chan.unacked.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        let taken: Vec<(u64, (String, u64))> =
            tags.into_iter().map(|t| (t, chan.unacked.remove(&t).expect("outstanding tag"))).collect();
        let requeue = match kind {
            SettleKind::Ack => false,
            SettleKind::Nack { requeue } | SettleKind::Reject { requeue } => requeue,
        };
        let mut settled = Vec::with_capacity(taken.len());
        for (t, (queue, seq)) in taken {
            let store = self.queues.get_mut(&queue).expect("known queue");
            let message_id = if requeue {
                store.requeue(seq).and_then(|s| s.message.message_id.clone())
            } else {
                let stored = store.settle(seq).expect("unacked message");
                let id = stored.message.message_id.clone();
                if kind != SettleKind::Ack {
                    self.dead_letter(&queue, stored);
                }
                id
            };
            settled.push(SettledMessage { queue, message_id, tag: t });
        }
        self.events.push(Event::Settled(SettleRecord { channel, kind, tag, multiple, settled, unknown_tag: false }));
    }

    /// Moves a rejected message to the queue's dead-letter exchange, with
    /// the reason in its headers; without one, the message is dropped.
    fn dead_letter(&mut self, queue: &str, stored: super::store::Stored) {
        let dlx = self.topology.queues.get(queue).and_then(|q| q.dead_letter_exchange.clone());
        let targets = dlx.as_deref().and_then(|x| self.topology.route(x, &stored.routing_key)).unwrap_or_default();
        let mut message = stored.message;
        let headers = &mut message.headers;
        headers.entry(DEATH_REASON.into()).or_insert(HeaderValue::from("rejected"));
        headers.entry(DEATH_QUEUE.into()).or_insert(HeaderValue::from(queue));
        headers.entry(DEATH_EXCHANGE.into()).or_insert(HeaderValue::from(stored.exchange.as_str()));
        for target in &targets {
            self.enqueue(target, dlx.as_deref().unwrap_or_default(), &stored.routing_key, message.clone());
        }
        self.events.push(Event::DeadLettered { queue: queue.to_owned(), message_id: message.message_id, to: targets });
    }
}
