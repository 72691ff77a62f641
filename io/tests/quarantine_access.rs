//! The poison quarantine under the conditions an endpoint meets: its own
//! user (with and without permission to publish to `tasklane.dead`),
//! another connection's consumer on the queue (single active consumer on
//! classic and quorum queues, an exclusive consumer), and TLS.

mod quarantine_support;

use std::time::Duration;

use amqprs::channel::{BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel, QueueDeclareArguments};
use amqprs::connection::Connection;
use amqprs::{FieldTable, FieldValue as AmqprsValue};
use quarantine_support::*;
use tasklane_core::EndpointId;
use tasklane_io::amqp::quarantine::{self, Disposition, ScanErrorKind};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::service::{provision_user, users, Management, QueueType, DEAD};
use tokio::sync::mpsc;

fn api() -> Management {
    Management::new("http://127.0.0.1:15672", "guest", "guest").unwrap()
}

fn user_opts(s: &Setup, user: &str, password: &str) -> ConnectOptions {
    let url = format!("amqp://{user}:{password}@127.0.0.1:5672/{}", tasklane_tests::percent_encode(s.vhost.name()));
    ConnectOptions::parse(&url).unwrap()
}

/// `good-0`, a poison message, `good-1`, `good-2`.
async fn publish_around_poison(s: &Setup) {
    let poison = poison_kinds(&s.queue).remove(1).0;
    s.publish(&[task(b"good-0"), poison, task(b"good-1"), task(b"good-2")]).await;
}

fn ids(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[tokio::test]
async fn an_endpoint_user_copies_poison_to_tasklane_dead_with_the_reason() {
    let s = Setup::new(QueueType::Classic).await;
    let e = EndpointId::new(format!("qa-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])).unwrap();
    let made = provision_user(&api(), s.vhost.name(), &e, false).await.unwrap();
    // The user may read only its own queue: give it this one's messages.
    let conn = amqp::connect(&s.opts).await.unwrap();
    tasklane_io::service::provision(&conn, &e, QueueType::Classic).await.unwrap();
    let _ = conn.close().await;
    let s = Setup { queue: e.task_queue(), ..s };
    publish_around_poison(&s).await;
    let opts = user_opts(&s, e.as_str(), made.password.as_deref().unwrap());
    let out = quarantine::scan(&opts, &s.queue, 10).await;
    let _ = users::delete_user(&api(), &e).await;
    let out = out.unwrap();
    assert_eq!((out.scanned, out.returned, out.quarantined.len()), (4, 3, 1));
    assert_eq!(out.quarantined[0].how, Disposition::PublishedWithReason);
    let dead = s.peek(DEAD).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "tasklane-reason").as_deref(), Some("undecodable"));
    assert_eq!(s.ids(&s.queue).await, ids(&["good-0", "good-1", "good-2"]));
}

/// A user that may not publish to `tasklane.dead` (as endpoint users were
/// provisioned before): the poison is rejected, and the queue's
/// dead-letter exchange puts it in `tasklane.dead` with the broker's
/// `x-death`; on a quorum queue, where the scan consumes.
#[tokio::test]
async fn without_permission_to_publish_poison_is_dead_lettered_by_the_broker() {
    let s = Setup::new(QueueType::Quorum).await;
    let user = format!("qr-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let path = format!("/users/{user}");
    api().put(&path, &serde_json::json!({ "password": "pw", "tags": "" })).await.unwrap();
    let perms = serde_json::json!({ "configure": "^$", "write": "^results$", "read": format!("^{}$", s.queue.replace('.', "\\.")) });
    let perms_path = format!("/permissions/{}/{user}", tasklane_tests::percent_encode(s.vhost.name()));
    api().put(&perms_path, &perms).await.unwrap();
    let mut msgs = vec![task(b"good-0")];
    msgs.extend(poison_kinds(&s.queue).into_iter().take(3).map(|(m, _)| m));
    msgs.push(task(b"good-1"));
    s.publish(&msgs).await;
    let out = quarantine::scan(&user_opts(&s, &user, "pw"), &s.queue, 10).await;
    api().delete(&path).await.unwrap();
    let out = out.unwrap();
    assert_eq!((out.scanned, out.returned, out.quarantined.len(), out.kept.len()), (5, 2, 3, 0), "{out:?}");
    assert!(out.quarantined.iter().all(|q| q.how == Disposition::RejectedToDeadLetterExchange));
    let dead = s.peek(DEAD).await;
    let dead_ids: Vec<Vec<u8>> = dead.iter().map(message_id).collect();
    assert_eq!(dead_ids, msgs[1..4].iter().map(|m| m.props.message_id.clone().unwrap()).collect::<Vec<_>>());
    for d in &dead {
        assert_eq!(header(d, "tasklane-reason"), None);
        assert_eq!(header(d, "x-first-death-reason").as_deref(), Some("rejected"));
        assert_eq!(header(d, "x-first-death-queue").as_deref(), Some(s.queue.as_str()));
    }
    assert_eq!(s.ids(&s.queue).await, ids(&["good-0", "good-1"]));
}

/// An amqprs consumer on another connection, prefetch 1, manual acks: it
/// holds `good-0` unacked; the rest waits in the queue.
struct Holder {
    conn: Connection,
    channel: Channel,
    rx: mpsc::UnboundedReceiver<(u64, String)>,
}

struct Forward(mpsc::UnboundedSender<(u64, String)>);

#[async_trait::async_trait]
impl amqprs::consumer::AsyncConsumer for Forward {
    async fn consume(&mut self, _: &Channel, deliver: amqprs::Deliver, props: amqprs::BasicProperties, _: Vec<u8>) {
        let id = props.message_id().cloned().unwrap_or_default();
        let _ = self.0.send((deliver.delivery_tag(), id));
    }
}

impl Holder {
    async fn attach(s: &Setup, queue: &str, exclusive: bool) -> Holder {
        let conn = amqp::connect(&s.opts).await.unwrap();
        let channel = conn.open_channel(None).await.unwrap();
        channel.basic_qos(BasicQosArguments::new(0, 1, false)).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let args = BasicConsumeArguments::new(queue, "holder").manual_ack(true).exclusive(exclusive).finish();
        channel.basic_consume(Forward(tx), args).await.unwrap();
        Holder { conn, channel, rx }
    }

    async fn next(&mut self) -> (u64, String) {
        tokio::time::timeout(WAIT, self.rx.recv()).await.expect("a delivery").unwrap()
    }

    /// Acks each delivery and returns the ids of the next `n`.
    async fn take(&mut self, first: (u64, String), n: usize) -> Vec<String> {
        let mut got = vec![first];
        while got.len() < n + 1 {
            self.channel.basic_ack(BasicAckArguments::new(got.last().unwrap().0, false)).await.unwrap();
            got.push(self.next().await);
        }
        self.channel.basic_ack(BasicAckArguments::new(got.last().unwrap().0, false)).await.unwrap();
        got.into_iter().skip(1).map(|(_, id)| id).collect()
    }
}

/// Classic queue, single active consumer held by another connection:
/// `basic.get` still works, and the consumer then gets the good ones in
/// order.
#[tokio::test]
async fn basic_get_works_beside_the_active_consumer_of_a_classic_queue() {
    let s = Setup::new(QueueType::Classic).await;
    publish_around_poison(&s).await;
    let mut holder = Holder::attach(&s, &s.queue, false).await;
    let first = holder.next().await;
    assert_eq!(first.1, "good-0");
    let out = quarantine::scan(&s.opts, &s.queue, 10).await.unwrap();
    assert_eq!((out.scanned, out.returned, out.quarantined.len(), out.reached_end), (3, 2, 1, true));
    assert_eq!(holder.take(first, 2).await, ["good-1", "good-2"]);
    let _ = holder.conn.close().await;
}

/// Quorum queue, single active consumer held by another connection: the
/// scan's consumer waits; it gets nothing while the other stays, and
/// takes over when the other's connection dies (as the endpoint's does on
/// a poison message).
#[tokio::test]
async fn on_a_quorum_queue_the_scan_takes_over_when_the_active_consumer_goes() {
    let s = Setup::new(QueueType::Quorum).await;
    publish_around_poison(&s).await;
    let mut holder = Holder::attach(&s, &s.queue, false).await;
    let first = holder.next().await;
    let err = quarantine::scan_within(&s.opts, &s.queue, 10, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err.kind, ScanErrorKind::NotActive { ready: 3, .. }), "{err}");
    assert_eq!(err.outcome.scanned, 0);

    let scan = tokio::spawn({
        let (opts, queue) = (s.opts.clone(), s.queue.clone());
        async move { quarantine::scan_within(&opts, &queue, 10, Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(first.1, "good-0");
    let _ = holder.conn.close().await; // good-0 goes back, unacked
    let out = scan.await.unwrap().unwrap();
    assert_eq!((out.scanned, out.returned, out.quarantined.len(), out.reached_end), (4, 3, 1, true), "{out:?}");
    assert_eq!(out.quarantined[0].position, 1);
    assert_eq!(s.ids(&s.queue).await, ids(&["good-0", "good-1", "good-2"]));
    assert_eq!(s.peek(DEAD).await.len(), 1);
}

/// A classic queue with an exclusive consumer on another connection:
/// `basic.get` works there too (exclusive refers to consumers, the queue
/// itself is not exclusive to a connection).
#[tokio::test]
async fn basic_get_beside_an_exclusive_consumer() {
    let s = Setup::new(QueueType::Classic).await;
    let queue = "exclusive.tasks";
    let conn = amqp::connect(&s.opts).await.unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    let mut args = FieldTable::new();
    args.insert("x-dead-letter-exchange".try_into().unwrap(), AmqprsValue::S(DEAD.try_into().unwrap()));
    channel.queue_declare(QueueDeclareArguments::durable_client_named(queue).arguments(args).finish()).await.unwrap();
    let s = Setup { queue: queue.to_string(), ..s };
    publish_around_poison(&s).await;
    let mut holder = Holder::attach(&s, queue, true).await;
    let first = holder.next().await;
    let out = quarantine::scan(&s.opts, queue, 10).await.unwrap();
    assert_eq!((out.scanned, out.returned, out.quarantined.len()), (3, 2, 1));
    assert_eq!(holder.take(first, 2).await, ["good-1", "good-2"]);
    let _ = holder.conn.close().await;
    let _ = conn.close().await;
}

#[tokio::test]
async fn the_scan_speaks_tls_with_the_urls_ca() {
    let s = Setup::new(QueueType::Classic).await;
    publish_around_poison(&s).await;
    let dir = std::env::var("TASKLANE_TEST_TLS_DIR").unwrap_or_else(|_| "/var/lib/tasklane-test-tls".into());
    let ca = std::path::Path::new(&dir).join("ca.pem");
    assert!(ca.exists(), "{} is missing: run scripts/ensure-rabbitmq.sh", ca.display());
    let url = format!("amqps://guest:guest@127.0.0.1:5671/{}", tasklane_tests::percent_encode(s.vhost.name()));
    let out = quarantine::scan(&ConnectOptions::parse(&url).unwrap().with_tls_ca(&ca), &s.queue, 10).await.unwrap();
    assert_eq!((out.scanned, out.quarantined.len()), (4, 1));
    // Without the CA, the test CA is not trusted.
    let err = quarantine::scan(&ConnectOptions::parse(&url).unwrap(), &s.queue, 10).await.unwrap_err();
    assert!(matches!(&err.kind, ScanErrorKind::Connect { detail, .. } if detail.contains("certificate")), "{err}");
}
