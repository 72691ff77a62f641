//! Benchmarks of tasklane.
