//! [`Endpoint`]: a compute endpoint's crash-safe lane to its service, the
//! library users build workers on. It drives a core [`tasklane_core::Lane`]
//! through one driver, written once over two [`ports`]: the broker
//! connection and the spool. [`Endpoint::open`] plugs in amqprs and the
//! LMDB spool; the simulation (`tasklane-sim`) plugs in its simulated
//! broker and in-memory spool and runs this very code.
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

#[cfg(feature = "audit")]
pub mod audit;
#[cfg(feature = "rabbitmq")]
mod config;
mod driver;
#[cfg(feature = "rabbitmq")]
mod lmdb;
pub mod ports;
#[cfg(test)]
mod publish_read_tests;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(all(test, feature = "rabbitmq"))]
mod shutdown_tests;

use std::future::Future;

use bytes::Bytes;
use tasklane_core::{
    Config, ConfigError, ConnId, Counters, EndpointId, InvalidId, Lane, ResultStatus, SpoolSnapshot, Status, Task,
    TaskId, UsageError,
};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

#[cfg(feature = "rabbitmq")]
pub use config::EndpointConfig;
pub use ports::{BrokerConn, BrokerPort, BrokerSinks, ConnectionInfo, InputSink, NoObserver, Observer, SpoolPort};

use driver::{AppCmd, Driver, Watches};
use ports::ConnectionWatch;

/// Why an endpoint cannot be opened, or a call was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A broker URL cannot be used (one line per bad URL).
    #[cfg(feature = "rabbitmq")]
    #[error(transparent)]
    Url(crate::amqp::UrlListError),
    /// The endpoint id is not valid.
    #[error("endpoint id {0:?}: {1}")]
    EndpointId(String, InvalidId),
    /// A lane setting cannot work.
    #[error("endpoint configuration: {0}")]
    Config(#[from] ConfigError),
    /// The spool cannot be opened.
    #[cfg(feature = "rabbitmq")]
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
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
    tasks: Mutex<mpsc::Receiver<Task>>,
    status: watch::Receiver<Status>,
    counters: watch::Receiver<Counters>,
    depths: watch::Receiver<SpoolDepths>,
    spool_full: watch::Receiver<Option<String>>,
    connection: watch::Receiver<Option<(ConnId, ConnectionInfo)>>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
    #[cfg(feature = "rabbitmq")]
    corrupt: Vec<crate::spool::CorruptRecord>,
}

impl Endpoint {
    /// An endpoint of configuration `cfg` starting from what the spool
    /// holds (`snapshot`), driving its lane over `broker` and `spool`,
    /// watched by `observer`: the handle, and the driver, a future the
    /// caller spawns (`tokio::spawn` when the ports are `Send`,
    /// `spawn_local` in a simulation).
    pub fn start<B: BrokerPort, S: SpoolPort, O: Observer>(
        cfg: Config,
        snapshot: SpoolSnapshot,
        broker: B,
        spool: S,
        observer: O,
    ) -> Result<(Self, impl Future<Output = ()> + 'static), ConfigError> {
        let now = tokio::time::Instant::now().into_std();
        let seen = O::ACTIVE.then(|| snapshot.clone());
        let lane = Lane::new(now, cfg, snapshot)?;
        let id = lane.config().endpoint.clone();
        let (inputs_tx, inputs) = InputSink::channel();
        let (connection, connection_rx) = ConnectionWatch::channel();
        let (app_tx, app) = mpsc::unbounded_channel();
        let (tasks_tx, tasks) = mpsc::channel(driver::TAKE_AHEAD);
        let (status, status_rx) = watch::channel(lane.status().clone());
        let (counters, counters_rx) = watch::channel(*lane.counters());
        let (depths, depths_rx) = watch::channel(SpoolDepths { inbox: lane.inbox_len(), outbox: lane.outbox_len() });
        let (spool_full, spool_full_rx) = watch::channel(lane.spool_full().map(str::to_owned));
        let (done_tx, done_rx) = oneshot::channel();
        let driver = Driver {
            lane,
            broker,
            spool,
            observer,
            sinks: BrokerSinks { inputs: inputs_tx.clone(), connection },
            inputs,
            app,
            tasks: tasks_tx,
            handoffs: Default::default(),
            uncommitted: Default::default(),
            watches: Watches { status, counters, depths, spool_full },
            done: done_tx,
            conn: None,
        };
        let endpoint = Self {
            id,
            app: app_tx,
            tasks: Mutex::new(tasks),
            status: status_rx,
            counters: counters_rx,
            depths: depths_rx,
            spool_full: spool_full_rx,
            connection: connection_rx,
            done: Mutex::new(Some(done_rx)),
            #[cfg(feature = "rabbitmq")]
            corrupt: Vec::new(),
        };
        Ok((endpoint, driver.run(inputs_tx, seen)))
    }

    /// The next task, in arrival order; `None` once the endpoint has shut
    /// down. Workers may wait on it concurrently. The body is read from the
    /// spool for this call (a few tasks ahead), so tasks waiting for the
    /// application take no memory beyond what core keeps of them.
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

    /// Why intake waits for the spool (its filesystem below the free-space
    /// floor, a write LMDB refused), while it does: SPEC §4 "Disk space".
    pub fn spool_full(&self) -> Option<String> {
        self.spool_full.borrow().clone()
    }

    /// The connection to the broker while there is one: its name, the
    /// broker node and address, TLS, the broker's version.
    pub fn connection(&self) -> Option<ConnectionInfo> {
        self.connection.borrow().as_ref().map(|(_, info)| info.clone())
    }

    /// Spool records found damaged at open (left out and quarantined).
    #[cfg(feature = "rabbitmq")]
    pub fn damaged_records(&self) -> &[crate::spool::CorruptRecord] {
        &self.corrupt
    }

    /// Stops: takes no more tasks from the broker, lets the spool commit
    /// what is queued (acking what that makes durable), closes the
    /// connection and stops handing out tasks. Bounded by the lane's
    /// `shutdown_grace` whatever the broker and the disk do; what is not
    /// durable by then is delivered again by the broker later. Tasks handed
    /// out and not completed are handed out again by the next endpoint on
    /// this spool. Calling it again does nothing.
    pub async fn shutdown(&self) {
        let _ = self.app.send(AppCmd::Shutdown);
        if let Some(done) = self.done.lock().await.take() {
            // An error only means the driver is gone already.
            let _ = done.await;
        }
        let mut tasks = self.tasks.lock().await;
        tasks.close();
        while tasks.try_recv().is_ok() {}
    }
}
