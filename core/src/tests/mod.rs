//! In-crate tests of the whole lane: a model broker and a model spool that
//! step the lane and jump time to its next timeout ([`harness`]), unit tests
//! per concept, and property tests over random fault sequences.

mod harness;
mod lane_tests;
mod lifecycle_tests;
mod props;
mod report_tests;
