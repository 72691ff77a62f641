//! Handler dispatch: tasks go to the handler registered for their kind
//! (the `tasklane-kind` header), each kind with its own concurrency limit.
//!
//! This is the handler registry of the source documents (GWCelery's
//! handlers by packet type, its dedicated serial workers): a kind with limit
//! 1 runs its tasks one at a time in arrival order, as a serial queue does,
//! while other kinds go on beside it. A busy kind never holds up another:
//! every kind has its own queue.
//!
//! Nothing is dropped and nothing crashes the endpoint:
//! - a task of a kind nobody registered gets a `failed` result whose body
//!   says so (and names the kinds there are);
//! - a task without a kind goes to the default handler, or fails the same
//!   way when there is none;
//! - a handler that panics gives a `failed` result saying so.
//!
//! ```no_run
//! # async fn worker() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use tasklane_io::dispatch::Dispatcher;
//! use tasklane_io::endpoint::{Endpoint, EndpointConfig};
//!
//! let endpoint = Arc::new(Endpoint::open(EndpointConfig::new("amqp://127.0.0.1", "ep-1", "/var/lib/ep-1")?).await?);
//! let mut dispatcher = Dispatcher::new();
//! // At most 4 resizes at once; superevents strictly one after the other.
//! dispatcher.register("resize", 4, |task| async move { Ok::<_, Bytes>(task.body) })?;
//! dispatcher.register("superevent", 1, |task| async move {
//!     if task.body.is_empty() { Err(Bytes::from("empty event")) } else { Ok(Bytes::from("filed")) }
//! })?;
//! let stats = dispatcher.run(endpoint.clone(), tokio::signal::ctrl_c()).await;
//! endpoint.shutdown().await;
//! # let _ = stats; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use tasklane_core::message::MAX_KIND_LEN;
use tasklane_core::{ResultStatus, Task};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::endpoint::Endpoint;

/// What a handler returns: `Ok(body)` for an `ok` result, `Err(body)` for a
/// `failed` one.
pub type Outcome = Result<Bytes, Bytes>;

type BoxedHandler = Arc<dyn Fn(Task) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Why a handler cannot be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The kind has a handler already.
    #[error("task kind {0:?} has a handler already")]
    Duplicate(String),
    /// A concurrency limit of 0 would never run anything.
    #[error("task kind {0:?}: the concurrency limit must be at least 1")]
    ZeroConcurrency(String),
    /// The kind could never be carried by a task.
    #[error("task kind {0:?} must be 1 to {MAX_KIND_LEN} bytes")]
    BadKind(String),
}

struct Route {
    handler: BoxedHandler,
    limit: usize,
}

/// A registry of handlers by task kind. Register, then [`Dispatcher::run`].
#[derive(Default)]
pub struct Dispatcher {
    routes: BTreeMap<String, Route>,
    default: Option<Route>,
}

/// What [`Dispatcher::run`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Results recorded, per kind (`""` for tasks without a kind).
    pub completed: BTreeMap<String, u64>,
    /// Tasks of a kind without a handler, answered `failed`.
    pub unknown: u64,
    /// Handlers that panicked (their tasks answered `failed`).
    pub panicked: u64,
}

fn boxed<F, Fut, O, E>(f: F) -> BoxedHandler
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    O: Into<Bytes>,
    E: Into<Bytes>,
{
    Arc::new(move |task| Box::pin(f(task).map(|r| r.map(Into::into).map_err(Into::into))))
}

impl Dispatcher {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs tasks of `kind` with `handler`, at most `concurrency` at once
    /// (1: one after the other, in arrival order).
    pub fn register<F, Fut, O, E>(
        &mut self,
        kind: impl Into<String>,
        concurrency: usize,
        handler: F,
    ) -> Result<(), DispatchError>
    where
        F: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Into<Bytes>,
        E: Into<Bytes>,
    {
        let kind = kind.into();
        if kind.is_empty() || kind.len() > MAX_KIND_LEN {
            return Err(DispatchError::BadKind(kind));
        }
        if concurrency == 0 {
            return Err(DispatchError::ZeroConcurrency(kind));
        }
        if self.routes.contains_key(&kind) {
            return Err(DispatchError::Duplicate(kind));
        }
        self.routes.insert(kind, Route { handler: boxed(handler), limit: concurrency });
        Ok(())
    }

    /// Runs tasks that carry no kind with `handler`, at most `concurrency`
    /// at once. Without one, such tasks are answered `failed`.
    pub fn register_default<F, Fut, O, E>(&mut self, concurrency: usize, handler: F) -> Result<(), DispatchError>
    where
        F: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Into<Bytes>,
        E: Into<Bytes>,
    {
        if concurrency == 0 {
            return Err(DispatchError::ZeroConcurrency(String::new()));
        }
        if self.default.is_some() {
            return Err(DispatchError::Duplicate(String::new()));
        }
        self.default = Some(Route { handler: boxed(handler), limit: concurrency });
        Ok(())
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        self.routes.keys().map(String::as_str).collect()
    }

    /// The `failed` body for a task no handler takes.
    fn unroutable_reason(&self, kind: Option<&str>) -> String {
        let known = if self.routes.is_empty() {
            "none".to_string()
        } else {
            self.routes.keys().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
        };
        match kind {
            Some(kind) => format!("no handler for task kind {kind:?} on this endpoint (kinds handled: {known})"),
            None => format!("task has no kind (tasklane-kind header) and this endpoint has no default handler (kinds handled: {known})"),
        }
    }

    /// Takes tasks from `endpoint` and runs each with its kind's handler,
    /// recording every result, until `stop` resolves or the endpoint shuts
    /// down. Then it starts nothing more and waits for the handlers already
    /// running; tasks taken but not started stay in the spool's inbox and
    /// are handed out again on the next start.
    pub async fn run(&self, endpoint: Arc<Endpoint>, stop: impl Future) -> DispatchStats {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut lanes: BTreeMap<Option<String>, mpsc::UnboundedSender<Task>> = BTreeMap::new();
        let mut lane_tasks = JoinSet::new();
        let routes =
            self.routes.iter().map(|(k, r)| (Some(k.clone()), r)).chain(self.default.iter().map(|r| (None, r)));
        for (kind, route) in routes {
            let (tx, rx) = mpsc::unbounded_channel();
            let lane = KindLane {
                kind: kind.clone(),
                handler: route.handler.clone(),
                slots: Arc::new(Semaphore::new(route.limit)),
                endpoint: endpoint.clone(),
                done: done_tx.clone(),
            };
            lane_tasks.spawn(lane.run(rx, stop_rx.clone()));
            lanes.insert(kind, tx);
        }
        drop(done_tx);
        let mut stats = DispatchStats::default();
        let stop = stop.fuse();
        tokio::pin!(stop);
        loop {
            let task = tokio::select! {
                biased;
                _ = &mut stop => break,
                task = endpoint.next_task() => match task {
                    Some(task) => task,
                    None => break, // the endpoint shut down
                },
            };
            match lanes.get(&task.kind) {
                Some(lane) => {
                    let _ = lane.send(task);
                }
                None => {
                    stats.unknown += 1;
                    let reason = self.unroutable_reason(task.kind.as_deref());
                    tracing::warn!(task = %task.id, kind = task.kind.as_deref().unwrap_or(""), "{reason}");
                    if let Err(e) = endpoint.complete(&task.id, ResultStatus::Failed, reason).await {
                        tracing::warn!(task = %task.id, "result not recorded: {e}");
                    }
                }
            }
            while let Ok(done) = done_rx.try_recv() {
                stats.count(done);
            }
        }
        let _ = stop_tx.send(true);
        drop(lanes);
        while lane_tasks.join_next().await.is_some() {}
        while let Some(done) = done_rx.recv().await {
            stats.count(done);
        }
        stats
    }
}

impl DispatchStats {
    fn count(&mut self, done: Done) {
        if done.recorded {
            *self.completed.entry(done.kind.unwrap_or_default()).or_default() += 1;
        }
        if done.panicked {
            self.panicked += 1;
        }
    }
}

/// One finished task, reported back to `run`.
struct Done {
    kind: Option<String>,
    panicked: bool,
    recorded: bool,
}

/// The queue of one kind: starts its tasks in arrival order, no more than
/// its limit at once.
struct KindLane {
    kind: Option<String>,
    handler: BoxedHandler,
    slots: Arc<Semaphore>,
    endpoint: Arc<Endpoint>,
    done: mpsc::UnboundedSender<Done>,
}

impl KindLane {
    async fn run(self, mut tasks: mpsc::UnboundedReceiver<Task>, mut stop: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        loop {
            let task = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                task = tasks.recv() => match task {
                    Some(task) => task,
                    None => break,
                },
            };
            let slot = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                slot = self.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let (handler, endpoint, done, kind) =
                (self.handler.clone(), self.endpoint.clone(), self.done.clone(), self.kind.clone());
            running.spawn(async move {
                let id = task.id.clone();
                let span = tracing::debug_span!("handler", task = %id, kind = kind.as_deref().unwrap_or(""));
                let outcome =
                    tracing::Instrument::instrument(AssertUnwindSafe(handler(task)).catch_unwind(), span).await;
                drop(slot);
                let (status, body, panicked) = match outcome {
                    Ok(Ok(body)) => (ResultStatus::Ok, body, false),
                    Ok(Err(body)) => (ResultStatus::Failed, body, false),
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "no message".into());
                        let kind = kind.as_deref().unwrap_or("(default)");
                        tracing::error!(task = %id, kind, "handler panicked: {msg}");
                        (
                            ResultStatus::Failed,
                            Bytes::from(format!("the handler of kind {kind:?} panicked: {msg}")),
                            true,
                        )
                    }
                };
                let recorded = match endpoint.complete(&id, status, body).await {
                    Ok(()) => true,
                    Err(e) => {
                        // Only after shutdown: the task runs again on the next start.
                        tracing::warn!(task = %id, "result not recorded: {e}");
                        false
                    }
                };
                let _ = done.send(Done { kind, panicked, recorded });
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    }
}
