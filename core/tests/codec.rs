//! Integration tests of the wire codec against `PROTOCOL.md` §1, §2 and §12.
//!
//! The worked examples are checked byte for byte; the rest are properties over random
//! frames (checked against an independent reference encoder written from the spec),
//! hand-built non-canonical or malformed messages, and the nil-vs-empty rule.

use bytes::{Bytes, BytesMut};
use grid_core::codec::{
    self, DEFAULT_MAX_FRAME_SIZE, DecodeError, Flags, Frame, Message, Op, SubrouteId,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Decodes a message and collects all of its frames (one, or a container's inner ones).
fn decode_all(wire: &Bytes) -> Result<Vec<Frame>, DecodeError> {
    codec::decode(wire, DEFAULT_MAX_FRAME_SIZE)?.into_frames()
}

/// Decodes a message that must be a single frame.
fn decode_one(wire: &[u8]) -> Result<Frame, DecodeError> {
    match codec::decode(&Bytes::copy_from_slice(wire), DEFAULT_MAX_FRAME_SIZE)? {
        Message::Frame(f) => Ok(f),
        Message::Merged(m) => panic!("expected a single frame, got a container {m:?}"),
    }
}

/// The smallest msgpack unsigned form of `v`, written from the spec (§1.1).
fn ref_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// The smallest msgpack `bin` of `data`.
fn ref_bin(out: &mut Vec<u8>, data: &[u8]) {
    let n = data.len();
    if n <= 0xff {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
}

/// Appends the CRC trailer (low 32 bits of XXH3-64 over everything so far, little-endian).
fn ref_crc(out: &mut Vec<u8>) {
    let crc = xxhash_rust::xxh3::xxh3_64(out) as u32;
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The codec's CRC is XXH3-64 as a second implementation computes it, at every length
/// up to a few kilobytes (each of XXH3's size classes and the block edges of its long
/// loop) and at large sizes, on bytes that are not all alike.
#[test]
fn crc_agrees_with_an_independent_xxh3_at_every_size_class() {
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sizes = (0..=4200).chain([16_383, 16_384, 65_535, 65_536, 65_566, 131_072, 200_000]);
    for n in sizes {
        let want = xxhash_rust::xxh3::xxh3_64(&data[..n]) as u32;
        assert_eq!(grid_core::codec::crc(&data[..n]), want, "length {n}");
    }
}

/// An independent encoder written from §1.1–§1.2, to check the codec's bytes against.
fn ref_encode(f: &Frame) -> Vec<u8> {
    let mut out = vec![0x97];
    ref_uint(&mut out, f.mux_id);
    ref_uint(&mut out, f.seq.into());
    ref_uint(&mut out, f.deadline_ms.into());
    ref_uint(&mut out, f.handler.into());
    ref_uint(&mut out, f.op.as_u8().into());
    ref_uint(&mut out, f.flags.0.into());
    ref_bin(&mut out, &f.payload);
    if let Some(s) = &f.subroute {
        out.extend_from_slice(s.as_bytes());
    }
    if f.flags.contains(Flags::CRC) {
        ref_crc(&mut out);
    }
    out
}

/// Encodes a container with the codec and checks `merged_len` against the bytes written.
fn merged_bytes(frames: &[Frame]) -> Bytes {
    let mut buf = BytesMut::new();
    codec::encode_merged(frames, &mut buf);
    assert_eq!(buf.len(), codec::merged_len(frames));
    buf.freeze()
}

/// A frame header written by hand: `array_header`, then the six integer fields as given
/// (already msgpack-encoded), then `payload` (already msgpack-encoded).
fn raw_frame(array_header: &[u8], ints: [&[u8]; 6], payload: &[u8]) -> Vec<u8> {
    let mut out = array_header.to_vec();
    for i in ints {
        out.extend_from_slice(i);
    }
    out.extend_from_slice(payload);
    out
}

/// Deterministic filler bytes (xorshift), cheaper than a proptest `vec` for big payloads.
fn filled(n: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

// ---------------------------------------------------------------------------------------
// §12 worked examples
// ---------------------------------------------------------------------------------------

const HELLO: &[u8] = b"Hello Grid World!";

const REQUEST_WIRE: [u8; 32] = [
    0x97, 0x01, 0x00, 0xcd, 0xea, 0x60, 0x4e, 0x0e, 0x03, 0xc4, 0x11, 0x48, 0x65, 0x6c, 0x6c, 0x6f,
    0x20, 0x47, 0x72, 0x69, 0x64, 0x20, 0x57, 0x6f, 0x72, 0x6c, 0x64, 0x21, 0xd8, 0xa2, 0x7d, 0xa3,
];

const RESPONSE_WIRE: [u8; 30] = [
    0x97, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x03, 0xc4, 0x11, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x47,
    0x72, 0x69, 0x64, 0x20, 0x57, 0x6f, 0x72, 0x6c, 0x64, 0x21, 0x20, 0x55, 0x6b, 0xac,
];

fn example_request() -> Frame {
    let mut f = Frame::new(Op::Request);
    f.mux_id = 1;
    f.seq = 0;
    f.deadline_ms = 60_000;
    f.handler = 78;
    f.flags = Flags::CRC | Flags::EOF;
    f.payload = Bytes::from_static(HELLO);
    f
}

fn example_response() -> Frame {
    let mut f = Frame::new(Op::Response);
    f.mux_id = 1;
    f.flags = Flags::CRC | Flags::EOF;
    f.payload = Bytes::from_static(HELLO);
    f
}

#[test]
fn worked_example_request_encodes_byte_for_byte() {
    let f = example_request();
    assert_eq!(&f.to_bytes()[..], &REQUEST_WIRE[..]);
    assert_eq!(f.encoded_len(), REQUEST_WIRE.len());
    assert_eq!(ref_encode(&f), REQUEST_WIRE);
    // The CRC is the low 32 bits of XXH3-64 of the 28 bytes before it, little-endian.
    assert_eq!(
        codec::crc(&REQUEST_WIRE[..28]).to_le_bytes(),
        REQUEST_WIRE[28..]
    );
}

#[test]
fn worked_example_request_decodes_to_its_fields() {
    let f = decode_one(&REQUEST_WIRE).unwrap();
    assert_eq!(f.mux_id, 1);
    assert_eq!(f.seq, 0);
    assert_eq!(f.deadline_ms, 60_000);
    assert_eq!(f.handler, 78);
    assert_eq!(f.op, Op::Request);
    assert_eq!(f.flags, Flags::CRC | Flags::EOF);
    assert_eq!(f.flags.0, 0x03);
    assert_eq!(&f.payload[..], HELLO);
    assert_eq!(f.subroute, None);
    assert_eq!(f, example_request());
}

#[test]
fn worked_example_response_encodes_and_decodes() {
    let f = example_response();
    assert_eq!(&f.to_bytes()[..], &RESPONSE_WIRE[..]);
    assert_eq!(f.encoded_len(), RESPONSE_WIRE.len());
    let d = decode_one(&RESPONSE_WIRE).unwrap();
    assert_eq!(
        (d.mux_id, d.seq, d.deadline_ms, d.handler, d.op, d.flags.0),
        (1, 0, 0, 0, Op::Response, 0x03)
    );
    assert_eq!(&d.payload[..], HELLO);
    assert_eq!(d, f);
}

#[test]
fn worked_examples_travel_in_a_container() {
    let frames = [example_request(), example_response()];
    let wire = merged_bytes(&frames);
    let mut want = vec![0x97, 0x00, 0x02, 0x00, 0x00, 0x11, 0x00, 0xc4, 0x00];
    want.extend_from_slice(&[0xc4, 32]);
    want.extend_from_slice(&REQUEST_WIRE);
    want.extend_from_slice(&[0xc4, 30]);
    want.extend_from_slice(&RESPONSE_WIRE);
    assert_eq!(&wire[..], &want[..]);
    match codec::decode(&wire, DEFAULT_MAX_FRAME_SIZE).unwrap() {
        Message::Merged(m) => {
            assert_eq!(m.declared(), 2);
            assert_eq!(m.header().op, Op::Merged);
            assert_eq!(m.header().flags, Flags::NONE);
            assert_eq!(m.collect::<Result<Vec<_>, _>>().unwrap(), frames);
        }
        Message::Frame(f) => panic!("expected a container, got {f:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Unsigned values up to `max` (a power of two minus one), weighted towards the msgpack
/// form boundaries and spread over every magnitude.
fn arb_uint(max: u64) -> impl Strategy<Value = u64> {
    let edges: Vec<u64> = [
        0,
        1,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        u32::MAX as u64,
        1 << 32,
        u64::MAX,
    ]
    .into_iter()
    .filter(|v| *v <= max)
    .collect();
    prop_oneof![
        proptest::sample::select(edges),
        (any::<u64>(), 0u32..64).prop_map(move |(v, shift)| (v >> shift) & max),
    ]
}

/// Every op value except 17 (a container is not a single frame).
fn arb_single_op() -> impl Strategy<Value = Op> {
    any::<u8>()
        .prop_filter("op 17 is a container", |v| *v != 17)
        .prop_map(Op::from_u8)
}

/// Small payloads: the bin8/bin16 boundary and random contents up to 300 bytes.
fn arb_small_payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        vec(any::<u8>(), 0..=300).prop_map(Bytes::from),
        (
            prop_oneof![Just(0usize), Just(1), Just(255), Just(256)],
            any::<u64>()
        )
            .prop_map(|(n, seed)| filled(n, seed)),
    ]
}

/// Payloads at the bin16/bin32 boundary.
fn arb_large_payload() -> impl Strategy<Value = Bytes> {
    (
        prop_oneof![
            Just(65_535usize),
            Just(65_536),
            Just(65_537),
            60_000usize..70_000
        ],
        any::<u64>(),
    )
        .prop_map(|(n, seed)| filled(n, seed))
}

/// A frame with every field over its full range; the subroute trailer is present exactly
/// when the (random) flag byte has the subroute bit, as on the wire.
fn arb_frame_with(
    op: impl Strategy<Value = Op>,
    payload: impl Strategy<Value = Bytes>,
) -> impl Strategy<Value = Frame> {
    (
        arb_uint(u64::MAX),
        arb_uint(u32::MAX as u64),
        arb_uint(u32::MAX as u64),
        arb_uint(255),
        op,
        any::<u8>(),
        any::<[u8; 32]>(),
        payload,
    )
        .prop_map(
            |(mux_id, seq, deadline, handler, op, flags, sub, payload)| {
                let flags = Flags(flags);
                Frame {
                    mux_id,
                    seq: seq as u32,
                    deadline_ms: deadline as u32,
                    handler: handler as u8,
                    op,
                    flags,
                    payload,
                    subroute: flags
                        .contains(Flags::SUBROUTE)
                        .then(|| SubrouteId::from_bytes(sub)),
                }
            },
        )
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    arb_frame_with(arb_single_op(), arb_small_payload())
}

/// A frame that carries a CRC trailer.
fn arb_crc_frame(max_payload: usize) -> impl Strategy<Value = Frame> {
    arb_frame_with(
        arb_single_op(),
        vec(any::<u8>(), 0..=max_payload).prop_map(Bytes::from),
    )
    .prop_map(|mut f| {
        f.flags |= Flags::CRC;
        f
    })
}

/// The round-trip checks shared by the small- and large-payload properties.
fn check_roundtrip(f: &Frame) -> Result<(), TestCaseError> {
    let wire = f.to_bytes();
    prop_assert_eq!(wire.len(), f.encoded_len());
    prop_assert_eq!(
        &wire[..],
        &ref_encode(f)[..],
        "bytes differ from the spec's encoding"
    );
    // `encode` appends to what is already in the buffer.
    let mut buf = BytesMut::from(&b"xyz"[..]);
    f.encode(&mut buf);
    prop_assert_eq!(&buf[..3], b"xyz");
    prop_assert_eq!(&buf[3..], &wire[..]);
    match codec::decode(&wire, DEFAULT_MAX_FRAME_SIZE) {
        Ok(Message::Frame(g)) => {
            prop_assert_eq!(&g, f);
            // The payload is a slice of the message, not a copy.
            if !g.payload.is_empty() {
                let start = g.payload.as_ptr() as usize - wire.as_ptr() as usize;
                prop_assert!(start + g.payload.len() <= wire.len());
            }
        }
        Ok(Message::Merged(m)) => prop_assert!(false, "decoded as a container: {:?}", m),
        Err(e) => prop_assert!(false, "decode failed: {}", e),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (a) encode/decode identity
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frame_roundtrips(f in arb_frame()) {
        check_roundtrip(&f)?;
    }

    #[test]
    fn container_roundtrips(frames in vec(arb_frame(), 1..=60)) {
        let wire = merged_bytes(&frames);
        match codec::decode(&wire, DEFAULT_MAX_FRAME_SIZE).unwrap() {
            Message::Merged(m) => {
                prop_assert_eq!(m.declared() as usize, frames.len());
                let h = m.header();
                prop_assert_eq!(
                    (h.mux_id, h.seq as usize, h.deadline_ms, h.handler, h.op, h.flags),
                    (0, frames.len(), 0, 0, Op::Merged, Flags::NONE)
                );
                prop_assert_eq!(m.collect::<Result<Vec<_>, _>>().unwrap(), frames.clone());
            }
            Message::Frame(f) => prop_assert!(false, "decoded as a single frame: {:?}", f),
        }
        // Each inner frame is a bin holding exactly the bytes it would have alone.
        let mut want = vec![0x97, 0x00];
        ref_uint(&mut want, frames.len() as u64);
        want.extend_from_slice(&[0x00, 0x00, 0x11, 0x00, 0xc4, 0x00]);
        for f in &frames {
            ref_bin(&mut want, &ref_encode(f));
        }
        prop_assert_eq!(&wire[..], &want[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn frame_with_large_payload_roundtrips(
        f in arb_frame_with(arb_single_op(), arb_large_payload())
    ) {
        check_roundtrip(&f)?;
    }

    #[test]
    fn container_with_a_large_frame_roundtrips(
        big in arb_frame_with(arb_single_op(), arb_large_payload()),
        small in vec(arb_frame(), 0..4),
    ) {
        let mut frames = small;
        frames.insert(frames.len() / 2, big);
        let wire = merged_bytes(&frames);
        prop_assert_eq!(decode_all(&wire).unwrap(), frames);
    }
}

// ---------------------------------------------------------------------------------------
// (b) strict prefixes, (c) bit flips, (d) random bytes
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_strict_prefix_of_a_frame_is_an_error(f in arb_frame()) {
        let wire = f.to_bytes();
        for cut in 0..wire.len() {
            let r = decode_all(&wire.slice(..cut));
            prop_assert!(r.is_err(), "prefix of {} / {} bytes decoded: {:?}", cut, wire.len(), r);
        }
    }

    #[test]
    fn every_strict_prefix_of_a_container_is_an_error(
        frames in vec(arb_frame_with(arb_single_op(), vec(any::<u8>(), 0..48).prop_map(Bytes::from)), 1..8)
    ) {
        let wire = merged_bytes(&frames);
        for cut in 0..wire.len() {
            let r = decode_all(&wire.slice(..cut));
            prop_assert!(r.is_err(), "prefix of {} / {} bytes decoded: {:?}", cut, wire.len(), r);
        }
    }
}

/// `wire` with bit `bit` of byte `i` flipped.
fn flipped(wire: &[u8], i: usize, bit: u8) -> Bytes {
    let mut v = wire.to_vec();
    v[i] ^= 1 << bit;
    v.into()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_bit_flip_in_a_crc_frame_is_an_error(f in arb_crc_frame(40)) {
        let wire = f.to_bytes();
        for i in 0..wire.len() {
            for bit in 0..8 {
                let r = decode_all(&flipped(&wire, i, bit));
                prop_assert!(r.is_err(), "flip of bit {} of byte {} went unnoticed: {:?}", bit, i, r);
            }
        }
    }

    #[test]
    fn a_bit_flip_in_a_container_of_crc_frames_is_caught_or_harmless(
        frames in vec(arb_crc_frame(24), 1..6)
    ) {
        let wire = merged_bytes(&frames);
        for i in 0..wire.len() {
            for bit in 0..8 {
                if let Ok(got) = decode_all(&flipped(&wire, i, bit)) {
                    // Only the CRC-free container header may absorb a flip (e.g. in its
                    // MuxID or deadline); the inner frames must come out unchanged.
                    prop_assert!(i < 9, "flip of bit {} of byte {} (in the body) went unnoticed", bit, i);
                    prop_assert_eq!(&got, &frames, "flip of bit {} of byte {} changed the frames", bit, i);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_bytes_never_panic(
        prefix in prop_oneof![
            Just(vec![]),
            Just(vec![0x97]),
            Just(vec![0x97, 0x00, 0x03, 0x00, 0x00, 0x11, 0x00, 0xc4, 0x00, 0xc4]),
        ],
        data in vec(any::<u8>(), 0..256),
        max_len in prop_oneof![Just(DEFAULT_MAX_FRAME_SIZE), 0usize..300],
    ) {
        let mut bytes = prefix;
        bytes.extend_from_slice(&data);
        let wire = Bytes::from(bytes);
        if let Ok(msg) = codec::decode(&wire, max_len) {
            for f in msg.into_frames().into_iter().flatten() {
                // Whatever decodes re-encodes to something that decodes to the same frame.
                prop_assert_eq!(decode_all(&f.to_bytes()).unwrap(), vec![f]);
            }
        }
        // The control payload decoders are as robust.
        let _ = codec::ConnectRequest::decode(&data);
        let _ = codec::ConnectResponse::decode(&data);
        let _ = codec::MuxConnectError::decode(&data);
        let _ = codec::Ping::decode(&data);
        let _ = codec::Pong::decode(&data);
    }

    #[test]
    fn mutated_frames_never_panic(
        f in arb_frame_with(arb_single_op(), vec(any::<u8>(), 0..64).prop_map(Bytes::from)),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = f.to_bytes().to_vec();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = decode_all(&Bytes::from(bytes));
    }
}

// ---------------------------------------------------------------------------------------
// (e) size limits
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_over_the_limit_are_rejected_before_parsing(f in arb_frame()) {
        let wire = f.to_bytes();
        let n = wire.len();
        prop_assert!(codec::decode(&wire, n).is_ok());
        prop_assert_eq!(
            codec::decode(&wire, n - 1).unwrap_err(),
            DecodeError::TooLarge { len: n, max: n - 1 }
        );
        // Garbage over the limit gets the same answer: nothing was parsed.
        let junk = Bytes::from(vec![0xc1; n]);
        prop_assert_eq!(
            codec::decode(&junk, n - 1).unwrap_err(),
            DecodeError::TooLarge { len: n, max: n - 1 }
        );
    }
}

#[test]
fn a_lying_bin_length_is_truncated_not_allocated() {
    let head = raw_frame(&[0x97], [&[0], &[0], &[0], &[0], &[14], &[0]], &[]);
    for (hdr, claimed) in [
        (&[0xc4, 0xff][..], 0xffusize),
        (&[0xc5, 0xff, 0xff], 0xffff),
        (&[0xc6, 0xff, 0xff, 0xff, 0xff], 0xffff_ffff),
        (&[0xc6, 0x80, 0x00, 0x00, 0x00], 0x8000_0000),
    ] {
        let mut wire = head.clone();
        wire.extend_from_slice(hdr);
        wire.extend_from_slice(b"abc");
        let err = decode_one(&wire).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                field: "Payload",
                at: head.len() + hdr.len(),
                need: claimed,
                have: 3
            }
        );
    }
    // The same inside a container: the inner bin claims 4 GiB.
    let mut wire = vec![0x97, 0x00, 0x01, 0x00, 0x00, 0x11, 0x00, 0xc4, 0x00];
    wire.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0x97]);
    let err = decode_all(&Bytes::from(wire)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Truncated {
                need: 0xffff_ffff,
                have: 1,
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Decoder acceptance: what the spec says a decoder takes and refuses
// ---------------------------------------------------------------------------------------

const EMPTY_BIN: &[u8] = &[0xc4, 0x00];

#[test]
fn integers_in_non_smallest_forms_decode() {
    let wire = raw_frame(
        &[0x97],
        [
            &[0xcd, 0x00, 0x05],                                   // MuxID uint16 5
            &[0xd0, 0x07],                                         // Seq int8 7
            &[0xd1, 0x01, 0x00],                                   // DeadlineMS int16 256
            &[0xd2, 0x00, 0x00, 0x00, 0x4e],                       // Handler int32 78
            &[0xd3, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 14], // Op int64 14
            &[0xcc, 0x02],                                         // Flags uint8 EOF
        ],
        &[0xc4, 0x01, 0xaa],
    );
    let f = decode_one(&wire).unwrap();
    assert_eq!(
        (f.mux_id, f.seq, f.deadline_ms, f.handler, f.op, f.flags),
        (5, 7, 256, 78, Op::Request, Flags::EOF)
    );
    assert_eq!(&f.payload[..], &[0xaa]);

    // Every form for every field, at the field's maximum.
    let forms = |v: u64| -> Vec<Vec<u8>> {
        let mut out = vec![];
        if v <= 0x7f {
            out.push(vec![v as u8]);
        }
        if v <= 0xff {
            out.push(vec![0xcc, v as u8]);
        }
        if v <= 0x7f {
            out.push(vec![0xd0, v as u8]);
        }
        if v <= 0xffff {
            out.push([&[0xcd][..], &(v as u16).to_be_bytes()].concat());
        }
        if v <= 0x7fff {
            out.push([&[0xd1][..], &(v as i16).to_be_bytes()].concat());
        }
        if v <= 0xffff_ffff {
            out.push([&[0xce][..], &(v as u32).to_be_bytes()].concat());
        }
        if v <= 0x7fff_ffff {
            out.push([&[0xd2][..], &(v as i32).to_be_bytes()].concat());
        }
        out.push([&[0xcf][..], &v.to_be_bytes()].concat());
        if v <= i64::MAX as u64 {
            out.push([&[0xd3][..], &(v as i64).to_be_bytes()].concat());
        }
        out
    };
    for v in [
        0u64,
        1,
        5,
        127,
        128,
        255,
        256,
        32_767,
        65_535,
        u32::MAX as u64,
        u64::MAX,
    ] {
        for form in forms(v) {
            let wire = raw_frame(&[0x97], [&form, &[0], &[0], &[0], &[14], &[0]], EMPTY_BIN);
            assert_eq!(
                decode_one(&wire).unwrap().mux_id,
                v,
                "MuxID form {form:02x?}"
            );
            if v <= u32::MAX as u64 {
                let wire = raw_frame(&[0x97], [&[0], &form, &form, &[0], &[14], &[0]], EMPTY_BIN);
                let f = decode_one(&wire).unwrap();
                assert_eq!((f.seq as u64, f.deadline_ms as u64), (v, v), "{form:02x?}");
            }
            if v <= 0xff {
                // Flags with the CRC or subroute bit would need trailers: keep those zero.
                let flags = if v & 0x21 == 0 { v } else { 0 };
                let flags_form: &[u8] = if flags == v { &form } else { &[0] };
                let wire = raw_frame(
                    &[0x97],
                    [&[0], &[0], &[0], &form, &form, flags_form],
                    EMPTY_BIN,
                );
                let f = decode_one(&wire).unwrap();
                assert_eq!(
                    (f.handler as u64, f.op.as_u8() as u64, f.flags.0 as u64),
                    (v, v, flags),
                    "{form:02x?}"
                );
            }
        }
    }
}

/// A frame whose field `index` (0 = MuxID .. 5 = Flags) is `field`, the rest zero but a
/// Request op.
fn frame_with_field(index: usize, field: &[u8]) -> Vec<u8> {
    let mut ints: [&[u8]; 6] = [&[0], &[0], &[0], &[0], &[14], &[0]];
    ints[index] = field;
    raw_frame(&[0x97], ints, EMPTY_BIN)
}

#[test]
fn negative_integers_are_errors() {
    for index in 0..6 {
        for field in [
            &[0xff][..],
            &[0xe0],
            &[0xd0, 0x80],
            &[0xd1, 0xff, 0xff],
            &[0xd2, 0x80, 0, 0, 0],
            &[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
        ] {
            let err = decode_one(&frame_with_field(index, field)).unwrap_err();
            assert!(
                matches!(err, DecodeError::Negative { value, .. } if value < 0),
                "field {index} {field:02x?}: {err}"
            );
        }
    }
}

#[test]
fn overflowing_integers_are_errors() {
    let cases: &[(usize, &[u8], u64, u64)] = &[
        (1, &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0], 1 << 32, u32::MAX as u64), // Seq 2^32
        (1, &[0xd3, 0, 0, 0, 1, 0, 0, 0, 0], 1 << 32, u32::MAX as u64), // Seq 2^32 as int64
        (
            2,
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            u64::MAX,
            u32::MAX as u64,
        ),
        (3, &[0xcd, 0x01, 0x00], 256, 255), // Handler 256
        (3, &[0xd1, 0x01, 0x00], 256, 255),
        (4, &[0xcd, 0x01, 0x11], 273, 255), // Op 273 (would be 17 truncated)
        (5, &[0xce, 0x00, 0x01, 0x00, 0x01], 65_537, 255), // Flags (would be CRC truncated)
    ];
    for &(index, field, value, max) in cases {
        let err = decode_one(&frame_with_field(index, field)).unwrap_err();
        assert!(
            matches!(err, DecodeError::Overflow { value: v, max: m, .. } if v == value && m == max),
            "field {index} {field:02x?}: {err}"
        );
    }
}

#[test]
fn non_integer_fields_are_errors() {
    for field in [
        &[0xc0][..],
        &[0xc2],
        &[0xa1, b'1'],
        &[0xca, 0, 0, 0, 0],
        &[0xc4, 0x00],
    ] {
        for index in 0..6 {
            let err = decode_one(&frame_with_field(index, field)).unwrap_err();
            assert!(
                matches!(err, DecodeError::UnexpectedType { .. }),
                "{field:02x?}: {err}"
            );
        }
    }
}

#[test]
fn payload_must_be_bin() {
    let ints: [&[u8]; 6] = [&[1], &[0], &[0], &[0], &[14], &[0]];
    // bin8, bin16 and bin32 headers are all accepted, even when not the smallest.
    for payload in [
        &[0xc4, 0x02, 1, 2][..],
        &[0xc5, 0x00, 0x02, 1, 2],
        &[0xc6, 0, 0, 0, 2, 1, 2],
    ] {
        let f = decode_one(&raw_frame(&[0x97], ints, payload)).unwrap();
        assert_eq!(&f.payload[..], &[1, 2]);
    }
    // nil, str (fix/8/16/32), an integer, an array: decode errors naming the type byte.
    for payload in [
        &[0xc0][..],
        &[0xa2, b'h', b'i'],
        &[0xa0],
        &[0xd9, 0x02, b'h', b'i'],
        &[0xda, 0x00, 0x02, b'h', b'i'],
        &[0xdb, 0, 0, 0, 2, b'h', b'i'],
        &[0x00],
        &[0x90],
    ] {
        let err = decode_one(&raw_frame(&[0x97], ints, payload)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnexpectedType {
                field: "Payload",
                at: 7,
                byte: payload[0]
            }
        );
    }
    // A missing payload is a truncation.
    let err = decode_one(&raw_frame(&[0x97], ints, &[])).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated { at: 7, .. }), "{err}");
}

#[test]
fn array_must_have_seven_elements() {
    let ints: [&[u8]; 6] = [&[1], &[0], &[0], &[0], &[14], &[0]];
    for (header, len) in [
        (&[0x96][..], 6),
        (&[0x98], 8),
        (&[0x90], 0),
        (&[0x9f], 15),
        (&[0xdc, 0x00, 0x06], 6),
        (&[0xdc, 0x00, 0x08], 8),
        (&[0xdd, 0x00, 0x00, 0x00, 0x08], 8),
        (&[0xdd, 0xff, 0xff, 0xff, 0xff], u32::MAX),
    ] {
        let err = decode_one(&raw_frame(header, ints, EMPTY_BIN)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::ArrayLength { at: 0, len },
            "{header:02x?}"
        );
    }
    // array16 and array32 headers holding 7 are accepted.
    for header in [&[0xdc, 0x00, 0x07][..], &[0xdd, 0x00, 0x00, 0x00, 0x07]] {
        let f = decode_one(&raw_frame(header, ints, &[0xc4, 0x01, 0x42])).unwrap();
        assert_eq!(
            (f.mux_id, f.op, &f.payload[..]),
            (1, Op::Request, &[0x42][..])
        );
    }
    // ... also with a CRC over the longer header.
    let mut wire = raw_frame(
        &[0xdc, 0x00, 0x07],
        [&[1], &[0], &[0], &[0], &[14], &[1]],
        EMPTY_BIN,
    );
    ref_crc(&mut wire);
    assert_eq!(decode_one(&wire).unwrap().flags, Flags::CRC);
    // Not an array at all.
    for header in [&[0x87][..], &[0xc0], &[0x07]] {
        let err = decode_one(&raw_frame(header, ints, EMPTY_BIN)).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnexpectedType { at: 0, .. }),
            "{err}"
        );
    }
    assert!(matches!(
        decode_one(&[]).unwrap_err(),
        DecodeError::Truncated { at: 0, .. }
    ));
}

#[test]
fn crc_flag_needs_four_trailing_bytes() {
    let body = raw_frame(&[0x97], [&[1], &[0], &[0], &[0], &[14], &[0x01]], EMPTY_BIN);
    for extra in 0..4 {
        let mut wire = body.clone();
        wire.extend(std::iter::repeat_n(0u8, extra));
        let err = decode_one(&wire).unwrap_err();
        assert_eq!(
            err,
            DecodeError::MissingTrailer {
                trailer: "crc",
                at: body.len(),
                want: 4,
                have: extra
            }
        );
    }
    let mut good = body.clone();
    ref_crc(&mut good);
    assert_eq!(decode_one(&good).unwrap().flags, Flags::CRC);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    let err = decode_one(&bad).unwrap_err();
    let computed = codec::crc(&body);
    assert_eq!(
        err,
        DecodeError::CrcMismatch {
            at: body.len(),
            given: computed ^ 0x8000_0000,
            computed
        }
    );
    assert!(err.to_string().starts_with("crc mismatch: 0x"), "{err}");
}

#[test]
fn subroute_flag_needs_thirty_two_trailing_bytes() {
    let id = SubrouteId::new(78, "subroute/1");
    for flags in [0x20u8, 0x21] {
        let body = raw_frame(
            &[0x97],
            [&[1], &[0], &[0], &[78], &[14], &[flags]],
            EMPTY_BIN,
        );
        for extra in [0usize, 1, 31] {
            let mut wire = body.clone();
            wire.extend_from_slice(&id.as_bytes()[..extra]);
            if flags & 1 != 0 {
                ref_crc(&mut wire);
            }
            let err = decode_one(&wire).unwrap_err();
            assert_eq!(
                err,
                DecodeError::MissingTrailer {
                    trailer: "subroute",
                    at: body.len(),
                    want: 32,
                    have: extra
                },
                "flags {flags:#x}"
            );
        }
        let mut wire = body.clone();
        wire.extend_from_slice(id.as_bytes());
        if flags & 1 != 0 {
            ref_crc(&mut wire);
        }
        let f = decode_one(&wire).unwrap();
        assert_eq!(f.subroute, Some(id));
        assert_eq!(f.to_bytes(), wire, "re-encodes to the same bytes");
    }
}

#[test]
fn stray_bytes_after_a_single_frame_are_rejected() {
    // The spec lets Go ignore them; Grid refuses them so a corrupted op or flag byte
    // cannot turn into a different valid frame. A conforming peer never sends any.
    let mut wire = raw_frame(&[0x97], [&[1], &[0], &[0], &[0], &[14], &[0]], EMPTY_BIN);
    wire.push(0x00);
    assert_eq!(
        decode_one(&wire).unwrap_err(),
        DecodeError::TrailingBytes { at: 9, count: 1 }
    );
}

/// The container header for `count` frames, as Go writes it.
fn container_header(count: u8) -> Vec<u8> {
    vec![0x97, 0x00, count, 0x00, 0x00, 0x11, 0x00, 0xc4, 0x00]
}

#[test]
fn nested_containers_are_errors() {
    let inner = merged_bytes(&[example_request()]);
    let mut wire = container_header(2);
    ref_bin(&mut wire, &REQUEST_WIRE);
    ref_bin(&mut wire, &inner);
    let mut it = match codec::decode(&Bytes::from(wire), DEFAULT_MAX_FRAME_SIZE).unwrap() {
        Message::Merged(m) => m,
        Message::Frame(f) => panic!("{f:?}"),
    };
    assert_eq!(it.next().unwrap().unwrap(), example_request());
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(err, DecodeError::NestedMerged { at: 9 + 2 + 32 + 2 });
    assert!(it.next().is_none(), "the iterator stops after an error");
}

#[test]
fn container_count_must_match_its_contents() {
    let frames = [example_request(), example_response(), example_request()];
    let mut body = vec![];
    for f in &frames {
        ref_bin(&mut body, &ref_encode(f));
    }
    for declared in [0u8, 1, 2, 3, 4, 10, 127] {
        let mut wire = container_header(declared);
        wire.extend_from_slice(&body);
        let r = decode_all(&Bytes::from(wire));
        if declared == 3 {
            assert_eq!(r.unwrap(), frames);
            continue;
        }
        match r.unwrap_err() {
            DecodeError::MergedCount {
                declared: d,
                found,
                extra_bytes,
                ..
            } => {
                assert_eq!(d, declared as u32);
                assert_eq!(found, declared.min(3) as u32);
                assert_eq!(extra_bytes > 0, declared < 3, "declared {declared}");
            }
            e => panic!("declared {declared}: {e}"),
        }
    }
    // The count in a non-smallest form is fine.
    let mut wire = container_header(0);
    wire[2..3].copy_from_slice(&[0xd0]);
    wire.insert(3, 3);
    wire.extend_from_slice(&body);
    assert_eq!(decode_all(&Bytes::from(wire)).unwrap(), frames);
    // Garbage where an inner bin belongs.
    let mut wire = container_header(1);
    wire.extend_from_slice(&REQUEST_WIRE);
    let err = decode_all(&Bytes::from(wire)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::UnexpectedType {
                at: 9,
                byte: 0x97,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn inner_frame_errors_report_positions_in_the_whole_message() {
    let mut wire = container_header(2);
    ref_bin(&mut wire, &REQUEST_WIRE);
    let mut bad = REQUEST_WIRE;
    bad[31] ^= 1;
    ref_bin(&mut wire, &bad);
    let err = decode_all(&Bytes::from(wire)).unwrap_err();
    let second_start = 9 + 2 + 32 + 2;
    assert!(
        matches!(err, DecodeError::CrcMismatch { at, .. } if at == second_start + 28),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Nil vs empty (§1.4)
// ---------------------------------------------------------------------------------------

#[test]
fn nil_and_empty_payloads_differ_only_by_the_zero_flag() {
    let mut absent = Frame::new(Op::MuxServerMsg);
    absent.mux_id = 9;
    absent.seq = 1;
    let mut empty = absent.clone();
    empty.flags = Flags::PAYLOAD_IS_ZERO;
    let mut data = absent.clone();
    data.payload = Bytes::from_static(b"x");

    assert_eq!(absent.payload(), None);
    assert_eq!(empty.payload(), Some(&Bytes::new()));
    assert_eq!(data.payload(), Some(&Bytes::from_static(b"x")));

    // Both encode the payload as `c4 00`; only the flags byte differs.
    let a = absent.to_bytes();
    let e = empty.to_bytes();
    assert_eq!(
        &a[..],
        &[0x97, 0x09, 0x01, 0x00, 0x00, 0x0a, 0x00, 0xc4, 0x00]
    );
    assert_eq!(
        &e[..],
        &[0x97, 0x09, 0x01, 0x00, 0x00, 0x0a, 0x10, 0xc4, 0x00]
    );

    assert_eq!(decode_one(&a).unwrap().payload(), None);
    assert_eq!(decode_one(&e).unwrap().payload(), Some(&Bytes::new()));
    // The flag does not hide a non-empty payload.
    let mut both = data.clone();
    both.flags = Flags::PAYLOAD_IS_ZERO;
    assert_eq!(
        decode_one(&both.to_bytes())
            .unwrap()
            .payload()
            .map(|p| &p[..]),
        Some(&b"x"[..])
    );
    // And a zero-length bin16 without the flag is absent too.
    let wire = raw_frame(
        &[0x97],
        [&[9], &[1], &[0], &[0], &[10], &[0]],
        &[0xc5, 0, 0],
    );
    assert_eq!(decode_one(&wire).unwrap().payload(), None);
}

#[test]
fn flags_keep_unknown_bits() {
    let mut f = example_response();
    f.flags = Flags(0xc3);
    let d = decode_one(&f.to_bytes()).unwrap();
    assert_eq!(d.flags, Flags(0xc3));
    assert_eq!(d.flags.names(), "CRC|EOF|0xc0");
}

#[test]
fn encoder_sets_the_subroute_flag_from_the_trailer() {
    let id = SubrouteId::new(78, "subroute/1");
    let mut f = example_request();
    f.subroute = Some(id);
    // The flag is not set by hand; the encoder adds it because the trailer is there.
    let wire = f.to_bytes();
    assert_eq!(wire[8], 0x23);
    assert_eq!(&wire[28..60], id.as_bytes());
    assert_eq!(codec::crc(&wire[..60]).to_le_bytes(), wire[60..]);
    let d = decode_one(&wire).unwrap();
    assert_eq!(d.flags, Flags(0x23));
    assert_eq!(d.subroute, Some(id));
    // ... and clears it when there is none.
    let mut g = example_request();
    g.flags |= Flags::SUBROUTE;
    assert_eq!(g.to_bytes(), Bytes::from_static(&REQUEST_WIRE));
}
