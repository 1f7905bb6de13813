//! Limits at their edges: each bound of [`Config`] just below and just past where it
//! acts (a byte, a frame, a call or a nanosecond), with its default where the virtual
//! clock makes that cheap. The README's limits table names these tests.

use std::time::Duration;

use bytes::Bytes;

use super::flow::{ms, ops, singles};
use super::harness::*;
use super::stream::open;
use crate::codec::{self, DecodeError, Flags, Op};
use crate::proto::{CallError, Config, Event, LostReason, MuxKey};

fn with_config(f: impl FnOnce(&mut Config)) -> Setup {
    let mut setup = Setup::default();
    f(&mut setup.config);
    setup
}

/// A request frame as the peer would send it.
fn request_frame(id: u64, payload: Bytes) -> codec::Frame {
    let mut f = forge(Op::Request, id, 0, Flags::EOF, b"");
    f.payload = payload;
    f.handler = ECHO.id;
    f.deadline_ms = 60_000;
    f
}

/// The default 16 MiB: a message of exactly that size is parsed, one byte more is
/// rejected by its size and drops the link. (`faults.rs` row 4 does the same with a
/// configured 4 KiB and a real peer.)
#[test]
fn max_frame_size_default_accepts_16_mib_and_drops_one_byte_more() {
    let max = Config::default().max_frame_size;
    assert_eq!(max, 16 << 20);
    let mut p = Pair::connected();
    let mut f = request_frame(1000, Bytes::new());
    let header = f.encoded_len();
    // The payload's length prefix grows by 3 bytes (bin8 to bin32): allow for it.
    f.payload = Bytes::from(vec![7u8; max - header - 3]);
    assert_eq!(f.encoded_len(), max);
    p.inject_to_b(f.to_bytes());
    p.drive();
    assert_eq!(p.b.expect_request().0, 1000);
    assert!(p.b.s.is_connected());

    p.inject_to_b(Bytes::from(vec![0xc1; max + 1]));
    p.step();
    assert!(p.b.s.is_closed());
    assert!(p.b.has_event(|e| *e
        == Event::Lost(LostReason::Decode(DecodeError::TooLarge {
            len: max + 1,
            max,
        }))));
}

/// `max_queued_frames` and `max_queued_bytes`: a call is admitted while the queue is
/// below both (so the call that reaches or crosses a limit goes in), and refused with
/// `Congested` once either is reached; sending drains the queue and calls are admitted
/// again. Nothing else is affected.
#[test]
fn queue_limits_refuse_new_calls_exactly_at_the_limit() {
    let mut p = Pair::connected_with(with_config(|c| {
        c.max_queued_frames = 8;
        c.max_queued_bytes = 1000;
    }));
    let x = || Bytes::from_static(b"x");
    let mut ids = Vec::new();
    // Frames: the eighth call fills the queue, the ninth is refused.
    for _ in 0..7 {
        ids.push(p.a.s.request(p.now, ECHO, x(), None).unwrap());
    }
    assert!(!p.a.s.is_congested());
    ids.push(p.a.s.open_stream(p.now, STREAM, None, None).unwrap());
    assert_eq!(p.a.s.stats().queued_frames, 8);
    assert!(p.a.s.is_congested());
    assert_eq!(
        p.a.s.request(p.now, ECHO, x(), None),
        Err(CallError::Congested)
    );
    assert_eq!(
        p.a.s.open_stream(p.now, STREAM, None, None),
        Err(CallError::Congested)
    );
    // One transmit empties it.
    p.step();
    assert_eq!(p.a.s.stats().queued_frames, 0);
    assert!(!p.a.s.is_congested());
    let sid = ids.pop().unwrap();
    p.drive();
    for _ in 0..7 {
        let (mux, payload, _) = p.b.expect_request();
        assert!(p.b.s.respond(p.now, mux, Ok(payload)));
    }
    let (smux, _, _) = p.b.expect_stream();
    p.a.s.cancel(sid);
    p.drive();
    for id in ids {
        assert_eq!(p.a.expect_response(id).unwrap(), x());
    }
    assert_eq!(
        p.b.expect_closed(MuxKey::incoming(smux)),
        CallError::CancelledByRemote
    );

    // Bytes: 999 queued admit one more call, 1000 refuse the next.
    let a = p.a.s.request(p.now, ECHO, pattern(999), None).unwrap();
    assert!(!p.a.s.is_congested());
    let b = p.a.s.request(p.now, ECHO, x(), None).unwrap();
    assert_eq!(p.a.s.stats().queued_bytes, 1000);
    assert_eq!(
        p.a.s.request(p.now, ECHO, Bytes::new(), None),
        Err(CallError::Congested)
    );
    // A call larger than the limit goes into a queue below it: the one that crosses.
    p.step();
    let c = p.a.s.request(p.now, ECHO, pattern(5000), None).unwrap();
    assert_eq!(p.a.s.stats().queued_bytes, 5000);
    assert_eq!(
        p.a.s.request(p.now, ECHO, x(), None),
        Err(CallError::Congested)
    );
    p.drive();
    for _ in 0..3 {
        let (mux, payload, _) = p.b.expect_request();
        assert!(p.b.s.respond(p.now, mux, Ok(payload)));
    }
    p.drive();
    assert_eq!(p.a.expect_response(a).unwrap(), pattern(999));
    assert_eq!(p.a.expect_response(b).unwrap(), x());
    assert_eq!(p.a.expect_response(c).unwrap(), pattern(5000));
    assert!(p.a.s.is_connected() && p.b.s.is_connected());
    singles(&mut p, 3);
    p.assert_clean();
}

/// Rapid open and cancel: calls from the peer are admitted while the queue is full (so
/// a caller is not left to wait out its deadline), but not past `max_queued_frames +
/// max_muxes` queued frames. With 8 + 4, a message of 20 stream opens each cancelled at
/// once admits exactly 12 (each queues its ack), drops the other 8 as replies are
/// dropped, and the link stays.
#[test]
fn open_cancel_churn_is_admitted_up_to_queued_frames_plus_max_muxes() {
    let mut p = Pair::connected_with(with_config(|c| {
        c.max_queued_frames = 8;
        c.max_muxes = 4;
    }));
    p.b.s.handle_message(p.now, open_cancel_churn(20));
    let st = p.b.s.stats();
    assert_eq!(st.incoming_muxes, 0);
    assert_eq!(st.queued_frames, 12);
    assert_eq!(st.replies_dropped, 8);
    let mut opened = Vec::new();
    while let Some(e) = p.b.s.poll_event() {
        match e {
            Event::StreamOpened { mux_id, .. } => opened.push(mux_id),
            Event::Closed {
                error: CallError::CancelledByRemote,
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(opened, (1..=12).collect::<Vec<u64>>());
    // Once the queue drained, the peer's calls are admitted again.
    p.drive();
    p.inject_to_b(request_frame(100, Bytes::from_static(b"after")).to_bytes());
    p.drive();
    assert_eq!(p.b.expect_request().0, 100);
    assert!(p.b.s.is_connected());
}

/// `max_clock_skew` (5 min): a dialer exactly 5 min ahead or behind connects; a
/// nanosecond more, either way, is rejected with the measured difference.
#[test]
fn clock_skew_of_exactly_five_minutes_connects_and_a_nanosecond_more_is_rejected() {
    assert_eq!(Config::default().max_clock_skew, Duration::from_secs(300));
    let skewed = |secs: i64, latency: Duration| Setup {
        dialer_skew_secs: secs,
        latency,
        ..Setup::default()
    };
    // The acceptor compares the request's time with its own clock at arrival: the
    // latency moves the measured difference by a nanosecond.
    for secs in [300, -300] {
        Pair::connected_with(skewed(secs, Duration::ZERO));
    }
    Pair::connected_with(skewed(300, Duration::from_nanos(1)));
    let mut p = Pair::new(skewed(-300, Duration::from_nanos(1)));
    p.drive();
    assert!(p.a.s.is_closed() && p.b.s.is_closed());
    assert_eq!(
        p.a.events.pop_front(),
        Some(Event::Lost(LostReason::Rejected(
            "time difference too large between servers: 300.000000001s".into()
        )))
    );
    let mut p = Pair::new(skewed(301, Duration::ZERO));
    p.drive();
    assert!(p.a.s.is_closed() && p.b.s.is_closed());
}

/// Keepalive far away, so that only stream liveness acts; no latency, so that a pong
/// can arrive exactly a timeout before a tick.
fn stream_liveness_defaults() -> Setup {
    Setup {
        config: Config {
            ping_interval: Duration::from_secs(1000),
            pong_timeout: Duration::from_secs(2000),
            ..Config::default()
        },
        latency: Duration::ZERO,
        ..Setup::default()
    }
}

/// `mux_ping_interval` (15 s) and `mux_pong_timeout` (30 s), at their defaults: the
/// client pings every 15 s and gives up at the first ping tick *more* than 30 s after
/// its last pong. A pong exactly 30 s before a tick is enough; the next tick ends it.
#[test]
fn stream_client_gives_up_at_the_first_tick_past_the_default_pong_timeout() {
    let d = Config::default();
    assert_eq!(
        (d.mux_ping_interval, d.mux_pong_timeout),
        (Duration::from_secs(15), Duration::from_secs(30))
    );
    let mut p = Pair::connected_with(stream_liveness_defaults());
    let t0 = p.now;
    let (c, s) = open(&mut p, STREAM, None, None);
    let secs = |n: u64| t0 + Duration::from_secs(n);
    // The first ping at +15 s is answered at once: the last pong is at +15 s.
    p.advance_to(secs(15));
    assert_eq!(ops(&p.a, Op::Pong, c.id).len(), 1);
    p.a.hold = true;
    // At the tick at +45 s the pong is exactly 30 s old: the client pings on.
    p.advance_to(secs(60) - Duration::from_nanos(1));
    assert!(p.a.s.contains(c), "{:?}", p.a.events);
    assert_eq!(ops(&p.b, Op::Ping, c.id).len(), 3);
    p.advance_to(secs(60));
    assert_eq!(p.a.expect_closed(c), CallError::Disconnected);
    p.a.hold = false;
    p.drive();
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    p.assert_clean();
}

/// `server_mux_timeout` (60 s), at its default: the server checks every
/// `mux_ping_interval` and cancels its stream at the first check *more* than 60 s
/// after the client's last ping; exactly 60 s is not enough.
#[test]
fn stream_server_cancels_at_the_first_tick_past_the_default_server_timeout() {
    assert_eq!(
        Config::default().server_mux_timeout,
        Duration::from_secs(60)
    );
    let mut p = Pair::connected_with(stream_liveness_defaults());
    let t0 = p.now;
    let (c, s) = open(&mut p, STREAM, None, None);
    let secs = |n: u64| t0 + Duration::from_secs(n);
    // The client's first ping arrives at +15 s; nothing arrives after.
    p.advance_to(secs(15));
    assert_eq!(ops(&p.b, Op::Ping, c.id).len(), 1);
    p.b.hold = true;
    // Without pongs the client gives up at +60 s (45 s after its last pong).
    p.advance_to(secs(60));
    assert_eq!(p.a.expect_closed(c), CallError::Disconnected);
    // At the server's check at +75 s the last ping is exactly 60 s old.
    p.advance_to(secs(90) - Duration::from_nanos(1));
    assert!(p.b.s.contains(s), "{:?}", p.b.events);
    p.advance_to(secs(90));
    assert_eq!(p.b.expect_closed(s), CallError::Disconnected);
    p.b.hold = false;
    p.drive();
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

/// `default_request_deadline` (60 s): a request made without a deadline carries
/// 60 000 ms, fails on the caller exactly 60 s after it was made, and is cancelled on
/// the server exactly 60 s after it arrived; an answer after that goes nowhere.
#[test]
fn a_request_without_a_deadline_ends_exactly_at_the_default_deadline_on_both_sides() {
    assert_eq!(
        Config::default().default_request_deadline,
        Duration::from_secs(60)
    );
    let mut p = Pair::connected();
    let t0 = p.now;
    let id = p.a.s.request(t0, ECHO, Bytes::new(), None).unwrap();
    p.drive();
    let arrived = t0 + ms(1);
    let (mux, _, deadline) = p.b.expect_request();
    assert_eq!(ops(&p.b, Op::Request, id)[0].deadline_ms, 60_000);
    assert_eq!(deadline, Some(arrived + Duration::from_secs(60)));
    let end = t0 + Duration::from_secs(60);
    p.advance_to(end - Duration::from_nanos(1));
    assert!(p.a.response(id).is_none() && p.b.s.contains(MuxKey::incoming(mux)));
    p.advance_to(end);
    assert_eq!(p.a.expect_response(id), Err(CallError::DeadlineExceeded));
    p.advance_to(arrived + Duration::from_secs(60) - Duration::from_nanos(1));
    assert!(p.b.s.contains(MuxKey::incoming(mux)));
    p.advance_to(arrived + Duration::from_secs(60));
    assert_eq!(
        p.b.expect_closed(MuxKey::incoming(mux)),
        CallError::DeadlineExceeded
    );
    assert!(!p.b.s.respond(p.now, mux, Ok(Bytes::new())));
    p.drive();
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

/// A burst of calls grows the session's queue, tables and timers; once it is over,
/// `shrink_buffers` gives the room back without touching what is still queued, and the
/// session goes on working.
#[test]
fn shrink_buffers_gives_back_what_a_burst_grew_and_keeps_what_is_queued() {
    let mut p = Pair::connected();
    let idle = p.a.s.buffer_bytes();
    let burst: Vec<u64> = (0..2000)
        .map(|_| p.a.s.request(p.now, ECHO, pattern(16), None).unwrap())
        .collect();
    let grown = p.a.s.buffer_bytes();
    assert!(grown > idle + 2000 * 64, "{idle} -> {grown} bytes");
    // Shrinking now keeps every queued frame: all 2000 arrive and are answered.
    p.a.s.shrink_buffers();
    assert_eq!(p.a.s.stats().queued_frames, 2000);
    p.drive();
    for _ in 0..2000 {
        let (mux, got, _) = p.b.expect_request();
        assert!(p.b.s.respond(p.now, mux, Ok(got)));
    }
    p.drive();
    for id in burst {
        assert_eq!(p.a.expect_response(id).unwrap(), pattern(16));
    }
    let after = p.a.s.buffer_bytes();
    assert!(
        after >= grown,
        "the burst's room stays until shrunk: {after}"
    );
    p.a.s.shrink_buffers();
    let shrunk = p.a.s.buffer_bytes();
    assert!(
        shrunk <= idle + 1024,
        "{idle} idle, {grown} grown, {shrunk} shrunk"
    );
    // The session works as before.
    let id = p.a.s.request(p.now, ECHO, pattern(3), None).unwrap();
    p.drive();
    let (mux, got, _) = p.b.expect_request();
    assert!(p.b.s.respond(p.now, mux, Ok(got)));
    p.drive();
    assert_eq!(p.a.expect_response(id).unwrap(), pattern(3));
    p.assert_clean();
}
