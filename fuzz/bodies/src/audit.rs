//! An oracle over one lane's history: every input fed to a [`Lane`], every
//! output it polled, checked step by step against a model of what the lane
//! has been told and what it has asked for.
//!
//! The harness inside core models a broker that answers correctly; the
//! auditor judges a lane fed anything at all, so it decides each question
//! from the history alone:
//!
//! - [`check_err_only_for_misuse`]: `handle` returns `Err` exactly when the
//!   caller misused the API, and then leaves the lane untouched;
//! - [`check_ack_on_delivering_channel`]: an ack or reject names a live
//!   channel that delivered that tag and has not settled it;
//! - [`check_ack_after_commit`]: an ack covers only tasks whose insert the
//!   spool reported committed, and a reject only deliveries that are not
//!   tasks;
//! - [`check_no_second_handoff`], [`check_recovered_handoff`]: a task is
//!   handed off only once it is durable, and not again while it is in the
//!   inbox, in the window of recently completed ids, or its result is in
//!   the outbox; recovered tasks only as the lane starts, from the inbox;
//! - [`check_outbox_leaves_only_by_confirm`]: a result leaves the outbox only
//!   while the broker's ack of a publish of that same result is being
//!   handled, and not if the broker returned it;
//! - [`check_publish`]: results are published only once durable, to
//!   `results` with the endpoint's key, with confirm tags counting from 1;
//! - [`check_spool_writes`]: writes are numbered without gaps and form a
//!   valid history for [`MemorySpool`], and `forget` follows the window;
//! - [`check_counts`]: the lane's sizes and counters agree with the history.
//!
//! [`crate::rig::Rig`] couples a lane with an auditor.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use tasklane_core::{
    decode_result, decode_task, Amqp, ChannelId, Config, ConnId, Counters, EndpointId, Event, Input, Lane, MemorySpool,
    OutboxSeq, Output, RawMessage, SpoolOp, SpoolSnapshot, Status, TaskId, TaskLimits, TaskResult, UsageError,
};

/// A publish the broker has not confirmed yet.
#[derive(Clone, Debug)]
struct InFlight {
    result: TaskResult,
    returned: bool,
}

/// Everything the auditor knows about one lane's life.
#[derive(Debug)]
pub struct Auditor {
    endpoint: EndpointId,
    limits: TaskLimits,
    window_capacity: usize,

    last_conn: u64,
    channel_conn: BTreeMap<ChannelId, ConnId>,
    dead_conns: BTreeSet<ConnId>,
    dead_channels: BTreeSet<ChannelId>,
    consume_channels: BTreeSet<ChannelId>,
    subscribing: BTreeSet<ChannelId>,
    /// Publishing channels, with the last confirm tag used on each.
    publish_channels: BTreeMap<ChannelId, u64>,

    /// Deliveries fed on a consuming channel and not settled by the lane.
    unsettled: BTreeMap<(ChannelId, u64), RawMessage>,

    issued: u64,
    committed: u64,
    /// Writes issued and not yet committed.
    uncommitted: BTreeMap<u64, SpoolOp>,
    /// The spool with every issued write applied.
    issued_view: MemorySpool,
    /// The spool with every committed write applied.
    durable_view: MemorySpool,
    /// Task ids whose insert was ever committed (or that came from the
    /// snapshot).
    durable_tasks: BTreeSet<TaskId>,
    /// Results by outbox position, as issued.
    outbox: BTreeMap<OutboxSeq, TaskResult>,

    /// Handed off and not completed.
    handed: BTreeSet<TaskId>,
    /// The window of recently completed ids, oldest first.
    window: VecDeque<TaskId>,

    in_flight: BTreeMap<(ChannelId, u64), InFlight>,
    /// Publishes the current input's `PublishAck` covers, not yet matched
    /// by a `Confirmed` write.
    acked_now: Vec<InFlight>,

    acked: u64,
    rejected: u64,
    confirmed: u64,
    completed: u64,
    /// The last status event the lane emitted.
    last_status: Option<Status>,
    /// `Err` results seen, by input name.
    pub errors: BTreeMap<&'static str, u64>,
}

impl Auditor {
    /// An auditor for a lane built from `cfg` and `snapshot`.
    pub fn new(cfg: &Config, snapshot: &SpoolSnapshot) -> Self {
        let mut durable_tasks: BTreeSet<TaskId> = snapshot.inbox.iter().map(|t| t.task.id.clone()).collect();
        durable_tasks.extend(snapshot.completed.iter().cloned());
        durable_tasks.extend(snapshot.outbox.iter().map(|r| r.result.task.clone()));
        let mut a = Self {
            endpoint: cfg.endpoint.clone(),
            limits: TaskLimits { max_body_bytes: cfg.max_body_bytes, max_headers: cfg.max_headers },
            window_capacity: cfg.completed_window,
            last_conn: 0,
            channel_conn: BTreeMap::new(),
            dead_conns: BTreeSet::new(),
            dead_channels: BTreeSet::new(),
            consume_channels: BTreeSet::new(),
            subscribing: BTreeSet::new(),
            publish_channels: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            issued: 0,
            committed: 0,
            uncommitted: BTreeMap::new(),
            issued_view: MemorySpool::from_snapshot(snapshot),
            durable_view: MemorySpool::from_snapshot(snapshot),
            durable_tasks,
            outbox: snapshot.outbox.iter().map(|r| (r.seq, r.result.clone())).collect(),
            handed: BTreeSet::new(),
            window: VecDeque::new(),
            in_flight: BTreeMap::new(),
            acked_now: Vec::new(),
            acked: 0,
            rejected: 0,
            confirmed: 0,
            completed: 0,
            last_status: None,
            errors: BTreeMap::new(),
        };
        for id in &snapshot.completed {
            a.remember_completed(id.clone());
        }
        a
    }

    /// Audits what a new lane asks for before its first input.
    pub fn begin(&mut self, lane: &mut Lane) -> Vec<Output> {
        let outputs = drain(lane);
        for out in &outputs {
            self.output(out, None);
        }
        check_counts(self, lane);
        outputs
    }

    /// Feeds `input` to `lane` at `now`, drains and audits its outputs, and
    /// returns them (or the lane's error).
    pub fn step(&mut self, lane: &mut Lane, now: Instant, input: Input) -> Result<Vec<Output>, UsageError> {
        let status = lane.status().clone();
        let counters = *lane.counters();
        let misuse = self.misuse(&input);
        let result = lane.handle(now, input.clone());
        let outputs = drain(lane);
        check_err_only_for_misuse(self, &input, misuse, &result, &outputs);
        if let Err(e) = result {
            *self.errors.entry(input.name()).or_default() += 1;
            check_lane_unchanged(lane, &status, &counters, &outputs, &e);
            return Err(e);
        }
        self.input(&input);
        for out in &outputs {
            self.output(out, Some(&input));
        }
        assert!(
            self.acked_now.iter().all(|p| p.returned || !self.outbox.values().any(|r| r == &p.result)),
            "the broker acked a publish of a result that is still in the outbox after {}: {:?}",
            input.name(),
            self.acked_now
        );
        self.acked_now.clear();
        check_counts(self, lane);
        Ok(outputs)
    }

    /// What the model holds to be misuse of `input`, before it is handled.
    fn misuse(&self, input: &Input) -> Option<UsageError> {
        match input {
            Input::Connected { conn } if conn.0 > self.last_conn => {
                Some(UsageError::Unexpected { input: "Connected", why: "no Connect was issued with this id" })
            }
            Input::SpoolCommitted { upto } if upto.0 > self.issued => {
                Some(UsageError::CommitBeyondIssued { reported: upto.0, issued: self.issued })
            }
            Input::Complete { task, .. } if !self.handed.contains(task) => {
                let writing =
                    self.uncommitted.values().any(|op| matches!(op, SpoolOp::Insert(t) if &t.task.id == task));
                Some(if writing {
                    UsageError::NotHandedOff(task.clone())
                } else {
                    UsageError::UnknownTask(task.clone())
                })
            }
            _ => None,
        }
    }

    /// What an accepted input tells the model.
    fn input(&mut self, input: &Input) {
        match input {
            Input::Delivery { channel, tag, message, .. }
                if self.consume_channels.contains(channel) && self.channel_live(*channel) =>
            {
                self.unsettled.insert((*channel, *tag), message.clone());
            }
            Input::SpoolCommitted { upto } => {
                for (seq, op) in self.uncommitted.range(..=upto.0) {
                    self.durable_view.apply(op).unwrap_or_else(|e| panic!("write {seq} does not apply: {e}"));
                    if let SpoolOp::Insert(t) = op {
                        self.durable_tasks.insert(t.task.id.clone());
                    }
                }
                self.uncommitted.retain(|seq, _| *seq > upto.0);
                self.committed = self.committed.max(upto.0);
            }
            Input::ConsumeOk { channel, .. } => {
                self.subscribing.remove(channel);
            }
            Input::ConsumeRefused { channel, .. } if self.subscribing.remove(channel) => {
                self.dead_channels.insert(*channel);
            }
            Input::ChannelClosed { channel, .. } => {
                self.dead_channels.insert(*channel);
            }
            Input::ConnectionLost { conn, .. } => {
                self.dead_conns.insert(*conn);
            }
            Input::PublishAck { channel, tag, multiple } | Input::PublishNack { channel, tag, multiple } => {
                let published = self.publish_channels.get(channel).copied().unwrap_or(0);
                if !self.channel_live(*channel) || *tag == 0 || *tag > published {
                    // Late, or a confirm of a tag never published: a broker
                    // fault that confirms nothing.
                    return;
                }
                let covered: Vec<(ChannelId, u64)> = if *multiple {
                    self.in_flight.range((*channel, 0)..=(*channel, *tag)).map(|(k, _)| *k).collect()
                } else {
                    self.in_flight.get_key_value(&(*channel, *tag)).map(|(k, _)| *k).into_iter().collect()
                };
                let acked = matches!(input, Input::PublishAck { .. });
                for key in covered {
                    let p = self.in_flight.remove(&key).expect("listed above");
                    if acked {
                        self.acked_now.push(p);
                    }
                }
            }
            Input::Returned { channel, message_id, .. } => {
                for ((c, _), p) in self.in_flight.iter_mut() {
                    if c == channel && message_id.as_deref() == Some(p.result.task.as_str().as_bytes()) {
                        p.returned = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// Audits one output; `input` is the input being handled (`None` while
    /// the lane is being built).
    fn output(&mut self, out: &Output, input: Option<&Input>) {
        match out {
            Output::Amqp(cmd) => self.command(cmd),
            Output::Spool(w) => check_spool_writes(self, w.seq.0, &w.op, input),
            Output::Handoff(h) if h.recovered => check_recovered_handoff(self, &h.task, input),
            Output::Handoff(h) => check_no_second_handoff(self, &h.task.id),
            Output::Event(Event::Status(s)) => self.last_status = Some(s.clone()),
            Output::Event(_) => {}
        }
    }

    fn command(&mut self, cmd: &Amqp) {
        match cmd {
            Amqp::Connect { conn, .. } => {
                assert_eq!(conn.0, self.last_conn + 1, "connection ids must be fresh and increasing");
                self.last_conn = conn.0;
            }
            Amqp::OpenChannel { channel } => {
                assert!(!self.channel_conn.contains_key(channel), "channel id {channel:?} reused");
                let conn = ConnId(self.last_conn);
                assert!(!self.dead_conns.contains(&conn), "channel opened on connection {conn:?}, which is gone");
                self.channel_conn.insert(*channel, conn);
            }
            Amqp::Qos { channel, prefetch } => {
                self.expect_live(*channel, "basic.qos");
                assert!(*prefetch > 0, "prefetch 0 means unlimited");
            }
            Amqp::Consume { channel, queue, .. } => {
                self.expect_live(*channel, "basic.consume");
                assert_eq!(queue, &self.endpoint.task_queue());
                self.consume_channels.insert(*channel);
                self.subscribing.insert(*channel);
            }
            Amqp::ConfirmSelect { channel } => {
                self.expect_live(*channel, "confirm.select");
                self.publish_channels.insert(*channel, 0);
            }
            Amqp::Ack { tag, multiple } => {
                let covered = check_ack_on_delivering_channel(self, tag.channel, tag.tag, *multiple);
                for (key, message) in covered {
                    check_ack_after_commit(self, key, &message);
                    self.acked += 1;
                }
            }
            Amqp::Reject { tag } => {
                let covered = check_ack_on_delivering_channel(self, tag.channel, tag.tag, false);
                for (key, message) in covered {
                    let judged = decode_task(&message, self.limits);
                    assert!(judged.is_err(), "delivery {key:?} rejected, but it is a task: {judged:?}");
                    self.rejected += 1;
                }
            }
            Amqp::Publish { tag, exchange, routing_key, message } => {
                check_publish(self, tag.channel, tag.seq, exchange, routing_key, message);
            }
            Amqp::Disconnect { conn, .. } => {
                self.dead_conns.insert(*conn);
            }
        }
    }

    /// Whether the auditor believes `channel` is open.
    pub fn channel_live(&self, channel: ChannelId) -> bool {
        match self.channel_conn.get(&channel) {
            Some(conn) => !self.dead_channels.contains(&channel) && !self.dead_conns.contains(conn),
            None => false,
        }
    }

    /// Whether the connection `channel` was opened on may still be open.
    pub fn channel_conn_live(&self, channel: ChannelId) -> bool {
        self.channel_conn.get(&channel).is_some_and(|c| self.conn_live(*c))
    }

    /// Whether the auditor believes `conn` may still be open.
    pub fn conn_live(&self, conn: ConnId) -> bool {
        conn.0 <= self.last_conn && !self.dead_conns.contains(&conn)
    }

    fn expect_live(&self, channel: ChannelId, what: &str) {
        assert!(self.channel_live(channel), "{what} on channel {channel:?}, which is gone or was never opened");
    }

    fn remember_completed(&mut self, id: TaskId) -> Option<TaskId> {
        if self.window_capacity == 0 {
            return Some(id);
        }
        if self.window.contains(&id) {
            return None;
        }
        self.window.push_back(id);
        if self.window.len() > self.window_capacity {
            return self.window.pop_front();
        }
        None
    }

    /// The latest connection id the lane asked for.
    pub fn last_conn(&self) -> ConnId {
        ConnId(self.last_conn)
    }

    /// Channels that consume, live ones last opened last.
    pub fn live_consume_channels(&self) -> Vec<ChannelId> {
        self.consume_channels.iter().copied().filter(|c| self.channel_live(*c)).collect()
    }

    /// Live publishing channels.
    pub fn live_publish_channels(&self) -> Vec<ChannelId> {
        self.publish_channels.keys().copied().filter(|c| self.channel_live(*c)).collect()
    }

    /// The last spool write issued and the last one committed.
    pub fn writes(&self) -> (u64, u64) {
        (self.issued, self.committed)
    }

    /// Tasks handed off and not completed.
    pub fn handed(&self) -> Vec<TaskId> {
        self.handed.iter().cloned().collect()
    }

    /// Publishes not yet confirmed: channel, confirm tag, task.
    pub fn in_flight(&self) -> Vec<(ChannelId, u64, TaskId)> {
        self.in_flight.iter().map(|((c, t), p)| (*c, *t, p.result.task.clone())).collect()
    }

    /// Deliveries not yet settled.
    pub fn unsettled(&self) -> Vec<(ChannelId, u64)> {
        self.unsettled.keys().copied().collect()
    }

    /// What the spool holds after every committed write: what a crash
    /// leaves.
    pub fn durable(&self) -> SpoolSnapshot {
        self.durable_view.snapshot()
    }

    /// Counters the auditor derived from the history.
    pub fn tallies(&self) -> (u64, u64, u64, u64) {
        (self.acked, self.rejected, self.completed, self.confirmed)
    }
}

fn drain(lane: &mut Lane) -> Vec<Output> {
    std::iter::from_fn(|| lane.poll()).collect()
}

/// `Err` means misuse, and misuse means `Err` (SPEC §6, h11's rule): a
/// completion for a task that was not handed off, a commit of writes never
/// issued, an answer to a connection never asked for.
pub fn check_err_only_for_misuse(
    a: &Auditor,
    input: &Input,
    misuse: Option<UsageError>,
    result: &Result<(), UsageError>,
    outputs: &[Output],
) {
    match (result, misuse) {
        (Err(e), Some(m)) => assert_eq!(e, &m, "{} refused for another reason than the model's", input.name()),
        (Err(e), None) => panic!("{} refused as misuse, but the model sees none: {e}", input.name()),
        (Ok(()), Some(m)) => {
            // A `Connect` issued by a timer in this very call may make the
            // id valid; nothing else may.
            let issued_now = outputs.iter().any(|o| matches!((o, input), (Output::Amqp(Amqp::Connect { conn: c, .. }), Input::Connected { conn }) if c == conn));
            assert!(
                issued_now,
                "{} accepted, but it is misuse: {m} (auditor: {} writes issued)",
                input.name(),
                a.issued
            );
        }
        (Ok(()), None) => {}
    }
}

/// "The lane's state is unchanged when one of these is returned."
fn check_lane_unchanged(lane: &Lane, status: &Status, counters: &Counters, outputs: &[Output], e: &UsageError) {
    assert!(outputs.is_empty(), "the lane returned {e:?} but asked for {outputs:?}");
    assert_eq!(lane.status(), status, "the lane returned {e:?} but changed its status");
    assert_eq!(lane.counters(), counters, "the lane returned {e:?} but changed its counters");
}

/// An ack or reject names a live consuming channel and a tag delivered on it
/// that is not settled; returns the deliveries it settles.
pub fn check_ack_on_delivering_channel(
    a: &mut Auditor,
    channel: ChannelId,
    tag: u64,
    multiple: bool,
) -> Vec<((ChannelId, u64), RawMessage)> {
    assert!(a.channel_live(channel), "ack or reject on channel {channel:?}, which is gone");
    assert!(a.consume_channels.contains(&channel), "ack or reject on {channel:?}, which does not consume");
    assert!(
        a.unsettled.contains_key(&(channel, tag)),
        "ack or reject of tag {tag} on {channel:?}, which did not deliver it or settled it (unsettled: {:?})",
        a.unsettled.keys().collect::<Vec<_>>()
    );
    let keys: Vec<(ChannelId, u64)> = if multiple {
        a.unsettled.range((channel, 0)..=(channel, tag)).map(|(k, _)| *k).collect()
    } else {
        vec![(channel, tag)]
    };
    keys.into_iter().map(|k| (k, a.unsettled.remove(&k).expect("listed above"))).collect()
}

/// No broker ack before the task is durable: an acked delivery is a task
/// whose insert the spool reported committed (or that the spool held at
/// start).
pub fn check_ack_after_commit(a: &Auditor, key: (ChannelId, u64), message: &RawMessage) {
    let task = decode_task(message, a.limits)
        .unwrap_or_else(|m| panic!("delivery {key:?} acked, but it is not a task ({m}); it must be rejected"));
    assert!(
        a.durable_tasks.contains(&task.id),
        "delivery {key:?} of task {} acked before its spool write was committed (committed up to {})",
        task.id,
        a.committed
    );
}

/// A recovered hand-off happens only as the lane starts, for a task the
/// spool's inbox holds, once. (The window is no reason against it: a spool
/// whose window shrank may still list the id as completed, and the task
/// did not complete.)
pub fn check_recovered_handoff(a: &mut Auditor, task: &tasklane_core::Task, input: Option<&Input>) {
    assert!(input.is_none(), "recovered hand-off of {} while handling {:?}", task.id, input.map(Input::name));
    assert!(a.durable_view.inbox_contains(&task.id), "recovered hand-off of {}, which the inbox lacks", task.id);
    assert!(a.handed.insert(task.id.clone()), "task {} recovered twice", task.id);
}

/// A task is handed off only once durable, and not again while it is in
/// the inbox, in the window of recently completed ids, or its result is in
/// the outbox.
pub fn check_no_second_handoff(a: &mut Auditor, id: &TaskId) {
    assert!(a.durable_tasks.contains(id), "task {id} handed off before its spool write was committed");
    assert!(!a.handed.contains(id), "task {id} handed off twice: it is still with the application");
    assert!(!a.window.contains(id), "task {id} handed off again: it was completed recently");
    assert!(!a.outbox.values().any(|r| &r.task == id), "task {id} handed off again: its result is in the outbox");
    a.handed.insert(id.clone());
}

/// Results leave the outbox only by a broker ack of a publish of that same
/// result, and not when the broker returned it as unroutable.
pub fn check_outbox_leaves_only_by_confirm(a: &mut Auditor, seq: OutboxSeq, input: Option<&Input>) {
    let result = a.outbox.remove(&seq).unwrap_or_else(|| panic!("confirmed outbox position {seq:?} holds nothing"));
    assert!(
        matches!(input, Some(Input::PublishAck { .. })),
        "result of task {} left the outbox while handling {:?}, not a publisher ack",
        result.task,
        input.map(Input::name)
    );
    // Two publishes of equal results may be covered; a returned one is
    // matched only when no other is left.
    let matching = |p: &InFlight| p.result == result;
    let i = (a.acked_now.iter().position(|p| matching(p) && !p.returned))
        .or_else(|| a.acked_now.iter().position(matching))
        .unwrap_or_else(|| {
            panic!(
                "result of task {} left the outbox, but the ack covers no publish of it: {:?}",
                result.task, a.acked_now
            )
        });
    let p = a.acked_now.remove(i);
    assert!(!p.returned, "result of task {} left the outbox although the broker returned it", result.task);
    a.confirmed += 1;
}

/// Publishes go on a live publishing channel with consecutive confirm tags,
/// to `results` under the endpoint's key, carry a valid result of this
/// endpoint, and only of a result the spool holds durably.
pub fn check_publish(a: &mut Auditor, channel: ChannelId, seq: u64, exchange: &str, key: &str, message: &RawMessage) {
    a.expect_live(channel, "basic.publish");
    let last = a.publish_channels.get_mut(&channel).expect("publish on a channel without confirm.select");
    assert_eq!(seq, *last + 1, "confirm tags count from 1 per channel without gaps");
    *last = seq;
    assert_eq!((exchange, key), ("results", a.endpoint.result_key().as_str()));
    let limits = TaskLimits { max_body_bytes: usize::MAX, max_headers: usize::MAX };
    let received = decode_result(key, message, limits).unwrap_or_else(|m| panic!("published an invalid result: {m}"));
    assert_eq!(received.sender, a.endpoint);
    let durable = a.durable_view.snapshot();
    assert!(
        durable.outbox.iter().any(|r| r.result == received.result),
        "published the result of task {} before its completion was committed",
        received.result.task
    );
    a.in_flight.insert((channel, seq), InFlight { result: received.result, returned: false });
}

/// Writes are numbered 1, 2, 3, ...; each applies to the spool as issued;
/// a completion carries the application's result and forgets what the
/// completed window forgets; a confirm is justified.
pub fn check_spool_writes(a: &mut Auditor, seq: u64, op: &SpoolOp, input: Option<&Input>) {
    assert_eq!(seq, a.issued + 1, "spool writes must be numbered without gaps");
    a.issued = seq;
    match op {
        SpoolOp::Insert(_) => {}
        SpoolOp::Complete { seq: out, result, forget } => {
            match input {
                Some(Input::Complete { task, status, body }) => assert_eq!(
                    (task, status, body),
                    (&result.task, &result.status, &result.body),
                    "the outbox got another result than the application's"
                ),
                other => panic!("completion written while handling {:?}", other.map(Input::name)),
            }
            let expected = a.remember_completed(result.task.clone());
            assert_eq!(forget, &expected, "the write forgets another id than the completed window");
            a.handed.remove(&result.task);
            a.outbox.insert(*out, result.clone());
            a.completed += 1;
        }
        SpoolOp::Confirmed { seq: out } => check_outbox_leaves_only_by_confirm(a, *out, input),
    }
    a.issued_view.apply(op).unwrap_or_else(|e| panic!("write {seq} does not fit the spool: {e}: {op:?}"));
    a.uncommitted.insert(seq, op.clone());
}

/// The lane's sizes and counters agree with the history; the status it
/// reports is the last status event.
pub fn check_counts(a: &Auditor, lane: &Lane) {
    assert_eq!(lane.inbox_len(), a.issued_view.inbox_len(), "inbox size differs from the writes issued");
    assert_eq!(lane.outbox_len(), a.issued_view.outbox_len(), "outbox size differs from the writes issued");
    assert_eq!((lane.last_write().0, lane.committed().0), (a.issued, a.committed), "write positions differ");
    let c = lane.counters();
    assert_eq!(
        (c.acked, c.rejected, c.completed, c.confirmed),
        (a.acked, a.rejected, a.completed, a.confirmed),
        "counters (acked, rejected, completed, confirmed) differ from the history"
    );
    assert!(c.acked + c.rejected <= c.received, "settled more deliveries than received: {c:?}");
    if let Some(s) = &a.last_status {
        assert_eq!(lane.status(), s, "status differs from the last status event");
    }
}
