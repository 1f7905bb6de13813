//! Liveness: stream pings and their timeouts, connection keepalive, and the end of a
//! session (every mux ends exactly once, queued frames are dropped).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::flow::{ms, ops};
use super::harness::*;
use super::stream::open;
use crate::codec::{self, DecodeError, Op, Ping, Pong, Time};
use crate::proto::{CallError, Config, Event, LostReason, MuxKey, Read, SendError, Unread};

/// Stream pings every 100 ms; the client gives up after 200 ms without a pong or an
/// item, the server after 400 ms without a ping.
fn fast() -> Setup {
    Setup {
        config: Config {
            mux_ping_interval: ms(100),
            mux_pong_timeout: ms(200),
            server_mux_timeout: ms(400),
            ..Config::default()
        },
        ..Setup::default()
    }
}

fn alive(p: &Pair, c: MuxKey, s: MuxKey) {
    assert!(p.a.s.contains(c), "client stream killed: {:?}", p.a.events);
    assert!(p.b.s.contains(s), "server stream killed: {:?}", p.b.events);
    assert!(
        !p.a.has_event(|e| matches!(e, Event::Closed { .. })),
        "{:?}",
        p.a.events
    );
    assert!(
        !p.b.has_event(|e| matches!(e, Event::Closed { .. })),
        "{:?}",
        p.b.events
    );
}

/// Cancels from the client and checks the server was told.
fn cancel_and_check(mut p: Pair, c: MuxKey, s: MuxKey) {
    p.a.s.cancel(c.id);
    p.drive();
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    p.drive();
    p.assert_clean();
}

#[test]
fn an_idle_stream_is_pinged_and_never_killed() {
    let mut p = Pair::connected_with(fast());
    let (c, s) = open(&mut p, STREAM, None, None);
    p.advance(ms(1_000));
    alive(&p, c, s);
    // Ten pings, stamped in the client's sequence after the open; each answered.
    let pings: Vec<u32> = ops(&p.b, Op::Ping, c.id).iter().map(|f| f.seq).collect();
    assert_eq!(pings, (1..=10).collect::<Vec<u32>>());
    let pongs = ops(&p.a, Op::Pong, c.id);
    assert_eq!(pongs.len(), 10);
    for (pong, seq) in pongs.iter().zip(1..) {
        // A pong echoes the ping's seq and is not itself in the server's sequence.
        assert_eq!(pong.seq, seq);
        let body = Pong::decode(&pong.payload).unwrap();
        assert!(!body.not_found && body.err.is_none(), "{body:?}");
        assert_eq!(
            body.t,
            Time::GO_ZERO,
            "a ping without payload is answered with zero time"
        );
    }
    assert!(
        ops(&p.b, Op::Ping, c.id)
            .iter()
            .all(|f| f.payload.is_empty())
    );
    cancel_and_check(p, c, s);
}

#[test]
fn a_stream_busy_sending_to_the_client_is_never_killed() {
    let mut p = Pair::connected_with(fast());
    let (c, s) = open(&mut p, NO_INPUT, None, None);
    for i in 0..100u8 {
        p.b.s.send(p.now, s, Bytes::from(vec![i])).unwrap();
        p.advance(ms(5));
        assert_eq!(p.a.s.read(p.now, c), Read::Item(Bytes::from(vec![i])));
        p.advance(ms(5));
    }
    alive(&p, c, s);
    assert!(ops(&p.b, Op::Ping, c.id).len() >= 9);
    cancel_and_check(p, c, s);
}

#[test]
fn a_stream_busy_sending_to_the_server_is_never_killed() {
    let mut p = Pair::connected_with(fast());
    let (c, s) = open(&mut p, STREAM, None, None);
    for i in 0..100u8 {
        p.a.s.send(p.now, c, Bytes::from(vec![i])).unwrap();
        p.advance(ms(10));
        assert_eq!(p.b.s.read(p.now, s), Read::Item(Bytes::from(vec![i])));
        p.drive();
    }
    alive(&p, c, s);
    cancel_and_check(p, c, s);
}

#[test]
fn a_stream_blocked_both_ways_keeps_pinging_and_is_never_killed() {
    // Neither side reads: both are out of credit for ten ping intervals.
    let mut p = Pair::connected_with(fast());
    let (c, s) = open(&mut p, STREAM, None, None);
    p.a.s.send(p.now, c, Bytes::from_static(b"req")).unwrap();
    p.b.s.send(p.now, s, Bytes::from_static(b"resp")).unwrap();
    p.drive();
    assert_eq!(p.a.s.send(p.now, c, Bytes::new()), Err(SendError::Blocked));
    assert_eq!(p.b.s.send(p.now, s, Bytes::new()), Err(SendError::Blocked));
    p.advance(ms(1_000));
    alive(&p, c, s);
    assert!(ops(&p.b, Op::Ping, c.id).len() >= 10);
    cancel_and_check(p, c, s);
}

#[test]
fn client_stream_fails_when_the_client_stops_processing_inbound_frames() {
    let mut p = Pair::connected_with(fast());
    let t0 = p.now;
    let (c, s) = open(&mut p, STREAM, None, None);
    // Pings go out at t0+100, +200, ...; the pong of the one at +200 arrives at +202.
    p.advance_to(t0 + ms(250));
    alive(&p, c, s);
    p.a.hold = true;
    let last_pong = t0 + ms(202);
    // Not before the timeout has passed; at the latest one ping interval after it.
    p.advance_to(last_pong + ms(200));
    assert!(p.a.s.contains(c));
    p.advance_to(last_pong + ms(300));
    assert_eq!(p.a.expect_closed(c), CallError::Disconnected);
    assert!(!p.a.s.contains(c));
    // The client's stamped cancel reaches the server (its inbound is not held).
    p.drive();
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    let pings = ops(&p.b, Op::Ping, c.id).len() as u32;
    let notice = ops(&p.b, Op::DisconnectServerMux, c.id);
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].seq, 1 + pings, "stamped after the pings");
    p.a.hold = false;
    p.drive();
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

#[test]
fn server_cancels_the_stream_when_pings_stop_arriving() {
    let mut p = Pair::connected_with(fast());
    let t0 = p.now;
    let (c, s) = open(&mut p, STREAM, None, None);
    p.advance_to(t0 + ms(250));
    alive(&p, c, s);
    // The ping sent at t0+200 arrived at t0+201; nothing arrives after.
    p.b.hold = true;
    let last_ping = t0 + ms(201);
    p.advance_to(last_ping + ms(400));
    assert!(p.b.s.contains(s));
    p.advance_to(last_ping + ms(500));
    assert_eq!(p.b.expect_closed(s), CallError::Disconnected);
    assert!(!p.b.s.contains(s));
    // The client lost its pongs too and failed first.
    assert_eq!(p.a.expect_closed(c), CallError::Disconnected);
    p.b.hold = false;
    p.drive();
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

#[test]
fn items_count_as_liveness_for_the_client() {
    // The server gets no pings (its inbound is held) and answers none, but it sends an
    // item every 100 ms from its five credits: the client lives while items arrive.
    let mut setup = fast();
    setup.config.server_mux_timeout = ms(10_000);
    let mut p = Pair::connected_with(setup);
    let t0 = p.now;
    let (c, s) = open(&mut p, WIDE, None, None);
    p.b.hold = true;
    for i in 0..5u8 {
        p.b.s.send(p.now, s, Bytes::from(vec![i])).unwrap();
        p.advance(ms(100));
    }
    // The last item arrived at t0+403; the client gives up at the first tick more than
    // 200 ms later (t0+700), not at t0+300 as it would without items.
    p.advance_to(t0 + ms(699));
    assert!(p.a.s.contains(c), "{:?}", p.a.events);
    p.advance_to(t0 + ms(700));
    assert_eq!(p.a.expect_closed(c), CallError::Disconnected);
    p.b.hold = false;
    p.drive();
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    p.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Connection keepalive and the end of a session.

/// Opens, on each side, a single request and a stream towards the other, none answered.
/// Returns the instant `a` connected and every mux key of `a` then of `b`.
pub(crate) fn busy_pair(setup: Setup) -> (Pair, Instant, Vec<MuxKey>, Vec<MuxKey>) {
    let mut p = Pair::connected_with(setup);
    let t0 = p.now;
    let ra =
        p.a.s
            .request(p.now, ECHO, Bytes::from_static(b"a"), None)
            .unwrap();
    let sa = p.a.s.open_stream(p.now, STREAM, None, None).unwrap();
    let rb =
        p.b.s
            .request(p.now, ECHO, Bytes::from_static(b"b"), None)
            .unwrap();
    let sb = p.b.s.open_stream(p.now, NO_INPUT, None, None).unwrap();
    p.drive();
    let (b_req, _, _) = p.b.expect_request();
    let (b_stream, _, _) = p.b.expect_stream();
    let (a_req, _, _) = p.a.expect_request();
    let (a_stream, _, _) = p.a.expect_stream();
    let a_keys = vec![
        MuxKey::outgoing(ra),
        MuxKey::outgoing(sa),
        MuxKey::incoming(a_req),
        MuxKey::incoming(a_stream),
    ];
    let b_keys = vec![
        MuxKey::outgoing(rb),
        MuxKey::outgoing(sb),
        MuxKey::incoming(b_req),
        MuxKey::incoming(b_stream),
    ];
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    (p, t0, a_keys, b_keys)
}

/// Checks that `n`'s events are exactly: one end per mux in `keys` (a disconnected
/// response for the outgoing single requests `single`, `Closed(Disconnected)` for the
/// others), then `Lost`; returns the reason. The session is empty afterwards.
pub(crate) fn ended_once(n: &mut Node, keys: &[MuxKey], single: &[u64]) -> LostReason {
    while let Some(e) = n.s.poll_event() {
        n.events.push_back(e);
    }
    let events = n.take_events();
    let (last, ends) = events.split_last().expect("events");
    let Event::Lost(reason) = last else {
        panic!("last event is not Lost: {events:?}")
    };
    let mut seen = BTreeMap::new();
    for e in ends {
        let key = match e {
            Event::Response {
                mux_id,
                result: Err(CallError::Disconnected),
            } if single.contains(mux_id) => MuxKey::outgoing(*mux_id),
            Event::Closed {
                key,
                error: CallError::Disconnected,
            } if !(key.dir == crate::proto::Dir::Outgoing && single.contains(&key.id)) => *key,
            other => panic!("unexpected event {other:?}"),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    let want: BTreeMap<MuxKey, i32> = keys.iter().map(|k| (*k, 1)).collect();
    assert_eq!(seen, want);
    let st = n.s.stats();
    assert_eq!(
        (st.outgoing_muxes, st.incoming_muxes, st.queued_frames),
        (0, 0, 0)
    );
    assert_eq!(n.s.scheduled_timers(), 0);
    assert_eq!(n.s.poll_timeout(), None);
    assert!(n.s.is_closed() && !n.s.is_connected());
    reason.clone()
}

fn keepalive_setup() -> Setup {
    // Long stream liveness, so that only the connection keepalive acts.
    Setup {
        config: Config {
            mux_ping_interval: Duration::from_secs(100),
            mux_pong_timeout: Duration::from_secs(200),
            server_mux_timeout: Duration::from_secs(400),
            ..Config::default()
        },
        ..Setup::default()
    }
}

#[test]
fn connection_pings_follow_the_protocol_and_measure_the_round_trip() {
    let mut p = Pair::connected_with(keepalive_setup());
    // `a` connected at t0 (the response took 2 ms from the start), `b` 1 ms earlier.
    let t0 = p.now;
    p.advance_to(t0 + Duration::from_secs(10) - Duration::from_nanos(1));
    assert!(p.b.received_ops(Op::Ping).is_empty());
    assert_eq!(p.a.s.stats().last_rtt, None);
    p.advance_to(t0 + Duration::from_secs(10) + ms(5));
    let pings = p.b.received_ops(Op::Ping);
    assert_eq!(pings.len(), 1);
    let ping = pings[0];
    assert_eq!((ping.mux_id, ping.seq, ping.handler), (0, 0, 0));
    assert_eq!(ping.deadline_ms, 10_000);
    assert_eq!(ping.flags.0, 0, "connection pings carry no CRC");
    // The payload is {"t": the sender's wall clock}: a's clock started at wall0 two
    // milliseconds before it connected.
    let t = Ping::decode(&ping.payload).unwrap().t;
    assert_eq!(
        t,
        Time::from_unix_nanos(wall0().as_unix_nanos() + 10_002_000_000)
    );
    // The pong echoes the ping's fields and its time.
    let pongs: Vec<_> = p.a.received_ops(Op::Pong);
    assert_eq!(pongs.len(), 1);
    assert_eq!(
        (pongs[0].mux_id, pongs[0].seq, pongs[0].deadline_ms),
        (0, 0, 10_000)
    );
    let pong = Pong::decode(&pongs[0].payload).unwrap();
    assert_eq!((pong.not_found, pong.err, pong.t), (false, None, t));
    assert_eq!(p.a.s.stats().last_rtt, Some(ms(2)));
    assert_eq!(p.b.s.stats().last_rtt, Some(ms(2)));
    // And every interval after.
    p.advance(Duration::from_secs(50));
    assert_eq!(p.b.received_ops(Op::Ping).len(), 6);
    assert_eq!(p.a.received_ops(Op::Pong).len(), 6);
    assert!(p.a.s.is_connected() && p.b.s.is_connected());
    p.assert_clean();
}

#[test]
fn keepalive_timeout_ends_every_mux_once_exactly_at_the_pong_timeout() {
    let (mut p, t0, a_keys, b_keys) = busy_pair(keepalive_setup());
    // `a` pings at t0+10 s and gets its pong at +10.002 s; `b` pings at t0+9.999 s and
    // gets its pong at +10.001 s. Then `a` stops processing inbound frames: neither
    // gets another pong.
    p.advance_to(t0 + Duration::from_secs(12));
    p.a.hold = true;
    let (a_last, b_last) = (t0 + ms(10_002), t0 + ms(10_001));
    let timeout = Duration::from_secs(20);
    p.advance_to(b_last + timeout - Duration::from_nanos(1));
    assert!(p.a.s.is_connected() && p.b.s.is_connected());
    p.advance_to(b_last + timeout);
    assert!(p.b.s.is_closed() && p.a.s.is_connected());
    assert_eq!(
        ended_once(&mut p.b, &b_keys, &[b_keys[0].id]),
        LostReason::KeepaliveTimeout(timeout)
    );
    p.advance_to(a_last + timeout);
    assert!(p.a.s.is_closed());
    assert_eq!(
        ended_once(&mut p.a, &a_keys, &[a_keys[0].id]),
        LostReason::KeepaliveTimeout(timeout)
    );
    // Nothing happens any more.
    p.a.hold = false;
    p.advance(Duration::from_secs(100));
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

#[test]
fn ordinary_traffic_does_not_refresh_the_keepalive() {
    // Only pongs count: a link where requests flow but pongs to `a` are lost is dropped
    // by `a` 20 s after it connected.
    let mut p = Pair::connected_with(keepalive_setup());
    let t0 = p.now;
    let mut next_request = t0 + ms(500);
    let mut answered = 0;
    for _ in 0..100_000 {
        if p.now >= next_request {
            p.a.s
                .request(p.now, ECHO, Bytes::from_static(b"x"), None)
                .unwrap();
            next_request += Duration::from_secs(1);
        }
        while let Some((mux, payload, _)) = p.b.find(|e| match e {
            Event::Request {
                mux_id, payload, ..
            } => Some((*mux_id, payload.clone(), ())),
            _ => None,
        }) {
            p.b.s.respond(p.now, mux, Ok(payload));
        }
        let moved = p.step();
        // Connection pongs to `a` vanish on the way (they never share a message with a
        // response: requests go out half a second away from the pings).
        p.a.inbox.retain(|(_, m)| !is_conn_pong(m));
        answered +=
            p.a.take_events()
                .iter()
                .filter(|e| matches!(e, Event::Response { result: Ok(_), .. }))
                .count();
        if p.a.s.is_closed() {
            break;
        }
        if !moved {
            let next = [
                p.a.s.poll_timeout(),
                p.b.s.poll_timeout(),
                Some(next_request),
            ]
            .into_iter()
            .chain(p.a.inbox.front().map(|(at, _)| Some(*at)))
            .chain(p.b.inbox.front().map(|(at, _)| Some(*at)))
            .flatten()
            .min()
            .unwrap();
            p.now = p.now.max(next);
        }
    }
    assert!(p.a.s.is_closed());
    assert_eq!(p.now, t0 + Duration::from_secs(20));
    assert_eq!(answered, 20, "requests kept flowing until the end");
    assert_eq!(p.b.received_ops(Op::Pong).len(), 1, "b got its pong");
}

fn is_conn_pong(m: &Bytes) -> bool {
    codec::decode(m, usize::MAX)
        .and_then(|m| m.into_frames())
        .is_ok_and(|fs| fs.iter().any(|f| f.op == Op::Pong && f.mux_id == 0))
}

#[test]
fn transport_loss_ends_every_mux_once_and_drops_queued_frames() {
    let (mut p, _, a_keys, _) = busy_pair(Setup::default());
    // Frames waiting in the queue when the transport fails.
    let c = a_keys[1];
    p.a.s.send(p.now, c, Bytes::from_static(b"queued")).unwrap();
    p.a.s
        .respond(p.now, a_keys[2].id, Ok(Bytes::from_static(b"late")));
    let queued = p.a.s.stats().queued_frames;
    assert_eq!(queued, 2);
    // Only three muxes are left: the single request just answered is gone.
    let keys: Vec<MuxKey> = a_keys.iter().copied().filter(|k| *k != a_keys[2]).collect();
    p.a.s
        .close(LostReason::Transport("connection reset".into()));
    let reason = ended_once(&mut p.a, &keys, &[keys[0].id]);
    assert_eq!(reason, LostReason::Transport("connection reset".into()));
    let mut buf = bytes::BytesMut::new();
    assert!(p.a.s.poll_transmit(&mut buf).is_none());
    after_loss(&mut p.a, &a_keys);
}

#[test]
fn a_malformed_message_ends_every_mux_once() {
    let (mut p, _, a_keys, _) = busy_pair(Setup::default());
    p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    let extra = MuxKey::outgoing(p.a.s.last_mux_id());
    // A frame array of 6 elements.
    p.inject_to_a(Bytes::from_static(&[0x96, 0, 0, 0, 0, 0, 0]));
    p.step();
    // The queued request died with the session too.
    let mut keys = a_keys.clone();
    keys.push(extra);
    let reason = ended_once(&mut p.a, &keys, &[keys[0].id, extra.id]);
    assert!(matches!(
        reason,
        LostReason::Decode(DecodeError::ArrayLength { len: 6, .. })
    ));
    assert_eq!(p.a.s.stats().queued_frames, 0);
    after_loss(&mut p.a, &a_keys);
}

/// After the loss every command fails or is ignored, and nothing more happens.
fn after_loss(n: &mut Node, keys: &[MuxKey]) {
    let now = Instant::now();
    assert_eq!(
        n.s.request(now, ECHO, Bytes::new(), None),
        Err(CallError::Disconnected)
    );
    assert_eq!(
        n.s.open_stream(now, STREAM, None, None),
        Err(CallError::Disconnected)
    );
    assert!(!n.s.respond(now, keys[2].id, Ok(Bytes::new())));
    assert!(!n.s.finish(now, keys[3].id, Ok(())));
    assert_eq!(
        n.s.send(now, keys[1], Bytes::new()),
        Err(SendError::Call(CallError::Closed))
    );
    assert_eq!(n.s.read(now, keys[1]), Read::End(Err(CallError::Closed)));
    n.s.cancel(keys[0].id);
    n.s.handle_message(
        now,
        forge(Op::Ping, 0, 0, codec::Flags::NONE, b"").to_bytes(),
    );
    n.s.handle_timeout(now + Duration::from_secs(3600));
    n.s.close(LostReason::Local);
    assert_eq!(n.s.poll_event(), None);
    assert_eq!(n.s.stats().queued_frames, 0);
}

#[test]
fn loss_ends_the_muxes_in_id_order_outgoing_first() {
    let mut p = Pair::connected();
    // Enough muxes of both kinds that a table's own order would show.
    let a_out: Vec<u64> = (0..300)
        .map(|i| {
            if i % 3 == 0 {
                p.a.s.open_stream(p.now, WIDE, None, None).unwrap()
            } else {
                p.a.s.request(p.now, ECHO, pattern(8), None).unwrap()
            }
        })
        .collect();
    let b_out: Vec<u64> = (0..300)
        .map(|i| {
            if i % 2 == 0 {
                p.b.s.open_stream(p.now, WIDE, None, None).unwrap()
            } else {
                p.b.s.request(p.now, ECHO, pattern(8), None).unwrap()
            }
        })
        .collect();
    p.drive();
    p.a.take_events();
    p.b.take_events();
    assert_eq!(p.a.s.stats().outgoing_muxes, a_out.len());
    assert_eq!(p.a.s.stats().incoming_muxes, b_out.len());
    p.a.s.close(LostReason::Local);
    let mut order = Vec::new();
    while let Some(e) = p.a.s.poll_event() {
        match e {
            Event::Response { mux_id, .. } => order.push(MuxKey::outgoing(mux_id)),
            Event::Closed { key, .. } => order.push(key),
            Event::Lost(_) => break,
            other => panic!("unexpected event {other:?}"),
        }
    }
    let want: Vec<MuxKey> = a_out
        .iter()
        .map(|id| MuxKey::outgoing(*id))
        .chain(b_out.iter().map(|id| MuxKey::incoming(*id)))
        .collect();
    assert_eq!(order, want);
}

/// What an outgoing stream received and had not read survives the loss
/// ([`crate::proto::Session::take_unread`]): its items, and its end when the end had
/// arrived. A stream with nothing unread and a single request leave nothing.
#[test]
fn unread_stream_items_outlive_the_loss() {
    let mut p = Pair::connected();
    let ended = p.a.s.open_stream(p.now, WIDE, None, None).unwrap();
    let running = p.a.s.open_stream(p.now, WIDE, None, None).unwrap();
    let drained = p.a.s.open_stream(p.now, WIDE, None, None).unwrap();
    let single = p.a.s.request(p.now, ECHO, Bytes::new(), None).unwrap();
    p.drive();
    let mut served = Vec::new();
    for _ in 0..3 {
        served.push(p.b.expect_stream().0);
    }
    assert_eq!(served, [ended, running, drained]);
    let item = |i: u8| Bytes::from(vec![i; 3]);
    for (id, n) in [(ended, 3), (running, 2), (drained, 1)] {
        for i in 0..n {
            p.b.s.send(p.now, MuxKey::incoming(id), item(i)).unwrap();
        }
    }
    p.b.s.finish(p.now, ended, Ok(()));
    p.drive();
    let (items, end) = p.a.read_all(p.now, MuxKey::outgoing(drained));
    assert_eq!((items, end), (vec![item(0)], None));
    p.a.take_events();

    p.a.s.close(LostReason::Transport("reset".into()));
    let closed: Vec<MuxKey> = std::iter::from_fn(|| p.a.s.poll_event())
        .filter_map(|e| match e {
            Event::Closed { key, error } => {
                assert_eq!(error, CallError::Disconnected);
                Some(key)
            }
            _ => None,
        })
        .collect();
    for id in [ended, running, drained] {
        assert!(closed.contains(&MuxKey::outgoing(id)), "{id} not closed");
    }
    assert_eq!(
        p.a.s.take_unread(ended),
        Some(Unread {
            items: (0..3).map(item).collect(),
            end: Some(Ok(())),
        })
    );
    assert_eq!(p.a.s.take_unread(ended), None, "taken once");
    assert_eq!(
        p.a.s.take_unread(running),
        Some(Unread {
            items: (0..2).map(item).collect(),
            end: None,
        })
    );
    for id in [drained, single] {
        assert_eq!(p.a.s.take_unread(id), None, "mux {id}");
    }
}

/// Every frame one side sends is counted once received by the other, the handshake's
/// included, and the message and byte counts agree the same way.
#[test]
fn frame_counts_agree_across_the_link() {
    let mut p = Pair::connected();
    let id = p.a.s.open_stream(p.now, WIDE, None, None).unwrap();
    p.a.s.request(p.now, ECHO, pattern(100), None).unwrap();
    p.drive();
    let (sid, ..) = p.b.expect_stream();
    assert_eq!(sid, id);
    let (rid, ..) = p.b.expect_request();
    p.b.s.respond(p.now, rid, Ok(pattern(50)));
    p.b.s
        .send(p.now, MuxKey::incoming(sid), pattern(7))
        .unwrap();
    p.drive();
    let (a, b) = (p.a.s.stats(), p.b.s.stats());
    assert!(a.frames_sent >= 3 && b.frames_sent >= 4, "{a:?} {b:?}");
    assert_eq!(
        (a.frames_sent, a.messages_sent, a.bytes_sent),
        (b.frames_received, b.messages_received, b.bytes_received)
    );
    assert_eq!(
        (b.frames_sent, b.messages_sent, b.bytes_sent),
        (a.frames_received, a.messages_received, a.bytes_received)
    );
}
