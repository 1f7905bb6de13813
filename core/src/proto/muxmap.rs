//! The session's tables keyed by mux ID: hash maps with a cheap keyed hash.
//!
//! A mux ID is one `u64`, so a general-purpose hasher (SipHash) costs more than the
//! lookup itself, and an ordered map pays for an order that only session loss uses (the
//! session sorts the IDs then). Incoming IDs are chosen by the peer, so the hash must not
//! be predictable: it is a folded multiply (the construction of foldhash and ahash)
//! under two keys drawn from the standard library's random source once per session.
//! Iteration order therefore differs between sessions: nothing may depend on it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// A map from mux ID to `V`.
pub(crate) type MuxMap<V> = HashMap<u64, V, MuxIdHash>;

/// A map with a fresh pair of keys.
pub(crate) fn mux_map<V>() -> MuxMap<V> {
    HashMap::with_hasher(MuxIdHash::new())
}

/// Builds [`MuxIdHasher`]s with this session's keys.
#[derive(Clone, Debug)]
pub(crate) struct MuxIdHash {
    mul: u64,
    xor: u64,
}

impl MuxIdHash {
    fn new() -> MuxIdHash {
        let random = RandomState::new();
        MuxIdHash {
            mul: random.hash_one(1u64) | 1,
            xor: random.hash_one(2u64),
        }
    }
}

impl BuildHasher for MuxIdHash {
    type Hasher = MuxIdHasher;

    #[inline]
    fn build_hasher(&self) -> MuxIdHasher {
        MuxIdHasher {
            mul: self.mul,
            state: self.xor,
        }
    }
}

/// Hashes one `u64` (anything else byte by byte, correctly but slowly).
pub(crate) struct MuxIdHasher {
    mul: u64,
    state: u64,
}

/// The 128-bit product of `a` and `b`, its halves xored: every input bit reaches the
/// high bits hashbrown uses for its control bytes and the low bits it uses for buckets.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for MuxIdHasher {
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.state = folded_multiply(self.state ^ v, self.mul);
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }

    /// A second folded multiply, by a fixed odd constant: after the first, the low bits
    /// of sequential IDs depend on the key's high bits only weakly, and for some keys
    /// they collided far more often than a random function's.
    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.state, 0x9e37_79b9_7f4a_7c15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets_and_control_bytes() {
        // Many sessions' keys: a weak key must not slip through by chance.
        for _ in 0..200 {
            sequential_ids_spread(MuxIdHash::new());
        }
    }

    fn sequential_ids_spread(h: MuxIdHash) {
        let hashes: Vec<u64> = (1..=4096u64).map(|id| h.hash_one(id)).collect();
        // Low bits (bucket index of a 4096-slot table) and top 7 bits (control byte).
        let mut low = std::collections::HashSet::new();
        let mut top = std::collections::HashSet::new();
        for x in &hashes {
            low.insert(x & 4095);
            top.insert(x >> 57);
        }
        assert!(low.len() > 2000, "low bits collide: {} distinct", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn keys_differ_between_sessions() {
        let (a, b) = (MuxIdHash::new(), MuxIdHash::new());
        assert_ne!(a.hash_one(1u64), b.hash_one(1u64));
    }
}
