//! The endpoint end to end, as users run it: the `tasklane` CLI against the
//! local RabbitMQ, each test in a vhost of its own, with faults injected by
//! a TCP proxy, SIGKILL, a duplicate endpoint and a deleted queue.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tasklane_tests::{broker_addr, FaultProxy, ResultLine, Tasklane, Vhost};

struct Setup {
    vhost: Vhost,
    cli: Tasklane,
    dir: tempfile::TempDir,
    endpoint: String,
}

fn setup(queue_type: &str) -> Setup {
    let vhost = Vhost::create().expect("create a vhost (is RabbitMQ up? scripts/ensure-rabbitmq.sh)");
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    let endpoint = format!("ep-{}", uuid::Uuid::new_v4().simple());
    cli.run_ok(&["provision", &endpoint, "--queue-type", queue_type]);
    Setup { vhost, cli, dir, endpoint }
}

impl Setup {
    fn spool(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Every result exactly once: `n` distinct task ids, no line twice.
fn assert_exactly_once(lines: &[ResultLine], n: usize) {
    let ids: BTreeSet<&str> = lines.iter().map(|l| l.task_id.as_str()).collect();
    assert_eq!(ids.len(), lines.len(), "a result was accepted twice");
    assert_eq!(ids.len(), n, "results missing");
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn consumers(s: &Setup) -> u32 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(s.vhost.queue_counts(&format!("{}.tasks", s.endpoint))).unwrap().map_or(0, |c| c.consumers)
}

#[test]
fn ten_thousand_tasks_round_trip_exactly_once() {
    let s = setup("classic");
    let mut ep = s.cli.endpoint(&s.endpoint, &s.spool("spool"), &[]);
    let out = s.cli.run_ok(&["submit", &s.endpoint, "--count", "10000", "--size", "64"]);
    assert!(out.contains("10000"), "{out}");
    let (lines, ok) = s.cli.results(10_000, Duration::from_secs(180));
    assert!(ok, "results did not reach 10000: {}; endpoint stderr:\n{}", lines.len(), ep.stderr());
    assert_exactly_once(&lines, 10_000);
    assert!(lines.iter().all(|l| l.status == "ok" && l.endpoint == s.endpoint));
    assert_eq!(ep.terminate(Duration::from_secs(20)), Some(0), "clean stop on SIGTERM:\n{}", ep.stderr());
}

#[test]
fn connection_cuts_and_a_frozen_link_lose_nothing_and_duplicate_nothing() {
    let s = setup("classic");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(broker_addr())).unwrap();
    let via_proxy = s.cli.with_url(proxy.url_for(&s.vhost));
    let mut ep = via_proxy.endpoint(&s.endpoint, &s.spool("spool"), &["--heartbeat", "1"]);
    s.cli.run_ok(&["submit", &s.endpoint, "--count", "4000", "--size", "256"]);
    // Cut every connection several times mid-stream, then freeze the link
    // long enough that only heartbeats can notice.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        proxy.cut_all();
    }
    std::thread::sleep(Duration::from_millis(400));
    proxy.freeze(true);
    std::thread::sleep(Duration::from_secs(4));
    proxy.freeze(false);
    let (lines, ok) = s.cli.results(4000, Duration::from_secs(180));
    assert!(ok, "results did not reach 4000: {}; endpoint stderr:\n{}", lines.len(), ep.stderr());
    assert_exactly_once(&lines, 4000);
    assert!(proxy.stats().cut >= 1, "the proxy cut live connections");
    assert!(proxy.connections_accepted() >= 3, "the endpoint reconnected: {:?}", proxy.stats());
    assert!(ep.alive());
}

#[test]
fn sigkill_mid_stream_and_restart_on_the_same_spool_loses_nothing() {
    let s = setup("classic");
    let spool = s.spool("spool");
    let mut ep = s.cli.endpoint(&s.endpoint, &spool, &["--exec", "sleep 0.002; cat"]);
    s.cli.run_ok(&["submit", &s.endpoint, "--count", "2000", "--size", "128"]);
    std::thread::sleep(Duration::from_millis(1500));
    ep.kill();
    let ep = s.cli.endpoint(&s.endpoint, &spool, &["--exec", "cat"]);
    let (lines, ok) = s.cli.results(2000, Duration::from_secs(180));
    assert!(ok, "results did not reach 2000: {}; endpoint stderr:\n{}", lines.len(), ep.stderr());
    assert_exactly_once(&lines, 2000);
}

fn duplicate_endpoint_waits_then_takes_over(queue_type: &str) {
    let s = setup(queue_type);
    let mut first = s.cli.endpoint(&s.endpoint, &s.spool("a"), &["--exec", "printf first"]);
    wait_for("the first endpoint to consume", Duration::from_secs(30), || consumers(&s) >= 1);
    let mut second = s.cli.endpoint(&s.endpoint, &s.spool("b"), &["--exec", "printf second"]);
    // A quorum queue does not count a waiting single-active consumer, so
    // give the second endpoint time to connect and register instead.
    std::thread::sleep(Duration::from_secs(3));
    assert!(second.alive(), "the second endpoint runs as a standby:\n{}", second.stderr());
    s.cli.run_ok(&["submit", &s.endpoint, "--count", "300"]);
    let (lines, ok) = s.cli.results(300, Duration::from_secs(120));
    assert!(ok, "{} of 300; stderr:\n{}\n{}", lines.len(), first.stderr(), second.stderr());
    assert!(lines.iter().all(|l| l.payload == "first"), "the standby drained tasks while the first lived");
    first.kill();
    s.cli.run_ok(&["submit", &s.endpoint, "--count", "300"]);
    let (lines, ok) = s.cli.results(300, Duration::from_secs(120));
    assert!(ok, "{} of 300 after the takeover; stderr:\n{}", lines.len(), second.stderr());
    assert!(lines.iter().all(|l| l.payload == "second"), "the standby took over");
}

#[test]
fn duplicate_endpoint_on_a_classic_queue() {
    duplicate_endpoint_waits_then_takes_over("classic");
}

#[test]
fn duplicate_endpoint_on_a_quorum_queue() {
    duplicate_endpoint_waits_then_takes_over("quorum");
}

#[test]
fn broker_unreachable_at_start_then_reachable_catches_up() {
    let s = setup("classic");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(broker_addr())).unwrap();
    proxy.refuse(true);
    let mut ep = s.cli.with_url(proxy.url_for(&s.vhost)).endpoint(&s.endpoint, &s.spool("spool"), &[]);
    s.cli.run_ok(&["submit", &s.endpoint, "--count", "500"]);
    let (lines, ok) = s.cli.results(500, Duration::from_secs(3));
    assert!(!ok && lines.is_empty(), "results while the broker was unreachable: {}", lines.len());
    assert!(ep.alive(), "the endpoint runs without a broker:\n{}", ep.stderr());
    proxy.refuse(false);
    let (lines, ok) = s.cli.results(500, Duration::from_secs(120));
    assert!(ok, "{} of 500 after the broker came back; stderr:\n{}", lines.len(), ep.stderr());
    assert_exactly_once(&lines, 500);
}

#[test]
fn malformed_tasks_are_dead_lettered_and_the_endpoint_goes_on() {
    let s = setup("classic");
    let mut ep = s.cli.endpoint(&s.endpoint, &s.spool("spool"), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(publish_malformed(&s));
    s.cli.run_ok(&["submit", &s.endpoint, "--count", "5"]);
    let (lines, ok) = s.cli.results(5, Duration::from_secs(60));
    assert!(ok, "{} of 5; stderr:\n{}", lines.len(), ep.stderr());
    wait_for("3 dead letters", Duration::from_secs(30), || {
        rt.block_on(s.vhost.queue_counts("tasklane.dead")).unwrap().is_some_and(|c| c.ready >= 3)
    });
    assert!(ep.alive());
}

async fn publish_malformed(s: &Setup) {
    use amqprs::channel::BasicPublishArguments;
    use amqprs::BasicProperties;
    let conn =
        amqprs::connection::Connection::open(&tasklane_tests::amqp_args(broker_addr(), s.vhost.name())).await.unwrap();
    let ch = conn.open_channel(None).await.unwrap();
    let args = BasicPublishArguments::new("", &format!("{}.tasks", s.endpoint));
    let no_id = BasicProperties::default().with_persistence(true).finish();
    let long_id = BasicProperties::default().with_message_id(&"x".repeat(200)).finish();
    let empty_id = BasicProperties::default().with_message_id("").finish();
    for props in [no_id, long_id, empty_id] {
        ch.basic_publish(props, b"hostile".to_vec(), args.clone()).await.unwrap();
    }
    ch.close().await.unwrap();
    conn.close().await.unwrap();
}

#[test]
fn unroutable_results_wait_in_the_outbox_until_the_topology_is_back() {
    let s = setup("classic");
    assert!(s.vhost.delete_queue("results").unwrap());
    let mut ep = s.cli.endpoint(&s.endpoint, &s.spool("spool"), &[]);
    s.cli.run_ok(&["submit", &s.endpoint, "--count", "20"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(ep.alive());
    s.cli.run_ok(&["provision", &s.endpoint, "--queue-type", "classic"]);
    let (lines, ok) = s.cli.results(20, Duration::from_secs(120));
    assert!(ok, "{} of 20 after re-provisioning; stderr:\n{}", lines.len(), ep.stderr());
    assert_exactly_once(&lines, 20);
}

/// A broker list whose first node is down: every command goes on to the
/// node that answers (in the order given), and the lane works end to end.
#[test]
fn every_command_goes_to_the_first_node_of_a_list_that_answers() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dead = tasklane_tests::amqp_url("127.0.0.1:1".parse().unwrap(), vhost.name());
    let cli = Tasklane::new(format!("{dead},{}", vhost.url()), dir.path().join("service"));
    let endpoint = format!("ep-{}", uuid::Uuid::new_v4().simple());
    let out = cli.run_ok(&["--failover", "in-order", "provision", &endpoint]);
    assert!(out.contains("quorum task queue") && out.contains("delivery limit 20"), "quorum by default: {out}");
    let mut ep = cli.endpoint(&endpoint, &dir.path().join("spool"), &["--failover", "in-order"]);
    cli.run_ok(&["--failover", "in-order", "submit", &endpoint, "--count", "30"]);
    let (lines, ok) = cli.results(30, Duration::from_secs(60));
    assert!(ok, "{} of 30; endpoint stderr:\n{}", lines.len(), ep.stderr());
    assert_exactly_once(&lines, 30);
    assert_eq!(vhost.queue(&format!("{endpoint}.tasks")).unwrap().unwrap().kind, "quorum");
    assert!(ep.alive());
}
