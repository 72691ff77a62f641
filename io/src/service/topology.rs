//! The topology of SPEC §2, declared idempotently by the service.

use std::fmt;
use std::str::FromStr;

use amqprs::channel::{Channel, ExchangeDeclareArguments, ExchangeType, QueueBindArguments, QueueDeclareArguments};
use amqprs::connection::Connection;
use amqprs::{FieldTable, FieldValue};
use tasklane_core::EndpointId;

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
    #[default]
    Classic,
    /// A quorum queue (replicated; failover by single active consumer only).
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

fn field(table: &mut FieldTable, name: &str, value: FieldValue) {
    table.insert(name.try_into().expect("argument names are short"), value);
}

/// The arguments of `E.tasks`.
fn task_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::new();
    field(&mut args, "x-queue-type", queue_type.as_str().into());
    field(&mut args, "x-single-active-consumer", true.into());
    field(&mut args, "x-dead-letter-exchange", DEAD.into());
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

/// Declares the topology of SPEC §2 for `endpoint`: its durable task queue
/// `E.tasks` (single active consumer, dead-lettering to `tasklane.dead`, of
/// `queue_type`), the `results` exchange and queue, `tasklane.dead`, and
/// `tasklane.status` (bound to `results` with `*.status`, bounded in length
/// and age).
///
/// Idempotent: declaring what exists changes nothing. Declaring `E.tasks`
/// with another queue type than it has fails with the broker's
/// `PRECONDITION_FAILED` (a queue cannot change type).
pub async fn provision(conn: &Connection, endpoint: &EndpointId, queue_type: QueueType) -> Result<(), ServiceError> {
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let (channel, close) = amqp::open_channel(conn, (), tx).await?;
    let outcome =
        declare(&channel, endpoint, queue_type).await.map_err(|(op, e)| amqp::Error::from_channel(op, e, &close));
    if channel.is_open() {
        let _ = channel.close().await;
    }
    Ok(outcome?)
}

async fn declare(
    channel: &Channel,
    endpoint: &EndpointId,
    queue_type: QueueType,
) -> Result<(), (&'static str, amqprs::error::Error)> {
    channel
        .exchange_declare(ExchangeDeclareArguments::of_type(DEAD, ExchangeType::Fanout).durable(true).finish())
        .await
        .map_err(|e| ("exchange.declare", e))?;
    channel.queue_declare(QueueDeclareArguments::durable_client_named(DEAD)).await.map_err(|e| ("queue.declare", e))?;
    channel.queue_bind(QueueBindArguments::new(DEAD, DEAD, "")).await.map_err(|e| ("queue.bind", e))?;

    channel
        .exchange_declare(ExchangeDeclareArguments::of_type(RESULTS, ExchangeType::Topic).durable(true).finish())
        .await
        .map_err(|e| ("exchange.declare", e))?;
    channel
        .queue_declare(QueueDeclareArguments::durable_client_named(RESULTS))
        .await
        .map_err(|e| ("queue.declare", e))?;
    channel
        .queue_bind(QueueBindArguments::new(RESULTS, RESULTS, RESULTS_BINDING))
        .await
        .map_err(|e| ("queue.bind", e))?;

    let status = QueueDeclareArguments::durable_client_named(STATUS_QUEUE).arguments(status_queue_arguments()).finish();
    channel.queue_declare(status).await.map_err(|e| ("queue.declare", e))?;
    channel
        .queue_bind(QueueBindArguments::new(STATUS_QUEUE, RESULTS, STATUS_BINDING))
        .await
        .map_err(|e| ("queue.bind", e))?;

    let queue = endpoint.task_queue();
    channel
        .queue_declare(
            QueueDeclareArguments::durable_client_named(&queue).arguments(task_queue_arguments(queue_type)).finish(),
        )
        .await
        .map_err(|e| ("queue.declare", e))?;
    Ok(())
}
