//! The disk's floor under every tasklane figure, measured in the same run:
//! how long one fsync'd LMDB commit of one task takes (the least a handoff
//! waits, since core hands a task off only once its insert is durable), and
//! a bare `fdatasync` of 4 KiB for comparison (an LMDB commit flushes
//! twice: the data pages, then the meta page).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tasklane_core::{SpoolOp, SpoolWrite, StoredTask, Task, TaskId, WriteSeq};
use tasklane_io::spool::{LmdbSpool, SpoolOptions};

use crate::broker::BODY_LEN;
use crate::BenchError;

/// A disk probe: `n` samples of one operation.
pub type Probe = fn(usize) -> Result<Vec<Duration>, BenchError>;

/// Durations of `n` single-task LMDB commits, one after the other.
pub fn lmdb_commits(n: usize) -> Result<Vec<Duration>, BenchError> {
    let dir = tempfile::Builder::new().prefix("tasklane-bench-spool-").tempdir()?;
    let (mut spool, _, _) =
        LmdbSpool::open(dir.path(), &SpoolOptions::default()).map_err(|e| BenchError::Check(e.to_string()))?;
    let body = Bytes::from(vec![b'd'; BODY_LEN]);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let task = Task { id: TaskId::new(format!("d{i}")).expect("valid"), kind: None, body: body.clone() };
        let write = SpoolWrite { seq: WriteSeq(i + 1), op: SpoolOp::Insert(StoredTask { arrival: i, task }) };
        let t0 = Instant::now();
        spool.apply(&[write]).map_err(|e| BenchError::Check(e.to_string()))?;
        samples.push(t0.elapsed());
    }
    Ok(samples)
}

/// Durations of `n` `fdatasync`s, each after rewriting 4 KiB of a file.
pub fn fdatasyncs(n: usize) -> Result<Vec<Duration>, BenchError> {
    let dir = tempfile::Builder::new().prefix("tasklane-bench-fsync-").tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("probe"))?;
    file.write_all(&[0u8; 4096 * 16])?;
    file.sync_all()?;
    let page = [b'f'; 4096];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        file.write_all_at(&page, (i % 16) * 4096)?;
        let t0 = Instant::now();
        file.sync_data()?;
        samples.push(t0.elapsed());
    }
    Ok(samples)
}
