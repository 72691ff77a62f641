//! The application inside a simulated endpoint: a [`Worker`] is an async
//! function over the very [`Endpoint`] users ship, run once per boot of the
//! endpoint's host. The simulation's own is [`echo`]; users plug in theirs
//! (see [`crate::check`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tasklane_core::ResultStatus;
pub use tasklane_io::endpoint::Endpoint;

use crate::rng::Rng;

/// What a worker gets besides its endpoint: randomness drawn from the
/// seed (use it instead of OS randomness, or the seed does not replay) and
/// where it runs.
#[derive(Clone, Debug)]
pub struct Context {
    /// Seeded randomness of this boot.
    pub rng: Rng,
    /// The endpoint's turmoil host name.
    pub host: String,
    /// Which boot of the host this is (a new spool lifetime each).
    pub life: u64,
    /// The seed's bound of work time per task, for workers that simulate
    /// work with `tokio::time::sleep`.
    pub work_max: Duration,
}

/// A worker: called once per boot with the endpoint; runs until
/// `next_task` returns `None` (or forever). Single-threaded: it may spawn
/// with `tokio::task::spawn_local` and hold `Rc`s.
pub type Worker = Rc<dyn Fn(Arc<Endpoint>, Context) -> Pin<Box<dyn Future<Output = ()>>>>;

/// Wraps an async function as a [`Worker`].
pub fn worker<F, Fut>(f: F) -> Worker
where
    F: Fn(Arc<Endpoint>, Context) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    Rc::new(move |endpoint, ctx| Box::pin(f(endpoint, ctx)))
}

/// The simulation's own worker: every task, side by side, takes a random
/// time up to `work_max` and answers `result of <id>`.
pub fn echo() -> Worker {
    worker(|endpoint: Arc<Endpoint>, mut ctx: Context| async move {
        while let Some(task) = endpoint.next_task().await {
            let work = Duration::from_millis(ctx.rng.range(1, ctx.work_max.as_millis().max(1) as u64));
            let endpoint = endpoint.clone();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(work).await;
                let body = format!("result of {}", task.id);
                // An error means the endpoint stopped: the task is handed out
                // again by the next boot.
                let _ = endpoint.complete(&task.id, ResultStatus::Ok, body).await;
            });
        }
    })
}
