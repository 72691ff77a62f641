//! Recovery from failed writes, the writer's free-space reports, its
//! bounded close, and the lock (the real small filesystem is in
//! `io/tests/spool_space.rs`).

use std::time::{Duration, Instant};

use heed::MdbError;
use tasklane_core::{MemorySpool, SpoolWrite, WriteSeq};

use super::tests::{insert, next_report, random_op, SplitMix};
use super::*;

fn eio() -> heed::Error {
    heed::Error::Io(std::io::Error::from_raw_os_error(5))
}

/// A batch that fails anywhere (before its first write, between writes,
/// at its end) leaves the mirror as the last commit left the disk, the
/// same batch then commits, and the spool goes on like `MemorySpool`; an
/// `MDB_PANIC` also reopens the environment.
#[test]
fn a_failed_batch_changes_nothing_and_the_spool_goes_on() {
    for seed in 0..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SplitMix(seed);
        let mut mem = MemorySpool::new();
        let (mut lmdb, _, _) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
        let (mut seq, mut panics) = (0, 0);
        for round in 0..40 {
            let mut batch = Vec::new();
            let mut probe = MemorySpool::from_snapshot(&mem.snapshot());
            for _ in 0..=rng.below(8) {
                let op = random_op(&mut rng, &probe);
                let _ = probe.apply(&op);
                seq += 1;
                batch.push(SpoolWrite { seq: WriteSeq(seq), op });
            }
            if round % 2 == 0 {
                let at = rng.below(batch.len() as u64 + 1) as usize;
                let panic = rng.below(3) == 0;
                panics += usize::from(panic);
                lmdb.fail_next_batch(at, if panic { heed::Error::Mdb(MdbError::Panic) } else { eio() });
                let err = lmdb.apply(&batch).unwrap_err();
                assert!(matches!(err, SpoolError::Lmdb { .. }), "{err}");
                assert!(lmdb.mirror_matches_disk(), "seed {seed} round {round}: mirror undone");
                assert_eq!(lmdb.snapshot().unwrap(), mem.snapshot(), "seed {seed} round {round}: nothing written");
            }
            let refused = lmdb.apply(&batch).unwrap();
            for w in &batch {
                let _ = mem.apply(&w.op);
            }
            assert!(refused.len() <= batch.len());
            assert_eq!(lmdb.snapshot().unwrap(), mem.snapshot(), "seed {seed} round {round}");
            assert!(lmdb.mirror_matches_disk());
        }
        assert_eq!(lmdb.reopens(), panics, "seed {seed}: one reopen per MDB_PANIC");
    }
}

#[tokio::test]
async fn the_writer_reports_free_space_at_start_after_commits_and_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (free, total) = space(dir.path()).unwrap();
    assert!(total > 0 && free <= total);
    let mut opened = open(dir.path(), &SpoolOptions::default()).unwrap();
    let first = next_report(&mut opened.reports).await;
    assert!(matches!(first, SpoolReport::Space { total_bytes, .. } if total_bytes == total), "{first:?}");
    opened.writer.write(insert(1, 0, 10)).unwrap();
    let mut after_commit = Vec::new();
    while after_commit.len() < 2 {
        match next_report(&mut opened.reports).await {
            SpoolReport::Space { .. } if after_commit.is_empty() => {} // the idle one may come first
            r => after_commit.push(r),
        }
    }
    assert!(matches!(after_commit[0], SpoolReport::Committed { upto: WriteSeq(1), writes: 1 }), "{after_commit:?}");
    assert!(matches!(after_commit[1], SpoolReport::Space { .. }), "{after_commit:?}");
    // Idle: about one a second.
    let start = Instant::now();
    let idle = next_report(&mut opened.reports).await;
    assert!(matches!(idle, SpoolReport::Space { .. }), "{idle:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert_eq!(opened.writer.pending(), 0);
    opened.writer.close().unwrap();
}

/// A stalled writer does not hold close up: it gives up at the grace and
/// says how many writes were not committed.
#[tokio::test]
async fn close_within_is_bounded_when_the_spool_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolOptions { map_size: 1 << 20, max_map_size: 1 << 20 };
    let mut opened = open(dir.path(), &opts).unwrap();
    for n in 0..30 {
        opened.writer.write(insert(n + 1, n, 100_000)).unwrap();
    }
    let mut committed = 0;
    loop {
        match next_report(&mut opened.reports).await {
            SpoolReport::Committed { upto, .. } => committed = upto.0,
            SpoolReport::Stalled { .. } => break,
            _ => {}
        }
    }
    let start = Instant::now();
    let writer = opened.writer;
    let err = tokio::task::spawn_blocking(move || writer.close_within(Duration::from_millis(700))).await.unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(3), "{took:?}");
    while let Ok(r) = opened.reports.try_recv() {
        if let SpoolReport::Committed { upto, .. } = r {
            committed = upto.0;
        }
    }
    let err = err.unwrap_err();
    assert!(
        matches!(&err, SpoolError::Unflushed { writes, reason } if *writes as u64 == 30 - committed && reason.contains("map is full")),
        "{err}"
    );
    // The lock went with the thread: the spool opens again, with what was committed.
    let again = open(dir.path(), &opts).unwrap();
    assert_eq!(again.snapshot.inbox.len() as u64, committed);
    again.writer.close_within(Duration::from_millis(100)).unwrap();
}

#[test]
fn a_spool_open_in_this_process_is_locked_until_its_writer_closes() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path(), &SpoolOptions::default()).unwrap();
    let err = open(dir.path(), &SpoolOptions::default()).unwrap_err();
    assert!(matches!(&err, SpoolError::Locked { pid: Some(p), .. } if *p == std::process::id()), "{err}");
    assert!(!err.to_string().contains('\n'));
    opened.writer.close().unwrap();
    open(dir.path(), &SpoolOptions::default()).unwrap().writer.close().unwrap();
}
