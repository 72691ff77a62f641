//! The service keeps its fleet: the reports real endpoints publish to
//! `results` under `E.status` reach `tasklane.status` (declared, bounded,
//! by `provision`); `Fleet` records each endpoint's last one; spoofed and
//! broken reports go to `tasklane.dead` with their reason; a killed
//! endpoint turns stale.

mod fleet_support;

use std::time::Duration;

use bytes::Bytes;
use fleet_support::{publish_raw, RealEndpoint};
use tasklane_core::{EndpointId, RawMessage};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::fleet::{members, EndpointState, Fleet, Shown, StatusReport};
use tasklane_io::service::{provision, QueueType, TaskStore};
use tasklane_tests::{Tasklane, Vhost};

#[tokio::test]
async fn reports_are_kept_spoofs_dead_lettered_and_silence_is_stale() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path().join("service")).unwrap();
    let url = vhost.url();
    let conn = amqp::connect(&ConnectOptions::parse(&url).unwrap()).await.unwrap();
    for id in ["ep-a", "ep-b"] {
        provision(&conn, &EndpointId::new(id).unwrap(), QueueType::Classic).await.unwrap();
    }

    let q = vhost.queue("tasklane.status").unwrap().expect("provision declares tasklane.status");
    assert_eq!(q.arguments["x-max-length"], 10_000);
    assert_eq!(q.arguments["x-overflow"], "drop-head");
    assert_eq!(q.arguments["x-message-ttl"], 600_000);

    // ep-a receives 4 tasks it never completes: its inbox holds them.
    let submit = Tasklane::new(&url, dir.path().join("submitter"));
    submit.run_ok(&["submit", "ep-a", "--count", "4", "--size", "8"]);
    // Each on a runtime of its own, started off this one.
    let start = |id: &'static str| {
        let (url, spool) = (url.clone(), dir.path().join(id));
        std::thread::spawn(move || RealEndpoint::start(&url, id, &spool)).join().unwrap()
    };
    let a = start("ep-a");
    let mut b = start("ep-b");
    // ep-b's credentials could not send this (topic permission), guest can:
    // the service's own check catches it.
    let spoof = StatusReport::new(&EndpointId::new("ep-a").unwrap(), EndpointState::Closed).encode();
    publish_raw(&url, "ep-b.status", &spoof).await;
    let garbage = RawMessage { message_id: Some(b"x".to_vec()), headers: vec![], body: Bytes::from("{not json") };
    publish_raw(&url, "ep-c.status", &garbage).await;

    let mut fleet = Fleet::open(&conn, store.clone()).await.unwrap();
    // Until both said consuming with ep-a's 4 tasks received.
    let mut seen = Vec::new();
    for _ in 0..50 {
        fleet.drain(Duration::from_millis(300)).await.unwrap();
        seen = members(&store)
            .unwrap()
            .iter()
            .map(|m| (m.endpoint().to_string(), m.state(), m.report().spool.inbox))
            .collect();
        if seen
            == [
                ("ep-a".into(), Shown::Reported(EndpointState::Consuming), 4),
                ("ep-b".into(), Shown::Reported(EndpointState::Consuming), 0),
            ]
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen,
        [
            ("ep-a".into(), Shown::Reported(EndpointState::Consuming), 4),
            ("ep-b".into(), Shown::Reported(EndpointState::Consuming), 0)
        ]
    );
    let counters = fleet.counters();
    assert!(counters.reports >= 2, "{counters:?}");
    assert_eq!(counters.dead_lettered, 2);
    let ep_a = &members(&store).unwrap()[0];
    assert_eq!(ep_a.report().node.as_deref(), Some("127.0.0.1:5672"));
    assert_eq!((ep_a.report().counter("received"), ep_a.report().interval_secs), (4, 1));

    for _ in 0..100 {
        if vhost.queue_counts("tasklane.dead").await.unwrap().unwrap().ready == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = vhost.peek_messages("tasklane.dead", 10).unwrap();
    let reasons: Vec<(&str, &str)> =
        dead.iter().map(|m| (m.routing_key.as_str(), m.headers["tasklane-reason"].as_str().unwrap())).collect();
    assert_eq!(reasons, [("ep-b.status", "not-owner"), ("ep-c.status", "bad-report")]);
    let logged: Vec<String> = store.dead_letters(10).unwrap().iter().map(|d| d.reason.clone()).collect();
    assert_eq!(logged, ["bad-report", "not-owner"], "newest first");

    // ep-b dies; 3 of its 1-second intervals later it is stale, ep-a is not.
    b.kill();
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    fleet.drain(Duration::from_millis(300)).await.unwrap();
    let seen: Vec<Shown> = members(&store).unwrap().iter().map(|m| m.state()).collect();
    assert_eq!(seen, [Shown::Reported(EndpointState::Consuming), Shown::Stale(EndpointState::Consuming)]);
    let counts = vhost.queue_counts("tasklane.status").await.unwrap().unwrap();
    assert!(counts.ready <= 1, "drained and acked, but for what ep-a sent since: {counts:?}");
    fleet.close().await;
    drop(a);
    let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)
}
