//! `tasklane endpoint`: runs the library's [`Endpoint`] with a [`Handler`]
//! until SIGINT/SIGTERM; also the in-process endpoint of `tasklane demo`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tasklane_core::{EndpointId, Status, Task};
use tasklane_io::endpoint::{Endpoint, EndpointConfig, EndpointError};
use tasklane_io::metrics::{MetricsListener, MetricsServer, StatusFile};
use tasklane_io::settings::{EndpointSettings, Problems};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::cmd::{brokers, EndpointArgs};
use crate::failure::Failure;
use crate::handler::Handler;
use crate::Global;

/// An endpoint running in this process, with its worker loop.
pub struct RunningEndpoint {
    endpoint: Arc<Endpoint>,
    stop: watch::Sender<bool>,
    worker: JoinHandle<()>,
    status_log: JoinHandle<()>,
    status_file: StatusFile,
    metrics: Option<MetricsServer>,
    /// The whole stop ends within this (`shutdown_grace`).
    grace: Duration,
}

impl RunningEndpoint {
    /// Stops cleanly within the shutdown grace, whatever the broker and the
    /// disk do: takes no further task, lets running commands finish (for
    /// half the grace) and record their results, then shuts the endpoint
    /// down in what is left. What is spooled stays spooled for the next
    /// run; what was not stored was never acked and comes again.
    pub async fn stop(self) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + self.grace;
        let _ = self.stop.send(true);
        let drain = self.grace / 2;
        if tokio::time::timeout(drain, self.worker).await.is_err() {
            tracing::warn!("commands still running after {drain:?}; their tasks run again on the next start");
        }
        if tokio::time::timeout_at(deadline, self.endpoint.shutdown()).await.is_err() {
            tracing::warn!(grace = ?self.grace, "shutdown grace over; stopping with what is not stored left to the broker");
        }
        self.status_file.stop().await;
        if let Some(metrics) = self.metrics {
            metrics.stop();
        }
        self.status_log.abort();
        let c = self.endpoint.counters();
        tracing::info!(
            received = c.received,
            completed = c.completed,
            confirmed = c.confirmed,
            rejected = c.rejected,
            "endpoint stopped"
        );
        Ok(())
    }
}

fn status_line(s: &Status) -> String {
    match s {
        Status::Disconnected { reason, .. } => format!("disconnected: {reason}"),
        Status::Blocked { reason } => format!("blocked by the broker: {reason}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The heartbeat `tasklane endpoint` asks for when no setting names one:
/// a dead link is noticed within half a minute.
const DEFAULT_HEARTBEAT: u16 = 10;

/// What `tasklane endpoint` runs: the endpoint's configuration, the
/// metrics address and how many commands run side by side.
pub struct Configured {
    pub config: EndpointConfig,
    pub metrics: Option<SocketAddr>,
    pub workers: usize,
}

/// Commands side by side when no setting says: the number of cores (at
/// least 2).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// The endpoint's configuration from `--config`, the `TASKLANE_*`
/// variables and the flags (in rising precedence); every problem of all
/// three at once.
pub fn configure(g: &Global, args: &EndpointArgs) -> Result<Configured, Failure> {
    let (mut settings, mut problems) = EndpointSettings::load(args.source.config.as_deref(), std::env::vars());
    if g.amqp_given || (settings.amqp_url.is_none() && settings.amqp_urls.is_none()) {
        settings.amqp_url = Some(g.amqp.clone());
        settings.amqp_urls = None;
    }
    settings.failover = g.failover.or(settings.failover);
    if let Some(ca) = &g.tls_ca {
        settings.tls_ca = Some(ca.clone());
    }
    if let Some(id) = &args.source.endpoint {
        settings.endpoint = Some(id.to_string());
    }
    settings.spool_dir = args.source.spool.clone().or(settings.spool_dir);
    settings.heartbeat_secs = args.heartbeat.or(settings.heartbeat_secs).or(Some(DEFAULT_HEARTBEAT));
    settings.blocked_timeout_secs = args.blocked_timeout.or(settings.blocked_timeout_secs);
    settings.shutdown_grace_secs = args.shutdown_grace.or(settings.shutdown_grace_secs);
    settings.report_interval_secs = args.report_interval.or(settings.report_interval_secs);
    settings.metrics = args.metrics.or(settings.metrics);
    settings.workers = args.workers.map(usize::from).or(settings.workers);
    let workers = settings.workers.unwrap_or_else(default_workers);
    match settings.build() {
        Ok((config, metrics)) if problems.is_empty() => Ok(Configured { config, metrics, workers }),
        Ok(_) => Err(Failure::Problems(problems)),
        Err(Problems(p)) => {
            problems.extend(p);
            Err(Failure::Problems(problems))
        }
    }
}

/// The configuration of `tasklane demo`'s in-process endpoint.
pub fn demo_config(g: &Global, endpoint: &EndpointId, spool: &Path) -> Result<EndpointConfig, Failure> {
    let nodes = brokers(g, "")?.nodes().to_vec(); // each bad URL is a usage error, as everywhere
    let mut config = EndpointConfig::with_brokers(nodes, endpoint.clone(), spool)
        .map_err(|e| Failure::Usage(e.to_string()))?
        .heartbeat(DEFAULT_HEARTBEAT);
    if let Some(failover) = g.failover {
        config = config.failover(failover);
    }
    if let Some(ca) = &g.tls_ca {
        config = config.tls_ca(ca);
    }
    Ok(config)
}

/// Starts an endpoint with `config`, answering tasks with `handler` (up to
/// `workers` commands side by side), and serving metrics on `metrics` if
/// given. Returns without waiting for the broker.
pub async fn start(
    config: EndpointConfig,
    handler: Handler,
    workers: usize,
    metrics: Option<SocketAddr>,
) -> Result<RunningEndpoint, Failure> {
    let endpoint = config.lane.endpoint.clone();
    let spool = config.spool_dir.clone();
    let grace = config.lane.shutdown_grace;
    tracing::info!(
        endpoint = %endpoint,
        spool = %spool.display(),
        brokers = %config.brokers.iter().map(|b| b.url.to_string()).collect::<Vec<_>>().join(","),
        heartbeat_secs = config.brokers[0].heartbeat,
        blocked_timeout_secs = config.lane.blocked_timeout.as_secs(),
        shutdown_grace_secs = config.lane.shutdown_grace.as_secs(),
        prefetch = config.lane.prefetch,
        workers,
        report_interval_secs = config.lane.report_interval.map_or(0, |d| d.as_secs()),
        "starting endpoint"
    );
    let metrics = match metrics {
        Some(addr) => Some(
            MetricsListener::bind(addr)
                .await
                .map_err(|e| Failure::runtime(format!("metrics address {addr}: cannot listen"), e))?,
        ),
        None => None,
    };
    let ep = Endpoint::open(config).await.map_err(|e| match e {
        EndpointError::Url(_) | EndpointError::EndpointId(..) => Failure::Usage(e.to_string()),
        e => Failure::runtime(format!("cannot start endpoint {endpoint}"), e),
    })?;
    for damaged in ep.damaged_records() {
        tracing::error!("{damaged}");
    }
    let id = endpoint.clone();
    let endpoint = Arc::new(ep);
    let mut status = endpoint.status();
    let status_log = tokio::spawn(async move {
        loop {
            let line = status_line(&status.borrow_and_update());
            tracing::info!(endpoint = %id, "status: {line}");
            if status.changed().await.is_err() {
                break;
            }
        }
    });
    let metrics = metrics.map(|listener| listener.serve(endpoint.clone()));
    let status_file = StatusFile::start(endpoint.clone(), &spool);
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(work(endpoint.clone(), handler, workers, stopped));
    Ok(RunningEndpoint { endpoint, stop, worker, status_log, status_file, metrics, grace })
}

/// Takes tasks until told to stop, runs each through `handler` (commands
/// side by side, up to `workers`) and records the results.
async fn work(endpoint: Arc<Endpoint>, handler: Handler, workers: usize, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(workers.max(1)));
    let mut running = JoinSet::new();
    loop {
        let task: Task = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            task = endpoint.next_task() => match task {
                Some(t) => t,
                None => break, // shut down
            },
        };
        match &handler {
            Handler::Echo => complete(&endpoint, task, &handler).await,
            Handler::Exec(_) => {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let (endpoint, handler) = (endpoint.clone(), handler.clone());
                running.spawn(async move {
                    complete(&endpoint, task, &handler).await;
                    drop(slot);
                });
                while running.try_join_next().is_some() {}
            }
        }
    }
    while running.join_next().await.is_some() {}
}

async fn complete(endpoint: &Endpoint, task: Task, handler: &Handler) {
    let (status, body) = handler.run(task.body).await;
    if let Err(e) = endpoint.complete(&task.id, status, body).await {
        // Only after shutdown: the task runs again on the next start.
        tracing::warn!(task = %task.id, "result not recorded: {e}");
    }
}

/// `tasklane endpoint [E] [--spool DIR] [--config FILE] [--exec CMD] ...`.
pub async fn run(g: &Global, args: EndpointArgs) -> Result<(), Failure> {
    let handler = args.exec.clone().map_or(Handler::Echo, Handler::Exec);
    let Configured { config, metrics, workers } = configure(g, &args)?;
    let running = start(config, handler, workers, metrics).await?;
    crate::cmd::wait_for_signal().await;
    running.stop().await
}
