//! The confirm stall against a real broker alarm. RabbitMQ never sends
//! `connection.blocked` to amqprs (amqprs does not advertise the
//! capability): under a memory alarm it just stops reading from a
//! connection that publishes, so results get no confirm. The endpoint must
//! notice by itself (`Config::confirm_stall`), say Blocked with the reason,
//! keep its connection while the blocked timeout allows, and recover when
//! the alarm lifts, with every result arriving once.
//!
//! An alarm blocks every publisher of a node, so this test starts a
//! RabbitMQ node of its own (its own node name, AMQP and distribution
//! ports, mnesia and log directories, as scripts/ensure-cluster.sh starts
//! the cluster's nodes) and stops it at the end, also when the test fails.
//! Needs root (the node runs as the rabbitmq user).

mod endpoint_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amqprs::channel::{BasicGetArguments, BasicPublishArguments, ConfirmSelectArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::BasicProperties;
use endpoint_support::{open, take_tasks, wait_counters, wait_status};
use tasklane_core::{EndpointId, ResultStatus, Status};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::endpoint::EndpointConfig;
use tasklane_io::service::{provision, QueueType};

const RABBITMQ_SBIN: &str = "/usr/lib/rabbitmq/bin";
const TASKS: usize = 40;
const BEFORE_ALARM: usize = 10;
const CONFIRM_STALL: Duration = Duration::from_secs(2);

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A RabbitMQ node of this test's own, stopped (and killed if it will not
/// stop) when dropped.
struct OwnNode {
    name: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnNode {
    fn start() -> OwnNode {
        let name = format!("tasklane-alarm-{}@localhost", std::process::id());
        let (port, dist_port) = (free_port(), free_port());
        let dir = tempfile::Builder::new().prefix("tasklane-alarm-node").tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("mnesia")).unwrap();
        std::fs::create_dir_all(d.join("log")).unwrap();
        std::fs::write(d.join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
        std::fs::write(d.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(d.join("rabbitmq-env.conf"), "").unwrap();
        let chown = Command::new("chown").args(["-R", "rabbitmq:"]).arg(d).status().unwrap();
        assert!(chown.success(), "chown of the node's directory (root is needed)");
        let node = OwnNode { name, port, dir };
        let p = |f: &str| node.dir.path().join(f).display().to_string();
        let home = "/var/lib/rabbitmq";
        let status = Command::new("runuser")
            .args(["-u", "rabbitmq", "--", "env", &format!("HOME={home}")])
            .arg(format!("RABBITMQ_NODENAME={}", node.name))
            .arg(format!("RABBITMQ_NODE_PORT={port}"))
            .arg(format!("RABBITMQ_DIST_PORT={dist_port}"))
            .arg(format!("RABBITMQ_CONFIG_FILE={}", p("rabbitmq.conf")))
            .arg(format!("RABBITMQ_ADVANCED_CONFIG_FILE={}", p("advanced.config")))
            .arg(format!("RABBITMQ_CONF_ENV_FILE={}", p("rabbitmq-env.conf")))
            .arg(format!("RABBITMQ_ENABLED_PLUGINS_FILE={}", p("enabled_plugins")))
            .arg(format!("RABBITMQ_MNESIA_BASE={}", p("mnesia")))
            .arg(format!("RABBITMQ_LOG_BASE={}", p("log")))
            .arg(format!("RABBITMQ_PID_FILE={}", p("pid")))
            .arg("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}")
            .arg(format!("{RABBITMQ_SBIN}/rabbitmq-server"))
            .arg("-detached")
            .current_dir(home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runuser and rabbitmq-server (root is needed)");
        assert!(status.success(), "rabbitmq-server -detached for {}: {status}", node.name);
        node
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("pid")
    }

    /// `rabbitmqctl -n <this node> args...`; its stdout, or a panic.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .args(["60", "rabbitmqctl", "-q", "-n", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("rabbitmqctl runs");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until the node takes AMQP connections.
    async fn booted(&self, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let mut args = OpenConnectionArguments::new("127.0.0.1", self.port, "guest", "guest");
            args.connection_name("tasklane alarm test: boot probe");
            if let Ok(conn) = Connection::open(&args).await {
                let _ = conn.close().await;
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "node {} did not boot within {within:?} (logs in {})",
                self.name,
                self.dir.path().join("log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the node has a memory alarm in effect.
    fn memory_alarm(&self) -> bool {
        self.ctl(&["eval", "rabbit_alarm:get_alarms()."]).contains("memory")
    }
}

fn pid_alive(pid_file: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(pid_file).ok()?.trim().to_string();
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["60", "rabbitmqctl", "-q", "-n", &self.name, "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = pid_alive(&self.pid_file()) {
            eprintln!("node {} did not stop; killing its VM {pid}", self.name);
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Publishes `n` tasks to `queue` under confirms, from a connection of its
/// own that is closed afterwards.
async fn submit(port: u16, queue: &str, n: usize) {
    let mut args = OpenConnectionArguments::new("127.0.0.1", port, "guest", "guest");
    args.connection_name("tasklane alarm test: submitter");
    let conn = Connection::open(&args).await.unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    channel.register_callback(amqp::ChannelEvents::new((), tx)).await.unwrap();
    channel.confirm_select(ConfirmSelectArguments::default()).await.unwrap();
    for i in 0..n {
        let mut props = BasicProperties::default();
        props.with_delivery_mode(2).with_message_id(&format!("alarm-{i:02}"));
        let body = format!("task {i}").into_bytes();
        channel.basic_publish(props.finish(), body, BasicPublishArguments::new("", queue)).await.unwrap();
    }
    let mut confirmed = 0;
    while confirmed < n as u64 {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap().1 {
            amqp::ChannelEvent::PublishAck { tag, multiple: true } => confirmed = tag,
            amqp::ChannelEvent::PublishAck { .. } => confirmed += 1,
            other => panic!("task publish: {other:?}"),
        }
    }
    conn.close().await.unwrap();
}

/// Every message in `queue` (taken without ack), from a connection that
/// never publishes, until none came for `quiet`.
async fn drain(port: u16, queue: &str, quiet: Duration) -> Vec<String> {
    let mut args = OpenConnectionArguments::new("127.0.0.1", port, "guest", "guest");
    args.connection_name("tasklane alarm test: results reader");
    let conn = Connection::open(&args).await.unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    let mut got = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        match channel.basic_get(BasicGetArguments::new(queue).no_ack(true).finish()).await.unwrap() {
            Some((_, props, _)) => {
                got.push(props.message_id().cloned().unwrap_or_default());
                last = Instant::now();
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    conn.close().await.unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_without_connection_blocked_turns_the_endpoint_blocked_until_it_lifts() {
    let node = OwnNode::start();
    let boot = node.booted(Duration::from_secs(90)).await;
    println!("own RabbitMQ node {} booted in {:.1} s on 127.0.0.1:{}", node.name, boot.as_secs_f64(), node.port);

    let id = EndpointId::new("alarm-ep").unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&node.url()).unwrap()).await.unwrap();
    provision(&conn, &id, QueueType::Classic).await.unwrap();
    conn.close().await.unwrap();
    submit(node.port, &id.task_queue(), TASKS).await;

    let spool = tempfile::tempdir().unwrap();
    let mut cfg = EndpointConfig::new(&node.url(), id.as_str(), spool.path())
        .unwrap()
        .heartbeat(5)
        .blocked_timeout(Duration::from_secs(120));
    cfg.lane.confirm_stall = CONFIRM_STALL;
    let endpoint = open(cfg).await;
    wait_status(endpoint.status(), Duration::from_secs(20), |s| *s == Status::Consuming).await;
    let tasks = take_tasks(&endpoint, TASKS, Duration::from_secs(20)).await;
    for t in &tasks[..BEFORE_ALARM] {
        endpoint.complete(&t.id, ResultStatus::Ok, format!("done {}", t.id)).await.unwrap();
    }
    wait_counters(&endpoint, Duration::from_secs(10), |c| c.confirmed == BEFORE_ALARM as u64).await;

    let raised = Instant::now();
    node.ctl(&["set_vm_memory_high_watermark", "0"]);
    while !node.memory_alarm() {
        assert!(raised.elapsed() < Duration::from_secs(20), "no memory alarm 20 s after the watermark went to 0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alarm_after = raised.elapsed();

    // Results published into the alarm: no confirm comes, and no
    // connection.blocked either.
    let publishing = Instant::now();
    for t in &tasks[BEFORE_ALARM..] {
        endpoint.complete(&t.id, ResultStatus::Ok, format!("done {}", t.id)).await.unwrap();
    }
    let blocked =
        wait_status(endpoint.status(), Duration::from_secs(20), |s| matches!(s, Status::Blocked { .. })).await;
    let to_blocked = publishing.elapsed();
    let Status::Blocked { reason } = &blocked else { unreachable!() };
    assert!(reason.starts_with(&format!("no publish confirm for {} s", CONFIRM_STALL.as_secs())), "{reason}");
    assert!(to_blocked >= CONFIRM_STALL, "blocked after {to_blocked:?}, before the confirm stall");
    // It stays blocked and connected while the blocked timeout allows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(matches!(*endpoint.status().borrow(), Status::Blocked { .. }), "{:?}", *endpoint.status().borrow());
    let c = endpoint.counters();
    assert_eq!((c.confirmed, c.disconnects, c.connections), (BEFORE_ALARM as u64, 0, 1), "{c:?}");

    let lifted = Instant::now(); // the command returns once the alarm has cleared
    node.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    wait_status(endpoint.status(), Duration::from_secs(30), |s| *s == Status::Consuming).await;
    let to_consuming = lifted.elapsed();
    wait_counters(&endpoint, Duration::from_secs(20), |c| c.confirmed == TASKS as u64).await;
    let to_confirmed = lifted.elapsed();
    let c = endpoint.counters();
    assert_eq!((c.disconnects, c.connections), (0, 1), "the connection was kept: {c:?}");
    assert_eq!(endpoint.spool_depths().outbox, 0);

    let ids = drain(node.port, "results", Duration::from_secs(1)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    let want: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), {
        let mut w = want.clone();
        w.sort();
        w
    });
    assert!(seen.values().all(|&n| n == 1), "a result arrived more than once: {seen:?}");
    println!(
        "memory alarm on {}: in effect {:.1} s after the watermark went to 0; {} results published into it, \
         Blocked ({reason:?}) after {:.1} s; the watermark back to 0.4: Consuming after {:.1} s, all {TASKS} \
         confirmed after {:.1} s, each result once, the one connection kept",
        node.name,
        alarm_after.as_secs_f64(),
        TASKS - BEFORE_ALARM,
        to_blocked.as_secs_f64(),
        to_consuming.as_secs_f64(),
        to_confirmed.as_secs_f64(),
    );
    endpoint.shutdown().await;
    drop(endpoint);
    drop(node);
}
