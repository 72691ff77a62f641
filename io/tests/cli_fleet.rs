//! `tasklane fleet` and `tasklane tasks` through the binary: a fleet of
//! real endpoints (`tasklane endpoint` processes: one holding tasks, one
//! running twice as active and standby, one killed) and of library
//! endpoints as the command shows it, and task tracking filtered and kept
//! under its retention bound.

mod fleet_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_support::{OperatorFleet, RealEndpoint, HELD, INTERVAL_SECS};
use tasklane_tests::{Tasklane, Vhost};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

/// `tasklane fleet --json`: (endpoint, state, pid, whole line) per row.
fn fleet_rows(cli: &Tasklane) -> Vec<Row> {
    json_lines(&cli.run_ok(&["fleet", "--json"]))
        .into_iter()
        .map(|m| {
            let (e, s) = (m["endpoint"].as_str().unwrap().to_string(), m["state"].as_str().unwrap().to_string());
            (e, s, m["report"]["pid"].as_u64().unwrap(), m)
        })
        .collect()
}

type Row = (String, String, u64, serde_json::Value);

/// Polls `tasklane fleet --json` until its (endpoint, state, pid) rows are
/// `expected` and `also(rows)`, for at most `within`; returns the rows.
fn wait_rows(
    cli: &Tasklane,
    expected: &[(&str, &str, u64)],
    within: Duration,
    also: impl Fn(&[Row]) -> bool,
) -> Vec<Row> {
    let deadline = Instant::now() + within;
    loop {
        let rows = fleet_rows(cli);
        let seen: Vec<(&str, &str, u64)> = rows.iter().map(|(e, s, p, _)| (e.as_str(), s.as_str(), *p)).collect();
        if seen == expected && also(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "the fleet never showed {expected:?}; last {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_fleet_shows_every_endpoint_and_a_killed_one_turns_stale() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    cli.run_ok(&["provision", "ep-busy"]);
    assert_eq!(cli.run_ok(&["fleet"]), "no endpoint has reported yet\n");

    let mut fleet = OperatorFleet::start(&cli, dir.path());
    let pid = |p: &tasklane_tests::Running| u64::from(p.pid());
    let (busy, active, standby, gone) = (pid(&fleet.busy), pid(&fleet.active), pid(&fleet.standby), pid(&fleet.gone));
    let all = [
        ("ep-busy", "consuming", busy),
        ("ep-dup", "consuming", active),
        ("ep-dup", "standby", standby),
        ("ep-gone", "consuming", gone),
    ];
    let held = |rows: &[Row]| rows[0].3["report"]["spool"]["inbox"] == HELD;
    let rows = wait_rows(&cli, &all, Duration::from_secs(20), held);
    let inbox: Vec<u64> = rows.iter().map(|(_, _, _, m)| m["report"]["spool"]["inbox"].as_u64().unwrap()).collect();
    assert_eq!(inbox, [HELD, 0, 0, 0], "ep-busy holds its tasks");
    for (_, _, _, m) in &rows {
        assert_eq!(m["report"]["node"], "127.0.0.1:5672", "{m}");
        assert_eq!(m["report"]["interval_secs"], INTERVAL_SECS, "{m}");
        assert_eq!(m["stale"], false, "{m}");
    }
    assert_eq!(rows[0].3["report"]["counters"]["received"], HELD, "{}", rows[0].3);
    let text = cli.run_ok(&["fleet"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("endpoint  state      node            pid "), "{text}");
    assert!(lines[0].ends_with("  inbox  outbox  completed  last seen"), "{text}");
    for (line, (id, state, pid)) in lines[1..].iter().zip(all) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let inbox = if id == "ep-busy" { HELD } else { 0 };
        assert_eq!(&cells[..6], [id, state, "127.0.0.1:5672", &pid.to_string(), &inbox.to_string(), "0"], "{text}");
        assert!(line.ends_with(" s ago"), "{text}");
    }

    // --watch drains and prints again every --every seconds until SIGTERM,
    // a blank line between two prints, no screen-clearing off a terminal.
    let mut watch = cli
        .command(&["fleet", "--watch", "--every", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let header = |l: &String| l.starts_with("endpoint  state");
    let mut printed: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while printed.iter().filter(|l| header(l)).count() < 2 {
        let wait = deadline.saturating_duration_since(Instant::now());
        printed.push(rx.recv_timeout(wait).unwrap_or_else(|_| panic!("--watch printed once only: {printed:?}")));
    }
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &watch.id().to_string()]).status().unwrap();
    assert_eq!(watch.wait().unwrap().code(), Some(0), "SIGTERM ends --watch cleanly");
    assert!(started.elapsed() < Duration::from_secs(5), "and promptly");
    assert!(printed.iter().all(|l| !l.contains('\x1b')), "{printed:?}");
    let first = &printed[..printed.len() - 1];
    assert!(header(&first[0]) && first[1..].iter().filter(|l| !l.is_empty()).count() == 4, "{printed:?}");
    assert_eq!(first.last().map(String::as_str), Some(""), "{printed:?}");

    // SIGKILL: ep-gone says nothing more; 3 of its 1-second intervals
    // after its last report it is stale, and not before.
    let killed = fleet.kill_gone();
    let rows = fleet_rows(&cli);
    if killed.elapsed() < Duration::from_millis(1_900) {
        assert_eq!((rows[3].1.as_str(), &rows[3].3["stale"]), ("consuming", &false.into()), "too early for stale");
    }
    let stale = [all[0], all[1], all[2], ("ep-gone", "stale", gone)];
    let rows = wait_rows(&cli, &stale, Duration::from_secs(15), held);
    let took = killed.elapsed();
    eprintln!("ep-gone shown stale {took:?} after its SIGKILL");
    assert!(took >= Duration::from_millis(1_500), "stale after {took:?}: 3 intervals after the last report (at most 1 before the kill, give or take a late timer), not sooner");
    let m = &rows[3].3;
    assert_eq!((&m["stale"], &m["report"]["state"]), (&true.into(), &"consuming".into()), "what it said last: {m}");
    assert!(m["seen_ago_ms"].as_u64().unwrap() > 3 * 1000 * INTERVAL_SECS, "{m}");
    let text = cli.run_ok(&["fleet"]);
    assert!(text.lines().any(|l| l.starts_with("ep-gone   stale") && l.ends_with("(last said consuming)")), "{text}");

    // The active ep-dup dies too: its standby takes over, and the fleet
    // shows the process that consumes now, not the dead one.
    fleet.active.kill();
    let taken_over = [all[0], ("ep-dup", "consuming", standby), ("ep-gone", "stale", gone)];
    wait_rows(&cli, &taken_over, Duration::from_secs(30), held);

    // ep-gone was retired: `fleet forget` removes it (no broker needed),
    // and forgetting it again is a one-line runtime error.
    assert_eq!(cli.run_ok(&["fleet", "forget", "ep-gone"]), "forgot endpoint ep-gone (1 process record)\n");
    wait_rows(&cli, &taken_over[..2], Duration::from_secs(5), held);
    let again = cli.run(&["fleet", "forget", "ep-gone"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!((again.status.code(), stderr.lines().count()), (Some(1), 1), "{stderr}");
    assert!(stderr.contains("endpoint ep-gone is not in the fleet"), "{stderr}");
    fleet.stop();
}

#[test]
fn a_missing_status_queue_is_a_runtime_error_with_a_hint() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Tasklane::new(vhost.url(), dir.path().join("service")).run(&["fleet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("tasklane provision"), "{stderr}");
}

#[test]
fn tasks_are_filtered_and_kept_under_the_retention_bound() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    let bound = ["--retain-tasks", "20"];
    cli.run_ok(&["provision", "ep-t"]);
    cli.run_ok(&[&bound[..], &["submit", "ep-t", "--count", "30", "--size", "8"]].concat());
    let tasks = json_lines(&cli.run_ok(&[&bound[..], &["tasks", "--json"]].concat()));
    assert_eq!(tasks.len(), 20, "the store kept its bound while it was written");
    assert!(tasks.iter().all(|t| t["state"] == "submitted" && t["endpoint"] == "ep-t"));
    let submitted: Vec<u64> = tasks.iter().map(|t| t["submitted_ms"].as_u64().unwrap()).collect();
    assert!(submitted.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // The endpoint answers all 30; the service accepts the 20 it still tracks.
    let mut endpoint = cli.endpoint("ep-t", &dir.path().join("spool"), &[]);
    let out = cli.run(&[&bound[..], &["results", "--count", "20", "--timeout", "60", "--json"]].concat());
    assert_eq!(out.status.code(), Some(0), "endpoint stderr:\n{}", endpoint.stderr());
    endpoint.terminate(Duration::from_secs(20));

    let lines = |args: &[&str]| cli.run_ok(&[&bound[..], &["tasks"], args].concat()).lines().count();
    assert_eq!(lines(&["--state", "done"]), 20);
    assert_eq!(lines(&["--state", "submitted"]), 0);
    assert_eq!(lines(&["--state", "dead"]), 0);
    assert_eq!(lines(&["--endpoint", "ep-other"]), 0);
    assert_eq!(lines(&["--older-than", "1h"]), 0);
    assert_eq!(lines(&["--older-than", "1ms", "--endpoint", "ep-t", "--state", "done"]), 20);
    let text = cli.run_ok(&[&bound[..], &["tasks", "--endpoint", "ep-t"]].concat());
    let first: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
    assert_eq!((first.len(), first[1], first[2]), (5, "ep-t", "ok"), "{text}");

    let out = cli.run_ok(&["--retain-tasks", "5", "tasks", "prune"]);
    assert!(out.starts_with("pruned 15 tasks; 5 tracked (at most 5 tasks, none older than 7days)"), "{out}");
    assert_eq!(cli.run_ok(&["tasks"]).lines().count(), 5);

    let bad = cli.run(&["tasks", "--state", "lost"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = cli.run(&["tasks", "--older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a duration"));
}

#[test]
fn real_endpoints_report_and_a_killed_one_turns_stale() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    for id in ["ep-a", "ep-b", "ep-c"] {
        cli.run_ok(&["provision", id]);
    }
    let _a = RealEndpoint::start(&vhost.url(), "ep-a", &dir.path().join("a"));
    let _b = RealEndpoint::start(&vhost.url(), "ep-b", &dir.path().join("b"));
    let mut c = RealEndpoint::start(&vhost.url(), "ep-c", &dir.path().join("c"));
    let states = |cli: &Tasklane| -> Vec<(String, String, bool, u64)> {
        json_lines(&cli.run_ok(&["fleet", "--json"]))
            .iter()
            .map(|m| {
                (
                    m["endpoint"].as_str().unwrap().to_string(),
                    m["state"].as_str().unwrap().to_string(),
                    m["stale"].as_bool().unwrap(),
                    m["report"]["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = states(&cli);
        if seen.len() == 3 && seen.iter().all(|(_, s, _, seq)| s == "consuming" && *seq >= 3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ids: Vec<(&str, &str, bool)> = seen.iter().map(|(e, s, st, _)| (e.as_str(), s.as_str(), *st)).collect();
    assert_eq!(ids, [("ep-a", "consuming", false), ("ep-b", "consuming", false), ("ep-c", "consuming", false)]);
    assert!(seen.iter().all(|(_, _, _, seq)| *seq >= 3), "reports come every second: {seen:?}");
    let text = cli.run_ok(&["fleet"]);
    assert!(text.lines().skip(1).all(|l| l.split_whitespace().nth(2) == Some("127.0.0.1:5672")), "{text}");

    c.kill();
    std::thread::sleep(Duration::from_millis(3_500));
    let after = states(&cli);
    let ids: Vec<(&str, &str, bool)> = after.iter().map(|(e, s, st, _)| (e.as_str(), s.as_str(), *st)).collect();
    assert_eq!(ids, [("ep-a", "consuming", false), ("ep-b", "consuming", false), ("ep-c", "stale", true)]);
    let text = cli.run_ok(&["fleet"]);
    assert!(text.lines().any(|l| l.starts_with("ep-c      stale") && l.ends_with("(last said consuming)")), "{text}");
}
