//! Durable queue contents: what a broker restart keeps.
//!
//! A message is either ready or out for delivery (unacked). Both sets live
//! here, keyed by the message's enqueue sequence number, so that requeueing
//! puts a message back in its original order and a restart can return every
//! unacked message to the queue without knowing about channels.

use std::collections::BTreeMap;

use crate::wire::Message;

/// One message in a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Broker-wide enqueue order.
    pub seq: u64,
    pub exchange: String,
    pub routing_key: String,
    pub message: Message,
    /// Set once the message has been handed out and came back.
    pub redelivered: bool,
}

/// The ready and unacked messages of one queue.
#[derive(Clone, Debug, Default)]
pub struct QueueStore {
    ready: BTreeMap<u64, Stored>,
    unacked: BTreeMap<u64, Stored>,
}

/// Message counts of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub ready: usize,
    pub unacked: usize,
}

impl QueueCounts {
    pub fn total(&self) -> usize {
        self.ready + self.unacked
    }
}

impl QueueStore {
    pub fn push(&mut self, stored: Stored) {
        self.ready.insert(stored.seq, stored);
    }

    pub fn counts(&self) -> QueueCounts {
        QueueCounts { ready: self.ready.len(), unacked: self.unacked.len() }
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Takes the oldest ready message out for delivery.
    pub fn take_next(&mut self) -> Option<Stored> {
        let (seq, stored) = self.ready.pop_first()?;
        self.unacked.insert(seq, stored.clone());
        Some(stored)
    }

    /// Forgets an unacked message (ack, or reject before dead-lettering).
    pub fn settle(&mut self, seq: u64) -> Option<Stored> {
        self.unacked.remove(&seq)
    }

    /// Returns an unacked message to the ready set, marked redelivered.
    pub fn requeue(&mut self, seq: u64) -> Option<&Stored> {
        let mut stored = self.unacked.remove(&seq)?;
        stored.redelivered = true;
        Some(self.ready.entry(seq).or_insert(stored))
    }

    /// What a broker restart does: unacked messages come back (redelivered)
    /// and transient messages are gone.
    pub fn recover(&mut self) {
        for (seq, mut stored) in std::mem::take(&mut self.unacked) {
            stored.redelivered = true;
            self.ready.insert(seq, stored);
        }
        self.ready.retain(|_, s| s.message.persistent);
    }

    /// Every message, ready and unacked, in enqueue order.
    pub fn messages(&self) -> Vec<&Stored> {
        let mut all: Vec<&Stored> = self.ready.values().chain(self.unacked.values()).collect();
        all.sort_by_key(|s| s.seq);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64, persistent: bool) -> Stored {
        Stored {
            seq,
            exchange: String::new(),
            routing_key: "q".into(),
            message: Message { persistent, ..Message::persistent(format!("m{seq}"), "") },
            redelivered: false,
        }
    }

    #[test]
    fn requeue_keeps_order_and_marks_redelivered() {
        let mut q = QueueStore::default();
        for seq in 1..=3 {
            q.push(stored(seq, true));
        }
        assert_eq!(q.take_next().unwrap().seq, 1);
        assert_eq!(q.take_next().unwrap().seq, 2);
        q.requeue(1);
        let again = q.take_next().unwrap();
        assert_eq!((again.seq, again.redelivered), (1, true));
        assert_eq!(q.counts(), QueueCounts { ready: 1, unacked: 2 });
    }

    #[test]
    fn recover_returns_unacked_and_drops_transient() {
        let mut q = QueueStore::default();
        q.push(stored(1, true));
        q.push(stored(2, false));
        q.push(stored(3, true));
        q.take_next();
        q.recover();
        let seqs: Vec<(u64, bool)> = q.messages().iter().map(|s| (s.seq, s.redelivered)).collect();
        assert_eq!(seqs, vec![(1, true), (3, false)]);
    }
}
