//! [`Rig`]: a lane, its [`Auditor`], a clock, and a broker that answers the
//! lane's commands when asked to, for targets and tests that want a
//! consuming lane in a few lines.

use std::time::{Duration, Instant};

use tasklane_core::audit::{self, Auditor, Before};
use tasklane_core::{Amqp, ChannelId, Config, Input, Lane, Output, SpoolSnapshot, UsageError, WriteSeq};

/// A lane, its auditor, a clock, and the commands still waiting for an
/// answer.
#[derive(Debug)]
pub struct Rig {
    /// The lane under audit.
    pub lane: Lane,
    /// Its auditor.
    pub auditor: Auditor,
    /// The configuration the lane was built with.
    pub cfg: Config,
    /// The time fed with every input.
    pub now: Instant,
    /// Commands that have an answer and have not had it.
    pub pending: Vec<Amqp>,
    /// Every output so far, in order.
    pub log: Vec<Output>,
    /// Print every input and its outputs to stderr (set by the environment
    /// variable `TASKLANE_FUZZ_TRACE`), to read a crash's history.
    pub trace: bool,
}

impl Rig {
    /// A lane started from `snapshot`, audited from its first output.
    pub fn new(cfg: Config, snapshot: SpoolSnapshot) -> Self {
        Self::at(Instant::now(), cfg, snapshot)
    }

    /// [`Rig::new`] with the clock at `now`.
    pub fn at(now: Instant, cfg: Config, snapshot: SpoolSnapshot) -> Self {
        let mut lane = Lane::new(now, cfg.clone(), snapshot.clone()).expect("a valid configuration");
        let mut auditor = Auditor::new(&cfg, &snapshot);
        let outputs = audit::drain(&mut lane);
        auditor.begin(&lane, &outputs).unwrap_or_else(|v| panic!("{v}"));
        let trace = std::env::var_os("TASKLANE_FUZZ_TRACE").is_some();
        if trace {
            eprintln!("lane at {now:?}: {cfg:?}\n  from {snapshot:?}\n  -> {outputs:?}");
        }
        let mut rig = Self { lane, auditor, cfg, now, pending: Vec::new(), log: Vec::new(), trace };
        rig.record(outputs);
        rig
    }

    /// Feeds `input` now; returns the outputs.
    pub fn feed(&mut self, input: Input) -> Result<Vec<Output>, UsageError> {
        if self.trace {
            eprintln!("{:?} {input:?}", self.now);
        }
        let before = Before::of(&self.lane);
        let result = self.lane.handle(self.now, input.clone());
        let outputs = audit::drain(&mut self.lane);
        if self.trace {
            eprintln!("  -> {result:?} {outputs:?}");
        }
        if let Err(v) = self.auditor.step(&before, self.now, &input, &result, &outputs, &self.lane) {
            panic!("{v}");
        }
        result?;
        self.record(outputs.clone());
        Ok(outputs)
    }

    /// Moves the clock and fires every deadline that is due, until none is
    /// (bounded: a lane that keeps asking for a past deadline spins).
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        for _ in 0..64 {
            match self.lane.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.feed(Input::Timeout).expect("a timeout is never misuse");
                }
                _ => return,
            }
        }
        panic!("the lane keeps asking for a deadline in the past: {:?}", self.lane.poll_timeout());
    }

    fn record(&mut self, outputs: Vec<Output>) {
        for out in &outputs {
            if let Output::Amqp(cmd) = out {
                if answer(cmd).is_some() {
                    self.pending.push(cmd.clone());
                }
            }
        }
        let a = &self.auditor;
        self.pending.retain(|cmd| match cmd {
            Amqp::Connect { conn, .. } => a.conn_live(*conn),
            Amqp::OpenChannel { channel } => a.channel_conn_live(*channel),
            Amqp::Qos { channel, .. }
            | Amqp::Consume { channel, .. }
            | Amqp::QueryConsumers { channel, .. }
            | Amqp::ConfirmSelect { channel } => a.channel_live(*channel),
            // A poison scan is answered whenever; a late answer is stale.
            Amqp::Quarantine { .. } => true,
            _ => false,
        });
        self.log.extend(outputs);
    }

    /// Answers pending command `i` (modulo their number) as a healthy
    /// broker would; false when none is pending.
    pub fn answer(&mut self, i: usize) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let cmd = self.pending.remove(i % self.pending.len());
        let mut input = answer(&cmd).expect("only answerable commands are pending");
        if let Input::ConsumerCount { channel, consumers } = &mut input {
            // Alone on the queue: none before our consume, ours after it.
            *consumers = u32::from(self.auditor.live_consume_channels().contains(channel));
        }
        self.feed(input).expect("answers to issued commands are not misuse");
        true
    }

    /// Answers every command, also those the answers cause, until the
    /// session is set up.
    pub fn answer_all(&mut self) {
        for _ in 0..64 {
            if !self.answer(0) {
                return;
            }
        }
        panic!("the session set-up does not end");
    }

    /// The consuming channel (the latest live one).
    pub fn consume_channel(&self) -> Option<ChannelId> {
        self.auditor.live_consume_channels().last().copied()
    }

    /// The publishing channel (the latest live one).
    pub fn publish_channel(&self) -> Option<ChannelId> {
        self.auditor.live_publish_channels().last().copied()
    }

    /// Commits every write issued so far, as one group.
    pub fn commit_all(&mut self) -> Result<Vec<Output>, UsageError> {
        let (issued, committed) = self.auditor.writes();
        if issued == committed {
            return Ok(Vec::new());
        }
        self.feed(Input::SpoolCommitted { upto: WriteSeq(issued) })
    }
}

/// A healthy broker's answer to `cmd`, if it has one.
pub fn answer(cmd: &Amqp) -> Option<Input> {
    Some(match cmd {
        Amqp::Connect { conn, .. } => Input::Connected { conn: *conn },
        Amqp::OpenChannel { channel } => Input::ChannelOpened { channel: *channel },
        Amqp::Qos { channel, .. } => Input::QosOk { channel: *channel },
        Amqp::Consume { channel, .. } => Input::ConsumeOk { channel: *channel },
        // `Rig::answer` corrects the count to 0 before the consume.
        Amqp::QueryConsumers { channel, .. } => Input::ConsumerCount { channel: *channel, consumers: 1 },
        Amqp::ConfirmSelect { channel } => Input::ConfirmSelectOk { channel: *channel },
        // A healthy queue holds nothing undecodable.
        Amqp::Quarantine { scan, max, .. } => {
            Input::QuarantineDone { scan: *scan, quarantined: Vec::new(), scanned: *max, error: None }
        }
        _ => return None,
    })
}
