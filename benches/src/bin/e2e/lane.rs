//! The tasklane sides: the same work through an [`Endpoint`] with its
//! fsync'd LMDB spool, driven the way an application drives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tasklane_core::{Counters, EndpointId, Failover, ResultStatus, Status, TaskId};
use tasklane_io::endpoint::{Endpoint, EndpointConfig};
use tempfile::TempDir;

use crate::broker::{Broker, BODY_LEN};
use crate::latency::{stamp_of, Schedule, Submitter};
use crate::report::CpuSpan;
use crate::BenchError;

/// An endpoint on a fresh spool in a temporary directory.
pub struct Bench {
    pub endpoint: Arc<Endpoint>,
    _dir: TempDir,
}

impl Bench {
    pub async fn open(broker: &Broker, id: &EndpointId, prefetch: u16) -> Result<Self, BenchError> {
        Self::open_in(broker, id, prefetch, &std::env::temp_dir()).await
    }

    /// With the spool in a directory under `parent` (tmpfs takes the disk
    /// out of the figures).
    pub async fn open_in(
        broker: &Broker,
        id: &EndpointId,
        prefetch: u16,
        parent: &std::path::Path,
    ) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new().prefix("tasklane-bench-spool-").tempdir_in(parent)?;
        let cfg = EndpointConfig::new(&broker.url(), id.as_str(), dir.path())
            .map_err(|e| BenchError::Check(e.to_string()))?
            .prefetch(prefetch)
            // On the cluster: node 1 first, where the queues' leaders are.
            .failover(Failover::InOrder);
        let endpoint = Endpoint::open(cfg).await.map_err(|e| BenchError::Check(e.to_string()))?;
        Ok(Self { endpoint: Arc::new(endpoint), _dir: dir })
    }

    /// Waits until the endpoint consumes; returns when it did.
    pub async fn consuming(&self) -> Result<Instant, BenchError> {
        let mut status = self.endpoint.status();
        let consuming = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| *s == Status::Consuming))
            .await
            .is_ok_and(|r| r.is_ok());
        if consuming {
            Ok(Instant::now())
        } else {
            Err(BenchError::Check(format!("endpoint not consuming: {:?}", *status.borrow())))
        }
    }

    /// Waits (polling each millisecond) until `done` holds for the counters.
    pub async fn until(&self, what: &str, done: impl Fn(&Counters) -> bool) -> Result<Instant, BenchError> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let c = self.endpoint.counters();
            if done(&c) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Check(format!("timed out waiting for {what}: {c:?}")));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub async fn shutdown(self) {
        self.endpoint.shutdown().await;
    }
}

fn result_body() -> Bytes {
    Bytes::from(vec![b'r'; BODY_LEN])
}

/// (b) and (c) on one endpoint: intake of `n` prefilled tasks by a no-op
/// application (time from `Consuming` to the last task handed off and
/// acked), then the result path (time from the first `complete` to the
/// last confirm, the application completing every task in turn). Each with
/// the process's CPU seconds over the same span.
pub async fn intake_then_results(
    broker: &Broker,
    id: &EndpointId,
    n: usize,
    prefetch: u16,
) -> Result<((Duration, CpuSpan), (Duration, CpuSpan)), BenchError> {
    let bench = Bench::open(broker, id, prefetch).await?;
    let t0 = bench.consuming().await?;
    let c0 = CpuSpan::now();
    let mut held: Vec<TaskId> = Vec::with_capacity(n);
    while held.len() < n {
        let task = bench.endpoint.next_task().await.ok_or_else(|| BenchError::Check("endpoint closed".into()))?;
        held.push(task.id);
    }
    let t1 = bench.until("acks", |c| c.acked >= n as u64).await?;
    let intake = (t1 - t0, CpuSpan::since(c0));

    let body = result_body();
    let t2 = Instant::now();
    let c2 = CpuSpan::now();
    for task in &held {
        bench
            .endpoint
            .complete(task, ResultStatus::Ok, body.clone())
            .await
            .map_err(|e| BenchError::Check(e.to_string()))?;
    }
    let t3 = bench.until("confirms", |c| c.confirmed >= n as u64).await?;
    let results = (t3 - t2, CpuSpan::since(c2));
    check(&bench.endpoint.counters(), n)?;
    bench.shutdown().await;
    Ok((intake, results))
}

/// (d): consume, spool, hand off, complete at once, publish, confirm, ack.
/// The time from `Consuming` to the last confirm (every task acked), and
/// the process's CPU seconds over it (and of them the spool thread's).
pub async fn pipe(
    broker: &Broker,
    id: &EndpointId,
    n: usize,
    prefetch: u16,
) -> Result<(Duration, CpuSpan), BenchError> {
    let bench = Bench::open(broker, id, prefetch).await?;
    let t0 = bench.consuming().await?;
    let c0 = CpuSpan::now();
    let body = result_body();
    for _ in 0..n {
        let task = bench.endpoint.next_task().await.ok_or_else(|| BenchError::Check("endpoint closed".into()))?;
        bench
            .endpoint
            .complete(&task.id, ResultStatus::Ok, body.clone())
            .await
            .map_err(|e| BenchError::Check(e.to_string()))?;
    }
    let t1 = bench.until("confirms and acks", |c| c.confirmed >= n as u64 && c.acked >= n as u64).await?;
    let cpu = CpuSpan::since(c0);
    check(&bench.endpoint.counters(), n)?;
    bench.shutdown().await;
    Ok((t1 - t0, cpu))
}

/// (e): latency from submit to handoff, the application completing each
/// task as it comes; the spool in a directory under `spool_parent`.
pub async fn latency(
    broker: &Broker,
    id: &EndpointId,
    prefetch: u16,
    schedule: Schedule,
    spool_parent: &std::path::Path,
) -> Result<Vec<Duration>, BenchError> {
    let bench = Bench::open_in(broker, id, prefetch, spool_parent).await?;
    bench.consuming().await?;
    let submitter = Submitter::start(broker, id, schedule).await?;
    let body = result_body();
    let mut samples = Vec::with_capacity(schedule.count);
    while samples.len() < schedule.count {
        let task = bench.endpoint.next_task().await.ok_or_else(|| BenchError::Check("endpoint closed".into()))?;
        let now = Instant::now();
        let sent = stamp_of(&task.body).ok_or_else(|| BenchError::Check("no stamp".into()))?;
        samples.push(now.saturating_duration_since(sent));
        bench
            .endpoint
            .complete(&task.id, ResultStatus::Ok, body.clone())
            .await
            .map_err(|e| BenchError::Check(e.to_string()))?;
    }
    submitter.finish().await?;
    bench.until("confirms", |c| c.confirmed >= schedule.count as u64).await?;
    bench.shutdown().await;
    Ok(samples)
}

/// Every task went the whole way exactly once.
fn check(c: &Counters, n: usize) -> Result<(), BenchError> {
    let n = n as u64;
    let ok = c.received == n && c.spooled == n && c.acked == n && c.handed_off == n;
    let ok = ok && c.completed == n && c.confirmed == n && c.duplicates_dropped == 0 && c.rejected == 0;
    if ok {
        Ok(())
    } else {
        Err(BenchError::Check(format!("counters after {n} tasks: {c:?}")))
    }
}
