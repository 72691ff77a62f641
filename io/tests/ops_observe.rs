//! Observability end to end: `tasklane endpoint --metrics ADDR` serves
//! Prometheus text with the counters, spool depths, status and connection;
//! `tasklane status E --spool DIR` reads the status file the endpoint
//! keeps, and says when the endpoint no longer runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklane_io::endpoint::{Endpoint, EndpointConfig};
use tasklane_io::metrics::{self, StatusReport};
use tasklane_tests::{Tasklane, Vhost};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `GET path` on `addr`: status line and body.
fn http_get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The value of the sample `series` in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

#[test]
fn metrics_and_status_show_a_running_endpoint_and_then_that_it_stopped() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    let spool = dir.path().join("spool");
    let spool_arg = spool.to_str().unwrap();
    cli.run_ok(&["provision", "obs-ep"]);
    cli.run_ok(&["submit", "obs-ep", "--count", "5"]);
    let addr = free_port();
    let mut running = cli.endpoint("obs-ep", &spool, &["--metrics", &addr.to_string()]);
    let (results, complete) = cli.results(5, Duration::from_secs(60));
    assert!(complete, "{} results; endpoint stderr:\n{}", results.len(), running.stderr());

    // The endpoint counts a result confirmed a moment after the service has it.
    let ep = "{endpoint=\"obs-ep\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        if let Some((status, body)) = http_get(addr, "/metrics") {
            assert_eq!(status, "HTTP/1.1 200 OK");
            if sample(&body, &format!("tasklane_confirmed_total{ep}")) == Some(5.0) {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "metrics never showed 5 confirmed; stderr:\n{}", running.stderr());
        std::thread::sleep(Duration::from_millis(100));
    };
    for (counter, want) in [("received", 5.0), ("acked", 5.0), ("completed", 5.0), ("rejected", 0.0)] {
        assert_eq!(sample(&text, &format!("tasklane_{counter}_total{ep}")), Some(want), "{counter}\n{text}");
    }
    assert_eq!(sample(&text, &format!("tasklane_spool_inbox{ep}")), Some(0.0));
    assert_eq!(sample(&text, &format!("tasklane_spool_outbox{ep}")), Some(0.0));
    assert_eq!(sample(&text, "tasklane_status{endpoint=\"obs-ep\",status=\"consuming\"}"), Some(1.0));
    assert_eq!(sample(&text, "tasklane_status{endpoint=\"obs-ep\",status=\"disconnected\"}"), Some(0.0));
    assert_eq!(sample(&text, &format!("tasklane_connected{ep}")), Some(1.0));
    let info = text.lines().find(|l| l.starts_with("tasklane_connection_info{")).expect("connection info");
    let node = "node=\"127.0.0.1:5672\",peer=\"127.0.0.1:5672\",tls=\"false\"";
    assert!(info.contains(&format!("name=\"tasklane endpoint obs-ep\",{node}")), "{info}");
    let (status, json) = http_get(addr, "/status").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let report: StatusReport = serde_json::from_str(&json).unwrap();
    assert_eq!((report.status.as_str(), report.counter("confirmed")), ("consuming", 5));
    assert_eq!(http_get(addr, "/nope").unwrap().0, "HTTP/1.1 404 Not Found");

    // The status file is refreshed every STATUS_INTERVAL: wait for the
    // report that has seen the last confirm.
    let deadline = Instant::now() + metrics::STATUS_INTERVAL * 5;
    while metrics::read_status(&spool).ok().flatten().is_none_or(|r| r.counter("confirmed") != 5) {
        assert!(Instant::now() < deadline, "the status file never showed 5 confirmed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli.run(&["status", "obs-ep", "--spool", spool_arg]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("endpoint obs-ep: consuming (pid "), "{text}");
    assert!(
        lines[1].starts_with("connection: \"tasklane endpoint obs-ep\" to 127.0.0.1:5672 (amqp, RabbitMQ"),
        "{text}"
    );
    assert_eq!(lines[2], "spool: inbox 0 tasks, outbox 0 results");
    assert!(lines[3].starts_with("counters: received 5, "), "{text}");
    assert!(lines[3].contains(", confirmed 5, ") && lines[3].contains(", rejected 0, "), "{text}");

    // A spool of another endpoint is a usage error.
    assert_eq!(cli.run(&["status", "other-ep", "--spool", spool_arg]).status.code(), Some(2));

    assert_eq!(running.terminate(Duration::from_secs(20)), Some(0));
    let out = cli.run(&["status", "obs-ep", "--spool", spool_arg, "--json"]);
    assert_eq!(out.status.code(), Some(1), "a stopped endpoint is not running");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["running"], false);
    assert_eq!(json["status"], "closed");
    assert_eq!(json["counters"]["confirmed"], 5);
    assert_eq!((json["spool_inbox"].as_u64(), json["spool_outbox"].as_u64()), (Some(0), Some(0)));

    // Killed mid-run, an endpoint leaves a report that says "consuming":
    // its process is gone, so it is not running, and the spool keeps the task.
    cli.run_ok(&["submit", "obs-ep", "--count", "1", "--size", "8"]);
    let mut killed = cli.endpoint("obs-ep", &spool, &["--exec", "sleep 30"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics::read_status(&spool).ok().flatten().is_none_or(|r| r.spool_inbox != 1 || r.status != "consuming") {
        assert!(Instant::now() < deadline, "the endpoint never took the task:\n{}", killed.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    killed.kill();
    let out = cli.run(&["status", "obs-ep", "--spool", spool_arg]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("endpoint obs-ep: not running (last report "), "{text}");
    assert!(text.contains("said: consuming)"), "{text}");
    assert!(text.contains("spool: inbox 1 tasks, outbox 0 results"), "{text}");
}

#[tokio::test]
async fn an_unreachable_broker_shows_as_disconnected_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let url = format!("amqp://guest:guest@{closed}/%2f");
    let endpoint = Arc::new(Endpoint::open(EndpointConfig::new(&url, "obs-down", dir.path()).unwrap()).await.unwrap());
    let mut status = endpoint.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| matches!(s, tasklane_core::Status::Disconnected { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let report = StatusReport::of(&endpoint);
    assert_eq!(report.status, "disconnected");
    assert!(report.reason.as_deref().unwrap_or("").contains("cannot connect"), "{report:?}");
    assert!(report.connection.is_none());
    let text = metrics::render(&report);
    assert_eq!(sample(&text, "tasklane_connected{endpoint=\"obs-down\"}"), Some(0.0));
    assert_eq!(sample(&text, "tasklane_status{endpoint=\"obs-down\",status=\"disconnected\"}"), Some(1.0));
    assert!(sample(&text, "tasklane_disconnected_seconds{endpoint=\"obs-down\"}").is_some());
    endpoint.shutdown().await;
}
