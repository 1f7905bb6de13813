//! Pure link logic: which side dials (re-exported from the codec), and when a dialer
//! tries again.

use std::time::{Duration, Instant};

pub use crate::codec::should_dial;

/// Spacing of a dialer's attempts (`PROTOCOL.md` §4.3): the next attempt starts a
/// uniformly random time between `min` and `max` after the previous one *started*
/// (at once if the attempt itself took longer). There is no exponential growth: a
/// cluster wants its links back quickly, and the jitter keeps peers from synchronising.
///
/// Randomness comes from a seed, so a simulation replays exactly.
#[derive(Clone, Debug)]
pub struct Backoff {
    state: u64,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff drawing from `seed`, between `min` and `max` (the protocol's 1 s and 2 s).
    pub fn new(seed: u64, min: Duration, max: Duration) -> Backoff {
        Backoff {
            state: seed,
            min,
            max: max.max(min),
        }
    }

    /// splitmix64: tiny, well distributed, and enough for jitter.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The delay drawn for the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let span = (self.max - self.min).as_nanos() as u64;
        let jitter = if span == 0 { 0 } else { self.next_u64() % span };
        self.min + Duration::from_nanos(jitter)
    }

    /// When the attempt after one that started at `started` should start.
    pub fn next_attempt(&mut self, started: Instant) -> Instant {
        started + self.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds_and_replay_from_the_seed() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(2));
        let mut a = Backoff::new(7, min, max);
        let mut b = Backoff::new(7, min, max);
        let mut c = Backoff::new(8, min, max);
        let xs: Vec<Duration> = (0..1000).map(|_| a.next_delay()).collect();
        let ys: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        let zs: Vec<Duration> = (0..1000).map(|_| c.next_delay()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|d| *d >= min && *d < max));
        // Spread over the whole range, not stuck at one end.
        assert!(xs.iter().any(|d| *d < Duration::from_millis(1100)));
        assert!(xs.iter().any(|d| *d > Duration::from_millis(1900)));
        let t0 = Instant::now();
        let next = Backoff::new(1, min, max).next_attempt(t0);
        assert!(next >= t0 + min && next < t0 + max);
        assert_eq!(Backoff::new(1, min, min).next_delay(), min);
    }
}
