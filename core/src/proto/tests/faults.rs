//! Fault rows: what the session does with broken, hostile or racing input. Each test is
//! named after its row; the expected behaviour is in the name.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::flow::{ms, ops, singles};
use super::harness::*;
use super::liveness::{busy_pair, ended_once};
use super::stream::open;
use crate::codec::{self, DecodeError, Flags, Frame, MuxConnectError, Op, Ping, Pong};
use crate::proto::{CallError, Config, Event, LostReason, MuxKey, Read, SendError};

fn request_frame(id: u64, payload: &[u8]) -> Frame {
    let mut f = forge(Op::Request, id, 0, Flags::EOF, payload);
    f.handler = ECHO.id;
    f.deadline_ms = 60_000;
    f
}

fn with_config(f: impl FnOnce(&mut Config)) -> Setup {
    let mut setup = Setup::default();
    f(&mut setup.config);
    setup
}

/// Drains the session's events into the node's list.
fn collect(n: &mut Node) {
    while let Some(e) = n.s.poll_event() {
        n.events.push_back(e);
    }
}

// ---------------------------------------------------------------------------------------
// Rows 1–4: malformed and unknown input.

#[test]
fn row01_truncated_frame_loses_the_session_and_ends_every_mux() {
    let (mut p, _, _, b_keys) = busy_pair(Setup::default());
    let whole = request_frame(1000, b"hello").to_bytes();
    p.inject_to_b(whole.slice(..whole.len() - 7));
    p.step();
    let reason = ended_once(&mut p.b, &b_keys, &[b_keys[0].id]);
    assert!(
        matches!(reason, LostReason::Decode(DecodeError::Truncated { .. })),
        "{reason:?}"
    );
}

#[test]
fn row02_bad_crc_loses_the_session_and_the_payload_is_never_delivered() {
    let (mut p, _, _, b_keys) = busy_pair(Setup::default());
    let mut bad = BytesMut::from(&request_frame(1000, b"secret").to_bytes()[..]);
    let n = bad.len();
    bad[n - 6] ^= 0x01; // a payload byte
    p.inject_to_b(bad.freeze());
    p.step();
    // `ended_once` admits no other event: no request was delivered.
    let reason = ended_once(&mut p.b, &b_keys, &[b_keys[0].id]);
    assert!(
        matches!(reason, LostReason::Decode(DecodeError::CrcMismatch { .. })),
        "{reason:?}"
    );

    // In a container, the frames before the bad one were dispatched; the bad one and
    // those after it never are.
    let mut p = Pair::connected();
    let frames = [
        request_frame(1000, b"good"),
        request_frame(1001, b"bad"),
        request_frame(1002, b"after"),
    ];
    let mut buf = BytesMut::new();
    codec::encode_merged(frames.iter(), &mut buf);
    let at = buf.len() - frames[2].encoded_len() - 2 - 6;
    buf[at] ^= 0x01; // inside the second frame
    p.inject_to_b(buf.freeze());
    p.step();
    collect(&mut p.b);
    let events = p.b.take_events();
    let requests: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Request { mux_id, .. } => Some(*mux_id),
            _ => None,
        })
        .collect();
    assert_eq!(requests, [1000]);
    assert!(matches!(
        events.last(),
        Some(Event::Lost(LostReason::Decode(
            DecodeError::CrcMismatch { .. }
        )))
    ));
    assert!(events.contains(&Event::Closed {
        key: MuxKey::incoming(1000),
        error: CallError::Disconnected
    }));
}

#[test]
fn row03_unknown_ops_are_ignored_and_counted_and_the_link_stays() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    for op in [
        Op::Unknown(200),
        Op::Disconnect,
        Op::Connect,
        Op::ConnectResponse,
        Op::Unknown(18),
    ] {
        // Even on a live stream's id.
        p.inject_to_b(forge(op, c.id, 1, Flags::NONE, b"x").to_bytes());
        p.inject_to_a(forge(op, c.id, 1, Flags::NONE, b"x").to_bytes());
    }
    p.drive();
    assert_eq!(p.a.s.stats().unknown_ops, 5);
    assert_eq!(p.b.s.stats().unknown_ops, 5);
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    // The link and the stream go on, sequence numbers untouched.
    singles(&mut p, 3);
    p.a.s.send(p.now, c, Bytes::from_static(b"q")).unwrap();
    p.drive();
    assert_eq!(p.b.s.read(p.now, s), Read::Item(Bytes::from_static(b"q")));
    p.b.s.send(p.now, s, Bytes::from_static(b"r")).unwrap();
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::Item(Bytes::from_static(b"r")));
    p.a.s.close_send(p.now, c.id).unwrap();
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.assert_clean();
}

#[test]
fn row04_oversize_message_is_rejected_before_parsing_and_the_link_dropped() {
    let setup = || with_config(|c| c.max_frame_size = 4096);
    // Exactly the limit is accepted.
    let mut p = Pair::connected_with(setup());
    let mut f = request_frame(1000, b"");
    f.payload = pattern(4096 - f.encoded_len() - 1); // the bin8 header becomes bin16
    assert_eq!(f.encoded_len(), 4096);
    p.inject_to_b(f.to_bytes());
    p.drive();
    assert_eq!(p.b.expect_request().0, 1000);
    assert!(p.b.s.is_connected());

    // One byte more, sent by the real peer: the link is dropped.
    let (mut p, _, _, b_keys) = busy_pair(setup());
    p.a.s.request(p.now, ECHO, pattern(5000), None).unwrap();
    p.advance(ms(1));
    let reason = ended_once(&mut p.b, &b_keys, &[b_keys[0].id]);
    assert!(
        matches!(reason, LostReason::Decode(DecodeError::TooLarge { len, max: 4096 }) if len > 5000),
        "{reason:?}"
    );

    // Bytes that are not a frame at all fail on their size, not their contents.
    let mut p = Pair::connected_with(setup());
    p.inject_to_b(Bytes::from(vec![0xc1; 4097]));
    p.step();
    collect(&mut p.b);
    assert_eq!(
        p.b.events.pop_back(),
        Some(Event::Lost(LostReason::Decode(DecodeError::TooLarge {
            len: 4097,
            max: 4096
        })))
    );
}

// ---------------------------------------------------------------------------------------
// Rows 5–8: mux-level violations fail only the mux concerned.

#[test]
fn row05_duplicate_mux_id_leaves_the_existing_mux_untouched() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, Some(Bytes::from_static(b"first")), None);
    let (mux, _, _) = {
        p.a.s
            .request(p.now, ECHO, Bytes::from_static(b"single"), None)
            .unwrap();
        p.drive();
        p.b.expect_request()
    };
    // The peer opens both ids again, with other handlers and payloads.
    let mut again = forge(Op::ConnectMux, c.id, 0, Flags::NONE, b"second");
    again.handler = WIDE.id;
    p.inject_to_b(again.to_bytes());
    p.inject_to_b(request_frame(c.id, b"third").to_bytes());
    let mut again = forge(Op::ConnectMux, mux, 0, Flags::NONE, b"fourth");
    again.handler = STREAM.id;
    p.inject_to_b(again.to_bytes());
    p.inject_to_b(request_frame(mux, b"fifth").to_bytes());
    p.drive();
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    assert_eq!(p.b.s.stats().incoming_muxes, 2);
    assert_eq!(ops(&p.a, Op::AckMux, c.id).len(), 1, "no second ack");
    assert!(p.a.received_ops(Op::MuxConnectError).is_empty());
    // Both work as before.
    assert!(p.b.s.respond(p.now, mux, Ok(Bytes::from_static(b"single"))));
    p.a.s.send(p.now, c, Bytes::from_static(b"q")).unwrap();
    p.drive();
    assert_eq!(p.a.expect_response(mux).unwrap(), "single");
    assert_eq!(p.b.s.read(p.now, s), Read::Item(Bytes::from_static(b"q")));
    p.b.s.finish(p.now, s.id, Ok(()));
    p.a.s.close_send(p.now, c.id).unwrap();
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.drive();
    p.assert_clean();
}

/// Two streams; the first is the victim of a fault, the second must not notice.
fn two_streams(p: &mut Pair) -> [(MuxKey, MuxKey); 2] {
    [open(p, STREAM, None, None), open(p, STREAM, None, None)]
}

/// Runs a full exchange on a healthy stream and ends it.
fn still_works(p: &mut Pair, (c, s): (MuxKey, MuxKey)) {
    p.a.s.send(p.now, c, Bytes::from_static(b"ping")).unwrap();
    p.drive();
    assert_eq!(
        p.b.s.read(p.now, s),
        Read::Item(Bytes::from_static(b"ping"))
    );
    p.b.s.send(p.now, s, Bytes::from_static(b"pong")).unwrap();
    p.drive();
    assert_eq!(
        p.a.s.read(p.now, c),
        Read::Item(Bytes::from_static(b"pong"))
    );
    p.a.s.close_send(p.now, c.id).unwrap();
    p.drive();
    assert_eq!(p.b.s.read(p.now, s), Read::End(Ok(())));
    assert!(p.b.s.finish(p.now, s.id, Ok(())));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.drive();
}

#[test]
fn row06_sequence_gap_on_the_server_fails_only_that_mux() {
    let mut p = Pair::connected();
    let [(c, s), other] = two_streams(&mut p);
    // The client's next seq is 1; a frame with 2 means one was lost.
    p.inject_to_b(forge(Op::MuxClientMsg, c.id, 2, Flags::NONE, b"x").to_bytes());
    p.drive();
    let text = "receive sequence number mismatch. want 1, got 2".to_owned();
    assert_eq!(p.b.expect_closed(s), CallError::Remote(text.clone()));
    let err = ops(&p.a, Op::MuxServerMsg, c.id);
    assert_eq!(err.len(), 1);
    assert_eq!(
        err[0].flags,
        Flags::CRC | Flags::EOF | Flags::PAYLOAD_IS_ERR
    );
    assert_eq!(err[0].payload, text.as_bytes());
    assert_eq!(
        p.a.s.read(p.now, c),
        Read::End(Err(CallError::Remote(text)))
    );
    still_works(&mut p, other);
    p.a.events.retain(|e| !matches!(e, Event::Readable(_)));
    p.b.events.retain(|e| !matches!(e, Event::Readable(_)));
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();

    // A stream ping with a bad seq also gets a pong carrying the error.
    let mut p = Pair::connected();
    let [(c, s), other] = two_streams(&mut p);
    p.inject_to_b(forge(Op::Ping, c.id, 5, Flags::NONE, b"").to_bytes());
    p.drive();
    let text = "receive sequence number mismatch. want 1, got 5".to_owned();
    assert_eq!(p.b.expect_closed(s), CallError::Remote(text.clone()));
    let pong = ops(&p.a, Op::Pong, c.id);
    assert_eq!(pong.len(), 1);
    assert_eq!(pong[0].seq, 5);
    assert_eq!(
        Pong::decode(&pong[0].payload).unwrap().err,
        Some(text.clone())
    );
    assert_eq!(p.a.expect_closed(c), CallError::Remote(text));
    still_works(&mut p, other);
    p.assert_clean();
}

#[test]
fn row06_sequence_gap_on_the_client_fails_only_that_mux() {
    let mut p = Pair::connected();
    let [(c, s), other] = two_streams(&mut p);
    // The server's next seq is 1 (after the ack).
    p.inject_to_a(forge(Op::MuxServerMsg, c.id, 3, Flags::NONE, b"x").to_bytes());
    p.drive();
    assert_eq!(p.a.expect_closed(c), CallError::IncorrectSequence);
    assert!(!p.a.s.contains(c));
    // The server is told with an unstamped notice.
    let notice = ops(&p.b, Op::DisconnectServerMux, c.id);
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].seq, 0);
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    // Acks and unblocks are checked too.
    let (c2, s2) = open(&mut p, STREAM, None, None);
    p.inject_to_a(forge(Op::UnblockClMux, c2.id, 7, Flags::NONE, b"").to_bytes());
    p.drive();
    assert_eq!(p.a.expect_closed(c2), CallError::IncorrectSequence);
    assert_eq!(p.b.expect_closed(s2), CallError::CancelledByRemote);
    still_works(&mut p, other);
    p.assert_clean();
}

#[test]
fn a_bare_eof_is_not_sequence_checked() {
    // A payload-less EOF is stamped by a Go server but not checked by a Go client.
    let mut p = Pair::connected();
    let (c, _) = open(&mut p, STREAM, None, None);
    p.b.s.close(LostReason::Local);
    p.inject_to_a(forge(Op::MuxServerMsg, c.id, 99, Flags::EOF, b"").to_bytes());
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    assert!(!p.a.s.contains(c));
}

#[test]
fn row07_frames_for_unknown_or_closed_muxes_are_ignored_and_never_revive_them() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.drive();
    p.a.events.clear();
    p.assert_clean();
    let pong = codec::to_payload(|b| Pong::default().encode(b));
    let refusal = codec::to_payload(|b| MuxConnectError { error: "no".into() }.encode(b));
    for id in [c.id, 4242, u64::MAX] {
        // To the client side.
        for f in [
            forge(Op::AckMux, id, 0, Flags::NONE, b""),
            forge(Op::MuxServerMsg, id, 1, Flags::NONE, b"x"),
            forge(Op::MuxServerMsg, id, 2, Flags::EOF, b""),
            forge(
                Op::MuxServerMsg,
                id,
                2,
                Flags::EOF | Flags::PAYLOAD_IS_ERR,
                b"e",
            ),
            forge(Op::UnblockClMux, id, 1, Flags::NONE, b""),
            forge(Op::Pong, id, 1, Flags::NONE, &pong),
            forge(Op::Response, id, 0, Flags::EOF, b"r"),
            forge(Op::MuxConnectError, id, 0, Flags::NONE, &refusal),
            forge(Op::DisconnectClientMux, id, 0, Flags::NONE, b""),
        ] {
            p.inject_to_a(f.to_bytes());
        }
        // To the server side.
        for f in [
            forge(Op::MuxClientMsg, id, 1, Flags::NONE, b"x"),
            forge(Op::MuxClientMsg, id, 2, Flags::EOF, b""),
            forge(Op::UnblockSrvMux, id, 1, Flags::NONE, b""),
            forge(Op::DisconnectServerMux, id, 1, Flags::NONE, b""),
            forge(Op::Ping, id, 1, Flags::NONE, b""),
        ] {
            p.inject_to_b(f.to_bytes());
        }
    }
    p.drive();
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    assert!(p.a.s.stats().stale_frames >= 27);
    assert!(p.b.s.stats().stale_frames >= 12);
    p.assert_clean();
}

#[test]
fn row07_frames_for_an_ended_stream_awaiting_its_last_read_are_ignored() {
    // The server ended the stream; the client has not read the end yet. Late frames for
    // it change nothing: the end is still delivered, once.
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    p.b.s.send(p.now, s, Bytes::from_static(b"item")).unwrap();
    p.drive();
    assert_eq!(
        p.a.s.read(p.now, c),
        Read::Item(Bytes::from_static(b"item"))
    );
    p.drive();
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
    let refusal = codec::to_payload(|b| MuxConnectError { error: "no".into() }.encode(b));
    let pong = codec::to_payload(|b| {
        Pong {
            not_found: true,
            ..Pong::default()
        }
        .encode(b)
    });
    for f in [
        forge(Op::MuxConnectError, c.id, 0, Flags::NONE, &refusal),
        forge(Op::DisconnectClientMux, c.id, 0, Flags::NONE, b""),
        forge(Op::MuxServerMsg, c.id, 3, Flags::NONE, b"late"),
        forge(Op::AckMux, c.id, 0, Flags::NONE, b""),
        forge(Op::Pong, c.id, 1, Flags::NONE, &pong),
    ] {
        p.inject_to_a(f.to_bytes());
    }
    p.drive();
    p.a.events.retain(|e| *e != Event::Readable(c));
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.drive();
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    p.assert_clean();
}

#[test]
fn row08_credit_overrun_by_the_server_fails_only_that_mux() {
    let mut p = Pair::connected();
    let [(c, s), other] = two_streams(&mut p);
    p.b.s.send(p.now, s, Bytes::from_static(b"0")).unwrap();
    p.drive();
    // The client has not read; out capacity 1: a second item is beyond the credit. An
    // empty item counts like any other.
    p.inject_to_a(forge(Op::MuxServerMsg, c.id, 2, Flags::PAYLOAD_IS_ZERO, b"").to_bytes());
    p.drive();
    assert_eq!(p.a.expect_closed(c), CallError::CreditExceeded);
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    still_works(&mut p, other);
    p.a.events.retain(|e| !matches!(e, Event::Readable(_)));
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    p.assert_clean();
}

#[test]
fn row08_credit_overrun_by_the_client_fails_only_that_mux() {
    let mut p = Pair::connected();
    let [(c, s), other] = two_streams(&mut p);
    p.a.s.send(p.now, c, Bytes::from_static(b"0")).unwrap();
    p.drive();
    // The handler has not read; in capacity 1: a second item overflows its buffer.
    p.inject_to_b(forge(Op::MuxClientMsg, c.id, 2, Flags::NONE, b"1").to_bytes());
    p.drive();
    assert_eq!(
        p.b.expect_closed(s),
        CallError::Remote("handler blocked".into())
    );
    let want = Read::End(Err(CallError::Remote("handler blocked".into())));
    assert_eq!(p.a.s.read(p.now, c), want);
    still_works(&mut p, other);
    p.assert_clean();
}

#[test]
fn row08_input_to_a_stream_without_input_is_refused() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, NO_INPUT, None, None);
    p.inject_to_b(forge(Op::MuxClientMsg, c.id, 1, Flags::EOF, b"").to_bytes());
    p.drive();
    let text = "did not expect inbound message".to_owned();
    assert_eq!(p.b.expect_closed(s), CallError::Remote(text.clone()));
    assert_eq!(
        p.a.s.read(p.now, c),
        Read::End(Err(CallError::Remote(text)))
    );
    p.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Rows 16–19: limits and floods.

#[test]
fn row16_more_muxes_than_the_limit_are_refused_one_by_one() {
    let mut p = Pair::connected_with(with_config(|c| c.max_muxes = 4));
    // Locally: the fifth call is refused before anything is sent.
    let ids: Vec<u64> = (0..3)
        .map(|_| p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap())
        .collect();
    let sid = p.a.s.open_stream(p.now, STREAM, None, None).unwrap();
    assert_eq!(
        p.a.s.request(p.now, ECHO, Bytes::new(), None),
        Err(CallError::TooManyCalls(4))
    );
    assert_eq!(
        p.a.s.open_stream(p.now, STREAM, None, None),
        Err(CallError::TooManyCalls(4))
    );
    p.drive();
    let (mux, payload, _) = p.b.expect_request();
    p.b.s.respond(p.now, mux, Ok(payload));
    p.drive();
    p.a.expect_response(ids[0]).unwrap();
    // The freed slot takes the next call, and only one.
    let id = p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    assert_eq!(
        p.a.s.request(p.now, ECHO, Bytes::new(), None),
        Err(CallError::TooManyCalls(4))
    );
    p.drive();
    for _ in 0..3 {
        let (mux, payload, _) = p.b.expect_request();
        p.b.s.respond(p.now, mux, Ok(payload));
    }
    let (smux, _, _) = p.b.expect_stream();
    p.a.s.cancel(sid);
    p.drive();
    for id in [ids[1], ids[2], id] {
        p.a.expect_response(id).unwrap();
    }
    assert_eq!(
        p.b.expect_closed(MuxKey::incoming(smux)),
        CallError::CancelledByRemote
    );
    p.assert_clean();

    // Remotely: the peer already has four calls of ours (forged here), so it refuses
    // the fifth with a MuxConnectError, and the link stays.
    for id in 1001..=1004 {
        p.inject_to_b(request_frame(id, b"").to_bytes());
    }
    p.drive();
    let text = "too many concurrent muxes on this link (limit 4)".to_owned();
    let id = p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    let sid = p.a.s.open_stream(p.now, STREAM, None, None).unwrap();
    p.drive();
    assert_eq!(
        p.a.expect_response(id),
        Err(CallError::Refused(text.clone()))
    );
    assert_eq!(
        p.a.expect_closed(MuxKey::outgoing(sid)),
        CallError::Refused(text)
    );
    assert_eq!(p.b.s.stats().incoming_muxes, 4);
    assert!(p.a.s.is_connected() && p.b.s.is_connected());
    // One answered, one slot: the next call goes through.
    for id in 1001..=1004 {
        assert_eq!(p.b.expect_request().0, id);
        p.b.s.respond(p.now, id, Ok(Bytes::new()));
    }
    p.drive();
    singles(&mut p, 1);
    p.assert_clean();
}

#[test]
fn row17_rapid_open_and_cancel_frees_everything_at_once() {
    let mut p = Pair::connected();
    for i in 0..5_000u32 {
        let id = p.a.s.open_stream(p.now, STREAM, None, None).unwrap();
        match i % 3 {
            0 => {}              // cancelled before the open left
            1 => p.drive(),      // cancelled after the ack
            _ => drop(p.step()), // cancelled with the open in flight
        }
        p.a.s.cancel(id);
        assert_eq!(p.a.s.stats().outgoing_muxes, 0);
        assert_eq!(p.a.s.scheduled_timers(), 0);
        let r = p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
        p.a.s.cancel(r);
        assert_eq!(p.a.s.stats().outgoing_muxes, 0);
        if i % 100 == 99 {
            p.drive();
            // Every stream the server saw was opened and cancelled; every request it
            // answers goes nowhere.
            let mut opened = 0;
            for e in p.b.take_events() {
                match e {
                    Event::StreamOpened { .. } => opened += 1,
                    Event::Closed {
                        error: CallError::CancelledByRemote,
                        ..
                    } => opened -= 1,
                    Event::Request { mux_id, .. } => {
                        assert!(p.b.s.respond(p.now, mux_id, Ok(Bytes::new())))
                    }
                    e => panic!("{e:?}"),
                }
            }
            assert_eq!(opened, 0);
            p.drive();
            assert!(p.a.events.is_empty(), "{:?}", p.a.events);
            for n in [&p.a, &p.b] {
                assert_eq!(n.s.stats().queued_frames, 0);
                assert_eq!(n.s.stats().queued_bytes, 0);
            }
            p.assert_clean();
        }
    }
}

#[test]
fn row18_ping_and_item_floods_never_grow_the_queue_past_its_limit() {
    let mut p = Pair::connected_with(with_config(|c| c.max_queued_frames = 64));
    let (c, s) = open(&mut p, STREAM, None, None);
    let ping = {
        let mut f = Frame::new(Op::Ping);
        f.payload = codec::to_payload(|b| Ping::default().encode(b));
        f.to_bytes()
    };
    let floods: [Box<dyn Fn(u32) -> Bytes>; 3] = [
        Box::new(move |_| ping.clone()),
        Box::new(|i| forge(Op::Ping, 777, i, Flags::NONE, b"").to_bytes()),
        Box::new(|i| forge(Op::MuxClientMsg, 888, i, Flags::PAYLOAD_IS_ZERO, b"").to_bytes()),
    ];
    let mut dropped = 0;
    for flood in floods {
        for i in 0..5_000 {
            p.inject_to_b(flood(i));
        }
        // All of it is handled before the session may transmit once.
        p.step();
        let st = p.b.s.stats();
        assert_eq!(st.queued_frames, 64);
        dropped += 5_000 - 64;
        assert_eq!(st.replies_dropped, dropped);
        p.drive();
    }
    // Empty items (with the zero flag: real items) pushed without credit into a live
    // stream: one kill ("handler blocked"), then the rest are for an unknown mux and
    // their replies are bounded like any other.
    let (c2, s2) = open(&mut p, STREAM, None, None);
    for i in 0..5_000 {
        p.inject_to_b(
            forge(Op::MuxClientMsg, c2.id, 1 + i, Flags::PAYLOAD_IS_ZERO, b"").to_bytes(),
        );
    }
    p.step();
    let st = p.b.s.stats();
    assert_eq!(st.queued_frames, 64);
    dropped += 5_000 - 2 - 63;
    assert_eq!(st.replies_dropped, dropped);
    p.drive();
    assert_eq!(
        p.b.expect_closed(s2),
        CallError::Remote("handler blocked".into())
    );
    let want = Read::End(Err(CallError::Remote("handler blocked".into())));
    assert_eq!(p.a.s.read(p.now, c2), want);
    // Empty "items" without the zero flag are no items: nothing is queued or kept.
    for _ in 0..5_000 {
        p.inject_to_a(forge(Op::MuxServerMsg, c.id, 1, Flags::NONE, b"").to_bytes());
    }
    p.step();
    assert_eq!(p.a.s.stats().queued_frames, 0);
    // The link, and the stream, are fine.
    assert!(p.a.s.is_connected() && p.b.s.is_connected());
    still_works(&mut p, (c, s));
    singles(&mut p, 10);
    p.assert_clean();
}

#[test]
fn row19_lying_merged_container_drops_the_link() {
    for (count, declared, found) in [(3u8, 3, 2), (1, 1, 1), (0, 0, 0)] {
        let (mut p, _, _, b_keys) = busy_pair(Setup::default());
        let frames = [request_frame(1000, b"a"), request_frame(1001, b"b")];
        let mut buf = BytesMut::new();
        codec::encode_merged(frames.iter(), &mut buf);
        assert_eq!(buf[2], 2, "the count");
        buf[2] = count;
        p.inject_to_b(buf.freeze());
        p.step();
        collect(&mut p.b);
        // The frames read before the lie was found were dispatched; they end too.
        let mut keys = b_keys.clone();
        for id in 1000..1000 + u64::from(count.min(2)) {
            assert_eq!(p.b.expect_request().0, id);
            keys.push(MuxKey::incoming(id));
        }
        let reason = ended_once(&mut p.b, &keys, &[b_keys[0].id]);
        match reason {
            LostReason::Decode(DecodeError::MergedCount {
                declared: d,
                found: f,
                ..
            }) => {
                assert_eq!((d, f), (declared, found))
            }
            r => panic!("{r:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rows 21–24: errors and races.

#[test]
fn row21_handler_error_mid_stream_ends_only_that_mux() {
    let mut p = Pair::connected();
    let (c1, s1) = open(&mut p, WIDE, None, None);
    let (c2, s2) = open(&mut p, WIDE, None, None);
    for i in 0..2u8 {
        p.b.s.send(p.now, s1, Bytes::from(vec![i])).unwrap();
        p.b.s.send(p.now, s2, Bytes::from(vec![i])).unwrap();
    }
    assert!(p.b.s.finish(p.now, s1.id, Err("broken pipe".into())));
    p.drive();
    let (items, end) = p.a.read_all(p.now, c1);
    assert_eq!(items.len(), 2);
    assert_eq!(end, Some(Err(CallError::Remote("broken pipe".into()))));
    // The other stream goes on.
    p.a.s.send(p.now, c2, Bytes::from_static(b"in")).unwrap();
    p.b.s.send(p.now, s2, Bytes::from_static(b"2")).unwrap();
    p.drive();
    assert_eq!(p.b.s.read(p.now, s2), Read::Item(Bytes::from_static(b"in")));
    p.b.s.finish(p.now, s2.id, Ok(()));
    p.a.s.close_send(p.now, c2.id).unwrap();
    p.drive();
    let (items, end) = p.a.read_all(p.now, c2);
    assert_eq!(items.len(), 3);
    assert_eq!(end, Some(Ok(())));
    p.drive();
    p.a.events.retain(|e| !matches!(e, Event::Readable(_)));
    p.b.events.retain(|e| !matches!(e, Event::Readable(_)));
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

#[test]
fn row22_deadline_cancels_both_sides_and_nothing_else() {
    let mut p = Pair::connected();
    let (c1, s1) = open(&mut p, STREAM, None, Some(ms(50)));
    let other = open(&mut p, STREAM, None, None);
    let r =
        p.a.s
            .request(p.now, ECHO, Bytes::new(), Some(ms(30)))
            .unwrap();
    p.drive();
    let (rmux, _, _) = p.b.expect_request();
    p.advance(ms(100));
    assert_eq!(p.a.expect_closed(c1), CallError::DeadlineExceeded);
    assert_eq!(closed_once(&mut p.b, s1), 1);
    assert_eq!(p.a.expect_response(r), Err(CallError::DeadlineExceeded));
    assert_eq!(
        p.b.expect_closed(MuxKey::incoming(rmux)),
        CallError::DeadlineExceeded
    );
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    still_works(&mut p, other);
    p.assert_clean();
}

fn closed_once(n: &mut Node, key: MuxKey) -> usize {
    let count = super::flow::closed_count(n, key);
    n.events
        .retain(|e| !matches!(e, Event::Closed { key: k, .. } if *k == key));
    count
}

#[test]
fn row24_cancel_racing_the_end_has_exactly_one_outcome() {
    // The server sends an item and ends while the client cancels: the frames cross.
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, WIDE, None, None);
    p.b.s.send(p.now, s, Bytes::from_static(b"x")).unwrap();
    assert!(p.b.s.finish(p.now, s.id, Err("done".into())));
    assert!(!p.b.s.contains(s), "the end left with credit");
    p.a.s.cancel(c.id);
    p.drive();
    assert!(
        p.a.events.is_empty(),
        "no event after the cancel: {:?}",
        p.a.events
    );
    assert!(
        p.b.events.is_empty(),
        "the server had finished: {:?}",
        p.b.events
    );
    p.assert_clean();

    // A single request whose answer is in flight when the client gives up.
    let mut p = Pair::connected();
    let id = p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    p.drive();
    let (mux, _, _) = p.b.expect_request();
    p.b.s.respond(p.now, mux, Ok(Bytes::new()));
    p.step(); // the answer leaves
    p.a.s.cancel(id);
    p.drive();
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    p.assert_clean();

    // A deadline that passes while the answer is in flight: the deadline wins, once.
    let mut p = Pair::connected();
    let t0 = p.now;
    let id = p.a.s.request(t0, ECHO, Bytes::new(), Some(ms(10))).unwrap();
    p.drive();
    let (mux, _, _) = p.b.expect_request();
    p.advance_to(t0 + Duration::from_micros(9_500));
    assert!(p.b.s.respond(p.now, mux, Ok(Bytes::new())));
    p.advance(ms(20));
    assert_eq!(p.a.expect_response(id), Err(CallError::DeadlineExceeded));
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    assert_eq!(p.a.s.stats().stale_frames, 1);
    p.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Row 28: wraparound.

#[test]
fn row28_mux_ids_wrap_skipping_zero_and_ids_in_use() {
    let mut p = Pair::connected();
    let first =
        p.a.s
            .request(p.now, ECHO, Bytes::from_static(b"1"), None)
            .unwrap();
    assert_eq!(first, 1);
    p.a.s.continue_mux_ids(u64::MAX - 1);
    let top = p.a.s.open_stream(p.now, STREAM, None, None).unwrap();
    assert_eq!(top, u64::MAX);
    // 0 is never an id and 1 is in use.
    let wrapped =
        p.a.s
            .request(p.now, ECHO, Bytes::from_static(b"2"), None)
            .unwrap();
    assert_eq!(wrapped, 2);
    p.drive();
    assert_eq!(p.b.received_ops(Op::ConnectMux)[0].mux_id, u64::MAX);
    for _ in 0..2 {
        let (mux, payload, _) = p.b.expect_request();
        p.b.s.respond(p.now, mux, Ok(payload));
    }
    let (smux, _, _) = p.b.expect_stream();
    assert_eq!(smux, u64::MAX);
    p.drive();
    assert_eq!(p.a.expect_response(first).unwrap(), "1");
    assert_eq!(p.a.expect_response(wrapped).unwrap(), "2");
    still_works(&mut p, (MuxKey::outgoing(top), MuxKey::incoming(smux)));
    p.assert_clean();
}

#[test]
fn row28_stream_sequence_numbers_wrap_past_u32_max() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    // Both directions three frames before the wrap.
    let (up, down) = (u32::MAX - 2, u32::MAX - 3);
    p.a.s.set_stream_seqs(c, up, down);
    p.b.s.set_stream_seqs(s, down, up);
    for i in 0..4u8 {
        p.a.s.send(p.now, c, Bytes::from(vec![i])).unwrap();
        p.drive();
        assert_eq!(p.b.s.read(p.now, s), Read::Item(Bytes::from(vec![i])));
        p.b.s.send(p.now, s, Bytes::from(vec![i])).unwrap();
        p.drive();
        assert_eq!(p.a.s.read(p.now, c), Read::Item(Bytes::from(vec![i])));
        p.drive();
    }
    // Item, unblock, item, unblock, ... in each direction crossed the wrap.
    let up_seqs: Vec<u32> =
        p.b.received
            .iter()
            .filter(|f| f.mux_id == c.id && f.op != Op::ConnectMux)
            .map(|f| f.seq)
            .collect();
    assert_eq!(
        up_seqs,
        [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 2, 3, 4]
    );
    let down_seqs: Vec<u32> =
        p.a.received
            .iter()
            .filter(|f| f.mux_id == c.id && f.op != Op::AckMux)
            .map(|f| f.seq)
            .collect();
    assert_eq!(
        down_seqs,
        [
            u32::MAX - 3,
            u32::MAX - 2,
            u32::MAX - 1,
            u32::MAX,
            0,
            1,
            2,
            3
        ]
    );
    // And the end, and pings, follow on.
    still_works(&mut p, (c, s));
    p.assert_clean();
    assert!(
        p.a.events
            .iter()
            .chain(&p.b.events)
            .all(|e| matches!(e, Event::Readable(_)))
    );
}

#[test]
fn a_call_arriving_while_the_queue_is_full_is_still_served() {
    let mut p = Pair::connected_with(with_config(|c| c.max_queued_frames = 64));
    let ping = {
        let mut f = Frame::new(Op::Ping);
        f.payload = codec::to_payload(|b| Ping::default().encode(b));
        f.to_bytes()
    };
    // Fill b's outbound queue with pongs, then a request arrives in the same batch.
    for _ in 0..100 {
        p.inject_to_b(ping.clone());
    }
    let mut req = forge(Op::Request, 5, 0, Flags::EOF, b"still served");
    req.handler = ECHO.id;
    req.deadline_ms = 60_000;
    p.inject_to_b(req.to_bytes());
    p.step();
    assert!(p.b.s.is_congested());
    let (mux, payload, _) = p.b.expect_request();
    assert_eq!((mux, &payload[..]), (5, &b"still served"[..]));
    assert!(p.b.s.respond(p.now, mux, Ok(payload)));
    p.drive();
    let resp = p.a.received_ops(Op::Response);
    assert_eq!(resp.len(), 1);
    assert_eq!(&resp[0].payload[..], b"still served");
}

// ---------------------------------------------------------------------------------------
// Answers the protocol allows but a well-behaved peer rarely sends.

/// A single request the server has received and not answered: its ID and the server's.
fn pending_request(p: &mut Pair) -> (u64, u64) {
    let id =
        p.a.s
            .request(p.now, ECHO, Bytes::from_static(b"x"), None)
            .unwrap();
    p.drive();
    let (mux, _, _) = p.b.expect_request();
    (id, mux)
}

#[test]
fn a_single_response_out_of_sequence_ends_the_call_with_incorrect_sequence() {
    let mut p = Pair::connected();
    let (id, mux) = pending_request(&mut p);
    let mut r = forge(Op::Response, id, 1, Flags::EOF, b"x");
    r.handler = ECHO.id;
    p.inject_to_a(r.to_bytes());
    p.drive();
    assert_eq!(p.a.expect_response(id), Err(CallError::IncorrectSequence));
    // The real answer, late, finds no call.
    let stale = p.a.s.stats().stale_frames;
    assert!(p.b.s.respond(p.now, mux, Ok(Bytes::from_static(b"x"))));
    p.drive();
    assert_eq!(p.a.s.stats().stale_frames, stale + 1);
    assert!(p.a.response(id).is_none());
    p.assert_clean();
}

#[test]
fn a_malformed_mux_connect_error_still_refuses_the_call() {
    let mut p = Pair::connected();
    let (id, mux) = pending_request(&mut p);
    p.inject_to_a(forge(Op::MuxConnectError, id, 0, Flags::NONE, &[0x81, 0xc0]).to_bytes());
    p.drive();
    match p.a.expect_response(id) {
        Err(CallError::Refused(text)) => {
            assert!(text.starts_with("malformed mux connect error: "), "{text}")
        }
        other => panic!("{other:?}"),
    }
    assert!(p.b.s.respond(p.now, mux, Ok(Bytes::new())));
    p.drive();
    p.assert_clean();
}

#[test]
fn a_call_to_handler_zero_without_a_subroute_is_refused() {
    let mut p = Pair::connected();
    let mut f = request_frame(7, b"x");
    f.handler = 0;
    p.inject_to_b(f.to_bytes());
    p.drive();
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    let refusals = p.a.received_ops(Op::MuxConnectError);
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].mux_id, 7);
    assert_eq!(
        MuxConnectError::decode(&refusals[0].payload).unwrap().error,
        "Invalid Handler"
    );
    p.assert_clean();
}

#[test]
fn a_stateless_stream_is_refused() {
    let mut p = Pair::connected();
    let mut open = forge(Op::ConnectMux, 5, 0, Flags::STATELESS, b"");
    open.handler = STREAM.id;
    p.inject_to_b(open.to_bytes());
    p.drive();
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    let refusals = p.a.received_ops(Op::MuxConnectError);
    assert_eq!(refusals.len(), 1);
    assert_eq!(
        MuxConnectError::decode(&refusals[0].payload).unwrap().error,
        "Stateless streams not supported"
    );
    p.assert_clean();
}

#[test]
fn an_end_of_input_with_a_payload_ends_the_input_without_the_payload() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    p.inject_to_b(forge(Op::MuxClientMsg, c.id, 1, Flags::EOF, b"dropped").to_bytes());
    p.drive();
    assert_eq!(p.b.s.read(p.now, s), Read::End(Ok(())));
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.drive();
    p.assert_clean();
}

#[test]
fn a_mux_pong_saying_not_found_ends_the_stream_and_a_garbled_one_is_ignored() {
    let mut p = Pair::connected();
    let [(c, s), (c2, s2)] = two_streams(&mut p);
    let pong = |not_found| {
        codec::to_payload(|b| {
            Pong {
                not_found,
                ..Pong::default()
            }
            .encode(b)
        })
    };
    // Undecodable, or found: the stream goes on.
    p.inject_to_a(forge(Op::Pong, c.id, 0, Flags::NONE, &[0x81, 0xc0]).to_bytes());
    p.inject_to_a(forge(Op::Pong, c.id, 0, Flags::NONE, &pong(false)).to_bytes());
    p.drive();
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    still_works(&mut p, (c, s));
    // Not found: the server forgot the stream.
    p.inject_to_a(forge(Op::Pong, c2.id, 0, Flags::NONE, &pong(true)).to_bytes());
    p.drive();
    assert_eq!(p.a.expect_closed(c2), CallError::RemoteTerminated);
    assert_eq!(p.b.expect_closed(s2), CallError::CancelledByRemote);
    p.assert_clean();
}

#[test]
fn a_credit_beyond_the_window_is_ignored() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    // Out capacity 1: one credit, and a forged second one is beyond the window.
    p.inject_to_b(forge(Op::UnblockSrvMux, c.id, 1, Flags::NONE, b"").to_bytes());
    p.drive();
    assert_eq!(p.b.s.send(p.now, s, Bytes::from_static(b"0")), Ok(()));
    assert_eq!(
        p.b.s.send(p.now, s, Bytes::from_static(b"1")),
        Err(SendError::Blocked)
    );
    p.drive();
    assert_eq!(p.a.s.buffered(c), 1);
    // The forged frame took the client's next sequence number, so the client cancels
    // rather than read (reading gives a credit back).
    p.a.s.cancel(c.id);
    p.drive();
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    p.assert_clean();
}
