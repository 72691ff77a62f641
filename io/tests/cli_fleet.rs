//! `tasklane fleet` and `tasklane tasks` through the binary: a fleet of
//! three endpoints (one killed) as the command shows it, and task tracking
//! filtered and kept under its retention bound.

mod fleet_support;

use std::time::Duration;

use fleet_support::ReportingEndpoint;
use tasklane_io::fleet::EndpointState;
use tasklane_tests::{Tasklane, Vhost};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

#[test]
fn the_fleet_shows_every_endpoint_and_a_killed_one_turns_stale() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    cli.run_ok(&["provision", "ep-a"]);
    let out = cli.run_ok(&["fleet"]);
    assert_eq!(out, "no endpoint has reported yet\n");

    let _a = ReportingEndpoint::start(&vhost.url(), "ep-a", EndpointState::Consuming, 1, 3);
    let _b = ReportingEndpoint::start(&vhost.url(), "ep-b", EndpointState::Standby, 1, 0);
    let mut c = ReportingEndpoint::start(&vhost.url(), "ep-c", EndpointState::Consuming, 1, 7);
    let out = cli.run_ok(&["fleet"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("endpoint  state      node            inbox  outbox  completed  last seen"), "{out}");
    for (line, (id, state, inbox)) in
        lines[1..].iter().zip([("ep-a", "consuming", 3), ("ep-b", "standby", 0), ("ep-c", "consuming", 7)])
    {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[..5], [id, state, "127.0.0.1:5672", &inbox.to_string(), "0"], "{out}");
        assert!(line.ends_with(" s ago"), "{out}");
    }

    c.kill();
    std::thread::sleep(Duration::from_millis(3_300));
    let members = json_lines(&cli.run_ok(&["fleet", "--json"]));
    let states: Vec<(&str, &str, bool)> = members
        .iter()
        .map(|m| (m["endpoint"].as_str().unwrap(), m["state"].as_str().unwrap(), m["stale"].as_bool().unwrap()))
        .collect();
    assert_eq!(states, [("ep-a", "consuming", false), ("ep-b", "standby", false), ("ep-c", "stale", true)]);
    assert_eq!(members[2]["report"]["state"], "consuming", "what it said last");
    assert!(members[2]["seen_ago_ms"].as_u64().unwrap() > 3_000);
    assert!(members[0]["report"]["counters"]["completed"].as_u64().unwrap() >= 30, "{}", members[0]);
    let text = cli.run_ok(&["fleet"]);
    assert!(text.lines().any(|l| l.starts_with("ep-c      stale") && l.ends_with("(last said consuming)")), "{text}");
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

/// A real endpoint (amqprs, LMDB) on a runtime of its own, reporting every
/// second; dropping the runtime kills it without a last word, as SIGKILL
/// would.
struct RealEndpoint {
    rt: Option<tokio::runtime::Runtime>,
    _endpoint: tasklane_io::endpoint::Endpoint,
}

impl RealEndpoint {
    fn start(url: &str, id: &str, spool: &std::path::Path) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let cfg = tasklane_io::endpoint::EndpointConfig::new(url, id, spool)
            .unwrap()
            .heartbeat(5)
            .report_interval(Duration::from_secs(1));
        let endpoint = rt.block_on(tasklane_io::endpoint::Endpoint::open(cfg)).unwrap();
        Self { rt: Some(rt), _endpoint: endpoint }
    }

    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
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
