//! The wire format, byte for byte (`PROTOCOL.md` §1–§3).
//!
//! One WebSocket binary message holds either one [`Frame`] or an `OpMerged` container of
//! several. [`decode`] reads a message; [`Frame::encode`] and [`encode_merged`] write one.
//! Decoding never panics, never copies a payload (payloads are slices of the message)
//! and checks every length against the bytes actually present before using it, so the
//! memory it uses is bounded by the message it was given.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use grid_core::codec::{self, Flags, Frame, Message, Op};
//!
//! let mut frame = Frame::new(Op::Request);
//! frame.mux_id = 1;
//! frame.deadline_ms = 60_000;
//! frame.handler = 78;
//! frame.flags = Flags::CRC | Flags::EOF;
//! frame.payload = Bytes::from_static(b"Hello Grid World!");
//! let wire = frame.to_bytes();
//! assert_eq!(&wire[..5], &[0x97, 0x01, 0x00, 0xcd, 0xea]);
//!
//! match codec::decode(&wire, codec::DEFAULT_MAX_FRAME_SIZE).unwrap() {
//!     Message::Frame(f) => assert_eq!(f, frame),
//!     Message::Merged(_) => unreachable!(),
//! }
//! ```

mod control;
mod frame;
mod merged;
mod msgpack;
mod route;

use bytes::Bytes;

pub use control::{ConnectRequest, ConnectResponse, MuxConnectError, Ping, Pong, Time, to_payload};
#[cfg(feature = "driver")]
pub(crate) use frame::HEAD_ROOM;
pub use frame::{CRC_LEN, Flags, Frame, Op, PayloadSplit, SUBROUTE_LEN, crc};
pub use merged::{MergedFrames, encode_merged, encode_message, encode_message_split, merged_len};
pub(crate) use merged::{encode_merged_sized, merged_len_sized};
pub use route::{SubrouteId, should_dial};

/// The default largest message [`decode`] accepts: 16 MiB.
///
/// The protocol has no maximum; Grid bounds what a peer can make it hold. Single requests
/// of 1 MiB are routine, so the default leaves ample room while keeping a misbehaving
/// peer from claiming gigabytes.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;

/// Why a message could not be decoded. Positions are byte offsets in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is larger than the configured maximum; nothing was read.
    #[error("message of {len} bytes exceeds the maximum frame size of {max}")]
    TooLarge {
        /// The message length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The input ended inside a value.
    #[error("truncated {field} at byte {at}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        field: &'static str,
        /// Where.
        at: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A msgpack type that is not allowed here (a nil or str payload, a non-integer field).
    #[error("unexpected msgpack type 0x{byte:02x} for {field} at byte {at}")]
    UnexpectedType {
        /// What was being read.
        field: &'static str,
        /// Where.
        at: usize,
        /// The type byte found.
        byte: u8,
    },
    /// A negative integer where an unsigned one is required.
    #[error("negative value {value} for {field} at byte {at}")]
    Negative {
        /// What was being read.
        field: &'static str,
        /// Where.
        at: usize,
        /// The value.
        value: i64,
    },
    /// An integer too large for its field.
    #[error("{field} value {value} at byte {at} exceeds {max}")]
    Overflow {
        /// What was being read.
        field: &'static str,
        /// Where.
        at: usize,
        /// The value.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A string that is not UTF-8.
    #[error("{field} at byte {at} is not valid UTF-8")]
    InvalidUtf8 {
        /// What was being read.
        field: &'static str,
        /// Where.
        at: usize,
    },
    /// A well-formed value that the protocol does not allow.
    #[error("invalid {field} at byte {at}: {reason}")]
    InvalidValue {
        /// What was being read.
        field: &'static str,
        /// Where.
        at: usize,
        /// Why.
        reason: &'static str,
    },
    /// The frame array does not have 7 elements.
    #[error("frame array at byte {at} has {len} elements, want 7")]
    ArrayLength {
        /// Where.
        at: usize,
        /// The declared length.
        len: u32,
    },
    /// A flag announces a trailer that is not there.
    #[error("want {trailer} len {want}, got {have} (at byte {at})")]
    MissingTrailer {
        /// `crc` or `subroute`.
        trailer: &'static str,
        /// Where the trailer region starts.
        at: usize,
        /// Its required length.
        want: usize,
        /// Bytes present.
        have: usize,
    },
    /// The CRC trailer does not match the bytes before it.
    #[error("crc mismatch: 0x{given:08x} (given) != 0x{computed:08x} (bytes) at byte {at}")]
    CrcMismatch {
        /// Where the CRC starts.
        at: usize,
        /// The CRC on the wire.
        given: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// Bytes between a frame's array and its trailers (only containers have any).
    #[error("{count} unexpected bytes after the frame array at byte {at}")]
    TrailingBytes {
        /// Where they start.
        at: usize,
        /// How many.
        count: usize,
    },
    /// A merged container's count does not match its contents.
    #[error(
        "merged container declares {declared} frames but holds {found} (+{extra_bytes} bytes) at byte {at}"
    )]
    MergedCount {
        /// Where the mismatch was found.
        at: usize,
        /// The count in the header.
        declared: u32,
        /// Frames read before the mismatch.
        found: u32,
        /// Bytes left over after the declared frames.
        extra_bytes: usize,
    },
    /// A merged container inside a merged container.
    #[error("nested merged container at byte {at}")]
    NestedMerged {
        /// Where the inner container starts.
        at: usize,
    },
}

impl DecodeError {
    /// The same error with positions moved by `base` (the offset of a sub-slice).
    pub(crate) fn shifted(mut self, base: usize) -> DecodeError {
        use DecodeError::*;
        match &mut self {
            Truncated { at, .. }
            | UnexpectedType { at, .. }
            | Negative { at, .. }
            | Overflow { at, .. }
            | InvalidUtf8 { at, .. }
            | InvalidValue { at, .. }
            | ArrayLength { at, .. }
            | MissingTrailer { at, .. }
            | CrcMismatch { at, .. }
            | TrailingBytes { at, .. }
            | MergedCount { at, .. }
            | NestedMerged { at } => *at += base,
            // The whole message: no position in it.
            TooLarge { .. } => {}
        }
        self
    }
}

/// A decoded WebSocket message.
#[derive(Debug, Clone)]
pub enum Message {
    /// One frame.
    Frame(Frame),
    /// An `OpMerged` container; iterate it for the inner frames.
    Merged(MergedFrames),
}

impl Message {
    /// Every frame of the message in order, or the first error.
    ///
    /// Allocates a vector; the session iterates [`MergedFrames`] directly instead.
    pub fn into_frames(self) -> Result<Vec<Frame>, DecodeError> {
        match self {
            Message::Frame(f) => Ok(vec![f]),
            Message::Merged(m) => m.collect(),
        }
    }
}

/// Decodes one WebSocket message of at most `max_len` bytes.
///
/// The size is checked before anything is read. A container's inner frames are decoded
/// as they are iterated, so an error in one of them surfaces from the iterator.
pub fn decode(message: &Bytes, max_len: usize) -> Result<Message, DecodeError> {
    if message.len() > max_len {
        return Err(DecodeError::TooLarge {
            len: message.len(),
            max: max_len,
        });
    }
    let parsed = frame::parse(message, 0..message.len(), 0)?;
    if parsed.frame.op == Op::Merged {
        let base = parsed.rest.start;
        let body = message.slice(parsed.rest);
        return Ok(Message::Merged(MergedFrames::new(parsed.frame, body, base)));
    }
    Ok(Message::Frame(parsed.frame))
}

#[cfg(test)]
mod tests {
    use super::DecodeError::*;

    #[test]
    fn a_shifted_error_moves_its_position_and_nothing_else() {
        let f = "field";
        let at_3 = [
            Truncated {
                field: f,
                at: 3,
                need: 4,
                have: 1,
            },
            UnexpectedType {
                field: f,
                at: 3,
                byte: 0xc0,
            },
            Negative {
                field: f,
                at: 3,
                value: -1,
            },
            Overflow {
                field: f,
                at: 3,
                value: 9,
                max: 8,
            },
            InvalidUtf8 { field: f, at: 3 },
            InvalidValue {
                field: f,
                at: 3,
                reason: "why",
            },
            ArrayLength { at: 3, len: 6 },
            MissingTrailer {
                trailer: "crc",
                at: 3,
                want: 4,
                have: 0,
            },
            CrcMismatch {
                at: 3,
                given: 1,
                computed: 2,
            },
            TrailingBytes { at: 3, count: 2 },
            MergedCount {
                at: 3,
                declared: 2,
                found: 1,
                extra_bytes: 0,
            },
            NestedMerged { at: 3 },
        ];
        for e in at_3 {
            let text = e.to_string();
            let moved = e.clone().shifted(100);
            assert_ne!(moved, e);
            // Only the position changed: the text differs exactly there.
            assert_eq!(moved.to_string(), text.replacen("byte 3", "byte 103", 1));
            assert_eq!(moved.shifted(0), e.shifted(100));
        }
        let whole = TooLarge { len: 9, max: 8 };
        assert_eq!(whole.clone().shifted(100), whole);
    }
}
