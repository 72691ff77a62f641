//! Property tests: random sequences of deliveries, duplicates, malformed
//! messages, commits, completions, confirms, nacks, returns, connection and
//! channel losses, crashes, standby and time jumps, against the harness's
//! reference model. The harness checks on every step that nothing is acked
//! before its commit, no tag is acked on another channel, nothing is handed
//! off twice in one spool lifetime and no task is lost; after the faults
//! heal, every submitted task's result must reach the service and the spool
//! must drain. Misuse of the API fed while deadlines are due must leave the
//! lane exactly as it was.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::harness::*;
use crate::*;

#[derive(Clone, Debug)]
enum Action {
    Submit(u8),
    Resubmit(u8),
    Malformed,
    /// A message the lane's client cannot decode.
    Poison,
    Step,
    Commit,
    AutoCommit(bool),
    Complete(u8),
    AutoComplete(bool),
    HoldConfirms(bool),
    ReleaseConfirms,
    Nack(u8),
    Routable(bool),
    ExchangeMissing(bool),
    LoseConnection,
    CloseChannel,
    Crash,
    Reachable(bool),
    OtherHolder(bool),
    Quorum(bool),
    Advance(u16),
    /// Misuse of the API while deadlines are due.
    Misuse(u8, u16),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1u8..6).prop_map(Action::Submit),
        1 => any::<u8>().prop_map(Action::Resubmit),
        1 => Just(Action::Malformed),
        1 => Just(Action::Poison),
        6 => Just(Action::Step),
        2 => Just(Action::Commit),
        1 => any::<bool>().prop_map(Action::AutoCommit),
        2 => (1u8..4).prop_map(Action::Complete),
        1 => any::<bool>().prop_map(Action::AutoComplete),
        1 => any::<bool>().prop_map(Action::HoldConfirms),
        1 => Just(Action::ReleaseConfirms),
        1 => (1u8..3).prop_map(Action::Nack),
        1 => any::<bool>().prop_map(Action::Routable),
        1 => any::<bool>().prop_map(Action::ExchangeMissing),
        1 => Just(Action::LoseConnection),
        1 => Just(Action::CloseChannel),
        1 => Just(Action::Crash),
        1 => any::<bool>().prop_map(Action::Reachable),
        1 => any::<bool>().prop_map(Action::OtherHolder),
        1 => any::<bool>().prop_map(Action::Quorum),
        2 => (1u16..5000).prop_map(Action::Advance),
        1 => (any::<u8>(), 0u16..3000).prop_map(|(k, ms)| Action::Misuse(k, ms)),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (1u16..9, 1usize..12, 1usize..5, any::<bool>(), any::<u64>(), 0u64..4).prop_map(
        |(prefetch, spool, unconfirmed, excl, seed, report)| {
            let mut c = cfg();
            c.prefetch = prefetch;
            c.max_spooled_tasks = spool;
            c.max_unconfirmed = unconfirmed;
            c.consume_mode = if excl { ConsumeMode::Exclusive } else { ConsumeMode::SingleActive };
            c.seed = seed;
            // Status reports off, or every 3, 10, 30 s: they share the
            // publishing channel's confirm tags with results.
            c.report_interval = [None, Some(3), Some(10), Some(30)][report as usize].map(Duration::from_secs);
            c
        },
    )
}

fn run(cfg: Config, actions: Vec<Action>) {
    let mut w = World::new(cfg);
    let mut next = 0u32;
    for a in actions {
        match a {
            Action::Submit(n) => {
                for _ in 0..n {
                    w.submit(&format!("t{next}"));
                    next += 1;
                }
            }
            Action::Resubmit(i) if next > 0 => w.submit(&format!("t{}", u32::from(i) % next)),
            Action::Resubmit(_) => {}
            Action::Malformed => w.submit_raw(RawMessage { message_id: None, headers: vec![], body: Bytes::new() }),
            Action::Poison => {
                w.submit_poison(&format!("poison{next}"));
                next += 1;
            }
            Action::Step => {
                w.step();
            }
            Action::Commit => w.commit(),
            Action::AutoCommit(on) => w.spool.auto_commit = on,
            Action::Complete(n) => {
                for _ in 0..n {
                    w.complete_one();
                }
            }
            Action::AutoComplete(on) => w.app.auto_complete = on,
            Action::HoldConfirms(on) => w.broker.hold_confirms = on,
            Action::ReleaseConfirms => w.release_confirms(),
            Action::Nack(n) => w.broker.nack_next += usize::from(n),
            Action::Routable(on) => w.broker.routable = on,
            Action::ExchangeMissing(on) => w.broker.exchange_missing = on,
            Action::LoseConnection => w.lose_connection(),
            Action::CloseChannel => w.close_consume_channel(),
            Action::Crash => w.crash(),
            Action::Reachable(on) => w.broker.reachable = on,
            Action::OtherHolder(on) => {
                w.broker.other_holder = on;
                if !on {
                    w.broker.standby = false;
                }
            }
            Action::Quorum(on) => w.broker.quorum = on,
            Action::Advance(ms) => {
                w.now += Duration::from_millis(u64::from(ms));
                w.feed(Input::Timeout);
            }
            Action::Misuse(kind, ms) => w.misuse(kind, Duration::from_millis(u64::from(ms))),
        }
    }
    // Heal: no more faults; the system must converge.
    w.broker.reachable = true;
    w.broker.routable = true;
    w.broker.exchange_missing = false;
    w.broker.other_holder = false;
    w.broker.standby = false;
    w.broker.nack_next = 0;
    w.broker.hold_confirms = false;
    w.release_confirms();
    w.spool.auto_commit = true;
    w.app.auto_complete = true;
    w.drive();
    if let Some(why) = w.converged() {
        panic!("did not converge after healing: {why}; status {:?}", w.lane.status());
    }
    let c = w.lane.counters();
    assert!(c.acked <= c.received, "acked {} of {} received", c.acked, c.received);
}

/// 10,000 cases unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn nothing_lost_nothing_twice_and_everything_converges(cfg in config(), actions in prop::collection::vec(action(), 0..60)) {
        run(cfg, actions);
    }
}
