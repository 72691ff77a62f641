//! The raw client against a fake broker that misbehaves: garbage, another
//! protocol, an oversize frame, silence, a closed socket, a login it cannot
//! do. Each ends the scan with an error naming it, in bounded time, never a
//! panic or a hang.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::frame::{self, Frame};
use super::methods as m;
use super::wire::Writer;
use super::*;

/// A fake broker on 127.0.0.1 that reads the protocol header and answers
/// with `reply`, then keeps the socket open (or closes it if `close`).
async fn fake_broker(reply: Vec<u8>, close: bool) -> ConnectOptions {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 8];
        let _ = sock.read_exact(&mut header).await;
        let _ = sock.write_all(&reply).await;
        if close {
            return;
        }
        let mut sink = vec![0u8; 4096];
        while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    ConnectOptions::parse(&format!("amqp://u:p@127.0.0.1:{port}/v")).unwrap()
}

async fn scan_kind(reply: Vec<u8>, close: bool) -> ScanErrorKind {
    let opts = fake_broker(reply, close).await;
    let started = std::time::Instant::now();
    let err = scan_within(&opts, "q", 10, Duration::from_secs(2)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    err.kind
}

fn start(mechanisms: &[u8]) -> Vec<u8> {
    let mut args = Writer::new();
    args.u8(0).u8(9).longstr(b"").longstr(mechanisms).longstr(b"en_US");
    let mut out = Vec::new();
    frame::encode(&m::frame(0, m::CONNECTION_START, args), &mut out);
    out
}

#[tokio::test]
async fn a_misbehaving_broker_gives_an_error_naming_what_it_did() {
    let garbage = scan_kind(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), false).await;
    assert!(matches!(&garbage, ScanErrorKind::Protocol(t) if t.contains("frame type 72")), "{garbage}");
    let other = scan_kind(b"AMQP\x00\x00\x09\x00".to_vec(), false).await;
    assert!(matches!(&other, ScanErrorKind::Protocol(t) if t.contains("protocol header")), "{other}");
    let huge = scan_kind(vec![1, 0, 0, 0x7f, 0xff, 0xff, 0xff], false).await;
    assert!(matches!(&huge, ScanErrorKind::Protocol(t) if t.contains("larger than")), "{huge}");
    assert_eq!(scan_kind(Vec::new(), false).await, ScanErrorKind::Deadline(Duration::from_secs(2)));
    let closed = scan_kind(Vec::new(), true).await;
    assert!(matches!(&closed, ScanErrorKind::Io(t) if t.contains("closed")), "{closed}");
    let no_plain = scan_kind(start(b"AMQPLAIN EXTERNAL"), false).await;
    assert!(matches!(&no_plain, ScanErrorKind::Protocol(t) if t.contains("PLAIN")), "{no_plain}");
    // A start, then a content body out of nowhere.
    let mut odd = start(b"PLAIN");
    frame::encode(&Frame::Body { channel: 0, payload: bytes::Bytes::from_static(b"x") }, &mut odd);
    let odd = scan_kind(odd, false).await;
    assert!(matches!(&odd, ScanErrorKind::Protocol(t) if t.contains("content body")), "{odd}");
}

#[tokio::test]
async fn no_broker_at_all_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let opts = ConnectOptions::parse(&format!("amqp://127.0.0.1:{port}/v")).unwrap();
    let err = scan(&opts, "q", 1).await.unwrap_err();
    assert!(matches!(&err.kind, ScanErrorKind::Connect { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}
