//! tasklane on the 3-node cluster of `scripts/ensure-cluster.sh`, with the
//! task queue (and `results`) as quorum queues replicated on every node,
//! while nodes die mid-stream: every task is answered exactly once at the
//! service, within a minute, and nothing is lost.
//!
//! The tests take the cluster one at a time (`ClusterGuard`, a lock across
//! processes) and leave it with three running nodes. Each prints its
//! figures on stderr (`cargo test --test cluster -- --nocapture`).

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;
use tasklane_core::{Status, Task, TaskId};
use tasklane_io::service::{TaskState, TaskStore};

const N: usize = 5000;
/// From the fault to the last result, at most.
const ANSWERED_WITHIN: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);
/// Tasks submitted per second: a run lasts about ten seconds, so the fault
/// lands mid-stream and the recovery shows as a pause in the results.
const RATE: usize = 500;

/// The longest pause between two results, and how long after `fault` it
/// began (negative: before).
fn pause(c: &Collected, fault: Instant) -> String {
    let (gap, at) = c.longest_gap;
    let offset = if at >= fault { secs(at - fault) } else { -secs(fault - at) };
    format!("longest pause in results {:.2} s, from {offset:+.2} s", secs(gap))
}

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Every task tracked once by the service, with its result received.
fn assert_tracked(store: &TaskStore, s: &Setup, n: usize) {
    let tracked = store.list(Some(&s.id)).unwrap();
    assert_eq!(tracked.len(), n, "the store records each task once");
    assert!(tracked.iter().all(|t| matches!(t.state, TaskState::ResultReceived(_))), "every result recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_node_is_killed_mid_stream_and_every_task_is_answered_once() {
    let s = Setup::new().await;
    let (spool, service_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = TaskStore::open(service_dir.path()).unwrap();
    let (ep, worker) = s.endpoint(&[2, 3, 1], spool.path()).await;
    wait_status(&ep, Status::Consuming, WAIT).await;
    assert_eq!(node_of(&ep), Some(2));

    let service = s.brokers(&[1, 3, 2]);
    let tasks = tasks("kill", N);
    let want = ids(&tasks);
    let collecting = collect(&service, store.clone(), N, Instant::now() + Duration::from_secs(180)).await;
    let submitting = submit(&service, store.clone(), &s.id, tasks, RATE).await;
    wait_for("a fifth of the results", Duration::from_secs(90), || collecting.accepted() >= N / 5).await;

    let before = collecting.accepted();
    let on_another = {
        let ep = ep.clone();
        watch(move || matches!(node_of(&ep), Some(n) if n != 2))
    };
    let killed = Instant::now();
    blocking_kill(&s, 2).await;
    let moved = within("the endpoint on another node", WAIT, on_another).await.unwrap() - killed;
    let new_node = node_of(&ep).unwrap();
    // Node 2 comes back while the stream goes on.
    blocking_start(&s, 2).await;
    let restarted = killed.elapsed();

    let (submitted, submitter) = submitting.handle.await.unwrap();
    assert_eq!(submitted.unwrap(), N);
    let collected = collecting.handle.await.unwrap();
    assert_each_once(&collected, &want);
    let answered = collected.last_at.saturating_duration_since(killed);
    assert!(answered < ANSWERED_WITHIN, "all answered {answered:?} after the kill");
    assert_tracked(&store, &s, N);
    let c = ep.counters();
    assert_eq!(c.handed_off, N as u64, "each task handed to the application once");
    eprintln!(
        "cluster kill-endpoint-node: node 2 killed after {before} of {N} results; endpoint on node {new_node} \
         {:.2} s later; node 2 back after {:.1} s; all {N} answered once, the last {:.1} s after the kill; \
         {}; endpoint redelivered {}, duplicates dropped {}",
        secs(moved),
        secs(restarted),
        secs(answered),
        pause(&collected, killed),
        c.redelivered,
        c.duplicates_dropped,
    );
    submitter.close().await;
    ep.shutdown().await;
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_queues_leader_is_stopped_mid_stream_and_every_task_is_answered_once() {
    let s = Setup::new().await;
    let leader = s.leader(&s.id.task_queue());
    let others: Vec<usize> = (1..=3).filter(|&n| n != leader).collect();
    let (a, b) = (others[0], others[1]);
    let (spool, service_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = TaskStore::open(service_dir.path()).unwrap();
    let (ep, worker) = s.endpoint(&[a, b, leader], spool.path()).await;
    wait_status(&ep, Status::Consuming, WAIT).await;
    let service = s.brokers(&[b, a, leader]);
    let tasks = tasks("leader", N);
    let want = ids(&tasks);
    let collecting = collect(&service, store.clone(), N, Instant::now() + Duration::from_secs(180)).await;
    let submitting = submit(&service, store.clone(), &s.id, tasks, RATE).await;
    wait_for("a fifth of the results", Duration::from_secs(90), || collecting.accepted() >= N / 5).await;

    let before = collecting.accepted();
    let stopping = Instant::now();
    blocking_stop(&s, leader).await;
    let stop_took = stopping.elapsed();
    let new_leader = s.leader(&s.id.task_queue());
    assert_ne!(new_leader, leader, "another node leads the queue while {leader} is down");

    let (submitted, submitter) = submitting.handle.await.unwrap();
    assert_eq!(submitted.unwrap(), N);
    let collected = collecting.handle.await.unwrap();
    assert_each_once(&collected, &want);
    let answered = collected.last_at.saturating_duration_since(stopping);
    assert!(answered < ANSWERED_WITHIN, "all answered {answered:?} after the stop");
    assert_tracked(&store, &s, N);
    let c = ep.counters();
    assert_eq!(c.handed_off, N as u64, "each task handed to the application once");
    eprintln!(
        "cluster stop-leader: leader node {leader} stopped after {before} of {N} results (the stop took {:.1} s); \
         node {new_leader} leads now; endpoint on node {:?} (disconnects {}); all {N} answered once, the last \
         {:.1} s after the stop began; {}",
        secs(stop_took),
        node_of(&ep),
        c.disconnects,
        secs(answered),
        pause(&collected, stopping),
    );
    blocking_start(&s, leader).await;
    submitter.close().await;
    ep.shutdown().await;
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_loses_its_node_mid_run_and_goes_on_under_confirms() {
    let s = Setup::new().await;
    let (spool, service_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = TaskStore::open(service_dir.path()).unwrap();
    let (ep, worker) = s.endpoint(&[3, 2, 1], spool.path()).await;
    wait_status(&ep, Status::Consuming, WAIT).await;
    let service = s.brokers(&[1, 2, 3]);
    let tasks = tasks("service", N);
    let want = ids(&tasks);
    let collecting = collect(&service, store.clone(), N, Instant::now() + Duration::from_secs(180)).await;
    let submitting = submit(&service, store.clone(), &s.id, tasks, RATE).await;
    wait_for("a third submitted and results flowing", Duration::from_secs(90), || {
        submitting.confirmed() >= N / 3 && collecting.accepted() >= N / 10
    })
    .await;

    let (confirmed_before, before) = (submitting.confirmed(), collecting.accepted());
    let killed = Instant::now();
    blocking_kill(&s, 1).await;
    let (submitted, submitter) = within("the submission", ANSWERED_WITHIN, submitting.handle).await.unwrap();
    assert_eq!(submitted.expect("submission goes on after the node loss"), N, "every task confirmed");
    let sc = submitter.counters();
    assert!(sc.failovers >= 1, "the submitter moved to another node: {sc:?}");
    assert_eq!(sc.confirmed, N as u64);
    assert_eq!(sc.published, N as u64 + sc.republished, "only what was unconfirmed went out again: {sc:?}");
    let node = submitter.connection().map(|c| c.peer);
    let collected = collecting.handle.await.unwrap();
    assert_each_once(&collected, &want);
    assert!(collected.failovers >= 1, "the results consumer moved to another node");
    let answered = collected.last_at.saturating_duration_since(killed);
    assert!(answered < ANSWERED_WITHIN, "all answered {answered:?} after the kill");
    assert_tracked(&store, &s, N);
    let c = ep.counters();
    assert_eq!(c.handed_off, N as u64, "a task published again is not run again");
    eprintln!(
        "cluster kill-service-node: node 1 killed after {confirmed_before} confirmed and {before} results; \
         submitter on {node:?}, {} published again, all {N} confirmed; all {N} answered once, the last {:.1} s \
         after the kill; {}; endpoint dropped {} duplicates",
        sc.republished,
        secs(answered),
        pause(&collected, killed),
        c.duplicates_dropped,
    );
    blocking_start(&s, 1).await;
    submitter.close().await;
    ep.shutdown().await;
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_endpoint_on_another_node_takes_over_when_the_active_ones_node_dies() {
    let s = Setup::new().await;
    let (spool_a, spool_b, service_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = TaskStore::open(service_dir.path()).unwrap();
    let (a, worker_a) = s.endpoint(&[2, 1, 3], spool_a.path()).await;
    wait_status(&a, Status::Consuming, WAIT).await;
    let (b, worker_b) = s.endpoint(&[3, 1, 2], spool_b.path()).await;
    // On a quorum queue the broker counts only the active consumer in a
    // declare-ok, so the endpoint cannot tell that it stands by until it
    // receives (or not): its status is not asserted here, what it does is.
    wait_for("the second endpoint on node 3", WAIT, || node_of(&b) == Some(3)).await;
    assert_eq!(node_of(&a), Some(2));

    let n = N / 2;
    let service = s.brokers(&[1, 3, 2]);
    let tasks = tasks("standby", n);
    let want = ids(&tasks);
    let collecting = collect(&service, store.clone(), n, Instant::now() + Duration::from_secs(180)).await;
    let submitting = submit(&service, store.clone(), &s.id, tasks, RATE).await;
    wait_for("a fifth of the results", Duration::from_secs(90), || collecting.accepted() >= n / 5).await;
    assert_eq!(b.counters().received, 0, "the standby receives nothing while the active endpoint lives");

    let before = collecting.accepted();
    let receiving = {
        let b = b.clone();
        watch(move || b.counters().received > 0)
    };
    let killed = Instant::now();
    blocking_kill(&s, 2).await;
    let took_over = within("the standby to receive tasks", WAIT, receiving).await.unwrap() - killed;
    let (submitted, submitter) = submitting.handle.await.unwrap();
    assert_eq!(submitted.unwrap(), n);
    let collected = collecting.handle.await.unwrap();
    assert_each_once(&collected, &want);
    let answered = collected.last_at.saturating_duration_since(killed);
    assert!(answered < ANSWERED_WITHIN, "all answered {answered:?} after the kill");
    assert_tracked(&store, &s, n);
    // The first endpoint came back on another node, and receives nothing.
    wait_for("the first endpoint on another node", WAIT, || matches!(node_of(&a), Some(n) if n != 2)).await;
    let (ca, cb) = (a.counters(), b.counters());
    assert!(cb.handed_off > 0, "the standby took tasks over");
    assert!(ca.handed_off + cb.handed_off >= n as u64);
    eprintln!(
        "cluster standby-takeover: node 2 killed after {before} of {n} results; the standby on node 3 received \
         tasks {:.2} s later; the first endpoint is back on node {:?}; handed off {} by the first, {} by the \
         standby; all {n} answered once, the last {:.1} s after the kill; {}",
        secs(took_over),
        node_of(&a),
        ca.handed_off,
        cb.handed_off,
        secs(answered),
        pause(&collected, killed),
    );
    blocking_start(&s, 2).await;
    submitter.close().await;
    a.shutdown().await;
    b.shutdown().await;
    worker_a.abort();
    worker_b.abort();
}
