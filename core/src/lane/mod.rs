//! [`Lane`]: one endpoint's subscriber, publisher, spool bookkeeping and
//! failover, as one sans-IO state machine.
//!
//! The work is split by concept: [`session`] owns the connection and its two
//! channels (failover, backoff, timeouts) and [`crate::addresses`] the choice of
//! broker node, [`consumer`] the consuming channel (standby, refusal,
//! cancel), [`intake`] the deliveries (dedup, rejection, backpressure, group
//! acks, hand-off), [`outbox`] the results (completion, publishing,
//! confirms, retries), [`shutdown`] the bounded drain.

mod consumer;
mod inbox;
mod intake;
mod outbox;
mod poison;
mod report;
mod session;
mod shutdown;
mod space;

use std::collections::VecDeque;
use std::time::Instant;

use crate::config::Config;
use crate::counters::Counters;
use crate::error::{ConfigError, UsageError};
use crate::input::Input;
use crate::output::{Event, Handoff, Output, Status};
use crate::rng::SplitMix64;
use crate::spool::{SpoolOp, SpoolSnapshot, SpoolWrite, TaskMeta};
use crate::WriteSeq;

use crate::addresses::Rounds;
use inbox::Inbox;
use intake::Intake;
use outbox::Outbox;
use report::Reports;
use session::{Conn, IdSource};

/// One endpoint's lane to its service: consume `E.tasks`, spool, hand off,
/// publish results with confirms, reconnect. See the crate docs for the
/// driving loop.
///
/// Methods fall into three groups (after quinn-proto's `Connection`):
/// - [`Lane::handle`] takes what happened;
/// - [`Lane::poll`] and [`Lane::poll_timeout`] say what to do and when to
///   call again; call `poll` until it returns `None` after every `handle`;
/// - getters ([`Lane::status`], [`Lane::counters`], ...) read state.
#[derive(Debug)]
pub struct Lane {
    cfg: Config,
    out: VecDeque<Output>,
    counters: Counters,
    rng: SplitMix64,
    /// Last status reported, to report changes only.
    status: Status,
    conn: Conn,
    ids: IdSource,
    /// Which broker address the next attempt goes to.
    rounds: Rounds,
    /// Poison scans asked for so far (their ids).
    ids_scan: u64,
    /// Spool writes issued (the last one's position) and committed.
    issued: u64,
    committed: u64,
    /// The spool reported a stall (why) and has not committed since.
    spool_stalled: Option<String>,
    /// Disk space: what the spool may still use, and whether intake waits.
    space: space::Space,
    /// The last spool-full state reported as an event.
    spool_full_reported: Option<String>,
    /// Shutting down, until this deadline.
    shutdown: Option<Instant>,
    /// `Event::ShutdownIncomplete` was emitted.
    shutdown_reported: bool,
    inbox: Inbox,
    /// Tasks of the spool at start not yet polled as recovered handoffs:
    /// they come out before any other output, one by one, so a big spool
    /// costs no output queue of its size.
    recovered: VecDeque<TaskMeta>,
    intake: Intake,
    outbox: Outbox,
    reports: Reports,
    /// Latest time seen, so getters can answer without a clock.
    now: Instant,
}

impl Lane {
    /// A lane that starts from what the spool holds. The inbox's tasks are
    /// handed off again and the outbox's results published again once
    /// connected. The first command is `Amqp::Connect`.
    pub fn new(now: Instant, cfg: Config, snapshot: SpoolSnapshot) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut rng = SplitMix64::new(cfg.seed);
        let rounds = Rounds::new(cfg.addresses, cfg.failover, &mut rng);
        let mut lane = Self {
            rng,
            rounds,
            ids_scan: 0,
            out: VecDeque::new(),
            counters: Counters::default(),
            status: Status::Connecting,
            conn: Conn::Down { retry_at: now, since: now, reason: String::new(), scan: None },
            ids: IdSource::default(),
            issued: 0,
            committed: 0,
            spool_stalled: None,
            space: space::Space::default(),
            spool_full_reported: None,
            shutdown: None,
            shutdown_reported: false,
            inbox: Inbox::new(&cfg, &snapshot),
            recovered: VecDeque::new(),
            intake: Intake::default(),
            outbox: Outbox::new(&cfg, &snapshot),
            reports: Reports::default(),
            now,
            cfg,
        };
        lane.counters.handed_off += snapshot.inbox.len() as u64;
        lane.recovered = VecDeque::from(snapshot.inbox);
        lane.connect(now);
        lane.out.push_back(Output::Event(Event::Status(Status::Connecting)));
        Ok(lane)
    }

    /// Feeds one input, then processes every expired deadline, so any input
    /// (also [`Input::Timeout`]) moves timers along. The input comes first:
    /// what it says (a lost connection, say) holds for what the deadlines
    /// then do.
    ///
    /// Returns `Err` only for misuse of the API, judged before anything
    /// else: the lane is then unchanged, also when deadlines were due.
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), UsageError> {
        self.check_usage(&input)?;
        if now > self.now {
            self.now = now;
        }
        let now = self.now;
        match input {
            Input::Connected { conn } => self.on_connected(now, conn),
            Input::ConnectFailed { conn, reason } => self.on_connect_failed(now, conn, reason),
            Input::ConnectionLost { conn, reason } => self.on_connection_lost(now, conn, reason),
            Input::Blocked { conn, reason } => self.on_blocked(now, conn, reason),
            Input::Unblocked { conn } => self.on_unblocked(now, conn),
            Input::ChannelOpened { channel } => self.on_channel_opened(channel),
            Input::ChannelClosed { channel, code, text } => self.on_channel_closed(now, channel, code, text),
            Input::QosOk { channel } => self.on_qos_ok(channel),
            Input::ConsumeOk { channel } => self.on_consume_ok(channel),
            Input::ConsumerCount { channel, consumers } => self.on_consumer_count(now, channel, consumers),
            Input::ConsumerCancelled { channel } => self.on_consumer_cancelled(now, channel),
            Input::QuarantineDone { scan, quarantined, scanned, error } => {
                self.on_poison_scan_done(now, scan, quarantined, scanned, error)
            }
            Input::ConfirmSelectOk { channel } => self.on_confirm_select_ok(now, channel),
            Input::Delivery { channel, tag, redelivered, message } => {
                self.on_delivery(now, channel, tag, redelivered, message)
            }
            Input::PublishAck { channel, tag, multiple } => self.on_publish_ack(now, channel, tag, multiple),
            Input::PublishNack { channel, tag, multiple } => self.on_publish_nack(now, channel, tag, multiple),
            Input::Returned { channel, message_id, code, text } => self.on_returned(channel, message_id, code, text),
            Input::SpoolCommitted { upto } => self.on_spool_committed(now, upto),
            Input::SpoolStalled { reason } => {
                self.spool_stalled = Some(format!("spool cannot commit: {reason}"));
                self.refresh_spool_full();
            }
            Input::SpoolSpace { available_bytes } => self.on_spool_space(available_bytes),
            Input::SpoolRefused { seq, reason } => {
                self.counters.spool_refused += 1;
                self.emit(Event::SpoolRefused { seq, reason });
            }
            Input::Complete { task, status, body } => self.on_complete(task, status, body),
            Input::Timeout => {}
            Input::Shutdown => self.on_shutdown(now),
        }
        self.on_timers(now);
        self.settle_shutdown(now);
        let changed = self.refresh_status();
        self.report_if_due(now, changed);
        Ok(())
    }

    /// Whether `input` is a misuse of the API, judged on the lane as it is
    /// (before any deadline runs), so that an `Err` changes nothing.
    fn check_usage(&self, input: &Input) -> Result<(), UsageError> {
        match input {
            Input::Connected { conn } if !self.issued_conn(*conn) => {
                Err(UsageError::Unexpected { input: "Connected", why: "no Connect was issued with this id" })
            }
            Input::SpoolCommitted { upto } if upto.0 > self.issued => {
                Err(UsageError::CommitBeyondIssued { reported: upto.0, issued: self.issued })
            }
            Input::SpoolRefused { seq, .. } if seq.0 > self.issued || seq.0 == 0 => Err(UsageError::Unexpected {
                input: "SpoolRefused",
                why: "no spool write was issued with this position",
            }),
            Input::Complete { task, .. } => self.check_complete(task),
            _ => Ok(()),
        }
    }

    /// The next thing to do, or `None` when there is nothing until the next
    /// input or [`Lane::poll_timeout`].
    #[must_use]
    pub fn poll(&mut self) -> Option<Output> {
        if let Some(task) = self.recovered.pop_front() {
            if self.recovered.is_empty() {
                self.recovered = VecDeque::new(); // its buffer is the snapshot's size
            }
            return Some(Output::Handoff(Handoff { task, recovered: true }));
        }
        self.out.pop_front()
    }

    /// When to call `handle(now, Input::Timeout)` at the latest, if ever.
    /// A call at any time is harmless.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.session_deadline(), self.outbox_deadline(), self.shutdown_deadline(), self.report_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The current status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Counters over the lane's life.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The broker address (index into the shell's list) of the current
    /// connection or attempt, if any was made.
    pub fn address(&self) -> Option<usize> {
        self.rounds.current()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Tasks in the inbox (received and not completed), committed or not.
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// Results in the outbox (not yet confirmed).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The last spool write issued.
    pub fn last_write(&self) -> WriteSeq {
        WriteSeq(self.issued)
    }

    /// The last spool write reported committed.
    pub fn committed(&self) -> WriteSeq {
        WriteSeq(self.committed)
    }

    fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    fn write(&mut self, op: SpoolOp) -> WriteSeq {
        self.issued += 1;
        let seq = WriteSeq(self.issued);
        self.out.push_back(Output::Spool(SpoolWrite { seq, op }));
        seq
    }

    fn on_spool_committed(&mut self, now: Instant, upto: WriteSeq) {
        if upto.0 <= self.committed {
            return;
        }
        self.committed = upto.0;
        if self.spool_stalled.take().is_some() {
            self.refresh_spool_full();
        }
        self.counters.spooled += self.inbox.committed(upto);
        self.outbox.committed(upto);
        self.advance_acks();
        self.pump(now);
    }

    /// Reports a change of status; whether there was one.
    fn refresh_status(&mut self) -> bool {
        let status = self.derive_status();
        let changed = status != self.status;
        if changed {
            self.status = status.clone();
            self.emit(Event::Status(status));
        }
        changed
    }
}
