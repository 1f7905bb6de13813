//! `codec-bench`: how fast the wire codec encodes and decodes, next to the floor it
//! cannot beat.
//!
//! ```text
//! cargo run --release -p grid-conformance --bin codec-bench [-- --seconds N]
//! ```
//!
//! The frame is a single request with a 512-byte payload and the CRC flag. Every
//! encoded frame needs its payload copied into the output buffer and an XXH3 pass over
//! its bytes; every decoded frame needs an XXH3 pass to verify its CRC (the payload
//! itself is not copied: it is a slice of the message). The floor figures do exactly
//! that work and nothing else, so `codec / floor` is the codec's overhead factor. One
//! more figure decodes the same frame without the CRC flag, to show what parsing costs
//! on its own. Each figure runs for `N` seconds (default 2).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use grid_conformance::bench_args::Args;
use grid_core::codec::{self, DEFAULT_MAX_FRAME_SIZE, Flags, Frame, Message, Op};

const PAYLOAD_LEN: usize = 512;
const USAGE: &str = "usage: codec-bench [--seconds N]";

fn main() -> ExitCode {
    match seconds() {
        Ok(s) => {
            run(Duration::from_secs_f64(s));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The time per figure the arguments ask for.
fn seconds() -> Result<f64, ExitCode> {
    let mut a = Args::from_env("codec-bench", USAGE);
    let mut seconds = 2.0;
    while let Some(arg) = a.next() {
        match arg.as_str() {
            "--seconds" => seconds = a.seconds(&arg)?,
            "-h" | "--help" => return Err(a.help()),
            other => return Err(a.unknown(other)),
        }
    }
    Ok(seconds)
}

/// Calls `op` in batches until `dur` has passed; returns calls per second.
fn measure(dur: Duration, mut op: impl FnMut()) -> f64 {
    // Warm caches and branch predictors first.
    let warm = Instant::now();
    while warm.elapsed() < dur / 20 {
        for _ in 0..256 {
            op();
        }
    }
    const BATCH: u64 = 1024;
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        for _ in 0..BATCH {
            op();
        }
        calls += BATCH;
        let elapsed = start.elapsed();
        if elapsed >= dur {
            return calls as f64 / elapsed.as_secs_f64();
        }
    }
}

/// The floor of encoding: copy the header and the payload, hash, append the CRC.
fn floor_encode(out: &mut Vec<u8>, header: &[u8], payload: &[u8]) {
    out.clear();
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    let crc = codec::crc(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The floor of decoding: hash the bytes before the CRC and compare.
///
/// (`codec::crc` is nothing but the low 32 bits of XXH3-64, so both floors use the same
/// hash as the codec.)
fn floor_decode(wire: &[u8]) -> bool {
    let (body, crc) = wire.split_at(wire.len() - codec::CRC_LEN);
    codec::crc(body).to_le_bytes() == crc
}

fn decode(wire: &Bytes) -> Frame {
    match codec::decode(wire, DEFAULT_MAX_FRAME_SIZE) {
        Ok(Message::Frame(f)) => f,
        _ => unreachable!("the benchmark frame decodes"),
    }
}

fn run(dur: Duration) {
    let mut frame = Frame::new(Op::Request);
    frame.mux_id = 12_345;
    frame.seq = 7;
    frame.deadline_ms = 60_000;
    frame.handler = 78;
    frame.flags = Flags::CRC | Flags::EOF;
    frame.payload = (0..PAYLOAD_LEN)
        .map(|i| (i * 7) as u8)
        .collect::<Vec<u8>>()
        .into();
    let wire = frame.to_bytes();
    let header_len = wire.len() - PAYLOAD_LEN - codec::CRC_LEN;
    let header = wire[..header_len].to_vec();

    // The floor writes the same bytes as the codec, and both decode.
    let mut floor_buf = Vec::with_capacity(wire.len());
    floor_encode(&mut floor_buf, &header, &frame.payload);
    assert_eq!(floor_buf, wire);
    assert!(floor_decode(&wire));
    assert_eq!(decode(&wire), frame);

    println!(
        "codec-bench: request frame, {PAYLOAD_LEN}-byte payload, CRC flag: {} bytes on the wire; \
         {:.1} s per figure",
        wire.len(),
        dur.as_secs_f64()
    );

    let mut buf = BytesMut::with_capacity(4096);
    let encode = measure(dur, || {
        buf.clear();
        black_box(&frame).encode(&mut buf);
        black_box(&buf);
    });
    let floor_enc = measure(dur, || {
        floor_encode(
            &mut floor_buf,
            black_box(&header),
            black_box(&frame.payload),
        );
        black_box(&floor_buf);
    });

    let decoded = measure(dur, || {
        black_box(decode(black_box(&wire)));
    });
    let floor_dec = measure(dur, || {
        black_box(floor_decode(black_box(&wire)));
    });
    // The same frame without the CRC flag: what parsing costs on its own.
    let no_crc = Frame {
        flags: Flags::EOF,
        ..frame.clone()
    }
    .to_bytes();
    let parse_only = measure(dur, || {
        black_box(decode(black_box(&no_crc)));
    });

    let roundtrip = measure(dur, || {
        buf.clear();
        black_box(&frame).encode(&mut buf);
        let message = buf.split().freeze();
        black_box(decode(&message));
        // Dropping `message` lets the next `encode` reuse the same allocation.
    });
    let floor_rt = measure(dur, || {
        floor_encode(
            &mut floor_buf,
            black_box(&header),
            black_box(&frame.payload),
        );
        black_box(floor_decode(black_box(&floor_buf)));
    });

    let bytes = wire.len() as f64;
    let row = |name: &str, fps: f64| {
        println!(
            "  {name:<40} {:>14} frames/s {:>9.1} ns/frame {:>9.0} MB/s",
            thousands(fps),
            1e9 / fps,
            fps * bytes / 1e6
        );
    };
    let ratio = |name: &str, codec: f64, floor: f64| {
        println!(
            "  {name:<40} {:>14.2}x the floor's time per frame",
            floor / codec
        );
    };
    row("encode (Frame::encode)", encode);
    row("floor: copy header+payload, XXH3", floor_enc);
    ratio("encode / floor", encode, floor_enc);
    row("decode (codec::decode, CRC verified)", decoded);
    row("floor: XXH3 and compare", floor_dec);
    ratio("decode / floor", decoded, floor_dec);
    row("decode without the CRC flag (parse only)", parse_only);
    row("encode + decode", roundtrip);
    row("floor: copy, XXH3, XXH3 and compare", floor_rt);
    ratio("encode + decode / floor", roundtrip, floor_rt);
}

/// `n` rounded, with thousands separators.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
