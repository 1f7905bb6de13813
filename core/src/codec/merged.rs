//! `OpMerged`: several frames in one WebSocket message (`PROTOCOL.md` §1.5).

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;
use super::frame::{self, Frame, Op, PayloadSplit};
use super::msgpack::{self, Reader};

/// The container header for `count` inner frames: an ordinary 7-array with op 17, seq =
/// count, every other field zero and an empty payload.
fn put_header(out: &mut BytesMut, count: u32) {
    out.put_u8(0x97);
    out.put_u8(0); // MuxID
    msgpack::put_uint(out, count as u64);
    out.put_slice(&[0, 0, Op::Merged.as_u8(), 0, msgpack::BIN8, 0]);
}

/// Bytes [`encode_merged`] appends for `frames`.
pub fn merged_len<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> usize {
    let mut count = 0u64;
    let mut len = 0;
    for f in frames {
        count += 1;
        let n = f.encoded_len();
        len += msgpack::bin_header_len(n) + n;
    }
    8 + msgpack::uint_len(count) + len
}

/// Appends one `OpMerged` container holding `frames`, each encoded exactly as it would
/// be sent alone (with its own subroute and CRC trailers).
pub fn encode_merged<'a, I>(frames: I, out: &mut BytesMut)
where
    I: IntoIterator<Item = &'a Frame>,
    I::IntoIter: ExactSizeIterator + Clone,
{
    let frames = frames.into_iter();
    out.reserve(merged_len(frames.clone()) + frame::HEAD_ROOM);
    put_merged(frames, out, |f, out| f.encode_reserved(out));
}

/// The `OpMerged` container's header, then each frame behind its bin header, its bytes
/// appended by `encode`.
fn put_merged<'a>(
    frames: impl ExactSizeIterator<Item = &'a Frame>,
    out: &mut BytesMut,
    mut encode: impl FnMut(&Frame, &mut BytesMut),
) {
    let count = u32::try_from(frames.len()).expect("merged container of over 4G frames");
    put_header(out, count);
    for f in frames {
        debug_assert!(f.op != Op::Merged, "merged containers never nest");
        msgpack::put_bin_header(out, f.encoded_len());
        encode(f, out);
    }
}

/// Appends one WebSocket message carrying `frames`: the frame itself when there is one,
/// an `OpMerged` container when there are several (nothing when there are none).
///
/// ```
/// use bytes::BytesMut;
/// use grid_core::codec::{self, Frame, Op};
///
/// let frames = [Frame::new(Op::Ping), Frame::new(Op::Pong)];
/// let mut one = BytesMut::new();
/// codec::encode_message(&frames[..1], &mut one);
/// assert_eq!(one, frames[0].to_bytes());
/// let mut both = BytesMut::new();
/// codec::encode_message(&frames, &mut both);
/// assert_eq!(both.len(), codec::merged_len(&frames));
/// ```
pub fn encode_message(frames: &[Frame], out: &mut BytesMut) {
    match frames {
        [] => {}
        [f] => f.encode(out),
        many => encode_merged(many, out),
    }
}

/// [`encode_message`], with the payloads of at least `split.min` bytes handed to
/// `split.take` instead of copied ([`Frame::encode_split`]): the message is what `take`
/// moved out of `out` and the payloads, in the order they were handed over, followed
/// by what is left in `out`.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use grid_core::codec::{self, Frame, Op, PayloadSplit};
///
/// let mut f = Frame::new(Op::Response);
/// f.payload = Bytes::from(vec![7; 1000]);
/// let frames = [f.clone(), f];
/// let mut parts: Vec<Bytes> = Vec::new();
/// let mut out = BytesMut::new();
/// let mut take = |out: &mut BytesMut, payload: &Bytes| {
///     parts.push(out.split().freeze());
///     parts.push(payload.clone());
/// };
/// codec::encode_message_split(&frames, &mut out, &mut PayloadSplit { min: 512, take: &mut take });
/// parts.push(out.freeze());
/// let mut whole = BytesMut::new();
/// codec::encode_message(&frames, &mut whole);
/// assert_eq!(parts.concat(), whole);
/// ```
pub fn encode_message_split(frames: &[Frame], out: &mut BytesMut, split: &mut PayloadSplit<'_>) {
    match frames {
        [] => {}
        [f] => f.encode_split(out, split),
        many => put_merged(many.iter(), out, |f, out| f.encode_split(out, split)),
    }
}

/// Bytes of an `OpMerged` container whose inner frames encode to `lens` bytes each.
pub(crate) fn merged_len_sized(lens: &[usize]) -> usize {
    let body: usize = lens.iter().map(|n| msgpack::bin_header_len(*n) + n).sum();
    8 + msgpack::uint_len(lens.len() as u64) + body
}

/// [`encode_merged`] for frames whose [`Frame::encoded_len`] the caller has computed
/// already (`lens[i]` for the `i`th frame).
pub(crate) fn encode_merged_sized<'a, I>(frames: I, lens: &[usize], out: &mut BytesMut)
where
    I: ExactSizeIterator<Item = &'a Frame>,
{
    debug_assert_eq!(frames.len(), lens.len());
    let count = u32::try_from(lens.len()).expect("merged container of over 4G frames");
    out.reserve(merged_len_sized(lens) + frame::HEAD_ROOM);
    put_header(out, count);
    for (f, len) in frames.zip(lens) {
        debug_assert!(f.op != Op::Merged, "merged containers never nest");
        debug_assert_eq!(f.encoded_len(), *len);
        msgpack::put_bin_header(out, *len);
        f.encode_reserved(out);
    }
}

/// The inner frames of a received `OpMerged` container, decoded lazily in order.
///
/// Yields each frame or the first error; after an error it yields nothing more. When
/// the declared count has been read, any bytes left over are an error
/// ([`DecodeError::MergedCount`]), as is running out of bytes before the count.
#[derive(Debug, Clone)]
pub struct MergedFrames {
    /// The container's header frame (op [`Op::Merged`], seq = count).
    header: Frame,
    body: Bytes,
    /// Offset of `body` in the whole message, for error positions.
    base: usize,
    pos: usize,
    remaining: u32,
    failed: bool,
}

impl MergedFrames {
    pub(crate) fn new(header: Frame, body: Bytes, base: usize) -> Self {
        let remaining = header.seq;
        MergedFrames {
            header,
            body,
            base,
            pos: 0,
            remaining,
            failed: false,
        }
    }

    /// The container's header frame.
    pub fn header(&self) -> &Frame {
        &self.header
    }

    /// The number of inner frames the header declares.
    pub fn declared(&self) -> u32 {
        self.header.seq
    }

    fn next_frame(&mut self) -> Option<Result<Frame, DecodeError>> {
        if self.remaining == 0 {
            if self.pos != self.body.len() {
                return Some(Err(DecodeError::MergedCount {
                    at: self.base + self.pos,
                    declared: self.header.seq,
                    found: self.header.seq,
                    extra_bytes: self.body.len() - self.pos,
                }));
            }
            return None;
        }
        if self.pos == self.body.len() {
            return Some(Err(DecodeError::MergedCount {
                at: self.base + self.pos,
                declared: self.header.seq,
                found: self.header.seq - self.remaining,
                extra_bytes: 0,
            }));
        }
        let mut r = Reader::new(&self.body[self.pos..]);
        let range = match r.read_bin_range("merged inner frame") {
            Ok(range) => range,
            Err(e) => return Some(Err(e.shifted(self.base + self.pos))),
        };
        let inner_base = self.base + self.pos + range.start;
        let inner = self.pos + range.start..self.pos + range.end;
        self.pos += range.end;
        self.remaining -= 1;
        // Parsed in place: the payload is sliced from the body, with no slice of the
        // inner frame in between.
        Some(match frame::parse(&self.body, inner, inner_base) {
            Ok(p) if p.frame.op == Op::Merged => Err(DecodeError::NestedMerged { at: inner_base }),
            Ok(p) => Ok(p.frame),
            Err(e) => Err(e),
        })
    }
}

impl Iterator for MergedFrames {
    type Item = Result<Frame, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_frame();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{Flags, SubrouteId};

    fn frame(payload_len: usize, crc: bool, subroute: bool) -> Frame {
        let mut f = Frame::new(Op::MuxServerMsg);
        f.mux_id = 300;
        f.seq = 70_000;
        f.handler = 9;
        f.flags = if crc { Flags::CRC } else { Flags::default() };
        f.payload = (0..payload_len).map(|i| i as u8).collect::<Vec<_>>().into();
        f.subroute = subroute.then(|| SubrouteId::new(9, "a/b"));
        f
    }

    proptest! {
        /// A message encoded with its large payloads handed over is, put back together
        /// in order, the same bytes as the message encoded whole (CRCs included), and
        /// the payloads handed over are the frames' own buffers, not copies.
        #[test]
        fn split_messages_put_together_are_the_whole_message(
            shapes in proptest::collection::vec((0usize..3000, any::<bool>(), any::<bool>()), 1..5),
            min in prop_oneof![Just(0usize), 1usize..3000, Just(usize::MAX)],
        ) {
            let frames: Vec<Frame> =
                shapes.iter().map(|&(n, crc, sub)| frame(n, crc, sub)).collect();
            let mut whole = BytesMut::new();
            encode_message(&frames, &mut whole);

            let mut parts: Vec<Bytes> = Vec::new();
            let mut handed: Vec<*const u8> = Vec::new();
            let mut out = BytesMut::new();
            let mut take = |before: &mut BytesMut, payload: &Bytes| {
                parts.push(before.split().freeze());
                parts.push(payload.clone());
                handed.push(payload.as_ptr());
            };
            encode_message_split(&frames, &mut out, &mut PayloadSplit { min, take: &mut take });
            parts.push(out.freeze());
            prop_assert_eq!(parts.concat(), whole.to_vec());

            let large: Vec<*const u8> = frames
                .iter()
                .filter(|f| f.payload.len() >= min)
                .map(|f| f.payload.as_ptr())
                .collect();
            prop_assert_eq!(handed, large);
        }

        /// A frame's head is written in place, in room reserved for the longest head;
        /// the encoders reserve that room on top of the frames' bytes, so a buffer grows
        /// once, before the first frame, and never moves while a message is written
        /// (which would copy everything written so far). Whatever the header's integers
        /// are, the message decodes to the frames it was written from.
        #[test]
        fn encoders_grow_a_buffer_once(
            heads in proptest::collection::vec(
                (any::<u64>(), any::<u32>(), any::<u32>(), any::<u8>(), prop_oneof![Just(0usize), 0usize..300], any::<bool>()),
                1..6,
            ),
        ) {
            let frames: Vec<Frame> = heads
                .iter()
                .map(|&(mux_id, seq, deadline_ms, handler, len, crc)| {
                    let mut f = frame(len, crc, false);
                    (f.mux_id, f.seq, f.deadline_ms, f.handler) = (mux_id, seq, deadline_ms, handler);
                    f
                })
                .collect();
            let once = |room: usize| {
                let mut b = BytesMut::new();
                b.reserve(room);
                b.capacity()
            };

            let mut out = BytesMut::new();
            encode_merged(&frames, &mut out);
            prop_assert_eq!(out.len(), merged_len(&frames));
            prop_assert_eq!(out.capacity(), once(merged_len(&frames) + frame::HEAD_ROOM));

            let lens: Vec<usize> = frames.iter().map(Frame::encoded_len).collect();
            let mut sized = BytesMut::new();
            encode_merged_sized(frames.iter(), &lens, &mut sized);
            prop_assert_eq!(&sized, &out);
            prop_assert_eq!(sized.capacity(), out.capacity());

            for f in &frames {
                let mut one = BytesMut::new();
                f.encode(&mut one);
                prop_assert_eq!(one.len(), f.encoded_len());
                prop_assert_eq!(one.capacity(), once(f.room()));
                prop_assert_eq!(one.freeze(), f.to_bytes());
            }
            let decoded = crate::codec::decode(&out.freeze(), usize::MAX)
                .and_then(crate::codec::Message::into_frames)
                .expect("decodes");
            prop_assert_eq!(decoded, frames);
        }
    }
}
