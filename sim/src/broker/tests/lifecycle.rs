//! Connection and broker lifecycle: restart, heartbeats, protocol errors.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::broker::Event;
use crate::wire::{code, ClientError};

#[test]
fn broker_restart_keeps_durable_messages() {
    let broker = broker();
    let mut sim = sim(&broker);
    let phase = Rc::new(Cell::new(0));
    let p = phase.clone();
    sim.client("endpoint", async move {
        let mut c = connect("endpoint-1").await;
        c.open_channel(1, T).await.unwrap();
        c.send(ClientMethod::ConfirmSelect { ch: 1 });
        assert_eq!(c.next(T).await.unwrap(), ServerMethod::ConfirmSelectOk { ch: 1 });
        let transient = Message { persistent: false, ..task(3) };
        for m in [task(1), task(2), transient] {
            c.send(ClientMethod::Publish {
                ch: 1,
                exchange: String::new(),
                routing_key: "jobs".into(),
                mandatory: true,
                message: m,
            });
        }
        for tag in 1..=3 {
            assert_eq!(c.next(T).await.unwrap(), ServerMethod::PublishAck { ch: 1, tag, multiple: false });
        }
        c.open_channel(2, T).await.unwrap();
        c.send(ClientMethod::Qos { ch: 2, prefetch: 1 });
        c.send(ClientMethod::Consume { ch: 2, queue: "jobs".into(), exclusive: false });
        assert_eq!(c.next(T).await.unwrap(), ServerMethod::QosOk { ch: 2 });
        assert!(matches!(c.next(T).await.unwrap(), ServerMethod::ConsumeOk { .. }));
        assert_eq!(delivery(&mut c).await, (1, false, "t1".into()));
        p.set(1);
        // The broker goes down with this delivery unacked.
        assert!(matches!(c.next(T).await, Err(ClientError::Closed | ClientError::Link(_))));
        while p.get() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut again, _) = consumer("endpoint-1b", "jobs", 10, false).await;
        assert_eq!(delivery(&mut again).await, (1, true, "t1".into()));
        assert_eq!(delivery(&mut again).await, (2, false, "t2".into()));
        silent(&mut again, Duration::from_secs(1)).await;
        Ok(())
    });
    while phase.get() < 1 {
        sim.step().unwrap();
    }
    sim.crash(BROKER);
    for _ in 0..500 {
        sim.step().unwrap();
    }
    assert!(broker.connections().is_empty());
    assert_eq!(broker.active_consumers("jobs"), vec![]);
    sim.bounce(BROKER);
    phase.set(2);
    sim.run().unwrap();

    assert_eq!(broker.boots(), 2);
    let boots: Vec<_> = broker.events().into_iter().filter(|e| matches!(e, Event::Booted { .. })).collect();
    assert_eq!(boots, vec![Event::Booted { boot: 1 }, Event::Booted { boot: 2 }]);
}

#[test]
fn heartbeat_expiry_closes_a_silent_connection() {
    let broker = broker_with_heartbeat(500);
    let mut sim = sim(&broker);
    let obs = broker.clone();
    sim.client("silent", async move {
        let mut c = Client::connect((BROKER, PORT), "silent", 500, T).await.unwrap();
        assert_eq!(c.heartbeat_ms(), 500);
        let start = Instant::now();
        let mut beats = 0;
        loop {
            match c.recv().await {
                Some(Ok(ServerMethod::Heartbeat)) => beats += 1,
                Some(Ok(ServerMethod::ConnectionClose { code, .. })) => {
                    assert_eq!(code, code::CONNECTION_FORCED);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited <= Duration::from_millis(1300),
            "closed after {waited:?}"
        );
        assert!(beats >= 1, "the broker sent heartbeats");
        assert!(c.recv().await.is_none(), "stream ends after the close");
        eventually("detached", || obs.connections().is_empty()).await;
        Ok(())
    });
    let obs = broker.clone();
    sim.client("talker", async move {
        let mut c = Client::connect((BROKER, PORT), "talker", 500, T).await.unwrap();
        for _ in 0..12 {
            c.send(ClientMethod::Heartbeat);
            silent(&mut c, Duration::from_millis(400)).await;
        }
        let alive: Vec<_> = obs.connections().into_iter().map(|c| c.client).collect();
        assert_eq!(alive, ["talker"]);
        Ok(())
    });
    sim.run().unwrap();
    let reasons: Vec<_> = broker
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Disconnected { client, reason, .. } => Some((client, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(reasons[0], ("silent".into(), "missed heartbeats".into()));
}

#[test]
fn forced_close_ends_the_connection_at_once_and_requeues() {
    let broker = broker();
    broker.enqueue("jobs", task(1));
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoint", async move {
        let (mut c, _) = consumer("endpoint-1", "jobs", 10, false).await;
        assert_eq!(delivery(&mut c).await.0, 1);
        assert_eq!(b.force_close(|name| name == "endpoint-1", "test"), 1);
        match c.next(T).await.unwrap() {
            ServerMethod::ConnectionClose { code, .. } => assert_eq!(code, code::CONNECTION_FORCED),
            other => panic!("expected ConnectionClose, got {other:?}"),
        }
        assert!(b.connections().is_empty());
        assert_eq!(b.counts("jobs").ready, 1);
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn method_on_an_unopened_channel_closes_the_connection() {
    let broker = broker();
    broker.enqueue("jobs", task(1));
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoint", async move {
        let (mut c, _) = consumer("endpoint-1", "jobs", 10, false).await;
        assert_eq!(delivery(&mut c).await.0, 1);
        c.send(ClientMethod::Ack { ch: 9, tag: 1, multiple: false });
        match c.next(T).await.unwrap() {
            ServerMethod::ConnectionClose { code, .. } => assert_eq!(code, code::CHANNEL_ERROR),
            other => panic!("expected ConnectionClose, got {other:?}"),
        }
        eventually("requeued", || b.counts("jobs").ready == 1).await;
        assert!(b.connections().is_empty());
        Ok(())
    });
    sim.run().unwrap();
}
