//! What a session reports to its driver.

use std::time::Instant;

use bytes::Bytes;

use super::{CallError, HandlerKey, LostReason};

/// Which table a mux is in: calls this side started, or calls the peer started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    /// This side started the call (it is the mux client).
    Outgoing,
    /// The peer started the call (this side runs the handler).
    Incoming,
}

/// A mux in one of the two tables; the two tables are separate namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MuxKey {
    /// The table.
    pub dir: Dir,
    /// The mux ID.
    pub id: u64,
}

impl MuxKey {
    /// An outgoing mux.
    pub const fn outgoing(id: u64) -> MuxKey {
        MuxKey {
            dir: Dir::Outgoing,
            id,
        }
    }

    /// An incoming mux.
    pub const fn incoming(id: u64) -> MuxKey {
        MuxKey {
            dir: Dir::Incoming,
            id,
        }
    }
}

/// An event; drain them with [`crate::proto::Session::poll_event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake succeeded: calls can be made.
    Connected {
        /// The peer's host string.
        remote_host: String,
        /// The peer's process ID.
        remote_id: [u8; 16],
    },
    /// The session ended. Every mux ended before this event with its own event; the
    /// tables are empty. Transmit whatever [`crate::proto::Session::poll_transmit`]
    /// still returns (a rejection), then close the socket.
    Lost(LostReason),
    /// The peer made a single request: run the handler, then call
    /// [`crate::proto::Session::respond`].
    Request {
        /// The incoming mux.
        mux_id: u64,
        /// The handler.
        handler: HandlerKey,
        /// The request bytes.
        payload: Bytes,
        /// When the peer stops waiting, if it said.
        deadline: Option<Instant>,
    },
    /// The peer opened a stream (it has been acknowledged): run the handler, read its
    /// input with [`crate::proto::Session::read`], send items, then finish it.
    StreamOpened {
        /// The incoming mux.
        mux_id: u64,
        /// The handler.
        handler: HandlerKey,
        /// The initial payload, if the peer sent one.
        payload: Option<Bytes>,
        /// When the stream ends, if the peer set a deadline.
        deadline: Option<Instant>,
    },
    /// A single request we made ended.
    Response {
        /// The outgoing mux.
        mux_id: u64,
        /// The response bytes or why there are none.
        result: Result<Bytes, CallError>,
    },
    /// A stream has an item or its end to read (reported once per [`Read::Pending`]).
    Readable(MuxKey),
    /// A stream that reported [`crate::proto::SendError::Blocked`] has credit again
    /// (or, for an incoming stream, can deliver its pending end).
    Writable(MuxKey),
    /// A mux ended abruptly: an outgoing stream failed (loss, deadline, peer error), or
    /// an incoming call must stop (peer cancel, deadline, liveness, loss). The mux is
    /// gone from its table.
    Closed {
        /// The mux.
        key: MuxKey,
        /// Why.
        error: CallError,
    },
}

/// The outcome of [`crate::proto::Session::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The next item.
    Item(Bytes),
    /// The stream's input ended: cleanly, or with the peer's error. For an outgoing
    /// stream the mux is freed by this read.
    End(Result<(), CallError>),
    /// Nothing yet; a [`Event::Readable`] follows when there is.
    Pending,
}
