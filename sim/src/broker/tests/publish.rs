//! Publishing: confirms, mandatory returns, reject-publish, routing.

use super::*;
use crate::broker::{Event, PublishOutcome, RESULTS};
use crate::wire::code;

fn publish(ch: u16, exchange: &str, routing_key: &str, mandatory: bool, id: &str) -> ClientMethod {
    ClientMethod::Publish {
        ch,
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        mandatory,
        message: Message::persistent(id, "result"),
    }
}

async fn confirming(name: &str, ch: u16) -> Client {
    let mut c = connect(name).await;
    c.open_channel(ch, T).await.unwrap();
    c.send(ClientMethod::ConfirmSelect { ch });
    assert_eq!(c.next(T).await.unwrap(), ServerMethod::ConfirmSelectOk { ch });
    c
}

fn ack(ch: u16, tag: u64) -> ServerMethod {
    ServerMethod::PublishAck { ch, tag, multiple: false }
}

#[test]
fn mandatory_unroutable_publish_is_returned_then_acked() {
    let broker = broker();
    let mut sim = sim(&broker);
    sim.client("endpoint", async move {
        let mut c = confirming("endpoint-1", 2).await;
        c.send(publish(2, RESULTS, "E.nowhere", true, "r1"));
        match c.next(T).await.unwrap() {
            ServerMethod::Return { ch: 2, reply_code, routing_key, message, .. } => {
                assert_eq!(reply_code, code::NO_ROUTE);
                assert_eq!(routing_key, "E.nowhere");
                assert_eq!(message.message_id.as_deref(), Some("r1"));
            }
            other => panic!("expected Return, got {other:?}"),
        }
        assert_eq!(c.next(T).await.unwrap(), ack(2, 1));
        // Not mandatory: dropped silently, still acked.
        c.send(publish(2, RESULTS, "E.nowhere", false, "r2"));
        assert_eq!(c.next(T).await.unwrap(), ack(2, 2));
        // Routable: stored in `results`.
        c.send(publish(2, RESULTS, "E.results", true, "r3"));
        assert_eq!(c.next(T).await.unwrap(), ack(2, 3));
        Ok(())
    });
    sim.run().unwrap();
    let stored: Vec<_> = broker.messages(RESULTS).into_iter().map(|s| s.message.message_id.unwrap()).collect();
    assert_eq!(stored, ["r3"]);
    let outcomes: Vec<_> = broker
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Published { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            PublishOutcome::Unroutable { returned: true },
            PublishOutcome::Unroutable { returned: false },
            PublishOutcome::Routed(vec![RESULTS.into()]),
        ]
    );
}

#[test]
fn confirm_tags_count_per_channel_from_one() {
    let broker = broker();
    let mut sim = sim(&broker);
    sim.client("endpoint", async move {
        let mut c = confirming("endpoint-1", 1).await;
        c.open_channel(2, T).await.unwrap();
        c.send(ClientMethod::ConfirmSelect { ch: 2 });
        assert_eq!(c.next(T).await.unwrap(), ServerMethod::ConfirmSelectOk { ch: 2 });
        c.send(publish(1, RESULTS, "E.results", true, "a"));
        c.send(publish(1, RESULTS, "E.results", true, "b"));
        c.send(publish(2, RESULTS, "E.results", true, "c"));
        assert_eq!(c.next(T).await.unwrap(), ack(1, 1));
        assert_eq!(c.next(T).await.unwrap(), ack(1, 2));
        assert_eq!(c.next(T).await.unwrap(), ack(2, 1));
        // A reopened channel starts counting again.
        c.send(ClientMethod::CloseChannel { ch: 1 });
        assert_eq!(c.next(T).await.unwrap(), ServerMethod::ChannelCloseOk { ch: 1 });
        c.open_channel(1, T).await.unwrap();
        c.send(ClientMethod::ConfirmSelect { ch: 1 });
        assert_eq!(c.next(T).await.unwrap(), ServerMethod::ConfirmSelectOk { ch: 1 });
        c.send(publish(1, RESULTS, "E.results", true, "d"));
        assert_eq!(c.next(T).await.unwrap(), ack(1, 1));
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(broker.counts(RESULTS).ready, 4);
}

#[test]
fn full_queue_nacks_and_unknown_exchange_closes_the_channel() {
    let mut topology = Topology::tasklane(&["E"], QueueKind::Classic);
    topology.add_queue(QueueSpec { max_length: Some(1), ..QueueSpec::new("small") });
    let broker = Broker::new(BrokerConfig { heartbeat_ms: 0, ..BrokerConfig::new(topology) });
    let mut sim = sim(&broker);
    sim.client("endpoint", async move {
        let mut c = confirming("endpoint-1", 1).await;
        c.send(publish(1, "", "small", true, "a"));
        c.send(publish(1, "", "small", true, "b"));
        assert_eq!(c.next(T).await.unwrap(), ack(1, 1));
        assert_eq!(c.next(T).await.unwrap(), ServerMethod::PublishNack { ch: 1, tag: 2, multiple: false });
        c.send(publish(1, "no-such-exchange", "x", false, "c"));
        match c.next(T).await.unwrap() {
            ServerMethod::ChannelClose { ch: 1, code, .. } => assert_eq!(code, code::NOT_FOUND),
            other => panic!("expected ChannelClose, got {other:?}"),
        }
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(broker.counts("small").ready, 1);
}
