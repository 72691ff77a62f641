//! `tasklane demo`: provisions a fresh endpoint, runs an endpoint in this
//! process, submits N tasks with a progress bar, collects every result and
//! prints one summary line (sent, received, lost, throughput, p50/p99
//! latency from submit to result). Exit 1 if anything was lost.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use amqprs::channel::QueueDeleteArguments;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tasklane_core::{EndpointId, Task, TaskId};
use tasklane_io::service::{QueueType, Results, ResultsOptions, ServiceError, Submitter, TaskStore};

use crate::cmd::{brokers, connect, generated_payload, new_task_id, service_failure};
use crate::failure::Failure;
use crate::handler::Handler;
use crate::Global;

/// `tasklane demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many tasks to send through the lane.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub tasks: u64,
    /// Size of each task's payload, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub size: usize,
    /// Give up when no result arrives for this long, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stall_timeout: u64,
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, Failure> {
        let dir = std::env::temp_dir().join(format!("tasklane-demo-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| Failure::runtime(format!("cannot create {}", dir.display()), e))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bar(multi: &MultiProgress, len: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {per_sec}")
        .expect("valid template")
        .progress_chars("=> ");
    let bar = multi.add(ProgressBar::new(len).with_style(style));
    bar.set_prefix(what.to_string());
    bar
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Runs the demo.
pub async fn run(g: &Global, args: DemoArgs) -> Result<(), Failure> {
    let brokers = brokers(g, "tasklane demo service")?;
    let scratch = Scratch::new()?;
    let store = TaskStore::open(scratch.0.join("service"))
        .map_err(|e| Failure::runtime("cannot open the demo's task store", e))?;
    let endpoint = EndpointId::new(format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
        .expect("a valid endpoint id");
    brokers.provision(&endpoint, QueueType::Classic).await.map_err(service_failure)?;

    let config = crate::endpoint::demo_config(g, &endpoint, &scratch.0.join("spool"))?;
    let running = crate::endpoint::start(config, Handler::Echo, crate::endpoint::default_workers(), None).await?;

    let multi = MultiProgress::new();
    let sent_bar = bar(&multi, args.tasks, "submitted");
    let recv_bar = bar(&multi, args.tasks, "results");

    // Results, collected concurrently with submitting.
    let mut results =
        Results::connect(&brokers, store.clone(), ResultsOptions::default()).await.map_err(service_failure)?;
    let expected = args.tasks;
    let stall = Duration::from_secs(args.stall_timeout);
    let recv_progress = recv_bar.clone();
    let collector = tokio::spawn(async move {
        let mut received: HashMap<TaskId, Instant> = HashMap::with_capacity(expected as usize);
        while (received.len() as u64) < expected {
            match results.next_timeout(stall).await? {
                Some(r) => {
                    received.insert(r.task, Instant::now());
                    recv_progress.inc(1);
                }
                None => break, // stalled: whatever is missing is lost
            }
        }
        let counters = results.close().await?;
        Ok::<_, ServiceError>((received, counters))
    });

    let started = Instant::now();
    let mut sent_at: HashMap<TaskId, Instant> = HashMap::with_capacity(args.tasks as usize);
    let size = args.size;
    let tasks = (0..args.tasks).map(|i| {
        let task = Task { id: new_task_id(), kind: Some("demo".into()), body: generated_payload(i, size) };
        sent_at.insert(task.id.clone(), Instant::now());
        task
    });
    let mut submitter = Submitter::connect(&brokers, store).await.map_err(service_failure)?;
    let submitted = submitter.submit_all(&endpoint, tasks, |n| sent_bar.inc(n as u64)).await;
    submitter.close().await;
    sent_bar.finish();
    let sent = submitted.map_err(service_failure)? as u64;

    let collected = collector.await.map_err(|e| Failure::runtime("the result collector failed", e))?;
    recv_bar.finish();
    let stopped = running.stop().await;
    let (received, counters) = collected.map_err(service_failure)?;
    stopped?;

    // Leave no demo queue behind (it is empty now).
    if let Ok(conn) = connect(&brokers).await {
        if let Ok(ch) = conn.open_channel(None).await {
            let _ = ch.queue_delete(QueueDeleteArguments::new(&endpoint.task_queue())).await;
            let _ = ch.close().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
    }

    let mut latencies: Vec<Duration> =
        received.iter().filter_map(|(id, at)| sent_at.get(id).map(|s| at.saturating_duration_since(*s))).collect();
    latencies.sort();
    let last = received.values().max().copied().unwrap_or(started);
    let elapsed = last.saturating_duration_since(started).as_secs_f64().max(1e-6);
    let got = received.len() as u64;
    let lost = sent.saturating_sub(got);
    println!(
        "sent {sent}, received {got}, lost {lost}, duplicates dropped {}, throughput {:.0} tasks/s, latency p50 {:.1} ms, p99 {:.1} ms",
        counters.duplicates,
        got as f64 / elapsed,
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
    );
    if counters.dead_lettered > 0 {
        eprintln!(
            "tasklane: note: {} results of tasks this demo did not submit were moved to tasklane.dead \
             (the vhost's results queue is shared with every endpoint of the vhost)",
            counters.dead_lettered
        );
    }
    drop(scratch);
    if lost > 0 || got < args.tasks {
        return Err(Failure::Runtime(format!("{lost} of {sent} results lost")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
