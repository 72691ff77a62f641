//! One simulation run: build the world for a seed, run the fault phase and
//! the heal phase, check the oracles after every step, and report.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use tasklane_core::{BackoffConfig, Config, ConsumeMode, EndpointId};

use crate::broker::{Broker, BrokerConfig, QueueKind, QueueSpec, Topology, DEAD, PORT};
use crate::clock::Clock;
use crate::endpoint::{EndpointKnobs, Record, SimEndpoint};
use crate::faults::{FaultCounts, FaultDriver};
use crate::oracle::{pending, Oracle, View, Violation};
use crate::rng::Rng;
use crate::sabotage::Sabotage;
use crate::service::{self, Service, Shape};
use crate::swarm::{Claim, Swarm, CONFIRM_STALL, DISK_BYTES, DISK_FLOOR, DISK_RESERVE, FAULT_PHASE};
use crate::trace::TraceHash;
use crate::wire::session::Dial;
use crate::worker::{self, Worker};
use crate::workload::Workload;
use crate::{BROKER_HOST, SERVICE_HOST};

/// The endpoint id every simulated endpoint shares.
pub const ENDPOINT: &str = "E";

/// What to run.
#[derive(Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub sabotage: Option<Sabotage>,
    /// Most simulated time the heal phase may take to converge.
    pub heal_limit: Duration,
    /// The application in every endpoint ([`worker::echo`] by default).
    pub worker: Worker,
    /// What the service submits and expects back.
    pub workload: Workload,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("seed", &self.seed)
            .field("sabotage", &self.sabotage)
            .field("heal_limit", &self.heal_limit)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    pub fn seed(seed: u64) -> Self {
        RunOptions {
            seed,
            sabotage: None,
            heal_limit: Duration::from_secs(60),
            worker: worker::echo(),
            workload: Workload::default(),
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// A safety invariant broke at this simulated time.
    Safety {
        violation: Violation,
        at: Duration,
    },
    /// The heal phase did not converge in time.
    Liveness {
        pending: String,
    },
    /// Everything converged, but a result the service accepted is not what
    /// the workload expects of the worker.
    Expectation {
        task: String,
        problem: String,
    },
    /// A host's software failed (an error or a panic).
    Error(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Pass
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => write!(f, "pass"),
            Outcome::Safety { violation, at } => {
                write!(f, "SAFETY {} at {:.3}s: {}", violation.invariant, at.as_secs_f64(), violation.detail)
            }
            Outcome::Liveness { pending } => write!(f, "LIVENESS not converged: {pending}"),
            Outcome::Expectation { task, problem } => write!(f, "EXPECTATION result of {task}: {problem}"),
            Outcome::Error(e) => write!(f, "ERROR {e}"),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub sabotage: Option<Sabotage>,
    pub heal_limit: Duration,
    pub swarm: Swarm,
    pub faults: FaultCounts,
    pub tasks: usize,
    pub accepted: usize,
    pub sim_time: Duration,
    pub outcome: Outcome,
    /// Hash of the run's whole history: equal for equal seeds.
    pub trace_hash: u64,
    /// The faults as injected, in order.
    pub fault_log: Vec<String>,
    /// What the endpoints went through, each once: their statuses, why
    /// intake waited for the spool (`spool full: ...`) and why they dropped
    /// a connection (`dropped: ...`), first 60 chars.
    pub seen: std::collections::BTreeSet<String>,
}

impl Report {
    /// The one-line command that replays this run with the simulation's
    /// own worker, every option included.
    pub fn reproduce(&self) -> String {
        let heal = format!("--heal-limit {}", self.heal_limit.as_secs());
        match self.sabotage {
            None => format!("cargo run -p tasklane-sim --release -- --seeds {} {heal}", self.seed),
            Some(s) => format!(
                "cargo run -p tasklane-sim --release --features sabotage -- --seeds {} {heal} --sabotage {s}",
                self.seed
            ),
        }
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        format!(
            "seed={} faults={} [p{} k{} h{} c{} b{} x{} d{} s{} f{} a{}] tasks={} results={} t={:.1}s trace={:016x} {}",
            self.seed,
            self.faults.total(),
            self.faults.partitions,
            self.faults.kills,
            self.faults.holds,
            self.faults.crashes,
            self.faults.broker_restarts,
            self.faults.cancels,
            self.faults.duplicates,
            self.faults.spool_stalls,
            self.faults.disk_fulls,
            self.faults.alarms,
            self.tasks,
            self.accepted,
            self.sim_time.as_secs_f64(),
            self.trace_hash,
            self.outcome
        )
    }
}

/// The knobs of a run: the seed's swarm, adjusted so that a sabotage can
/// show (a duplicate endpoint is what exclusivity guards against).
pub fn swarm_for(seed: u64, sabotage: Option<Sabotage>) -> Swarm {
    let mut swarm = Swarm::draw(seed);
    if sabotage == Some(Sabotage::NeverExclusive) {
        swarm.claim = Claim::Exclusive;
        swarm.duplicate_at.get_or_insert(Duration::from_secs(2));
    }
    swarm
}

fn topology(claim: Claim) -> Topology {
    let (kind, sac) = match claim {
        Claim::SingleActive(kind) => (kind, true),
        Claim::Exclusive => (QueueKind::Classic, false),
    };
    let mut t = Topology::tasklane(&[], kind);
    t.add_queue(QueueSpec {
        kind,
        single_active_consumer: sac,
        dead_letter_exchange: Some(DEAD.into()),
        ..QueueSpec::new(format!("{ENDPOINT}.tasks"))
    });
    t
}

fn endpoint_config(seed: u64, index: u64, swarm: &Swarm, sabotage: Option<Sabotage>) -> Result<Config, String> {
    let mut cfg = Config::new(EndpointId::new(ENDPOINT).expect("valid id"));
    cfg.prefetch = swarm.prefetch;
    cfg.consume_mode = match swarm.claim {
        Claim::SingleActive(_) => ConsumeMode::SingleActive,
        Claim::Exclusive => ConsumeMode::Exclusive,
    };
    cfg.reconnect = BackoffConfig { initial: Duration::from_millis(100), max: Duration::from_secs(3) };
    cfg.republish = BackoffConfig { initial: Duration::from_millis(200), max: Duration::from_secs(3) };
    cfg.standby_retry = Duration::from_secs(1);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg.seed = Rng::new(seed).fork(0xE0 + index).next_u64();
    if swarm.alarm_rate > 0.0 {
        cfg.confirm_stall = CONFIRM_STALL;
        cfg.blocked_timeout = swarm.blocked_timeout;
    }
    if swarm.disk_full_rate > 0.0 {
        cfg.min_free_bytes = DISK_FLOOR;
        cfg.result_reserve_bytes = DISK_RESERVE;
    }
    if let Some(s) = sabotage {
        s.apply(&mut cfg)?;
    }
    Ok(cfg)
}

/// Runs one seed.
pub fn run(opts: &RunOptions) -> Report {
    let seed = opts.seed;
    let mut swarm = swarm_for(seed, opts.sabotage);
    if let Some(tasks) = opts.workload.tasks {
        swarm.tasks = tasks;
    }
    let clock = Clock::new();
    let broker =
        Broker::new(BrokerConfig { heartbeat_ms: swarm.heartbeat_ms, ..BrokerConfig::new(topology(swarm.claim)) });
    let knobs = EndpointKnobs {
        brokers: vec![(BROKER_HOST.into(), PORT)],
        heartbeat_ms: swarm.heartbeat_ms,
        fsync_max: swarm.fsync_max,
        work_max: swarm.work_max,
    };
    let mut endpoints = Vec::new();
    for (i, host) in ["endpoint-1", "endpoint-2"].into_iter().enumerate() {
        match endpoint_config(seed, i as u64, &swarm, opts.sabotage) {
            Ok(cfg) => endpoints.push(SimEndpoint::new(host, cfg, knobs.clone(), opts.worker.clone())),
            Err(e) => return failed_to_start(opts, swarm, e),
        }
    }
    let mut plan_rng = Rng::new(seed).fork(0x91A4);
    let mut times: Vec<(Duration, Shape)> = (0..swarm.tasks + swarm.malformed + swarm.poison)
        .map(|i| {
            let at = plan_rng.range(0, FAULT_PHASE.as_millis() as u64 - 1000);
            let shape = match i {
                i if i < swarm.tasks => Shape::Good,
                i if i < swarm.tasks + swarm.malformed => Shape::Malformed,
                _ => Shape::Poison,
            };
            (Duration::from_millis(at), shape)
        })
        .collect();
    times.sort();
    let id = EndpointId::new(ENDPOINT).expect("valid id");
    let service = Service::new(
        service::plan(&id, times, &opts.workload.make, &mut Rng::new(seed).fork(0x7A5C)),
        Dial {
            host: BROKER_HOST.into(),
            port: PORT,
            name: SERVICE_HOST.into(),
            heartbeat_ms: swarm.heartbeat_ms,
            timeout: Duration::from_secs(2),
        },
        clock,
    );

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .max_message_latency(swarm.max_latency)
        .tcp_capacity(1024)
        .build();
    sim.host(BROKER_HOST, broker.host());
    sim.host(SERVICE_HOST, service.host());
    sim.host(endpoints[0].name(), endpoints[0].host());
    let mut present = 1;

    let task_queue = format!("{ENDPOINT}.tasks");
    let mut oracle = Oracle::new();
    let disks = endpoints.iter().map(|e| (e.name().to_owned(), e.spool().clone())).collect();
    if swarm.disk_full_rate > 0.0 {
        for e in &endpoints {
            e.spool().limit_disk(DISK_BYTES);
        }
    }
    let mut faults = FaultDriver::new(seed, &swarm, &broker, disks);
    let limit = FAULT_PHASE + opts.heal_limit;
    let mut healed = false;
    let outcome = loop {
        let now = sim.elapsed();
        if !healed && now >= FAULT_PHASE {
            faults.heal(&mut sim, now);
            healed = true;
        }
        if present == 1 && swarm.duplicate_at.is_some_and(|at| now >= at) && !healed {
            sim.host(endpoints[1].name(), endpoints[1].host());
            faults.duplicate_appeared(now, endpoints[1].name());
            present = 2;
        }
        if !healed {
            let eps: Vec<String> = endpoints[..present].iter().map(|e| e.name().to_owned()).collect();
            let mut clients = eps.clone();
            clients.push(SERVICE_HOST.into());
            faults.tick(&mut sim, &broker, now, &eps, &clients);
        }
        if let Err(e) = sim.step() {
            break Outcome::Error(e.to_string());
        }
        let view =
            View { broker: &broker, endpoints: &endpoints[..present], service: &service, task_queue: &task_queue };
        if let Err(violation) = oracle.check(&view) {
            break Outcome::Safety { violation, at: sim.elapsed() };
        }
        if healed {
            match pending(&view) {
                None => break expectations(&service, &opts.workload),
                Some(pending) if sim.elapsed() >= limit => break Outcome::Liveness { pending },
                Some(_) => {}
            }
        }
    };

    let mut seen = std::collections::BTreeSet::new();
    for ep in &endpoints {
        for r in ep.records_since(0) {
            let text = match r {
                Record::Status { status, .. } => status,
                Record::SpoolFull { reason: Some(reason), .. } => format!("spool full: {reason}"),
                _ => continue,
            };
            seen.insert(text.chars().take(60).collect());
        }
        for note in ep.notes() {
            seen.insert(note.chars().take(60).collect());
        }
    }
    let mut trace = TraceHash::new();
    trace.add(&swarm.to_string());
    for line in &faults.log {
        trace.add(line);
    }
    for ev in broker.events() {
        trace.add(&format!("{ev:?}"));
    }
    for ep in &endpoints {
        for r in ep.records_since(0) {
            trace.add(&format!("{} {r:?}", ep.name()));
        }
    }
    for r in service.records_since(0) {
        trace.add(&format!("service {r:?}"));
    }
    trace.add(&outcome.to_string());
    Report {
        seed,
        sabotage: opts.sabotage,
        heal_limit: opts.heal_limit,
        swarm,
        faults: faults.counts,
        tasks: service.planned(),
        accepted: service.accepted(),
        sim_time: sim.elapsed(),
        outcome,
        trace_hash: trace.finish(),
        fault_log: faults.log,
        seen,
    }
}

/// Every accepted result judged by the workload's expectation.
fn expectations(service: &Service, workload: &Workload) -> Outcome {
    for task in service.tasks() {
        let Some((status, body)) = service.result(&task.id) else { continue };
        if let Err(problem) = (workload.expect)(&task, status, &body) {
            return Outcome::Expectation { task: task.id.to_string(), problem };
        }
    }
    Outcome::Pass
}

fn failed_to_start(opts: &RunOptions, swarm: Swarm, e: String) -> Report {
    Report {
        seed: opts.seed,
        sabotage: opts.sabotage,
        heal_limit: opts.heal_limit,
        swarm,
        faults: FaultCounts::default(),
        tasks: 0,
        accepted: 0,
        sim_time: Duration::ZERO,
        outcome: Outcome::Error(e),
        trace_hash: 0,
        fault_log: Vec::new(),
        seen: Default::default(),
    }
}
