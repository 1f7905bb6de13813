//! Sequences of session operations on a connected pair exchanging real messages.
//!
//! The input is an `arbitrary` list of [`Action`]s: open a request or a stream (various
//! handlers, payload sizes, deadlines), a burst of them (to the mux or queue limit), cancel, send an item, read, close_send, respond
//! or finish on the server side from the pending calls, tick (virtual time passes),
//! deliver messages in flight (the fuzzer picks the direction, so the two directions are
//! reordered against each other; one direction is always delivered in order), drop a
//! message (the transport is broken: both sessions are closed with
//! `LostReason::Transport` and the link comes back with new sessions), or inject a frame
//! built from fuzzed fields as if the peer had sent it.
//!
//! Checked after every action (see [`common::Node`]): no panic, every call ends exactly
//! once (a Response or Closed event, a read's End, or a local cancel; never two), tables
//! and the outbound queue bounded, `bug_count()` 0. While no frame was injected since the
//! sessions connected (the pair is "clean"), the two sessions are two correct peers and
//! more must hold: a request or stream open arrives with the handler and payload sent,
//! a response carries what the handler answered, stream items arrive in the order sent,
//! a stream's end is the one its handler gave, and no call fails with a protocol error
//! (out of sequence, credit exceeded, remote terminated, a protocol error text) nor is a
//! session lost for anything but keepalive or our own close. At the end both sessions
//! are closed and their tables checked empty.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use common::{FrameSpec, InKind, Node, OutKind, Pair};
use grid_core::codec::SubrouteId;
use grid_core::proto::{CallError, Dir, Event, HandlerKey, LostReason, MuxKey, Read};
use libfuzzer_sys::fuzz_target;

const MAX_ACTIONS: usize = 1000;
const MAX_PAYLOAD: usize = 2048;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Side {
    Dialer,
    Acceptor,
}

impl Side {
    fn i(self) -> usize {
        match self {
            Side::Dialer => 0,
            Side::Acceptor => 1,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum MuxSel {
    /// One of the target's outgoing muxes.
    Outgoing(u8),
    /// One of the target's incoming muxes.
    Incoming(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
struct ArbFrame {
    op: u8,
    mux: MuxSel,
    seq: u32,
    small_seq: bool,
    deadline_ms: u32,
    handler: u8,
    flags: u8,
    routed: bool,
    payload: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Action {
    Request {
        side: Side,
        handler: u8,
        len: u16,
        deadline_ms: Option<u16>,
    },
    OpenStream {
        side: Side,
        handler: u8,
        payload: Option<u16>,
        deadline_ms: Option<u16>,
    },
    /// Many calls at once: to the mux limit, or the queue's byte limit.
    Burst {
        side: Side,
        count: u8,
        len: u16,
        stream: bool,
    },
    Cancel {
        side: Side,
        which: u8,
    },
    Send {
        side: Side,
        incoming: bool,
        which: u8,
        len: u16,
    },
    Read {
        side: Side,
        incoming: bool,
        which: u8,
        all: bool,
    },
    CloseSend {
        side: Side,
        which: u8,
    },
    Respond {
        side: Side,
        which: u8,
        ok: bool,
        len: u16,
    },
    Finish {
        side: Side,
        which: u8,
        ok: bool,
    },
    Tick {
        ms: u16,
        scale: u8,
        exact: bool,
        pump: bool,
    },
    Deliver {
        to: Side,
        count: u8,
    },
    Drop {
        to: Side,
    },
    PeerFrame {
        to: Side,
        frame: ArbFrame,
    },
}

/// What the application did, for the checks of a clean pair. Keys name the side that
/// made the call (or sent the item) and the mux ID, which both sides share.
#[derive(Default)]
struct Oracle {
    clean: bool,
    /// (client side, id) → the request's handler and payload.
    requests: HashMap<(usize, u64), (HandlerKey, Bytes)>,
    /// (client side, id) → the stream's handler and opening payload.
    streams: HashMap<(usize, u64), (HandlerKey, Option<Bytes>)>,
    /// (server side, id) → what the handler answered.
    responses: HashMap<(usize, u64), Result<Bytes, String>>,
    /// (server side, id) → how the handler finished the stream.
    finished: HashMap<(usize, u64), Result<(), String>>,
    /// (sending side, the sender's direction, id) → items sent, not yet read.
    items: HashMap<(usize, Dir, u64), VecDeque<Bytes>>,
}

impl Oracle {
    fn fresh() -> Oracle {
        Oracle {
            clean: true,
            ..Oracle::default()
        }
    }

    fn check_error(&self, side: usize, e: &CallError) {
        if !self.clean {
            return;
        }
        match e {
            CallError::IncorrectSequence
            | CallError::CreditExceeded
            | CallError::RemoteTerminated => {
                panic!("side {side}: protocol error between two correct peers: {e:?}")
            }
            CallError::Remote(t) => assert!(
                t.starts_with("app:"),
                "side {side}: remote error not from a handler: {t:?}"
            ),
            _ => {}
        }
    }

    /// Checks the events a node reported since the last call.
    fn events(&mut self, side: usize, events: Vec<Event>) {
        let peer = 1 - side;
        for e in events {
            match &e {
                Event::Lost(r) if self.clean => assert!(
                    matches!(
                        r,
                        LostReason::KeepaliveTimeout(_)
                            | LostReason::Transport(_)
                            | LostReason::Local
                    ),
                    "side {side}: clean session lost: {r:?}"
                ),
                Event::Request {
                    mux_id,
                    handler,
                    payload,
                    ..
                } if self.clean => {
                    let sent = self.requests.get(&(peer, *mux_id));
                    assert_eq!(
                        sent,
                        Some(&(*handler, payload.clone())),
                        "side {side}: request {mux_id} arrived other than sent"
                    );
                }
                Event::StreamOpened {
                    mux_id,
                    handler,
                    payload,
                    ..
                } if self.clean => {
                    let sent = self.streams.get(&(peer, *mux_id));
                    assert_eq!(
                        sent,
                        Some(&(*handler, payload.clone())),
                        "side {side}: stream {mux_id} opened other than sent"
                    );
                }
                Event::Response { mux_id, result } => match result {
                    Ok(p) if self.clean => assert_eq!(
                        self.responses.get(&(peer, *mux_id)),
                        Some(&Ok(p.clone())),
                        "side {side}: response {mux_id} is not the handler's"
                    ),
                    Err(CallError::Remote(t)) if self.clean => assert_eq!(
                        self.responses.get(&(peer, *mux_id)),
                        Some(&Err(t.clone())),
                        "side {side}: error response {mux_id} is not the handler's"
                    ),
                    Err(e) => self.check_error(side, e),
                    Ok(_) => {}
                },
                Event::Closed { error, .. } => self.check_error(side, error),
                _ => {}
            }
        }
    }

    fn read(&mut self, side: usize, key: MuxKey, r: &Read) {
        if !self.clean {
            return;
        }
        let (sender_dir, server) = match key.dir {
            Dir::Outgoing => (Dir::Incoming, 1 - side),
            Dir::Incoming => (Dir::Outgoing, side),
        };
        match r {
            Read::Item(b) => {
                let sent = self
                    .items
                    .get_mut(&(1 - side, sender_dir, key.id))
                    .and_then(VecDeque::pop_front);
                assert_eq!(
                    sent.as_ref(),
                    Some(b),
                    "side {side}: {key:?} read out of order"
                );
            }
            Read::End(result) if key.dir == Dir::Outgoing => match result {
                Ok(()) => assert_eq!(
                    self.finished.get(&(server, key.id)),
                    Some(&Ok(())),
                    "side {side}: {key:?} ended cleanly but its handler did not finish so"
                ),
                Err(CallError::Remote(t)) => assert_eq!(
                    self.finished.get(&(server, key.id)),
                    Some(&Err(t.clone())),
                    "side {side}: {key:?} ended with an error its handler did not give"
                ),
                Err(e) => self.check_error(side, e),
            },
            _ => {}
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn arb_frame(f: &ArbFrame, target: &Node) -> FrameSpec {
    let mux_id = match f.mux {
        MuxSel::Outgoing(s) => Node::pick(&target.out_ids(None), s),
        MuxSel::Incoming(s) => Node::pick(&target.inc.keys().copied().collect::<Vec<_>>(), s),
        MuxSel::Raw(id) => id,
    };
    FrameSpec {
        op: f.op % 19,
        mux_id,
        seq: if f.small_seq { f.seq % 8 } else { f.seq },
        deadline_ms: f.deadline_ms,
        handler: f.handler,
        flags: f.flags,
        subroute: f.routed.then(|| SubrouteId::new(f.handler, "fuzz/route")),
        payload: Bytes::copy_from_slice(&f.payload[..f.payload.len().min(MAX_PAYLOAD)]),
    }
}

fn act(p: &mut Pair, o: &mut Oracle, a: &Action) {
    let now = p.now;
    match a {
        Action::Request {
            side,
            handler,
            len,
            deadline_ms,
        } => {
            let i = side.i();
            let h = common::request_handlers()[*handler as usize % 5];
            let payload = common::pattern(*len as usize % (MAX_PAYLOAD + 1), *handler);
            let deadline = deadline_ms.map(|d| ms(u64::from(d)));
            p.n[i].begin();
            if let Ok(id) = p.n[i].request(now, h, payload.clone(), deadline) {
                o.requests.insert((i, id), (h, payload));
            }
            p.settle(i);
        }
        Action::OpenStream {
            side,
            handler,
            payload,
            deadline_ms,
        } => {
            let i = side.i();
            let h = common::stream_handlers()[*handler as usize % 7];
            let payload =
                payload.map(|l| common::pattern(l as usize % (MAX_PAYLOAD + 1), *handler));
            let deadline = deadline_ms.map(|d| ms(u64::from(d) * 10));
            p.n[i].begin();
            if let Ok(id) = p.n[i].open_stream(now, h, payload.clone(), deadline) {
                o.streams.insert((i, id), (h, payload));
            }
            p.settle(i);
        }
        Action::Burst {
            side,
            count,
            len,
            stream,
        } => {
            let i = side.i();
            let len = *len as usize % (MAX_PAYLOAD + 1);
            p.n[i].begin();
            for k in 0..*count {
                let payload = common::pattern(len, k);
                if *stream {
                    let h = common::stream_handlers()[usize::from(k) % 4];
                    let payload = Some(payload);
                    if let Ok(id) = p.n[i].open_stream(now, h, payload.clone(), None) {
                        o.streams.insert((i, id), (h, payload));
                    }
                } else if let Ok(id) = p.n[i].request(now, common::SINGLE, payload.clone(), None) {
                    o.requests.insert((i, id), (common::SINGLE, payload));
                }
            }
            p.settle(i);
        }
        Action::Cancel { side, which } => {
            let i = side.i();
            let id = Node::pick(&p.n[i].out_ids(None), *which);
            p.n[i].begin();
            p.n[i].cancel(id);
            p.settle(i);
        }
        Action::Send {
            side,
            incoming,
            which,
            len,
        } => {
            let i = side.i();
            let n = &mut p.n[i];
            let key = stream_key(n, *incoming, *which);
            let item = common::pattern(*len as usize % (MAX_PAYLOAD + 1), *which);
            n.begin();
            if n.send(now, key, item.clone()).is_ok() {
                o.items
                    .entry((i, key.dir, key.id))
                    .or_default()
                    .push_back(item);
            }
            p.settle(i);
        }
        Action::Read {
            side,
            incoming,
            which,
            all,
        } => {
            let i = side.i();
            let n = &mut p.n[i];
            let key = stream_key(n, *incoming, *which);
            n.begin();
            for _ in 0..16 {
                let r = p.n[i].read(now, key);
                o.read(i, key, &r);
                if !matches!(r, Read::Item(_)) || !*all {
                    break;
                }
            }
            p.settle(i);
        }
        Action::CloseSend { side, which } => {
            let i = side.i();
            let id = Node::pick(&p.n[i].out_ids(Some(OutKind::Stream)), *which);
            p.n[i].begin();
            let _ = p.n[i].close_send(now, id);
            p.settle(i);
        }
        Action::Respond {
            side,
            which,
            ok,
            len,
        } => {
            let i = side.i();
            let id = Node::pick(&p.n[i].in_ids(&[InKind::Single]), *which);
            let result = if *ok {
                Ok(common::pattern(*len as usize % (MAX_PAYLOAD + 1), *which))
            } else {
                Err(format!("app: request {id} failed"))
            };
            p.n[i].begin();
            if p.n[i].respond(now, id, result.clone()) {
                o.responses.insert((i, id), result);
            }
            p.settle(i);
        }
        Action::Finish { side, which, ok } => {
            let i = side.i();
            let id = Node::pick(&p.n[i].in_ids(&[InKind::Stream, InKind::Finishing]), *which);
            let result = if *ok {
                Ok(())
            } else {
                Err(format!("app: stream {id} failed"))
            };
            p.n[i].begin();
            let pending = p.n[i].inc.get(&id) == Some(&InKind::Finishing);
            // A second finish while the first waits for credit changes nothing.
            if p.n[i].finish(now, id, result.clone()) && !pending {
                o.finished.insert((i, id), result);
            }
            p.settle(i);
        }
        Action::Tick {
            ms: t,
            scale,
            exact,
            pump,
        } => {
            let scale = [1, 10, 100, 1000][*scale as usize % 4];
            let mut d = u64::from(*t) * scale;
            if *exact {
                d = d.min(300_000);
            }
            p.tick(ms(d), *exact, *pump);
        }
        Action::Deliver { to, count } => {
            p.deliver(to.i(), usize::from(count % 8) + 1);
        }
        Action::Drop { to } => {
            if p.wire[to.i()].pop_front().is_some() {
                // A lost message means a broken transport: the driver closes both ends.
                p.close_both(LostReason::Transport("message lost".into()));
            }
        }
        Action::PeerFrame { to, frame } => {
            let i = to.i();
            let f = arb_frame(frame, &p.n[i]).frame();
            o.clean = false;
            p.message(i, common::encode_frames(&[f]));
        }
    }
}

/// Hands node `i`'s events to the oracle; after a loss, what its outgoing streams had
/// received and not read (`Session::take_unread`) is checked like reads: the items
/// their handlers sent, in order, then the handler's own end.
fn settle(p: &mut Pair, o: &mut Oracle, i: usize) {
    let events = std::mem::take(&mut p.n[i].log);
    if p.n[i].s.is_closed() {
        for e in &events {
            let Event::Closed { key, .. } = e else {
                continue;
            };
            if key.dir != Dir::Outgoing {
                continue;
            }
            let Some(u) = p.n[i].s.take_unread(key.id) else {
                continue;
            };
            for b in u.items {
                o.read(i, *key, &Read::Item(b));
            }
            if let Some(end) = u.end {
                o.read(i, *key, &Read::End(end));
            }
        }
    }
    o.events(i, events);
}

fn run(actions: &[Action]) {
    let mut p = Pair::connected();
    let mut o = Oracle::fresh();
    for a in actions.iter().take(MAX_ACTIONS) {
        act(&mut p, &mut o, a);
        for i in 0..2 {
            settle(&mut p, &mut o, i);
        }
        if p.n[0].s.is_closed() || p.n[1].s.is_closed() {
            if !(p.n[0].s.is_closed() && p.n[1].s.is_closed()) {
                p.close_both(LostReason::Transport("link closed".into()));
                for i in 0..2 {
                    settle(&mut p, &mut o, i);
                }
            }
            p.reconnect();
            o = Oracle::fresh();
        }
    }
    p.close_both(LostReason::Local);
    for i in 0..2 {
        settle(&mut p, &mut o, i);
    }
}

fuzz_target!(|actions: Vec<Action>| run(&actions));

/// A stream of node `n` to send on or read from: one it serves (`incoming`) or one it
/// called, picked by `which`.
fn stream_key(n: &Node, incoming: bool, which: u8) -> MuxKey {
    if incoming {
        MuxKey::incoming(Node::pick(
            &n.in_ids(&[InKind::Stream, InKind::Finishing]),
            which,
        ))
    } else {
        MuxKey::outgoing(Node::pick(&n.out_ids(Some(OutKind::Stream)), which))
    }
}
