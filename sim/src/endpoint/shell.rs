//! One boot of an endpoint host: the run loop that drives a `Lane`.
//!
//! The loop follows core's contract: after every `handle`, `poll` until
//! `None` and carry out each output; report what the broker, the spool and
//! the application do as inputs; sleep until the earliest of core's
//! deadline, the pending group commit and the next task completion. The
//! shell translates and keeps books for the oracles; it decides nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tasklane_core::{
    Amqp, ChannelId, ConnId, Event, Input, Lane, OutboxSeq, Output, ResultStatus, SpoolOp, SpoolSnapshot, SpoolWrite,
    Status, TaskId, WriteSeq,
};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::sleep_until;

use super::{convert, Endpoint, Record};
use crate::rng::Rng;
use crate::wire::session::{self, ConnEvent, Dial};
use crate::wire::{ChannelNo, ClientMethod, ServerMethod};

type Events = UnboundedSender<(ConnId, ConnEvent)>;

/// Iterations of the loop allowed without simulated time moving on.
const SPIN_LIMIT: u32 = 100_000;

pub(super) async fn run(ep: Endpoint) -> turmoil::Result {
    let life = ep.lives() + 1;
    ep.0.lives.set(life);
    let clock = ep.0.clock;
    let snapshot = ep.spool().snapshot();
    ep.record(Record::Started { life, inbox: snapshot.inbox.len(), outbox: snapshot.outbox.len() });
    let mut cfg = ep.0.config.clone();
    cfg.seed = Rng::new(cfg.seed).fork(life).next_u64();
    let mut shell = Shell::new(ep, life, cfg.seed, &snapshot);
    let mut lane = Lane::new(clock.now(), cfg, snapshot)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    shell.drain(&mut lane, &tx);

    let mut spins = 0;
    let mut last_elapsed = Duration::MAX;
    loop {
        let wake = [
            lane.poll_timeout().map(|at| clock.timer_at(at)),
            shell.commit_due,
            shell.app.keys().next().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            biased;
            Some((conn, ev)) = rx.recv() => {
                for input in shell.on_conn_event(conn, ev) {
                    shell.feed(&mut lane, &tx, input)?;
                }
            }
            _ = sleep_until(wake) => {}
        }
        let now = Instant::now();
        if shell.commit_due.is_some_and(|due| due <= now) {
            if let Some(upto) = shell.commit() {
                shell.feed(&mut lane, &tx, Input::SpoolCommitted { upto })?;
            }
        }
        while let Some(entry) = shell.app.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let task = entry.remove();
            let body = Bytes::from(format!("result of {task}"));
            let input = Input::Complete { task, status: ResultStatus::Ok, body };
            shell.feed(&mut lane, &tx, input)?;
        }
        shell.feed(&mut lane, &tx, Input::Timeout)?;

        let elapsed = clock.elapsed();
        spins = if elapsed == last_elapsed { spins + 1 } else { 0 };
        last_elapsed = elapsed;
        if spins > SPIN_LIMIT {
            return Err("the shell loop spins without simulated time moving on".into());
        }
    }
}

/// The current broker connection and its channel numbering.
struct Current {
    id: ConnId,
    task: JoinHandle<()>,
    tx: Option<UnboundedSender<ClientMethod>>,
    next_no: ChannelNo,
    by_id: BTreeMap<ChannelId, ChannelNo>,
    by_no: BTreeMap<ChannelNo, ChannelId>,
    /// Unsettled deliveries per channel: tag → task id (if valid).
    delivered: BTreeMap<ChannelId, BTreeMap<u64, Option<TaskId>>>,
}

impl Drop for Current {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shell {
    ep: Endpoint,
    life: u64,
    rng: Rng,
    conn: Option<Current>,
    pending: Vec<SpoolWrite>,
    commit_due: Option<Instant>,
    /// Application work: (due, order) → task.
    app: BTreeMap<(Instant, u64), TaskId>,
    app_seq: u64,
    outbox_tasks: BTreeMap<OutboxSeq, TaskId>,
    /// Publishes awaiting a confirm: (channel, confirm tag) → task.
    publishes: BTreeMap<(ChannelId, u64), TaskId>,
    /// Tasks whose result publish the broker confirmed to this shell.
    confirmed: BTreeSet<TaskId>,
}

impl Shell {
    fn new(ep: Endpoint, life: u64, seed: u64, snapshot: &SpoolSnapshot) -> Self {
        Shell {
            ep,
            life,
            rng: Rng::new(seed).fork(0x5E11),
            conn: None,
            pending: Vec::new(),
            commit_due: None,
            app: BTreeMap::new(),
            app_seq: 0,
            outbox_tasks: snapshot.outbox.iter().map(|r| (r.seq, r.result.task.clone())).collect(),
            publishes: BTreeMap::new(),
            confirmed: BTreeSet::new(),
        }
    }

    /// `handle` one input, then carry out every output.
    fn feed(&mut self, lane: &mut Lane, tx: &Events, input: Input) -> turmoil::Result {
        lane.handle(self.ep.0.clock.now(), input)?;
        self.drain(lane, tx);
        Ok(())
    }

    fn drain(&mut self, lane: &mut Lane, tx: &Events) {
        while let Some(out) = lane.poll() {
            self.execute(out, tx);
        }
    }

    fn execute(&mut self, out: Output, tx: &Events) {
        match out {
            Output::Amqp(a) => self.amqp(a, tx),
            Output::Spool(w) => self.spool_write(w),
            Output::Handoff(h) => {
                self.ep.record(Record::Handoff { life: self.life, task: h.task.id.clone(), recovered: h.recovered });
                let work = self.rng.range(1, self.ep.0.knobs.work_max.as_millis() as u64);
                let due = Instant::now() + Duration::from_millis(work);
                self.app_seq += 1;
                self.app.insert((due, self.app_seq), h.task.id);
            }
            Output::Event(Event::Status(s)) => {
                self.ep.record(Record::Status { life: self.life, status: status_text(&s) })
            }
            Output::Event(_) => {}
        }
    }

    fn spool_write(&mut self, w: SpoolWrite) {
        match &w.op {
            SpoolOp::Complete { seq, result, .. } => {
                self.outbox_tasks.insert(*seq, result.task.clone());
            }
            SpoolOp::Confirmed { seq } => {
                if let Some(task) = self.outbox_tasks.remove(seq) {
                    let confirmed = self.confirmed.contains(&task);
                    self.ep.record(Record::OutboxRemoved { life: self.life, task, confirmed });
                }
            }
            SpoolOp::Insert(_) => {}
        }
        self.pending.push(w);
        if self.commit_due.is_none() {
            let max = self.ep.0.knobs.fsync_max.as_micros() as u64;
            let delay = Duration::from_micros(self.rng.range(100, max.max(100)));
            self.commit_due = Some(Instant::now() + delay);
        }
    }

    /// The group commit: the pending writes become durable together.
    fn commit(&mut self) -> Option<WriteSeq> {
        self.commit_due = None;
        let writes = std::mem::take(&mut self.pending);
        let upto = writes.last()?.seq;
        if let Err(e) = self.ep.spool().commit(&writes) {
            self.ep.record(Record::SpoolRefused { life: self.life, error: e.to_string() });
        }
        Some(upto)
    }

    fn amqp(&mut self, a: Amqp, tx: &Events) {
        match a {
            Amqp::Connect { conn, .. } => {
                let knobs = &self.ep.0.knobs;
                let dial = Dial {
                    host: knobs.broker.0.clone(),
                    port: knobs.broker.1,
                    name: self.ep.client_name(self.life, conn.0),
                    heartbeat_ms: knobs.heartbeat_ms,
                    timeout: Duration::from_secs(2),
                };
                self.conn = Some(Current {
                    id: conn,
                    task: session::spawn(conn, dial, tx.clone()),
                    tx: None,
                    next_no: 1,
                    by_id: BTreeMap::new(),
                    by_no: BTreeMap::new(),
                    delivered: BTreeMap::new(),
                });
            }
            Amqp::Disconnect { conn, .. } => {
                if self.conn.as_ref().is_some_and(|c| c.id == conn) {
                    self.conn = None;
                }
            }
            Amqp::OpenChannel { channel } => {
                let Some(c) = self.conn.as_mut().filter(|c| c.tx.is_some()) else {
                    return;
                };
                let no = c.next_no;
                c.next_no += 1;
                c.by_id.insert(channel, no);
                c.by_no.insert(no, channel);
                self.send(ClientMethod::OpenChannel { ch: no });
            }
            Amqp::Qos { channel, prefetch } => {
                if let Some(ch) = self.no(channel) {
                    self.send(ClientMethod::Qos { ch, prefetch });
                }
            }
            Amqp::Consume { channel, queue, exclusive } => {
                if let Some(ch) = self.no(channel) {
                    self.send(ClientMethod::Consume { ch, queue, exclusive });
                }
            }
            Amqp::QueryConsumers { channel, queue } => {
                if let Some(ch) = self.no(channel) {
                    self.send(ClientMethod::DeclarePassive { ch, queue });
                }
            }
            Amqp::ConfirmSelect { channel } => {
                if let Some(ch) = self.no(channel) {
                    self.send(ClientMethod::ConfirmSelect { ch });
                }
            }
            Amqp::Ack { tag, multiple } => {
                let Some(ch) = self.no(tag.channel) else {
                    return;
                };
                let covers = self.take_delivered(tag.channel, tag.tag, multiple);
                let not_durable = covers.iter().filter(|t| !self.ep.spool().holds(t)).cloned().collect();
                self.ep.record(Record::AckSent { life: self.life, covers, not_durable });
                self.send(ClientMethod::Ack { ch, tag: tag.tag, multiple });
            }
            Amqp::Reject { tag } => {
                let Some(ch) = self.no(tag.channel) else {
                    return;
                };
                self.take_delivered(tag.channel, tag.tag, false);
                self.send(ClientMethod::Reject { ch, tag: tag.tag, requeue: false });
            }
            Amqp::Publish { tag, exchange, routing_key, message } => {
                let Some(ch) = self.no(tag.channel) else {
                    return;
                };
                let message = convert::raw_to_wire(&message);
                if let Some(task) = message.message_id.as_ref().and_then(|id| TaskId::new(id.clone()).ok()) {
                    self.publishes.insert((tag.channel, tag.seq), task);
                }
                self.send(ClientMethod::Publish {
                    ch,
                    exchange: exchange.to_owned(),
                    routing_key,
                    mandatory: true,
                    message,
                });
            }
        }
    }

    fn no(&self, channel: ChannelId) -> Option<ChannelNo> {
        self.conn.as_ref()?.by_id.get(&channel).copied()
    }

    fn send(&self, m: ClientMethod) {
        if let Some(tx) = self.conn.as_ref().and_then(|c| c.tx.as_ref()) {
            let _ = tx.send(m);
        }
    }

    /// Forgets the deliveries an ack or reject settles; their task ids.
    fn take_delivered(&mut self, channel: ChannelId, tag: u64, multiple: bool) -> Vec<TaskId> {
        let Some(map) = self.conn.as_mut().and_then(|c| c.delivered.get_mut(&channel)) else {
            return Vec::new();
        };
        let tags: Vec<u64> = if multiple {
            map.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            map.contains_key(&tag).then_some(tag).into_iter().collect()
        };
        tags.into_iter().filter_map(|t| map.remove(&t).flatten()).collect()
    }

    fn on_conn_event(&mut self, conn: ConnId, ev: ConnEvent) -> Vec<Input> {
        if self.conn.as_ref().is_none_or(|c| c.id != conn) {
            return Vec::new(); // an attempt already given up
        }
        match ev {
            ConnEvent::Open { tx, .. } => {
                if let Some(c) = self.conn.as_mut() {
                    c.tx = Some(tx);
                }
                vec![Input::Connected { conn }]
            }
            ConnEvent::Failed(reason) => {
                self.conn = None;
                vec![Input::ConnectFailed { conn, reason }]
            }
            ConnEvent::Lost(reason) => {
                self.conn = None;
                vec![Input::ConnectionLost { conn, reason }]
            }
            ConnEvent::Method(m) => self.on_method(m).into_iter().collect(),
        }
    }

    fn on_method(&mut self, m: ServerMethod) -> Option<Input> {
        let no = channel_no(&m)?;
        let c = self.conn.as_mut()?;
        let channel = c.by_no.get(&no).copied()?;
        Some(match m {
            ServerMethod::ChannelOpenOk { .. } => Input::ChannelOpened { channel },
            ServerMethod::QosOk { .. } => Input::QosOk { channel },
            ServerMethod::ConsumeOk { .. } => Input::ConsumeOk { channel },
            ServerMethod::DeclareOk { consumers, .. } => Input::ConsumerCount { channel, consumers },
            ServerMethod::Cancel { .. } => Input::ConsumerCancelled { channel },
            ServerMethod::ConfirmSelectOk { .. } => Input::ConfirmSelectOk { channel },
            ServerMethod::Deliver { tag, redelivered, message, .. } => {
                let task = message.message_id.as_ref().and_then(|m| TaskId::new(m.clone()).ok());
                c.delivered.entry(channel).or_default().insert(tag, task);
                Input::Delivery { channel, tag, redelivered, message: convert::wire_to_raw(&message) }
            }
            ServerMethod::PublishAck { tag, multiple, .. } => {
                for task in self.take_publishes(channel, tag, multiple) {
                    self.confirmed.insert(task);
                }
                Input::PublishAck { channel, tag, multiple }
            }
            ServerMethod::PublishNack { tag, multiple, .. } => {
                self.take_publishes(channel, tag, multiple);
                Input::PublishNack { channel, tag, multiple }
            }
            ServerMethod::Return { reply_code, reply_text, message, .. } => {
                // Its confirm follows, but the result did not reach a queue.
                let returned = message.message_id.clone();
                self.publishes.retain(|(c, _), t| *c != channel || Some(t.as_str()) != returned.as_deref());
                Input::Returned {
                    channel,
                    message_id: message.message_id.map(String::into_bytes),
                    code: reply_code,
                    text: reply_text,
                }
            }
            ServerMethod::ChannelClose { code, text, .. } => {
                c.by_no.remove(&no);
                c.by_id.remove(&channel);
                c.delivered.remove(&channel);
                if let Some(tx) = &c.tx {
                    let _ = tx.send(ClientMethod::CloseChannel { ch: no });
                }
                Input::ChannelClosed { channel, code, text }
            }
            _ => return None,
        })
    }

    fn take_publishes(&mut self, channel: ChannelId, tag: u64, multiple: bool) -> Vec<TaskId> {
        let keys: Vec<(ChannelId, u64)> = if multiple {
            self.publishes.range((channel, 0)..=(channel, tag)).map(|(k, _)| *k).collect()
        } else {
            vec![(channel, tag)]
        };
        keys.into_iter().filter_map(|k| self.publishes.remove(&k)).collect()
    }
}

/// The channel a broker method is about, if any.
fn channel_no(m: &ServerMethod) -> Option<ChannelNo> {
    use ServerMethod::*;
    match m {
        ChannelOpenOk { ch }
        | QosOk { ch }
        | ConsumeOk { ch, .. }
        | DeclareOk { ch, .. }
        | Cancel { ch, .. }
        | ConfirmSelectOk { ch }
        | Deliver { ch, .. }
        | PublishAck { ch, .. }
        | PublishNack { ch, .. }
        | Return { ch, .. }
        | ChannelClose { ch, .. } => Some(*ch),
        ChannelCloseOk { .. } | ConnectionOpenOk { .. } | Heartbeat | ConnectionClose { .. } => None,
    }
}

/// A status without its wall-clock field, for the history.
fn status_text(s: &Status) -> String {
    match s {
        Status::Disconnected { reason, .. } => format!("Disconnected({reason})"),
        other => format!("{other:?}"),
    }
}
