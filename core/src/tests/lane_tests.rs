//! One test per behaviour users rely on, each driven through the harness.

use std::time::Duration;

use bytes::Bytes;

use super::harness::*;
use crate::*;

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i}")).collect()
}

#[test]
fn round_trip_delivers_every_result_once() {
    let mut w = World::new(cfg());
    for id in ids(50) {
        w.submit(&id);
    }
    w.drive();
    assert_eq!(w.converged(), None);
    assert_eq!(w.broker.results.len(), 50);
    assert_eq!(w.lane.status(), &Status::Consuming);
    let c = w.lane.counters();
    assert_eq!((c.received, c.spooled, c.acked, c.handed_off, c.completed, c.confirmed), (50, 50, 50, 50, 50, 50));
}

#[test]
fn nothing_is_acked_before_the_commit_and_a_commit_is_one_multiple_ack() {
    let mut w = World::new(cfg());
    w.spool.auto_commit = false;
    w.app.auto_complete = false;
    for id in ids(5) {
        w.submit(&id);
    }
    w.drive();
    assert!(w.acks().is_empty(), "acked before any commit: {:?}", w.acks());
    assert_eq!(w.app.waiting.len(), 5, "handed off as their writes are issued, before the commit");
    assert_eq!(w.spool.pending.len(), 5);
    w.commit();
    w.drive();
    let acks = w.acks();
    assert_eq!(acks.len(), 1, "one ack per group commit: {acks:?}");
    assert_eq!((acks[0].0.tag, acks[0].1), (5, true));
    assert_eq!(w.app.waiting.len(), 5);
}

#[test]
fn a_lost_channel_takes_its_tags_and_redeliveries_are_deduplicated() {
    let mut w = World::new(cfg());
    w.spool.auto_commit = false;
    for id in ids(3) {
        w.submit(&id);
    }
    w.drive();
    let old_channel = w.broker.consumer.channel.unwrap();
    w.lose_connection();
    w.step();
    // The writes commit after the channel is gone: no ack may go anywhere.
    w.commit();
    w.step();
    assert!(w.acks().is_empty());
    w.spool.auto_commit = true;
    w.drive();
    assert_eq!(w.converged(), None);
    let acks = w.acks();
    assert!(acks.iter().all(|(t, _)| t.channel != old_channel), "acked on the old channel: {acks:?}");
    assert_eq!(w.lane.counters().duplicates_dropped, 3);
    assert_eq!(w.lane.counters().handed_off, 3, "each task handed off once");
    assert_eq!(w.lane.counters().redelivered, 3);
}

#[test]
fn duplicates_of_inbox_and_completed_tasks_are_acked_without_handoff() {
    let mut w = World::new(cfg());
    w.submit("a");
    w.submit("a");
    w.drive();
    w.submit("a");
    w.drive();
    assert_eq!(w.converged(), None);
    assert_eq!(w.lane.counters().handed_off, 1);
    assert_eq!(w.lane.counters().duplicates_dropped, 2);
    assert_eq!(w.broker.acked.len(), 3);
    assert_eq!(w.broker.results.len(), 1);
}

#[test]
fn a_task_whose_result_awaits_its_confirm_is_a_duplicate_even_out_of_the_window() {
    // Found by the lane_inputs fuzz target: with the task out of the
    // completed window, a redelivery ran it again and put a second result
    // for it into the outbox; a return of one publish then marked the other
    // entry, and the returned result left the outbox on its ack.
    let mut c = patient_publisher();
    c.completed_window = 0;
    let mut w = World::new(c);
    w.broker.hold_confirms = true;
    w.submit("a");
    w.drive();
    assert_eq!((w.lane.outbox_len(), w.broker.results.len()), (1, 1), "published, not confirmed");
    w.submit("a");
    w.drive();
    assert_eq!(w.lane.counters().handed_off, 1, "handed off again while its result is in the outbox");
    assert_eq!(w.lane.counters().duplicates_dropped, 1);
    assert_eq!(w.broker.acked.len(), 2);
    w.broker.hold_confirms = false;
    w.release_confirms();
    w.drive();
    assert_eq!(w.converged(), None);
    assert_eq!(w.broker.results.len(), 1);
}

#[test]
fn malformed_deliveries_are_rejected_and_the_lane_goes_on() {
    let mut w = World::new(cfg());
    w.submit("ok1");
    w.submit_raw(RawMessage { message_id: None, headers: vec![], body: Bytes::from_static(b"x") });
    w.submit_raw(RawMessage { message_id: Some(vec![0xff]), headers: vec![], body: Bytes::new() });
    let mut bad_kind = task_msg("k");
    bad_kind.headers.push(("tasklane-kind".into(), HeaderValue::Int(7)));
    w.submit_raw(bad_kind);
    w.submit("ok2");
    w.drive();
    assert_eq!(w.converged(), None);
    assert_eq!(w.broker.dead.len(), 3);
    assert_eq!(w.lane.counters().rejected, 3);
    let reasons: Vec<_> = w
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { reason, .. } => Some(reason.label()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["missing-id", "id-not-utf8", "bad-header"]);
}

#[test]
fn a_full_spool_stops_acking_and_resumes_when_results_are_confirmed() {
    let mut c = cfg();
    c.max_spooled_tasks = 3;
    let mut w = World::new(c);
    w.app.auto_complete = false;
    for id in ids(20) {
        w.submit(&id);
    }
    w.drive();
    assert_eq!(w.lane.inbox_len(), 3);
    assert_eq!(w.broker.acked.len(), 3, "only what is stored is acked");
    assert_eq!(w.broker.consumer.unacked.len(), 8, "the prefetch window fills and closes by itself");
    assert_eq!(w.broker.queue.len(), 9);
    w.app.auto_complete = true;
    w.drive();
    assert_eq!(w.converged(), None);
}

#[test]
fn unconfirmed_results_are_published_again_after_a_reconnect() {
    let mut w = World::new(patient_publisher());
    w.broker.hold_confirms = true;
    for id in ids(3) {
        w.submit(&id);
    }
    w.drive();
    assert_eq!(w.lane.outbox_len(), 3);
    w.lose_connection();
    w.broker.hold_confirms = false;
    w.drive();
    assert_eq!(w.converged(), None);
    assert_eq!(w.lane.counters().published, 6);
    assert_eq!(w.distinct_results().len(), 3);
}

#[test]
fn a_multiple_confirm_covers_every_earlier_tag() {
    let mut w = World::new(cfg());
    w.broker.hold_confirms = true;
    for id in ids(4) {
        w.submit(&id);
    }
    w.drive();
    assert_eq!(w.lane.outbox_len(), 4);
    w.release_confirms();
    w.drive();
    assert_eq!(w.lane.outbox_len(), 0);
    assert_eq!(w.lane.counters().confirmed, 4);
}

#[test]
fn nacked_and_returned_results_stay_and_are_retried_with_backoff() {
    let mut w = World::new(cfg());
    w.broker.nack_next = 2;
    w.broker.routable = false;
    w.submit("a");
    w.submit("b");
    w.drive_for(Duration::from_secs(5));
    assert_eq!(w.lane.outbox_len(), 2, "nothing leaves the outbox without a confirm");
    assert!(w.lane.counters().returned >= 1);
    assert!(w.events.iter().any(|e| matches!(e, Event::ResultReturned { code: 312, .. })));
    let published = w.lane.counters().published;
    assert!(published < 20, "retries back off ({published} publishes in 5 s)");
    w.broker.routable = true;
    w.drive();
    assert_eq!(w.converged(), None);
    assert_eq!(w.lane.counters().nacked, 2);
}

#[test]
fn exclusive_mode_stands_by_while_refused_and_takes_over_later() {
    let mut c = cfg();
    c.consume_mode = ConsumeMode::Exclusive;
    let mut w = World::new(c);
    w.broker.other_holder = true;
    w.submit("a");
    w.drive_for(Duration::from_secs(7));
    assert_eq!(w.lane.status(), &Status::Standby);
    let refused_tries = w.count(|c| matches!(c, Amqp::Consume { exclusive: true, .. }));
    assert!((3..=5).contains(&refused_tries), "{refused_tries} consume attempts in 7 s at a 2 s retry");
    assert_eq!(w.lane.counters().received, 0);
    w.broker.other_holder = false;
    w.drive();
    assert_eq!(w.lane.status(), &Status::Consuming);
    assert_eq!(w.converged(), None);
}

#[test]
fn single_active_consumer_standby_becomes_consuming_on_first_delivery() {
    let mut w = World::new(cfg());
    w.broker.other_holder = true;
    w.submit("a");
    w.drive();
    assert_eq!(w.lane.status(), &Status::Standby);
    // The other endpoint dies; the broker makes this consumer active.
    w.broker.other_holder = false;
    w.broker.standby = false;
    w.drive();
    assert_eq!(w.lane.status(), &Status::Consuming);
    assert_eq!(w.converged(), None);
}

#[test]
fn unreachable_broker_is_retried_with_growing_jittered_backoff() {
    let mut w = World::unreachable(cfg());
    let start = w.now;
    w.step();
    let mut times = Vec::new();
    for _ in 0..8 {
        let t = w.lane.poll_timeout().unwrap();
        w.now = t;
        w.feed(Input::Timeout);
        w.step();
        times.push(t - start);
    }
    let gaps: Vec<_> = times.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(gaps.windows(2).filter(|g| g[1] > g[0]).count() >= 5, "delays grow: {gaps:?}");
    assert!(matches!(w.lane.status(), Status::Disconnected { since, .. } if *since == start), "{:?}", w.lane.status());
    w.broker.reachable = true;
    w.submit("a");
    w.drive();
    assert_eq!(w.converged(), None);
}

#[test]
fn the_lane_serves_spooled_tasks_while_the_broker_is_down() {
    let mut w = World::new(cfg());
    w.app.auto_complete = false;
    w.submit("a");
    w.drive();
    w.broker.reachable = false;
    w.lose_connection();
    w.crash();
    assert_eq!(w.app.waiting.len(), 1, "the spooled task is handed off again at start");
    w.drive_for(Duration::from_secs(10));
    assert!(matches!(w.lane.status(), Status::Disconnected { .. }));
    assert!(w.complete_one());
    w.step();
    assert_eq!(w.lane.outbox_len(), 1, "the result waits in the outbox");
    w.broker.reachable = true;
    w.app.auto_complete = true;
    w.drive();
    assert_eq!(w.converged(), None);
}

#[test]
fn blocked_connection_is_dropped_after_the_timeout() {
    let mut w = World::new(cfg());
    w.drive();
    let conn = w.broker.conn.unwrap();
    w.feed(Input::Blocked { conn, reason: "memory alarm".into() });
    assert_eq!(w.lane.status(), &Status::Blocked { reason: "memory alarm".into() });
    w.drive_for(Duration::from_secs(59));
    assert_eq!(w.broker.conn, Some(conn));
    assert!(w.lane.poll_timeout().is_some());
    w.drive_for(Duration::from_secs(2));
    assert!(w.commands.iter().any(|c| matches!(c, Amqp::Disconnect { conn: c, .. } if *c == conn)));
    w.drive();
    assert_eq!(w.lane.status(), &Status::Consuming);
}

/// A lane that waits for held confirms without counting them as a broker
/// alarm (the tests that hold confirms while `drive` jumps an hour ahead).
fn patient_publisher() -> crate::Config {
    let mut c = cfg();
    c.confirm_stall = Duration::from_secs(24 * 3600);
    c
}

#[test]
fn publishes_without_confirms_count_as_blocked_and_a_confirm_ends_it() {
    // RabbitMQ never sends amqprs `connection.blocked`: a broker alarm shows
    // only as confirms that do not come.
    let mut w = World::new(cfg());
    w.drive();
    w.broker.hold_confirms = true;
    w.submit("a");
    w.drive_for(Duration::from_secs(9));
    assert_eq!(w.lane.status(), &Status::Consuming, "9 s without a confirm is not yet a stall");
    w.drive_for(Duration::from_secs(2));
    assert!(
        matches!(w.lane.status(), Status::Blocked { reason } if reason.starts_with("no publish confirm for 10 s")),
        "{:?}",
        w.lane.status()
    );
    w.broker.hold_confirms = false;
    w.release_confirms();
    w.drive();
    assert_eq!(w.lane.status(), &Status::Consuming);
    assert_eq!(w.converged(), None);
    assert_eq!(w.lane.counters().disconnects, 0);
}

#[test]
fn confirms_that_never_come_drop_the_connection_at_the_blocked_timeout_and_publish_again() {
    let mut w = World::new(cfg());
    w.drive();
    let conn = w.broker.conn.unwrap();
    w.broker.hold_confirms = true;
    w.submit("a");
    let t0 = w.now;
    w.drive_for(Duration::from_secs(11));
    assert!(matches!(w.lane.status(), Status::Blocked { .. }), "{:?}", w.lane.status());
    assert_eq!(w.broker.conn, Some(conn));
    assert_eq!(
        w.lane.poll_timeout().map(|t| t - t0),
        Some(Duration::from_secs(60)),
        "the blocked timeout counts from the oldest wait"
    );
    w.drive_for(Duration::from_secs(49));
    w.drive_for(Duration::from_secs(2));
    assert!(w.commands.iter().any(|c| matches!(c, Amqp::Disconnect { conn: c, reason } if *c == conn
        && reason.starts_with("blocked by broker for too long: no publish confirm"))));
    let statuses: Vec<&Status> =
        w.events.iter().filter_map(|e| if let Event::Status(s) = e { Some(s) } else { None }).collect();
    let dropped = statuses.iter().position(|s| {
        matches!(s, Status::Disconnected { reason, .. }
        if reason.starts_with("blocked by broker for too long: no publish confirm"))
    });
    let blocked = statuses.iter().position(|s| matches!(s, Status::Blocked { .. }));
    assert!(
        dropped.zip(blocked).is_some_and(|(d, b)| d > b && matches!(statuses.get(d + 1), Some(Status::Connecting))),
        "the drop's reason is a status of its own between Blocked and Connecting (the next attempt starts at once): {statuses:?}"
    );
    w.broker.hold_confirms = false;
    w.broker.held_confirms.clear();
    w.drive();
    assert_eq!(w.lane.status(), &Status::Consuming);
    assert_eq!(w.converged(), None, "the result is published again on the new connection");
}

#[test]
fn a_block_lifted_in_time_keeps_the_connection_and_a_new_block_starts_the_clock_again() {
    let mut c = cfg();
    c.blocked_timeout = Duration::from_secs(10);
    let mut w = World::new(c);
    w.drive();
    let conn = w.broker.conn.unwrap();
    w.feed(Input::Blocked { conn, reason: "disk alarm".into() });
    w.drive_for(Duration::from_secs(9));
    w.feed(Input::Unblocked { conn });
    assert_eq!(w.lane.status(), &Status::Consuming);
    w.drive_for(Duration::from_secs(1));
    w.feed(Input::Blocked { conn, reason: "disk alarm again".into() });
    w.drive_for(Duration::from_secs(9));
    assert_eq!(w.lane.status(), &Status::Blocked { reason: "disk alarm again".into() });
    assert!(!w.commands.iter().any(|c| matches!(c, Amqp::Disconnect { .. })), "19 s blocked in all, never 10 s on end");
    w.drive_for(Duration::from_secs(2));
    assert!(w.commands.iter().any(|c| matches!(c, Amqp::Disconnect { conn: c, reason } if *c == conn
        && reason == "blocked by broker for too long: disk alarm again")));
    assert_eq!(w.lane.counters().disconnects, 1);
}

#[test]
fn recovery_rehands_the_inbox_and_republishes_the_outbox() {
    let mut w = World::new(cfg());
    w.app.auto_complete = false;
    w.broker.hold_confirms = true;
    for id in ids(4) {
        w.submit(&id);
    }
    w.drive();
    w.complete_one();
    w.complete_one();
    w.drive();
    w.crash();
    let recovered: Vec<_> = w.app.waiting.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(recovered, ["t2", "t3"], "uncompleted tasks again, in arrival order");
    w.broker.hold_confirms = false;
    w.app.auto_complete = true;
    w.drive();
    assert_eq!(w.converged(), None);
    assert_eq!(w.distinct_results().len(), 4);
}

#[test]
fn a_delivery_tag_that_does_not_increase_is_a_protocol_violation() {
    let mut w = World::new(cfg());
    w.drive();
    let channel = w.broker.consumer.channel.unwrap();
    w.spool.auto_commit = false;
    w.feed(Input::Delivery { channel, tag: 5, redelivered: false, message: task_msg("a") });
    w.feed(Input::Delivery { channel, tag: 5, redelivered: false, message: task_msg("b") });
    assert!(w.events.iter().any(|e| matches!(e, Event::ProtocolViolation { .. })));
    assert!(matches!(w.lane.status(), Status::Disconnected { .. }));
}

#[test]
fn a_silent_broker_handshake_times_out() {
    let mut w = World::new(cfg());
    w.inputs.clear(); // the broker never answers the connect...
    let first = w.lane.poll_timeout().unwrap();
    w.now = first;
    w.feed(Input::Timeout);
    assert!(matches!(w.lane.status(), Status::Disconnected { reason, .. } if reason.contains("timed out")));
}

#[test]
fn misuse_is_an_error_and_changes_nothing() {
    let mut w = World::new(cfg());
    let now = w.now;
    let err = w.lane.handle(
        now,
        Input::Complete { task: TaskId::new("nope").unwrap(), status: ResultStatus::Ok, body: Bytes::new() },
    );
    assert_eq!(err, Err(UsageError::UnknownTask(TaskId::new("nope").unwrap())));
    let err = w.lane.handle(now, Input::SpoolCommitted { upto: WriteSeq(99) });
    assert!(matches!(err, Err(UsageError::CommitBeyondIssued { reported: 99, .. })));
    let err = w.lane.handle(now, Input::Connected { conn: ConnId(42) });
    assert!(matches!(err, Err(UsageError::Unexpected { .. })));
    w.submit("a");
    w.drive();
    assert_eq!(w.converged(), None);
}

#[test]
fn a_task_completed_before_its_commit_is_published_only_once_both_writes_are_durable() {
    let mut w = World::new(cfg());
    w.spool.auto_commit = false;
    w.app.auto_complete = false;
    w.submit("a");
    w.drive();
    assert_eq!(w.app.waiting.len(), 1, "handed off as its write is issued");
    assert!(w.complete_one(), "the application completes it at once");
    w.drive();
    let published = |w: &World| w.commands.iter().filter(|c| matches!(c, Amqp::Publish { .. })).count();
    assert_eq!(w.spool.pending.len(), 2, "the insert and the completion, neither committed");
    assert_eq!((published(&w), w.acks().len()), (0, 0), "no publish and no ack before the commit");
    w.commit();
    w.drive();
    assert_eq!((published(&w), w.acks().len()), (1, 1), "published and acked once both writes are durable");
    assert_eq!(w.broker.results.len(), 1, "the broker has the result");
}

#[test]
fn shutdown_closes_and_stays_down() {
    let mut w = World::new(cfg());
    w.drive();
    w.feed(Input::Shutdown);
    assert_eq!(w.lane.status(), &Status::Closed);
    assert_eq!(w.broker.conn, None);
    assert_eq!(w.lane.poll_timeout(), None);
}

#[test]
fn the_completed_window_is_bounded_and_persisted() {
    let mut c = cfg();
    c.completed_window = 2;
    let mut w = World::new(c);
    for id in ids(5) {
        w.submit(&id);
    }
    w.drive();
    assert_eq!(w.spool.durable.snapshot().completed, vec![TaskId::new("t3").unwrap(), TaskId::new("t4").unwrap()]);
}

#[test]
fn config_validation_names_the_field() {
    let mut c = cfg();
    c.prefetch = 0;
    let err = Lane::new(std::time::Instant::now(), c, SpoolSnapshot::default()).unwrap_err();
    assert!(err.to_string().starts_with("prefetch:"), "{err}");
    let mut c = cfg();
    c.blocked_timeout = Duration::ZERO;
    let err = Lane::new(std::time::Instant::now(), c, SpoolSnapshot::default()).unwrap_err();
    assert!(err.to_string().starts_with("blocked_timeout:"), "{err}");
}

#[test]
fn a_missing_results_exchange_closes_only_the_publishing_channel() {
    let mut w = World::new(cfg());
    w.broker.exchange_missing = true;
    for id in ids(5) {
        w.submit(&id);
    }
    w.drive_for(Duration::from_secs(10));
    assert_eq!(w.lane.status(), &Status::Consuming, "intake goes on");
    assert_eq!(w.broker.acked.len(), 5);
    assert_eq!(w.lane.outbox_len(), 5);
    assert_eq!(w.lane.counters().connections, 1, "the connection was kept");
    let reopens = w.count(|c| matches!(c, Amqp::OpenChannel { .. }));
    assert!((3..12).contains(&reopens), "publishing channel reopened with backoff: {reopens} opens in 10 s");
    assert!(w.events.iter().any(|e| matches!(e, Event::PublishChannelClosed { code: 404, .. })));
    w.broker.exchange_missing = false;
    w.drive();
    assert_eq!(w.converged(), None);
}

#[test]
fn a_stalled_spool_reports_full_then_recovered() {
    let mut w = World::new(cfg());
    w.spool.auto_commit = false;
    w.submit("a");
    w.drive();
    w.feed(Input::SpoolStalled { reason: "map full at limit".into() });
    assert!(w.acks().is_empty());
    w.commit();
    w.step();
    let tail: Vec<_> =
        w.events.iter().filter(|e| matches!(e, Event::SpoolFull { .. } | Event::SpoolRecovered)).collect();
    assert_eq!(
        tail,
        [&Event::SpoolFull { reason: "spool cannot commit: map full at limit".into() }, &Event::SpoolRecovered]
    );
    assert_eq!(w.acks().len(), 1);
}

#[test]
fn a_consume_refused_after_an_early_delivery_takes_the_delivery_with_it() {
    // Found by the lane_inputs fuzz target: the first delivery counts as the
    // consume's success, and a refusal that came after it was ignored, so
    // the lane acked the delivery on the refused (closed) channel once its
    // insert committed, and went on waiting for deliveries there.
    let now = std::time::Instant::now();
    let mut lane = Lane::new(now, cfg(), SpoolSnapshot::default()).unwrap();
    let feed = |lane: &mut Lane, input: Input| -> Vec<Output> {
        lane.handle(now, input).unwrap();
        std::iter::from_fn(|| lane.poll()).collect()
    };
    let out = feed(&mut lane, Input::Timeout);
    let Some(Output::Amqp(Amqp::Connect { conn, .. })) = out.first().cloned() else { panic!("{out:?}") };
    feed(&mut lane, Input::Connected { conn });
    let consume = ChannelId(1);
    feed(&mut lane, Input::ChannelOpened { channel: consume });
    let out = feed(&mut lane, Input::QosOk { channel: consume });
    assert!(out.iter().any(|o| matches!(o, Output::Amqp(Amqp::QueryConsumers { channel, .. }) if *channel == consume)));
    let out = feed(&mut lane, Input::ConsumerCount { channel: consume, consumers: 0 });
    assert!(out.iter().any(|o| matches!(o, Output::Amqp(Amqp::Consume { channel, .. }) if *channel == consume)));
    let delivery = Input::Delivery { channel: consume, tag: 1, redelivered: false, message: task_msg("a") };
    let out = feed(&mut lane, delivery);
    let Some(Output::Spool(write)) = out.first().cloned() else { panic!("{out:?}") };
    feed(&mut lane, Input::ChannelClosed { channel: consume, code: 403, text: "ACCESS_REFUSED".into() });
    assert_eq!(lane.status(), &Status::Standby);
    let out = feed(&mut lane, Input::SpoolCommitted { upto: write.seq });
    assert!(!out.iter().any(|o| matches!(o, Output::Amqp(Amqp::Ack { .. }))), "acked on a refused channel: {out:?}");
    assert_eq!(lane.counters().acked, 0);
}

/// SPEC §2, Brokers: one attempt per address, the next one at once, and a
/// backoff only after a full round has failed; a session that worked is
/// left for the next address without a backoff.
#[test]
fn connection_attempts_go_round_the_addresses_and_back_off_after_a_full_round() {
    let start = std::time::Instant::now();
    let mut c = cfg();
    c.addresses = 3;
    c.failover = Failover::InOrder;
    let mut lane = Lane::new(start, c, SpoolSnapshot::default()).unwrap();
    let mut now = start;
    let connect = |lane: &mut Lane, now: std::time::Instant, input: Input| -> Option<(ConnId, usize)> {
        lane.handle(now, input).unwrap();
        std::iter::from_fn(|| lane.poll()).find_map(|o| match o {
            Output::Amqp(Amqp::Connect { conn, address }) => Some((conn, address)),
            _ => None,
        })
    };
    let (mut conn, mut address) = connect(&mut lane, now, Input::Timeout).unwrap();
    let mut tried = vec![address];
    for _ in 0..2 {
        let failed = Input::ConnectFailed { conn, reason: "refused".into() };
        (conn, address) = connect(&mut lane, now, failed).expect("the next address is tried at once");
        tried.push(address);
    }
    assert_eq!(tried, [0, 1, 2]);
    lane.handle(now, Input::ConnectFailed { conn, reason: "refused".into() }).unwrap();
    let retry = lane.poll_timeout().unwrap();
    assert!(retry > now, "a full round of failures backs off");
    assert!(matches!(lane.status(), Status::Disconnected { .. }));
    now = retry;
    (conn, address) = connect(&mut lane, now, Input::Timeout).unwrap();
    assert_eq!(address, 0, "a new round starts from the first address");
    lane.handle(now, Input::Connected { conn }).unwrap();
    now += Duration::from_secs(6);
    let lost = Input::ConnectionLost { conn, reason: "node down".into() };
    let (_, address) = connect(&mut lane, now, lost).expect("a session that lasted owes no backoff");
    assert_eq!(address, 1, "a lost node is left for the next one");
    assert_eq!(lane.address(), Some(1));
}

#[test]
fn the_auditor_refuses_a_result_of_a_task_not_yet_durable() {
    let t = TaskId::new("t").unwrap();
    let fresh = audit::Auditor::new(&cfg(), &SpoolSnapshot::default());
    let v = audit::no_result_before_task_durable(&fresh, &t).unwrap_err();
    assert_eq!(v.invariant, "no_result_before_task_durable");
    let snap = SpoolSnapshot {
        inbox: vec![TaskMeta { arrival: 0, id: t.clone(), size: 1 }],
        arrival_counter: 1,
        ..Default::default()
    };
    let durable = audit::Auditor::new(&cfg(), &snap);
    assert_eq!(audit::no_result_before_task_durable(&durable, &t), Ok(()));
}

/// A broker (or a fuzzer) may name channels and connections the lane has
/// not opened yet: the lane ignores them, and when it later opens those
/// very ids they are new and live (a CI fuzz run once judged a
/// `confirm.select` on such a channel "gone").
#[test]
fn closes_of_ids_not_yet_opened_do_not_taint_them() {
    let mut w = World::new(cfg());
    for id in 1..=12 {
        w.feed(Input::ChannelClosed { channel: ChannelId(id), code: 504, text: "foreign".into() });
    }
    for id in 2..=4 {
        w.feed(Input::ConnectionLost { conn: ConnId(id), reason: "foreign".into() });
    }
    for i in 0..3 {
        w.submit(&format!("t{i}"));
    }
    w.drive();
    w.lose_connection();
    w.lose_connection();
    w.drive();
    assert_eq!(w.converged(), None);
    check_nothing_lost(&w);
}
