//! The topology of SPEC §2, declared idempotently by the service.

use std::fmt;
use std::str::FromStr;

use amqprs::channel::{Channel, ExchangeDeclareArguments, ExchangeType, QueueBindArguments, QueueDeclareArguments};
use amqprs::connection::Connection;
use amqprs::{FieldTable, FieldValue};
use tasklane_core::EndpointId;

use super::declare::{self, Declared};
use super::ServiceError;
use crate::amqp;

/// The topic exchange endpoints publish results to, and the queue the
/// service consumes them from.
pub const RESULTS: &str = "results";
/// The binding of the `results` queue: every endpoint's `E.results`.
pub const RESULTS_BINDING: &str = "*.results";
/// The fanout exchange and the queue that keep what was rejected.
pub const DEAD: &str = "tasklane.dead";
/// The queue of endpoints' status reports, bound to `results`.
pub const STATUS_QUEUE: &str = "tasklane.status";
/// The binding of `tasklane.status`: every endpoint's `E.status`.
pub const STATUS_BINDING: &str = "*.status";
/// `tasklane.status` keeps at most this many reports (dropping the oldest)...
const STATUS_MAX_LENGTH: i64 = 10_000;
/// ...and none older than this (ms): a report is news, not a record.
const STATUS_TTL_MS: i64 = 10 * 60 * 1000;

/// The kind of an endpoint's task queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// A classic queue (also supports the exclusive-consumer failover mode).
    Classic,
    /// A quorum queue: replicated across a cluster's nodes, RabbitMQ's
    /// recommended type for data that must survive a node; failover by
    /// single active consumer only. The default.
    #[default]
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            _ => Err(format!("queue type {s:?} is neither \"classic\" nor \"quorum\"")),
        }
    }
}

/// How an endpoint's task queue is declared: its type and, on a quorum
/// queue, its delivery limit. A `QueueType` converts into one with the
/// default limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskQueue {
    /// Classic or quorum.
    pub queue_type: QueueType,
    /// Quorum queues only (`x-delivery-limit`): a message delivered this
    /// many times without an ack is dead-lettered to `tasklane.dead`
    /// instead of coming back. `None`: no limit.
    pub delivery_limit: Option<u32>,
}

impl TaskQueue {
    /// The default delivery limit, RabbitMQ 4's own default. Every lost
    /// connection returns the endpoint's unacked prefetch window and counts
    /// a delivery for each of those messages, yet the endpoint acks a task
    /// within one group commit of receiving it: twenty losses in a row
    /// before that ack is far beyond bad luck, while a message that kills
    /// every connection that receives it (one amqprs cannot decode) stops
    /// looping after twenty rounds.
    pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

    /// A quorum queue with the default delivery limit.
    pub fn quorum() -> Self {
        Self { queue_type: QueueType::Quorum, delivery_limit: Some(Self::DEFAULT_DELIVERY_LIMIT) }
    }

    /// A classic queue (no delivery limit: classic queues have none).
    pub fn classic() -> Self {
        Self { queue_type: QueueType::Classic, delivery_limit: None }
    }

    /// Sets the delivery limit (quorum queues only; ignored on classic ones).
    pub fn delivery_limit(mut self, limit: Option<u32>) -> Self {
        self.delivery_limit = limit;
        self
    }
}

impl Default for TaskQueue {
    fn default() -> Self {
        Self::quorum()
    }
}

impl From<QueueType> for TaskQueue {
    fn from(queue_type: QueueType) -> Self {
        match queue_type {
            QueueType::Classic => Self::classic(),
            QueueType::Quorum => Self::quorum(),
        }
    }
}

/// What provisioning found and left: the task queue as asked, and the
/// shared queues as they are (a shared queue that exists with the other
/// type is kept: it serves every endpoint of the vhost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// `E.tasks`'s type, as asked.
    pub task_queue: TaskQueue,
    /// The type of the `results` queue.
    pub results: QueueType,
    /// The type of the `tasklane.dead` queue.
    pub dead: QueueType,
}

fn field(table: &mut FieldTable, name: &str, value: FieldValue) {
    table.insert(name.try_into().expect("argument names are short"), value);
}

/// The arguments of `E.tasks`.
fn task_queue_arguments(queue: TaskQueue) -> FieldTable {
    let mut args = FieldTable::new();
    field(&mut args, "x-queue-type", queue.queue_type.as_str().into());
    field(&mut args, "x-single-active-consumer", true.into());
    field(&mut args, "x-dead-letter-exchange", DEAD.into());
    if let (QueueType::Quorum, Some(limit)) = (queue.queue_type, queue.delivery_limit) {
        field(&mut args, "x-delivery-limit", FieldValue::l(limit.into()));
    }
    args
}

/// The arguments of a shared queue (`results`, `tasklane.dead`) created
/// along with a task queue of `queue_type`: none for classic, as
/// tasklane always declared them, so that existing ones stay equivalent.
fn shared_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::new();
    if queue_type == QueueType::Quorum {
        field(&mut args, "x-queue-type", queue_type.as_str().into());
    }
    args
}

/// The arguments of `tasklane.status`: a classic queue (reports are
/// transient; nothing to replicate) that cannot grow without end while no
/// service drains it.
fn status_queue_arguments() -> FieldTable {
    let mut args = FieldTable::new();
    field(&mut args, "x-queue-type", "classic".into());
    field(&mut args, "x-max-length", FieldValue::l(STATUS_MAX_LENGTH));
    field(&mut args, "x-overflow", "drop-head".into());
    field(&mut args, "x-message-ttl", FieldValue::l(STATUS_TTL_MS));
    args
}

/// Declares the shared queue `name`, or keeps it as it is if it exists with
/// the other type; its type.
async fn shared_queue(conn: &Connection, name: &str, queue_type: QueueType) -> Result<QueueType, ServiceError> {
    match declare::durable_queue(conn, name, shared_queue_arguments(queue_type)).await? {
        Declared::Ok => Ok(queue_type),
        Declared::Inequivalent { arg, current } if arg == "x-queue-type" => {
            Ok(if current.as_deref() == Some("quorum") { QueueType::Quorum } else { QueueType::Classic })
        }
        Declared::Inequivalent { arg, current } => {
            Err(ServiceError::QueueMismatch { queue: name.to_string(), arg, current, requested: None })
        }
    }
}

/// Declares `E.tasks` as `queue` asks; a queue of that name with another
/// type or delivery limit is refused, naming what it has.
async fn task_queue(conn: &Connection, endpoint: &EndpointId, queue: TaskQueue) -> Result<(), ServiceError> {
    let name = endpoint.task_queue();
    match declare::durable_queue(conn, &name, task_queue_arguments(queue)).await? {
        Declared::Ok => Ok(()),
        Declared::Inequivalent { arg, current } => {
            let requested = match arg.as_str() {
                "x-queue-type" => Some(queue.queue_type.to_string()),
                "x-delivery-limit" => queue.delivery_limit.map(|l| l.to_string()),
                _ => None,
            };
            Err(ServiceError::QueueMismatch { queue: name, arg, current, requested })
        }
    }
}

/// Declares the topology of SPEC §2 for `endpoint`: its durable task queue
/// `E.tasks` (single active consumer, dead-lettering to `tasklane.dead`, of
/// the type `queue` says, with its delivery limit if quorum), the `results`
/// exchange and queue, `tasklane.dead`, and `tasklane.status` (bound to
/// `results` with `*.status`, bounded in length and age). The shared
/// queues are created with the task queue's type, and kept as they are
/// when they exist.
///
/// Idempotent: declaring what exists changes nothing. A task queue that
/// exists with another type or delivery limit is refused with
/// [`ServiceError::QueueMismatch`] (RabbitMQ cannot change a queue's type
/// or arguments); the connection stays usable.
pub async fn provision(
    conn: &Connection,
    endpoint: &EndpointId,
    queue: impl Into<TaskQueue>,
) -> Result<Provisioned, ServiceError> {
    let queue = queue.into();
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let (channel, close) = amqp::open_channel(conn, (), tx).await?;
    let outcome = declare(&channel, conn, queue.queue_type).await;
    if channel.is_open() {
        let _ = channel.close().await;
    }
    let (results, dead) = match outcome {
        Ok(types) => types,
        Err(Rpc(op, e)) => return Err(amqp::Error::from_channel(op, e, &close).into()),
        Err(Shared(e)) => return Err(e),
    };
    task_queue(conn, endpoint, queue).await?;
    Ok(Provisioned { task_queue: queue, results, dead })
}

/// Why [`declare`] failed: an RPC on the main channel, or a shared queue.
enum DeclareError {
    Rpc(&'static str, amqprs::error::Error),
    Shared(ServiceError),
}
use DeclareError::{Rpc, Shared};

/// The shared topology; the types of `results` and `tasklane.dead`.
async fn declare(
    channel: &Channel,
    conn: &Connection,
    queue_type: QueueType,
) -> Result<(QueueType, QueueType), DeclareError> {
    channel
        .exchange_declare(ExchangeDeclareArguments::of_type(DEAD, ExchangeType::Fanout).durable(true).finish())
        .await
        .map_err(|e| Rpc("exchange.declare", e))?;
    let dead = shared_queue(conn, DEAD, queue_type).await.map_err(Shared)?;
    channel.queue_bind(QueueBindArguments::new(DEAD, DEAD, "")).await.map_err(|e| Rpc("queue.bind", e))?;

    channel
        .exchange_declare(ExchangeDeclareArguments::of_type(RESULTS, ExchangeType::Topic).durable(true).finish())
        .await
        .map_err(|e| Rpc("exchange.declare", e))?;
    let results = shared_queue(conn, RESULTS, queue_type).await.map_err(Shared)?;
    channel
        .queue_bind(QueueBindArguments::new(RESULTS, RESULTS, RESULTS_BINDING))
        .await
        .map_err(|e| Rpc("queue.bind", e))?;

    let status = QueueDeclareArguments::durable_client_named(STATUS_QUEUE).arguments(status_queue_arguments()).finish();
    channel.queue_declare(status).await.map_err(|e| Rpc("queue.declare", e))?;
    channel
        .queue_bind(QueueBindArguments::new(STATUS_QUEUE, RESULTS, STATUS_BINDING))
        .await
        .map_err(|e| Rpc("queue.bind", e))?;
    Ok((results, dead))
}
