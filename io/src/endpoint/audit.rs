//! Core's auditor watching a running endpoint (feature `audit`): the same
//! lane invariants the core harness, the fuzz targets and the simulation
//! check, here judged on the real endpoint's inputs and outputs, against a
//! real broker and a real spool.
//!
//! ```no_run
//! # async fn t(cfg: tasklane_io::endpoint::EndpointConfig) {
//! use tasklane_io::endpoint::{audit::Audit, Endpoint};
//! let (audit, report) = Audit::new();
//! let endpoint = Endpoint::open_observed(cfg, audit).await.unwrap();
//! // ... run the test ...
//! endpoint.shutdown().await;
//! report.assert_clean();
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tasklane_core::audit::{Auditor, Before, Violation};
use tasklane_core::{Counters, Input, Lane, Output, SpoolSnapshot, Status, UsageError};

use super::ports::Observer;

#[derive(Debug, Default)]
struct Shared {
    auditor: Option<Auditor>,
    steps: u64,
    violation: Option<Violation>,
}

/// The observer: audits every step of the lane it is plugged into.
#[derive(Debug)]
pub struct Audit(Arc<Mutex<Shared>>);

/// What the audit found, readable while and after the endpoint runs.
#[derive(Clone, Debug)]
pub struct AuditReport(Arc<Mutex<Shared>>);

impl Audit {
    /// An observer and the report it fills.
    pub fn new() -> (Self, AuditReport) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        (Self(shared.clone()), AuditReport(shared))
    }
}

impl AuditReport {
    /// The first violation, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.0.lock().expect("audit lock").violation.clone()
    }

    /// How many `handle` calls were audited.
    pub fn steps(&self) -> u64 {
        self.0.lock().expect("audit lock").steps
    }

    /// Panics with the violation, if any, or when nothing was audited.
    pub fn assert_clean(&self) {
        if let Some(v) = self.violation() {
            panic!("the endpoint broke a lane invariant: {v}");
        }
        assert!(self.steps() > 0, "the audit saw no step: was it plugged in?");
    }
}

impl Observer for Audit {
    fn started(&mut self, lane: &Lane, snapshot: &SpoolSnapshot, outputs: &[Output]) {
        let mut s = self.0.lock().expect("audit lock");
        let mut auditor = Auditor::new(lane.config(), snapshot);
        if let Err(v) = auditor.begin(lane, outputs) {
            s.violation.get_or_insert(v);
        }
        s.auditor = Some(auditor);
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
        let mut s = self.0.lock().expect("audit lock");
        s.steps += 1;
        let Some(auditor) = s.auditor.as_mut() else { return };
        let before = Before::from_parts(status.clone(), *counters);
        if let Err(v) = auditor.step(&before, now, input, result, outputs, lane) {
            s.violation.get_or_insert(v);
        }
    }
}
