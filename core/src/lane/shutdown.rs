//! Shutdown, bounded: take no more deliveries, let the spool commit what
//! was issued (acking what that makes durable), then close the connection;
//! [`Lane::is_drained`] tells the shell when it may stop. At
//! `Config::shutdown_grace` the lane stops waiting: writes not committed by
//! then belong to tasks the broker never saw acked, so it delivers them
//! again to the next spool lifetime.

use std::time::Instant;

use crate::output::Event;

use super::session::Conn;
use super::Lane;

impl Lane {
    pub(super) fn on_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(now + self.cfg.shutdown_grace);
        self.intake.close();
        if !matches!(self.conn, Conn::Up(_)) {
            // Nothing to ack on: no session to keep.
            self.close_connection("shutdown");
        }
        self.settle_shutdown(now);
    }

    /// After every input while shutting down: close the session once every
    /// ack it can still send is sent, and stop waiting at the deadline.
    pub(super) fn settle_shutdown(&mut self, now: Instant) {
        let Some(deadline) = self.shutdown else { return };
        let expired = now >= deadline;
        let acks_owed = self.intake.owes_acks();
        if matches!(self.conn, Conn::Up(_) | Conn::Connecting { .. }) && (expired || !acks_owed) {
            self.close_connection("shutdown");
        }
        if expired && !self.shutdown_reported && self.committed < self.issued {
            self.shutdown_reported = true;
            self.emit(Event::ShutdownIncomplete { uncommitted: self.issued - self.committed });
        }
    }

    /// Whether a shutdown has run its course: the connection is closed and
    /// every spool write issued is committed, or the grace is over. The
    /// shell stops driving the lane then.
    pub fn is_drained(&self) -> bool {
        let Some(deadline) = self.shutdown else { return false };
        matches!(self.conn, Conn::Closed) && (self.committed >= self.issued || self.now >= deadline)
    }

    pub(super) fn shutdown_deadline(&self) -> Option<Instant> {
        self.shutdown.filter(|_| !self.is_drained())
    }
}
