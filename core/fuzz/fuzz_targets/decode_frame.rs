//! Decodes arbitrary bytes as a grid message and checks what decodes.
//!
//! For every frame that decodes (a single frame, or each inner frame of a container),
//! encoding it and decoding the result gives the same frame back, and `encoded_len`
//! matches the bytes written. A fully decoded container re-encodes to a container
//! holding the same frames. The control-payload decoders run on every payload. Inputs
//! over the size limit must be refused with `TooLarge` and nothing else.

#![no_main]

use bytes::{Bytes, BytesMut};
use grid_core::codec::{
    self, ConnectRequest, ConnectResponse, DecodeError, Frame, Message, MuxConnectError, Op, Ping,
    Pong,
};
use libfuzzer_sys::fuzz_target;

/// The size limit given to the decoder: small, so that libFuzzer's default maximum
/// input length (4096) also exercises the `TooLarge` path.
const MAX_LEN: usize = 2048;

fn check_frame(f: &Frame) {
    assert_ne!(f.op, Op::Merged, "a decoded frame is never a container");
    assert_eq!(
        f.subroute.is_some(),
        f.flags.contains(codec::Flags::SUBROUTE)
    );
    let wire = f.to_bytes();
    assert_eq!(wire.len(), f.encoded_len());
    match codec::decode(&wire, usize::MAX) {
        Ok(Message::Frame(g)) => assert_eq!(&g, f),
        Ok(Message::Merged(_)) => panic!("{f:?} re-encoded as a container"),
        Err(e) => panic!("{f:?} re-encoded to bytes that do not decode: {e}"),
    }
    // The control decoders must not panic on whatever the payload holds.
    let p = &f.payload[..];
    let _ = ConnectRequest::decode(p);
    let _ = ConnectResponse::decode(p);
    let _ = MuxConnectError::decode(p);
    let _ = Ping::decode(p);
    let _ = Pong::decode(p);
}

fuzz_target!(|data: &[u8]| {
    let message = Bytes::copy_from_slice(data);
    match codec::decode(&message, MAX_LEN) {
        Err(DecodeError::TooLarge { len, max }) => {
            assert_eq!((len, max), (data.len(), MAX_LEN));
        }
        Err(_) => assert!(data.len() <= MAX_LEN),
        Ok(Message::Frame(f)) => {
            assert!(data.len() <= MAX_LEN);
            check_frame(&f);
        }
        Ok(Message::Merged(m)) => {
            let declared = m.declared();
            let mut frames = Vec::new();
            let mut errors = 0;
            for r in m {
                assert_eq!(errors, 0, "the iterator yields nothing after an error");
                match r {
                    Ok(f) => {
                        check_frame(&f);
                        frames.push(f);
                    }
                    Err(_) => errors += 1,
                }
            }
            if errors == 0 {
                assert_eq!(frames.len() as u64, u64::from(declared));
                let mut out = BytesMut::new();
                codec::encode_merged(&frames, &mut out);
                assert_eq!(out.len(), codec::merged_len(&frames));
                let again = codec::decode(&out.freeze(), usize::MAX)
                    .and_then(Message::into_frames)
                    .expect("a re-encoded container decodes");
                assert_eq!(again, frames);
            }
        }
    }
});
