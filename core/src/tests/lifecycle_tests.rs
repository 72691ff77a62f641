//! Standby, consumer cancel and shutdown: policy that used to live in the
//! shells, now decided by core alone.

use std::time::Duration;

use super::harness::*;
use crate::*;

#[test]
fn a_standby_asks_for_the_consumer_count_and_takes_over_when_alone() {
    let mut w = World::new(cfg());
    w.broker.other_holder = true;
    w.drive_for(Duration::from_secs(5));
    assert_eq!(w.lane.status(), &Status::Standby);
    let queries = w.count(|c| matches!(c, Amqp::QueryConsumers { .. }));
    assert!((4..=5).contains(&queries), "one query before consuming, one after and one every 2 s: {queries} in 5 s");
    // The other endpoint goes; no task is waiting, so no delivery can tell:
    // the count does, at the next poll.
    w.broker.other_holder = false;
    w.broker.standby = false;
    w.drive_for(Duration::from_secs(2));
    assert_eq!(w.lane.status(), &Status::Consuming);
    let after = w.count(|c| matches!(c, Amqp::QueryConsumers { .. }));
    w.drive_for(Duration::from_secs(10));
    assert_eq!(w.count(|c| matches!(c, Amqp::QueryConsumers { .. })), after, "an active consumer stops asking");
}

/// The kinds of command, in order, up to the first query after consume-ok.
fn consume_handshake(w: &World) -> Vec<&'static str> {
    w.commands
        .iter()
        .filter_map(|c| match c {
            Amqp::Qos { .. } => Some("qos"),
            Amqp::QueryConsumers { .. } => Some("count"),
            Amqp::Consume { .. } => Some("consume"),
            _ => None,
        })
        .take(4)
        .collect()
}

#[test]
fn the_consumer_count_is_asked_before_and_after_the_consume() {
    let mut w = World::new(cfg());
    w.drive_for(Duration::from_secs(1));
    assert_eq!(consume_handshake(&w), ["qos", "count", "consume", "count"]);
    assert_eq!(w.lane.status(), &Status::Consuming, "alone on the queue: 0 before, 1 after");
}

#[test]
fn a_standby_on_a_quorum_queue_stays_standby_until_a_delivery() {
    let mut w = World::new(cfg());
    w.broker.quorum = true;
    w.broker.other_holder = true;
    w.drive_for(Duration::from_secs(5));
    // 1 before our consume and 1 after: ours is not counted, so it waits.
    assert_eq!(w.lane.status(), &Status::Standby, "a quorum queue counts only the active consumer");
    assert_eq!(
        w.count(|c| matches!(c, Amqp::QueryConsumers { .. })),
        2,
        "no polling: on a quorum queue a later count cannot tell"
    );
    // The other endpoint goes and the broker makes ours active; the count
    // still says 1, so only a delivery can tell.
    w.broker.other_holder = false;
    w.broker.standby = false;
    w.drive_for(Duration::from_secs(10));
    assert_eq!(w.lane.status(), &Status::Standby, "an idle queue: nothing proves activity yet");
    assert_eq!(w.count(|c| matches!(c, Amqp::QueryConsumers { .. })), 2);
    w.submit("a");
    w.drive();
    assert_eq!(w.lane.status(), &Status::Consuming, "the first delivery proves it active");
    assert_eq!(w.converged(), None);
}

#[test]
fn a_lone_consumer_on_a_quorum_queue_is_active() {
    let mut w = World::new(cfg());
    w.broker.quorum = true;
    w.submit("a");
    w.drive_for(Duration::from_secs(1));
    assert_eq!(w.lane.status(), &Status::Consuming);
    w.drive();
    assert_eq!(w.converged(), None);
}

#[test]
fn a_late_count_before_the_consume_is_ignored() {
    let mut w = World::new(cfg());
    w.broker.quorum = true;
    w.broker.other_holder = true;
    w.drive_for(Duration::from_secs(1));
    assert_eq!(w.lane.status(), &Status::Standby);
    let channel = w.broker.consumer.channel.expect("registered");
    // Stale answers (a count for a question no longer asked) change nothing.
    for consumers in [0, 1, 2] {
        w.feed(Input::ConsumerCount { channel, consumers });
        assert_eq!(w.lane.status(), &Status::Standby);
    }
}

#[test]
fn exclusive_consumers_never_ask_for_counts() {
    let mut c = cfg();
    c.consume_mode = ConsumeMode::Exclusive;
    let mut w = World::new(c);
    w.submit("a");
    w.drive();
    assert_eq!(w.lane.status(), &Status::Consuming);
    assert_eq!(w.count(|c| matches!(c, Amqp::QueryConsumers { .. })), 0);
    assert_eq!(w.converged(), None);
}

#[test]
fn a_cancelled_consumer_reconnects_and_loses_nothing() {
    let mut w = World::new(cfg());
    w.spool.auto_commit = false;
    for i in 0..3 {
        w.submit(&format!("t{i}"));
    }
    w.step();
    w.step();
    let channel = w.broker.consumer.channel.expect("consuming");
    let connections = w.lane.counters().connections;
    w.feed(Input::ConsumerCancelled { channel });
    assert!(w.events.contains(&Event::ConsumerCancelled));
    assert!(w.count(|c| matches!(c, Amqp::Disconnect { .. })) >= 1, "the connection is given up");
    w.spool.auto_commit = true;
    w.drive();
    assert!(w.lane.counters().connections > connections, "and made again");
    assert_eq!(w.converged(), None);
}

#[test]
fn shutdown_lets_the_spool_commit_and_acks_before_it_disconnects() {
    let mut w = World::new(cfg());
    w.spool.auto_commit = false;
    w.app.auto_complete = false;
    for i in 0..4 {
        w.submit(&format!("t{i}"));
    }
    w.step();
    w.step();
    assert_eq!(w.spool.pending.len(), 4);
    w.feed(Input::Shutdown);
    assert!(!w.lane.is_drained(), "writes are still pending");
    assert_eq!(w.count(|c| matches!(c, Amqp::Disconnect { .. })), 0, "the session stays to ack them");
    w.submit("late");
    w.step();
    assert_eq!(w.spool.pending.len(), 4, "a delivery after shutdown is not taken");
    w.commit();
    w.step();
    let acks = w.acks();
    assert_eq!(acks.last().map(|(t, m)| (t.tag, *m)), Some((4, true)), "the committed tasks are acked: {acks:?}");
    assert_eq!(w.count(|c| matches!(c, Amqp::Disconnect { .. })), 1);
    assert!(w.lane.is_drained());
    assert_eq!(w.lane.status(), &Status::Closed);
    w.drive_for(Duration::from_secs(60));
    assert_eq!(w.count(|c| matches!(c, Amqp::Connect { .. })), 1, "no connection after shutdown");
}

#[test]
fn shutdown_is_bounded_by_its_grace_when_the_spool_never_commits() {
    let mut w = World::new(cfg());
    w.spool.auto_commit = false;
    w.submit("a");
    w.step();
    w.step();
    w.feed(Input::Shutdown);
    let grace = w.cfg.shutdown_grace;
    assert_eq!(w.lane.poll_timeout(), Some(w.now + grace), "the grace is a deadline");
    w.now += grace;
    w.feed(Input::Timeout);
    assert!(w.lane.is_drained());
    assert!(w.events.contains(&Event::ShutdownIncomplete { uncommitted: 1 }), "{:?}", w.events);
    assert_eq!(w.count(|c| matches!(c, Amqp::Disconnect { .. })), 1);
    assert!(w.acks().is_empty(), "nothing uncommitted is acked");
}

#[test]
fn shutdown_without_a_connection_is_drained_at_once() {
    let mut w = World::unreachable(cfg());
    w.step();
    w.feed(Input::Shutdown);
    assert!(w.lane.is_drained());
    assert_eq!(w.lane.poll_timeout(), None);
}

#[test]
fn low_disk_space_holds_intake_without_acking_and_it_resumes_when_space_returns() {
    let mut c = cfg();
    c.min_free_bytes = 1000;
    c.result_reserve_bytes = 1;
    c.prefetch = 4;
    let mut w = World::new(c);
    w.app.auto_complete = false;
    w.drive();
    // Room for the floor, the reserve of two tasks and two bodies (twice).
    let body = task_msg("t0").body.len() as u64;
    w.feed(Input::SpoolSpace { available_bytes: 1000 + 2 + 2 * 2 * body });
    for i in 0..4 {
        w.submit(&format!("t{i}"));
    }
    w.drive();
    assert_eq!(w.lane.inbox_len(), 2, "two tasks fit the space left (a third would eat the floor)");
    assert_eq!(w.lane.counters().acked, 2, "held deliveries are not acked");
    let reason = w.lane.spool_full().expect("the lane says why it waits").to_owned();
    assert!(reason.contains("disk space low"), "{reason}");
    assert!(w.events.contains(&Event::SpoolFull { reason: reason.clone() }));
    // Results still go out while intake waits.
    w.app.auto_complete = true;
    w.drive();
    assert_eq!(w.lane.counters().confirmed, 2);
    assert!(w.lane.spool_full().is_some());
    // Space returns: the held deliveries go in, in order.
    w.feed(Input::SpoolSpace { available_bytes: 1 << 30 });
    w.drive();
    assert_eq!(w.lane.spool_full(), None);
    assert_eq!(w.events.iter().filter(|e| **e == Event::SpoolRecovered).count(), 1);
    assert_eq!(w.converged(), None);
    assert_eq!(w.lane.counters().acked, 4);
}

#[test]
fn a_poison_message_is_found_by_a_scan_and_everything_else_goes_through() {
    let mut w = World::new(cfg());
    for i in 0..5 {
        w.submit(&format!("t{i}"));
    }
    w.submit_poison("poison");
    for i in 5..10 {
        w.submit(&format!("t{i}"));
    }
    w.drive();
    assert_eq!(w.converged(), None, "every task but the poison is answered");
    assert_eq!(w.broker.results.len(), 10);
    assert_eq!(w.broker.dead.len(), 1, "the poison is dead-lettered");
    assert_eq!(w.lane.counters().quarantined, 1);
    assert!(w.events.iter().any(|e| matches!(e, Event::Quarantined { message_ids, .. } if message_ids == &["poison"])));
    assert_eq!(w.count(|c| matches!(c, Amqp::Quarantine { .. })), 1, "one scan was enough");
}

#[test]
fn a_young_loss_without_poison_costs_a_scan_and_a_backoff_not_a_loop() {
    let mut w = World::new(cfg());
    w.submit("a");
    w.drive();
    w.lose_connection();
    w.step();
    assert_eq!(w.count(|c| matches!(c, Amqp::Quarantine { .. })), 1, "a session lost right after consuming is suspect");
    let connects = w.count(|c| matches!(c, Amqp::Connect { .. }));
    let retry = w.lane.poll_timeout().expect("a backoff");
    assert!(retry > w.now, "nothing found: the next attempt backs off");
    w.drive();
    assert_eq!(w.count(|c| matches!(c, Amqp::Connect { .. })), connects + 1);
    assert_eq!(w.lane.status(), &Status::Consuming);
    assert_eq!(w.lane.counters().quarantined, 0);
}
