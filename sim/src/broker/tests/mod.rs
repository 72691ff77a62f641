//! Broker tests: raw protocol clients against the broker host in a
//! turmoil `Sim`.

mod consume;
mod lifecycle;
mod publish;

use std::time::{Duration, UNIX_EPOCH};

use turmoil::Sim;

use super::{Broker, BrokerConfig, QueueKind, QueueSpec, Topology, PORT};
use crate::wire::{Client, ClientMethod, Message, ServerMethod};

pub(super) const BROKER: &str = "broker";
/// Patience for one expected reply (simulated time).
pub(super) const T: Duration = Duration::from_secs(5);

/// Endpoint `E`'s topology plus a plain classic queue `jobs` and a plain
/// quorum queue `qjobs` (no single active consumer), heartbeats off.
pub(super) fn broker() -> Broker {
    broker_with_heartbeat(0)
}

pub(super) fn broker_with_heartbeat(heartbeat_ms: u32) -> Broker {
    let mut topology = Topology::tasklane(&["E"], QueueKind::Classic);
    topology.add_queue(QueueSpec::new("jobs"));
    topology.add_queue(QueueSpec { kind: QueueKind::Quorum, ..QueueSpec::new("qjobs") });
    Broker::new(BrokerConfig { heartbeat_ms, ..BrokerConfig::new(topology) })
}

pub(super) fn sim(broker: &Broker) -> Sim<'static> {
    let mut sim =
        turmoil::Builder::new().rng_seed(7).epoch(UNIX_EPOCH).simulation_duration(Duration::from_secs(120)).build();
    sim.host(BROKER, broker.host());
    sim
}

pub(super) fn task(i: u32) -> Message {
    Message::persistent(format!("t{i}"), format!("payload {i}"))
}

pub(super) async fn connect(name: &str) -> Client {
    Client::connect((BROKER, PORT), name, 0, T).await.unwrap()
}

/// Connects, opens channel 1, sets the prefetch and consumes `queue`;
/// returns the client and whether it is the active consumer: the first one
/// registered, so no consumer before it (a passive declare's count).
pub(super) async fn consumer(name: &str, queue: &str, prefetch: u16, exclusive: bool) -> (Client, bool) {
    let mut c = connect(name).await;
    c.open_channel(1, T).await.unwrap();
    c.send(ClientMethod::Qos { ch: 1, prefetch });
    assert_eq!(c.next(T).await.unwrap(), ServerMethod::QosOk { ch: 1 });
    let before = consumer_count(&mut c, queue).await;
    c.send(ClientMethod::Consume { ch: 1, queue: queue.into(), exclusive });
    match c.next(T).await.unwrap() {
        ServerMethod::ConsumeOk { ch: 1, queue: q } if q == queue => (c, before == 0),
        other => panic!("expected ConsumeOk, got {other:?}"),
    }
}

/// The consumer count of `queue`, by a passive declare on channel 1.
pub(super) async fn consumer_count(c: &mut Client, queue: &str) -> u32 {
    c.send(ClientMethod::DeclarePassive { ch: 1, queue: queue.into() });
    match c.next(T).await.unwrap() {
        ServerMethod::DeclareOk { ch: 1, consumers, .. } => consumers,
        other => panic!("expected DeclareOk, got {other:?}"),
    }
}

/// The next method must be a delivery: (tag, redelivered, message id).
pub(super) async fn delivery(c: &mut Client) -> (u64, bool, String) {
    match c.next(T).await.unwrap() {
        ServerMethod::Deliver { tag, redelivered, message, .. } => (tag, redelivered, message.message_id.unwrap()),
        other => panic!("expected Deliver, got {other:?}"),
    }
}

/// Nothing but heartbeats arrives for `quiet`.
pub(super) async fn silent(c: &mut Client, quiet: Duration) {
    match c.next(quiet).await {
        Err(crate::wire::ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// Waits (in simulated time) until `cond` holds.
pub(super) async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}
