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

/// A dialer's schedule: when to start the next attempt, given how the last one went
/// (`PROTOCOL.md` §4.3). The first attempt is immediate; a failed attempt (dial error,
/// refused handshake) waits [`Backoff`] after it *started*; a session that ran and
/// ended is redialled at once.
#[derive(Clone, Debug)]
pub struct Redial {
    backoff: Backoff,
    state: RedialState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RedialState {
    /// Waiting until the instant to dial.
    Waiting(Instant),
    /// An attempt that started at this instant is under way.
    Attempting(Instant),
    /// A session is up.
    Connected,
}

impl Redial {
    /// A schedule whose first attempt is due at `now`.
    pub fn new(backoff: Backoff, now: Instant) -> Redial {
        Redial {
            backoff,
            state: RedialState::Waiting(now),
        }
    }

    /// Whether to start an attempt now; if so, the attempt is under way.
    #[must_use]
    pub fn poll_dial(&mut self, now: Instant) -> bool {
        match self.state {
            RedialState::Waiting(at) if at <= now => {
                self.state = RedialState::Attempting(now);
                true
            }
            _ => false,
        }
    }

    /// When [`Redial::poll_dial`] will next say yes, if it is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            RedialState::Waiting(at) => Some(at),
            _ => None,
        }
    }

    /// Whether an attempt is under way.
    pub fn is_attempting(&self) -> bool {
        matches!(self.state, RedialState::Attempting(_))
    }

    /// The attempt failed (or its handshake was refused): wait before the next.
    pub fn failed(&mut self, now: Instant) {
        let started = match self.state {
            RedialState::Attempting(at) => at,
            _ => now,
        };
        self.state = RedialState::Waiting(self.backoff.next_attempt(started).max(now));
    }

    /// The attempt's handshake succeeded.
    pub fn connected(&mut self) {
        self.state = RedialState::Connected;
    }

    /// The session ended: redial at once if it had connected, else as a failure.
    pub fn ended(&mut self, now: Instant) {
        match self.state {
            RedialState::Connected => self.state = RedialState::Waiting(now),
            _ => self.failed(now),
        }
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

    #[test]
    fn redial_follows_the_protocols_schedule() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(2));
        let t0 = Instant::now();
        let mut r = Redial::new(Backoff::new(3, min, max), t0);
        // First attempt at once, and only one at a time.
        assert!(r.poll_dial(t0));
        assert!(!r.poll_dial(t0));
        assert!(r.is_attempting());
        // A failed attempt waits 1-2 s from its start.
        r.failed(t0 + Duration::from_millis(300));
        let next = r.poll_timeout().unwrap();
        assert!(next >= t0 + min && next < t0 + max, "{:?}", next - t0);
        assert!(!r.poll_dial(next - Duration::from_millis(1)));
        assert!(r.poll_dial(next));
        // An attempt slower than the spacing is followed at once.
        r.failed(next + Duration::from_secs(5));
        assert_eq!(r.poll_timeout(), Some(next + Duration::from_secs(5)));
        let t1 = next + Duration::from_secs(5);
        assert!(r.poll_dial(t1));
        // A session that ran is redialled at once when it ends.
        r.connected();
        assert_eq!(r.poll_timeout(), None);
        r.ended(t1 + Duration::from_secs(60));
        assert!(r.poll_dial(t1 + Duration::from_secs(60)));
        // A session refused in its handshake counts as a failure.
        r.ended(t1 + Duration::from_secs(61));
        assert!(r.poll_timeout().unwrap() >= t1 + Duration::from_secs(61));
    }
}
