//! The endpoint against the real broker: round trip, restart on the same
//! spool, an unreachable broker at start, and a malformed task.

mod endpoint_support;

use std::collections::BTreeSet;
use std::time::Duration;

use endpoint_support::*;
use tasklane_core::{ResultStatus, Status, TaskId};
use tasklane_io::endpoint::EndpointError;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_each_handed_off_once_and_each_result_delivered() {
    Topology::run(|topo| async move {
        let n = 1000;
        let msgs: Vec<_> = (0..n).map(|i| task_message(&format!("task-{i}"), &format!("payload {i}"))).collect();
        topo.publish(&msgs).await;
        let spool = tempfile::tempdir().unwrap();
        let endpoint = open(topo.config(&topo.url, spool.path())).await;

        let mut seen = BTreeSet::new();
        for _ in 0..n {
            let task = tokio::time::timeout(WAIT, endpoint.next_task()).await.expect("a task in time").unwrap();
            assert!(seen.insert(task.id.clone()), "{} handed off twice", task.id);
            let out = format!("done: {}", std::str::from_utf8(&task.body).unwrap());
            endpoint.complete(&task.id, ResultStatus::Ok, out).await.unwrap();
        }
        let expected: BTreeSet<TaskId> = (0..n).map(|i| TaskId::new(format!("task-{i}")).unwrap()).collect();
        assert_eq!(seen, expected);

        let results = topo.take(&topo.results, n, WAIT).await;
        assert_eq!(results.len(), n, "every result arrives");
        let mut ids = BTreeSet::new();
        for (props, msg) in &results {
            let id = String::from_utf8(msg.message_id.clone().unwrap()).unwrap();
            let i: usize = id.strip_prefix("task-").unwrap().parse().unwrap();
            assert_eq!(msg.body, format!("done: payload {i}").as_bytes());
            assert_eq!(header(msg, "tasklane-endpoint"), Some(topo.id.as_str()));
            assert_eq!(header(msg, "tasklane-status"), Some("ok"));
            assert_eq!(props.delivery_mode(), Some(2), "results are persistent");
            ids.insert(id);
        }
        assert_eq!(ids.len(), n, "no result twice");
        wait_counters(&endpoint, WAIT, |c| c.confirmed == n as u64).await;
        let c = endpoint.counters();
        assert_eq!((c.received, c.spooled, c.acked, c.handed_off, c.completed), (1000, 1000, 1000, 1000, 1000));
        assert_eq!((c.rejected, c.duplicates_dropped), (0, 0));
        assert_eq!(*endpoint.status().borrow(), Status::Consuming);
        assert_eq!(topo.ready(&topo.tasks).await, 0);
        endpoint.shutdown().await;
        assert_eq!(*endpoint.status().borrow(), Status::Closed);
        assert!(endpoint.next_task().await.is_none());
        let unknown = TaskId::new("task-0").unwrap();
        assert!(matches!(endpoint.complete(&unknown, ResultStatus::Ok, "x").await, Err(EndpointError::Closed)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_spool_hands_off_uncompleted_tasks_again() {
    Topology::run(|topo| async move {
        let msgs: Vec<_> = (0..20).map(|i| task_message(&format!("t{i}"), "p")).collect();
        topo.publish(&msgs).await;
        let spool = tempfile::tempdir().unwrap();

        let first = open(topo.config(&topo.url, spool.path())).await;
        let tasks = take_tasks(&first, 20, WAIT).await;
        let order: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
        assert_eq!(order, (0..20).map(|i| format!("t{i}")).collect::<Vec<_>>(), "arrival order");
        for t in &tasks[..5] {
            first.complete(&t.id, ResultStatus::Failed, "no").await.unwrap();
        }
        wait_counters(&first, WAIT, |c| c.acked == 20 && c.confirmed == 5).await;
        let unknown = TaskId::new("never-seen").unwrap();
        assert!(matches!(first.complete(&unknown, ResultStatus::Ok, "x").await, Err(EndpointError::Usage(_))));
        first.shutdown().await;
        assert_eq!(topo.ready(&topo.tasks).await, 0, "the broker gave up the tasks: they live in the spool only");

        let second = open(topo.config(&topo.url, spool.path())).await;
        let again = take_tasks(&second, 15, WAIT).await;
        let again_ids: Vec<String> = again.iter().map(|t| t.id.to_string()).collect();
        assert_eq!(again_ids, order[5..].to_vec(), "the 15 uncompleted tasks, in arrival order");
        for t in &again {
            second.complete(&t.id, ResultStatus::Ok, "yes").await.unwrap();
        }
        wait_counters(&second, WAIT, |c| c.confirmed == 15).await;
        assert_eq!(second.counters().handed_off, 15);
        second.shutdown().await;

        let results = topo.take(&topo.results, 21, Duration::from_secs(3)).await;
        let statuses: BTreeSet<(String, String)> = results
            .iter()
            .map(|(_, m)| {
                (
                    String::from_utf8(m.message_id.clone().unwrap()).unwrap(),
                    header(m, "tasklane-status").unwrap().into(),
                )
            })
            .collect();
        assert_eq!(results.len(), 20, "one result per task");
        let expected: BTreeSet<(String, String)> =
            (0..20).map(|i| (format!("t{i}"), if i < 5 { "failed" } else { "ok" }.to_string())).collect();
        assert_eq!(statuses, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_unreachable_spooled_tasks_are_still_handed_off_and_completed() {
    Topology::run(|topo| async move {
        let msgs: Vec<_> = (0..10).map(|i| task_message(&format!("u{i}"), "p")).collect();
        topo.publish(&msgs).await;
        let spool = tempfile::tempdir().unwrap();
        let first = open(topo.config(&topo.url, spool.path())).await;
        take_tasks(&first, 10, WAIT).await;
        wait_counters(&first, WAIT, |c| c.acked == 10).await;
        first.shutdown().await;

        // Nobody listens on port 1: the endpoint opens anyway.
        let offline = open(topo.config(DEAD_URL, spool.path())).await;
        let tasks = take_tasks(&offline, 10, WAIT).await;
        let status = wait_status(offline.status(), WAIT, |s| matches!(s, Status::Disconnected { .. })).await;
        let Status::Disconnected { reason, .. } = status else { unreachable!() };
        assert!(reason.starts_with("connect failed: cannot connect to amqp://guest:***@127.0.0.1:1/"), "{reason}");
        for t in &tasks {
            offline.complete(&t.id, ResultStatus::Ok, "offline").await.unwrap();
        }
        let c = offline.counters();
        assert_eq!((c.handed_off, c.completed, c.published, c.confirmed), (10, 10, 0, 0));
        offline.shutdown().await;

        // Back online: the results recorded offline are published.
        let online = open(topo.config(&topo.url, spool.path())).await;
        wait_counters(&online, WAIT, |c| c.confirmed == 10).await;
        online.shutdown().await;
        let results = topo.take(&topo.results, 10, WAIT).await;
        assert_eq!(results.len(), 10);
        assert!(results.iter().all(|(_, m)| m.body == "offline"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_message_id_is_rejected_and_dead_lettered_and_the_endpoint_goes_on() {
    Topology::run(|topo| async move {
        let marker = format!("malformed {}", uuid::Uuid::new_v4());
        let mut bad = task_message("x", &marker);
        bad.message_id = None;
        topo.publish(&[bad, task_message("good-1", "fine")]).await;
        let spool = tempfile::tempdir().unwrap();
        let endpoint = open(topo.config(&topo.url, spool.path())).await;
        let tasks = take_tasks(&endpoint, 1, WAIT).await;
        assert_eq!(tasks[0].id.as_str(), "good-1");
        wait_counters(&endpoint, WAIT, |c| c.rejected == 1 && c.acked == 1).await;

        let dead = topo.take(&topo.dead, 1, WAIT).await;
        assert_eq!(dead.len(), 1, "the malformed task is dead-lettered");
        let (props, msg) = &dead[0];
        assert_eq!(msg.body, marker.as_bytes());
        assert_eq!(msg.message_id, None);
        let death =
            props.headers().and_then(|h| h.get(&"x-first-death-queue".try_into().unwrap())).map(|v| v.to_string());
        assert_eq!(death.as_deref(), Some(topo.tasks.as_str()));
        endpoint.complete(&tasks[0].id, ResultStatus::Ok, "ok").await.unwrap();
        wait_counters(&endpoint, WAIT, |c| c.confirmed == 1).await;
        assert_eq!(*endpoint.status().borrow(), Status::Consuming);
        endpoint.shutdown().await;
    })
    .await;
}
