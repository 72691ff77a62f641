//! Poison quarantine: finding and moving out of a queue the messages that
//! amqprs cannot decode, on a raw AMQP 0-9-1 connection of our own.
//!
//! amqprs 2.1.5 reads every AMQP string into a Rust `String`. A delivery
//! whose `message_id`, another short-string property, a header name or a
//! string header value (nested ones too) is not UTF-8 fails its frame
//! decoder, which drops the whole connection; the broker requeues the
//! message and delivers it to the next connection, forever (SPEC §4,
//! poison messages). amqprs is not patched (SPEC §1). Instead, when the
//! endpoint suspects a poison message at the head of its queue, it calls
//! [`scan`], which:
//!
//! 1. opens a connection of its own (TCP, or TLS for `amqps://` with the
//!    same [`crate::amqp::TlsOptions`]; PLAIN login; the URL's vhost);
//! 2. takes up to `max` messages from the head of the queue,
//!    unacknowledged (`basic.get`, or a consumer where that is refused);
//! 3. judges each by amqprs' decoding rules ([`judge`]);
//! 4. publishes a copy of each poison message (its properties and body
//!    byte for byte, plus the headers `tasklane-reason: undecodable`,
//!    `tasklane-reason-detail: <why>` and `tasklane-queue: <queue>`) to the
//!    exchange `tasklane.dead` under a publisher confirm, and only then acks
//!    it; if the broker refuses that publish (403, the user may not write
//!    there), rejects it without requeue instead, so that the broker
//!    dead-letters it through the queue's dead-letter exchange (which
//!    `provision` sets to `tasklane.dead`; the broker adds its `x-death`
//!    header, there is no reason header then);
//! 5. gives every other message back (`basic.nack`, requeue), so they
//!    return to the head of the queue in their order.
//!
//! Nothing is lost: until it is acked, a message belongs to the broker, and
//! a crash, a lost connection, the deadline, or dropping the future mid-scan
//! (it is cancel-safe: the socket closes) makes the broker requeue every
//! message the scan held. The worst case is a copy in `tasklane.dead` whose
//! original was requeued because its ack did not get through: a duplicate
//! there, which the next scan makes again.
//!
//! Broker behaviour found on RabbitMQ 3.10 (tests in
//! `io/tests/quarantine_broker.rs` and `quarantine_access.rs`):
//! - `basic.get` works on classic queues, also beside another connection's
//!   active single consumer or exclusive consumer; the consumer then gets
//!   the good messages in order.
//! - On a quorum queue with single active consumer (how `provision`
//!   declares `E.tasks`) `basic.get` is refused (405 RESOURCE_LOCKED); the
//!   scan consumes instead and must be the active consumer: it waits for
//!   that until 3 s before its deadline (it is at once when nobody else
//!   consumes, and as soon as the active consumer's connection dies), then
//!   gives up with [`ScanErrorKind::NotActive`] having taken nothing.
//! - Given back, messages keep their order on both queue types.
//! - On a quorum queue every message given back counts one more delivery
//!   (`x-delivery-count`), so a scan brings the good messages it returns one
//!   step closer to a delivery limit.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tasklane_io::amqp::{quarantine, ConnectOptions};
//! let opts = ConnectOptions::parse("amqp://ep-1:secret@127.0.0.1:5672/%2f")?;
//! let outcome = quarantine::scan(&opts, "ep-1.tasks", 10).await?;
//! for q in &outcome.quarantined {
//!     eprintln!("message {} quarantined: {}", q.position, q.reason);
//! }
//! # Ok(()) }
//! ```

mod conn;
mod frame;
mod judge;
mod methods;
pub mod props;
mod scan;
mod take;
mod wire;

use std::time::Duration;

use tokio::time::Instant;

pub use judge::{amqprs_decodes, judge, Verdict, REASON_LABEL};
pub use scan::QUEUE_HEADER;

use super::ConnectOptions;

/// How long [`scan`] may take, connecting included.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

/// What a scan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Messages taken from the head of the queue and judged.
    pub scanned: usize,
    /// Messages given back to the queue (good ones, and poison ones in
    /// `kept`), in their order.
    pub returned: usize,
    /// Poison messages moved out of the queue, in queue order.
    pub quarantined: Vec<Quarantined>,
    /// Poison messages left in the queue because they could be neither
    /// copied to `tasklane.dead` nor safely rejected.
    pub kept: Vec<Kept>,
    /// Whether the queue ran out of ready messages before `max`.
    pub reached_end: bool,
    /// How long the scan took, connecting included.
    pub elapsed: Duration,
}

/// A poison message moved out of the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it was: 0 is the head of the queue.
    pub position: usize,
    /// Its `message_id` bytes, when its properties could be read at all.
    pub message_id: Option<Vec<u8>>,
    /// Why amqprs cannot decode it, in one line.
    pub reason: String,
    /// Where it went.
    pub how: Disposition,
}

/// How a poison message left the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// A copy with the reason headers is in `tasklane.dead` (confirmed),
    /// then the original was acked.
    PublishedWithReason,
    /// Rejected without requeue: the broker dead-letters it through the
    /// queue's dead-letter exchange (the copy could not be published: no
    /// permission, a body over 512 MiB, or properties beyond decoding).
    RejectedToDeadLetterExchange,
}

/// A poison message left in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Where it was: 0 is the head of the queue.
    pub position: usize,
    /// Its `message_id` bytes, when its properties could be read at all.
    pub message_id: Option<Vec<u8>>,
    /// Why amqprs cannot decode it.
    pub reason: String,
    /// Why it could not be moved (e.g. `tasklane.dead` does not exist).
    pub error: String,
}

/// A message read by [`peek`], as the broker holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Peeked {
    /// Exchange name and routing key it was published with, raw.
    pub exchange: Vec<u8>,
    pub routing_key: Vec<u8>,
    /// Whether the broker had delivered it before.
    pub redelivered: bool,
    /// The encoded properties, verbatim.
    pub raw_properties: Vec<u8>,
    /// The properties, decoded, when amqprs' structure rules allow.
    pub properties: Option<props::Properties>,
    pub body: Vec<u8>,
}

/// Why a scan stopped. What it did before is in `outcome`: its quarantined
/// messages are out of the queue, everything else it held went back.
#[derive(Clone, Debug, thiserror::Error)]
#[error("quarantine scan of queue {queue:?}: {kind}")]
pub struct ScanError {
    /// The queue scanned.
    pub queue: String,
    /// What went wrong.
    pub kind: ScanErrorKind,
    /// What the scan did before it stopped.
    pub outcome: ScanOutcome,
}

/// What went wrong in a scan.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanErrorKind {
    /// The TLS settings cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// No connection: resolving, TCP or the TLS handshake failed.
    #[error("cannot connect to {url}: {detail}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// Why.
        detail: String,
    },
    /// The broker closed the connection (a wrong password: 403; no access
    /// to the vhost: 530).
    #[error("the broker closed the connection: {code} {text}")]
    ConnectionClosed {
        /// AMQP reply code.
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The broker closed a channel in answer to an operation (no such
    /// queue: 404; no permission: 403).
    #[error("{op} failed: the broker closed the channel: {code} {text}")]
    ChannelClosed {
        /// The operation, e.g. `basic.get`.
        op: &'static str,
        /// AMQP reply code.
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The broker blocked the connection (`connection.blocked`, a memory or
    /// disk alarm) while a copy waited for its confirm.
    #[error("the broker blocked the connection: {0}")]
    Blocked(String),
    /// On a queue where `basic.get` is refused (a quorum queue with single
    /// active consumer), the scan's consumer did not become the active one
    /// (another connection's consumer stayed active) and got nothing.
    #[error("another consumer of the queue stayed active; no message came in {waited:?} ({ready} ready)")]
    NotActive {
        /// Messages ready in the queue.
        ready: u32,
        /// How long the scan waited.
        waited: Duration,
    },
    /// The broker sent something that is not the expected AMQP 0-9-1.
    #[error("the broker broke the protocol: {0}")]
    Protocol(String),
    /// The connection failed (reset, closed by the broker).
    #[error("connection lost: {0}")]
    Io(String),
    /// The scan did not finish within its deadline.
    #[error("not finished within {0:?}")]
    Deadline(Duration),
}

/// Scans up to `max` messages from the head of `queue` and quarantines the
/// poison ones (see the module docs), within [`DEFAULT_DEADLINE`].
pub async fn scan(opts: &ConnectOptions, queue: &str, max: usize) -> Result<ScanOutcome, ScanError> {
    scan_within(opts, queue, max, DEFAULT_DEADLINE).await
}

/// [`scan`] with a deadline of `limit` for the whole scan.
pub async fn scan_within(
    opts: &ConnectOptions,
    queue: &str,
    max: usize,
    limit: Duration,
) -> Result<ScanOutcome, ScanError> {
    let start = Instant::now();
    let mut outcome = ScanOutcome::default();
    let result = async {
        if max == 0 {
            return Ok(());
        }
        let mut conn = conn::RawConn::open(opts, &connection_name(opts), start + limit, limit).await?;
        tracing::debug!(queue, peer = %conn.peer, max, "quarantine scan connected");
        scan::run(&mut conn, queue, max, &mut outcome).await?;
        // Everything is settled; a lost close-ok changes nothing.
        let _ = conn.close().await;
        Ok(())
    }
    .await;
    outcome.elapsed = start.elapsed();
    result.map(|()| outcome.clone()).map_err(|kind| ScanError { queue: queue.to_string(), kind, outcome })
}

/// Reads up to `max` messages from the head of `queue`, raw, and gives them
/// all back (they come back marked redelivered): for tools and tests that
/// must look at messages amqprs cannot decode, e.g. in `tasklane.dead`.
pub async fn peek(opts: &ConnectOptions, queue: &str, max: usize, limit: Duration) -> Result<Vec<Peeked>, ScanError> {
    let start = Instant::now();
    let result = async {
        let mut conn = conn::RawConn::open(opts, &connection_name(opts), start + limit, limit).await?;
        let got = scan::peek(&mut conn, queue, max).await?;
        let _ = conn.close().await;
        Ok(got)
    }
    .await;
    result.map_err(|kind| ScanError { queue: queue.to_string(), kind, outcome: ScanOutcome::default() })
}

fn connection_name(opts: &ConnectOptions) -> String {
    format!("{} (quarantine)", opts.connection_name.as_deref().unwrap_or("tasklane"))
}

#[cfg(test)]
mod hostile_tests;
