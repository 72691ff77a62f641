//! The auditor's model of one lane's life: what it has been told and what
//! it has asked for. [`Auditor::step`] feeds the model and runs the checks of
//! [`super::invariants`] on every output.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crate::{
    Amqp, ChannelId, Config, ConnId, EndpointId, Event, Input, Lane, MemorySpool, OutboxSeq, Output, RawMessage,
    ResultMeta, SpoolOp, SpoolSnapshot, Status, TaskId, TaskLimits, UsageError,
};

use super::invariants::*;
use super::{ensure, Before, Violation};

/// A publish the broker has not confirmed yet.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    /// The outbox position published.
    pub(crate) seq: OutboxSeq,
    pub(crate) task: TaskId,
    pub(crate) returned: bool,
}

/// Everything the auditor knows about one lane's life.
#[derive(Debug)]
pub struct Auditor {
    pub(crate) endpoint: EndpointId,
    pub(crate) limits: TaskLimits,
    pub(crate) window_capacity: usize,

    pub(crate) last_conn: u64,
    pub(crate) channel_conn: BTreeMap<ChannelId, ConnId>,
    pub(crate) dead_conns: BTreeSet<ConnId>,
    pub(crate) dead_channels: BTreeSet<ChannelId>,
    pub(crate) consume_channels: BTreeSet<ChannelId>,
    /// Channels set up for consuming (`basic.qos` sent): the consumer count
    /// is asked on them before and after their consume.
    pub(crate) qos_channels: BTreeSet<ChannelId>,
    /// Publishing channels, with the last confirm tag used on each.
    pub(crate) publish_channels: BTreeMap<ChannelId, u64>,

    /// Deliveries fed on a consuming channel and not settled by the lane.
    pub(crate) unsettled: BTreeMap<(ChannelId, u64), RawMessage>,

    pub(crate) issued: u64,
    pub(crate) committed: u64,
    /// Writes issued and not yet committed.
    pub(crate) uncommitted: BTreeMap<u64, SpoolOp>,
    /// The spool with every issued write applied.
    pub(crate) issued_view: MemorySpool,
    /// The spool with every committed write applied.
    pub(crate) durable_view: MemorySpool,
    /// Task ids whose insert was ever committed (or that came from the
    /// snapshot).
    pub(crate) durable_tasks: BTreeSet<TaskId>,
    /// Results by outbox position, as issued (their bodies are checked
    /// against the application's in the completing write, and stay in the
    /// spool).
    pub(crate) outbox: BTreeMap<OutboxSeq, ResultMeta>,

    /// Handed off and not completed.
    pub(crate) handed: BTreeSet<TaskId>,
    /// The window of recently completed ids, oldest first.
    pub(crate) window: VecDeque<TaskId>,

    pub(crate) in_flight: BTreeMap<(ChannelId, u64), InFlight>,
    /// Publishes the current input's `PublishAck` covers, not yet matched
    /// by a `Confirmed` write.
    pub(crate) acked_now: Vec<InFlight>,

    pub(crate) shutdown: bool,
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    pub(crate) confirmed: u64,
    pub(crate) completed: u64,
    /// Status reports published so far.
    pub(crate) reports: u64,
    /// The last status event the lane emitted.
    pub(crate) last_status: Option<Status>,
    /// `Err` results seen, by input name.
    pub errors: BTreeMap<&'static str, u64>,
    /// The first violation, once one happened: the audit stops there.
    failed: Option<Violation>,
}

impl Auditor {
    /// An auditor for a lane built from `cfg` and `snapshot`.
    pub fn new(cfg: &Config, snapshot: &SpoolSnapshot) -> Self {
        let mut durable_tasks: BTreeSet<TaskId> = snapshot.inbox.iter().map(|t| t.id.clone()).collect();
        durable_tasks.extend(snapshot.completed.iter().cloned());
        durable_tasks.extend(snapshot.outbox.iter().map(|r| r.task.clone()));
        let mut a = Self {
            endpoint: cfg.endpoint.clone(),
            limits: TaskLimits { max_body_bytes: cfg.max_body_bytes, max_headers: cfg.max_headers },
            window_capacity: cfg.completed_window,
            last_conn: 0,
            channel_conn: BTreeMap::new(),
            dead_conns: BTreeSet::new(),
            dead_channels: BTreeSet::new(),
            consume_channels: BTreeSet::new(),
            qos_channels: BTreeSet::new(),
            publish_channels: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            issued: 0,
            committed: 0,
            uncommitted: BTreeMap::new(),
            issued_view: MemorySpool::from_snapshot(snapshot),
            durable_view: MemorySpool::from_snapshot(snapshot),
            durable_tasks,
            outbox: snapshot.outbox.iter().map(|r| (r.seq, r.clone())).collect(),
            handed: BTreeSet::new(),
            window: VecDeque::new(),
            in_flight: BTreeMap::new(),
            acked_now: Vec::new(),
            shutdown: false,
            acked: 0,
            rejected: 0,
            confirmed: 0,
            completed: 0,
            reports: 0,
            last_status: None,
            errors: BTreeMap::new(),
            failed: None,
        };
        for id in &snapshot.completed {
            a.remember_completed(id.clone());
        }
        a
    }

    /// The first violation seen, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.failed.as_ref()
    }

    /// Audits what a new lane asked for before its first input.
    pub fn begin(&mut self, lane: &Lane, outputs: &[Output]) -> Result<(), Violation> {
        self.guard(|a| {
            for out in outputs {
                a.output(out, None)?;
            }
            counters_match_history(a, lane)
        })
    }

    /// Audits one `handle(now, input)` call: `before` is the lane just
    /// before it, `result` what it returned, `outputs` everything polled
    /// after it, `lane` the lane after.
    pub fn step(
        &mut self,
        before: &Before,
        now: Instant,
        input: &Input,
        result: &Result<(), UsageError>,
        outputs: &[Output],
        lane: &Lane,
    ) -> Result<(), Violation> {
        let _ = now;
        self.guard(|a| {
            let misuse = a.misuse(input);
            err_only_for_misuse(input, misuse.as_ref(), result)?;
            if let Err(e) = result {
                *a.errors.entry(input.name()).or_default() += 1;
                return misuse_changes_nothing(before, lane, outputs, e);
            }
            a.input(input)?;
            for out in outputs {
                a.output(out, Some(input))?;
            }
            let stray = a.acked_now.iter().find(|p| !p.returned && a.outbox.contains_key(&p.seq));
            ensure(stray.is_none(), "no_result_dropped_before_confirm", || {
                format!("the broker acked a publish of {:?} but its result stays in the outbox", stray)
            })?;
            a.acked_now.clear();
            counters_match_history(a, lane)
        })
    }

    fn guard(&mut self, check: impl FnOnce(&mut Self) -> Result<(), Violation>) -> Result<(), Violation> {
        if let Some(v) = &self.failed {
            return Err(v.clone());
        }
        let outcome = check(self);
        if let Err(v) = &outcome {
            self.failed = Some(v.clone());
        }
        outcome
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
            Input::SpoolRefused { seq, .. } if seq.0 > self.issued || seq.0 == 0 => Some(UsageError::Unexpected {
                input: "SpoolRefused",
                why: "no spool write was issued with this position",
            }),
            // Every inbox task is handed off as its write is issued, so a
            // task not handed off is unknown: never taken, or completed
            // already (even when its insert is still being written).
            Input::Complete { task, .. } if !self.handed.contains(task) => Some(UsageError::UnknownTask(task.clone())),
            _ => None,
        }
    }

    /// What an accepted input tells the model.
    fn input(&mut self, input: &Input) -> Result<(), Violation> {
        match input {
            Input::Delivery { channel, tag, message, .. }
                if self.consume_channels.contains(channel) && self.channel_live(*channel) && !self.shutdown =>
            {
                self.unsettled.insert((*channel, *tag), message.clone());
            }
            Input::SpoolCommitted { upto } => {
                let upto = upto.0;
                for (seq, op) in self.uncommitted.range(..=upto) {
                    let applied = self.durable_view.apply(op);
                    ensure(applied.is_ok(), "spool_accepts_every_write", || {
                        format!("committed write {seq} does not apply to the durable spool: {applied:?}")
                    })?;
                    if let SpoolOp::Insert(t) = op {
                        self.durable_tasks.insert(t.task.id.clone());
                    }
                }
                self.uncommitted.retain(|seq, _| *seq > upto);
                self.committed = self.committed.max(upto);
            }
            Input::SpoolRefused { seq, reason } => {
                return Err(Violation {
                    invariant: "spool_accepts_every_write",
                    detail: format!("the spool refused write {}: {reason}", seq.0),
                })
            }
            // A close of an id the lane has not opened (yet) says nothing
            // about the channel or connection it may open under that id.
            Input::ChannelClosed { channel, .. } if self.channel_conn.contains_key(channel) => {
                self.dead_channels.insert(*channel);
            }
            Input::ConnectionLost { conn, .. } if conn.0 <= self.last_conn => {
                self.dead_conns.insert(*conn);
            }
            Input::Shutdown => self.shutdown = true,
            Input::PublishAck { channel, tag, multiple } | Input::PublishNack { channel, tag, multiple } => {
                let published = self.publish_channels.get(channel).copied().unwrap_or(0);
                if !self.channel_live(*channel) || *tag == 0 || *tag > published {
                    // Late, or a confirm of a tag never published: a broker
                    // fault that confirms nothing.
                    return Ok(());
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
                    if c == channel && message_id.as_deref() == Some(p.task.as_str().as_bytes()) {
                        p.returned = true;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Audits one output; `input` is the input being handled (`None` while
    /// the lane is being built).
    fn output(&mut self, out: &Output, input: Option<&Input>) -> Result<(), Violation> {
        match out {
            Output::Amqp(cmd) => self.command(cmd),
            Output::Spool(w) => {
                no_intake_after_shutdown(self, out)?;
                spool_accepts_every_write(self, w.seq.0, &w.op, input)
            }
            Output::Handoff(h) if h.recovered => no_second_handoff(self, &h.task.id, true, input),
            Output::Handoff(h) => no_second_handoff(self, &h.task.id, false, input),
            Output::Event(Event::Status(s)) => {
                self.last_status = Some(s.clone());
                Ok(())
            }
            Output::Event(_) => Ok(()),
        }
    }

    fn command(&mut self, cmd: &Amqp) -> Result<(), Violation> {
        commands_fit_the_session(self, cmd)?;
        match cmd {
            Amqp::Quarantine { .. } => no_intake_after_shutdown(self, &Output::Amqp(cmd.clone()))?,
            Amqp::Connect { conn, .. } => {
                no_intake_after_shutdown(self, &Output::Amqp(cmd.clone()))?;
                self.last_conn = conn.0;
            }
            Amqp::OpenChannel { channel } => {
                self.channel_conn.insert(*channel, ConnId(self.last_conn));
            }
            Amqp::Consume { channel, .. } => {
                self.consume_channels.insert(*channel);
            }
            Amqp::ConfirmSelect { channel } => {
                self.publish_channels.insert(*channel, 0);
            }
            Amqp::Ack { tag, multiple } => {
                for (key, message) in no_stale_tag_ack(self, tag.channel, tag.tag, *multiple)? {
                    no_ack_before_durable(self, key, &message)?;
                    self.acked += 1;
                }
            }
            Amqp::Reject { tag } => {
                for (key, message) in no_stale_tag_ack(self, tag.channel, tag.tag, false)? {
                    reject_only_malformed(self, key, &message)?;
                    self.rejected += 1;
                }
            }
            Amqp::Publish { tag, exchange, routing_key, result, message } => {
                no_publish_before_durable(self, tag.channel, tag.seq, exchange, routing_key, *result, message)?;
            }
            Amqp::PublishReport { tag, exchange, routing_key, report } => {
                reports_fit_the_session(self, tag.channel, tag.seq, exchange, routing_key, report)?;
            }
            Amqp::Disconnect { conn, .. } => {
                self.dead_conns.insert(*conn);
            }
            Amqp::Qos { channel, .. } => {
                self.qos_channels.insert(*channel);
            }
            Amqp::QueryConsumers { .. } => {}
        }
        Ok(())
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

    pub(crate) fn remember_completed(&mut self, id: TaskId) -> Option<TaskId> {
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

    /// Channels that consume and are live, oldest first.
    pub fn live_consume_channels(&self) -> Vec<ChannelId> {
        self.consume_channels.iter().copied().filter(|c| self.channel_live(*c)).collect()
    }

    /// Live publishing channels, oldest first.
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
        self.in_flight.iter().map(|((c, t), p)| (*c, *t, p.task.clone())).collect()
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

    /// Whether `task` was ever durable in this lane's spool (its insert
    /// committed, or it came from the snapshot).
    pub fn was_durable(&self, task: &TaskId) -> bool {
        self.durable_tasks.contains(task)
    }

    /// Counters the auditor derived from the history: acked, rejected,
    /// completed, confirmed.
    pub fn tallies(&self) -> (u64, u64, u64, u64) {
        (self.acked, self.rejected, self.completed, self.confirmed)
    }
}
