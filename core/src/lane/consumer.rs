//! The consuming channel: qos, consume, and finding out whether this lane's
//! consumer is the active one.
//!
//! With single active consumer the broker accepts a second consumer and
//! says nothing about which one is active (RabbitMQ sends no notification
//! on AMQP 0-9-1). The first registered consumer is the active one, so
//! after `ConsumeOk` the lane asks for the queue's consumer count: one
//! means it is us. Otherwise it stands by and asks again every
//! `standby_poll`, until it is alone or a delivery proves it active. An
//! exclusive consume that is refused (403, 405) closes the channel; the
//! lane stands by and tries again after `standby_retry`.

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
    /// `basic.consume` sent.
    Subscribing(ChannelId),
    /// Registered; the first consumer count is asked for.
    Checking(ChannelId),
    /// Receiving deliveries.
    Active(ChannelId),
    /// Registered while another consumer is active: the next count query
    /// is due at `query_at` (`None`: one is under way).
    Waiting { channel: ChannelId, query_at: Option<Instant> },
    /// Consume refused (exclusive consumer present); try again at the time.
    Refused { retry_at: Instant },
}

impl ConsumeChan {
    /// The channel, while there is one.
    pub(super) fn channel(self) -> Option<ChannelId> {
        match self {
            ConsumeChan::Opening(c)
            | ConsumeChan::Qos(c)
            | ConsumeChan::Subscribing(c)
            | ConsumeChan::Checking(c)
            | ConsumeChan::Active(c)
            | ConsumeChan::Waiting { channel: c, .. } => Some(c),
            ConsumeChan::Refused { .. } => None,
        }
    }

    /// Registered with the broker (consuming or standing by): the session
    /// set-up is done as far as consuming goes.
    pub(super) fn settled(self) -> bool {
        matches!(self, ConsumeChan::Active(_) | ConsumeChan::Waiting { .. } | ConsumeChan::Refused { .. })
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
        let Some(consume) = self.consume_chan() else { return };
        if *consume != ConsumeChan::Qos(channel) {
            return;
        }
        *consume = ConsumeChan::Subscribing(channel);
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
        let mode = self.cfg.consume_mode;
        let Some(consume) = self.consume_chan() else { return };
        if *consume != ConsumeChan::Subscribing(channel) {
            return;
        }
        match mode {
            // A consume that was not refused holds the queue alone.
            ConsumeMode::Exclusive => *consume = ConsumeChan::Active(channel),
            ConsumeMode::SingleActive => {
                *consume = ConsumeChan::Checking(channel);
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
        let waiting = match *consume {
            ConsumeChan::Checking(c) | ConsumeChan::Waiting { channel: c, query_at: None } => c == channel,
            _ => false,
        };
        if !waiting {
            return; // late, or a delivery already settled the question
        }
        *consume = if consumers <= 1 {
            ConsumeChan::Active(channel)
        } else {
            ConsumeChan::Waiting { channel, query_at: Some(now + poll) }
        };
        self.check_handshake_done();
    }

    /// A delivery proves this consumer is the active one.
    pub(super) fn on_first_delivery(&mut self) {
        if let Some(consume) = self.consume_chan() {
            if let ConsumeChan::Subscribing(c) | ConsumeChan::Checking(c) | ConsumeChan::Waiting { channel: c, .. } =
                *consume
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
            && matches!(*consume, ConsumeChan::Subscribing(c) | ConsumeChan::Active(c) if c == channel);
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
