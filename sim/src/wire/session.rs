//! A client connection as a task: connect, open, keep heartbeats both ways,
//! and report everything as events on one channel, tagged with the owner's
//! key for this attempt. The endpoint shell and the simulated service both
//! run their connections this way; neither retries here (the owner does).
//!
//! Ending the connection on purpose is aborting the task: the link's
//! socket halves are dropped, which the broker sees as a closed or reset
//! stream.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::sleep_until;
use turmoil::net::TcpStream;

use super::link::Link;
use super::method::{ClientMethod, ServerMethod};

/// What a connection task reports.
#[derive(Debug)]
pub enum ConnEvent {
    /// The broker answered `ConnectionOpen`; methods go through `tx`.
    Open { tx: UnboundedSender<ClientMethod>, heartbeat_ms: u32 },
    /// A method from the broker (heartbeats are handled here).
    Method(ServerMethod),
    /// The connection never opened.
    Failed(String),
    /// An open connection ended: socket, heartbeat or `ConnectionClose`.
    Lost(String),
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Dial {
    pub host: String,
    pub port: u16,
    /// The name the broker logs (and the simulation maps back to a host).
    pub name: String,
    pub heartbeat_ms: u32,
    /// Most time for TCP connect and for the open handshake, each.
    pub timeout: Duration,
}

/// Starts a connection attempt on the current host.
pub fn spawn<K: Copy + 'static>(key: K, dial: Dial, events: UnboundedSender<(K, ConnEvent)>) -> JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let ev = match run(dial, |e| events.send((key, e)).is_ok()).await {
            Ok(reason) => ConnEvent::Lost(reason),
            Err(reason) => ConnEvent::Failed(reason),
        };
        let _ = events.send((key, ev));
    })
}

/// `Err` when the connection never opened, `Ok(reason)` when it ended.
async fn run(dial: Dial, mut emit: impl FnMut(ConnEvent) -> bool) -> Result<String, String> {
    let addr = (dial.host.as_str(), dial.port);
    let stream = match tokio::time::timeout(dial.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect timed out".into()),
    };
    let mut link: Link<ServerMethod, ClientMethod> = Link::spawn(stream);
    link.send(ClientMethod::ConnectionOpen { name: dial.name.clone(), heartbeat_ms: dial.heartbeat_ms });
    let deadline = Instant::now() + dial.timeout;
    let heartbeat_ms = loop {
        match tokio::time::timeout_at(deadline, link.recv()).await {
            Err(_) => return Err("open timed out".into()),
            Ok(None) => return Err("closed during open".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(ServerMethod::ConnectionOpenOk { heartbeat_ms }))) => break heartbeat_ms,
            Ok(Some(Ok(ServerMethod::Heartbeat))) => {}
            Ok(Some(Ok(other))) => return Err(format!("unexpected {other:?} during open")),
        }
    };
    if !emit(ConnEvent::Open { tx: link.sender(), heartbeat_ms }) {
        return Ok("owner gone".into());
    }
    let interval = (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms.into()));
    let mut last_seen = Instant::now();
    let mut next_beat = last_seen + interval.unwrap_or_default();
    loop {
        let wake = interval.map(|hb| next_beat.min(last_seen + 2 * hb));
        tokio::select! {
            biased;
            m = link.recv() => match m {
                None => return Ok("connection closed by the broker".into()),
                Some(Err(e)) => return Ok(e.to_string()),
                Some(Ok(m)) => {
                    last_seen = Instant::now();
                    match m {
                        ServerMethod::Heartbeat => {}
                        ServerMethod::ConnectionClose { code, text } => {
                            return Ok(format!("broker closed the connection: {code} {text}"))
                        }
                        m => {
                            if !emit(ConnEvent::Method(m)) {
                                return Ok("owner gone".into());
                            }
                        }
                    }
                }
            },
            _ = sleep_until(wake), if wake.is_some() => {
                let hb = interval.expect("armed only with heartbeats");
                let now = Instant::now();
                if now >= last_seen + 2 * hb {
                    return Ok("missed heartbeats from the broker".into());
                }
                if now >= next_beat {
                    link.send(ClientMethod::Heartbeat);
                    next_beat = now + hb;
                }
            }
        }
    }
}
