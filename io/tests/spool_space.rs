//! The spool on a real small filesystem (a 40 MiB tmpfs this test mounts
//! itself, which needs root): when the disk is full LMDB fails its write
//! ("Input/output error", a short write), the writer reports the stall once
//! and the free space while it waits, and when space returns it resumes by
//! itself; every write is there afterwards, in order.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tasklane_core::{SpoolOp, SpoolWrite, StoredTask, Task, TaskId, WriteSeq};
use tasklane_io::spool::{self, SpoolOptions, SpoolReport};
use tokio::sync::mpsc::UnboundedReceiver;

mod disk_support;

use disk_support::{ballast, Tmpfs, MIB};

fn insert(n: u64) -> SpoolWrite {
    let task =
        Task { id: TaskId::new(format!("t{n}")).unwrap(), kind: None, body: Bytes::from(vec![n as u8; 64 << 10]) };
    SpoolWrite { seq: WriteSeq(n + 1), op: SpoolOp::Insert(StoredTask { arrival: n, task }) }
}

async fn report(reports: &mut UnboundedReceiver<SpoolReport>, within: Duration) -> SpoolReport {
    tokio::time::timeout(within, reports.recv()).await.expect("a report in time").expect("the writer runs")
}

#[tokio::test]
async fn a_full_disk_stalls_the_spool_and_it_resumes_by_itself_when_space_returns() {
    let fs = Tmpfs::mount("40m");
    let spool_dir = fs.path().join("spool");
    let mut opened = spool::open(&spool_dir, &SpoolOptions::default()).unwrap();
    let ballast = ballast(fs.path(), 2 * MIB);
    const N: u64 = 100; // 6.4 MiB of bodies, more than the 2 MiB left
    for n in 0..N {
        opened.writer.write(insert(n)).unwrap();
    }

    let (mut committed, mut stalls, mut low, mut stalled_at) = (0, Vec::new(), None, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the stall has lasted a few Space reports.
    while low.is_none() || stalls.is_empty() {
        assert!(Instant::now() < deadline, "no stall: committed {committed}");
        match report(&mut opened.reports, Duration::from_secs(10)).await {
            SpoolReport::Committed { upto, .. } => committed = upto.0,
            SpoolReport::Stalled { reason } => {
                stalled_at = committed;
                stalls.push(reason);
            }
            SpoolReport::Space { free_bytes, total_bytes, .. } if !stalls.is_empty() => {
                assert_eq!(total_bytes, 40 * MIB);
                low = Some(free_bytes);
            }
            _ => {}
        }
    }
    assert!(committed > 0 && committed < N, "committed {committed} of {N} before the disk was full");
    assert_eq!(stalls.len(), 1, "one stall report: {stalls:?}");
    assert!(stalls[0].contains("Input/output error"), "{}", stalls[0]);
    assert!(low.unwrap() < MIB, "free while stalled: {low:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(r) = opened.reports.try_recv() {
        assert!(!matches!(r, SpoolReport::Stalled { .. } | SpoolReport::Committed { .. }), "{r:?}");
    }

    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let mut free_after = 0;
    while committed < N {
        match report(&mut opened.reports, Duration::from_secs(15)).await {
            SpoolReport::Committed { upto, .. } => committed = upto.0,
            SpoolReport::Stalled { reason } => panic!("stalled again: {reason}"),
            SpoolReport::Space { free_bytes, .. } => free_after = free_bytes,
            _ => {}
        }
    }
    println!(
        "spool on a 40 MiB tmpfs: stalled after {stalled_at} of {N} writes of 64 KiB; all committed {:.1} s after the ballast went",
        freed.elapsed().as_secs_f64()
    );
    let space = report(&mut opened.reports, Duration::from_secs(5)).await;
    if let SpoolReport::Space { free_bytes, .. } = space {
        free_after = free_bytes;
    }
    assert!(free_after > 20 * MIB, "free after the ballast went: {free_after}");
    opened.writer.close().unwrap();

    let again = spool::open(&spool_dir, &SpoolOptions::default()).unwrap();
    let arrivals: Vec<u64> = again.snapshot.inbox.iter().map(|t| t.arrival).collect();
    assert_eq!(arrivals, (0..N).collect::<Vec<_>>(), "every write, in order");
    assert!(again.snapshot.inbox.iter().all(|t| t.size == 64 << 10));
    for t in &again.snapshot.inbox {
        let task = again.reader.task(t.arrival).unwrap().expect("in the inbox");
        assert!(task.body.len() == 64 << 10 && task.body[0] == t.arrival as u8, "body of task {}", t.arrival);
    }
    again.writer.close().unwrap();
    drop(fs);
}
