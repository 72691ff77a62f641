//! Consuming: acks, prefetch, requeue, single active and exclusive
//! consumers, stale tags, dead-lettering.

use std::time::Duration;

use super::*;
use crate::broker::{SettleKind, DEAD, DEATH_QUEUE, DEATH_REASON};
use crate::wire::code;

#[test]
fn raw_client_consumes_and_acks() {
    let broker = broker();
    for i in 1..=3 {
        broker.enqueue("E.tasks", task(i));
    }
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoint", async move {
        let (mut c, active) = consumer("endpoint-1", "E.tasks", 10, false).await;
        assert!(active);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(delivery(&mut c).await);
        }
        assert_eq!(got, vec![(1, false, "t1".into()), (2, false, "t2".into()), (3, false, "t3".into())]);
        assert_eq!(b.counts("E.tasks").unacked, 3);
        c.send(ClientMethod::Ack { ch: 1, tag: 2, multiple: true });
        eventually("two acked", || b.counts("E.tasks").total() == 1).await;
        c.send(ClientMethod::Ack { ch: 1, tag: 3, multiple: false });
        eventually("all acked", || b.counts("E.tasks").total() == 0).await;
        Ok(())
    });
    sim.run().unwrap();

    let acks = broker.settlements();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].channel.client, "endpoint-1");
    assert_eq!(acks[0].kind, SettleKind::Ack);
    let ids: Vec<_> = acks[0].settled.iter().map(|s| s.message_id.clone().unwrap()).collect();
    assert_eq!(ids, ["t1", "t2"]);
    assert_eq!(acks[1].settled[0].message_id.as_deref(), Some("t3"));
    assert!(acks.iter().all(|a| !a.unknown_tag));
}

#[test]
fn prefetch_limits_unacked_deliveries() {
    let broker = broker();
    for i in 1..=5 {
        broker.enqueue("E.tasks", task(i));
    }
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoint", async move {
        let (mut c, _) = consumer("endpoint-1", "E.tasks", 2, false).await;
        assert_eq!(delivery(&mut c).await.0, 1);
        assert_eq!(delivery(&mut c).await.0, 2);
        silent(&mut c, Duration::from_secs(1)).await;
        assert_eq!(b.counts("E.tasks").unacked, 2);
        c.send(ClientMethod::Ack { ch: 1, tag: 1, multiple: false });
        assert_eq!(delivery(&mut c).await, (3, false, "t3".into()));
        silent(&mut c, Duration::from_secs(1)).await;
        assert_eq!(b.counts("E.tasks").ready, 2);
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn connection_drop_requeues_as_redelivered() {
    let broker = broker();
    for i in 1..=3 {
        broker.enqueue("jobs", task(i));
    }
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoint", async move {
        let (mut first, _) = consumer("first", "jobs", 2, false).await;
        assert_eq!(delivery(&mut first).await, (1, false, "t1".into()));
        assert_eq!(delivery(&mut first).await, (2, false, "t2".into()));
        drop(first);
        eventually("first detached", || b.connections().is_empty()).await;
        assert_eq!(b.counts("jobs").ready, 3);

        let (mut second, _) = consumer("second", "jobs", 10, false).await;
        assert_eq!(delivery(&mut second).await, (1, true, "t1".into()));
        assert_eq!(delivery(&mut second).await, (2, true, "t2".into()));
        assert_eq!(delivery(&mut second).await, (3, false, "t3".into()));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn single_active_consumer_hands_over_when_the_first_dies() {
    let broker = broker();
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoints", async move {
        let (mut a, a_active) = consumer("a", "E.tasks", 10, false).await;
        let (mut standby, b_active) = consumer("b", "E.tasks", 10, false).await;
        assert!(a_active);
        assert!(!b_active);
        let active = b.active_consumers("E.tasks");
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].channel.client, "a");
        assert_eq!(b.consumers("E.tasks").len(), 2);

        b.enqueue("E.tasks", task(1));
        b.enqueue("E.tasks", task(2));
        assert_eq!(delivery(&mut a).await.2, "t1");
        assert_eq!(delivery(&mut a).await.2, "t2");
        silent(&mut standby, Duration::from_secs(1)).await;

        drop(a);
        // No notification (RabbitMQ sends none): the deliveries say it.
        assert_eq!(delivery(&mut standby).await, (1, true, "t1".into()));
        assert_eq!(delivery(&mut standby).await, (2, true, "t2".into()));
        let active = b.active_consumers("E.tasks");
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].channel.client, "b");
        assert_eq!(consumer_count(&mut standby, "E.tasks").await, 1, "and so does the count");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn second_exclusive_consumer_is_refused_on_a_classic_queue() {
    let broker = broker();
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoints", async move {
        let (_first, active) = consumer("first", "jobs", 10, true).await;
        assert!(active);
        let mut second = connect("second").await;
        second.open_channel(1, T).await.unwrap();
        for exclusive in [true, false] {
            second.send(ClientMethod::Consume { ch: 1, queue: "jobs".into(), exclusive });
            match second.next(T).await.unwrap() {
                ServerMethod::ChannelClose { ch: 1, code, .. } => {
                    assert_eq!(code, code::ACCESS_REFUSED)
                }
                other => panic!("expected ChannelClose, got {other:?}"),
            }
            // Acknowledge the close, then the channel number is free again.
            second.send(ClientMethod::CloseChannel { ch: 1 });
            second.open_channel(1, T).await.unwrap();
        }
        let consumers = b.consumers("jobs");
        assert_eq!(consumers.len(), 1);
        assert_eq!(consumers[0].channel.client, "first");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn quorum_queue_does_not_enforce_exclusive() {
    let broker = broker();
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoints", async move {
        let (_first, _) = consumer("first", "qjobs", 10, true).await;
        let (_second, _) = consumer("second", "qjobs", 10, true).await;
        assert_eq!(b.active_consumers("qjobs").len(), 2, "both exclusive consumes were accepted");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn unknown_tag_closes_the_channel_and_is_logged() {
    let broker = broker();
    broker.enqueue("jobs", task(1));
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoint", async move {
        let (mut c, _) = consumer("endpoint-1", "jobs", 10, false).await;
        assert_eq!(delivery(&mut c).await.0, 1);
        // A tag from an older channel incarnation: never delivered here.
        c.send(ClientMethod::Ack { ch: 1, tag: 7, multiple: true });
        match c.next(T).await.unwrap() {
            ServerMethod::ChannelClose { ch: 1, code, text } => {
                assert_eq!(code, code::PRECONDITION_FAILED);
                assert!(text.contains("unknown delivery tag 7"), "{text}");
            }
            other => panic!("expected ChannelClose, got {other:?}"),
        }
        // Frames on the closing channel are discarded, not fatal.
        c.send(ClientMethod::Ack { ch: 1, tag: 1, multiple: false });
        c.send(ClientMethod::CloseChannel { ch: 1 });
        eventually("requeued", || b.counts("jobs").ready == 1).await;
        assert_eq!(b.connections().len(), 1);
        Ok(())
    });
    sim.run().unwrap();
    let acks = broker.settlements();
    assert_eq!(acks.len(), 1);
    assert!(acks[0].unknown_tag);
    assert!(acks[0].settled.is_empty());
}

#[test]
fn reject_without_requeue_dead_letters_with_the_reason() {
    let broker = broker();
    for i in 1..=3 {
        broker.enqueue("E.tasks", task(i));
    }
    let mut sim = sim(&broker);
    let b = broker.clone();
    sim.client("endpoint", async move {
        let (mut c, _) = consumer("endpoint-1", "E.tasks", 10, false).await;
        for _ in 0..3 {
            delivery(&mut c).await;
        }
        c.send(ClientMethod::Reject { ch: 1, tag: 1, requeue: false });
        // Nack 2 and 3 back onto the queue.
        c.send(ClientMethod::Nack { ch: 1, tag: 3, multiple: true, requeue: true });
        assert_eq!(delivery(&mut c).await, (4, true, "t2".into()));
        assert_eq!(delivery(&mut c).await, (5, true, "t3".into()));
        eventually("dead-lettered", || b.counts(DEAD).ready == 1).await;
        Ok(())
    });
    sim.run().unwrap();
    let dead = broker.messages(DEAD);
    assert_eq!(dead[0].message.message_id.as_deref(), Some("t1"));
    assert_eq!(dead[0].message.header_str(DEATH_REASON), Some("rejected"));
    assert_eq!(dead[0].message.header_str(DEATH_QUEUE), Some("E.tasks"));
}

#[test]
fn the_consumer_count_is_every_consumer_on_a_classic_queue_and_the_active_one_on_a_quorum_queue() {
    // Measured on RabbitMQ 3.10 (passive declare before any consumer, after
    // the first, after the second, after the first has gone): classic
    // 0/1/2/1, quorum 0/1/1/1.
    for (kind, want) in [(QueueKind::Classic, [0, 1, 2, 1]), (QueueKind::Quorum, [0, 1, 1, 1])] {
        let broker =
            Broker::new(BrokerConfig { heartbeat_ms: 0, ..BrokerConfig::new(Topology::tasklane(&["E"], kind)) });
        let mut sim = sim(&broker);
        sim.client("endpoints", async move {
            let mut probe = connect("probe").await;
            probe.open_channel(1, T).await.unwrap();
            let mut counts = vec![consumer_count(&mut probe, "E.tasks").await];
            let (first, first_active) = consumer("a", "E.tasks", 10, false).await;
            counts.push(consumer_count(&mut probe, "E.tasks").await);
            let (_second, second_active) = consumer("b", "E.tasks", 10, false).await;
            counts.push(consumer_count(&mut probe, "E.tasks").await);
            assert!(first_active && !second_active);
            drop(first);
            tokio::time::sleep(Duration::from_secs(1)).await;
            counts.push(consumer_count(&mut probe, "E.tasks").await);
            assert_eq!(counts, want, "{kind:?}");
            Ok(())
        });
        sim.run().unwrap();
    }
}
