//! AMQP 0-9-1 frames: `type, channel, size, payload, 0xCE`. Decoding takes
//! a buffer that may hold a partial frame and says so (`Ok(None)`); a
//! frame larger than the negotiated limit, an unknown type or a bad end
//! octet is an error before any of its payload is buffered, so a broker
//! sending garbage can neither make this panic nor make it allocate
//! without bound.

use std::fmt;

use bytes::Bytes;

use super::wire::{Reader, Writer};

pub const METHOD: u8 = 1;
pub const HEADER: u8 = 2;
pub const BODY: u8 = 3;
pub const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
const HEAD_LEN: usize = 7;
/// What a frame adds to its payload: head and end octet.
pub const OVERHEAD: usize = HEAD_LEN + 1;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A method: class and method ids and the encoded arguments.
    Method { channel: u16, class: u16, method: u16, args: Bytes },
    /// A content header: the class, the body size and the encoded
    /// properties (flags and values), exactly as sent.
    Header { channel: u16, class: u16, body_size: u64, props: Bytes },
    /// A piece of a content body.
    Body { channel: u16, payload: Bytes },
    /// A heartbeat (channel 0).
    Heartbeat,
}

/// Why bytes from the broker are not a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The payload is larger than the negotiated frame size.
    TooLarge { size: u32, max: u32 },
    /// The octet after the payload is not `0xCE`.
    BadEnd(u8),
    /// A frame type that AMQP 0-9-1 does not have.
    UnknownType(u8),
    /// The peer sent a protocol header: it wants another AMQP version.
    ProtocolHeader([u8; 8]),
    /// A method or header frame too short for its fixed fields.
    Truncated(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { size, max } => write!(f, "frame of {size} bytes, larger than the {max} agreed"),
            FrameError::BadEnd(b) => write!(f, "frame ends with 0x{b:02x}, not 0xce"),
            FrameError::UnknownType(t) => write!(f, "frame type {t} is not AMQP 0-9-1"),
            FrameError::ProtocolHeader(h) => {
                write!(f, "the broker answered with protocol header {h:02x?}: it does not speak AMQP 0-9-1")
            }
            FrameError::Truncated(what) => write!(f, "{what} frame is too short"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Decodes the frame at the front of `buf`: `Ok(None)` when more bytes are
/// needed, else the frame and how many bytes it took.
pub fn decode(buf: &[u8], max_payload: u32) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() >= 4 && &buf[..4] == b"AMQP" {
        return match buf.get(..8) {
            Some(h) => Err(FrameError::ProtocolHeader(h.try_into().expect("8 bytes"))),
            None => Ok(None),
        };
    }
    if buf.len() < HEAD_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    if ![METHOD, HEADER, BODY, HEARTBEAT].contains(&kind) {
        return Err(FrameError::UnknownType(kind));
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    if size > max_payload {
        return Err(FrameError::TooLarge { size, max: max_payload });
    }
    let total = HEAD_LEN + size as usize + 1;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(FrameError::BadEnd(buf[total - 1]));
    }
    let payload = &buf[HEAD_LEN..total - 1];
    let frame = match kind {
        METHOD => {
            let mut r = Reader::new(payload);
            let (class, method) = match (r.u16("method"), r.u16("method")) {
                (Ok(c), Ok(m)) => (c, m),
                _ => return Err(FrameError::Truncated("method")),
            };
            Frame::Method { channel, class, method, args: Bytes::copy_from_slice(&payload[4..]) }
        }
        HEADER => {
            let mut r = Reader::new(payload);
            let fixed = (r.u16("header"), r.u16("header"), r.u64("header"));
            let (Ok(class), Ok(_weight), Ok(body_size)) = fixed else {
                return Err(FrameError::Truncated("content header"));
            };
            Frame::Header { channel, class, body_size, props: Bytes::copy_from_slice(&payload[12..]) }
        }
        BODY => Frame::Body { channel, payload: Bytes::copy_from_slice(payload) },
        _ => Frame::Heartbeat,
    };
    Ok(Some((frame, total)))
}

/// Appends `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let mut payload = Writer::new();
    let (kind, channel) = match frame {
        Frame::Method { channel, class, method, args } => {
            payload.u16(*class).u16(*method).raw(args);
            (METHOD, *channel)
        }
        Frame::Header { channel, class, body_size, props } => {
            payload.u16(*class).u16(0).u64(*body_size).raw(props);
            (HEADER, *channel)
        }
        Frame::Body { channel, payload: p } => {
            payload.raw(p);
            (BODY, *channel)
        }
        Frame::Heartbeat => (HEARTBEAT, 0),
    };
    let size = u32::try_from(payload.buf.len()).expect("frames are smaller than the agreed frame size");
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&payload.buf);
    out.push(FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode(frame, &mut out);
        out
    }

    #[test]
    fn every_kind_round_trips_and_partial_input_waits() {
        let frames = [
            Frame::Method { channel: 1, class: 60, method: 70, args: Bytes::from_static(b"\0\0\x01q\0") },
            Frame::Header { channel: 1, class: 60, body_size: 3, props: Bytes::from_static(b"\x80\0\x01x") },
            Frame::Body { channel: 1, payload: Bytes::from_static(b"abc") },
            Frame::Body { channel: 2, payload: Bytes::new() },
            Frame::Heartbeat,
        ];
        let mut stream = Vec::new();
        for f in &frames {
            encode(f, &mut stream);
        }
        let mut at = 0;
        for f in &frames {
            let len = encoded(f).len();
            for cut in 0..len {
                assert_eq!(decode(&stream[at..at + cut], 1000), Ok(None), "{f:?} cut at {cut}");
            }
            assert_eq!(decode(&stream[at..], 1000), Ok(Some((f.clone(), len))));
            at += len;
        }
        assert_eq!(at, stream.len());
    }

    #[test]
    fn garbage_is_an_error_before_its_payload_arrives() {
        // A size over the limit is refused from the 7 bytes of the head.
        assert_eq!(
            decode(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff], 131_072),
            Err(FrameError::TooLarge { size: u32::MAX, max: 131_072 })
        );
        assert_eq!(decode(&[9, 0, 0, 0, 0, 0, 0, 0xCE], 100), Err(FrameError::UnknownType(9)));
        assert_eq!(decode(&[8, 0, 0, 0, 0, 0, 0, 0xCD], 100), Err(FrameError::BadEnd(0xCD)));
        assert_eq!(decode(&[1, 0, 0, 0, 0, 0, 2, 0, 10, 0xCE], 100), Err(FrameError::Truncated("method")));
        let short_header = encoded(&Frame::Body { channel: 1, payload: Bytes::from_static(&[0; 11]) });
        let mut short_header = short_header.clone();
        short_header[0] = HEADER;
        assert_eq!(decode(&short_header, 100), Err(FrameError::Truncated("content header")));
        assert_eq!(decode(b"AMQP\0\0\x09", 100), Ok(None));
        assert!(matches!(decode(b"AMQP\0\0\x09\x00", 100), Err(FrameError::ProtocolHeader(_))));
    }

    #[test]
    fn random_bytes_never_panic() {
        // Deterministic noise, and noise after a valid head.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if let Some(b) = buf.first_mut() {
                *b = [METHOD, HEADER, BODY, HEARTBEAT][(x % 4) as usize];
            }
            let _ = decode(&buf, (x % 64) as u32);
        }
    }
}
