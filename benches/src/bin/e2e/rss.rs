//! Peak memory while a spool holds many tasks (default 1,000,000 of 256
//! bytes; `--size` for big payloads, e.g. 10,000 of 64 KiB): one child
//! process takes the tasks in through an endpoint (an application that
//! takes none of them, as a busy handler would), another reopens the
//! spool, as after a restart, and takes every task again (never completing
//! one). Each child reports its own `VmHWM`, so the figures are the
//! endpoint's and nothing else's.
//!
//! With `--results`, the same for a backlog of results: the tasks are
//! small, the first child completes every one with a result of `--size`
//! bytes while results are unroutable (the vhost's `results` queue is
//! gone: each publish is returned and retried later), so every result
//! stays in the outbox; the second reopens the spool with all of them in
//! its outbox, still unroutable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tasklane_core::{EndpointId, ResultStatus};
use tasklane_io::endpoint::{Endpoint, EndpointConfig};

use crate::broker::Broker;
use crate::BenchError;

/// Memory figures of one child, from `/proc/self/status`, in MiB.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Peak resident set over the process's life.
    pub peak_rss_mib: f64,
    /// Resident set when every task was spooled (or handed off again).
    pub rss_mib: f64,
    /// Of that: anonymous memory (heap) ...
    pub rss_anon_mib: f64,
    /// ... and mapped file pages (the LMDB map).
    pub rss_file_mib: f64,
    /// Size of the spool's data file.
    pub spool_file_mib: f64,
    /// How long the phase took.
    pub seconds: f64,
}

fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

fn measure(spool: &Path, started: Instant) -> Memory {
    let mib = |kib: f64| kib / 1024.0;
    let file = std::fs::metadata(spool.join("data.mdb")).map(|m| m.len() as f64 / (1 << 20) as f64).unwrap_or(f64::NAN);
    Memory {
        peak_rss_mib: mib(status_kib("VmHWM:")),
        rss_mib: mib(status_kib("VmRSS:")),
        rss_anon_mib: mib(status_kib("RssAnon:")),
        rss_file_mib: mib(status_kib("RssFile:")),
        spool_file_mib: file,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Both phases' figures.
#[derive(Clone, Debug, Serialize)]
pub struct RssReport {
    pub tasks: usize,
    /// Body size of each task, in bytes.
    pub size: usize,
    pub intake: Memory,
    pub reopen: Memory,
}

/// Task body size in the results mode: the results are what is measured.
const RESULTS_MODE_TASK_LEN: usize = 16;

/// The parent: prefills the queue, runs both children, collects figures.
pub async fn run(broker: &mut Broker, tasks: usize, size: usize, results: bool) -> Result<RssReport, BenchError> {
    let ep = broker.endpoint("tasklane-rss").await?;
    let task_len = if results { RESULTS_MODE_TASK_LEN } else { size };
    eprintln!("prefilling {tasks} tasks of {task_len} bytes ...");
    let t0 = Instant::now();
    broker.prefill_sized(&ep, tasks, task_len).await?;
    eprintln!("prefilled in {:.0} s", t0.elapsed().as_secs_f64());
    let (intake_mode, reopen_mode) = if results {
        broker.drop_results().await?;
        ("rss-results-intake", "rss-results-reopen")
    } else {
        ("rss-intake", "rss-reopen")
    };
    let dir = tempfile::Builder::new().prefix("tasklane-bench-rss-").tempdir()?;
    let intake = tokio::task::block_in_place(|| child(intake_mode, &broker.url(), &ep, dir.path(), tasks, size))?;
    eprintln!("intake: {intake:?}");
    let reopen = tokio::task::block_in_place(|| child(reopen_mode, &broker.url(), &ep, dir.path(), tasks, size))?;
    eprintln!("reopen: {reopen:?}");
    Ok(RssReport { tasks, size, intake, reopen })
}

fn child(
    mode: &str,
    url: &str,
    ep: &EndpointId,
    spool: &Path,
    tasks: usize,
    size: usize,
) -> Result<Memory, BenchError> {
    let out = Command::new(std::env::current_exe()?)
        .args([mode, "--url", url, "--endpoint", ep.as_str(), "--tasks", &tasks.to_string()])
        .args(["--size", &size.to_string()])
        .arg("--spool")
        .arg(spool)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(BenchError::Check(format!("{mode} child failed: {}", out.status)));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn open(url: &str, endpoint: &str, spool: &Path, tasks: usize) -> Result<Endpoint, BenchError> {
    let cfg = EndpointConfig::new(url, endpoint, spool)
        .map_err(|e| BenchError::Check(e.to_string()))?
        .spool_bounds(tasks + 1, 8 << 30);
    Endpoint::open(cfg).await.map_err(|e| BenchError::Check(e.to_string()))
}

/// Child: takes `tasks` tasks into a fresh spool and keeps them there, for
/// an application that is busy and takes none of them yet (a slow handler):
/// every task is handed off and waits for it.
pub async fn intake_child(url: &str, endpoint: &str, spool: PathBuf, tasks: usize) -> Result<(), BenchError> {
    let started = Instant::now();
    let ep = open(url, endpoint, &spool, tasks).await?;
    while ep.counters().acked < tasks as u64 || ep.counters().handed_off < tasks as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let memory = measure(&spool, started);
    ep.shutdown().await;
    println!("{}", serde_json::to_string(&memory)?);
    Ok(())
}

/// Child: reopens the spool and is handed every task again, taking each
/// one (its body read from the spool) and dropping it.
pub async fn reopen_child(url: &str, endpoint: &str, spool: PathBuf, tasks: usize) -> Result<(), BenchError> {
    let started = Instant::now();
    let ep = open(url, endpoint, &spool, tasks).await?;
    for _ in 0..tasks {
        ep.next_task().await.ok_or_else(|| BenchError::Check("endpoint closed".into()))?;
    }
    let memory = measure(&spool, started);
    ep.shutdown().await;
    println!("{}", serde_json::to_string(&memory)?);
    Ok(())
}

/// Waits until every result is in the outbox and publishing them has been
/// tried and refused (returned) at least once, then a moment more for the
/// commits and retries under way.
async fn wait_for_backlog(ep: &Endpoint, tasks: usize) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while ep.spool_depths().outbox < tasks || ep.counters().returned == 0 {
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!("backlog not built: {:?}", ep.counters())));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    if ep.counters().confirmed > 0 || ep.spool_depths().outbox < tasks {
        return Err(BenchError::Check(format!("results were routable: {:?}", ep.counters())));
    }
    Ok(())
}

/// Child (results mode): takes every task and completes it with a result
/// of `size` bytes, which cannot be published: all stay in the outbox.
pub async fn results_intake_child(
    url: &str,
    endpoint: &str,
    spool: PathBuf,
    tasks: usize,
    size: usize,
) -> Result<(), BenchError> {
    let started = Instant::now();
    let ep = open(url, endpoint, &spool, tasks).await?;
    for _ in 0..tasks {
        let task = ep.next_task().await.ok_or_else(|| BenchError::Check("endpoint closed".into()))?;
        let body = vec![b'r'; size];
        ep.complete(&task.id, ResultStatus::Ok, body).await.map_err(|e| BenchError::Check(e.to_string()))?;
    }
    wait_for_backlog(&ep, tasks).await?;
    let memory = measure(&spool, started);
    ep.shutdown().await;
    println!("{}", serde_json::to_string(&memory)?);
    Ok(())
}

/// Child (results mode): reopens the spool with every result in its
/// outbox, still unroutable, and keeps trying to publish them.
pub async fn results_reopen_child(url: &str, endpoint: &str, spool: PathBuf, tasks: usize) -> Result<(), BenchError> {
    let started = Instant::now();
    let ep = open(url, endpoint, &spool, tasks).await?;
    wait_for_backlog(&ep, tasks).await?;
    let memory = measure(&spool, started);
    ep.shutdown().await;
    println!("{}", serde_json::to_string(&memory)?);
    Ok(())
}
