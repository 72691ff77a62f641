//! A simulated RabbitMQ broker that runs as a turmoil host.
//!
//! Its durable state (topology, queue contents, the event log) lives in a
//! [`Broker`] handle outside the host, so crashing and restarting the host
//! keeps it, while connections, channels, consumers and delivery tags are
//! lost with the process, as on a real broker. The same handle is the
//! simulation's observer: see the query methods in [`observe`].
//!
//! ```no_run
//! use tasklane_sim::broker::{Broker, BrokerConfig, QueueKind, Topology};
//!
//! let broker = Broker::new(BrokerConfig::new(Topology::tasklane(&["E"], QueueKind::Classic)));
//! let mut sim = turmoil::Builder::new().build();
//! sim.host("broker", broker.host());
//! ```

mod consume;
mod engine;
pub mod event;
mod host;
pub mod observe;
mod publish;
mod settle;
pub mod store;
pub mod topology;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

pub use event::{ChannelRef, ConnId, Event, PublishOutcome, SettleKind, SettleRecord, SettledMessage};
pub use observe::{ConnectionInfo, ConsumerInfo, Delivery};
pub use settle::{DEATH_EXCHANGE, DEATH_QUEUE, DEATH_REASON};
pub use store::{QueueCounts, Stored};
pub use topology::{ExchangeKind, QueueKind, QueueSpec, Topology, DEAD, RESULTS};

/// The AMQP port.
pub const PORT: u16 = 5672;

/// How the broker is set up.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub topology: Topology,
    /// The broker's heartbeat proposal in milliseconds (0: none).
    pub heartbeat_ms: u32,
    pub port: u16,
}

impl BrokerConfig {
    /// A broker with this topology, 1 s heartbeats, on [`PORT`].
    pub fn new(topology: Topology) -> Self {
        BrokerConfig { topology, heartbeat_ms: 1_000, port: PORT }
    }
}

/// Handle to the simulated broker's state; cheap to clone. Single-threaded
/// (turmoil runs every host on one thread).
#[derive(Clone)]
pub struct Broker {
    engine: Rc<RefCell<engine::Engine>>,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker { engine: Rc::new(RefCell::new(engine::Engine::new(config))) }
    }

    /// The host software to register with `Sim::host`; each call of the
    /// returned closure is one broker boot.
    pub fn host(&self) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>> {
        let broker = self.clone();
        move || Box::pin(host::serve(broker.clone()))
    }
}

#[cfg(test)]
mod tests;
