//! `tasklane spool inspect DIR`: counts and oldest entries of a spool.

use std::process::{Command, Output};

use bytes::Bytes;
use tasklane_core::{OutboxSeq, ResultStatus, SpoolOp, SpoolWrite, StoredTask, Task, TaskId, TaskResult, WriteSeq};
use tasklane_io::spool::{self, SpoolOptions};

fn inspect(dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tasklane")).args(["spool", "inspect", dir.to_str().unwrap()]).output().unwrap()
}

fn task(arrival: u64, id: &str, body: &str) -> StoredTask {
    StoredTask {
        arrival,
        task: Task { id: TaskId::new(id).unwrap(), kind: Some("k".into()), body: Bytes::from(body.to_owned()) },
    }
}

#[test]
fn inspect_shows_counts_and_oldest_entries() {
    let dir = tempfile::tempdir().unwrap();
    let opened = spool::open(dir.path(), &SpoolOptions::default()).unwrap();
    let ops = [
        SpoolOp::Insert(task(0, "t-0", "zero")),
        SpoolOp::Insert(task(1, "t-1", "one")),
        SpoolOp::Insert(task(2, "t-2", "two")),
        SpoolOp::Complete {
            seq: OutboxSeq(0),
            result: TaskResult {
                task: TaskId::new("t-0").unwrap(),
                status: ResultStatus::Failed,
                body: Bytes::from("boom"),
            },
            forget: None,
        },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        opened.writer.write(SpoolWrite { seq: WriteSeq(i as u64 + 1), op }).unwrap();
    }
    opened.writer.close().unwrap();

    let out = inspect(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], "inbox: 2 tasks, 6 payload bytes", "{text}");
    assert_eq!(lines[2], "  #1 t-1 kind=k 3 bytes \"one\"", "{text}");
    assert_eq!(lines[3], "  #2 t-2 kind=k 3 bytes \"two\"", "{text}");
    assert_eq!(lines[4], "outbox: 1 results, 4 payload bytes", "{text}");
    assert_eq!(lines[5], "  #0 t-0 failed 4 bytes \"boom\"", "{text}");
    assert_eq!(lines[6], "completed (dedup window): 1 task ids", "{text}");
}

#[test]
fn inspecting_a_directory_without_a_spool_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = inspect(&dir.path().join("nothing-here"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
    assert!(stderr.contains("no spool in"), "{stderr}");
}
