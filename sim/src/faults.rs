//! Draws faults from the seed during the fault phase and undoes them: every
//! fault schedules its own repair, and [`FaultDriver::heal`] runs all
//! pending repairs at once when the heal phase begins.
//!
//! Connection loss is modelled as turmoil advises: a partition (segments
//! dropped; turmoil has no retransmission, so the stream stalls and the
//! heartbeats end it), a hold (segments delayed, then delivered), and host
//! crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use turmoil::Sim;

use crate::broker::Broker;
use crate::rng::Rng;
use crate::spool::DurableSpool;
use crate::swarm::{Swarm, DISK_FLOOR};

/// How often the driver draws (simulated time).
const DRAW_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Undo {
    Repair(String),
    Release(String),
    Bounce(String),
    /// The spool of endpoint `i` commits again.
    Unstall(usize),
    /// The ballast on endpoint `i`'s disk goes.
    FreeDisk(usize),
    AlarmOff,
}

/// How many faults of each class were injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub partitions: u32,
    pub kills: u32,
    pub holds: u32,
    pub crashes: u32,
    pub broker_restarts: u32,
    pub cancels: u32,
    pub duplicates: u32,
    pub spool_stalls: u32,
    pub disk_fulls: u32,
    pub alarms: u32,
}

impl FaultCounts {
    pub fn total(&self) -> u32 {
        self.by_class().iter().map(|(_, n)| n).sum()
    }

    /// Per fault class, by the names of [`Swarm::faults`](crate::swarm::Swarm::faults).
    pub fn by_class(&self) -> [(&'static str, u32); 10] {
        [
            ("partition", self.partitions),
            ("kill", self.kills),
            ("hold", self.holds),
            ("crash", self.crashes),
            ("broker-restart", self.broker_restarts),
            ("cancel", self.cancels),
            ("duplicate", self.duplicates),
            ("spool-stall", self.spool_stalls),
            ("disk-full", self.disk_fulls),
            ("alarm", self.alarms),
        ]
    }
}

pub struct FaultDriver {
    rng: Rng,
    swarm: Swarm,
    next_draw: Duration,
    undo: BTreeMap<(Duration, u64), Undo>,
    undo_seq: u64,
    /// Hosts whose link to the broker is partitioned or held.
    busy_links: BTreeSet<String>,
    /// Hosts crashed and not yet restarted.
    down: BTreeSet<String>,
    /// Each endpoint's host and spool, for the spool and disk faults.
    disks: Vec<(String, DurableSpool)>,
    /// Endpoints whose spool is stalled, or whose disk is filled.
    stalled: BTreeSet<usize>,
    filled: BTreeSet<usize>,
    /// The broker, for the alarm and its undo.
    broker: Broker,
    alarm: bool,
    pub counts: FaultCounts,
    /// What was done, in order, for the trace.
    pub log: Vec<String>,
}

impl FaultDriver {
    /// `disks`: each endpoint's host name and spool.
    pub fn new(seed: u64, swarm: &Swarm, broker: &Broker, disks: Vec<(String, DurableSpool)>) -> Self {
        FaultDriver {
            rng: Rng::new(seed).fork(0xFA17),
            swarm: swarm.clone(),
            next_draw: DRAW_EVERY,
            undo: BTreeMap::new(),
            undo_seq: 0,
            busy_links: BTreeSet::new(),
            down: BTreeSet::new(),
            disks,
            stalled: BTreeSet::new(),
            filled: BTreeSet::new(),
            broker: broker.clone(),
            alarm: false,
            counts: FaultCounts::default(),
            log: Vec::new(),
        }
    }

    /// Runs due repairs and, every [`DRAW_EVERY`], draws new faults.
    /// `endpoints` are the endpoint hosts registered so far; `clients` are
    /// every host with a link to the broker.
    pub fn tick(&mut self, sim: &mut Sim, broker: &Broker, now: Duration, endpoints: &[String], clients: &[String]) {
        self.run_undo(sim, Some(now));
        if now < self.next_draw {
            return;
        }
        self.next_draw = now + DRAW_EVERY;
        let dt = DRAW_EVERY.as_secs_f64();
        let b = crate::BROKER_HOST;
        if self.rng.chance(self.swarm.partition_rate * dt) {
            if let Some(h) = self.pick_free_link(clients) {
                sim.partition(h.as_str(), b);
                self.counts.partitions += 1;
                let d = self.rng.range(200, 3000);
                self.later(now, d, Undo::Repair(h.clone()), format!("partition {h} for {d}ms"));
                self.busy_links.insert(h);
            }
        }
        if self.rng.chance(self.swarm.kill_rate * dt) && !clients.is_empty() {
            let h = &clients[self.rng.range(0, clients.len() as u64 - 1) as usize];
            let owner = |client: &str| client == h || client.starts_with(&format!("{h}/"));
            let n = broker.force_close(owner, "closed by the fault schedule");
            self.counts.kills += 1;
            self.log.push(format!("{:>6}ms kill {h}'s connections ({n})", now.as_millis()));
        }
        if self.rng.chance(self.swarm.hold_rate * dt) {
            if let Some(h) = self.pick_free_link(clients) {
                sim.hold(h.as_str(), b);
                self.counts.holds += 1;
                let d = self.rng.range(100, 2000);
                self.later(now, d, Undo::Release(h.clone()), format!("hold {h} for {d}ms"));
                self.busy_links.insert(h);
            }
        }
        if self.rng.chance(self.swarm.crash_rate * dt) {
            let up: Vec<&String> = endpoints.iter().filter(|h| !self.down.contains(*h)).collect();
            if !up.is_empty() {
                let h = up[self.rng.range(0, up.len() as u64 - 1) as usize].clone();
                sim.crash(h.as_str());
                self.counts.crashes += 1;
                let d = self.rng.range(100, 3000);
                self.later(now, d, Undo::Bounce(h.clone()), format!("crash {h} for {d}ms"));
                self.down.insert(h);
            }
        }
        if self.rng.chance(self.swarm.cancel_rate * dt) && !self.down.contains(b) {
            let queue = format!("{}.tasks", crate::run::ENDPOINT);
            let n = broker.cancel_consumers(&queue);
            self.counts.cancels += 1;
            self.log.push(format!("{:>6}ms cancel the consumers of {queue} ({n})", now.as_millis()));
        }
        if self.rng.chance(self.swarm.broker_restart_rate * dt) && !self.down.contains(b) {
            sim.crash(b);
            self.counts.broker_restarts += 1;
            let d = self.rng.range(100, 2000);
            self.later(now, d, Undo::Bounce(b.into()), format!("restart {b} after {d}ms"));
            self.down.insert(b.into());
        }
        // The classes added last draw only when switched on, so that the
        // faults of a seed without them stay what they were.
        if self.swarm.spool_stall_rate > 0.0 && self.rng.chance(self.swarm.spool_stall_rate * dt) {
            if let Some(i) = self.pick_disk(endpoints, true) {
                let (h, spool) = &self.disks[i];
                spool.stall("Input/output error (os error 5)");
                let h = h.clone();
                self.counts.spool_stalls += 1;
                let d = self.rng.range(100, 3000);
                self.later(now, d, Undo::Unstall(i), format!("stall {h}'s spool for {d}ms"));
                self.stalled.insert(i);
            }
        }
        if self.swarm.disk_full_rate > 0.0 && self.rng.chance(self.swarm.disk_full_rate * dt) {
            if let Some(i) = self.pick_disk(endpoints, false) {
                // Down to below the floor; now and then to less than a
                // write needs.
                let leave =
                    if self.rng.chance(0.3) { self.rng.range(0, 200) } else { self.rng.range(0, DISK_FLOOR * 2) };
                let (h, spool) = &self.disks[i];
                let ballast = spool.fill_disk(leave);
                let h = h.clone();
                self.counts.disk_fulls += 1;
                let d = self.rng.range(100, 3000);
                self.later(
                    now,
                    d,
                    Undo::FreeDisk(i),
                    format!("fill {h}'s disk ({ballast} bytes, {leave} left) for {d}ms"),
                );
                self.filled.insert(i);
            }
        }
        if self.swarm.alarm_rate > 0.0 && self.rng.chance(self.swarm.alarm_rate * dt) && !self.alarm {
            self.broker.set_alarm(true);
            self.alarm = true;
            self.counts.alarms += 1;
            // Some outlast the endpoint's blocked timeout (2-6 s).
            let d = self.rng.range(500, 8000);
            self.later(now, d, Undo::AlarmOff, format!("alarm on {b} for {d}ms"));
        }
    }

    /// An endpoint (of those registered so far) whose spool is not already
    /// stalled (`stall`) or whose disk is not already filled.
    fn pick_disk(&mut self, endpoints: &[String], stall: bool) -> Option<usize> {
        let busy = if stall { &self.stalled } else { &self.filled };
        let free: Vec<usize> =
            (0..self.disks.len()).filter(|i| !busy.contains(i) && endpoints.contains(&self.disks[*i].0)).collect();
        if free.is_empty() {
            return None;
        }
        Some(free[self.rng.range(0, free.len() as u64 - 1) as usize])
    }

    /// Notes that a duplicate endpoint appeared.
    pub fn duplicate_appeared(&mut self, now: Duration, host: &str) {
        self.counts.duplicates += 1;
        self.log.push(format!("{:>6}ms duplicate {host} appears", now.as_millis()));
    }

    /// The heal phase begins: repair every link, restart every crashed
    /// host, draw nothing more.
    pub fn heal(&mut self, sim: &mut Sim, now: Duration) {
        self.run_undo(sim, None);
        self.log.push(format!("{:>6}ms heal", now.as_millis()));
    }

    fn run_undo(&mut self, sim: &mut Sim, upto: Option<Duration>) {
        let b = crate::BROKER_HOST;
        while let Some(entry) = self.undo.first_entry() {
            if upto.is_some_and(|now| entry.key().0 > now) {
                break;
            }
            match entry.remove() {
                Undo::Repair(h) => {
                    sim.repair(h.as_str(), b);
                    self.busy_links.remove(&h);
                }
                Undo::Release(h) => {
                    sim.release(h.as_str(), b);
                    self.busy_links.remove(&h);
                }
                Undo::Bounce(h) => {
                    sim.bounce(h.as_str());
                    self.down.remove(&h);
                }
                Undo::Unstall(i) => {
                    self.disks[i].1.unstall();
                    self.stalled.remove(&i);
                }
                Undo::FreeDisk(i) => {
                    self.disks[i].1.free_disk();
                    self.filled.remove(&i);
                }
                Undo::AlarmOff => {
                    self.broker.set_alarm(false);
                    self.alarm = false;
                }
            }
        }
    }

    fn pick_free_link(&mut self, clients: &[String]) -> Option<String> {
        let free: Vec<&String> = clients.iter().filter(|h| !self.busy_links.contains(*h)).collect();
        if free.is_empty() {
            return None;
        }
        Some(free[self.rng.range(0, free.len() as u64 - 1) as usize].clone())
    }

    fn later(&mut self, now: Duration, ms: u64, undo: Undo, what: String) {
        self.log.push(format!("{:>6}ms {what}", now.as_millis()));
        self.undo_seq += 1;
        self.undo.insert((now + Duration::from_millis(ms), self.undo_seq), undo);
    }
}
