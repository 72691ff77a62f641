//! Core's notion of time inside the simulation.
//!
//! tasklane-core takes `std::time::Instant` values. The shells hand it
//! `base + simulated elapsed time`, where `base` is an opaque anchor taken
//! once per run: core only ever compares and offsets instants, so every
//! decision depends on simulated time alone, and no instant reaches a trace.

use std::time::{Duration, Instant};

/// Converts simulated time into core instants and back into timers.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Clock { base: Instant::now() }
    }

    /// Simulated time since the run began (inside a turmoil host).
    pub fn elapsed(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }

    /// Now, as core sees it.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    /// The host timer instant at which core's deadline `at` falls.
    pub fn timer_at(&self, at: Instant) -> tokio::time::Instant {
        tokio::time::Instant::now() + at.saturating_duration_since(self.now())
    }
}

/// Sleeps until `deadline`, or forever without one (a `select!` arm that
/// never fires).
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
