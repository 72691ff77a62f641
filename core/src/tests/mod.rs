//! In-crate tests of the whole lane.
