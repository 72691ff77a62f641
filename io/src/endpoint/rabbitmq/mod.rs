//! The broker port over amqprs: one task per AMQP connection. It opens the
//! connection to the address core picked, then carries out core's [`Amqp`]
//! commands one after the other, each to completion (amqprs issue #196: a
//! cancelled RPC breaks its channel), and reports answers and broker events
//! as core [`Input`]s. The driver never waits on it; core gives up on a
//! connection that hangs by its own deadlines and says `Disconnect`.
//!
//! Channels are named by core's [`ChannelId`]s; an ack goes to the amqprs
//! channel its [`tasklane_core::DeliveryTag`] names, or nowhere.

mod session;

use tasklane_core::{Amqp, ConnId, Input};
use tokio::sync::mpsc::{self, UnboundedSender};

use super::ports::{BrokerConn, BrokerPort, BrokerSinks, InputSink};
use crate::amqp::{quarantine, ConnectOptions};

/// Connections to a list of RabbitMQ nodes, with amqprs.
#[derive(Clone, Debug)]
pub(crate) struct AmqprsBroker {
    /// The addresses core names by index.
    pub brokers: Vec<ConnectOptions>,
}

pub(crate) enum ConnCmd {
    Amqp(Amqp),
    Close(String),
}

/// The driver's handle on a connection task.
pub(crate) struct AmqprsConn {
    cmds: UnboundedSender<ConnCmd>,
}

impl BrokerPort for AmqprsBroker {
    type Conn = AmqprsConn;

    fn connect(&mut self, conn: ConnId, address: usize, sinks: BrokerSinks) -> AmqprsConn {
        let opts = self.brokers[address.min(self.brokers.len() - 1)].clone();
        let (cmds, rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("connection", conn = conn.0, node = %format!("{}:{}", opts.url.host(), opts.url.port()), peer = tracing::field::Empty);
        tokio::spawn(tracing::Instrument::instrument(session::run(conn, opts, rx, sinks), span));
        AmqprsConn { cmds }
    }

    fn quarantine(&mut self, scan: u64, address: usize, queue: String, max: u32, inputs: InputSink) {
        let opts = self.brokers[address.min(self.brokers.len() - 1)].clone();
        tokio::spawn(async move {
            let input = match quarantine::scan(&opts, &queue, max as usize).await {
                Ok(out) => Input::QuarantineDone {
                    scan,
                    quarantined: out.quarantined.iter().map(|q| lossy(q.message_id.as_deref())).collect(),
                    scanned: out.scanned as u32,
                    error: None,
                },
                Err(e) => Input::QuarantineDone {
                    scan,
                    quarantined: e.outcome.quarantined.iter().map(|q| lossy(q.message_id.as_deref())).collect(),
                    scanned: e.outcome.scanned as u32,
                    error: Some(e.to_string()),
                },
            };
            inputs.send(input);
        });
    }
}

/// A message id as text, whatever its bytes.
fn lossy(id: Option<&[u8]>) -> String {
    id.map_or_else(|| "-".to_string(), |b| String::from_utf8_lossy(b).into_owned())
}

impl BrokerConn for AmqprsConn {
    fn execute(&mut self, op: Amqp) {
        // A send fails only once the task has ended: the connection is gone,
        // and core learns it from the loss report.
        let _ = self.cmds.send(ConnCmd::Amqp(op));
    }

    fn close(self, reason: String) {
        let _ = self.cmds.send(ConnCmd::Close(reason));
    }
}
