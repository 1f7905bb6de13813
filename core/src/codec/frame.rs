//! One grid frame: the msgpack 7-array, then the optional subroute and CRC trailers.

use std::fmt;
use std::hash::Hasher;

use bytes::{BufMut, Bytes, BytesMut};

use super::msgpack::{self, Reader};
use super::{DecodeError, SubrouteId};

/// A frame's operation (`PROTOCOL.md` §2.1).
///
/// Values this version does not know decode as [`Op::Unknown`]; the session decides what
/// to do with them (it logs and ignores them, as the protocol says).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// The dialer's first message: payload is a connect request.
    Connect,
    /// The acceptor's answer to [`Op::Connect`].
    ConnectResponse,
    /// A connection ping (mux 0) or a stream liveness ping.
    Ping,
    /// The answer to a ping.
    Pong,
    /// Opens a stream.
    ConnectMux,
    /// Rejects a request or a stream open.
    MuxConnectError,
    /// "Drop your outgoing mux with this id."
    DisconnectClientMux,
    /// "Cancel your incoming mux with this id."
    DisconnectServerMux,
    /// A stream item (or EOF) from the mux client.
    MuxClientMsg,
    /// A stream item (or EOF, or error) from the mux server.
    MuxServerMsg,
    /// One more send credit for the mux server.
    UnblockSrvMux,
    /// One more send credit for the mux client.
    UnblockClMux,
    /// The mux server accepted a stream.
    AckMux,
    /// A single request.
    Request,
    /// The answer to a single request.
    Response,
    /// Defined by the protocol but never sent.
    Disconnect,
    /// A container holding several frames.
    Merged,
    /// A value this version does not know.
    Unknown(u8),
}

impl Op {
    /// The wire value.
    pub const fn as_u8(self) -> u8 {
        match self {
            Op::Connect => 1,
            Op::ConnectResponse => 2,
            Op::Ping => 3,
            Op::Pong => 4,
            Op::ConnectMux => 5,
            Op::MuxConnectError => 6,
            Op::DisconnectClientMux => 7,
            Op::DisconnectServerMux => 8,
            Op::MuxClientMsg => 9,
            Op::MuxServerMsg => 10,
            Op::UnblockSrvMux => 11,
            Op::UnblockClMux => 12,
            Op::AckMux => 13,
            Op::Request => 14,
            Op::Response => 15,
            Op::Disconnect => 16,
            Op::Merged => 17,
            Op::Unknown(v) => v,
        }
    }

    /// The op for a wire value.
    pub const fn from_u8(v: u8) -> Op {
        match v {
            1 => Op::Connect,
            2 => Op::ConnectResponse,
            3 => Op::Ping,
            4 => Op::Pong,
            5 => Op::ConnectMux,
            6 => Op::MuxConnectError,
            7 => Op::DisconnectClientMux,
            8 => Op::DisconnectServerMux,
            9 => Op::MuxClientMsg,
            10 => Op::MuxServerMsg,
            11 => Op::UnblockSrvMux,
            12 => Op::UnblockClMux,
            13 => Op::AckMux,
            14 => Op::Request,
            15 => Op::Response,
            16 => Op::Disconnect,
            17 => Op::Merged,
            v => Op::Unknown(v),
        }
    }

    /// The protocol's name without the `Op` prefix (`Ping`, `Request`, ...).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        let s = match self {
            Op::Connect => "Connect",
            Op::ConnectResponse => "ConnectResponse",
            Op::Ping => "Ping",
            Op::Pong => "Pong",
            Op::ConnectMux => "ConnectMux",
            Op::MuxConnectError => "MuxConnectError",
            Op::DisconnectClientMux => "DisconnectClientMux",
            Op::DisconnectServerMux => "DisconnectServerMux",
            Op::MuxClientMsg => "MuxClientMsg",
            Op::MuxServerMsg => "MuxServerMsg",
            Op::UnblockSrvMux => "UnblockSrvMux",
            Op::UnblockClMux => "UnblockClMux",
            Op::AckMux => "AckMux",
            Op::Request => "Request",
            Op::Response => "Response",
            Op::Disconnect => "Disconnect",
            Op::Merged => "Merged",
            Op::Unknown(v) => return format!("Op({v})").into(),
        };
        s.into()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A frame's flag bits (`PROTOCOL.md` §2.2). Unknown bits are kept as they are.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// A 4-byte CRC trailer is present.
    pub const CRC: Flags = Flags(0x01);
    /// End of stream in this direction (also set on requests and responses).
    pub const EOF: Flags = Flags(0x02);
    /// A stateless stream: not supported, rejected by servers.
    pub const STATELESS: Flags = Flags(0x04);
    /// The payload is an error text.
    pub const PAYLOAD_IS_ERR: Flags = Flags(0x08);
    /// The payload is present and empty (as opposed to absent).
    pub const PAYLOAD_IS_ZERO: Flags = Flags(0x10);
    /// A 32-byte subroute trailer is present.
    pub const SUBROUTE: Flags = Flags(0x20);

    const NAMES: [(Flags, &'static str); 6] = [
        (Flags::CRC, "CRC"),
        (Flags::EOF, "EOF"),
        (Flags::STATELESS, "STATELESS"),
        (Flags::PAYLOAD_IS_ERR, "PAYLOAD_IS_ERR"),
        (Flags::PAYLOAD_IS_ZERO, "PAYLOAD_IS_ZERO"),
        (Flags::SUBROUTE, "SUBROUTE"),
    ];

    /// Whether every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` set.
    #[inline]
    #[must_use]
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// `self` with the bits of `other` cleared.
    #[inline]
    #[must_use]
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// `self` with `other` set if `on`, cleared otherwise.
    #[inline]
    #[must_use]
    pub const fn set(self, other: Flags, on: bool) -> Flags {
        if on {
            self.with(other)
        } else {
            self.without(other)
        }
    }

    /// The names of the set bits, `|`-separated (unknown bits as hex).
    pub fn names(self) -> String {
        let mut parts: Vec<String> = Self::NAMES
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| (*n).to_owned())
            .collect();
        let unknown = self.0 & 0xc0;
        if unknown != 0 {
            parts.push(format!("0x{unknown:02x}"));
        }
        parts.join("|")
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.with(rhs)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        *self = self.with(rhs);
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({})", self.names())
    }
}

/// One grid frame as it travels on the wire.
///
/// `payload` holds the raw bytes of the msgpack `bin`; whether an empty payload means
/// "absent" or "present and empty" is carried by [`Flags::PAYLOAD_IS_ZERO`], see
/// [`Frame::payload`]. The subroute trailer is present exactly when `subroute` is
/// `Some`: the encoder sets or clears [`Flags::SUBROUTE`] to match.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The mux the frame belongs to; 0 for connection-level frames.
    pub mux_id: u64,
    /// The per-mux, per-direction sequence number.
    pub seq: u32,
    /// A relative deadline in milliseconds; 0 for none.
    pub deadline_ms: u32,
    /// The handler ID (0 for none).
    pub handler: u8,
    /// The operation.
    pub op: Op,
    /// The flag bits as sent.
    pub flags: Flags,
    /// The payload bytes (a slice of the received message, never a copy).
    pub payload: Bytes,
    /// The 32-byte subroute trailer.
    pub subroute: Option<SubrouteId>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Frame");
        d.field("mux_id", &self.mux_id)
            .field("seq", &self.seq)
            .field("deadline_ms", &self.deadline_ms)
            .field("handler", &self.handler)
            .field("op", &self.op)
            .field("flags", &self.flags)
            .field("payload_len", &self.payload.len());
        if let Some(s) = &self.subroute {
            d.field("subroute", s);
        }
        d.finish()
    }
}

/// The fixed part of every frame: the array header and the op, which are one byte each.
const ARRAY7: u8 = 0x97;
/// Length of the CRC trailer.
pub const CRC_LEN: usize = 4;
/// Length of the subroute trailer.
pub const SUBROUTE_LEN: usize = 32;

impl Frame {
    /// A frame with every field zero and no payload.
    pub fn new(op: Op) -> Frame {
        Frame {
            mux_id: 0,
            seq: 0,
            deadline_ms: 0,
            handler: 0,
            op,
            flags: Flags::NONE,
            payload: Bytes::new(),
            subroute: None,
        }
    }

    /// The payload as the protocol means it: `None` when it is empty and
    /// [`Flags::PAYLOAD_IS_ZERO`] is not set (absent), `Some` otherwise.
    #[inline]
    pub fn payload(&self) -> Option<&Bytes> {
        if self.payload.is_empty() && !self.flags.contains(Flags::PAYLOAD_IS_ZERO) {
            None
        } else {
            Some(&self.payload)
        }
    }

    /// The flags the encoder writes: as given, with the subroute bit matching the trailer.
    #[inline]
    pub fn wire_flags(&self) -> Flags {
        self.flags.set(Flags::SUBROUTE, self.subroute.is_some())
    }

    /// The exact number of bytes [`Frame::encode`] appends.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        let flags = self.wire_flags();
        // array header, handler, op and flags: handler/op/flags may need two bytes each.
        1 + msgpack::uint_len(self.mux_id)
            + msgpack::uint_len(self.seq as u64)
            + msgpack::uint_len(self.deadline_ms as u64)
            + msgpack::uint_len(self.handler as u64)
            + msgpack::uint_len(self.op.as_u8() as u64)
            + msgpack::uint_len(flags.0 as u64)
            + msgpack::bin_header_len(self.payload.len())
            + self.payload.len()
            + if flags.contains(Flags::SUBROUTE) {
                SUBROUTE_LEN
            } else {
                0
            }
            + if flags.contains(Flags::CRC) {
                CRC_LEN
            } else {
                0
            }
    }

    /// Appends the frame to `out`: the 7-array, then the subroute trailer if present, then
    /// the CRC if [`Flags::CRC`] is set.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.room());
        self.encode_reserved(out);
    }

    /// [`Frame::encode`] without reserving room first: for callers that reserved it for
    /// several frames at once, with [`HEAD_ROOM`] to spare (it still grows `out` if they
    /// did not).
    pub(crate) fn encode_reserved(&self, out: &mut BytesMut) {
        let start = self.put_head(out);
        out.extend_from_slice(&self.payload);
        if let Some(s) = &self.subroute {
            out.extend_from_slice(s.as_bytes());
        }
        if self.flags.contains(Flags::CRC) {
            let crc = crc(&out[start..]);
            out.put_u32_le(crc);
        }
    }

    /// [`Frame::encode`], except that a payload of at least `split.min` bytes is not
    /// copied: it goes to `split.take` when `out` holds the bytes before it, and the bytes
    /// after it are appended to `out` then. The CRC covers the payload as always.
    pub fn encode_split(&self, out: &mut BytesMut, split: &mut PayloadSplit<'_>) {
        if self.payload.len() < split.min {
            return self.encode(out);
        }
        out.reserve(HEAD_ROOM + self.trailers_len());
        let start = self.put_head(out);
        let crc = self.flags.contains(Flags::CRC).then(|| {
            let mut h = twox_hash::XxHash3_64::new();
            h.write(&out[start..]);
            h.write(&self.payload);
            h
        });
        (split.take)(out, &self.payload);
        let at = out.len();
        if let Some(s) = &self.subroute {
            out.extend_from_slice(s.as_bytes());
        }
        if let Some(mut h) = crc {
            h.write(&out[at..]);
            out.put_u32_le(h.finish() as u32);
        }
    }

    /// Appends the 7-array up to the payload's bin header included and returns where it
    /// starts. It is written in place in `HEAD_ROOM` zeroed bytes, the rest cut off after:
    /// one capacity check instead of one per field, and no copy from a buffer on the
    /// stack, whose byte-wise stores a wide load of the copy would have to wait for.
    #[inline]
    fn put_head(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; HEAD_ROOM]);
        let head: &mut [u8; HEAD_ROOM] = (&mut out[start..]).try_into().expect("head room");
        head[0] = ARRAY7;
        let mut n = 1;
        put_uint_at(head, &mut n, self.mux_id);
        put_uint_at(head, &mut n, self.seq as u64);
        put_uint_at(head, &mut n, self.deadline_ms as u64);
        put_uint_at(head, &mut n, self.handler as u64);
        put_uint_at(head, &mut n, self.op.as_u8() as u64);
        put_uint_at(head, &mut n, self.wire_flags().0 as u64);
        let mut rest = &mut head[n..];
        let before = rest.len();
        msgpack::put_bin_header(&mut rest, self.payload.len());
        n += before - rest.len();
        out.truncate(start + n);
        start
    }

    /// Bytes of the subroute and CRC trailers.
    #[inline]
    fn trailers_len(&self) -> usize {
        let flags = self.wire_flags();
        (if flags.contains(Flags::SUBROUTE) {
            SUBROUTE_LEN
        } else {
            0
        }) + if flags.contains(Flags::CRC) {
            CRC_LEN
        } else {
            0
        }
    }

    /// The room [`Frame::encode`] reserves: the frame's bytes, with its head counted as
    /// the [`HEAD_ROOM`] it is written in.
    #[inline]
    pub(crate) fn room(&self) -> usize {
        HEAD_ROOM + self.payload.len() + self.trailers_len()
    }

    /// Encodes the frame into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.room());
        self.encode(&mut out);
        out.freeze()
    }
}

/// Payloads an encoder hands over instead of copying them ([`Frame::encode_split`]):
/// those of at least `min` bytes go to `take`, with the output holding the bytes that
/// come before them (which `take` may move elsewhere first).
pub struct PayloadSplit<'a> {
    /// The smallest payload handed over.
    pub min: usize,
    /// Called with the output so far and each payload handed over.
    pub take: &'a mut dyn FnMut(&mut BytesMut, &Bytes),
}

/// Room for the longest head a frame writes before its payload: the array header, six
/// integers (1 + 9 + 5 + 5 + 2 + 2 + 2 bytes at most) and a bin header (5 at most).
pub(crate) const HEAD_ROOM: usize = 32;

/// Writes `v` at `buf[*n..]` in the smallest unsigned msgpack form (as
/// [`msgpack::put_uint`] does) and moves `*n` past it.
#[inline(always)]
fn put_uint_at(buf: &mut [u8; HEAD_ROOM], n: &mut usize, v: u64) {
    let i = *n;
    if v < 128 {
        buf[i] = v as u8;
        *n = i + 1;
    } else if v <= 0xff {
        buf[i] = msgpack::UINT8;
        buf[i + 1] = v as u8;
        *n = i + 2;
    } else if v <= 0xffff {
        buf[i] = msgpack::UINT16;
        buf[i + 1..i + 3].copy_from_slice(&(v as u16).to_be_bytes());
        *n = i + 3;
    } else if v <= 0xffff_ffff {
        buf[i] = msgpack::UINT32;
        buf[i + 1..i + 5].copy_from_slice(&(v as u32).to_be_bytes());
        *n = i + 5;
    } else {
        buf[i] = msgpack::UINT64;
        buf[i + 1..i + 9].copy_from_slice(&v.to_be_bytes());
        *n = i + 9;
    }
}

/// The CRC the protocol uses: the low 32 bits of XXH3-64 (seed 0) over `bytes`.
#[inline]
pub fn crc(bytes: &[u8]) -> u32 {
    twox_hash::XxHash3_64::oneshot(bytes) as u32
}

/// The parsed header of a frame: the fields, and where its trailing bytes lie.
pub(crate) struct Parsed {
    pub(crate) frame: Frame,
    /// The bytes between the end of the array and the trailers (OpMerged's inner frames),
    /// relative to the frame's start.
    pub(crate) rest: std::ops::Range<usize>,
}

/// The 7-array's fields, with the payload as a range of the frame's bytes.
struct Header {
    mux_id: u64,
    seq: u32,
    deadline_ms: u32,
    handler: u8,
    op: u8,
    flags: u8,
    payload: std::ops::Range<usize>,
}

/// An unsigned integer in one of the forms a conforming encoder writes (positive fixint,
/// uint 8/16/32/64), or `None` for anything else.
#[inline(always)]
fn fast_uint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let p = *pos;
    let b = *buf.get(p)?;
    if b < 0x80 {
        *pos = p + 1;
        return Some(b as u64);
    }
    let (len, v) = match b {
        msgpack::UINT8 => (1, *buf.get(p + 1)? as u64),
        msgpack::UINT16 => (
            2,
            u16::from_be_bytes(buf.get(p + 1..p + 3)?.try_into().ok()?) as u64,
        ),
        msgpack::UINT32 => (
            4,
            u32::from_be_bytes(buf.get(p + 1..p + 5)?.try_into().ok()?) as u64,
        ),
        msgpack::UINT64 => (
            8,
            u64::from_be_bytes(buf.get(p + 1..p + 9)?.try_into().ok()?),
        ),
        _ => return None,
    };
    *pos = p + 1 + len;
    Some(v)
}

/// The header as every conforming encoder writes it, read without building errors:
/// `None` for anything else (other integer forms, out-of-range values, truncation), in
/// which case [`header_checked`] reads it again and says exactly what is wrong. Both
/// accept the same inputs with the same results wherever this one answers.
#[inline]
fn header_fast(buf: &[u8]) -> Option<Header> {
    if *buf.first()? != ARRAY7 {
        return None;
    }
    let mut pos = 1;
    let mux_id = fast_uint(buf, &mut pos)?;
    let seq = u32::try_from(fast_uint(buf, &mut pos)?).ok()?;
    let deadline_ms = u32::try_from(fast_uint(buf, &mut pos)?).ok()?;
    let handler = u8::try_from(fast_uint(buf, &mut pos)?).ok()?;
    let op = u8::try_from(fast_uint(buf, &mut pos)?).ok()?;
    let flags = u8::try_from(fast_uint(buf, &mut pos)?).ok()?;
    let (len, header) = match *buf.get(pos)? {
        msgpack::BIN8 => (*buf.get(pos + 1)? as usize, 2),
        msgpack::BIN16 => (
            u16::from_be_bytes(buf.get(pos + 1..pos + 3)?.try_into().ok()?) as usize,
            3,
        ),
        msgpack::BIN32 => (
            u32::from_be_bytes(buf.get(pos + 1..pos + 5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    let start = pos + header;
    let end = start.checked_add(len)?;
    if end > buf.len() {
        return None;
    }
    Some(Header {
        mux_id,
        seq,
        deadline_ms,
        handler,
        op,
        flags,
        payload: start..end,
    })
}

/// The header read field by field, with an exact error for whatever is wrong.
#[cold]
fn header_checked(buf: &[u8], base: usize) -> Result<Header, DecodeError> {
    let at = |e: DecodeError| e.shifted(base);
    let mut r = Reader::new(buf);
    let len = r.read_array_len("frame array").map_err(at)?;
    if len != 7 {
        return Err(DecodeError::ArrayLength { at: base, len });
    }
    let mux_id = r.read_uint("MuxID").map_err(at)?;
    let seq = r.read_uint_max("Seq", u32::MAX as u64).map_err(at)? as u32;
    let deadline_ms = r.read_uint_max("DeadlineMS", u32::MAX as u64).map_err(at)? as u32;
    let handler = r.read_uint_max("Handler", 255).map_err(at)? as u8;
    let op = r.read_uint_max("Op", 255).map_err(at)? as u8;
    let flags = r.read_uint_max("Flags", 255).map_err(at)? as u8;
    let payload = r.read_bin_range("Payload").map_err(at)?;
    Ok(Header {
        mux_id,
        seq,
        deadline_ms,
        handler,
        op,
        flags,
        payload,
    })
}

/// Parses one frame that fills `msg[range]` exactly (its trailers are at its end); the
/// payload is a slice of `msg`.
///
/// `base` is the offset of the frame within the whole message, for error positions.
/// Inlined, so that the frame is built where its caller keeps it.
#[inline]
pub(crate) fn parse(
    msg: &Bytes,
    range: std::ops::Range<usize>,
    base: usize,
) -> Result<Parsed, DecodeError> {
    let buf = &msg[range.clone()];
    let h = match header_fast(buf) {
        Some(h) => h,
        None => header_checked(buf, base)?,
    };
    let (mux_id, seq, deadline_ms, handler) = (h.mux_id, h.seq, h.deadline_ms, h.handler);
    let op = Op::from_u8(h.op);
    let flags = Flags(h.flags);
    let payload = h.payload;
    let array_end = payload.end;

    let mut end = buf.len();
    if flags.contains(Flags::CRC) {
        if end - array_end < CRC_LEN {
            return Err(DecodeError::MissingTrailer {
                trailer: "crc",
                at: base + array_end,
                want: CRC_LEN,
                have: end - array_end,
            });
        }
        end -= CRC_LEN;
        let given = u32::from_le_bytes(buf[end..end + CRC_LEN].try_into().expect("4 bytes"));
        let computed = crc(&buf[..end]);
        if given != computed {
            return Err(DecodeError::CrcMismatch {
                at: base + end,
                given,
                computed,
            });
        }
    }
    let subroute = if flags.contains(Flags::SUBROUTE) {
        if end - array_end < SUBROUTE_LEN {
            return Err(DecodeError::MissingTrailer {
                trailer: "subroute",
                at: base + array_end,
                want: SUBROUTE_LEN,
                have: end - array_end,
            });
        }
        end -= SUBROUTE_LEN;
        let mut id = [0u8; SUBROUTE_LEN];
        id.copy_from_slice(&buf[end..end + SUBROUTE_LEN]);
        Some(SubrouteId::from_bytes(id))
    } else {
        None
    };
    // Only a merged container carries bytes between its array and its trailers. A
    // conforming peer never leaves any elsewhere; rejecting them means a flipped op or
    // flags byte is caught instead of being read as a different, valid frame.
    if op != Op::Merged && end != array_end {
        return Err(DecodeError::TrailingBytes {
            at: base + array_end,
            count: end - array_end,
        });
    }
    Ok(Parsed {
        frame: Frame {
            mux_id,
            seq,
            deadline_ms,
            handler,
            op,
            flags,
            payload: msg.slice(range.start + payload.start..range.start + payload.end),
            subroute,
        },
        rest: array_end..end,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Both header readers on `buf`: wherever the fast one answers, the checked one
    /// accepts with the same fields.
    fn agree(buf: &[u8]) {
        if let Some(f) = header_fast(buf) {
            let c = header_checked(buf, 0).expect("checked reader rejects a fast header");
            assert_eq!(
                (
                    f.mux_id,
                    f.seq,
                    f.deadline_ms,
                    f.handler,
                    f.op,
                    f.flags,
                    f.payload
                ),
                (
                    c.mux_id,
                    c.seq,
                    c.deadline_ms,
                    c.handler,
                    c.op,
                    c.flags,
                    c.payload
                )
            );
        }
    }

    fn frame(mux_id: u64, seq: u32, deadline_ms: u32, payload_len: usize) -> Frame {
        let mut f = Frame::new(Op::MuxServerMsg);
        f.mux_id = mux_id;
        f.seq = seq;
        f.deadline_ms = deadline_ms;
        f.handler = 200;
        f.flags = Flags::CRC;
        f.payload = vec![7u8; payload_len].into();
        f
    }

    #[test]
    fn the_fast_header_reader_takes_every_width_an_encoder_writes() {
        for (mux_id, seq, payload) in [
            (0, 0, 0),
            (127, 128, 255),
            (255, 256, 256),
            (65_535, 65_536, 65_535),
            (1 << 32, u32::MAX, 65_536),
            (u64::MAX, 1, 1),
        ] {
            let wire = frame(mux_id, seq, seq, payload).to_bytes();
            assert!(header_fast(&wire).is_some(), "{mux_id} {seq} {payload}");
            agree(&wire);
        }
    }

    proptest! {
        #[test]
        fn the_header_readers_agree_on_mangled_frames(
            mux_id in any::<u64>(),
            seq in any::<u32>(),
            len in 0usize..300,
            flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..4),
            cut in 0usize..400,
        ) {
            let mut wire = frame(mux_id, seq, 0, len).to_bytes().to_vec();
            for (at, byte) in flips {
                let at = at % wire.len();
                wire[at] = byte;
            }
            agree(&wire);
            agree(&wire[..cut.min(wire.len())]);
        }

        #[test]
        fn the_header_readers_agree_on_any_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            agree(&bytes);
            let mut framed = vec![ARRAY7];
            framed.extend_from_slice(&bytes);
            agree(&framed);
        }
    }
}
