//! [`CoreRig`]: a lane with a broker and a spool that answer at once, for
//! measuring what core itself costs per task.

use std::time::Instant;

use bytes::Bytes;
use tasklane_core::{
    encode_task, Amqp, ChannelId, Config, EndpointId, Input, Lane, Output, RawMessage, ResultStatus, SpoolSnapshot,
    Status, Task, TaskId, WriteSeq,
};

/// Distinct task ids in the rotation: more than the default completed-id
/// window (100,000), so an id comes back only after the window forgot it and
/// the window runs full, as in a long-lived endpoint.
const POOL: usize = 200_000;

/// A consuming lane plus a pool of prepared deliveries. One [`CoreRig::cycle`]
/// takes `group` tasks through the whole path, with one spool commit, one
/// broker ack and one publisher confirm per step of the group.
pub struct CoreRig {
    lane: Lane,
    now: Instant,
    consume: ChannelId,
    publish: ChannelId,
    next_tag: u64,
    pool: Vec<RawMessage>,
    next: usize,
    result_body: Bytes,
    // What the last drain saw.
    last_write: Option<WriteSeq>,
    handoffs: Vec<TaskId>,
    last_publish: Option<u64>,
    acks: usize,
}

impl CoreRig {
    /// A lane in `Consuming` state with both channels ready; tasks carry
    /// `body_len`-byte payloads.
    pub fn new(body_len: usize) -> Self {
        let now = Instant::now();
        let cfg = Config::new(EndpointId::new("bench").expect("valid id"));
        let lane = Lane::new(now, cfg, SpoolSnapshot::default()).expect("default config is valid");
        let body = Bytes::from(vec![b'x'; body_len]);
        let pool = (0..POOL)
            .map(|i| {
                let id = TaskId::new(format!("task-{i:08}")).expect("valid id");
                encode_task(&Task { id, kind: None, body: body.clone() })
            })
            .collect();
        let mut rig = Self {
            lane,
            now,
            consume: ChannelId(0),
            publish: ChannelId(0),
            next_tag: 0,
            pool,
            next: 0,
            result_body: body,
            last_write: None,
            handoffs: Vec::new(),
            last_publish: None,
            acks: 0,
        };
        rig.handshake();
        rig
    }

    fn handshake(&mut self) {
        let mut pending = std::collections::VecDeque::new();
        let mut consumers = 0;
        loop {
            while let Some(out) = self.lane.poll() {
                match out {
                    Output::Amqp(Amqp::Connect { conn, .. }) => pending.push_back(Input::Connected { conn }),
                    Output::Amqp(Amqp::OpenChannel { channel }) => pending.push_back(Input::ChannelOpened { channel }),
                    Output::Amqp(Amqp::Qos { channel, .. }) => {
                        self.consume = channel;
                        pending.push_back(Input::QosOk { channel })
                    }
                    Output::Amqp(Amqp::Consume { channel, .. }) => {
                        consumers = 1;
                        pending.push_back(Input::ConsumeOk { channel })
                    }
                    // Alone on the queue: none before our consume, ours after.
                    Output::Amqp(Amqp::QueryConsumers { channel, .. }) => {
                        pending.push_back(Input::ConsumerCount { channel, consumers })
                    }
                    Output::Amqp(Amqp::ConfirmSelect { channel }) => {
                        self.publish = channel;
                        pending.push_back(Input::ConfirmSelectOk { channel })
                    }
                    _ => {}
                }
            }
            let Some(input) = pending.pop_front() else { break };
            self.lane.handle(self.now, input).expect("handshake input");
        }
        assert_eq!(self.lane.status(), &Status::Consuming);
    }

    fn feed(&mut self, input: Input) {
        self.lane.handle(self.now, input).expect("valid input");
        while let Some(out) = self.lane.poll() {
            match out {
                Output::Spool(w) => self.last_write = Some(w.seq),
                Output::Handoff(h) => self.handoffs.push(h.task.id),
                Output::Amqp(Amqp::Publish { tag, .. }) => self.last_publish = Some(tag.seq),
                Output::Amqp(Amqp::Ack { .. }) => self.acks += 1,
                _ => {}
            }
        }
    }

    fn commit(&mut self) {
        if let Some(upto) = self.last_write.take() {
            self.feed(Input::SpoolCommitted { upto });
        }
    }

    /// Takes `group` tasks through delivery, spool insert, commit, ack,
    /// handoff, completion, commit, publish, confirm, and the confirm's
    /// commit. Returns the acks sent (one per group).
    pub fn cycle(&mut self, group: usize) -> usize {
        self.acks = 0;
        for _ in 0..group {
            self.next_tag += 1;
            let message = self.pool[self.next].clone();
            self.next = (self.next + 1) % self.pool.len();
            self.feed(Input::Delivery { channel: self.consume, tag: self.next_tag, redelivered: false, message });
        }
        self.commit();
        for task in std::mem::take(&mut self.handoffs) {
            let body = self.result_body.clone();
            self.feed(Input::Complete { task, status: ResultStatus::Ok, body });
        }
        self.commit();
        if let Some(tag) = self.last_publish.take() {
            self.feed(Input::PublishAck { channel: self.publish, tag, multiple: true });
        }
        self.commit();
        debug_assert_eq!(self.lane.inbox_len() + self.lane.outbox_len(), 0);
        self.acks
    }

    /// The lane, for its counters.
    pub fn lane(&self) -> &Lane {
        &self.lane
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_takes_every_task_through_and_acks_once() {
        let mut rig = CoreRig::new(256);
        for group in [1, 10, 100] {
            assert_eq!(rig.cycle(group), 1);
        }
        let c = rig.lane().counters();
        assert_eq!((c.received, c.spooled, c.acked, c.handed_off), (111, 111, 111, 111));
        assert_eq!((c.completed, c.published, c.confirmed), (111, 111, 111));
        assert_eq!((rig.lane().inbox_len(), rig.lane().outbox_len()), (0, 0));
    }
}
