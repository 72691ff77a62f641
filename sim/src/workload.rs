//! What the simulated service submits and what it expects back: the tasks'
//! kinds and payloads (drawn from the seed), and a judgement of each
//! result the service accepted. The default is the simulation's own echo
//! workload; users plug in theirs to run their own worker.

use std::rc::Rc;

use bytes::Bytes;
use tasklane_core::{ResultStatus, Task};

use crate::rng::Rng;

/// Builds task `i` (its kind and payload) from the seed's randomness.
pub type TaskMaker = Rc<dyn Fn(usize, &mut Rng) -> (Option<String>, Bytes)>;
/// Judges the result the service accepted for a task: `Err` says why it
/// is wrong.
pub type Expectation = Rc<dyn Fn(&Task, ResultStatus, &[u8]) -> Result<(), String>>;

/// The tasks of a run and what their results must be.
#[derive(Clone)]
pub struct Workload {
    /// How many valid tasks to submit; `None`: as many as the seed draws.
    pub tasks: Option<usize>,
    /// Kind and payload of each task.
    pub make: TaskMaker,
    /// The judgement of each accepted result.
    pub expect: Expectation,
}

impl Default for Workload {
    /// Tasks `payload <i>` without a kind; any result is fine.
    fn default() -> Self {
        Workload {
            tasks: None,
            make: Rc::new(|i, _| (None, Bytes::from(format!("payload {i}")))),
            expect: Rc::new(|_, _, _| Ok(())),
        }
    }
}

impl Workload {
    /// A workload of `tasks` tasks made by `make`, whose results must pass
    /// `expect`.
    pub fn new(
        tasks: usize,
        make: impl Fn(usize, &mut Rng) -> (Option<String>, Bytes) + 'static,
        expect: impl Fn(&Task, ResultStatus, &[u8]) -> Result<(), String> + 'static,
    ) -> Self {
        Workload { tasks: Some(tasks), make: Rc::new(make), expect: Rc::new(expect) }
    }
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload").field("tasks", &self.tasks).finish_non_exhaustive()
    }
}
