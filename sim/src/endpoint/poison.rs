//! Poison deliveries in the simulation: a message the endpoint's client
//! cannot decode. amqprs drops its whole connection on a `message_id` or
//! header that is not UTF-8; the simulated connection does the same on a
//! message carrying [`UNDECODABLE`]. And the scan core asks for
//! (`Amqp::Quarantine`), played by a client of its own as the io crate's
//! raw AMQP client plays it against RabbitMQ.

use std::time::Duration;

use tasklane_core::Input;

use crate::wire::client::{Client, ClientError};
use crate::wire::{ClientMethod, Message, ServerMethod};

/// Header that makes a delivery undecodable for the endpoint's client.
pub const UNDECODABLE: &str = "sim-undecodable";

/// How long the scan waits for one more delivery before it takes the head
/// of the queue as seen.
const QUIET: Duration = Duration::from_millis(300);
/// Bound of the scan's connect and of each broker answer.
const ANSWER: Duration = Duration::from_secs(2);
/// The scan's channel.
const CH: u16 = 1;

/// The broker client name of scan `scan` by the endpoint whose client
/// names start with `prefix`.
pub fn scan_client(prefix: &str, scan: u64) -> String {
    format!("{prefix}/scan-{scan}")
}

/// Whether a broker client is a poison scan. A scan holds messages for a
/// moment and hands none to an application, so it does not count as a
/// consumer of the queue for the oracles (the io crate's scan uses
/// `basic.get`, which RabbitMQ allows beside an exclusive consumer).
pub fn is_scan_client(name: &str) -> bool {
    name.rsplit('/').next().is_some_and(|last| last.starts_with("scan-"))
}

/// Whether the endpoint's client fails to decode `m`.
pub fn undecodable(m: &Message) -> bool {
    m.headers.contains_key(UNDECODABLE)
}

/// Scan `scan`: consumes up to `max` messages of the head of `queue` on
/// `addr`, rejects the undecodable ones without requeue (the queue's
/// dead-letter exchange takes them to `tasklane.dead`, headers kept) and
/// gives the others back by closing the connection unacked.
pub async fn scan(scan: u64, addr: (String, u16), name: String, queue: String, max: u32) -> Input {
    let mut quarantined = Vec::new();
    let mut scanned = 0;
    let error = run(addr, &name, &queue, max, &mut quarantined, &mut scanned).await.err().map(|e| e.to_string());
    Input::QuarantineDone { scan, quarantined, scanned, error }
}

async fn run(
    addr: (String, u16),
    name: &str,
    queue: &str,
    max: u32,
    quarantined: &mut Vec<String>,
    scanned: &mut u32,
) -> Result<(), ClientError> {
    let mut c = Client::connect((addr.0.as_str(), addr.1), name, 0, ANSWER).await?;
    c.open_channel(CH, ANSWER).await?;
    c.send(ClientMethod::Qos { ch: CH, prefetch: max.min(u32::from(u16::MAX)) as u16 });
    expect(&mut c, |m| matches!(m, ServerMethod::QosOk { .. })).await?;
    c.send(ClientMethod::Consume { ch: CH, queue: queue.to_owned(), exclusive: false });
    expect(&mut c, |m| matches!(m, ServerMethod::ConsumeOk { .. })).await?;
    while *scanned < max {
        c.send(ClientMethod::Heartbeat);
        match c.next(QUIET).await {
            Ok(ServerMethod::Deliver { tag, message, .. }) => {
                *scanned += 1;
                if undecodable(&message) {
                    c.send(ClientMethod::Reject { ch: CH, tag, requeue: false });
                    quarantined.push(message.message_id.unwrap_or_else(|| "-".into()));
                }
            }
            // Cancelled: another consumer takes the queue; give everything
            // back at once.
            Ok(m @ ServerMethod::Cancel { .. }) => {
                c.close(Duration::ZERO).await;
                return Err(ClientError::Unexpected(Box::new(m)));
            }
            Ok(ServerMethod::ChannelClose { code, text, .. }) => {
                return Err(ClientError::Unexpected(Box::new(ServerMethod::ChannelClose { ch: CH, code, text })))
            }
            Ok(_) => {}
            Err(ClientError::Timeout) => break,
            Err(e) => return Err(e),
        }
    }
    c.close(Duration::from_millis(200)).await;
    Ok(())
}

async fn expect(c: &mut Client, want: impl Fn(&ServerMethod) -> bool) -> Result<(), ClientError> {
    match c.next(ANSWER).await? {
        m if want(&m) => Ok(()),
        other => Err(ClientError::Unexpected(Box::new(other))),
    }
}
