//! Typed handlers and calls: request, response and stream item types that serde can
//! encode, sent as msgpack payloads (PROTOCOL.md §9).
//!
//! The typed layer adds no framing: a typed call is a byte-level call whose payloads are
//! the msgpack encodings of its values. A definition names a handler ID, the types it
//! carries and, optionally, a subroute; it is a plain `const` that both the serving and
//! the calling side use:
//!
//! - [`SingleHandler<Req, Resp>`]: [`register`](SingleHandler::register) an
//!   `async fn(Req) -> Result<Resp, RemoteError>` on a [`ManagerBuilder`], and
//!   [`call`](SingleHandler::call) it on a [`Connection`];
//! - [`StreamHandler<P, I, O>`]: a stream with an initial payload `P`, input items `I`
//!   and output items `O`, and its variants [without input](StreamHandler::no_input)
//!   and [without payload](StreamHandler::no_payload).
//!
//! # Encoding
//!
//! Every `T: Serialize + DeserializeOwned` is a [`Message`], encoded with
//! [`rmp_serde::to_vec_named`]: structs become msgpack **maps keyed by field name**,
//! which is what MinIO's msgp-generated types use (rename fields with
//! `#[serde(rename = "...")]` to match the Go names). A type MinIO marks as tuple is
//! wrapped in [`Tuple`], which encodes structs as msgpack arrays instead. Decoding
//! accepts either form. Types that are not serde types implement [`Message`] directly
//! ([`NoPayload`] does).
//!
//! Integers take their smallest msgpack form, as in Go, except that rmp writes a
//! non-negative signed integer above 127 as an unsigned one (`0xcc`, `0xcd`, ...) where
//! Go's msgp writes `0xd1`, `0xd2`, ...; both decode either form, so peers interoperate,
//! though such values are not byte-identical to a Go encoding.
//!
//! The helper payload types of §9 have exactly the Go forms: [`NoPayload`],
//! [`BytesPayload`], [`Mss`], [`UrlValues`] and [`Json`]. A Go `Array[T]` is an
//! `Option<Vec<T>>` (nil for `None`).
//!
//! # Errors
//!
//! A request, initial payload or input item that fails to decode on the serving side
//! ends that call with a [`RemoteError`] naming the failure (`decode request: ...`,
//! `decode payload: ...`, `decode item: ...`), as does a response that fails to encode.
//! On the calling side every failure is an [`Error`]: the byte-level [`CallError`], or a
//! local [`Error::Encode`] / [`Error::Decode`]. None of these affect other calls.
//!
//! # Example
//!
//! ```no_run
//! use grid_core::driver::{Connection, ManagerBuilder, RemoteError};
//! use grid_core::typed::{self, SingleHandler};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add {
//!     #[serde(rename = "A")]
//!     a: i64,
//!     #[serde(rename = "B")]
//!     b: i64,
//! }
//!
//! const ADD: SingleHandler<Add, i64> = SingleHandler::new(30);
//!
//! fn serve(builder: ManagerBuilder) -> Result<ManagerBuilder, grid_core::proto::RegisterError> {
//!     ADD.register(builder, |req: Add| async move {
//!         req.a.checked_add(req.b).ok_or(RemoteError::new("overflow"))
//!     })
//! }
//!
//! async fn add(peer: &Connection) -> Result<i64, typed::Error> {
//!     ADD.call(peer, &Add { a: 2, b: 3 }).await
//! }
//! ```
//!
//! [`ManagerBuilder`]: crate::driver::ManagerBuilder
//! [`Connection`]: crate::driver::Connection
//! [`RemoteError`]: crate::driver::RemoteError

mod payloads;
mod single;
mod stream;

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use payloads::{BytesPayload, Json, Mss, NoPayload, UrlValues};
pub use single::SingleHandler;
pub use stream::{Input, Output, Requests, Responses, Stream, StreamCtx, StreamHandler};

use crate::proto::CallError;

/// A value that travels as a payload: how it is encoded and decoded.
///
/// Implemented for every `T: Serialize + DeserializeOwned` (a msgpack map per struct,
/// see the [module docs](self)), for [`Tuple<T>`] (a msgpack array per struct) and for
/// [`NoPayload`] (zero bytes). Implement it directly for a type that is not a serde type
/// and needs its own bytes.
pub trait Message: Sized {
    /// Encodes the value as a payload.
    fn encode(&self) -> Result<Bytes, CodecError>;

    /// Decodes a payload. Trailing bytes after the value are ignored, as in Go.
    fn decode(payload: &[u8]) -> Result<Self, CodecError>;
}

/// The most a thread's encode buffer keeps between messages. An encoding up to this size
/// is copied out of it into an allocation of its own size; a larger one takes the buffer
/// along, and the thread starts a new one.
const SCRATCH_MAX: usize = 64 << 10;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes with `write` into this thread's encode buffer, which keeps its room between
/// messages, so a message costs one allocation of its exact size. Growing a buffer from
/// empty for each message cost more than the encoding: typed calls at 16 callers on
/// tokio read 144–149 k req/s that way, 195–202 k from a buffer starting at 128 bytes and
/// 204–215 k with this one. A value whose encoding encodes another message (a nested
/// payload) gets a buffer of its own, as does an encoding while the thread ends.
fn encode_into<E: fmt::Display>(
    write: impl Fn(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Bytes, CodecError> {
    let kept = SCRATCH.try_with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        Some(encode_with(&mut buf, &write))
    });
    match kept {
        Ok(Some(out)) => out,
        _ => encode_with(&mut Vec::new(), &write),
    }
}

/// Encodes into `buf`, emptied first, and leaves it with at most [`SCRATCH_MAX`] bytes
/// of room.
fn encode_with<E: fmt::Display>(
    buf: &mut Vec<u8>,
    write: impl Fn(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Bytes, CodecError> {
    buf.clear();
    let out = match write(buf) {
        Ok(()) if buf.len() > SCRATCH_MAX => Ok(Bytes::from(std::mem::take(buf))),
        Ok(()) => Ok(Bytes::copy_from_slice(buf)),
        Err(e) => Err(CodecError::new(e)),
    };
    if buf.capacity() > SCRATCH_MAX {
        *buf = Vec::new();
    }
    out
}

impl<T: Serialize + DeserializeOwned> Message for T {
    fn encode(&self) -> Result<Bytes, CodecError> {
        encode_into(|buf| rmp_serde::encode::write_named(buf, self))
    }

    fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        rmp_serde::from_slice(payload).map_err(CodecError::new)
    }
}

/// Encodes `T` with msgpack **arrays** for structs (a msgp `tuple` type) instead of maps.
///
/// The choice applies to the whole value: structs nested in `T` are arrays too. (A
/// nested type that must differ can pick its own form with serde's `into`/`from`
/// container attributes.) Decoding accepts both forms.
///
/// ```
/// use grid_core::typed::{Message, Tuple};
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Pair {
///     a: u8,
///     b: String,
/// }
///
/// let p = Tuple(Pair { a: 1, b: "x".into() });
/// assert_eq!(&p.encode().unwrap()[..], &[0x92, 0x01, 0xa1, b'x']);
/// assert_eq!(Tuple::<Pair>::decode(&[0x92, 0x01, 0xa1, b'x']).unwrap(), p);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple<T>(pub T);

impl<T> Tuple<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Tuple<T> {
    fn from(v: T) -> Self {
        Tuple(v)
    }
}

impl<T> std::ops::Deref for Tuple<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Tuple<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Serialize + DeserializeOwned> Message for Tuple<T> {
    fn encode(&self) -> Result<Bytes, CodecError> {
        encode_into(|buf| rmp_serde::encode::write(buf, &self.0))
    }

    fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        rmp_serde::from_slice(payload)
            .map(Tuple)
            .map_err(CodecError::new)
    }
}

/// Why a value could not be encoded or decoded (the serde message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(String);

impl CodecError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> CodecError {
        CodecError(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Why a typed call failed, on the calling side.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call itself failed: the link, the deadline, or the handler's
    /// [`CallError::Remote`] error (which includes a decode failure on the peer).
    #[error(transparent)]
    Call(#[from] CallError),
    /// A request, payload or input item could not be encoded; nothing was sent.
    #[error("encode {type_name}: {error}")]
    Encode {
        /// The Rust type that failed to encode.
        type_name: &'static str,
        /// The serde message.
        error: CodecError,
    },
    /// A response or stream item from the peer could not be decoded as the expected
    /// type.
    #[error("decode {type_name}: {error}")]
    Decode {
        /// The Rust type that failed to decode.
        type_name: &'static str,
        /// The serde message.
        error: CodecError,
    },
}

impl Error {
    /// The peer's error text, if the handler (or the peer's typed layer) failed the call.
    pub fn remote(&self) -> Option<&str> {
        match self {
            Error::Call(CallError::Remote(t)) => Some(t),
            _ => None,
        }
    }
}

fn encode<T: Message>(v: &T) -> Result<Bytes, Error> {
    v.encode().map_err(|error| Error::Encode {
        type_name: std::any::type_name::<T>(),
        error,
    })
}

fn decode<T: Message>(payload: &[u8]) -> Result<T, Error> {
    T::decode(payload).map_err(|error| Error::Decode {
        type_name: std::any::type_name::<T>(),
        error,
    })
}

/// The route a handler is registered on: the registration's route, then the
/// definition's (as a call on `conn.subroute(outer)` reaches it).
fn join_route(outer: Option<&str>, inner: Option<&str>) -> Option<String> {
    match (outer, inner) {
        (Some(a), Some(b)) => Some(format!("{a}/{b}")),
        (Some(a), None) | (None, Some(a)) => Some(a.to_owned()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept_room() -> usize {
        SCRATCH.with(|c| c.borrow().capacity())
    }

    #[test]
    fn encodings_match_rmp_and_the_buffer_keeps_at_most_its_bound() {
        let small = ("key".to_owned(), 42u32, true);
        assert_eq!(
            &small.encode().unwrap()[..],
            &rmp_serde::to_vec_named(&small).unwrap()[..]
        );
        let large: Vec<u32> = (0..40_000).collect();
        let enc = large.encode().unwrap();
        assert!(enc.len() > SCRATCH_MAX, "{}", enc.len());
        assert_eq!(&enc[..], &rmp_serde::to_vec_named(&large).unwrap()[..]);
        assert_eq!(Vec::<u32>::decode(&enc).unwrap(), large);
        assert!(kept_room() <= SCRATCH_MAX, "{}", kept_room());
        // The next small message is written into the thread's buffer again.
        let again = small.encode().unwrap();
        assert_eq!(&again[..], &rmp_serde::to_vec_named(&small).unwrap()[..]);
        assert!(kept_room() > 0 && kept_room() <= SCRATCH_MAX);
    }

    #[test]
    fn an_encoding_that_encodes_another_message_gets_a_buffer_of_its_own() {
        let outer = encode_into(|buf| {
            let inner = "inner".to_owned().encode().map_err(|e| e.to_string())?;
            buf.extend_from_slice(b"outer:");
            buf.extend_from_slice(&inner);
            Ok::<(), String>(())
        })
        .unwrap();
        assert_eq!(&outer[..], b"outer:\xa5inner");
    }

    /// Encodes when dropped, and sends the result.
    struct EncodeOnDrop(std::sync::mpsc::Sender<Result<Bytes, CodecError>>);

    impl Drop for EncodeOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(7u8.encode());
        }
    }

    thread_local! {
        static ON_DROP: RefCell<Option<EncodeOnDrop>> = const { RefCell::new(None) };
    }

    #[test]
    fn a_thread_that_is_ending_still_encodes() {
        // Thread-locals are torn down in some order: one of the two finds the buffer gone.
        for buffer_first in [true, false] {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                if buffer_first {
                    1u8.encode().unwrap();
                }
                ON_DROP.with(|d| *d.borrow_mut() = Some(EncodeOnDrop(tx)));
                if !buffer_first {
                    1u8.encode().unwrap();
                }
            })
            .join()
            .expect("the thread ended without a panic");
            assert_eq!(&rx.recv().unwrap().unwrap()[..], &[7]);
        }
    }

    #[test]
    fn a_failed_encoding_leaves_the_buffer_usable() {
        let err = encode_into(|buf| {
            buf.extend_from_slice(b"partial");
            Err("no")
        })
        .unwrap_err();
        assert_eq!(err.message(), "no");
        assert_eq!(&7u8.encode().unwrap()[..], &[7]);
        // One that failed after growing the buffer past its bound does not leave it so.
        let err = encode_into(|buf| {
            buf.resize(SCRATCH_MAX + 1, 0);
            Err("late")
        })
        .unwrap_err();
        assert_eq!(err.message(), "late");
        assert!(kept_room() <= SCRATCH_MAX, "{}", kept_room());
    }
}
