//! Hostile messages at the endpoint and at the service, through core alone:
//! each has a clear outcome (dead-lettered with a reason that fits on one
//! line, or a duplicate acked without a second hand-off), the lane keeps
//! consuming, and the good tasks around it all go through. Every lane here
//! runs under the fuzzers' auditor, so its invariants are checked too.

use bytes::Bytes;
use tasklane_core::message::{ENDPOINT_HEADER, KIND_HEADER, STATUS_HEADER};
use tasklane_core::service::{ResultIntake, Verdict};
use tasklane_core::{
    encode_result, encode_task, Amqp, ChannelId, Config, DeliveryTag, EndpointId, Event, HeaderValue, Input, Malformed,
    Output, RawMessage, ResultStatus, SpoolOp, SpoolSnapshot, SpoolWrite, Status, Task, TaskId, TaskLimits, TaskResult,
};
use tasklane_fuzz::rig::Rig;

fn endpoint(s: &str) -> EndpointId {
    EndpointId::new(s).unwrap()
}

fn task_id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

fn good(id: &str) -> RawMessage {
    encode_task(&Task { id: task_id(id), kind: Some("resize".into()), body: Bytes::from(format!("payload {id}")) })
}

fn with_id(id: Option<&[u8]>) -> RawMessage {
    RawMessage { message_id: id.map(<[u8]>::to_vec), headers: vec![], body: Bytes::from_static(b"x") }
}

fn with_kind(kind: HeaderValue) -> RawMessage {
    RawMessage {
        message_id: Some(b"k".to_vec()),
        headers: vec![(KIND_HEADER.into(), kind)],
        body: Bytes::from_static(b"x"),
    }
}

/// A consuming lane under audit, and a broker that hands it messages with
/// increasing tags.
struct Endpoint {
    rig: Rig,
    channel: ChannelId,
    tag: u64,
}

impl Endpoint {
    fn new(cfg: Config) -> Self {
        let mut rig = Rig::new(cfg, SpoolSnapshot::default());
        rig.answer_all();
        let channel = rig.consume_channel().unwrap();
        assert_eq!(rig.lane.status(), &Status::Consuming);
        Self { rig, channel, tag: 0 }
    }

    fn deliver(&mut self, message: RawMessage) -> Vec<Output> {
        self.tag += 1;
        let input = Input::Delivery { channel: self.channel, tag: self.tag, redelivered: false, message };
        let mut out = self.rig.feed(input).unwrap();
        out.extend(self.rig.commit_all().unwrap());
        out
    }

    /// Delivers `message`; expects it dead-lettered, and returns the reason.
    fn rejected(&mut self, message: RawMessage) -> Malformed {
        let out = self.deliver(message.clone());
        let tag = DeliveryTag { channel: self.channel, tag: self.tag };
        assert_eq!(out.first(), Some(&Output::Amqp(Amqp::Reject { tag })), "not rejected: {out:?}");
        let Some(Output::Event(Event::Rejected { reason, .. })) = out.get(1) else { panic!("no reason: {out:?}") };
        let text = reason.to_string();
        assert!(!text.contains('\n') && text.len() <= 1024, "reason {text:?}");
        // The endpoint goes on: a good task right after it is taken.
        let next = format!("after-{}", self.tag);
        let out = self.deliver(good(&next));
        assert!(out.iter().any(|o| matches!(o, Output::Handoff(h) if h.task.id.as_str() == next)), "{out:?}");
        assert_eq!(self.rig.lane.status(), &Status::Consuming);
        reason.clone()
    }

    /// Delivers `message`; expects it spooled and handed off, and returns
    /// the task as the spool write holds it (what the application reads).
    fn accepted(&mut self, message: RawMessage) -> Task {
        let out = self.deliver(message);
        let handed: Vec<_> =
            out.iter().filter_map(|o| if let Output::Handoff(h) = o { Some(&h.task) } else { None }).collect();
        assert_eq!(handed.len(), 1, "{out:?}");
        let tag = DeliveryTag { channel: self.channel, tag: self.tag };
        assert!(out.contains(&Output::Amqp(Amqp::Ack { tag, multiple: true })), "{out:?}");
        let stored = out.iter().find_map(|o| match o {
            Output::Spool(SpoolWrite { op: SpoolOp::Insert(t), .. }) if t.arrival == handed[0].arrival => Some(t),
            _ => None,
        });
        let stored = stored.unwrap_or_else(|| panic!("handed off {:?} without spooling it: {out:?}", handed[0]));
        assert_eq!(&stored.meta(), handed[0]);
        stored.task.clone()
    }
}

fn cfg() -> Config {
    Config::new(endpoint("ep"))
}

#[test]
fn missing_empty_oversize_and_non_utf8_message_ids_are_dead_lettered() {
    let mut e = Endpoint::new(cfg());
    assert_eq!(e.rejected(with_id(None)), Malformed::MissingId);
    assert_eq!(e.rejected(with_id(Some(b""))), Malformed::EmptyId);
    assert_eq!(e.rejected(with_id(Some(&[b'a'; 129]))), Malformed::IdTooLong(129));
    assert_eq!(e.rejected(with_id(Some(&[b'a'; 100_000]))), Malformed::IdTooLong(100_000));
    assert_eq!(e.rejected(with_id(Some(&[0xff, 0xfe, b'a']))), Malformed::IdNotUtf8);
    assert_eq!(e.rejected(with_id(Some(&[b'a', 0xc3]))), Malformed::IdNotUtf8, "a cut multi-byte character");
    assert_eq!(e.accepted(with_id(Some(&[b'a'; 128]))).id.as_str().len(), 128, "128 bytes is the limit, inclusive");
    assert_eq!(e.accepted(with_id(Some("é".repeat(64).as_bytes()))).id.as_str(), "é".repeat(64));
    let c = e.rig.lane.counters();
    assert_eq!((c.received, c.rejected, c.acked, c.handed_off), (14, 6, 8, 8));
}

#[test]
fn a_kind_header_of_the_wrong_type_or_content_is_dead_lettered() {
    let mut e = Endpoint::new(cfg());
    let wrong = [
        (HeaderValue::Int(7), "expected a string, found integer"),
        (HeaderValue::Bool(true), "expected a string, found boolean"),
        (HeaderValue::Bytes(b"resize".to_vec()), "expected a string, found byte array"),
        (HeaderValue::Other("table".into()), "expected a string, found table"),
        (HeaderValue::Other("void".into()), "expected a string, found void"),
        (HeaderValue::Str(vec![0xff]), "not UTF-8"),
        (HeaderValue::Str(vec![b'k'; 256]), "256 bytes, at most 255"),
        (HeaderValue::Str(vec![]), "empty"),
    ];
    for (value, problem) in wrong {
        let reason = e.rejected(with_kind(value));
        assert_eq!(reason, Malformed::BadHeader { name: KIND_HEADER, problem: problem.into() });
        assert_eq!(reason.label(), "bad-header");
    }
    assert_eq!(e.accepted(with_kind(HeaderValue::Str(vec![b'k'; 255]))).kind.unwrap().len(), 255);
    // Headers tasklane does not know are carried, whatever their type.
    let mut other = good("other-headers");
    other.headers.push(("x-retries".into(), HeaderValue::Other("float".into())));
    other.headers.push((STATUS_HEADER.into(), HeaderValue::Int(1)));
    assert_eq!(e.accepted(other).kind.as_deref(), Some("resize"));
}

#[test]
fn huge_header_tables_are_dead_lettered_and_the_limit_is_inclusive() {
    let mut e = Endpoint::new(cfg());
    let table = |n: usize| {
        let mut m = good(&format!("h{n}"));
        m.headers = (0..n).map(|i| (format!("x-{i}"), HeaderValue::Int(i as i64))).collect();
        m
    };
    assert_eq!(e.rejected(table(100_000)), Malformed::TooManyHeaders { count: 100_000, limit: 64 });
    assert_eq!(e.rejected(table(65)), Malformed::TooManyHeaders { count: 65, limit: 64 });
    assert_eq!(e.accepted(table(64)).id.as_str(), "h64");
}

#[test]
fn zero_length_bodies_are_tasks_and_oversize_bodies_are_dead_lettered() {
    let mut c = cfg();
    c.max_body_bytes = 1000;
    let mut e = Endpoint::new(c);
    let body = |id: &str, n: usize| encode_task(&Task { id: task_id(id), kind: None, body: Bytes::from(vec![7; n]) });
    assert_eq!(e.accepted(body("empty", 0)).body.len(), 0);
    assert_eq!(e.accepted(body("full", 1000)).body.len(), 1000);
    assert_eq!(e.rejected(body("over", 1001)), Malformed::BodyTooLarge { size: 1001, limit: 1000 });
    assert_eq!(e.rejected(body("huge", 4 << 20)), Malformed::BodyTooLarge { size: 4 << 20, limit: 1000 });
}

#[test]
fn the_same_task_delivered_many_times_is_handed_off_once_and_every_copy_is_acked() {
    let mut e = Endpoint::new(cfg());
    let task = e.accepted(good("same"));
    // Redeliveries while the task is with the application ...
    for _ in 0..100 {
        let out = e.deliver(good("same"));
        assert!(out.contains(&Output::Event(Event::DuplicateDropped { task: task.id.clone() })), "{out:?}");
    }
    // ... while its result waits for the broker's confirm ...
    e.rig.feed(Input::Complete { task: task.id.clone(), status: ResultStatus::Ok, body: Bytes::new() }).unwrap();
    e.rig.commit_all().unwrap();
    assert_eq!(e.rig.auditor.in_flight().len(), 1);
    for _ in 0..100 {
        e.deliver(good("same"));
    }
    // ... and after it was confirmed.
    let (channel, tag, _) = e.rig.auditor.in_flight()[0].clone();
    e.rig.feed(Input::PublishAck { channel, tag, multiple: false }).unwrap();
    e.rig.commit_all().unwrap();
    for _ in 0..100 {
        e.deliver(good("same"));
    }
    let c = e.rig.lane.counters();
    assert_eq!((c.received, c.handed_off, c.duplicates_dropped, c.acked), (301, 1, 300, 301));
    assert_eq!((c.published, c.confirmed), (1, 1));
    assert_eq!((e.rig.lane.inbox_len(), e.rig.lane.outbox_len()), (0, 0));
}

fn intake() -> ResultIntake {
    ResultIntake::new(100, [], TaskLimits { max_body_bytes: 1 << 20, max_headers: 16 })
}

fn result(from: &str, task: &str) -> RawMessage {
    let r = TaskResult { task: task_id(task), status: ResultStatus::Ok, body: Bytes::from_static(b"out") };
    encode_result(&endpoint(from), &r)
}

/// t1 was submitted to `a`; nothing else was submitted.
fn owner(t: &TaskId) -> Option<EndpointId> {
    (t.as_str() == "t1").then(|| endpoint("a"))
}

#[test]
fn results_for_unknown_tasks_are_dead_lettered() {
    let mut intake = intake();
    let v = intake.judge("a.results", &result("a", "never-submitted"), owner);
    assert_eq!(v, Verdict::DeadLetter(Malformed::UnknownTask(task_id("never-submitted"))));
    assert_eq!(intake.seen().count(), 0, "a dead-lettered result does not enter the window");
    assert!(matches!(intake.judge("a.results", &result("a", "t1"), owner), Verdict::Accept { .. }));
}

#[test]
fn results_under_another_endpoints_routing_key_are_dead_lettered() {
    let mut intake = intake();
    // b publishes a result for a's task under its own key: not the owner.
    let v = intake.judge("b.results", &result("b", "t1"), owner);
    assert_eq!(v, Verdict::DeadLetter(Malformed::NotOwner { sender: "b".into(), owner: endpoint("a") }));
    // b claims to be a in the header: routing key and header disagree.
    let v = intake.judge("b.results", &result("a", "t1"), owner);
    assert!(matches!(v, Verdict::DeadLetter(Malformed::BadHeader { name: ENDPOINT_HEADER, .. })), "{v:?}");
    // Keys that name no endpoint at all.
    for key in ["", "results", ".results", "a.tasks", "a.results.x", "a b.results", "*.results", "#"] {
        let v = intake.judge(key, &result("a", "t1"), owner);
        assert!(matches!(v, Verdict::DeadLetter(Malformed::BadRoutingKey(_))), "{key:?}: {v:?}");
    }
    let long = format!("{}.results", "x".repeat(10_000));
    let Verdict::DeadLetter(reason) = intake.judge(&long, &result("a", "t1"), owner) else { panic!() };
    assert!(reason.to_string().len() < 400, "the reason quotes at most 300 characters of the key");
    // None of it took the owner's place: a's own result is accepted, once.
    assert!(matches!(intake.judge("a.results", &result("a", "t1"), owner), Verdict::Accept { .. }));
    assert_eq!(intake.judge("a.results", &result("a", "t1"), owner), Verdict::Duplicate(task_id("t1")));
}

#[test]
fn results_with_missing_or_mistyped_headers_are_dead_lettered() {
    let mut intake = intake();
    let mut no_status = result("a", "t1");
    no_status.headers.retain(|(k, _)| k != STATUS_HEADER);
    let mut int_status = result("a", "t1");
    int_status.headers[1].1 = HeaderValue::Int(0);
    let mut no_endpoint = result("a", "t1");
    no_endpoint.headers.retain(|(k, _)| k != ENDPOINT_HEADER);
    for (m, name) in [(no_status, STATUS_HEADER), (int_status, STATUS_HEADER), (no_endpoint, ENDPOINT_HEADER)] {
        let v = intake.judge("a.results", &m, owner);
        assert!(matches!(&v, Verdict::DeadLetter(Malformed::BadHeader { name: n, .. }) if *n == name), "{v:?}");
    }
    assert!(matches!(intake.judge("a.results", &result("a", "t1"), owner), Verdict::Accept { .. }));
}
