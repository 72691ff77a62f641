//! Configuration of a lane. Validated once, at construction.

use std::time::Duration;

use crate::error::ConfigError;
use crate::ids::EndpointId;

/// How the endpoint claims its task queue so that a duplicate endpoint with
/// the same id never drains tasks while the first one lives (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeMode {
    /// The queue has `x-single-active-consumer`; a second consumer is
    /// accepted by the broker but receives nothing until the first is gone.
    SingleActive,
    /// `basic.consume` with `exclusive=true`; a second consumer is refused
    /// and retries after [`Config::standby_retry`]. Classic queues only:
    /// RabbitMQ 3.10 does not enforce exclusivity on quorum queues.
    Exclusive,
}

/// The order in which connection attempts go through the broker addresses
/// (SPEC §2, Brokers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Failover {
    /// In the order given, starting with the first.
    InOrder,
    /// A new random order every round, drawn from [`Config::seed`], so that
    /// a fleet of endpoints spreads over a cluster's nodes.
    #[default]
    Shuffle,
}

/// Exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(30) }
    }
}

/// Everything a lane needs to know. Build with [`Config::new`] and adjust the
/// public fields; [`crate::Lane::new`] validates.
#[derive(Clone, Debug)]
pub struct Config {
    /// Whose queue this lane consumes.
    pub endpoint: EndpointId,
    /// Broker prefetch window (`basic.qos`), 1..=65535.
    pub prefetch: u16,
    /// How the task queue is claimed.
    pub consume_mode: ConsumeMode,
    /// Most tasks and results the spool holds (inbox plus outbox); beyond it
    /// nothing more is acked and the prefetch window closes by itself.
    pub max_spooled_tasks: usize,
    /// Most payload bytes the spool holds (inbox plus outbox).
    pub max_spooled_bytes: u64,
    /// Bytes of the spool's filesystem kept free: below it (with the
    /// results' reserve) intake waits for space.
    pub min_free_bytes: u64,
    /// Room kept per task the spool holds, to record its result and its
    /// dedup entry even on a full disk (set it to a typical result size).
    pub result_reserve_bytes: u64,
    /// Largest task body accepted; a larger one is rejected (dead-lettered).
    pub max_body_bytes: usize,
    /// Most headers a task may carry; more is rejected as hostile.
    pub max_headers: usize,
    /// How many completed task ids are remembered for dedup.
    pub completed_window: usize,
    /// Most results published but not yet confirmed.
    pub max_unconfirmed: usize,
    /// How many broker addresses the shell holds (a cluster's nodes); core
    /// names them by index in `Amqp::Connect`.
    pub addresses: usize,
    /// The order of attempts over the addresses.
    pub failover: Failover,
    /// Reconnect backoff, owed after a full round of failed addresses.
    pub reconnect: BackoffConfig,
    /// Backoff for a result the broker returned (unroutable) or nacked.
    pub republish: BackoffConfig,
    /// How long a refused (exclusive) consumer waits before trying again.
    pub standby_retry: Duration,
    /// How often a standby (single active consumer) asks for the queue's
    /// consumer count, to learn that it became the active one.
    pub standby_poll: Duration,
    /// Longest a shutdown waits for the spool to commit what was issued.
    pub shutdown_grace: Duration,
    /// A session lost this soon after its `basic.consume` is suspected of
    /// having met a poison message: the head of the queue is scanned
    /// before the next connection.
    pub poison_window: Duration,
    /// Longest a poison scan may take before the lane gives up on it.
    pub quarantine_timeout: Duration,
    /// How long a `connection.blocked` may last before the connection is
    /// dropped and made again; the service decides it (SPEC §2).
    pub blocked_timeout: Duration,
    /// Publishes in flight that get no confirm for this long make the
    /// status `Blocked` (a broker alarm RabbitMQ never announces to amqprs:
    /// it does not ask for `connection.blocked`); still none after
    /// `blocked_timeout` from the oldest wait, the connection is made again.
    pub confirm_stall: Duration,
    /// Most time from `Connect` to `Connected` (TCP, TLS and the AMQP
    /// handshake) before the attempt is abandoned and the next address tried.
    pub connect_timeout: Duration,
    /// Most time from `Connected` to a consuming session before the
    /// connection is given up.
    pub handshake_timeout: Duration,
    /// A session that lasted this long counts as healthy: its loss moves to
    /// the next address at once and restarts the backoff from the beginning.
    pub healthy_after: Duration,
    /// How often a status report is published (and on every status
    /// change), while the publishing channel is up; `None` sends none.
    pub report_interval: Option<Duration>,
    /// Seed of the backoff jitter; core draws no OS randomness.
    pub seed: u64,
    /// Deliberate bugs, to prove that the simulation's oracles catch them.
    #[cfg(feature = "sabotage")]
    pub sabotage: Sabotage,
}

/// Deliberate bugs (feature `sabotage`, for tests of the test oracles only).
#[cfg(feature = "sabotage")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// Ack a delivery before its spool write is committed.
    pub ack_before_commit: bool,
    /// After a reconnect, ack the old channel's tags on the new channel.
    pub ack_stale_tags: bool,
    /// Drop a result from the outbox when it is published, not confirmed.
    pub drop_result_before_confirm: bool,
    /// Never ask for an exclusive consumer, even in exclusive mode.
    pub never_exclusive: bool,
}

impl Config {
    /// Defaults for `endpoint`.
    pub fn new(endpoint: EndpointId) -> Self {
        Self {
            endpoint,
            prefetch: 1000,
            consume_mode: ConsumeMode::SingleActive,
            max_spooled_tasks: 100_000,
            max_spooled_bytes: 1 << 30,
            min_free_bytes: 16 << 20,
            result_reserve_bytes: 4 << 10,
            max_body_bytes: 16 << 20,
            max_headers: 64,
            completed_window: 100_000,
            max_unconfirmed: 1000,
            addresses: 1,
            failover: Failover::Shuffle,
            reconnect: BackoffConfig::default(),
            republish: BackoffConfig { initial: Duration::from_millis(500), max: Duration::from_secs(30) },
            standby_retry: Duration::from_secs(2),
            standby_poll: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            poison_window: Duration::from_secs(10),
            quarantine_timeout: Duration::from_secs(30),
            blocked_timeout: Duration::from_secs(60),
            confirm_stall: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            healthy_after: Duration::from_secs(5),
            report_interval: Some(Duration::from_secs(10)),
            seed: 0,
            #[cfg(feature = "sabotage")]
            sabotage: Sabotage::default(),
        }
    }

    /// Checks that every value can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, problem: &str) -> Result<(), ConfigError> {
            Err(ConfigError::OutOfRange { field, problem: problem.to_string() })
        }
        if self.prefetch == 0 {
            return bad("prefetch", "must be at least 1 (0 would mean unlimited)");
        }
        if self.max_spooled_tasks == 0 {
            return bad("max_spooled_tasks", "must be at least 1");
        }
        if self.max_spooled_bytes < self.max_body_bytes as u64 {
            return bad("max_spooled_bytes", "must be at least max_body_bytes, or a large task could never be stored");
        }
        if self.max_unconfirmed == 0 {
            return bad("max_unconfirmed", "must be at least 1");
        }
        for (field, b) in [("reconnect", self.reconnect), ("republish", self.republish)] {
            if b.initial.is_zero() || b.max < b.initial {
                return bad(field, "backoff needs 0 < initial <= max");
            }
        }
        if self.standby_retry.is_zero() {
            return bad("standby_retry", "must be above zero");
        }
        if self.standby_poll.is_zero() {
            return bad("standby_poll", "must be above zero");
        }
        if self.report_interval.is_some_and(|d| d.is_zero()) {
            return bad("report_interval", "must be above zero (None sends no reports)");
        }
        if self.addresses == 0 {
            return bad("addresses", "needs at least one broker address");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be above zero");
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", "must be above zero");
        }
        if self.blocked_timeout.is_zero() {
            return bad(
                "blocked_timeout",
                "must be above zero, or any connection.blocked drops the connection at once",
            );
        }
        if self.confirm_stall.is_zero() {
            return bad("confirm_stall", "must be above zero, or every publish counts as blocked");
        }
        Ok(())
    }
}
