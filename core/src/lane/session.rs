//! The connection and its two channels (one consumes, see [`super::consumer`],
//! one publishes), and failover: reconnect over the broker addresses with
//! backoff and jitter, the connect and handshake timeouts, the
//! blocked-connection timeout.
//!
//! Any loss (socket, heartbeat, connection or channel close, handshake
//! timeout, broker protocol violation) takes the same path: give up the
//! connection, let the broker requeue what was not acked, keep the outbox,
//! and connect again after a backoff. The application keeps its tasks.

use std::time::{Duration, Instant};

use crate::backoff;
use crate::ids::{ChannelId, ConnId};
use crate::output::{Amqp, Event, Output, Status};

use super::consumer::ConsumeChan;
use super::Lane;

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
    pub(super) conn: ConnId,
    pub(super) consume: ConsumeChan,
    publish: PublishChan,
    /// Since when and why the broker blocks this connection.
    blocked: Option<(Instant, String)>,
    /// `blocked` was inferred from publishes without confirms (not sent by
    /// the broker): the next confirm ends it.
    stalled: bool,
    /// The session must be consuming (or standing by) and ready to publish
    /// by then, or it is given up.
    handshake_deadline: Option<Instant>,
    /// When `Connected` came, to tell a lasting session from a flapping one.
    connected_at: Instant,
    /// When `basic.consume` was sent: a session lost soon after it may
    /// have met a delivery its client could not decode.
    pub(super) consumed_at: Option<Instant>,
}

#[derive(Debug)]
pub(super) enum Conn {
    /// No connection; the next attempt is due at `retry_at`.
    Down {
        retry_at: Instant,
        since: Instant,
        reason: String,
        /// A poison scan under way (see [`super::poison`]): `retry_at` is
        /// its deadline, and no connection is made before it answers.
        scan: Option<u64>,
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
    pub(super) fn next_channel(&mut self) -> ChannelId {
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

    /// Whether `conn` names an attempt this lane made (for misuse checks).
    pub(super) fn issued_conn(&self, conn: ConnId) -> bool {
        conn.0 <= self.ids.conn
    }

    pub(super) fn on_connected(&mut self, now: Instant, conn: ConnId) {
        let Conn::Connecting { conn: current, .. } = self.conn else { return };
        if current != conn {
            return;
        }
        self.counters.connections += 1;
        let (consume, publish) = (self.next_channel(), self.next_channel());
        self.conn = Conn::Up(Box::new(Session {
            conn,
            consume: ConsumeChan::Opening(consume),
            publish: PublishChan::Opening(publish),
            blocked: None,
            stalled: false,
            handshake_deadline: Some(now + self.cfg.handshake_timeout),
            connected_at: now,
            consumed_at: None,
        }));
        self.out.push_back(Output::Amqp(Amqp::OpenChannel { channel: consume }));
        self.out.push_back(Output::Amqp(Amqp::OpenChannel { channel: publish }));
    }

    pub(super) fn on_connect_failed(&mut self, now: Instant, conn: ConnId, reason: String) {
        if matches!(self.conn, Conn::Connecting { conn: c, .. } if c == conn) {
            self.go_down(now, format!("connect failed: {reason}"));
        }
    }

    pub(super) fn on_connection_lost(&mut self, now: Instant, conn: ConnId, reason: String) {
        match &self.conn {
            Conn::Connecting { conn: c, .. } if *c == conn => self.go_down(now, format!("connect failed: {reason}")),
            Conn::Up(s) if s.conn == conn => {
                let young = s.consumed_at.is_some_and(|at| now < at + self.cfg.poison_window);
                self.go_down(now, format!("connection lost: {reason}"));
                if young {
                    self.start_poison_scan(now);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_blocked(&mut self, now: Instant, conn: ConnId, reason: String) {
        if let Conn::Up(s) = &mut self.conn {
            if s.conn == conn && (s.blocked.is_none() || s.stalled) {
                let since = s.blocked.as_ref().map_or(now, |(since, _)| *since);
                s.blocked = Some((since, reason));
                s.stalled = false;
            }
        }
    }

    pub(super) fn on_unblocked(&mut self, now: Instant, conn: ConnId) {
        if let Conn::Up(s) = &mut self.conn {
            if s.conn == conn {
                s.blocked = None;
                s.stalled = false;
                self.pump(now);
            }
        }
    }

    /// Publishes have waited for a confirm since `since`, for longer than
    /// `confirm_stall`: count the connection as blocked since then.
    fn start_confirm_stall(&mut self, since: Instant) {
        let secs = self.cfg.confirm_stall.as_secs_f64();
        if let Conn::Up(s) = &mut self.conn {
            if s.blocked.is_none() {
                let reason = format!(
                    "no publish confirm for {secs:.0} s (a broker alarm? amqprs cannot hear connection.blocked)"
                );
                s.blocked = Some((since, reason));
                s.stalled = true;
            }
        }
    }

    /// A confirm arrived: a blocked status inferred from their absence ends.
    pub(super) fn end_confirm_stall(&mut self, now: Instant) {
        if let Conn::Up(s) = &mut self.conn {
            if s.stalled {
                s.blocked = None;
                s.stalled = false;
                self.pump(now);
            }
        }
    }

    /// When publishes without a confirm will count as blocked.
    fn confirm_stall_deadline(&self) -> Option<Instant> {
        self.outbox.confirm_wait().map(|since| since + self.cfg.confirm_stall)
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
        let publish_channel = match s.publish {
            PublishChan::Opening(c) | PublishChan::Selecting(c) | PublishChan::Ready(c) => Some(c),
            PublishChan::Closed { .. } => None,
        };
        if s.consume.channel() == Some(channel) {
            self.on_consume_channel_closed(now, channel, code, text);
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
    pub(super) fn drop_connection(&mut self, now: Instant, reason: String) {
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
        if self.shutdown.is_some() {
            self.conn = Conn::Closed;
            return;
        }
        let delay = if self.rounds.failed(&mut self.rng) {
            let delay = backoff::delay(self.cfg.reconnect, self.ids.failures, &mut self.rng);
            self.ids.failures = self.ids.failures.saturating_add(1);
            delay
        } else {
            Duration::ZERO
        };
        self.conn = Conn::Down { retry_at: now + delay, since, reason, scan: None };
    }

    /// Backs off before the next attempt (a failure without a session).
    pub(super) fn back_off(&mut self, now: Instant) -> Instant {
        let delay = backoff::delay(self.cfg.reconnect, self.ids.failures, &mut self.rng);
        self.ids.failures = self.ids.failures.saturating_add(1);
        now + delay
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

    pub(super) fn check_handshake_done(&mut self) {
        if let Conn::Up(s) = &mut self.conn {
            if s.consume.settled() && matches!(s.publish, PublishChan::Ready(_) | PublishChan::Closed { .. }) {
                s.handshake_deadline = None;
            }
        }
    }

    /// Gives up the connection or attempt, if any, on purpose (shutdown).
    pub(super) fn close_connection(&mut self, reason: &str) {
        let conn = match &self.conn {
            Conn::Up(s) => Some(s.conn),
            Conn::Connecting { conn, .. } => Some(*conn),
            _ => None,
        };
        if let Some(conn) = conn {
            self.out.push_back(Output::Amqp(Amqp::Disconnect { conn, reason: reason.into() }));
        }
        self.intake.stop();
        self.stop_publishing();
        self.conn = Conn::Closed;
    }

    /// Runs every deadline that has passed.
    pub(super) fn on_timers(&mut self, now: Instant) {
        match &mut self.conn {
            Conn::Down { retry_at, scan: Some(_), .. } if *retry_at <= now => self.on_poison_scan_timeout(now),
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
                } else if let Some(since) = self.outbox.confirm_wait() {
                    if since + self.cfg.confirm_stall <= now {
                        self.start_confirm_stall(since);
                        return self.on_timers(now);
                    }
                }
                let reopen_publish = matches!(s.publish, PublishChan::Closed { retry_at } if retry_at <= now);
                self.on_consume_timers(now);
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
                let reopen = match s.publish {
                    PublishChan::Closed { retry_at } => Some(retry_at),
                    _ => None,
                };
                let blocked = match &s.blocked {
                    Some((since, _)) => Some(*since + self.cfg.blocked_timeout),
                    None => self.confirm_stall_deadline(),
                };
                [s.handshake_deadline, s.consume.deadline(), reopen, blocked].into_iter().flatten().min()
            }
            Conn::Closed => None,
        }
    }

    pub(super) fn derive_status(&self) -> Status {
        if self.shutdown.is_some() {
            return Status::Closed;
        }
        match &self.conn {
            Conn::Closed => Status::Closed,
            Conn::Down { since, reason, .. } => Status::Disconnected { reason: reason.clone(), since: *since },
            Conn::Connecting { .. } => Status::Connecting,
            Conn::Up(s) => match (&s.blocked, s.consume) {
                (Some((_, reason)), _) => Status::Blocked { reason: reason.clone() },
                (None, ConsumeChan::Active(_)) => Status::Consuming,
                (None, ConsumeChan::Waiting { .. } | ConsumeChan::Uncounted(_) | ConsumeChan::Refused { .. }) => {
                    Status::Standby
                }
                (None, _) => Status::Connecting,
            },
        }
    }
}
