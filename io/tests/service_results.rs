//! `Results`: ownership and dedup through core's `ResultIntake`. A spoofed
//! result is dead-lettered with a reason, a duplicate is accepted once, and
//! the dedup window survives a restart of the consumer.

use std::time::Duration;

use amqprs::connection::Connection;
use bytes::Bytes;
use tasklane_core::{encode_result, EndpointId, ResultStatus, Task, TaskId, TaskResult};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::service::{
    provision, QueueType, ResultCounters, Results, ResultsOptions, Submitter, TaskState, TaskStore,
};
use tasklane_tests::Vhost;

/// Publishes a result to exchange `results` with `routing_key`, as an
/// endpoint (or an impostor) would.
async fn publish_result(conn: &Connection, routing_key: &str, sender: &EndpointId, task: &str, body: &str) {
    let channel = conn.open_channel(None).await.unwrap();
    let r =
        TaskResult { task: TaskId::new(task).unwrap(), status: ResultStatus::Ok, body: Bytes::from(body.to_owned()) };
    let raw = encode_result(sender, &r);
    let props = amqp::publish_properties(&raw).unwrap();
    channel.basic_publish(props, raw.body.to_vec(), amqp::publish_args("results", routing_key)).await.unwrap();
    channel.close().await.unwrap();
}

async fn wait_for_ready(vhost: &Vhost, queue: &str, n: u32) {
    for _ in 0..100 {
        if vhost.queue_counts(queue).await.unwrap().map(|c| c.ready) == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{queue} never held {n} messages");
}

#[tokio::test]
async fn spoofed_results_are_dead_lettered_and_duplicates_accepted_once() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path()).unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("E").unwrap();
    let f = EndpointId::new("F").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();
    provision(&conn, &f, QueueType::Classic).await.unwrap();
    let mut submitter = Submitter::open(&conn, store.clone()).await.unwrap();
    let task = Task { id: TaskId::new("t-1").unwrap(), kind: None, body: Bytes::from("in") };
    submitter.submit(&e, task).await.unwrap();

    publish_result(&conn, "F.results", &f, "t-1", "spoof").await; // F answers E's task
    publish_result(&conn, "E.results", &e, "t-1", "real").await;
    publish_result(&conn, "E.results", &e, "t-1", "real").await; // duplicate
    publish_result(&conn, "E.results", &e, "never-submitted", "?").await;
    wait_for_ready(&vhost, "results", 4).await;

    let mut results = Results::open(&conn, store.clone(), ResultsOptions::default()).await.unwrap();
    let got = results.next_timeout(Duration::from_secs(10)).await.unwrap().expect("the real result");
    assert_eq!((got.task.as_str(), got.endpoint.as_str(), got.body.as_ref()), ("t-1", "E", b"real".as_ref()));
    assert_eq!(got.status, ResultStatus::Ok);
    assert_eq!(results.next_timeout(Duration::from_millis(500)).await.unwrap(), None, "accepted once");
    let counters = results.close().await.unwrap();
    assert_eq!(counters, ResultCounters { accepted: 1, duplicates: 1, dead_lettered: 2 });

    wait_for_ready(&vhost, "tasklane.dead", 2).await;
    assert_eq!(vhost.queue_counts("results").await.unwrap().unwrap().ready, 0, "everything was acked");
    let dead = vhost.peek_messages("tasklane.dead", 10).unwrap();
    let reasons: Vec<(&str, &str, &str)> = dead
        .iter()
        .map(|m| {
            (m.routing_key.as_str(), m.message_id.as_deref().unwrap(), m.headers["tasklane-reason"].as_str().unwrap())
        })
        .collect();
    assert_eq!(reasons, vec![("F.results", "t-1", "not-owner"), ("E.results", "never-submitted", "unknown-task")]);
    assert_eq!(dead[0].payload, b"spoof");

    let tracked = store.get(&TaskId::new("t-1").unwrap()).unwrap().unwrap();
    assert_eq!(tracked.state, TaskState::ResultReceived(ResultStatus::Ok));
    let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)
}

#[tokio::test]
async fn the_dedup_window_survives_a_restart() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("E").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();
    {
        let store = TaskStore::open(dir.path()).unwrap();
        let mut submitter = Submitter::open(&conn, store.clone()).await.unwrap();
        let task = Task { id: TaskId::new("t-1").unwrap(), kind: None, body: Bytes::new() };
        submitter.submit(&e, task).await.unwrap();
        publish_result(&conn, "E.results", &e, "t-1", "first").await;
        let mut results = Results::open(&conn, store, ResultsOptions::default()).await.unwrap();
        assert!(results.next_timeout(Duration::from_secs(10)).await.unwrap().is_some());
        results.close().await.unwrap();
    }
    // The endpoint publishes the same result again (say, after a crash
    // before its confirm); a restarted service drops it.
    publish_result(&conn, "E.results", &e, "t-1", "again").await;
    wait_for_ready(&vhost, "results", 1).await;
    let store = TaskStore::open(dir.path()).unwrap();
    let mut results = Results::open(&conn, store, ResultsOptions::default()).await.unwrap();
    assert_eq!(results.next_timeout(Duration::from_millis(800)).await.unwrap(), None);
    let counters = results.close().await.unwrap();
    assert_eq!(counters, ResultCounters { accepted: 0, duplicates: 1, dead_lettered: 0 });
    let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)
}

#[tokio::test]
async fn a_result_handed_over_but_never_acked_comes_back_after_a_crash() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path()).unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("E").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();
    let mut submitter = Submitter::open(&conn, store.clone()).await.unwrap();
    let task = Task { id: TaskId::new("t-1").unwrap(), kind: None, body: Bytes::new() };
    submitter.submit(&e, task).await.unwrap();
    publish_result(&conn, "E.results", &e, "t-1", "out").await;

    // Handed over, then the service dies before it comes back for more:
    // neither acked nor remembered, so the broker hands it over again.
    let crashing = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let mut results = Results::open(&crashing, store.clone(), ResultsOptions::default()).await.unwrap();
    assert!(results.next_timeout(Duration::from_secs(10)).await.unwrap().is_some());
    drop(results);
    let _ = crashing.close().await;

    let mut results = Results::open(&conn, store.clone(), ResultsOptions::default()).await.unwrap();
    let again = results.next_timeout(Duration::from_secs(10)).await.unwrap().expect("handed over again");
    assert_eq!(again.task.as_str(), "t-1");
    assert_eq!(results.next_timeout(Duration::from_millis(300)).await.unwrap(), None);
    results.close().await.unwrap();
    assert_eq!(vhost.queue_counts("results").await.unwrap().unwrap().ready, 0);
    assert_eq!(store.seen().unwrap(), vec![TaskId::new("t-1").unwrap()]);
    let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)
}
