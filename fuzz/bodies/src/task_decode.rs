//! Target 1: a delivery as any AMQP client could have published it: a
//! message id of any bytes and length (or none), headers of any type and in
//! any number, bodies from empty to over the limit.
//!
//! Oracles:
//! - [`tasklane_core::decode_task`] never panics; `Ok` only when every rule
//!   of SPEC §3 holds, with the id, kind and body taken as they came; `Err`
//!   only with a reason that is true of the message, printable on one
//!   bounded line (it becomes the dead-letter reason);
//! - an accepted task survives [`tasklane_core::encode_task`] and the spool
//!   codec unchanged;
//! - a consuming lane fed the delivery rejects exactly what `decode_task`
//!   refuses (with that reason), spools and acks after the commit what it
//!   accepts, acks a second delivery of the same task as a duplicate
//!   without a second hand-off, and keeps consuming either way.

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use tasklane_core::message::{ENDPOINT_HEADER, KIND_HEADER, MAX_KIND_LEN, REASON_HEADER, STATUS_HEADER};
use tasklane_core::{
    codec, decode_task, encode_task, Amqp, Config, DeliveryTag, EndpointId, Event, HeaderValue, Input, Malformed,
    Output, RawMessage, SpoolOp, SpoolSnapshot, Status, TaskId, TaskLimits,
};

use crate::rig::Rig;

/// Longest text of a rejection reason: it travels in a header.
pub const MAX_REASON_LEN: usize = 1024;

#[derive(Arbitrary, Debug)]
enum IdDraw {
    None,
    Bytes(Vec<u8>),
    /// `len` copies of `byte`: reaches ids over 128 bytes cheaply.
    Repeat {
        byte: u8,
        len: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum NameDraw {
    Kind,
    Endpoint,
    Status,
    Reason,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum BodyDraw {
    Bytes(Vec<u8>),
    Filled { byte: u8, len: u16 },
}

/// One delivery and the limits it is judged by.
#[derive(Arbitrary, Debug)]
struct Case {
    id: IdDraw,
    headers: Vec<(NameDraw, HeaderValue)>,
    /// Extra integer headers (`x-0`, `x-1`, ...) before or after the drawn
    /// ones: huge header tables.
    filler: u16,
    filler_first: bool,
    body: BodyDraw,
    /// `None`: the configuration's defaults (16 MiB, 64 headers).
    limits: Option<(u16, u8)>,
}

impl Case {
    fn message(&self) -> RawMessage {
        let message_id = match &self.id {
            IdDraw::None => None,
            IdDraw::Bytes(b) => Some(b.clone()),
            IdDraw::Repeat { byte, len } => Some(vec![*byte; usize::from(*len)]),
        };
        let drawn = self.headers.iter().map(|(n, v)| {
            let name = match n {
                NameDraw::Kind => KIND_HEADER.to_string(),
                NameDraw::Endpoint => ENDPOINT_HEADER.to_string(),
                NameDraw::Status => STATUS_HEADER.to_string(),
                NameDraw::Reason => REASON_HEADER.to_string(),
                NameDraw::Other(s) => s.clone(),
            };
            (name, v.clone())
        });
        let filler = (0..self.filler % 2048).map(|i| (format!("x-{i}"), HeaderValue::Int(i64::from(i))));
        let headers = if self.filler_first { filler.chain(drawn).collect() } else { drawn.chain(filler).collect() };
        let body = match &self.body {
            BodyDraw::Bytes(b) => Bytes::from(b.clone()),
            BodyDraw::Filled { byte, len } => Bytes::from(vec![*byte; usize::from(*len)]),
        };
        RawMessage { message_id, headers, body }
    }

    fn config(&self) -> Config {
        let mut cfg = Config::new(EndpointId::new("ep").expect("valid"));
        if let Some((body, headers)) = self.limits {
            cfg.max_body_bytes = usize::from(body);
            cfg.max_headers = usize::from(headers);
        }
        cfg
    }
}

/// Runs one case drawn from `data`.
pub fn run(data: &[u8]) {
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let raw = case.message();
    let cfg = case.config();
    let limits = TaskLimits { max_body_bytes: cfg.max_body_bytes, max_headers: cfg.max_headers };
    let verdict = decode_task(&raw, limits);
    match &verdict {
        Ok(task) => check_accepted(&raw, limits, task),
        Err(reason) => check_refusal(&raw, limits, reason),
    }
    through_a_lane(cfg, raw, verdict);
}

fn check_accepted(raw: &RawMessage, limits: TaskLimits, task: &tasklane_core::Task) {
    assert_eq!(raw.message_id.as_deref(), Some(task.id.as_str().as_bytes()), "the task id is not the message id");
    assert!(raw.headers.len() <= limits.max_headers, "more headers than allowed accepted");
    assert!(raw.body.len() <= limits.max_body_bytes, "a body over the limit accepted");
    assert_eq!(task.body, raw.body, "the body changed");
    match raw.headers.iter().find(|(k, _)| k == KIND_HEADER).map(|(_, v)| v) {
        None => assert_eq!(task.kind, None),
        Some(HeaderValue::Str(b)) => {
            assert_eq!(task.kind.as_deref().map(str::as_bytes), Some(b.as_slice()), "the kind changed");
            assert!(!b.is_empty() && b.len() <= MAX_KIND_LEN, "a kind of {} bytes accepted", b.len());
        }
        Some(other) => panic!("a kind of type {other:?} accepted"),
    }
    assert_eq!(decode_task(&encode_task(task), limits).as_ref(), Ok(task), "encode_task does not round-trip");
    assert_eq!(codec::decode_task(&codec::encode_task(task)).as_ref(), Ok(task), "the spool codec loses the task");
}

/// The refusal's reason is true of the message and fit for a header.
pub fn check_refusal(raw: &RawMessage, limits: TaskLimits, reason: &Malformed) {
    let id = raw.message_id.as_deref();
    match reason {
        Malformed::MissingId => assert!(id.is_none()),
        Malformed::EmptyId => assert_eq!(id, Some(&[][..])),
        Malformed::IdTooLong(n) => assert!(id.is_some_and(|b| b.len() == *n) && *n > TaskId::MAX_LEN),
        Malformed::IdNotUtf8 => assert!(id.is_some_and(|b| std::str::from_utf8(b).is_err())),
        Malformed::TooManyHeaders { count, limit } => {
            assert_eq!((*count, *limit), (raw.headers.len(), limits.max_headers));
            assert!(count > limit);
        }
        Malformed::BodyTooLarge { size, limit } => {
            assert_eq!((*size, *limit), (raw.body.len(), limits.max_body_bytes));
            assert!(size > limit);
        }
        Malformed::BadHeader { name, .. } => {
            assert_eq!(*name, KIND_HEADER, "a task refused over header {name}");
            let kind = raw.headers.iter().find(|(k, _)| k == KIND_HEADER).map(|(_, v)| v);
            let valid = matches!(kind, Some(HeaderValue::Str(b))
                if !b.is_empty() && b.len() <= MAX_KIND_LEN && std::str::from_utf8(b).is_ok());
            assert!(kind.is_some() && !valid, "kind header {kind:?} refused");
        }
        other => panic!("a task refused for a result's reason: {other:?}"),
    }
    one_bounded_line(reason);
}

/// A dead-letter reason: one line, bounded, with a label.
pub fn one_bounded_line(reason: &Malformed) {
    let text = reason.to_string();
    assert!(!text.contains(['\n', '\r']), "reason {text:?} spans lines");
    assert!(text.len() <= MAX_REASON_LEN, "reason of {} bytes: {:.160}...", text.len(), text);
    assert!(!reason.label().is_empty());
}

/// The same message delivered to a consuming lane, twice.
fn through_a_lane(cfg: Config, raw: RawMessage, verdict: Result<tasklane_core::Task, Malformed>) {
    let mut rig = Rig::new(cfg, SpoolSnapshot::default());
    rig.answer_all();
    let channel = rig.consume_channel().expect("consuming after the set-up");
    assert_eq!(rig.lane.status(), &Status::Consuming);
    let deliver = |tag| Input::Delivery { channel, tag, redelivered: false, message: raw.clone() };
    let out = rig.feed(deliver(1)).expect("a delivery is never misuse");
    match verdict {
        Err(reason) => {
            let message_id = raw.message_id.clone().and_then(|b| String::from_utf8(b).ok());
            assert_eq!(
                out,
                vec![
                    Output::Amqp(Amqp::Reject { tag: DeliveryTag { channel, tag: 1 } }),
                    Output::Event(Event::Rejected { message_id, reason }),
                ]
            );
            assert_eq!(rig.lane.counters().rejected, 1);
        }
        Ok(task) => {
            // Spooled and handed off at once (SPEC §4 "Handoff"); nothing is
            // acked before the commit.
            assert!(
                matches!(out.as_slice(), [Output::Spool(w), Output::Handoff(h)]
                    if matches!(&w.op, SpoolOp::Insert(t) if t.task == task && t.meta() == h.task)),
                "an accepted task is spooled and handed off, and nothing else happens before the commit: {out:?}"
            );
            let out = rig.commit_all().expect("commit of issued writes");
            assert!(!out.iter().any(|o| matches!(o, Output::Handoff(_))), "a second hand-off: {out:?}");
            assert!(out.contains(&Output::Amqp(Amqp::Ack { tag: DeliveryTag { channel, tag: 1 }, multiple: true })));
            let out = rig.feed(deliver(2)).expect("a delivery is never misuse");
            assert_eq!(
                out,
                vec![
                    Output::Event(Event::DuplicateDropped { task: task.id.clone() }),
                    Output::Amqp(Amqp::Ack { tag: DeliveryTag { channel, tag: 2 }, multiple: true }),
                ]
            );
            assert_eq!(rig.lane.counters().duplicates_dropped, 1);
        }
    }
    assert_eq!(rig.lane.status(), &Status::Consuming, "the lane stops consuming over one message");
}
