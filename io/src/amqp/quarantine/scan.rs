//! The scan: take messages from the head of a queue ([`super::take`]),
//! judge each, move the poison ones to `tasklane.dead` and give the rest
//! back, in order.
//!
//! In three steps, so that nothing on the wire interleaves: take up to
//! `max` messages on channel 1, holding the poison ones (a consumer's
//! deliveries keep coming while it takes); then publish each poison
//! message's copy on channel 2 under a confirm (a refused publish closes
//! only channel 2, so what channel 1 holds stays held); then settle on
//! channel 1: ack the copied ones, reject the others without requeue, and
//! give everything else back with one `basic.nack` (multiple, requeue).
//! Settling waits for the end because a consumer's prefetch window must
//! not open while it takes.

use super::conn::RawConn;
use super::judge::{judge, Verdict, REASON_LABEL};
use super::methods::{self as m};
use super::props;
use super::take::{Taker, TAKE};
use super::wire::Writer;
use super::{Disposition, Kept, Peeked, Quarantined, ScanErrorKind as Kind, ScanOutcome};
use crate::service::DEAD;

const COPY: u16 = 2;
/// Header naming the queue a quarantined message came from.
pub const QUEUE_HEADER: &str = "tasklane-queue";
/// Largest body copied to `tasklane.dead`, and most body bytes held for
/// copies in one scan; a poison message beyond either is rejected to the
/// queue's dead-letter exchange instead.
const MAX_COPY_BODY: u64 = 512 << 20;
const MAX_HELD_BYTES: u64 = 512 << 20;

/// A poison message taken and not settled yet.
struct Held {
    tag: u64,
    position: usize,
    message_id: Option<Vec<u8>>,
    detail: String,
    /// Its properties and body, when a copy can be made of them.
    copy: Option<(Vec<u8>, Vec<u8>)>,
}

/// Whether copies can be published to `tasklane.dead`.
enum Publishing {
    /// Channel 2 is not open yet.
    NotYet,
    Open,
    /// The broker refused (403): reject to the dead-letter exchange instead.
    Refused,
    /// Publishing failed otherwise (no such exchange, unroutable, nacked):
    /// rejecting could drop the message too, so poison stays in the queue.
    Broken(String),
}

struct Scan<'a> {
    conn: &'a mut RawConn,
    queue: &'a str,
    publishing: Publishing,
    /// The last delivery tag to give back (nack with requeue), if any.
    unsettled: Option<u64>,
    /// Poison messages to ack (copied) or reject, at the end.
    settle: Vec<(u64, Disposition)>,
    /// Publisher confirm sequence of channel 2.
    copies: u64,
}

/// Scans up to `max` messages of `queue`, recording into `out` as it goes
/// (so that a caller sees what was done even when this fails).
pub(super) async fn run(conn: &mut RawConn, queue: &str, max: usize, out: &mut ScanOutcome) -> Result<(), Kind> {
    let mut taker = Taker::open(conn, queue, max).await?;
    let max = taker.max(max);
    let mut s = Scan { conn, queue, publishing: Publishing::NotYet, unsettled: None, settle: Vec::new(), copies: 0 };
    let mut held = Vec::new();
    let mut held_bytes = 0;
    while out.scanned < max {
        let Some(get) = taker.next(s.conn, queue).await? else {
            out.reached_end = true;
            break;
        };
        let mut verdict = Verdict::Fine;
        let content = s
            .conn
            .content(TAKE, |raw, size| {
                verdict = judge(&get.exchange, &get.routing_key, raw);
                let copyable = matches!(&verdict, Verdict::Poison { props: Some(_), .. });
                let keep = copyable && size <= MAX_COPY_BODY && held_bytes + size <= MAX_HELD_BYTES;
                held_bytes += if keep { size } else { 0 };
                keep
            })
            .await?;
        let position = out.scanned;
        out.scanned += 1;
        match verdict {
            Verdict::Fine => {
                s.unsettled = Some(get.delivery_tag);
                out.returned += 1;
            }
            Verdict::Poison { detail, props } => held.push(Held {
                tag: get.delivery_tag,
                position,
                message_id: props.and_then(|p| p.message_id),
                detail,
                copy: content.body.map(|body| (content.props.to_vec(), body)),
            }),
        }
    }
    let late = taker.stop(s.conn).await?;
    out.returned += late.len();
    s.unsettled = s.unsettled.max(late.into_iter().max());
    for h in held {
        match s.quarantine(&h).await? {
            Ok(how) => {
                tracing::warn!(queue, position = h.position, reason = %h.detail, ?how, "poison message quarantined");
                s.settle.push((h.tag, how));
                out.quarantined.push(Quarantined {
                    position: h.position,
                    message_id: h.message_id,
                    reason: h.detail,
                    how,
                });
            }
            Err(error) => {
                tracing::error!(queue, position = h.position, reason = %h.detail, %error, "poison message left in the queue");
                s.unsettled = s.unsettled.max(Some(h.tag));
                out.returned += 1;
                out.kept.push(Kept { position: h.position, message_id: h.message_id, reason: h.detail, error });
            }
        }
    }
    s.finish().await
}

impl Scan<'_> {
    /// Decides how one poison message leaves the queue: a confirmed copy
    /// with the reason in `tasklane.dead` (then an ack), or a reject to the
    /// queue's dead-letter exchange. `Ok(Err(why))` when it stays.
    async fn quarantine(&mut self, h: &Held) -> Result<Result<Disposition, String>, Kind> {
        if let Some((raw, body)) = &h.copy {
            if matches!(self.publishing, Publishing::NotYet | Publishing::Open) {
                let mut entries = Writer::new();
                entries
                    .table_string(tasklane_core::message::REASON_HEADER, REASON_LABEL.as_bytes())
                    .table_string(crate::service::REASON_DETAIL_HEADER, h.detail.as_bytes())
                    .table_string(QUEUE_HEADER, self.queue.as_bytes());
                let copy = props::with_headers(raw, &entries.buf).map_err(|e| Kind::Protocol(e.to_string()))?;
                match self.publish_copy(&copy, body).await {
                    Ok(()) if !matches!(self.publishing, Publishing::Broken(_)) => {
                        return Ok(Ok(Disposition::PublishedWithReason))
                    }
                    Ok(()) => {}
                    Err(Kind::ChannelClosed { code: 403, text, .. }) => {
                        let queue = self.queue;
                        tracing::warn!(queue, %text, "no permission to publish to {DEAD}; rejecting to the dead-letter exchange");
                        self.publishing = Publishing::Refused;
                    }
                    Err(Kind::ChannelClosed { op, code, text }) => {
                        self.publishing = Publishing::Broken(format!("{op} to {DEAD}: {code} {text}"))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if let Publishing::Broken(why) = &self.publishing {
            return Ok(Err(why.clone()));
        }
        Ok(Ok(Disposition::RejectedToDeadLetterExchange))
    }

    /// Publishes `props` and `body` to `tasklane.dead` and waits for the
    /// confirm. A return (unroutable) or a nack makes publishing broken.
    async fn publish_copy(&mut self, props: &[u8], body: &[u8]) -> Result<(), Kind> {
        if matches!(self.publishing, Publishing::NotYet) {
            self.conn.open_channel(COPY, true).await?;
            self.publishing = Publishing::Open;
        }
        self.conn.publish(COPY, m::publish(DEAD, self.queue.as_bytes()), props, body).await?;
        self.copies += 1;
        let mut returned = None;
        loop {
            let (id, args) = self.conn.expect_confirm(COPY, &[m::BASIC_ACK, m::BASIC_NACK, m::BASIC_RETURN]).await?;
            if id == m::BASIC_RETURN {
                let (code, text) = m::close_reason(&args).map_err(|e| Kind::Protocol(e.to_string()))?;
                self.conn.content(COPY, |_, _| false).await?;
                returned = Some(format!("{code} {text}"));
                continue;
            }
            let (tag, multiple) = m::confirm(&args).map_err(|e| Kind::Protocol(e.to_string()))?;
            if tag != self.copies && !(multiple && tag > self.copies) {
                return Err(Kind::Protocol(format!(
                    "a confirm for tag {tag}, but {} is the one in flight",
                    self.copies
                )));
            }
            let failed = match (id, returned) {
                (m::BASIC_NACK, _) => "the broker nacked the copy".to_string(),
                (_, Some(why)) => format!("{DEAD} routes it nowhere (returned: {why})"),
                (_, None) => return Ok(()),
            };
            self.publishing = Publishing::Broken(failed);
            return Ok(());
        }
    }

    /// Gives back what is held, in order, and closes channel 1: its
    /// close-ok also says that every ack, reject and nack before it was
    /// taken.
    async fn finish(self) -> Result<(), Kind> {
        for (tag, how) in &self.settle {
            match how {
                Disposition::PublishedWithReason => self.conn.tell(TAKE, m::BASIC_ACK, m::ack(*tag, false)).await?,
                Disposition::RejectedToDeadLetterExchange => {
                    self.conn.tell(TAKE, m::BASIC_REJECT, m::reject(*tag, false)).await?
                }
            }
        }
        if let Some(tag) = self.unsettled {
            self.conn.tell(TAKE, m::BASIC_NACK, m::nack(tag, true, true)).await?;
        }
        self.conn.rpc(TAKE, "channel.close", m::CHANNEL_CLOSE, m::close(), &[m::CHANNEL_CLOSE_OK]).await.map(drop)
    }
}

/// Reads up to `max` messages of `queue` and gives them all back.
pub(super) async fn peek(conn: &mut RawConn, queue: &str, max: usize) -> Result<Vec<Peeked>, Kind> {
    let mut taker = Taker::open(conn, queue, max).await?;
    let max = taker.max(max);
    let mut out = Vec::new();
    let mut last = None;
    while out.len() < max {
        let Some(get) = taker.next(conn, queue).await? else { break };
        let content = conn.content(TAKE, |_, _| true).await?;
        last = last.max(Some(get.delivery_tag));
        out.push(Peeked {
            exchange: get.exchange,
            routing_key: get.routing_key,
            redelivered: get.redelivered,
            properties: props::decode(&content.props).ok(),
            raw_properties: content.props.to_vec(),
            body: content.body.unwrap_or_default(),
        });
    }
    let late = taker.stop(conn).await?;
    let unsettled = last.max(late.into_iter().max());
    let s = Scan { conn, queue, publishing: Publishing::NotYet, unsettled, settle: Vec::new(), copies: 0 };
    s.finish().await?;
    Ok(out)
}
