//! Which broker address the service side (provisioning, submitter, results
//! consumer) connects to next (SPEC §2, Brokers): the same policy as the
//! lane's, for shells that hold one connection and no [`crate::Lane`].
//!
//! One attempt per address, in the configured order or shuffled from the
//! seed; a full round of failures owes a backoff (exponential, with
//! jitter) before the next round; a connection that worked keeps its
//! address until it fails, and its loss moves on to the next address at
//! once. Pure: the shell measures time, connects, and reports back.
//!
//! ```
//! use std::time::Duration;
//! use tasklane_core::{BackoffConfig, BrokerRounds, Failover};
//!
//! let mut rounds = BrokerRounds::new(3, Failover::InOrder, BackoffConfig::default(), 7);
//! assert_eq!(rounds.pick(), 0);
//! assert_eq!(rounds.failed(), Duration::ZERO); // node 0 refused: try node 1 at once
//! assert_eq!(rounds.pick(), 1);
//! rounds.healthy(); // connected: stay on node 1
//! assert_eq!(rounds.pick(), 1);
//! ```

use std::time::Duration;

use crate::addresses::Rounds;
use crate::backoff;
use crate::config::{BackoffConfig, Failover};
use crate::rng::SplitMix64;

/// Connection attempts over a list of broker addresses, named by index:
/// the lane's [`Rounds`] plus the backoff a lane keeps in its session.
#[derive(Clone, Debug)]
pub struct BrokerRounds {
    rounds: Rounds,
    backoff: BackoffConfig,
    rng: SplitMix64,
    /// Full rounds that failed in a row: the backoff's exponent.
    rounds_failed: u32,
}

impl BrokerRounds {
    /// Rounds over `addresses` addresses (at least one is assumed), in the
    /// order `failover` says; `seed` draws the shuffles and the jitter.
    pub fn new(addresses: usize, failover: Failover, backoff: BackoffConfig, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let rounds = Rounds::new(addresses, failover, &mut rng);
        Self { rounds, backoff, rng, rounds_failed: 0 }
    }

    /// The address for a new attempt.
    #[must_use]
    pub fn pick(&mut self) -> usize {
        self.rounds.pick()
    }

    /// The address of the latest attempt, if any was made.
    pub fn current(&self) -> Option<usize> {
        self.rounds.current()
    }

    /// The latest attempt failed, or its connection was lost. Returns how
    /// long to wait before the next attempt: zero while the round has
    /// addresses left, a backoff once every address has failed in a row.
    #[must_use]
    pub fn failed(&mut self) -> Duration {
        if !self.rounds.failed(&mut self.rng) {
            return Duration::ZERO;
        }
        let delay = backoff::delay(self.backoff, self.rounds_failed, &mut self.rng);
        self.rounds_failed = self.rounds_failed.saturating_add(1);
        delay
    }

    /// The connection on the current address works: it is kept, and its
    /// later loss starts a new round from the next address, with the
    /// backoff back at its start.
    pub fn healthy(&mut self) {
        self.rounds.healthy();
        self.rounds_failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: BackoffConfig = BackoffConfig { initial: Duration::from_millis(100), max: Duration::from_secs(2) };

    fn attempts(r: &mut BrokerRounds, n: usize) -> Vec<(usize, bool)> {
        (0..n)
            .map(|_| {
                let a = r.pick();
                (a, !r.failed().is_zero())
            })
            .collect()
    }

    #[test]
    fn in_order_tries_each_address_once_per_round_then_backs_off() {
        let mut r = BrokerRounds::new(3, Failover::InOrder, BACKOFF, 1);
        assert_eq!(attempts(&mut r, 6), [(0, false), (1, false), (2, true), (0, false), (1, false), (2, true)]);
    }

    #[test]
    fn backoff_grows_over_failed_rounds_and_restarts_after_a_healthy_connection() {
        let mut r = BrokerRounds::new(1, Failover::InOrder, BACKOFF, 1);
        let delays: Vec<Duration> = (0..6).map(|_| r.failed()).collect();
        for (n, d) in delays.iter().enumerate() {
            let ceiling = (BACKOFF.initial * (1 << n)).min(BACKOFF.max);
            assert!(*d >= ceiling / 2 && *d <= ceiling, "round {n}: {d:?} vs {ceiling:?}");
        }
        r.healthy();
        assert!(r.failed() <= BACKOFF.initial, "the backoff starts over after a connection that worked");
    }

    #[test]
    fn a_healthy_connection_keeps_its_address_and_its_loss_moves_on_at_once() {
        let mut r = BrokerRounds::new(3, Failover::InOrder, BACKOFF, 1);
        assert_eq!(r.pick(), 0);
        assert!(r.failed().is_zero());
        assert_eq!(r.pick(), 1);
        r.healthy();
        assert_eq!((r.pick(), r.current()), (1, Some(1)), "a working address is kept");
        assert!(r.failed().is_zero(), "losing a connection that worked owes no backoff");
        assert_eq!(r.pick(), 2);
        assert!(r.failed().is_zero());
        assert_eq!(r.pick(), 0);
        assert!(!r.failed().is_zero(), "three failures in a row are a full round");
    }

    // The order of the rounds (in order, or shuffled from the seed) is
    // `Rounds`'s, tested in addresses.rs; these tests are of the backoff
    // and of keeping a working address.
}
