//! Your own worker in the simulation: a worker built with
//! `tasklane_io::dispatch::Dispatcher` (handlers by task kind, each with its
//! own concurrency limit), run over the endpoint users ship, under the
//! seeded faults, with every invariant checked and each result judged.
//!
//! ```text
//! cargo run -p tasklane-sim --release --example own_worker -- --seeds 0..50
//! ```
//!
//! The same from a `#[test]`: `tasklane_sim::check::Check` (see its docs).

use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use tasklane_core::{ResultStatus, Task};
use tasklane_io::dispatch::Dispatcher;
use tasklane_sim::check::Check;
use tasklane_sim::rng::Rng;
use tasklane_sim::sweep::parse_seeds;
use tasklane_sim::worker::worker;
use tasklane_sim::workload::Workload;

#[derive(Parser)]
struct Args {
    /// A seed (`42`) or a half-open range (`0..50`).
    #[arg(long, default_value = "0..50", value_parser = parse_seeds)]
    seeds: Range<u64>,
    /// Most simulated seconds the heal phase may take to converge.
    #[arg(long, default_value_t = 60)]
    heal_limit: u64,
    /// Print each run's injected faults.
    #[arg(long)]
    verbose: bool,
}

const WORDS: [&str; 8] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];

/// What each kind of task computes: the worker's handlers and the
/// workload's expectation both use it.
fn answer(kind: &str, body: &[u8]) -> Result<Bytes, Bytes> {
    let text = std::str::from_utf8(body).map_err(|_| Bytes::from("payload is not UTF-8"))?;
    match kind {
        "count" => Ok(Bytes::from(text.split_whitespace().count().to_string())),
        "upper" => Ok(Bytes::from(text.to_uppercase())),
        "sum" => {
            let mut total = 0u64;
            for n in text.split_whitespace() {
                total += n.parse::<u64>().map_err(|_| Bytes::from(format!("{n:?} is not a number")))?;
            }
            Ok(Bytes::from(total.to_string()))
        }
        other => Err(Bytes::from(format!("no handler for {other}"))),
    }
}

/// Task `i`: a kind and a payload drawn from the seed. One task in
/// twenty sums something that is not a number: its result must be
/// `failed`, saying so.
fn make(i: usize, rng: &mut Rng) -> (Option<String>, Bytes) {
    let kind = ["count", "upper", "sum"][rng.range(0, 2) as usize];
    let n = rng.range(1, 12) as usize;
    let body: Vec<String> = match kind {
        "sum" if i % 20 == 7 => vec!["12".into(), "many".into()],
        "sum" => (0..n).map(|_| rng.range(0, 1000).to_string()).collect(),
        _ => (0..n).map(|_| WORDS[rng.range(0, 7) as usize].to_string()).collect(),
    };
    (Some(kind.to_string()), Bytes::from(body.join(" ")))
}

fn expect(task: &Task, status: ResultStatus, body: &[u8]) -> Result<(), String> {
    let kind = task.kind.as_deref().unwrap_or("-");
    let (want_status, want) = match answer(kind, &task.body) {
        Ok(b) => (ResultStatus::Ok, b),
        Err(b) => (ResultStatus::Failed, b),
    };
    if status == want_status && body == want.as_ref() {
        Ok(())
    } else {
        Err(format!("{kind}: got {status:?} {:?}, want {want_status:?} {:?}", String::from_utf8_lossy(body), want))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dispatched = worker(|endpoint, mut ctx| async move {
        let mut dispatcher = Dispatcher::new();
        let work = ctx.work_max.as_millis().max(1) as u64;
        for (kind, concurrency) in [("count", 4), ("upper", 2), ("sum", 1)] {
            let pause = Duration::from_millis(ctx.rng.range(1, work));
            dispatcher
                .register(kind, concurrency, move |task| async move {
                    tokio::time::sleep(pause).await;
                    answer(kind, &task.body)
                })
                .expect("kinds are registered once");
        }
        dispatcher.run(endpoint, std::future::pending::<()>()).await;
    });
    let heal = args.heal_limit;
    let check = Check::new(dispatched)
        .workload(Workload::new(40, make, expect))
        .seeds(args.seeds.clone())
        .heal_limit(Duration::from_secs(heal))
        .verbose(args.verbose)
        .repro(move |r| {
            format!(
                "cargo run -p tasklane-sim --release --example own_worker -- --seeds {} --heal-limit {heal}",
                r.seed
            )
        });
    if check.run().failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
