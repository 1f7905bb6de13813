//! Two sessions joined by an in-memory link on a virtual clock.
//!
//! `step` moves every queued message into the other side's inbox (arriving after the
//! link's latency), delivers what has arrived, fires due timers and collects events.
//! `drive` steps until nothing moves (jumping the clock to pending arrivals, and to the
//! timers due before them); `advance` lets virtual time pass, firing every timer at its
//! own instant, then settles messages in flight; `advance_to` stops exactly at an
//! instant, leaving messages in flight. `forge` builds frames to inject.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::{self, Frame, Time};
use crate::proto::{
    CallError, Cluster, Config, Event, HandlerKey, HandlerKind, MuxKey, Read, Session,
};

pub(crate) const ECHO: HandlerKey = HandlerKey::new(1);
pub(crate) const FAIL: HandlerKey = HandlerKey::new(2);
/// A stream with in and out capacity 1.
pub(crate) const STREAM: HandlerKey = HandlerKey::new(10);
/// A stream without input (in capacity 0), out capacity 1.
pub(crate) const NO_INPUT: HandlerKey = HandlerKey::new(11);
/// A stream with in and out capacity 5.
pub(crate) const WIDE: HandlerKey = HandlerKey::new(12);
/// Registered only on the acceptor.
pub(crate) const ONLY_B: HandlerKey = HandlerKey::new(20);
/// A stream with windows of 16 both ways: credits return in batches of 4.
pub(crate) const WINDOW16: HandlerKey = HandlerKey::new(13);
pub(crate) fn routed() -> HandlerKey {
    HandlerKey::with_route(10, "subroute/1")
}

pub(crate) fn wall0() -> Time {
    Time {
        secs: 1_700_000_000,
        nanos: 0,
    }
}

/// One side of the pair.
pub(crate) struct Node {
    pub(crate) s: Session,
    /// Messages on their way to this node, with their arrival time.
    pub(crate) inbox: VecDeque<(Instant, Bytes)>,
    /// While set, nothing is delivered to this node (its inbound direction is held).
    pub(crate) hold: bool,
    /// Events not yet taken by the test.
    pub(crate) events: VecDeque<Event>,
    /// Every frame this node received, in order (for wire assertions).
    pub(crate) received: Vec<Frame>,
}

impl Node {
    fn new(s: Session) -> Node {
        Node {
            s,
            inbox: VecDeque::new(),
            hold: false,
            events: VecDeque::new(),
            received: Vec::new(),
        }
    }

    /// Takes every pending event.
    pub(crate) fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Removes and returns the first event matching `f`.
    pub(crate) fn find<T>(&mut self, mut f: impl FnMut(&Event) -> Option<T>) -> Option<T> {
        let i = self.events.iter().position(|e| f(e).is_some())?;
        let e = self.events.remove(i).expect("index in range");
        f(&e)
    }

    pub(crate) fn expect_request(&mut self) -> (u64, Bytes, Option<Instant>) {
        self.find(|e| match e {
            Event::Request {
                mux_id,
                payload,
                deadline,
                ..
            } => Some((*mux_id, payload.clone(), *deadline)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no request event in {:?}", self.events))
    }

    pub(crate) fn expect_stream(&mut self) -> (u64, HandlerKey, Option<Bytes>) {
        self.find(|e| match e {
            Event::StreamOpened {
                mux_id,
                handler,
                payload,
                ..
            } => Some((*mux_id, *handler, payload.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no stream-opened event in {:?}", self.events))
    }

    pub(crate) fn response(&mut self, id: u64) -> Option<Result<Bytes, CallError>> {
        self.find(|e| match e {
            Event::Response { mux_id, result } if *mux_id == id => Some(result.clone()),
            _ => None,
        })
    }

    pub(crate) fn expect_response(&mut self, id: u64) -> Result<Bytes, CallError> {
        self.response(id)
            .unwrap_or_else(|| panic!("no response for mux {id} in {:?}", self.events))
    }

    pub(crate) fn closed(&mut self, key: MuxKey) -> Option<CallError> {
        self.find(|e| match e {
            Event::Closed { key: k, error } if *k == key => Some(error.clone()),
            _ => None,
        })
    }

    pub(crate) fn expect_closed(&mut self, key: MuxKey) -> CallError {
        self.closed(key)
            .unwrap_or_else(|| panic!("no closed event for {key:?} in {:?}", self.events))
    }

    pub(crate) fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }

    /// Reads every item available now, and the end if it is there.
    pub(crate) fn read_all(
        &mut self,
        now: Instant,
        key: MuxKey,
    ) -> (Vec<Bytes>, Option<Result<(), CallError>>) {
        let mut items = Vec::new();
        loop {
            match self.s.read(now, key) {
                Read::Item(b) => items.push(b),
                Read::End(r) => return (items, Some(r)),
                Read::Pending => return (items, None),
            }
        }
    }

    /// Frames received with op `op`.
    pub(crate) fn received_ops(&self, op: codec::Op) -> Vec<&Frame> {
        self.received.iter().filter(|f| f.op == op).collect()
    }
}

/// How a pair is set up.
pub(crate) struct Setup {
    pub(crate) config: Config,
    pub(crate) latency: Duration,
    pub(crate) token: String,
    /// Seconds added to the dialer's wall clock.
    pub(crate) dialer_skew_secs: i64,
    /// The host the dialer claims to be.
    pub(crate) dialer_host: Option<String>,
    /// Swap roles so that the node that should accept dials.
    pub(crate) wrong_direction: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: Config::default(),
            latency: Duration::from_millis(1),
            token: "good".into(),
            dialer_skew_secs: 0,
            dialer_host: None,
            wrong_direction: false,
        }
    }
}

pub(crate) const HOST_X: &str = "http://x:9000";
pub(crate) const HOST_Y: &str = "http://y:9000";

/// `(dialer, acceptor)` host names by the protocol's rule.
pub(crate) fn roles() -> (&'static str, &'static str) {
    if codec::should_dial(HOST_X, HOST_Y) {
        (HOST_X, HOST_Y)
    } else {
        (HOST_Y, HOST_X)
    }
}

pub(crate) fn cluster(
    host: &str,
    id: u8,
    config: &Config,
    extra: Option<HandlerKey>,
) -> Arc<Cluster> {
    let mut c = Cluster::new(host, [id; 16], &[HOST_X, HOST_Y]);
    c.config = config.clone();
    c.validate_token = Arc::new(|t| {
        if t == "good" {
            Ok(())
        } else {
            Err("invalid token".to_owned())
        }
    });
    let r = &mut c.registry;
    r.register(ECHO, HandlerKind::Single).unwrap();
    r.register(FAIL, HandlerKind::Single).unwrap();
    r.register(STREAM, HandlerKind::stream(1, 1)).unwrap();
    r.register(NO_INPUT, HandlerKind::stream(0, 1)).unwrap();
    r.register(WIDE, HandlerKind::stream(5, 5)).unwrap();
    r.register(WINDOW16, HandlerKind::stream(16, 16)).unwrap();
    r.register(routed(), HandlerKind::stream(1, 1)).unwrap();
    if let Some(k) = extra {
        r.register(k, HandlerKind::Single).unwrap();
    }
    Arc::new(c)
}

/// Two sessions: `a` dials, `b` accepts.
pub(crate) struct Pair {
    pub(crate) now: Instant,
    pub(crate) latency: Duration,
    pub(crate) a: Node,
    pub(crate) b: Node,
    buf: BytesMut,
}

impl Pair {
    /// A pair that has not exchanged anything yet.
    pub(crate) fn new(setup: Setup) -> Pair {
        let now = Instant::now();
        let (mut dialer, mut acceptor) = roles();
        if setup.wrong_direction {
            std::mem::swap(&mut dialer, &mut acceptor);
        }
        let claimed = setup
            .dialer_host
            .clone()
            .unwrap_or_else(|| dialer.to_owned());
        let a_cluster = cluster(&claimed, 1, &setup.config, None);
        let b_cluster = cluster(acceptor, 2, &setup.config, Some(ONLY_B));
        let a_wall = Time {
            secs: wall0().secs + setup.dialer_skew_secs,
            nanos: 0,
        };
        let a = Session::dialer(a_cluster, acceptor, &setup.token, now, a_wall);
        let b = Session::acceptor(b_cluster, now, wall0());
        Pair {
            now,
            latency: setup.latency,
            a: Node::new(a),
            b: Node::new(b),
            buf: BytesMut::new(),
        }
    }

    /// A pair with the handshake done and its events taken.
    pub(crate) fn connected() -> Pair {
        Pair::connected_with(Setup::default())
    }

    pub(crate) fn connected_with(setup: Setup) -> Pair {
        let mut p = Pair::new(setup);
        p.drive();
        assert!(
            p.a.s.is_connected(),
            "dialer not connected: {:?}",
            p.a.events
        );
        assert!(
            p.b.s.is_connected(),
            "acceptor not connected: {:?}",
            p.b.events
        );
        assert!(matches!(
            p.a.events.pop_front(),
            Some(Event::Connected { .. })
        ));
        assert!(matches!(
            p.b.events.pop_front(),
            Some(Event::Connected { .. })
        ));
        p
    }

    fn transmit(buf: &mut BytesMut, from: &mut Node, to: &mut Node, at: Instant) -> bool {
        let mut any = false;
        while from.s.poll_transmit(buf).is_some() {
            to.inbox.push_back((at, buf.split().freeze()));
            any = true;
        }
        any
    }

    fn deliver(node: &mut Node, now: Instant) -> bool {
        if node.hold {
            return false;
        }
        let mut any = false;
        while node.inbox.front().is_some_and(|(at, _)| *at <= now) {
            let (_, msg) = node.inbox.pop_front().expect("front exists");
            if let Ok(m) = codec::decode(&msg, usize::MAX) {
                if let Ok(frames) = m.into_frames() {
                    node.received.extend(frames);
                }
            }
            node.s.handle_message(now, msg);
            any = true;
        }
        any
    }

    fn collect(node: &mut Node) {
        while let Some(e) = node.s.poll_event() {
            node.events.push_back(e);
        }
    }

    /// One round: transmit, deliver what has arrived, fire due timers, collect events.
    /// Returns whether anything moved.
    pub(crate) fn step(&mut self) -> bool {
        let arrive = self.now + self.latency;
        let mut any = Self::transmit(&mut self.buf, &mut self.a, &mut self.b, arrive);
        any |= Self::transmit(&mut self.buf, &mut self.b, &mut self.a, arrive);
        any |= Self::deliver(&mut self.a, self.now);
        any |= Self::deliver(&mut self.b, self.now);
        for n in [&mut self.a, &mut self.b] {
            if n.s.poll_timeout().is_some_and(|t| t <= self.now) {
                n.s.handle_timeout(self.now);
                any = true;
            }
            Self::collect(n);
        }
        any
    }

    fn next_arrival(&self) -> Option<Instant> {
        [&self.a, &self.b]
            .into_iter()
            .filter(|n| !n.hold)
            .filter_map(|n| n.inbox.front().map(|(at, _)| *at))
            .min()
    }

    /// Steps until nothing moves, moving the clock only to message arrivals (and to the
    /// timers due before an arrival, so that nothing happens out of order). Bounded: a
    /// livelock fails the test.
    pub(crate) fn drive(&mut self) {
        for _ in 0..100_000 {
            if self.step() {
                continue;
            }
            match self.next_arrival() {
                Some(at) if at > self.now => {
                    let timer = [self.a.s.poll_timeout(), self.b.s.poll_timeout()]
                        .into_iter()
                        .flatten()
                        .filter(|t| *t > self.now)
                        .min();
                    self.now = timer.map_or(at, |t| t.min(at));
                }
                _ => return,
            }
        }
        panic!("pair did not settle within 100000 steps");
    }

    /// Lets `d` of virtual time pass, firing every timer and delivering every message at
    /// its own instant.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.drive();
        loop {
            let next = [
                self.a.s.poll_timeout(),
                self.b.s.poll_timeout(),
                self.next_arrival(),
            ]
            .into_iter()
            .flatten()
            .filter(|t| *t <= end)
            .min();
            match next {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.drive();
                }
                None => break,
            }
        }
        self.now = end;
        self.drive();
    }

    /// Runs until exactly `at`: every timer and arrival up to `at` is handled at its own
    /// instant; unlike [`Pair::advance`], messages still in flight at `at` stay in flight.
    pub(crate) fn advance_to(&mut self, at: Instant) {
        for _ in 0..1_000_000 {
            self.settle();
            let next = [
                self.a.s.poll_timeout(),
                self.b.s.poll_timeout(),
                self.next_arrival(),
            ]
            .into_iter()
            .flatten()
            .filter(|t| *t > self.now && *t <= at)
            .min();
            match next {
                Some(t) => self.now = t,
                None => {
                    self.now = self.now.max(at);
                    self.settle();
                    return;
                }
            }
        }
        panic!("pair did not reach {at:?}");
    }

    /// Steps without moving the clock until nothing moves. Bounded: a livelock (say, a
    /// timer that keeps firing at the same instant) fails the test.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("pair did not settle at {:?}", self.now);
    }

    /// Delivers a raw message to `b` as if `a` had sent it.
    pub(crate) fn inject_to_b(&mut self, msg: Bytes) {
        let at = self.now;
        self.b.inbox.push_back((at, msg));
    }

    /// Delivers a raw message to `a` as if `b` had sent it.
    pub(crate) fn inject_to_a(&mut self, msg: Bytes) {
        let at = self.now;
        self.a.inbox.push_back((at, msg));
    }

    /// Both sides hold no mux and no mux timer.
    pub(crate) fn assert_clean(&self) {
        for (name, n) in [("a", &self.a), ("b", &self.b)] {
            let st = n.s.stats();
            assert_eq!(st.outgoing_muxes, 0, "{name} holds outgoing muxes");
            assert_eq!(st.incoming_muxes, 0, "{name} holds incoming muxes");
            assert_eq!(n.s.scheduled_timers(), 0, "{name} holds mux timers");
            assert_eq!(st.bugs, 0, "{name} saw bugs");
        }
    }
}

/// `n` bytes of a recognisable pattern.
pub(crate) fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

/// A frame as a peer on a plain-HTTP link would send it (with a CRC), for injection.
pub(crate) fn forge(
    op: codec::Op,
    mux_id: u64,
    seq: u32,
    flags: codec::Flags,
    payload: &[u8],
) -> Frame {
    let mut f = Frame::new(op);
    f.mux_id = mux_id;
    f.seq = seq;
    f.flags = codec::Flags::CRC | flags;
    f.payload = Bytes::copy_from_slice(payload);
    f
}

/// One merged message in which the peer opens `STREAM` on mux IDs `1..=n` and cancels
/// each right after its open.
pub(crate) fn open_cancel_churn(n: u64) -> Bytes {
    let mut frames = Vec::new();
    for id in 1..=n {
        let mut open = forge(codec::Op::ConnectMux, id, 0, codec::Flags::NONE, b"");
        open.handler = STREAM.id;
        frames.push(open);
        frames.push(forge(
            codec::Op::DisconnectServerMux,
            id,
            1,
            codec::Flags::NONE,
            b"",
        ));
    }
    let mut msg = BytesMut::new();
    codec::encode_merged(frames.iter(), &mut msg);
    msg.freeze()
}
