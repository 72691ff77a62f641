//! The spool on a real small filesystem (a 40 MiB tmpfs this test mounts
//! itself, which needs root): when the disk is full LMDB fails its write
//! ("Input/output error", a short write), the writer reports the stall once
//! and the free space while it waits, and when space returns it resumes by
//! itself; every write is there afterwards, in order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tasklane_core::{SpoolOp, SpoolWrite, StoredTask, Task, TaskId, WriteSeq};
use tasklane_io::spool::{self, SpoolOptions, SpoolReport};
use tokio::sync::mpsc::UnboundedReceiver;

const MIB: u64 = 1 << 20;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { dir },
            Ok(o) => panic!(
                "this test needs a small real filesystem and cannot mount a tmpfs (root is needed): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test needs a small real filesystem and cannot run mount: {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem with a file, then gives back `leave` bytes.
fn ballast(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xAB; MIB as usize];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("ballast: {e}"),
        }
    }
    f.set_len(written.saturating_sub(leave)).unwrap();
    path
}

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
