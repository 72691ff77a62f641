//! A sweep over seeds, as the `tasklane-sim` binary, the examples and
//! [`crate::check`] run it: each seed's knobs printed first, one summary
//! line per run, a tally with the faults each class injected, and for every
//! failure the one-line command that reproduces it.

use std::ops::Range;
use std::time::Instant;

use crate::run::{run, swarm_for, Outcome, Report, RunOptions};

/// Where the lines go: stdout for the binaries; a test's captured output.
pub type Print<'a> = &'a mut dyn FnMut(&str);

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Tally {
    pub runs: u64,
    pub passed: u64,
    pub safety: u64,
    pub liveness: u64,
    pub expectation: u64,
    pub errors: u64,
    /// Per fault class: its name, runs where it was switched on, faults
    /// injected.
    pub classes: Vec<(&'static str, u64, u64)>,
    /// The failed runs, in seed order.
    pub failures: Vec<Report>,
}

impl Tally {
    /// The closing lines: the tally, the fault classes, each failure with
    /// its repro line (`repro` writes it).
    pub fn summary(&self, secs: f64, repro: &dyn Fn(&Report) -> String) -> Vec<String> {
        let mut lines = vec![format!(
            "{} runs: {} passed, {} failed (safety {}, liveness {}, expectation {}, error {}); {:.1}s, {:.0} seeds/min",
            self.runs,
            self.passed,
            self.runs - self.passed,
            self.safety,
            self.liveness,
            self.expectation,
            self.errors,
            secs,
            self.runs as f64 * 60.0 / secs.max(1e-9)
        )];
        let classes: Vec<String> =
            self.classes.iter().map(|(n, runs, injected)| format!("{n} {runs} runs/{injected} injected")).collect();
        lines.push(format!("fault classes: {}", classes.join(", ")));
        for r in &self.failures {
            lines.push(format!("FAILED seed={}: {}\n    reproduce: {}", r.seed, r.outcome, repro(r)));
        }
        lines
    }
}

/// Runs every seed of `seeds` with the options `options` makes for it.
pub fn sweep(
    seeds: Range<u64>,
    options: &dyn Fn(u64) -> RunOptions,
    verbose: bool,
    repro: &dyn Fn(&Report) -> String,
    print: Print<'_>,
) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    for seed in seeds {
        let opts = options(seed);
        let mut swarm = swarm_for(seed, opts.sabotage);
        if let Some(tasks) = opts.workload.tasks {
            swarm.tasks = tasks;
        }
        print(&format!("seed={seed} swarm: {swarm}"));
        let report = run(&opts);
        if verbose {
            for line in &report.fault_log {
                print(&format!("    {line}"));
            }
        }
        print(&report.summary());
        tally.runs += 1;
        let on = swarm.faults();
        for (i, (name, injected)) in report.faults.by_class().into_iter().enumerate() {
            if tally.classes.len() <= i {
                tally.classes.push((name, 0, 0));
            }
            tally.classes[i].1 += u64::from(on.contains(&name));
            tally.classes[i].2 += u64::from(injected);
        }
        match &report.outcome {
            Outcome::Pass => tally.passed += 1,
            Outcome::Safety { .. } => tally.safety += 1,
            Outcome::Liveness { .. } => tally.liveness += 1,
            Outcome::Expectation { .. } => tally.expectation += 1,
            Outcome::Error(_) => tally.errors += 1,
        }
        if !report.outcome.passed() {
            print(&format!("    reproduce: {}", repro(&report)));
            tally.failures.push(report);
        }
    }
    for line in tally.summary(started.elapsed().as_secs_f64(), repro) {
        print(&line);
    }
    tally
}

/// Parses `42` or the half-open range `0..1000`.
pub fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let num = |t: &str| t.trim().parse::<u64>().map_err(|e| format!("{t:?}: {e}"));
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a >= b {
                return Err(format!("empty range {s}"));
            }
            Ok(a..b)
        }
        None => num(s).map(|a| a..a + 1),
    }
}
