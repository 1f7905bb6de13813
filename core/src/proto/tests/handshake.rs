use super::harness::*;
use crate::codec::{self, ConnectResponse, Frame, Op};
use crate::proto::{Event, LostReason, Role};

/// A connection ping: a frame that has no place in a handshake.
fn ping_frame() -> Frame {
    let mut f = Frame::new(Op::Ping);
    f.payload = codec::to_payload(|b| codec::Ping::default().encode(b));
    f
}

fn rejection(setup: Setup) -> (String, Pair) {
    let mut p = Pair::new(setup);
    p.drive();
    assert!(p.a.s.is_closed() && p.b.s.is_closed());
    let reason = match p.a.events.pop_front() {
        Some(Event::Lost(LostReason::Rejected(r))) => r,
        other => panic!("dialer did not get a rejection: {other:?}"),
    };
    match p.b.events.pop_front() {
        Some(Event::Lost(LostReason::RejectedPeer(r))) => assert_eq!(r, reason),
        other => panic!("acceptor did not reject: {other:?}"),
    }
    // The rejection was a ConnectResponse without CRC, carrying our ID.
    let resp = p.a.received_ops(Op::ConnectResponse);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].flags.0, 0);
    let r = ConnectResponse::decode(&resp[0].payload).unwrap();
    assert!(!r.accepted);
    assert_eq!(r.id, [2; 16]);
    (reason, p)
}

#[test]
fn handshake_connects_both_roles() {
    let p = Pair::connected();
    assert_eq!(p.a.s.role(), Role::Dialer);
    assert_eq!(p.b.s.role(), Role::Acceptor);
    let (dialer, acceptor) = roles();
    assert_eq!(p.a.s.remote_host(), Some(acceptor));
    assert_eq!(p.b.s.remote_host(), Some(dialer));
    assert_eq!(p.a.s.remote_id(), Some([2; 16]));
    assert_eq!(p.b.s.remote_id(), Some([1; 16]));
    // The connect request: op Connect, no flags, the dialer's identity.
    let req = p.b.received_ops(Op::Connect);
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].flags.0, 0);
    let r = codec::ConnectRequest::decode(&req[0].payload).unwrap();
    assert_eq!(r.host, dialer);
    assert_eq!(r.token, "good");
    assert_eq!(r.time, wall0());
    p.assert_clean();
}

#[test]
fn rejects_unknown_host() {
    let (reason, _) = rejection(Setup {
        dialer_host: Some("http://z:9000".into()),
        ..Setup::default()
    });
    assert_eq!(reason, "unknown incoming host: http://z:9000");
}

#[test]
fn rejects_wrong_dial_direction() {
    let (reason, _) = rejection(Setup {
        wrong_direction: true,
        ..Setup::default()
    });
    assert_eq!(reason, "grid: expected to be client side, not server side");
}

#[test]
fn rejects_clock_skew_beyond_five_minutes() {
    let (reason, _) = rejection(Setup {
        dialer_skew_secs: 301,
        ..Setup::default()
    });
    // 301 s ahead, minus the 1 ms the request spent in flight.
    assert_eq!(
        reason,
        "time difference too large between servers: 300.999s"
    );
    // Within the limit (both directions) connects.
    Pair::connected_with(Setup {
        dialer_skew_secs: -299,
        ..Setup::default()
    });
}

#[test]
fn rejects_bad_token() {
    let (reason, _) = rejection(Setup {
        token: "forged".into(),
        ..Setup::default()
    });
    assert_eq!(reason, "auth token: invalid token");
}

#[test]
fn checks_run_in_order_host_before_direction_before_skew_before_token() {
    let (reason, _) = rejection(Setup {
        dialer_host: Some("http://z:9000".into()),
        dialer_skew_secs: 1000,
        token: "forged".into(),
        ..Setup::default()
    });
    assert!(reason.starts_with("unknown incoming host"), "{reason}");
    let (reason, _) = rejection(Setup {
        wrong_direction: true,
        dialer_skew_secs: 1000,
        token: "forged".into(),
        ..Setup::default()
    });
    assert!(
        reason.starts_with("grid: expected to be client side"),
        "{reason}"
    );
    let (reason, _) = rejection(Setup {
        dialer_skew_secs: -1000,
        token: "forged".into(),
        ..Setup::default()
    });
    assert!(reason.starts_with("time difference too large"), "{reason}");
}

#[test]
fn rejects_a_first_message_that_is_not_a_connect_request() {
    let mut p = Pair::new(Setup::default());
    p.a.s.close(LostReason::Local); // silence the real dialer
    p.inject_to_b(ping_frame().to_bytes());
    p.drive();
    match p.b.events.pop_front() {
        Some(Event::Lost(LostReason::RejectedPeer(r))) => {
            assert_eq!(r, "unexpected connect op: Ping")
        }
        other => panic!("{other:?}"),
    }

    let mut p = Pair::new(Setup::default());
    p.a.s.close(LostReason::Local);
    p.inject_to_b(bytes::Bytes::from_static(&[0x97, 0x00]));
    p.drive();
    match p.b.events.pop_front() {
        Some(Event::Lost(LostReason::RejectedPeer(r))) => {
            assert!(
                r.starts_with("error parsing grid connect: truncated"),
                "{r}"
            )
        }
        other => panic!("{other:?}"),
    }

    let mut p = Pair::new(Setup::default());
    p.a.s.close(LostReason::Local);
    let mut f = Frame::new(Op::Connect);
    f.payload = bytes::Bytes::from_static(&[0x81, 0xa4, b'H', b'o', b's', b't', 0x01]);
    p.inject_to_b(f.to_bytes());
    p.drive();
    match p.b.events.pop_front() {
        Some(Event::Lost(LostReason::RejectedPeer(r))) => {
            assert!(r.starts_with("error parsing connectReq: "), "{r}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn acceptor_gives_up_at_the_handshake_deadline() {
    let mut p = Pair::new(Setup::default());
    p.b.hold = true; // the connect request never arrives
    p.advance(std::time::Duration::from_millis(9_999));
    assert!(!p.b.s.is_closed());
    p.advance(std::time::Duration::from_millis(1));
    assert!(p.b.s.is_closed());
    assert!(matches!(
        p.b.events.pop_front(),
        Some(Event::Lost(LostReason::HandshakeTimeout(_)))
    ));
    // Nothing was sent back.
    p.b.hold = false;
    p.drive();
    assert!(p.a.received.is_empty());
    // The dialer keeps waiting: the protocol lets an acceptor hold the answer back.
    assert!(!p.a.s.is_closed());
}

#[test]
fn calls_before_the_handshake_fail_fast() {
    let mut p = Pair::new(Setup::default());
    let now = p.now;
    assert_eq!(
        p.a.s.request(now, ECHO, bytes::Bytes::new(), None),
        Err(crate::proto::CallError::Disconnected)
    );
}

/// The dialer reads its first message as the connect response: anything else loses the
/// link with the reason, and no call is ever admitted on it.
#[test]
fn dialer_loses_the_link_on_a_first_answer_that_is_not_a_connect_response() {
    let merged = {
        let mut buf = bytes::BytesMut::new();
        codec::encode_merged([ping_frame(), ping_frame()].iter(), &mut buf);
        buf.freeze()
    };
    let mut garbled = Frame::new(Op::ConnectResponse);
    garbled.payload = bytes::Bytes::from_static(&[0x81, 0xa2, b'I', b'D', 0x01]);
    for (msg, want) in [
        (ping_frame().to_bytes(), "unexpected op: Ping"),
        (merged, "unexpected op: Merged"),
        (
            bytes::Bytes::from_static(&[0x97, 0x00]),
            "parsing connect response: truncated",
        ),
        (garbled.to_bytes(), "parsing connect response: "),
    ] {
        let mut p = Pair::new(Setup::default());
        p.b.hold = true; // the real acceptor never answers
        p.step();
        p.inject_to_a(msg);
        p.drive();
        match p.a.events.pop_front() {
            Some(Event::Lost(LostReason::Handshake(why))) => {
                assert!(why.starts_with(want), "{want}: {why}")
            }
            other => panic!("{want}: {other:?}"),
        }
        assert!(p.a.s.is_closed());
        let now = p.now;
        assert_eq!(
            p.a.s.request(now, ECHO, bytes::Bytes::new(), None),
            Err(crate::proto::CallError::Disconnected)
        );
    }
}

/// An acceptor whose first message is a container refuses it: the handshake frames
/// travel alone.
#[test]
fn acceptor_refuses_a_container_as_the_connect_request() {
    let mut p = Pair::new(Setup::default());
    p.a.s.close(LostReason::Local); // silence the real dialer
    let mut buf = bytes::BytesMut::new();
    codec::encode_merged([ping_frame(), ping_frame()].iter(), &mut buf);
    p.inject_to_b(buf.freeze());
    p.drive();
    match p.b.events.pop_front() {
        Some(Event::Lost(LostReason::RejectedPeer(r))) => {
            assert_eq!(r, "unexpected connect op: Merged")
        }
        other => panic!("{other:?}"),
    }
}
