//! Core's own cost per task over the full path (delivery → spool write →
//! commit → ack → handoff → complete → commit → publish → confirm → commit),
//! with a broker and a spool that answer at once, at group commits of 1, 10
//! and 100 tasks (one spool commit, one `multiple` ack and one confirm per
//! group).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tasklane_benches::CoreRig;

fn full_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_full_path");
    for group in [1usize, 10, 100] {
        g.throughput(Throughput::Elements(group as u64));
        let mut rig = CoreRig::new(256);
        g.bench_with_input(BenchmarkId::new("group_commit", group), &group, |b, &group| {
            b.iter(|| rig.cycle(group));
        });
    }
    g.finish();
}

criterion_group!(benches, full_path);
criterion_main!(benches);
