//! Timers: a fixed table for the connection, sorted lanes for the muxes.
//!
//! Every timer is an absolute instant; the next deadline is the minimum over both. A
//! timer that fires after its reason went away is a no-op (the session checks state
//! before acting), so removal is an optimisation, never a requirement for correctness.

use std::collections::{BTreeSet, VecDeque};
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

/// The connection timer table, with its earliest deadline kept (it is asked after every
/// input; the timers change a few times per ping interval).
#[derive(Debug, Default)]
pub(crate) struct ConnTimers {
    at: [Option<Instant>; 3],
    next: Option<Instant>,
}

impl ConnTimers {
    pub(crate) fn set(&mut self, t: ConnTimer, at: Instant) {
        self.at[t as usize] = Some(at);
        self.update();
    }

    pub(crate) fn stop(&mut self, t: ConnTimer) {
        self.at[t as usize] = None;
        self.update();
    }

    pub(crate) fn is_expired(&self, t: ConnTimer, now: Instant) -> bool {
        self.at[t as usize].is_some_and(|at| at <= now)
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.next
    }

    pub(crate) fn clear(&mut self) {
        self.at = [None; 3];
        self.next = None;
    }

    fn update(&mut self) {
        self.next = self.at.iter().flatten().min().copied();
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

/// One timer; timers are ordered by instant, then mux, then kind.
type Entry = (Instant, MuxKey, MuxTimer);

/// A timer in a lane. Removed timers stay as dead slots until they reach an end of
/// their lane or the lane is compacted.
#[derive(Clone, Copy, Debug)]
struct Slot {
    entry: Entry,
    live: bool,
}

impl Slot {
    #[inline]
    fn key(&self) -> Entry {
        self.entry
    }
}

/// Timers in increasing order, appended at the back and taken from the front.
#[derive(Debug, Default)]
struct Lane {
    slots: VecDeque<Slot>,
    live: usize,
}

impl Lane {
    /// Drops dead slots at both ends, so that the front is the lane's earliest live
    /// timer; compacts the lane when dead slots outnumber live ones.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| !s.live) {
            self.slots.pop_front();
        }
        while self.slots.back().is_some_and(|s| !s.live) {
            self.slots.pop_back();
        }
        if self.slots.len() > 2 * self.live + 32 {
            self.slots.retain(|s| s.live);
        }
    }

    /// The index of the live slot with key `k`.
    fn find(&self, k: Entry) -> Option<usize> {
        let front = self.slots.front()?;
        let i = if front.key() == k {
            0
        } else {
            if k < front.key() || self.slots.back().is_some_and(|b| k > b.key()) {
                return None;
            }
            self.slots.binary_search_by(|s| s.key().cmp(&k)).ok()?
        };
        self.slots[i].live.then_some(i)
    }

    /// Removes the front slot (live).
    fn pop_front(&mut self) {
        self.slots.pop_front();
        self.live -= 1;
        while self.slots.front().is_some_and(|s| !s.live) {
            self.slots.pop_front();
        }
    }

    /// Marks slot `i` removed.
    fn kill(&mut self, i: usize) {
        self.slots[i].live = false;
        self.live -= 1;
        self.trim();
    }
}

/// Lanes a timer may open before the next ones go to the ordered set.
const MAX_LANES: usize = 8;

/// Where the earliest timer is: a lane, or the ordered set.
#[derive(Clone, Copy, Debug)]
enum First {
    Lane(usize),
    Overflow,
}

/// Mux timers ordered by instant (then mux, then kind), as one ordered set would hold
/// them, at a fraction of its cost for the session's patterns.
///
/// Most timers are armed at `now` plus one of a few durations (the request deadline,
/// the stream ping interval, the peer's deadlines), so each kind arrives in increasing
/// order. Each timer goes to the back of a *lane* that stays sorted: the lane whose last
/// timer is the latest one before it (a new lane if none is, up to [`MAX_LANES`]; past
/// that, an ordered set). Removal marks a slot dead;
/// most removals hit the front of a lane (calls mostly end in the order they started).
/// The earliest timer, the least of the lanes' fronts and the set's first, is kept.
///
/// The session arms a timer for a mux and kind at most once at a time (it removes the
/// old one, or has popped it, before arming the next), so there are no duplicates to
/// fold as a set would; debug builds check it.
#[derive(Debug, Default)]
pub(crate) struct MuxTimers {
    lanes: Vec<Lane>,
    overflow: BTreeSet<Entry>,
    len: usize,
    /// The earliest timer and where it is, so that [`MuxTimers::next`], asked after
    /// every input, looks at nothing else.
    first: Option<(First, Entry)>,
}

impl MuxTimers {
    /// Bytes of capacity the lanes hold.
    pub(crate) fn buffer_bytes(&self) -> usize {
        let lanes = self.lanes.capacity() * std::mem::size_of::<Lane>();
        let slots: usize = self.lanes.iter().map(|l| l.slots.capacity()).sum();
        lanes + slots * std::mem::size_of::<Slot>()
    }

    /// Gives back the lanes' capacity beyond the slots they hold.
    pub(crate) fn shrink(&mut self) {
        for lane in &mut self.lanes {
            lane.slots.shrink_to_fit();
        }
    }

    pub(crate) fn insert(&mut self, at: Instant, key: MuxKey, kind: MuxTimer) {
        let e = (at, key, kind);
        debug_assert!(!self.contains(&e), "timer {e:?} armed twice");
        self.len += 1;
        let place = match self.lane_for(e) {
            Some(i) => {
                let lane = &mut self.lanes[i];
                lane.slots.push_back(Slot {
                    entry: e,
                    live: true,
                });
                lane.live += 1;
                First::Lane(i)
            }
            None => {
                self.overflow.insert(e);
                First::Overflow
            }
        };
        if self.first.is_none_or(|(_, f)| e < f) {
            self.first = Some((place, e));
        }
    }

    /// The lane `slot` goes to: the one whose last timer is the latest one before it;
    /// else an empty lane, else a new one; `None` when every lane is taken.
    fn lane_for(&mut self, k: Entry) -> Option<usize> {
        let mut best: Option<(usize, Entry)> = None;
        let mut empty = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            match lane.slots.back() {
                Some(last) if last.key() < k => {
                    if best.is_none_or(|(_, b)| b < last.key()) {
                        best = Some((i, last.key()));
                    }
                }
                Some(_) => {}
                None => empty = empty.or(Some(i)),
            }
        }
        match (best, empty) {
            (Some((i, _)), _) | (None, Some(i)) => Some(i),
            (None, None) if self.lanes.len() < MAX_LANES => {
                self.lanes.push(Lane::default());
                Some(self.lanes.len() - 1)
            }
            (None, None) => None,
        }
    }

    pub(crate) fn remove(&mut self, at: Option<Instant>, key: MuxKey, kind: MuxTimer) {
        let Some(at) = at else {
            return;
        };
        let e = (at, key, kind);
        let removed = match self.first {
            Some((First::Lane(i), f)) if f == e => {
                // The earliest timer is its lane's front.
                self.lanes[i].pop_front();
                true
            }
            _ => {
                let found = self
                    .lanes
                    .iter()
                    .enumerate()
                    .find_map(|(i, lane)| lane.find(e).map(|at| (i, at)));
                match found {
                    Some((i, at)) => {
                        self.lanes[i].kill(at);
                        true
                    }
                    None => self.overflow.remove(&e),
                }
            }
        };
        if removed {
            self.len -= 1;
            if self.first.is_some_and(|(_, f)| f == e) {
                self.first = self.find_first();
            }
        }
    }

    /// The earliest timer and where it is.
    fn find_first(&self) -> Option<(First, Entry)> {
        let mut first: Option<(First, Entry)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(s) = lane.slots.front() {
                if first.is_none_or(|(_, f)| s.entry < f) {
                    first = Some((First::Lane(i), s.entry));
                }
            }
        }
        match (first, self.overflow.first()) {
            (Some((_, l)), Some(o)) if *o < l => Some((First::Overflow, *o)),
            (None, Some(o)) => Some((First::Overflow, *o)),
            (first, _) => first,
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.first.map(|(_, (at, _, _))| at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(Instant, MuxKey, MuxTimer)> {
        let (place, e) = self.first?;
        if e.0 > now {
            return None;
        }
        match place {
            First::Lane(i) => self.lanes[i].pop_front(),
            First::Overflow => {
                self.overflow.pop_first();
            }
        }
        self.len -= 1;
        self.first = self.find_first();
        Some(e)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn clear(&mut self) {
        self.lanes.clear();
        self.overflow.clear();
        self.len = 0;
        self.first = None;
    }

    /// Whether `e` is armed (debug checks).
    fn contains(&self, e: &Entry) -> bool {
        self.overflow.contains(e) || self.lanes.iter().any(|lane| lane.find(*e).is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Arm (unless armed): at `t` ms, mux `id`, kind.
        Insert(u64, u64, bool),
        /// Remove the `n`th armed timer (modulo), or a timer that is not armed.
        Remove(usize, bool),
        /// Pop everything due at `t` ms.
        Pop(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..400, 0u64..40, any::<bool>()).prop_map(|(t, id, k)| Op::Insert(t, id, k)),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(n, armed)| Op::Remove(n, armed)),
            1 => (0u64..400).prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// The lanes behave exactly as one ordered set: same timers, same order, same
        /// next deadline, whatever the pattern (monotone runs, many durations at once,
        /// removals anywhere, enough of them to fill every lane and the overflow).
        #[test]
        fn lanes_behave_as_an_ordered_set(
            ops in proptest::collection::vec(op(), 0..400),
            monotone in any::<bool>(),
        ) {
            let t0 = Instant::now();
            let mut lanes = MuxTimers::default();
            let mut set = BTreeSet::new();
            let mut clock = 0u64;
            for op in ops {
                match op {
                    Op::Insert(t, id, tick) => {
                        // Monotone runs: `now` only grows, a few fixed durations.
                        let t = if monotone {
                            clock += 1;
                            clock + [0, 15, 60][(t % 3) as usize] * 10
                        } else {
                            t
                        };
                        let kind = if tick { MuxTimer::Tick } else { MuxTimer::Deadline };
                        let dir = if id % 2 == 0 { MuxKey::outgoing(id) } else { MuxKey::incoming(id) };
                        let e = (t0 + Duration::from_millis(t), dir, kind);
                        if set.insert(e) {
                            lanes.insert(e.0, e.1, e.2);
                        }
                    }
                    Op::Remove(n, armed) => {
                        let e = if armed && !set.is_empty() {
                            *set.iter().nth(n % set.len()).expect("in range")
                        } else {
                            (t0 + Duration::from_millis(1000 + n as u64 % 7), MuxKey::outgoing(1), MuxTimer::Tick)
                        };
                        set.remove(&e);
                        lanes.remove(Some(e.0), e.1, e.2);
                    }
                    Op::Pop(t) => {
                        let now = t0 + Duration::from_millis(t);
                        loop {
                            let want = set.first().copied().filter(|e| e.0 <= now);
                            if let Some(e) = want {
                                set.remove(&e);
                            }
                            prop_assert_eq!(lanes.pop_expired(now), want);
                            if want.is_none() {
                                break;
                            }
                        }
                    }
                }
                prop_assert_eq!(lanes.len(), set.len());
                prop_assert_eq!(lanes.next(), set.first().map(|e| e.0));
            }
            lanes.remove(None, MuxKey::outgoing(1), MuxTimer::Tick);
            prop_assert_eq!(lanes.len(), set.len());
            lanes.clear();
            prop_assert_eq!((lanes.len(), lanes.next()), (0, None));
        }
    }
}
