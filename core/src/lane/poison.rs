//! Poison messages (SPEC §4): a delivery the AMQP client cannot decode (a
//! `message_id` or header that is not UTF-8: amqprs drops the whole
//! connection) must not stall the lane.
//!
//! The lane cannot see such a delivery; it sees its connection die. The
//! broker requeues the message at the head of the queue, so the next
//! session meets it at once and dies soon after `basic.consume`. A session
//! lost within `poison_window` of its consume is suspect: before the next
//! connection, the lane asks the shell for a scan (`Amqp::Quarantine`) of
//! the head of the queue, up to the prefetch window, by a client that
//! decodes nothing it need not (tasklane's own in the io crate). The scan
//! moves every message the lane's client could not decode to
//! `tasklane.dead` with the reason and gives the others back; then the
//! lane connects again at once. A scan that finds nothing (the loss was
//! the network's) costs a backoff, so a flapping link does not scan in a
//! loop. Good tasks are never dead-lettered by it; on quorum queues the
//! delivery limit `tasklane provision` sets is a second net.

use std::time::Instant;

use crate::output::{Amqp, Event, Output};

use super::session::Conn;
use super::Lane;

impl Lane {
    /// The session just lost was young: scan the head of the queue before
    /// connecting again.
    pub(super) fn start_poison_scan(&mut self, now: Instant) {
        let Conn::Down { since, reason, .. } = &self.conn else { return };
        let (since, reason) = (*since, reason.clone());
        self.ids_scan += 1;
        let scan = self.ids_scan;
        let reason = format!("{reason}; looking for a task the client cannot decode");
        self.conn = Conn::Down { retry_at: now + self.cfg.quarantine_timeout, since, reason, scan: Some(scan) };
        let address = self.rounds.current().unwrap_or(0);
        let queue = self.cfg.endpoint.task_queue();
        let max = u32::from(self.cfg.prefetch);
        self.out.push_back(Output::Amqp(Amqp::Quarantine { scan, address, queue, max }));
    }

    pub(super) fn on_poison_scan_done(
        &mut self,
        now: Instant,
        scan: u64,
        quarantined: Vec<String>,
        scanned: u32,
        error: Option<String>,
    ) {
        let Conn::Down { scan: Some(current), since, reason, .. } = &self.conn else { return };
        if *current != scan {
            return; // a scan given up already
        }
        let (since, reason) = (*since, reason.clone());
        self.counters.quarantined += quarantined.len() as u64;
        let found = !quarantined.is_empty();
        if found {
            self.emit(Event::Quarantined { message_ids: quarantined, scanned });
        } else if let Some(error) = error {
            self.emit(Event::QuarantineFailed { reason: error });
        }
        // Found: the queue's head is clear, connect at once. Nothing found
        // (or no scan possible): the loss was something else; back off.
        let retry_at = if found { now } else { self.back_off(now) };
        self.conn = Conn::Down { retry_at, since, reason, scan: None };
    }

    pub(super) fn on_poison_scan_timeout(&mut self, now: Instant) {
        let Conn::Down { since, reason, .. } = &self.conn else { return };
        let (since, reason) = (*since, reason.clone());
        self.emit(Event::QuarantineFailed { reason: "the scan did not answer in time".into() });
        let retry_at = self.back_off(now);
        self.conn = Conn::Down { retry_at, since, reason, scan: None };
    }
}
