//! The channels of the service's consumer of `results`, opened again on
//! another node after a failover.

use amqprs::channel::{BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage};
use amqprs::connection::Connection;
use tokio::sync::{mpsc, watch};

use super::confirm::ConfirmChannel;
use super::topology::RESULTS;
use super::ServiceError;
use crate::amqp::{self, ChannelEvent, CloseReason};

/// The channels of a consumer of `results`.
pub(super) struct Channels {
    pub(super) channel: Channel,
    pub(super) close: CloseReason,
    pub(super) events: mpsc::UnboundedReceiver<((), ChannelEvent)>,
    pub(super) deliveries: mpsc::UnboundedReceiver<ConsumerMessage>,
    pub(super) dead: ConfirmChannel,
}

impl Channels {
    pub(super) async fn start(
        conn: &Connection,
        prefetch: u16,
        lost: Option<watch::Receiver<bool>>,
    ) -> Result<Self, ServiceError> {
        let (tx, events) = mpsc::unbounded_channel();
        let (channel, close) = amqp::open_channel(conn, (), tx).await?;
        channel
            .basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await
            .map_err(|e| amqp::Error::from_channel("basic.qos", e, &close))?;
        let (_, deliveries) = channel
            .basic_consume_rx(BasicConsumeArguments::new(RESULTS, "").manual_ack(true).finish())
            .await
            .map_err(|e| amqp::Error::from_channel("basic.consume", e, &close))?;
        // Opened last: a refused consume leaves no open channel behind for
        // amqprs to close at drop, after the caller closed the connection.
        let dead = ConfirmChannel::open_watched(conn, lost).await?;
        Ok(Self { channel, close, events, deliveries, dead })
    }
}

/// Resolves once `lost` turns `true`; never without a watch.
pub(super) async fn lost_or_never(lost: &mut Option<watch::Receiver<bool>>) {
    match lost {
        Some(lost) => {
            let _ = lost.wait_for(|l| *l).await;
        }
        None => std::future::pending().await,
    }
}
