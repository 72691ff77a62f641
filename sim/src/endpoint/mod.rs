//! A simulated endpoint: tasklane-core's [`Lane`](tasklane_core::Lane)
//! driven by a sim shell over the simulation's wire protocol, with a spool
//! that loses uncommitted writes in a crash and a toy application.
//!
//! The [`Endpoint`] handle lives outside the turmoil host: it keeps the
//! durable spool and the endpoint's history across crashes; each boot of
//! the host runs a fresh shell (one "spool lifetime").

mod convert;
mod shell;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use tasklane_core::{Config, TaskId};

use crate::clock::Clock;
use crate::spool::DurableSpool;

pub use convert::{raw_to_wire, wire_to_raw};

/// What the shell did that the oracles judge. Free of wall-clock values, so
/// that the history of a seed is the same on every run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// A boot of the host: a new spool lifetime.
    Started { life: u64, inbox: usize, outbox: usize },
    /// A task given to the application.
    Handoff { life: u64, task: TaskId, recovered: bool },
    /// An ack sent to the broker, the tasks it covers, and those of them
    /// that were not durable in the spool when it was sent.
    AckSent { life: u64, covers: Vec<TaskId>, not_durable: Vec<TaskId> },
    /// A result left the outbox; `confirmed` if the broker had confirmed
    /// its publish to this shell.
    OutboxRemoved { life: u64, task: TaskId, confirmed: bool },
    /// The spool model refused a write (a bug in core).
    SpoolRefused { life: u64, error: String },
    /// The lane's status changed.
    Status { life: u64, status: String },
}

/// Knobs of one endpoint's shell, drawn from the seed.
#[derive(Clone, Debug)]
pub struct ShellKnobs {
    /// Broker host and port.
    pub broker: (String, u16),
    pub heartbeat_ms: u32,
    /// A group commit takes up to this long (the simulated fsync).
    pub fsync_max: Duration,
    /// The application takes up to this long per task.
    pub work_max: Duration,
}

struct Inner {
    host: String,
    config: Config,
    knobs: ShellKnobs,
    clock: Clock,
    spool: DurableSpool,
    log: RefCell<Vec<Record>>,
    lives: Cell<u64>,
}

/// Handle to one simulated endpoint; cheap to clone.
#[derive(Clone)]
pub struct Endpoint(Rc<Inner>);

impl Endpoint {
    /// An endpoint named `host` (its turmoil host name) running `config`.
    pub fn new(host: &str, config: Config, knobs: ShellKnobs, clock: Clock) -> Self {
        Endpoint(Rc::new(Inner {
            host: host.to_owned(),
            config,
            knobs,
            clock,
            spool: DurableSpool::new(),
            log: RefCell::new(Vec::new()),
            lives: Cell::new(0),
        }))
    }

    /// The host software for `Sim::host`; each call is one boot.
    pub fn host(&self) -> impl Fn() -> Pin<Box<dyn Future<Output = turmoil::Result>>> {
        let ep = self.clone();
        move || Box::pin(shell::run(ep.clone()))
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

    fn record(&self, r: Record) {
        self.0.log.borrow_mut().push(r);
    }

    /// The broker connection name of this endpoint's attempt `conn` in
    /// spool lifetime `life`; [`Endpoint::owns_client`] maps it back.
    fn client_name(&self, life: u64, conn: u64) -> String {
        format!("{}/{life}/{conn}", self.0.host)
    }

    /// Whether a broker client name belongs to this endpoint.
    pub fn owns_client(&self, client: &str) -> bool {
        client.split_once('/').is_some_and(|(host, _)| host == self.0.host)
    }
}
