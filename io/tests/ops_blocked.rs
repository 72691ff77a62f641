//! The blocked-connection timeout, end to end through the io shell: a
//! `connection.blocked` that lifts in time keeps the connection; one that
//! lasts longer than the configured timeout gets the connection dropped and
//! made again.
//!
//! A real broker alarm (`rabbitmqctl set_vm_memory_high_watermark`) would
//! block every test running against the shared broker, so a proxy between
//! endpoint and broker slips `connection.blocked` / `connection.unblocked`
//! frames into the broker's stream, between two whole frames.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasklane_core::{EndpointId, Status};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::endpoint::{Endpoint, EndpointConfig};
use tasklane_io::service::{provision, QueueType};
use tasklane_tests::{amqp_url, broker_addr, Vhost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type FrameSink = mpsc::UnboundedSender<Vec<u8>>;

/// Forwards connections to the broker; the broker's side frame by frame so
/// that frames can be injected between them.
struct Proxy {
    addr: std::net::SocketAddr,
    /// The latest connection's way to the client, and how many were made.
    latest: Arc<Mutex<(Option<FrameSink>, u32)>>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let latest: Arc<Mutex<(Option<FrameSink>, u32)>> = Arc::default();
        let registry = latest.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let broker = TcpStream::connect(broker_addr()).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut broker_read, mut broker_write) = broker.into_split();
                let (sink, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
                {
                    let mut latest = registry.lock().unwrap();
                    latest.0 = Some(sink.clone());
                    latest.1 += 1;
                }
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
                    let _ = broker_write.shutdown().await;
                });
                tokio::spawn(async move {
                    while let Ok(frame) = read_frame(&mut broker_read).await {
                        if sink.send(frame).is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some(bytes) = frames.recv().await {
                        if client_write.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, latest }
    }

    fn inject(&self, frame: Vec<u8>) {
        let latest = self.latest.lock().unwrap();
        latest.0.as_ref().expect("a connection").send(frame).unwrap();
    }

    fn connections(&self) -> u32 {
        self.latest.lock().unwrap().1
    }
}

/// One AMQP frame: 7-byte header (type, channel, size), payload, 0xCE.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 7];
    r.read_exact(&mut frame).await?;
    let size = u32::from_be_bytes(frame[3..7].try_into().unwrap()) as usize;
    frame.resize(7 + size + 1, 0);
    r.read_exact(&mut frame[7..]).await?;
    Ok(frame)
}

/// A method frame on channel 0 of class `connection` (10).
fn connection_method(method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = 10u16.to_be_bytes().to_vec();
    payload.extend(method.to_be_bytes());
    payload.extend(args);
    let mut frame = vec![1u8, 0, 0];
    frame.extend((payload.len() as u32).to_be_bytes());
    frame.extend(payload);
    frame.push(0xCE);
    frame
}

fn blocked(reason: &str) -> Vec<u8> {
    let mut args = vec![reason.len() as u8];
    args.extend(reason.as_bytes());
    connection_method(60, &args)
}

fn unblocked() -> Vec<u8> {
    connection_method(61, &[])
}

async fn wait_status(endpoint: &Endpoint, what: &str, want: impl Fn(&Status) -> bool) {
    let mut status = endpoint.status();
    let waited = tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| want(s))).await;
    assert!(waited.is_ok(), "no {what} status within 20 s; status: {:?}", *endpoint.status().borrow());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_connection_is_made_again_after_the_blocked_timeout_and_not_before() {
    let vhost = Vhost::create().unwrap();
    let id = EndpointId::new("blocked-ep").unwrap();
    let guest = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    provision(&guest, &id, QueueType::Classic).await.unwrap();
    guest.close().await.unwrap();
    let proxy = Proxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(2);
    let cfg = EndpointConfig::new(&amqp_url(proxy.addr, vhost.name()), id.as_str(), dir.path())
        .unwrap()
        .heartbeat(30)
        .blocked_timeout(timeout);
    let endpoint = Endpoint::open(cfg).await.unwrap();
    wait_status(&endpoint, "consuming", |s| *s == Status::Consuming).await;

    // Lifted within the timeout: the connection stays.
    proxy.inject(blocked("short alarm"));
    wait_status(&endpoint, "blocked", |s| matches!(s, Status::Blocked { reason } if reason == "short alarm")).await;
    proxy.inject(unblocked());
    wait_status(&endpoint, "consuming", |s| *s == Status::Consuming).await;
    tokio::time::sleep(timeout + Duration::from_millis(500)).await;
    assert_eq!((proxy.connections(), endpoint.counters().connections), (1, 1), "an unblocked connection stays");

    // Blocked for longer than the timeout: dropped and made again. (The
    // disconnected status between the two may be too short to watch.)
    proxy.inject(blocked("memory alarm"));
    let since = Instant::now();
    wait_status(&endpoint, "blocked", |s| matches!(s, Status::Blocked { reason } if reason == "memory alarm")).await;
    while endpoint.counters().disconnects == 0 {
        assert!(since.elapsed() < timeout * 5, "still connected {:?} after the block", since.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = since.elapsed();
    assert!(waited >= timeout, "dropped after {waited:?}, before the timeout");
    wait_status(&endpoint, "consuming again", |s| *s == Status::Consuming).await;
    let c = endpoint.counters();
    assert_eq!((proxy.connections(), c.connections, c.disconnects), (2, 2, 1));
    endpoint.shutdown().await;
}
