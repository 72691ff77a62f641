//! The simulated service: submits tasks to an endpoint's queue with
//! confirms and `mandatory`, and consumes `results` through core's
//! [`ResultIntake`] (ownership check, dedup by task id), as the real service
//! does. It is not under test and never crashes; broker faults still cut its
//! connection, and it reconnects and republishes what was not confirmed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tasklane_core::message::KIND_HEADER;
use tasklane_core::service::{ResultIntake, Verdict};
use tasklane_core::{encode_task, EndpointId, ResultStatus, Task, TaskId, TaskLimits};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::sleep_until;
use crate::rng::Rng;
use crate::workload::TaskMaker;

use crate::broker::RESULTS;
use crate::clock::Clock;
use crate::endpoint::poison::UNDECODABLE;
use crate::endpoint::{raw_to_wire, wire_to_raw};
use crate::wire::session::{self, ConnEvent, Dial};
use crate::wire::{ClientMethod, Message, ServerMethod};

/// Header that names a malformed submission, so the oracles can find it in
/// `tasklane.dead`.
pub const MALFORMED_KEY: &str = "sim-malformed";

/// One task to submit, and when (simulated time since the run began).
#[derive(Clone, Debug)]
pub struct Submission {
    pub at: Duration,
    pub endpoint: EndpointId,
    pub task: Task,
    /// Sent broken (no message id, or a `tasklane-kind` of the wrong type,
    /// or undecodable for the endpoint's client): it must land in
    /// `tasklane.dead`.
    pub malformed: bool,
    /// Sent undecodable for the endpoint's client (a poison message): the
    /// endpoint's poison scan must move it to `tasklane.dead`.
    pub poison: bool,
}

/// What a planned submission is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shape {
    /// A task to answer.
    Good,
    /// A message the endpoint decodes and rejects.
    Malformed,
    /// A message the endpoint's client cannot decode at all.
    Poison,
}

impl Submission {
    /// The message as published.
    pub fn message(&self) -> Message {
        let mut m = raw_to_wire(&encode_task(&self.task));
        if self.poison {
            m = m.with_header(MALFORMED_KEY, self.task.id.as_str()).with_header(UNDECODABLE, true);
        } else if self.malformed {
            m = m.with_header(MALFORMED_KEY, self.task.id.as_str());
            if self.task.id.as_str().ends_with(['0', '2', '4', '6', '8']) {
                m.message_id = None;
            } else {
                m = m.with_header(KIND_HEADER, 7i64);
            }
        }
        m
    }
}

/// What the service did, for the oracles and the trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServiceRecord {
    Submitted { task: TaskId, attempt: u32 },
    SubmitConfirmed { task: TaskId },
    Accepted { task: TaskId, sender: EndpointId },
    Duplicate { task: TaskId },
    DeadLettered { message_id: Option<String>, reason: String },
}

#[derive(Default)]
struct State {
    /// Task → owning endpoint, for every task ever submitted.
    owners: BTreeMap<TaskId, EndpointId>,
    confirmed: BTreeSet<TaskId>,
    /// Accepted results: sender, status, body.
    accepted: BTreeMap<TaskId, (EndpointId, ResultStatus, Bytes)>,
    log: Vec<ServiceRecord>,
}

/// Handle to the simulated service; cheap to clone.
#[derive(Clone)]
pub struct Service {
    plan: Rc<Vec<Submission>>,
    dial: Dial,
    clock: Clock,
    state: Rc<RefCell<State>>,
}

impl Service {
    pub fn new(plan: Vec<Submission>, dial: Dial, clock: Clock) -> Self {
        Service { plan: Rc::new(plan), dial, clock, state: Rc::default() }
    }

    /// The host software for `Sim::host`.
    pub fn host(&self) -> impl Fn() -> Pin<Box<dyn Future<Output = turmoil::Result>>> {
        let service = self.clone();
        move || Box::pin(service.clone().run())
    }

    /// Valid tasks in the plan.
    pub fn planned(&self) -> usize {
        self.plan.iter().filter(|s| !s.malformed).count()
    }

    /// The keys of the malformed submissions.
    pub fn malformed(&self) -> Vec<String> {
        self.plan.iter().filter(|s| s.malformed).map(|s| s.task.id.as_str().to_owned()).collect()
    }

    /// Tasks whose result was accepted.
    pub fn accepted(&self) -> usize {
        self.state.borrow().accepted.len()
    }

    /// Planned tasks without an accepted result, in plan order.
    pub fn missing(&self) -> Vec<TaskId> {
        let st = self.state.borrow();
        self.plan
            .iter()
            .filter(|s| !s.malformed && !st.accepted.contains_key(&s.task.id))
            .map(|s| s.task.id.clone())
            .collect()
    }

    /// Whether the result of `task` was accepted.
    pub fn has_accepted(&self, task: &TaskId) -> bool {
        self.state.borrow().accepted.contains_key(task)
    }

    /// The accepted result of `task`: its status and body.
    pub fn result(&self, task: &TaskId) -> Option<(ResultStatus, Bytes)> {
        self.state.borrow().accepted.get(task).map(|(_, status, body)| (*status, body.clone()))
    }

    /// The valid tasks of the plan.
    pub fn tasks(&self) -> Vec<Task> {
        self.plan.iter().filter(|s| !s.malformed).map(|s| s.task.clone()).collect()
    }

    /// The endpoint `task` was submitted to, if it was.
    pub fn owner(&self, task: &TaskId) -> Option<EndpointId> {
        self.state.borrow().owners.get(task).cloned()
    }

    pub fn log_len(&self) -> usize {
        self.state.borrow().log.len()
    }

    pub fn records_since(&self, from: usize) -> Vec<ServiceRecord> {
        self.state.borrow().log.get(from..).unwrap_or_default().to_vec()
    }

    fn record(&self, r: ServiceRecord) {
        self.state.borrow_mut().log.push(r);
    }

    async fn run(self) -> turmoil::Result {
        let limits = TaskLimits { max_body_bytes: 1 << 20, max_headers: 64 };
        let mut intake = ResultIntake::new(1 << 20, [], limits);
        let mut attempts: BTreeMap<TaskId, u32> = BTreeMap::new();
        let mut key = 0u64;
        loop {
            key += 1;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let _task = AbortOnDrop(session::spawn(key, self.dial.clone(), tx));
            let out = match rx.recv().await {
                Some((_, ConnEvent::Open { tx, .. })) => tx,
                _ => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            let send = |m| {
                let _ = out.send(m);
            };
            send(ClientMethod::OpenChannel { ch: 1 });
            send(ClientMethod::ConfirmSelect { ch: 1 });
            send(ClientMethod::OpenChannel { ch: 2 });
            send(ClientMethod::Qos { ch: 2, prefetch: 64 });
            send(ClientMethod::Consume { ch: 2, queue: RESULTS.into(), exclusive: false });
            // Confirm tag → task, for this connection's publishing channel.
            let mut in_flight: BTreeMap<u64, TaskId> = BTreeMap::new();
            let mut next_tag = 1;
            // Nacked or returned: publish again after a pause.
            let mut retry_at: BTreeMap<TaskId, Instant> = BTreeMap::new();
            loop {
                let now_sim = self.clock.elapsed();
                let now = Instant::now();
                for sub in self.plan.iter().filter(|s| s.at <= now_sim) {
                    let id = &sub.task.id;
                    let done = self.state.borrow().confirmed.contains(id);
                    let waiting = in_flight.values().any(|t| t == id) || retry_at.get(id).is_some_and(|at| *at > now);
                    if done || waiting {
                        continue;
                    }
                    retry_at.remove(id);
                    if !sub.malformed {
                        self.state.borrow_mut().owners.insert(id.clone(), sub.endpoint.clone());
                    }
                    let attempt = attempts.entry(id.clone()).or_default();
                    *attempt += 1;
                    self.record(ServiceRecord::Submitted { task: id.clone(), attempt: *attempt });
                    send(ClientMethod::Publish {
                        ch: 1,
                        exchange: String::new(),
                        routing_key: sub.endpoint.task_queue(),
                        mandatory: true,
                        message: sub.message(),
                    });
                    in_flight.insert(next_tag, id.clone());
                    next_tag += 1;
                }
                let next_due =
                    self.plan.iter().map(|s| s.at).filter(|at| *at > now_sim).min().map(|at| now + (at - now_sim));
                let wake = retry_at.values().copied().chain(next_due).min();
                let ev = tokio::select! {
                    biased;
                    ev = rx.recv() => ev,
                    _ = sleep_until(wake) => continue,
                };
                match ev {
                    Some((_, ConnEvent::Method(m))) => {
                        if !self.on_method(m, &send, &mut intake, &mut in_flight, &mut retry_at) {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
    }

    /// Handles one broker method; false when the connection must be given
    /// up (a channel was closed).
    fn on_method(
        &self,
        m: ServerMethod,
        send: &impl Fn(ClientMethod),
        intake: &mut ResultIntake,
        in_flight: &mut BTreeMap<u64, TaskId>,
        retry_at: &mut BTreeMap<TaskId, Instant>,
    ) -> bool {
        let later = Instant::now() + Duration::from_millis(500);
        match m {
            ServerMethod::PublishAck { ch: 1, tag, multiple } => {
                for task in take(in_flight, tag, multiple) {
                    // A returned submission was confirmed but stored nowhere.
                    if retry_at.contains_key(&task) {
                        continue;
                    }
                    self.state.borrow_mut().confirmed.insert(task.clone());
                    self.record(ServiceRecord::SubmitConfirmed { task });
                }
            }
            ServerMethod::PublishNack { ch: 1, tag, multiple } => {
                for task in take(in_flight, tag, multiple) {
                    retry_at.insert(task, later);
                }
            }
            ServerMethod::Return { message, .. } => {
                if let Some(task) = message.message_id.and_then(|id| TaskId::new(id).ok()) {
                    retry_at.insert(task, later);
                }
            }
            ServerMethod::Deliver { ch: 2, tag, routing_key, message, .. } => {
                let raw = wire_to_raw(&message);
                let owners = self.state.borrow().owners.clone();
                match intake.judge(&routing_key, &raw, |t| owners.get(t).cloned()) {
                    Verdict::Accept { result, .. } => {
                        let task = result.result.task.clone();
                        let accepted = (result.sender.clone(), result.result.status, result.result.body.clone());
                        self.state.borrow_mut().accepted.insert(task.clone(), accepted);
                        self.record(ServiceRecord::Accepted { task, sender: result.sender });
                        send(ClientMethod::Ack { ch: 2, tag, multiple: false });
                    }
                    Verdict::Duplicate(task) => {
                        self.record(ServiceRecord::Duplicate { task });
                        send(ClientMethod::Ack { ch: 2, tag, multiple: false });
                    }
                    Verdict::DeadLetter(reason) => {
                        self.record(ServiceRecord::DeadLettered {
                            message_id: message.message_id,
                            reason: reason.to_string(),
                        });
                        send(ClientMethod::Reject { ch: 2, tag, requeue: false });
                    }
                }
            }
            ServerMethod::ChannelClose { .. } => return false,
            _ => {}
        }
        true
    }
}

fn take(in_flight: &mut BTreeMap<u64, TaskId>, tag: u64, multiple: bool) -> Vec<TaskId> {
    let tags: Vec<u64> = if multiple { in_flight.range(..=tag).map(|(t, _)| *t).collect() } else { vec![tag] };
    tags.into_iter().filter_map(|t| in_flight.remove(&t)).collect()
}

/// Makes the plan: tasks for `endpoint` submitted at the given offsets,
/// each of the given shape, each made by `make` from `rng`.
pub fn plan(
    endpoint: &EndpointId,
    times: impl IntoIterator<Item = (Duration, Shape)>,
    make: &TaskMaker,
    rng: &mut Rng,
) -> Vec<Submission> {
    times
        .into_iter()
        .enumerate()
        .map(|(i, (at, shape))| {
            let (kind, body) = make(i, rng);
            let malformed = shape != Shape::Good;
            Submission {
                at,
                endpoint: endpoint.clone(),
                task: Task {
                    id: TaskId::new(format!("{}-{i:04}", if malformed { "bad" } else { "task" })).expect("valid id"),
                    kind,
                    body,
                },
                malformed,
                poison: shape == Shape::Poison,
            }
        })
        .collect()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
