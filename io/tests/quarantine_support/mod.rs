//! Shared by the quarantine tests: a provisioned endpoint in a vhost of its
//! own, messages published by frames (any bytes), and the poison kinds.

#![allow(dead_code)]

#[path = "../hostile_support/raw_amqp.rs"]
mod raw_amqp;

use std::time::Duration;

use tasklane_core::EndpointId;
use tasklane_io::amqp::quarantine::props::{self, FieldValue, Properties};
use tasklane_io::amqp::quarantine::{self, Peeked};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::service::{provision, QueueType};
use tasklane_tests::Vhost;

pub const WAIT: Duration = Duration::from_secs(20);

/// A provisioned endpoint `E` (topology as `tasklane provision` makes it)
/// in a fresh vhost, and guest's options there.
pub struct Setup {
    pub vhost: Vhost,
    pub endpoint: EndpointId,
    /// `E.tasks`.
    pub queue: String,
    pub opts: ConnectOptions,
}

impl Setup {
    pub async fn new(queue_type: QueueType) -> Self {
        let vhost = Vhost::create().unwrap();
        let endpoint = EndpointId::new(format!("q-{queue_type}")).unwrap();
        let opts = ConnectOptions::parse(&vhost.url()).unwrap();
        let conn = amqp::connect(&opts).await.unwrap();
        provision(&conn, &endpoint, queue_type).await.unwrap();
        let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)
        Self { queue: endpoint.task_queue(), vhost, endpoint, opts }
    }

    /// Publishes `msgs` to the default exchange under `routing_key`.
    pub async fn publish_with_key(&self, routing_key: &[u8], msgs: &[(Properties, Vec<u8>)]) {
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = msgs.iter().map(|(p, b)| (props::encode(p), b.clone())).collect();
        let (vhost, key) = (self.vhost.name().to_string(), routing_key.to_vec());
        tokio::task::spawn_blocking(move || raw_amqp::publish_encoded(&vhost, "", &key, &encoded)).await.unwrap();
    }

    /// Publishes `msgs` to `E.tasks`, or to the queue a message's routing
    /// key names (see [`poison_kinds`]), in order.
    pub async fn publish(&self, msgs: &[Message]) {
        self.publish_to(&self.queue, msgs).await
    }

    /// [`Self::publish`] to `queue`.
    pub async fn publish_to(&self, queue: &str, msgs: &[Message]) {
        for m in msgs {
            let key = m.routing_key.clone().unwrap_or_else(|| queue.as_bytes().to_vec());
            self.publish_with_key(&key, &[(m.props.clone(), m.body.clone())]).await;
        }
    }

    /// What `queue` holds, raw, head first (given back afterwards).
    pub async fn peek(&self, queue: &str) -> Vec<Peeked> {
        quarantine::peek(&self.opts, queue, 10_000, WAIT).await.unwrap()
    }

    /// The message ids `queue` holds, head first.
    pub async fn ids(&self, queue: &str) -> Vec<Vec<u8>> {
        self.peek(queue).await.into_iter().map(|m| message_id(&m)).collect()
    }
}

/// A message to publish: properties, body, and a routing key other than
/// the queue's name when it matters.
#[derive(Clone, Debug)]
pub struct Message {
    pub props: Properties,
    pub body: Vec<u8>,
    pub routing_key: Option<Vec<u8>>,
}

/// A persistent task with message id `id` and body `body-<id>`.
pub fn task(id: &[u8]) -> Message {
    let props = Properties { message_id: Some(id.to_vec()), delivery_mode: Some(2), ..Default::default() };
    let mut body = b"body-".to_vec();
    body.extend_from_slice(id);
    Message { props, body, routing_key: None }
}

pub fn with_header(mut m: Message, name: &str, value: FieldValue) -> Message {
    m.props.headers.get_or_insert_with(Vec::new).push((name.as_bytes().to_vec(), value));
    m
}

/// Each kind of message amqprs cannot decode, published to `queue`, with
/// the start of the reason the scan must give.
pub fn poison_kinds(queue: &str) -> Vec<(Message, &'static str)> {
    let str = |b: &[u8]| FieldValue::Str(b.to_vec());
    let mut corr = task(b"bad-corr");
    corr.props.correlation_id = Some(b"c-\xff".to_vec());
    let mut typ = task(b"bad-type");
    typ.props.message_type = Some(b"\xfe".to_vec());
    // Routed by its CC header; the delivery carries the routing key it
    // was published with.
    let mut key = with_header(task(b"bad-key"), "CC", FieldValue::Array(vec![str(queue.as_bytes())]));
    key.routing_key = Some(b"elsewhere-\xff".to_vec());
    vec![
        (task(b"bad-id-\xff\xfe"), "message_id is not UTF-8"),
        (with_header(task(b"bad-kind"), "tasklane-kind", str(b"resize-\xff")), "header \"tasklane-kind\" is not UTF-8"),
        (
            with_header(task(b"bad-nested"), "meta", FieldValue::Table(vec![(b"inner".to_vec(), str(b"\xc3"))])),
            "header \"meta\" > \"inner\" is not UTF-8",
        ),
        (corr, "correlation_id is not UTF-8"),
        (typ, "type is not UTF-8"),
        (key, "routing key is not UTF-8"),
    ]
}

pub fn message_id(m: &Peeked) -> Vec<u8> {
    m.properties.as_ref().and_then(|p| p.message_id.clone()).unwrap_or_default()
}

/// A string header of a peeked message, if it has one.
pub fn header(m: &Peeked, name: &str) -> Option<String> {
    match m.properties.as_ref()?.header(name)? {
        FieldValue::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
        other => Some(format!("{other:?}")),
    }
}
