//! The service keeps its fleet: reports published to `results` under
//! `E.status` reach `tasklane.status` (declared, bounded, by `provision`);
//! `Fleet` records each endpoint's last one; spoofed and broken reports go
//! to `tasklane.dead` with their reason; a silent endpoint turns stale.

mod fleet_support;

use std::time::Duration;

use bytes::Bytes;
use fleet_support::{publish_raw, ReportingEndpoint};
use tasklane_core::{EndpointId, RawMessage};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::fleet::{members, EndpointState, Fleet, Shown, StatusReport};
use tasklane_io::service::{provision, QueueType, TaskStore};
use tasklane_tests::Vhost;

#[tokio::test]
async fn reports_are_kept_spoofs_dead_lettered_and_silence_is_stale() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path()).unwrap();
    let url = vhost.url();
    let conn = amqp::connect(&ConnectOptions::parse(&url).unwrap()).await.unwrap();
    provision(&conn, &EndpointId::new("ep-a").unwrap(), QueueType::Classic).await.unwrap();

    let q = vhost.queue("tasklane.status").unwrap().expect("provision declares tasklane.status");
    assert_eq!(q.arguments["x-max-length"], 10_000);
    assert_eq!(q.arguments["x-overflow"], "drop-head");
    assert_eq!(q.arguments["x-message-ttl"], 600_000);

    let a = ReportingEndpoint::start(&url, "ep-a", EndpointState::Consuming, 1, 4);
    let mut b = ReportingEndpoint::start(&url, "ep-b", EndpointState::Standby, 1, 0);
    // ep-b's credentials could not send this (topic permission), guest can:
    // the service's own check catches it.
    let spoof = StatusReport::new(&EndpointId::new("ep-a").unwrap(), EndpointState::Closed).encode();
    publish_raw(&url, "ep-b.status", &spoof).await;
    let garbage = RawMessage { message_id: Some(b"x".to_vec()), headers: vec![], body: Bytes::from("{not json") };
    publish_raw(&url, "ep-c.status", &garbage).await;

    let mut fleet = Fleet::open(&conn, store.clone()).await.unwrap();
    fleet.drain(Duration::from_millis(500)).await.unwrap();
    let counters = fleet.counters();
    assert!(counters.reports >= 2, "{counters:?}");
    assert_eq!(counters.dead_lettered, 2);
    let seen: Vec<(String, Shown)> =
        members(&store).unwrap().iter().map(|m| (m.endpoint().into(), m.state())).collect();
    assert_eq!(
        seen,
        [
            ("ep-a".into(), Shown::Reported(EndpointState::Consuming)),
            ("ep-b".into(), Shown::Reported(EndpointState::Standby))
        ]
    );
    let ep_a = &members(&store).unwrap()[0];
    assert_eq!((ep_a.report().spool.inbox, ep_a.report().node.as_deref()), (4, Some("127.0.0.1:5672")));

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
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    fleet.drain(Duration::from_millis(300)).await.unwrap();
    let seen: Vec<Shown> = members(&store).unwrap().iter().map(|m| m.state()).collect();
    assert_eq!(seen, [Shown::Reported(EndpointState::Consuming), Shown::Stale(EndpointState::Standby)]);
    assert_eq!(vhost.queue_counts("tasklane.status").await.unwrap().unwrap().ready, 0, "drained and acked");
    fleet.close().await;
    drop(a);
    let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)
}
