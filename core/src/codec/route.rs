//! Pure functions of host names and routes: subroute IDs (`PROTOCOL.md` §5.5) and the
//! rule deciding which side of a pair dials (§4.1).

use std::fmt;

use sha2::{Digest, Sha256};
use std::hash::Hasher;

use twox_hash::XxHash3_64;

/// The 32-byte trailer naming a subroute: SHA-256 of the route with byte 0 replaced by
/// the handler ID and byte 1 by zero.
///
/// Aligned to 8 bytes, so that a [`Frame`](super::Frame) holding one is moved in whole
/// words: byte-aligned, the trailer and the frame's one-byte fields were moved with
/// loads of other widths than the stores that wrote them, and each such load waits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(align(8))]
pub struct SubrouteId([u8; 32]);

impl SubrouteId {
    /// The subroute ID of `route` for `handler`.
    ///
    /// ```
    /// use grid_core::codec::SubrouteId;
    /// let id = SubrouteId::new(78, "subroute/1");
    /// assert_eq!(id.as_bytes()[..2], [78, 0]);
    /// ```
    pub fn new(handler: u8, route: &str) -> SubrouteId {
        SubrouteId::hash_route(route).for_handler(handler)
    }

    /// The route's hash with the handler byte left zero; patch it in per handler with
    /// [`SubrouteId::for_handler`].
    pub fn hash_route(route: &str) -> SubrouteId {
        let mut id: [u8; 32] = Sha256::digest(route.as_bytes()).into();
        id[0] = 0;
        id[1] = 0;
        SubrouteId(id)
    }

    /// This ID with byte 0 set to `handler`.
    #[must_use]
    pub fn for_handler(mut self, handler: u8) -> SubrouteId {
        self.0[0] = handler;
        self
    }

    /// Wraps 32 bytes received on the wire.
    pub const fn from_bytes(bytes: [u8; 32]) -> SubrouteId {
        SubrouteId(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The handler byte.
    pub const fn handler(&self) -> u8 {
        self.0[0]
    }
}

impl fmt::Debug for SubrouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubrouteId(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

fn xxh3_concat(a: &str, b: &str) -> u64 {
    let mut h = XxHash3_64::new();
    h.write(a.as_bytes());
    h.write(b.as_bytes());
    h.finish()
}

/// Whether `local` dials `remote` (`PROTOCOL.md` §4.1).
///
/// `local` dials iff XXH3-64(`local` ‖ `remote`) < XXH3-64(`remote` ‖ `local`), ties
/// broken by byte-wise order. For two distinct names exactly one side dials; a node
/// never connects to itself, so `local == remote` answers `false`.
///
/// ```
/// use grid_core::codec::should_dial;
/// assert!(should_dial("b", "a"));
/// assert!(!should_dial("a", "b"));
/// ```
pub fn should_dial(local: &str, remote: &str) -> bool {
    if local == remote {
        return false;
    }
    let h0 = xxh3_concat(local, remote);
    let h1 = xxh3_concat(remote, local);
    if h0 != h1 { h0 < h1 } else { local < remote }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subroute_matches_the_worked_example() {
        let id = SubrouteId::new(78, "subroute/1");
        let hex: String = id.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "4e0013d069cc3dd37bc0093a9cdb03eefca225abedd6438464eda47321edeecb"
        );
        assert_eq!(SubrouteId::hash_route("subroute/1").for_handler(78), id);
    }

    #[test]
    fn dial_rule_matches_the_worked_example() {
        assert_eq!(xxh3_concat("a", "b"), 0xa873719c24d5735c);
        assert_eq!(xxh3_concat("b", "a"), 0xa7f09059a74517b4);
        assert_eq!(XxHash3_64::oneshot(b""), 0x2d06800538d394c2);
        assert!(should_dial("b", "a"));
        assert!(!should_dial("a", "b"));
        assert!(!should_dial("a", "a"));
    }

    #[test]
    fn dial_rule_is_antisymmetric_and_balanced_over_35_hosts() {
        let hosts: Vec<String> = "abcdefghijklmnopqrstuvwxyz012345678"
            .chars()
            .map(String::from)
            .collect();
        assert_eq!(hosts.len(), 35);
        for a in &hosts {
            let mut dials = 0;
            for b in hosts.iter().filter(|b| *b != a) {
                assert_ne!(should_dial(a, b), should_dial(b, a), "{a} {b}");
                dials += should_dial(a, b) as usize;
            }
            assert!(dials >= 10, "{a} dials only {dials} of 34");
        }
    }
}
