//! [`Endpoint`]: a compute endpoint's crash-safe lane to its service, the
//! library users build workers on. It drives a core [`tasklane_core::Lane`]
//! with amqprs and the LMDB spool.
//!
//! ```no_run
//! # async fn worker() -> Result<(), tasklane_io::endpoint::EndpointError> {
//! use tasklane_core::ResultStatus;
//! use tasklane_io::endpoint::{Endpoint, EndpointConfig};
//!
//! let cfg = EndpointConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "ep-1", "/var/lib/ep-1")?;
//! let endpoint = Endpoint::open(cfg).await?; // opens even when the broker is down
//! while let Some(task) = endpoint.next_task().await {
//!     let output = task.body.to_ascii_uppercase();
//!     endpoint.complete(&task.id, ResultStatus::Ok, output).await?;
//! }
//! endpoint.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Tasks come in arrival order; each is handed over once per spool
//! lifetime, and again after a restart if it was not completed. A result is
//! durable once its spool write commits and is published until the broker
//! confirms it. Connection trouble shows up in [`Endpoint::status`], never
//! as an error of these calls.

mod config;
mod conn;
mod driver;

use bytes::Bytes;
use tasklane_core::{
    ConfigError, ConnId, Counters, EndpointId, InvalidId, Lane, ResultStatus, Status, Task, TaskId, UsageError,
};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;

pub use config::EndpointConfig;

use crate::amqp::{ConnectionInfo, UrlListError};
use crate::spool::{self, CorruptRecord, SpoolError};
use driver::{AppCmd, Driver};

/// Why an endpoint cannot be opened, or a call was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A broker URL cannot be used (one line per bad URL).
    #[error(transparent)]
    Url(UrlListError),
    /// The endpoint id is not valid.
    #[error("endpoint id {0:?}: {1}")]
    EndpointId(String, InvalidId),
    /// A lane setting cannot work.
    #[error("endpoint configuration: {0}")]
    Config(#[from] ConfigError),
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The result names a task this endpoint does not hold (never handed
    /// off, or already completed).
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The endpoint has shut down.
    #[error("the endpoint has shut down")]
    Closed,
}

/// How much the spool holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolDepths {
    /// Tasks received and not completed.
    pub inbox: usize,
    /// Results not yet confirmed by the broker.
    pub outbox: usize,
}

/// A running endpoint. Share it between workers behind an `Arc`: every
/// method takes `&self`.
#[derive(Debug)]
pub struct Endpoint {
    id: EndpointId,
    app: mpsc::UnboundedSender<AppCmd>,
    tasks: Mutex<mpsc::UnboundedReceiver<Task>>,
    status: watch::Receiver<Status>,
    counters: watch::Receiver<Counters>,
    depths: watch::Receiver<SpoolDepths>,
    connection: watch::Receiver<Option<(ConnId, ConnectionInfo)>>,
    driver: Mutex<Option<JoinHandle<()>>>,
    corrupt: Vec<CorruptRecord>,
}

impl Endpoint {
    /// Opens the spool and starts the endpoint. Returns without waiting for
    /// the broker: spooled tasks are handed out and results recorded even
    /// while it is unreachable, and connecting goes on in the background.
    pub async fn open(config: EndpointConfig) -> Result<Self, EndpointError> {
        config.lane.validate()?;
        let EndpointConfig { brokers, spool_dir, spool: spool_opts, lane: mut lane_cfg } = config;
        lane_cfg.addresses = brokers.len();
        let opened = tokio::task::spawn_blocking(move || spool::open(spool_dir, &spool_opts))
            .await
            .expect("spool open does not panic")?;
        let now = tokio::time::Instant::now().into_std();
        let endpoint = lane_cfg.endpoint.clone();
        let lane = Lane::new(now, lane_cfg, opened.snapshot)?;
        let (app_tx, app_rx) = mpsc::unbounded_channel();
        let (tasks_tx, tasks_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(lane.status().clone());
        let (counters_tx, counters_rx) = watch::channel(*lane.counters());
        let depths = SpoolDepths { inbox: lane.inbox_len(), outbox: lane.outbox_len() };
        let (depths_tx, depths_rx) = watch::channel(depths);
        let (connection_tx, connection_rx) = watch::channel(None);
        let driver = Driver {
            lane,
            brokers,
            spool: opened.writer,
            spool_reports: opened.reports,
            app: app_rx,
            tasks: tasks_tx,
            status: status_tx,
            counters: counters_tx,
            depths: depths_tx,
            connection: std::sync::Arc::new(connection_tx),
        };
        let span = tracing::info_span!("endpoint", id = %endpoint);
        span.in_scope(|| {
            let urls: Vec<String> = driver.brokers.iter().map(|b| b.url.to_string()).collect();
            tracing::info!(urls = %urls.join(","), inbox = depths.inbox, outbox = depths.outbox, "endpoint opened")
        });
        let handle = tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        Ok(Self {
            id: endpoint,
            app: app_tx,
            tasks: Mutex::new(tasks_rx),
            status: status_rx,
            counters: counters_rx,
            depths: depths_rx,
            connection: connection_rx,
            driver: Mutex::new(Some(handle)),
            corrupt: opened.corrupt,
        })
    }

    /// The next task, in arrival order; `None` once the endpoint has shut
    /// down. Workers may wait on it concurrently.
    pub async fn next_task(&self) -> Option<Task> {
        self.tasks.lock().await.recv().await
    }

    /// Records `task`'s result. Returns once the result is queued for the
    /// spool (it is durable at the next group commit, and published after
    /// that); an error for a task this endpoint does not hold.
    pub async fn complete(
        &self,
        task: &TaskId,
        status: ResultStatus,
        body: impl Into<Bytes>,
    ) -> Result<(), EndpointError> {
        let (reply, answer) = oneshot::channel();
        let cmd = AppCmd::Complete { task: task.clone(), status, body: body.into(), reply };
        self.app.send(cmd).map_err(|_| EndpointError::Closed)?;
        answer.await.map_err(|_| EndpointError::Closed)?.map_err(EndpointError::Usage)
    }

    /// The connection status, as a watch: `borrow()` for now, `changed()`
    /// to wait for the next change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// What the endpoint has done so far.
    pub fn counters(&self) -> Counters {
        *self.counters.borrow()
    }

    /// The endpoint's id.
    pub fn id(&self) -> &EndpointId {
        &self.id
    }

    /// How many tasks and results the spool holds now.
    pub fn spool_depths(&self) -> SpoolDepths {
        *self.depths.borrow()
    }

    /// The connection to the broker while there is one: its name, the
    /// broker's address, TLS, the broker's version.
    pub fn connection(&self) -> Option<ConnectionInfo> {
        self.connection.borrow().as_ref().map(|(_, info)| info.clone())
    }

    /// Spool records found damaged at open (left out and quarantined).
    pub fn damaged_records(&self) -> &[CorruptRecord] {
        &self.corrupt
    }

    /// Stops cleanly: closes the connection, commits what the spool has
    /// queued, and stops handing out tasks. Tasks handed out and not
    /// completed are handed out again by the next endpoint on this spool.
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        let _ = self.app.send(AppCmd::Shutdown);
        if let Some(handle) = self.driver.lock().await.take() {
            if let Err(e) = handle.await {
                tracing::error!("endpoint driver failed: {e}");
            }
        }
        let mut tasks = self.tasks.lock().await;
        tasks.close();
        while tasks.try_recv().is_ok() {}
    }
}
