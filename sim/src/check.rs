//! Run your own worker in the simulation, from a plain `#[test]`: the
//! endpoint users ship, your worker over it, the seeded faults, every
//! invariant checked, and a one-line repro of any failure.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use tasklane_core::ResultStatus;
//! use tasklane_sim::check::Check;
//! use tasklane_sim::worker::worker;
//! use tasklane_sim::workload::Workload;
//!
//! // #[test]
//! fn my_worker_survives_the_faults() {
//!     let doubler = worker(|endpoint, _ctx| async move {
//!         while let Some(task) = endpoint.next_task().await {
//!             let n: u64 = std::str::from_utf8(&task.body).unwrap().parse().unwrap();
//!             tokio::time::sleep(Duration::from_millis(5)).await; // work
//!             let _ = endpoint.complete(&task.id, ResultStatus::Ok, (2 * n).to_string()).await;
//!         }
//!     });
//!     let workload = Workload::new(
//!         30,
//!         |i, _rng| (None, Bytes::from(i.to_string())),
//!         |task, status, body| {
//!             let n: u64 = std::str::from_utf8(&task.body).unwrap().parse().unwrap();
//!             let want = (2 * n).to_string();
//!             (status == ResultStatus::Ok && body == want.as_bytes()).then_some(()).ok_or(format!("want {want}"))
//!         },
//!     );
//!     Check::new(doubler).workload(workload).seeds(0..20).assert_passes();
//! }
//! ```
//!
//! On failure the panic message carries the failing seed's summary, its
//! faults, and a command that runs that seed alone:
//! `TASKLANE_SIM_SEEDS=7 cargo test -p <your crate> --release -- <test> --exact`.

use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use crate::run::{Report, RunOptions};
use crate::sweep::{parse_seeds, sweep, Tally};
use crate::worker::Worker;
use crate::workload::Workload;

/// The variable that narrows a check to the seeds of a repro line.
pub const SEEDS_VAR: &str = "TASKLANE_SIM_SEEDS";

type Repro = Rc<dyn Fn(&Report) -> String>;

/// A simulation of a user's worker over a range of seeds.
#[derive(Clone)]
pub struct Check {
    worker: Worker,
    workload: Workload,
    seeds: Range<u64>,
    heal_limit: Duration,
    verbose: bool,
    repro: Option<Repro>,
}

impl Check {
    /// `worker` in every endpoint, the default workload, seeds `0..20`.
    pub fn new(worker: Worker) -> Self {
        Check {
            worker,
            workload: Workload::default(),
            seeds: 0..20,
            heal_limit: Duration::from_secs(60),
            verbose: false,
            repro: None,
        }
    }

    /// What the service submits and expects of the results.
    pub fn workload(mut self, workload: Workload) -> Self {
        self.workload = workload;
        self
    }

    /// The seeds to run (`TASKLANE_SIM_SEEDS` overrides them).
    pub fn seeds(mut self, seeds: Range<u64>) -> Self {
        self.seeds = seeds;
        self
    }

    /// Most simulated time the heal phase may take to converge.
    pub fn heal_limit(mut self, limit: Duration) -> Self {
        self.heal_limit = limit;
        self
    }

    /// Prints each run's injected faults.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// How a failure's repro line is written (the default names the test
    /// and the crate it runs in).
    pub fn repro(mut self, repro: impl Fn(&Report) -> String + 'static) -> Self {
        self.repro = Some(Rc::new(repro));
        self
    }

    /// The seeds a run covers: `TASKLANE_SIM_SEEDS` if set, else the
    /// configured ones. A bad value is a panic naming it.
    pub fn effective_seeds(&self) -> Range<u64> {
        match std::env::var(SEEDS_VAR) {
            Ok(v) if !v.trim().is_empty() => parse_seeds(&v).unwrap_or_else(|e| panic!("{SEEDS_VAR}={v}: {e}")),
            _ => self.seeds.clone(),
        }
    }

    /// The options of one seed's run.
    pub fn options(&self, seed: u64) -> RunOptions {
        RunOptions {
            heal_limit: self.heal_limit,
            worker: self.worker.clone(),
            workload: self.workload.clone(),
            ..RunOptions::seed(seed)
        }
    }

    /// Runs every seed, printing one line each (the test harness shows
    /// them when the test fails), and returns the tally.
    pub fn run(&self) -> Tally {
        let repro = self.repro.clone().unwrap_or_else(|| Rc::new(test_repro));
        sweep(self.effective_seeds(), &|seed| self.options(seed), self.verbose, &*repro, &mut |line| println!("{line}"))
    }

    /// [`Check::run`], panicking with the first failure: its summary, its
    /// faults and its repro line.
    pub fn assert_passes(&self) {
        let tally = self.run();
        if let Some(r) = tally.failures.first() {
            let repro = self.repro.clone().unwrap_or_else(|| Rc::new(test_repro));
            panic!(
                "{} of {} seeds failed; first: {}\n  faults: {}\n  reproduce: {}",
                tally.failures.len(),
                tally.runs,
                r.summary(),
                r.fault_log.join("; "),
                repro(r)
            );
        }
    }
}

/// The repro line of a failure inside `cargo test`: the crate and the test
/// come from the environment cargo sets and the test thread's name.
fn test_repro(r: &Report) -> String {
    let package = std::env::var("CARGO_PKG_NAME").map(|p| format!(" -p {p}")).unwrap_or_default();
    let test =
        std::thread::current().name().filter(|n| *n != "main").map(|n| format!(" -- {n} --exact")).unwrap_or_default();
    format!("{SEEDS_VAR}={} cargo test{package} --release{test}", r.seed)
}
