//! The consuming channel: qos, consume, and finding out whether this lane's
//! consumer is the active one.
//!
//! With single active consumer the broker accepts a second consumer and
//! says nothing about which one is active (RabbitMQ sends no notification
//! on AMQP 0-9-1). The first registered consumer is the active one. The
//! lane asks for the queue's consumer count twice: once after `QosOk`,
//! before its own `basic.consume` (call it `b`), and once after
//! `ConsumeOk` (`a`). The two kinds of queue count differently (measured
//! on RabbitMQ 3.10, counts before any consumer / after the first / after
//! the second): a classic queue counts every registered consumer (0/1/2),
//! a quorum queue only the active one (0/1/1). So:
//!
//! - `a >= 2`: only a queue that counts every consumer says this, and
//!   another one is registered: stand by and ask again every
//!   `standby_poll`, until the count is 1 (alone, so active) or a delivery
//!   proves this consumer active.
//! - `a == b == 1`: the one consumer counted was there before ours, and ours
//!   did not add to the count: it is a waiting consumer on a queue that
//!   counts only the active one. Stand by (`Uncounted`) and do not ask
//!   again: on such a queue the count stays 1 whether the other consumer
//!   is active or has gone and ours took over, and it cannot fall to 0
//!   while ours is registered, so no later answer could tell anything. Only
//!   a delivery proves this consumer active; until one comes (an idle
//!   queue) a consumer that has taken over still reports standby.
//! - otherwise (`a <= 1`, with `b == 0`, or `b >= 2` on a classic queue
//!   whose other consumers left meanwhile): this consumer is alone, so
//!   active.
//!
//! A residual race is not solved: two lanes that consume the same quorum
//! queue at the same moment can both count `b == 0` before either
//! consume registers, and both then read `a == 1`; the one that is in
//! fact waiting reports `consuming` until the session restarts. It needs
//! the two `queue.declare`s to fall between each other's, i.e. within one
//! round trip. A delivery to the other one cannot correct it, and no count
//! can. (On a classic queue the same race ends with `a == 2` for the later
//! consumer, so it stands by correctly.)
//!
//! An exclusive consume asks for no count; one that is refused (403, 405)
//! closes the channel; the lane stands by and tries again after
//! `standby_retry`.

use std::time::Instant;

use crate::config::ConsumeMode;
use crate::ids::ChannelId;
use crate::output::{Amqp, Event, Output};

use super::session::Conn;
use super::Lane;

/// AMQP reply codes that mean "another consumer holds this queue".
const ACCESS_REFUSED: u16 = 403;
const RESOURCE_LOCKED: u16 = 405;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConsumeChan {
    /// Channel open requested.
    Opening(ChannelId),
    /// `basic.qos` sent.
    Qos(ChannelId),
    /// Single active consumer: the count before our consume is asked for.
    Counting(ChannelId),
    /// `basic.consume` sent; `before` is the count asked before it (`None`
    /// for an exclusive consume, which asks none).
    Subscribing { channel: ChannelId, before: Option<u32> },
    /// Registered; the count after our consume is asked for.
    Checking { channel: ChannelId, before: u32 },
    /// Receiving deliveries.
    Active(ChannelId),
    /// Registered while another consumer is active, on a queue whose count
    /// includes ours: the next count query is due at `query_at` (`None`:
    /// one is under way).
    Waiting { channel: ChannelId, query_at: Option<Instant> },
    /// Registered as a waiting consumer on a queue that counts only the
    /// active consumer: no count can tell more, a delivery decides.
    Uncounted(ChannelId),
    /// Consume refused (exclusive consumer present); try again at the time.
    Refused { retry_at: Instant },
}

impl ConsumeChan {
    /// The channel, while there is one.
    pub(super) fn channel(self) -> Option<ChannelId> {
        match self {
            ConsumeChan::Opening(c)
            | ConsumeChan::Qos(c)
            | ConsumeChan::Counting(c)
            | ConsumeChan::Subscribing { channel: c, .. }
            | ConsumeChan::Checking { channel: c, .. }
            | ConsumeChan::Active(c)
            | ConsumeChan::Waiting { channel: c, .. }
            | ConsumeChan::Uncounted(c) => Some(c),
            ConsumeChan::Refused { .. } => None,
        }
    }

    /// Registered with the broker (consuming or standing by): the session
    /// set-up is done as far as consuming goes.
    pub(super) fn settled(self) -> bool {
        matches!(
            self,
            ConsumeChan::Active(_)
                | ConsumeChan::Waiting { .. }
                | ConsumeChan::Uncounted(_)
                | ConsumeChan::Refused { .. }
        )
    }

    /// The next deadline of this channel: a count query or a retry.
    pub(super) fn deadline(self) -> Option<Instant> {
        match self {
            ConsumeChan::Waiting { query_at, .. } => query_at,
            ConsumeChan::Refused { retry_at } => Some(retry_at),
            _ => None,
        }
    }
}

impl Lane {
    fn consume_chan(&mut self) -> Option<&mut ConsumeChan> {
        match &mut self.conn {
            Conn::Up(s) => Some(&mut s.consume),
            _ => None,
        }
    }

    pub(super) fn on_qos_ok(&mut self, channel: ChannelId) {
        let mode = self.cfg.consume_mode;
        let Some(consume) = self.consume_chan() else { return };
        if *consume != ConsumeChan::Qos(channel) {
            return;
        }
        match mode {
            ConsumeMode::Exclusive => self.consume(channel, None),
            ConsumeMode::SingleActive => {
                *consume = ConsumeChan::Counting(channel);
                self.query_consumers(channel);
            }
        }
    }

    /// Sends `basic.consume`; `before` is the count asked before it.
    fn consume(&mut self, channel: ChannelId, before: Option<u32>) {
        let Some(consume) = self.consume_chan() else { return };
        *consume = ConsumeChan::Subscribing { channel, before };
        #[allow(unused_mut)]
        let mut exclusive = self.cfg.consume_mode == ConsumeMode::Exclusive;
        #[cfg(feature = "sabotage")]
        if self.cfg.sabotage.never_exclusive {
            exclusive = false;
        }
        let queue = self.cfg.endpoint.task_queue();
        self.out.push_back(Output::Amqp(Amqp::Consume { channel, queue, exclusive }));
        if let Conn::Up(s) = &mut self.conn {
            s.consumed_at = Some(self.now);
        }
        self.intake.start(channel);
        #[cfg(feature = "sabotage")]
        self.ack_stale_tags(channel);
    }

    pub(super) fn on_consume_ok(&mut self, channel: ChannelId) {
        let Some(consume) = self.consume_chan() else { return };
        let ConsumeChan::Subscribing { channel: c, before } = *consume else { return };
        if c != channel {
            return;
        }
        match before {
            // A consume that was not refused holds the queue alone.
            None => *consume = ConsumeChan::Active(channel),
            Some(before) => {
                *consume = ConsumeChan::Checking { channel, before };
                self.query_consumers(channel);
            }
        }
        self.check_handshake_done();
    }

    fn query_consumers(&mut self, channel: ChannelId) {
        let queue = self.cfg.endpoint.task_queue();
        self.out.push_back(Output::Amqp(Amqp::QueryConsumers { channel, queue }));
    }

    pub(super) fn on_consumer_count(&mut self, now: Instant, channel: ChannelId, consumers: u32) {
        let poll = self.cfg.standby_poll;
        let Some(consume) = self.consume_chan() else { return };
        if consume.channel() != Some(channel) {
            return; // late: a channel of an earlier session or consume
        }
        let before = match *consume {
            ConsumeChan::Counting(_) => {
                self.consume(channel, Some(consumers));
                return;
            }
            ConsumeChan::Checking { before, .. } => Some(before),
            // A re-asked count, on a queue that counts every consumer.
            ConsumeChan::Waiting { query_at: None, .. } => None,
            _ => return, // late, or a delivery already settled the question
        };
        *consume = match (before, consumers) {
            (_, 2..) => ConsumeChan::Waiting { channel, query_at: Some(now + poll) },
            (Some(1), 1) => ConsumeChan::Uncounted(channel),
            _ => ConsumeChan::Active(channel),
        };
        self.check_handshake_done();
    }

    /// A delivery proves this consumer is the active one.
    pub(super) fn on_first_delivery(&mut self) {
        if let Some(consume) = self.consume_chan() {
            if let ConsumeChan::Subscribing { channel: c, .. }
            | ConsumeChan::Checking { channel: c, .. }
            | ConsumeChan::Waiting { channel: c, .. }
            | ConsumeChan::Uncounted(c) = *consume
            {
                *consume = ConsumeChan::Active(c);
                self.check_handshake_done();
            }
        }
        self.session_proved_healthy();
    }

    /// The consuming channel's deadlines: the next count query, the retry
    /// of a refused consume.
    pub(super) fn on_consume_timers(&mut self, now: Instant) {
        let Some(consume) = self.consume_chan() else { return };
        match *consume {
            ConsumeChan::Waiting { channel, query_at: Some(at) } if at <= now => {
                *consume = ConsumeChan::Waiting { channel, query_at: None };
                self.query_consumers(channel);
            }
            ConsumeChan::Refused { retry_at } if retry_at <= now => {
                let channel = self.next_channel();
                if let Some(consume) = self.consume_chan() {
                    *consume = ConsumeChan::Opening(channel);
                }
                self.out.push_back(Output::Amqp(Amqp::OpenChannel { channel }));
            }
            _ => {}
        }
    }

    /// The broker closed the consuming channel: a refused consume stands by
    /// and retries; anything else gives the connection up.
    pub(super) fn on_consume_channel_closed(&mut self, now: Instant, channel: ChannelId, code: u16, text: String) {
        let retry_at = now + self.cfg.standby_retry;
        let Some(consume) = self.consume_chan() else { return };
        // A delivery may come before the answer to the consume and make the
        // channel `Active`; a refusal still means the channel is gone, and
        // its unsettled deliveries with it.
        let refused = matches!(code, ACCESS_REFUSED | RESOURCE_LOCKED)
            && matches!(*consume, ConsumeChan::Subscribing { channel: c, .. } | ConsumeChan::Active(c) if c == channel);
        if refused {
            *consume = ConsumeChan::Refused { retry_at };
            self.intake.stop();
            self.check_handshake_done();
        } else {
            self.drop_connection(now, format!("channel closed by broker: {code} {text}"));
        }
    }

    pub(super) fn on_consumer_cancelled(&mut self, now: Instant, channel: ChannelId) {
        let Some(consume) = self.consume_chan() else { return };
        if consume.channel() != Some(channel) {
            return;
        }
        self.emit(Event::ConsumerCancelled);
        self.drop_connection(now, "consumer cancelled by the broker".into());
    }
}
