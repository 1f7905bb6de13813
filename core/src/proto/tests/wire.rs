//! Wire shape: the replies to frames for unknown muxes (`PROTOCOL.md` §6.9, without
//! Go's misdirected replies) and batching into `OpMerged` containers (§7.2).

use bytes::{Bytes, BytesMut};

use super::flow::ops;
use super::harness::*;
use crate::codec::{self, Flags, Frame, Message, Op, Pong, Time};
use crate::proto::{CallError, Config, Event, MuxKey, Transmit};

// ---------------------------------------------------------------------------------------
// Replies to frames for unknown muxes.

#[test]
fn a_client_answers_frames_for_unknown_outgoing_muxes_with_disconnect_server_mux() {
    let mut p = Pair::connected();
    // `b` has an outgoing call with id 1: the mux a Go client's misdirected
    // DisconnectClientMux would hit. `a` has no outgoing mux at all.
    let rb =
        p.b.s
            .request(p.now, ECHO, Bytes::from_static(b"b"), None)
            .unwrap();
    assert_eq!(rb, 1);
    p.drive();
    let (amux, payload, _) = p.a.expect_request();
    let pong = codec::to_payload(|b| Pong::default().encode(b));
    for f in [
        forge(Op::AckMux, 1, 0, Flags::NONE, b""),
        forge(Op::MuxServerMsg, 1, 1, Flags::NONE, b"x"),
        forge(Op::Pong, 1, 1, Flags::NONE, &pong),
    ] {
        p.inject_to_a(f.to_bytes());
    }
    p.drive();
    let replies = ops(&p.b, Op::DisconnectServerMux, 1);
    assert_eq!(replies.len(), 3);
    for r in replies {
        assert_eq!((r.seq, r.flags, r.payload.len()), (0, Flags::CRC, 0));
    }
    assert!(p.b.received_ops(Op::DisconnectClientMux).is_empty());
    // Nothing else was hit: `b`'s call 1 and `a`'s incoming call 1 go on.
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    assert!(p.a.s.respond(p.now, amux, Ok(payload)));
    p.drive();
    assert_eq!(p.b.expect_response(rb).unwrap(), "b");
    // An end for an unknown mux is dropped without a reply.
    for flags in [Flags::EOF, Flags::EOF | Flags::PAYLOAD_IS_ERR] {
        p.inject_to_a(forge(Op::MuxServerMsg, 9, 1, flags, b"").to_bytes());
    }
    p.drive();
    assert!(ops(&p.b, Op::DisconnectServerMux, 9).is_empty());
    p.assert_clean();
}

#[test]
fn a_server_answers_client_items_for_unknown_incoming_muxes_with_disconnect_client_mux() {
    let mut p = Pair::connected();
    p.inject_to_b(forge(Op::MuxClientMsg, 55, 1, Flags::NONE, b"x").to_bytes());
    p.drive();
    let replies = ops(&p.a, Op::DisconnectClientMux, 55);
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].seq, replies[0].flags), (0, Flags::CRC));
    assert!(p.a.received_ops(Op::DisconnectServerMux).is_empty());
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

#[test]
fn a_disconnect_client_mux_is_received_with_go_semantics() {
    // Go also sends it misdirected (§6.9); whatever its cause, it fails our outgoing
    // mux of that id: with the peer's text if it carries one, else as disconnected.
    let mut p = Pair::connected();
    let single = p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    let stream = p.a.s.open_stream(p.now, STREAM, None, None).unwrap();
    p.drive();
    let (b_single, _, _) = p.b.expect_request();
    let (b_stream, _, _) = p.b.expect_stream();
    p.inject_to_a(forge(Op::DisconnectClientMux, single, 0, Flags::NONE, b"").to_bytes());
    let err = forge(
        Op::DisconnectClientMux,
        stream,
        0,
        Flags::PAYLOAD_IS_ERR,
        b"gone",
    );
    p.inject_to_a(err.to_bytes());
    p.drive();
    assert_eq!(p.a.expect_response(single), Err(CallError::Disconnected));
    let closed = p.a.expect_closed(MuxKey::outgoing(stream));
    assert_eq!(closed, CallError::Remote("gone".into()));
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    // The stream's server learns of its end from the unstamped teardown notice (§6.8):
    // without it, a Go handler hit by a misdirected notice would run on until its
    // liveness check. The single request's answer finds nothing.
    let notice = ops(&p.b, Op::DisconnectServerMux, stream);
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].seq, 0);
    assert_eq!(
        p.b.expect_closed(MuxKey::incoming(b_stream)),
        CallError::CancelledByRemote
    );
    assert!(p.b.s.respond(p.now, b_single, Ok(Bytes::new())));
    p.drive();
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    p.assert_clean();
}

#[test]
fn a_stream_ping_for_an_unknown_incoming_mux_gets_a_not_found_pong() {
    let mut p = Pair::connected();
    // An id nobody knows, and the id of a single request (no stream state is kept for
    // those, so it is not found either).
    p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    p.drive();
    let (single, _, _) = p.b.expect_request();
    for (id, seq) in [(56, 3), (single, 1)] {
        p.inject_to_b(forge(Op::Ping, id, seq, Flags::NONE, b"").to_bytes());
        p.drive();
        let pongs = ops(&p.a, Op::Pong, id);
        assert_eq!(pongs.len(), 1, "mux {id}");
        assert_eq!((pongs[0].seq, pongs[0].flags), (seq, Flags::CRC));
        let pong = Pong::decode(&pongs[0].payload).unwrap();
        assert_eq!(
            (pong.not_found, pong.err, pong.t),
            (true, None, Time::GO_ZERO)
        );
    }
    // The single request is unaffected.
    assert!(p.b.s.contains(MuxKey::incoming(single)));
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    assert!(p.b.s.respond(p.now, single, Ok(Bytes::new())));
    p.drive();
    assert!(p.a.expect_response(single).is_ok());
    p.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Batching.

/// Every message `n` would transmit now.
fn transmit_all(n: &mut Node) -> Vec<(Transmit, Bytes)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while let Some(t) = n.s.poll_transmit(&mut buf) {
        out.push((t, buf.split().freeze()));
    }
    out
}

fn frames_of(msg: &Bytes) -> (Option<Frame>, Vec<Frame>) {
    match codec::decode(msg, usize::MAX).unwrap() {
        Message::Frame(f) => (None, vec![f]),
        Message::Merged(m) => {
            let header = m.header().clone();
            (Some(header), m.collect::<Result<_, _>>().unwrap())
        }
    }
}

fn requests(p: &mut Pair, n: usize, size: usize) -> Vec<u64> {
    (0..n)
        .map(|_| p.a.s.request(p.now, ECHO, pattern(size), None).unwrap())
        .collect()
}

#[test]
fn a_lone_frame_is_not_merged() {
    let mut p = Pair::connected();
    requests(&mut p, 1, 10);
    let msgs = transmit_all(&mut p.a);
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].0,
        Transmit {
            frames: 1,
            len: msgs[0].1.len()
        }
    );
    let (header, frames) = frames_of(&msgs[0].1);
    assert!(header.is_none());
    assert_eq!(frames[0].op, Op::Request);
    assert_eq!(p.a.s.stats().merged_sent, 0);
}

#[test]
fn queued_frames_leave_in_one_merged_container() {
    let mut p = Pair::connected();
    let before = p.a.s.stats();
    let ids = requests(&mut p, 10, 10);
    let msgs = transmit_all(&mut p.a);
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].0,
        Transmit {
            frames: 10,
            len: msgs[0].1.len()
        }
    );
    let (header, frames) = frames_of(&msgs[0].1);
    let header = header.expect("a container");
    // Header: MuxID 0, Seq = count, everything else zero, no flags (no CRC), empty payload.
    assert_eq!(
        (
            header.mux_id,
            header.seq,
            header.deadline_ms,
            header.handler
        ),
        (0, 10, 0, 0)
    );
    assert_eq!((header.flags, header.payload.len()), (Flags::NONE, 0));
    // Inner frames in queue order, each with its own CRC.
    assert_eq!(frames.iter().map(|f| f.mux_id).collect::<Vec<_>>(), ids);
    assert!(frames.iter().all(|f| f.flags.contains(Flags::CRC)));
    let after = p.a.s.stats();
    assert_eq!(after.merged_sent, before.merged_sent + 1);
    assert_eq!(after.frames_sent, before.frames_sent + 10);
    assert_eq!(after.messages_sent, before.messages_sent + 1);
    assert_eq!(after.bytes_sent, before.bytes_sent + msgs[0].1.len() as u64);
    // The peer takes them all, in order.
    p.inject_to_b(msgs[0].1.clone());
    p.drive();
    for id in ids {
        assert_eq!(p.b.expect_request().0, id);
    }
    assert_eq!(p.b.s.stats().merged_received, 1);
}

#[test]
fn frames_taken_and_encoded_later_are_the_bytes_poll_transmit_sends() {
    // Two pairs in the same state: one sends with `poll_transmit`, the other takes the
    // frames out and encodes them afterwards.
    let load = |p: &mut Pair| {
        for size in [0, 10, 700, 40_000, 10, 70_000, 3] {
            requests(p, 30, size);
        }
    };
    let (mut p, mut q) = (Pair::connected(), Pair::connected());
    load(&mut p);
    load(&mut q);
    let sent = transmit_all(&mut p.a);
    let mut taken = Vec::new();
    let mut frames = Vec::new();
    while let Some(t) = q.a.s.poll_transmit_frames(&mut frames) {
        assert_eq!(frames.len(), t.frames);
        let mut buf = BytesMut::new();
        codec::encode_message(&frames, &mut buf);
        assert_eq!(buf.len(), t.len);
        taken.push((t, buf.freeze()));
        frames.clear();
    }
    assert!(sent.len() > 3, "the load spans several messages");
    assert_eq!(taken, sent);
    assert_eq!(q.a.s.stats(), p.a.s.stats());
    assert!(!q.a.s.is_congested());
}

#[test]
fn a_container_holds_at_most_merge_max_frames_plus_one() {
    let mut p = Pair::connected();
    requests(&mut p, 120, 10);
    let counts: Vec<usize> = transmit_all(&mut p.a)
        .iter()
        .map(|(t, _)| t.frames)
        .collect();
    assert_eq!(counts, [51, 51, 18]);

    let mut setup = Setup::default();
    setup.config.merge_max_frames = 3;
    let mut p = Pair::connected_with(setup);
    requests(&mut p, 10, 10);
    let msgs = transmit_all(&mut p.a);
    let counts: Vec<usize> = msgs.iter().map(|(t, _)| t.frames).collect();
    assert_eq!(counts, [4, 4, 2]);
    for (t, m) in &msgs {
        let (header, frames) = frames_of(m);
        assert_eq!(header.unwrap().seq as usize, t.frames);
        assert_eq!(frames.len(), t.frames);
    }
}

#[test]
fn held_bytes_stay_below_merge_max_bytes() {
    let max = Config::default().merge_max_bytes;
    let mut p = Pair::connected();
    requests(&mut p, 6, 10_000);
    let msgs = transmit_all(&mut p.a);
    // Three frames of ~10 KB are held (below 31 744 bytes); the fourth goes with them.
    let counts: Vec<usize> = msgs.iter().map(|(t, _)| t.frames).collect();
    assert_eq!(counts, [4, 2]);
    for (_, m) in &msgs {
        let (_, frames) = frames_of(m);
        let held: usize = frames[..frames.len() - 1]
            .iter()
            .map(Frame::encoded_len)
            .sum();
        assert!(held < max, "{held}");
    }
    let (_, first) = frames_of(&msgs[0].1);
    let total: usize = first.iter().map(Frame::encoded_len).sum();
    assert!(total >= max, "the last frame may pass the limit");

    // A frame at the byte limit is never held: it leaves alone, even with others queued.
    let mut p = Pair::connected();
    requests(&mut p, 1, max);
    requests(&mut p, 2, 10);
    let counts: Vec<usize> = transmit_all(&mut p.a)
        .iter()
        .map(|(t, _)| t.frames)
        .collect();
    assert_eq!(counts, [1, 2]);
}

#[test]
fn the_connect_response_is_never_merged() {
    // The acceptor's application may start a call as soon as it sees `Connected`, before
    // the session transmits the connect response: the dialer must still get the response
    // as a message of its own (a Go dialer, and ours, reject anything else).
    let mut p = Pair::new(Setup::default());
    p.step(); // the connect request leaves
    p.now += p.latency;
    p.step(); // ... and is accepted
    assert!(p.b.s.is_connected());
    assert!(matches!(
        p.b.events.pop_front(),
        Some(Event::Connected { .. })
    ));
    let id =
        p.b.s
            .request(p.now, ECHO, Bytes::from_static(b"early"), None)
            .unwrap();
    let msgs = transmit_all(&mut p.b);
    assert_eq!(
        msgs.iter().map(|(t, _)| t.frames).collect::<Vec<_>>(),
        [1, 1]
    );
    assert_eq!(frames_of(&msgs[0].1).1[0].op, Op::ConnectResponse);
    for (_, m) in msgs {
        p.inject_to_a(m);
    }
    p.drive();
    assert!(p.a.s.is_connected(), "{:?}", p.a.events);
    assert!(matches!(
        p.a.events.pop_front(),
        Some(Event::Connected { .. })
    ));
    let (mux, payload, _) = p.a.expect_request();
    p.a.s.respond(p.now, mux, Ok(payload));
    p.drive();
    assert_eq!(p.b.expect_response(id).unwrap(), "early");
    p.assert_clean();
}
