//! Swarm testing (TigerBeetle's VOPR): every fault knob is drawn from the
//! seed, each fault class is switched on or off per seed, and the whole
//! draw is printed as the run's first line.

use std::fmt;
use std::time::Duration;

use crate::broker::QueueKind;
use crate::rng::Rng;

/// How the endpoint claims its task queue in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Claim {
    /// `x-single-active-consumer` on a classic or quorum queue.
    SingleActive(QueueKind),
    /// Exclusive consumers on a classic queue without single active
    /// consumer (the source design's mode).
    Exclusive,
}

/// One run's knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Swarm {
    /// Tasks the service submits during the fault phase.
    pub tasks: usize,
    /// Malformed messages among them, which must end in `tasklane.dead`.
    pub malformed: usize,
    /// Poison messages among them (undecodable for the endpoint's client:
    /// they kill its connection), which must end in `tasklane.dead`.
    pub poison: usize,
    /// Link partitions per second (mid-stream connection loss: a turmoil
    /// partition stalls a stream, heartbeats end it).
    pub partition_rate: f64,
    /// Connections the broker closes per second (an operator's
    /// `close_connection`): mid-stream loss noticed at once.
    pub kill_rate: f64,
    /// Link holds per second (messages delayed, then delivered).
    pub hold_rate: f64,
    /// Endpoint crashes per second (restarted after a while).
    pub crash_rate: f64,
    /// Broker restarts per second.
    pub broker_restart_rate: f64,
    /// Consumer cancellations per second: the broker cancels every
    /// consumer of the task queue (`basic.cancel`, as RabbitMQ does when a
    /// queue's node fails over).
    pub cancel_rate: f64,
    /// When a second endpoint with the same id appears, if it does.
    pub duplicate_at: Option<Duration>,
    /// Upper bound of the per-message latency (turmoil draws each message's
    /// latency up to it: the jitter).
    pub max_latency: Duration,
    pub claim: Claim,
    pub prefetch: u16,
    pub heartbeat_ms: u32,
    /// Upper bound of a spool group commit.
    pub fsync_max: Duration,
    /// Upper bound of the application's work per task.
    pub work_max: Duration,
    /// Spool stalls per second: for a while every commit fails (an I/O
    /// error), and the spool reports the stall once, as the LMDB writer
    /// does, and retries until it clears.
    pub spool_stall_rate: f64,
    /// Disk fills per second: the spool's filesystem runs low for a while
    /// (another process's ballast), down to below the free-space floor and
    /// sometimes to less than a write needs (commits fail: a stall).
    pub disk_full_rate: f64,
    /// Broker alarms per second: the broker stops reading from connections
    /// that publish (as RabbitMQ does under a memory or disk alarm, without
    /// `connection.blocked` to amqprs) until the alarm clears.
    pub alarm_rate: f64,
    /// The endpoint's blocked timeout in runs with alarms (the confirm
    /// stall is then [`CONFIRM_STALL`]).
    pub blocked_timeout: Duration,
}

/// The endpoint's confirm stall in runs with broker alarms.
pub const CONFIRM_STALL: Duration = Duration::from_secs(1);

/// The spool's filesystem in runs with disk fills: its size, the endpoint's
/// free-space floor and its reserve per held task.
pub const DISK_BYTES: u64 = 256 << 10;
pub const DISK_FLOOR: u64 = 16 << 10;
pub const DISK_RESERVE: u64 = 256;

/// Length of the fault phase.
pub const FAULT_PHASE: Duration = Duration::from_secs(10);

impl Swarm {
    /// The knobs of `seed`.
    pub fn draw(seed: u64) -> Self {
        let mut r = Rng::new(seed).fork(0x5A4A);
        let rate = |r: &mut Rng, max: f64| {
            if r.chance(0.5) {
                0.0
            } else {
                (r.unit() * max * 100.0).round() / 100.0
            }
        };
        let partition_rate = rate(&mut r, 0.6);
        let kill_rate = rate(&mut r, 0.5);
        let hold_rate = rate(&mut r, 0.4);
        let crash_rate = rate(&mut r, 0.3);
        let broker_restart_rate = rate(&mut r, 0.15);
        let duplicate_at =
            r.chance(0.5).then(|| Duration::from_millis(r.range(500, FAULT_PHASE.as_millis() as u64 - 2000)));
        let claim = match r.range(0, 3) {
            0 | 1 => Claim::SingleActive(QueueKind::Classic),
            2 => Claim::SingleActive(QueueKind::Quorum),
            _ => Claim::Exclusive,
        };
        let tasks = r.range(5, 60) as usize;
        let malformed = if r.chance(0.3) { r.range(1, 3) as usize } else { 0 };
        let max_latency = Duration::from_millis(r.range(1, 80));
        let prefetch = [1, 4, 16, 64][r.range(0, 3) as usize];
        let heartbeat_ms = [300, 500, 1000][r.range(0, 2) as usize];
        // Now and then a slow disk: commits that take a heartbeat or so.
        let fsync_max = Duration::from_millis(if r.chance(0.25) { r.range(50, 400) } else { r.range(1, 20) });
        let work_max = Duration::from_millis(r.range(1, 200));
        // Drawn last, so that the knobs above stay what they were for a seed.
        let cancel_rate = rate(&mut r, 0.2);
        let poison = if r.chance(0.2) { r.range(1, 2) as usize } else { 0 };
        let spool_stall_rate = rate(&mut r, 0.3);
        let disk_full_rate = rate(&mut r, 0.3);
        let alarm_rate = rate(&mut r, 0.2);
        let blocked_timeout = Duration::from_millis(r.range(1500, 4000));
        Swarm {
            tasks,
            malformed,
            poison,
            partition_rate,
            kill_rate,
            hold_rate,
            crash_rate,
            broker_restart_rate,
            cancel_rate,
            duplicate_at,
            max_latency,
            claim,
            prefetch,
            heartbeat_ms,
            fsync_max,
            work_max,
            spool_stall_rate,
            disk_full_rate,
            alarm_rate,
            blocked_timeout,
        }
    }

    /// The fault classes switched on, by name.
    pub fn faults(&self) -> Vec<&'static str> {
        let mut on = Vec::new();
        for (name, rate) in [
            ("partition", self.partition_rate),
            ("kill", self.kill_rate),
            ("hold", self.hold_rate),
            ("crash", self.crash_rate),
            ("broker-restart", self.broker_restart_rate),
            ("cancel", self.cancel_rate),
            ("spool-stall", self.spool_stall_rate),
            ("disk-full", self.disk_full_rate),
            ("alarm", self.alarm_rate),
        ] {
            if rate > 0.0 {
                on.push(name);
            }
        }
        if self.duplicate_at.is_some() {
            on.push("duplicate");
        }
        on
    }
}

impl fmt::Display for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dup = match self.duplicate_at {
            Some(at) => format!("{:.1}s", at.as_secs_f64()),
            None => "no".into(),
        };
        let claim = match self.claim {
            Claim::SingleActive(QueueKind::Classic) => "sac/classic",
            Claim::SingleActive(QueueKind::Quorum) => "sac/quorum",
            Claim::Exclusive => "exclusive/classic",
        };
        write!(
            f,
            "tasks={} malformed={} poison={} partition={}/s kill={}/s hold={}/s crash={}/s broker-restart={}/s cancel={}/s duplicate={} \
             latency<={}ms claim={} prefetch={} heartbeat={}ms fsync<={}ms work<={}ms spool-stall={}/s disk-full={}/s \
             alarm={}/s blocked-timeout={}ms",
            self.tasks,
            self.malformed,
            self.poison,
            self.partition_rate,
            self.kill_rate,
            self.hold_rate,
            self.crash_rate,
            self.broker_restart_rate,
            self.cancel_rate,
            dup,
            self.max_latency.as_millis(),
            claim,
            self.prefetch,
            self.heartbeat_ms,
            self.fsync_max.as_millis(),
            self.work_max.as_millis(),
            self.spool_stall_rate,
            self.disk_full_rate,
            self.alarm_rate,
            self.blocked_timeout.as_millis(),
        )
    }
}
