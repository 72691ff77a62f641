//! `tasklane-sim --seeds 0..1000`: runs seeds, one summary line each, and a
//! tally; exits non-zero if any run failed, printing the one-line command
//! that reproduces each failure.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tasklane_sim::run::{run, Outcome, RunOptions};
use tasklane_sim::sabotage::Sabotage;

#[derive(Parser)]
#[command(about = "Deterministic simulation of tasklane: swarm faults, invariants, heal.")]
struct Args {
    /// A seed (`42`) or a half-open range (`0..1000`).
    #[arg(long, default_value = "0..100", value_parser = parse_seeds)]
    seeds: (u64, u64),
    /// Run a deliberately broken endpoint (needs `--features sabotage`).
    #[arg(long)]
    sabotage: Option<Sabotage>,
    /// Most simulated seconds the heal phase may take to converge.
    #[arg(long, default_value_t = 60)]
    heal_limit: u64,
    /// Print each run's injected faults.
    #[arg(long)]
    verbose: bool,
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let num = |t: &str| t.trim().parse::<u64>().map_err(|e| format!("{t:?}: {e}"));
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a >= b {
                return Err(format!("empty range {s}"));
            }
            Ok((a, b))
        }
        None => num(s).map(|a| (a, a + 1)),
    }
}

#[derive(Default)]
struct Tally {
    runs: u64,
    passed: u64,
    safety: u64,
    liveness: u64,
    errors: u64,
    /// Per fault class: runs where it was switched on, faults injected.
    classes: [(u64, u64); 6],
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for seed in args.seeds.0..args.seeds.1 {
        let opts = RunOptions {
            sabotage: args.sabotage,
            heal_limit: Duration::from_secs(args.heal_limit),
            ..RunOptions::seed(seed)
        };
        let swarm = tasklane_sim::run::swarm_for(seed, args.sabotage);
        println!("seed={seed} swarm: {swarm}");
        let report = run(&opts);
        if args.verbose {
            for line in &report.fault_log {
                println!("    {line}");
            }
        }
        println!("{}", report.summary());
        tally.runs += 1;
        let on = [
            swarm.partition_rate > 0.0,
            swarm.kill_rate > 0.0,
            swarm.hold_rate > 0.0,
            swarm.crash_rate > 0.0,
            swarm.broker_restart_rate > 0.0,
            swarm.duplicate_at.is_some(),
        ];
        let f = report.faults;
        let counts = [f.partitions, f.kills, f.holds, f.crashes, f.broker_restarts, f.duplicates];
        for i in 0..counts.len() {
            tally.classes[i].0 += u64::from(on[i]);
            tally.classes[i].1 += u64::from(counts[i]);
        }
        match &report.outcome {
            Outcome::Pass => tally.passed += 1,
            Outcome::Safety { .. } => tally.safety += 1,
            Outcome::Liveness { .. } => tally.liveness += 1,
            Outcome::Error(_) => tally.errors += 1,
        }
        if !report.outcome.passed() {
            println!("    reproduce: {}", report.reproduce());
            failures.push(report);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} runs: {} passed, {} failed (safety {}, liveness {}, error {}); {:.1}s, {:.0} seeds/min",
        tally.runs,
        tally.passed,
        tally.runs - tally.passed,
        tally.safety,
        tally.liveness,
        tally.errors,
        secs,
        tally.runs as f64 * 60.0 / secs.max(1e-9)
    );
    let names = ["partition", "kill", "hold", "crash", "broker-restart", "duplicate"];
    let classes: Vec<String> = names
        .iter()
        .zip(tally.classes)
        .map(|(n, (runs, injected))| format!("{n} {runs} runs/{injected} injected"))
        .collect();
    println!("fault classes: {}", classes.join(", "));
    for r in &failures {
        println!("FAILED seed={}: {}\n    reproduce: {}", r.seed, r.outcome, r.reproduce());
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
