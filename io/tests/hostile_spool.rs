//! A spool file damaged behind tasklane's back (truncated, emptied, meta
//! pages overwritten): opening it is a clear one-line error, never a panic
//! or a crash. Each case runs `tasklane spool inspect` in a process of its
//! own, so that a signal would be seen. A damaged record inside an intact
//! file is left out and quarantined, the rest kept (`io/src/spool/tests.rs`).
//!
//! Not covered, and not survivable: garbage written into the pages of the
//! B-tree itself. LMDB has no page checksums and follows what it finds;
//! such a file can crash the process (SIGSEGV/SIGBUS) when read.

use std::process::{Command, Output};

use bytes::Bytes;
use tasklane_core::{SpoolOp, SpoolWrite, StoredTask, Task, TaskId, WriteSeq};
use tasklane_io::spool::{self, SpoolOptions};

fn inspect(dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tasklane")).args(["spool", "inspect", dir.to_str().unwrap()]).output().unwrap()
}

/// A spool of `n` tasks of 1 KB each; returns its data file.
fn spool_with_tasks(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let opened = spool::open(dir, &SpoolOptions::default()).unwrap();
    for i in 0..n {
        let task = Task { id: TaskId::new(format!("t-{i}")).unwrap(), kind: None, body: Bytes::from(vec![b'x'; 1000]) };
        let op = SpoolOp::Insert(StoredTask { arrival: i, task });
        opened.writer.write(SpoolWrite { seq: WriteSeq(i + 1), op }).unwrap();
    }
    opened.writer.close().unwrap();
    dir.join("data.mdb")
}

fn damage(what: &str, f: impl Fn(&mut Vec<u8>)) -> (Output, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = spool_with_tasks(dir.path(), 200);
    let mut bytes = std::fs::read(&data).unwrap();
    f(&mut bytes);
    std::fs::write(&data, &bytes).unwrap();
    let out = inspect(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{what}: {:?}\n  stdout {stdout:?}\n  stderr {stderr:?}", out.status);
    (out, stdout, stderr)
}

fn one_line_error(out: &Output, stderr: &str, mentions: &str) {
    assert_eq!(out.status.code(), Some(1), "exit status {:?}, stderr {stderr:?}", out.status);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(mentions), "{stderr}");
}

#[test]
fn a_truncated_spool_file_is_a_one_line_error_not_a_crash() {
    // Before the check LMDB mapped the short file and died of SIGBUS.
    let (out, _, err) = damage("truncated to the meta pages", |b| b.truncate(8192));
    one_line_error(&out, &err, "truncated");
    let (out, _, err) = damage("truncated to half", |b| b.truncate(b.len() / 2));
    one_line_error(&out, &err, "truncated");
    assert!(err.contains("data.mdb is"), "{err}");
}

#[test]
fn an_emptied_spool_file_is_refused_rather_than_started_over() {
    // Before the check LMDB took the empty file for a new spool: the 200
    // tasks were gone without a word.
    let (out, _, err) = damage("truncated to nothing", |b| b.clear());
    one_line_error(&out, &err, "truncated");
}

#[test]
fn overwritten_meta_pages_are_a_one_line_error() {
    let (out, _, err) = damage("meta pages zeroed", |b| b[..8192].fill(0));
    one_line_error(&out, &err, "MDB_INVALID");
    let (out, _, err) =
        damage("meta pages garbage", |b| b[..8192].iter_mut().enumerate().for_each(|(i, x)| *x = (i * 31) as u8));
    one_line_error(&out, &err, "MDB_INVALID");
}

#[test]
fn an_intact_spool_keeps_every_task() {
    let (out, text, err) = damage("untouched", |_| {});
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(text.contains("inbox: 200 tasks, 200000 payload bytes"), "{text}");
}
