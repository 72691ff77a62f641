//! tasklane-io: the shell that drives `tasklane-core` with amqprs (RabbitMQ)
//! and heed (LMDB), the service side, and the `tasklane` command-line tool.
//!
//! The endpoint's driver ([`endpoint`]) is written once over two ports, a
//! broker connection and a spool, and builds without amqprs and heed when
//! the default feature `rabbitmq` is off: the simulation (`tasklane-sim`)
//! runs it that way with its own adapters. Everything that needs amqprs or
//! LMDB (the adapters, the service side, the CLI) is behind `rabbitmq`.
//!
//! Feature `audit` adds [`endpoint::audit`]: core's auditor as an observer
//! of a running endpoint, for tests.

#[cfg(feature = "rabbitmq")]
pub mod amqp;
pub mod dispatch;
pub mod endpoint;
#[cfg(feature = "rabbitmq")]
pub mod fleet;
#[cfg(feature = "rabbitmq")]
pub mod metrics;
#[cfg(feature = "rabbitmq")]
pub mod service;
#[cfg(feature = "rabbitmq")]
pub mod settings;
#[cfg(feature = "rabbitmq")]
pub mod spool;
