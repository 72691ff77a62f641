//! tasklane-io: the shell that drives `tasklane-core` with amqprs (RabbitMQ)
//! and heed (LMDB), the service side, and the `tasklane` command-line tool.
//!
//! Module owners (while the crate is being built): `amqp`, `spool`,
//! `endpoint` — the endpoint shell; `service` and `bin/tasklane` — the
//! service side and the CLI.

pub mod amqp;
pub mod dispatch;
pub mod endpoint;
pub mod fleet;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod spool;
