//! The service side: provision, submit, results, task tracking (SPEC §5).
//!
//! Each piece takes either a connection of the caller's (and ends with an
//! error when it is lost), or [`Brokers`], a list of nodes: then it
//! connects to the first that answers and moves to another when that one
//! fails ([`Brokers::provision`], [`Submitter::connect`],
//! [`Results::connect`]).
//!
//! ```no_run
//! # async fn example(conn: amqprs::connection::Connection) -> Result<(), tasklane_io::service::ServiceError> {
//! use bytes::Bytes;
//! use tasklane_core::{EndpointId, Task, TaskId};
//! use tasklane_io::service::{provision, QueueType, Results, ResultsOptions, Submitter, TaskStore};
//!
//! let store = TaskStore::open("./tasklane-service")?;
//! let endpoint = EndpointId::new("ep-1").unwrap();
//! provision(&conn, &endpoint, QueueType::Classic).await?;
//!
//! let mut submitter = Submitter::open(&conn, store.clone()).await?;
//! let task = Task { id: TaskId::new("t-1").unwrap(), kind: None, body: Bytes::from("hello") };
//! submitter.submit(&endpoint, task).await?; // confirmed by the broker
//!
//! let mut results = Results::open(&conn, store, ResultsOptions::default()).await?;
//! let result = results.next().await?; // from ep-1, for t-1, once
//! results.close().await?; // acks and remembers what was handed over
//! # Ok(()) }
//! ```

pub(crate) mod confirm;
mod consume;
mod declare;
mod link;
pub mod management;
mod results;
mod store;
mod submit;
mod topology;
pub mod users;

use std::time::Duration;

use tasklane_core::{EndpointId, TaskId};

pub use link::Brokers;
pub use management::{Management, ManagementError};
pub use results::{AcceptedResult, ResultCounters, Results, ResultsOptions, REASON_DETAIL_HEADER};
pub(crate) use store::now_ms;
pub use store::{
    DeadLetter, FleetRecord, Retention, Sample, StateFilter, StoreError, StoreWrite, TaskCounts, TaskFilter, TaskState,
    TaskStore, TrackedTask,
};
pub use submit::{SubmitCounters, Submitter};
pub use topology::{
    provision, Provisioned, QueueType, TaskQueue, DEAD, RESULTS, RESULTS_BINDING, STATUS_BINDING, STATUS_QUEUE,
};
pub use users::{provision_user, EndpointUser, Permissions, UserError};

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The broker returned a task as unroutable: the endpoint's queue does
    /// not exist (it was never provisioned, or was deleted).
    #[error("endpoint {endpoint} is not provisioned: the broker could not route to {endpoint}.tasks ({code} {text})")]
    Unroutable {
        /// The endpoint the task was submitted to.
        endpoint: EndpointId,
        /// The broker's reply code (312 NO_ROUTE).
        code: u16,
        /// The broker's reply text.
        text: String,
    },
    /// The broker refused to take a task (negative confirm).
    #[error("the broker refused task {0} (negative confirm)")]
    Nacked(TaskId),
    /// The broker refused to take a dead-lettered result.
    #[error("the broker refused a dead-lettered result (negative confirm)")]
    DeadLetterRefused,
    /// No confirm arrived in time.
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(Duration),
    /// The broker closed the channel, saying why.
    #[error("the broker closed the channel: {code} {text}")]
    ChannelClosed {
        /// The reply code (406 PRECONDITION_FAILED, 404 NOT_FOUND, ...).
        code: u16,
        /// The reply text.
        text: String,
    },
    /// The endpoint's task queue exists with another type or argument, and
    /// RabbitMQ cannot change it.
    #[error("{}", mismatch(queue, arg, current.as_deref(), requested.as_deref()))]
    QueueMismatch {
        /// The queue.
        queue: String,
        /// The argument that differs, e.g. `x-queue-type`.
        arg: String,
        /// The queue's value (`None`: not set; for the type, classic).
        current: Option<String>,
        /// The value asked for (`None`: not set).
        requested: Option<String>,
    },
    /// The connection was lost while waiting for the broker.
    #[error("the connection to the broker was lost")]
    ConnectionLost,
    /// A broker list with no node in it.
    #[error("no broker URL given")]
    NoBrokers,
    /// No node of the broker list answered (each tried once).
    #[error("none of the {nodes} broker nodes answered: {detail}")]
    Unreachable {
        /// How many nodes were tried.
        nodes: usize,
        /// Each node's failure, `; `-separated.
        detail: String,
    },
    /// A node accepted no connection within the connect timeout.
    #[error("cannot connect to {url}: no answer within {after:?}")]
    ConnectTimeout {
        /// The node's URL, without its password.
        url: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The connection was lost and no node answered again in time.
    #[error("the connection to the broker was lost and no broker node answered for {after:?}")]
    GaveUp {
        /// How long nodes were tried.
        after: Duration,
    },
    /// The broker cancelled the results consumer, or its channel closed.
    #[error("the results consumer was cancelled (queue deleted, or connection lost)")]
    ConsumerGone,
    /// A blocking task was cancelled (the runtime is shutting down).
    #[error("cancelled: the runtime is shutting down")]
    Cancelled,
    /// An AMQP operation failed.
    #[error(transparent)]
    Amqp(#[from] crate::amqp::Error),
    /// A message cannot be expressed as AMQP properties.
    #[error("cannot publish: {0}")]
    Convert(#[from] crate::amqp::ConvertError),
    /// The task store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The one line of [`ServiceError::QueueMismatch`]: what the queue has, and
/// how to go on.
fn mismatch(queue: &str, arg: &str, current: Option<&str>, requested: Option<&str>) -> String {
    let recreate = "or move its tasks away, delete it and provision again";
    match arg {
        "x-queue-type" => {
            let has = current.unwrap_or("classic");
            format!(
                "queue {queue} exists as a {has} queue, not {}, and RabbitMQ cannot change a queue's type: \
                 provision it as {has} (--queue-type {has}), {recreate}",
                requested.unwrap_or("classic")
            )
        }
        "x-delivery-limit" => {
            let has = current.unwrap_or("none");
            format!(
                "queue {queue} exists with delivery limit {has}, not {}, and RabbitMQ cannot change a queue's \
                 arguments: provision it with delivery limit {has} (--delivery-limit {}), {recreate}",
                requested.unwrap_or("none"),
                current.unwrap_or("0")
            )
        }
        _ => format!(
            "queue {queue} exists with {arg} {}, not {}, and RabbitMQ cannot change a queue's arguments: {recreate}",
            current.unwrap_or("unset"),
            requested.unwrap_or("unset")
        ),
    }
}
