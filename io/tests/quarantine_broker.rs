//! The poison quarantine against the real broker, on the topology
//! `provision` declares: every kind of undecodable message lands in
//! `tasklane.dead` with its reason, every other message stays in the queue
//! in its order, on classic and quorum queues; a scan cut short loses
//! nothing; and the failures say what went wrong.

mod quarantine_support;

use std::time::{Duration, Instant};

use quarantine_support::*;
use tasklane_io::amqp::quarantine::props::FieldValue;
use tasklane_io::amqp::quarantine::{self, Disposition, ScanErrorKind, QUEUE_HEADER};
use tasklane_io::amqp::ConnectOptions;
use tasklane_io::service::{QueueType, DEAD, REASON_DETAIL_HEADER};
use tasklane_tests::FaultProxy;

fn good(n: usize) -> Message {
    task(format!("good-{n}").as_bytes())
}

fn good_ids(range: impl Iterator<Item = usize>) -> Vec<Vec<u8>> {
    range.map(|n| format!("good-{n}").into_bytes()).collect()
}

async fn every_kind_is_quarantined(queue_type: QueueType) {
    let s = Setup::new(queue_type).await;
    let kinds = poison_kinds(&s.queue);
    let mut msgs = vec![good(0)];
    for (n, (poison, _)) in kinds.iter().enumerate() {
        msgs.push(poison.clone());
        msgs.push(good(n + 1));
    }
    s.publish(&msgs).await;

    let out = quarantine::scan(&s.opts, &s.queue, 100).await.unwrap();
    let counts = (out.scanned, out.returned, out.quarantined.len(), out.kept.len(), out.reached_end);
    assert_eq!(counts, (13, 7, 6, 0, true), "{out:?}");
    for (n, (q, (poison, reason))) in out.quarantined.iter().zip(&kinds).enumerate() {
        assert_eq!(q.position, 2 * n + 1);
        assert_eq!(q.message_id, poison.props.message_id);
        assert!(q.reason.starts_with(reason), "{:?} for {reason:?}", q.reason);
        assert!(q.reason.ends_with("which the endpoint's AMQP client cannot decode"), "{}", q.reason);
        assert_eq!(q.how, Disposition::PublishedWithReason);
    }

    // The copies: original properties and body, plus the reason headers.
    let dead = s.peek(DEAD).await;
    assert_eq!(dead.len(), kinds.len(), "one copy per poison message");
    for (d, (poison, reason)) in dead.iter().zip(&kinds) {
        assert_eq!(message_id(d), poison.props.message_id.clone().unwrap());
        assert_eq!(d.body, poison.body);
        assert_eq!(header(d, "tasklane-reason").as_deref(), Some("undecodable"));
        assert!(header(d, REASON_DETAIL_HEADER).unwrap().starts_with(reason));
        assert_eq!(header(d, QUEUE_HEADER).as_deref(), Some(s.queue.as_str()));
        let mut props = d.properties.clone().unwrap();
        let headers = props.headers.as_mut().unwrap();
        // A quorum queue with a delivery limit counts deliveries in a
        // header of its own; the copy keeps it as received.
        headers.retain(|(k, _)| k.as_slice() != b"x-delivery-count");
        let ours: [&[u8]; 3] = [b"tasklane-queue", b"tasklane-reason", b"tasklane-reason-detail"];
        let mut added: Vec<Vec<u8>> =
            headers.iter().filter(|(k, _)| ours.contains(&k.as_slice())).map(|(k, _)| k.clone()).collect();
        added.sort();
        assert_eq!(added, ours, "the reason headers are added");
        headers.retain(|(k, _)| !ours.contains(&k.as_slice()));
        if headers.is_empty() {
            props.headers = None;
        }
        assert_eq!(props, poison.props, "every original property as it was");
    }
    let (mut left, mut want) = (s.ids(&s.queue).await, good_ids(0..7));
    if queue_type == QueueType::Quorum {
        // Given back out of order on a quorum queue with a delivery limit.
        left.sort();
        want.sort();
    }
    assert_eq!(left, want, "the good ones, in order on a classic queue");

    // Nothing is left to do.
    let again = quarantine::scan(&s.opts, &s.queue, 100).await.unwrap();
    assert_eq!((again.scanned, again.returned, again.quarantined.len()), (7, 7, 0));
    assert_eq!(s.peek(DEAD).await.len(), kinds.len());
    if queue_type == QueueType::Quorum {
        // Each message given back counts as a delivery on a quorum queue:
        // two scans and one peek so far.
        let head = &s.peek(&s.queue).await[0];
        assert_eq!(head.properties.as_ref().unwrap().header("x-delivery-count"), Some(&FieldValue::I64(3)));
    }
}

#[tokio::test]
async fn every_kind_of_poison_lands_in_tasklane_dead_with_its_reason_on_a_classic_queue() {
    every_kind_is_quarantined(QueueType::Classic).await;
}

#[tokio::test]
async fn every_kind_of_poison_lands_in_tasklane_dead_with_its_reason_on_a_quorum_queue() {
    every_kind_is_quarantined(QueueType::Quorum).await;
}

/// Not a timing assertion: prints how long a scan of 1,000 messages takes
/// (one `basic.get` round trip each), and checks what it left.
async fn a_scan_of_1000(queue_type: QueueType) {
    let s = Setup::new(queue_type).await;
    let mut msgs: Vec<Message> = (0..1000).map(good).collect();
    msgs[500] = poison_kinds(&s.queue).remove(0).0;
    s.publish_with_key(s.queue.as_bytes(), &msgs.iter().map(|m| (m.props.clone(), m.body.clone())).collect::<Vec<_>>())
        .await;
    let out = quarantine::scan(&s.opts, &s.queue, 1000).await.unwrap();
    println!(
        "quarantine scan of 1,000 messages of 13 bytes on a {queue_type} queue, one poison: {:.0} ms ({:.0} µs a message)",
        out.elapsed.as_secs_f64() * 1e3,
        out.elapsed.as_secs_f64() * 1e6 / 1000.0
    );
    assert_eq!((out.scanned, out.returned, out.quarantined.len(), out.reached_end), (1000, 999, 1, false));
    assert_eq!(out.quarantined[0].position, 500);
    let mut want = good_ids(0..1000);
    want.remove(500);
    let mut left = s.ids(&s.queue).await;
    if queue_type == QueueType::Quorum {
        // RabbitMQ 3.10 requeues what a consumer gives back to a quorum
        // queue with a delivery limit (tasklane provisions one) out of
        // order; nothing is lost.
        left.sort();
        want.sort();
    }
    assert_eq!(left, want, "999 good messages, in their order on a classic queue");
    assert_eq!(s.peek(DEAD).await.len(), 1);
}

#[tokio::test]
async fn a_scan_of_1000_messages_on_a_classic_queue_keeps_their_order() {
    a_scan_of_1000(QueueType::Classic).await;
}

#[tokio::test]
async fn a_scan_of_1000_messages_on_a_quorum_queue_loses_none() {
    a_scan_of_1000(QueueType::Quorum).await;
}

/// Dropping the scan's future mid-way (a caller's timeout, a shutdown)
/// closes its socket: the broker requeues what it held, in order.
#[tokio::test]
async fn a_scan_dropped_midway_loses_nothing() {
    let s = Setup::new(QueueType::Classic).await;
    let msgs: Vec<_> = (0..2000).map(|n| (good(n).props, good(n).body)).collect();
    s.publish_with_key(s.queue.as_bytes(), &msgs).await;
    let cut = tokio::time::timeout(Duration::from_millis(150), quarantine::scan(&s.opts, &s.queue, 2000)).await;
    assert!(cut.is_err(), "the scan of 2,000 was to be cut short");
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = s.vhost.queue_counts(&s.queue).await.unwrap().unwrap().ready;
        if ready == 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {ready} of 2000 back in the queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.ids(&s.queue).await, good_ids(0..2000));
}

/// A broker that accepts the connection and then says nothing: the scan
/// gives up at its deadline.
#[tokio::test]
async fn a_silent_broker_ends_the_scan_at_its_deadline() {
    let s = Setup::new(QueueType::Classic).await;
    let proxy = FaultProxy::start(tasklane_tests::broker_addr()).await.unwrap();
    proxy.freeze(true);
    let opts = ConnectOptions::parse(&proxy.url_for(&s.vhost)).unwrap();
    let start = Instant::now();
    let err = quarantine::scan_within(&opts, &s.queue, 10, Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(err.kind, ScanErrorKind::Deadline(Duration::from_secs(2)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert_eq!(err.to_string(), format!("quarantine scan of queue {:?}: not finished within 2s", s.queue));
}

#[tokio::test]
async fn failures_say_what_went_wrong() {
    let s = Setup::new(QueueType::Classic).await;
    let err = quarantine::scan(&s.opts, "no-such.tasks", 5).await.unwrap_err();
    assert!(
        matches!(&err.kind, ScanErrorKind::ChannelClosed { op: "basic.get", code: 404, text } if text.contains("no-such.tasks")),
        "{err}"
    );
    let url = s.vhost.url().replace("guest:guest", "guest:wrong");
    let err = quarantine::scan(&ConnectOptions::parse(&url).unwrap(), &s.queue, 5).await.unwrap_err();
    assert!(matches!(&err.kind, ScanErrorKind::ConnectionClosed { code: 403, .. }), "{err}");
    let url = s.vhost.url().replace(s.vhost.name(), "no-such-vhost");
    let err = quarantine::scan(&ConnectOptions::parse(&url).unwrap(), &s.queue, 5).await.unwrap_err();
    assert!(matches!(&err.kind, ScanErrorKind::ConnectionClosed { code: 530, .. }), "{err}");
    let err = quarantine::scan(&ConnectOptions::parse("amqp://127.0.0.1:1/x").unwrap(), "q", 5).await.unwrap_err();
    assert!(matches!(&err.kind, ScanErrorKind::Connect { .. }), "{err}");
    let empty = quarantine::scan(&s.opts, &s.queue, 5).await.unwrap();
    assert_eq!((empty.scanned, empty.reached_end), (0, true));
}
