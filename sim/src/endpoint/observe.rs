//! Watches the lane inside a simulated endpoint's driver: core's auditor
//! judges every step (the same lane invariants as every other test layer),
//! and what the oracles and the trace need is recorded in the endpoint's
//! history, free of wall-clock values.

use std::time::Instant;

use tasklane_core::audit::{Auditor, Before};
use tasklane_core::{Amqp, Counters, Event, Input, Lane, Output, SpoolSnapshot, Status, UsageError};
use tasklane_io::endpoint::Observer;

use super::{Record, SimEndpoint};

pub(super) struct SimObserver {
    ep: SimEndpoint,
    life: u64,
    auditor: Option<Auditor>,
}

impl SimObserver {
    pub(super) fn new(ep: SimEndpoint, life: u64) -> Self {
        Self { ep, life, auditor: None }
    }

    fn outputs(&self, outputs: &[Output]) {
        for out in outputs {
            match out {
                Output::Handoff(h) => {
                    self.ep.record(Record::Handoff { life: self.life, task: h.task.id.clone(), recovered: h.recovered })
                }
                Output::Event(Event::Status(s)) => {
                    self.ep.record(Record::Status { life: self.life, status: status_text(s) })
                }
                Output::Event(Event::SpoolFull { reason }) => {
                    self.ep.record(Record::SpoolFull { life: self.life, reason: Some(reason.clone()) })
                }
                Output::Amqp(Amqp::Disconnect { reason, .. }) => self.ep.note(format!("dropped: {reason}")),
                Output::Event(Event::SpoolRecovered) => {
                    self.ep.record(Record::SpoolFull { life: self.life, reason: None })
                }
                _ => {}
            }
        }
    }

    fn violated(&mut self, v: tasklane_core::audit::Violation) {
        self.ep.record(Record::Violation { life: self.life, invariant: v.invariant, detail: v.detail });
        self.auditor = None; // the first violation ends the audit
    }
}

impl Observer for SimObserver {
    fn started(&mut self, lane: &Lane, snapshot: &SpoolSnapshot, outputs: &[Output]) {
        let mut auditor = Auditor::new(lane.config(), snapshot);
        self.outputs(outputs);
        match auditor.begin(lane, outputs) {
            Ok(()) => self.auditor = Some(auditor),
            Err(v) => self.violated(v),
        }
    }

    fn handled(
        &mut self,
        status: &Status,
        counters: &Counters,
        now: Instant,
        input: &Input,
        result: &Result<(), UsageError>,
        outputs: &[Output],
        lane: &Lane,
    ) {
        self.outputs(outputs);
        let Some(auditor) = self.auditor.as_mut() else { return };
        let before = Before::from_parts(status.clone(), *counters);
        if let Err(v) = auditor.step(&before, now, input, result, outputs, lane) {
            self.violated(v);
        }
    }
}

/// A status without its wall-clock field, for the history.
fn status_text(s: &Status) -> String {
    match s {
        Status::Disconnected { reason, .. } => format!("Disconnected({reason})"),
        other => format!("{other:?}"),
    }
}
