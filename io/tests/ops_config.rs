//! `tasklane endpoint --config FILE`: a TOML file with `TASKLANE_*`
//! overrides, checked as a whole before anything starts, one line per
//! problem; and what it says reaches the running endpoint (and `tasklane
//! status --config FILE` finds it).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tasklane_io::metrics;
use tasklane_tests::{Tasklane, Vhost};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `tasklane <args>` with none of the caller's `TASKLANE_*` variables.
fn tasklane(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasklane"));
    c.args(args).stdin(Stdio::null());
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("TASKLANE_")) {
        c.env_remove(var);
    }
    c
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn every_problem_of_file_and_environment_is_one_line_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ep.toml");
    let spool = dir.path().join("spool");
    std::fs::write(
        &file,
        "endpoint = \"no spaces allowed\"\nheartbeat_secs = 0\nblocked_timeout = 30\nprefetch = \"ten\"\n",
    )
    .unwrap();
    let out = tasklane(&["endpoint", "--config", file.to_str().unwrap(), "--spool", spool.to_str().unwrap()])
        .env("TASKLANE_BLOCKED_TIMEOUT_SECS", "0")
        .env("TASKLANE_METRICS", "everywhere")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let f = file.display();
    let want = [
        format!("tasklane: {f}: blocked_timeout: unknown setting (known: amqp_url, "),
        format!("tasklane: {f}: heartbeat_secs: must be from 1 to 65535, not 0"),
        format!("tasklane: {f}: prefetch: must be an integer, not a string"),
        "tasklane: TASKLANE_BLOCKED_TIMEOUT_SECS: must be from 1 to 86400, not 0".to_string(),
        "tasklane: TASKLANE_METRICS: \"everywhere\" is not an address like 127.0.0.1:9464".to_string(),
        "tasklane: endpoint: \"no spaces allowed\" is not an endpoint id".to_string(),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), want.len(), "one line per problem:\n{stderr}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "{line:?} should start with {want:?}");
    }
    assert!(!spool.exists(), "nothing may start on a bad configuration");

    let out = tasklane(&["endpoint", "--config", dir.path().join("missing.toml").to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].contains("missing.toml: cannot read: "), "{stderr}");
    assert_eq!(lines[1], "tasklane: endpoint: missing (set it in the file or as TASKLANE_ENDPOINT)");
    assert_eq!(lines[2], "tasklane: spool_dir: missing (set it in the file or as TASKLANE_SPOOL_DIR)");

    // A taken metrics port stops the start before the endpoint opens.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tasklane(&["endpoint", "ep", "--spool", spool.to_str().unwrap(), "--metrics", &addr]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("tasklane: metrics address {addr}: cannot listen: ")), "{stderr}");
    assert!(!spool.exists(), "the endpoint must not have opened");

    let out = tasklane(&["status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "tasklane: the endpoint id is missing (argument, --config or TASKLANE_ENDPOINT)",
            "tasklane: the spool directory is missing (--spool, --config or TASKLANE_SPOOL_DIR)",
        ]
    );
}

#[test]
fn file_environment_and_flags_reach_the_running_endpoint_in_that_order() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    cli.run_ok(&["provision", "cfg-ep"]);
    cli.run_ok(&["submit", "cfg-ep", "--count", "3"]);
    let spool = dir.path().join("spool");
    let metrics_addr = free_port();
    let file = dir.path().join("ep.toml");
    std::fs::write(
        &file,
        format!(
            "amqp_url = \"{}\"\nendpoint = \"cfg-ep\"\nspool_dir = \"{}\"\nmetrics = \"{metrics_addr}\"\n\
             heartbeat_secs = 7\nblocked_timeout_secs = 45\nprefetch = 3\n",
            vhost.url(),
            spool.display()
        ),
    )
    .unwrap();
    // Heartbeat: the variable beats the file. Blocked timeout: the flag
    // beats the variable, which beats the file. Prefetch: the file's stands.
    let mut child = tasklane(&["endpoint", "--config", file.to_str().unwrap(), "--blocked-timeout", "50"])
        .env("TASKLANE_HEARTBEAT_SECS", "5")
        .env("TASKLANE_BLOCKED_TIMEOUT_SECS", "40")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (results, complete) = cli.results(3, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        match metrics::read_status(&spool) {
            Ok(Some(r)) if r.counter("confirmed") == 3 && r.connection.is_some() => break r,
            _ if Instant::now() > deadline => panic!("the endpoint never reported 3 confirmed results"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    // `tasklane status` finds the endpoint and its spool through the same file.
    let status_out = tasklane(&["status", "--config", file.to_str().unwrap()]).output().unwrap();
    let status_text = String::from_utf8_lossy(&status_out.stdout).into_owned();
    let mut metrics_text = String::new();
    TcpStream::connect(metrics_addr)
        .and_then(|mut s| {
            use std::io::Write;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            s.read_to_string(&mut metrics_text)
        })
        .unwrap();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();

    assert!(complete, "{} of 3 results; stderr:\n{stderr}", results.len());
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(report.connection.unwrap().heartbeat, 5, "TASKLANE_HEARTBEAT_SECS over heartbeat_secs");
    assert_eq!(status_out.status.code(), Some(0), "{status_text}{}", String::from_utf8_lossy(&status_out.stderr));
    assert!(status_text.starts_with("endpoint cfg-ep: consuming (pid "), "{status_text}");
    assert!(status_text.contains("heartbeat 5 s)"), "{status_text}");
    assert!(metrics_text.contains("tasklane_confirmed_total{endpoint=\"cfg-ep\"} 3"), "{metrics_text}");
    let stderr = without_colours(&stderr);
    let start = stderr.lines().find(|l| l.contains("starting endpoint")).unwrap_or_else(|| panic!("{stderr}"));
    for want in ["endpoint=cfg-ep", "heartbeat_secs=5", "blocked_timeout_secs=50", "prefetch=3"] {
        assert!(start.contains(want), "{want} in {start:?}");
    }
}
