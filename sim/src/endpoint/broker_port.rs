//! The broker port of a simulated endpoint: one task per connection over
//! the simulation's wire protocol, in the place of amqprs. It turns core's
//! commands into wire methods (mapping core's channel ids to channel
//! numbers) and the broker's methods into core inputs. Like the amqprs
//! adapter it decides nothing: no timeouts (core's connect timeout ends a
//! hanging attempt with `Disconnect`), no retries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tasklane_core::{Amqp, ChannelId, ConnId, Input, RawMessage, Report};
use tasklane_io::endpoint::{BrokerConn, BrokerPort, BrokerSinks, ConnectionInfo};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::convert;
use super::poison;
use crate::wire::session::{self, ConnEvent, Dial};
use crate::wire::{ChannelNo, ClientMethod, ServerMethod};

/// How long a polite close may take before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_millis(200);
/// The wire session's own bound on connecting: far beyond core's connect
/// timeout, which is what decides.
const NO_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Connections from one boot of an endpoint host to the broker addresses.
pub struct SimBroker {
    /// `(host, port)` per broker address, as core names them.
    pub addresses: Vec<(String, u16)>,
    /// The broker client name of attempt `conn` (so the oracles can map a
    /// broker connection back to its endpoint and spool lifetime).
    pub name: Box<dyn Fn(ConnId) -> String>,
    pub heartbeat_ms: u32,
}

enum Cmd {
    Amqp(Amqp),
    Close,
}

/// The driver's handle on a connection task.
pub struct SimConn {
    cmds: UnboundedSender<Cmd>,
}

impl BrokerPort for SimBroker {
    type Conn = SimConn;

    fn connect(&mut self, conn: ConnId, address: usize, sinks: BrokerSinks) -> SimConn {
        let (host, port) = self.addresses[address.min(self.addresses.len() - 1)].clone();
        let dial = Dial { host, port, name: (self.name)(conn), heartbeat_ms: self.heartbeat_ms, timeout: NO_TIMEOUT };
        let (cmds, rx) = mpsc::unbounded_channel();
        tokio::task::spawn_local(run(conn, dial, rx, sinks));
        SimConn { cmds }
    }

    fn quarantine(
        &mut self,
        scan: u64,
        address: usize,
        queue: String,
        max: u32,
        inputs: tasklane_io::endpoint::InputSink,
    ) {
        let addr = self.addresses[address.min(self.addresses.len() - 1)].clone();
        let name = poison::scan_client(&(self.name)(ConnId(0)), scan);
        tokio::task::spawn_local(async move {
            inputs.send(poison::scan(scan, addr, name, queue, max).await);
        });
    }
}

impl BrokerConn for SimConn {
    fn execute(&mut self, op: Amqp) {
        let _ = self.cmds.send(Cmd::Amqp(op));
    }

    fn close(self, _reason: String) {
        let _ = self.cmds.send(Cmd::Close);
    }
}

/// One connection's channel numbering.
#[derive(Default)]
struct Channels {
    next_no: ChannelNo,
    by_id: BTreeMap<ChannelId, ChannelNo>,
    by_no: BTreeMap<ChannelNo, ChannelId>,
}

async fn run(conn: ConnId, dial: Dial, mut cmds: UnboundedReceiver<Cmd>, sinks: BrokerSinks) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let peer = SocketAddr::new(turmoil::lookup(dial.host.as_str()), dial.port);
    let info = ConnectionInfo {
        name: dial.name.clone(),
        node: format!("{}:{}", dial.host, dial.port),
        peer,
        tls: false,
        vhost: "/".into(),
        user: "sim".into(),
        heartbeat: (dial.heartbeat_ms / 1000) as u16,
        broker: "tasklane-sim broker".into(),
        cluster: "sim".into(),
    };
    let session = session::spawn((), dial, events_tx);
    let mut tx: Option<UnboundedSender<ClientMethod>> = None;
    let mut channels = Channels { next_no: 1, ..Channels::default() };
    let inputs = &sinks.inputs;
    loop {
        tokio::select! {
            biased;
            event = events.recv() => match event.map(|(_, e)| e) {
                Some(ConnEvent::Open { tx: link, .. }) => {
                    tx = Some(link);
                    sinks.connection.connected(conn, info.clone());
                    inputs.send(Input::Connected { conn });
                }
                Some(ConnEvent::Method(ServerMethod::Deliver { message, .. })) if poison::undecodable(&message) => {
                    // What amqprs does with a frame it cannot decode.
                    sinks.connection.ended(conn);
                    inputs.send(Input::ConnectionLost { conn, reason: "cannot decode a delivery: connection dropped".into() });
                    session.abort();
                    return;
                }
                Some(ConnEvent::Method(m)) => {
                    if let Some(input) = method_input(&mut channels, tx.as_ref(), m) {
                        inputs.send(input);
                    }
                }
                Some(ConnEvent::Failed(reason)) => {
                    inputs.send(Input::ConnectFailed { conn, reason });
                    return;
                }
                lost => {
                    let reason = match lost {
                        Some(ConnEvent::Lost(reason)) => reason,
                        _ => "connection task ended".into(),
                    };
                    sinks.connection.ended(conn);
                    inputs.send(Input::ConnectionLost { conn, reason });
                    return;
                }
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Amqp(op)) => {
                    if let Some(link) = &tx {
                        for m in command(&mut channels, op) {
                            let _ = link.send(m);
                        }
                    }
                }
                Some(Cmd::Close) | None => {
                    sinks.connection.ended(conn);
                    if let Some(link) = tx.take() {
                        let _ = link.send(ClientMethod::ConnectionClose);
                        tokio::time::sleep(CLOSE_GRACE).await;
                    }
                    session.abort();
                    return;
                }
            },
        }
    }
}

/// The wire methods of one core command.
fn command(ch: &mut Channels, op: Amqp) -> Vec<ClientMethod> {
    let no = |ch: &Channels, id: ChannelId| ch.by_id.get(&id).copied();
    let m = match op {
        Amqp::OpenChannel { channel } => {
            let n = ch.next_no;
            ch.next_no += 1;
            ch.by_id.insert(channel, n);
            ch.by_no.insert(n, channel);
            ClientMethod::OpenChannel { ch: n }
        }
        Amqp::Qos { channel, prefetch } => match no(ch, channel) {
            Some(n) => ClientMethod::Qos { ch: n, prefetch },
            None => return Vec::new(),
        },
        Amqp::Consume { channel, queue, exclusive } => match no(ch, channel) {
            Some(n) => ClientMethod::Consume { ch: n, queue, exclusive },
            None => return Vec::new(),
        },
        Amqp::QueryConsumers { channel, queue } => match no(ch, channel) {
            Some(n) => ClientMethod::DeclarePassive { ch: n, queue },
            None => return Vec::new(),
        },
        Amqp::ConfirmSelect { channel } => match no(ch, channel) {
            Some(n) => ClientMethod::ConfirmSelect { ch: n },
            None => return Vec::new(),
        },
        Amqp::Ack { tag, multiple } => match no(ch, tag.channel) {
            Some(n) => ClientMethod::Ack { ch: n, tag: tag.tag, multiple },
            None => return Vec::new(),
        },
        Amqp::Reject { tag } => match no(ch, tag.channel) {
            Some(n) => ClientMethod::Reject { ch: n, tag: tag.tag, requeue: false },
            None => return Vec::new(),
        },
        Amqp::Publish { tag, exchange, routing_key, message, .. } => match no(ch, tag.channel) {
            Some(n) => ClientMethod::Publish {
                ch: n,
                exchange: exchange.to_owned(),
                routing_key,
                mandatory: true,
                message: convert::raw_to_wire(&message),
            },
            None => return Vec::new(),
        },
        // Published as the amqprs adapter does: not mandatory, on the
        // confirm channel (the broker's confirm numbering must match
        // core's). The simulated topology binds no `*.status`, so the
        // broker drops it and acks it, as RabbitMQ would.
        Amqp::PublishReport { tag, exchange, routing_key, report } => match no(ch, tag.channel) {
            Some(n) => ClientMethod::Publish {
                ch: n,
                exchange: exchange.to_owned(),
                routing_key,
                mandatory: false,
                message: convert::raw_to_wire(&report_message(&report)),
            },
            None => return Vec::new(),
        },
        Amqp::Connect { .. } | Amqp::Disconnect { .. } | Amqp::Quarantine { .. } => return Vec::new(),
    };
    vec![m]
}

/// A status report as a message: its id as the io shell gives it, and a
/// short text body (the simulation has no fleet view to read JSON).
fn report_message(report: &Report) -> RawMessage {
    let (e, seq) = (&report.endpoint, report.seq);
    RawMessage {
        message_id: Some(format!("{e}.status.{seq}").into_bytes()),
        headers: Vec::new(),
        body: format!("{:?} inbox {} outbox {}", report.status, report.inbox, report.outbox).into(),
    }
}

/// The core input of one broker method, if core has one for it.
fn method_input(ch: &mut Channels, link: Option<&UnboundedSender<ClientMethod>>, m: ServerMethod) -> Option<Input> {
    use ServerMethod::*;
    let no = match &m {
        ChannelOpenOk { ch }
        | QosOk { ch }
        | ConsumeOk { ch, .. }
        | DeclareOk { ch, .. }
        | Cancel { ch, .. }
        | ConfirmSelectOk { ch }
        | Deliver { ch, .. }
        | PublishAck { ch, .. }
        | PublishNack { ch, .. }
        | Return { ch, .. }
        | ChannelClose { ch, .. } => *ch,
        ChannelCloseOk { .. } | ConnectionOpenOk { .. } | Heartbeat | ConnectionClose { .. } => return None,
    };
    let channel = *ch.by_no.get(&no)?;
    Some(match m {
        ChannelOpenOk { .. } => Input::ChannelOpened { channel },
        QosOk { .. } => Input::QosOk { channel },
        ConsumeOk { .. } => Input::ConsumeOk { channel },
        DeclareOk { consumers, .. } => Input::ConsumerCount { channel, consumers },
        Cancel { .. } => Input::ConsumerCancelled { channel },
        ConfirmSelectOk { .. } => Input::ConfirmSelectOk { channel },
        Deliver { tag, redelivered, message, .. } => {
            Input::Delivery { channel, tag, redelivered, message: convert::wire_to_raw(&message) }
        }
        PublishAck { tag, multiple, .. } => Input::PublishAck { channel, tag, multiple },
        PublishNack { tag, multiple, .. } => Input::PublishNack { channel, tag, multiple },
        Return { reply_code, reply_text, message, .. } => Input::Returned {
            channel,
            message_id: message.message_id.map(String::into_bytes),
            code: reply_code,
            text: reply_text,
        },
        ChannelClose { code, text, .. } => {
            ch.by_no.remove(&no);
            ch.by_id.remove(&channel);
            if let Some(link) = link {
                let _ = link.send(ClientMethod::CloseChannel { ch: no });
            }
            Input::ChannelClosed { channel, code, text }
        }
        _ => return None,
    })
}
