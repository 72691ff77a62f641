//! The judge against amqprs itself, through the real broker: each message
//! the judge calls poison kills an amqprs consumer's connection (and stays
//! in the queue), and each it calls fine, however exotic, is delivered.

mod quarantine_support;

use std::time::Duration;

use amqprs::channel::{BasicConsumeArguments, Channel, QueueDeclareArguments};
use quarantine_support::*;
use tasklane_io::amqp;
use tasklane_io::amqp::quarantine;
use tasklane_io::amqp::quarantine::props::FieldValue;
use tasklane_io::service::QueueType;
use tokio::sync::mpsc;

struct Forward(mpsc::UnboundedSender<String>);

#[async_trait::async_trait]
impl amqprs::consumer::AsyncConsumer for Forward {
    async fn consume(&mut self, _: &Channel, _: amqprs::Deliver, props: amqprs::BasicProperties, _: Vec<u8>) {
        let _ = self.0.send(props.message_id().cloned().unwrap_or_default());
    }
}

/// Messages amqprs must decode: strings that are UTF-8 (not ASCII), byte
/// arrays of any bytes, every field type, nesting.
fn fine_ones() -> Vec<Message> {
    let s = |b: &[u8]| FieldValue::Str(b.to_vec());
    let mut unicode = task("tâche-ü-€".as_bytes());
    unicode.props.correlation_id = Some("ç".as_bytes().to_vec());
    unicode.props.message_type = Some("型".as_bytes().to_vec());
    let bytes = with_header(task(b"fine-bytes"), "blob", FieldValue::Bytes(vec![0xff, 0xfe, 0]));
    let table =
        FieldValue::Table(vec![(b"k".to_vec(), FieldValue::Array(vec![s("ü".as_bytes()), FieldValue::I64(-1)]))]);
    let nested = with_header(task(b"fine-nested"), "meta", table);
    let mut all = task(b"fine-all-types");
    all.props.headers = Some(vec![
        (b"t".to_vec(), FieldValue::Bool(true)),
        (b"b".to_vec(), FieldValue::I8(-3)),
        (b"s".to_vec(), FieldValue::I16(-300)),
        (b"I".to_vec(), FieldValue::I32(-70_000)),
        (b"l".to_vec(), FieldValue::I64(i64::MIN)),
        (b"d".to_vec(), FieldValue::F64(1.5)),
        (b"D".to_vec(), FieldValue::Decimal { scale: 2, value: 12345 }),
        (b"T".to_vec(), FieldValue::Timestamp(1_700_000_000)),
        (b"V".to_vec(), FieldValue::Void),
        ("ключ".as_bytes().to_vec(), s(b"")),
    ]);
    vec![unicode, bytes, nested, all]
}

/// Publishes `m` alone to a fresh queue, judges it as the scan would, and
/// consumes it with amqprs (manual acks, as the endpoint consumes, and no
/// ack): `(poison by the judge, delivered to amqprs, amqprs' connection
/// still open, messages in the queue afterwards)`.
async fn probe(s: &Setup, n: usize, make: impl FnOnce(&str) -> Message) -> (bool, bool, bool, u32) {
    let queue = format!("probe-{n}");
    let conn = amqp::connect(&s.opts).await.unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    channel.queue_declare(QueueDeclareArguments::durable_client_named(&queue)).await.unwrap();
    let _ = channel.close().await;
    s.publish_to(&queue, &[make(&queue)]).await;
    let peeked = s.peek(&queue).await;
    assert_eq!(peeked.len(), 1, "{queue}");
    let m = &peeked[0];
    let poison = quarantine::judge(&m.exchange, &m.routing_key, &m.raw_properties).is_poison();

    let channel = conn.open_channel(None).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let args = BasicConsumeArguments::new(&queue, "probe").manual_ack(true).finish();
    // The delivery right behind consume-ok may kill the connection before
    // amqprs hands consume-ok over.
    let delivered = match channel.basic_consume(Forward(tx), args).await {
        Ok(_) => tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.is_ok_and(|m| m.is_some()),
        Err(_) => false,
    };
    let open = conn.is_open();
    let _ = conn.close().await;
    // Nothing is acked: the broker requeues what the connection held once
    // it sees the socket close.
    let want = 1;
    let mut left = 0;
    for _ in 0..50 {
        left = s.vhost.queue_counts(&queue).await.unwrap().unwrap().ready;
        if left == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (poison, delivered, open, left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_judge_calls_poison_kills_an_amqprs_consumer_and_nothing_else_does() {
    let s = Setup::new(QueueType::Classic).await;
    let poison = poison_kinds("placeholder");
    for (n, (_, reason)) in poison.iter().enumerate() {
        let got = probe(&s, n, |queue| poison_kinds(queue).swap_remove(n).0).await;
        assert_eq!(got, (true, false, false, 1), "{reason}: judged poison, not delivered, connection dropped, kept");
    }
    for (n, m) in fine_ones().into_iter().enumerate() {
        let id = String::from_utf8_lossy(m.props.message_id.as_ref().unwrap()).into_owned();
        let got = probe(&s, 100 + n, |_| m).await;
        assert_eq!(got, (false, true, true, 1), "{id}: judged fine, delivered, connection open, kept");
    }
}
