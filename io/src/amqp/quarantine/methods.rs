//! The AMQP 0-9-1 methods the raw client sends and reads, encoded and
//! decoded by hand (class and method ids from the 0-9-1 spec, arguments in
//! its order; consecutive bits share an octet).

use bytes::Bytes;

use super::frame::Frame;
use super::wire::{Reader, Short, Writer};

/// A method's class and method ids.
pub type Id = (u16, u16);

pub const CONNECTION_START: Id = (10, 10);
pub const CONNECTION_START_OK: Id = (10, 11);
pub const CONNECTION_SECURE: Id = (10, 20);
pub const CONNECTION_TUNE: Id = (10, 30);
pub const CONNECTION_TUNE_OK: Id = (10, 31);
pub const CONNECTION_OPEN: Id = (10, 40);
pub const CONNECTION_OPEN_OK: Id = (10, 41);
pub const CONNECTION_CLOSE: Id = (10, 50);
pub const CONNECTION_CLOSE_OK: Id = (10, 51);
pub const CONNECTION_BLOCKED: Id = (10, 60);
pub const CONNECTION_UNBLOCKED: Id = (10, 61);
pub const CHANNEL_OPEN: Id = (20, 10);
pub const CHANNEL_OPEN_OK: Id = (20, 11);
pub const CHANNEL_CLOSE: Id = (20, 40);
pub const CHANNEL_CLOSE_OK: Id = (20, 41);
pub const QUEUE_DECLARE: Id = (50, 10);
pub const QUEUE_DECLARE_OK: Id = (50, 11);
pub const BASIC_QOS: Id = (60, 10);
pub const BASIC_QOS_OK: Id = (60, 11);
pub const BASIC_CONSUME: Id = (60, 20);
pub const BASIC_CONSUME_OK: Id = (60, 21);
pub const BASIC_CANCEL: Id = (60, 30);
pub const BASIC_CANCEL_OK: Id = (60, 31);
pub const BASIC_DELIVER: Id = (60, 60);
pub const BASIC_PUBLISH: Id = (60, 40);
pub const BASIC_RETURN: Id = (60, 50);
pub const BASIC_GET: Id = (60, 70);
pub const BASIC_GET_OK: Id = (60, 71);
pub const BASIC_GET_EMPTY: Id = (60, 72);
pub const BASIC_ACK: Id = (60, 80);
pub const BASIC_REJECT: Id = (60, 90);
pub const BASIC_NACK: Id = (60, 120);
pub const CONFIRM_SELECT: Id = (85, 10);
pub const CONFIRM_SELECT_OK: Id = (85, 11);
/// The content class of `basic`.
pub const BASIC_CLASS: u16 = 60;

/// A method frame on `channel`.
pub fn frame(channel: u16, id: Id, args: Writer) -> Frame {
    Frame::Method { channel, class: id.0, method: id.1, args: Bytes::from(args.buf) }
}

/// `connection.start-ok` with PLAIN credentials. The client properties ask
/// for a `connection.close` with a reason on a failed login
/// (`authentication_failure_close`) instead of a bare socket close.
pub fn start_ok(user: &str, password: &str, connection_name: &str) -> Writer {
    let mut caps = Writer::new();
    caps.table_bool("authentication_failure_close", true)
        .table_bool("publisher_confirms", true)
        .table_bool("basic.nack", true)
        .table_bool("connection.blocked", true);
    let mut props = Writer::new();
    props
        .table_string("product", b"tasklane")
        .table_string("version", env!("CARGO_PKG_VERSION").as_bytes())
        .table_string("connection_name", connection_name.as_bytes())
        .table_table("capabilities", &caps.buf);
    let mut response = vec![0];
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    let mut w = Writer::new();
    w.longstr(&props.buf).shortstr(b"PLAIN").longstr(&response).shortstr(b"en_US");
    w
}

/// What `connection.start` offers that we check: the SASL mechanisms.
pub fn start_mechanisms(args: &[u8]) -> Result<Vec<u8>, Short> {
    let mut r = Reader::new(args);
    r.u8("version")?;
    r.u8("version")?;
    r.longstr("server properties")?;
    Ok(r.longstr("mechanisms")?.to_vec())
}

/// `connection.tune`: channel max, frame max, heartbeat.
pub fn tune(args: &[u8]) -> Result<(u16, u32, u16), Short> {
    let mut r = Reader::new(args);
    Ok((r.u16("channel max")?, r.u32("frame max")?, r.u16("heartbeat")?))
}

pub fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> Writer {
    let mut w = Writer::new();
    w.u16(channel_max).u32(frame_max).u16(heartbeat);
    w
}

pub fn open(vhost: &str) -> Writer {
    let mut w = Writer::new();
    w.shortstr(vhost.as_bytes()).shortstr(b"").u8(0);
    w
}

/// A `connection.close` or `channel.close`: reply code and text.
pub fn close_reason(args: &[u8]) -> Result<(u16, String), Short> {
    let mut r = Reader::new(args);
    let code = r.u16("reply code")?;
    let text = String::from_utf8_lossy(r.shortstr("reply text")?).into_owned();
    Ok((code, text))
}

/// `connection.close` or `channel.close` from us: a normal shutdown.
pub fn close() -> Writer {
    let mut w = Writer::new();
    w.u16(200).shortstr(b"done").u16(0).u16(0);
    w
}

pub fn channel_open() -> Writer {
    let mut w = Writer::new();
    w.shortstr(b"");
    w
}

pub fn confirm_select() -> Writer {
    let mut w = Writer::new();
    w.u8(0);
    w
}

/// A passive `queue.declare`: does the queue exist, and how many messages
/// are ready.
pub fn declare_passive(queue: &str) -> Writer {
    let mut w = Writer::new();
    w.u16(0).shortstr(queue.as_bytes()).u8(1).u32(0);
    w
}

/// `queue.declare-ok`: the ready message count.
pub fn declare_ok_ready(args: &[u8]) -> Result<u32, Short> {
    let mut r = Reader::new(args);
    r.shortstr("queue")?;
    r.u32("message count")
}

/// `basic.qos` for this channel's consumers.
pub fn qos(prefetch: u16) -> Writer {
    let mut w = Writer::new();
    w.u32(0).u16(prefetch).u8(0);
    w
}

/// `basic.consume` with acknowledgements, not exclusive, no arguments.
pub fn consume(queue: &str, tag: &str) -> Writer {
    let mut w = Writer::new();
    w.u16(0).shortstr(queue.as_bytes()).shortstr(tag.as_bytes()).u8(0).u32(0);
    w
}

pub fn cancel(tag: &str) -> Writer {
    let mut w = Writer::new();
    w.shortstr(tag.as_bytes()).u8(0);
    w
}

/// `basic.deliver`, in the shape of `basic.get-ok` (no message count).
pub fn deliver(args: &[u8]) -> Result<GetOk, Short> {
    let mut r = Reader::new(args);
    r.shortstr("consumer tag")?;
    Ok(GetOk {
        delivery_tag: r.u64("delivery tag")?,
        redelivered: r.u8("redelivered")? & 1 != 0,
        exchange: r.shortstr("exchange")?.to_vec(),
        routing_key: r.shortstr("routing key")?.to_vec(),
        message_count: 0,
    })
}

/// `basic.get` with acknowledgement (no-ack off).
pub fn get(queue: &str) -> Writer {
    let mut w = Writer::new();
    w.u16(0).shortstr(queue.as_bytes()).u8(0);
    w
}

/// `basic.get-ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOk {
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: Vec<u8>,
    pub routing_key: Vec<u8>,
    /// Messages left in the queue after this one.
    pub message_count: u32,
}

pub fn get_ok(args: &[u8]) -> Result<GetOk, Short> {
    let mut r = Reader::new(args);
    Ok(GetOk {
        delivery_tag: r.u64("delivery tag")?,
        redelivered: r.u8("redelivered")? & 1 != 0,
        exchange: r.shortstr("exchange")?.to_vec(),
        routing_key: r.shortstr("routing key")?.to_vec(),
        message_count: r.u32("message count")?,
    })
}

pub fn ack(delivery_tag: u64, multiple: bool) -> Writer {
    let mut w = Writer::new();
    w.u64(delivery_tag).u8(multiple.into());
    w
}

pub fn nack(delivery_tag: u64, multiple: bool, requeue: bool) -> Writer {
    let mut w = Writer::new();
    w.u64(delivery_tag).u8(u8::from(multiple) | u8::from(requeue) << 1);
    w
}

pub fn reject(delivery_tag: u64, requeue: bool) -> Writer {
    let mut w = Writer::new();
    w.u64(delivery_tag).u8(requeue.into());
    w
}

/// A publisher confirm (`basic.ack` or `basic.nack` from the broker): the
/// tag and whether it covers every tag up to it.
pub fn confirm(args: &[u8]) -> Result<(u64, bool), Short> {
    let mut r = Reader::new(args);
    Ok((r.u64("delivery tag")?, r.u8("multiple")? & 1 != 0))
}

/// `basic.publish`, `mandatory` so that an unroutable message comes back.
pub fn publish(exchange: &str, routing_key: &[u8]) -> Writer {
    let mut w = Writer::new();
    w.u16(0).shortstr(exchange.as_bytes()).shortstr(routing_key).u8(1);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_share_an_octet_in_spec_order() {
        assert_eq!(nack(5, true, true).buf, [0, 0, 0, 0, 0, 0, 0, 5, 0b11]);
        assert_eq!(nack(5, false, true).buf[8], 0b10);
        assert_eq!(reject(1, false).buf, [0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(ack(2, true).buf[8], 1);
    }

    #[test]
    fn get_ok_and_close_decode_and_short_args_fail() {
        let mut w = Writer::new();
        w.u64(9).u8(1).shortstr(b"").shortstr(b"q\xff").u32(3);
        let got = get_ok(&w.buf).unwrap();
        assert_eq!(
            (got.delivery_tag, got.redelivered, got.routing_key, got.message_count),
            (9, true, b"q\xff".to_vec(), 3)
        );
        assert!(get_ok(&w.buf[..w.buf.len() - 1]).is_err());
        let mut w = Writer::new();
        w.u16(404).shortstr(b"NOT_FOUND - no queue 'x'").u16(60).u16(70);
        assert_eq!(close_reason(&w.buf).unwrap(), (404, "NOT_FOUND - no queue 'x'".to_string()));
        assert!(close_reason(&[1]).is_err());
        assert!(tune(&[0, 1, 0]).is_err());
        assert!(start_mechanisms(&[0, 9, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn start_ok_carries_plain_credentials() {
        let w = start_ok("ep-1", "secret", "tasklane quarantine");
        let mut r = Reader::new(&w.buf);
        r.longstr("props").unwrap();
        assert_eq!(r.shortstr("mech").unwrap(), b"PLAIN");
        assert_eq!(r.longstr("response").unwrap(), b"\0ep-1\0secret");
        assert_eq!(r.shortstr("locale").unwrap(), b"en_US");
        assert!(r.is_empty());
    }
}
