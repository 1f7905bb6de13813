//! Counters a caller can read.

use std::time::Duration;

/// Counters of one session, read with [`crate::proto::Session::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls this side started that are in flight.
    pub outgoing_muxes: usize,
    /// Calls the peer started that are in flight.
    pub incoming_muxes: usize,
    /// Frames sent (inner frames of containers counted one by one).
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// WebSocket messages sent.
    pub messages_sent: u64,
    /// WebSocket messages received.
    pub messages_received: u64,
    /// Bytes of messages sent.
    pub bytes_sent: u64,
    /// Bytes of messages received.
    pub bytes_received: u64,
    /// Merged containers sent.
    pub merged_sent: u64,
    /// Merged containers received.
    pub merged_received: u64,
    /// Frames with an op this version does not handle (ignored).
    pub unknown_ops: u64,
    /// Frames for muxes that are not (or no longer) known (ignored).
    pub stale_frames: u64,
    /// Replies to the peer dropped because the outbound queue was full.
    pub replies_dropped: u64,
    /// Frames in the outbound queue.
    pub queued_frames: usize,
    /// Payload bytes in the outbound queue.
    pub queued_bytes: usize,
    /// The last connection ping's round trip.
    pub last_rtt: Option<Duration>,
    /// Broken internal invariants seen (see [`crate::proto::bug_count`]).
    pub bugs: u64,
}
