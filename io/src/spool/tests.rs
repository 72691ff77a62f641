//! The LMDB spool against core's reference `MemorySpool`, crash-free
//! reopen, damaged records, map growth and stall, and a commit-rate print.

use std::time::{Duration, Instant};

use bytes::Bytes;
use heed::types::Bytes as RawBytes;
use heed::{CommitOrAbort, Database, EnvOpenOptions};
use tasklane_core::{
    MemorySpool, OutboxSeq, ResultStatus, SpoolOp, SpoolWrite, StoredTask, Task, TaskId, TaskResult, WriteSeq,
};

use super::*;

/// Deterministic randomness for the op sequences (no OS randomness, so a
/// failing seed reproduces).
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(super) fn id(n: u64) -> TaskId {
    TaskId::new(format!("t{n}")).unwrap()
}

pub(super) fn task(n: u64, body: usize) -> Task {
    Task { id: id(n), kind: n.is_multiple_of(3).then(|| "kind".to_string()), body: Bytes::from(vec![n as u8; body]) }
}

pub(super) fn result(n: u64) -> TaskResult {
    TaskResult { task: id(n), status: ResultStatus::Ok, body: Bytes::from(format!("r{n}")) }
}

/// A random op, mostly valid, sometimes not (duplicates, unknown tasks,
/// positions that go backwards), drawn against the model's state.
pub(super) fn random_op(rng: &mut SplitMix, mem: &MemorySpool) -> SpoolOp {
    let snap = mem.snapshot();
    let pool = 24;
    match rng.below(10) {
        0..=3 => {
            let next = snap.next_arrival() + rng.below(3);
            let arrival = if rng.below(12) == 0 { next.saturating_sub(2) } else { next };
            SpoolOp::Insert(StoredTask { arrival, task: task(rng.below(pool), rng.below(40) as usize) })
        }
        4..=6 => {
            let n = match snap.inbox.first() {
                Some(t) if rng.below(5) != 0 => t.id.as_str()[1..].parse().unwrap(),
                _ => rng.below(pool),
            };
            let next = snap.next_outbox_seq().0 + rng.below(2);
            let seq = OutboxSeq(if rng.below(12) == 0 { next.saturating_sub(2) } else { next });
            let forget = match rng.below(3) {
                0 => None,
                1 => snap.completed.first().cloned(),
                _ => Some(id(rng.below(pool))),
            };
            SpoolOp::Complete { seq, result: result(n), forget }
        }
        _ => {
            let seq = match snap.outbox.first() {
                Some(r) if rng.below(4) != 0 => r.seq,
                _ => OutboxSeq(rng.below(snap.next_outbox_seq().0 + 2)),
            };
            SpoolOp::Confirmed { seq }
        }
    }
}

#[test]
fn behaves_like_memory_spool_across_batches_and_reopens() {
    for seed in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SplitMix(seed);
        let mut mem = MemorySpool::new();
        let (mut lmdb, snap, corrupt) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
        assert_eq!((snap, corrupt), (Default::default(), vec![]));
        let mut seq = 0;
        for _round in 0..60 {
            let mut batch = Vec::new();
            let mut expected_refusals = Vec::new();
            for _ in 0..=rng.below(8) {
                let op = random_op(&mut rng, &mem);
                seq += 1;
                if let Err(e) = mem.apply(&op) {
                    expected_refusals.push((WriteSeq(seq), e));
                }
                batch.push(SpoolWrite { seq: WriteSeq(seq), op });
            }
            let refused = lmdb.apply(&batch).unwrap();
            assert_eq!(refused, expected_refusals, "seed {seed}, write {seq}");
            assert_eq!(lmdb.snapshot().unwrap(), mem.snapshot(), "seed {seed}, write {seq}");
            for t in mem.snapshot().inbox {
                if let Some(body) = mem.task(t.arrival) {
                    let read = lmdb.reader().task(t.arrival).unwrap();
                    assert_eq!(read.as_ref(), Some(body), "seed {seed}, write {seq}: task {}", t.arrival);
                }
            }
            if rng.below(8) == 0 {
                drop(lmdb);
                let (again, snap, _) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
                lmdb = again;
                assert_eq!(snap, mem.snapshot(), "seed {seed}: reopen");
                mem = MemorySpool::from_snapshot(&snap);
            }
        }
    }
}

pub(super) fn insert(seq: u64, n: u64, body: usize) -> SpoolWrite {
    SpoolWrite { seq: WriteSeq(seq), op: SpoolOp::Insert(StoredTask { arrival: n, task: task(n, body) }) }
}

pub(super) async fn next_report(reports: &mut tokio::sync::mpsc::UnboundedReceiver<SpoolReport>) -> SpoolReport {
    tokio::time::timeout(Duration::from_secs(10), reports.recv()).await.expect("a report").expect("writer alive")
}

#[tokio::test]
async fn writer_groups_commits_and_reopen_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open(dir.path(), &SpoolOptions::default()).unwrap();
    for n in 0..500 {
        opened.writer.write(insert(n + 1, n, 10)).unwrap();
    }
    let complete = SpoolOp::Complete { seq: OutboxSeq(0), result: result(7), forget: None };
    opened.writer.write(SpoolWrite { seq: WriteSeq(501), op: complete }).unwrap();
    let mut groups = 0;
    loop {
        match next_report(&mut opened.reports).await {
            SpoolReport::Committed { upto, .. } => {
                groups += 1;
                if upto == WriteSeq(501) {
                    break;
                }
            }
            SpoolReport::Space { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(groups < 501, "501 writes queued at once must not take 501 commits ({groups})");
    opened.writer.close().unwrap();
    let again = open(dir.path(), &SpoolOptions::default()).unwrap();
    assert_eq!(again.snapshot.inbox.len(), 499);
    assert_eq!(again.snapshot.outbox.len(), 1);
    assert_eq!(again.snapshot.completed, vec![id(7)]);
    let first = StoredTask { arrival: 0, task: task(0, 10) };
    assert_eq!(again.snapshot.inbox[0], first.meta());
    assert_eq!(again.reader.task(0).unwrap(), Some(first.task), "the body is read from disk");
    assert_eq!(again.reader.task(7).unwrap(), None, "completed: no longer in the inbox");
    again.writer.close().unwrap();
}

#[test]
fn a_damaged_record_is_named_left_out_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lmdb, _, _) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
    lmdb.apply(&[insert(1, 0, 5), insert(2, 1, 5), insert(3, 2, 5)]).unwrap();
    drop(lmdb);
    {
        // Flip a byte of inbox record 1 behind the spool's back.
        let env = unsafe { EnvOpenOptions::new().max_dbs(8).open(dir.path()) }.unwrap();
        let wtxn = env.write_txn().unwrap();
        let inbox: Database<RawBytes, RawBytes> = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| {
                dbo.create_database(wtxn, Some("inbox")).map(CommitOrAbort::<_, ()>::Commit)
            })
            .unwrap()
            .unwrap_commit();
        let mut wtxn = env.write_txn().unwrap();
        let mut bytes = inbox.get(&wtxn, &1u64.to_be_bytes()).unwrap().unwrap().to_vec();
        bytes[4] ^= 0x40;
        inbox.put(&mut wtxn, &1u64.to_be_bytes(), &bytes).unwrap();
        wtxn.commit().unwrap();
    }
    let (_, snap, corrupt) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
    assert_eq!(snap.inbox.iter().map(|t| t.arrival).collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(corrupt.len(), 1);
    assert_eq!(corrupt[0].to_string(), "spool inbox record 1 is damaged (checksum mismatch); moved to quarantine");
    let (_, snap2, corrupt2) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
    assert_eq!((snap2, corrupt2), (snap, vec![]), "quarantined once, not reported again");
}

#[tokio::test]
async fn a_full_map_grows_to_its_limit_then_stalls_without_losing_committed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolOptions { map_size: 1 << 20, max_map_size: 2 << 20 };
    let mut opened = open(dir.path(), &opts).unwrap();
    // 40 tasks of 100 KB: 4 MB, more than the 2 MiB limit.
    for n in 0..40 {
        opened.writer.write(insert(n + 1, n, 100_000)).unwrap();
    }
    let mut committed = 0;
    let reason = loop {
        match next_report(&mut opened.reports).await {
            SpoolReport::Committed { upto, .. } => committed = upto.0,
            SpoolReport::Stalled { reason } => break reason,
            SpoolReport::Space { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(reason.contains("map is full at its limit of 2 MiB"), "{reason}");
    // While stalled it keeps committing one write at a time as far as fits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(r) = opened.reports.try_recv() {
        if let SpoolReport::Committed { upto, .. } = r {
            committed = upto.0;
        }
    }
    assert!(committed > 5 && committed < 40, "committed {committed}");
    let err = tokio::task::spawn_blocking(move || opened.writer.close_within(Duration::from_millis(500)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SpoolError::Unflushed { writes, .. } if writes as u64 == 40 - committed), "{err}");
    let (lmdb, snap, _) = LmdbSpool::open(dir.path(), &opts).unwrap();
    assert_eq!(snap.inbox.len() as u64, committed, "exactly the reported commits are on disk");
    assert!(lmdb.map_size() > 1 << 20, "the map grew past its initial 1 MiB");
}

/// Not an assertion: prints how the commit rate and the write rate change
/// with the group size, side by side in one run.
#[test]
fn commit_rate_by_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lmdb, _, _) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
    let mut seq = 0;
    let mut arrival = 0;
    let mut lines = Vec::new();
    for batch in [1usize, 10, 100] {
        let start = Instant::now();
        let mut commits = 0u64;
        while start.elapsed() < Duration::from_millis(700) {
            let writes: Vec<SpoolWrite> = (0..batch)
                .map(|_| {
                    seq += 1;
                    arrival += 1;
                    insert(seq, arrival, 200)
                })
                .collect();
            lmdb.apply(&writes).unwrap();
            commits += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        lines.push(format!(
            "batch {batch:>3}: {:>7.0} commits/s, {:>8.0} writes/s",
            commits as f64 / secs,
            (commits * batch as u64) as f64 / secs
        ));
    }
    println!("LMDB spool group commit (fsync per commit, 200-byte tasks):\n{}", lines.join("\n"));
}

/// Deleting records does not shrink the file, but LMDB reuses the pages:
/// the spool reports them, so that a full disk with an emptied spool still
/// lets intake go on.
#[test]
fn pages_freed_by_completed_and_confirmed_tasks_count_as_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _, _) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).unwrap();
    let before = spool.reusable_bytes();
    let n = 200u64;
    let inserts: Vec<SpoolWrite> = (0..n)
        .map(|i| SpoolWrite {
            seq: WriteSeq(i + 1),
            op: SpoolOp::Insert(StoredTask { arrival: i, task: task(i, 64 << 10) }),
        })
        .collect();
    assert!(spool.apply(&inserts).unwrap().is_empty());
    let mut seq = n;
    let mut done = Vec::new();
    for i in 0..n {
        seq += 1;
        done.push(SpoolWrite {
            seq: WriteSeq(seq),
            op: SpoolOp::Complete { seq: OutboxSeq(i), result: result(i), forget: None },
        });
    }
    for i in 0..n {
        seq += 1;
        done.push(SpoolWrite { seq: WriteSeq(seq), op: SpoolOp::Confirmed { seq: OutboxSeq(i) } });
    }
    assert!(spool.apply(&done).unwrap().is_empty());
    // A further commit lets LMDB put the freed pages on its free list.
    let extra =
        [SpoolWrite { seq: WriteSeq(seq + 1), op: SpoolOp::Insert(StoredTask { arrival: n, task: task(n, 10) }) }];
    assert!(spool.apply(&extra).unwrap().is_empty());
    let freed = spool.reusable_bytes() - before;
    assert!(freed >= n * (60 << 10), "{n} bodies of 64 KiB freed, {freed} bytes reusable");
}
