//! Exponential backoff with full jitter: attempt `n` waits a uniform delay in
//! `[ceiling/2, ceiling]` where `ceiling = min(max, initial * 2^n)`. Half the
//! ceiling is kept as a floor so a burst of failures never retries at once.

use std::time::Duration;

use crate::config::BackoffConfig;
use crate::rng::SplitMix64;

/// The backoff delay of failure number `attempt` (0-based).
pub(crate) fn delay(cfg: BackoffConfig, attempt: u32, rng: &mut SplitMix64) -> Duration {
    let initial = cfg.initial.as_nanos() as u64;
    let max = cfg.max.as_nanos() as u64;
    let ceiling = initial.saturating_mul(1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX)).min(max);
    let floor = ceiling / 2;
    Duration::from_nanos(floor + rng.below_or_eq(ceiling - floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_stays_in_range() {
        let cfg = BackoffConfig { initial: Duration::from_millis(100), max: Duration::from_secs(5) };
        let mut rng = SplitMix64::new(7);
        for attempt in 0..80 {
            let ceiling = Duration::from_millis(100).saturating_mul(1 << attempt.min(20)).min(cfg.max);
            for _ in 0..20 {
                let d = delay(cfg, attempt, &mut rng);
                assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?} vs {ceiling:?}");
            }
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let cfg = BackoffConfig::default();
        let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
        let xs: Vec<_> = (0..10).map(|n| delay(cfg, n, &mut a)).collect();
        let ys: Vec<_> = (0..10).map(|n| delay(cfg, n, &mut b)).collect();
        assert_eq!(xs, ys);
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }
}
