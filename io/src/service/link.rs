//! The service side's brokers (SPEC §2, Brokers): a list of nodes, a
//! connection to the first one that answers, and a new connection on
//! another node when that one fails.
//!
//! Which node comes next is core's policy ([`BrokerRounds`]: one attempt
//! per node, in order or shuffled, a backoff after a full round, staying on
//! a node that works); this module only connects and watches.
//!
//! Opening tries every node once and fails if none answers, so a command
//! pointed at a dead broker says so at once. Once connected, a lost
//! connection is followed by rounds over the nodes with backoff until one
//! answers or [`Brokers::give_up_after`] has passed.

use std::path::Path;
use std::time::Duration;

use amqprs::connection::Connection;
use tasklane_core::{BackoffConfig, BrokerRounds, EndpointId, Failover};
use tokio::sync::{mpsc, watch};

use super::submit::is_connection_failure;
use super::{Provisioned, ServiceError, TaskQueue};
use crate::amqp::{self, ConnectOptions, ConnectionEvent, ConnectionInfo, UrlListError};

/// The broker nodes the service side may use, and how it moves between
/// them. Cheap to clone.
///
/// ```
/// use tasklane_core::Failover;
/// use tasklane_io::service::Brokers;
/// let brokers = Brokers::parse("amqp://guest:guest@node1:5672/prod,amqp://guest:guest@node2:5672/prod")?
///     .failover(Failover::InOrder)
///     .connection_name("billing service");
/// assert_eq!(brokers.nodes().len(), 2);
/// # Ok::<(), tasklane_io::amqp::UrlListError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Brokers {
    nodes: Vec<ConnectOptions>,
    failover: Failover,
    connect_timeout: Duration,
    give_up_after: Duration,
    backoff: BackoffConfig,
    seed: u64,
}

impl Brokers {
    /// Most time one connection attempt may take (TCP, TLS, AMQP handshake).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a lost connection is retried before the operation fails:
    /// long enough for a cluster to elect new queue leaders and for a
    /// restarted single node to boot.
    pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(60);

    /// The nodes of `nodes` (at least one), shuffled from a random seed.
    pub fn new(nodes: Vec<ConnectOptions>) -> Result<Self, ServiceError> {
        if nodes.is_empty() {
            return Err(ServiceError::NoBrokers);
        }
        Ok(Self {
            nodes,
            failover: Failover::default(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            give_up_after: Self::DEFAULT_GIVE_UP_AFTER,
            backoff: BackoffConfig { initial: Duration::from_millis(200), max: Duration::from_secs(5) },
            seed: uuid::Uuid::new_v4().as_u64_pair().0,
        })
    }

    /// The nodes of a comma-separated list of URLs, every one of them judged.
    pub fn parse(urls: &str) -> Result<Self, UrlListError> {
        let nodes = ConnectOptions::parse_list(urls)?;
        Ok(Self::new(nodes).expect("a parsed list holds at least one URL"))
    }

    /// The order in which nodes are tried (default: shuffled).
    pub fn failover(mut self, failover: Failover) -> Self {
        self.failover = failover;
        self
    }

    /// Most time one connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a lost connection is retried before the operation fails.
    pub fn give_up_after(mut self, wait: Duration) -> Self {
        self.give_up_after = wait;
        self
    }

    /// The seed of the shuffle and the backoff jitter (default: random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Names the connections to every node whose URL names none.
    pub fn connection_name(mut self, name: &str) -> Self {
        for node in &mut self.nodes {
            if node.connection_name.is_none() {
                node.connection_name = Some(name.to_string());
            }
        }
        self
    }

    /// Trusts the CAs in PEM file `path` for every `amqps://` node.
    pub fn tls_ca(mut self, path: impl AsRef<Path>) -> Self {
        for node in &mut self.nodes {
            node.tls.ca_file = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// The nodes, in the order given.
    pub fn nodes(&self) -> &[ConnectOptions] {
        &self.nodes
    }

    /// A connection to the first node that answers (each tried once), and
    /// where it goes. It does not fail over: for work of the caller's own.
    pub async fn connect(&self) -> Result<(Connection, ConnectionInfo), ServiceError> {
        let (conn, info, _lost) = connect_round(self, &mut self.rounds()).await?;
        Ok((conn, info))
    }

    /// [`provision`](super::provision) on the first node that answers; on
    /// another one if the connection is lost meanwhile (provisioning is
    /// idempotent). Declare quorum queues once every node of the cluster
    /// has joined: their replicas go to the nodes that are members then.
    pub async fn provision(
        &self,
        endpoint: &EndpointId,
        queue: impl Into<TaskQueue>,
    ) -> Result<Provisioned, ServiceError> {
        let queue = queue.into();
        let mut link = Link::open(self).await?;
        loop {
            match super::provision(link.connection(), endpoint, queue).await {
                Err(e) if is_connection_failure(&e) => link.reconnect().await?,
                outcome => {
                    link.close().await;
                    return outcome;
                }
            }
        }
    }

    /// Core's rounds of attempts over these nodes.
    fn rounds(&self) -> BrokerRounds {
        BrokerRounds::new(self.nodes.len(), self.failover, self.backoff, self.seed)
    }
}

impl From<ConnectOptions> for Brokers {
    fn from(node: ConnectOptions) -> Self {
        Self::new(vec![node]).expect("one node")
    }
}

/// A connection to one of the brokers, made again on another node when it
/// is lost.
pub(crate) struct Link {
    brokers: Brokers,
    rounds: BrokerRounds,
    conn: Connection,
    info: ConnectionInfo,
    lost: watch::Receiver<bool>,
    failovers: u64,
}

impl Link {
    /// Connects to the first node that answers, trying each once.
    pub(crate) async fn open(brokers: &Brokers) -> Result<Self, ServiceError> {
        let mut rounds = brokers.rounds();
        let (conn, info, lost) = connect_round(brokers, &mut rounds).await?;
        Ok(Self { brokers: brokers.clone(), rounds, conn, info, lost, failovers: 0 })
    }

    /// The connection in use.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Where the connection in use goes.
    pub(crate) fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Set to `true` once the connection in use is lost.
    pub(crate) fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// How many times the connection was made again after a loss.
    pub(crate) fn failovers(&self) -> u64 {
        self.failovers
    }

    /// What was set up on the connection works: keep this node.
    pub(crate) fn healthy(&mut self) {
        self.rounds.healthy();
    }

    /// The connection in use failed: drop it and connect again, on the next
    /// node at once and after a backoff once every node has failed, until
    /// one answers or [`Brokers::give_up_after`] has passed.
    pub(crate) async fn reconnect(&mut self) -> Result<(), ServiceError> {
        let old = self.conn.clone();
        // Best effort, and bounded: the node may be gone.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), old.close()).await;
        });
        let deadline = tokio::time::Instant::now() + self.brokers.give_up_after;
        let from = self.info.peer;
        loop {
            let wait = self.rounds.failed();
            if tokio::time::Instant::now() + wait > deadline {
                return Err(ServiceError::GaveUp { after: self.brokers.give_up_after });
            }
            tokio::time::sleep(wait).await;
            let index = self.rounds.pick();
            if let Ok((conn, info, lost)) = attempt(&self.brokers, index).await {
                tracing::warn!(from = %from, to = %info.peer, "service connection moved to another broker node");
                (self.conn, self.info, self.lost) = (conn, info, lost);
                self.failovers += 1;
                return Ok(());
            }
        }
    }

    /// Closes the connection (best effort, bounded).
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.close()).await;
    }
}

/// One attempt at each node, in the order of `rounds`; the first that
/// answers. A node that answered and refused (credentials, vhost) is no
/// reason to stop: the next one may be the one that works. None answering
/// is an error naming each node's failure.
async fn connect_round(
    brokers: &Brokers,
    rounds: &mut BrokerRounds,
) -> Result<(Connection, ConnectionInfo, watch::Receiver<bool>), ServiceError> {
    let mut failures = Vec::new();
    loop {
        let index = rounds.pick();
        match attempt(brokers, index).await {
            Ok(up) => return Ok(up),
            Err(e) => failures.push(e),
        }
        if !rounds.failed().is_zero() {
            break;
        }
    }
    if failures.len() == 1 {
        return Err(failures.pop().expect("one failure"));
    }
    let detail: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Err(ServiceError::Unreachable { nodes: failures.len(), detail: detail.join("; ") })
}

/// Connects to node `index` within the connect timeout and watches the
/// connection for its loss.
async fn attempt(
    brokers: &Brokers,
    index: usize,
) -> Result<(Connection, ConnectionInfo, watch::Receiver<bool>), ServiceError> {
    let node = &brokers.nodes[index];
    let (conn, info) = match tokio::time::timeout(brokers.connect_timeout, amqp::connect_with_info(node)).await {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(ServiceError::ConnectTimeout { url: node.url.to_string(), after: brokers.connect_timeout })
        }
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    amqp::watch_connection(&conn, (), tx)
        .await
        .map_err(|source| amqp::Error::Amqp { op: "connection callback", source })?;
    let (lost_tx, lost) = watch::channel(false);
    tokio::spawn(async move {
        while let Some(((), event)) = events.recv().await {
            if matches!(event, ConnectionEvent::Lost { .. } | ConnectionEvent::Closed { .. }) {
                let _ = lost_tx.send(true);
            }
            if matches!(event, ConnectionEvent::Lost { .. }) {
                break;
            }
        }
    });
    Ok((conn, info, lost))
}
