use std::time::Duration;

use bytes::Bytes;

use super::harness::*;
use crate::codec::{Flags, Op};
use crate::proto::{CallError, Event, MuxKey, Read, SendError};

/// Opens `handler` from a to b and returns (client key, server key).
pub(crate) fn open(
    p: &mut Pair,
    handler: crate::proto::HandlerKey,
    payload: Option<Bytes>,
    deadline: Option<Duration>,
) -> (MuxKey, MuxKey) {
    let id =
        p.a.s
            .open_stream(p.now, handler, payload, deadline)
            .unwrap();
    p.drive();
    let (mux, h, _) = p.b.expect_stream();
    assert_eq!(h, handler);
    (MuxKey::outgoing(id), MuxKey::incoming(mux))
}

#[test]
fn stream_roundtrip_11_items_then_eof() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, Some(Bytes::from_static(b"init:")), None);
    for i in 0..11u8 {
        p.a.s.send(p.now, c, Bytes::from(vec![i])).unwrap();
        p.drive();
        let Read::Item(item) = p.b.s.read(p.now, s) else {
            panic!("no item {i}")
        };
        let mut out = b"init:".to_vec();
        out.extend_from_slice(&item);
        p.b.s.send(p.now, s, Bytes::from(out)).unwrap();
        p.drive();
        let Read::Item(resp) = p.a.s.read(p.now, c) else {
            panic!("no response {i}")
        };
        assert_eq!(&resp[..], &[b'i', b'n', b'i', b't', b':', i]);
    }
    p.a.s.close_send(p.now, c.id).unwrap();
    p.drive();
    assert_eq!(p.b.s.read(p.now, s), Read::End(Ok(())));
    assert!(p.b.s.finish(p.now, s.id, Ok(())));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.assert_clean();
    // Sequence numbers count every stamped frame: after the open at 0 came 11 items and
    // 11 unblocks, so the EOF is 23.
    let last =
        p.b.received_ops(Op::MuxClientMsg)
            .last()
            .map(|f| f.seq)
            .unwrap();
    assert_eq!(last, 23);
    let unblocks: Vec<u32> =
        p.b.received_ops(Op::UnblockSrvMux)
            .iter()
            .map(|f| f.seq)
            .collect();
    assert_eq!(unblocks, (1..=11).map(|i| 2 * i).collect::<Vec<u32>>());
}

#[test]
fn open_frame_and_ack_follow_the_protocol() {
    let mut p = Pair::connected();
    let (_, s) = open(&mut p, NO_INPUT, Some(Bytes::new()), None);
    let open = p.b.received_ops(Op::ConnectMux)[0].clone();
    assert_eq!(open.seq, 0);
    assert_eq!(open.deadline_ms, 0, "streams have no default deadline");
    // No input: EOF on the open; present-but-empty payload: the zero flag.
    assert_eq!(open.flags, Flags::CRC | Flags::EOF | Flags::PAYLOAD_IS_ZERO);
    let ack = p.a.received_ops(Op::AckMux)[0].clone();
    assert_eq!((ack.seq, ack.handler, ack.deadline_ms), (0, 0, 0));
    assert_eq!(ack.flags, Flags::CRC);
    assert_eq!(
        p.b.s.read(p.now, s),
        Read::End(Ok(())),
        "no-input stream has no input"
    );
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
}

#[test]
fn a_stream_without_input_refuses_items() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, NO_INPUT, None, None);
    assert_eq!(
        p.a.s.send(p.now, c, Bytes::new()),
        Err(SendError::Call(CallError::NoInput))
    );
    p.b.s.send(p.now, s, Bytes::from_static(b"one")).unwrap();
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::Item(Bytes::from_static(b"one")));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.drive();
    p.assert_clean();
}

#[test]
fn client_credits_come_from_the_first_ack() {
    let mut p = Pair::connected();
    let id = p.a.s.open_stream(p.now, WIDE, None, None).unwrap();
    let c = MuxKey::outgoing(id);
    // Before the ack there is no credit.
    assert_eq!(
        p.a.s.send(p.now, c, Bytes::from_static(b"early")),
        Err(SendError::Blocked)
    );
    p.drive();
    assert!(p.a.has_event(|e| *e == Event::Writable(c)));
    for _ in 0..5 {
        p.a.s.send(p.now, c, Bytes::from_static(b"x")).unwrap();
    }
    assert_eq!(
        p.a.s.send(p.now, c, Bytes::from_static(b"x")),
        Err(SendError::Blocked)
    );
    p.drive();
    let (mux, _, _) = p.b.expect_stream();
    let s = MuxKey::incoming(mux);
    let (items, end) = p.b.read_all(p.now, s);
    assert_eq!((items.len(), end), (5, None));
    p.drive();
    // Five unblocks came back: five more credits.
    for _ in 0..5 {
        p.a.s.send(p.now, c, Bytes::from_static(b"y")).unwrap();
    }
    assert_eq!(
        p.a.s.send(p.now, c, Bytes::from_static(b"y")),
        Err(SendError::Blocked)
    );
    p.a.s.cancel(id);
    p.drive();
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    p.assert_clean();
}

#[test]
fn server_error_ends_the_stream_after_its_items() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, WIDE, None, None);
    p.b.s.send(p.now, s, Bytes::from_static(b"a")).unwrap();
    p.b.s.send(p.now, s, Bytes::from_static(b"b")).unwrap();
    p.b.s.finish(p.now, s.id, Err("disk on fire".into()));
    p.drive();
    let (items, end) = p.a.read_all(p.now, c);
    assert_eq!(items, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    assert_eq!(end, Some(Err(CallError::Remote("disk on fire".into()))));
    p.drive();
    p.assert_clean();
}

#[test]
fn subroute_streams_reach_the_routed_handler() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, routed(), Some(Bytes::from_static(b"p")), None);
    let f = p.b.received_ops(Op::ConnectMux)[0].clone();
    assert_eq!(f.subroute, routed().subroute);
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.assert_clean();
}

#[test]
fn an_unregistered_stream_handler_fails_locally() {
    let mut p = Pair::connected();
    assert_eq!(
        p.a.s.open_stream(p.now, ECHO, None, None),
        Err(CallError::UnknownHandler)
    );
    assert_eq!(
        p.a.s.open_stream(p.now, ONLY_B, None, None),
        Err(CallError::UnknownHandler)
    );
}

#[test]
fn a_deadline_that_passed_wins_over_a_later_disconnect_notice() {
    // The client's timer is handled late (a busy driver): the server's own deadline
    // kill arrives first. The stream still ends with DeadlineExceeded, not Disconnected.
    let mut p = Pair::connected();
    let (c, _s) = open(&mut p, STREAM, None, Some(Duration::from_millis(50)));
    let late = p.now + Duration::from_millis(60);
    p.b.s.handle_timeout(late);
    let mut buf = bytes::BytesMut::new();
    let mut notices = Vec::new();
    while p.b.s.poll_transmit(&mut buf).is_some() {
        notices.push(buf.split().freeze());
    }
    assert!(
        !notices.is_empty(),
        "the server tells the client its deadline killed the stream"
    );
    for m in notices {
        p.a.s.handle_message(late, m);
    }
    let mut ended = Vec::new();
    while let Some(e) = p.a.s.poll_event() {
        if let Event::Closed { key, error } = e {
            assert_eq!(key, c);
            ended.push(error);
        }
    }
    assert_eq!(ended, [CallError::DeadlineExceeded]);
}
