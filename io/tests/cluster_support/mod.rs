//! Shared by the cluster tests: a fresh vhost on the 3-node cluster with
//! the topology provisioned (quorum queues on all three nodes), an echo
//! endpoint on a chosen node, and a service (submitter, results consumer)
//! on another, each running on a task of its own while the test kills
//! nodes, with counts the test can watch.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tasklane_core::{EndpointId, Failover, ResultStatus, Status, Task, TaskId};
use tasklane_io::endpoint::{Endpoint, EndpointConfig};
use tasklane_io::service::{Brokers, Results, ResultsOptions, ServiceError, Submitter, TaskQueue, TaskStore};
use tasklane_tests::cluster::{self, node_of_addr, node_of_name, ClusterGuard};
use tasklane_tests::Vhost;
use tokio::task::JoinHandle;

/// One test's vhost on the cluster, with an endpoint id provisioned there.
pub struct Setup {
    pub cluster: ClusterGuard,
    pub vhost: Vhost,
    pub id: EndpointId,
}

impl Setup {
    /// Takes the cluster, makes a vhost and provisions a fresh endpoint
    /// with a quorum task queue, checked to have a member on every node.
    pub async fn new() -> Self {
        // RUST_LOG=tasklane_io=info shows the failovers.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let cluster = tokio::task::spawn_blocking(ClusterGuard::acquire).await.unwrap().expect("the cluster");
        let vhost = cluster.vhost().expect("a vhost on the cluster");
        let id = EndpointId::new(format!("cl-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])).unwrap();
        let setup = Self { cluster, vhost, id };
        let brokers = setup.brokers(&[1, 2, 3]);
        let made = brokers.provision(&setup.id, TaskQueue::quorum()).await.expect("provisioned on the cluster");
        assert_eq!(made.results, tasklane_io::service::QueueType::Quorum);
        let q = setup.vhost.queue(&setup.id.task_queue()).unwrap().expect("the task queue");
        let mut members = q.members.clone().unwrap_or_default();
        members.sort();
        assert_eq!(members, (1..=3).map(cluster::node_name).collect::<Vec<_>>(), "a replica on every node");
        setup
    }

    /// The service's brokers: `nodes`, tried in that order.
    pub fn brokers(&self, nodes: &[usize]) -> Brokers {
        Brokers::parse(&self.cluster.urls(&self.vhost, nodes)).unwrap().failover(Failover::InOrder)
    }

    /// The node (1-based) that leads `queue` now.
    pub fn leader(&self, queue: &str) -> usize {
        let q = self.vhost.queue(queue).unwrap().expect("the queue");
        node_of_name(q.leader.as_deref().or(q.node.as_deref()).expect("a leader")).expect("one of ours")
    }

    /// An endpoint that tries `nodes` in that order, spooling in `spool`,
    /// answering every task with its payload.
    pub async fn endpoint(&self, nodes: &[usize], spool: &Path) -> (Arc<Endpoint>, JoinHandle<()>) {
        let cfg = EndpointConfig::new(&self.cluster.urls(&self.vhost, nodes), self.id.as_str(), spool)
            .unwrap()
            .failover(Failover::InOrder)
            .heartbeat(5);
        let endpoint = Arc::new(Endpoint::open(cfg).await.unwrap());
        let ep = endpoint.clone();
        let worker = tokio::spawn(async move {
            while let Some(task) = ep.next_task().await {
                if ep.complete(&task.id, ResultStatus::Ok, task.body).await.is_err() {
                    break;
                }
            }
        });
        (endpoint, worker)
    }
}

/// The node (1-based) `endpoint` is connected to, if any.
pub fn node_of(endpoint: &Endpoint) -> Option<usize> {
    endpoint.connection().and_then(|c| node_of_addr(c.peer))
}

/// `n` tasks with ids `prefix-0` ...
pub fn tasks(prefix: &str, n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| Task {
            id: TaskId::new(format!("{prefix}-{i}")).unwrap(),
            kind: None,
            body: Bytes::from(vec![b'x'; 64]),
        })
        .collect()
}

/// A submitter running on its own task; `confirmed` counts as it goes.
pub struct Submitting {
    pub confirmed: Arc<AtomicUsize>,
    pub handle: JoinHandle<(Result<usize, ServiceError>, Submitter)>,
}

impl Submitting {
    /// Tasks confirmed so far.
    pub fn confirmed(&self) -> usize {
        self.confirmed.load(Ordering::SeqCst)
    }
}

/// Submits `tasks` at about `rate` per second (in groups of 50, each
/// confirmed before the next), so that a fault lands mid-stream.
pub async fn submit(brokers: &Brokers, store: TaskStore, id: &EndpointId, tasks: Vec<Task>, rate: usize) -> Submitting {
    let mut submitter = Submitter::connect(brokers, store).await.expect("a submitter").window(256);
    let confirmed = Arc::new(AtomicUsize::new(0));
    let (count, id) = (confirmed.clone(), id.clone());
    let handle = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut done = 0;
        for group in tasks.chunks(50) {
            let n = submitter.submit_all(&id, group.to_vec(), |k| {
                count.fetch_add(k, Ordering::SeqCst);
            });
            match n.await {
                Ok(n) => done += n,
                Err(e) => return (Err(e), submitter),
            }
            tokio::time::sleep_until(start + Duration::from_secs_f64(done as f64 / rate as f64)).await;
        }
        (Ok(done), submitter)
    });
    Submitting { confirmed, handle }
}

/// A results consumer running on its own task until `expected` distinct
/// results or `deadline`; `accepted` counts as it goes.
pub struct Collecting {
    pub accepted: Arc<AtomicUsize>,
    pub handle: JoinHandle<Collected>,
}

/// What the results consumer handed over: how often each task's result.
pub struct Collected {
    pub handed_over: HashMap<TaskId, u32>,
    pub failovers: u64,
    pub error: Option<ServiceError>,
    pub last_at: Instant,
    /// The longest wait between two results, and when it began.
    pub longest_gap: (Duration, Instant),
}

impl Collecting {
    /// Distinct results handed over so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

pub async fn collect(brokers: &Brokers, store: TaskStore, expected: usize, deadline: Instant) -> Collecting {
    let mut results = Results::connect(brokers, store, ResultsOptions::default()).await.expect("a results consumer");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let handle = tokio::spawn(async move {
        let mut handed_over: HashMap<TaskId, u32> = HashMap::new();
        let mut error = None;
        let mut last_at = Instant::now();
        let mut longest_gap = (Duration::ZERO, last_at);
        while handed_over.len() < expected && Instant::now() < deadline {
            match results.next_timeout(Duration::from_millis(250)).await {
                Ok(Some(r)) => {
                    *handed_over.entry(r.task).or_default() += 1;
                    count.store(handed_over.len(), Ordering::SeqCst);
                    let now = Instant::now();
                    if !handed_over.is_empty() && now - last_at > longest_gap.0 && handed_over.len() > 1 {
                        longest_gap = (now - last_at, last_at);
                    }
                    last_at = now;
                }
                Ok(None) => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let failovers = results.failovers();
        let _ = results.close().await;
        Collected { handed_over, failovers, error, last_at, longest_gap }
    });
    Collecting { accepted, handle }
}

/// Waits until `cond` holds, polling; panics naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// When `cond` first holds, watched on a task of its own (so that the
/// time is right while the test itself blocks on the cluster script).
pub fn watch(mut cond: impl FnMut() -> bool + Send + 'static) -> JoinHandle<Instant> {
    tokio::spawn(async move {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Instant::now()
    })
}

/// Waits until the endpoint's status is `want`.
pub async fn wait_status(endpoint: &Endpoint, want: Status, limit: Duration) {
    let mut status = endpoint.status();
    let ok = tokio::time::timeout(limit, status.wait_for(|s| *s == want)).await;
    assert!(ok.is_ok(), "status {:?} within {limit:?}, still {:?}", want, *endpoint.status().borrow());
}

/// SIGKILLs node `n` (the script takes a while; other tasks run meanwhile).
pub async fn blocking_kill(s: &Setup, n: usize) {
    tokio::task::block_in_place(|| s.cluster.kill(n)).unwrap_or_else(|e| panic!("kill node {n}: {e}"));
}

/// Stops node `n` cleanly.
pub async fn blocking_stop(s: &Setup, n: usize) {
    tokio::task::block_in_place(|| s.cluster.stop(n)).unwrap_or_else(|e| panic!("stop node {n}: {e}"));
}

/// Starts node `n` again and waits until the cluster has three nodes.
pub async fn blocking_start(s: &Setup, n: usize) {
    tokio::task::block_in_place(|| s.cluster.start(n)).unwrap_or_else(|e| panic!("start node {n}: {e}"));
}

/// Every task of `tasks` handed over exactly once, and nothing else.
pub fn assert_each_once(collected: &Collected, tasks: &[TaskId]) {
    assert!(collected.error.is_none(), "the results consumer failed: {:?}", collected.error);
    let missing: Vec<&TaskId> = tasks.iter().filter(|t| !collected.handed_over.contains_key(*t)).collect();
    assert!(missing.is_empty(), "{} of {} results never came, e.g. {:?}", missing.len(), tasks.len(), missing.first());
    let twice: Vec<_> = collected.handed_over.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "results handed over more than once: {twice:?}");
    assert_eq!(collected.handed_over.len(), tasks.len(), "no result of a task not submitted");
}

/// A future that must finish within `limit`.
pub async fn within<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}
