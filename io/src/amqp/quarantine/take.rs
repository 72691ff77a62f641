//! Taking messages from the head of a queue, one at a time, in order.
//!
//! `basic.get` where the broker allows it. RabbitMQ 3.10 refuses it on a
//! quorum queue with single active consumer (405 RESOURCE_LOCKED, "basic.get
//! operations are not supported by quorum queues with single active
//! consumer"), which is how `provision` declares `E.tasks`: there the scan
//! consumes instead, with a prefetch window as large as the scan, and waits
//! to become the active consumer (which it is at once when no endpoint is
//! attached, and as soon as the endpoint's connection dies otherwise).

use std::time::Duration;

use tokio::time::Instant;

use super::conn::RawConn;
use super::methods::{self as m, GetOk};
use super::ScanErrorKind as Kind;

/// The channel messages are taken and settled on.
pub const TAKE: u16 = 1;
const TAG: &str = "tasklane-quarantine";
/// After the first delivery, a pause this long means the queue has no more.
const QUIET: Duration = Duration::from_millis(500);
/// Time kept back from the deadline, when waiting to become the active
/// consumer, to settle and close.
const SETTLE_MARGIN: Duration = Duration::from_secs(3);

pub(super) enum Taker {
    /// `basic.get`; the first message's `get-ok` came with the probe, and
    /// its content is the next thing on the wire.
    Get { first: Option<GetOk> },
    /// A consumer: how many messages were ready when it started (a quorum
    /// queue's count may lag behind messages just given back), and how
    /// many deliveries it had.
    Consume { ready: u32, got: usize },
}

impl Taker {
    /// Opens the channel and picks how to take from `queue`.
    pub async fn open(conn: &mut RawConn, queue: &str, max: usize) -> Result<Self, Kind> {
        conn.open_channel(TAKE, false).await?;
        // The first `basic.get` finds out whether the broker allows it.
        let expect = [m::BASIC_GET_OK, m::BASIC_GET_EMPTY];
        match conn.rpc(TAKE, "basic.get", m::BASIC_GET, m::get(queue), &expect).await {
            Ok((m::BASIC_GET_EMPTY, _)) => Ok(Taker::Get { first: None }),
            Ok((_, args)) => {
                let first = m::get_ok(&args).map_err(|e| Kind::Protocol(e.to_string()))?;
                Ok(Taker::Get { first: Some(first) })
            }
            Err(Kind::ChannelClosed { code: 405, .. }) => {
                conn.open_channel(TAKE, false).await?;
                let ready = declare(conn, queue).await?;
                let prefetch = max.min(u16::MAX as usize) as u16;
                conn.rpc(TAKE, "basic.qos", m::BASIC_QOS, m::qos(prefetch), &[m::BASIC_QOS_OK]).await?;
                let consume = m::consume(queue, TAG);
                conn.rpc(TAKE, "basic.consume", m::BASIC_CONSUME, consume, &[m::BASIC_CONSUME_OK]).await?;
                Ok(Taker::Consume { ready, got: 0 })
            }
            Err(e) => Err(e),
        }
    }

    /// Most messages one scan can take this way.
    pub fn max(&self, max: usize) -> usize {
        match self {
            Taker::Consume { .. } => max.min(u16::MAX as usize),
            _ => max,
        }
    }

    /// The next message's method (its content follows), `None` at the end
    /// of the queue.
    pub async fn next(&mut self, conn: &mut RawConn, queue: &str) -> Result<Option<GetOk>, Kind> {
        match self {
            Taker::Get { first } if first.is_some() => Ok(first.take()),
            Taker::Get { .. } => {
                let expect = [m::BASIC_GET_OK, m::BASIC_GET_EMPTY];
                let (id, args) = conn.rpc(TAKE, "basic.get", m::BASIC_GET, m::get(queue), &expect).await?;
                if id == m::BASIC_GET_EMPTY {
                    return Ok(None);
                }
                m::get_ok(&args).map(Some).map_err(|e| Kind::Protocol(e.to_string()))
            }
            Taker::Consume { ready, got } => {
                let until = match (*got, *ready) {
                    (0, 1..) => conn.deadline().checked_sub(SETTLE_MARGIN).unwrap_or_else(Instant::now),
                    _ => Instant::now() + QUIET,
                };
                let Some((_, args)) = conn.expect_until(TAKE, "basic.consume", &[m::BASIC_DELIVER], until).await?
                else {
                    if *got == 0 && *ready > 0 {
                        let ready = declare(conn, queue).await?;
                        let waited = conn.deadline().saturating_duration_since(Instant::now());
                        return Err(Kind::NotActive { ready, waited: conn.limit().saturating_sub(waited) });
                    }
                    return Ok(None);
                };
                *got += 1;
                m::deliver(&args).map(Some).map_err(|e| Kind::Protocol(e.to_string()))
            }
        }
    }

    /// Stops taking. A consumer is cancelled first; messages delivered
    /// meanwhile stay unacked, not judged: their tags are returned, to be
    /// given back with the rest.
    pub async fn stop(&mut self, conn: &mut RawConn) -> Result<Vec<u64>, Kind> {
        let Taker::Consume { .. } = self else { return Ok(Vec::new()) };
        conn.tell(TAKE, m::BASIC_CANCEL, m::cancel(TAG)).await?;
        let mut late = Vec::new();
        loop {
            let (id, args) = conn.expect(TAKE, "basic.cancel", &[m::BASIC_CANCEL_OK, m::BASIC_DELIVER]).await?;
            if id == m::BASIC_CANCEL_OK {
                return Ok(late);
            }
            let d = m::deliver(&args).map_err(|e| Kind::Protocol(e.to_string()))?;
            conn.content(TAKE, |_, _| false).await?;
            late.push(d.delivery_tag);
        }
    }
}

/// The number of messages ready in `queue`; a missing queue is the
/// broker's 404.
async fn declare(conn: &mut RawConn, queue: &str) -> Result<u32, Kind> {
    let declare = m::declare_passive(queue);
    let (_, args) = conn.rpc(TAKE, "queue.declare", m::QUEUE_DECLARE, declare, &[m::QUEUE_DECLARE_OK]).await?;
    m::declare_ok_ready(&args).map_err(|e| Kind::Protocol(e.to_string()))
}
