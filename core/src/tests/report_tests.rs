//! Status reports: on the timer, on every status change, only on a live
//! publishing channel, and never mistaken for a result.

use std::time::Duration;

use super::harness::*;
use crate::*;

const EVERY: Duration = Duration::from_secs(10);

fn reporting() -> Config {
    let mut c = cfg();
    c.report_interval = Some(EVERY);
    c
}

/// Steps until nothing moves, without letting time pass.
fn quiet(w: &mut World) {
    while w.step() {}
}

/// Lets time pass to `at` and runs the lane's deadlines.
fn advance_to(w: &mut World, at: std::time::Instant) {
    w.now = w.now.max(at);
    w.feed(Input::Timeout);
    quiet(w);
}

#[test]
fn reports_go_out_at_the_interval_while_connected() {
    let mut w = World::new(reporting());
    let t0 = w.now;
    quiet(&mut w);
    assert_eq!(w.lane.status(), &Status::Consuming);
    let (at, last) = w.broker.reports.last().cloned().expect("a report once the publishing channel is up");
    assert_eq!((at, &last.status), (t0, &Status::Consuming), "{:?}", w.broker.reports);
    let first = w.broker.reports.len() as u64;
    assert_eq!(last.seq, first);
    assert_eq!(last.interval, EVERY);
    for i in 1..=3u32 {
        assert_eq!(w.lane.poll_timeout(), Some(t0 + EVERY * i), "the report timer is the next deadline");
        // Early wake-ups send nothing.
        advance_to(&mut w, t0 + EVERY * i - Duration::from_millis(1));
        assert_eq!(w.broker.reports.len() as u64, first + u64::from(i) - 1);
        advance_to(&mut w, t0 + EVERY * i);
        let (at, r) = w.broker.reports.last().unwrap();
        assert_eq!((*at, r.seq, &r.status), (t0 + EVERY * i, first + u64::from(i), &Status::Consuming));
    }
    // What the report says follows the lane.
    w.app.auto_complete = false;
    w.submit("t1");
    w.submit("t2");
    quiet(&mut w);
    let at = w.lane.poll_timeout().unwrap();
    advance_to(&mut w, at);
    let (_, r) = w.broker.reports.last().unwrap();
    assert_eq!((r.inbox, r.outbox, r.counters.received), (2, 0, 2));
    assert_eq!(r.counters, *w.lane.counters());
}

#[test]
fn a_status_change_sends_a_report_at_once_and_restarts_the_timer() {
    let mut w = World::new(reporting());
    let t0 = w.now;
    quiet(&mut w);
    let before = w.broker.reports.len();
    let conn = w.broker.conn.unwrap();
    // Blocked: the broker reads nothing from us, so nothing is sent, and
    // the report timer is not a deadline meanwhile.
    w.now = t0 + Duration::from_secs(3);
    w.feed(Input::Blocked { conn, reason: "memory alarm".into() });
    quiet(&mut w);
    assert_eq!(w.lane.status(), &Status::Blocked { reason: "memory alarm".into() });
    assert_eq!(w.broker.reports.len(), before);
    assert_eq!(w.lane.poll_timeout(), Some(t0 + Duration::from_secs(3) + w.cfg.blocked_timeout));
    w.now = t0 + Duration::from_secs(25);
    w.feed(Input::Unblocked { conn });
    quiet(&mut w);
    let (at, r) = w.broker.reports.last().unwrap();
    assert_eq!((*at, &r.status), (t0 + Duration::from_secs(25), &Status::Consuming));
    assert_eq!(w.broker.reports.len(), before + 1);
    assert_eq!(w.lane.poll_timeout(), Some(t0 + Duration::from_secs(35)));
    // Standby: another endpoint takes the queue after a reconnect.
    w.broker.other_holder = true;
    w.lose_connection();
    quiet(&mut w);
    while w.lane.status() != &Status::Standby {
        let at = w.lane.poll_timeout().unwrap();
        advance_to(&mut w, at);
    }
    let statuses: Vec<&Status> = w.broker.reports[before + 1..].iter().map(|(_, r)| &r.status).collect();
    assert_eq!(statuses.last(), Some(&&Status::Standby), "{statuses:?}");
    let seqs: Vec<u64> = w.broker.reports.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "reports are numbered across sessions");
}

#[test]
fn no_report_without_a_live_publishing_channel() {
    let mut w = World::unreachable(reporting());
    for _ in 0..20 {
        let Some(at) = w.lane.poll_timeout() else { break };
        advance_to(&mut w, at);
    }
    assert_eq!(w.count(|c| matches!(c, Amqp::PublishReport { .. })), 0);
    assert!(w.broker.reports.is_empty());
    // Reports are off: none, connected or not.
    let mut w = World::new(cfg());
    quiet(&mut w);
    let at = w.now + Duration::from_secs(60);
    advance_to(&mut w, at);
    assert_eq!(w.count(|c| matches!(c, Amqp::PublishReport { .. })), 0);
    assert_eq!(w.lane.poll_timeout(), None, "no timer when reports are off");
}

#[test]
fn a_publishing_channel_closed_under_a_report_waits_for_the_next_one() {
    let mut w = World::new(reporting());
    w.broker.exchange_missing = true;
    quiet(&mut w);
    // The first report closed the channel (404): nothing more until the
    // lane reopens it, with the publishing channel's backoff.
    assert_eq!(w.count(|c| matches!(c, Amqp::PublishReport { .. })), 1);
    assert!(w.events.iter().any(|e| matches!(e, Event::PublishChannelClosed { code: 404, .. })));
    assert_eq!(w.lane.status(), &Status::Consuming, "intake goes on");
    w.broker.exchange_missing = false;
    let at = w.lane.poll_timeout().unwrap();
    advance_to(&mut w, at);
    assert_eq!(w.count(|c| matches!(c, Amqp::PublishReport { .. })), 2);
    assert_eq!(w.broker.reports.len(), 1, "the report on the new channel arrived");
}

#[test]
fn a_nacked_or_unconfirmed_report_costs_nothing_and_results_still_settle() {
    // Confirms are held past the confirm stall here: keep it from counting
    // as a broker alarm (which pauses reports).
    let mut c = reporting();
    c.confirm_stall = Duration::from_secs(24 * 3600);
    let mut w = World::new(c);
    w.broker.nack_next = 1;
    quiet(&mut w);
    assert_eq!(w.broker.nack_next, 0, "the first report was nacked");
    assert_eq!(w.lane.counters().nacked, 0);
    assert!(!w.events.iter().any(|e| matches!(e, Event::ResultNacked { .. })));
    // Results and reports interleave on one confirm numbering; a multiple
    // confirm up to a report's tag settles the results below it.
    w.broker.hold_confirms = true;
    for i in 0..6 {
        w.submit(&format!("t{i}"));
    }
    quiet(&mut w);
    let at = w.lane.poll_timeout().unwrap();
    advance_to(&mut w, at);
    assert!(w.broker.held_confirms.len() >= 5, "{:?}", w.broker.held_confirms);
    let last_report = w.commands.iter().rev().find_map(|c| match c {
        Amqp::PublishReport { tag, .. } => Some(tag.seq),
        _ => None,
    });
    let last_held = match w.broker.held_confirms.last() {
        Some(Input::PublishAck { tag, .. }) => Some(*tag),
        _ => None,
    };
    assert_eq!(last_held, last_report, "the newest publish is a report");
    w.broker.hold_confirms = false;
    w.release_confirms();
    w.drive();
    assert_eq!(w.converged(), None);
    let c = w.lane.counters();
    assert_eq!((c.completed, c.confirmed, c.nacked, c.returned), (6, 6, 0, 0));
}
