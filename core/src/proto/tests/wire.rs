//! Wire shape: the replies to frames for unknown muxes (`PROTOCOL.md` §6.9, without
//! Go's misdirected replies).

use bytes::Bytes;

use super::flow::ops;
use super::harness::*;
use crate::codec::{self, Flags, Op, Pong, Time};
use crate::proto::MuxKey;

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
