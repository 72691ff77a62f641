//! The spool port of a simulated endpoint: writes queue in the host's
//! memory and reach the [`DurableSpool`] (outside the host, so it survives
//! a crash) only in a group commit, after a simulated fsync delay; then
//! `SpoolCommitted` is reported. A crash of the host loses the queue, as a
//! real crash loses what was not synced.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tasklane_core::{Input, SpoolWrite, Task};
use tasklane_io::endpoint::{InputSink, SpoolPort};

use crate::rng::Rng;
use crate::spool::DurableSpool;

struct Queue {
    writes: Vec<SpoolWrite>,
    /// A group commit is under way (its fsync sleeping).
    committing: bool,
    rng: Rng,
    inputs: Option<InputSink>,
}

/// The in-memory spool port.
pub struct SimSpool {
    durable: DurableSpool,
    fsync_max: Duration,
    queue: Rc<RefCell<Queue>>,
}

impl SimSpool {
    /// A port over `durable`; a group commit takes up to `fsync_max`.
    pub fn new(durable: DurableSpool, fsync_max: Duration, rng: Rng) -> Self {
        let queue = Queue { writes: Vec::new(), committing: false, rng, inputs: None };
        Self { durable, fsync_max, queue: Rc::new(RefCell::new(queue)) }
    }
}

/// Commits everything queued as one group, and reports it.
fn commit(durable: &DurableSpool, queue: &RefCell<Queue>) {
    let (writes, inputs) = {
        let mut q = queue.borrow_mut();
        (std::mem::take(&mut q.writes), q.inputs.clone())
    };
    let Some(upto) = writes.last().map(|w| w.seq) else { return };
    let refused = durable.commit(&writes);
    if let Some(inputs) = inputs {
        for (seq, error) in refused {
            inputs.send(Input::SpoolRefused { seq, reason: error.to_string() });
        }
        inputs.send(Input::SpoolCommitted { upto });
    }
}

impl SpoolPort for SimSpool {
    fn start(&mut self, inputs: InputSink) {
        self.queue.borrow_mut().inputs = Some(inputs);
    }

    fn write(&mut self, write: SpoolWrite) {
        let mut q = self.queue.borrow_mut();
        q.writes.push(write);
        if q.committing {
            return; // joins the group under way
        }
        q.committing = true;
        let max = self.fsync_max.as_micros() as u64;
        let delay = Duration::from_micros(q.rng.range(100, max.max(100)));
        let (durable, queue) = (self.durable.clone(), self.queue.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep(delay).await;
            queue.borrow_mut().committing = false;
            commit(&durable, &queue);
        });
    }

    fn task(&mut self, arrival: u64) -> Result<Option<Task>, String> {
        Ok(self.durable.task(arrival))
    }

    async fn close(self, _grace: Duration) {
        // A clean stop syncs what is queued.
        commit(&self.durable, &self.queue);
    }
}
