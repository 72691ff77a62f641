//! tasklane-sim: deterministic simulation of tasklane inside turmoil,
//! running the code users ship.
//!
//! Every endpoint in the simulation is `tasklane_io::endpoint::Endpoint`
//! (the one driver, core's lane) with only its last adapters swapped:
//! amqprs opens real sockets and cannot run over turmoil's network, so the
//! simulation brings its own AMQP-like [`wire`] protocol, a simulated
//! [`broker`] that keeps to what RabbitMQ does, a broker connection adapter
//! over it and an in-memory spool that loses unsynced writes in a crash
//! ([`endpoint`]). A simulated [`service`] submits tasks and judges
//! results. Each seed draws its fault knobs ([`swarm`]), injects faults
//! ([`faults`]), checks the invariants after every step (core's auditor in
//! each driver, the cross-host ones in [`oracle`]), then heals and requires
//! convergence ([`run`]); a failure prints the one line that replays it.
//!
//! # Your own worker
//!
//! Plug your application in as a [`worker::Worker`] (an async fn over the
//! `Endpoint`) and your tasks as a [`workload::Workload`], and run them
//! from a plain `#[test]` with [`check::Check`]:
//!
//! ```no_run
//! use bytes::Bytes;
//! use tasklane_core::ResultStatus;
//! use tasklane_sim::{check::Check, worker::worker, workload::Workload};
//!
//! let upper = worker(|endpoint, _ctx| async move {
//!     while let Some(task) = endpoint.next_task().await {
//!         let _ = endpoint.complete(&task.id, ResultStatus::Ok, task.body.to_ascii_uppercase()).await;
//!     }
//! });
//! let workload = Workload::new(
//!     20,
//!     |i, _rng| (None, Bytes::from(format!("task number {i}"))),
//!     |task, _status, body| (body == task.body.to_ascii_uppercase()).then_some(()).ok_or("not upper-cased".into()),
//! );
//! Check::new(upper).workload(workload).seeds(0..50).assert_passes();
//! ```
//!
//! `examples/own_worker.rs` does the same with a `Dispatcher` of three
//! kinds of task: `cargo run -p tasklane-sim --release --example own_worker -- --seeds 0..50`.
//!
//! One seed of the simulation's own worker:
//!
//! ```no_run
//! let report = tasklane_sim::run::run(&tasklane_sim::run::RunOptions::seed(7));
//! println!("{}", report.summary());
//! assert!(report.outcome.passed(), "reproduce: {}", report.reproduce());
//! ```

pub mod broker;
pub mod check;
pub mod clock;
pub mod endpoint;
pub mod faults;
pub mod oracle;
pub mod rng;
pub mod run;
pub mod sabotage;
pub mod service;
pub mod spool;
pub mod swarm;
pub mod sweep;
pub mod trace;
pub mod wire;
pub mod worker;
pub mod workload;

#[cfg(test)]
mod standby_tests;
#[cfg(test)]
mod tests;

/// The broker's turmoil host name.
pub const BROKER_HOST: &str = "broker";
/// The service's turmoil host name.
pub const SERVICE_HOST: &str = "service";
