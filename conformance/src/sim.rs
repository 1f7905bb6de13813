//! A deterministic simulation of a whole cluster: N nodes of pure sessions and dial
//! schedules, joined by an in-memory network, on one virtual clock, in one thread.
//!
//! Every step is chosen by a seeded RNG: deliver a message, fire a timer, start or
//! cancel a call, pause a consumer, inject a fault. The same seed gives the same
//! transcript (a hash of every message and event). Invariants are checked after every
//! step; at the end the faults stop, the clock runs on, and every link must be up again
//! with no call state left anywhere.
//!
//! A failure names its seed and a command that replays it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use grid_core::codec::{self, Time};
use grid_core::proto::{
    Backoff, CallError, Cluster, Config, Dir, Event, HandlerKey, HandlerKind, LostReason, MuxKey,
    Read, Redial, SendError, Session,
};
use twox_hash::XxHash3_64;

/// splitmix64: a small, well-distributed generator; all randomness of a run comes from
/// its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_0f9e_1d00)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A duration in `lo..hi`.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// How a run is shaped.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Steps of workload and faults before the quiet phase.
    pub steps: usize,
    /// Whether faults are injected.
    pub faults: bool,
    /// Keep a readable transcript tail (for failure reports).
    pub record: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            steps: 300,
            faults: true,
            record: false,
        }
    }
}

/// What a successful run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Hash of every message and event, in order.
    pub transcript: u64,
    /// Calls made.
    pub calls: usize,
    /// Faults injected.
    pub faults: usize,
    /// Messages delivered.
    pub messages: u64,
}

/// A broken invariant.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed that broke it.
    pub seed: u64,
    /// What broke.
    pub message: String,
    /// The end of the transcript.
    pub tail: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.message)?;
        writeln!(
            f,
            "replay: GRID_SIM_SEED={} cargo test --release -p grid-conformance --test sim replay -- --nocapture",
            self.seed
        )?;
        writeln!(f, "transcript tail:")?;
        for l in &self.tail {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

const SINGLE: HandlerKey = HandlerKey::new(1);
/// Stream without input, out capacity 1: pushes items.
const PUSH: HandlerKey = HandlerKey::new(10);
/// Stream without input, out capacity 16.
const PUSH_WIDE: HandlerKey = HandlerKey::new(11);
/// Stream with input, capacities 2/2: echoes.
const ECHO: HandlerKey = HandlerKey::new(12);
/// Stream with input, capacities 1/1: echoes.
const ECHO_NARROW: HandlerKey = HandlerKey::new(13);
const STREAMS: [HandlerKey; 4] = [PUSH, PUSH_WIDE, ECHO, ECHO_NARROW];

/// What a server does with a call (carried in the call's payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behavior {
    /// Echo at once (single) / push `count` items then end (stream).
    Now,
    /// Echo after `delay` / push after `delay`.
    Later,
    /// Fail (single: at once; stream: after `count` items).
    Fail,
    /// Never answer in time: single answers after `delay` (beyond its deadline), a
    /// stream waits `delay` then ends without items.
    Slow,
}

impl Behavior {
    fn from_byte(b: u8) -> Behavior {
        match b % 4 {
            0 => Behavior::Now,
            1 => Behavior::Later,
            2 => Behavior::Fail,
            _ => Behavior::Slow,
        }
    }
}

/// A call's payload header: uid, behavior, count, delay.
#[derive(Clone, Copy, Debug)]
struct Spec {
    uid: u64,
    behavior: Behavior,
    count: u32,
    delay: Duration,
}

const SPEC_LEN: usize = 8 + 1 + 4 + 4;

impl Spec {
    fn encode(&self, fill: usize) -> Bytes {
        let mut v = Vec::with_capacity(SPEC_LEN + fill);
        v.extend_from_slice(&self.uid.to_le_bytes());
        v.push(self.behavior as u8);
        v.extend_from_slice(&self.count.to_le_bytes());
        v.extend_from_slice(&(self.delay.as_millis() as u32).to_le_bytes());
        v.extend((0..fill).map(|i| (self.uid as usize + i) as u8));
        v.into()
    }

    fn decode(b: &[u8]) -> Option<Spec> {
        if b.len() < SPEC_LEN {
            return None;
        }
        Some(Spec {
            uid: u64::from_le_bytes(b[..8].try_into().ok()?),
            behavior: Behavior::from_byte(b[8]),
            count: u32::from_le_bytes(b[9..13].try_into().ok()?),
            delay: Duration::from_millis(u32::from_le_bytes(b[13..17].try_into().ok()?) as u64),
        })
    }
}

fn item(uid: u64, index: u32, pad: usize) -> Bytes {
    let mut v = Vec::with_capacity(12 + pad);
    v.extend_from_slice(&uid.to_le_bytes());
    v.extend_from_slice(&index.to_le_bytes());
    v.resize(12 + pad, index as u8);
    v.into()
}

fn parse_item(b: &[u8]) -> Option<(u64, u32)> {
    if b.len() < 12 {
        return None;
    }
    Some((
        u64::from_le_bytes(b[..8].try_into().ok()?),
        u32::from_le_bytes(b[8..12].try_into().ok()?),
    ))
}

/// A call and how it ended.
#[derive(Debug)]
struct Call {
    from: usize,
    to: usize,
    spec: Spec,
    stream: Option<HandlerKey>,
    request: Bytes,
    outcome: Option<Result<(), CallError>>,
}

/// Client-side state of an open stream.
#[derive(Debug)]
struct ClientStream {
    uid: u64,
    next_index: u32,
    sent: u32,
    closed_send: bool,
    paused: bool,
}

/// Server-side state of a call being handled.
#[derive(Debug)]
enum ServerCall {
    Single,
    Stream {
        uid: u64,
        spec: Spec,
        sent: u32,
        echo: VecDeque<Bytes>,
        input_done: bool,
        /// Work may start (after the spec's delay for `Later`/`Slow`).
        ready: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Dialer = 0,
    Acceptor = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Dialer => Side::Acceptor,
            Side::Acceptor => Side::Dialer,
        }
    }
}

/// One socket between two nodes, with a session at each end.
struct Conn {
    nodes: [usize; 2],
    sessions: [Option<Session>; 2],
    /// Messages on their way to side `i`, with their arrival time.
    inbox: [VecDeque<(Instant, Bytes)>; 2],
    latency: Duration,
}

/// One node's view of a peer.
struct LinkSlot {
    dials: bool,
    redial: Option<Redial>,
    /// The connection whose session is current (for a dialer, also one in handshake).
    current: Option<u64>,
    last_mux: u64,
}

struct Node {
    host: String,
    cluster: Arc<Cluster>,
    links: BTreeMap<usize, LinkSlot>,
    /// Wall clock offset (clock-jump faults).
    skew_secs: i64,
    /// While set, nothing is delivered to this node (it stops answering).
    frozen_until: Option<Instant>,
    /// Outgoing calls by (connection, mux).
    calls_out: BTreeMap<(u64, u64), u64>,
    streams_out: BTreeMap<(u64, u64), ClientStream>,
    /// Incoming calls by (connection, mux).
    calls_in: BTreeMap<(u64, u64), ServerCall>,
}

/// Scheduled application work.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// Answer a single request.
    Respond {
        node: usize,
        conn: u64,
        mux: u64,
        ok: bool,
        payload: Bytes,
    },
    /// Let a server stream start.
    StartStream { node: usize, conn: u64, mux: u64 },
    /// Resume a paused consumer.
    Resume { node: usize, conn: u64, mux: u64 },
    /// End a fault.
    Heal(Heal),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Heal {
    Partition(usize),
    /// One cut of a reconnect storm: every link of the node.
    Storm(usize),
    Clock(usize),
    Latency(u64),
}

/// The simulated cluster.
pub struct Sim {
    seed: u64,
    cfg: SimConfig,
    rng: Rng,
    t0: Instant,
    now: Instant,
    nodes: Vec<Node>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    partitioned: BTreeSet<usize>,
    calls: BTreeMap<u64, Call>,
    handled: BTreeSet<u64>,
    work: BTreeMap<(Instant, u64), Work>,
    work_seq: u64,
    hasher: XxHash3_64,
    tail: VecDeque<String>,
    /// Lines of transcript kept (`GRID_SIM_TAIL`, default 60).
    tail_len: usize,
    faults: usize,
    corrupted: bool,
    messages: u64,
    buf: BytesMut,
    config: Config,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

impl Sim {
    /// A cluster of 2–8 nodes (chosen by the seed), not yet connected.
    pub fn new(seed: u64, cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.below(7) as usize;
        let t0 = Instant::now();
        let hosts: Vec<String> = (0..n)
            .map(|i| format!("http://10.0.0.{}:9000", i + 1))
            .collect();
        let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let config = Config::default();
        let nodes = (0..n)
            .map(|i| {
                let mut c = Cluster::new(hosts[i].clone(), [i as u8 + 1; 16], &host_refs);
                c.config = config.clone();
                c.validate_token = Arc::new(|t| {
                    if t == "sim" {
                        Ok(())
                    } else {
                        Err("bad token".into())
                    }
                });
                let r = &mut c.registry;
                r.register(SINGLE, HandlerKind::Single).expect("register");
                r.register(PUSH, HandlerKind::stream(0, 1))
                    .expect("register");
                r.register(PUSH_WIDE, HandlerKind::stream(0, 16))
                    .expect("register");
                r.register(ECHO, HandlerKind::stream(2, 2))
                    .expect("register");
                r.register(ECHO_NARROW, HandlerKind::stream(1, 1))
                    .expect("register");
                let links = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| {
                        let dials = codec::should_dial(&hosts[i], &hosts[j]);
                        let backoff = Backoff::new(
                            seed ^ (i as u64) << 8 ^ j as u64,
                            config.reconnect_min,
                            config.reconnect_max,
                        );
                        let slot = LinkSlot {
                            dials,
                            redial: dials.then(|| Redial::new(backoff, t0)),
                            current: None,
                            last_mux: 0,
                        };
                        (j, slot)
                    })
                    .collect();
                Node {
                    host: hosts[i].clone(),
                    cluster: Arc::new(c),
                    links,
                    skew_secs: 0,
                    frozen_until: None,
                    calls_out: BTreeMap::new(),
                    streams_out: BTreeMap::new(),
                    calls_in: BTreeMap::new(),
                }
            })
            .collect();
        Sim {
            seed,
            cfg,
            rng,
            t0,
            now: t0,
            nodes,
            conns: BTreeMap::new(),
            next_conn: 1,
            partitioned: BTreeSet::new(),
            calls: BTreeMap::new(),
            handled: BTreeSet::new(),
            work: BTreeMap::new(),
            work_seq: 0,
            hasher: XxHash3_64::new(),
            tail: VecDeque::new(),
            tail_len: std::env::var("GRID_SIM_TAIL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
            faults: 0,
            corrupted: false,
            messages: 0,
            buf: BytesMut::new(),
            config,
        }
    }

    fn elapsed_ms(&self) -> f64 {
        self.now.duration_since(self.t0).as_secs_f64() * 1000.0
    }

    /// Adds a record to the transcript: hashed always, kept as text when recording.
    fn note(&mut self, parts: &[u64], text: impl FnOnce() -> String) {
        for p in parts {
            self.hasher.write(&p.to_le_bytes());
        }
        if self.cfg.record {
            let line = format!("{:>10.3}ms {}", self.elapsed_ms(), text());
            if self.tail.len() >= self.tail_len {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        }
    }

    fn wall(&self, node: usize) -> Time {
        let base = Time {
            secs: 1_700_000_000 + self.nodes[node].skew_secs,
            nanos: 0,
        };
        Time::from_unix_nanos(
            base.as_unix_nanos() + self.now.duration_since(self.t0).as_nanos() as i128,
        )
    }

    /// Tells every session of `node` its (possibly jumped) wall clock.
    fn sync_wall(&mut self, node: usize) {
        let wall = self.wall(node);
        for c in self.conns.values_mut() {
            for side in 0..2 {
                if c.nodes[side] == node {
                    if let Some(s) = c.sessions[side].as_mut() {
                        s.set_wall_clock(self.now, wall);
                    }
                }
            }
        }
    }

    fn schedule(&mut self, at: Instant, w: Work) {
        self.work_seq += 1;
        self.work.insert((at, self.work_seq), w);
    }

    // ------------------------------------------------------------------------------
    // Connections.

    fn start_dial(&mut self, node: usize, peer: usize) {
        if self.partitioned.contains(&node) || self.partitioned.contains(&peer) {
            self.note(&[1, node as u64, peer as u64], || {
                format!("n{node} dial n{peer}: unreachable")
            });
            let now = self.now;
            if let Some(r) = self.nodes[node]
                .links
                .get_mut(&peer)
                .and_then(|l| l.redial.as_mut())
            {
                r.failed(now);
            }
            return;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let token = "sim";
        let remote = self.nodes[peer].host.clone();
        let mut d = Session::dialer(
            self.nodes[node].cluster.clone(),
            &remote,
            token,
            self.now,
            self.wall(node),
        );
        d.continue_mux_ids(self.nodes[node].links[&peer].last_mux);
        let a = Session::acceptor(self.nodes[peer].cluster.clone(), self.now, self.wall(peer));
        let latency = Duration::from_micros(100 + self.rng.below(3000));
        self.conns.insert(
            id,
            Conn {
                nodes: [node, peer],
                sessions: [Some(d), Some(a)],
                inbox: [VecDeque::new(), VecDeque::new()],
                latency,
            },
        );
        self.nodes[node].links.get_mut(&peer).expect("link").current = Some(id);
        self.note(&[2, node as u64, peer as u64, id], || {
            format!("n{node} dials n{peer}: conn {id}")
        });
        self.flush(id, Side::Dialer);
    }

    /// Moves everything a session has queued onto the wire.
    fn flush(&mut self, id: u64, side: Side) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let at = self.now + conn.latency;
        if let Some(s) = conn.sessions[side as usize].as_mut() {
            while s.poll_transmit(&mut self.buf).is_some() {
                conn.inbox[side.other() as usize].push_back((at, self.buf.split().freeze()));
            }
        }
    }

    /// Closes a connection: both sessions end (the socket is gone).
    fn cut(&mut self, id: u64, why: &str) -> Check {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        conn.inbox = [VecDeque::new(), VecDeque::new()];
        let why = why.to_owned();
        self.note(&[3, id], || format!("conn {id} cut: {why}"));
        for side in [Side::Dialer, Side::Acceptor] {
            if let Some(s) = self
                .conns
                .get_mut(&id)
                .and_then(|c| c.sessions[side as usize].as_mut())
            {
                s.close(LostReason::Transport(why.clone()));
            }
            self.drain_events(id, side)?;
        }
        self.conns.remove(&id);
        Ok(())
    }

    // ------------------------------------------------------------------------------
    // Events: the application of each node, in miniature.

    fn drain_events(&mut self, id: u64, side: Side) -> Check {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return Ok(());
            };
            let node = conn.nodes[side as usize];
            let peer = conn.nodes[side.other() as usize];
            let Some(ev) = conn.sessions[side as usize]
                .as_mut()
                .and_then(Session::poll_event)
            else {
                break;
            };
            self.on_event(id, side, node, peer, ev)?;
        }
        self.flush(id, side);
        Ok(())
    }

    fn session(&mut self, id: u64, side: Side) -> Option<&mut Session> {
        self.conns.get_mut(&id)?.sessions[side as usize].as_mut()
    }

    fn side_of(&self, id: u64, node: usize) -> Option<Side> {
        let c = self.conns.get(&id)?;
        if c.nodes[0] == node {
            Some(Side::Dialer)
        } else if c.nodes[1] == node {
            Some(Side::Acceptor)
        } else {
            None
        }
    }

    fn on_event(&mut self, id: u64, side: Side, node: usize, peer: usize, ev: Event) -> Check {
        match ev {
            Event::Connected { remote_host, .. } => {
                ensure!(
                    remote_host == self.nodes[peer].host,
                    "conn {id}: connected to {remote_host}, expected n{peer}"
                );
                self.note(&[10, id, node as u64], || {
                    format!("n{node} connected to n{peer} on conn {id}")
                });
                let slot = self.nodes[node].links.get_mut(&peer).expect("link");
                if side == Side::Dialer {
                    ensure!(slot.dials, "n{node} dialed n{peer} but should accept");
                    slot.redial.as_mut().expect("dialer").connected();
                } else {
                    ensure!(!slot.dials, "n{node} accepted n{peer} but should dial");
                    // A newer connection replaces the link's session.
                    if let Some(old) = slot.current.replace(id) {
                        if old != id {
                            self.cut(old, "replaced by a newer connection")?;
                        }
                    }
                }
            }
            Event::Lost(reason) => {
                if let LostReason::Rejected(r) | LostReason::RejectedPeer(r) = &reason {
                    ensure!(
                        !r.contains("expected to be client side"),
                        "wrong dial direction: {r}"
                    );
                }
                let text = reason.to_string();
                self.note(&[11, id, node as u64], || {
                    format!("n{node} lost conn {id} to n{peer}: {text}")
                });
                let now = self.now;
                let last = self.session(id, side).map(|s| s.last_mux_id()).unwrap_or(0);
                let slot = self.nodes[node].links.get_mut(&peer).expect("link");
                slot.last_mux = slot.last_mux.max(last);
                if slot.current == Some(id) {
                    slot.current = None;
                    if let Some(r) = slot.redial.as_mut() {
                        r.ended(now);
                    }
                }
                // The socket goes with the session: the other end sees it close.
                let other = side.other();
                if let Some(s) = self.session(id, other) {
                    if !s.is_closed() {
                        s.close(LostReason::Transport("peer closed".into()));
                        self.drain_events(id, other)?;
                    }
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.inbox[other as usize].clear();
                }
            }
            Event::Request {
                mux_id, payload, ..
            } => {
                let spec = Spec::decode(&payload).ok_or("request without a spec")?;
                ensure!(
                    self.handled.insert(spec.uid),
                    "request {} ran twice",
                    spec.uid
                );
                let expected = self.calls.get(&spec.uid).map(|c| c.request.clone());
                ensure!(
                    expected.as_ref() == Some(&payload),
                    "request {} arrived corrupted",
                    spec.uid
                );
                self.note(&[12, id, mux_id, spec.uid], || {
                    format!("n{node} handles request {} (mux {mux_id})", spec.uid)
                });
                self.nodes[node]
                    .calls_in
                    .insert((id, mux_id), ServerCall::Single);
                let (at, ok, body) = match spec.behavior {
                    Behavior::Now => (self.now, true, payload),
                    Behavior::Later | Behavior::Slow => (self.now + spec.delay, true, payload),
                    Behavior::Fail => {
                        (self.now, false, Bytes::from(format!("failed {}", spec.uid)))
                    }
                };
                self.schedule(
                    at,
                    Work::Respond {
                        node,
                        conn: id,
                        mux: mux_id,
                        ok,
                        payload: body,
                    },
                );
            }
            Event::StreamOpened {
                mux_id,
                handler,
                payload,
                ..
            } => {
                let payload = payload.unwrap_or_default();
                let spec = Spec::decode(&payload).ok_or("stream without a spec")?;
                ensure!(
                    self.handled.insert(spec.uid),
                    "stream {} ran twice",
                    spec.uid
                );
                ensure!(
                    self.calls.get(&spec.uid).and_then(|c| c.stream) == Some(handler),
                    "stream {} reached the wrong handler",
                    spec.uid
                );
                self.note(&[13, id, mux_id, spec.uid], || {
                    format!("n{node} handles stream {} (mux {mux_id})", spec.uid)
                });
                let delayed = matches!(spec.behavior, Behavior::Later | Behavior::Slow);
                self.nodes[node].calls_in.insert(
                    (id, mux_id),
                    ServerCall::Stream {
                        uid: spec.uid,
                        spec,
                        sent: 0,
                        echo: VecDeque::new(),
                        input_done: false,
                        ready: !delayed,
                    },
                );
                if delayed {
                    let at = self.now + spec.delay;
                    self.schedule(
                        at,
                        Work::StartStream {
                            node,
                            conn: id,
                            mux: mux_id,
                        },
                    );
                } else {
                    self.pump_server(node, id, side, mux_id)?;
                }
            }
            Event::Response { mux_id, result } => {
                let Some(uid) = self.nodes[node].calls_out.remove(&(id, mux_id)) else {
                    return Err(format!(
                        "n{node}: response for unknown call (conn {id} mux {mux_id})"
                    ));
                };
                let call = &self.calls[&uid];
                let result = match result {
                    Ok(b) => {
                        ensure!(b == call.request, "call {uid}: wrong response body");
                        ensure!(
                            call.spec.behavior != Behavior::Fail,
                            "call {uid}: success from a failing handler"
                        );
                        Ok(())
                    }
                    Err(CallError::Remote(t)) => {
                        ensure!(
                            t == format!("failed {uid}"),
                            "call {uid}: unexpected remote error {t}"
                        );
                        Err(CallError::Remote(t))
                    }
                    Err(e) => Err(e),
                };
                self.end_call(uid, result)?;
            }
            Event::Readable(key) => match key.dir {
                Dir::Outgoing => self.pump_client(node, id, side, key.id)?,
                Dir::Incoming => self.pump_server(node, id, side, key.id)?,
            },
            Event::Writable(key) => match key.dir {
                Dir::Outgoing => self.pump_client(node, id, side, key.id)?,
                Dir::Incoming => self.pump_server(node, id, side, key.id)?,
            },
            Event::Closed { key, error } => match key.dir {
                Dir::Outgoing => {
                    self.nodes[node].streams_out.remove(&(id, key.id));
                    let uid = self.nodes[node]
                        .calls_out
                        .remove(&(id, key.id))
                        .ok_or_else(|| format!("n{node}: close of unknown stream {}", key.id))?;
                    self.end_call(uid, Err(error))?;
                }
                Dir::Incoming => {
                    self.nodes[node].calls_in.remove(&(id, key.id));
                    self.note(&[14, id, key.id], || {
                        format!("n{node} handler of mux {} cancelled: {error}", key.id)
                    });
                }
            },
            _ => return Err("unexpected event".into()),
        }
        let _ = peer;
        Ok(())
    }

    fn end_call(&mut self, uid: u64, result: Result<(), CallError>) -> Check {
        let corrupted = self.corrupted;
        let call = self.calls.get_mut(&uid).ok_or("unknown call")?;
        ensure!(
            call.outcome.is_none(),
            "call {uid} ended twice: {:?} then {:?}",
            call.outcome,
            result
        );
        // Every corruption is caught by a CRC and ends the session, so no call may
        // ever see the protocol broken.
        if let Err(e) = &result {
            let protocol_error = matches!(
                e,
                CallError::IncorrectSequence | CallError::CreditExceeded
            ) || matches!(e, CallError::Remote(t) if t.contains("sequence") || t.contains("handler blocked") || t.contains("did not expect"));
            ensure!(
                !protocol_error,
                "call {uid} broke the protocol: {e} (corruption injected: {corrupted})"
            );
        }
        let text = format!("{result:?}");
        call.outcome = Some(result);
        self.note(&[15, uid, text.len() as u64], || {
            format!("call {uid} ended: {text}")
        });
        Ok(())
    }

    /// A client consumer: sends its input and reads what has arrived.
    fn pump_client(&mut self, node: usize, id: u64, side: Side, mux: u64) -> Check {
        let now = self.now;
        loop {
            // An event queued before the session lost the stream can arrive first; the
            // stream's own end event follows.
            if !self
                .session(id, side)
                .is_some_and(|s| s.contains(MuxKey::outgoing(mux)))
            {
                return Ok(());
            }
            let Some(cs) = self.nodes[node].streams_out.get(&(id, mux)) else {
                return Ok(());
            };
            let uid = cs.uid;
            let call = &self.calls[&uid];
            let (count, has_input) = (
                call.spec.count,
                matches!(call.stream, Some(ECHO) | Some(ECHO_NARROW)),
            );
            let (sent, closed, paused) = (cs.sent, cs.closed_send, cs.paused);
            let mut progressed = false;
            if has_input && !closed {
                let s = self.session(id, side).ok_or("no session")?;
                if sent < count {
                    match s.send(
                        now,
                        MuxKey::outgoing(mux),
                        item(uid, sent, (sent as usize * 37) % 300),
                    ) {
                        Ok(()) => {
                            self.nodes[node]
                                .streams_out
                                .get_mut(&(id, mux))
                                .expect("stream")
                                .sent += 1;
                            progressed = true;
                        }
                        Err(SendError::Blocked) => {}
                        Err(e) => return Err(format!("call {uid}: send failed: {e}")),
                    }
                } else {
                    let _ = s.close_send(now, mux);
                    self.nodes[node]
                        .streams_out
                        .get_mut(&(id, mux))
                        .expect("stream")
                        .closed_send = true;
                    progressed = true;
                }
            }
            if !paused {
                let s = self.session(id, side).ok_or("no session")?;
                match s.read(now, MuxKey::outgoing(mux)) {
                    Read::Item(b) => {
                        let (u, index) = parse_item(&b).ok_or("malformed item")?;
                        let cs = self.nodes[node]
                            .streams_out
                            .get_mut(&(id, mux))
                            .expect("stream");
                        ensure!(
                            u == uid && index == cs.next_index,
                            "call {uid}: item {u}/{index}, expected {uid}/{}",
                            cs.next_index
                        );
                        cs.next_index += 1;
                        progressed = true;
                    }
                    Read::End(r) => {
                        let cs = self.nodes[node]
                            .streams_out
                            .remove(&(id, mux))
                            .expect("stream");
                        self.nodes[node].calls_out.remove(&(id, mux));
                        let call = &self.calls[&uid];
                        // Echo handlers echo every item; a slow pusher sends none.
                        let expect_items = match call.spec.behavior {
                            Behavior::Slow if !has_input => 0,
                            _ => call.spec.count,
                        };
                        match &r {
                            Ok(()) => {
                                ensure!(
                                    call.spec.behavior != Behavior::Fail,
                                    "call {uid}: clean end from a failing stream"
                                );
                                ensure!(
                                    cs.next_index == expect_items,
                                    "call {uid}: ended after {} of {expect_items} items",
                                    cs.next_index
                                );
                            }
                            Err(CallError::Remote(t)) if t == "stream failed" => {
                                ensure!(
                                    call.spec.behavior == Behavior::Fail,
                                    "call {uid}: unexpected failure"
                                );
                                ensure!(
                                    cs.next_index == expect_items,
                                    "call {uid}: failed after {} of {expect_items} items",
                                    cs.next_index
                                );
                            }
                            Err(_) => {}
                        }
                        return self.end_call(uid, r);
                    }
                    Read::Pending => {}
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// A server handler: reads its input and sends what it owes.
    fn pump_server(&mut self, node: usize, id: u64, side: Side, mux: u64) -> Check {
        let now = self.now;
        loop {
            let Some(ServerCall::Stream {
                uid,
                spec,
                sent,
                echo,
                input_done,
                ready,
            }) = self.nodes[node].calls_in.get(&(id, mux))
            else {
                return Ok(());
            };
            let (uid, spec, sent, input_done, ready, echo_len) =
                (*uid, *spec, *sent, *input_done, *ready, echo.len());
            if !ready
                || !self
                    .session(id, side)
                    .is_some_and(|s| s.contains(MuxKey::incoming(mux)))
            {
                return Ok(());
            }
            let handler = self
                .calls
                .get(&uid)
                .and_then(|c| c.stream)
                .ok_or("unknown stream")?;
            let echoing = matches!(handler, ECHO | ECHO_NARROW);
            let s = self.session(id, side).ok_or("no session")?;
            let mut progressed = false;
            if echoing && !input_done && echo_len < 4 {
                match s.read(now, MuxKey::incoming(mux)) {
                    Read::Item(b) => {
                        if let Some(ServerCall::Stream { echo, .. }) =
                            self.nodes[node].calls_in.get_mut(&(id, mux))
                        {
                            echo.push_back(b);
                        }
                        progressed = true;
                    }
                    Read::End(_) => {
                        if let Some(ServerCall::Stream { input_done, .. }) =
                            self.nodes[node].calls_in.get_mut(&(id, mux))
                        {
                            *input_done = true;
                        }
                        progressed = true;
                    }
                    Read::Pending => {}
                }
            }
            let next = if echoing {
                match self.nodes[node].calls_in.get(&(id, mux)) {
                    Some(ServerCall::Stream { echo, .. }) => echo.front().cloned(),
                    _ => None,
                }
            } else if spec.behavior != Behavior::Slow && sent < spec.count {
                Some(item(uid, sent, (sent as usize * 53) % 700))
            } else {
                None
            };
            if let Some(b) = next {
                let s = self.session(id, side).ok_or("no session")?;
                match s.send(now, MuxKey::incoming(mux), b) {
                    Ok(()) => {
                        if let Some(ServerCall::Stream { sent, echo, .. }) =
                            self.nodes[node].calls_in.get_mut(&(id, mux))
                        {
                            *sent += 1;
                            if echoing {
                                echo.pop_front();
                            }
                        }
                        progressed = true;
                    }
                    Err(SendError::Blocked) => {}
                    Err(e) => return Err(format!("stream {uid}: server send failed: {e}")),
                }
            }
            let (sent, input_done, echo_empty) = match self.nodes[node].calls_in.get(&(id, mux)) {
                Some(ServerCall::Stream {
                    sent,
                    input_done,
                    echo,
                    ..
                }) => (*sent, *input_done, echo.is_empty()),
                _ => return Ok(()),
            };
            let finished = if echoing {
                input_done && echo_empty
            } else {
                spec.behavior == Behavior::Slow || sent >= spec.count
            };
            if finished {
                let result = if spec.behavior == Behavior::Fail {
                    Err("stream failed".to_owned())
                } else {
                    Ok(())
                };
                self.nodes[node].calls_in.remove(&(id, mux));
                let s = self.session(id, side).ok_or("no session")?;
                s.finish(now, mux, result);
                return Ok(());
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    // ------------------------------------------------------------------------------
    // Workload and faults.

    fn random_peer(&mut self, node: usize) -> usize {
        let peers: Vec<usize> = self.nodes[node].links.keys().copied().collect();
        peers[self.rng.below(peers.len() as u64) as usize]
    }

    fn start_call(&mut self) -> Check {
        let from = self.rng.below(self.nodes.len() as u64) as usize;
        let to = self.random_peer(from);
        let Some(id) = self.nodes[from].links[&to].current else {
            return Ok(());
        };
        let side = self.side_of(id, from).ok_or("link without conn")?;
        if !self.session(id, side).is_some_and(|s| s.is_connected()) {
            return Ok(());
        }
        let uid = self.calls.len() as u64 + 1;
        let behavior = Behavior::from_byte(self.rng.below(4) as u8);
        let max_delay = if self.rng.chance(100) { 90_000 } else { 3_000 };
        let delay = self.rng.millis(1, max_delay);
        let spec = Spec {
            uid,
            behavior,
            count: self.rng.below(24) as u32,
            delay,
        };
        let stream = self
            .rng
            .chance(400)
            .then(|| STREAMS[self.rng.below(4) as usize]);
        let fill = match self.rng.below(10) {
            0 => self.rng.below(64 << 10) as usize,
            1..=3 => self.rng.below(2048) as usize,
            _ => self.rng.below(64) as usize,
        };
        let request = spec.encode(fill);
        let deadline = if self.rng.chance(300) {
            Some(self.rng.millis(1, 5_000))
        } else {
            None
        };
        let now = self.now;
        let s = self.session(id, side).ok_or("no session")?;
        let mux = match stream {
            None => s.request(now, SINGLE, request.clone(), deadline),
            Some(h) => s.open_stream(now, h, Some(request.clone()), deadline),
        };
        let mux = match mux {
            Ok(m) => m,
            Err(CallError::Congested | CallError::TooManyCalls(_)) => return Ok(()),
            Err(e) => return Err(format!("n{from}: cannot start a call: {e}")),
        };
        self.calls.insert(
            uid,
            Call {
                from,
                to,
                spec,
                stream,
                request,
                outcome: None,
            },
        );
        self.nodes[from].calls_out.insert((id, mux), uid);
        if stream.is_some() {
            self.nodes[from].streams_out.insert(
                (id, mux),
                ClientStream {
                    uid,
                    next_index: 0,
                    sent: 0,
                    closed_send: false,
                    paused: false,
                },
            );
        }
        self.note(&[20, uid, from as u64, to as u64, mux], || format!("n{from} calls n{to}: call {uid} {behavior:?} {stream:?} mux {mux} deadline {deadline:?}"));
        if stream.is_some() {
            self.pump_client(from, id, side, mux)?;
        }
        self.flush(id, side);
        Ok(())
    }

    fn cancel_call(&mut self) -> Check {
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        let keys: Vec<(u64, u64)> = self.nodes[node].calls_out.keys().copied().collect();
        if keys.is_empty() {
            return Ok(());
        }
        let (id, mux) = keys[self.rng.below(keys.len() as u64) as usize];
        let uid = self.nodes[node].calls_out.remove(&(id, mux)).expect("key");
        self.nodes[node].streams_out.remove(&(id, mux));
        if let Some(side) = self.side_of(id, node) {
            if let Some(s) = self.session(id, side) {
                s.cancel(mux);
            }
            self.flush(id, side);
        }
        self.note(&[21, uid], || format!("n{node} cancels call {uid}"));
        self.end_call(uid, Err(CallError::Closed))
    }

    fn pause_consumer(&mut self) {
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        let keys: Vec<(u64, u64)> = self.nodes[node].streams_out.keys().copied().collect();
        if keys.is_empty() {
            return;
        }
        let (id, mux) = keys[self.rng.below(keys.len() as u64) as usize];
        self.nodes[node]
            .streams_out
            .get_mut(&(id, mux))
            .expect("key")
            .paused = true;
        let at = self.now + self.rng.millis(1, 40_000);
        self.schedule(
            at,
            Work::Resume {
                node,
                conn: id,
                mux,
            },
        );
    }

    fn inject_fault(&mut self) -> Check {
        self.faults += 1;
        let live: Vec<u64> = self.conns.keys().copied().collect();
        let n = self.nodes.len();
        match self.rng.below(8) {
            0 | 1 if !live.is_empty() => {
                // Cut a link, sometimes mid-message: the receiver sees a truncated one.
                let id = live[self.rng.below(live.len() as u64) as usize];
                if self.rng.chance(500) {
                    let to = if self.rng.chance(500) {
                        Side::Dialer
                    } else {
                        Side::Acceptor
                    };
                    let conn = self.conns.get_mut(&id).expect("live");
                    if let Some((_, msg)) = conn.inbox[to as usize].pop_front() {
                        let cut = self.rng.below(msg.len().max(1) as u64) as usize;
                        let conn = self.conns.get_mut(&id).expect("live");
                        if let Some(s) = conn.sessions[to as usize].as_mut() {
                            s.handle_message(self.now, msg.slice(..cut));
                        }
                        self.drain_events(id, to)?;
                    }
                }
                self.cut(id, "cut by fault")?;
            }
            2 if !live.is_empty() => {
                // Stall one direction: nothing is delivered until it is released.
                let id = live[self.rng.below(live.len() as u64) as usize];
                let d = self.rng.millis(100, 40_000);
                let side = if self.rng.chance(500) {
                    Side::Dialer
                } else {
                    Side::Acceptor
                };
                let until = self.now + d;
                let conn = self.conns.get_mut(&id).expect("live");
                for m in conn.inbox[side as usize].iter_mut() {
                    m.0 = m.0.max(until);
                }
                conn.latency += d;
                self.note(&[30, id], || {
                    format!("conn {id} stalls towards {side:?} for {d:?}")
                });
                self.schedule(until, Work::Heal(Heal::Latency(id)));
            }
            3 if !live.is_empty() => {
                // Corrupt one bit of a message in flight that the CRC protects: a
                // container of CRC frames, or a frame with the CRC flag. (Handshake
                // frames and connection pings carry no CRC, by protocol.)
                let id = live[self.rng.below(live.len() as u64) as usize];
                let side = if self.rng.chance(500) { 0 } else { 1 };
                let conn = self.conns.get_mut(&id).expect("live");
                let protected = |m: &Bytes| match codec::decode(m, usize::MAX) {
                    Ok(codec::Message::Merged(_)) => true,
                    Ok(codec::Message::Frame(f)) => f.flags.contains(codec::Flags::CRC),
                    Err(_) => false,
                };
                let eligible: Vec<usize> = (0..conn.inbox[side].len())
                    .filter(|&i| protected(&conn.inbox[side][i].1))
                    .collect();
                if !eligible.is_empty() {
                    let i = eligible[self.rng.below(eligible.len() as u64) as usize];
                    let conn = self.conns.get_mut(&id).expect("live");
                    let mut m = conn.inbox[side][i].1.to_vec();
                    let bit = self.rng.below((m.len() * 8) as u64) as usize;
                    m[bit / 8] ^= 1 << (bit % 8);
                    conn.inbox[side][i].1 = m.into();
                    self.corrupted = true;
                    self.note(&[31, id, bit as u64], || {
                        format!("conn {id}: bit {bit} of a message flipped")
                    });
                }
            }
            4 => {
                // Partition a node, then heal it.
                let node = self.rng.below(n as u64) as usize;
                self.partitioned.insert(node);
                for id in live {
                    if self.conns.get(&id).is_some_and(|c| c.nodes.contains(&node)) {
                        self.cut(id, "partition")?;
                    }
                }
                let until = self.now + self.rng.millis(100, 30_000);
                self.note(&[32, node as u64], || format!("n{node} partitioned"));
                self.schedule(until, Work::Heal(Heal::Partition(node)));
            }
            5 => {
                // A reconnect storm: cut every link of a node several times.
                let node = self.rng.below(n as u64) as usize;
                for k in 0..5u64 {
                    let at = self.now + Duration::from_millis(50 * k);
                    self.schedule(at, Work::Heal(Heal::Storm(node)));
                }
            }
            6 => {
                // A node stops answering: nothing reaches it for a while.
                let node = self.rng.below(n as u64) as usize;
                let until = self.now + self.rng.millis(1_000, 45_000);
                self.nodes[node].frozen_until = Some(until);
                self.note(&[33, node as u64], || format!("n{node} stops answering"));
            }
            _ => {
                // The wall clock jumps (within or beyond the allowed skew), then returns.
                let node = self.rng.below(n as u64) as usize;
                let jump = self.rng.below(600) as i64 - 300;
                self.nodes[node].skew_secs += jump;
                self.sync_wall(node);
                let until = self.now + self.rng.millis(100, 20_000);
                self.note(&[34, node as u64], || {
                    format!("n{node} clock jumps {jump}s")
                });
                self.schedule(until, Work::Heal(Heal::Clock(node)));
            }
        }
        Ok(())
    }

    fn do_work(&mut self, w: Work) -> Check {
        match w {
            Work::Respond {
                node,
                conn,
                mux,
                ok,
                payload,
            } => {
                self.nodes[node].calls_in.remove(&(conn, mux));
                let now = self.now;
                if let Some(side) = self.side_of(conn, node) {
                    if let Some(s) = self.session(conn, side) {
                        let r = if ok {
                            Ok(payload)
                        } else {
                            Err(String::from_utf8_lossy(&payload).into_owned())
                        };
                        s.respond(now, mux, r);
                    }
                    self.flush(conn, side);
                }
            }
            Work::StartStream { node, conn, mux } => {
                if let Some(ServerCall::Stream { ready, .. }) =
                    self.nodes[node].calls_in.get_mut(&(conn, mux))
                {
                    *ready = true;
                    if let Some(side) = self.side_of(conn, node) {
                        self.pump_server(node, conn, side, mux)?;
                        self.flush(conn, side);
                    }
                }
            }
            Work::Resume { node, conn, mux } => {
                if let Some(cs) = self.nodes[node].streams_out.get_mut(&(conn, mux)) {
                    cs.paused = false;
                    if let Some(side) = self.side_of(conn, node) {
                        self.pump_client(node, conn, side, mux)?;
                        self.flush(conn, side);
                    }
                }
            }
            Work::Heal(Heal::Storm(node)) => {
                let ids: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.nodes.contains(&node))
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.cut(id, "reconnect storm")?;
                }
            }
            Work::Heal(Heal::Partition(node)) => {
                self.partitioned.remove(&node);
            }
            Work::Heal(Heal::Clock(node)) => {
                self.nodes[node].skew_secs = 0;
                self.sync_wall(node);
            }
            Work::Heal(Heal::Latency(id)) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.latency = Duration::from_micros(100 + self.rng.below(3000));
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------
    // The scheduler.

    /// The earliest instant anything is due, among deliveries, session timers, dial
    /// schedules and application work.
    fn next_due(&self) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        let mut take = |t: Instant| best = Some(best.map_or(t, |b| b.min(t)));
        for c in self.conns.values() {
            for side in 0..2 {
                let frozen = self.nodes[c.nodes[side]].frozen_until;
                if let Some((at, _)) = c.inbox[side].front() {
                    take(frozen.map_or(*at, |f| f.max(*at)));
                }
                if let Some(t) = c.sessions[side].as_ref().and_then(Session::poll_timeout) {
                    take(t);
                }
            }
        }
        for n in &self.nodes {
            for l in n.links.values() {
                if let Some(t) = l.redial.as_ref().and_then(Redial::poll_timeout) {
                    take(t);
                }
            }
        }
        if let Some(((t, _), _)) = self.work.first_key_value() {
            take(*t);
        }
        best
    }

    /// Runs everything due at `now`, in an order chosen by the RNG.
    fn run_due(&mut self) -> Check {
        loop {
            let now = self.now;
            let mut ready: Vec<(u8, u64, usize)> = Vec::new();
            for (id, c) in &self.conns {
                for side in 0..2 {
                    let frozen = self.nodes[c.nodes[side]]
                        .frozen_until
                        .is_some_and(|f| f > now);
                    if !frozen && c.inbox[side].front().is_some_and(|(at, _)| *at <= now) {
                        ready.push((0, *id, side));
                    }
                    if c.sessions[side]
                        .as_ref()
                        .and_then(Session::poll_timeout)
                        .is_some_and(|t| t <= now)
                    {
                        ready.push((1, *id, side));
                    }
                }
            }
            for (i, n) in self.nodes.iter().enumerate() {
                for (p, l) in &n.links {
                    if l.redial
                        .as_ref()
                        .and_then(Redial::poll_timeout)
                        .is_some_and(|t| t <= now)
                    {
                        ready.push((2, i as u64, *p));
                    }
                }
            }
            if self
                .work
                .first_key_value()
                .is_some_and(|((t, _), _)| *t <= now)
            {
                ready.push((3, 0, 0));
            }
            if ready.is_empty() {
                return Ok(());
            }
            let (kind, a, b) = ready[self.rng.below(ready.len() as u64) as usize];
            let side = if b == 0 { Side::Dialer } else { Side::Acceptor };
            match kind {
                0 => {
                    let conn = self.conns.get_mut(&a).expect("ready conn");
                    let (_, msg) = conn.inbox[b].pop_front().expect("ready message");
                    self.messages += 1;
                    let h = XxHash3_64::oneshot(&msg);
                    self.note(&[4, a, b as u64, h], || {
                        format!("conn {a}: {} bytes to {side:?}", msg.len())
                    });
                    if let Some(s) = self.conns.get_mut(&a).and_then(|c| c.sessions[b].as_mut()) {
                        s.handle_message(now, msg);
                    }
                    self.drain_events(a, side)?;
                }
                1 => {
                    if let Some(s) = self.conns.get_mut(&a).and_then(|c| c.sessions[b].as_mut()) {
                        s.handle_timeout(now);
                    }
                    self.drain_events(a, side)?;
                }
                2 => {
                    let (node, peer) = (a as usize, b);
                    let go = self.nodes[node]
                        .links
                        .get_mut(&peer)
                        .and_then(|l| l.redial.as_mut())
                        .is_some_and(|r| r.poll_dial(now));
                    if go {
                        self.start_dial(node, peer);
                    }
                }
                _ => {
                    let (key, w) = self.work.pop_first().expect("ready work");
                    let _ = key;
                    self.do_work(w)?;
                }
            }
            // Drop connections whose sessions have both ended.
            let dead: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.sessions
                        .iter()
                        .all(|s| s.as_ref().is_none_or(Session::is_closed))
                })
                .map(|(id, _)| *id)
                .collect();
            for id in dead {
                self.conns.remove(&id);
            }
            self.check_step()?;
        }
    }

    /// Invariants that hold after every step.
    fn check_step(&self) -> Check {
        for c in self.conns.values() {
            for s in c.sessions.iter().flatten() {
                let st = s.stats();
                let bound =
                    self.config.max_queued_frames + st.incoming_muxes + st.outgoing_muxes + 8;
                ensure!(
                    st.queued_frames <= bound,
                    "outbound queue of {} frames over its bound {bound}",
                    st.queued_frames
                );
                ensure!(st.bugs == 0, "a session reported a bug");
            }
        }
        Ok(())
    }

    fn advance(&mut self, horizon: Instant) -> bool {
        match self.next_due() {
            Some(t) if t <= horizon => {
                self.now = self.now.max(t);
                true
            }
            _ => false,
        }
    }

    /// Runs the seed: workload and faults, then a quiet phase, then the final checks.
    pub fn run(mut self) -> Result<Report, Failure> {
        match self.run_inner() {
            Ok(()) => Ok(Report {
                seed: self.seed,
                transcript: self.hasher.finish(),
                calls: self.calls.len(),
                faults: self.faults,
                messages: self.messages,
            }),
            Err(message) => Err(Failure {
                seed: self.seed,
                message,
                tail: self.tail.iter().cloned().collect(),
            }),
        }
    }

    fn run_inner(&mut self) -> Check {
        let fault_rate = if self.cfg.faults {
            10 + self.rng.below(40)
        } else {
            0
        };
        for _ in 0..self.cfg.steps {
            self.run_due()?;
            match self.rng.below(1000) {
                0..=299 => self.start_call()?,
                300..=329 => self.cancel_call()?,
                330..=359 => self.pause_consumer(),
                r if r < 360 + fault_rate => self.inject_fault()?,
                _ => {
                    // Let time pass: to the next due instant, or a little.
                    let horizon = self.now + self.rng.millis(1, 2_000);
                    if !self.advance(horizon) {
                        self.now = horizon;
                    }
                }
            }
        }
        self.quiesce()?;
        self.check_end()
    }

    /// No more calls or faults: heal everything and let the clock run until all work
    /// has drained and every link is back.
    fn quiesce(&mut self) -> Check {
        self.note(&[40], || "quiet phase".to_owned());
        self.partitioned.clear();
        for n in &mut self.nodes {
            n.frozen_until = None;
            n.skew_secs = 0;
        }
        for i in 0..self.nodes.len() {
            self.sync_wall(i);
        }
        let resumes: Vec<(usize, u64, u64)> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.streams_out.keys().map(move |(c, m)| (i, *c, *m)))
            .collect();
        for (node, conn, mux) in resumes {
            self.schedule(self.now, Work::Resume { node, conn, mux });
        }
        // Ten virtual minutes is far beyond every deadline, delay and timeout.
        let horizon = self.now + Duration::from_secs(600);
        loop {
            self.run_due()?;
            if self.settled() {
                return Ok(());
            }
            if !self.advance(horizon) {
                return Ok(());
            }
        }
    }

    /// Everything has drained: every caller has its outcome, and no handler, session
    /// or wire still holds part of a call (a cancel notice may still be in flight).
    fn settled(&self) -> bool {
        self.calls.values().all(|c| c.outcome.is_some())
            && self.work.is_empty()
            && self.nodes.iter().all(|n| n.calls_in.is_empty())
            && self.conns.values().all(|c| {
                c.inbox.iter().all(VecDeque::is_empty)
                    && c.sessions.iter().flatten().all(|s| {
                        let st = s.stats();
                        st.outgoing_muxes == 0 && st.incoming_muxes == 0
                    })
            })
            && self.all_links_up()
    }

    fn all_links_up(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, n)| {
            n.links.iter().all(|(p, l)| {
                l.current.is_some_and(|id| {
                    self.conns.get(&id).is_some_and(|c| {
                        c.nodes.contains(p)
                            && c.nodes.contains(&i)
                            && c.sessions
                                .iter()
                                .all(|s| s.as_ref().is_some_and(Session::is_connected))
                    })
                })
            })
        })
    }

    fn check_end(&self) -> Check {
        for (uid, c) in &self.calls {
            ensure!(
                c.outcome.is_some(),
                "call {uid} (n{} -> n{}) never ended",
                c.from,
                c.to
            );
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for (p, l) in &n.links {
                let up = l
                    .current
                    .and_then(|id| self.conns.get(&id))
                    .is_some_and(|c| {
                        c.sessions
                            .iter()
                            .all(|s| s.as_ref().is_some_and(Session::is_connected))
                    });
                ensure!(up, "link n{i} -> n{p} is not up after the quiet phase");
                let peer_slot = &self.nodes[*p].links[&i];
                ensure!(
                    peer_slot.current == l.current,
                    "n{i} and n{p} disagree on their connection"
                );
                ensure!(
                    l.dials != peer_slot.dials,
                    "n{i} and n{p} both {}",
                    if l.dials { "dial" } else { "accept" }
                );
            }
            ensure!(
                n.calls_out.is_empty() && n.streams_out.is_empty(),
                "n{i} holds client call state"
            );
            ensure!(
                n.calls_in.is_empty(),
                "n{i} holds server call state: {:?}",
                n.calls_in.keys()
            );
        }
        for (id, c) in &self.conns {
            for s in c.sessions.iter().flatten() {
                let st = s.stats();
                ensure!(
                    st.outgoing_muxes == 0 && st.incoming_muxes == 0,
                    "conn {id} holds muxes: {} out, {} in",
                    st.outgoing_muxes,
                    st.incoming_muxes
                );
                ensure!(s.scheduled_timers() == 0, "conn {id} holds mux timers");
            }
        }
        Ok(())
    }
}

/// Runs one seed; on failure, runs it again recording the transcript for the report.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> Result<Report, Failure> {
    match Sim::new(seed, cfg.clone()).run() {
        Ok(r) => Ok(r),
        Err(f) if !cfg.record => {
            let again = SimConfig {
                record: true,
                ..cfg.clone()
            };
            Err(Sim::new(seed, again).run().err().unwrap_or(f))
        }
        Err(f) => Err(f),
    }
}
