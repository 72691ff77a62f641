//! A second endpoint with the same id waits as a standby while the first
//! lives (single active consumer), and takes over when it is gone.

mod endpoint_support;

use std::time::Duration;

use endpoint_support::*;
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
