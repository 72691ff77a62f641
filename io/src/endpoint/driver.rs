//! The driver: one task running one loop (after quinn's `ConnectionDriver`),
//! written once for every shell. It feeds the lane what happened (broker
//! answers and events, spool commits, application calls, one timer at
//! `poll_timeout()`), drains `poll()` after every input, and hands each
//! output to the broker port, the spool port or the application. It decides
//! nothing: when to ack, publish, retry, reconnect or stop is the lane's
//! business, and the adapters behind the ports only translate.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tasklane_core::{
    Amqp, ConnId, Counters, Event, Input, Lane, OutboxSeq, Output, ResultStatus, SpoolOp, SpoolSnapshot, Status, Task,
    TaskId, UsageError, WriteSeq,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::ports::{BrokerConn, BrokerPort, BrokerSinks, InputSink, Observer, SpoolPort};
use super::SpoolDepths;

/// Inputs handled in one go before the watches are refreshed: a burst of
/// deliveries costs one watch update, not one per task.
const BATCH: usize = 256;
/// Tasks read from the spool ahead of the application's takes: the bodies
/// in memory on their way to the application are this many at most, however
/// many tasks wait in the spool (SPEC §4 "Memory").
pub(super) const TAKE_AHEAD: usize = 4;
/// How far past its grace a spool port's close may run before the driver
/// stops waiting for it (the port's contract is to end within the grace).
const SPOOL_CLOSE_SLACK: Duration = Duration::from_millis(100);

/// Calls from the application.
pub(super) enum AppCmd {
    Complete { task: TaskId, status: ResultStatus, body: bytes::Bytes, reply: oneshot::Sender<Result<(), UsageError>> },
    Shutdown,
}

/// Arrival positions in hand-off order, kept as runs `[start, end)`.
#[derive(Debug, Default)]
pub(super) struct Handoffs(VecDeque<(u64, u64)>);

impl Handoffs {
    fn push_back(&mut self, arrival: u64) {
        match self.0.back_mut() {
            Some((_, end)) if *end == arrival => *end += 1,
            _ => self.0.push_back((arrival, arrival + 1)),
        }
    }

    fn front(&self) -> Option<u64> {
        self.0.front().map(|&(start, _)| start)
    }

    fn pop_front(&mut self) -> Option<u64> {
        let (start, end) = self.0.front_mut()?;
        let arrival = *start;
        *start += 1;
        if start == end {
            self.0.pop_front();
        }
        Some(arrival)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The lane's time: tokio's clock (simulated under turmoil), as the `std`
/// instant core takes.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Where the driver publishes what the application may watch.
pub(super) struct Watches {
    pub status: watch::Sender<Status>,
    pub counters: watch::Sender<Counters>,
    pub depths: watch::Sender<SpoolDepths>,
    /// Why intake waits for the spool (`Lane::spool_full`), if it does.
    pub spool_full: watch::Sender<Option<String>>,
}

pub(super) struct Driver<B: BrokerPort, S: SpoolPort, O: Observer> {
    pub lane: Lane,
    pub broker: B,
    pub spool: S,
    pub observer: O,
    pub sinks: BrokerSinks,
    pub inputs: mpsc::UnboundedReceiver<Input>,
    pub app: mpsc::UnboundedReceiver<AppCmd>,
    /// To the application, which pulls: bounded by [`TAKE_AHEAD`].
    pub tasks: mpsc::Sender<Task>,
    /// Tasks handed off and not yet read for the application, by arrival
    /// position, in hand-off order, as runs of consecutive positions: a
    /// backlog of handed-off tasks costs next to nothing here.
    pub handoffs: Handoffs,
    /// Inserts issued and not yet committed, by arrival position: their
    /// bodies, for a task taken before its write is durable (they are in
    /// the spool's queue anyway).
    pub uncommitted: BTreeMap<u64, (WriteSeq, Task)>,
    pub watches: Watches,
    /// Told when the driver has stopped.
    pub done: oneshot::Sender<()>,
    /// The current connection (or attempt) and its id.
    pub conn: Option<(ConnId, B::Conn)>,
}

impl<B: BrokerPort, S: SpoolPort, O: Observer> Driver<B, S, O> {
    /// Runs until the lane is drained after a shutdown (asked for, or every
    /// handle dropped).
    pub async fn run(mut self, spool_inputs: InputSink, snapshot: Option<SpoolSnapshot>) {
        self.spool.start(spool_inputs);
        if let Some(snapshot) = snapshot.filter(|_| O::ACTIVE) {
            let first: Vec<Output> = std::iter::from_fn(|| self.lane.poll()).collect();
            self.observer.started(&self.lane, &snapshot, &first);
            self.execute(first);
        } else {
            // Without an observer, one by one: a spool of a million tasks
            // makes a million recovered handoffs, never a list of them.
            while let Some(out) = self.lane.poll() {
                self.execute_one(out);
            }
        }
        let mut app_open = true;
        let mut stopping_since = None;
        while !self.lane.is_drained() {
            self.hand_over();
            self.publish_state();
            let timer = self.lane.poll_timeout().map(Instant::from_std);
            let room = self.tasks.clone();
            let woke = tokio::select! {
                biased;
                Some(input) = self.inputs.recv() => Some(input),
                cmd = self.app.recv(), if app_open => {
                    app_open = self.on_app(cmd);
                    stopping_since = stopping_since.or((!app_open).then(Instant::now));
                    None
                }
                // Room for a task the application has not taken: the
                // permit is given back at once, `hand_over` takes it.
                _ = room.reserve(), if !self.handoffs.is_empty() => None,
                _ = sleep_until(timer) => Some(Input::Timeout),
            };
            if let Some(input) = woke {
                let _ = self.feed(input);
                // What else is waiting, in the same go.
                for _ in 1..BATCH {
                    let Ok(input) = self.inputs.try_recv() else { break };
                    let _ = self.feed(input);
                }
            }
        }
        self.finish(stopping_since).await;
    }

    /// An application call; false once the application is gone or asked
    /// to stop.
    fn on_app(&mut self, cmd: Option<AppCmd>) -> bool {
        match cmd {
            Some(AppCmd::Complete { task, status, body, reply }) => {
                let result = self.feed(Input::Complete { task, status, body });
                // The result's spool write is queued before the answer.
                let _ = reply.send(result);
                true
            }
            Some(AppCmd::Shutdown) | None => {
                let _ = self.feed(Input::Shutdown);
                false
            }
        }
    }

    /// Reads handed-off tasks from the spool for the application while it
    /// has room for them.
    fn hand_over(&mut self) {
        while let Some(arrival) = self.handoffs.front() {
            let permit = match self.tasks.clone().try_reserve_owned() {
                Ok(permit) => permit,
                Err(TrySendError::Full(_)) => return,
                Err(TrySendError::Closed(_)) => {
                    // The application is gone: nobody takes them (they stay
                    // in the inbox and come again after a restart).
                    self.handoffs.clear();
                    return;
                }
            };
            self.handoffs.pop_front();
            if let Some(task) = self.read_task(arrival) {
                permit.send(task);
            }
        }
    }

    /// The body of the task at `arrival`: from the queued insert while its
    /// write is not committed, else from the spool.
    fn read_task(&mut self, arrival: u64) -> Option<Task> {
        if let Some((_, task)) = self.uncommitted.get(&arrival) {
            return Some(task.clone());
        }
        match self.spool.task(arrival) {
            Ok(Some(task)) => Some(task),
            Ok(None) => {
                // Completed (by id) before the application took it.
                tracing::debug!(arrival, "a handed-off task left the inbox before it was taken");
                None
            }
            Err(e) => {
                tracing::error!(
                    arrival,
                    "cannot read a handed-off task from the spool: {e}; it is handed off again after a restart"
                );
                None
            }
        }
    }

    /// The spool committed every write up to `upto`: the bodies of those
    /// inserts are read from the spool from now on.
    fn forget_committed(&mut self, upto: WriteSeq) {
        while let Some(entry) = self.uncommitted.first_entry() {
            if entry.get().0 > upto {
                break;
            }
            entry.remove();
        }
    }

    /// `handle` one input, then carry out everything the lane asks for.
    fn feed(&mut self, input: Input) -> Result<(), UsageError> {
        if let Input::SpoolCommitted { upto } = &input {
            self.forget_committed(*upto);
        }
        let now = now();
        if !O::ACTIVE {
            let result = self.lane.handle(now, input);
            if let Err(e) = &result {
                tracing::error!("lane refused an input: {e}"); // a bug of this shell, say so loudly
            }
            let outputs: Vec<Output> = std::iter::from_fn(|| self.lane.poll()).collect();
            self.execute(outputs);
            return result;
        }
        let (status, counters) = (self.lane.status().clone(), *self.lane.counters());
        let result = self.lane.handle(now, input.clone());
        let outputs: Vec<Output> = std::iter::from_fn(|| self.lane.poll()).collect();
        self.observer.handled(&status, &counters, now, &input, &result, &outputs, &self.lane);
        self.execute(outputs);
        result
    }

    fn execute(&mut self, outputs: Vec<Output>) {
        let publishes: Vec<OutboxSeq> = outputs
            .iter()
            .filter_map(|out| match out {
                Output::Amqp(Amqp::Publish { result, .. }) => Some(*result),
                _ => None,
            })
            .collect();
        let mut bodies = self.result_bodies(&publishes).into_iter();
        for out in outputs {
            match out {
                Output::Amqp(Amqp::Publish { .. }) => {
                    let body = bodies.next().flatten();
                    self.publish_with(out, body);
                }
                out => self.execute_one(out),
            }
        }
    }

    /// Carries out an `Amqp::Publish` with the result's body read from the
    /// spool, or gives the connection up when it could not be read.
    fn publish_with(&mut self, publish: Output, body: Option<bytes::Bytes>) {
        let Output::Amqp(Amqp::Publish { tag, exchange, routing_key, result, mut message }) = publish else {
            unreachable!("only publishes come here")
        };
        match body {
            Some(body) => {
                message.body = body;
                let publish = Amqp::Publish { tag, exchange, routing_key, result, message };
                match &mut self.conn {
                    Some((_, c)) => c.execute(publish),
                    None => tracing::debug!(?publish, "AMQP command without a connection"),
                }
            }
            None => self.drop_for_unreadable_result(result),
        }
    }

    /// A result core asked to publish cannot be read from the spool. Merely
    /// skipping it would shift the broker's confirm tags against core's, and
    /// the next result's confirm would then remove this one unpublished; so
    /// the connection goes, as if lost: core publishes everything in flight
    /// again on the next one (with its backoff, should the read keep
    /// failing). The rest of the batch's commands find no connection.
    fn drop_for_unreadable_result(&mut self, seq: OutboxSeq) {
        let Some((conn, session)) = self.conn.take() else { return };
        let reason = format!("result {} could not be read from the spool to publish", seq.0);
        tracing::error!(conn = conn.0, %reason, "dropping the connection");
        session.close(reason.clone());
        self.sinks.inputs.send(Input::ConnectionLost { conn, reason });
    }

    /// The bodies of the results a batch of outputs publishes, read from
    /// the spool in one go (core keeps none; each publish's completing
    /// write is committed before core issues it); `None` for one that
    /// cannot be read.
    fn result_bodies(&mut self, seqs: &[OutboxSeq]) -> Vec<Option<bytes::Bytes>> {
        if seqs.is_empty() {
            return Vec::new();
        }
        match self.spool.result_bodies(seqs) {
            Ok(bodies) => {
                for (seq, body) in seqs.iter().zip(&bodies) {
                    if body.is_none() {
                        tracing::error!(seq = seq.0, "a result to publish is not in the spool's outbox");
                    }
                }
                bodies
            }
            Err(e) => {
                tracing::error!("cannot read results to publish from the spool: {e}; they are published again later");
                vec![None; seqs.len()]
            }
        }
    }

    fn execute_one(&mut self, out: Output) {
        match out {
            Output::Amqp(Amqp::Connect { conn, address }) => {
                if let Some((_, old)) = self.conn.take() {
                    old.close("replaced by a new connection".into());
                }
                tracing::debug!(conn = conn.0, address, "connecting");
                self.conn = Some((conn, self.broker.connect(conn, address, self.sinks.clone())));
            }
            Output::Amqp(Amqp::Disconnect { conn, reason }) => {
                if self.conn.as_ref().is_some_and(|(c, _)| *c == conn) {
                    let (_, old) = self.conn.take().expect("checked");
                    tracing::debug!(conn = conn.0, %reason, "disconnecting");
                    old.close(reason);
                }
            }
            Output::Amqp(Amqp::Quarantine { scan, address, queue, max }) => {
                tracing::warn!(scan, address, %queue, max, "a session died right after consuming: scanning for a task the client cannot decode");
                self.broker.quarantine(scan, address, queue, max, self.sinks.inputs.clone());
            }
            Output::Amqp(Amqp::Publish { result, .. }) => {
                // One by one (the start without an observer): a read each.
                let body = self.result_bodies(&[result]).pop().flatten();
                self.publish_with(out, body);
            }
            Output::Amqp(op) => match &mut self.conn {
                Some((_, c)) => c.execute(op),
                None => tracing::debug!(?op, "AMQP command without a connection"),
            },
            Output::Spool(write) => {
                if let SpoolOp::Insert(t) = &write.op {
                    self.uncommitted.insert(t.arrival, (write.seq, t.task.clone()));
                }
                self.spool.write(write)
            }
            Output::Handoff(h) => {
                if h.recovered {
                    tracing::trace!(task = %h.task.id, "handing off a task recovered from the spool");
                }
                self.handoffs.push_back(h.task.arrival);
            }
            Output::Event(event) => self.report(event),
        }
    }

    fn report(&self, event: Event) {
        match event {
            Event::Status(status) => {
                match &status {
                    Status::Disconnected { reason, .. } => tracing::warn!(%reason, "endpoint disconnected"),
                    Status::Blocked { reason } => tracing::warn!(%reason, "endpoint blocked by the broker"),
                    other => tracing::info!(status = ?other, "endpoint status"),
                }
                self.watches.status.send_replace(status);
            }
            Event::Rejected { message_id, reason } => {
                tracing::warn!(message_id = message_id.as_deref().unwrap_or("-"), %reason, "task rejected (dead-lettered)")
            }
            Event::DuplicateDropped { task } => tracing::debug!(%task, "duplicate delivery dropped"),
            Event::ResultReturned { task, code, text } => {
                tracing::warn!(%task, code, %text, "result returned as unroutable; kept in the outbox")
            }
            Event::ResultNacked { task } => tracing::warn!(%task, "result nacked by the broker; kept in the outbox"),
            Event::ProtocolViolation { detail } => tracing::error!(%detail, "broker protocol violation"),
            Event::SpoolFull { reason } => tracing::error!(%reason, "spool full; intake waits"),
            Event::SpoolRefused { seq, reason } => tracing::error!(seq = seq.0, %reason, "spool refused a write"),
            Event::Quarantined { message_ids, scanned } => tracing::warn!(
                ?message_ids,
                scanned,
                "moved deliveries the client cannot decode to tasklane.dead (with the reason)"
            ),
            Event::QuarantineFailed { reason } => tracing::warn!(%reason, "poison scan failed"),
            Event::ShutdownIncomplete { uncommitted } => {
                tracing::warn!(uncommitted, "stopping with spool writes uncommitted; the broker delivers them again")
            }
            other => tracing::info!(event = ?other, "endpoint event"),
        }
    }

    fn publish_state(&self) {
        let counters = *self.lane.counters();
        self.watches.counters.send_if_modified(|c| std::mem::replace(c, counters) != counters);
        let depths = SpoolDepths { inbox: self.lane.inbox_len(), outbox: self.lane.outbox_len() };
        self.watches.depths.send_if_modified(|d| std::mem::replace(d, depths) != depths);
        let full = self.lane.spool_full();
        self.watches.spool_full.send_if_modified(|f| {
            let changed = f.as_deref() != full;
            if changed {
                *f = full.map(str::to_owned);
            }
            changed
        });
    }

    /// After the lane is drained: let the spool close within what is left
    /// of the shutdown grace (nothing, when the lane used it all: what is
    /// not committed then was never acked, and comes again), then say so.
    async fn finish(mut self, stopping_since: Option<Instant>) {
        if let Some((_, conn)) = self.conn.take() {
            conn.close("shutdown".into());
        }
        let grace = self.lane.config().shutdown_grace;
        let left = stopping_since.map_or(grace, |since| (since + grace).saturating_duration_since(Instant::now()));
        self.publish_state();
        let Driver { lane, spool, watches, done, .. } = self;
        if tokio::time::timeout(left + SPOOL_CLOSE_SLACK, spool.close(left)).await.is_err() {
            tracing::warn!(?left, "the spool did not close within the shutdown grace; leaving it");
        }
        watches.status.send_replace(Status::Closed);
        let (c, d) = (lane.counters(), *watches.depths.borrow());
        tracing::info!(
            received = c.received,
            completed = c.completed,
            confirmed = c.confirmed,
            inbox = d.inbox,
            outbox = d.outbox,
            "endpoint closed"
        );
        let _ = done.send(());
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::Handoffs;

    #[test]
    fn handoffs_come_out_in_order_kept_as_runs() {
        let mut h = Handoffs::default();
        for a in [3, 4, 5, 9, 10, 2, 3] {
            h.push_back(a);
        }
        assert_eq!(h.0, [(3, 6), (9, 11), (2, 4)]);
        let mut out = Vec::new();
        while let Some(a) = h.pop_front() {
            out.push(a);
        }
        assert_eq!(out, vec![3, 4, 5, 9, 10, 2, 3]);
        assert!(h.is_empty() && h.front().is_none());
    }
}
