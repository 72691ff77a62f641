//! A fault-injecting TCP proxy between a client (the endpoint) and a target
//! (the broker).
//!
//! It runs on the tokio runtime of the test that starts it, listens on
//! 127.0.0.1 on an ephemeral port, and stops when dropped. Faults:
//! - [`FaultProxy::cut_all`]: every live connection is reset, both ways, as a
//!   network failure mid-stream would.
//! - [`FaultProxy::freeze`]: no byte moves in either direction, while every
//!   socket stays open: only heartbeats can tell.
//! - [`FaultProxy::refuse`]: new connections are closed as soon as they are
//!   accepted, as if the broker were unreachable.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::{amqp_url, Vhost};

/// Connections forwarded at once; more are closed on accept (and counted as
/// refused), so a runaway client cannot exhaust the test's file descriptors.
const MAX_LIVE: u64 = 512;
/// Bytes read from one side before they are written to the other.
const BUFFER: usize = 16 * 1024;
/// How long to wait for the target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP proxy that injects faults; see the module docs.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Incremented by `cut_all`; every connection ends when it changes.
    cut: watch::Sender<u64>,
    frozen: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

/// A snapshot of a proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded to the target (refused ones not included).
    pub accepted: u64,
    /// Connections closed on accept: while refusing, or over the live limit.
    pub refused: u64,
    /// Connections open now.
    pub live: u64,
    /// Connections ended by `cut_all`.
    pub cut: u64,
    /// Bytes forwarded from clients to the target.
    pub bytes_to_target: u64,
    /// Bytes forwarded from the target to clients.
    pub bytes_to_client: u64,
}

#[derive(Debug, Default)]
struct Shared {
    refusing: std::sync::atomic::AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
    live: AtomicU64,
    cut: AtomicU64,
    bytes_to_target: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl FaultProxy {
    /// Starts a proxy to `target` on the current tokio runtime.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (cut, _) = watch::channel(0);
        let (frozen, _) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, target, Arc::clone(&shared), cut.clone(), frozen.clone()));
        Ok(FaultProxy { addr, shared, cut, frozen, accept_task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An AMQP URL (guest/guest) for `vhost` through this proxy.
    pub fn url_for(&self, vhost: &Vhost) -> String {
        amqp_url(self.addr, vhost.name())
    }

    /// Resets every live connection, both the client's and the target's
    /// socket, and returns how many there were. New connections are not
    /// affected (combine with [`FaultProxy::refuse`] to keep them out).
    pub fn cut_all(&self) -> u64 {
        let live = self.shared.live.load(Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
        live
    }

    /// Stops (`true`) or resumes (`false`) forwarding in both directions.
    /// Sockets stay open; bytes wait in the proxy and the kernel's buffers
    /// and flow again on resume. Applies to new connections too.
    pub fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// While `true`, new connections are closed right after accept.
    /// Connections already forwarded are not affected.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            live: s.live.load(Ordering::SeqCst),
            cut: s.cut.load(Ordering::SeqCst),
            bytes_to_target: s.bytes_to_target.load(Ordering::SeqCst),
            bytes_to_client: s.bytes_to_client.load(Ordering::SeqCst),
        }
    }

    /// Connections accepted and forwarded so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far, both directions together.
    pub fn bytes_forwarded(&self) -> u64 {
        let s = self.stats();
        s.bytes_to_target + s.bytes_to_client
    }

    /// Waits until `done(stats)` holds, checking every 10 ms, for at most
    /// `timeout`. Returns the last stats and whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&ProxyStats) -> bool) -> (ProxyStats, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return (stats, true);
            }
            if tokio::time::Instant::now() >= deadline {
                return (stats, false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FaultProxy {
    /// Stops accepting; the connection tasks end with the accept task, which
    /// owns them, and their sockets close.
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    cut: watch::Sender<u64>,
    frozen: watch::Sender<bool>,
) {
    // Owns every connection task: dropping it (when this task is aborted)
    // aborts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of descriptors or similar: back off, do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if shared.refusing.load(Ordering::SeqCst)
                    || shared.live.load(Ordering::SeqCst) >= MAX_LIVE
                {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    reset_on_drop(&client);
                    drop(client);
                    continue;
                }
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                shared.live.fetch_add(1, Ordering::SeqCst);
                let mut cut = cut.subscribe();
                cut.mark_unchanged();
                let frozen = frozen.subscribe();
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let was_cut = tokio::select! {
                        _ = cut.changed() => true,
                        _ = forward(client, target, &shared, frozen) => false,
                    };
                    if was_cut {
                        shared.cut.fetch_add(1, Ordering::SeqCst);
                    }
                    shared.live.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards between `client` and a new connection to `target` until both
/// directions have ended, or one of them failed.
async fn forward(
    client: TcpStream,
    target: SocketAddr,
    shared: &Shared,
    frozen: watch::Receiver<bool>,
) -> io::Result<()> {
    reset_on_drop(&client);
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(connected) => connected?,
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
    };
    reset_on_drop(&server);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pump(client_read, server_write, &shared.bytes_to_target, frozen.clone()),
        pump(server_read, client_write, &shared.bytes_to_client, frozen),
    )?;
    Ok(())
}

/// Copies `from` to `to` until `from` ends, then shuts `to` down for
/// writing. Holds the bytes while frozen.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    counter: &AtomicU64,
    mut frozen: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        wait_thawed(&mut frozen).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        // Bytes read just as the freeze began are held here.
        wait_thawed(&mut frozen).await;
        to.write_all(&buf[..n]).await?;
        counter.fetch_add(n as u64, Ordering::SeqCst);
    }
}

async fn wait_thawed(frozen: &mut watch::Receiver<bool>) {
    // Err only when the proxy is gone, and then this task is being aborted.
    let _ = frozen.wait_for(|frozen| !*frozen).await;
}

/// Closing with SO_LINGER 0 sends RST: the peer sees a reset, as on a real
/// network failure, not an orderly end of stream.
fn reset_on_drop(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
