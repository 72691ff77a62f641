//! A publisher that writes AMQP 0-9-1 frames itself, for what amqprs will
//! not send: a `message_id` or header strings that are not UTF-8. The
//! broker stores such properties as bytes and delivers them unchanged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One message as frames carry it: raw `message_id` bytes and a raw,
/// already encoded header table (the bytes after the table's length).
#[allow(dead_code)]
pub struct RawPublish {
    pub message_id: Option<Vec<u8>>,
    pub header_table: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

fn shortstr(out: &mut Vec<u8>, s: &[u8]) {
    out.push(u8::try_from(s.len()).expect("a shortstr holds 255 bytes"));
    out.extend_from_slice(s);
}

fn longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s);
}

/// A header table entry `name` = long string `value` (any bytes).
#[allow(dead_code)]
pub fn string_entry(table: &mut Vec<u8>, name: &str, value: &[u8]) {
    shortstr(table, name.as_bytes());
    table.push(b'S');
    longstr(table, value);
}

struct Conn(TcpStream);

impl Conn {
    fn frame(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        let mut f = vec![kind];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(payload);
        f.push(0xCE);
        self.0.write_all(&f).expect("write a frame");
    }

    fn method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        let mut p = Vec::new();
        p.extend_from_slice(&class.to_be_bytes());
        p.extend_from_slice(&method.to_be_bytes());
        p.extend_from_slice(args);
        self.frame(1, channel, &p);
    }

    /// Reads frames until a method `(class, method)`; returns its arguments.
    fn expect(&mut self, class: u16, method: u16) -> Vec<u8> {
        loop {
            let mut head = [0u8; 7];
            self.0.read_exact(&mut head).expect("a frame header");
            let size = u32::from_be_bytes(head[3..7].try_into().unwrap()) as usize;
            let mut payload = vec![0u8; size + 1];
            self.0.read_exact(&mut payload).expect("a frame");
            if head[0] != 1 {
                continue; // heartbeats
            }
            let got = (u16::from_be_bytes([payload[0], payload[1]]), u16::from_be_bytes([payload[2], payload[3]]));
            if got == (class, method) {
                return payload[4..size].to_vec();
            }
            assert!(got != (10, 50) && got != (20, 40), "the broker closed: {:?}", String::from_utf8_lossy(&payload));
        }
    }
}

/// Publishes `msgs` persistently to the default exchange under
/// `routing_key` in `vhost` (guest/guest on 127.0.0.1:5672), each under a
/// publisher confirm, and closes.
#[allow(dead_code)]
pub fn publish(vhost: &str, routing_key: &str, msgs: &[RawPublish]) {
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = msgs
        .iter()
        .map(|m| {
            let mut props = Vec::new();
            let mut flags = 1u16 << 12; // delivery-mode
            flags |= u16::from(m.header_table.is_some()) << 13;
            flags |= u16::from(m.message_id.is_some()) << 7;
            props.extend_from_slice(&flags.to_be_bytes());
            if let Some(t) = &m.header_table {
                longstr(&mut props, t);
            }
            props.push(2); // persistent
            if let Some(id) = &m.message_id {
                shortstr(&mut props, id);
            }
            (props, m.body.clone())
        })
        .collect();
    publish_encoded(vhost, "", routing_key.as_bytes(), &encoded);
}

/// Publishes messages given as (encoded basic properties, body) to
/// `exchange` under `routing_key` (any bytes) in `vhost` under publisher
/// confirms (all sent, then every confirm awaited: a persistent message's
/// confirm waits for the broker's disk), and closes.
pub fn publish_encoded(vhost: &str, exchange: &str, routing_key: &[u8], msgs: &[(Vec<u8>, Vec<u8>)]) {
    let stream = TcpStream::connect("127.0.0.1:5672").expect("RabbitMQ on 127.0.0.1:5672");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = Conn(stream);
    c.0.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    c.expect(10, 10); // connection.start
    let mut args = Vec::new();
    args.extend_from_slice(&0u32.to_be_bytes()); // client properties: empty table
    shortstr(&mut args, b"PLAIN");
    longstr(&mut args, b"\0guest\0guest");
    shortstr(&mut args, b"en_US");
    c.method(0, 10, 11, &args);
    let tune = c.expect(10, 30);
    let mut args = tune[..6].to_vec(); // channel-max, frame-max as offered
    args.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
    c.method(0, 10, 31, &args);
    let mut args = Vec::new();
    shortstr(&mut args, vhost.as_bytes());
    shortstr(&mut args, b"");
    args.push(0);
    c.method(0, 10, 40, &args);
    c.expect(10, 41);
    c.method(1, 20, 10, &[0]); // channel.open
    c.expect(20, 11);
    c.method(1, 85, 10, &[0]); // confirm.select, wait for the answer
    c.expect(85, 11);
    for (props, body) in msgs {
        let mut args = 0u16.to_be_bytes().to_vec();
        shortstr(&mut args, exchange.as_bytes());
        shortstr(&mut args, routing_key);
        args.push(0);
        c.method(1, 60, 40, &args); // basic.publish
        let mut header = Vec::new();
        header.extend_from_slice(&60u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend_from_slice(props);
        c.frame(2, 1, &header);
        for chunk in body.chunks(100_000) {
            c.frame(3, 1, chunk);
        }
    }
    let mut confirmed = 0;
    while confirmed < msgs.len() as u64 {
        let ack = c.expect(60, 80); // basic.ack: delivery tag, multiple
        confirmed = confirmed.max(u64::from_be_bytes(ack[..8].try_into().unwrap()));
    }
    let mut args = 200u16.to_be_bytes().to_vec();
    shortstr(&mut args, b"bye");
    args.extend_from_slice(&[0, 0, 0, 0]);
    c.method(0, 10, 50, &args);
    c.expect(10, 51);
}
