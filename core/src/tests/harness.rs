//! A test world around one lane: a model broker (one queue, single active
//! consumer or exclusive, prefetch, per-channel tags, confirms, returns,
//! requeue on loss), a model spool (group commits; a crash drops what was not
//! committed) and a model application. `step` delivers everything that is
//! due; `drive` steps until nothing moves, jumping time to the lane's next
//! deadline, and fails on livelock. Every step is checked by the auditor
//! (`crate::audit`), the one set of lane invariants all test layers share;
//! the world adds `check_nothing_lost`, which needs the broker's view.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::audit::{self, Auditor, Before};
use crate::*;

/// A message in the model broker.
#[derive(Clone, Debug)]
pub struct Msg {
    pub raw: RawMessage,
    pub redelivered: bool,
    /// The lane's client cannot decode it: delivering it kills the
    /// connection (as amqprs does with a non-UTF-8 message id).
    pub poison: bool,
}

impl Msg {
    fn id(&self) -> Option<TaskId> {
        self.raw.message_id.as_ref().and_then(|b| String::from_utf8(b.clone()).ok()).and_then(|s| TaskId::new(s).ok())
    }
}

#[derive(Debug, Default)]
pub struct Consumer {
    pub channel: Option<ChannelId>,
    pub prefetch: usize,
    pub next_tag: u64,
    pub unacked: BTreeMap<u64, Msg>,
}

#[derive(Debug, Default)]
pub struct Broker {
    pub reachable: bool,
    pub routable: bool,
    /// The `results` exchange does not exist: a publish closes the channel
    /// with 404.
    pub exchange_missing: bool,
    /// Another endpoint holds the queue: the consumer count says two
    /// (single active consumer) or are refused (exclusive).
    pub other_holder: bool,
    /// The queue counts only its active consumer (a quorum queue): the
    /// count is one while any consumer is registered. Otherwise (a classic
    /// queue) it counts every registered consumer.
    pub quorum: bool,
    pub nack_next: usize,
    /// Confirms wait in `held_confirms` until released.
    pub hold_confirms: bool,
    pub held_confirms: Vec<Input>,
    pub queue: VecDeque<Msg>,
    pub conn: Option<ConnId>,
    pub channels: BTreeSet<ChannelId>,
    pub consumer: Consumer,
    pub standby: bool,
    pub publish: Option<(ChannelId, u64)>,
    pub results: Vec<TaskResult>,
    /// Status reports published, with the time they were.
    pub reports: Vec<(Instant, Report)>,
    pub dead: Vec<RawMessage>,
    pub acked: Vec<TaskId>,
}

impl Broker {
    /// A publish (result or report) on the publishing channel: the next
    /// confirm tag, checked (results and reports share one numbering), or
    /// `None` when the `results` exchange is missing and the broker closes
    /// the channel (the close goes to `inputs`).
    fn take_publish_tag(&mut self, tag: PublishTag, inputs: &mut VecDeque<Input>) -> Option<ChannelId> {
        if self.exchange_missing {
            self.publish = None;
            self.channels.remove(&tag.channel);
            let text = "NOT_FOUND - no exchange 'results'".to_string();
            inputs.push_back(Input::ChannelClosed { channel: tag.channel, code: 404, text });
            return None;
        }
        let (channel, last) = self.publish.as_mut().expect("the caller matched the publishing channel");
        *last += 1;
        assert_eq!(tag.seq, *last, "confirm tags count from 1 per channel, reports too");
        Some(*channel)
    }

    /// The connection dies: unacked deliveries go back to the queue's head,
    /// marked redelivered, in tag order.
    pub fn drop_connection(&mut self) -> Option<ConnId> {
        let conn = self.conn.take()?;
        self.held_confirms.clear();
        self.drop_consumer();
        self.channels.clear();
        self.publish = None;
        Some(conn)
    }

    fn drop_consumer(&mut self) {
        let unacked = std::mem::take(&mut self.consumer.unacked);
        for (_, mut m) in unacked.into_iter().rev() {
            m.redelivered = true;
            self.queue.push_front(m);
        }
        self.consumer = Consumer::default();
        self.standby = false;
    }
}

#[derive(Debug, Default)]
pub struct Spool {
    /// What survived the last commit.
    pub durable: MemorySpool,
    pub pending: Vec<SpoolWrite>,
    pub auto_commit: bool,
    /// Every task whose insert was ever committed.
    pub ever_durable: BTreeSet<TaskId>,
}

#[derive(Debug, Default)]
pub struct App {
    /// Handed off, not yet completed, with the bodies the application read
    /// from the spool when it took them.
    pub waiting: VecDeque<Task>,
    pub auto_complete: bool,
    /// Handed off in this spool lifetime (reset by a crash).
    pub handed: BTreeSet<TaskId>,
}

pub struct World {
    pub now: Instant,
    pub cfg: Config,
    pub lane: Lane,
    pub auditor: Auditor,
    pub broker: Broker,
    pub spool: Spool,
    pub app: App,
    pub inputs: VecDeque<Input>,
    pub events: Vec<Event>,
    pub submitted: BTreeSet<TaskId>,
    pub crashes: u32,
    /// Every AMQP command the lane issued, in order.
    pub commands: Vec<Amqp>,
}

pub fn cfg() -> Config {
    let mut c = Config::new(EndpointId::new("ep").unwrap());
    c.prefetch = 8;
    c.max_unconfirmed = 4;
    c.seed = 1;
    // Reports on a timer keep a lane busy forever; the tests of reports
    // turn them on.
    c.report_interval = None;
    c
}

pub fn task_msg(id: &str) -> RawMessage {
    encode_task(&Task { id: TaskId::new(id).unwrap(), kind: None, body: Bytes::from(format!("payload {id}")) })
}

impl World {
    pub fn new(cfg: Config) -> Self {
        let now = Instant::now();
        let mut lane = Lane::new(now, cfg.clone(), SpoolSnapshot::default()).unwrap();
        let mut auditor = Auditor::new(&cfg, &SpoolSnapshot::default());
        let first = audit::drain(&mut lane);
        auditor.begin(&lane, &first).unwrap_or_else(|v| panic!("{v}"));
        let mut w = Self {
            now,
            cfg,
            lane,
            auditor,
            broker: Broker { reachable: true, routable: true, ..Broker::default() },
            spool: Spool { auto_commit: true, ..Spool::default() },
            app: App { auto_complete: true, ..App::default() },
            inputs: VecDeque::new(),
            events: Vec::new(),
            submitted: BTreeSet::new(),
            crashes: 0,
            commands: Vec::new(),
        };
        w.execute(first);
        w
    }

    /// A world whose broker starts unreachable.
    pub fn unreachable(cfg: Config) -> Self {
        let mut w = Self::new(cfg);
        w.broker.reachable = false;
        w.inputs.clear();
        let conn = w.broker.conn.take().unwrap();
        w.inputs.push_back(Input::ConnectFailed { conn, reason: "refused".into() });
        w
    }

    pub fn submit(&mut self, id: &str) {
        self.submitted.insert(TaskId::new(id).unwrap());
        self.broker.queue.push_back(Msg { raw: task_msg(id), redelivered: false, poison: false });
    }

    /// A message the lane's client cannot decode.
    pub fn submit_poison(&mut self, id: &str) {
        self.broker.queue.push_back(Msg { raw: task_msg(id), redelivered: false, poison: true });
    }

    pub fn submit_raw(&mut self, raw: RawMessage) {
        self.broker.queue.push_back(Msg { raw, redelivered: false, poison: false });
    }

    /// Feeds `input` to the lane, audits the step, and carries out what the
    /// lane asks for.
    pub fn feed(&mut self, input: Input) {
        let before = Before::of(&self.lane);
        let result = self.lane.handle(self.now, input.clone());
        let outputs = audit::drain(&mut self.lane);
        if let Err(v) = self.auditor.step(&before, self.now, &input, &result, &outputs, &self.lane) {
            panic!("{v}");
        }
        result.expect("the harness uses the API correctly");
        self.execute(outputs);
    }

    /// Lets time pass beyond the lane's next deadline (without a timeout)
    /// and then misuses the API in one of four ways: the lane must refuse
    /// it and stay exactly as it was, due deadlines and all.
    pub fn misuse(&mut self, kind: u8, extra: Duration) {
        if let Some(due) = self.lane.poll_timeout() {
            self.now = self.now.max(due);
        }
        self.now += extra;
        // A task completed already (its result in the outbox or gone), so
        // no longer the application's to complete.
        let done = self.spool.durable.snapshot().completed.last().cloned();
        let beyond = WriteSeq(self.lane.last_write().0 + 1);
        let input = match kind % 5 {
            0 => Input::Complete {
                task: TaskId::new("never-handed-off").unwrap(),
                status: ResultStatus::Ok,
                body: Bytes::new(),
            },
            1 => Input::SpoolCommitted { upto: beyond },
            2 => Input::Connected { conn: ConnId(u64::MAX) },
            3 => Input::SpoolRefused { seq: beyond, reason: "no such write".into() },
            _ => match done.filter(|t| !self.app.handed.contains(t)) {
                Some(task) => Input::Complete { task, status: ResultStatus::Failed, body: Bytes::new() },
                None => Input::SpoolRefused { seq: WriteSeq(0), reason: "no such write".into() },
            },
        };
        let state = format!("{:?}", self.lane);
        let deadline = self.lane.poll_timeout();
        let before = Before::of(&self.lane);
        let result = self.lane.handle(self.now, input.clone());
        let outputs = audit::drain(&mut self.lane);
        if let Err(v) = self.auditor.step(&before, self.now, &input, &result, &outputs, &self.lane) {
            panic!("{v}");
        }
        assert!(result.is_err(), "{input:?} is misuse, but the lane took it");
        assert_eq!(format!("{:?}", self.lane), state, "the lane refused {input:?} but changed");
        assert_eq!(self.lane.poll_timeout(), deadline, "the lane refused {input:?} but moved its deadline");
    }

    /// Carries out everything the lane asked for.
    fn execute(&mut self, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Amqp(cmd) => self.amqp(cmd),
                Output::Spool(w) => self.spool.pending.push(w),
                Output::Handoff(h) => {
                    // The application takes it at once: its body comes
                    // from the spool, by its arrival position (from the
                    // write on its way when it is not committed yet).
                    let pending = self.spool.pending.iter().find_map(|w| match &w.op {
                        SpoolOp::Insert(t) if t.arrival == h.task.arrival => Some(t.task.clone()),
                        _ => None,
                    });
                    let task = pending.or_else(|| self.spool.durable.task(h.task.arrival).cloned());
                    let task = task.unwrap_or_else(|| panic!("handed off {:?}, which the spool does not hold", h.task));
                    assert_eq!((&task.id, task.body.len() as u64), (&h.task.id, h.task.size), "handoff of {h:?}");
                    self.app.handed.insert(h.task.id.clone());
                    self.app.waiting.push_back(task);
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn amqp(&mut self, cmd: Amqp) {
        self.commands.push(cmd.clone());
        let b = &mut self.broker;
        match cmd {
            Amqp::Connect { conn, .. } => {
                if b.reachable {
                    b.drop_connection();
                    b.conn = Some(conn);
                    self.inputs.push_back(Input::Connected { conn });
                } else {
                    self.inputs.push_back(Input::ConnectFailed { conn, reason: "refused".into() });
                }
            }
            Amqp::OpenChannel { channel } if b.conn.is_some() => {
                b.channels.insert(channel);
                self.inputs.push_back(Input::ChannelOpened { channel });
            }
            Amqp::Qos { channel, prefetch } if b.channels.contains(&channel) => {
                b.consumer.prefetch = prefetch as usize;
                self.inputs.push_back(Input::QosOk { channel });
            }
            Amqp::Consume { channel, exclusive, .. } if b.channels.contains(&channel) => {
                if b.other_holder && exclusive {
                    b.channels.remove(&channel);
                    let text = "ACCESS_REFUSED - queue in exclusive use".to_string();
                    self.inputs.push_back(Input::ChannelClosed { channel, code: 403, text });
                } else {
                    b.consumer.channel = Some(channel);
                    b.standby = b.other_holder;
                    self.inputs.push_back(Input::ConsumeOk { channel });
                }
            }
            Amqp::QueryConsumers { channel, .. } if b.channels.contains(&channel) => {
                let ours = b.consumer.channel.is_some();
                let consumers = if b.quorum {
                    u32::from(ours || b.other_holder)
                } else {
                    u32::from(ours) + u32::from(b.other_holder)
                };
                self.inputs.push_back(Input::ConsumerCount { channel, consumers });
            }
            Amqp::ConfirmSelect { channel } if b.channels.contains(&channel) => {
                b.publish = Some((channel, 0));
                self.inputs.push_back(Input::ConfirmSelectOk { channel });
            }
            Amqp::Ack { tag, multiple } if b.channels.contains(&tag.channel) => {
                let tags: Vec<u64> = if multiple {
                    b.consumer.unacked.range(..=tag.tag).map(|(t, _)| *t).collect()
                } else {
                    vec![tag.tag]
                };
                for t in tags {
                    let m = b.consumer.unacked.remove(&t).expect("the auditor checked the tag");
                    b.acked.push(m.id().expect("the auditor checked it is a task"));
                }
            }
            Amqp::Reject { tag } if b.channels.contains(&tag.channel) => {
                let m = b.consumer.unacked.remove(&tag.tag).expect("the auditor checked the tag");
                b.dead.push(m.raw);
            }
            Amqp::Publish { tag, message, routing_key, exchange, result }
                if b.publish.is_some_and(|(c, _)| c == tag.channel) =>
            {
                // The shell's part: the body is the spool's, read at the
                // outbox position the publish names (committed before it).
                let body = self.spool.durable.result_body(result).cloned();
                let body = body.unwrap_or_else(|| panic!("published {result:?}, whose body the spool does not hold"));
                let message = RawMessage { body, ..message };
                assert_eq!((exchange, routing_key.as_str()), ("results", "ep.results"));
                let Some(channel) = b.take_publish_tag(tag, &mut self.inputs) else { return };
                if b.nack_next > 0 {
                    b.nack_next -= 1;
                    self.inputs.push_back(Input::PublishNack { channel, tag: tag.seq, multiple: false });
                    return;
                }
                if b.routable {
                    let r =
                        decode_result("ep.results", &message, TaskLimits { max_body_bytes: 1 << 20, max_headers: 8 })
                            .expect("the lane publishes valid results");
                    b.results.push(r.result);
                } else {
                    let message_id = message.message_id.clone();
                    self.inputs.push_back(Input::Returned { channel, message_id, code: 312, text: "NO_ROUTE".into() });
                }
                let ack = Input::PublishAck { channel, tag: tag.seq, multiple: false };
                if b.hold_confirms {
                    b.held_confirms.push(ack);
                } else {
                    self.inputs.push_back(ack);
                }
            }
            Amqp::PublishReport { tag, exchange, routing_key, report }
                if b.publish.is_some_and(|(c, _)| c == tag.channel) =>
            {
                assert_eq!((exchange, routing_key.as_str()), ("results", "ep.status"));
                let Some(channel) = b.take_publish_tag(tag, &mut self.inputs) else { return };
                b.reports.push((self.now, *report));
                // Not mandatory: an unroutable report is acked, never returned.
                if b.nack_next > 0 {
                    b.nack_next -= 1;
                    self.inputs.push_back(Input::PublishNack { channel, tag: tag.seq, multiple: false });
                    return;
                }
                let ack = Input::PublishAck { channel, tag: tag.seq, multiple: false };
                if b.hold_confirms {
                    b.held_confirms.push(ack);
                } else {
                    self.inputs.push_back(ack);
                }
            }
            Amqp::Quarantine { scan, max, .. } => {
                let mut quarantined = Vec::new();
                let mut kept = VecDeque::new();
                let mut scanned = 0;
                while scanned < max as usize {
                    let Some(m) = b.queue.pop_front() else { break };
                    scanned += 1;
                    if m.poison {
                        quarantined.push(m.id().map_or("-".into(), |t| t.to_string()));
                        b.dead.push(m.raw);
                    } else {
                        kept.push_back(m);
                    }
                }
                while let Some(m) = kept.pop_back() {
                    b.queue.push_front(m);
                }
                let scanned = scanned as u32;
                self.inputs.push_back(Input::QuarantineDone { scan, quarantined, scanned, error: None });
            }
            Amqp::Disconnect { conn, .. } if b.conn == Some(conn) => {
                b.drop_connection();
            }
            _ => {} // a command on a connection or channel that is gone
        }
    }

    /// The broker delivers what the prefetch window allows.
    fn deliver(&mut self) {
        let b = &mut self.broker;
        let Some(channel) = b.consumer.channel else { return };
        if b.standby {
            return;
        }
        while b.consumer.unacked.len() < b.consumer.prefetch {
            let Some(m) = b.queue.pop_front() else { break };
            if m.poison {
                // The client fails to decode it and drops the connection;
                // the broker requeues it (and the rest) at the head.
                b.queue.push_front(m);
                if let Some(conn) = b.drop_connection() {
                    self.inputs.push_back(Input::ConnectionLost { conn, reason: "frame decoding failed".into() });
                }
                return;
            }
            b.consumer.next_tag += 1;
            let tag = b.consumer.next_tag;
            self.inputs.push_back(Input::Delivery { channel, tag, redelivered: m.redelivered, message: m.raw.clone() });
            b.consumer.unacked.insert(tag, m);
        }
    }

    /// Commits every pending spool write as one group.
    pub fn commit(&mut self) {
        let Some(last) = self.spool.pending.last().map(|w| w.seq) else { return };
        for w in std::mem::take(&mut self.spool.pending) {
            self.spool.durable.apply(&w.op).expect("core issues consistent spool writes");
            if let SpoolOp::Insert(t) = &w.op {
                self.spool.ever_durable.insert(t.task.id.clone());
            }
        }
        self.inputs.push_back(Input::SpoolCommitted { upto: last });
    }

    pub fn complete_one(&mut self) -> bool {
        let Some(t) = self.app.waiting.pop_front() else { return false };
        let body = Bytes::from(format!("result of {}", t.id));
        self.inputs.push_back(Input::Complete { task: t.id, status: ResultStatus::Ok, body });
        true
    }

    /// One round: deliver, commit, complete, feed every queued input.
    /// Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        self.deliver();
        if self.spool.auto_commit {
            self.commit();
        }
        if self.app.auto_complete {
            while self.complete_one() {}
        }
        let moved = !self.inputs.is_empty();
        while let Some(input) = self.inputs.pop_front() {
            self.feed(input);
        }
        check_nothing_lost(self);
        moved
    }

    /// Steps until nothing moves, jumping time to the lane's next deadline,
    /// while `limit` of simulated time passes. Panics on livelock.
    pub fn drive_for(&mut self, limit: Duration) {
        self.settle(limit);
        self.now += limit;
        self.feed(Input::Timeout);
        while self.step() {}
    }

    /// Steps until nothing moves, jumping to deadlines at most `limit` away.
    fn settle(&mut self, limit: Duration) {
        let end = self.now + limit;
        for _ in 0..1_000_000 {
            if self.step() {
                continue;
            }
            match self.lane.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.feed(Input::Timeout);
                }
                _ => return,
            }
        }
        panic!("livelock: a million steps without settling");
    }

    /// Steps until everything has settled (at most an hour of simulated
    /// time).
    pub fn drive(&mut self) {
        self.settle(Duration::from_secs(3600));
    }

    /// The endpoint process dies: unsynced spool writes and the
    /// application's work are lost, the broker sees the connection die, a
    /// new lane starts from what the spool kept.
    pub fn crash(&mut self) {
        self.crashes += 1;
        self.spool.pending.clear();
        self.broker.drop_connection();
        self.app = App { auto_complete: self.app.auto_complete, ..App::default() };
        self.inputs.clear();
        let mut cfg = self.cfg.clone();
        cfg.seed = cfg.seed.wrapping_add(self.crashes as u64);
        let snapshot = self.spool.durable.snapshot();
        self.lane = Lane::new(self.now, cfg.clone(), snapshot.clone()).unwrap();
        self.auditor = Auditor::new(&cfg, &snapshot);
        let first = audit::drain(&mut self.lane);
        self.auditor.begin(&self.lane, &first).unwrap_or_else(|v| panic!("{v}"));
        self.execute(first);
    }

    /// The network drops the connection under the lane.
    pub fn lose_connection(&mut self) {
        if let Some(conn) = self.broker.drop_connection() {
            self.inputs.push_back(Input::ConnectionLost { conn, reason: "reset".into() });
        }
    }

    /// The broker closes the consuming channel (e.g. an operator action).
    pub fn close_consume_channel(&mut self) {
        if let Some(channel) = self.broker.consumer.channel {
            self.broker.drop_consumer();
            self.broker.channels.remove(&channel);
            self.inputs.push_back(Input::ChannelClosed { channel, code: 320, text: "CONNECTION_FORCED".into() });
        }
    }

    /// Releases held publisher confirms (as one `multiple` ack).
    pub fn release_confirms(&mut self) {
        if let Some(Input::PublishAck { channel, tag, .. }) = self.broker.held_confirms.pop() {
            self.broker.held_confirms.clear();
            self.inputs.push_back(Input::PublishAck { channel, tag, multiple: true });
        }
    }

    /// The acks the lane sent, in order.
    pub fn acks(&self) -> Vec<(DeliveryTag, bool)> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Amqp::Ack { tag, multiple } => Some((*tag, *multiple)),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, f: impl Fn(&Amqp) -> bool) -> usize {
        self.commands.iter().filter(|c| f(c)).count()
    }

    /// Results accepted by the service, deduplicated.
    pub fn distinct_results(&self) -> BTreeSet<TaskId> {
        self.broker.results.iter().map(|r| r.task.clone()).collect()
    }

    /// Whether everything has settled: every submitted task has its result
    /// at the service, and the broker and the spool hold nothing.
    pub fn converged(&self) -> Option<String> {
        let results = self.distinct_results();
        let missing: Vec<_> = self.submitted.difference(&results).take(3).collect();
        if !missing.is_empty() {
            return Some(format!("results missing, e.g. {missing:?}"));
        }
        if !self.broker.queue.is_empty() || !self.broker.consumer.unacked.is_empty() {
            return Some("broker still holds tasks".into());
        }
        let (i, o) = (self.spool.durable.inbox_len(), self.spool.durable.outbox_len());
        if i + o > 0 || self.lane.inbox_len() + self.lane.outbox_len() > 0 {
            return Some(format!("spool not drained: inbox {i}, outbox {o}"));
        }
        None
    }
}

/// Invariant: every submitted task is somewhere: in the broker, durable in
/// the spool (inbox or outbox), or its result is at the service.
pub fn check_nothing_lost(w: &World) {
    let results = w.distinct_results();
    let snap = w.spool.durable.snapshot();
    let spooled: BTreeSet<&TaskId> =
        snap.inbox.iter().map(|t| &t.id).chain(snap.outbox.iter().map(|r| &r.task)).collect();
    let at_broker: BTreeSet<TaskId> =
        w.broker.queue.iter().chain(w.broker.consumer.unacked.values()).filter_map(Msg::id).collect();
    for id in &w.submitted {
        assert!(
            results.contains(id) || spooled.contains(id) || at_broker.contains(id),
            "task {id} is lost: not at the broker, not in the spool, no result"
        );
    }
}
