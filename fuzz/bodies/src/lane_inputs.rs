//! Target 3: sequences of inputs driving one [`tasklane_core::Lane`], each
//! step audited by [`tasklane_core::audit::Auditor`].
//!
//! A step is either any [`Input`] at all (ids, tags and sequence numbers as
//! drawn: stale, future, foreign) or a guided one that picks among what the
//! lane has really asked for (answer command k, deliver on the consuming
//! channel, commit up to write k, complete handed-off task k, ack or nack
//! publish k, return it, lose the connection or a channel, jump the clock),
//! so that sequences reach deep states and still meet every stale and
//! hostile input on the way. A crash restarts the lane from what the spool
//! committed. After every step the auditor's named checks run; at the end
//! the lane must still make progress when the broker and the spool behave.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use tasklane_core::{
    encode_task, BackoffConfig, Config, ConsumeMode, EndpointId, Input, MemorySpool, OutboxSeq, RawMessage, ResultMeta,
    ResultStatus, SpoolSnapshot, StoredTask, Task, TaskId, TaskResult, WriteSeq,
};

use crate::rig::Rig;

/// Task ids come from a small pool, so duplicates and redeliveries happen.
const POOL: u8 = 8;

fn pool_id(i: u8) -> TaskId {
    TaskId::new(format!("t{}", i % POOL)).expect("valid")
}

#[derive(Arbitrary, Debug)]
struct ConfigDraw {
    prefetch: u8,
    max_spooled_tasks: u8,
    max_spooled_bytes: Option<u16>,
    max_body_bytes: u8,
    max_headers: u8,
    completed_window: u8,
    max_unconfirmed: u8,
    exclusive: bool,
    seed: u64,
    /// Below 192: the broker answers every command at once after each step
    /// (the steps then exercise traffic); otherwise only `Answer` steps do.
    eager: u8,
}

impl ConfigDraw {
    fn config(&self) -> Config {
        let mut c = Config::new(EndpointId::new("ep").expect("valid"));
        c.prefetch = u16::from(self.prefetch % 8) + 1;
        c.max_spooled_tasks = usize::from(self.max_spooled_tasks % 6) + 1;
        c.max_body_bytes = 16 + usize::from(self.max_body_bytes % 64);
        c.max_spooled_bytes = match self.max_spooled_bytes {
            Some(b) => u64::from(b % 512).max(c.max_body_bytes as u64),
            None => 1 << 30,
        };
        c.max_headers = usize::from(self.max_headers % 4);
        c.completed_window = usize::from(self.completed_window % 5);
        c.max_unconfirmed = usize::from(self.max_unconfirmed % 4) + 1;
        c.consume_mode = if self.exclusive { ConsumeMode::Exclusive } else { ConsumeMode::SingleActive };
        c.reconnect = BackoffConfig { initial: Duration::from_millis(100), max: Duration::from_secs(5) };
        c.republish = BackoffConfig { initial: Duration::from_millis(200), max: Duration::from_secs(5) };
        c.seed = self.seed;
        c
    }
}

/// What the spool held when the first lane started.
#[derive(Arbitrary, Debug)]
struct SnapshotDraw {
    /// Bits: pool ids in the inbox.
    inbox: u8,
    /// Bits: pool ids with a result in the outbox (not in the inbox).
    outbox: u8,
    /// Bits: pool ids completed recently (beyond those in the outbox).
    completed: u8,
}

impl SnapshotDraw {
    fn snapshot(&self) -> SpoolSnapshot {
        let mut snap = SpoolSnapshot::default();
        for i in 0..POOL {
            let bit = 1u8 << i;
            if self.inbox & bit != 0 {
                let task = Task { id: pool_id(i), kind: None, body: Bytes::from(format!("stored {i}")) };
                snap.inbox.push(StoredTask { arrival: snap.inbox.len() as u64 * 2, task }.meta());
            } else if self.outbox & bit != 0 {
                let result = TaskResult { task: pool_id(i), status: ResultStatus::Ok, body: Bytes::from("done") };
                snap.outbox.push(ResultMeta::of(OutboxSeq(snap.outbox.len() as u64 + 3), &result));
                snap.completed.push(pool_id(i));
            } else if self.completed & bit != 0 {
                snap.completed.push(pool_id(i));
            }
        }
        snap
    }
}

#[derive(Arbitrary, Debug)]
enum Fault {
    ConnectFailed,
    ConsumeRefused { locked: bool },
    ChannelClosed { code: u16 },
}

#[derive(Debug)]
enum Step {
    /// Any input at all.
    Raw(Input),
    /// Answer pending command k as a healthy broker would.
    Answer(u8),
    /// Answer pending command k with a failure.
    Fail(u8, Fault),
    /// A delivery on the consuming channel: a pool task (with a body of
    /// `len` bytes), or any message; the tag is the next one, or skips
    /// ahead, or repeats.
    Deliver {
        task: u8,
        len: u8,
        raw: Option<RawMessage>,
        tag: i8,
        redelivered: bool,
    },
    /// The spool commits up to write k (of those not yet committed).
    Commit(u8),
    /// The spool reports that it cannot commit.
    Stall,
    /// The application completes handed-off task k.
    Complete {
        task: u8,
        ok: bool,
        body: Vec<u8>,
    },
    /// The broker acks (or nacks) in-flight publish k.
    Confirm {
        publish: u8,
        multiple: bool,
        nack: bool,
    },
    /// The broker returns in-flight publish k as unroutable.
    Return(u8),
    LoseConnection,
    CloseChannel {
        publish: bool,
        code: u16,
    },
    Block(bool),
    /// The broker answers a consumer-count query with this count, or
    /// cancels the consumer (`None`).
    Consumers(Option<u8>),
    /// Time passes (milliseconds, times 16 when `long`); due deadlines fire.
    Advance {
        ms: u16,
        long: bool,
    },
    /// The process dies: a new lane starts from what the spool committed.
    Crash,
    Shutdown,
}

impl Step {
    /// Draws a step, weighted towards the traffic of a working lane
    /// (deliveries, commits, completions, confirms) with faults now and then,
    /// so that random bytes get past the session set-up too.
    fn draw(u: &mut Unstructured<'_>) -> arbitrary::Result<Self> {
        const WEIGHTS: [u8; 16] = [16, 20, 6, 60, 36, 2, 34, 34, 6, 4, 4, 4, 2, 24, 3, 1];
        let mut k = u8::arbitrary(u)?;
        let mut kind = 0;
        while k >= WEIGHTS[kind] {
            k -= WEIGHTS[kind];
            kind += 1;
        }
        Ok(match kind {
            0 => Step::Raw(u.arbitrary()?),
            1 => Step::Answer(u.arbitrary()?),
            2 => Step::Fail(u.arbitrary()?, u.arbitrary()?),
            3 => Step::Deliver {
                task: u.arbitrary()?,
                len: u.arbitrary()?,
                raw: if u.ratio(1, 8)? { Some(u.arbitrary()?) } else { None },
                tag: u.arbitrary()?,
                redelivered: u.arbitrary()?,
            },
            4 => Step::Commit(u.arbitrary()?),
            5 => Step::Stall,
            6 => Step::Complete { task: u.arbitrary()?, ok: u.arbitrary()?, body: u.arbitrary()? },
            7 => Step::Confirm { publish: u.arbitrary()?, multiple: u.arbitrary()?, nack: u.ratio(1, 4)? },
            8 => Step::Return(u.arbitrary()?),
            9 => Step::LoseConnection,
            10 => Step::CloseChannel { publish: u.arbitrary()?, code: u.arbitrary()? },
            11 => Step::Block(u.arbitrary()?),
            12 => Step::Consumers(u.arbitrary()?),
            13 => Step::Advance { ms: u.arbitrary()?, long: u.arbitrary()? },
            14 => Step::Crash,
            _ => Step::Shutdown,
        })
    }
}

/// How deep a case went, so tests can tell that random bytes reach the
/// interesting states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Steps taken.
    pub steps: u64,
    /// Deliveries the lane counted.
    pub received: u64,
    /// Hand-offs to the application.
    pub handed_off: u64,
    /// Deliveries acked to the broker.
    pub acked: u64,
    /// Deliveries rejected (dead-lettered).
    pub rejected: u64,
    /// Duplicates acked without a hand-off.
    pub duplicates: u64,
    /// Results confirmed (left the outbox).
    pub confirmed: u64,
    /// Inputs refused as misuse.
    pub misuse: u64,
    /// Crashes and restarts.
    pub crashes: u64,
}

impl Depth {
    fn add(&mut self, rig: &Rig) {
        let c = rig.lane.counters();
        self.received += c.received;
        self.handed_off += c.handed_off;
        self.acked += c.acked;
        self.rejected += c.rejected;
        self.duplicates += c.duplicates_dropped;
        self.confirmed += c.confirmed;
        self.misuse += rig.auditor.errors.values().sum::<u64>();
    }

    /// Adds another case's depth.
    pub fn merge(&mut self, o: Depth) {
        self.steps += o.steps;
        self.received += o.received;
        self.handed_off += o.handed_off;
        self.acked += o.acked;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
        self.confirmed += o.confirmed;
        self.misuse += o.misuse;
        self.crashes += o.crashes;
    }
}

/// Runs one case drawn from `data`.
pub fn run(data: &[u8]) {
    run_for_depth(data);
}

/// Runs one case drawn from `data` and says how deep it went (counted
/// before the final drain).
pub fn run_for_depth(data: &[u8]) -> Depth {
    let mut depth = Depth::default();
    let mut u = Unstructured::new(data);
    let (Ok(cfg), Ok(snap)) = (ConfigDraw::arbitrary(&mut u), SnapshotDraw::arbitrary(&mut u)) else { return depth };
    let eager = cfg.eager < 192;
    let cfg = cfg.config();
    let mut rig = Rig::new(cfg.clone(), snap.snapshot());
    // Delivery tags count from 1 on each consuming channel.
    let mut tag_channel = None;
    let mut next_tag = 0u64;
    let mut crashes = 0u64;
    for _ in 0..400 {
        if u.is_empty() {
            break;
        }
        let Ok(step) = Step::draw(&mut u) else { break };
        depth.steps += 1;
        match step {
            Step::Raw(input) => {
                // The auditor's spool model accepts every write the lane
                // issues, so a refusal of an issued write is the spool
                // breaking (`spool_accepts_every_write`), not the lane: the
                // rig plays a spool that never does that. A refusal of a
                // write never issued stays in, as misuse the lane refuses.
                let (issued, _) = rig.auditor.writes();
                if matches!(&input, Input::SpoolRefused { seq, .. } if (1..=issued).contains(&seq.0)) {
                    continue;
                }
                let _ = rig.feed(input);
            }
            Step::Answer(k) => {
                rig.answer(usize::from(k));
            }
            Step::Fail(k, fault) => fail(&mut rig, usize::from(k), fault),
            Step::Deliver { task, len, raw, tag, redelivered } => {
                let Some(channel) = rig.consume_channel() else { continue };
                // Mostly small bodies (also empty ones), now and then one over
                // any `max_body_bytes` drawn.
                let len = if len < 224 { usize::from(len % 12) } else { usize::from(len) };
                let message = raw.unwrap_or_else(|| pool_message(task, len));
                // Mostly the next tag; sometimes a skip or a repeat (a broker
                // fault the lane must survive).
                let t = match tag {
                    0..=100 | -128..=-100 => next_tag + 1,
                    t => next_tag.saturating_add_signed(i64::from(t) / 8),
                };
                next_tag = next_tag.max(t);
                let _ = rig.feed(Input::Delivery { channel, tag: t, redelivered, message });
            }
            Step::Commit(k) => {
                let (issued, committed) = rig.auditor.writes();
                if issued > committed {
                    let upto = committed + 1 + u64::from(k) % (issued - committed);
                    rig.feed(Input::SpoolCommitted { upto: WriteSeq(upto) }).expect("commit of issued writes");
                }
            }
            Step::Stall => {
                let _ = rig.feed(Input::SpoolStalled { reason: "map full".into() });
            }
            Step::Complete { task, ok, body } => {
                let handed = rig.auditor.handed();
                if let Some(id) = handed.get(usize::from(task) % handed.len().max(1)) {
                    let status = if ok { ResultStatus::Ok } else { ResultStatus::Failed };
                    let input = Input::Complete { task: id.clone(), status, body: Bytes::from(body) };
                    rig.feed(input).expect("completing a handed-off task is not misuse");
                }
            }
            Step::Confirm { publish, multiple, nack } => {
                let in_flight = rig.auditor.in_flight();
                if let Some((channel, tag, _)) = in_flight.get(usize::from(publish) % in_flight.len().max(1)) {
                    let (channel, tag) = (*channel, *tag);
                    let input = if nack {
                        Input::PublishNack { channel, tag, multiple }
                    } else {
                        Input::PublishAck { channel, tag, multiple }
                    };
                    rig.feed(input).expect("a confirm is never misuse");
                }
            }
            Step::Return(k) => {
                let in_flight = rig.auditor.in_flight();
                if let Some((channel, _, task)) = in_flight.get(usize::from(k) % in_flight.len().max(1)) {
                    let message_id = Some(task.as_str().as_bytes().to_vec());
                    let input = Input::Returned { channel: *channel, message_id, code: 312, text: "NO_ROUTE".into() };
                    rig.feed(input).expect("a return is never misuse");
                }
            }
            Step::LoseConnection => {
                let conn = rig.auditor.last_conn();
                let _ = rig.feed(Input::ConnectionLost { conn, reason: "reset".into() });
            }
            Step::CloseChannel { publish, code } => {
                let channel = if publish { rig.publish_channel() } else { rig.consume_channel() };
                if let Some(channel) = channel {
                    let _ = rig.feed(Input::ChannelClosed { channel, code, text: "closed".into() });
                }
            }
            Step::Block(on) => {
                let conn = rig.auditor.last_conn();
                let input =
                    if on { Input::Blocked { conn, reason: "alarm".into() } } else { Input::Unblocked { conn } };
                let _ = rig.feed(input);
            }
            Step::Consumers(count) => {
                if let Some(channel) = rig.consume_channel() {
                    let _ = rig.feed(match count {
                        Some(n) => Input::ConsumerCount { channel, consumers: u32::from(n % 3) },
                        None => Input::ConsumerCancelled { channel },
                    });
                }
            }
            Step::Advance { ms, long } => {
                let ms = u64::from(ms) * if long { 16 } else { 1 };
                rig.advance(Duration::from_millis(ms));
            }
            Step::Crash => {
                depth.add(&rig);
                crashes += 1;
                let mut cfg = cfg.clone();
                cfg.seed = cfg.seed.wrapping_add(crashes);
                rig = Rig::at(rig.now, cfg, rig.auditor.durable());
            }
            Step::Shutdown => {
                let _ = rig.feed(Input::Shutdown);
            }
        }
        if eager {
            rig.answer_all();
        }
        if rig.consume_channel() != tag_channel {
            tag_channel = rig.consume_channel();
            next_tag = 0;
        }
    }
    depth.add(&rig);
    depth.crashes = crashes;
    converges(&mut rig);
    depth
}

fn fail(rig: &mut Rig, k: usize, fault: Fault) {
    if rig.pending.is_empty() {
        return;
    }
    let cmd = rig.pending.remove(k % rig.pending.len());
    let channel = match &cmd {
        tasklane_core::Amqp::Connect { conn, .. } => {
            let _ = rig.feed(Input::ConnectFailed { conn: *conn, reason: "refused".into() });
            return;
        }
        tasklane_core::Amqp::Quarantine { scan, .. } => {
            // A scan that found the culprit, or could not run.
            let input = match fault {
                Fault::ChannelClosed { code } => Input::QuarantineDone {
                    scan: *scan,
                    quarantined: vec![format!("poison-{code}")],
                    scanned: 1,
                    error: None,
                },
                _ => Input::QuarantineDone {
                    scan: *scan,
                    quarantined: Vec::new(),
                    scanned: 0,
                    error: Some("refused".into()),
                },
            };
            let _ = rig.feed(input);
            return;
        }
        tasklane_core::Amqp::OpenChannel { channel }
        | tasklane_core::Amqp::Qos { channel, .. }
        | tasklane_core::Amqp::Consume { channel, .. }
        | tasklane_core::Amqp::QueryConsumers { channel, .. }
        | tasklane_core::Amqp::ConfirmSelect { channel } => *channel,
        _ => return,
    };
    let input = match fault {
        Fault::ConsumeRefused { locked } if matches!(cmd, tasklane_core::Amqp::Consume { .. }) => {
            Input::ChannelClosed { channel, code: if locked { 405 } else { 403 }, text: "in use".into() }
        }
        Fault::ChannelClosed { code } => Input::ChannelClosed { channel, code, text: "closed".into() },
        _ => Input::ChannelClosed { channel, code: 504, text: "CHANNEL_ERROR".into() },
    };
    let _ = rig.feed(input);
}

/// After the steps, a healthy broker and spool: the lane connects, and what
/// it holds moves on. Every committed inbox task was handed off; completing
/// them and confirming every publish empties the outbox.
fn converges(rig: &mut Rig) {
    if matches!(rig.lane.status(), tasklane_core::Status::Closed) {
        return;
    }
    // Empty tasks from a pool message are fine; completing what is handed
    // off and confirming what is published must drain the lane.
    for _ in 0..64 {
        rig.advance(Duration::from_secs(60));
        rig.answer_all();
        rig.commit_all().expect("commit of issued writes");
        for id in rig.auditor.handed() {
            rig.feed(Input::Complete { task: id, status: ResultStatus::Ok, body: Bytes::new() })
                .expect("completing a handed-off task is not misuse");
        }
        rig.commit_all().expect("commit of issued writes");
        for (channel, tag, _) in rig.auditor.in_flight() {
            rig.feed(Input::PublishAck { channel, tag, multiple: false }).expect("a confirm is never misuse");
        }
        rig.commit_all().expect("commit of issued writes");
        let durable = MemorySpool::from_snapshot(&rig.auditor.durable());
        if rig.lane.outbox_len() == 0 && durable.outbox_len() == 0 && rig.auditor.handed().is_empty() {
            // Tasks still in the inbox are those waiting for the spool
            // (held) or not yet committed; none may remain once committed.
            assert_eq!(rig.lane.inbox_len(), 0, "inbox tasks that are never handed off");
            return;
        }
    }
    panic!(
        "the lane does not drain under a healthy broker: status {:?}, inbox {}, outbox {}, in flight {:?}",
        rig.lane.status(),
        rig.lane.inbox_len(),
        rig.lane.outbox_len(),
        rig.auditor.in_flight()
    );
}

/// A message of the pool, for tests: task `i` with `len` body bytes.
pub fn pool_message(i: u8, len: usize) -> RawMessage {
    encode_task(&Task { id: pool_id(i), kind: None, body: Bytes::from(vec![b'p'; len]) })
}
