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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_endpoint_stands_by_then_takes_over() {
    Topology::run(|topo| async move {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open(topo.config(&topo.url, dir_a.path())).await;
        wait_status(a.status(), WAIT, |s| *s == Status::Consuming).await;
        let b = open(topo.config(&topo.url, dir_b.path())).await;
        wait_status(b.status(), WAIT, |s| *s == Status::Standby).await;

        let first: Vec<_> = (0..5).map(|i| task_message(&format!("a{i}"), "p")).collect();
        topo.publish(&first).await;
        for t in take_tasks(&a, 5, WAIT).await {
            a.complete(&t.id, ResultStatus::Ok, "by a").await.unwrap();
        }
        wait_counters(&a, WAIT, |c| c.confirmed == 5).await;
        assert_eq!(b.counters().received, 0, "the standby receives nothing while the first lives");
        assert_eq!(*b.status().borrow(), Status::Standby);

        a.shutdown().await;
        // The standby learns it is the only consumer left, without a delivery.
        wait_status(b.status(), WAIT, |s| *s == Status::Consuming).await;
        let second: Vec<_> = (0..5).map(|i| task_message(&format!("b{i}"), "p")).collect();
        topo.publish(&second).await;
        let tasks = take_tasks(&b, 5, WAIT).await;
        assert!(tasks.iter().all(|t| t.id.as_str().starts_with('b')));
        for t in &tasks {
            b.complete(&t.id, ResultStatus::Ok, "by b").await.unwrap();
        }
        wait_counters(&b, WAIT, |c| c.confirmed == 5).await;
        b.shutdown().await;
        let results = topo.take(&topo.results, 10, WAIT).await;
        assert_eq!(results.len(), 10);
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

        let first: Vec<_> = (0..5).map(|i| task_message(&format!("a{i}"), "p")).collect();
        topo.publish(&first).await;
        for t in take_tasks(&a, 5, WAIT).await {
            a.complete(&t.id, ResultStatus::Ok, "by a").await.unwrap();
        }
        wait_counters(&a, WAIT, |c| c.confirmed == 5).await;
        assert_eq!(b.counters().received, 0, "the standby receives nothing while the first lives");
        assert_eq!(*b.status().borrow(), Status::Standby);

        a.shutdown().await;
        // On a quorum queue no count tells b it took over (it stays 1): the
        // first delivery does.
        let second: Vec<_> = (0..5).map(|i| task_message(&format!("b{i}"), "p")).collect();
        topo.publish(&second).await;
        let tasks = take_tasks(&b, 5, WAIT).await;
        assert!(tasks.iter().all(|t| t.id.as_str().starts_with('b')));
        wait_status(b.status(), WAIT, |s| *s == Status::Consuming).await;
        for t in &tasks {
            b.complete(&t.id, ResultStatus::Ok, "by b").await.unwrap();
        }
        wait_counters(&b, WAIT, |c| c.confirmed == 5).await;
        b.shutdown().await;
        let results = topo.take(&topo.results, 10, WAIT).await;
        assert_eq!(results.len(), 10);
        let ids: BTreeSet<String> =
            results.iter().map(|(_, m)| String::from_utf8(m.message_id.clone().unwrap()).unwrap()).collect();
        assert_eq!(ids.len(), 10, "every task answered once: {ids:?}");
        assert_eq!(topo.ready(&topo.tasks).await, 0);
    })
    .await;
}
