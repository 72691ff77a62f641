//! `tasklane-sim --seeds 0..1000`: runs seeds, one summary line each, and a
//! tally; exits non-zero if any run failed, printing the one-line command
//! that reproduces each failure.

use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tasklane_sim::run::RunOptions;
use tasklane_sim::sabotage::Sabotage;
use tasklane_sim::sweep::{parse_seeds, sweep};

#[derive(Parser)]
#[command(about = "Deterministic simulation of tasklane: swarm faults, invariants, heal.")]
struct Args {
    /// A seed (`42`) or a half-open range (`0..1000`).
    #[arg(long, default_value = "0..100", value_parser = parse_seeds)]
    seeds: Range<u64>,
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

fn main() -> ExitCode {
    let args = Args::parse();
    let options = |seed| RunOptions {
        sabotage: args.sabotage,
        heal_limit: Duration::from_secs(args.heal_limit),
        ..RunOptions::seed(seed)
    };
    let tally = sweep(args.seeds.clone(), &options, args.verbose, &|r| r.reproduce(), &mut |line| println!("{line}"));
    if tally.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
