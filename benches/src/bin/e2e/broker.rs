//! The bench's broker side: a throwaway vhost, the SPEC §2 topology for
//! each run's endpoint id, prefilled task queues, and a pipelined confirmed
//! publisher shared by the prefill and the raw publish side.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use amqprs::channel::{
    BasicPublishArguments, Channel, ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments,
    QueuePurgeArguments,
};
use amqprs::connection::Connection;
use amqprs::BasicProperties;
use bytes::Bytes;
use tasklane_core::{encode_result, encode_task, EndpointId, ResultStatus, Task, TaskId, TaskResult};
use tasklane_io::amqp::{self, publish_properties, ChannelEvent};
use tasklane_io::service::{provision, QueueType};
use tasklane_tests::{amqp_args, amqp_url, broker_addr, Vhost};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::BenchError;

/// Payload size of every task and result, as in the reference figures.
pub const BODY_LEN: usize = 256;

/// The vhost every side of one bench run works in (deleted on drop), the
/// type its task queues get, and a counter that gives each run its own
/// endpoint id.
pub struct Broker {
    vhost: Vhost,
    queue_type: QueueType,
    /// What the endpoints connect to (the cluster's nodes, in order).
    urls: String,
    runs: u32,
}

impl Broker {
    /// A vhost on the default node, with classic task queues.
    pub fn create() -> Result<Self, BenchError> {
        Self::create_on(tasklane_tests::Broker::default_node(), QueueType::Classic)
    }

    /// A vhost on `broker` (the default node, or the cluster), with task
    /// queues of `queue_type`; endpoints get the URL of every node.
    pub fn create_on(broker: tasklane_tests::Broker, queue_type: QueueType) -> Result<Self, BenchError> {
        let vhost = Vhost::create_on(broker)?;
        let urls = if broker.amqp == broker_addr() {
            vhost.url()
        } else {
            let nodes = (1..=tasklane_tests::cluster::NODES).map(tasklane_tests::cluster::node_addr);
            nodes.map(|addr| amqp_url(addr, vhost.name())).collect::<Vec<_>>().join(",")
        };
        Ok(Self { vhost, queue_type, urls, runs: 0 })
    }

    pub fn url(&self) -> String {
        self.urls.clone()
    }

    pub async fn connect(&self) -> Result<Connection, BenchError> {
        Ok(Connection::open(&amqp_args(self.vhost.broker().amqp, self.vhost.name())).await?)
    }

    /// A fresh endpoint id named after `what`, provisioned (task queue of
    /// the broker's type, single active consumer, dead-lettering; `results`).
    pub async fn endpoint(&mut self, what: &str) -> Result<EndpointId, BenchError> {
        self.runs += 1;
        let id = EndpointId::new(format!("{what}-{}", self.runs)).expect("bench ids are valid");
        let conn = self.connect().await?;
        provision(&conn, &id, self.queue_type).await?;
        conn.close().await?;
        Ok(id)
    }

    /// Puts `n` persistent tasks of [`BODY_LEN`] bytes in `endpoint`'s queue,
    /// each confirmed by the broker.
    pub async fn prefill(&self, endpoint: &EndpointId, n: usize) -> Result<(), BenchError> {
        self.prefill_sized(endpoint, n, BODY_LEN).await
    }

    /// Puts `n` persistent tasks of `size` bytes each in `endpoint`'s queue.
    pub async fn prefill_sized(&self, endpoint: &EndpointId, n: usize, size: usize) -> Result<(), BenchError> {
        let conn = self.connect().await?;
        let (mut publisher, _) = Publisher::open(&conn).await?;
        let queue = endpoint.task_queue();
        let body = Bytes::from(vec![b't'; size]);
        let messages = (0..n).map(|i| {
            let task = Task { id: TaskId::new(format!("t{i}")).expect("valid"), kind: None, body: body.clone() };
            let raw = encode_task(&task);
            (publish_properties(&raw).expect("task properties"), raw.body.to_vec())
        });
        publisher.publish_all("", &queue, messages, 1000).await?;
        publisher.channel.close().await?;
        conn.close().await?;
        let ready = self.ready(endpoint).await?;
        if ready as usize != n {
            return Err(BenchError::Check(format!("prefill: {} holds {ready} tasks, wanted {n}", queue)));
        }
        Ok(())
    }

    /// Tasks ready in `endpoint`'s queue (unacked ones are not counted).
    pub async fn ready(&self, endpoint: &EndpointId) -> Result<u32, BenchError> {
        let conn = self.connect().await?;
        let ch = conn.open_channel(None).await?;
        let declared =
            ch.queue_declare(QueueDeclareArguments::new(&endpoint.task_queue()).passive(true).finish()).await?;
        ch.close().await?;
        conn.close().await?;
        Ok(declared.map_or(0, |(_, ready, _)| ready))
    }

    /// Deletes the `results` queue: every result published from now on is
    /// unroutable (returned), so it stays in its endpoint's outbox.
    pub async fn drop_results(&self) -> Result<(), BenchError> {
        let conn = self.connect().await?;
        let ch = conn.open_channel(None).await?;
        ch.queue_delete(QueueDeleteArguments::new(tasklane_io::service::RESULTS)).await?;
        ch.close().await?;
        conn.close().await?;
        Ok(())
    }

    /// Empties the `results` queue between runs, so each run starts alike.
    pub async fn purge_results(&self) -> Result<(), BenchError> {
        let conn = self.connect().await?;
        let ch = conn.open_channel(None).await?;
        ch.queue_purge(QueuePurgeArguments::new(tasklane_io::service::RESULTS)).await?;
        ch.close().await?;
        conn.close().await?;
        Ok(())
    }
}

/// A result message exactly as tasklane publishes it (same properties,
/// headers and body size), for the raw sides.
pub fn result_message(endpoint: &EndpointId, task: &str) -> (BasicProperties, Vec<u8>) {
    let result = TaskResult {
        task: TaskId::new(task).expect("valid"),
        status: ResultStatus::Ok,
        body: Bytes::from(vec![b'r'; BODY_LEN]),
    };
    let raw = encode_result(endpoint, &result);
    (publish_properties(&raw).expect("result properties"), raw.body.to_vec())
}

/// A channel in confirm mode that tracks its confirm tags.
pub struct Publisher {
    pub channel: Channel,
    events: UnboundedReceiver<((), ChannelEvent)>,
    published: u64,
    unconfirmed: BTreeSet<u64>,
}

impl Publisher {
    /// Opens a confirm-mode channel; returns it with the time it took.
    pub async fn open(conn: &Connection) -> Result<(Self, Duration), BenchError> {
        let t0 = Instant::now();
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (channel, _close) = amqp::open_channel(conn, (), tx).await?;
        channel.confirm_select(ConfirmSelectArguments::default()).await?;
        Ok((Self { channel, events, published: 0, unconfirmed: BTreeSet::new() }, t0.elapsed()))
    }

    /// Publishes one message (persistent properties come with it), mandatory.
    pub async fn publish(
        &mut self,
        exchange: &str,
        key: &str,
        props: BasicProperties,
        body: Vec<u8>,
    ) -> Result<(), BenchError> {
        let args = BasicPublishArguments::new(exchange, key).mandatory(true).finish();
        self.channel.basic_publish(props, body, args).await?;
        self.published += 1;
        self.unconfirmed.insert(self.published);
        Ok(())
    }

    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }

    /// Applies one confirm event; nacks and returns are failures here.
    fn on_event(&mut self, event: ChannelEvent) -> Result<(), BenchError> {
        match event {
            ChannelEvent::PublishAck { tag, multiple: true } => {
                let rest = self.unconfirmed.split_off(&(tag + 1));
                self.unconfirmed = rest;
            }
            ChannelEvent::PublishAck { tag, multiple: false } => {
                self.unconfirmed.remove(&tag);
            }
            other => return Err(BenchError::Check(format!("publisher: unexpected {other:?}"))),
        }
        Ok(())
    }

    /// Waits for at least one confirm, then takes every one already there.
    pub async fn confirms(&mut self) -> Result<(), BenchError> {
        let (_, event) = self.events.recv().await.ok_or_else(|| BenchError::Check("publisher channel gone".into()))?;
        self.on_event(event)?;
        while let Ok((_, event)) = self.events.try_recv() {
            self.on_event(event)?;
        }
        Ok(())
    }

    /// Takes the confirms that are already there, without waiting.
    pub fn poll_confirms(&mut self) -> Result<(), BenchError> {
        while let Ok((_, event)) = self.events.try_recv() {
            self.on_event(event)?;
        }
        Ok(())
    }

    /// Publishes everything with at most `window` unconfirmed, and waits for
    /// the last confirm.
    pub async fn publish_all(
        &mut self,
        exchange: &str,
        key: &str,
        messages: impl Iterator<Item = (BasicProperties, Vec<u8>)>,
        window: usize,
    ) -> Result<(), BenchError> {
        for (props, body) in messages {
            while self.unconfirmed() >= window {
                self.confirms().await?;
            }
            self.publish(exchange, key, props, body).await?;
            self.poll_confirms()?;
        }
        while self.unconfirmed() > 0 {
            self.confirms().await?;
        }
        Ok(())
    }
}
