//! Everything a session is configured with: limits, timeouts, the local identity and the
//! handlers this node serves and calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{self, SubrouteId};

/// Limits and timeouts of one link. Every bound a peer could push against is here, with
/// a default; see the README's limits table.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Largest WebSocket message accepted from the peer. Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest number of concurrent muxes in each direction (calls we started, calls the
    /// peer started). Beyond it a new call is refused with a clear error and the link
    /// stays up. Default 131 072.
    pub max_muxes: usize,
    /// Frames the outbound queue may hold before new local calls are refused with
    /// [`crate::proto::CallError::Congested`] and replies provoked by the peer are
    /// dropped (stream items are bounded by their credit instead). Default 65 535 (the
    /// protocol's queue length).
    pub max_queued_frames: usize,
    /// Bytes of payload the outbound queue may hold, with the same effect. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// How long an acceptor waits for the dialer's connect request. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest accepted difference between the peer's clock and ours. Default 5 min.
    pub max_clock_skew: Duration,
    /// Interval of connection pings. Default 10 s.
    pub ping_interval: Duration,
    /// The link is lost when no pong arrived for this long. Default 20 s.
    pub pong_timeout: Duration,
    /// Interval of a stream client's liveness pings. Default 15 s.
    pub mux_ping_interval: Duration,
    /// A stream client gives up after this long without a pong or an item. Default 30 s.
    pub mux_pong_timeout: Duration,
    /// A stream server gives up after this long without a liveness ping. Default 60 s.
    pub server_mux_timeout: Duration,
    /// Deadline of single requests made without one. Default 60 s.
    pub default_request_deadline: Duration,
    /// Frames held back to merge into one container, at most. Default 50.
    pub merge_max_frames: usize,
    /// Bytes held back to merge into one container, below this. Default 31 744.
    pub merge_max_bytes: usize,
    /// Shortest spacing between a dialer's attempts. Default 1 s.
    pub reconnect_min: Duration,
    /// Longest spacing between a dialer's attempts. Default 2 s.
    pub reconnect_max: Duration,
    /// Time allowed for TCP connect and WebSocket upgrade. Default 2 s.
    pub dial_timeout: Duration,
    /// A write that makes no progress for this long drops the link. Default 4 s.
    pub write_stall_timeout: Duration,
    /// Bytes of a stream's items a reader lets be on their way to it or unread, once
    /// the items it reads are large. A stream's capacity counts items; with large items
    /// the reader holds back the credits of the items it read beyond this many bytes'
    /// worth (judged by the size of the item just read, and at least one item), and
    /// returns them once items are small again. It bounds the memory a busy stream pins
    /// (the peer may still send its whole first window) and keeps its bytes in the
    /// cache. `usize::MAX` turns it off. Default 1 MiB.
    pub stream_window_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: codec::DEFAULT_MAX_FRAME_SIZE,
            max_muxes: 131_072,
            max_queued_frames: 65_535,
            max_queued_bytes: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(5 * 60),
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(20),
            mux_ping_interval: Duration::from_secs(15),
            mux_pong_timeout: Duration::from_secs(30),
            server_mux_timeout: Duration::from_secs(60),
            default_request_deadline: Duration::from_secs(60),
            merge_max_frames: 50,
            merge_max_bytes: 32 * 1024 - 1024,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(2),
            write_stall_timeout: Duration::from_secs(4),
            stream_window_bytes: 1 << 20,
        }
    }
}

/// What a handler is: a single-request handler, or a stream handler with its capacities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// Bytes in, bytes or an error out.
    Single,
    /// A stream.
    Stream {
        /// Items client→server the server buffers; 0 means the stream takes no input.
        in_capacity: u32,
        /// Items server→client in flight (at least 1).
        out_capacity: u32,
    },
}

impl HandlerKind {
    /// A stream kind; an out capacity of 0 means 1, as the protocol says.
    pub fn stream(in_capacity: u32, out_capacity: u32) -> HandlerKind {
        HandlerKind::Stream {
            in_capacity,
            out_capacity: out_capacity.max(1),
        }
    }
}

/// Names a handler: its ID, and its subroute if it has one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandlerKey {
    /// The handler ID (1–255).
    pub id: u8,
    /// The subroute ID, already carrying `id` in its first byte.
    pub subroute: Option<SubrouteId>,
}

impl HandlerKey {
    /// A handler without a subroute.
    pub const fn new(id: u8) -> HandlerKey {
        HandlerKey { id, subroute: None }
    }

    /// A handler on a subroute.
    pub fn with_route(id: u8, route: &str) -> HandlerKey {
        HandlerKey {
            id,
            subroute: Some(SubrouteId::new(id, route)),
        }
    }
}

impl fmt::Debug for HandlerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subroute {
            None => write!(f, "Handler({})", self.id),
            Some(s) => write!(f, "Handler({}, {:?})", self.id, s),
        }
    }
}

/// Registering a handler failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The ID and subroute are registered already.
    #[error("mux handler already exists: {0:?}")]
    AlreadyExists(HandlerKey),
    /// Handler ID 0 is reserved.
    #[error("handler id 0 is reserved")]
    InvalidId,
}

/// The handlers a node knows, by ID and subroute, with their kinds.
///
/// Both sides of a link must register a stream handler with the same capacities: the
/// client sizes its buffers and credits from its own registration.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_id: BTreeMap<u8, HandlerKind>,
    by_subroute: BTreeMap<SubrouteId, HandlerKind>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a handler.
    pub fn register(&mut self, key: HandlerKey, kind: HandlerKind) -> Result<(), RegisterError> {
        if key.id == 0 {
            return Err(RegisterError::InvalidId);
        }
        let kind = match kind {
            HandlerKind::Stream {
                in_capacity,
                out_capacity,
            } => HandlerKind::stream(in_capacity, out_capacity),
            k => k,
        };
        let inserted = match key.subroute {
            None => insert_new(&mut self.by_id, key.id, kind),
            Some(s) => insert_new(&mut self.by_subroute, s.for_handler(key.id), kind),
        };
        if inserted {
            Ok(())
        } else {
            Err(RegisterError::AlreadyExists(key))
        }
    }

    /// The kind of a handler, if registered.
    pub fn get(&self, key: &HandlerKey) -> Option<HandlerKind> {
        match key.subroute {
            None => self.by_id.get(&key.id).copied(),
            Some(s) => self.by_subroute.get(&s).copied(),
        }
    }
}

fn insert_new<K: Ord>(map: &mut BTreeMap<K, HandlerKind>, k: K, v: HandlerKind) -> bool {
    match map.entry(k) {
        std::collections::btree_map::Entry::Occupied(_) => false,
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(v);
            true
        }
    }
}

/// Checks a peer's token; `Err` carries the reason sent back in the rejection.
pub type TokenValidator = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// Who this node is and whom it talks to: shared by every session of a manager.
#[derive(Clone)]
pub struct Cluster {
    /// This node's host string (`scheme://host:port`), as every node spells it.
    pub local_host: String,
    /// This node's random ID, new per process start.
    pub local_id: [u8; 16],
    /// Every other node's host string.
    pub peers: BTreeSet<String>,
    /// The handlers this node serves and calls.
    pub registry: Registry,
    /// Checks the token of a dialing peer.
    pub validate_token: Arc<TokenValidator>,
    /// The limits and timeouts.
    pub config: Config,
}

impl Cluster {
    /// A cluster description accepting every token; set [`Cluster::validate_token`] for
    /// real deployments.
    pub fn new(local_host: impl Into<String>, local_id: [u8; 16], peers: &[&str]) -> Cluster {
        let local_host = local_host.into();
        Cluster {
            peers: peers
                .iter()
                .filter(|p| **p != local_host)
                .map(|p| (*p).to_owned())
                .collect(),
            local_host,
            local_id,
            registry: Registry::new(),
            validate_token: Arc::new(|_| Ok(())),
            config: Config::default(),
        }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("local_host", &self.local_host)
            .field("peers", &self.peers)
            .field("registry", &self.registry)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether frames on a link between these hosts carry a CRC: yes unless both host
/// strings start with `https://` or `wss://` (`PROTOCOL.md` §1.3).
pub fn link_uses_crc(local: &str, remote: &str) -> bool {
    let tls = |h: &str| h.starts_with("https://") || h.starts_with("wss://");
    !(tls(local) && tls(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_rejects_duplicates_and_id_zero() {
        let mut r = Registry::new();
        r.register(HandlerKey::new(1), HandlerKind::Single).unwrap();
        assert_eq!(
            r.register(HandlerKey::new(1), HandlerKind::stream(1, 1)),
            Err(RegisterError::AlreadyExists(HandlerKey::new(1)))
        );
        let routed = HandlerKey::with_route(1, "a/b");
        r.register(routed, HandlerKind::stream(2, 0)).unwrap();
        assert_eq!(r.get(&routed), Some(HandlerKind::stream(2, 1)));
        assert!(r.register(routed, HandlerKind::Single).is_err());
        assert_eq!(
            r.register(HandlerKey::new(0), HandlerKind::Single),
            Err(RegisterError::InvalidId)
        );
        assert_eq!(r.get(&HandlerKey::with_route(1, "a/c")), None);
    }

    #[test]
    fn crc_is_off_only_when_both_ends_use_tls() {
        assert!(link_uses_crc("http://a:1", "http://b:1"));
        assert!(link_uses_crc("https://a:1", "http://b:1"));
        assert!(!link_uses_crc("https://a:1", "wss://b:1"));
    }
}
