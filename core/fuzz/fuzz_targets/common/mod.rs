//! Shared pieces of the session fuzz targets (included by each with `#[path]`).
//!
//! * [`Node`]: one session plus a model of its two mux tables, kept in step with every
//!   event and command. Every check that must hold for any input lives here: the model
//!   matches the tables (so every mux ends exactly once: a second end, or an end for a
//!   mux that is not live, fails at once), the tables and the outbound queue stay
//!   bounded, every transmitted message decodes, no timer is due after
//!   `handle_timeout`, no event follows `Lost`, and `bug_count()` stays 0.
//! * [`Pair`]: a dialer and an acceptor connected in memory on a virtual clock, with one
//!   wire queue per direction that the targets deliver from (in order within a direction).
//! * [`Input`]: a byte reader that never fails (it yields zeros when the input runs out),
//!   for the targets that parse their input by hand; [`FrameSpec`]: a frame built from
//!   fuzzed fields, encoded by the codec (so its CRC is right).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use grid_core::codec::{self, Flags, Frame, Message, Op, SubrouteId, Time};
use grid_core::proto::{
    self, CallError, Cluster, Config, Dir, Event, HandlerKey, HandlerKind, LostReason, MuxKey,
    Read, SendError, Session,
};

// ---------------------------------------------------------------------------------------
// Cluster setup.

pub const HOST_X: &str = "http://x:9000";
pub const HOST_Y: &str = "http://y:9000";
/// A third peer, so that an acceptor knows more hosts than its dialer.
pub const HOST_Z: &str = "http://z:9000";
/// Two TLS peers: a link between them carries no CRC.
pub const HOST_S: &str = "https://s:9000";
pub const HOST_T: &str = "https://t:9000";
/// Every node of the fuzz cluster.
pub const HOSTS: [&str; 5] = [HOST_X, HOST_Y, HOST_Z, HOST_S, HOST_T];

pub const GOOD_TOKEN: &str = "good";

/// The single-request handler.
pub const SINGLE: HandlerKey = HandlerKey::new(1);
/// A stream with in and out capacity 1.
pub const STREAM: HandlerKey = HandlerKey::new(10);
/// A stream without input (in capacity 0), out capacity 1.
pub const NO_INPUT: HandlerKey = HandlerKey::new(11);
/// A stream with in and out capacity 5.
pub const WIDE: HandlerKey = HandlerKey::new(12);
/// A stream with in capacity 3 and out capacity 2, on a subroute.
pub fn routed() -> HandlerKey {
    HandlerKey::with_route(13, "fuzz/route")
}
/// Not registered anywhere.
pub const UNKNOWN: HandlerKey = HandlerKey::new(99);

/// Handlers a fuzzed request may name (registered or not, single or stream).
pub fn request_handlers() -> [HandlerKey; 5] {
    [SINGLE, SINGLE, UNKNOWN, STREAM, routed()]
}

/// Handlers a fuzzed stream open may name.
pub fn stream_handlers() -> [HandlerKey; 7] {
    [STREAM, NO_INPUT, WIDE, routed(), WIDE, SINGLE, UNKNOWN]
}

/// Small limits, so that the fuzzer reaches them.
pub fn config() -> Config {
    let mut c = Config::default();
    c.max_muxes = 64;
    c.max_queued_frames = 256;
    c.max_queued_bytes = 64 << 10;
    c.max_frame_size = 32 << 10;
    c.merge_max_frames = 16;
    c.merge_max_bytes = 4096;
    c
}

pub fn wall0() -> Time {
    Time {
        secs: 1_700_000_000,
        nanos: 0,
    }
}

/// The cluster description of `host` (process ID `[id; 16]`): every other host of
/// [`HOSTS`] is a peer, the token `good` is the only valid one.
pub fn cluster(host: &str, id: u8, config: &Config) -> Arc<Cluster> {
    let mut c = Cluster::new(host, [id; 16], &HOSTS);
    c.config = config.clone();
    c.validate_token = Arc::new(|t| {
        if t == GOOD_TOKEN {
            Ok(())
        } else {
            Err("invalid token".to_owned())
        }
    });
    let r = &mut c.registry;
    r.register(SINGLE, HandlerKind::Single).unwrap();
    r.register(STREAM, HandlerKind::stream(1, 1)).unwrap();
    r.register(NO_INPUT, HandlerKind::stream(0, 1)).unwrap();
    r.register(WIDE, HandlerKind::stream(5, 5)).unwrap();
    r.register(routed(), HandlerKind::stream(3, 2)).unwrap();
    Arc::new(c)
}

/// `(dialer, acceptor)` among X and Y, by the protocol's rule.
pub fn roles() -> (&'static str, &'static str) {
    if codec::should_dial(HOST_X, HOST_Y) {
        (HOST_X, HOST_Y)
    } else {
        (HOST_Y, HOST_X)
    }
}

/// `n` bytes of a recognisable pattern starting at `seed`.
pub fn pattern(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Whether `GRID_FUZZ_TRACE` is set: then every event, command result and sent frame is
/// printed to stderr (to read what a crash or a seed does).
pub fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("GRID_FUZZ_TRACE").is_some())
}

// ---------------------------------------------------------------------------------------
// The model of one session.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutKind {
    Single,
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InKind {
    Single,
    Stream,
    /// `finish` was called while the stream had no credit: the final frame waits for
    /// one, and the mux leaves the table without an event when it is sent.
    Finishing,
}

/// One session and the model of its tables.
pub struct Node {
    pub name: &'static str,
    pub s: Session,
    pub cfg: Config,
    /// Outgoing muxes that have not ended.
    pub out: BTreeMap<u64, OutKind>,
    /// Incoming muxes that have not ended.
    pub inc: BTreeMap<u64, InKind>,
    pub connected_seen: bool,
    /// The reason of the `Lost` event, once seen.
    pub lost: Option<LostReason>,
    /// Every event since the target last took them (for its own oracles).
    pub log: Vec<Event>,
    /// Muxes in the tables when the current input began, and muxes opened during it.
    before: usize,
    opened: usize,
}

impl Node {
    pub fn new(name: &'static str, s: Session, cfg: Config) -> Node {
        Node {
            name,
            s,
            cfg,
            out: BTreeMap::new(),
            inc: BTreeMap::new(),
            connected_seen: false,
            lost: None,
            log: Vec::new(),
            before: 0,
            opened: 0,
        }
    }

    /// Marks the start of one input (a message, a tick, a command).
    pub fn begin(&mut self) {
        self.before = self.out.len() + self.inc.len();
        self.opened = 0;
    }

    /// The live outgoing mux IDs, in order.
    pub fn out_ids(&self, kind: Option<OutKind>) -> Vec<u64> {
        self.out
            .iter()
            .filter(|(_, k)| kind.is_none_or(|want| **k == want))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The live incoming mux IDs with a kind in `kinds`, in order.
    pub fn in_ids(&self, kinds: &[InKind]) -> Vec<u64> {
        self.inc
            .iter()
            .filter(|(_, k)| kinds.contains(k))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Picks one of `ids` by `sel`, or (when there is none, or `sel` says so) an ID that
    /// is probably unknown.
    pub fn pick(ids: &[u64], sel: u8) -> u64 {
        if ids.is_empty() || sel == 0xff {
            return u64::from(sel);
        }
        ids[sel as usize % ids.len()]
    }

    fn on_event(&mut self, e: &Event) {
        let name = self.name;
        assert!(
            self.lost.is_none(),
            "{name}: event after Lost({:?}): {e:?}",
            self.lost
        );
        match e {
            Event::Connected { .. } => {
                assert!(!self.connected_seen, "{name}: second Connected event");
                self.connected_seen = true;
            }
            Event::Lost(reason) => {
                assert!(
                    self.out.is_empty() && self.inc.is_empty(),
                    "{name}: Lost({reason:?}) with muxes not ended: out {:?}, in {:?}",
                    self.out,
                    self.inc
                );
                self.lost = Some(reason.clone());
            }
            Event::Request { mux_id, .. } | Event::StreamOpened { mux_id, .. } => {
                assert!(self.connected_seen, "{name}: call before Connected: {e:?}");
                let kind = if matches!(e, Event::Request { .. }) {
                    InKind::Single
                } else {
                    InKind::Stream
                };
                match self.inc.get(mux_id) {
                    // The previous call's final frame went out (no event marks that).
                    None | Some(InKind::Finishing) => {}
                    Some(k) => panic!("{name}: {e:?} while incoming mux {mux_id} is live ({k:?})"),
                }
                self.inc.insert(*mux_id, kind);
                self.opened += 1;
            }
            Event::Response { mux_id, .. } => match self.out.remove(mux_id) {
                Some(OutKind::Single) => {}
                other => panic!("{name}: {e:?} for outgoing mux {mux_id} in state {other:?}"),
            },
            Event::Closed { key, .. } => match key.dir {
                Dir::Outgoing => match self.out.remove(&key.id) {
                    Some(OutKind::Stream) => {}
                    other => panic!("{name}: {e:?} for outgoing mux in state {other:?}"),
                },
                Dir::Incoming => {
                    if self.inc.remove(&key.id).is_none() {
                        panic!("{name}: {e:?} for an incoming mux that is not live");
                    }
                }
            },
            Event::Readable(key) | Event::Writable(key) => {
                let live = match key.dir {
                    Dir::Outgoing => self.out.get(&key.id) == Some(&OutKind::Stream),
                    Dir::Incoming => matches!(
                        self.inc.get(&key.id),
                        Some(InKind::Stream | InKind::Finishing)
                    ),
                };
                assert!(live, "{name}: {e:?} for a stream that is not live");
            }
            other => panic!("{name}: unexpected event {other:?}"),
        }
    }

    /// Takes the session's events into the model, checks the outbound queue's bound,
    /// moves every outbound message to `wire` (checking it), then checks the model.
    pub fn settle(&mut self, wire: &mut VecDeque<Bytes>, buf: &mut BytesMut) {
        while let Some(e) = self.s.poll_event() {
            if trace() {
                eprintln!("{}: event {e:?}", self.name);
            }
            self.on_event(&e);
            self.log.push(e);
        }
        // The bound does not grow with the input: whatever one message, tick or command
        // holds, the queue may pass `max_queued_frames` only by what the muxes the
        // tables can hold account for (a tick ping and an ending frame each, for
        // `max_muxes` in each table), plus the connection ping and a few more.
        let q = self.s.stats().queued_frames;
        let bound = self.cfg.max_queued_frames + 2 * (2 * self.cfg.max_muxes) + 16;
        assert!(
            q <= bound,
            "{}: {q} frames queued, bound {bound} ({} muxes before, {} opened)",
            self.name,
            self.before,
            self.opened
        );
        while let Some(t) = self.s.poll_transmit(buf) {
            let msg = buf.split().freeze();
            assert_eq!(msg.len(), t.len, "{}: poll_transmit misstated the length", self.name);
            self.check_transmitted(&msg, t.frames);
            wire.push_back(msg);
        }
        self.check();
    }

    /// Every message a session sends decodes, holds what `poll_transmit` said, and a
    /// container holds at most `merge_max_frames + 1` frames, never a handshake frame.
    fn check_transmitted(&self, msg: &Bytes, frames: usize) {
        let name = self.name;
        let m = codec::decode(msg, usize::MAX)
            .unwrap_or_else(|e| panic!("{name}: sent a message that does not decode: {e}"));
        let merged = matches!(m, Message::Merged(_));
        let all = m
            .into_frames()
            .unwrap_or_else(|e| panic!("{name}: sent a container that does not decode: {e}"));
        assert_eq!(all.len(), frames, "{name}: poll_transmit miscounted frames");
        assert!(frames >= 1);
        if trace() {
            eprintln!("{name}: sends {all:?}");
        }
        assert!(
            frames <= self.cfg.merge_max_frames + 1,
            "{name}: {frames} frames merged"
        );
        if merged {
            assert!(frames > 1, "{name}: a container of one frame");
            for f in &all {
                assert!(
                    !matches!(f.op, Op::Connect | Op::ConnectResponse | Op::Merged),
                    "{name}: {:?} sent inside a container",
                    f.op
                );
            }
        }
    }

    /// The checks that hold between any two inputs.
    pub fn check(&mut self) {
        let name = self.name;
        assert_eq!(proto::bug_count(), 0, "{name}: grid-core reported a bug");
        // A finishing stream leaves the table without an event once its final frame went.
        let s = &self.s;
        self.inc
            .retain(|id, k| *k != InKind::Finishing || s.contains(MuxKey::incoming(*id)));
        let st = s.stats();
        assert_eq!(st.bugs, 0, "{name}: session reported a bug");
        assert_eq!(
            st.outgoing_muxes,
            self.out.len(),
            "{name}: outgoing table {} vs model {:?}",
            st.outgoing_muxes,
            self.out
        );
        assert_eq!(
            st.incoming_muxes,
            self.inc.len(),
            "{name}: incoming table {} vs model {:?}",
            st.incoming_muxes,
            self.inc
        );
        for id in self.out.keys() {
            assert!(
                s.contains(MuxKey::outgoing(*id)),
                "{name}: outgoing {id} missing"
            );
        }
        for id in self.inc.keys() {
            assert!(
                s.contains(MuxKey::incoming(*id)),
                "{name}: incoming {id} missing"
            );
        }
        assert!(st.outgoing_muxes <= self.cfg.max_muxes, "{name}: {st:?}");
        assert!(st.incoming_muxes <= self.cfg.max_muxes, "{name}: {st:?}");
        let timers = s.scheduled_timers();
        assert!(
            timers <= 2 * (st.outgoing_muxes + st.incoming_muxes),
            "{name}: {timers} mux timers for {} muxes",
            st.outgoing_muxes + st.incoming_muxes
        );
        if s.is_closed() {
            assert!(self.lost.is_some(), "{name}: closed without a Lost event");
            assert!(!s.is_connected());
            assert!(s.poll_timeout().is_none(), "{name}: closed with a timer");
        } else {
            assert!(self.lost.is_none(), "{name}: Lost but not closed");
        }
        if s.is_connected() {
            assert!(self.connected_seen, "{name}: connected without Connected");
            assert!(
                s.poll_timeout().is_some(),
                "{name}: connected without keepalive"
            );
        }
    }

    /// Handles a timer tick at `now` and checks that nothing stays due.
    pub fn timeout(&mut self, now: Instant) {
        self.s.handle_timeout(now);
        if let Some(t) = self.s.poll_timeout() {
            assert!(
                t > now,
                "{}: a timer is still due after handle_timeout",
                self.name
            );
        }
    }

    // -----------------------------------------------------------------------------------
    // Commands, each keeping the model in step. The caller settles afterwards.

    pub fn request(
        &mut self,
        now: Instant,
        handler: HandlerKey,
        payload: Bytes,
        deadline: Option<Duration>,
    ) -> Result<u64, CallError> {
        let r = self.s.request(now, handler, payload, deadline);
        if let Ok(id) = r {
            assert!(
                self.out.insert(id, OutKind::Single).is_none(),
                "{}: request got live mux ID {id}",
                self.name
            );
            self.opened += 1;
        }
        r
    }

    pub fn open_stream(
        &mut self,
        now: Instant,
        handler: HandlerKey,
        payload: Option<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<u64, CallError> {
        let r = self.s.open_stream(now, handler, payload, deadline);
        if let Ok(id) = r {
            assert!(
                self.out.insert(id, OutKind::Stream).is_none(),
                "{}: open_stream got live mux ID {id}",
                self.name
            );
            self.opened += 1;
        }
        r
    }

    /// Cancels; returns whether a live call ended.
    pub fn cancel(&mut self, id: u64) -> bool {
        self.s.cancel(id);
        self.out.remove(&id).is_some()
    }

    pub fn send(&mut self, now: Instant, key: MuxKey, item: Bytes) -> Result<(), SendError> {
        let live = match key.dir {
            Dir::Outgoing => self.out.get(&key.id) == Some(&OutKind::Stream),
            Dir::Incoming => self.inc.get(&key.id) == Some(&InKind::Stream),
        };
        let r = self.s.send(now, key, item);
        if !live {
            assert!(
                matches!(r, Err(SendError::Call(CallError::Closed))),
                "{}: send on {key:?} (not a live stream) gave {r:?}",
                self.name
            );
        }
        r
    }

    pub fn read(&mut self, now: Instant, key: MuxKey) -> Read {
        let r = self.s.read(now, key);
        let name = self.name;
        match key.dir {
            Dir::Outgoing => match self.out.get(&key.id) {
                Some(OutKind::Stream) => {
                    if matches!(r, Read::End(_)) {
                        self.out.remove(&key.id);
                    }
                }
                _ => assert_eq!(
                    r,
                    Read::End(Err(CallError::Closed)),
                    "{name}: read of {key:?} (not a live stream)"
                ),
            },
            Dir::Incoming => match self.inc.get(&key.id) {
                Some(InKind::Stream | InKind::Finishing) => assert_ne!(
                    r,
                    Read::End(Err(CallError::Closed)),
                    "{name}: read of live {key:?}"
                ),
                _ => assert_eq!(
                    r,
                    Read::End(Err(CallError::Closed)),
                    "{name}: read of {key:?} (not a live stream)"
                ),
            },
        }
        r
    }

    pub fn close_send(&mut self, now: Instant, id: u64) -> Result<(), CallError> {
        let r = self.s.close_send(now, id);
        if self.out.get(&id) != Some(&OutKind::Stream) {
            assert_eq!(
                r,
                Err(CallError::Closed),
                "{}: close_send of {id}",
                self.name
            );
        }
        r
    }

    pub fn respond(&mut self, now: Instant, id: u64, result: Result<Bytes, String>) -> bool {
        let live = self.inc.get(&id) == Some(&InKind::Single);
        let done = self.s.respond(now, id, result);
        assert_eq!(done, live, "{}: respond to {id} (live: {live})", self.name);
        if done {
            self.inc.remove(&id);
        }
        done
    }

    pub fn finish(&mut self, now: Instant, id: u64, result: Result<(), String>) -> bool {
        let kind = self.inc.get(&id).copied();
        let done = self.s.finish(now, id, result);
        let live = matches!(kind, Some(InKind::Stream | InKind::Finishing));
        assert_eq!(done, live, "{}: finish of {id} ({kind:?})", self.name);
        if done {
            if self.s.contains(MuxKey::incoming(id)) {
                self.inc.insert(id, InKind::Finishing);
            } else {
                self.inc.remove(&id);
            }
        }
        done
    }
}

// ---------------------------------------------------------------------------------------
// A connected pair.

/// A dialer (`n[0]`) and an acceptor (`n[1]`); `wire[i]` holds the messages on their way
/// to `n[i]`, in order.
pub struct Pair {
    pub now: Instant,
    pub n: [Node; 2],
    pub wire: [VecDeque<Bytes>; 2],
    pub cfg: Config,
    buf: BytesMut,
}

impl Pair {
    /// Two sessions with the handshake done in memory and the Connected events taken.
    pub fn connected() -> Pair {
        let cfg = config();
        let now = Instant::now();
        let (d, a) = roles();
        let sd = Session::dialer(cluster(d, 1, &cfg), a, GOOD_TOKEN, now, wall0());
        let sa = Session::acceptor(cluster(a, 2, &cfg), now, wall0());
        let mut p = Pair {
            now,
            n: [
                Node::new("dialer", sd, cfg.clone()),
                Node::new("acceptor", sa, cfg.clone()),
            ],
            wire: [VecDeque::new(), VecDeque::new()],
            cfg,
            buf: BytesMut::new(),
        };
        p.handshake();
        p
    }

    fn handshake(&mut self) {
        self.settle(0);
        self.deliver(1, 1);
        self.deliver(0, 1);
        for n in &mut self.n {
            assert!(
                n.s.is_connected(),
                "{} did not connect: {:?}",
                n.name,
                n.log
            );
            assert!(n.connected_seen);
            n.log.clear();
        }
    }

    /// After both sessions closed: a new pair of sessions on the same link, continuing
    /// the mux IDs as a driver does.
    pub fn reconnect(&mut self) {
        assert!(self.n[0].s.is_closed() && self.n[1].s.is_closed());
        let (d, a) = roles();
        let cfg = self.cfg.clone();
        let mut sd = Session::dialer(cluster(d, 1, &cfg), a, GOOD_TOKEN, self.now, wall0());
        let mut sa = Session::acceptor(cluster(a, 2, &cfg), self.now, wall0());
        sd.continue_mux_ids(self.n[0].s.last_mux_id());
        sa.continue_mux_ids(self.n[1].s.last_mux_id());
        self.n = [
            Node::new("dialer", sd, cfg.clone()),
            Node::new("acceptor", sa, cfg),
        ];
        self.wire = [VecDeque::new(), VecDeque::new()];
        self.handshake();
    }

    /// Settles node `i`: events into the model, messages onto the wire to the other.
    pub fn settle(&mut self, i: usize) {
        let (a, b) = self.wire.split_at_mut(1);
        let to_other = if i == 0 { &mut b[0] } else { &mut a[0] };
        self.n[i].settle(to_other, &mut self.buf);
    }

    /// Delivers `msg` to node `i` as one inbound message.
    pub fn message(&mut self, i: usize, msg: Bytes) {
        if trace() {
            let frames = codec::decode(&msg, usize::MAX).and_then(Message::into_frames);
            eprintln!(
                "{}: receives {} bytes: {frames:?}",
                self.n[i].name,
                msg.len()
            );
        }
        self.n[i].begin();
        self.n[i].s.handle_message(self.now, msg);
        self.settle(i);
    }

    /// Delivers up to `count` messages from the wire to node `i`, in order; returns how
    /// many.
    pub fn deliver(&mut self, i: usize, count: usize) -> usize {
        let mut done = 0;
        while done < count {
            let Some(msg) = self.wire[i].pop_front() else {
                break;
            };
            self.message(i, msg);
            done += 1;
        }
        done
    }

    /// Delivers everything in flight both ways until the wire is empty. A pair that keeps
    /// answering each other without end is a bug (an amplification loop).
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            if self.wire[0].is_empty() && self.wire[1].is_empty() {
                return;
            }
            let n = self.wire[1].len();
            self.deliver(1, n);
            let n = self.wire[0].len();
            self.deliver(0, n);
        }
        panic!(
            "the pair keeps exchanging messages: {} and {} in flight",
            self.wire[0].len(),
            self.wire[1].len()
        );
    }

    /// Fires the due timers of both nodes at the current instant.
    pub fn timeout(&mut self) {
        for i in 0..2 {
            self.n[i].begin();
            self.n[i].timeout(self.now);
            self.settle(i);
        }
    }

    /// Lets `d` pass. `exact`: every timer fires at its own instant (as a driver does);
    /// otherwise the clock jumps and late timers fire at once. `pump`: messages are
    /// delivered as soon as they are sent.
    pub fn tick(&mut self, d: Duration, exact: bool, pump: bool) {
        let end = self.now + d;
        if exact {
            for _ in 0..100_000 {
                let next = self.n.iter().filter_map(|n| n.s.poll_timeout()).min();
                match next {
                    Some(t) if t <= end => {
                        self.now = self.now.max(t);
                        self.timeout();
                        if pump {
                            self.pump();
                        }
                    }
                    _ => break,
                }
            }
        }
        self.now = self.now.max(end);
        self.timeout();
        if pump {
            self.pump();
        }
    }

    /// Closes both sessions and checks that every mux ended exactly once (the model is
    /// empty: each live mux got its one end event, and none got a second), the tables
    /// are empty, no timer or frame is left, and each side saw exactly one `Lost`.
    pub fn close_both(&mut self, reason: LostReason) {
        for i in 0..2 {
            self.n[i].begin();
            self.n[i].s.close(reason.clone());
            self.settle(i);
        }
        for n in &mut self.n {
            let name = n.name;
            assert!(n.s.is_closed(), "{name}: open after close");
            assert!(n.lost.is_some(), "{name}: no Lost event after close");
            assert!(
                n.out.is_empty() && n.inc.is_empty(),
                "{name}: muxes not ended"
            );
            let st = n.s.stats();
            assert_eq!(
                (st.outgoing_muxes, st.incoming_muxes),
                (0, 0),
                "{name}: {st:?}"
            );
            assert_eq!(st.queued_frames, 0, "{name}: frames left after close");
            assert_eq!(n.s.scheduled_timers(), 0, "{name}: timers left after close");
            assert!(n.s.poll_event().is_none());
            // Closing again changes nothing.
            n.s.close(LostReason::Local);
            n.s.handle_timeout(self.now + Duration::from_secs(3600));
            assert!(
                n.s.poll_event().is_none(),
                "{name}: event after a second close"
            );
            assert!(n.s.poll_transmit(&mut self.buf).is_none());
        }
        self.wire = [VecDeque::new(), VecDeque::new()];
    }
}

// ---------------------------------------------------------------------------------------
// Parsing fuzz input by hand.

/// A reader over the fuzz input; past the end it yields zeros (and empty slices).
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer if the input ends).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }

    /// A length-prefixed byte string (u16 length).
    pub fn blob(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }

    /// A short length-prefixed byte string (u8 length).
    pub fn short_blob(&mut self) -> &'a [u8] {
        let n = self.u8() as usize;
        self.bytes(n)
    }
}

// ---------------------------------------------------------------------------------------
// Frames from fuzzed fields.

/// A frame built from fuzzed fields; [`FrameSpec::frame`] gives the codec's frame, whose
/// encoding carries a correct CRC when the CRC flag is set.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub op: u8,
    pub mux_id: u64,
    pub seq: u32,
    pub deadline_ms: u32,
    pub handler: u8,
    pub flags: u8,
    pub subroute: Option<SubrouteId>,
    pub payload: Bytes,
}

impl FrameSpec {
    pub fn frame(&self) -> Frame {
        let mut f = Frame::new(Op::from_u8(self.op));
        f.mux_id = self.mux_id;
        f.seq = self.seq;
        f.deadline_ms = self.deadline_ms;
        f.handler = self.handler;
        f.flags = Flags(self.flags);
        f.subroute = self.subroute;
        f.payload = self.payload.clone();
        f
    }

    /// Reads a frame aimed at `target` (mux IDs are mostly ones it knows, or small).
    pub fn read(inp: &mut Input<'_>, target: &Node) -> FrameSpec {
        // Ops 0 and 18 are unknown; 17 is Merged (a nested container when merged).
        let op = inp.u8() % 19;
        let sel = inp.u8();
        let mux_id = match sel % 8 {
            0..=2 => {
                let ids = target.out_ids(None);
                Node::pick(&ids, inp.u8())
            }
            3..=5 => {
                let ids: Vec<u64> = target.inc.keys().copied().collect();
                Node::pick(&ids, inp.u8())
            }
            6 => u64::from(sel >> 3),
            _ => inp.u64(),
        };
        let sb = inp.u8();
        let seq = match sb % 4 {
            3 => inp.u32(),
            _ => u32::from(sb >> 2),
        };
        let db = inp.u8();
        let deadline_ms = match db % 4 {
            0 => 0,
            1 => u32::from(db >> 2) * 100,
            2 => u32::from(inp.u16()),
            _ => inp.u32(),
        };
        let handler = match inp.u8() {
            h @ 0..=7 => [
                0,
                SINGLE.id,
                STREAM.id,
                NO_INPUT.id,
                WIDE.id,
                13,
                UNKNOWN.id,
                1,
            ][h as usize],
            h => h,
        };
        let fb = inp.u8();
        // Mostly with a CRC (as on this link); the low bits are fuzzed freely.
        let flags = if fb & 0x80 != 0 {
            fb & 0x7f
        } else {
            fb | Flags::CRC.0
        };
        let rb = inp.u8();
        let subroute = match rb % 8 {
            0 => Some(routed().subroute.expect("routed")),
            1 => {
                let mut b = [0u8; 32];
                let raw = inp.bytes(32);
                b[..raw.len()].copy_from_slice(raw);
                Some(SubrouteId::from_bytes(b))
            }
            2 => Some(SubrouteId::new(rb >> 3, "fuzz/route")),
            _ => None,
        };
        let pb = inp.u8();
        let payload = match pb % 4 {
            0 => Bytes::new(),
            1 => pattern(usize::from(pb >> 2), pb),
            _ => Bytes::copy_from_slice(inp.short_blob()),
        };
        FrameSpec {
            op,
            mux_id,
            seq,
            deadline_ms,
            handler,
            flags,
            subroute,
            payload,
        }
    }
}

/// Encodes one frame alone, or several as an `OpMerged` container.
///
/// `encode_merged` refuses to nest containers (a debug assertion), so a container
/// holding an `Op::Merged` frame is written here by hand: the header frame (op Merged,
/// seq = count), then each frame as a msgpack `bin`.
pub fn encode_frames(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    match frames {
        [f] => f.encode(&mut out),
        fs if fs.iter().all(|f| f.op != Op::Merged) => codec::encode_merged(fs.iter(), &mut out),
        fs => {
            let mut header = Frame::new(Op::Merged);
            header.seq = fs.len() as u32;
            header.encode(&mut out);
            for f in fs {
                let inner = f.to_bytes();
                let n = inner.len();
                if n <= 0xff {
                    out.extend_from_slice(&[0xc4, n as u8]);
                } else if n <= 0xffff {
                    out.extend_from_slice(&[0xc5]);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                } else {
                    out.extend_from_slice(&[0xc6]);
                    out.extend_from_slice(&(n as u32).to_be_bytes());
                }
                out.extend_from_slice(&inner);
            }
        }
    }
    out.freeze()
}
