//! Tests of the test harness itself: vhosts on the real broker, and the fault
//! proxy against a small echo server (and once against the broker).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
use amqprs::connection::Connection;
use amqprs::{BasicProperties, FieldTable, FieldValue};
use tasklane_tests::{amqp_args, vhost_exists, FaultProxy, Vhost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(5);

#[test]
fn vhosts_are_created_distinct_and_deleted_on_drop() {
    let started = Instant::now();
    let a = Vhost::create().expect("create vhost a");
    let b = Vhost::create().expect("create vhost b");
    let created = started.elapsed();

    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("tasklane-test-"));
    assert!(vhost_exists(a.name()).unwrap());
    assert!(vhost_exists(b.name()).unwrap());
    assert_eq!(a.url(), format!("amqp://guest:guest@127.0.0.1:5672/{}", a.name()));

    let a_name = a.name().to_owned();
    let started = Instant::now();
    drop(a);
    let deleted = started.elapsed();
    assert!(!vhost_exists(&a_name).unwrap());
    assert!(vhost_exists(b.name()).unwrap(), "dropping a must not delete b");
    eprintln!("two vhosts created and granted in {created:?}, one deleted in {deleted:?}");
}

/// What a test pays for its isolation: printed, not asserted (the machine is
/// shared), but bounded so a broken broker does not hide behind it.
#[test]
fn vhost_create_and_delete_is_cheap() {
    const ROUNDS: u32 = 10;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        drop(Vhost::create().unwrap());
    }
    let each = started.elapsed() / ROUNDS;
    eprintln!("vhost create + grant + delete: {each:?} each, mean of {ROUNDS}");
    assert!(each < Duration::from_secs(2), "{each:?} per vhost");
}

#[tokio::test]
async fn vhost_queue_helpers_count_peek_and_delete() {
    let vhost = Vhost::create().unwrap();
    let connection = Connection::open(&amqp_args(tasklane_tests::broker_addr(), vhost.name())).await.unwrap();
    let channel = connection.open_channel(None).await.unwrap();
    channel.queue_declare(QueueDeclareArguments::durable_client_named("q")).await.unwrap();
    for i in 0..3 {
        let mut headers = FieldTable::new();
        headers.insert("tasklane-kind".try_into().unwrap(), FieldValue::S("echo".try_into().unwrap()));
        let properties =
            BasicProperties::default().with_message_id(&format!("task-{i}")).with_headers(headers).finish();
        let payload = vec![0, 255, i];
        channel.basic_publish(properties, payload, BasicPublishArguments::new("", "q")).await.unwrap();
    }
    channel.close().await.unwrap();
    connection.close().await.unwrap();

    let counts = vhost.queue_counts("q").await.unwrap().expect("queue q exists");
    assert_eq!((counts.ready, counts.consumers), (3, 0));

    let info = vhost.queue("q").unwrap().expect("queue q exists");
    assert_eq!((info.name.as_str(), info.kind.as_str(), info.durable), ("q", "classic", true));

    let peeked = vhost.peek_messages("q", 10).unwrap();
    let ids: Vec<_> = peeked.iter().map(|m| m.message_id.clone().unwrap()).collect();
    assert_eq!(ids, ["task-0", "task-1", "task-2"]);
    assert_eq!(peeked[2].payload, [0, 255, 2]);
    assert_eq!(peeked[0].routing_key, "q");
    assert_eq!(peeked[0].headers["tasklane-kind"], "echo");
    // Peeking puts them back.
    let counts = vhost.queue_counts("q").await.unwrap().unwrap();
    assert_eq!(counts.ready, 3);

    assert!(vhost.delete_queue("q").unwrap());
    assert!(!vhost.delete_queue("q").unwrap());
    assert!(vhost.queue("q").unwrap().is_none());
    assert_eq!(vhost.queue_counts("q").await.unwrap(), None);
}

/// An echo server on an ephemeral port. Reports on `ended` each time one of
/// its connections ends (EOF or error), so a test can see the far side close.
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ended_tx, ended) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = socket.read(&mut buf).await {
                    if socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = ended_tx.send(());
            });
        }
    });
    (addr, ended)
}

async fn round_trip(client: &mut TcpStream, bytes: &[u8]) {
    client.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    timeout(LONG, client.read_exact(&mut back)).await.expect("echo within 5 s").unwrap();
    assert_eq!(back, bytes);
}

/// True when the client's socket has been closed by the far side (EOF or
/// reset) within `LONG`.
async fn closed_by_peer(client: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(timeout(LONG, client.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn proxy_forwards_both_ways_and_counts() {
    let (echo, _) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"hello").await;
    round_trip(&mut client, &[7u8; 100_000]).await;

    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.refused, stats.live), (1, 0, 1));
    assert_eq!(stats.bytes_to_target, 100_005);
    assert_eq!(stats.bytes_to_client, 100_005);
    assert_eq!(proxy.bytes_forwarded(), 200_010);
}

#[tokio::test]
async fn proxy_cut_all_closes_both_sides_and_spares_new_connections() {
    let (echo, mut ended) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.unwrap();
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut first, b"one").await;
    round_trip(&mut second, b"two").await;

    assert_eq!(proxy.cut_all(), 2);
    assert!(closed_by_peer(&mut first).await, "client side of first closed");
    assert!(closed_by_peer(&mut second).await, "client side of second closed");
    for _ in 0..2 {
        timeout(LONG, ended.recv()).await.expect("server side closed too");
    }
    let (stats, settled) = proxy.wait_until(LONG, |s| s.live == 0).await;
    assert!(settled, "{stats:?}");
    assert_eq!(stats.cut, 2);

    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut third, b"three").await;
    assert_eq!(proxy.stats().accepted, 3);
}

#[tokio::test]
async fn proxy_freeze_holds_bytes_until_thawed() {
    let (echo, _) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"before").await;
    let before = proxy.stats();

    proxy.freeze(true);
    client.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    assert!(timeout(SHORT, client.read_exact(&mut buf)).await.is_err(), "no byte comes back while frozen");
    let frozen = proxy.stats();
    assert_eq!(frozen.bytes_to_target, before.bytes_to_target);
    assert_eq!(frozen.bytes_to_client, before.bytes_to_client);
    assert_eq!(frozen.live, 1, "the connection stays open while frozen");

    proxy.freeze(false);
    timeout(LONG, client.read_exact(&mut buf)).await.expect("the held bytes arrive after thaw").unwrap();
    assert_eq!(&buf, b"held");
    round_trip(&mut client, b"after").await;
}

#[tokio::test]
async fn proxy_refuse_closes_new_connections_only() {
    let (echo, _) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.unwrap();
    let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut old, b"old").await;

    proxy.refuse(true);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(closed_by_peer(&mut refused).await, "refused connection closed");
    round_trip(&mut old, b"still forwarded").await;
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.refused), (1, 1));

    proxy.refuse(false);
    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut new, b"new").await;
    assert_eq!(proxy.stats().accepted, 2);
}

#[tokio::test]
async fn proxy_stops_on_drop() {
    let (echo, mut ended) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.unwrap();
    let addr = proxy.addr();
    let mut client = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut client, b"x").await;

    drop(proxy);
    assert!(closed_by_peer(&mut client).await, "live connection closed");
    timeout(LONG, ended.recv()).await.expect("server side closed");
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after drop");
}

/// The faults as an AMQP client sees them: a cut is reported through
/// `listen_network_io_failure`, and so is a freeze once heartbeats lapse.
#[tokio::test]
async fn amqp_client_through_proxy_notices_cut_and_freeze() {
    let vhost = Vhost::create().unwrap();
    let proxy = FaultProxy::start(tasklane_tests::broker_addr()).await.unwrap();
    assert!(proxy.url_for(&vhost).ends_with(&format!("/{}", vhost.name())));

    let mut args = amqp_args(proxy.addr(), vhost.name());
    let connection = Connection::open(&args).await.unwrap();
    let failed = tokio::spawn({
        let connection = connection.clone();
        async move { connection.listen_network_io_failure().await }
    });
    let channel = connection.open_channel(None).await.unwrap();
    channel.queue_declare(QueueDeclareArguments::durable_client_named("q")).await.unwrap();
    assert!(proxy.stats().bytes_to_client > 0);

    assert_eq!(proxy.cut_all(), 1);
    let io_failure = timeout(LONG, failed).await.expect("cut noticed").unwrap();
    assert!(io_failure, "a cut is a network I/O failure");

    // Freeze: the socket stays open, only the heartbeat can tell.
    args.heartbeat(1);
    let connection = Connection::open(&args).await.unwrap();
    let failed = tokio::spawn({
        let connection = connection.clone();
        async move { connection.listen_network_io_failure().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let frozen_at = Instant::now();
    proxy.freeze(true);
    let io_failure =
        timeout(Duration::from_secs(15), failed).await.expect("freeze noticed by heartbeat within 15 s").unwrap();
    assert!(io_failure);
    eprintln!("amqprs noticed a freeze after {:?} with heartbeat 1 s", frozen_at.elapsed());
    proxy.freeze(false);
    assert_eq!(vhost.queue_counts("q").await.unwrap().unwrap().ready, 0);
}
