//! Stream flow: cancellation from either side, deadlines, congestion in both directions,
//! blocked responses and items racing the end of a stream.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::harness::*;
use super::stream::open;
use crate::codec::{Flags, Frame, Op};
use crate::proto::{CallError, Config, Dir, Event, HandlerKey, MuxKey, Read, SendError};

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Frames `n` received with `op` on mux `id`.
pub(crate) fn ops(n: &Node, op: Op, id: u64) -> Vec<Frame> {
    n.received
        .iter()
        .filter(|f| f.op == op && f.mux_id == id)
        .cloned()
        .collect()
}

/// How many `Closed` events for `key` are pending on `n`.
pub(crate) fn closed_count(n: &Node, key: MuxKey) -> usize {
    n.events
        .iter()
        .filter(|e| matches!(e, Event::Closed { key: k, .. } if *k == key))
        .count()
}

/// Makes `n` concurrent single echo requests from `a` and checks that all complete.
pub(crate) fn singles(p: &mut Pair, n: usize) {
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            p.a.s
                .request(p.now, ECHO, Bytes::from(format!("r{i}")), None)
                .unwrap()
        })
        .collect();
    p.drive();
    for _ in 0..n {
        let (mux, payload, _) = p.b.expect_request();
        assert!(p.b.s.respond(p.now, mux, Ok(payload)));
    }
    p.drive();
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(p.a.expect_response(id).unwrap(), format!("r{i}"));
    }
}

/// The node whose table holds `key` (`a` calls, `b` serves), then its peer.
fn sides(p: &Pair, key: MuxKey) -> (&Node, &Node) {
    match key.dir {
        Dir::Outgoing => (&p.a, &p.b),
        Dir::Incoming => (&p.b, &p.a),
    }
}

/// The node whose table holds `key`.
fn holder(p: &mut Pair, key: MuxKey) -> &mut Node {
    match key.dir {
        Dir::Outgoing => &mut p.a,
        Dir::Incoming => &mut p.b,
    }
}

/// Sends items `*sent..100` (one byte each, their index) until the stream blocks.
fn push(p: &mut Pair, key: MuxKey, sent: &mut usize) {
    let now = p.now;
    let side = holder(p, key);
    while *sent < 100 {
        match side.s.send(now, key, Bytes::from(vec![*sent as u8])) {
            Ok(()) => *sent += 1,
            Err(SendError::Blocked) => break,
            Err(e) => panic!("send {sent}: {e}"),
        }
    }
}

fn expected_items() -> Vec<Bytes> {
    (0..100u8).map(|i| Bytes::from(vec![i])).collect()
}

// ---------------------------------------------------------------------------------------
// Cancellation from the client.

/// Opens `handler`, sends `items` the server does not read, cancels from the client and
/// checks both sides.
fn client_cancel(handler: HandlerKey, items: usize) {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, handler, None, None);
    for i in 0..items {
        p.a.s.send(p.now, c, Bytes::from(vec![i as u8])).unwrap();
    }
    p.drive();
    if items > 0 {
        // The server read nothing: the client is out of credit.
        assert_eq!(
            p.a.s.send(p.now, c, Bytes::from_static(b"more")),
            Err(SendError::Blocked)
        );
        assert!(p.b.has_event(|e| *e == Event::Readable(s)));
    }
    p.a.s.cancel(c.id);
    // Freed at once, before anything reaches the server.
    assert!(!p.a.s.contains(c));
    assert_eq!(p.a.s.stats().outgoing_muxes, 0);
    assert_eq!(p.a.s.scheduled_timers(), 0);
    assert_eq!(p.a.s.read(p.now, c), Read::End(Err(CallError::Closed)));
    assert_eq!(
        p.a.s.send(p.now, c, Bytes::new()),
        Err(SendError::Call(CallError::Closed))
    );
    p.drive();
    assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
    // The notice carries the client's next seq: the open took 0, each item one more.
    let notice = ops(&p.b, Op::DisconnectServerMux, c.id);
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].seq, 1 + items as u32);
    assert_eq!(notice[0].flags, Flags::CRC);
    // The handler's side is gone, with its unread items.
    assert_eq!(p.b.s.read(p.now, s), Read::End(Err(CallError::Closed)));
    assert!(!p.b.s.finish(p.now, s.id, Ok(())));
    // A cancel is the caller's own act: no event for it on the client.
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    p.drive();
    assert!(p.a.events.is_empty() && p.b.events.iter().all(|e| *e == Event::Readable(s)));
    p.assert_clean();
}

#[test]
fn client_cancel_of_a_stream_without_input() {
    client_cancel(NO_INPUT, 0);
}

#[test]
fn client_cancel_of_an_idle_stream_with_input() {
    client_cancel(STREAM, 0);
}

#[test]
fn client_cancel_after_filling_the_request_queue() {
    client_cancel(STREAM, 1);
    client_cancel(WIDE, 5);
}

// ---------------------------------------------------------------------------------------
// Cancellation from the server.

#[test]
fn server_error_finish_ends_the_client_stream_with_the_error() {
    for handler in [NO_INPUT, STREAM] {
        let mut p = Pair::connected();
        let (c, s) = open(&mut p, handler, None, None);
        assert!(p.b.s.finish(p.now, s.id, Err("handler gave up".into())));
        // The server forgets the stream with its final frame.
        assert!(!p.b.s.contains(s));
        p.drive();
        let fin = ops(&p.a, Op::MuxServerMsg, c.id);
        assert_eq!(fin.len(), 1);
        assert_eq!(
            fin[0].flags,
            Flags::CRC | Flags::EOF | Flags::PAYLOAD_IS_ERR
        );
        assert_eq!(fin[0].seq, 1, "after the ack");
        assert!(p.a.has_event(|e| *e == Event::Readable(c)));
        let want = Read::End(Err(CallError::Remote("handler gave up".into())));
        assert_eq!(p.a.s.read(p.now, c), want);
        p.drive();
        // The client does not answer the end: the server already forgot the stream.
        assert!(ops(&p.b, Op::DisconnectServerMux, c.id).is_empty());
        assert!(p.b.events.is_empty(), "{:?}", p.b.events);
        p.assert_clean();
    }
}

#[test]
fn server_liveness_kill_closes_the_client_stream_as_disconnected() {
    // The client tolerates missing pongs for long; the server gives up after 400 ms
    // without a ping.
    let config = Config {
        mux_ping_interval: ms(100),
        mux_pong_timeout: ms(10_000),
        server_mux_timeout: ms(400),
        ..Config::default()
    };
    let mut p = Pair::connected_with(Setup {
        config,
        ..Setup::default()
    });
    let (c, s) = open(&mut p, STREAM, None, None);
    p.b.hold = true; // the client's pings no longer reach the server
    p.advance(ms(600));
    assert_eq!(p.b.expect_closed(s), CallError::Disconnected);
    assert!(!p.b.s.contains(s));
    assert_eq!(p.a.expect_closed(c), CallError::Disconnected);
    assert!(!p.a.s.contains(c));
    let notice = ops(&p.a, Op::DisconnectClientMux, c.id);
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].seq, 0, "teardown notices are not stamped");
    // The pings held back reach a server that forgot the stream: nothing is revived.
    p.b.hold = false;
    p.drive();
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Deadlines.

fn stream_deadline(handler: HandlerKey) {
    let mut p = Pair::connected();
    let t0 = p.now;
    let id = p.a.s.open_stream(t0, handler, None, Some(ms(50))).unwrap();
    let c = MuxKey::outgoing(id);
    p.drive();
    assert_eq!(p.b.received_ops(Op::ConnectMux)[0].deadline_ms, 50);
    let (mux, deadline) =
        p.b.find(|e| match e {
            Event::StreamOpened {
                mux_id, deadline, ..
            } => Some((*mux_id, *deadline)),
            _ => None,
        })
        .unwrap();
    let s = MuxKey::incoming(mux);
    // The server counts the deadline from the arrival of the open.
    assert_eq!(deadline, Some(t0 + ms(51)));
    // Hold the server's inbound so that its own deadline, not the client's cancel notice
    // (which would arrive at the same instant), ends its side.
    p.b.hold = true;
    p.advance_to(t0 + ms(50) - Duration::from_nanos(1));
    assert!(p.a.closed(c).is_none());
    p.advance_to(t0 + ms(50));
    assert_eq!(p.a.expect_closed(c), CallError::DeadlineExceeded);
    assert!(!p.a.s.contains(c));
    assert!(p.b.closed(s).is_none());
    p.advance_to(t0 + ms(51));
    assert_eq!(p.b.expect_closed(s), CallError::DeadlineExceeded);
    assert!(!p.b.s.contains(s));
    // The server's kill notice reaches a client that already ended the stream.
    p.advance(ms(5));
    assert_eq!(ops(&p.a, Op::DisconnectClientMux, id).len(), 1);
    assert!(p.a.events.is_empty(), "{:?}", p.a.events);
    // The client's stamped notice reaches a server that already ended it.
    p.b.hold = false;
    p.drive();
    let notice = ops(&p.b, Op::DisconnectServerMux, id);
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].seq, 1);
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    p.assert_clean();

    // Without the hold the server's side also ends exactly once (by the deadline or by
    // the notice, whichever it sees first).
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, handler, None, Some(ms(50)));
    p.advance(ms(60));
    assert_eq!(p.a.expect_closed(c), CallError::DeadlineExceeded);
    assert_eq!(closed_count(&p.b, s), 1);
    p.b.events.clear();
    p.advance(ms(10));
    assert!(p.a.events.is_empty() && p.b.events.is_empty());
    p.assert_clean();
}

#[test]
fn stream_deadline_reaches_the_server_without_input() {
    stream_deadline(NO_INPUT);
}

#[test]
fn stream_deadline_reaches_the_server_with_input() {
    stream_deadline(STREAM);
}

// ---------------------------------------------------------------------------------------
// Congestion.

#[test]
fn server_out_congestion_does_not_block_single_requests() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, NO_INPUT, None, None);
    let mut sent = 0;
    push(&mut p, s, &mut sent);
    p.drive();
    assert_eq!(sent, 1, "out capacity 1");
    // The client does not read; single requests on the same link still complete.
    singles(&mut p, 100);
    push(&mut p, s, &mut sent);
    assert_eq!(sent, 1, "still no credit");
    // Now the client reads; every read gives a credit back, the handler sends on Writable.
    let mut got = Vec::new();
    let mut finished = false;
    for _ in 0..10_000 {
        if p.b
            .find(|e| (*e == Event::Writable(s)).then_some(()))
            .is_some()
        {
            push(&mut p, s, &mut sent);
        }
        if sent == 100 && !finished {
            // The end costs a credit too: held until one comes back.
            assert!(p.b.s.finish(p.now, s.id, Ok(())));
            finished = true;
        }
        match p.a.s.read(p.now, c) {
            Read::Item(b) => got.push(b),
            Read::End(r) => {
                r.unwrap();
                break;
            }
            Read::Pending => p.drive(),
        }
    }
    assert_eq!(got, expected_items());
    p.drive();
    assert!(p.a.events.iter().all(|e| *e == Event::Readable(c)));
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
    p.assert_clean();
}

#[test]
fn server_in_congestion_does_not_block_single_requests() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, WIDE, None, None);
    let mut sent = 0;
    push(&mut p, c, &mut sent);
    p.drive();
    assert_eq!(sent, 5, "in capacity 5");
    // The handler does not read; single requests on the same link still complete.
    singles(&mut p, 100);
    push(&mut p, c, &mut sent);
    assert_eq!(sent, 5, "still no credit");
    // Now the handler reads and echoes every item; the client refills and reads echoes.
    let (mut echo, mut got) = (VecDeque::new(), Vec::new());
    let (mut closed_send, mut input_done, mut finished) = (false, false, false);
    for _ in 0..10_000 {
        push(&mut p, c, &mut sent);
        if sent == 100 && !closed_send {
            p.a.s.close_send(p.now, c.id).unwrap();
            closed_send = true;
        }
        while !input_done {
            match p.b.s.read(p.now, s) {
                Read::Item(b) => echo.push_back(b),
                Read::End(r) => {
                    r.unwrap();
                    input_done = true;
                }
                Read::Pending => break,
            }
        }
        while let Some(b) = echo.front() {
            match p.b.s.send(p.now, s, b.clone()) {
                Ok(()) => drop(echo.pop_front()),
                Err(SendError::Blocked) => break,
                Err(e) => panic!("echo: {e}"),
            }
        }
        if input_done && echo.is_empty() && !finished {
            assert!(p.b.s.finish(p.now, s.id, Ok(())));
            finished = true;
        }
        let (items, end) = p.a.read_all(p.now, c);
        got.extend(items);
        if let Some(end) = end {
            end.unwrap();
            break;
        }
        p.drive();
    }
    assert_eq!(got, expected_items());
    p.drive();
    p.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Blocked responses and the end of a stream.

#[test]
fn blocked_response_then_client_cancel_closes_the_handler_side() {
    for pending_end in [false, true] {
        let mut p = Pair::connected();
        let (c, s) = open(&mut p, NO_INPUT, None, None);
        p.b.s.send(p.now, s, Bytes::from_static(b"0")).unwrap();
        assert_eq!(
            p.b.s.send(p.now, s, Bytes::from_static(b"1")),
            Err(SendError::Blocked)
        );
        if pending_end {
            // The end waits for a credit too.
            assert!(p.b.s.finish(p.now, s.id, Ok(())));
            assert!(p.b.s.contains(s));
        }
        p.drive();
        p.a.s.cancel(c.id);
        p.drive();
        assert_eq!(p.b.expect_closed(s), CallError::CancelledByRemote);
        assert_eq!(
            p.b.s.send(p.now, s, Bytes::from_static(b"1")),
            Err(SendError::Call(CallError::Closed))
        );
        assert!(!p.b.s.finish(p.now, s.id, Ok(())));
        p.drive();
        // Nothing more left the server for that stream.
        assert_eq!(ops(&p.a, Op::MuxServerMsg, c.id).len(), 1);
        assert!(p.a.events.iter().all(|e| *e == Event::Readable(c)));
        assert!(p.b.events.is_empty(), "{:?}", p.b.events);
        p.assert_clean();
    }
}

#[test]
fn items_sent_with_the_end_in_one_batch_arrive_before_it() {
    for result in [Ok(()), Err("late failure".to_owned())] {
        let mut p = Pair::connected();
        let (c, s) = open(&mut p, WIDE, None, None);
        for i in 0..4u8 {
            p.b.s.send(p.now, s, Bytes::from(vec![i])).unwrap();
        }
        assert!(p.b.s.finish(p.now, s.id, result.clone()));
        let merged = p.a.s.stats().merged_received;
        p.drive();
        assert_eq!(p.a.s.stats().merged_received, merged + 1, "one container");
        let (items, end) = p.a.read_all(p.now, c);
        let want: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i])).collect();
        assert_eq!(items, want);
        assert_eq!(end, Some(result.map_err(CallError::Remote)));
        p.drive();
        p.assert_clean();
    }
}

#[test]
fn an_item_carrying_eof_is_delivered_then_the_end() {
    // A peer may put the last item and the end in one frame.
    let mut p = Pair::connected();
    let (c, _) = open(&mut p, STREAM, None, None);
    p.b.s.close(crate::proto::LostReason::Local); // the forged frame speaks for it
    p.b.events.clear();
    let f = forge(Op::MuxServerMsg, c.id, 1, Flags::EOF, b"last");
    p.inject_to_a(f.to_bytes());
    p.drive();
    assert_eq!(
        p.a.s.read(p.now, c),
        Read::Item(Bytes::from_static(b"last"))
    );
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    assert!(!p.a.s.contains(c));
    // The final item is not acknowledged: the stream is over.
    p.drive();
    assert!(ops(&p.b, Op::UnblockSrvMux, c.id).is_empty());
    assert!(p.a.events.iter().all(|e| *e == Event::Readable(c)));
    assert_eq!(
        (p.a.s.stats().outgoing_muxes, p.a.s.scheduled_timers()),
        (0, 0)
    );
}

#[test]
fn empty_items_travel_both_ways_with_the_zero_flag() {
    // An empty item is present-but-empty: without the zero flag a Go client would take
    // it for "no item" (PROTOCOL.md §1.4).
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    p.a.s.send(p.now, c, Bytes::new()).unwrap();
    p.b.s.send(p.now, s, Bytes::new()).unwrap();
    p.drive();
    assert_eq!(p.b.s.read(p.now, s), Read::Item(Bytes::new()));
    assert_eq!(p.a.s.read(p.now, c), Read::Item(Bytes::new()));
    let up = ops(&p.b, Op::MuxClientMsg, c.id);
    let down = ops(&p.a, Op::MuxServerMsg, c.id);
    assert_eq!(up[0].flags, Flags::CRC | Flags::PAYLOAD_IS_ZERO);
    assert_eq!(down[0].flags, Flags::CRC | Flags::PAYLOAD_IS_ZERO);
    p.a.s.close_send(p.now, c.id).unwrap();
    p.b.s.finish(p.now, s.id, Ok(()));
    p.drive();
    // The clean end carries neither a payload nor the zero flag.
    let end = ops(&p.a, Op::MuxServerMsg, c.id).pop().unwrap();
    assert_eq!(end.flags, Flags::CRC | Flags::EOF);
    assert_eq!(p.a.s.read(p.now, c), Read::End(Ok(())));
    p.drive();
    p.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Credits return in batches.

/// Whether `n` has a `Closed` event pending for any mux.
fn any_closed(n: &Node) -> bool {
    n.has_event(|e| matches!(e, Event::Closed { .. }))
}

/// How many items `key`'s side can send before it blocks (sending them).
fn fill(p: &mut Pair, key: MuxKey) -> usize {
    let mut sent = 0;
    push(p, key, &mut sent);
    sent
}

/// Reads one item on `key` and drives; returns how many unblocks the peer then got.
fn read_one(p: &mut Pair, key: MuxKey, op: Op) -> usize {
    let unblocks = |p: &Pair| ops(sides(p, key).1, op, key.id).len();
    let before = unblocks(p);
    let now = p.now;
    assert!(matches!(holder(p, key).s.read(now, key), Read::Item(_)));
    p.drive();
    unblocks(p) - before
}

/// With a window of 16, credits go back four at a time while items remain buffered, all
/// at once when the reader empties its buffer, and each batch is one message.
fn credits_return_in_batches(reader: MuxKey, writer: MuxKey, op: Op, p: &mut Pair) {
    assert_eq!(fill(p, writer), 16, "the whole window");
    p.drive();
    let reader_side = |p: &Pair| sides(p, reader).0.s.stats().messages_sent;
    let buffered = |p: &Pair| sides(p, reader).0.s.buffered(reader);
    assert_eq!(buffered(p), 16);
    let mut got = Vec::new();
    for _ in 0..8 {
        let msgs = reader_side(p);
        got.push(read_one(p, reader, op));
        let sent = reader_side(p) - msgs;
        assert!(sent <= 1, "a batch of credits is one message, not {sent}");
    }
    assert_eq!(got, [0, 0, 0, 4, 0, 0, 0, 4]);
    assert_eq!(buffered(p), 8);
    // The writer got exactly those credits back.
    assert_eq!(fill(p, writer), 8);
    p.drive();
    assert_eq!(buffered(p), 16);
    // 8 + 8 buffered now; read 15 of them: batches at 4, 8, 12; three owed.
    let got: Vec<usize> = (0..15).map(|_| read_one(p, reader, op)).collect();
    assert_eq!(got.iter().sum::<usize>(), 12);
    // The last buffered item empties the buffer: the 4 owed credits leave at once.
    assert_eq!(read_one(p, reader, op), 4);
    assert_eq!(buffered(p), 0);
    assert_eq!(fill(p, writer), 16, "the whole window is back");
    // The writer's own side of the stream buffers nothing; an unknown mux neither.
    let (r, w) = sides(p, reader);
    assert_eq!(w.s.buffered(writer), 0);
    assert_eq!(r.s.buffered(MuxKey { id: 999, ..reader }), 0);
    // Every unblock carried the right sequence number: nothing was closed.
    assert!(
        !any_closed(&p.a) && !any_closed(&p.b),
        "a side closed the stream"
    );
}

#[test]
fn a_client_reading_server_items_returns_credits_in_batches() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, WINDOW16, None, None);
    credits_return_in_batches(c, s, Op::UnblockSrvMux, &mut p);
}

#[test]
fn a_server_reading_client_items_returns_credits_in_batches() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, WINDOW16, None, None);
    credits_return_in_batches(s, c, Op::UnblockClMux, &mut p);
}

#[test]
fn a_window_of_one_returns_each_credit_at_once() {
    let mut p = Pair::connected();
    let (c, s) = open(&mut p, STREAM, None, None);
    for _ in 0..5 {
        assert_eq!(fill(&mut p, s), 1);
        p.drive();
        assert_eq!(read_one(&mut p, c, Op::UnblockSrvMux), 1);
        assert_eq!(fill(&mut p, c), 1);
        p.drive();
        assert_eq!(read_one(&mut p, s, Op::UnblockClMux), 1);
    }
}

// ---------------------------------------------------------------------------------------
// Large items: the window in bytes.

/// A pair whose streams let `bytes` of large items be in flight or unread.
fn window_bytes(bytes: usize) -> Pair {
    let config = Config {
        stream_window_bytes: bytes,
        ..Config::default()
    };
    Pair::connected_with(Setup {
        config,
        ..Setup::default()
    })
}

/// Sends items of `len` bytes on `key` until the stream blocks; returns how many.
fn fill_with(p: &mut Pair, key: MuxKey, len: usize) -> usize {
    let now = p.now;
    let side = holder(p, key);
    let mut sent = 0;
    while side.s.send(now, key, Bytes::from(vec![7; len])).is_ok() {
        sent += 1;
    }
    p.drive();
    sent
}

/// With a window of 16 items and 4000 bytes, items of 1000 bytes keep at most four in
/// flight or unread once the first window has arrived; small items take the window
/// back.
fn large_items_keep_to_the_window_bytes(reader: MuxKey, writer: MuxKey, op: Op, p: &mut Pair) {
    let buffered = |p: &Pair| sides(p, reader).0.s.buffered(reader);
    assert_eq!(fill_with(p, writer, 1000), 16, "the first window is whole");
    let got: Vec<usize> = (0..16).map(|_| read_one(p, reader, op)).collect();
    // Twelve credits stay with the reader; each read past them returns its own (a batch
    // of a four-item window is one).
    assert_eq!(got, [[0; 12].as_slice(), &[1; 4]].concat());
    for _ in 0..10 {
        assert_eq!(fill_with(p, writer, 1000), 4);
        assert_eq!(buffered(p), 4);
        let got: Vec<usize> = (0..4).map(|_| read_one(p, reader, op)).collect();
        assert_eq!(got, [1; 4]);
    }
    // Items of 1001 bytes fit three times: the fourth credit stays too.
    assert_eq!(fill_with(p, writer, 1001), 4);
    let got: Vec<usize> = (0..4).map(|_| read_one(p, reader, op)).collect();
    assert_eq!(got, [0, 1, 1, 1]);
    assert_eq!(fill_with(p, writer, 1001), 3);
    let got: Vec<usize> = (0..3).map(|_| read_one(p, reader, op)).collect();
    assert_eq!(got, [1; 3]);
    // A small item read gives back every held credit in one batch; the last two go
    // back when the buffer empties.
    assert_eq!(fill_with(p, writer, 10), 3);
    assert_eq!(read_one(p, reader, op), 14);
    assert_eq!(read_one(p, reader, op), 0);
    assert_eq!(read_one(p, reader, op), 2);
    assert_eq!(buffered(p), 0);
    assert_eq!(fill_with(p, writer, 10), 16, "the whole window is back");
    assert!(
        !any_closed(&p.a) && !any_closed(&p.b),
        "a side closed the stream"
    );
}

#[test]
fn a_client_reading_large_server_items_keeps_to_the_window_bytes() {
    let mut p = window_bytes(4000);
    let (c, s) = open(&mut p, WINDOW16, None, None);
    large_items_keep_to_the_window_bytes(c, s, Op::UnblockSrvMux, &mut p);
}

#[test]
fn a_server_reading_large_client_items_keeps_to_the_window_bytes() {
    let mut p = window_bytes(4000);
    let (c, s) = open(&mut p, WINDOW16, None, None);
    large_items_keep_to_the_window_bytes(s, c, Op::UnblockClMux, &mut p);
}

#[test]
fn window_bytes_of_usize_max_leave_the_window_in_items() {
    let mut p = window_bytes(usize::MAX);
    let (c, s) = open(&mut p, WINDOW16, None, None);
    assert_eq!(fill_with(&mut p, s, 1 << 20), 16);
    let got: Vec<usize> = (0..16)
        .map(|_| read_one(&mut p, c, Op::UnblockSrvMux))
        .collect();
    assert_eq!(got.iter().sum::<usize>(), 16);
    assert_eq!(got[3], 4, "a batch is a quarter of the whole window");
    assert_eq!(fill_with(&mut p, s, 1 << 20), 16);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the item sizes, the window in bytes and how many items each read takes,
    /// every item arrives in order and the writer is never left blocked with nothing for
    /// the reader to read.
    #[test]
    fn the_window_in_bytes_never_stalls_a_stream(
        bytes in 1usize..20_000,
        sizes in proptest::collection::vec(0usize..6_000, 1..120),
        reads in proptest::collection::vec(1usize..20, 1..8),
        client_reads in proptest::bool::ANY,
    ) {
        let mut p = window_bytes(bytes);
        let (c, s) = open(&mut p, WINDOW16, None, None);
        let (reader, writer) = if client_reads { (c, s) } else { (s, c) };
        let (mut sent, mut got) = (0, 0);
        for round in 0.. {
            let now = p.now;
            let side = holder(&mut p, writer);
            while let Some(&len) = sizes.get(sent) {
                match side.s.send(now, writer, Bytes::from(vec![sent as u8; len])) {
                    Ok(()) => sent += 1,
                    Err(SendError::Blocked) => break,
                    Err(e) => panic!("send {sent}: {e}"),
                }
            }
            p.drive();
            if got == sizes.len() {
                break;
            }
            let buffered = sides(&p, reader).0.s.buffered(reader);
            proptest::prop_assert!(buffered > 0, "stalled after {got} of {} items", sizes.len());
            for _ in 0..reads[round % reads.len()] {
                let now = p.now;
                match holder(&mut p, reader).s.read(now, reader) {
                    Read::Item(item) => {
                        proptest::prop_assert_eq!(item.len(), sizes[got]);
                        proptest::prop_assert!(item.iter().all(|&b| b == got as u8));
                        got += 1;
                    }
                    Read::Pending => break,
                    other => panic!("read {got}: {other:?}"),
                }
            }
            p.drive();
        }
        proptest::prop_assert!(!any_closed(&p.a) && !any_closed(&p.b), "a side closed the stream");
    }
}
