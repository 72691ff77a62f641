//! The ports of the endpoint driver: what it needs of a broker connection
//! and of a spool, and nothing more. The driver is written once against
//! these traits (after TigerBeetle's replica, generic over its storage and
//! message bus); the io crate plugs in amqprs and LMDB
//! ([`crate::endpoint::Endpoint::open`]), the simulation its simulated
//! broker connection over turmoil and its in-memory spool.
//!
//! Adapters translate and decide nothing: every command is one of core's
//! outputs, every report one of core's inputs, sent through an
//! [`InputSink`] in the order things happened. Timeouts, retries and
//! standby detection are core's.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tasklane_core::{
    Amqp, ConnId, Counters, Input, Lane, OutboxSeq, Output, SpoolSnapshot, SpoolWrite, Status, Task, UsageError,
};
use tokio::sync::{mpsc, watch};

/// Where adapters report what happened, as core inputs. Cheap to clone;
/// never blocks (amqprs runs callbacks on its reader task, which must not
/// wait). Volume is bounded by core (prefetch, unconfirmed publishes).
#[derive(Clone, Debug)]
pub struct InputSink(mpsc::UnboundedSender<Input>);

impl InputSink {
    pub(super) fn channel() -> (Self, mpsc::UnboundedReceiver<Input>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    /// Reports `input`; false once the driver is gone.
    pub fn send(&self, input: Input) -> bool {
        self.0.send(input).is_ok()
    }
}

/// What a connection is, as the broker and the operator see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// The connection name the broker shows (client property
    /// `connection_name`).
    pub name: String,
    /// The broker node, as configured: `host:port` of the URL in use.
    #[serde(default)]
    pub node: String,
    /// The broker's address this connection reached.
    pub peer: SocketAddr,
    /// Whether the connection runs over TLS.
    pub tls: bool,
    /// Virtual host.
    pub vhost: String,
    /// User logged in as.
    pub user: String,
    /// Heartbeat interval settled with the broker, in seconds.
    pub heartbeat: u16,
    /// The broker's product and version, e.g. `RabbitMQ 3.10.8`.
    pub broker: String,
    /// The broker's cluster name.
    pub cluster: String,
}

/// The live connection, for status pages: set by the newest attempt once
/// connected, cleared by it when it ends.
#[derive(Clone, Debug)]
pub struct ConnectionWatch(Arc<watch::Sender<Option<(ConnId, ConnectionInfo)>>>);

impl ConnectionWatch {
    pub(super) fn channel() -> (Self, watch::Receiver<Option<(ConnId, ConnectionInfo)>>) {
        let (tx, rx) = watch::channel(None);
        (Self(Arc::new(tx)), rx)
    }

    /// Attempt `conn` is connected (ignored if a newer one already is).
    pub fn connected(&self, conn: ConnId, info: ConnectionInfo) {
        self.0.send_if_modified(|current| {
            let newer = current.as_ref().is_none_or(|(c, _)| *c <= conn);
            if newer {
                *current = Some((conn, info));
            }
            newer
        });
    }

    /// Attempt `conn` ended (ignored if it is not the one shown).
    pub fn ended(&self, conn: ConnId) {
        self.0.send_if_modified(|current| {
            let ours = current.as_ref().is_some_and(|(c, _)| *c == conn);
            if ours {
                *current = None;
            }
            ours
        });
    }
}

/// What a broker adapter reports to.
#[derive(Clone, Debug)]
pub struct BrokerSinks {
    /// Answers and broker events, as inputs.
    pub inputs: InputSink,
    /// The live connection.
    pub connection: ConnectionWatch,
}

/// Connections to the broker addresses core picks.
pub trait BrokerPort: 'static {
    /// One connection (or attempt).
    type Conn: BrokerConn;

    /// Starts attempt `conn` to broker address number `address`. Reports
    /// `Connected` or `ConnectFailed`, then everything on the connection,
    /// to `sinks`. Never blocks; sets no timeout of its own (core gives up
    /// with `Disconnect`).
    fn connect(&mut self, conn: ConnId, address: usize, sinks: BrokerSinks) -> Self::Conn;

    /// Runs poison scan `scan` (`Amqp::Quarantine`) on broker address
    /// `address` with a client of its own: moves every message of the head
    /// of `queue` (up to `max`) that the endpoint's client cannot decode to
    /// `tasklane.dead` with the reason, gives the others back, and reports
    /// `QuarantineDone`. Never blocks; bounded in time.
    fn quarantine(&mut self, scan: u64, address: usize, queue: String, max: u32, inputs: InputSink);
}

/// One connection, driven by core's commands.
pub trait BrokerConn: 'static {
    /// Carries out `op`, in the order given, each to completion (an amqprs
    /// RPC must never be cancelled mid-flight), reporting its answer.
    /// Never blocks the driver.
    fn execute(&mut self, op: Amqp);

    /// Closes the connection politely (`connection.close`), bounded, and
    /// reports nothing more; abandons an attempt still connecting.
    fn close(self, reason: String);
}

/// The spool: writes in core's order, committed in groups.
pub trait SpoolPort: 'static {
    /// Starts the port: commits (`SpoolCommitted`), stalls and refusals go
    /// to `inputs`. Called once, before any write.
    fn start(&mut self, inputs: InputSink);

    /// Queues a write. Never blocks.
    fn write(&mut self, write: SpoolWrite);

    /// The inbox task at arrival position `arrival` as the last commit
    /// left it, body and all; `Ok(None)` when the inbox holds none there.
    /// The driver reads a task's body here when the application takes the
    /// task (core keeps no bodies); one short read, never a wait on the
    /// writer.
    fn task(&mut self, arrival: u64) -> Result<Option<Task>, String>;

    /// The bodies of the outbox results at `seqs` as the last commit left
    /// them, in order; `None` for a position the outbox holds nothing at.
    /// The driver reads them here for a batch of `Amqp::Publish` (core
    /// keeps no result bodies): one short read for the batch, never a
    /// wait on the writer.
    fn result_bodies(&mut self, seqs: &[OutboxSeq]) -> Result<Vec<Option<Bytes>>, String>;

    /// Stops: commits what it can within `grace`, then lets go of the
    /// spool (what is not committed by then was never acked).
    fn close(self, grace: Duration) -> impl Future<Output = ()>;
}

/// Watches the lane inside the driver: every input, its result and the
/// outputs it caused, and the lane after. Test layers plug in the auditor
/// (`tasklane_core::audit`) here; production uses [`NoObserver`].
pub trait Observer: 'static {
    /// Whether the driver should call this observer at all.
    const ACTIVE: bool = true;

    /// The lane was built from `snapshot`; `outputs` is what it asked for
    /// first.
    fn started(&mut self, lane: &Lane, snapshot: &SpoolSnapshot, outputs: &[Output]) {
        let _ = (lane, snapshot, outputs);
    }

    /// `lane.handle(now, input)` returned `result`; `status` and
    /// `counters` are the lane's from just before, `outputs` everything
    /// polled after it.
    #[allow(clippy::too_many_arguments)]
    fn handled(
        &mut self,
        status: &Status,
        counters: &Counters,
        now: Instant,
        input: &Input,
        result: &Result<(), UsageError>,
        outputs: &[Output],
        lane: &Lane,
    ) {
        let _ = (status, counters, now, input, result, outputs, lane);
    }
}

/// The observer that watches nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    const ACTIVE: bool = false;
}
