//! The dashboard in a real browser: a fleet of real `tasklane endpoint`
//! processes reports to the local broker (one holding tasks, one id
//! running twice as active and standby, one killed with SIGKILL),
//! `tasklane dashboard` serves the page, headless Chromium loads it, and
//! the page shows what an operator relies on: every endpoint process with
//! its state, spool depths, throughput once the held tasks complete, tasks
//! by state, a spoofed report dead-lettered, and the killed endpoint
//! turning stale 3 report intervals after its last report. A screenshot
//! is saved as `target/fleet-dashboard.png`.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it when missing).

mod fleet_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_support::{publish_raw, OperatorFleet, HELD};
use tasklane_core::EndpointId;
use tasklane_io::fleet::{EndpointState, StatusReport};
use tasklane_tests::{Tasklane, Vhost};

fn chromium() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("no chromium on PATH: `apt-get install -y chromium` (.ci/run installs it)");
}

/// Runs headless Chromium on `url` with `extra` arguments (a fresh profile
/// each time) and returns its stdout.
fn browse(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of attribute `name` in the tag `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The rows of the page's fleet table as the browser built them:
/// (endpoint, state, the row's HTML).
fn rows(dom: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(start) = rest.find("<tr id=\"endpoint-") {
        rest = &rest[start..];
        let end = rest.find("</tr>").map_or(rest.len(), |e| e + 5);
        let row = &rest[..end];
        let tag = &row[..row.find('>').unwrap_or(row.len())];
        if let (Some(e), Some(s)) = (attr(tag, "data-endpoint"), attr(tag, "data-state")) {
            out.push((e.to_string(), s.to_string(), row.to_string()));
        }
        rest = &rest[end..];
    }
    out
}

/// The row of process `pid` of `endpoint`.
fn row_of(dom: &str, endpoint: &str, pid: u32) -> String {
    rows(dom)
        .into_iter()
        .find(|(e, _, r)| e == endpoint && r.contains(&format!("(pid {pid})")))
        .unwrap_or_else(|| panic!("no row of {endpoint} pid {pid}:\n{dom}"))
        .2
}

/// The numbers of a row's `td.num` cells: inbox, outbox, completed, rejected.
fn numbers(row: &str) -> Vec<u64> {
    row.split("<td class=\"num\">").skip(1).map(|c| c[..c.find('<').unwrap()].parse().unwrap()).collect()
}

/// Whether the fleet table lists exactly `expected` (endpoint, state), in
/// that order, each state with its coloured badge.
fn shows(dom: &str, expected: &[(&str, &str)]) -> bool {
    let rows = rows(dom);
    rows.len() == expected.len()
        && rows.iter().zip(expected).all(|((e, s, row), (want_e, want_s))| {
            e == want_e && s == want_s && row.contains(&format!("class=\"state state-{s}\">{s}<"))
        })
}

/// Loads the page until `done(dom)`, for at most `within`.
fn wait_until(url: &str, what: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let dom = browse(url, &["--dump-dom"]);
        if done(&dom) {
            return dom;
        }
        assert!(Instant::now() < deadline, "the page never showed {what}:\n{dom}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Loads the page until it lists `expected`, for at most `within`.
fn wait_for(url: &str, expected: &[(&str, &str)], within: Duration) -> String {
    wait_until(url, &format!("{expected:?}"), within, |dom| shows(dom, expected))
}

/// The results per second the throughput bars show.
fn throughput(dom: &str) -> Vec<f64> {
    let svg = &dom[dom.find("<svg id=\"throughput\"").expect("the throughput chart")..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    svg.split("<title>").skip(1).map(|t| t[..t.find(" results/s").unwrap()].trim().parse().unwrap()).collect()
}

/// The body of `GET path` from the dashboard at `page` (HTTP/1.1, 200).
fn get(page: &str, path: &str) -> String {
    let addr = page.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    body.to_string()
}

/// `tasklane dashboard` on a free port, reloading every second, and its URL.
fn spawn_dashboard(cli: &Tasklane) -> (Child, String) {
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let args = ["dashboard", "--listen", &addr.to_string(), "--refresh", "1", "--window", "1m"];
    let dashboard = cli.command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn dashboard");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the dashboard never listened on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (dashboard, format!("http://{addr}/"))
}

#[test]
fn the_dashboard_shows_a_real_fleet_and_a_killed_endpoint_turns_stale() {
    let started = Instant::now();
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    let mut fleet = OperatorFleet::start(&cli, dir.path());
    let (busy, active, standby, gone) = (fleet.busy.pid(), fleet.active.pid(), fleet.standby.pid(), fleet.gone.pid());
    let (mut dashboard, page) = spawn_dashboard(&cli);
    // A report sent under ep-dup's key in ep-busy's name: dead-lettered.
    let spoof = StatusReport::new(&EndpointId::new("ep-busy").unwrap(), EndpointState::Closed).encode();
    tokio::runtime::Runtime::new().unwrap().block_on(publish_raw(&vhost.url(), "ep-dup.status", &spoof));

    let all = [("ep-busy", "consuming"), ("ep-dup", "consuming"), ("ep-dup", "standby"), ("ep-gone", "consuming")];
    let held = |dom: &str| rows(dom).iter().any(|(e, _, r)| e == "ep-busy" && numbers(r)[0] == HELD);
    let dom = wait_until(&page, &format!("{all:?}, {HELD} held"), Duration::from_secs(20), |dom| {
        shows(dom, &all) && held(dom)
    });
    assert!(dom.contains("<title>tasklane fleet</title>"));
    assert!(dom.contains("http-equiv=\"refresh\" content=\"1\""), "the page reloads itself");
    assert!(dom.contains("3 endpoints (4 processes)"), "{dom}");
    assert!(dom.contains("draining tasklane.status on 127.0.0.1:5672"), "{dom}");
    assert_eq!(numbers(&row_of(&dom, "ep-busy", busy)), [HELD, 0, 0, 0], "ep-busy holds its tasks");
    assert!(row_of(&dom, "ep-dup", active).contains("data-state=\"consuming\""));
    assert!(row_of(&dom, "ep-dup", standby).contains("data-state=\"standby\""));
    assert!(row_of(&dom, "ep-gone", gone).contains("<td>127.0.0.1:5672</td>"));
    let depths = &dom[dom.find("<svg id=\"spool-depths\"").expect("spool depths")..];
    assert!(depths.contains(&format!("{HELD} in / 0 out")), "ep-busy's spool depth");
    assert!(depths.contains(&format!("ep-dup (pid {standby})")), "each ep-dup process has its bar");
    let tasks = &dom[dom.find("<table id=\"tasks\"").expect("tasks by state")..];
    assert!(tasks.contains(&format!("<tbody><tr><td class=\"num\">{HELD}</td>")), "{HELD} submitted:\n{tasks}");
    let dead = &dom[dom.find("<table id=\"dead\"").expect("recent dead letters")..];
    assert!(dead.contains("ep-dup.status") && dead.contains("not-owner"), "{dead}");
    assert!(throughput(&dom).iter().all(|v| *v == 0.0), "nothing completed yet");
    // /fleet.json: the fleet as `tasklane fleet --json` has it.
    let json: Vec<serde_json::Value> = serde_json::from_str(&get(&page, "/fleet.json")).unwrap();
    let listed: Vec<(&str, &str, u64)> = json
        .iter()
        .map(|m| (m["endpoint"].as_str().unwrap(), m["state"].as_str().unwrap(), m["report"]["pid"].as_u64().unwrap()))
        .collect();
    let pids = [busy, active, standby, gone].map(u64::from);
    let want: Vec<(&str, &str, u64)> = all.iter().zip(pids).map(|((e, s), p)| (*e, *s, p)).collect();
    assert_eq!(listed, want);

    // The held tasks complete: ep-busy's inbox empties, the chart shows it.
    fleet.release();
    let dom = wait_until(&page, "ep-busy's tasks completed", Duration::from_secs(20), |dom| {
        rows(dom).iter().any(|(e, _, r)| e == "ep-busy" && numbers(r)[..3] == [0, 0, HELD])
            && throughput(dom).iter().any(|v| *v > 0.0)
    });
    assert!(shows(&dom, &all));
    // Three more are held, for the screenshot.
    fleet.hold();
    cli.run_ok(&["submit", "ep-busy", "--count", "3", "--size", "16"]);

    let killed = fleet.kill_gone();
    let after = [("ep-busy", "consuming"), ("ep-dup", "consuming"), ("ep-dup", "standby"), ("ep-gone", "stale")];
    let dom = wait_for(&page, &after, Duration::from_secs(15));
    let took = killed.elapsed();
    eprintln!("ep-gone shown stale {took:?} after its SIGKILL");
    assert!(took >= Duration::from_millis(1_500), "stale after {took:?}: 3 intervals after its last report (at most 1 before the kill, give or take a late timer), not sooner");
    assert!(row_of(&dom, "ep-gone", gone).contains("silent; last said consuming"));
    let dom = wait_until(&page, "3 tasks held again", Duration::from_secs(15), |dom| {
        rows(dom).iter().any(|(e, _, r)| e == "ep-busy" && numbers(r)[..3] == [3, 0, HELD])
    });
    assert!(shows(&dom, &after));

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fleet-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(&page, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1100"]);
    let png = std::fs::read(&shot).expect("chromium saved the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");

    let _ = dashboard.kill();
    let _ = dashboard.wait();
    fleet.stop();
    eprintln!("dashboard test took {:?}", started.elapsed());
}
