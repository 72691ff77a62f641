//! Target 2: messages on the service's `results` queue, judged by
//! [`ResultIntake`]: well-formed results from the owner, from another
//! endpoint, spoofed (header and routing key disagree), for tasks never
//! submitted, repeated, and arbitrary messages under arbitrary routing keys.
//!
//! Oracles, against a model of the submitted tasks and of the dedup window:
//! - `decode_result` never panics; `Ok` only for a routing key
//!   `<sender>.results` whose sender the `tasklane-endpoint` header names,
//!   with the status header `ok` or `failed`;
//! - the verdict is exactly the model's: accepted once from the owner,
//!   a duplicate while the id is in the window, dead-lettered with the
//!   right reason otherwise (unknown task, not the owner, or the decode
//!   error), every reason one bounded line;
//! - the persisted window (accepted ids minus each verdict's `forget`)
//!   always equals [`ResultIntake::seen`], and an intake restored from it
//!   judges the same as the one that kept running.

use std::collections::{BTreeMap, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use tasklane_core::message::{ENDPOINT_HEADER, STATUS_HEADER};
use tasklane_core::service::{ResultIntake, Verdict};
use tasklane_core::{
    decode_result, encode_result, EndpointId, HeaderValue, Malformed, RawMessage, ResultStatus, TaskId, TaskLimits,
    TaskResult,
};

use crate::task_decode::one_bounded_line;

const ENDPOINTS: [&str; 3] = ["ep-a", "ep-b", "ep-c"];
const TASKS: usize = 8;

fn endpoint(i: u8) -> EndpointId {
    EndpointId::new(ENDPOINTS[usize::from(i) % ENDPOINTS.len()]).expect("valid")
}

fn task(i: u8) -> TaskId {
    TaskId::new(format!("t{}", usize::from(i) % TASKS)).expect("valid")
}

#[derive(Arbitrary, Debug)]
enum KeyDraw {
    /// `<endpoint>.results` of a known endpoint.
    Results(u8),
    /// `<endpoint>.tasks`.
    Tasks(u8),
    /// Any endpoint id (valid by construction) with `.results`.
    AnyEndpoint(EndpointId),
    /// Any text at all.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Tamper {
    None,
    /// The `tasklane-endpoint` header names another endpoint.
    Sender(u8),
    DropHeader(bool),
    Header(bool, HeaderValue),
    Id(Option<Vec<u8>>),
    Body(u16),
}

#[derive(Arbitrary, Debug)]
enum Msg {
    /// A result as an endpoint publishes it, perhaps tampered with.
    Result { from: u8, task: u8, ok: bool, body: Vec<u8>, tamper: Tamper },
    /// Anything.
    Raw(RawMessage),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Judge(KeyDraw, Msg),
    /// The service restarts: a new intake from the persisted window.
    Restart,
}

/// The service's view: which endpoint each task was submitted to, and the
/// accepted ids in the window, oldest first.
struct Model {
    owners: BTreeMap<TaskId, EndpointId>,
    window: VecDeque<TaskId>,
    capacity: usize,
}

impl Model {
    fn expect(&self, key: &str, raw: &RawMessage, limits: TaskLimits) -> Verdict {
        let received = match decode_result(key, raw, limits) {
            Ok(r) => r,
            Err(m) => return Verdict::DeadLetter(m),
        };
        let task = received.result.task.clone();
        match self.owners.get(&task) {
            None => Verdict::DeadLetter(Malformed::UnknownTask(task)),
            Some(owner) if owner != &received.sender => {
                Verdict::DeadLetter(Malformed::NotOwner { sender: received.sender.to_string(), owner: owner.clone() })
            }
            Some(_) if self.window.contains(&task) => Verdict::Duplicate(task),
            Some(_) => {
                let forget = if self.capacity == 0 {
                    Some(task.clone())
                } else if self.window.len() == self.capacity {
                    self.window.front().cloned()
                } else {
                    None
                };
                Verdict::Accept { result: received, forget }
            }
        }
    }

    fn accept(&mut self, task: &TaskId) {
        if self.capacity == 0 {
            return;
        }
        self.window.push_back(task.clone());
        if self.window.len() > self.capacity {
            self.window.pop_front();
        }
    }
}

/// Runs one case drawn from `data`.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(capacity), Ok(submitted), Ok(max_body)) =
        (u.int_in_range(0..=4usize), u8::arbitrary(&mut u), u16::arbitrary(&mut u))
    else {
        return;
    };
    let limits = TaskLimits { max_body_bytes: usize::from(max_body), max_headers: 16 };
    // Tasks t0..t7: bit i of `submitted` says whether ti was submitted,
    // owned by endpoint i mod 3.
    let owners = (0..TASKS as u8).filter(|i| submitted & (1 << i) != 0).map(|i| (task(i), endpoint(i))).collect();
    let mut model = Model { owners, window: VecDeque::new(), capacity };
    let mut intake = ResultIntake::new(capacity, [], limits);
    let mut persisted: Vec<TaskId> = Vec::new();
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        let Ok(step) = Step::arbitrary(&mut u) else { break };
        let (key, raw) = match step {
            Step::Restart => {
                intake = ResultIntake::new(capacity, persisted.clone(), limits);
                continue;
            }
            Step::Judge(key, msg) => (routing_key(key), message(msg)),
        };
        check_decode(&key, &raw, limits);
        let expected = model.expect(&key, &raw, limits);
        let verdict = intake.judge(&key, &raw, |t| model.owners.get(t).cloned());
        assert_eq!(verdict, expected, "routing key {key:?}, message {raw:?}");
        match &verdict {
            Verdict::Accept { result, forget } => {
                model.accept(&result.result.task);
                persisted.push(result.result.task.clone());
                if let Some(f) = forget {
                    let i = persisted.iter().position(|p| p == f).expect("forgets an id it holds");
                    persisted.remove(i);
                }
            }
            Verdict::DeadLetter(reason) => one_bounded_line(reason),
            Verdict::Duplicate(_) => {}
        }
        assert_eq!(intake.seen().cloned().collect::<Vec<_>>(), persisted, "the persisted window drifted");
        assert_eq!(Vec::from(model.window.clone()), persisted);
    }
}

fn routing_key(k: KeyDraw) -> String {
    match k {
        KeyDraw::Results(i) => endpoint(i).result_key(),
        KeyDraw::Tasks(i) => endpoint(i).task_queue(),
        KeyDraw::AnyEndpoint(e) => e.result_key(),
        KeyDraw::Raw(s) => s,
    }
}

fn message(m: Msg) -> RawMessage {
    let (from, task_i, ok, body, tamper) = match m {
        Msg::Raw(raw) => return raw,
        Msg::Result { from, task: t, ok, body, tamper } => (from, t, ok, body, tamper),
    };
    let status = if ok { ResultStatus::Ok } else { ResultStatus::Failed };
    let result = TaskResult { task: task(task_i), status, body: Bytes::from(body) };
    let mut raw = encode_result(&endpoint(from), &result);
    let header_index = |status: bool| usize::from(status);
    match tamper {
        Tamper::None => {}
        Tamper::Sender(i) => raw.headers[0].1 = HeaderValue::Str(endpoint(i).as_str().as_bytes().to_vec()),
        Tamper::DropHeader(status) => {
            raw.headers.remove(header_index(status));
        }
        Tamper::Header(status, v) => raw.headers[header_index(status)].1 = v,
        Tamper::Id(id) => raw.message_id = id,
        Tamper::Body(n) => raw.body = Bytes::from(vec![0; usize::from(n)]),
    }
    raw
}

/// `decode_result` accepts only what SPEC §3 calls a result.
fn check_decode(key: &str, raw: &RawMessage, limits: TaskLimits) {
    let Ok(r) = decode_result(key, raw, limits) else { return };
    assert_eq!(key, r.sender.result_key(), "accepted under routing key {key:?}");
    let header = |name: &str| raw.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header(ENDPOINT_HEADER), Some(HeaderValue::Str(r.sender.as_str().as_bytes().to_vec())));
    assert_eq!(header(STATUS_HEADER), Some(HeaderValue::Str(r.result.status.as_str().as_bytes().to_vec())));
    assert_eq!(raw.message_id.as_deref(), Some(r.result.task.as_str().as_bytes()));
    assert_eq!(r.result.body, raw.body);
    assert!(raw.body.len() <= limits.max_body_bytes && raw.headers.len() <= limits.max_headers);
}
