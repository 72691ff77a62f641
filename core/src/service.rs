//! The service side's policy for results, shared by the real service and
//! the simulated one: a result is accepted once, only from the endpoint that
//! owns its task; anything else is a duplicate (acked and dropped) or goes to
//! the dead-letter queue with a reason.

use crate::ids::{EndpointId, TaskId};
use crate::message::{decode_result, Malformed, RawMessage, ReceivedResult, TaskLimits};
use crate::window::DedupWindow;

/// What to do with a message from the `results` queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A new result: hand it over, remember its id (persisting `forget` as
    /// leaving the window), then ack.
    Accept {
        /// The result and its sender.
        result: ReceivedResult,
        /// The id that left the dedup window, if any.
        forget: Option<TaskId>,
    },
    /// A result already accepted: ack and drop.
    Duplicate(TaskId),
    /// Not a valid result of the sender's: reject without requeue, so it is
    /// dead-lettered with this reason.
    DeadLetter(Malformed),
}

/// Judges results: ownership, dedup.
#[derive(Clone, Debug)]
pub struct ResultIntake {
    seen: DedupWindow,
    limits: TaskLimits,
}

impl ResultIntake {
    /// An intake that remembers `window` accepted ids, restored from `seen`
    /// (oldest first).
    pub fn new(window: usize, seen: impl IntoIterator<Item = TaskId>, limits: TaskLimits) -> Self {
        Self { seen: DedupWindow::restore(window, seen), limits }
    }

    /// Judges one message. `owner` says which endpoint a task was submitted
    /// to, or `None` for a task never submitted.
    pub fn judge(
        &mut self,
        routing_key: &str,
        raw: &RawMessage,
        owner: impl FnOnce(&TaskId) -> Option<EndpointId>,
    ) -> Verdict {
        let received = match decode_result(routing_key, raw, self.limits) {
            Ok(r) => r,
            Err(m) => return Verdict::DeadLetter(m),
        };
        let task = &received.result.task;
        match owner(task) {
            None => return Verdict::DeadLetter(Malformed::UnknownTask(task.clone())),
            Some(owner) if owner != received.sender => {
                return Verdict::DeadLetter(Malformed::NotOwner { sender: received.sender.as_str().to_string(), owner })
            }
            Some(_) => {}
        }
        if self.seen.contains(task) {
            return Verdict::Duplicate(task.clone());
        }
        let forget = self.seen.insert(task.clone());
        Verdict::Accept { result: received, forget }
    }

    /// Accepted ids in the window, oldest first.
    pub fn seen(&self) -> impl Iterator<Item = &TaskId> {
        self.seen.iter()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::{encode_result, ResultStatus, TaskResult};

    #[test]
    fn accepts_once_from_owner_only() {
        let limits = TaskLimits { max_body_bytes: 100, max_headers: 8 };
        let mut intake = ResultIntake::new(10, [], limits);
        let a = EndpointId::new("a").unwrap();
        let b = EndpointId::new("b").unwrap();
        let r = TaskResult { task: TaskId::new("t").unwrap(), status: ResultStatus::Ok, body: Bytes::new() };
        let from_a = encode_result(&a, &r);
        let from_b = encode_result(&b, &r);
        let owner = |_: &TaskId| Some(a.clone());
        assert!(matches!(intake.judge("b.results", &from_b, owner), Verdict::DeadLetter(Malformed::NotOwner { .. })));
        assert!(matches!(intake.judge("a.results", &from_a, owner), Verdict::Accept { forget: None, .. }));
        assert_eq!(intake.judge("a.results", &from_a, owner), Verdict::Duplicate(r.task.clone()));
        assert!(matches!(intake.judge("a.results", &from_a, |_| None), Verdict::DeadLetter(Malformed::UnknownTask(_))));
        // A spoofed result claiming to be from `a` but routed as `b`.
        assert!(matches!(intake.judge("b.results", &from_a, owner), Verdict::DeadLetter(Malformed::BadHeader { .. })));
    }
}
