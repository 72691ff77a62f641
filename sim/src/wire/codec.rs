//! Byte encoding of the wire methods: a frame is a big-endian `u32` length
//! followed by that many bytes, the first of which names the method.
//!
//! Hand-written because it is small and must be deterministic: strings and
//! byte strings are `u32`-length-prefixed, booleans one byte, headers sorted
//! (they are a `BTreeMap`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::method::{ClientMethod, HeaderValue, Headers, Message, ServerMethod};

/// Frames larger than this are a protocol error (protects against a corrupt
/// length prefix).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame ended before a field did.
    #[error("frame truncated")]
    Truncated,
    /// The frame continued after the method's last field.
    #[error("{0} trailing bytes after the method")]
    Trailing(usize),
    /// The method or header type tag is unknown.
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8")]
    BadUtf8,
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// A method that can be put on the wire.
pub trait Encode {
    /// Appends the method (without the length prefix).
    fn encode(&self, out: &mut BytesMut);

    /// The complete frame, length prefix included.
    fn to_frame(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u32(0);
        self.encode(&mut out);
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out.freeze()
    }
}

/// A method that can be read off the wire.
pub trait Decode: Sized {
    /// Decodes one frame's payload (without the length prefix).
    fn decode(frame: Bytes) -> Result<Self, DecodeError>;
}

/// Reads one frame's payload; `Ok(None)` on a clean end of stream between
/// frames. Not cancel safe: run it in a task of its own.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, DecodeError::TooLarge(len)));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(Bytes::from(buf)))
}

/// Writes one complete frame (as made by [`Encode::to_frame`]).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

// ---- field helpers ----

fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

fn put_bool(out: &mut BytesMut, b: bool) {
    out.put_u8(b as u8);
}

fn put_headers(out: &mut BytesMut, headers: &Headers) {
    out.put_u32(headers.len() as u32);
    for (key, value) in headers {
        put_str(out, key);
        match value {
            HeaderValue::Str(s) => {
                out.put_u8(1);
                put_str(out, s);
            }
            HeaderValue::Int(i) => {
                out.put_u8(2);
                out.put_i64(*i);
            }
            HeaderValue::Bool(b) => {
                out.put_u8(3);
                put_bool(out, *b);
            }
            HeaderValue::Bytes(b) => {
                out.put_u8(4);
                put_bytes(out, b);
            }
        }
    }
}

fn put_message(out: &mut BytesMut, m: &Message) {
    match &m.message_id {
        Some(id) => {
            out.put_u8(1);
            put_str(out, id);
        }
        None => out.put_u8(0),
    }
    put_bool(out, m.persistent);
    put_headers(out, &m.headers);
    put_bytes(out, &m.body);
}

/// A cursor over a frame that fails with [`DecodeError::Truncated`] instead
/// of panicking.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::UnknownTag(t)),
        }
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadUtf8)
    }
    fn headers(&mut self) -> Result<Headers, DecodeError> {
        let n = self.u32()?;
        let mut headers = Headers::new();
        for _ in 0..n {
            let key = self.string()?;
            let value = match self.u8()? {
                1 => HeaderValue::Str(self.string()?),
                2 => HeaderValue::Int(self.i64()?),
                3 => HeaderValue::Bool(self.bool()?),
                4 => HeaderValue::Bytes(self.bytes()?),
                t => return Err(DecodeError::UnknownTag(t)),
            };
            headers.insert(key, value);
        }
        Ok(headers)
    }
    fn message(&mut self) -> Result<Message, DecodeError> {
        let message_id = match self.u8()? {
            0 => None,
            1 => Some(self.string()?),
            t => return Err(DecodeError::UnknownTag(t)),
        };
        Ok(Message { message_id, persistent: self.bool()?, headers: self.headers()?, body: self.bytes()? })
    }
    fn finish<T>(self, value: T) -> Result<T, DecodeError> {
        match self.0.remaining() {
            0 => Ok(value),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

impl Encode for ClientMethod {
    fn encode(&self, out: &mut BytesMut) {
        use ClientMethod::*;
        match self {
            ConnectionOpen { name, heartbeat_ms } => {
                out.put_u8(1);
                put_str(out, name);
                out.put_u32(*heartbeat_ms);
            }
            OpenChannel { ch } => {
                out.put_u8(2);
                out.put_u16(*ch);
            }
            CloseChannel { ch } => {
                out.put_u8(3);
                out.put_u16(*ch);
            }
            Qos { ch, prefetch } => {
                out.put_u8(4);
                out.put_u16(*ch);
                out.put_u16(*prefetch);
            }
            Consume { ch, queue, exclusive } => {
                out.put_u8(5);
                out.put_u16(*ch);
                put_str(out, queue);
                put_bool(out, *exclusive);
            }
            Ack { ch, tag, multiple } => {
                out.put_u8(6);
                out.put_u16(*ch);
                out.put_u64(*tag);
                put_bool(out, *multiple);
            }
            Nack { ch, tag, multiple, requeue } => {
                out.put_u8(7);
                out.put_u16(*ch);
                out.put_u64(*tag);
                put_bool(out, *multiple);
                put_bool(out, *requeue);
            }
            Reject { ch, tag, requeue } => {
                out.put_u8(8);
                out.put_u16(*ch);
                out.put_u64(*tag);
                put_bool(out, *requeue);
            }
            ConfirmSelect { ch } => {
                out.put_u8(9);
                out.put_u16(*ch);
            }
            Publish { ch, exchange, routing_key, mandatory, message } => {
                out.put_u8(10);
                out.put_u16(*ch);
                put_str(out, exchange);
                put_str(out, routing_key);
                put_bool(out, *mandatory);
                put_message(out, message);
            }
            Heartbeat => out.put_u8(11),
            ConnectionClose => out.put_u8(12),
            DeclarePassive { ch, queue } => {
                out.put_u8(13);
                out.put_u16(*ch);
                put_str(out, queue);
            }
        }
    }
}

impl Decode for ClientMethod {
    fn decode(frame: Bytes) -> Result<Self, DecodeError> {
        use ClientMethod::*;
        let mut r = Reader(frame);
        let m = match r.u8()? {
            1 => ConnectionOpen { name: r.string()?, heartbeat_ms: r.u32()? },
            2 => OpenChannel { ch: r.u16()? },
            3 => CloseChannel { ch: r.u16()? },
            4 => Qos { ch: r.u16()?, prefetch: r.u16()? },
            5 => Consume { ch: r.u16()?, queue: r.string()?, exclusive: r.bool()? },
            6 => Ack { ch: r.u16()?, tag: r.u64()?, multiple: r.bool()? },
            7 => Nack { ch: r.u16()?, tag: r.u64()?, multiple: r.bool()?, requeue: r.bool()? },
            8 => Reject { ch: r.u16()?, tag: r.u64()?, requeue: r.bool()? },
            9 => ConfirmSelect { ch: r.u16()? },
            10 => Publish {
                ch: r.u16()?,
                exchange: r.string()?,
                routing_key: r.string()?,
                mandatory: r.bool()?,
                message: r.message()?,
            },
            11 => Heartbeat,
            12 => ConnectionClose,
            13 => DeclarePassive { ch: r.u16()?, queue: r.string()? },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.finish(m)
    }
}

impl Encode for ServerMethod {
    fn encode(&self, out: &mut BytesMut) {
        use ServerMethod::*;
        match self {
            ConnectionOpenOk { heartbeat_ms } => {
                out.put_u8(1);
                out.put_u32(*heartbeat_ms);
            }
            ChannelOpenOk { ch } => {
                out.put_u8(2);
                out.put_u16(*ch);
            }
            ChannelCloseOk { ch } => {
                out.put_u8(3);
                out.put_u16(*ch);
            }
            QosOk { ch } => {
                out.put_u8(4);
                out.put_u16(*ch);
            }
            ConsumeOk { ch, queue } => {
                out.put_u8(5);
                out.put_u16(*ch);
                put_str(out, queue);
            }
            DeclareOk { ch, queue, messages, consumers } => {
                out.put_u8(6);
                out.put_u16(*ch);
                put_str(out, queue);
                out.put_u32(*messages);
                out.put_u32(*consumers);
            }
            Cancel { ch, queue } => {
                out.put_u8(15);
                out.put_u16(*ch);
                put_str(out, queue);
            }
            ConfirmSelectOk { ch } => {
                out.put_u8(7);
                out.put_u16(*ch);
            }
            Deliver { ch, tag, redelivered, exchange, routing_key, message } => {
                out.put_u8(8);
                out.put_u16(*ch);
                out.put_u64(*tag);
                put_bool(out, *redelivered);
                put_str(out, exchange);
                put_str(out, routing_key);
                put_message(out, message);
            }
            PublishAck { ch, tag, multiple } => {
                out.put_u8(9);
                out.put_u16(*ch);
                out.put_u64(*tag);
                put_bool(out, *multiple);
            }
            PublishNack { ch, tag, multiple } => {
                out.put_u8(10);
                out.put_u16(*ch);
                out.put_u64(*tag);
                put_bool(out, *multiple);
            }
            Return { ch, reply_code, reply_text, exchange, routing_key, message } => {
                out.put_u8(11);
                out.put_u16(*ch);
                out.put_u16(*reply_code);
                put_str(out, reply_text);
                put_str(out, exchange);
                put_str(out, routing_key);
                put_message(out, message);
            }
            ChannelClose { ch, code, text } => {
                out.put_u8(12);
                out.put_u16(*ch);
                out.put_u16(*code);
                put_str(out, text);
            }
            Heartbeat => out.put_u8(13),
            ConnectionClose { code, text } => {
                out.put_u8(14);
                out.put_u16(*code);
                put_str(out, text);
            }
        }
    }
}

impl Decode for ServerMethod {
    fn decode(frame: Bytes) -> Result<Self, DecodeError> {
        use ServerMethod::*;
        let mut r = Reader(frame);
        let m = match r.u8()? {
            1 => ConnectionOpenOk { heartbeat_ms: r.u32()? },
            2 => ChannelOpenOk { ch: r.u16()? },
            3 => ChannelCloseOk { ch: r.u16()? },
            4 => QosOk { ch: r.u16()? },
            5 => ConsumeOk { ch: r.u16()?, queue: r.string()? },
            6 => DeclareOk { ch: r.u16()?, queue: r.string()?, messages: r.u32()?, consumers: r.u32()? },
            15 => Cancel { ch: r.u16()?, queue: r.string()? },
            7 => ConfirmSelectOk { ch: r.u16()? },
            8 => Deliver {
                ch: r.u16()?,
                tag: r.u64()?,
                redelivered: r.bool()?,
                exchange: r.string()?,
                routing_key: r.string()?,
                message: r.message()?,
            },
            9 => PublishAck { ch: r.u16()?, tag: r.u64()?, multiple: r.bool()? },
            10 => PublishNack { ch: r.u16()?, tag: r.u64()?, multiple: r.bool()? },
            11 => Return {
                ch: r.u16()?,
                reply_code: r.u16()?,
                reply_text: r.string()?,
                exchange: r.string()?,
                routing_key: r.string()?,
                message: r.message()?,
            },
            12 => ChannelClose { ch: r.u16()?, code: r.u16()?, text: r.string()? },
            13 => Heartbeat,
            14 => ConnectionClose { code: r.u16()?, text: r.string()? },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.finish(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<M: Encode + Decode + PartialEq + std::fmt::Debug>(m: M) {
        let frame = m.to_frame();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(M::decode(frame.slice(4..)).unwrap(), m);
    }

    fn sample_message() -> Message {
        Message::persistent("task-1", &b"payload"[..])
            .with_header("tasklane-kind", "render")
            .with_header("n", 7i64)
            .with_header("flag", HeaderValue::Bool(true))
            .with_header("raw", HeaderValue::Bytes(Bytes::from_static(b"\0\x01")))
    }

    #[test]
    fn every_client_method_roundtrips() {
        use ClientMethod::*;
        for m in [
            ConnectionOpen { name: "endpoint-1".into(), heartbeat_ms: 500 },
            OpenChannel { ch: 1 },
            CloseChannel { ch: 2 },
            Qos { ch: 1, prefetch: 8 },
            Consume { ch: 1, queue: "E.tasks".into(), exclusive: true },
            DeclarePassive { ch: 1, queue: "E.tasks".into() },
            Ack { ch: 1, tag: 42, multiple: true },
            Nack { ch: 1, tag: 3, multiple: false, requeue: true },
            Reject { ch: 1, tag: 4, requeue: false },
            ConfirmSelect { ch: 2 },
            Publish {
                ch: 2,
                exchange: "results".into(),
                routing_key: "E.results".into(),
                mandatory: true,
                message: sample_message(),
            },
            Publish {
                ch: 2,
                exchange: String::new(),
                routing_key: "q".into(),
                mandatory: false,
                message: Message::default(),
            },
            Heartbeat,
            ConnectionClose,
        ] {
            roundtrip(m);
        }
    }

    #[test]
    fn every_server_method_roundtrips() {
        use ServerMethod::*;
        for m in [
            ConnectionOpenOk { heartbeat_ms: 1000 },
            ChannelOpenOk { ch: 1 },
            ChannelCloseOk { ch: 1 },
            QosOk { ch: 1 },
            ConsumeOk { ch: 1, queue: "E.tasks".into() },
            DeclareOk { ch: 1, queue: "E.tasks".into(), messages: 7, consumers: 2 },
            Cancel { ch: 1, queue: "E.tasks".into() },
            ConfirmSelectOk { ch: 2 },
            Deliver {
                ch: 1,
                tag: 9,
                redelivered: true,
                exchange: String::new(),
                routing_key: "E.tasks".into(),
                message: sample_message(),
            },
            PublishAck { ch: 2, tag: 5, multiple: true },
            PublishNack { ch: 2, tag: 6, multiple: false },
            Return {
                ch: 2,
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "results".into(),
                routing_key: "nowhere".into(),
                message: sample_message(),
            },
            ChannelClose { ch: 1, code: 403, text: "ACCESS_REFUSED".into() },
            Heartbeat,
            ConnectionClose { code: 320, text: "missed heartbeats".into() },
        ] {
            roundtrip(m);
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert_eq!(ClientMethod::decode(Bytes::new()), Err(DecodeError::Truncated));
        assert_eq!(ClientMethod::decode(Bytes::from_static(&[99])), Err(DecodeError::UnknownTag(99)));
        assert_eq!(ClientMethod::decode(Bytes::from_static(&[2, 0])), Err(DecodeError::Truncated));
        assert_eq!(ClientMethod::decode(Bytes::from_static(&[11, 0])), Err(DecodeError::Trailing(1)));
        // A string length that runs past the end of the frame.
        assert_eq!(
            ServerMethod::decode(Bytes::from_static(&[14, 1, 64, 0, 0, 0, 9, b'x'])),
            Err(DecodeError::Truncated)
        );
    }
}
