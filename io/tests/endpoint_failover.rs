//! A second endpoint with the same id waits as a standby while the first
//! lives (single active consumer), and takes over when it is gone: on a
//! classic queue (which counts every consumer) and on a quorum queue
//! (which counts only the active one).

mod endpoint_support;

use std::time::Duration;

use endpoint_support::*;
use std::collections::BTreeSet;

use tasklane_core::{ResultStatus, Status};

const WAIT: Duration = Duration::from_secs(30);

/// Publishes 5 tasks `{prefix}0..4`; `endpoint` takes exactly those and
/// answers them, confirmed.
async fn answer_five(topo: &Topology, endpoint: &tasklane_io::endpoint::Endpoint, prefix: &str) {
    let msgs: Vec<_> = (0..5).map(|i| task_message(&format!("{prefix}{i}"), "p")).collect();
    topo.publish(&msgs).await;
    let tasks = take_tasks(endpoint, 5, WAIT).await;
    assert!(tasks.iter().all(|t| t.id.as_str().starts_with(prefix)), "{tasks:?}");
    for t in &tasks {
        endpoint.complete(&t.id, ResultStatus::Ok, "done").await.unwrap();
    }
    wait_counters(endpoint, WAIT, |c| c.confirmed == 5).await;
}

/// The 10 results of both endpoints are there, each task answered once,
/// and the task queue is empty.
async fn every_task_answered_once(topo: &Topology) {
    let results = topo.take(&topo.results, 10, WAIT).await;
    assert_eq!(results.len(), 10);
    let ids: BTreeSet<String> =
        results.iter().map(|(_, m)| String::from_utf8(m.message_id.clone().unwrap()).unwrap()).collect();
    assert_eq!(ids.len(), 10, "every task answered once: {ids:?}");
    assert_eq!(topo.ready(&topo.tasks).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_endpoint_stands_by_then_takes_over() {
    Topology::run(|topo| async move {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open(topo.config(&topo.url, dir_a.path())).await;
        wait_status(a.status(), WAIT, |s| *s == Status::Consuming).await;
        let b = open(topo.config(&topo.url, dir_b.path())).await;
        wait_status(b.status(), WAIT, |s| *s == Status::Standby).await;

        answer_five(&topo, &a, "a").await;
        assert_eq!(b.counters().received, 0, "the standby receives nothing while the first lives");
        assert_eq!(*b.status().borrow(), Status::Standby);

        a.shutdown().await;
        // The standby learns it is the only consumer left, without a delivery.
        wait_status(b.status(), WAIT, |s| *s == Status::Consuming).await;
        answer_five(&topo, &b, "b").await;
        b.shutdown().await;
        every_task_answered_once(&topo).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_endpoint_on_a_quorum_queue_stands_by_then_takes_over() {
    Topology::run_on(QueueType::Quorum, |topo| async move {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open(topo.config(&topo.url, dir_a.path())).await;
        wait_status(a.status(), WAIT, |s| *s == Status::Consuming).await;
        let b = open(topo.config(&topo.url, dir_b.path())).await;
        // The queue counts only the active consumer: 1 before b's consume
        // and 1 after. b must not take that 1 for itself.
        wait_status(b.status(), WAIT, |s| *s == Status::Standby).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(*b.status().borrow(), Status::Standby, "still standing by");
        assert_eq!(*a.status().borrow(), Status::Consuming);

        answer_five(&topo, &a, "a").await;
        assert_eq!(b.counters().received, 0, "the standby receives nothing while the first lives");
        assert_eq!(*b.status().borrow(), Status::Standby);

        a.shutdown().await;
        // On a quorum queue no count tells b it took over (it stays 1): the
        // first delivery does.
        answer_five(&topo, &b, "b").await;
        assert_eq!(*b.status().borrow(), Status::Consuming);
        b.shutdown().await;
        every_task_answered_once(&topo).await;
    })
    .await;
}
