//! The dashboard in a real browser: a small fleet reports to the local
//! broker, `tasklane dashboard` serves the page, headless Chromium loads
//! it, and the page lists every endpoint with its state; a killed endpoint
//! turns stale. A screenshot is saved as `target/fleet-dashboard.png`.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it when missing).

mod fleet_support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_support::{publish_raw, ReportingEndpoint};
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

/// The `<tr>` of `endpoint` in the page's fleet table, as the browser built it.
fn row<'a>(dom: &'a str, endpoint: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<tr id=\"endpoint-{endpoint}\""))?;
    let len = dom[start..].find("</tr>")?;
    Some(&dom[start..start + len])
}

/// Whether every `(endpoint, state)` shows in `dom` with its coloured badge.
fn shows(dom: &str, expected: &[(&str, &str)]) -> bool {
    expected.iter().all(|(e, state)| {
        row(dom, e).is_some_and(|r| {
            r.contains(&format!("data-state=\"{state}\""))
                && r.contains(&format!("class=\"state state-{state}\">{state}<"))
        })
    })
}

/// Loads the page until it shows `expected`, for at most `within`.
fn wait_for(url: &str, expected: &[(&str, &str)], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let dom = browse(url, &["--dump-dom"]);
        if shows(&dom, expected) {
            return dom;
        }
        assert!(Instant::now() < deadline, "the page never showed {expected:?}:\n{dom}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_dashboard_lists_the_fleet_and_a_killed_endpoint_turns_stale() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    cli.run_ok(&["provision", "ep-a"]);
    cli.run_ok(&["submit", "ep-a", "--count", "5"]);

    let url = vhost.url();
    let _a = ReportingEndpoint::start(&url, "ep-a", EndpointState::Consuming, 1, 12);
    let _b = ReportingEndpoint::start(&url, "ep-b", EndpointState::Standby, 1, 0);
    let mut c = ReportingEndpoint::start(&url, "ep-c", EndpointState::Consuming, 1, 40);
    let _d = ReportingEndpoint::start(&url, "ep-d", EndpointState::Disconnected, 1, 5);

    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut dashboard = cli
        .command(&["dashboard", "--listen", &addr.to_string(), "--refresh", "1", "--window", "1m"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tasklane dashboard");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the dashboard never listened on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let page = format!("http://{addr}/");
    // A report sent under ep-b's key in ep-a's name: dead-lettered.
    let spoof = StatusReport::new(&EndpointId::new("ep-a").unwrap(), EndpointState::Closed).encode();
    tokio::runtime::Runtime::new().unwrap().block_on(publish_raw(&url, "ep-b.status", &spoof));

    let all = [("ep-a", "consuming"), ("ep-b", "standby"), ("ep-c", "consuming"), ("ep-d", "disconnected")];
    let dom = wait_for(&page, &all, Duration::from_secs(20));
    assert!(dom.contains("<title>tasklane fleet</title>"));
    assert!(dom.contains("http-equiv=\"refresh\" content=\"1\""), "the page reloads itself");
    assert!(row(&dom, "ep-d").unwrap().contains("connection refused"), "the reason shows");
    assert!(dom.contains("id=\"throughput\"") && dom.contains("id=\"spool-depths\""));
    assert!(dom.contains("40 in / 0 out"), "ep-c's spool depth");
    let tasks = &dom[dom.find("<table id=\"tasks\"").expect("tasks by state")..];
    assert!(tasks.contains("<td class=\"num\">5</td>"), "5 submitted:\n{tasks}");
    let dead = &dom[dom.find("<table id=\"dead\"").expect("recent dead letters")..];
    assert!(dead.contains("ep-b.status") && dead.contains("not-owner"), "{dead}");

    c.kill();
    let after = [("ep-a", "consuming"), ("ep-b", "standby"), ("ep-c", "stale"), ("ep-d", "disconnected")];
    let dom = wait_for(&page, &after, Duration::from_secs(15));
    assert!(row(&dom, "ep-c").unwrap().contains("last said consuming"));

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fleet-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(&page, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1000"]);
    let png = std::fs::read(&shot).expect("chromium saved the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");

    let _ = dashboard.kill();
    let _ = dashboard.wait();
}
