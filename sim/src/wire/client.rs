//! A raw protocol client: connects, opens the connection, and exchanges
//! methods one by one. The broker's tests and the simulated service use it;
//! it decides nothing (no heartbeats of its own, no reconnects).

use std::time::Duration;

use turmoil::net::TcpStream;
use turmoil::ToSocketAddrs;

use super::link::{Link, LinkError};
use super::method::{ChannelNo, ClientMethod, ServerMethod};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing but heartbeats arrived in time.
    #[error("timed out waiting for the broker")]
    Timeout,
    /// The broker ended the stream.
    #[error("connection closed")]
    Closed,
    /// The TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The link failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The broker answered something else than expected.
    #[error("unexpected reply {0:?}")]
    Unexpected(Box<ServerMethod>),
}

/// A connection to the simulated broker.
pub struct Client {
    link: Link<ServerMethod, ClientMethod>,
    heartbeat_ms: u32,
}

impl Client {
    /// Connects and sends `ConnectionOpen`; returns once the broker answered.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        name: &str,
        heartbeat_ms: u32,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(ClientError::Connect)?;
        let mut client = Client { link: Link::spawn(stream), heartbeat_ms: 0 };
        client.send(ClientMethod::ConnectionOpen { name: name.to_owned(), heartbeat_ms });
        match client.next(timeout).await? {
            ServerMethod::ConnectionOpenOk { heartbeat_ms } => {
                client.heartbeat_ms = heartbeat_ms;
                Ok(client)
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// The heartbeat interval the broker agreed to (0: off).
    pub fn heartbeat_ms(&self) -> u32 {
        self.heartbeat_ms
    }

    /// Queues a method for sending; false once the link is down.
    pub fn send(&self, m: ClientMethod) -> bool {
        self.link.send(m)
    }

    /// The next method, heartbeats included; `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Result<ServerMethod, LinkError>> {
        self.link.recv().await
    }

    /// The next method other than a heartbeat, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<ServerMethod, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.link.recv()).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(None) => return Err(ClientError::Closed),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(ServerMethod::Heartbeat))) => continue,
                Ok(Some(Ok(m))) => return Ok(m),
            }
        }
    }

    /// Opens channel `ch` and waits for the broker's answer.
    pub async fn open_channel(&mut self, ch: ChannelNo, timeout: Duration) -> Result<(), ClientError> {
        self.send(ClientMethod::OpenChannel { ch });
        match self.next(timeout).await? {
            ServerMethod::ChannelOpenOk { ch: got } if got == ch => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Closes the connection politely and lets the writer flush.
    pub async fn close(self, grace: Duration) {
        self.send(ClientMethod::ConnectionClose);
        self.link.close(grace).await;
    }
}
