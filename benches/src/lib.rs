//! Benchmarks of tasklane, and what they share.
//!
//! - `benches/core.rs` (criterion): the cost of core's `handle`/`poll` per
//!   task over the full path, at several group-commit sizes.
//!
//! [`CoreRig`] drives a [`Lane`] through that path without any I/O, so the
//! figures are core's own cost and nothing else.

mod rig;

pub use rig::CoreRig;
