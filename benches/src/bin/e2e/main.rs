//! The end-to-end benchmark: tasklane against raw amqprs, side by side in
//! one run, on the local RabbitMQ (127.0.0.1:5672, guest/guest).
//!
//! ```text
//! scripts/bench.sh                  # this, `e2e rss` and the criterion benches, in one go
//! cargo run --release -p tasklane-benches --bin e2e                 # the table
//! cargo run --release -p tasklane-benches --bin e2e -- --tasks 5000 --rounds 1   # a quick look
//! cargo run --release -p tasklane-benches --bin e2e -- rss          # peak RSS, 1,000,000 spooled tasks of 256 B
//! cargo run --release -p tasklane-benches --bin e2e -- rss --tasks 10000 --size 65536 --json target/bench-rss-64k.json
//! ```
//!
//! Every scenario runs in its own freshly provisioned endpoint queue inside
//! a throwaway vhost, prefilled with N persistent 256-byte tasks; raw and
//! tasklane sides alternate within each round, and the table shows the
//! median of the rounds, with the process's CPU time per task beside each
//! rate. Handoff latency is measured with the spool on the disk and again on
//! tmpfs, next to the disk's own floor (one LMDB commit, one `fdatasync`).
//! Absolute figures on a shared machine are noise; the ratios are the
//! result. The figures also go to `target/bench-e2e.json`.
//!
//! The `cluster` scenario runs tasklane's full pipe, in the same rounds, on
//! a quorum task queue of the default node and on one replicated on the
//! three nodes of `scripts/ensure-cluster.sh` (started if it is down), next
//! to the classic queue of the default node: what replication costs.

mod broker;
mod disk;
mod lane;
mod latency;
mod raw;
mod report;
mod rss;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use broker::{Broker, BODY_LEN};
use latency::{Percentiles, Schedule};
use raw::AckMode;
use report::{process_cpu_secs, Comparison, LatencyRow, Rate, RawConsume, Replication, Report, Settings};
use tasklane_io::service::QueueType;

/// What went wrong in a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("broker harness: {0}")]
    Harness(#[from] tasklane_tests::HarnessError),
    #[error("amqprs: {0}")]
    Amqprs(#[from] amqprs::error::Error),
    #[error(transparent)]
    Amqp(#[from] tasklane_io::amqp::Error),
    #[error(transparent)]
    Service(#[from] tasklane_io::service::ServiceError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A run did not do what it should (lost tasks, a broker that refused).
    #[error("{0}")]
    Check(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Disk,
    Intake,
    Publish,
    Pipe,
    Cluster,
    Latency,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Side {
    Raw,
    Tasklane,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Peak RSS of an endpoint while its spool holds many tasks.
    Rss {
        /// Tasks in the spool.
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        /// Body size of each task, in bytes.
        #[arg(long, default_value_t = BODY_LEN)]
        size: usize,
        /// Where the JSON goes.
        #[arg(long, default_value = "target/bench-rss.json")]
        json: PathBuf,
        /// Measure a backlog of results instead: the application completes
        /// every task with a result of `--size` bytes, the results are
        /// unroutable (the vhost's `results` queue is deleted), so all of
        /// them stay in the outbox, also after the reopen.
        #[arg(long)]
        results: bool,
    },
    #[command(hide = true)]
    RssIntake(ChildArgs),
    #[command(hide = true)]
    RssReopen(ChildArgs),
    #[command(hide = true)]
    RssResultsIntake(ChildArgs),
    #[command(hide = true)]
    RssResultsReopen(ChildArgs),
}

#[derive(clap::Args, Debug)]
struct ChildArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    spool: PathBuf,
    #[arg(long)]
    tasks: usize,
    /// Result body size (results mode only).
    #[arg(long, default_value_t = 0)]
    size: usize,
}

#[derive(Parser, Debug)]
#[command(about = "tasklane vs raw amqprs against the local RabbitMQ, side by side")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Prefilled tasks per throughput run (fewer make the fastest runs last
    /// a fraction of a second, where one hiccup of the machine decides).
    #[arg(long, default_value_t = 50_000)]
    tasks: usize,
    /// Rounds of every scenario; the table shows the median.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Prefetch window of every consumer (tasklane's default).
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Most unconfirmed publishes (tasklane's default `max_unconfirmed`).
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Tasks per latency run at idle (100 tasks/s).
    #[arg(long, default_value_t = 300)]
    idle_tasks: usize,
    /// Tasks per latency run at 1,000 tasks/s.
    #[arg(long, default_value_t = 5000)]
    loaded_tasks: usize,
    /// Samples of the disk probes (LMDB commit, fdatasync).
    #[arg(long, default_value_t = 200)]
    disk_samples: usize,
    /// Only these scenarios (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Only this side (default: both; one side alone is for profiling).
    #[arg(long, value_enum)]
    side: Option<Side>,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench-e2e.json")]
    json: PathBuf,
}

impl Args {
    fn runs(&self, s: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }

    fn raw(&self, s: Scenario) -> bool {
        self.runs(s) && self.side != Some(Side::Tasklane)
    }

    fn tasklane(&self, s: Scenario) -> bool {
        self.runs(s) && self.side != Some(Side::Raw)
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    // Every side runs as a task on the runtime's workers, as an
    // application's code does, not in `block_on` on the main thread: there
    // every wake-up from a worker (a delivery, a confirm, `complete`'s
    // answer) would cost a thread wake-up and hand the run to the OS
    // scheduler, a cost no application pays.
    let work = async move {
        match args.cmd.take() {
            None => run(args).await,
            Some(Cmd::Rss { tasks, size, json, results }) => run_rss(tasks, size, json, results).await,
            Some(Cmd::RssIntake(c)) => rss::intake_child(&c.url, &c.endpoint, c.spool, c.tasks).await,
            Some(Cmd::RssReopen(c)) => rss::reopen_child(&c.url, &c.endpoint, c.spool, c.tasks).await,
            Some(Cmd::RssResultsIntake(c)) => {
                rss::results_intake_child(&c.url, &c.endpoint, c.spool, c.tasks, c.size).await
            }
            Some(Cmd::RssResultsReopen(c)) => rss::results_reopen_child(&c.url, &c.endpoint, c.spool, c.tasks).await,
        }
    };
    let result = tokio::spawn(work).await.unwrap_or_else(|e| Err(BenchError::Check(format!("bench task: {e}"))));
    if let Err(e) = result {
        eprintln!("e2e: {e}");
        std::process::exit(1);
    }
}

async fn run_rss(tasks: usize, size: usize, json: PathBuf, results: bool) -> Result<(), BenchError> {
    let mut broker = tokio::task::block_in_place(Broker::create)?;
    let report = rss::run(&mut broker, tasks, size, results).await?;
    let what = if results { "results in outbox" } else { "tasks in spool" };
    println!(
        "| phase | {what} | body bytes | peak RSS MiB | RSS MiB (heap + mapped spool) | spool file MiB | seconds |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let phases = if results {
        [("tasks completed, results unroutable", &report.intake), ("reopen, results recovered", &report.reopen)]
    } else {
        [("intake from the broker", &report.intake), ("reopen, all handed off again", &report.reopen)]
    };
    for (phase, m) in phases {
        println!(
            "| {phase} | {} | {} | {:.0} | {:.0} ({:.0} + {:.0}) | {:.0} | {:.0} |",
            report.tasks,
            report.size,
            m.peak_rss_mib,
            m.rss_mib,
            m.rss_anon_mib,
            m.rss_file_mib,
            m.spool_file_mib,
            m.seconds
        );
    }
    write_json(&json, &report)
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), BenchError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    eprintln!("figures written to {}", path.display());
    Ok(())
}

async fn run(args: Args) -> Result<(), BenchError> {
    let mut broker = tokio::task::block_in_place(Broker::create)?;
    let rabbitmq = {
        let conn = broker.connect().await?;
        let v = conn.server_properties().version().to_string();
        conn.close().await?;
        v
    };
    let n = args.tasks;
    let mut raw_each = Rate::default();
    let mut raw_every100 = Rate::default();
    let mut raw_burst = Rate::default();
    let mut raw_publish = Rate::default();
    let mut raw_pipe = Rate::default();
    let mut tasklane_intake = Rate::default();
    let mut tasklane_results = Rate::default();
    let mut tasklane_pipe = Rate::default();
    let mut single_quorum_pipe = Rate::default();
    let mut cluster_pipe = Rate::default();
    // The cluster is held for the whole run: no test kills a node meanwhile.
    let mut cluster = None;
    if args.tasklane(Scenario::Cluster) {
        let guard = tokio::task::block_in_place(tasklane_tests::cluster::ClusterGuard::acquire)?;
        let single = tokio::task::block_in_place(|| {
            Broker::create_on(tasklane_tests::Broker::default_node(), QueueType::Quorum)
        })?;
        let nodes =
            tokio::task::block_in_place(|| Broker::create_on(tasklane_tests::cluster::broker(), QueueType::Quorum))?;
        cluster = Some((guard, single, nodes));
    }

    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        if args.raw(Scenario::Intake) {
            for (mode, rate) in [
                (AckMode::PerMessage, &mut raw_each),
                (AckMode::Every(100), &mut raw_every100),
                (AckMode::Burst, &mut raw_burst),
            ] {
                let ep = broker.endpoint("raw-consume").await?;
                broker.prefill(&ep, n).await?;
                let cpu = process_cpu_secs();
                let t = raw::consume(&broker, &ep, n, args.prefetch, mode).await?;
                rate.push(n, secs(t), process_cpu_secs() - cpu);
                eprintln!("  raw consume {mode:?}: {:.0}/s", n as f64 / secs(t));
            }
        }
        if args.tasklane(Scenario::Intake) || args.tasklane(Scenario::Publish) {
            let ep = broker.endpoint("tasklane-intake").await?;
            broker.prefill(&ep, n).await?;
            let (intake, results) = lane::intake_then_results(&broker, &ep, n, args.prefetch).await?;
            tasklane_intake.push_split(n, secs(intake.0), intake.1);
            tasklane_results.push_split(n, secs(results.0), results.1);
            eprintln!("  tasklane intake: {:.0}/s", n as f64 / secs(intake.0));
            eprintln!("  tasklane result path: {:.0}/s", n as f64 / secs(results.0));
            broker.purge_results().await?;
        }
        if args.raw(Scenario::Publish) {
            let ep = broker.endpoint("raw-publish").await?;
            let cpu = process_cpu_secs();
            let t = raw::publish(&broker, &ep, n, args.window).await?;
            raw_publish.push(n, secs(t), process_cpu_secs() - cpu);
            eprintln!("  raw confirmed publish: {:.0}/s", n as f64 / secs(t));
            broker.purge_results().await?;
        }
        if args.raw(Scenario::Pipe) {
            let ep = broker.endpoint("raw-pipe").await?;
            broker.prefill(&ep, n).await?;
            let cpu = process_cpu_secs();
            let t = raw::pipe(&broker, &ep, n, args.prefetch, args.window).await?;
            raw_pipe.push(n, secs(t), process_cpu_secs() - cpu);
            eprintln!("  raw pipe: {:.0}/s", n as f64 / secs(t));
            broker.purge_results().await?;
        }
        // Also the baseline of the cluster rows.
        if args.tasklane(Scenario::Pipe) || args.tasklane(Scenario::Cluster) {
            let ep = broker.endpoint("tasklane-pipe").await?;
            broker.prefill(&ep, n).await?;
            let (t, cpu) = lane::pipe(&broker, &ep, n, args.prefetch).await?;
            tasklane_pipe.push_split(n, secs(t), cpu);
            eprintln!("  tasklane pipe: {:.0}/s", n as f64 / secs(t));
            broker.purge_results().await?;
        }
        if let Some((_, single, nodes)) = &mut cluster {
            for (what, broker, rate) in
                [("single-node quorum", single, &mut single_quorum_pipe), ("3-node quorum", nodes, &mut cluster_pipe)]
            {
                let ep = broker.endpoint("tasklane-pipe-quorum").await?;
                broker.prefill(&ep, n).await?;
                let (t, cpu) = lane::pipe(broker, &ep, n, args.prefetch).await?;
                rate.push_split(n, secs(t), cpu);
                eprintln!("  tasklane pipe, {what}: {:.0}/s", n as f64 / secs(t));
                broker.purge_results().await?;
            }
        }
    }
    drop(cluster);

    let mut latency_rows = Vec::new();
    if args.runs(Scenario::Disk) {
        let probes: [(&'static str, disk::Probe); 2] =
            [("LMDB commit of 1 task", disk::lmdb_commits), ("fdatasync of 4 KiB", disk::fdatasyncs)];
        for (side, probe) in probes {
            let samples = tokio::task::block_in_place(|| probe(args.disk_samples))?;
            let p = Percentiles::of(&samples, 0);
            eprintln!("  {side}: {p:?}");
            latency_rows.push(LatencyRow {
                side,
                load: "one at a time".into(),
                percentiles: p,
                p99_target_ms: None,
                met: None,
            });
        }
    }
    if args.runs(Scenario::Latency) {
        let loads = [
            ("idle (100 tasks/s)", Schedule { rate: 100, count: args.idle_tasks }, None),
            ("1,000 tasks/s", Schedule { rate: 1000, count: args.loaded_tasks }, Some(3.0)),
        ];
        for (load, schedule, target) in loads {
            if args.raw(Scenario::Latency) {
                let ep = broker.endpoint("raw-latency").await?;
                let samples = raw::latency(&broker, &ep, args.prefetch, schedule).await?;
                let p = Percentiles::of(&samples, schedule.count / 20);
                eprintln!("  raw latency {load}: {p:?}");
                latency_rows.push(LatencyRow {
                    side: "raw amqprs (delivery)",
                    load: load.into(),
                    percentiles: p,
                    p99_target_ms: None,
                    met: None,
                });
            }
            if args.tasklane(Scenario::Latency) {
                // The spool on the disk (the figure that counts), then on
                // tmpfs: the difference is what the disk's fsyncs cost.
                let disk = std::env::temp_dir();
                let tmpfs = PathBuf::from("/dev/shm");
                let mut spools = vec![("tasklane (handoff)", disk, target)];
                if tmpfs.is_dir() {
                    spools.push(("tasklane (handoff), spool on tmpfs", tmpfs, None));
                }
                for (side, parent, target) in spools {
                    let ep = broker.endpoint("tasklane-latency").await?;
                    let samples = lane::latency(&broker, &ep, args.prefetch, schedule, &parent).await?;
                    let p = Percentiles::of(&samples, schedule.count / 20);
                    eprintln!("  {side} latency {load}: {p:?}");
                    latency_rows.push(LatencyRow {
                        side,
                        load: load.into(),
                        percentiles: p,
                        p99_target_ms: target,
                        met: target.map(|t| p.p99_ms <= t),
                    });
                    broker.purge_results().await?;
                }
            }
        }
    }

    let best_multiple = if raw_burst.median() >= raw_every100.median() { &raw_burst } else { &raw_every100 };
    let best_name =
        if std::ptr::eq(best_multiple, &raw_burst) { "multiple ack per burst" } else { "multiple ack every 100" };
    let mut comparisons = Vec::new();
    if args.runs(Scenario::Intake) {
        comparisons.push(
            Comparison::new("intake, fsync'd LMDB spool", best_name, best_multiple, &tasklane_intake, 0.85)
                .cpu_target(1.3),
        );
    }
    if args.runs(Scenario::Publish) {
        comparisons.push(Comparison::new(
            "result path, complete to confirm",
            "confirmed publish",
            &raw_publish,
            &tasklane_results,
            0.85,
        ));
    }
    if args.runs(Scenario::Pipe) {
        comparisons.push(
            Comparison::new(
                "full pipe, consume to confirm",
                "consume, publish, ack, no spool",
                &raw_pipe,
                &tasklane_pipe,
                0.85,
            )
            .cpu_target(1.5),
        );
    }
    let report = Report {
        settings: Settings {
            tasks: n,
            rounds: args.rounds,
            prefetch: args.prefetch,
            window: args.window,
            body_bytes: BODY_LEN,
            rabbitmq,
        },
        raw_consume: if args.runs(Scenario::Intake) {
            vec![
                RawConsume::new("ack per message", &raw_each),
                RawConsume::new("multiple ack every 100", &raw_every100),
                RawConsume::new("multiple ack per burst", &raw_burst),
            ]
        } else {
            Vec::new()
        },
        comparisons,
        replication: if args.tasklane(Scenario::Cluster) {
            vec![
                Replication::new("single node, classic queue", &tasklane_pipe, &tasklane_pipe, &single_quorum_pipe),
                Replication::new("single node, quorum queue", &single_quorum_pipe, &tasklane_pipe, &single_quorum_pipe),
                Replication::new(
                    "3-node cluster, quorum queue on every node",
                    &cluster_pipe,
                    &tasklane_pipe,
                    &single_quorum_pipe,
                ),
            ]
        } else {
            Vec::new()
        },
        latency: latency_rows,
    };
    println!("{}", report.table());
    write_json(&args.json, &report)
}
