//! Which broker address the next connection attempt goes to (SPEC §2,
//! Brokers): one attempt per address, in the configured order or shuffled,
//! a full round of failures before backing off, and staying on an address
//! while its session works.
//!
//! The shell holds the addresses (URLs with their credentials and vhosts);
//! core names them by index, so the policy lives here once for every shell:
//! the lane's sessions and the service side's [`crate::BrokerRounds`] both
//! go through [`Rounds`].

use crate::config::Failover;
use crate::rng::SplitMix64;

/// The current round of connection attempts over the shell's addresses.
#[derive(Clone, Debug)]
pub(crate) struct Rounds {
    failover: Failover,
    /// This round's order of address indexes.
    order: Vec<usize>,
    /// Position in `order` of the address the next attempt goes to.
    next: usize,
    /// Attempts that failed since the last healthy session.
    failed: usize,
    /// The address of the latest attempt.
    current: Option<usize>,
}

impl Rounds {
    pub(crate) fn new(addresses: usize, failover: Failover, rng: &mut SplitMix64) -> Self {
        let mut rounds = Self { failover, order: (0..addresses.max(1)).collect(), next: 0, failed: 0, current: None };
        rounds.shuffle(rng);
        rounds
    }

    /// The address for a new attempt.
    pub(crate) fn pick(&mut self) -> usize {
        let address = self.order[self.next % self.order.len()];
        self.current = Some(address);
        address
    }

    /// The address of the latest attempt, if any was made.
    pub(crate) fn current(&self) -> Option<usize> {
        self.current
    }

    /// The latest attempt failed or its session was lost: the next attempt
    /// goes to the next address. True when every address has failed since
    /// the last healthy session: time to back off and start a new round.
    pub(crate) fn failed(&mut self, rng: &mut SplitMix64) -> bool {
        self.failed += 1;
        self.next += 1;
        if self.failed < self.order.len() {
            return false;
        }
        self.failed = 0;
        self.next = 0;
        self.shuffle(rng);
        true
    }

    /// The session on the current address works: a later loss starts a
    /// new round from the next address, with no backoff owed.
    pub(crate) fn healthy(&mut self) {
        self.failed = 0;
    }

    fn shuffle(&mut self, rng: &mut SplitMix64) {
        if self.failover != Failover::Shuffle {
            return;
        }
        // Fisher-Yates, drawn from core's seeded generator.
        for i in (1..self.order.len()).rev() {
            let j = rng.below_or_eq(i as u64) as usize;
            self.order.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts(rounds: &mut Rounds, rng: &mut SplitMix64, n: usize) -> Vec<(usize, bool)> {
        (0..n)
            .map(|_| {
                let a = rounds.pick();
                (a, rounds.failed(rng))
            })
            .collect()
    }

    #[test]
    fn in_order_tries_each_address_once_per_round_then_backs_off() {
        let mut rng = SplitMix64::new(1);
        let mut r = Rounds::new(3, Failover::InOrder, &mut rng);
        let got = attempts(&mut r, &mut rng, 6);
        assert_eq!(got, [(0, false), (1, false), (2, true), (0, false), (1, false), (2, true)]);
    }

    #[test]
    fn a_healthy_session_stays_and_its_loss_moves_on_without_backoff() {
        let mut rng = SplitMix64::new(1);
        let mut r = Rounds::new(3, Failover::InOrder, &mut rng);
        assert_eq!(r.pick(), 0);
        assert!(!r.failed(&mut rng));
        assert_eq!(r.pick(), 1);
        r.healthy();
        assert_eq!(r.pick(), 1, "a working address is kept");
        assert!(!r.failed(&mut rng), "losing a healthy session owes no backoff");
        assert_eq!(r.pick(), 2);
        assert!(!r.failed(&mut rng));
        assert_eq!(r.pick(), 0);
        assert!(r.failed(&mut rng), "three failures in a row are a full round");
    }

    #[test]
    fn one_address_backs_off_after_every_failure() {
        let mut rng = SplitMix64::new(1);
        let mut r = Rounds::new(1, Failover::Shuffle, &mut rng);
        assert_eq!(attempts(&mut r, &mut rng, 3), [(0, true), (0, true), (0, true)]);
    }

    #[test]
    fn shuffle_covers_every_address_each_round_and_depends_on_the_seed() {
        let orders = |seed| {
            let mut rng = SplitMix64::new(seed);
            let mut r = Rounds::new(5, Failover::Shuffle, &mut rng);
            let rounds: Vec<Vec<usize>> =
                (0..4).map(|_| attempts(&mut r, &mut rng, 5).iter().map(|a| a.0).collect()).collect();
            for round in &rounds {
                let mut sorted = round.clone();
                sorted.sort();
                assert_eq!(sorted, [0, 1, 2, 3, 4], "a round tries every address once: {round:?}");
            }
            rounds
        };
        assert_eq!(orders(7), orders(7), "the same seed gives the same order");
        assert_ne!(orders(7), orders(8));
    }
}
