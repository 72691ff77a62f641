//! tasklane-sim: deterministic simulation of tasklane inside turmoil.
//!
//! amqprs opens its own tokio sockets and cannot run over turmoil's
//! simulated network, so the simulation brings its own AMQP-like [`wire`]
//! protocol and a simulated [`broker`] host that speaks it. Endpoints run
//! tasklane-core's `Lane` through a sim shell ([`endpoint`]) with a spool
//! that loses uncommitted writes in a crash ([`spool`]); a simulated
//! [`service`] submits tasks and judges results. Each seed draws its fault
//! knobs ([`swarm`]), injects faults ([`faults`]), checks named invariants
//! after every step ([`oracle`]), then heals and requires convergence
//! ([`run`]).
//!
//! ```no_run
//! let report = tasklane_sim::run::run(&tasklane_sim::run::RunOptions::seed(7));
//! println!("{}", report.summary());
//! assert!(report.outcome.passed(), "reproduce: {}", report.reproduce());
//! ```

pub mod broker;
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
pub mod trace;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod tests;

/// The broker's turmoil host name.
pub const BROKER_HOST: &str = "broker";
/// The service's turmoil host name.
pub const SERVICE_HOST: &str = "service";
