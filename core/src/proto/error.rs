//! Errors, one enum per layer: how a call ended, why a command was refused, why a
//! session ended.

use std::time::Duration;

use crate::codec::DecodeError;

/// Why a call (a single request or a stream) ended without its result, or why a command
/// on it was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The link is down, or was lost while the call was in flight.
    #[error("remote disconnected")]
    Disconnected,
    /// The call's deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The handler is not registered locally (or its ID is 0).
    #[error("unknown mux handler")]
    UnknownHandler,
    /// The handler failed; the text is the peer's.
    #[error("{0}")]
    Remote(String),
    /// The peer refused to start the call (unknown handler, too many calls, ...); the
    /// text is the peer's.
    #[error("{0}")]
    Refused(String),
    /// The peer broke the stream's sequence.
    #[error("out-of-sequence item received")]
    IncorrectSequence,
    /// The peer sent more stream items than it had credit for.
    #[error("stream credit exceeded by the peer")]
    CreditExceeded,
    /// The peer no longer knows the stream.
    #[error("remote terminated call")]
    RemoteTerminated,
    /// The call was cancelled by the peer.
    #[error("call cancelled by the remote")]
    CancelledByRemote,
    /// Too many calls are in flight on this link.
    #[error("too many concurrent calls on this link (limit {0})")]
    TooManyCalls(usize),
    /// The link's outbound queue is full; try again when it has drained.
    #[error("outbound queue is full")]
    Congested,
    /// The stream takes no input.
    #[error("stream does not accept requests")]
    NoInput,
    /// The call is not known (it ended already).
    #[error("mux client closed")]
    Closed,
}

impl CallError {
    /// Whether the peer answered that it has no such handler.
    pub fn is_unknown_handler(&self) -> bool {
        match self {
            CallError::UnknownHandler => true,
            CallError::Refused(t) => t.starts_with("Invalid Handler"),
            _ => false,
        }
    }
}

/// A stream item could not be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No credit: wait for [`crate::proto::Event::Writable`] and try again.
    #[error("stream has no send credit")]
    Blocked,
    /// The stream cannot take items.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LostReason {
    /// The peer sent bytes that are not a valid message.
    #[error("malformed message from peer: {0}")]
    Decode(#[from] DecodeError),
    /// The peer rejected our connect request; the reason is the peer's text.
    #[error("connection rejected: {0}")]
    Rejected(String),
    /// We rejected the peer's connect request.
    #[error("rejected peer: {0}")]
    RejectedPeer(String),
    /// The peer answered the handshake with something else than the protocol allows.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The dialer did not send its connect request in time.
    #[error("no connect request within {0:?}")]
    HandshakeTimeout(Duration),
    /// No pong arrived for too long.
    #[error("last pong too old ({0:?}); disconnecting")]
    KeepaliveTimeout(Duration),
    /// The transport failed or closed (reported by the driver).
    #[error("transport closed: {0}")]
    Transport(String),
    /// The session was closed locally.
    #[error("closed locally")]
    Local,
}
