//! The auditor: the safety invariants of one lane, written once for every
//! test layer (core's harness, the fuzz targets, the simulation, the io
//! tests against the real broker).
//!
//! It watches a lane from outside, through what the lane was told and what
//! it asked for: every input fed to [`crate::Lane::handle`], the result, and
//! every output polled after it. It keeps a model of what the lane has been
//! told (connections, channels, deliveries, commits, confirms) and judges
//! each output against it, so it decides every question from the history
//! alone, whatever the lane was fed. The invariants, each a named function
//! in [`invariants`]:
//!
//! - `err_only_for_misuse`, `misuse_changes_nothing`: `handle` returns `Err`
//!   exactly when the caller misused the API, and then changes nothing;
//! - `no_stale_tag_ack`: an ack or reject names a live consuming channel
//!   that delivered that tag and has not settled it;
//! - `no_ack_before_durable`: an ack covers only tasks whose insert the spool
//!   reported committed; `reject_only_malformed`: a reject only deliveries
//!   that are not tasks;
//! - `no_second_handoff`: a task is handed off only once its spool write is
//!   issued (before it is durable), and not again while it is in the inbox,
//!   the window of recently completed ids, or its result is in the outbox;
//!   recovered tasks only at start;
//! - `no_result_dropped_before_confirm`: a result leaves the outbox only
//!   while the broker's ack of a publish of that same result is handled,
//!   and not if the broker returned it;
//! - `no_publish_before_durable`: results are published only once their
//!   completion is committed, to `results` with the endpoint's key, with
//!   confirm tags counting from 1;
//! - `no_result_before_task_durable`: a result is published only once its
//!   task's spool write is committed too;
//! - `spool_accepts_every_write`: writes are numbered without gaps, form a
//!   valid history for [`MemorySpool`](crate::MemorySpool), and the spool
//!   never refuses one;
//! - `commands_fit_the_session`: fresh connection and channel ids, commands
//!   only on live channels, the endpoint's own queue;
//! - `no_intake_after_shutdown`: after `Shutdown` no delivery is spooled and
//!   no connection is made;
//! - `counters_match_history`: the lane's sizes, counters and status agree
//!   with the history.
//!
//! A [`Violation`] names the invariant and what happened; the first one
//! ends the audit (the model may be wrong after it).

mod invariants;
mod model;

use std::time::Instant;

use crate::{Config, Counters, Input, Lane, Output, SpoolSnapshot, Status, UsageError};

pub use invariants::*;
pub use model::Auditor;

/// A broken safety invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's function name.
    pub invariant: &'static str,
    /// What happened.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

impl std::error::Error for Violation {}

/// `Err(Violation)` unless `cond`.
pub(crate) fn ensure(cond: bool, invariant: &'static str, detail: impl FnOnce() -> String) -> Result<(), Violation> {
    if cond {
        Ok(())
    } else {
        Err(Violation { invariant, detail: detail() })
    }
}

/// What the auditor needs of the lane from just before a `handle` call.
#[derive(Clone, Debug)]
pub struct Before {
    status: Status,
    counters: Counters,
}

impl Before {
    /// Takes it from `lane`.
    pub fn of(lane: &Lane) -> Self {
        Self { status: lane.status().clone(), counters: *lane.counters() }
    }

    /// From what an observer was told of the lane before the call.
    pub fn from_parts(status: Status, counters: Counters) -> Self {
        Self { status, counters }
    }
}

/// A lane and its auditor together: feed inputs, get the outputs, with
/// every step audited. For tests and fuzz targets that drive a lane
/// directly; shells that own their lane call [`Auditor::step`] themselves.
#[derive(Debug)]
pub struct Audited {
    /// The lane under audit.
    pub lane: Lane,
    /// Its auditor.
    pub auditor: Auditor,
}

impl Audited {
    /// A lane built from `cfg` and `snapshot` at `now`, audited from its
    /// first output; also returns those outputs.
    pub fn new(now: Instant, cfg: Config, snapshot: SpoolSnapshot) -> Result<(Self, Vec<Output>), Violation> {
        let mut lane = Lane::new(now, cfg.clone(), snapshot.clone())
            .map_err(|e| Violation { invariant: "valid_config", detail: e.to_string() })?;
        let mut auditor = Auditor::new(&cfg, &snapshot);
        let outputs = drain(&mut lane);
        auditor.begin(&lane, &outputs)?;
        Ok((Self { lane, auditor }, outputs))
    }

    /// Feeds `input` at `now`: the lane's answer (its outputs, or its
    /// misuse error), or the invariant it broke.
    pub fn feed(&mut self, now: Instant, input: Input) -> Result<Result<Vec<Output>, UsageError>, Violation> {
        let before = Before::of(&self.lane);
        let result = self.lane.handle(now, input.clone());
        let outputs = drain(&mut self.lane);
        self.auditor.step(&before, now, &input, &result, &outputs, &self.lane)?;
        Ok(result.map(|()| outputs))
    }
}

/// Every output the lane has, in order.
pub fn drain(lane: &mut Lane) -> Vec<Output> {
    std::iter::from_fn(|| lane.poll()).collect()
}
