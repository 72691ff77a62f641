//! Status reports (SPEC §4, "Observability"): on a timer
//! ([`crate::Config::report_interval`]) and on every status change, while
//! the publishing channel is up and the broker does not block it. A report
//! takes a confirm tag on the publishing channel (the broker numbers every
//! publish there) but is never tracked: its confirm, nack or return finds
//! no outbox entry and changes nothing. Without a channel no report is
//! owed; the first one goes out as soon as a channel is ready again.

use std::time::Instant;

use crate::ids::PublishTag;
use crate::output::{Amqp, Output, Report};

use super::outbox::RESULTS_EXCHANGE;
use super::Lane;

/// The report timer: when the next one is due, and how many were sent.
#[derive(Debug, Default)]
pub(super) struct Reports {
    /// The next report by the timer; `None` while none can be sent (the
    /// next chance sends one at once).
    next: Option<Instant>,
    sent: u64,
}

impl Lane {
    /// Sends a report if one is due (`changed`: the status just changed).
    pub(super) fn report_if_due(&mut self, now: Instant, changed: bool) {
        let Some(interval) = self.cfg.report_interval else { return };
        let Some(channel) = self.outbox.channel() else {
            self.reports.next = None;
            return;
        };
        if self.is_blocked() {
            return;
        }
        if !changed && self.reports.next.is_some_and(|at| at > now) {
            return;
        }
        let seq = self.outbox.take_tag();
        self.reports.sent += 1;
        self.reports.next = Some(now + interval);
        let report = Box::new(Report {
            endpoint: self.cfg.endpoint.clone(),
            seq: self.reports.sent,
            status: self.status.clone(),
            counters: self.counters,
            inbox: self.inbox.len(),
            outbox: self.outbox.len(),
            spool_full: self.spool_full().map(str::to_owned),
            interval,
        });
        self.out.push_back(Output::Amqp(Amqp::PublishReport {
            tag: PublishTag { channel, seq },
            exchange: RESULTS_EXCHANGE,
            routing_key: self.cfg.endpoint.status_key(),
            report,
        }));
    }

    /// When the timer's next report is due, if one can be sent then.
    pub(super) fn report_deadline(&self) -> Option<Instant> {
        if self.is_blocked() || self.outbox.channel().is_none() {
            return None;
        }
        self.reports.next
    }
}
