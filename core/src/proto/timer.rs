//! Timers: a fixed table for the connection, an ordered set for the muxes.
//!
//! Every timer is an absolute instant; the next deadline is the minimum over both. A
//! timer that fires after its reason went away is a no-op (the session checks state
//! before acting), so removal is an optimisation, never a requirement for correctness.

use std::collections::BTreeSet;
use std::time::Instant;

use super::MuxKey;

/// Connection-level timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// The acceptor gives up waiting for the connect request.
    Handshake = 0,
    /// Send the next connection ping.
    Ping = 1,
    /// Declare the link lost if no pong arrived since.
    Keepalive = 2,
}

impl ConnTimer {
    pub(crate) const ALL: [ConnTimer; 3] =
        [ConnTimer::Handshake, ConnTimer::Ping, ConnTimer::Keepalive];
}

/// The connection timer table.
#[derive(Debug, Default)]
pub(crate) struct ConnTimers([Option<Instant>; 3]);

impl ConnTimers {
    pub(crate) fn set(&mut self, t: ConnTimer, at: Instant) {
        self.0[t as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, t: ConnTimer) {
        self.0[t as usize] = None;
    }

    pub(crate) fn is_expired(&self, t: ConnTimer, now: Instant) -> bool {
        self.0[t as usize].is_some_and(|at| at <= now)
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    pub(crate) fn clear(&mut self) {
        self.0 = [None; 3];
    }
}

/// What a mux timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum MuxTimer {
    /// The call's deadline.
    Deadline,
    /// A stream client's next liveness ping, or a stream server's next liveness check.
    Tick,
}

/// Mux timers ordered by instant.
#[derive(Debug, Default)]
pub(crate) struct MuxTimers {
    set: BTreeSet<(Instant, MuxKey, MuxTimer)>,
}

impl MuxTimers {
    pub(crate) fn insert(&mut self, at: Instant, key: MuxKey, kind: MuxTimer) {
        self.set.insert((at, key, kind));
    }

    pub(crate) fn remove(&mut self, at: Option<Instant>, key: MuxKey, kind: MuxTimer) {
        if let Some(at) = at {
            self.set.remove(&(at, key, kind));
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(Instant, MuxKey, MuxTimer)> {
        if self.set.first()?.0 <= now {
            self.set.pop_first()
        } else {
            None
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    pub(crate) fn clear(&mut self) {
        self.set.clear();
    }
}
