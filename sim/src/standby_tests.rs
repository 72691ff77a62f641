//! A duplicate endpoint on a quorum task queue: a quorum queue counts only
//! its active consumer, so the standby must not read its count as "alone".
//! It reports Standby while the other consumes, and takes over when the
//! active one crashes (Consuming after its first delivery).

use std::time::{Duration, UNIX_EPOCH};

use tasklane_core::{BackoffConfig, Config, ConsumeMode, EndpointId};

use crate::broker::{Broker, BrokerConfig, QueueKind, Topology, PORT};
use crate::clock::Clock;
use crate::endpoint::{EndpointKnobs, Record, SimEndpoint};
use crate::oracle::{pending, Oracle, View};
use crate::rng::Rng;
use crate::service::{self, Service, Shape};
use crate::wire::session::Dial;
use crate::worker;
use crate::workload::Workload;
use crate::{BROKER_HOST, SERVICE_HOST};

const TASKS: usize = 40;

fn endpoint(host: &str, index: u64) -> SimEndpoint {
    let mut cfg = Config::new(EndpointId::new("E").unwrap());
    cfg.consume_mode = ConsumeMode::SingleActive;
    cfg.prefetch = 4;
    cfg.reconnect = BackoffConfig { initial: Duration::from_millis(100), max: Duration::from_secs(3) };
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg.seed = index;
    let knobs = EndpointKnobs {
        brokers: vec![(BROKER_HOST.into(), PORT)],
        heartbeat_ms: 1_000,
        fsync_max: Duration::from_millis(5),
        work_max: Duration::from_millis(20),
    };
    SimEndpoint::new(host, cfg, knobs, worker::echo())
}

/// The statuses the endpoint reported, in order.
fn statuses(ep: &SimEndpoint) -> Vec<String> {
    ep.records_since(0)
        .into_iter()
        .filter_map(|r| match r {
            Record::Status { status, .. } => Some(status),
            _ => None,
        })
        .collect()
}

fn handoffs(ep: &SimEndpoint) -> usize {
    ep.records_since(0).iter().filter(|r| matches!(r, Record::Handoff { .. })).count()
}

#[test]
fn a_duplicate_on_a_quorum_queue_stands_by_and_takes_over_when_the_active_one_crashes() {
    let broker = Broker::new(BrokerConfig::new(Topology::tasklane(&["E"], QueueKind::Quorum)));
    // One task every 500 ms over 20 s: some before the duplicate, some
    // while both run, the rest after the crash.
    let times = (0..TASKS).map(|i| (Duration::from_millis(500 * i as u64), Shape::Good));
    let id = EndpointId::new("E").unwrap();
    let service = Service::new(
        service::plan(&id, times, &Workload::default().make, &mut Rng::new(1)),
        Dial {
            host: BROKER_HOST.into(),
            port: PORT,
            name: SERVICE_HOST.into(),
            heartbeat_ms: 1_000,
            timeout: Duration::from_secs(2),
        },
        Clock::new(),
    );
    let endpoints = [endpoint("endpoint-1", 1), endpoint("endpoint-2", 2)];
    let mut sim =
        turmoil::Builder::new().rng_seed(3).epoch(UNIX_EPOCH).simulation_duration(Duration::from_secs(600)).build();
    sim.host(BROKER_HOST, broker.host());
    sim.host(SERVICE_HOST, service.host());
    sim.host(endpoints[0].name(), endpoints[0].host());
    let mut oracle = Oracle::new();
    let mut present = 1;
    let mut crashed_at = None;
    let mut handoffs_at_crash = 0;
    let duplicate_at = Duration::from_secs(2);
    let crash_at = Duration::from_secs(10);
    loop {
        let now = sim.elapsed();
        if present == 1 && now >= duplicate_at {
            assert_eq!(statuses(&endpoints[0]).last().map(String::as_str), Some("Consuming"));
            sim.host(endpoints[1].name(), endpoints[1].host());
            present = 2;
        }
        if crashed_at.is_none() && now >= crash_at {
            let second = statuses(&endpoints[1]);
            assert_eq!(second.last().map(String::as_str), Some("Standby"), "{second:?}");
            assert!(!second.iter().any(|s| s == "Consuming"), "the standby never claimed to consume: {second:?}");
            assert_eq!(handoffs(&endpoints[1]), 0, "and got no task");
            assert!(handoffs(&endpoints[0]) > 0, "while the first did");
            handoffs_at_crash = handoffs(&endpoints[0]);
            sim.crash(endpoints[0].name());
            crashed_at = Some(now);
        }
        sim.step().unwrap();
        let view = View { broker: &broker, endpoints: &endpoints[..present], service: &service, task_queue: "E.tasks" };
        if let Err(v) = oracle.check(&view) {
            panic!("{} at {:?}: {}", v.invariant, sim.elapsed(), v.detail);
        }
        if crashed_at.is_some() && pending(&view).is_none() {
            break;
        }
        assert!(sim.elapsed() < Duration::from_secs(120), "not converged: {:?}", pending(&view));
    }
    assert_eq!(service.accepted(), TASKS, "every task answered");
    assert_eq!(handoffs(&endpoints[0]), handoffs_at_crash, "the crashed one did no more");
    assert!(handoffs(&endpoints[1]) > 0, "the standby took over");
    let second = statuses(&endpoints[1]);
    assert_eq!(second.last().map(String::as_str), Some("Consuming"), "{second:?}");
}
