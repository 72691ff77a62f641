//! The subcommands other than `demo`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amqprs::connection::Connection;
use bytes::Bytes;
use clap::{ArgGroup, Args};
use tasklane_core::message::MAX_KIND_LEN;
use tasklane_core::{EndpointId, Task, TaskId};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::service::{
    self, Brokers, Management, QueueType, Results, ResultsOptions, ServiceError, Submitter, TaskQueue, TaskStore, DEAD,
};
use tasklane_io::spool::{self, SpoolError};

use crate::failure::Failure;
use crate::Global;

/// `tasklane submit`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["count", "file"])))]
pub struct SubmitArgs {
    /// Endpoint id.
    #[arg(value_parser = crate::parse_endpoint)]
    endpoint: EndpointId,
    /// Submit N generated tasks.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Size of each generated payload, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64, conflicts_with = "file")]
    size: usize,
    /// Task kind (`tasklane-kind` header), for handler dispatch.
    #[arg(long, value_name = "K")]
    kind: Option<String>,
    /// Submit one task per line of file F (empty lines are skipped).
    #[arg(long, value_name = "F")]
    file: Option<PathBuf>,
}

/// `tasklane provision --user`: a RabbitMQ user of the endpoint's own.
#[derive(Args, Debug)]
pub struct UserArgs {
    /// Also create a RabbitMQ user named after the endpoint, with a
    /// generated password (printed once), that may only consume E.tasks and
    /// publish to `results` with routing keys E.results and E.status. Needs the
    /// management API and an administrator in --amqp.
    #[arg(long)]
    pub user: bool,
    /// With --user: give an existing endpoint user a new password.
    #[arg(long, requires = "user")]
    pub rotate_password: bool,
    /// With --user: the management API, http://HOST:PORT (default: the
    /// --amqp host, port 15672, with the --amqp credentials).
    #[arg(long, value_name = "URL", env = "TASKLANE_MANAGEMENT_URL", requires = "user")]
    pub management: Option<String>,
}

/// `tasklane results`.
#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// Stop (exit 0) once N distinct results were seen.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after SECS seconds; with --count, that is a failure (exit 3).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// One JSON object per line: task_id, endpoint, status, payload.
    #[arg(long)]
    json: bool,
}

/// Which endpoint a command is about, shared by `tasklane endpoint` and
/// `tasklane status`: flags over `TASKLANE_*` variables over the file.
#[derive(Args, Debug)]
pub struct EndpointSource {
    /// Endpoint id (or `endpoint` in the config file, or TASKLANE_ENDPOINT).
    #[arg(value_parser = crate::parse_endpoint)]
    pub endpoint: Option<EndpointId>,
    /// The endpoint's spool directory (or `spool_dir`); `tasklane endpoint`
    /// creates it if missing.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// The endpoint's TOML settings file (see the README's "Operations"),
    /// checked as a whole before anything starts.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `tasklane endpoint`. Every setting but `--exec` can also come from
/// `--config FILE` or a `TASKLANE_*` variable; flags win over variables,
/// variables over the file.
#[derive(Args, Debug)]
pub struct EndpointArgs {
    #[command(flatten)]
    pub source: EndpointSource,
    /// Run CMD (through `sh -c`) per task: payload on stdin, stdout is the
    /// result, a non-zero exit makes it `failed`. Without it, results echo
    /// the payload.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// How many `--exec` commands run side by side (or `workers`)
    /// [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=tasklane_io::settings::MAX_WORKERS as i64))]
    pub workers: Option<u16>,
    /// AMQP heartbeat in seconds, as the service decides [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u16).range(1..))]
    pub heartbeat: Option<u16>,
    /// Seconds a connection may stay blocked by the broker (memory or disk
    /// alarm) before the endpoint reconnects, as the service decides
    /// [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub blocked_timeout: Option<u64>,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) may take, whatever the broker
    /// and the disk do; what was not stored is delivered again later
    /// [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub shutdown_grace: Option<u64>,
    /// Seconds between two status reports to the service's fleet view
    /// (`tasklane fleet`), besides one on every status change; 0 sends
    /// none [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub report_interval: Option<u64>,
    /// Serve Prometheus metrics on http://ADDR/metrics (and the status as
    /// JSON on /status), e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Parses `--amqp` (one URL, or a cluster's nodes separated by commas)
/// with `--tls-ca` and `--failover`; each bad URL is a line of a usage
/// error.
pub fn brokers(g: &Global, name: &str) -> Result<Brokers, Failure> {
    let list = ConnectOptions::parse_list(&g.amqp)
        .map_err(|e| Failure::Problems(e.to_string().lines().map(|line| format!("--amqp: {line}")).collect()))?;
    let mut brokers = Brokers::new(list).map_err(|e| Failure::Usage(format!("--amqp: {e}")))?;
    if !name.is_empty() {
        brokers = brokers.connection_name(name);
    }
    if let Some(ca) = &g.tls_ca {
        brokers = brokers.tls_ca(ca);
    }
    if let Some(failover) = g.failover {
        brokers = brokers.failover(failover);
    }
    Ok(brokers)
}

/// A connection to the first node that answers, for work of our own.
pub async fn connect(brokers: &Brokers) -> Result<Connection, Failure> {
    brokers.connect().await.map(|(conn, _)| conn).map_err(|e| Failure::Runtime(e.to_string()))
}

/// Opens the service's task store, with the retention bound of the
/// `--retain-*` options.
pub fn open_store(g: &Global) -> Result<TaskStore, Failure> {
    let dir = &g.store;
    TaskStore::open_with(dir, g.retention())
        .map_err(|e| Failure::runtime(format!("cannot open the task store {}", dir.display()), e))
}

/// A service error as a failure, with a hint where one helps.
pub fn service_failure(e: ServiceError) -> Failure {
    match &e {
        ServiceError::Unroutable { endpoint, .. } => {
            Failure::Runtime(format!("{e}; run `tasklane provision {endpoint}` first"))
        }
        ServiceError::Amqp(a) if a.reply_code() == Some(404) => {
            Failure::Runtime(format!("{e}; is the topology provisioned? run `tasklane provision <endpoint>`"))
        }
        _ => Failure::Runtime(e.to_string()),
    }
}

/// `tasklane provision E [--queue-type T] [--delivery-limit N] [--user]`.
pub async fn provision(
    g: &Global,
    endpoint: &EndpointId,
    queue_type: QueueType,
    delivery_limit: u32,
    user: &UserArgs,
) -> Result<(), Failure> {
    let brokers = brokers(g, "tasklane provision")?;
    let first = &brokers.nodes()[0].url;
    let api = match (&user.management, user.user) {
        (_, false) => None,
        (None, true) => Some(Management::for_broker(first)),
        (Some(base), true) => Some(
            Management::new(base, first.username(), first.password())
                .map_err(|e| Failure::Usage(format!("--management: {e}")))?,
        ),
    };
    let queue = TaskQueue::from(queue_type).delivery_limit((delivery_limit > 0).then_some(delivery_limit));
    let made = brokers.provision(endpoint, queue).await.map_err(service_failure)?;
    let limit = match (queue_type, queue.delivery_limit) {
        (QueueType::Quorum, Some(n)) => format!(", delivery limit {n}"),
        (QueueType::Quorum, None) => ", no delivery limit".into(),
        (QueueType::Classic, _) => String::new(),
    };
    println!(
        "provisioned {endpoint} ({queue_type} task queue {}{limit}; results {}, {DEAD} {})",
        endpoint.task_queue(),
        made.results,
        made.dead
    );
    let Some(api) = api else { return Ok(()) };
    let vhost = first.vhost();
    let made = service::provision_user(&api, vhost, endpoint, user.rotate_password)
        .await
        .map_err(|e| Failure::runtime(format!("cannot provision the user of {endpoint}"), e))?;
    match &made.password {
        Some(password) => {
            let verb = if made.created { "created" } else { "given a new password" };
            println!("user {} {verb}; its password, shown only this once: {password}", made.username);
            let urls: Vec<String> =
                brokers.nodes().iter().map(|n| endpoint_url(&n.url, &made.username, password)).collect();
            println!("endpoint URL: {}", urls.join(","));
        }
        None => println!(
            "user {} exists; permissions set, password unchanged (--rotate-password for a new one)",
            made.username
        ),
    }
    Ok(())
}

/// The broker URL with the endpoint user's credentials.
fn endpoint_url(url: &amqp::AmqpUrl, user: &str, password: &str) -> String {
    let scheme = if url.is_tls() { "amqps" } else { "amqp" };
    let host = if url.host().contains(':') { format!("[{}]", url.host()) } else { url.host().to_string() };
    let vhost = tasklane_io::service::management::segment(url.vhost());
    format!("{scheme}://{user}:{password}@{host}:{}/{vhost}", url.port())
}

/// A payload of exactly `size` bytes naming task `i`.
pub fn generated_payload(i: u64, size: usize) -> Bytes {
    let stem = format!("task-{i} ");
    Bytes::from(stem.bytes().cycle().take(size).collect::<Vec<u8>>())
}

/// A fresh task id.
pub fn new_task_id() -> TaskId {
    TaskId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid task id")
}

/// `tasklane submit E --count N | --file F`.
pub async fn submit(g: &Global, args: SubmitArgs) -> Result<(), Failure> {
    let brokers = brokers(g, "tasklane submit")?;
    if let Some(k) = &args.kind {
        if k.is_empty() || k.len() > MAX_KIND_LEN {
            return Err(Failure::Usage(format!("--kind must be 1 to {MAX_KIND_LEN} bytes")));
        }
    }
    let payloads: Box<dyn Iterator<Item = Bytes> + Send> = match (&args.file, args.count) {
        (Some(path), _) => {
            let text =
                std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
            let lines: Vec<Bytes> = text
                .split(|b| *b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.is_empty())
                .map(Bytes::copy_from_slice)
                .collect();
            Box::new(lines.into_iter())
        }
        (None, Some(n)) => {
            let size = args.size;
            Box::new((0..n).map(move |i| generated_payload(i, size)))
        }
        (None, None) => unreachable!("clap requires --count or --file"),
    };
    let kind = args.kind.clone();
    let tasks = payloads.map(|body| Task { id: new_task_id(), kind: kind.clone(), body });

    let store = open_store(g)?;
    let outcome = async {
        let mut submitter = Submitter::connect(&brokers, store).await?;
        let n = submitter.submit_all(&args.endpoint, tasks, |_| {}).await;
        submitter.close().await;
        n
    }
    .await;
    let n = outcome.map_err(service_failure)?;
    println!("submitted {n} tasks to {}", args.endpoint);
    Ok(())
}

/// Set once SIGINT or SIGTERM arrives.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        set.store(true, Ordering::SeqCst);
    });
    flag
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_result(r: &service::AcceptedResult, json: bool) {
    if json {
        let mut obj = serde_json::json!({
            "task_id": r.task.as_str(),
            "endpoint": r.endpoint.as_str(),
            "status": r.status.as_str(),
            "payload": String::from_utf8_lossy(&r.body),
        });
        if std::str::from_utf8(&r.body).is_err() {
            obj["payload_hex"] = r.body.iter().map(|b| format!("{b:02x}")).collect::<String>().into();
        }
        println!("{obj}");
    } else {
        let payload: String = String::from_utf8_lossy(&r.body).escape_debug().collect();
        println!("{}\t{}\t{}\t{payload}", r.task, r.endpoint, r.status.as_str());
    }
}

/// `tasklane results`.
pub async fn results(g: &Global, args: ResultsArgs) -> Result<(), Failure> {
    let brokers = brokers(g, "tasklane results")?;
    let store = open_store(g)?;
    let stop = stop_flag();
    let deadline = args.timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let outcome = async {
        let mut results = Results::connect(&brokers, store, ResultsOptions::default()).await?;
        let mut seen = 0u64;
        let mut end = Ok(());
        loop {
            if args.count.is_some_and(|n| seen >= n) {
                break;
            }
            if stop.load(Ordering::SeqCst) {
                if let Some(n) = args.count {
                    end = Err(Failure::Runtime(format!("interrupted after {seen} of {n} results")));
                }
                break;
            }
            let now = tokio::time::Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                if let (Some(n), Some(s)) = (args.count, args.timeout) {
                    end = Err(Failure::Timeout(format!("timed out after {s} s with {seen} of {n} results")));
                }
                break;
            }
            // Short waits, so a signal or the deadline is noticed promptly
            // without cancelling the consumer mid-step.
            let wait = deadline.map_or(Duration::from_millis(250), |d| (d - now).min(Duration::from_millis(250)));
            if let Some(r) = results.next_timeout(wait).await? {
                print_result(&r, args.json);
                seen += 1;
            }
        }
        results.close().await?;
        Ok::<_, ServiceError>(end)
    }
    .await;
    outcome.map_err(service_failure)?
}

fn preview(body: &[u8]) -> String {
    const MAX: usize = 40;
    let text: String = String::from_utf8_lossy(&body[..body.len().min(MAX)]).escape_debug().collect();
    if body.len() > MAX {
        format!("\"{text}\"...")
    } else {
        format!("\"{text}\"")
    }
}

/// `tasklane spool inspect DIR`: counts, then the oldest entries.
pub fn spool_inspect(dir: &Path, oldest: usize) -> Result<(), Failure> {
    let (snapshot, corrupt, spool) = spool::inspect(dir).map_err(|e| match e {
        SpoolError::Missing(_) => Failure::Usage(e.to_string()),
        e => Failure::Runtime(e.to_string()),
    })?;
    let inbox_bytes: u64 = snapshot.inbox.iter().map(|t| t.size).sum();
    let outbox_bytes: u64 = snapshot.outbox.iter().map(|r| r.size).sum();
    println!("spool {}", dir.display());
    println!("inbox: {} tasks, {inbox_bytes} payload bytes", snapshot.inbox.len());
    for t in snapshot.inbox.iter().take(oldest) {
        // The snapshot keeps no bodies: the oldest few are read from disk.
        let task = spool.reader().task(t.arrival).map_err(|e| Failure::Runtime(e.to_string()))?;
        let Some(task) = task else { continue };
        let kind = task.kind.as_deref().map(|k| format!(" kind={k}")).unwrap_or_default();
        println!("  #{} {}{kind} {} bytes {}", t.arrival, task.id, task.body.len(), preview(&task.body));
    }
    println!("outbox: {} results, {outbox_bytes} payload bytes", snapshot.outbox.len());
    let seqs: Vec<_> = snapshot.outbox.iter().take(oldest).map(|r| r.seq).collect();
    // Nor result bodies: the oldest few are read from disk, in one go.
    let bodies = spool.reader().result_bodies(&seqs).map_err(|e| Failure::Runtime(e.to_string()))?;
    for (r, body) in snapshot.outbox.iter().zip(bodies) {
        let Some(body) = body else { continue };
        println!("  #{} {} {} {} bytes {}", r.seq.0, r.task, r.status.as_str(), r.size, preview(&body));
    }
    println!("completed (dedup window): {} task ids", snapshot.completed.len());
    if !corrupt.is_empty() {
        println!("damaged records moved to quarantine: {}", corrupt.len());
        for c in &corrupt {
            println!("  {c}");
        }
    }
    Ok(())
}
