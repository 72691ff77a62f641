//! The connection and its two channels (one consumes, one publishes), and
//! failover: reconnect with backoff and jitter, standby while another
//! endpoint holds the queue, the blocked-connection timeout.
//!
//! Any loss (socket, heartbeat, connection or channel close, handshake
//! timeout, broker protocol violation) takes the same path: give up the
//! connection, let the broker requeue what was not acked, keep the outbox,
//! and connect again after a backoff. The application keeps its tasks.

use std::time::{Duration, Instant};

use crate::backoff;
use crate::config::ConsumeMode;
use crate::error::UsageError;
use crate::ids::{ChannelId, ConnId};
use crate::output::{Amqp, Event, Output, Status};

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
    /// Receiving deliveries.
    Active(ChannelId),
    /// Consumer registered, another one is active (single active consumer).
    Waiting(ChannelId),
    /// Consume refused (exclusive consumer present); try again at the time.
    Refused { retry_at: Instant },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PublishChan {
    Opening(ChannelId),
    Selecting(ChannelId),
    Ready(ChannelId),
    /// The broker closed the publishing channel (e.g. 404: no `results`
    /// exchange). Intake goes on; a new channel is opened at `retry_at`.
    Closed {
        retry_at: Instant,
    },
}

#[derive(Debug)]
pub(super) struct Session {
    conn: ConnId,
    consume: ConsumeChan,
    publish: PublishChan,
    /// Since when and why the broker blocks this connection.
    blocked: Option<(Instant, String)>,
    /// The session must be consuming (or standing by) and ready to publish
    /// by then, or it is given up.
    handshake_deadline: Option<Instant>,
    /// When `Connected` came, to tell a lasting session from a flapping one.
    connected_at: Instant,
}

#[derive(Debug)]
pub(super) enum Conn {
    /// No connection; the next attempt is due at `retry_at`.
    Down {
        retry_at: Instant,
        since: Instant,
        reason: String,
    },
    /// `Connect` issued.
    Connecting {
        conn: ConnId,
        deadline: Instant,
        since: Option<(Instant, String)>,
    },
    Up(Box<Session>),
    /// Shut down on request.
    Closed,
}

/// Counters of ids handed out, kept apart from `Conn` so that they survive
/// every state change.
#[derive(Debug, Default)]
pub(super) struct IdSource {
    conn: u64,
    channel: u64,
    /// Consecutive failures, for the reconnect backoff.
    failures: u32,
    /// Consecutive publishing-channel closes, for its own backoff.
    publish_failures: u32,
}

impl Lane {
    fn next_channel(&mut self) -> ChannelId {
        self.ids.channel += 1;
        ChannelId(self.ids.channel)
    }

    /// Starts a connection attempt.
    pub(super) fn connect(&mut self, now: Instant) {
        let since = match std::mem::replace(&mut self.conn, Conn::Closed) {
            Conn::Down { since, reason, .. } if !reason.is_empty() => Some((since, reason)),
            _ => None,
        };
        self.ids.conn += 1;
        let conn = ConnId(self.ids.conn);
        let address = self.rounds.pick();
        self.conn = Conn::Connecting { conn, deadline: now + self.cfg.connect_timeout, since };
        self.out.push_back(Output::Amqp(Amqp::Connect { conn, address }));
    }

    pub(super) fn on_connected(&mut self, now: Instant, conn: ConnId) -> Result<(), UsageError> {
        if conn.0 > self.ids.conn {
            return Err(UsageError::Unexpected { input: "Connected", why: "no Connect was issued with this id" });
        }
        let Conn::Connecting { conn: current, .. } = self.conn else { return Ok(()) };
        if current != conn {
            return Ok(());
        }
        self.counters.connections += 1;
        let (consume, publish) = (self.next_channel(), self.next_channel());
        self.conn = Conn::Up(Box::new(Session {
            conn,
            consume: ConsumeChan::Opening(consume),
            publish: PublishChan::Opening(publish),
            blocked: None,
            handshake_deadline: Some(now + self.cfg.handshake_timeout),
            connected_at: now,
        }));
        self.out.push_back(Output::Amqp(Amqp::OpenChannel { channel: consume }));
        self.out.push_back(Output::Amqp(Amqp::OpenChannel { channel: publish }));
        Ok(())
    }

    pub(super) fn on_connect_failed(&mut self, now: Instant, conn: ConnId, reason: String) {
        if matches!(self.conn, Conn::Connecting { conn: c, .. } if c == conn) {
            self.go_down(now, format!("connect failed: {reason}"));
        }
    }

    pub(super) fn on_connection_lost(&mut self, now: Instant, conn: ConnId, reason: String) {
        match &self.conn {
            Conn::Connecting { conn: c, .. } if *c == conn => self.go_down(now, format!("connect failed: {reason}")),
            Conn::Up(s) if s.conn == conn => self.go_down(now, format!("connection lost: {reason}")),
            _ => {}
        }
    }

    pub(super) fn on_blocked(&mut self, now: Instant, conn: ConnId, reason: String) {
        if let Conn::Up(s) = &mut self.conn {
            if s.conn == conn && s.blocked.is_none() {
                s.blocked = Some((now, reason));
            }
        }
    }

    pub(super) fn on_unblocked(&mut self, now: Instant, conn: ConnId) {
        if let Conn::Up(s) = &mut self.conn {
            if s.conn == conn {
                s.blocked = None;
                self.pump(now);
            }
        }
    }

    pub(super) fn is_blocked(&self) -> bool {
        matches!(&self.conn, Conn::Up(s) if s.blocked.is_some())
    }

    pub(super) fn on_channel_opened(&mut self, channel: ChannelId) {
        let Conn::Up(s) = &mut self.conn else { return };
        if s.consume == ConsumeChan::Opening(channel) {
            s.consume = ConsumeChan::Qos(channel);
            self.out.push_back(Output::Amqp(Amqp::Qos { channel, prefetch: self.cfg.prefetch }));
        } else if s.publish == PublishChan::Opening(channel) {
            s.publish = PublishChan::Selecting(channel);
            self.out.push_back(Output::Amqp(Amqp::ConfirmSelect { channel }));
        }
    }

    pub(super) fn on_qos_ok(&mut self, channel: ChannelId) {
        let Conn::Up(s) = &mut self.conn else { return };
        if s.consume != ConsumeChan::Qos(channel) {
            return;
        }
        s.consume = ConsumeChan::Subscribing(channel);
        #[allow(unused_mut)]
        let mut exclusive = self.cfg.consume_mode == ConsumeMode::Exclusive;
        #[cfg(feature = "sabotage")]
        if self.cfg.sabotage.never_exclusive {
            exclusive = false;
        }
        let queue = self.cfg.endpoint.task_queue();
        self.out.push_back(Output::Amqp(Amqp::Consume { channel, queue, exclusive }));
        self.intake.start(channel);
        #[cfg(feature = "sabotage")]
        self.ack_stale_tags(channel);
    }

    pub(super) fn on_consume_ok(&mut self, channel: ChannelId, active: bool) {
        let Conn::Up(s) = &mut self.conn else { return };
        if s.consume == ConsumeChan::Subscribing(channel) {
            s.consume = if active { ConsumeChan::Active(channel) } else { ConsumeChan::Waiting(channel) };
            self.check_handshake_done();
        }
    }

    pub(super) fn on_consumer_active(&mut self, channel: ChannelId) {
        let Conn::Up(s) = &mut self.conn else { return };
        if matches!(s.consume, ConsumeChan::Waiting(c) | ConsumeChan::Subscribing(c) if c == channel) {
            s.consume = ConsumeChan::Active(channel);
            self.check_handshake_done();
        }
    }

    /// A delivery proves this consumer is the active one.
    pub(super) fn on_first_delivery(&mut self) {
        if let Conn::Up(s) = &mut self.conn {
            if let ConsumeChan::Waiting(c) | ConsumeChan::Subscribing(c) = s.consume {
                s.consume = ConsumeChan::Active(c);
                self.check_handshake_done();
            }
        }
        self.session_proved_healthy();
    }

    pub(super) fn on_consume_refused(&mut self, now: Instant, channel: ChannelId, code: u16, text: String) {
        let Conn::Up(s) = &mut self.conn else { return };
        // A delivery may come before the answer to the consume and makes the
        // channel `Active`; a refusal still means the channel is gone, and
        // its unsettled deliveries with it.
        if !matches!(s.consume, ConsumeChan::Subscribing(c) | ConsumeChan::Active(c) if c == channel) {
            return;
        }
        let _ = (code, text);
        s.consume = ConsumeChan::Refused { retry_at: now + self.cfg.standby_retry };
        self.intake.stop();
        self.check_handshake_done();
    }

    pub(super) fn on_confirm_select_ok(&mut self, now: Instant, channel: ChannelId) {
        let Conn::Up(s) = &mut self.conn else { return };
        if s.publish != PublishChan::Selecting(channel) {
            return;
        }
        s.publish = PublishChan::Ready(channel);
        self.outbox.start(channel);
        self.check_handshake_done();
        self.pump(now);
    }

    pub(super) fn on_channel_closed(&mut self, now: Instant, channel: ChannelId, code: u16, text: String) {
        let Conn::Up(s) = &self.conn else { return };
        let consume_channel = match s.consume {
            ConsumeChan::Opening(c)
            | ConsumeChan::Qos(c)
            | ConsumeChan::Subscribing(c)
            | ConsumeChan::Active(c)
            | ConsumeChan::Waiting(c) => Some(c),
            ConsumeChan::Refused { .. } => None,
        };
        let publish_channel = match s.publish {
            PublishChan::Opening(c) | PublishChan::Selecting(c) | PublishChan::Ready(c) => Some(c),
            PublishChan::Closed { .. } => None,
        };
        if consume_channel == Some(channel)
            && s.consume == ConsumeChan::Subscribing(channel)
            && matches!(code, ACCESS_REFUSED | RESOURCE_LOCKED)
        {
            return self.on_consume_refused(now, channel, code, text);
        }
        if consume_channel == Some(channel) {
            self.drop_connection(now, format!("channel closed by broker: {code} {text}"));
        } else if publish_channel == Some(channel) {
            let delay = backoff::delay(self.cfg.reconnect, self.ids.publish_failures, &mut self.rng);
            self.ids.publish_failures = self.ids.publish_failures.saturating_add(1);
            if let Conn::Up(s) = &mut self.conn {
                s.publish = PublishChan::Closed { retry_at: now + delay };
            }
            self.stop_publishing();
            self.emit(Event::PublishChannelClosed { code, text });
            self.check_handshake_done();
        }
    }

    /// The broker misbehaved: report it and start over on a new connection.
    pub(super) fn protocol_violation(&mut self, now: Instant, detail: String) {
        self.emit(Event::ProtocolViolation { detail: detail.clone() });
        self.drop_connection(now, format!("protocol violation: {detail}"));
    }

    /// Closes the current connection on purpose and schedules a new one.
    fn drop_connection(&mut self, now: Instant, reason: String) {
        let conn = match &self.conn {
            Conn::Up(s) => s.conn,
            Conn::Connecting { conn, .. } => *conn,
            _ => return,
        };
        self.out.push_back(Output::Amqp(Amqp::Disconnect { conn, reason: reason.clone() }));
        self.go_down(now, reason);
    }

    /// The session (or attempt) is over: forget its channels and schedule
    /// the next attempt: at once on the next address, or after a backoff
    /// once every address has failed in a row.
    fn go_down(&mut self, now: Instant, reason: String) {
        let since = match &self.conn {
            Conn::Connecting { since: Some((since, _)), .. } => *since,
            Conn::Down { since, .. } => *since,
            _ => now,
        };
        if let Conn::Up(s) = &self.conn {
            if now >= s.connected_at + self.cfg.healthy_after {
                self.session_proved_healthy();
            }
        }
        self.counters.disconnects += 1;
        self.intake.stop();
        self.stop_publishing();
        let delay = if self.rounds.failed(&mut self.rng) {
            let delay = backoff::delay(self.cfg.reconnect, self.ids.failures, &mut self.rng);
            self.ids.failures = self.ids.failures.saturating_add(1);
            delay
        } else {
            Duration::ZERO
        };
        self.conn = Conn::Down { retry_at: now + delay, since, reason };
    }

    /// Evidence that the broker works for us (a delivery, a confirm, a
    /// session that lasted): the next failure starts the backoff from the
    /// beginning again, and the address in use is kept until it fails.
    pub(super) fn session_proved_healthy(&mut self) {
        self.ids.failures = 0;
        self.rounds.healthy();
    }

    /// A confirm arrived: the publishing channel works.
    pub(super) fn publishing_proved_healthy(&mut self) {
        self.ids.publish_failures = 0;
    }

    fn check_handshake_done(&mut self) {
        if let Conn::Up(s) = &mut self.conn {
            let consuming =
                matches!(s.consume, ConsumeChan::Active(_) | ConsumeChan::Waiting(_) | ConsumeChan::Refused { .. });
            if consuming && matches!(s.publish, PublishChan::Ready(_) | PublishChan::Closed { .. }) {
                s.handshake_deadline = None;
            }
        }
    }

    pub(super) fn on_shutdown(&mut self) {
        if let Conn::Up(s) = &self.conn {
            let conn = s.conn;
            self.out.push_back(Output::Amqp(Amqp::Disconnect { conn, reason: "shutdown".into() }));
        } else if let Conn::Connecting { conn, .. } = self.conn {
            self.out.push_back(Output::Amqp(Amqp::Disconnect { conn, reason: "shutdown".into() }));
        }
        self.intake.stop();
        self.stop_publishing();
        self.conn = Conn::Closed;
    }

    /// Runs every deadline that has passed.
    pub(super) fn on_timers(&mut self, now: Instant) {
        match &mut self.conn {
            Conn::Down { retry_at, .. } if *retry_at <= now => self.connect(now),
            Conn::Connecting { deadline, .. } if *deadline <= now => {
                self.drop_connection(now, "connect timed out".into())
            }
            Conn::Up(s) => {
                if s.handshake_deadline.is_some_and(|d| d <= now) {
                    return self.drop_connection(now, "session setup timed out".into());
                }
                if let Some((since, reason)) = &s.blocked {
                    if *since + self.cfg.blocked_timeout <= now {
                        let reason = format!("blocked by broker for too long: {reason}");
                        return self.drop_connection(now, reason);
                    }
                }
                let reopen_consume = matches!(s.consume, ConsumeChan::Refused { retry_at } if retry_at <= now);
                let reopen_publish = matches!(s.publish, PublishChan::Closed { retry_at } if retry_at <= now);
                if reopen_consume {
                    let channel = self.next_channel();
                    if let Conn::Up(s) = &mut self.conn {
                        s.consume = ConsumeChan::Opening(channel);
                    }
                    self.out.push_back(Output::Amqp(Amqp::OpenChannel { channel }));
                }
                if reopen_publish {
                    let channel = self.next_channel();
                    if let Conn::Up(s) = &mut self.conn {
                        s.publish = PublishChan::Opening(channel);
                    }
                    self.out.push_back(Output::Amqp(Amqp::OpenChannel { channel }));
                }
                self.pump(now);
            }
            _ => {}
        }
    }

    /// The earliest session deadline.
    pub(super) fn session_deadline(&self) -> Option<Instant> {
        match &self.conn {
            Conn::Down { retry_at, .. } => Some(*retry_at),
            Conn::Connecting { deadline, .. } => Some(*deadline),
            Conn::Up(s) => {
                let refused = match s.consume {
                    ConsumeChan::Refused { retry_at } => Some(retry_at),
                    _ => None,
                };
                let reopen = match s.publish {
                    PublishChan::Closed { retry_at } => Some(retry_at),
                    _ => None,
                };
                let blocked = s.blocked.as_ref().map(|(since, _)| *since + self.cfg.blocked_timeout);
                [s.handshake_deadline, refused, reopen, blocked].into_iter().flatten().min()
            }
            Conn::Closed => None,
        }
    }

    pub(super) fn derive_status(&self) -> Status {
        match &self.conn {
            Conn::Closed => Status::Closed,
            Conn::Down { since, reason, .. } => Status::Disconnected { reason: reason.clone(), since: *since },
            Conn::Connecting { .. } => Status::Connecting,
            Conn::Up(s) => match (&s.blocked, s.consume) {
                (Some((_, reason)), _) => Status::Blocked { reason: reason.clone() },
                (None, ConsumeChan::Active(_)) => Status::Consuming,
                (None, ConsumeChan::Waiting(_) | ConsumeChan::Refused { .. }) => Status::Standby,
                (None, _) => Status::Connecting,
            },
        }
    }
}
