//! The LMDB spool's group commit: records per second at batches of 1, 10,
//! 100 and 1000 inserts of 256-byte tasks, one transaction and one commit
//! (fsync) per batch. Each timed batch is drained again by an untimed one
//! (complete and confirm), so the spool stays the size of a live one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tasklane_core::{OutboxSeq, ResultStatus, SpoolOp, SpoolWrite, StoredTask, Task, TaskId, TaskResult, WriteSeq};
use tasklane_io::spool::{LmdbSpool, SpoolOptions};

struct Rig {
    spool: LmdbSpool,
    body: Bytes,
    seq: u64,
    arrival: u64,
    outbox: u64,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("tasklane-bench-spool-").tempdir().expect("temp dir");
        let (spool, _, _) = LmdbSpool::open(dir.path(), &SpoolOptions::default()).expect("spool opens");
        Self { spool, body: Bytes::from(vec![b'x'; 256]), seq: 0, arrival: 0, outbox: 0, _dir: dir }
    }

    fn write(&mut self, op: SpoolOp) -> SpoolWrite {
        self.seq += 1;
        SpoolWrite { seq: WriteSeq(self.seq), op }
    }

    fn inserts(&mut self, n: usize) -> (Vec<SpoolWrite>, Vec<TaskId>) {
        let mut ids = Vec::with_capacity(n);
        let writes = (0..n)
            .map(|_| {
                let arrival = self.arrival;
                self.arrival += 1;
                let id = TaskId::new(format!("task-{arrival:012}")).expect("valid");
                ids.push(id.clone());
                let task = Task { id, kind: None, body: self.body.clone() };
                self.write(SpoolOp::Insert(StoredTask { arrival, task }))
            })
            .collect();
        (writes, ids)
    }

    /// Completes and confirms `ids`, forgetting each from the completed
    /// window again, so nothing accumulates.
    fn drain(&mut self, ids: Vec<TaskId>) {
        let mut writes = Vec::with_capacity(ids.len() * 2);
        for task in ids {
            let seq = OutboxSeq(self.outbox);
            self.outbox += 1;
            let result = TaskResult { task: task.clone(), status: ResultStatus::Ok, body: Bytes::new() };
            writes.push(self.write(SpoolOp::Complete { seq, result, forget: Some(task) }));
            writes.push(self.write(SpoolOp::Confirmed { seq }));
        }
        let refused = self.spool.apply(&writes).expect("commit");
        assert!(refused.is_empty(), "{refused:?}");
    }
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("lmdb_spool_insert");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for batch in [1usize, 10, 100, 1000] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut rig = Rig::new();
        g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let (writes, ids) = rig.inserts(batch);
                    let t0 = Instant::now();
                    let refused = rig.spool.apply(&writes).expect("commit");
                    timed += t0.elapsed();
                    assert!(refused.is_empty());
                    rig.drain(ids);
                }
                timed
            });
        });
    }
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
