//! The raw amqprs sides: what a hand-written amqprs client does without a
//! spool, as the reference every tasklane figure is divided by.

use std::time::{Duration, Instant};

use amqprs::channel::ConsumerMessage;
use amqprs::channel::{BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel};
use amqprs::connection::Connection;
use tasklane_core::EndpointId;
use tasklane_io::service::RESULTS;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::broker::{result_message, Broker, Publisher};
use crate::latency::{stamp_of, Schedule, Submitter};
use crate::BenchError;

/// When the raw consumer acks.
#[derive(Clone, Copy, Debug)]
pub enum AckMode {
    /// `basic.ack` per delivery.
    PerMessage,
    /// `multiple` ack every so many deliveries (and at the end).
    Every(usize),
    /// `multiple` ack whenever the deliveries that arrived are drained: one
    /// ack per burst, adapting to what the prefetch window lets through.
    Burst,
}

/// A consuming channel with manual acks and a prefetch window.
struct Consumer {
    conn: Connection,
    channel: Channel,
    tag: String,
    rx: UnboundedReceiver<ConsumerMessage>,
}

impl Consumer {
    async fn open(conn: Connection, endpoint: &EndpointId, prefetch: u16) -> Result<Self, BenchError> {
        let channel = conn.open_channel(None).await?;
        channel.basic_qos(BasicQosArguments::new(0, prefetch, false)).await?;
        let args = BasicConsumeArguments::new(&endpoint.task_queue(), "").manual_ack(true).finish();
        let (tag, rx) = channel.basic_consume_rx(args).await?;
        Ok(Self { conn, channel, tag, rx })
    }

    async fn next(&mut self) -> Result<(u64, ConsumerMessage), BenchError> {
        let msg = self.rx.recv().await.ok_or_else(|| BenchError::Check("raw consumer: channel gone".into()))?;
        let tag =
            msg.deliver.as_ref().map(|d| d.delivery_tag()).ok_or_else(|| BenchError::Check("no deliver".into()))?;
        Ok((tag, msg))
    }

    async fn ack(&self, tag: u64, multiple: bool) -> Result<(), BenchError> {
        Ok(self.channel.basic_ack(BasicAckArguments::new(tag, multiple)).await?)
    }

    async fn close(self) -> Result<(), BenchError> {
        self.channel.basic_cancel(BasicCancelArguments::new(&self.tag)).await?;
        self.channel.close().await?;
        self.conn.close().await?;
        Ok(())
    }
}

/// Consumes and acks `n` prefilled tasks; the time from `consume-ok` to the
/// last ack sent. Checks afterwards that the queue is empty.
pub async fn consume(
    broker: &Broker,
    endpoint: &EndpointId,
    n: usize,
    prefetch: u16,
    mode: AckMode,
) -> Result<Duration, BenchError> {
    let mut c = Consumer::open(broker.connect().await?, endpoint, prefetch).await?;
    let t0 = Instant::now();
    let mut unacked = 0usize;
    for got in 1..=n {
        let (tag, msg) = c.next().await?;
        std::hint::black_box(msg.content.as_deref());
        unacked += 1;
        let last = got == n;
        let multiple = match mode {
            AckMode::PerMessage => Some(false),
            AckMode::Every(k) => (unacked >= k || last).then_some(true),
            AckMode::Burst => (c.rx.is_empty() || last).then_some(true),
        };
        if let Some(multiple) = multiple {
            c.ack(tag, multiple).await?;
            unacked = 0;
        }
    }
    let elapsed = t0.elapsed();
    c.close().await?;
    expect_drained(broker, endpoint).await?;
    Ok(elapsed)
}

/// Publishes `n` results to `results` as tasklane does (persistent,
/// mandatory, same headers and size) under confirms, at most `window`
/// unconfirmed; the time from the first publish to the last confirm.
pub async fn publish(broker: &Broker, endpoint: &EndpointId, n: usize, window: usize) -> Result<Duration, BenchError> {
    let conn = broker.connect().await?;
    let (mut p, _) = Publisher::open(&conn).await?;
    let key = endpoint.result_key();
    let t0 = Instant::now();
    let messages = (0..n).map(|i| result_message(endpoint, &format!("t{i}")));
    p.publish_all(RESULTS, &key, messages, window).await?;
    let elapsed = t0.elapsed();
    p.channel.close().await?;
    conn.close().await?;
    Ok(elapsed)
}

/// The full pipe without a spool: consume a task, publish its result under
/// confirms (at most `window` unconfirmed), ack tasks with one `multiple`
/// ack per burst as soon as they arrive (tasks live in memory only). The
/// time from `consume-ok` to the last result's confirm.
pub async fn pipe(
    broker: &Broker,
    endpoint: &EndpointId,
    n: usize,
    prefetch: u16,
    window: usize,
) -> Result<Duration, BenchError> {
    let conn = broker.connect().await?;
    let (mut p, _) = Publisher::open(&conn).await?;
    let mut c = Consumer::open(conn, endpoint, prefetch).await?;
    let key = endpoint.result_key();
    let t0 = Instant::now();
    let mut got = 0usize;
    while got < n || p.unconfirmed() > 0 {
        if got < n && p.unconfirmed() < window {
            tokio::select! {
                biased;
                confirm = p.confirms(), if p.unconfirmed() > 0 => confirm?,
                next = c.next() => {
                    let (tag, msg) = next?;
                    let id = msg.basic_properties.as_ref().and_then(|p| p.message_id()).cloned().unwrap_or_default();
                    let (props, body) = result_message(endpoint, &id);
                    p.publish(RESULTS, &key, props, body).await?;
                    got += 1;
                    if c.rx.is_empty() || got == n {
                        c.ack(tag, true).await?;
                    }
                }
            }
        } else {
            p.confirms().await?;
        }
    }
    let elapsed = t0.elapsed();
    p.channel.close().await?;
    c.close().await?;
    expect_drained(broker, endpoint).await?;
    Ok(elapsed)
}

/// Latency from submit to delivery for a raw consumer, under `schedule`.
pub async fn latency(
    broker: &Broker,
    endpoint: &EndpointId,
    prefetch: u16,
    schedule: Schedule,
) -> Result<Vec<Duration>, BenchError> {
    let mut c = Consumer::open(broker.connect().await?, endpoint, prefetch).await?;
    let submitter = Submitter::start(broker, endpoint, schedule).await?;
    let mut samples = Vec::with_capacity(schedule.count);
    while samples.len() < schedule.count {
        let (tag, msg) = c.next().await?;
        let now = Instant::now();
        let sent = msg.content.as_deref().and_then(stamp_of).ok_or_else(|| BenchError::Check("no stamp".into()))?;
        samples.push(now.saturating_duration_since(sent));
        if c.rx.is_empty() {
            c.ack(tag, true).await?;
        }
    }
    submitter.finish().await?;
    c.close().await?;
    expect_drained(broker, endpoint).await?;
    Ok(samples)
}

async fn expect_drained(broker: &Broker, endpoint: &EndpointId) -> Result<(), BenchError> {
    match broker.ready(endpoint).await? {
        0 => Ok(()),
        left => Err(BenchError::Check(format!("{} still holds {left} tasks", endpoint.task_queue()))),
    }
}
