use std::time::Duration;

use bytes::Bytes;

use super::harness::*;
use crate::codec::{Flags, MuxConnectError, Op};
use crate::proto::{CallError, Event, HandlerKey, MuxKey};

fn echo_roundtrip(size: usize) {
    let mut p = Pair::connected();
    let payload = pattern(size);
    let id = p.a.s.request(p.now, ECHO, payload.clone(), None).unwrap();
    p.drive();
    let (mux, got, deadline) = p.b.expect_request();
    assert_eq!(got, payload);
    // The server counts the deadline from the arrival of the request.
    assert_eq!(deadline, Some(p.now + Duration::from_secs(60)));
    assert!(p.b.s.respond(p.now, mux, Ok(got)));
    p.drive();
    assert_eq!(p.a.expect_response(id).unwrap(), payload);
    p.assert_clean();
}

#[test]
fn echo_17_bytes() {
    echo_roundtrip(17);
}

#[test]
fn echo_1_mib() {
    echo_roundtrip(1 << 20);
}

#[test]
fn request_frame_has_default_deadline_eof_and_crc() {
    let mut p = Pair::connected();
    p.a.s
        .request(p.now, ECHO, Bytes::from_static(b"x"), None)
        .unwrap();
    p.drive();
    let req = p.b.received_ops(Op::Request)[0].clone();
    assert_eq!(req.seq, 0);
    assert_eq!(req.deadline_ms, 60_000);
    assert_eq!(req.handler, 1);
    assert_eq!(req.flags, Flags::CRC | Flags::EOF);
    let (mux, _, _) = p.b.expect_request();
    p.b.s.respond(p.now, mux, Ok(Bytes::new()));
    p.drive();
    let resp = p.a.received_ops(Op::Response)[0].clone();
    // An empty successful response carries the zero flag.
    assert_eq!(resp.flags, Flags::CRC | Flags::EOF | Flags::PAYLOAD_IS_ZERO);
    assert_eq!(resp.deadline_ms, 0);
    assert_eq!(resp.handler, 0);
}

#[test]
fn remote_error_keeps_the_peers_text() {
    let mut p = Pair::connected();
    let id =
        p.a.s
            .request(p.now, FAIL, Bytes::from_static(b"boom"), None)
            .unwrap();
    p.drive();
    let (mux, _, _) = p.b.expect_request();
    p.b.s.respond(p.now, mux, Err("handler said no".into()));
    p.drive();
    assert_eq!(
        p.a.expect_response(id),
        Err(CallError::Remote("handler said no".into()))
    );
    let resp = p.a.received_ops(Op::Response)[0].clone();
    assert!(resp.flags.contains(Flags::PAYLOAD_IS_ERR | Flags::EOF));
    p.assert_clean();
}

#[test]
fn unknown_handler_is_answered_with_a_mux_connect_error() {
    let mut p = Pair::connected();
    let id =
        p.a.s
            .request(p.now, HandlerKey::new(99), Bytes::new(), None)
            .unwrap();
    p.drive();
    let err = p.a.expect_response(id).unwrap_err();
    assert_eq!(
        err,
        CallError::Refused("Invalid Handler for type: HandlerID(99)".into())
    );
    assert!(err.is_unknown_handler());
    let f = p.a.received_ops(Op::MuxConnectError)[0].clone();
    assert_eq!(f.mux_id, id);
    assert_eq!(f.handler, 99);
    assert_eq!(f.deadline_ms, 60_000);
    assert_eq!(
        MuxConnectError::decode(&f.payload).unwrap().error,
        "Invalid Handler for type: HandlerID(99)"
    );
    // An unknown subroute names the subroute bytes.
    let id =
        p.a.s
            .request(p.now, HandlerKey::with_route(1, "nope"), Bytes::new(), None)
            .unwrap();
    p.drive();
    let Err(CallError::Refused(text)) = p.a.expect_response(id) else {
        panic!()
    };
    assert!(
        text.starts_with("Invalid Handler for type: [1 0 "),
        "{text}"
    );
    // Handler 0 is refused locally.
    assert_eq!(
        p.a.s.request(p.now, HandlerKey::new(0), Bytes::new(), None),
        Err(CallError::UnknownHandler)
    );
    p.assert_clean();
}

#[test]
fn a_handler_only_the_peer_has_works_and_the_reverse_is_refused() {
    let mut p = Pair::connected();
    let id =
        p.a.s
            .request(p.now, ONLY_B, Bytes::from_static(b"hi"), None)
            .unwrap();
    p.drive();
    let (mux, got, _) = p.b.expect_request();
    p.b.s.respond(p.now, mux, Ok(got));
    p.drive();
    assert_eq!(p.a.expect_response(id).unwrap(), "hi");
    let id = p.b.s.request(p.now, ONLY_B, Bytes::new(), None).unwrap();
    p.drive();
    assert!(p.b.expect_response(id).unwrap_err().is_unknown_handler());
    p.assert_clean();
}

#[test]
fn requests_work_from_the_acceptor_side_too() {
    let mut p = Pair::connected();
    let id =
        p.b.s
            .request(p.now, ECHO, Bytes::from_static(b"back"), None)
            .unwrap();
    p.drive();
    let (mux, got, _) = p.a.expect_request();
    p.a.s.respond(p.now, mux, Ok(got));
    p.drive();
    assert_eq!(p.b.expect_response(id).unwrap(), "back");
    p.assert_clean();
}

#[test]
fn deadline_expires_on_both_sides() {
    let mut p = Pair::connected();
    let id =
        p.a.s
            .request(p.now, ECHO, Bytes::new(), Some(Duration::from_millis(50)))
            .unwrap();
    p.drive();
    let (mux, _, deadline) = p.b.expect_request();
    assert_eq!(p.b.received_ops(Op::Request)[0].deadline_ms, 50);
    assert!(deadline.is_some());
    p.advance(Duration::from_millis(48));
    assert!(p.a.response(id).is_none());
    p.advance(Duration::from_millis(2));
    assert_eq!(p.a.expect_response(id), Err(CallError::DeadlineExceeded));
    // The server's deadline (counted from arrival) passes a latency later.
    p.advance(Duration::from_millis(1));
    assert_eq!(
        p.b.expect_closed(MuxKey::incoming(mux)),
        CallError::DeadlineExceeded
    );
    // A late result is dropped without a frame.
    assert!(!p.b.s.respond(p.now, mux, Ok(Bytes::from_static(b"late"))));
    p.drive();
    assert!(p.a.received_ops(Op::Response).is_empty());
    p.assert_clean();
}

#[test]
fn deadline_below_one_millisecond_fails_at_once_and_huge_ones_clamp() {
    let mut p = Pair::connected();
    assert_eq!(
        p.a.s
            .request(p.now, ECHO, Bytes::new(), Some(Duration::from_micros(999))),
        Err(CallError::DeadlineExceeded)
    );
    let id =
        p.a.s
            .request(
                p.now,
                ECHO,
                Bytes::new(),
                Some(Duration::from_secs(100 * 86_400)),
            )
            .unwrap();
    p.drive();
    assert_eq!(p.b.received_ops(Op::Request)[0].deadline_ms, u32::MAX);
    let (mux, _, _) = p.b.expect_request();
    p.b.s.respond(p.now, mux, Ok(Bytes::new()));
    p.drive();
    assert!(p.a.expect_response(id).is_ok());
    p.assert_clean();
}

#[test]
fn local_cancel_frees_the_mux_at_once_and_ignores_the_late_response() {
    let mut p = Pair::connected();
    let id =
        p.a.s
            .request(p.now, ECHO, Bytes::from_static(b"x"), None)
            .unwrap();
    p.drive();
    p.a.s.cancel(id);
    assert_eq!(p.a.s.stats().outgoing_muxes, 0);
    assert_eq!(p.a.s.scheduled_timers(), 0);
    let (mux, got, _) = p.b.expect_request();
    assert!(p.b.s.respond(p.now, mux, Ok(got)));
    p.drive();
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    assert_eq!(p.a.s.stats().stale_frames, 1);
    p.assert_clean();
}

#[test]
fn mux_ids_count_up_from_one_and_continue_across_sessions() {
    let mut p = Pair::connected();
    let ids: Vec<u64> = (0..3)
        .map(|_| p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(p.a.s.last_mux_id(), 3);
    let mut p2 = Pair::connected();
    p2.a.s.continue_mux_ids(3);
    assert_eq!(p2.a.s.request(p2.now, ECHO, Bytes::new(), None).unwrap(), 4);
}

#[test]
fn single_request_event_carries_handler_and_subroute() {
    let mut p = Pair::connected();
    p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    p.drive();
    assert!(p.b.has_event(|e| matches!(e, Event::Request { handler, .. } if *handler == ECHO)));
}
