//! Whole-simulation tests: a fixed sample of seeds passes, a seed replays
//! to the same trace, and every deliberately broken endpoint is caught by
//! the invariant meant for it within a bounded number of seeds.
//!
//! Long sweeps stay behind the binary (`--seeds 0..1000`).

use crate::run::{run, Outcome, RunOptions};
use crate::sabotage::Sabotage;

/// Seeds of the default sample.
const SAMPLE: std::ops::Range<u64> = 0..40;

#[test]
fn a_sample_of_seeds_passes() {
    let mut failed = Vec::new();
    for seed in SAMPLE {
        let report = run(&RunOptions::seed(seed));
        if !report.outcome.passed() {
            failed.push(format!("{}\n    reproduce: {}", report.summary(), report.reproduce()));
        }
    }
    assert!(failed.is_empty(), "failed runs:\n{}", failed.join("\n"));
}

#[test]
fn the_sample_draws_every_fault_class() {
    let mut counts = crate::faults::FaultCounts::default();
    for seed in SAMPLE {
        let swarm = crate::swarm::Swarm::draw(seed);
        counts.partitions += u32::from(swarm.partition_rate > 0.0);
        counts.kills += u32::from(swarm.kill_rate > 0.0);
        counts.holds += u32::from(swarm.hold_rate > 0.0);
        counts.crashes += u32::from(swarm.crash_rate > 0.0);
        counts.broker_restarts += u32::from(swarm.broker_restart_rate > 0.0);
        counts.duplicates += u32::from(swarm.duplicate_at.is_some());
        counts.spool_stalls += u32::from(swarm.spool_stall_rate > 0.0);
        counts.disk_fulls += u32::from(swarm.disk_full_rate > 0.0);
        counts.alarms += u32::from(swarm.alarm_rate > 0.0);
    }
    for (class, n) in [
        ("partition", counts.partitions),
        ("kill", counts.kills),
        ("hold", counts.holds),
        ("crash", counts.crashes),
        ("broker restart", counts.broker_restarts),
        ("duplicate", counts.duplicates),
        ("spool stall", counts.spool_stalls),
        ("disk full", counts.disk_fulls),
        ("alarm", counts.alarms),
    ] {
        assert!(n >= 5, "{class} drawn in only {n} of {} seeds", SAMPLE.end);
    }
}

#[test]
fn the_sample_shows_what_the_spool_and_alarm_faults_do() {
    // Each kind of trouble the new fault classes bring shows in some run of
    // the sample, as the endpoint reports it.
    let mut seen = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for seed in SAMPLE {
        for s in run(&RunOptions::seed(seed)).seen {
            seen.entry(s).or_default().push(seed);
        }
    }
    for want in [
        "spool full: disk space low: ",
        "spool full: spool cannot commit: Input/output error",
        "spool full: spool cannot commit: No space left on device",
        "Blocked { reason: \"no publish confirm for 1 s",
    ] {
        let hits: Vec<&u64> = seen.iter().filter(|(s, _)| s.starts_with(want)).flat_map(|(_, seeds)| seeds).collect();
        assert!(!hits.is_empty(), "no run of the sample shows {want:?}; seen: {:#?}", seen.keys().collect::<Vec<_>>());
        println!("{want:?}: seeds {hits:?}");
    }
}

#[test]
fn an_alarm_that_outlasts_the_blocked_timeout_drops_the_connection_and_the_run_heals() {
    // Rarer than the sample: the first seed where it happens.
    let want = "dropped: blocked by broker for too long: no publish confirm";
    for seed in 0..400 {
        let report = run(&RunOptions::seed(seed));
        if report.seen.iter().any(|s| s.starts_with(want)) {
            assert!(report.outcome.passed(), "{}", report.summary());
            assert!(report.faults.alarms > 0, "{}", report.summary());
            println!("seed {seed}: {}", report.summary());
            return;
        }
    }
    panic!("no seed of 0..400 shows {want:?}");
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    // A seed with every kind of fault and a duplicate endpoint; one with a
    // disk fill and a broker alarm.
    for seed in [2, 61, 36] {
        let a = run(&RunOptions::seed(seed));
        let b = run(&RunOptions::seed(seed));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}: {} vs {}", a.summary(), b.summary());
        assert_eq!(a.fault_log, b.fault_log);
        assert_eq!(a.outcome, b.outcome);
        assert!(a.faults.total() > 0, "seed {seed} injected no fault");
    }
    assert_ne!(run(&RunOptions::seed(1)).trace_hash, run(&RunOptions::seed(2)).trace_hash);
}

#[test]
fn no_time_to_heal_is_a_liveness_failure_not_a_safety_one() {
    // With 1 ms to converge after the heal, some early seed is still busy:
    // that must be reported as liveness, and the same seed must pass with
    // the full heal limit.
    let short = std::time::Duration::from_millis(1);
    let (seed, pending) = (0..50)
        .find_map(|seed| match run(&RunOptions { heal_limit: short, ..RunOptions::seed(seed) }).outcome {
            Outcome::Liveness { pending } => Some((seed, pending)),
            Outcome::Pass => None,
            other => panic!("seed {seed} with no time to heal: expected pass or liveness, got {other}"),
        })
        .expect("some seed needs more than 1 ms after the heal");
    assert!(!pending.is_empty());
    assert!(run(&RunOptions::seed(seed)).outcome.passed(), "seed {seed} converges with time to heal");
}

/// Runs `sabotage` on seeds from 0 until a run fails; the failure must be a
/// safety violation of one of the invariants meant for it.
fn caught_within(sabotage: Sabotage, bound: u64) -> (u64, &'static str) {
    for seed in 0..bound {
        let report = run(&RunOptions { sabotage: Some(sabotage), ..RunOptions::seed(seed) });
        match report.outcome {
            Outcome::Pass => continue,
            Outcome::Safety { violation, .. } => {
                assert!(
                    sabotage.caught_by().contains(&violation.invariant),
                    "{sabotage} caught by {} (expected {:?}): {}",
                    violation.invariant,
                    sabotage.caught_by(),
                    violation.detail
                );
                return (seed, violation.invariant);
            }
            other => panic!("{sabotage} on seed {seed} failed otherwise: {other}"),
        }
    }
    panic!("{sabotage} was not caught within {bound} seeds");
}

#[test]
fn ack_before_commit_is_caught() {
    let (seed, by) = caught_within(Sabotage::AckBeforeCommit, 5);
    assert_eq!((seed, by), (0, "no_ack_before_durable"));
}

#[test]
fn ack_of_stale_tags_is_caught() {
    let (seed, _) = caught_within(Sabotage::AckStaleTags, 40);
    assert!(seed < 40);
}

#[test]
fn dropping_results_before_confirm_is_caught() {
    let (seed, by) = caught_within(Sabotage::DropResultBeforeConfirm, 5);
    assert_eq!((seed, by), (0, "no_result_dropped_before_confirm"));
}

#[test]
fn skipping_exclusive_consume_is_caught() {
    let (seed, by) = caught_within(Sabotage::NeverExclusive, 10);
    assert_eq!(by, "at_most_one_consumer");
    assert!(seed < 10);
}
