//! tasklane-core: the sans-IO heart of tasklane.
//!
//! A [`Lane`] is one endpoint's crash-safe lane to its service over RabbitMQ:
//! it consumes the endpoint's task queue `E.tasks`, writes each task to a
//! spool before the broker ack, hands tasks to the application, moves each
//! result into the spool's outbox, publishes results to the `results`
//! exchange under publisher confirms, and reconnects with backoff after any
//! loss. It does no I/O, reads no clock and draws no OS randomness: a shell
//! (the amqprs + LMDB one in `tasklane-io`, the turmoil one in
//! `tasklane-sim`) feeds it [`Input`]s with the time, and carries out the
//! [`Output`]s it polls. Policy (when to ack, what to republish, when to
//! retry) lives here, once; the shells translate.
//!
//! # The run-loop contract
//!
//! 1. Build the lane with [`Lane::new`] from the configuration and what the
//!    spool holds ([`SpoolSnapshot`]); it starts with `Amqp::Connect`.
//! 2. After every [`Lane::handle`], call [`Lane::poll`] until it returns
//!    `None`, and carry out each output in the order given:
//!    - [`Output::Amqp`]: do it on the connection or channel it names, and
//!      report the answer as an input (`Connect` → `Connected` /
//!      `ConnectFailed`, `OpenChannel` → `ChannelOpened`, `Qos` → `QosOk`,
//!      `Consume` → `ConsumeOk` (or `ChannelClosed` with the broker's code
//!      when refused), `QueryConsumers` → `ConsumerCount` (asked before
//!      and after the consume), `ConfirmSelect` → `ConfirmSelectOk`). Acks, rejects and publishes have no direct
//!      answer; confirms come back as `PublishAck` / `PublishNack`, returns
//!      as `Returned`. `Disconnect` closes politely and expects nothing.
//!    - [`Output::Spool`]: queue the write; apply writes in order; commit
//!      them in groups (one transaction, one fsync); report
//!      `SpoolCommitted { upto }` with the last write of the group.
//!    - [`Output::Handoff`]: give the task to the application, which answers
//!      with `Input::Complete` when it has a result. The handoff names the
//!      task (id, size, arrival position); read its body from the spool
//!      when the application takes it (core keeps no bodies).
//!    - [`Output::Event`]: status changes and reports, for the application.
//! 3. Report everything the broker does on its own as inputs (`Delivery`,
//!    `ConnectionLost`, `ChannelClosed`, `ConsumerCancelled`, `Blocked`,
//!    ...), and what the spool does (`SpoolCommitted`, `SpoolStalled`,
//!    `SpoolRefused`). Report only what happened: core sets every timeout
//!    itself (connect, handshake, blocked, standby polls, shutdown).
//! 4. Arm one timer at [`Lane::poll_timeout`]; when it fires, call
//!    `handle(now, Input::Timeout)`. Early or extra calls are harmless.
//! 5. To stop, feed `Input::Shutdown` and keep driving until
//!    [`Lane::is_drained`]; it is, at the latest, `Config::shutdown_grace`
//!    later.
//!
//! Errors from `handle` mean the caller misused the API ([`UsageError`]);
//! faults of the broker, the network or the spool are [`Event`]s.
//!
//! # Example
//!
//! A complete driver over a toy broker that answers every command at once,
//! a spool that commits every write at once, and an application that
//! upper-cases payloads:
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::Instant;
//! use bytes::Bytes;
//! use tasklane_core::*;
//!
//! let now = Instant::now();
//! let cfg = Config::new(EndpointId::new("ep-1").unwrap());
//! let mut lane = Lane::new(now, cfg, SpoolSnapshot::default()).unwrap();
//! let mut spool = MemorySpool::new();
//! let mut inputs: VecDeque<Input> = VecDeque::new();
//! let mut published = Vec::new();
//! let mut tasks_left = 3u64;
//! let mut consumers = 0u32; // the queue's consumer count
//!
//! loop {
//!     while let Some(output) = lane.poll() {
//!         match output {
//!             Output::Amqp(Amqp::Connect { conn, .. }) => inputs.push_back(Input::Connected { conn }),
//!             Output::Amqp(Amqp::OpenChannel { channel }) => inputs.push_back(Input::ChannelOpened { channel }),
//!             Output::Amqp(Amqp::Qos { channel, .. }) => inputs.push_back(Input::QosOk { channel }),
//!             Output::Amqp(Amqp::ConfirmSelect { channel }) => inputs.push_back(Input::ConfirmSelectOk { channel }),
//!             Output::Amqp(Amqp::QueryConsumers { channel, .. }) => {
//!                 inputs.push_back(Input::ConsumerCount { channel, consumers })
//!             }
//!             Output::Amqp(Amqp::Consume { channel, .. }) => {
//!                 consumers = 1; // alone on the queue: ours is the only one
//!                 inputs.push_back(Input::ConsumeOk { channel });
//!                 for tag in 1..=tasks_left {
//!                     let task = Task { id: TaskId::new(format!("t{tag}")).unwrap(), kind: None, body: Bytes::from("hi") };
//!                     inputs.push_back(Input::Delivery { channel, tag, redelivered: false, message: encode_task(&task) });
//!                 }
//!                 tasks_left = 0;
//!             }
//!             Output::Amqp(Amqp::Publish { tag, result, mut message, .. }) => {
//!                 // Core keeps no result bodies: the shell reads them from the spool.
//!                 message.body = spool.result_body(result).unwrap().clone();
//!                 published.push(message);
//!                 inputs.push_back(Input::PublishAck { channel: tag.channel, tag: tag.seq, multiple: false });
//!             }
//!             Output::Amqp(_) => {} // acks, rejects, disconnects: nothing to answer
//!             Output::Spool(write) => {
//!                 spool.apply(&write.op).unwrap();
//!                 inputs.push_back(Input::SpoolCommitted { upto: write.seq });
//!             }
//!             Output::Handoff(h) => {
//!                 // The body stays in the spool until the application takes it.
//!                 let task = spool.task(h.task.arrival).unwrap();
//!                 let body = Bytes::from(task.body.to_ascii_uppercase());
//!                 inputs.push_back(Input::Complete { task: h.task.id, status: ResultStatus::Ok, body });
//!             }
//!             Output::Event(_) => {}
//!         }
//!     }
//!     let Some(input) = inputs.pop_front() else { break };
//!     lane.handle(now, input).unwrap();
//! }
//! assert_eq!(published.len(), 3);
//! assert_eq!(lane.counters().confirmed, 3);
//! assert_eq!((spool.inbox_len(), spool.outbox_len()), (0, 0));
//! assert_eq!(lane.status(), &Status::Consuming);
//! lane.handle(now, Input::Shutdown).unwrap();
//! assert!(lane.is_drained());
//! ```

#![warn(missing_docs)]

mod addresses;
#[cfg(any(test, feature = "audit"))]
pub mod audit;
mod backoff;
pub mod codec;
mod config;
mod counters;
mod error;
mod idmap;
mod ids;
mod input;
mod lane;
pub mod message;
mod output;
mod rng;
pub mod service;
mod service_failover;
pub mod spool;
mod window;

#[cfg(test)]
mod tests;

#[cfg(feature = "sabotage")]
pub use config::Sabotage;
pub use config::{BackoffConfig, Config, ConsumeMode, Failover};
pub use counters::Counters;
pub use error::{ConfigError, InvalidId, UsageError};
pub use ids::{ChannelId, ConnId, DeliveryTag, EndpointId, OutboxSeq, PublishTag, TaskId, WriteSeq};
pub use input::Input;
pub use lane::Lane;
pub use message::{
    decode_result, decode_task, encode_result, encode_result_headers, encode_task, HeaderValue, Malformed, RawMessage,
    ReceivedResult, ResultStatus, Task, TaskLimits, TaskResult,
};
pub use output::{Amqp, Event, Handoff, Output, Report, Status};
pub use service_failover::BrokerRounds;
pub use spool::{MemorySpool, ResultMeta, SpoolOp, SpoolSnapshot, SpoolWrite, StoredTask, TaskMeta};
pub use window::DedupWindow;
