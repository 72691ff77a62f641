//! Shared by the endpoint tests: a raw amqprs client that plays the service
//! (declares a test's topology, publishes tasks, reads results and dead
//! letters), against the broker on 127.0.0.1:5672. Every test runs in a
//! vhost of its own, deleted afterwards even when the test fails.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use amqprs::channel::{
    BasicGetArguments, BasicPublishArguments, Channel, ConfirmSelectArguments, ExchangeDeclareArguments, ExchangeType,
    QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use tasklane_core::{HeaderValue, RawMessage, Status};
use tasklane_io::amqp;
use tasklane_io::endpoint::{Endpoint, EndpointConfig};
use tokio::sync::watch;

/// Nobody listens here: the broker is "unreachable".
pub const DEAD_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// The type of a test's task queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    /// Counts only its active consumer in a passive declare.
    Quorum,
}

/// One test's piece of the broker: the endpoint's task queue and two
/// queues of the test's own that see its results and its dead letters.
pub struct Topology {
    /// The test's vhost; the URL of the broker in it.
    pub vhost: std::sync::Arc<tasklane_tests::Vhost>,
    pub url: String,
    pub id: String,
    pub tasks: String,
    pub results: String,
    pub dead: String,
    conn: Connection,
    pub channel: Channel,
}

async fn connect(vhost: &str) -> Connection {
    let mut args = OpenConnectionArguments::new("127.0.0.1", 5672, "guest", "guest");
    args.virtual_host(vhost);
    Connection::open(&args).await.expect("RabbitMQ on 127.0.0.1:5672 (guest/guest)")
}

fn field(table: &mut FieldTable, key: &str, value: FieldValue) {
    table.insert(key.try_into().unwrap(), value);
}

impl Topology {
    /// Declares, for a fresh endpoint id: `E.tasks` (a classic queue,
    /// single active consumer, dead-lettering to `tasklane.dead`), the
    /// `results` topic exchange and `tasklane.dead` fanout exchange if
    /// missing, and the test's result and dead-letter queues.
    pub async fn declare() -> Self {
        Self::declare_of(QueueType::Classic).await
    }

    /// As [`Topology::declare`], with `E.tasks` of the given type.
    pub async fn declare_of(kind: QueueType) -> Self {
        let vhost = tokio::task::spawn_blocking(tasklane_tests::Vhost::create).await.unwrap().expect("a test vhost");
        let vhost = std::sync::Arc::new(vhost);
        let url = vhost.url();
        let id = format!("ept-{}", uuid::Uuid::new_v4());
        let conn = connect(vhost.name()).await;
        let channel = conn.open_channel(None).await.unwrap();
        let durable = |name: &str, kind| ExchangeDeclareArguments::of_type(name, kind).durable(true).finish();
        channel.exchange_declare(durable("results", ExchangeType::Topic)).await.unwrap();
        channel.exchange_declare(durable("tasklane.dead", ExchangeType::Fanout)).await.unwrap();
        let tasks = format!("{id}.tasks");
        let mut args = FieldTable::new();
        field(&mut args, "x-single-active-consumer", FieldValue::t(true));
        if kind == QueueType::Quorum {
            field(&mut args, "x-queue-type", FieldValue::S("quorum".try_into().unwrap()));
        }
        field(&mut args, "x-dead-letter-exchange", FieldValue::S("tasklane.dead".try_into().unwrap()));
        channel
            .queue_declare(QueueDeclareArguments::durable_client_named(&tasks).arguments(args).finish())
            .await
            .unwrap();
        let results = format!("{id}.test-results");
        channel.queue_declare(QueueDeclareArguments::durable_client_named(&results)).await.unwrap();
        channel.queue_bind(QueueBindArguments::new(&results, "results", &format!("{id}.results"))).await.unwrap();
        let dead = format!("{id}.test-dead");
        channel.queue_declare(QueueDeclareArguments::durable_client_named(&dead)).await.unwrap();
        channel.queue_bind(QueueBindArguments::new(&dead, "tasklane.dead", "")).await.unwrap();
        Self { vhost, url, id, tasks, results, dead, conn, channel }
    }

    /// Runs `test`, then deletes the vhost whether it passed or not.
    pub async fn run<F, Fut>(test: F)
    where
        F: FnOnce(Topology) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::run_on(QueueType::Classic, test).await
    }

    /// As [`Topology::run`], with `E.tasks` of the given type.
    pub async fn run_on<F, Fut>(kind: QueueType, test: F)
    where
        F: FnOnce(Topology) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let topo = Topology::declare_of(kind).await;
        let vhost = topo.vhost.clone();
        let outcome = tokio::spawn(test(topo)).await;
        // The last handle deletes the vhost (a blocking HTTP call).
        let _ = tokio::task::spawn_blocking(move || drop(vhost)).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    /// An endpoint configuration for this test's endpoint id.
    pub fn config(&self, url: &str, spool: &std::path::Path) -> EndpointConfig {
        EndpointConfig::new(url, &self.id, spool).unwrap().heartbeat(5)
    }

    /// Publishes `msgs` to `E.tasks` as a submitting client would:
    /// persistent, under publisher confirms (waits for all of them).
    pub async fn publish(&self, msgs: &[RawMessage]) {
        let conn = connect(self.vhost.name()).await;
        let channel = conn.open_channel(None).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        channel.register_callback(amqp::ChannelEvents::new((), tx)).await.unwrap();
        channel.confirm_select(ConfirmSelectArguments::default()).await.unwrap();
        for m in msgs {
            let mut props = BasicProperties::default();
            props.with_delivery_mode(2);
            if let Some(id) = &m.message_id {
                props.with_message_id(std::str::from_utf8(id).unwrap());
            }
            if !m.headers.is_empty() {
                props.with_headers(amqp::table_from_headers(&m.headers).unwrap());
            }
            let args = BasicPublishArguments::new("", &self.tasks);
            channel.basic_publish(props.finish(), m.body.to_vec(), args).await.unwrap();
        }
        let mut confirmed = 0;
        while confirmed < msgs.len() as u64 {
            // Generous: a broker busy with other tests' big messages is slow.
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap().1 {
                amqp::ChannelEvent::PublishAck { tag, multiple: true } => confirmed = tag,
                amqp::ChannelEvent::PublishAck { .. } => confirmed += 1,
                other => panic!("task publish: {other:?}"),
            }
        }
        conn.close().await.unwrap();
    }

    /// Takes up to `n` messages from `queue`, waiting at most `wait` for
    /// them to arrive.
    pub async fn take(&self, queue: &str, n: usize, wait: Duration) -> Vec<(BasicProperties, RawMessage)> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            let args = BasicGetArguments::new(queue).no_ack(true).finish();
            match self.channel.basic_get(args).await.unwrap() {
                Some((_, props, body)) => {
                    let raw = amqp::raw_message(&props, body);
                    got.push((props, raw));
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        got
    }

    /// Messages ready in `queue`.
    pub async fn ready(&self, queue: &str) -> u32 {
        let args = QueueDeclareArguments::new(queue).passive(true).finish();
        self.channel.queue_declare(args).await.unwrap().map_or(0, |(_, ready, _)| ready)
    }
}

/// A task message as any AMQP client would submit it.
pub fn task_message(id: &str, body: &str) -> RawMessage {
    RawMessage { message_id: Some(id.as_bytes().to_vec()), headers: vec![], body: body.to_string().into() }
}

/// The string header `name` of `msg`.
pub fn header<'a>(msg: &'a RawMessage, name: &str) -> Option<&'a str> {
    msg.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| match v {
        HeaderValue::Str(s) => std::str::from_utf8(s).ok(),
        _ => None,
    })
}

/// Takes `n` tasks from `endpoint`, failing after `wait`.
pub async fn take_tasks(endpoint: &Endpoint, n: usize, wait: Duration) -> Vec<tasklane_core::Task> {
    let mut tasks = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while tasks.len() < n {
        match tokio::time::timeout_at(deadline, endpoint.next_task()).await {
            Ok(Some(t)) => tasks.push(t),
            Ok(None) => panic!("endpoint closed after {} of {n} tasks", tasks.len()),
            Err(_) => panic!("only {} of {n} tasks within {wait:?}; counters {:?}", tasks.len(), endpoint.counters()),
        }
    }
    tasks
}

/// Waits until `pred` holds for the endpoint's counters.
pub async fn wait_counters(endpoint: &Endpoint, wait: Duration, pred: impl Fn(&tasklane_core::Counters) -> bool) {
    let deadline = Instant::now() + wait;
    while !pred(&endpoint.counters()) {
        assert!(Instant::now() < deadline, "counters never got there: {:?}", endpoint.counters());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the status satisfies `pred`.
pub async fn wait_status(
    mut status: watch::Receiver<Status>,
    wait: Duration,
    pred: impl Fn(&Status) -> bool,
) -> Status {
    let got = tokio::time::timeout(wait, status.wait_for(|s| pred(s))).await.map(|r| r.map(|s| s.clone()));
    match got {
        Ok(Ok(s)) => s,
        _ => panic!("status never got there; now {:?}", *status.borrow()),
    }
}

/// Closes, from the broker's side (`rabbitmqctl close_connection`), every
/// connection whose client-provided name contains `name`. Returns how many.
pub fn broker_closes_connections(name: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let pids: Vec<&str> = listing.lines().filter(|l| l.contains(name)).filter_map(|l| l.split('\t').next()).collect();
    for pid in &pids {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "tasklane test cuts the connection"])
            .output()
            .expect("rabbitmqctl runs");
        assert!(status.status.success(), "close_connection {pid}: {}", String::from_utf8_lossy(&status.stderr));
    }
    pids.len()
}

/// An endpoint watched by core's auditor: the lane invariants every test
/// layer checks, judged here on the real endpoint against the real broker.
/// Dropping it (at the end of a test) fails the test if one broke.
pub struct Audited {
    endpoint: Endpoint,
    report: tasklane_io::endpoint::audit::AuditReport,
}

impl std::ops::Deref for Audited {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.report.assert_clean();
    }
}

/// Opens an endpoint with the auditor plugged in.
pub async fn open(config: EndpointConfig) -> Audited {
    let (audit, report) = tasklane_io::endpoint::audit::Audit::new();
    let endpoint = Endpoint::open_observed(config, audit).await.expect("the endpoint opens");
    Audited { endpoint, report }
}
