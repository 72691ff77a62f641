//! A result the driver cannot read back from the spool to publish must not
//! be confirmed by the next result's confirm. The broker numbers confirms
//! by what it receives; a publish the driver skipped would shift its tags
//! against core's, and the lane would drop an unpublished result from the
//! outbox as confirmed. The shipped driver runs against a fake broker
//! that numbers and acks publishes as RabbitMQ does, and a spool whose
//! first read of one result fails.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tasklane_core::{
    Amqp, Config, ConnId, ConsumeMode, EndpointId, Input, OutboxSeq, ResultMeta, ResultStatus, SpoolSnapshot,
    SpoolWrite, Task, TaskId,
};

use super::ports::{BrokerConn, BrokerPort, BrokerSinks, InputSink, NoObserver, SpoolPort};
use super::Endpoint;

/// What the fake broker received: (connection, result message id) per
/// result publish, in order.
type Received = Rc<RefCell<Vec<(ConnId, String)>>>;

struct FakeBroker {
    received: Received,
}

struct FakeConn {
    conn: ConnId,
    sinks: BrokerSinks,
    received: Received,
    /// Publishes received per channel: the broker's confirm tags.
    tags: BTreeMap<u64, u64>,
    closed: bool,
}

impl BrokerPort for FakeBroker {
    type Conn = FakeConn;

    fn connect(&mut self, conn: ConnId, _address: usize, sinks: BrokerSinks) -> FakeConn {
        sinks.inputs.send(Input::Connected { conn });
        FakeConn { conn, sinks, received: Rc::clone(&self.received), tags: BTreeMap::new(), closed: false }
    }

    /// A session lost young makes core scan for poison: there is none.
    fn quarantine(&mut self, scan: u64, _address: usize, _queue: String, _max: u32, inputs: InputSink) {
        inputs.send(Input::QuarantineDone { scan, quarantined: Vec::new(), scanned: 0, error: None });
    }
}

impl FakeConn {
    /// Takes the next confirm tag of `channel` and acks it.
    fn confirm(&mut self, channel: tasklane_core::ChannelId) {
        let tag = self.tags.entry(channel.0).or_insert(0);
        *tag += 1;
        self.sinks.inputs.send(Input::PublishAck { channel, tag: *tag, multiple: false });
    }
}

impl BrokerConn for FakeConn {
    fn execute(&mut self, op: Amqp) {
        if self.closed {
            return;
        }
        let send = |input| {
            self.sinks.inputs.send(input);
        };
        match op {
            Amqp::OpenChannel { channel } => send(Input::ChannelOpened { channel }),
            Amqp::Qos { channel, .. } => send(Input::QosOk { channel }),
            Amqp::Consume { channel, .. } => send(Input::ConsumeOk { channel }),
            Amqp::QueryConsumers { channel, .. } => send(Input::ConsumerCount { channel, consumers: 1 }),
            Amqp::ConfirmSelect { channel } => send(Input::ConfirmSelectOk { channel }),
            Amqp::Publish { tag, message, .. } => {
                let id = String::from_utf8(message.message_id.clone().expect("a result names its task")).unwrap();
                assert_eq!(&message.body[..], b"done", "{id} is published with its body");
                self.received.borrow_mut().push((self.conn, id));
                self.confirm(tag.channel);
            }
            Amqp::PublishReport { tag, .. } => self.confirm(tag.channel),
            _ => {}
        }
    }

    fn close(mut self, _reason: String) {
        self.closed = true;
    }
}

/// A spool that commits every write at once and holds the outbox of the
/// snapshot; its first read of result `fail_once` fails.
struct OutboxSpool {
    inputs: Option<InputSink>,
    bodies: BTreeMap<u64, Bytes>,
    fail_once: Option<u64>,
}

impl SpoolPort for OutboxSpool {
    fn start(&mut self, inputs: InputSink) {
        self.inputs = Some(inputs);
    }

    fn write(&mut self, write: SpoolWrite) {
        if let Some(inputs) = &self.inputs {
            inputs.send(Input::SpoolCommitted { upto: write.seq });
        }
    }

    fn task(&mut self, _arrival: u64) -> Result<Option<Task>, String> {
        Ok(None)
    }

    fn result_bodies(&mut self, seqs: &[OutboxSeq]) -> Result<Vec<Option<Bytes>>, String> {
        Ok(seqs
            .iter()
            .map(|s| match self.fail_once {
                Some(f) if f == s.0 => {
                    self.fail_once = None;
                    None
                }
                _ => self.bodies.get(&s.0).cloned(),
            })
            .collect())
    }

    async fn close(self, _grace: Duration) {}
}

#[tokio::test(flavor = "current_thread")]
async fn a_result_that_cannot_be_read_is_published_again_not_confirmed_by_the_next_one() {
    let ids: Vec<String> = (0..4).map(|i| format!("r-{i}")).collect();
    let outbox: Vec<ResultMeta> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ResultMeta {
            seq: OutboxSeq(i as u64),
            task: TaskId::new(id.as_str()).unwrap(),
            status: ResultStatus::Ok,
            size: 4,
        })
        .collect();
    let snapshot = SpoolSnapshot { outbox, outbox_counter: 4, ..Default::default() };
    let mut cfg = Config::new(EndpointId::new("ep-read").unwrap());
    cfg.consume_mode = ConsumeMode::Exclusive;
    let received = Received::default();
    let broker = FakeBroker { received: Rc::clone(&received) };
    let bodies = (0..4).map(|i| (i, Bytes::from_static(b"done"))).collect();
    let spool = OutboxSpool { inputs: None, bodies, fail_once: Some(0) };
    let (endpoint, driver) = Endpoint::start(cfg, snapshot, broker, spool, NoObserver).unwrap();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            tokio::task::spawn_local(driver);
            let started = std::time::Instant::now();
            let mut waited = Duration::ZERO;
            while endpoint.spool_depths().outbox > 0 && waited < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                waited += Duration::from_millis(100);
            }
            let got = received.borrow().clone();
            let published: BTreeSet<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
            assert_eq!(published, ids.iter().map(String::as_str).collect(), "every result reached the broker: {got:?}");
            assert_eq!(endpoint.spool_depths().outbox, 0, "and was confirmed: {got:?}");
            let first = got.iter().position(|(_, id)| id == "r-0").unwrap();
            assert!(got[first].0 .0 > 1, "r-0 went out on a later connection, after the unreadable one: {got:?}");
            assert!(endpoint.counters().disconnects >= 1, "the connection was given up");
            eprintln!(
                "4 results confirmed {:?} after the start, r-0 on connection {}",
                started.elapsed(),
                got[first].0 .0
            );
            endpoint.shutdown().await;
        })
        .await;
}
