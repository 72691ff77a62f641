//! Handoff latency: a submitter that publishes stamped tasks on a fixed
//! schedule, and percentiles of what the receiving side measured.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use amqprs::channel::{BasicPublishArguments, Channel};
use amqprs::connection::Connection;
use amqprs::{BasicProperties, DELIVERY_MODE_PERSISTENT};
use serde::Serialize;
use tasklane_core::EndpointId;
use tokio::task::JoinHandle;

use crate::broker::{Broker, BODY_LEN};
use crate::BenchError;

/// Every stamp counts from here (one process, one clock).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The send time written into a task body's first 8 bytes.
pub fn stamp_of(body: &[u8]) -> Option<Instant> {
    let nanos = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    Some(base() + Duration::from_nanos(nanos))
}

/// `count` tasks at `rate` per second.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Schedule {
    pub rate: u32,
    pub count: usize,
}

/// Publishes stamped persistent tasks to an endpoint's queue on schedule,
/// from its own connection.
pub struct Submitter {
    task: JoinHandle<Result<(), BenchError>>,
}

impl Submitter {
    pub async fn start(broker: &Broker, endpoint: &EndpointId, schedule: Schedule) -> Result<Self, BenchError> {
        let conn = broker.connect().await?;
        let channel = conn.open_channel(None).await?;
        let queue = endpoint.task_queue();
        let task = tokio::spawn(run(conn, channel, queue, schedule));
        Ok(Self { task })
    }

    pub async fn finish(self) -> Result<(), BenchError> {
        self.task.await.map_err(|e| BenchError::Check(format!("submitter: {e}")))?
    }
}

async fn run(conn: Connection, channel: Channel, queue: String, schedule: Schedule) -> Result<(), BenchError> {
    let period = Duration::from_secs(1) / schedule.rate;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let args = BasicPublishArguments::new("", &queue).mandatory(true).finish();
    for i in 0..schedule.count {
        tokio::time::sleep_until(start + period * i as u32).await;
        let mut props = BasicProperties::default();
        props.with_delivery_mode(DELIVERY_MODE_PERSISTENT).with_message_id(&format!("lat-{i}"));
        let mut body = vec![b'l'; BODY_LEN];
        let nanos = base().elapsed().as_nanos() as u64;
        body[..8].copy_from_slice(&nanos.to_be_bytes());
        channel.basic_publish(props.finish(), body, args.clone()).await?;
    }
    channel.close().await?;
    conn.close().await?;
    Ok(())
}

/// Percentiles of a latency run, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Leaves out the first `warmup` samples (connection and cache warm-up).
    pub fn of(samples: &[Duration], warmup: usize) -> Self {
        let mut v: Vec<Duration> = samples.iter().skip(warmup).copied().collect();
        v.sort();
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1e3
        };
        Self { samples: v.len(), p50_ms: at(0.50), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}
