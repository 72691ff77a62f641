//! Bad input gives one line on stderr and exit code 2, before anything
//! touches the broker or the disk.

use std::process::{Command, Output};

fn tasklane(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["--store", dir.path().join("store").to_str().unwrap()])
        .args(args)
        .env_remove("TASKLANE_AMQP_URL")
        .output()
        .unwrap()
}

fn assert_usage_error(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("tasklane: "), "{stderr:?}");
    assert!(stderr.contains(mentions), "{stderr:?} should mention {mentions:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_url_is_a_usage_error() {
    let out = tasklane(&["--amqp", "http://guest:sekret@127.0.0.1/", "provision", "ep"]);
    assert_usage_error(&out, "amqp://");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("sekret"), "never print the password");
    let out = tasklane(&["--amqp", "amqp://127.0.0.1:99999/%2f", "submit", "ep", "--count", "1"]);
    assert_usage_error(&out, "port");
}

#[test]
fn a_bad_url_from_the_environment_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["results", "--count", "1"])
        .env("TASKLANE_AMQP_URL", "nonsense")
        .output()
        .unwrap();
    assert_usage_error(&out, "--amqp");
}

#[test]
fn a_bad_endpoint_id_is_a_usage_error() {
    for bad in ["a.b", "with space", "", &"x".repeat(65)] {
        let out = tasklane(&["provision", bad]);
        assert_usage_error(&out, "endpoint id");
    }
    let out = tasklane(&["submit", "e*", "--count", "1"]);
    assert_usage_error(&out, "'*'");
}

#[test]
fn an_unreadable_file_is_a_usage_error() {
    let out = tasklane(&["submit", "ep", "--file", "/nonexistent/tasks.txt"]);
    assert_usage_error(&out, "/nonexistent/tasks.txt");
}

#[test]
fn missing_or_conflicting_arguments_are_usage_errors() {
    assert_usage_error(&tasklane(&["submit", "ep"]), "--count");
    assert_usage_error(&tasklane(&["submit", "ep", "--count", "1", "--file", "f"]), "cannot be used with");
    assert_usage_error(&tasklane(&["provision", "ep", "--queue-type", "stream"]), "stream");
    assert_usage_error(&tasklane(&["nonsense"]), "nonsense");
}

#[test]
fn help_lists_the_exit_codes() {
    let out = tasklane(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for line in ["0  success", "1  runtime failure", "2  usage error", "3  timeout"] {
        assert!(help.contains(line), "{help}");
    }
}

#[test]
fn a_broker_list_is_judged_as_a_whole_one_line_per_bad_url() {
    let list = "amqp://127.0.0.1:5673/%2f,http://u:sekret@h/,amqp://127.0.0.1:5675/%2f,amqp://h:0";
    for cmd in [&["provision", "ep"][..], &["submit", "ep", "--count", "1"], &["results", "--count", "1"]] {
        let out = tasklane(&[&["--amqp", list][..], cmd].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert_eq!(
            stderr.lines().collect::<Vec<_>>(),
            [
                "tasklane: --amqp: URL 2 of 4: AMQP URL must start with amqp:// or amqps://",
                "tasklane: --amqp: URL 4 of 4: AMQP URL port \"0\" is not a number in 1..=65535",
            ],
            "{cmd:?}"
        );
        assert!(!stderr.contains("sekret"));
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = tasklane(&["--amqp", list, "endpoint", "ep", "--spool", spool.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(stderr.lines().all(|l| l.starts_with("tasklane: amqp_url: URL ")), "{stderr}");
}

#[test]
fn a_bad_failover_order_or_delivery_limit_is_a_usage_error() {
    assert_usage_error(&tasklane(&["--failover", "round-robin", "provision", "ep"]), "round-robin");
    assert_usage_error(&tasklane(&["provision", "ep", "--delivery-limit", "-1"]), "-1");
}

#[test]
fn zero_workers_is_a_usage_error_from_the_flag_and_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let spool = spool.to_str().unwrap();
    assert_usage_error(&tasklane(&["endpoint", "ep", "--spool", spool, "--workers", "0"]), "--workers");
    let file = dir.path().join("ep.toml");
    std::fs::write(&file, "workers = 0\n").unwrap();
    let out = tasklane(&["endpoint", "ep", "--spool", spool, "--config", file.to_str().unwrap()]);
    assert_usage_error(&out, "workers: must be from 1 to 4096, not 0");
    assert!(!dir.path().join("spool").exists(), "nothing starts");
}
