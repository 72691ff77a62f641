//! The spool port of a simulated endpoint: writes queue in the host's
//! memory and reach the [`DurableSpool`] (outside the host, so it survives
//! a crash) only in a group commit, after a simulated fsync delay; then
//! `SpoolCommitted` is reported. A crash of the host loses the queue, as a
//! real crash loses what was not synced.
//!
//! It reports what the LMDB writer of `tasklane_io::spool` reports, the
//! same way: a commit that fails (a stall fault's I/O error, or a disk with
//! no room for the next write) commits the longest prefix that fits, and
//! when not even one write fits the writer reports `SpoolStalled` once and
//! retries with a growing delay until it commits again. On a disk with a
//! size (runs with disk-full faults) it reports the free space
//! (`SpoolSpace`) at start, after each commit and every second.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tasklane_core::{Input, OutboxSeq, SpoolWrite, Task};
use tasklane_io::endpoint::{InputSink, SpoolPort};

use crate::rng::Rng;
use crate::spool::DurableSpool;

/// Retry delays while stalled (the LMDB writer's, shortened to the
/// simulation's time scale).
const STALL_RETRY_FIRST: Duration = Duration::from_millis(100);
const STALL_RETRY_MAX: Duration = Duration::from_secs(1);
/// How often free space is reported.
const SPACE_EVERY: Duration = Duration::from_secs(1);

struct Queue {
    writes: Vec<SpoolWrite>,
    /// A group commit is under way (its fsync sleeping, or a stall waiting).
    committing: bool,
    /// The writer reported a stall and has not committed since.
    stalled: bool,
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
        let queue = Queue { writes: Vec::new(), committing: false, stalled: false, rng, inputs: None };
        Self { durable, fsync_max, queue: Rc::new(RefCell::new(queue)) }
    }
}

/// What one commit attempt did.
enum Attempt {
    /// Everything queued is committed.
    Done,
    /// A prefix is committed; more is queued.
    More,
    /// Nothing could be written.
    Stalled,
}

fn report_space(durable: &DurableSpool, inputs: &InputSink) {
    if let Some(available_bytes) = durable.free_bytes() {
        inputs.send(Input::SpoolSpace { available_bytes });
    }
}

/// Commits as much of the queue as the disk takes, as one group, and
/// reports it.
fn commit(durable: &DurableSpool, queue: &RefCell<Queue>) -> Attempt {
    let mut q = queue.borrow_mut();
    if q.writes.is_empty() {
        return Attempt::Done;
    }
    let n = match durable.fitting(&q.writes) {
        Ok(n) => n,
        Err(reason) => {
            if !std::mem::replace(&mut q.stalled, true) {
                if let Some(inputs) = &q.inputs {
                    inputs.send(Input::SpoolStalled { reason });
                }
            }
            return Attempt::Stalled;
        }
    };
    let writes: Vec<SpoolWrite> = q.writes.drain(..n).collect();
    q.stalled = false;
    let more = !q.writes.is_empty();
    let inputs = q.inputs.clone();
    drop(q);
    let upto = writes.last().expect("at least one write fits").seq;
    let refused = durable.commit(&writes);
    if let Some(inputs) = inputs {
        for (seq, error) in refused {
            inputs.send(Input::SpoolRefused { seq, reason: error.to_string() });
        }
        inputs.send(Input::SpoolCommitted { upto });
        report_space(durable, &inputs);
    }
    if more {
        Attempt::More
    } else {
        Attempt::Done
    }
}

impl SpoolPort for SimSpool {
    fn start(&mut self, inputs: InputSink) {
        if self.durable.free_bytes().is_some() {
            report_space(&self.durable, &inputs);
            let (durable, inputs) = (self.durable.clone(), inputs.clone());
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(SPACE_EVERY).await;
                    report_space(&durable, &inputs);
                }
            });
        }
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
            let mut retry = STALL_RETRY_FIRST;
            loop {
                match commit(&durable, &queue) {
                    Attempt::Done => break,
                    Attempt::More => retry = STALL_RETRY_FIRST,
                    Attempt::Stalled => {
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(STALL_RETRY_MAX);
                    }
                }
            }
            queue.borrow_mut().committing = false;
        });
    }

    fn task(&mut self, arrival: u64) -> Result<Option<Task>, String> {
        Ok(self.durable.task(arrival))
    }

    fn result_bodies(&mut self, seqs: &[OutboxSeq]) -> Result<Vec<Option<Bytes>>, String> {
        Ok(seqs.iter().map(|seq| self.durable.result_body(*seq)).collect())
    }

    async fn close(self, _grace: Duration) {
        // A clean stop syncs what is queued and fits; what does not was
        // never acked, so the broker still has it.
        while let Attempt::More = commit(&self.durable, &self.queue) {}
    }
}
