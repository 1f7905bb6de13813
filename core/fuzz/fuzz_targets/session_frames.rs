//! A connected pair of sessions fed raw inbound messages, frames built from fuzzed fields,
//! timer ticks and a few local commands.
//!
//! The input is a sequence of chunks; the first byte of each says what it is (`tag % 8`,
//! the side is bit 3):
//!
//! * 0, 1: raw bytes (u16 length, then the bytes) delivered as one message;
//! * 2, 3: 1–4 frames (bits 4–5) built from fuzzed fields ([`common::FrameSpec`]: op,
//!   mux ID, mostly one the target knows, seq, deadline, handler, flags, subroute,
//!   payload), encoded by the codec with a correct CRC, alone or as one container; with
//!   bit 6, a flood: the frames repeated up to 1024 times in one container, mux ID and
//!   seq optionally moving on per copy (to reach the queue and mux limits);
//! * 4: a tick: virtual time advances by a fuzzed amount, timers firing late in one
//!   call, or each at its own instant (optionally delivering messages as they go);
//! * 5: a local command (request, open stream, cancel, send, read, close_send, respond,
//!   finish, a burst of requests or stream opens) so that outgoing muxes and handler
//!   answers exist for the frames to hit;
//! * 6: delivers 1–16 messages in flight to one side, in order; 7: delivers all.
//!
//! After every input the events and outbound messages are drained and the checks of
//! [`common::Node`] run: no panic, the model of both tables matches the session (every
//! mux ends exactly once), tables within `max_muxes`, the outbound queue within
//! `max_queued_frames` plus a per-mux allowance, every sent message decodes, no timer
//! left due, `bug_count()` 0. When a side is lost, both are closed (as a driver closes
//! the socket), checked empty, and a new pair continues. At the end both are closed
//! and checked: tables empty and every mux ended with exactly one end.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{FrameSpec, InKind, Input, Node, OutKind, Pair};
use grid_core::codec::Frame;
use grid_core::proto::{LostReason, MuxKey, Read};
use libfuzzer_sys::fuzz_target;

const MAX_CHUNKS: usize = 400;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn local_command(p: &mut Pair, i: usize, inp: &mut Input<'_>) {
    let now = p.now;
    let kind = inp.u8();
    let sel = inp.u8();
    let n = &mut p.n[i];
    n.begin();
    match kind % 12 {
        0 => {
            let h = common::request_handlers()[sel as usize % 5];
            let payload = common::pattern(usize::from(inp.u8()) * 8, kind);
            let deadline = match inp.u8() {
                0 => None,
                d => Some(ms(u64::from(d) * 50)),
            };
            let _ = n.request(now, h, payload, deadline);
        }
        1 => {
            let h = common::stream_handlers()[sel as usize % 7];
            let payload = match inp.u8() {
                0 => None,
                1 => Some(Bytes::new()),
                l => Some(common::pattern(usize::from(l), kind)),
            };
            let deadline = match inp.u8() {
                0 => None,
                d => Some(ms(u64::from(d) * 200)),
            };
            let _ = n.open_stream(now, h, payload, deadline);
        }
        2 => {
            let id = Node::pick(&n.out_ids(None), sel);
            n.cancel(id);
        }
        3 => {
            let id = Node::pick(&n.out_ids(Some(OutKind::Stream)), sel);
            let item = common::pattern(usize::from(inp.u8()), sel);
            let _ = n.send(now, MuxKey::outgoing(id), item);
        }
        4 => {
            let id = Node::pick(&n.in_ids(&[InKind::Stream, InKind::Finishing]), sel);
            let item = common::pattern(usize::from(inp.u8()), sel);
            let _ = n.send(now, MuxKey::incoming(id), item);
        }
        5 | 6 => {
            let key = if kind % 12 == 5 {
                MuxKey::outgoing(Node::pick(&n.out_ids(Some(OutKind::Stream)), sel))
            } else {
                MuxKey::incoming(Node::pick(
                    &n.in_ids(&[InKind::Stream, InKind::Finishing]),
                    sel,
                ))
            };
            // Read one, or everything available.
            let all = inp.bool();
            for _ in 0..16 {
                if !matches!(n.read(now, key), Read::Item(_)) || !all {
                    break;
                }
            }
        }
        7 => {
            let id = Node::pick(&n.out_ids(Some(OutKind::Stream)), sel);
            let _ = n.close_send(now, id);
        }
        8 => {
            let id = Node::pick(&n.in_ids(&[InKind::Single]), sel);
            let result = if inp.bool() {
                Ok(common::pattern(usize::from(inp.u8()), sel))
            } else {
                Err("app: failed".to_owned())
            };
            n.respond(now, id, result);
        }
        9 => {
            let id = Node::pick(&n.in_ids(&[InKind::Stream, InKind::Finishing]), sel);
            let result = if inp.bool() {
                Ok(())
            } else {
                Err("app: failed".to_owned())
            };
            n.finish(now, id, result);
        }
        10 => {
            // A burst of requests: up to the mux limit, or the queue's byte limit.
            let len = usize::from(inp.u8()) * 16;
            for k in 0..sel {
                let _ = n.request(now, common::SINGLE, common::pattern(len, k), None);
            }
        }
        _ => {
            // A burst of stream opens, each sending what its credit allows once acked.
            let h = common::stream_handlers()[usize::from(inp.u8()) % 4];
            for _ in 0..sel {
                let _ = n.open_stream(now, h, None, None);
            }
        }
    }
    p.settle(i);
}

/// The frames repeated `times + 1` times in one container, each copy's mux ID and seq moved
/// on by its index when `mode` says so: enough frames in one message to push the outbound
/// queue past its limit and the tables to `max_muxes`.
fn flood(frames: &[Frame], times: u16, mode: u8) -> Vec<Frame> {
    let mut out = Vec::new();
    for k in 0..=u64::from(times) {
        for f in frames {
            let mut f = f.clone();
            if mode & 1 != 0 {
                f.mux_id = f.mux_id.wrapping_add(k);
            }
            if mode & 2 != 0 {
                f.seq = f.seq.wrapping_add(k as u32);
            }
            out.push(f);
        }
    }
    out
}

fn run(data: &[u8]) {
    let mut p = Pair::connected();
    let mut inp = Input::new(data);
    let mut chunks = 0;
    while !inp.is_empty() && chunks < MAX_CHUNKS {
        chunks += 1;
        let tag = inp.u8();
        let side = usize::from((tag >> 3) & 1);
        match tag % 8 {
            0 | 1 => {
                let msg = Bytes::copy_from_slice(inp.blob());
                p.message(side, msg);
            }
            2 | 3 => {
                let count = usize::from((tag >> 4) & 3) + 1;
                let mut frames: Vec<_> = (0..count)
                    .map(|_| FrameSpec::read(&mut inp, &p.n[side]).frame())
                    .collect();
                if tag & 0x40 != 0 {
                    frames = flood(&frames, inp.u16() % 1024, inp.u8());
                }
                p.message(side, common::encode_frames(&frames));
            }
            4 => {
                let b = inp.u8();
                let scale = [1, 10, 100, 1000][usize::from(b & 3)];
                let exact = b & 4 != 0;
                let pump = b & 8 != 0;
                let mut d = u64::from(inp.u16()) * scale;
                if exact {
                    // Each timer fires at its own instant: keep the steps few.
                    d = d.min(300_000);
                }
                p.tick(ms(d), exact, pump);
            }
            5 => local_command(&mut p, side, &mut inp),
            6 => {
                p.deliver(side, usize::from(tag >> 4) + 1);
            }
            _ => p.pump(),
        }
        if p.n[0].s.is_closed() || p.n[1].s.is_closed() {
            // The driver closes the socket of a lost session; the peer sees the
            // transport end. Then the link comes back with new sessions.
            p.close_both(LostReason::Transport("link closed".into()));
            p.reconnect();
        }
    }
    p.close_both(LostReason::Local);
}

fuzz_target!(|data: &[u8]| run(data));
