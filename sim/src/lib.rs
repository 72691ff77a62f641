//! tasklane-sim: deterministic simulation of tasklane inside turmoil.
//!
//! amqprs opens its own tokio sockets and cannot run over turmoil's
//! simulated network, so the simulation brings its own AMQP-like [`wire`]
//! protocol and a simulated [`broker`] host that speaks it.

pub mod broker;
pub mod wire;
