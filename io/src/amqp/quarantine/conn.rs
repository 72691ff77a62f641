//! A raw AMQP 0-9-1 client connection: TCP or TLS, PLAIN login, strictly
//! one request and its reply at a time, every wait bounded by one
//! deadline. It reads what amqprs cannot (properties are kept as bytes),
//! and dropping it just closes the socket: the broker then requeues
//! whatever it had delivered and was not acknowledged.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::frame::{self, Frame};
use super::methods::{self as m, Id};
use super::wire::{Reader, Short, Writer};
use super::ScanErrorKind as Kind;
use crate::amqp::{tls, ConnectOptions};

/// Largest frame we agree to (RabbitMQ's default too).
const FRAME_MAX: u32 = 128 << 10;
/// Largest frame accepted before `connection.tune` settles it.
const PRE_TUNE_MAX: u32 = 128 << 10;
/// Channels used: 1 takes messages, 2 publishes copies.
const CHANNELS: u16 = 2;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open connection.
pub(super) struct RawConn {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    max_payload: u32,
    deadline: Instant,
    limit: Duration,
    /// Why the broker blocked the connection (`connection.blocked`), while
    /// it does: publishing then stalls until the deadline.
    pub blocked: Option<String>,
    pub peer: SocketAddr,
}

/// A message's content as it arrived.
pub(super) struct Content {
    /// The encoded properties, verbatim.
    pub props: Bytes,
    /// The body, when the caller asked to keep it.
    pub body: Option<Vec<u8>>,
}

fn protocol(e: Short) -> Kind {
    Kind::Protocol(e.to_string())
}

fn describe(f: &Frame) -> String {
    match f {
        Frame::Method { channel, class, method, .. } => format!("method {class}.{method} on channel {channel}"),
        Frame::Header { channel, .. } => format!("a content header on channel {channel}"),
        Frame::Body { channel, .. } => format!("a content body on channel {channel}"),
        Frame::Heartbeat => "a heartbeat".into(),
    }
}

impl RawConn {
    /// Connects, logs in and opens the vhost, all before `deadline`.
    pub async fn open(opts: &ConnectOptions, name: &str, deadline: Instant, limit: Duration) -> Result<Self, Kind> {
        let (stream, peer) = connect_stream(opts, deadline, limit).await?;
        let rbuf = BytesMut::with_capacity(64 << 10);
        let mut c = Self { stream, rbuf, max_payload: PRE_TUNE_MAX, deadline, limit, blocked: None, peer };
        c.write(b"AMQP\x00\x00\x09\x01").await?;
        let (_, args) = c.expect(0, "connection.start", &[m::CONNECTION_START]).await?;
        let mechanisms = m::start_mechanisms(&args).map_err(protocol)?;
        if !mechanisms.split(|b| *b == b' ').any(|mech| mech == b"PLAIN") {
            let offered = String::from_utf8_lossy(&mechanisms).into_owned();
            return Err(Kind::Protocol(format!("the broker does not offer PLAIN login (it offers {offered:?})")));
        }
        let url = &opts.url;
        c.send(&[m::frame(0, m::CONNECTION_START_OK, m::start_ok(url.username(), url.password(), name))]).await?;
        let (_, args) = c.expect(0, "login", &[m::CONNECTION_TUNE]).await?;
        let (channel_max, frame_max, _) = m::tune(&args).map_err(protocol)?;
        let frame_max = if frame_max == 0 { FRAME_MAX } else { frame_max.min(FRAME_MAX) };
        if frame_max < 4096 || (1..CHANNELS).contains(&channel_max) {
            return Err(Kind::Protocol(format!(
                "the broker offers frames of {frame_max} bytes, {channel_max} channels"
            )));
        }
        c.max_payload = frame_max - frame::OVERHEAD as u32;
        // Heartbeats off: a scan is short, and the deadline bounds it.
        let tune_ok = m::frame(0, m::CONNECTION_TUNE_OK, m::tune_ok(CHANNELS, frame_max, 0));
        c.send(&[tune_ok, m::frame(0, m::CONNECTION_OPEN, m::open(url.vhost()))]).await?;
        c.expect(0, "connection.open", &[m::CONNECTION_OPEN_OK]).await?;
        Ok(c)
    }

    /// When the scan must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The scan's whole allowance of time.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Opens `channel`, in confirm mode if `confirms`.
    pub async fn open_channel(&mut self, channel: u16, confirms: bool) -> Result<(), Kind> {
        self.rpc(channel, "channel.open", m::CHANNEL_OPEN, m::channel_open(), &[m::CHANNEL_OPEN_OK]).await?;
        if confirms {
            let select = m::confirm_select();
            self.rpc(channel, "confirm.select", m::CONFIRM_SELECT, select, &[m::CONFIRM_SELECT_OK]).await?;
        }
        Ok(())
    }

    /// Sends a request and waits for one of the replies `expect`.
    pub async fn rpc(
        &mut self,
        channel: u16,
        op: &'static str,
        id: Id,
        args: Writer,
        expect: &[Id],
    ) -> Result<(Id, Bytes), Kind> {
        self.send(&[m::frame(channel, id, args)]).await?;
        self.expect(channel, op, expect).await
    }

    /// Sends a method that has no reply (ack, nack, reject).
    pub async fn tell(&mut self, channel: u16, id: Id, args: Writer) -> Result<(), Kind> {
        self.send(&[m::frame(channel, id, args)]).await
    }

    /// Reads frames until a method `expect` on `channel`. A close of the
    /// connection or of that channel by the broker is answered and returned
    /// as an error; heartbeats and (un)blocked notices are taken in passing;
    /// anything else breaks the strict request/reply order and is an error.
    pub async fn expect(&mut self, channel: u16, op: &'static str, expect: &[Id]) -> Result<(Id, Bytes), Kind> {
        self.expect_inner(channel, op, expect, false).await
    }

    /// [`Self::expect`] that gives up quietly (`Ok(None)`) at `until`, when
    /// that comes before the deadline.
    pub async fn expect_until(
        &mut self,
        channel: u16,
        op: &'static str,
        expect: &[Id],
        until: Instant,
    ) -> Result<Option<(Id, Bytes)>, Kind> {
        let hard = self.deadline;
        self.deadline = until.min(hard);
        let got = self.expect_inner(channel, op, expect, false).await;
        self.deadline = hard;
        match got {
            Err(Kind::Deadline(_)) if until < hard && Instant::now() < hard => Ok(None),
            other => other.map(Some),
        }
    }

    /// [`Self::expect`] for a publisher confirm, which a blocked connection
    /// (`connection.blocked`: a resource alarm) will not get in time.
    pub async fn expect_confirm(&mut self, channel: u16, expect: &[Id]) -> Result<(Id, Bytes), Kind> {
        if let Some(reason) = &self.blocked {
            return Err(Kind::Blocked(reason.clone()));
        }
        self.expect_inner(channel, "basic.publish", expect, true).await
    }

    async fn expect_inner(
        &mut self,
        channel: u16,
        op: &'static str,
        expect: &[Id],
        blocked_fails: bool,
    ) -> Result<(Id, Bytes), Kind> {
        loop {
            let f = self.recv().await?;
            let Frame::Method { channel: ch, class, method, args } = &f else {
                return Err(Kind::Protocol(format!("expected the reply to {op}, got {}", describe(&f))));
            };
            let (ch, args) = (*ch, args.clone());
            match (ch, (*class, *method)) {
                (0, m::CONNECTION_CLOSE) => {
                    let (code, text) = m::close_reason(&args).map_err(protocol)?;
                    let _ = self.send(&[m::frame(0, m::CONNECTION_CLOSE_OK, Writer::new())]).await;
                    return Err(Kind::ConnectionClosed { code, text });
                }
                (0, m::CONNECTION_BLOCKED) => {
                    let reason = Reader::new(&args).shortstr("reason").unwrap_or_default();
                    let reason = String::from_utf8_lossy(reason).into_owned();
                    if blocked_fails {
                        return Err(Kind::Blocked(reason));
                    }
                    self.blocked = Some(reason);
                }
                (0, m::CONNECTION_UNBLOCKED) => self.blocked = None,
                (0, m::CONNECTION_SECURE) => {
                    return Err(Kind::Protocol("the broker asks for a SASL challenge PLAIN does not have".into()))
                }
                (ch, m::CHANNEL_CLOSE) if ch == channel && ch != 0 => {
                    let (code, text) = m::close_reason(&args).map_err(protocol)?;
                    let _ = self.send(&[m::frame(ch, m::CHANNEL_CLOSE_OK, Writer::new())]).await;
                    return Err(Kind::ChannelClosed { op, code, text });
                }
                (ch, id) if ch == channel && expect.contains(&id) => return Ok((id, args)),
                _ => return Err(Kind::Protocol(format!("expected the reply to {op}, got {}", describe(&f)))),
            }
        }
    }

    /// Reads the content (header and body frames) of a message on
    /// `channel`; keeps the body if `keep(props)` says so.
    pub async fn content(&mut self, channel: u16, keep: impl FnOnce(&[u8], u64) -> bool) -> Result<Content, Kind> {
        let (class, body_size, props) = match self.recv().await? {
            Frame::Header { channel: ch, class, body_size, props } if ch == channel => (class, body_size, props),
            f => return Err(Kind::Protocol(format!("expected a content header, got {}", describe(&f)))),
        };
        if class != m::BASIC_CLASS {
            return Err(Kind::Protocol(format!("content header of class {class}, not basic")));
        }
        let mut body = keep(&props, body_size).then(|| Vec::with_capacity(body_size.min(1 << 20) as usize));
        let mut got = 0u64;
        while got < body_size {
            match self.recv().await? {
                Frame::Body { channel: ch, payload } if ch == channel => {
                    got += payload.len() as u64;
                    if got > body_size {
                        return Err(Kind::Protocol(format!("a body longer than the {body_size} bytes announced")));
                    }
                    if let Some(b) = &mut body {
                        b.extend_from_slice(&payload);
                    }
                }
                f => return Err(Kind::Protocol(format!("expected a content body, got {}", describe(&f)))),
            }
        }
        Ok(Content { props, body })
    }

    /// Publishes a message (method, header, body split to the frame size).
    pub async fn publish(&mut self, channel: u16, args: Writer, props: &[u8], body: &[u8]) -> Result<(), Kind> {
        let mut frames = vec![m::frame(channel, m::BASIC_PUBLISH, args)];
        let props = Bytes::copy_from_slice(props);
        frames.push(Frame::Header { channel, class: m::BASIC_CLASS, body_size: body.len() as u64, props });
        for chunk in body.chunks(self.max_payload as usize) {
            frames.push(Frame::Body { channel, payload: Bytes::copy_from_slice(chunk) });
        }
        self.send(&frames).await
    }

    /// Closes the connection politely; the broker requeues what is unacked.
    pub async fn close(mut self) -> Result<(), Kind> {
        let close = m::frame(0, m::CONNECTION_CLOSE, m::close());
        self.send(&[close]).await?;
        self.expect(0, "connection.close", &[m::CONNECTION_CLOSE_OK]).await.map(drop)
    }

    async fn send(&mut self, frames: &[Frame]) -> Result<(), Kind> {
        let mut out = Vec::new();
        for f in frames {
            frame::encode(f, &mut out);
        }
        self.write(&out).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Kind> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Kind::Io(e.to_string())),
            Err(_) => Err(Kind::Deadline(self.limit)),
        }
    }

    /// The next frame other than a heartbeat.
    async fn recv(&mut self) -> Result<Frame, Kind> {
        loop {
            match frame::decode(&self.rbuf, self.max_payload) {
                Ok(Some((Frame::Heartbeat, used))) => {
                    let _ = self.rbuf.split_to(used);
                    continue;
                }
                Ok(Some((f, used))) => {
                    let _ = self.rbuf.split_to(used);
                    return Ok(f);
                }
                Ok(None) => {}
                Err(e) => return Err(Kind::Protocol(e.to_string())),
            }
            match timeout_at(self.deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Ok(Ok(0)) => return Err(Kind::Io("the broker closed the connection".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Kind::Io(e.to_string())),
                Err(_) => return Err(Kind::Deadline(self.limit)),
            }
        }
    }
}

/// TCP to each address of the URL's host in turn, then TLS for `amqps://`.
async fn connect_stream(
    opts: &ConnectOptions,
    deadline: Instant,
    limit: Duration,
) -> Result<(Box<dyn Stream>, SocketAddr), Kind> {
    let url = &opts.url;
    let failed = |detail: String| Kind::Connect { url: url.to_string(), detail };
    let tls = match url.is_tls() {
        true => Some(tls::connector(opts).map_err(|e| Kind::Tls(e.to_string()))?),
        false => None,
    };
    let addrs = match timeout_at(deadline, tokio::net::lookup_host((url.host(), url.port()))).await {
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
        Ok(Err(e)) => return Err(failed(format!("cannot resolve {}: {e}", url.host()))),
        Err(_) => return Err(Kind::Deadline(limit)),
    };
    let mut last = format!("{} resolves to no address", url.host());
    for peer in addrs {
        let tcp = match timeout_at(deadline, TcpStream::connect(peer)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                last = format!("{peer}: {e}");
                continue;
            }
            Err(_) => return Err(Kind::Deadline(limit)),
        };
        let _ = tcp.set_nodelay(true);
        let Some((connector, domain)) = &tls else { return Ok((Box::new(tcp), peer)) };
        let name = tls::server_name(domain).map_err(|e| Kind::Tls(e.to_string()))?;
        return match timeout_at(deadline, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok((Box::new(stream), peer)),
            Ok(Err(e)) => Err(failed(format!("TLS handshake with {peer}: {e}"))),
            Err(_) => Err(Kind::Deadline(limit)),
        };
    }
    Err(failed(last))
}
