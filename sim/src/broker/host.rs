//! The broker as turmoil host software: a listener and one driver task per
//! connection.
//!
//! The driver feeds the engine what the socket brings and enforces
//! heartbeats: it sends one every interval and closes the connection when
//! nothing at all came from the client for two intervals (how a dead peer
//! is noticed behind a broken turmoil link, which stalls rather than
//! resets).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::sleep_until;
use turmoil::net::{TcpListener, TcpStream};

use super::engine::Verdict;
use super::event::ConnId;
use super::Broker;
use crate::wire::{code, ClientMethod, Link, ServerMethod};

/// How long a closing connection may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The host software: boots the engine (recovering durable state after a
/// restart) and serves connections until the host is crashed.
pub(super) async fn serve(broker: Broker) -> turmoil::Result {
    broker.engine.borrow_mut().boot();
    let port = broker.engine.borrow().config.port;
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::task::spawn_local(connection(broker.clone(), stream, peer));
    }
}

/// Detaches the connection from the engine when its task ends, including
/// when a crash drops the task mid-flight.
struct Detach {
    broker: Broker,
    conn: ConnId,
    reason: String,
}

impl Drop for Detach {
    fn drop(&mut self) {
        self.broker.engine.borrow_mut().detach(self.conn, &self.reason);
    }
}

async fn connection(broker: Broker, stream: TcpStream, peer: SocketAddr) {
    let mut link: Link<ClientMethod, ServerMethod> = Link::spawn(stream);
    let conn = broker.engine.borrow_mut().connect(peer, link.sender());
    let mut guard = Detach { broker: broker.clone(), conn, reason: "broker stopped".into() };
    let mut interval = heartbeat(&broker, conn);
    let mut last_seen = Instant::now();
    let mut next_beat = last_seen + interval.unwrap_or_default();
    guard.reason = loop {
        let wake = interval.map(|hb| next_beat.min(last_seen + 2 * hb));
        tokio::select! {
            biased;
            m = link.recv() => match m {
                None => break "connection closed by the client".to_owned(),
                Some(Err(e)) => {
                    link.send(ServerMethod::ConnectionClose {
                        code: code::FRAME_ERROR,
                        text: e.to_string(),
                    });
                    break format!("link error: {e}");
                }
                Some(Ok(m)) => {
                    last_seen = Instant::now();
                    let opening = matches!(m, ClientMethod::ConnectionOpen { .. });
                    let verdict = broker.engine.borrow_mut().handle(conn, m);
                    if let Verdict::Close(reason) = verdict {
                        break reason;
                    }
                    if opening {
                        interval = heartbeat(&broker, conn);
                        next_beat = last_seen + interval.unwrap_or_default();
                    }
                }
            },
            _ = sleep_until(wake), if wake.is_some() => {
                let hb = interval.expect("armed only with heartbeats");
                let now = Instant::now();
                if now >= last_seen + 2 * hb {
                    link.send(ServerMethod::ConnectionClose {
                        code: code::CONNECTION_FORCED,
                        text: format!("missed heartbeats from client, timeout: {}ms", hb.as_millis()),
                    });
                    break "missed heartbeats".to_owned();
                }
                if now >= next_beat {
                    link.send(ServerMethod::Heartbeat);
                    next_beat = now + hb;
                }
            }
        }
    };
    // Detach first: it drops the engine's sender, so the writer can finish.
    drop(guard);
    link.close(CLOSE_GRACE).await;
}

fn heartbeat(broker: &Broker, conn: ConnId) -> Option<Duration> {
    match broker.engine.borrow().heartbeat_ms(conn) {
        0 => None,
        ms => Some(Duration::from_millis(ms.into())),
    }
}
