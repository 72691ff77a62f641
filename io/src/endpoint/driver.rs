//! The driver: one task running one loop (after quinn's `ConnectionDriver`).
//! It feeds the lane what happened — amqprs replies, callbacks and
//! deliveries, spool commits, application calls, one timer at
//! `poll_timeout()` — drains `poll()` after every input, and carries out
//! each output. It decides nothing: when to ack, publish, retry or
//! reconnect is the lane's business.

use std::time::Duration;

use tasklane_core::{
    Amqp, ChannelId, ConnId, Counters, Event, Input, Lane, Output, ResultStatus, Status, Task, TaskId, UsageError,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::conn::{ConnCmd, ConnHandle, Sinks};
use crate::amqp::{ChannelEvent, ConnectOptions, ConnectionEvent};
use crate::spool::{SpoolReport, SpoolWriter};

/// How long shutdown waits for queued spool writes and connection closes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Calls from the application.
pub(super) enum AppCmd {
    Complete { task: TaskId, status: ResultStatus, body: bytes::Bytes, reply: oneshot::Sender<Result<(), UsageError>> },
    Shutdown,
}

/// The lane's time: tokio's clock, as the `std` instant core takes.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(super) struct Driver {
    pub lane: Lane,
    pub opts: ConnectOptions,
    pub spool: SpoolWriter,
    pub spool_reports: mpsc::UnboundedReceiver<SpoolReport>,
    pub app: mpsc::UnboundedReceiver<AppCmd>,
    pub tasks: mpsc::UnboundedSender<Task>,
    pub status: watch::Sender<Status>,
    pub counters: watch::Sender<Counters>,
    /// Inbox and outbox lengths.
    pub depths: watch::Sender<super::SpoolDepths>,
    /// The live connection (set and cleared by the connection tasks).
    pub connection: std::sync::Arc<watch::Sender<Option<(ConnId, crate::amqp::ConnectionInfo)>>>,
}

struct Channels {
    sinks: Sinks,
    inputs: mpsc::UnboundedReceiver<Input>,
    conn_events: mpsc::UnboundedReceiver<(ConnId, ConnectionEvent)>,
    channel_events: mpsc::UnboundedReceiver<(ChannelId, ChannelEvent)>,
}

impl Channels {
    fn new(connection: std::sync::Arc<watch::Sender<Option<(ConnId, crate::amqp::ConnectionInfo)>>>) -> Self {
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let (conn_tx, conn_events) = mpsc::unbounded_channel();
        let (chan_tx, channel_events) = mpsc::unbounded_channel();
        let sinks = Sinks { inputs: inputs_tx, conn_events: conn_tx, channel_events: chan_tx, connection };
        Self { sinks, inputs, conn_events, channel_events }
    }
}

enum Woke {
    Input(Input),
    Spool(SpoolReport),
    App(Option<AppCmd>),
}

fn conn_input(conn: ConnId, event: ConnectionEvent) -> Input {
    match event {
        ConnectionEvent::Blocked { reason } => Input::Blocked { conn, reason },
        ConnectionEvent::Unblocked => Input::Unblocked { conn },
        ConnectionEvent::Closed { code, text } => {
            Input::ConnectionLost { conn, reason: format!("closed by the broker: {code} {text}") }
        }
        ConnectionEvent::Lost { network_failure: true } => {
            Input::ConnectionLost { conn, reason: "network failure or missed heartbeats".into() }
        }
        ConnectionEvent::Lost { network_failure: false } => {
            Input::ConnectionLost { conn, reason: "connection closed".into() }
        }
    }
}

fn channel_input(channel: ChannelId, event: ChannelEvent) -> Input {
    match event {
        ChannelEvent::PublishAck { tag, multiple } => Input::PublishAck { channel, tag, multiple },
        ChannelEvent::PublishNack { tag, multiple } => Input::PublishNack { channel, tag, multiple },
        ChannelEvent::Returned { code, text, message, .. } => {
            Input::Returned { channel, message_id: message.message_id, code, text }
        }
        ChannelEvent::Closed { code, text } => Input::ChannelClosed { channel, code, text },
        ChannelEvent::ConsumerCancelled { consumer_tag } => {
            Input::ChannelClosed { channel, code: 0, text: format!("consumer {consumer_tag} cancelled by the broker") }
        }
    }
}

impl Driver {
    /// Runs until shutdown (asked for, or every handle dropped).
    pub async fn run(mut self) {
        let mut ch = Channels::new(self.connection.clone());
        let mut conn: Option<ConnHandle> = None;
        let mut closing: Vec<ConnHandle> = Vec::new();
        let mut stop_deadline: Option<Instant> = None;
        let mut app_open = true;
        loop {
            self.drain(&ch.sinks, &mut conn, &mut closing);
            self.publish_state();
            if let Some(deadline) = stop_deadline {
                let flushed = self.lane.committed() >= self.lane.last_write();
                if flushed || Instant::now() >= deadline {
                    break;
                }
            }
            let timer = self.lane.poll_timeout().map(Instant::from_std);
            let woke = tokio::select! {
                Some(report) = self.spool_reports.recv() => Woke::Spool(report),
                Some(input) = ch.inputs.recv() => Woke::Input(input),
                Some((id, event)) = ch.conn_events.recv() => Woke::Input(conn_input(id, event)),
                Some((id, event)) = ch.channel_events.recv() => Woke::Input(channel_input(id, event)),
                cmd = self.app.recv(), if app_open => Woke::App(cmd),
                _ = sleep_until(timer) => Woke::Input(Input::Timeout),
                _ = sleep_until(stop_deadline) => continue,
            };
            let input = match woke {
                Woke::Input(input) => input,
                Woke::Spool(SpoolReport::Committed { upto, .. }) => Input::SpoolCommitted { upto },
                Woke::Spool(SpoolReport::Stalled { reason }) => Input::SpoolStalled { reason },
                Woke::Spool(SpoolReport::Refused { .. }) => continue, // logged by the writer
                Woke::Spool(SpoolReport::Space { .. }) => continue,   // no disk-space policy yet (issue 12)
                Woke::App(Some(AppCmd::Complete { task, status, body, reply })) => {
                    let result = self.lane.handle(now(), Input::Complete { task, status, body });
                    // The result's spool write is queued before the answer.
                    self.drain(&ch.sinks, &mut conn, &mut closing);
                    let _ = reply.send(result);
                    continue;
                }
                Woke::App(cmd) => {
                    // Shutdown asked for, or every handle dropped (`None`).
                    app_open = cmd.is_some();
                    if stop_deadline.is_some() {
                        continue;
                    }
                    stop_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                    Input::Shutdown
                }
            };
            let name = input.name();
            if let Err(e) = self.lane.handle(now(), input) {
                // A bug of this shell, not a fault of the broker: say so loudly.
                tracing::error!(input = name, "lane refused input: {e}");
            }
        }
        self.finish(conn, closing).await;
    }

    /// Carries out every output the lane has.
    fn drain(&mut self, sinks: &Sinks, conn: &mut Option<ConnHandle>, closing: &mut Vec<ConnHandle>) {
        while let Some(output) = self.lane.poll() {
            match output {
                Output::Amqp(Amqp::Connect { conn: id }) => {
                    if let Some(old) = conn.take() {
                        let _ = old.cmds.send(ConnCmd::Close("replaced".into()));
                        closing.push(old);
                    }
                    tracing::debug!(conn = id.0, url = %self.opts.url, "connecting");
                    *conn = Some(ConnHandle::spawn(id, self.opts.clone(), sinks.clone()));
                }
                Output::Amqp(Amqp::Disconnect { conn: id, reason }) => {
                    if conn.as_ref().is_some_and(|c| c.id == id) {
                        let old = conn.take().expect("checked");
                        tracing::debug!(conn = id.0, %reason, "disconnecting");
                        let _ = old.cmds.send(ConnCmd::Close(reason));
                        closing.push(old);
                    }
                }
                Output::Amqp(op) => match conn {
                    Some(c) => {
                        let _ = c.cmds.send(ConnCmd::Amqp(op));
                    }
                    None => tracing::warn!(?op, "AMQP command without a connection"),
                },
                Output::Spool(write) => {
                    if let Err(e) = self.spool.write(write) {
                        tracing::error!("{e}");
                    }
                }
                Output::Handoff(h) => {
                    if h.recovered {
                        tracing::debug!(task = %h.task.id, "handing off a task recovered from the spool");
                    }
                    let _ = self.tasks.send(h.task);
                }
                Output::Event(event) => self.report(event),
            }
        }
        closing.retain(|c| !c.task.is_finished());
    }

    fn report(&self, event: Event) {
        match event {
            Event::Status(status) => {
                match &status {
                    Status::Disconnected { reason, .. } => tracing::warn!(%reason, "endpoint disconnected"),
                    Status::Blocked { reason } => tracing::warn!(%reason, "endpoint blocked by the broker"),
                    other => tracing::info!(status = ?other, "endpoint status"),
                }
                self.status.send_replace(status);
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
            other => tracing::info!(event = ?other, "endpoint event"),
        }
    }

    fn publish_state(&self) {
        let counters = *self.lane.counters();
        self.counters.send_if_modified(|c| {
            let changed = *c != counters;
            *c = counters;
            changed
        });
        let depths = super::SpoolDepths { inbox: self.lane.inbox_len(), outbox: self.lane.outbox_len() };
        self.depths.send_if_modified(|d| {
            let changed = *d != depths;
            *d = depths;
            changed
        });
    }

    /// After shutdown: let connections close and the spool writer commit
    /// what it has, then stop it.
    async fn finish(mut self, conn: Option<ConnHandle>, closing: Vec<ConnHandle>) {
        let last = self.lane.last_write();
        if self.lane.committed() < last {
            tracing::warn!(issued = last.0, committed = self.lane.committed().0, "stopping with spool writes pending");
        }
        let mut tasks = Vec::new();
        for c in conn.into_iter().chain(closing) {
            let _ = c.cmds.send(ConnCmd::Close("shutdown".into()));
            tasks.push(c.task);
        }
        for t in tasks {
            // Waiting ends here; the close itself runs on to completion.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, t).await;
        }
        self.spool_reports.close();
        self.status.send_replace(Status::Closed);
        self.publish_state();
        let (c, d) = (self.lane.counters(), *self.depths.borrow());
        tracing::info!(
            received = c.received,
            completed = c.completed,
            confirmed = c.confirmed,
            inbox = d.inbox,
            outbox = d.outbox,
            "endpoint closed"
        );
        let spool = self.spool;
        match tokio::task::spawn_blocking(move || spool.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("spool close: {e}"),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
