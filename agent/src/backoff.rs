//! Jittered exponential back-off, shared by the uplink's reconnects and the
//! field-bus reconnects.
//!
//! Each step doubles the ceiling from `base` up to `cap`, and the actual delay
//! is drawn uniformly from the upper half of that ceiling ("equal jitter"), so a
//! fleet of agents that lost the server at the same moment does not come back in
//! lock-step, yet no delay is ever shorter than half the intended one.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Back-off state. Not `Clone` on purpose: two owners would share a schedule.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Start at `base`, never exceed `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_rng(base, cap, StdRng::from_rng(&mut rand::rng()))
    }

    /// Like [`Backoff::new`] with a fixed seed, for reproducible tests.
    pub fn seeded(base: Duration, cap: Duration, seed: u64) -> Self {
        Self::with_rng(base, cap, StdRng::seed_from_u64(seed))
    }

    fn with_rng(base: Duration, cap: Duration, rng: StdRng) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng,
        }
    }

    /// The delay before the next attempt; each call moves one step up.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(self.rng.random_range(0..=jitter_ms))
    }

    /// The current step's upper bound (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_the_jitter_band() {
        let mut b = Backoff::seeded(Duration::from_millis(500), Duration::from_secs(30), 7);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(
            ceilings,
            vec![
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn reset_starts_again_from_the_base() {
        let mut b = Backoff::seeded(Duration::from_millis(500), Duration::from_secs(30), 1);
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn two_agents_do_not_retry_in_lock_step() {
        let mut a = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 1);
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 2);
        let da: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let db: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_ne!(da, db);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 3);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
