//! The bodies of tasklane's fuzz targets, one module per target.
//!
//! Each module has `run(data: &[u8])`: it draws a case from the bytes with
//! [`arbitrary::Unstructured`], runs it through `tasklane-core` and panics
//! when an oracle fails. The same function runs in two places:
//!
//! - under libFuzzer, in the cargo-fuzz crate `fuzz/` (nightly, or stable
//!   with `RUSTC_BOOTSTRAP=1`; `fuzz/run.sh SECONDS` runs every target);
//! - on stable, in this crate's tests (`tests/stable.rs`): a few thousand
//!   random byte strings per target, plus every input checked in under
//!   `fuzz/regressions/<target>/`, so CI covers the targets without nightly.
//!
//! The targets:
//! - [`task_decode`]: a delivery's message id, headers and body, judged by
//!   [`tasklane_core::decode_task`] and by a consuming lane;
//! - [`result_intake`]: results at the service side, judged by
//!   [`tasklane_core::service::ResultIntake`] (routing key, ownership,
//!   dedup window) against a model;
//! - [`lane_inputs`]: sequences of inputs driving a [`tasklane_core::Lane`],
//!   each step audited by [`tasklane_core::audit::Auditor`], the lane
//!   invariants every test layer shares;
//! - [`spool_codec`]: spool records, damaged, truncated and round-tripped.

pub mod lane_inputs;
pub mod result_intake;
pub mod rig;
pub mod spool_codec;
pub mod task_decode;

/// A target's body: draws a case from the bytes, panics when an oracle fails.
pub type Body = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of
/// the directories under `fuzz/regressions/`), with their bodies.
pub const TARGETS: [(&str, Body); 4] = [
    ("task_decode", task_decode::run),
    ("result_intake", result_intake::run),
    ("lane_inputs", lane_inputs::run),
    ("spool_codec", spool_codec::run),
];
