//! A channel in publisher-confirm mode, with its own count of confirm tags
//! (amqprs reports confirms only through the channel callback, SPEC §1).
//!
//! Events come in the broker's order: for a mandatory message the broker
//! sends `basic.return` before the `basic.ack` of the same message, so the
//! reader knows a message was returned by the time its confirm arrives.

use std::time::Duration;

use amqprs::channel::{Channel, ConfirmSelectArguments};
use amqprs::connection::Connection;
use amqprs::BasicProperties;
use tokio::sync::{mpsc, watch};

use super::ServiceError;
use crate::amqp::{self, ChannelEvent, CloseReason};

/// A channel in confirm mode: publishes get sequence numbers from 1, and
/// the broker's answers come in order from [`ConfirmChannel::next_event`].
pub(crate) struct ConfirmChannel {
    channel: Channel,
    close: CloseReason,
    events: mpsc::UnboundedReceiver<((), ChannelEvent)>,
    published: u64,
    /// Set once the connection is lost (when the caller watches it): the
    /// wait for a confirm ends then instead of at its timeout.
    lost: Option<watch::Receiver<bool>>,
}

impl ConfirmChannel {
    /// Opens a channel on `conn` and selects confirm mode.
    pub(crate) async fn open(conn: &Connection) -> Result<Self, ServiceError> {
        Self::open_watched(conn, None).await
    }

    /// [`ConfirmChannel::open`], ending waits with
    /// [`ServiceError::ConnectionLost`] as soon as `lost` turns `true`.
    pub(crate) async fn open_watched(
        conn: &Connection,
        lost: Option<watch::Receiver<bool>>,
    ) -> Result<Self, ServiceError> {
        let (tx, events) = mpsc::unbounded_channel();
        let (channel, close) = amqp::open_channel(conn, (), tx).await?;
        channel
            .confirm_select(ConfirmSelectArguments::new(false))
            .await
            .map_err(|e| amqp::Error::from_channel("confirm.select", e, &close))?;
        Ok(Self { channel, close, events, published: 0, lost })
    }

    /// Publishes one message; returns its confirm sequence number.
    pub(crate) async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: Vec<u8>,
        mandatory: bool,
    ) -> Result<u64, ServiceError> {
        let mut args = amqp::publish_args(exchange, routing_key);
        args.mandatory(mandatory);
        self.channel
            .basic_publish(props, body, args)
            .await
            .map_err(|e| amqp::Error::from_channel("basic.publish", e, &self.close))?;
        self.published += 1;
        Ok(self.published)
    }

    /// The next thing the broker said, waiting at most `timeout`. A closed
    /// channel is an error.
    pub(crate) async fn next_event(&mut self, timeout: Duration) -> Result<ChannelEvent, ServiceError> {
        let mut lost = self.lost.clone();
        let recv = async {
            match lost.as_mut() {
                Some(lost) => tokio::select! {
                    biased;
                    ev = self.events.recv() => ev,
                    // A closed watch means the watcher is gone with the connection.
                    _ = lost.wait_for(|l| *l) => None,
                },
                None => self.events.recv().await,
            }
        };
        match tokio::time::timeout(timeout, recv).await {
            Ok(Some((_, ChannelEvent::Closed { code, text }))) => Err(ServiceError::ChannelClosed { code, text }),
            Ok(Some((_, ev))) => Ok(ev),
            Ok(None) => Err(ServiceError::ConnectionLost),
            Err(_) if !self.channel.is_open() => Err(ServiceError::ConnectionLost),
            Err(_) => Err(ServiceError::ConfirmTimeout(timeout)),
        }
    }

    /// Closes the channel (best effort).
    pub(crate) async fn close(self) {
        if self.channel.is_open() {
            let _ = self.channel.close().await;
        }
    }
}
