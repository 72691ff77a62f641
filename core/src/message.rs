//! Tasks and results as tasklane sees them, and the rules that decide whether
//! a message from the broker is one (SPEC §3).
//!
//! The shells translate AMQP properties into [`RawMessage`] without judging
//! them; every rule lives here, once, where the fuzzers can reach it.

use std::fmt;

use bytes::Bytes;

use crate::ids::{EndpointId, TaskId};

/// Header naming the task's kind, for handler dispatch.
pub const KIND_HEADER: &str = "tasklane-kind";
/// Header naming the endpoint that produced a result.
pub const ENDPOINT_HEADER: &str = "tasklane-endpoint";
/// Header with a result's status, `ok` or `failed`.
pub const STATUS_HEADER: &str = "tasklane-status";
/// Header with the reason a message was dead-lettered.
pub const REASON_HEADER: &str = "tasklane-reason";
/// Longest `tasklane-kind` accepted, in bytes.
pub const MAX_KIND_LEN: usize = 255;

/// An AMQP header value, reduced to what tasklane distinguishes.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum HeaderValue {
    /// A long string (`S`) or short string, as raw bytes (not always UTF-8).
    Str(Vec<u8>),
    /// Any integer type.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A byte array (`x`).
    Bytes(Vec<u8>),
    /// Anything else (tables, arrays, floats, timestamps, decimals, void),
    /// named by its type.
    Other(String),
}

impl HeaderValue {
    fn type_name(&self) -> &str {
        match self {
            HeaderValue::Str(_) => "string",
            HeaderValue::Int(_) => "integer",
            HeaderValue::Bool(_) => "boolean",
            HeaderValue::Bytes(_) => "byte array",
            HeaderValue::Other(t) => t,
        }
    }
}

/// A message as the broker handed it over, before any judgement.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RawMessage {
    /// The AMQP `message_id` property, as raw bytes.
    pub message_id: Option<Vec<u8>>,
    /// The headers table, in wire order.
    pub headers: Vec<(String, HeaderValue)>,
    /// The body.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
    pub body: Bytes,
}

#[cfg(feature = "arbitrary")]
pub(crate) fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    Ok(Bytes::from(<Vec<u8> as arbitrary::Arbitrary>::arbitrary(u)?))
}

/// A task, as handed to the application.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The task id (AMQP `message_id`).
    pub id: TaskId,
    /// The `tasklane-kind` header, if any.
    pub kind: Option<String>,
    /// The opaque payload; tasklane never interprets it.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
    pub body: Bytes,
}

/// Outcome of a task, as the application reports it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResultStatus {
    /// The task ran and succeeded.
    Ok,
    /// The task ran and failed (or could not run); the body says why.
    Failed,
}

impl ResultStatus {
    /// The `tasklane-status` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Failed => "failed",
        }
    }

    /// Parses a `tasklane-status` header value.
    pub fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"ok" => Some(ResultStatus::Ok),
            b"failed" => Some(ResultStatus::Failed),
            _ => None,
        }
    }
}

/// A task's result, as spooled and published.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResult {
    /// The task this result answers.
    pub task: TaskId,
    /// Success or failure.
    pub status: ResultStatus,
    /// The opaque result payload.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
    pub body: Bytes,
}

/// Why a delivery is not a task. Such a delivery is rejected without requeue
/// (so it lands in `tasklane.dead`), counted, and reported as an event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// No `message_id` property.
    MissingId,
    /// An empty `message_id`.
    EmptyId,
    /// A `message_id` over 128 bytes.
    IdTooLong(usize),
    /// A `message_id` that is not UTF-8.
    IdNotUtf8,
    /// A body over the configured limit.
    BodyTooLarge {
        /// Size found.
        size: usize,
        /// Largest allowed.
        limit: usize,
    },
    /// More headers than allowed.
    TooManyHeaders {
        /// Count found.
        count: usize,
        /// Most allowed.
        limit: usize,
    },
    /// A tasklane header of the wrong type or content.
    BadHeader {
        /// The header.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// (results) The routing key is not `E.results` of a valid endpoint id.
    BadRoutingKey(String),
    /// (results) The result names a task that was never submitted.
    UnknownTask(TaskId),
    /// (results) The result was published by an endpoint that does not own
    /// the task: a spoofed or misrouted result.
    NotOwner {
        /// The endpoint named by the routing key.
        sender: String,
        /// The endpoint the task was submitted to.
        owner: EndpointId,
    },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::MissingId => write!(f, "no message_id"),
            Malformed::EmptyId => write!(f, "empty message_id"),
            Malformed::IdTooLong(n) => write!(f, "message_id is {n} bytes, at most {} allowed", TaskId::MAX_LEN),
            Malformed::IdNotUtf8 => write!(f, "message_id is not UTF-8"),
            Malformed::BodyTooLarge { size, limit } => write!(f, "body is {size} bytes, at most {limit} allowed"),
            Malformed::TooManyHeaders { count, limit } => write!(f, "{count} headers, at most {limit} allowed"),
            Malformed::BadHeader { name, problem } => write!(f, "header {name}: {problem}"),
            Malformed::BadRoutingKey(k) => write!(f, "routing key {k:?} is not <endpoint>.results"),
            Malformed::UnknownTask(t) => write!(f, "result for unknown task {:?}", t.as_str()),
            Malformed::NotOwner { sender, owner } => {
                write!(f, "result sent by {sender:?} for a task owned by {owner}")
            }
        }
    }
}

impl Malformed {
    /// A short stable label, for counters and the dead-letter reason header.
    pub fn label(&self) -> &'static str {
        match self {
            Malformed::MissingId => "missing-id",
            Malformed::EmptyId => "empty-id",
            Malformed::IdTooLong(_) => "id-too-long",
            Malformed::IdNotUtf8 => "id-not-utf8",
            Malformed::BodyTooLarge { .. } => "body-too-large",
            Malformed::TooManyHeaders { .. } => "too-many-headers",
            Malformed::BadHeader { .. } => "bad-header",
            Malformed::BadRoutingKey(_) => "bad-routing-key",
            Malformed::UnknownTask(_) => "unknown-task",
            Malformed::NotOwner { .. } => "not-owner",
        }
    }
}

/// Limits a task must respect.
#[derive(Clone, Copy, Debug)]
pub struct TaskLimits {
    /// Largest body.
    pub max_body_bytes: usize,
    /// Most headers.
    pub max_headers: usize,
}

fn decode_id(raw: &Option<Vec<u8>>) -> Result<TaskId, Malformed> {
    let id = raw.as_ref().ok_or(Malformed::MissingId)?;
    if id.is_empty() {
        return Err(Malformed::EmptyId);
    }
    if id.len() > TaskId::MAX_LEN {
        return Err(Malformed::IdTooLong(id.len()));
    }
    let s = std::str::from_utf8(id).map_err(|_| Malformed::IdNotUtf8)?;
    Ok(TaskId::new(s).expect("length and emptiness checked above"))
}

fn header<'a>(raw: &'a RawMessage, name: &str) -> Option<&'a HeaderValue> {
    raw.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn string_header(raw: &RawMessage, name: &'static str, max: usize) -> Result<Option<String>, Malformed> {
    match header(raw, name) {
        None => Ok(None),
        Some(HeaderValue::Str(b)) => {
            let s = std::str::from_utf8(b).map_err(|_| Malformed::BadHeader { name, problem: "not UTF-8".into() })?;
            if s.len() > max {
                return Err(Malformed::BadHeader { name, problem: format!("{} bytes, at most {max}", s.len()) });
            }
            Ok(Some(s.to_string()))
        }
        Some(other) => {
            let found = other.type_name().escape_debug();
            Err(Malformed::BadHeader { name, problem: format!("expected a string, found {found}") })
        }
    }
}

/// Decides whether a delivery is a task.
pub fn decode_task(raw: &RawMessage, limits: TaskLimits) -> Result<Task, Malformed> {
    let id = decode_id(&raw.message_id)?;
    if raw.headers.len() > limits.max_headers {
        return Err(Malformed::TooManyHeaders { count: raw.headers.len(), limit: limits.max_headers });
    }
    if raw.body.len() > limits.max_body_bytes {
        return Err(Malformed::BodyTooLarge { size: raw.body.len(), limit: limits.max_body_bytes });
    }
    let kind = string_header(raw, KIND_HEADER, MAX_KIND_LEN)?;
    if kind.as_deref() == Some("") {
        return Err(Malformed::BadHeader { name: KIND_HEADER, problem: "empty".into() });
    }
    Ok(Task { id, kind, body: raw.body.clone() })
}

/// A result as the service receives it, before the ownership check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedResult {
    /// The endpoint named by the routing key (`E.results`).
    pub sender: EndpointId,
    /// The result.
    pub result: TaskResult,
}

/// Decides whether a message on the `results` queue is a result, and who
/// sent it. The routing key and the `tasklane-endpoint` header must agree.
pub fn decode_result(routing_key: &str, raw: &RawMessage, limits: TaskLimits) -> Result<ReceivedResult, Malformed> {
    let task = decode_id(&raw.message_id)?;
    if raw.headers.len() > limits.max_headers {
        return Err(Malformed::TooManyHeaders { count: raw.headers.len(), limit: limits.max_headers });
    }
    if raw.body.len() > limits.max_body_bytes {
        return Err(Malformed::BodyTooLarge { size: raw.body.len(), limit: limits.max_body_bytes });
    }
    let sender = routing_key
        .strip_suffix(".results")
        .and_then(|e| EndpointId::new(e).ok())
        // 80 characters show any endpoint's key (at most 72) and keep the
        // reason under 1 KiB however each one escapes (up to 10 bytes).
        .ok_or_else(|| Malformed::BadRoutingKey(routing_key.chars().take(80).collect()))?;
    let named = string_header(raw, ENDPOINT_HEADER, EndpointId::MAX_LEN)?
        .ok_or(Malformed::BadHeader { name: ENDPOINT_HEADER, problem: "missing".into() })?;
    if named != sender.as_str() {
        return Err(Malformed::BadHeader {
            name: ENDPOINT_HEADER,
            problem: format!("names {named:?} but the routing key names {sender}"),
        });
    }
    let status = match header(raw, STATUS_HEADER) {
        Some(HeaderValue::Str(s)) => ResultStatus::parse(s).ok_or_else(|| Malformed::BadHeader {
            name: STATUS_HEADER,
            problem: "expected \"ok\" or \"failed\"".into(),
        })?,
        Some(other) => {
            return Err(Malformed::BadHeader {
                name: STATUS_HEADER,
                problem: format!("expected a string, found {}", other.type_name().escape_debug()),
            })
        }
        None => return Err(Malformed::BadHeader { name: STATUS_HEADER, problem: "missing".into() }),
    };
    Ok(ReceivedResult { sender, result: TaskResult { task, status, body: raw.body.clone() } })
}

/// The message an endpoint publishes for a result (the inverse of
/// [`decode_result`]); shells copy it into AMQP properties as they are.
pub fn encode_result(endpoint: &EndpointId, result: &TaskResult) -> RawMessage {
    RawMessage { body: result.body.clone(), ..encode_result_headers(endpoint, &result.task, result.status) }
}

/// The message an endpoint publishes for a result of `task`, without its
/// body (empty): what core issues in `Amqp::Publish`, whose shell reads the
/// body from the spool.
pub fn encode_result_headers(endpoint: &EndpointId, task: &TaskId, status: ResultStatus) -> RawMessage {
    RawMessage {
        message_id: Some(task.as_str().as_bytes().to_vec()),
        headers: vec![
            (ENDPOINT_HEADER.to_string(), HeaderValue::Str(endpoint.as_str().as_bytes().to_vec())),
            (STATUS_HEADER.to_string(), HeaderValue::Str(status.as_str().as_bytes().to_vec())),
        ],
        body: Bytes::new(),
    }
}

/// The message a service submits for a task (the inverse of [`decode_task`]).
pub fn encode_task(task: &Task) -> RawMessage {
    let mut headers = Vec::new();
    if let Some(kind) = &task.kind {
        headers.push((KIND_HEADER.to_string(), HeaderValue::Str(kind.as_bytes().to_vec())));
    }
    RawMessage { message_id: Some(task.id.as_str().as_bytes().to_vec()), headers, body: task.body.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TaskLimits = TaskLimits { max_body_bytes: 10, max_headers: 3 };

    fn raw(id: Option<&[u8]>) -> RawMessage {
        RawMessage { message_id: id.map(|b| b.to_vec()), headers: vec![], body: Bytes::from_static(b"x") }
    }

    #[test]
    fn task_rules() {
        assert_eq!(decode_task(&raw(None), LIMITS), Err(Malformed::MissingId));
        assert_eq!(decode_task(&raw(Some(b"")), LIMITS), Err(Malformed::EmptyId));
        assert_eq!(decode_task(&raw(Some(&[b'a'; 129])), LIMITS), Err(Malformed::IdTooLong(129)));
        assert_eq!(decode_task(&raw(Some(&[0xff, 0xfe])), LIMITS), Err(Malformed::IdNotUtf8));
        let mut big = raw(Some(b"t"));
        big.body = Bytes::from(vec![0; 11]);
        assert_eq!(decode_task(&big, LIMITS), Err(Malformed::BodyTooLarge { size: 11, limit: 10 }));
        let mut empty = raw(Some(b"t"));
        empty.body = Bytes::new();
        assert!(decode_task(&empty, LIMITS).is_ok(), "a zero-length payload is a payload");
        let mut h = raw(Some(b"t"));
        h.headers = vec![(KIND_HEADER.into(), HeaderValue::Int(3))];
        assert!(matches!(decode_task(&h, LIMITS), Err(Malformed::BadHeader { name: KIND_HEADER, .. })));
        h.headers = vec![("a".into(), HeaderValue::Int(1)); 4];
        assert_eq!(decode_task(&h, LIMITS), Err(Malformed::TooManyHeaders { count: 4, limit: 3 }));
        h.headers =
            vec![("other".into(), HeaderValue::Int(1)), (KIND_HEADER.into(), HeaderValue::Str(b"resize".to_vec()))];
        let t = decode_task(&h, LIMITS).unwrap();
        assert_eq!((t.id.as_str(), t.kind.as_deref()), ("t", Some("resize")));
    }

    #[test]
    fn result_round_trip_and_rules() {
        let e = EndpointId::new("ep").unwrap();
        let r = TaskResult {
            task: TaskId::new("t1").unwrap(),
            status: ResultStatus::Failed,
            body: Bytes::from_static(b"no"),
        };
        let m = encode_result(&e, &r);
        assert_eq!(decode_result("ep.results", &m, LIMITS), Ok(ReceivedResult { sender: e.clone(), result: r }));
        assert!(matches!(
            decode_result("other.results", &m, LIMITS),
            Err(Malformed::BadHeader { name: ENDPOINT_HEADER, .. })
        ));
        assert!(matches!(decode_result("ep.tasks", &m, LIMITS), Err(Malformed::BadRoutingKey(_))));
        let mut bad = m.clone();
        bad.headers[1].1 = HeaderValue::Str(b"maybe".to_vec());
        assert!(matches!(
            decode_result("ep.results", &bad, LIMITS),
            Err(Malformed::BadHeader { name: STATUS_HEADER, .. })
        ));
    }

    #[test]
    fn reasons_quote_what_the_sender_chose() {
        // Found by the result_intake fuzz target: a task id may hold any
        // text, and a reason is one line in a header and in the logs.
        let id = TaskId::new("t\r\nforged log line").unwrap();
        let text = Malformed::UnknownTask(id).to_string();
        assert_eq!(text, r#"result for unknown task "t\r\nforged log line""#);
        let text = Malformed::NotOwner { sender: "b\n".into(), owner: EndpointId::new("a").unwrap() }.to_string();
        assert!(!text.contains('\n'), "{text}");
        // Found by the task_decode fuzz target: a shell names other header
        // types; whatever it names them, the reason stays on one line.
        let mut raw = raw(Some(b"t"));
        raw.headers = vec![(KIND_HEADER.into(), HeaderValue::Other("table\n".into()))];
        let text = decode_task(&raw, LIMITS).unwrap_err().to_string();
        assert_eq!(text, r"header tasklane-kind: expected a string, found table\n");
        raw.headers = vec![
            (ENDPOINT_HEADER.into(), HeaderValue::Str(b"ep".to_vec())),
            (STATUS_HEADER.into(), HeaderValue::Other("\r".into())),
        ];
        let text = decode_result("ep.results", &raw, LIMITS).unwrap_err().to_string();
        assert_eq!(text, r"header tasklane-status: expected a string, found \r");
    }

    #[test]
    fn a_reason_stays_under_a_kilobyte_whatever_the_routing_key() {
        // Found by the result_intake fuzz target: a routing key of control
        // characters (a shortstr holds 255) escaped to a reason of over
        // 1 KiB, which is sent as a header and logged as one line.
        let mut raw = raw(Some(b"t"));
        raw.headers = vec![(ENDPOINT_HEADER.into(), HeaderValue::Str(b"ep".to_vec()))];
        for c in ['\u{1}', '\u{e0001}', '\0', 'a'] {
            let key: String = std::iter::repeat_n(c, 255).collect();
            let text = decode_result(&key, &raw, LIMITS).unwrap_err().to_string();
            assert!(text.len() <= 1024, "a reason of {} bytes for {c:?}", text.len());
            assert!(text.starts_with("routing key \""), "{text}");
        }
    }

    #[test]
    fn task_round_trip() {
        let t = Task { id: TaskId::new("x").unwrap(), kind: Some("k".into()), body: Bytes::from_static(b"p") };
        assert_eq!(decode_task(&encode_task(&t), LIMITS), Ok(t));
    }
}
