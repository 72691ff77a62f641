//! The scan: take messages from the head of a queue with `basic.get`,
//! judge each, move the poison ones to `tasklane.dead` and give the rest
//! back, in order.
//!
//! Channel 1 takes and settles; channel 2, opened at the first poison
//! message, publishes copies under confirms. A refused publish closes only
//! channel 2, so the messages held on channel 1 stay held.

use super::conn::RawConn;
use super::judge::{judge, Verdict, REASON_LABEL};
use super::methods::{self as m};
use super::props;
use super::wire::Writer;
use super::{Disposition, Kept, Peeked, Quarantined, ScanErrorKind as Kind, ScanOutcome};
use crate::service::DEAD;

const TAKE: u16 = 1;
const COPY: u16 = 2;
/// Header naming the queue a quarantined message came from.
pub const QUEUE_HEADER: &str = "tasklane-queue";
/// Largest body copied to `tasklane.dead`; a larger poison message is
/// rejected to the queue's dead-letter exchange instead of held in memory.
const MAX_COPY_BODY: u64 = 512 << 20;

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
    /// Publisher confirm sequence of channel 2.
    copies: u64,
}

/// Scans up to `max` messages of `queue`, recording into `out` as it goes
/// (so that a caller sees what was done even when this fails).
pub(super) async fn run(conn: &mut RawConn, queue: &str, max: usize, out: &mut ScanOutcome) -> Result<(), Kind> {
    conn.open_channel(TAKE, false).await?;
    let mut s = Scan { conn, queue, publishing: Publishing::NotYet, unsettled: None, copies: 0 };
    while out.scanned < max {
        let Some((get, verdict, content)) = s.take_one().await? else {
            out.reached_end = true;
            break;
        };
        let position = out.scanned;
        out.scanned += 1;
        let Verdict::Poison { detail, props } = verdict else {
            s.unsettled = Some(get.delivery_tag);
            out.returned += 1;
            continue;
        };
        let message_id = props.as_ref().and_then(|p| p.message_id.clone());
        match s.quarantine(&get, &content, &detail, props.is_some()).await? {
            Ok(how) => {
                tracing::warn!(queue, position, reason = %detail, ?how, "poison message quarantined");
                out.quarantined.push(Quarantined { position, message_id, reason: detail, how });
            }
            Err(error) => {
                tracing::error!(queue, position, reason = %detail, %error, "poison message left in the queue");
                s.unsettled = Some(get.delivery_tag);
                out.returned += 1;
                out.kept.push(Kept { position, message_id, reason: detail, error });
            }
        }
    }
    s.finish().await
}

impl Scan<'_> {
    /// The next message and its verdict, `None` when the queue is empty.
    async fn take_one(&mut self) -> Result<Option<(m::GetOk, Verdict, super::conn::Content)>, Kind> {
        let expect = [m::BASIC_GET_OK, m::BASIC_GET_EMPTY];
        let (id, args) = self.conn.rpc(TAKE, "basic.get", m::BASIC_GET, m::get(self.queue), &expect).await?;
        if id == m::BASIC_GET_EMPTY {
            return Ok(None);
        }
        let get = m::get_ok(&args).map_err(|e| Kind::Protocol(e.to_string()))?;
        let mut verdict = Verdict::Fine;
        let content = self
            .conn
            .content(TAKE, |raw, size| {
                verdict = judge(&get.exchange, &get.routing_key, raw);
                matches!(&verdict, Verdict::Poison { props: Some(_), .. }) && size <= MAX_COPY_BODY
            })
            .await?;
        Ok(Some((get, verdict, content)))
    }

    /// Moves one poison message out of the queue: a copy with the reason
    /// to `tasklane.dead`, then the ack; or a reject to the queue's
    /// dead-letter exchange. `Ok(Err(why))` when it stays in the queue.
    async fn quarantine(
        &mut self,
        get: &m::GetOk,
        content: &super::conn::Content,
        detail: &str,
        readable: bool,
    ) -> Result<Result<Disposition, String>, Kind> {
        if let (true, Some(body)) = (readable, &content.body) {
            if matches!(self.publishing, Publishing::NotYet | Publishing::Open) {
                let mut entries = Writer::new();
                entries
                    .table_string(tasklane_core::message::REASON_HEADER, REASON_LABEL.as_bytes())
                    .table_string(crate::service::REASON_DETAIL_HEADER, detail.as_bytes())
                    .table_string(QUEUE_HEADER, self.queue.as_bytes());
                let copy =
                    props::with_headers(&content.props, &entries.buf).map_err(|e| Kind::Protocol(e.to_string()))?;
                match self.publish_copy(&copy, body).await {
                    Ok(()) => {
                        self.conn.tell(TAKE, m::BASIC_ACK, m::ack(get.delivery_tag, false)).await?;
                        return Ok(Ok(Disposition::PublishedWithReason));
                    }
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
        self.conn.tell(TAKE, m::BASIC_REJECT, m::reject(get.delivery_tag, false)).await?;
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
        if let Some(tag) = self.unsettled {
            self.conn.tell(TAKE, m::BASIC_NACK, m::nack(tag, true, true)).await?;
        }
        self.conn.rpc(TAKE, "channel.close", m::CHANNEL_CLOSE, m::close(), &[m::CHANNEL_CLOSE_OK]).await.map(drop)
    }
}

/// Reads up to `max` messages of `queue` and gives them all back.
pub(super) async fn peek(conn: &mut RawConn, queue: &str, max: usize) -> Result<Vec<Peeked>, Kind> {
    conn.open_channel(TAKE, false).await?;
    let mut out = Vec::new();
    let mut last = None;
    while out.len() < max {
        let expect = [m::BASIC_GET_OK, m::BASIC_GET_EMPTY];
        let (id, args) = conn.rpc(TAKE, "basic.get", m::BASIC_GET, m::get(queue), &expect).await?;
        if id == m::BASIC_GET_EMPTY {
            break;
        }
        let get = m::get_ok(&args).map_err(|e| Kind::Protocol(e.to_string()))?;
        let content = conn.content(TAKE, |_, _| true).await?;
        last = Some(get.delivery_tag);
        out.push(Peeked {
            exchange: get.exchange,
            routing_key: get.routing_key,
            redelivered: get.redelivered,
            properties: props::decode(&content.props).ok(),
            raw_properties: content.props.to_vec(),
            body: content.body.unwrap_or_default(),
        });
    }
    let s = Scan { conn, queue, publishing: Publishing::NotYet, unsettled: last, copies: 0 };
    s.finish().await?;
    Ok(out)
}
