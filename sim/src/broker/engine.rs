//! The broker's state machine: connections, channels and delivery.
//!
//! It is synchronous and knows nothing of sockets or time: the host feeds it
//! client methods and connection lifecycle, and it queues replies on each
//! connection's outbound channel. Consuming, settling and publishing live in
//! sibling modules as further `impl Engine` blocks.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use tokio::sync::mpsc::UnboundedSender;

use super::event::{ChannelRef, ConnId, Event};
use super::store::{QueueStore, Stored};
use super::topology::Topology;
use super::BrokerConfig;
use crate::wire::{code, ChannelNo, ClientMethod, Message, ServerMethod};

/// What the connection driver does after a method was handled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Continue,
    /// Close the connection (a `ConnectionClose` is already queued when the
    /// broker is the one closing).
    Close(String),
}

pub(super) struct Channel {
    pub gen: u64,
    /// The broker closed it and waits for the client's `CloseChannel`;
    /// methods on it are discarded meanwhile (as RabbitMQ does).
    pub closing: bool,
    pub prefetch: u16,
    pub next_tag: u64,
    /// Delivery tag → (queue, message seq).
    pub unacked: BTreeMap<u64, (String, u64)>,
    /// The broker cancelled its consumer (`basic.cancel`): what it still
    /// holds was delivered before, and the client may not know yet.
    pub cancelled: bool,
    pub confirm: bool,
    pub next_confirm: u64,
}

impl Channel {
    fn new(gen: u64) -> Self {
        Channel {
            gen,
            closing: false,
            prefetch: 0,
            next_tag: 1,
            unacked: BTreeMap::new(),
            cancelled: false,
            confirm: false,
            next_confirm: 1,
        }
    }

    pub fn has_capacity(&self) -> bool {
        !self.closing && (self.prefetch == 0 || self.unacked.len() < self.prefetch as usize)
    }
}

pub(super) struct Conn {
    pub client: String,
    pub peer: SocketAddr,
    pub out: UnboundedSender<ServerMethod>,
    pub opened: bool,
    pub heartbeat_ms: u32,
    pub channels: BTreeMap<ChannelNo, Channel>,
    /// The broker stopped reading from this connection (it published
    /// during an alarm): what it sends waits here, in order, until the
    /// alarm clears.
    pub blocked: bool,
    pub parked: VecDeque<ClientMethod>,
}

/// A registered consumer (non-durable: gone with its channel).
#[derive(Clone, Debug)]
pub(super) struct Consumer {
    pub conn: ConnId,
    pub ch: ChannelNo,
    pub exclusive: bool,
    pub active: bool,
}

pub(super) struct Engine {
    pub config: BrokerConfig,
    // ---- durable: survives a restart ----
    pub topology: Topology,
    pub queues: BTreeMap<String, QueueStore>,
    pub next_seq: u64,
    pub next_conn: ConnId,
    pub next_gen: u64,
    pub boots: u64,
    pub events: Vec<Event>,
    // ---- volatile: lost with the broker process ----
    pub conns: BTreeMap<ConnId, Conn>,
    /// Queue → consumers in registration order.
    pub consumers: BTreeMap<String, Vec<Consumer>>,
    /// Queue → round-robin position among its consumers.
    pub cursor: BTreeMap<String, usize>,
    /// A resource alarm (memory or disk) is in effect: a connection that
    /// publishes is no longer read from until it clears. As RabbitMQ with
    /// a client that does not ask for `connection.blocked` (amqprs), the
    /// client is not told.
    pub alarm: bool,
}

impl Engine {
    pub fn new(config: BrokerConfig) -> Self {
        let topology = config.topology.clone();
        let queues = topology.queues.keys().map(|q| (q.clone(), QueueStore::default())).collect();
        Engine {
            config,
            topology,
            queues,
            next_seq: 1,
            next_conn: 1,
            next_gen: 1,
            boots: 0,
            events: Vec::new(),
            conns: BTreeMap::new(),
            consumers: BTreeMap::new(),
            cursor: BTreeMap::new(),
            alarm: false,
        }
    }

    /// A (re)start: whatever volatile state a crash left is dropped, unacked
    /// messages return to their queues, transient messages are gone.
    pub fn boot(&mut self) {
        let left: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in left {
            self.detach(conn, "broker restarted");
        }
        for q in self.queues.values_mut() {
            q.recover();
        }
        self.boots += 1;
        self.events.push(Event::Booted { boot: self.boots });
    }

    pub fn connect(&mut self, peer: SocketAddr, out: UnboundedSender<ServerMethod>) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                client: String::new(),
                peer,
                out,
                opened: false,
                heartbeat_ms: self.config.heartbeat_ms,
                channels: BTreeMap::new(),
                blocked: false,
                parked: VecDeque::new(),
            },
        );
        self.events.push(Event::Connected { conn, peer });
        conn
    }

    /// The connection ended: its channels' unacked deliveries are requeued
    /// and its consumers removed. Idempotent.
    pub fn detach(&mut self, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let client = c.client.clone();
        let chans: Vec<ChannelNo> = c.channels.keys().copied().collect();
        for ch in chans {
            self.release_channel(conn, ch);
        }
        self.conns.remove(&conn);
        self.events.push(Event::Disconnected { conn, client, reason: reason.to_owned() });
        self.dispatch();
    }

    /// Closes a connection from the broker side at once (as
    /// `rabbitmqctl close_connection` does): 320 CONNECTION_FORCED.
    pub fn force_close(&mut self, conn: ConnId, text: &str) {
        self.send(
            conn,
            ServerMethod::ConnectionClose {
                code: code::CONNECTION_FORCED,
                text: format!("CONNECTION_FORCED - {text}"),
            },
        );
        self.detach(conn, &format!("closed by the broker: {text}"));
    }

    pub fn heartbeat_ms(&self, conn: ConnId) -> u32 {
        self.conns.get(&conn).map_or(0, |c| c.heartbeat_ms)
    }

    pub fn handle(&mut self, conn: ConnId, m: ClientMethod) -> Verdict {
        let Some(m) = self.park(conn, m) else { return Verdict::Continue };
        let verdict = self.handle_inner(conn, m);
        self.dispatch();
        verdict
    }

    /// Under an alarm, RabbitMQ stops reading from a connection once it
    /// publishes: that method and every later one wait. Whether `m` was
    /// parked: `m` back if not.
    fn park(&mut self, conn: ConnId, m: ClientMethod) -> Option<ClientMethod> {
        let alarm = self.alarm;
        let Some(c) = self.conns.get_mut(&conn) else { return Some(m) };
        let blocks = c.blocked || (alarm && c.opened && matches!(m, ClientMethod::Publish { .. }));
        if !blocks {
            return Some(m);
        }
        c.blocked = true;
        if m != ClientMethod::Heartbeat {
            c.parked.push_back(m);
        }
        None
    }

    /// Raises or clears the resource alarm. Clearing it reads what every
    /// blocked connection sent meanwhile, in order.
    pub fn set_alarm(&mut self, on: bool) {
        self.alarm = on;
        if on {
            return;
        }
        let blocked: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.blocked).map(|(id, _)| *id).collect();
        for conn in blocked {
            let parked = match self.conns.get_mut(&conn) {
                Some(c) => {
                    c.blocked = false;
                    std::mem::take(&mut c.parked)
                }
                None => continue,
            };
            for m in parked {
                if let Verdict::Close(reason) = self.handle_inner(conn, m) {
                    // The connection's driver notices at its next read.
                    self.detach(conn, &reason);
                    break;
                }
            }
        }
        self.dispatch();
    }

    fn handle_inner(&mut self, conn: ConnId, m: ClientMethod) -> Verdict {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Verdict::Close("connection unknown".into());
        };
        if !c.opened {
            return match m {
                ClientMethod::ConnectionOpen { name, heartbeat_ms } => {
                    let hb = negotiate(heartbeat_ms, self.config.heartbeat_ms);
                    c.opened = true;
                    c.client = name.clone();
                    c.heartbeat_ms = hb;
                    let _ = c.out.send(ServerMethod::ConnectionOpenOk { heartbeat_ms: hb });
                    self.events.push(Event::Opened { conn, client: name, heartbeat_ms: hb });
                    Verdict::Continue
                }
                _ => self.connection_error(conn, code::COMMAND_INVALID, "expected ConnectionOpen"),
            };
        }
        use ClientMethod::*;
        let ch = match &m {
            ConnectionOpen { .. } => {
                return self.connection_error(conn, code::COMMAND_INVALID, "second ConnectionOpen")
            }
            Heartbeat => return Verdict::Continue,
            ConnectionClose => return Verdict::Close("client closed the connection".into()),
            OpenChannel { ch } => return self.open_channel(conn, *ch),
            CloseChannel { ch } => return self.close_channel(conn, *ch),
            Qos { ch, .. }
            | Consume { ch, .. }
            | DeclarePassive { ch, .. }
            | Ack { ch, .. }
            | Nack { ch, .. }
            | Reject { ch, .. }
            | ConfirmSelect { ch }
            | Publish { ch, .. } => *ch,
        };
        match self.conns[&conn].channels.get(&ch) {
            None => return self.connection_error(conn, code::CHANNEL_ERROR, &format!("channel {ch} is not open")),
            Some(chan) if chan.closing => return Verdict::Continue,
            Some(_) => {}
        }
        match m {
            Qos { prefetch, .. } => {
                self.channel_mut(conn, ch).prefetch = prefetch;
                self.send(conn, ServerMethod::QosOk { ch });
            }
            ConfirmSelect { .. } => {
                self.channel_mut(conn, ch).confirm = true;
                self.send(conn, ServerMethod::ConfirmSelectOk { ch });
            }
            Consume { queue, exclusive, .. } => self.consume(conn, ch, &queue, exclusive),
            DeclarePassive { queue, .. } => self.declare_passive(conn, ch, &queue),
            Ack { tag, multiple, .. } => self.settle(conn, ch, super::event::SettleKind::Ack, tag, multiple),
            Nack { tag, multiple, requeue, .. } => {
                self.settle(conn, ch, super::event::SettleKind::Nack { requeue }, tag, multiple)
            }
            Reject { tag, requeue, .. } => {
                self.settle(conn, ch, super::event::SettleKind::Reject { requeue }, tag, false)
            }
            Publish { exchange, routing_key, mandatory, message, .. } => {
                self.publish(conn, ch, &exchange, &routing_key, mandatory, message)
            }
            _ => unreachable!("handled above"),
        }
        Verdict::Continue
    }

    fn open_channel(&mut self, conn: ConnId, ch: ChannelNo) -> Verdict {
        let c = self.conns.get_mut(&conn).expect("live connection");
        if ch == 0 || c.channels.contains_key(&ch) {
            return self.connection_error(conn, code::CHANNEL_ERROR, &format!("channel {ch} cannot be opened"));
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        c.channels.insert(ch, Channel::new(gen));
        let _ = c.out.send(ServerMethod::ChannelOpenOk { ch });
        let channel = self.channel_ref(conn, ch);
        self.events.push(Event::ChannelOpened { channel });
        Verdict::Continue
    }

    fn close_channel(&mut self, conn: ConnId, ch: ChannelNo) -> Verdict {
        match self.conns[&conn].channels.get(&ch) {
            None => self.connection_error(conn, code::CHANNEL_ERROR, &format!("channel {ch} is not open")),
            Some(chan) => {
                let acknowledging = chan.closing;
                self.release_channel(conn, ch);
                let c = self.conns.get_mut(&conn).expect("live connection");
                c.channels.remove(&ch);
                if !acknowledging {
                    let _ = c.out.send(ServerMethod::ChannelCloseOk { ch });
                }
                Verdict::Continue
            }
        }
    }

    /// A channel-level error: the channel's deliveries are requeued, its
    /// consumers removed, and it waits for the client's `CloseChannel`.
    pub fn channel_error(&mut self, conn: ConnId, ch: ChannelNo, code: u16, text: &str) {
        let channel = self.channel_ref(conn, ch);
        self.release_channel(conn, ch);
        self.channel_mut(conn, ch).closing = true;
        self.send(conn, ServerMethod::ChannelClose { ch, code, text: text.to_owned() });
        self.events.push(Event::ChannelClosed { channel, code, text: text.to_owned() });
    }

    fn connection_error(&mut self, conn: ConnId, code: u16, text: &str) -> Verdict {
        self.send(conn, ServerMethod::ConnectionClose { code, text: text.to_owned() });
        Verdict::Close(format!("{code} {text}"))
    }

    /// Requeues a channel's unacked deliveries and removes its consumers.
    fn release_channel(&mut self, conn: ConnId, ch: ChannelNo) {
        let channel = self.channel_ref(conn, ch);
        let unacked = std::mem::take(&mut self.channel_mut(conn, ch).unacked);
        for (_tag, (queue, seq)) in unacked {
            let message_id =
                self.queues.get_mut(&queue).and_then(|q| q.requeue(seq)).and_then(|s| s.message.message_id.clone());
            self.events.push(Event::Requeued { channel: channel.clone(), queue, message_id });
        }
        self.remove_consumers(conn, ch);
    }

    pub fn channel_mut(&mut self, conn: ConnId, ch: ChannelNo) -> &mut Channel {
        self.conns.get_mut(&conn).and_then(|c| c.channels.get_mut(&ch)).expect("open channel")
    }

    pub fn channel_ref(&self, conn: ConnId, ch: ChannelNo) -> ChannelRef {
        let c = &self.conns[&conn];
        ChannelRef { conn, client: c.client.clone(), ch, gen: c.channels[&ch].gen }
    }

    pub fn send(&self, conn: ConnId, m: ServerMethod) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.out.send(m);
        }
    }

    /// Stores a message in a queue (the tail of every successful route).
    pub fn enqueue(&mut self, queue: &str, exchange: &str, routing_key: &str, message: Message) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queues.get_mut(queue).expect("known queue").push(Stored {
            seq,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            message,
            redelivered: false,
        });
    }

    /// Hands ready messages to consumers with prefetch room: all active
    /// consumers of a queue in turn (with single active consumer, only one
    /// is active).
    pub fn dispatch(&mut self) {
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for queue in names {
            while self.queues[&queue].has_ready() {
                let Some((conn, ch)) = self.next_consumer(&queue) else {
                    break;
                };
                let stored = self.queues.get_mut(&queue).and_then(QueueStore::take_next).expect("ready message");
                let chan = self.channel_mut(conn, ch);
                let tag = chan.next_tag;
                chan.next_tag += 1;
                chan.unacked.insert(tag, (queue.clone(), stored.seq));
                self.send(
                    conn,
                    ServerMethod::Deliver {
                        ch,
                        tag,
                        redelivered: stored.redelivered,
                        exchange: stored.exchange,
                        routing_key: stored.routing_key,
                        message: stored.message.clone(),
                    },
                );
                let channel = self.channel_ref(conn, ch);
                self.events.push(Event::Delivered {
                    channel,
                    tag,
                    queue: queue.clone(),
                    message_id: stored.message.message_id,
                    redelivered: stored.redelivered,
                });
            }
        }
    }

    /// The next active consumer of `queue` with room, round robin.
    fn next_consumer(&mut self, queue: &str) -> Option<(ConnId, ChannelNo)> {
        let list = self.consumers.get(queue)?;
        let n = list.len();
        let start = self.cursor.get(queue).copied().unwrap_or(0);
        let pick = (0..n).map(|i| (start + i) % n).find(|&i| {
            let c = &list[i];
            c.active
                && self.conns.get(&c.conn).and_then(|conn| conn.channels.get(&c.ch)).is_some_and(Channel::has_capacity)
        })?;
        let c = &list[pick];
        let found = (c.conn, c.ch);
        self.cursor.insert(queue.to_owned(), pick + 1);
        Some(found)
    }
}

/// RabbitMQ's rule: when either side says 0 the other's value wins,
/// otherwise the smaller one.
fn negotiate(client: u32, server: u32) -> u32 {
    if client == 0 || server == 0 {
        client.max(server)
    } else {
        client.min(server)
    }
}
