//! A framed connection over a turmoil TCP stream: one task reads frames, one
//! writes them, and the owner talks to both through channels.
//!
//! Why tasks: reading a length-prefixed frame is not cancel safe, and a
//! write can block forever once turmoil has dropped segments on a broken
//! link (turmoil has no retransmission, so the flow-control credits never
//! come back). With both behind channels, the owner can `select!` on
//! input and timers and still notice a dead peer through heartbeats.

use std::marker::PhantomData;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use turmoil::net::TcpStream;

use super::codec::{read_frame, write_frame, Decode, DecodeError, Encode};

/// Why a link stopped delivering input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The socket failed (reset, broken pipe, truncated frame).
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame that does not decode.
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
}

/// One side of a framed connection: sends `Out`, receives `In`.
pub struct Link<In, Out> {
    out: Option<mpsc::UnboundedSender<Out>>,
    inbound: mpsc::UnboundedReceiver<Result<In, LinkError>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    _marker: PhantomData<fn(Out)>,
}

impl<In, Out> Link<In, Out>
where
    In: Decode + 'static,
    Out: Encode + 'static,
{
    /// Starts the reader and writer tasks on the current turmoil host.
    pub fn spawn(stream: TcpStream) -> Self {
        let (mut rd, mut wr) = stream.into_split();
        let (in_tx, inbound) = mpsc::unbounded_channel();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Out>();

        let reader = tokio::task::spawn_local(async move {
            loop {
                let item = match read_frame(&mut rd).await {
                    Ok(Some(frame)) => In::decode(frame).map_err(LinkError::from),
                    Ok(None) => return,
                    Err(e) => Err(LinkError::from(e)),
                };
                let stop = item.is_err();
                if in_tx.send(item).is_err() || stop {
                    return;
                }
            }
        });
        let writer = tokio::task::spawn_local(async move {
            while let Some(m) = out_rx.recv().await {
                if write_frame(&mut wr, &m.to_frame()).await.is_err() {
                    return;
                }
            }
            // All senders gone: dropping `wr` sends FIN.
        });
        Link { out: Some(out), inbound, reader, writer, _marker: PhantomData }
    }

    /// A handle that queues methods for the writer task.
    pub fn sender(&self) -> mpsc::UnboundedSender<Out> {
        self.out.clone().expect("link is open")
    }

    /// Queues one method; false once the writer has stopped.
    pub fn send(&self, m: Out) -> bool {
        self.out.as_ref().is_some_and(|tx| tx.send(m).is_ok())
    }

    /// The next method from the peer; `None` after a clean end of stream.
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<In, LinkError>> {
        self.inbound.recv().await
    }

    /// Lets the writer flush what is queued (for at most `grace`), then
    /// tears both tasks down. Other clones of the sender must be gone for
    /// the writer to finish on its own.
    pub async fn close(mut self, grace: Duration) {
        self.out = None;
        let _ = tokio::time::timeout(grace, &mut self.writer).await;
    }
}

impl<In, Out> Drop for Link<In, Out> {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}
