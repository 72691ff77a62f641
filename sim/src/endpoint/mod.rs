//! A simulated endpoint: the endpoint users ship (`tasklane_io::endpoint`,
//! its one driver and core's lane), with only the last adapters swapped:
//! the simulated broker connection over turmoil for amqprs
//! ([`broker_port`]), an in-memory spool that loses unsynced writes in a
//! crash for LMDB ([`spool_port`]). A [`Worker`](crate::worker::Worker)
//! plays the application.
//!
//! The [`SimEndpoint`] handle lives outside the turmoil host: it keeps the
//! durable spool and the endpoint's history across crashes; each boot of
//! the host starts a fresh endpoint on what the spool kept (one "spool
//! lifetime").

mod broker_port;
mod convert;
mod observe;
pub mod poison;
mod spool_port;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tasklane_core::{Config, TaskId};
use tasklane_io::endpoint::Endpoint;

use crate::rng::Rng;
use crate::spool::DurableSpool;
use crate::worker::{Context, Worker};

pub use broker_port::SimBroker;
pub use convert::{raw_to_wire, wire_to_raw};
pub use spool_port::SimSpool;

/// What an endpoint did that the oracles judge and the trace hashes. Free
/// of wall-clock values, so that the history of a seed is the same on
/// every run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// A boot of the host: a new spool lifetime.
    Started { life: u64, inbox: usize, outbox: usize },
    /// A task given to the application.
    Handoff { life: u64, task: TaskId, recovered: bool },
    /// The lane's status changed.
    Status { life: u64, status: String },
    /// Intake started waiting for the spool (why), or stopped (`None`).
    SpoolFull { life: u64, reason: Option<String> },
    /// The auditor found a lane invariant broken.
    Violation { life: u64, invariant: &'static str, detail: String },
}

/// Knobs of one endpoint host, drawn from the seed.
#[derive(Clone, Debug)]
pub struct EndpointKnobs {
    /// Broker host and port, per address.
    pub brokers: Vec<(String, u16)>,
    pub heartbeat_ms: u32,
    /// A group commit takes up to this long (the simulated fsync).
    pub fsync_max: Duration,
    /// The application takes up to this long per task.
    pub work_max: Duration,
}

struct Inner {
    host: String,
    config: Config,
    knobs: EndpointKnobs,
    worker: Worker,
    spool: DurableSpool,
    log: RefCell<Vec<Record>>,
    /// What the lane did that the history leaves out (so that the trace of
    /// a seed stays what it was): connections it dropped, and why.
    notes: RefCell<Vec<String>>,
    lives: Cell<u64>,
}

/// Handle to one simulated endpoint; cheap to clone.
#[derive(Clone)]
pub struct SimEndpoint(Rc<Inner>);

impl SimEndpoint {
    /// An endpoint named `host` (its turmoil host name) running `config`,
    /// with `worker` as its application.
    pub fn new(host: &str, config: Config, knobs: EndpointKnobs, worker: Worker) -> Self {
        SimEndpoint(Rc::new(Inner {
            host: host.to_owned(),
            config,
            knobs,
            worker,
            spool: DurableSpool::new(),
            log: RefCell::new(Vec::new()),
            notes: RefCell::new(Vec::new()),
            lives: Cell::new(0),
        }))
    }

    /// The host software for `Sim::host`; each call is one boot.
    pub fn host(&self) -> impl Fn() -> Pin<Box<dyn Future<Output = turmoil::Result>>> {
        let ep = self.clone();
        move || Box::pin(boot(ep.clone()))
    }

    pub fn name(&self) -> &str {
        &self.0.host
    }

    pub fn spool(&self) -> &DurableSpool {
        &self.0.spool
    }

    /// Boots so far.
    pub fn lives(&self) -> u64 {
        self.0.lives.get()
    }

    pub fn log_len(&self) -> usize {
        self.0.log.borrow().len()
    }

    /// Records from index `from` on.
    pub fn records_since(&self, from: usize) -> Vec<Record> {
        self.0.log.borrow().get(from..).unwrap_or_default().to_vec()
    }

    /// What [`Inner::notes`] holds.
    pub fn notes(&self) -> Vec<String> {
        self.0.notes.borrow().clone()
    }

    fn note(&self, note: String) {
        self.0.notes.borrow_mut().push(note);
    }

    fn record(&self, r: Record) {
        self.0.log.borrow_mut().push(r);
    }

    /// The broker connection name of this endpoint's attempt `conn` in
    /// spool lifetime `life`; [`SimEndpoint::owns_client`] maps it back.
    fn client_name(host: &str, life: u64, conn: u64) -> String {
        format!("{host}/{life}/{conn}")
    }

    /// Whether a broker client name belongs to this endpoint.
    pub fn owns_client(&self, client: &str) -> bool {
        client.split_once('/').is_some_and(|(host, _)| host == self.0.host)
    }
}

/// One boot of the host: the shipped endpoint on the simulated adapters,
/// and the worker over it.
async fn boot(ep: SimEndpoint) -> turmoil::Result {
    let life = ep.lives() + 1;
    ep.0.lives.set(life);
    let snapshot = ep.spool().snapshot();
    ep.record(Record::Started { life, inbox: snapshot.inbox.len(), outbox: snapshot.outbox.len() });
    let mut cfg = ep.0.config.clone();
    cfg.seed = Rng::new(cfg.seed).fork(life).next_u64();
    let mut rng = Rng::new(cfg.seed);
    let knobs = &ep.0.knobs;
    cfg.addresses = knobs.brokers.len();
    let host = ep.0.host.clone();
    let broker = SimBroker {
        addresses: knobs.brokers.clone(),
        name: Box::new(move |conn| SimEndpoint::client_name(&host, life, conn.0)),
        heartbeat_ms: knobs.heartbeat_ms,
    };
    let spool = SimSpool::new(ep.spool().clone(), knobs.fsync_max, rng.fork(0x5E11));
    let observer = observe::SimObserver::new(ep.clone(), life);
    let (endpoint, driver) = Endpoint::start(cfg, snapshot, broker, spool, observer)?;
    let driver = tokio::task::spawn_local(driver);
    let ctx = Context { rng: rng.fork(0xA99), host: ep.0.host.clone(), life, work_max: knobs.work_max };
    (ep.0.worker)(Arc::new(endpoint), ctx).await;
    driver.await?;
    Ok(())
}
