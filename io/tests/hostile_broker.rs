//! Hostile tasks through the real broker: published by raw clients (amqprs,
//! and a frame writer for bytes amqprs will not send), consumed by a real
//! endpoint. Each has a clear outcome: dead-lettered (the endpoint logs the
//! reason), or a duplicate acked without a second hand-off; the endpoint
//! keeps consuming, and the good tasks around them all go through.
//!
//! A `message_id` or a string header that is not UTF-8 is the poison case:
//! amqprs cannot decode the delivery and drops the connection, so the
//! endpoint never sees it; its poison scan (SPEC §4) moves it to
//! `tasklane.dead`.

mod endpoint_support;
#[path = "hostile_support/raw_amqp.rs"]
mod raw_amqp;

use std::collections::BTreeMap;
use std::time::Duration;

use amqprs::channel::{QueueBindArguments, QueueDeclareArguments};
use amqprs::{FieldTable, FieldValue};
use endpoint_support::*;
use raw_amqp::RawPublish;
use tasklane_core::{HeaderValue, RawMessage, ResultStatus, Status};
use tasklane_io::endpoint::EndpointConfig;

const WAIT: Duration = Duration::from_secs(30);

fn with_kind(id: &str, kind: HeaderValue) -> RawMessage {
    let mut m = task_message(id, "p");
    m.headers = vec![("tasklane-kind".into(), kind)];
    m
}

fn death(props: &amqprs::BasicProperties, name: &str) -> Option<String> {
    props.headers().and_then(|h| h.get(&name.try_into().unwrap())).map(|v| v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tasks_are_dead_lettered_and_the_good_ones_go_through_once() {
    Topology::run(|topo| async move {
        let mut no_id = task_message("x", "no id");
        no_id.message_id = None;
        let mut huge_table = task_message("huge-table", "p");
        huge_table.headers = (0..1000).map(|i| (format!("h{i}"), HeaderValue::Int(i))).collect();
        let oversize_body = RawMessage { body: vec![b'x'; (16 << 20) + 1].into(), ..task_message("big", "") };
        let hostile = [
            no_id,
            task_message("", "empty id"),
            task_message(&"i".repeat(200), "id of 200 bytes"),
            with_kind("kind-int", HeaderValue::Int(7)),
            with_kind("kind-bytes", HeaderValue::Bytes(b"resize".to_vec())),
            with_kind("kind-bool", HeaderValue::Bool(true)),
            huge_table,
            oversize_body,
        ];
        let mut msgs = vec![task_message("good-1", "fine")];
        msgs.extend(hostile.iter().cloned());
        msgs.push(task_message("empty-body", ""));
        msgs.extend((0..20).map(|_| task_message("same", "again")));
        msgs.push(task_message("good-2", "fine"));
        topo.publish(&msgs).await;

        let spool = tempfile::tempdir().unwrap();
        let endpoint = open(topo.config(&topo.url, spool.path())).await;
        let tasks = take_tasks(&endpoint, 4, WAIT).await;
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["good-1", "empty-body", "same", "good-2"]);
        assert!(tasks[1].body.is_empty(), "a zero-length body is a task");
        let n = msgs.len() as u64;
        wait_counters(&endpoint, WAIT, |c| c.received == n && c.acked + c.rejected == n).await;
        let c = endpoint.counters();
        assert_eq!((c.rejected, c.duplicates_dropped, c.handed_off), (hostile.len() as u64, 19, 4), "{c:?}");

        let dead = topo.take(&topo.dead, hostile.len(), WAIT).await;
        assert_eq!(dead.len(), hostile.len(), "every hostile task is dead-lettered, once");
        let mut by_body = BTreeMap::new();
        for (props, msg) in &dead {
            assert_eq!(death(props, "x-first-death-reason").as_deref(), Some("rejected"));
            assert_eq!(death(props, "x-first-death-queue").as_deref(), Some(topo.tasks.as_str()));
            *by_body.entry(msg.body.len()).or_insert(0) += 1;
        }
        assert_eq!(by_body.get(&((16 << 20) + 1)), Some(&1), "the oversize body is kept whole");

        for t in &tasks {
            endpoint.complete(&t.id, ResultStatus::Ok, "done").await.unwrap();
        }
        wait_counters(&endpoint, WAIT, |c| c.confirmed == 4).await;
        assert_eq!(topo.take(&topo.results, 5, Duration::from_secs(2)).await.len(), 4, "one result per good task");
        assert_eq!(*endpoint.status().borrow(), Status::Consuming);
        assert_eq!(topo.ready(&topo.tasks).await, 0);
        endpoint.shutdown().await;
    })
    .await;
}

/// Messages in the test's dead-letter queue, counted without reading them
/// (amqprs cannot decode the poison ones).
async fn dead(topo: &Topology) -> usize {
    topo.ready(&topo.dead).await as usize
}

/// Publishes one plain task `id` to `queue` by frames.
async fn publish_plain(topo: &Topology, queue: &str, id: &str) {
    let msgs = vec![RawPublish { message_id: Some(id.as_bytes().to_vec()), header_table: None, body: b"p".to_vec() }];
    let (vhost, queue) = (topo.vhost.name().to_string(), queue.to_string());
    tokio::task::spawn_blocking(move || raw_amqp::publish(&vhost, &queue, &msgs)).await.unwrap();
}

/// Publishes 20 good tasks, two poison ones (a `message_id` and a
/// `tasklane-kind` header that are not UTF-8: amqprs cannot decode them and
/// drops its connection), then 50 good ones, to `queue` by frames.
async fn publish_around_poison(topo: &Topology, queue: &str) {
    let plain = |id: String| RawPublish { message_id: Some(id.into_bytes()), header_table: None, body: b"p".to_vec() };
    let mut kind = Vec::new();
    raw_amqp::string_entry(&mut kind, "tasklane-kind", b"resize-\xff");
    let mut msgs: Vec<RawPublish> = (0..20).map(|i| plain(format!("before-{i:02}"))).collect();
    msgs.push(RawPublish { message_id: Some(b"bad-\xff\xfe".to_vec()), header_table: None, body: b"p".to_vec() });
    msgs.push(RawPublish { message_id: Some(b"bad-kind".to_vec()), header_table: Some(kind), body: b"p".to_vec() });
    msgs.extend((0..50).map(|i| plain(format!("after-{i:02}"))));
    let (vhost, queue) = (topo.vhost.name().to_string(), queue.to_string());
    tokio::task::spawn_blocking(move || raw_amqp::publish(&vhost, &queue, &msgs)).await.unwrap();
}

/// The poison run of SPEC §4: every good task is answered once, the two
/// poison ones are quarantined into `tasklane.dead`, within 30 s of their
/// arrival, and the lane goes on consuming.
async fn answers_everything_around_poison(
    topo: &Topology,
    queue: &str,
    config: impl FnOnce(&std::path::Path) -> tasklane_io::endpoint::EndpointConfig,
) {
    let spool = tempfile::tempdir().unwrap();
    let endpoint = open(config(spool.path())).await;
    let started = std::time::Instant::now();
    publish_around_poison(topo, queue).await;
    let tasks = take_tasks(&endpoint, 70, WAIT).await;
    let mut ids: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 70, "every good task once");
    assert!(ids.iter().all(|id| id.starts_with("before-") || id.starts_with("after-")), "{ids:?}");
    for t in &tasks {
        endpoint.complete(&t.id, ResultStatus::Ok, "done").await.unwrap();
    }
    wait_counters(&endpoint, WAIT, |c| c.confirmed == 70 && c.quarantined == 2).await;
    let elapsed = started.elapsed();
    eprintln!("poison on {queue}: 70 answered, 2 quarantined in {elapsed:?}; {:?}", endpoint.counters());
    assert!(elapsed < WAIT, "{elapsed:?}");
    assert_eq!(dead(topo).await, 2, "the two poison tasks are in tasklane.dead");
    assert_eq!(topo.take(&topo.results, 71, Duration::from_secs(5)).await.len(), 70, "one result per good task");
    // The lane is not stalled: a task published now is handed off.
    publish_plain(topo, queue, "later").await;
    let later = take_tasks(&endpoint, 1, WAIT).await;
    assert_eq!(later[0].id.as_str(), "later");
    wait_status(endpoint.status(), WAIT, |s| *s == Status::Consuming).await;
    assert!(topo.ready(queue).await <= 1, "only 'later' may wait for its ack");
    endpoint.shutdown().await;
}

/// A task whose `message_id` or kind header is not UTF-8 on a classic
/// queue: the lane sees its connection die right after consuming, scans the
/// head of the queue with the raw client and quarantines the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_tasks_on_a_classic_queue_are_quarantined_and_the_rest_answered() {
    Topology::run(|topo| async move {
        let queue = topo.tasks.clone();
        let (url, id) = (topo.url.clone(), topo.id.clone());
        let config = move |spool: &std::path::Path| EndpointConfig::new(&url, &id, spool).unwrap().heartbeat(5);
        answers_everything_around_poison(&topo, &queue, config).await;
    })
    .await;
}

/// The same on a quorum queue with single active consumer and the delivery
/// limit `tasklane provision` sets (20): the scan, not the limit, clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_tasks_on_a_quorum_queue_are_quarantined_and_the_rest_answered() {
    Topology::run(|topo| async move {
        let id = format!("{}-q", topo.id);
        let queue = format!("{id}.tasks");
        let mut args = FieldTable::new();
        args.insert("x-queue-type".try_into().unwrap(), FieldValue::S("quorum".try_into().unwrap()));
        args.insert("x-single-active-consumer".try_into().unwrap(), FieldValue::t(true));
        args.insert("x-delivery-limit".try_into().unwrap(), FieldValue::l(20));
        args.insert("x-dead-letter-exchange".try_into().unwrap(), FieldValue::S("tasklane.dead".try_into().unwrap()));
        let declare = QueueDeclareArguments::durable_client_named(&queue).arguments(args).finish();
        topo.channel.queue_declare(declare).await.unwrap();
        let bind = QueueBindArguments::new(&topo.results, "results", &format!("{id}.results"));
        topo.channel.queue_bind(bind).await.unwrap();
        let url = topo.url.clone();
        let config = move |spool: &std::path::Path| EndpointConfig::new(&url, &id, spool).unwrap().heartbeat(5);
        answers_everything_around_poison(&topo, &queue, config).await;
    })
    .await;
}
