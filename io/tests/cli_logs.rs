//! Logs as operators expect: no colours when stderr is not a terminal,
//! `--log-format json` gives one JSON object per line, and an empty
//! `TASKLANE_*` variable counts as unset.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `tasklane dashboard` against a broker that is not there until it
/// has logged `want` lines on stderr; returns them.
fn dashboard_log(extra: &[&str], want: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["--amqp", "amqp://guest:guest@127.0.0.1:1/%2f", "--store", dir.path().to_str().unwrap()])
        .args(extra)
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while lines.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.len() >= want, "only {lines:?}");
    lines
}

#[test]
fn text_logs_have_no_colours_off_a_terminal() {
    let lines = dashboard_log(&[], 2);
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:?}");
    assert!(lines[0].contains("INFO") && lines[0].contains("dashboard on http://127.0.0.1:"), "{lines:?}");
    assert!(lines[1].contains("WARN") && lines[1].contains("not draining tasklane.status"), "{lines:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let lines = dashboard_log(&["--log-format", "json"], 2);
    let objects: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect();
    assert_eq!(objects[0]["level"], "INFO");
    assert!(objects[0]["fields"]["message"].as_str().unwrap().starts_with("dashboard on http://"));
    assert_eq!(objects[1]["level"], "WARN");
    assert!(objects[1]["timestamp"].is_string() && objects[1]["target"].is_string(), "{}", objects[1]);
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["--store", dir.path().to_str().unwrap(), "tasks", "prune"])
        .env("TASKLANE_RETAIN_TASKS", "")
        .env("TASKLANE_RETAIN_AGE", " ")
        .env("TASKLANE_LOG_FORMAT", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "pruned 0 tasks; 0 tracked (at most 1000000 tasks, none older than 7days)\n");
    let bad = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["--store", dir.path().to_str().unwrap(), "tasks"])
        .env("TASKLANE_RETAIN_TASKS", "many")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a variable that is set is still checked");
}
