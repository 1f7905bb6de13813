//! One link's state machine: handshake, both mux tables, sequence numbers, credits,
//! liveness, keepalive and the outbound queue.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, trace, warn};

use super::bug::bug;
use super::config::{Cluster, HandlerKey, HandlerKind, link_uses_crc};
use super::muxmap::{MuxMap, mux_map};
use super::timer::{ConnTimer, ConnTimers, MuxTimer, MuxTimers};
use super::{CallError, Dir, Event, LostReason, MuxKey, Read, SendError, Stats};
use crate::codec::{
    self, ConnectRequest, ConnectResponse, Flags, Frame, Message, MuxConnectError, Op, Ping, Pong,
    Time,
};

/// Which side of the handshake this session plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We opened the socket and send the connect request.
    Dialer,
    /// We accepted the socket and check the connect request.
    Acceptor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Dialer: connect request sent, waiting for the answer (without a deadline: the
    /// acceptor may hold it back until it is ready).
    AwaitResponse,
    /// Acceptor: waiting for the connect request.
    AwaitRequest,
    /// Handshake done.
    Connected,
    /// Over; only a queued rejection may still be transmitted.
    Closed,
}

/// Metadata of one transmitted WebSocket message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Frames in the message (more than one: an `OpMerged` container).
    pub frames: usize,
    /// The message's length in bytes, once encoded.
    pub len: usize,
}

/// A call we started.
#[derive(Debug)]
///
/// A stream's state is boxed: the table then holds small values (a single request's is
/// a deadline), which its inserts and removals move cheaply.
enum ClientMux {
    Single { deadline: Instant },
    Stream(Box<ClientStream>),
}

#[derive(Debug)]
struct ClientStream {
    in_capacity: u32,
    out_capacity: u32,
    send_seq: u32,
    recv_seq: u32,
    /// Items we may still send; granted by the first ack and by unblocks.
    credits: u32,
    acked: bool,
    input_closed: bool,
    want_read: bool,
    want_write: bool,
    /// Received items the application has not read yet (at most `out_capacity`).
    items: VecDeque<Bytes>,
    /// Items read whose credit has not been sent back yet ([`credit_batch`]).
    owed: u32,
    /// The peer ended the stream; delivered after the items.
    end: Option<Result<(), CallError>>,
    deadline: Option<Instant>,
    tick: Option<Instant>,
    last_pong: Instant,
}

/// A call the peer started.
#[derive(Debug)]
///
/// Boxed for the same reason as [`ClientMux`].
enum ServerMux {
    Single { seq: u32, deadline: Option<Instant> },
    Stream(Box<ServerStream>),
}

#[derive(Debug)]
struct ServerStream {
    in_capacity: u32,
    out_capacity: u32,
    send_seq: u32,
    recv_seq: u32,
    /// Items we may still send (the final frame costs one too).
    credits: u32,
    want_read: bool,
    want_write: bool,
    items: VecDeque<Bytes>,
    /// Items read whose credit has not been sent back yet ([`credit_batch`]).
    owed: u32,
    input_ended: bool,
    /// The handler finished while we had no credit; sent when one arrives.
    pending_final: Option<Result<(), String>>,
    deadline: Option<Instant>,
    tick: Option<Instant>,
    last_ping: Instant,
}

/// The sans-IO state machine of one link.
///
/// Inputs are [`Session::handle_message`] (one inbound WebSocket message),
/// [`Session::handle_timeout`] and the application commands ([`Session::request`],
/// [`Session::open_stream`], [`Session::send`], [`Session::read`], [`Session::respond`],
/// [`Session::finish`], [`Session::cancel`], ...). Outputs are drained until `None`:
/// [`Session::poll_transmit`] (outbound messages, into a caller-owned buffer),
/// [`Session::poll_timeout`] (the next deadline) and [`Session::poll_event`].
///
/// It reads no clock, opens no socket and spawns nothing: time comes in as `now`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use bytes::{Bytes, BytesMut};
/// use grid_core::codec::Time;
/// use grid_core::proto::{Cluster, Event, HandlerKey, HandlerKind, Session};
///
/// let hosts = ["http://a:9000", "http://b:9000"];
/// // The rule of PROTOCOL.md §4.1 decides who dials.
/// let (dialer, acceptor) = if grid_core::codec::should_dial(hosts[0], hosts[1]) {
///     (hosts[0], hosts[1])
/// } else {
///     (hosts[1], hosts[0])
/// };
/// let mut cluster = |host: &str, id: u8| {
///     let mut c = Cluster::new(host, [id; 16], &hosts);
///     c.registry.register(HandlerKey::new(1), HandlerKind::Single).unwrap();
///     Arc::new(c)
/// };
/// let now = Instant::now();
/// let wall = Time { secs: 1_700_000_000, nanos: 0 };
/// let mut a = Session::dialer(cluster(dialer, 1), acceptor, "token", now, wall);
/// let mut b = Session::acceptor(cluster(acceptor, 2), now, wall);
///
/// // The run loop: feed inputs, then drain every output until it returns None.
/// fn pump(from: &mut Session, to: &mut Session, now: Instant) {
///     let mut buf = BytesMut::new();
///     while from.poll_transmit(&mut buf).is_some() {
///         to.handle_message(now, buf.split().freeze());
///     }
/// }
/// pump(&mut a, &mut b, now); // connect request
/// pump(&mut b, &mut a, now); // connect response
/// assert!(a.is_connected() && b.is_connected());
///
/// let id = a.request(now, HandlerKey::new(1), Bytes::from_static(b"ping"), None).unwrap();
/// pump(&mut a, &mut b, now);
/// while let Some(ev) = b.poll_event() {
///     if let Event::Request { mux_id, payload, .. } = ev {
///         b.respond(now, mux_id, Ok(payload)); // an echo handler
///     }
/// }
/// pump(&mut b, &mut a, now);
/// let mut got = None;
/// while let Some(ev) = a.poll_event() {
///     if let Event::Response { mux_id, result } = ev {
///         assert_eq!(mux_id, id);
///         got = Some(result.unwrap());
///     }
/// }
/// assert_eq!(got.unwrap(), "ping");
/// // Timers: sleep until poll_timeout(), then call handle_timeout.
/// assert!(a.poll_timeout().unwrap() <= now + Duration::from_secs(60));
/// ```
#[derive(Debug)]
pub struct Session {
    cluster: Arc<Cluster>,
    role: Role,
    state: State,
    remote_host: Option<String>,
    remote_id: Option<[u8; 16]>,
    base_flags: Flags,
    wall_base: (Instant, Time),
    outgoing: MuxMap<ClientMux>,
    incoming: MuxMap<ServerMux>,
    next_mux_id: u64,
    queue: VecDeque<Frame>,
    queued_bytes: usize,
    /// Scratch: the encoded lengths of the frames `poll_transmit` merges.
    lens: Vec<usize>,
    events: VecDeque<Event>,
    conn_timers: ConnTimers,
    mux_timers: MuxTimers,
    last_pong: Instant,
    last_ping_sent: Option<Instant>,
    stats: Stats,
    /// What outgoing streams had received and not read when the session was lost, by
    /// mux ID (ascending), until [`Session::take_unread`] takes it.
    unread: Vec<(u64, Option<Unread>)>,
}

/// What an outgoing stream had received and not read when its session was lost; see
/// [`Session::take_unread`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unread {
    /// The items, in order.
    pub items: VecDeque<Bytes>,
    /// The stream's end, if the peer's had arrived: `None` means it was still running.
    pub end: Option<Result<(), CallError>>,
}

const TARGET: &str = "grid::session";

impl Session {
    fn new(cluster: Arc<Cluster>, role: Role, now: Instant, wall: Time) -> Session {
        Session {
            cluster,
            role,
            state: State::Closed,
            remote_host: None,
            remote_id: None,
            base_flags: Flags::CRC,
            wall_base: (now, wall),
            outgoing: mux_map(),
            incoming: mux_map(),
            next_mux_id: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            lens: Vec::new(),
            events: VecDeque::new(),
            conn_timers: ConnTimers::default(),
            mux_timers: MuxTimers::default(),
            last_pong: now,
            last_ping_sent: None,
            stats: Stats::default(),
            unread: Vec::new(),
        }
    }

    /// A session for a socket we opened to `remote_host`: it queues the connect request
    /// (with `token`) at once. `wall` is the wall-clock time at `now`.
    pub fn dialer(
        cluster: Arc<Cluster>,
        remote_host: &str,
        token: &str,
        now: Instant,
        wall: Time,
    ) -> Session {
        let mut s = Session::new(cluster, Role::Dialer, now, wall);
        s.base_flags = Flags::NONE.set(
            Flags::CRC,
            link_uses_crc(&s.cluster.local_host, remote_host),
        );
        s.remote_host = Some(remote_host.to_owned());
        let req = ConnectRequest {
            id: s.cluster.local_id,
            host: s.cluster.local_host.clone(),
            time: wall,
            token: token.to_owned(),
        };
        let mut f = Frame::new(Op::Connect);
        f.payload = codec::to_payload(|b| req.encode(b));
        s.queue_frame(f);
        s.set_state(State::AwaitResponse);
        s
    }

    /// A session for a socket a peer opened to us: it waits for the connect request, at
    /// most [`crate::proto::Config::handshake_timeout`].
    pub fn acceptor(cluster: Arc<Cluster>, now: Instant, wall: Time) -> Session {
        let mut s = Session::new(cluster, Role::Acceptor, now, wall);
        let deadline = now + s.cluster.config.handshake_timeout;
        s.conn_timers.set(ConnTimer::Handshake, deadline);
        s.set_state(State::AwaitRequest);
        s
    }

    fn set_state(&mut self, new: State) {
        if self.state != new {
            debug!(target: TARGET, role = ?self.role, remote = ?self.remote_host, "state {:?} -> {:?}", self.state, new);
            self.state = new;
        }
    }

    /// Continues mux IDs from `last` (the counter of the link's previous session), so
    /// a stale frame from an earlier session cannot match a new call.
    pub fn continue_mux_ids(&mut self, last: u64) {
        self.next_mux_id = last;
    }

    /// The last mux ID handed out; pass it to the next session of the same link.
    pub fn last_mux_id(&self) -> u64 {
        self.next_mux_id
    }

    /// Tells the session the wall-clock time at `now` (after a clock adjustment).
    pub fn set_wall_clock(&mut self, now: Instant, wall: Time) {
        self.wall_base = (now, wall);
    }

    fn wall(&self, now: Instant) -> Time {
        let (at, base) = self.wall_base;
        let delta = if now >= at {
            now.duration_since(at).as_nanos() as i128
        } else {
            -(at.duration_since(now).as_nanos() as i128)
        };
        Time::from_unix_nanos(base.as_unix_nanos() + delta)
    }

    /// Our role in the handshake.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake is done and the session is not lost.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The peer's host string (for an acceptor, known after the handshake).
    pub fn remote_host(&self) -> Option<&str> {
        self.remote_host.as_deref()
    }

    /// The peer's process ID, known after the handshake.
    pub fn remote_id(&self) -> Option<[u8; 16]> {
        self.remote_id
    }

    /// The session's counters.
    pub fn stats(&self) -> Stats {
        Stats {
            outgoing_muxes: self.outgoing.len(),
            incoming_muxes: self.incoming.len(),
            queued_frames: self.queue.len(),
            queued_bytes: self.queued_bytes,
            ..self.stats
        }
    }

    /// Bytes of capacity in the session's own queues and tables (frames queued, events,
    /// the mux tables and timers), not counting what their entries point to. After a
    /// burst of frames or of muxes they keep the room they grew to until
    /// [`Session::shrink_buffers`].
    pub fn buffer_bytes(&self) -> usize {
        use std::mem::size_of;
        // A hash table's slot is its entry and one control byte.
        let table = |cap: usize, entry: usize| cap * (entry + 1);
        self.queue.capacity() * size_of::<Frame>()
            + self.lens.capacity() * size_of::<usize>()
            + self.events.capacity() * size_of::<Event>()
            + self.unread.capacity() * size_of::<(u64, Option<Unread>)>()
            + table(self.outgoing.capacity(), size_of::<(u64, ClientMux)>())
            + table(self.incoming.capacity(), size_of::<(u64, ServerMux)>())
            + self.mux_timers.buffer_bytes()
    }

    /// Gives back the room the session's queues and tables grew to beyond what they
    /// hold now; nothing they hold is dropped. The driver calls it on a link that has
    /// been quiet for a while.
    pub fn shrink_buffers(&mut self) {
        self.queue.shrink_to_fit();
        self.lens = Vec::new();
        self.events.shrink_to_fit();
        self.unread.shrink_to_fit();
        self.outgoing.shrink_to_fit();
        self.incoming.shrink_to_fit();
        self.mux_timers.shrink();
    }

    /// Mux timers currently scheduled (for leak checks).
    pub fn scheduled_timers(&self) -> usize {
        self.mux_timers.len()
    }

    /// Whether the outbound queue is at its limit: new calls and items are refused and
    /// replies provoked by the peer are dropped until it drains.
    pub fn is_congested(&self) -> bool {
        let c = &self.cluster.config;
        self.queue.len() >= c.max_queued_frames || self.queued_bytes >= c.max_queued_bytes
    }

    /// Frames waiting for [`Session::poll_transmit`]; a driver compares it before and
    /// after a call to learn whether the call gave its writer something to do.
    pub fn queued_frames(&self) -> usize {
        self.queue.len()
    }

    // ----------------------------------------------------------------------------
    // Outputs.

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant [`Session::handle_timeout`] has work to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.conn_timers.next(), self.mux_timers.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Appends the next outbound WebSocket message to `buf`.
    ///
    /// Several queued frames leave as one `OpMerged` container, at most
    /// [`crate::proto::Config::merge_max_frames`] + 1 frames, the held ones below
    /// [`crate::proto::Config::merge_max_bytes`] (`PROTOCOL.md` §7.2).
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> Option<Transmit> {
        let n = self.next_message()?;
        let start = buf.len();
        if n == 1 {
            self.queue[0].encode(buf);
        } else {
            codec::encode_merged_sized(self.queue.range(..n), &self.lens[..n], buf);
        }
        let len = buf.len() - start;
        for f in self.queue.drain(..n) {
            self.queued_bytes -= f.payload.len();
        }
        Some(self.sent(n, len))
    }

    /// [`Session::poll_transmit`] without the encoding: moves the frames of the next
    /// outbound message to the end of `out`. Encoding them with
    /// [`codec::encode_message`] gives exactly the bytes `poll_transmit` would have
    /// appended, so a driver can encode and checksum large payloads without holding
    /// whatever guards the session.
    #[must_use]
    pub fn poll_transmit_frames(&mut self, out: &mut Vec<Frame>) -> Option<Transmit> {
        let n = self.next_message()?;
        let len = if n == 1 {
            self.queue[0].encoded_len()
        } else {
            codec::merged_len_sized(&self.lens[..n])
        };
        for f in self.queue.drain(..n) {
            self.queued_bytes -= f.payload.len();
            out.push(f);
        }
        Some(self.sent(n, len))
    }

    /// How many queued frames the next message carries (their encoded lengths in
    /// `lens` when more than one), or `None` when nothing is queued.
    fn next_message(&mut self) -> Option<usize> {
        if self.queue.is_empty() {
            return None;
        }
        let cfg = &self.cluster.config;
        // The handshake frames travel alone: the peer reads its first message as the
        // connect request or response itself, never as a container (PROTOCOL.md §7.1).
        let handshake = matches!(self.queue[0].op, Op::Connect | Op::ConnectResponse);
        let mut n = if handshake { 1 } else { self.queue.len() };
        if n > 1 {
            let (mut held, mut held_bytes) = (0usize, 0usize);
            self.lens.clear();
            for (i, f) in self.queue.iter().enumerate() {
                let len = f.encoded_len();
                self.lens.push(len);
                let more = i + 1 < self.queue.len();
                if more && held < cfg.merge_max_frames && held_bytes + len < cfg.merge_max_bytes {
                    held += 1;
                    held_bytes += len;
                    continue;
                }
                n = held + 1;
                break;
            }
        }
        Some(n)
    }

    /// Counts a message of `frames` frames and `len` bytes as sent.
    fn sent(&mut self, frames: usize, len: usize) -> Transmit {
        if frames > 1 {
            self.stats.merged_sent += 1;
        }
        self.stats.frames_sent += frames as u64;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += len as u64;
        Transmit { frames, len }
    }

    fn queue_frame(&mut self, f: Frame) {
        trace!(target: TARGET, frame = ?f, "queue");
        self.queued_bytes += f.payload.len();
        self.queue.push_back(f);
    }

    /// Queues a frame provoked by the peer; dropped when the queue is full, so a peer
    /// cannot make us queue without bound by sending pings or stale frames.
    fn reply(&mut self, f: Frame) {
        if self.is_congested() {
            self.stats.replies_dropped += 1;
            debug!(target: TARGET, op = %f.op, mux = f.mux_id, "queue full: reply dropped");
            return;
        }
        self.queue_frame(f);
    }

    fn frame(&self, op: Op, mux_id: u64, seq: u32, flags: Flags, payload: Bytes) -> Frame {
        Frame {
            mux_id,
            seq,
            deadline_ms: 0,
            handler: 0,
            op,
            flags: self.base_flags | flags,
            payload,
            subroute: None,
        }
    }

    // ----------------------------------------------------------------------------
    // Inputs from the transport.

    /// Handles one inbound WebSocket (binary) message.
    ///
    /// A malformed message ends the session ([`Event::Lost`]); an unknown op, or a
    /// frame for a mux we do not know, is counted and ignored.
    pub fn handle_message(&mut self, now: Instant, msg: Bytes) {
        // A timer due by `now` fired before this message arrived, whatever order the
        // driver noticed them in: a deadline that passed wins over a late answer.
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.handle_timeout(now);
        }
        if self.state == State::Closed {
            return;
        }
        self.stats.messages_received += 1;
        self.stats.bytes_received += msg.len() as u64;
        match self.state {
            // The handshake travels as one frame, counted like every other.
            State::AwaitRequest => {
                self.stats.frames_received += 1;
                return self.handle_connect_request(now, &msg);
            }
            State::AwaitResponse => {
                self.stats.frames_received += 1;
                return self.handle_connect_response(now, &msg);
            }
            _ => {}
        }
        match codec::decode(&msg, self.cluster.config.max_frame_size) {
            Err(e) => self.lose(LostReason::Decode(e)),
            Ok(Message::Frame(ref mut f)) => self.handle_frame(now, f),
            Ok(Message::Merged(frames)) => {
                self.stats.merged_received += 1;
                for mut f in frames {
                    match f {
                        Ok(ref mut f) => self.handle_frame(now, f),
                        Err(e) => self.lose(LostReason::Decode(e)),
                    }
                    if self.state != State::Connected {
                        break;
                    }
                }
            }
        }
    }

    /// Ends the session because the transport failed or the application closes it.
    pub fn close(&mut self, reason: LostReason) {
        self.lose(reason);
    }

    fn lose(&mut self, reason: LostReason) {
        if self.state == State::Closed {
            return;
        }
        debug!(target: TARGET, remote = ?self.remote_host, %reason, "session lost");
        self.set_state(State::Closed);
        // Our own queued frames die with the session: a stale response must never
        // reach a new session whose mux IDs may collide.
        if !matches!(reason, LostReason::RejectedPeer(_)) {
            self.queue.clear();
            self.queued_bytes = 0;
        }
        // In ID order, whatever order the tables keep.
        let mut outgoing: Vec<(u64, ClientMux)> = self.outgoing.drain().collect();
        outgoing.sort_unstable_by_key(|(id, _)| *id);
        for (id, mux) in outgoing {
            self.events.push_back(match mux {
                ClientMux::Single { .. } => Event::Response {
                    mux_id: id,
                    result: Err(CallError::Disconnected),
                },
                ClientMux::Stream(s) => {
                    // What arrived stays readable: the link is gone, not the items.
                    if !s.items.is_empty() || s.end.is_some() {
                        let ClientStream { items, end, .. } = *s;
                        self.unread.push((id, Some(Unread { items, end })));
                    }
                    Event::Closed {
                        key: MuxKey::outgoing(id),
                        error: CallError::Disconnected,
                    }
                }
            });
        }
        let mut incoming: Vec<u64> = self.incoming.drain().map(|(id, _)| id).collect();
        incoming.sort_unstable();
        for id in incoming {
            self.events.push_back(Event::Closed {
                key: MuxKey::incoming(id),
                error: CallError::Disconnected,
            });
        }
        self.mux_timers.clear();
        self.conn_timers.clear();
        self.events.push_back(Event::Lost(reason));
    }

    fn connected(&mut self, now: Instant, remote_host: String, remote_id: [u8; 16]) {
        self.set_state(State::Connected);
        self.remote_host = Some(remote_host.clone());
        self.remote_id = Some(remote_id);
        self.last_pong = now;
        let cfg = &self.cluster.config;
        let (ping, keepalive) = (now + cfg.ping_interval, now + cfg.pong_timeout);
        self.conn_timers.stop(ConnTimer::Handshake);
        self.conn_timers.set(ConnTimer::Ping, ping);
        self.conn_timers.set(ConnTimer::Keepalive, keepalive);
        self.events.push_back(Event::Connected {
            remote_host,
            remote_id,
        });
    }

    fn handle_connect_response(&mut self, now: Instant, msg: &Bytes) {
        let fail = |s: &mut Session, why: String| s.lose(LostReason::Handshake(why));
        let f = match codec::decode(msg, self.cluster.config.max_frame_size) {
            Ok(Message::Frame(f)) => f,
            Ok(Message::Merged(_)) => return fail(self, "unexpected op: Merged".into()),
            Err(e) => return fail(self, format!("parsing connect response: {e}")),
        };
        if f.op != Op::ConnectResponse {
            return fail(self, format!("unexpected op: {}", f.op));
        }
        let resp = match ConnectResponse::decode(&f.payload) {
            Ok(r) => r,
            Err(e) => return fail(self, format!("parsing connect response: {e}")),
        };
        if !resp.accepted {
            return self.lose(LostReason::Rejected(resp.rejected_reason));
        }
        let remote = self.remote_host.clone().unwrap_or_default();
        self.connected(now, remote, resp.id);
    }

    fn handle_connect_request(&mut self, now: Instant, msg: &Bytes) {
        match self.check_connect_request(now, msg) {
            Ok(req) => {
                self.base_flags = Flags::NONE.set(
                    Flags::CRC,
                    link_uses_crc(&self.cluster.local_host, &req.host),
                );
                self.send_connect_response(true, String::new());
                self.connected(now, req.host, req.id);
            }
            Err(reason) => {
                self.send_connect_response(false, reason.clone());
                self.lose(LostReason::RejectedPeer(reason));
            }
        }
    }

    fn send_connect_response(&mut self, accepted: bool, rejected_reason: String) {
        let resp = ConnectResponse {
            id: self.cluster.local_id,
            accepted,
            rejected_reason,
        };
        let mut f = Frame::new(Op::ConnectResponse);
        f.payload = codec::to_payload(|b| resp.encode(b));
        self.queue_frame(f);
    }

    /// The acceptor's checks, in order (`PROTOCOL.md` §3.5): the frame, the op, the
    /// payload, a known host, the dial direction, the clock skew, the token.
    fn check_connect_request(&self, now: Instant, msg: &Bytes) -> Result<ConnectRequest, String> {
        let f = match codec::decode(msg, self.cluster.config.max_frame_size) {
            Ok(Message::Frame(f)) => f,
            Ok(Message::Merged(_)) => return Err("unexpected connect op: Merged".into()),
            Err(e) => return Err(format!("error parsing grid connect: {e}")),
        };
        if f.op != Op::Connect {
            return Err(format!("unexpected connect op: {}", f.op));
        }
        let req = ConnectRequest::decode(&f.payload)
            .map_err(|e| format!("error parsing connectReq: {e}"))?;
        if !self.cluster.peers.contains(&req.host) {
            return Err(format!("unknown incoming host: {}", req.host));
        }
        if !codec::should_dial(&req.host, &self.cluster.local_host) {
            return Err("grid: expected to be client side, not server side".into());
        }
        let skew = (self.wall(now).as_unix_nanos() - req.time.as_unix_nanos()).unsigned_abs();
        let max = self.cluster.config.max_clock_skew.as_nanos();
        if skew > max {
            let skew = Duration::from_nanos(skew.min(u64::MAX as u128) as u64);
            return Err(format!(
                "time difference too large between servers: {skew:?}"
            ));
        }
        (self.cluster.validate_token)(&req.token).map_err(|e| format!("auth token: {e}"))?;
        Ok(req)
    }

    /// Handles a frame where decoding left it; the handlers that keep its payload take
    /// it out. (Moved into an argument, a frame was copied with loads that waited on the
    /// decoder's narrower stores: 4–14% of a frame's time in `session-bench`.)
    fn handle_frame(&mut self, now: Instant, f: &mut Frame) {
        self.stats.frames_received += 1;
        trace!(target: TARGET, frame = ?f, "recv");
        match f.op {
            Op::Ping if f.mux_id == 0 => self.on_conn_ping(now, f),
            Op::Ping => self.on_mux_ping(now, f),
            Op::Pong if f.mux_id == 0 => self.on_conn_pong(now),
            Op::Pong => self.on_mux_pong(now, f),
            Op::Request => self.on_request(now, f),
            Op::ConnectMux => self.on_connect_mux(now, f),
            Op::Response => self.on_response(f),
            Op::MuxConnectError => self.on_mux_connect_error(f),
            Op::AckMux => self.on_ack(f),
            Op::MuxServerMsg => self.on_server_msg(now, f),
            Op::UnblockClMux => self.on_unblock_client(f),
            Op::DisconnectClientMux => self.on_disconnect_client(f),
            Op::MuxClientMsg => self.on_client_msg(f),
            Op::UnblockSrvMux => self.on_unblock_server(f),
            Op::DisconnectServerMux => self.on_disconnect_server(f),
            op => {
                self.stats.unknown_ops += 1;
                debug!(target: TARGET, %op, "unknown message type: ignored");
            }
        }
    }

    fn stale(&mut self, f: &Frame) {
        self.stats.stale_frames += 1;
        trace!(target: TARGET, op = %f.op, mux = f.mux_id, "frame for unknown mux");
    }

    // ----------------------------------------------------------------------------
    // Keepalive.

    fn on_conn_ping(&mut self, _now: Instant, f: &Frame) {
        let t = Ping::decode(&f.payload)
            .map(|p| p.t)
            .unwrap_or(Time::GO_ZERO);
        let pong = Pong {
            not_found: false,
            err: None,
            t,
        };
        let mut r = self.frame(
            Op::Pong,
            0,
            f.seq,
            Flags::NONE,
            codec::to_payload(|b| pong.encode(b)),
        );
        r.deadline_ms = f.deadline_ms;
        r.handler = f.handler;
        self.reply(r);
    }

    fn on_conn_pong(&mut self, now: Instant) {
        // Any pong refreshes the link, even one whose payload does not decode.
        self.last_pong = now;
        if let Some(sent) = self.last_ping_sent.take() {
            self.stats.last_rtt = Some(now.saturating_duration_since(sent));
        }
    }

    fn send_conn_ping(&mut self, now: Instant) {
        let ping = Ping { t: self.wall(now) };
        let mut f = Frame::new(Op::Ping);
        f.deadline_ms = self
            .cluster
            .config
            .ping_interval
            .as_millis()
            .min(u32::MAX as u128) as u32;
        f.payload = codec::to_payload(|b| ping.encode(b));
        self.queue_frame(f);
        self.last_ping_sent = Some(now);
    }

    // ----------------------------------------------------------------------------
    // Timers.

    /// Handles every timer due at `now`. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        for t in ConnTimer::ALL {
            if !self.conn_timers.is_expired(t, now) || self.state == State::Closed {
                continue;
            }
            match t {
                ConnTimer::Handshake => {
                    self.conn_timers.stop(t);
                    let limit = self.cluster.config.handshake_timeout;
                    self.lose(LostReason::HandshakeTimeout(limit));
                }
                ConnTimer::Ping => {
                    self.send_conn_ping(now);
                    self.conn_timers
                        .set(t, now + self.cluster.config.ping_interval);
                }
                ConnTimer::Keepalive => {
                    let since = now.saturating_duration_since(self.last_pong);
                    let limit = self.cluster.config.pong_timeout;
                    if since >= limit {
                        warn!(target: TARGET, remote = ?self.remote_host, ?since, "last pong too old; disconnecting");
                        self.lose(LostReason::KeepaliveTimeout(since));
                    } else {
                        self.conn_timers.set(t, self.last_pong + limit);
                    }
                }
            }
        }
        while self.state == State::Connected {
            let Some((at, key, kind)) = self.mux_timers.pop_expired(now) else {
                break;
            };
            match (key.dir, kind) {
                (Dir::Outgoing, MuxTimer::Deadline) => self.client_deadline(key.id, at),
                (Dir::Outgoing, MuxTimer::Tick) => self.client_tick(now, key.id, at),
                (Dir::Incoming, MuxTimer::Deadline) => self.server_deadline(key.id, at),
                (Dir::Incoming, MuxTimer::Tick) => self.server_tick(now, key.id, at),
            }
        }
    }

    fn client_deadline(&mut self, id: u64, at: Instant) {
        match self.outgoing.get(&id) {
            Some(ClientMux::Single { deadline }) if *deadline == at => {
                self.outgoing.remove(&id);
                self.events.push_back(Event::Response {
                    mux_id: id,
                    result: Err(CallError::DeadlineExceeded),
                });
            }
            Some(ClientMux::Stream(s)) if s.deadline == Some(at) && s.end.is_none() => {
                self.fail_client_stream(id, CallError::DeadlineExceeded, true);
            }
            _ => {}
        }
    }

    fn client_tick(&mut self, now: Instant, id: u64, at: Instant) {
        let cfg = &self.cluster.config;
        let (interval, timeout) = (cfg.mux_ping_interval, cfg.mux_pong_timeout);
        let Some(ClientMux::Stream(s)) = self.outgoing.get_mut(&id) else {
            return;
        };
        if s.tick != Some(at) || s.end.is_some() {
            return;
        }
        if now.saturating_duration_since(s.last_pong) > timeout {
            debug!(target: TARGET, mux = id, "stream pong timeout");
            return self.fail_client_stream(id, CallError::Disconnected, true);
        }
        let seq = next_seq(&mut s.send_seq);
        let next = now + interval;
        s.tick = Some(next);
        self.mux_timers
            .insert(next, MuxKey::outgoing(id), MuxTimer::Tick);
        let f = self.frame(Op::Ping, id, seq, Flags::NONE, Bytes::new());
        self.queue_frame(f);
    }

    fn server_deadline(&mut self, id: u64, at: Instant) {
        let due = match self.incoming.get(&id) {
            Some(ServerMux::Single { deadline, .. }) => *deadline == Some(at),
            Some(ServerMux::Stream(s)) => s.deadline == Some(at),
            None => false,
        };
        if due {
            self.kill_server_mux(id, CallError::DeadlineExceeded);
        }
    }

    fn server_tick(&mut self, now: Instant, id: u64, at: Instant) {
        let cfg = &self.cluster.config;
        let (interval, timeout) = (cfg.mux_ping_interval, cfg.server_mux_timeout);
        let Some(ServerMux::Stream(s)) = self.incoming.get_mut(&id) else {
            return;
        };
        if s.tick != Some(at) {
            return;
        }
        let quiet = now.saturating_duration_since(s.last_ping);
        if quiet > timeout {
            debug!(target: TARGET, mux = id, ?quiet, "canceling remote stream not seen for too long");
            return self.kill_server_mux(id, CallError::Disconnected);
        }
        let next = now + interval;
        s.tick = Some(next);
        self.mux_timers
            .insert(next, MuxKey::incoming(id), MuxTimer::Tick);
    }

    // ----------------------------------------------------------------------------
    // Calls we make.

    fn check_start(&self, handler: &HandlerKey) -> Result<(), CallError> {
        if self.state != State::Connected {
            return Err(CallError::Disconnected);
        }
        if handler.id == 0 {
            return Err(CallError::UnknownHandler);
        }
        if self.outgoing.len() >= self.cluster.config.max_muxes {
            return Err(CallError::TooManyCalls(self.cluster.config.max_muxes));
        }
        if self.is_congested() {
            return Err(CallError::Congested);
        }
        Ok(())
    }

    /// Adds `mux` to the outgoing table under the next free mux ID (looked up once).
    fn add_outgoing(&mut self, mux: ClientMux) -> u64 {
        loop {
            self.next_mux_id = self.next_mux_id.wrapping_add(1);
            if self.next_mux_id == 0 {
                continue;
            }
            if let Entry::Vacant(v) = self.outgoing.entry(self.next_mux_id) {
                v.insert(mux);
                return self.next_mux_id;
            }
        }
    }

    fn deadline_ms(d: Duration) -> Result<u32, CallError> {
        if d < Duration::from_millis(1) {
            return Err(CallError::DeadlineExceeded);
        }
        Ok(d.as_millis().min(u32::MAX as u128) as u32)
    }

    /// Starts a single request; its outcome arrives as [`Event::Response`].
    ///
    /// Without a deadline, [`crate::proto::Config::default_request_deadline`] applies
    /// (and is sent to the peer, as the protocol requires).
    pub fn request(
        &mut self,
        now: Instant,
        handler: HandlerKey,
        payload: Bytes,
        deadline: Option<Duration>,
    ) -> Result<u64, CallError> {
        self.check_start(&handler)?;
        let d = deadline.unwrap_or(self.cluster.config.default_request_deadline);
        let ms = Self::deadline_ms(d)?;
        let at = now + d;
        let id = self.add_outgoing(ClientMux::Single { deadline: at });
        self.mux_timers
            .insert(at, MuxKey::outgoing(id), MuxTimer::Deadline);
        let mut f = self.frame(Op::Request, id, 0, Flags::EOF, payload);
        f.deadline_ms = ms;
        f.handler = handler.id;
        f.subroute = handler.subroute;
        self.queue_frame(f);
        Ok(id)
    }

    /// Opens a stream to a handler registered locally as a stream handler (its
    /// capacities size our buffers and credits). Read with [`Session::read`], send with
    /// [`Session::send`].
    pub fn open_stream(
        &mut self,
        now: Instant,
        handler: HandlerKey,
        payload: Option<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<u64, CallError> {
        self.check_start(&handler)?;
        let Some(HandlerKind::Stream {
            in_capacity,
            out_capacity,
        }) = self.cluster.registry.get(&handler)
        else {
            return Err(CallError::UnknownHandler);
        };
        let ms = deadline.map(Self::deadline_ms).transpose()?.unwrap_or(0);
        let cfg = &self.cluster.config;
        let deadline = deadline.map(|d| now + d);
        let tick = (deadline.is_none() || ms as u128 > cfg.mux_ping_interval.as_millis())
            .then(|| now + cfg.mux_ping_interval);
        let id = self.add_outgoing(ClientMux::Stream(Box::new(ClientStream {
            in_capacity,
            out_capacity,
            send_seq: 1,
            recv_seq: 0,
            credits: 0,
            acked: false,
            input_closed: in_capacity == 0,
            want_read: true,
            want_write: false,
            items: VecDeque::new(),
            owed: 0,
            end: None,
            deadline,
            tick,
            last_pong: now,
        })));
        let key = MuxKey::outgoing(id);
        if let Some(at) = deadline {
            self.mux_timers.insert(at, key, MuxTimer::Deadline);
        }
        if let Some(at) = tick {
            self.mux_timers.insert(at, key, MuxTimer::Tick);
        }
        let flags = Flags::NONE.set(Flags::EOF, in_capacity == 0).set(
            Flags::PAYLOAD_IS_ZERO,
            payload.as_ref().is_some_and(Bytes::is_empty),
        );
        let mut f = self.frame(Op::ConnectMux, id, 0, flags, payload.unwrap_or_default());
        f.deadline_ms = ms;
        f.handler = handler.id;
        f.subroute = handler.subroute;
        self.queue_frame(f);
        Ok(id)
    }

    /// Cancels a call we made: frees it at once (a late answer is ignored). A live
    /// stream also tells the server to stop. Unknown IDs are ignored.
    pub fn cancel(&mut self, id: u64) {
        match self.outgoing.remove(&id) {
            Some(ClientMux::Single { deadline }) => {
                self.mux_timers
                    .remove(Some(deadline), MuxKey::outgoing(id), MuxTimer::Deadline);
            }
            Some(ClientMux::Stream(mut s)) => {
                self.remove_client_timers(id, &s);
                if s.end.is_none() && self.state == State::Connected {
                    let seq = next_seq(&mut s.send_seq);
                    let f = self.frame(Op::DisconnectServerMux, id, seq, Flags::NONE, Bytes::new());
                    self.queue_frame(f);
                }
            }
            None => {}
        }
    }

    fn remove_client_timers(&mut self, id: u64, s: &ClientStream) {
        let key = MuxKey::outgoing(id);
        self.mux_timers.remove(s.deadline, key, MuxTimer::Deadline);
        self.mux_timers.remove(s.tick, key, MuxTimer::Tick);
    }

    /// Ends an outgoing stream locally with `error`, telling the server (with a stamped
    /// notice for our own cancellations, an unstamped one for failures).
    fn fail_client_stream(&mut self, id: u64, error: CallError, stamped: bool) {
        let Some(ClientMux::Stream(mut s)) = self.outgoing.remove(&id) else {
            return;
        };
        self.remove_client_timers(id, &s);
        let seq = if stamped {
            next_seq(&mut s.send_seq)
        } else {
            0
        };
        let f = self.frame(Op::DisconnectServerMux, id, seq, Flags::NONE, Bytes::new());
        self.queue_frame(f);
        self.events.push_back(Event::Closed {
            key: MuxKey::outgoing(id),
            error,
        });
    }

    /// Ends an outgoing single request or stream with `error`, because the peer said so.
    /// A stream's server still gets the unstamped teardown notice (`PROTOCOL.md` §6.8):
    /// the peer's frame may have been a misdirected Go `DisconnectClientMux` (§6.9)
    /// aimed at another mux, leaving this stream's handler running on the peer.
    fn fail_client_mux(&mut self, id: u64, error: CallError) {
        match self.outgoing.get(&id) {
            Some(ClientMux::Single { deadline }) => {
                let deadline = *deadline;
                self.outgoing.remove(&id);
                self.mux_timers
                    .remove(Some(deadline), MuxKey::outgoing(id), MuxTimer::Deadline);
                self.events.push_back(Event::Response {
                    mux_id: id,
                    result: Err(error),
                });
            }
            Some(ClientMux::Stream(_)) => self.fail_client_stream(id, error, false),
            None => {}
        }
    }

    fn on_response(&mut self, f: &mut Frame) {
        let deadline = match self.outgoing.entry(f.mux_id) {
            Entry::Occupied(e) if matches!(e.get(), ClientMux::Single { .. }) => match e.remove() {
                ClientMux::Single { deadline } => deadline,
                ClientMux::Stream(_) => unreachable!("matched a single request"),
            },
            _ => return self.stale(f),
        };
        self.mux_timers.remove(
            Some(deadline),
            MuxKey::outgoing(f.mux_id),
            MuxTimer::Deadline,
        );
        let result = if f.seq != 0 {
            Err(CallError::IncorrectSequence)
        } else if f.flags.contains(Flags::PAYLOAD_IS_ERR) {
            Err(CallError::Remote(
                String::from_utf8_lossy(&f.payload).into_owned(),
            ))
        } else {
            Ok(std::mem::take(&mut f.payload))
        };
        self.events.push_back(Event::Response {
            mux_id: f.mux_id,
            result,
        });
    }

    /// Whether an outgoing mux can still fail: a single request, or a stream whose end
    /// has not arrived (an ended stream only waits for its last read, which must still
    /// deliver that end).
    fn client_mux_live(&self, id: u64) -> bool {
        match self.outgoing.get(&id) {
            Some(ClientMux::Single { .. }) => true,
            Some(ClientMux::Stream(s)) => s.end.is_none(),
            None => false,
        }
    }

    fn on_mux_connect_error(&mut self, f: &Frame) {
        if !self.client_mux_live(f.mux_id) {
            return self.stale(f);
        }
        let text = match MuxConnectError::decode(&f.payload) {
            Ok(e) => e.error,
            Err(e) => format!("malformed mux connect error: {e}"),
        };
        self.fail_client_mux(f.mux_id, CallError::Refused(text));
    }

    fn on_disconnect_client(&mut self, f: &Frame) {
        // "Drop your outgoing mux": a Go peer also sends this, misdirected, for our
        // incoming muxes (PROTOCOL.md §6.9); the receive semantics are Go's.
        if !self.client_mux_live(f.mux_id) {
            return self.stale(f);
        }
        let error = if f.flags.contains(Flags::PAYLOAD_IS_ERR) {
            CallError::Remote(String::from_utf8_lossy(&f.payload).into_owned())
        } else {
            CallError::Disconnected
        };
        self.fail_client_mux(f.mux_id, error);
    }

    /// The live outgoing stream for a frame, with its seq checked (when `check`), or
    /// `None` after replying or failing as the protocol says.
    fn client_stream_for(&mut self, f: &Frame, check: bool) -> Option<&mut ClientStream> {
        /// Why a frame found no live stream.
        enum Miss {
            Ended,
            Unknown,
            Sequence(u32),
        }
        // One lookup checks (and advances the receive sequence); a hit looks the stream
        // up again to hand it out, as the borrow checker cannot see that the misses
        // below no longer need it.
        let miss = match self.outgoing.get_mut(&f.mux_id) {
            Some(ClientMux::Stream(s)) if s.end.is_none() => {
                if check && s.recv_seq != f.seq {
                    Some(Miss::Sequence(s.recv_seq))
                } else {
                    if check {
                        s.recv_seq = s.recv_seq.wrapping_add(1);
                    }
                    None
                }
            }
            Some(_) => Some(Miss::Ended),
            None => Some(Miss::Unknown),
        };
        match miss {
            None => match self.outgoing.get_mut(&f.mux_id) {
                Some(ClientMux::Stream(s)) => Some(s),
                _ => None,
            },
            Some(Miss::Ended) => {
                self.stale(f);
                None
            }
            Some(Miss::Unknown) => {
                self.stale(f);
                if !f.flags.contains(Flags::EOF) {
                    // Tell the server to drop its side (the correct op, not Go's
                    // misdirected DisconnectClientMux).
                    let r = self.frame(
                        Op::DisconnectServerMux,
                        f.mux_id,
                        0,
                        Flags::NONE,
                        Bytes::new(),
                    );
                    self.reply(r);
                }
                None
            }
            Some(Miss::Sequence(want)) => {
                debug!(target: TARGET, mux = f.mux_id, want, got = f.seq, "out-of-sequence frame");
                self.fail_client_stream(f.mux_id, CallError::IncorrectSequence, false);
                None
            }
        }
    }

    fn on_ack(&mut self, f: &Frame) {
        let key = MuxKey::outgoing(f.mux_id);
        let Some(s) = self.client_stream_for(f, true) else {
            return;
        };
        if s.acked {
            return;
        }
        s.acked = true;
        s.credits = s.in_capacity;
        if s.want_write && s.credits > 0 {
            s.want_write = false;
            self.events.push_back(Event::Writable(key));
        }
    }

    fn on_unblock_client(&mut self, f: &Frame) {
        let key = MuxKey::outgoing(f.mux_id);
        let Some(s) = self.client_stream_for(f, true) else {
            return;
        };
        if !give_credit(&mut s.credits, s.in_capacity, f.mux_id) {
            return;
        }
        if s.want_write {
            s.want_write = false;
            self.events.push_back(Event::Writable(key));
        }
    }

    fn on_server_msg(&mut self, now: Instant, f: &mut Frame) {
        let key = MuxKey::outgoing(f.mux_id);
        let is_err = f.flags.contains(Flags::PAYLOAD_IS_ERR);
        let eof = f.flags.contains(Flags::EOF);
        let has_payload = f.payload().is_some();
        if !has_payload && !is_err && !eof {
            // An absent payload without EOF is "no item" (PROTOCOL.md §1.4).
            return self.stale(f);
        }
        let check = is_err || has_payload;
        // The item moves out of the frame (no reference count taken and dropped).
        let payload = (has_payload && !is_err).then(|| std::mem::take(&mut f.payload));
        let Some(s) = self.client_stream_for(f, check) else {
            return;
        };
        if is_err {
            s.end = Some(Err(CallError::Remote(
                String::from_utf8_lossy(&f.payload).into_owned(),
            )));
        } else {
            if let Some(item) = payload {
                if s.items.len() >= s.out_capacity as usize {
                    debug!(target: TARGET, mux = f.mux_id, "response was blocked: peer exceeded its credit");
                    return self.fail_client_stream(f.mux_id, CallError::CreditExceeded, false);
                }
                s.items.push_back(item);
                s.last_pong = now;
            }
            if eof {
                s.end = Some(Ok(()));
            }
        }
        let ended = s.end.is_some();
        let (deadline, tick) = (s.deadline, s.tick);
        if std::mem::take(&mut s.want_read) {
            self.events.push_back(Event::Readable(key));
        }
        if ended {
            // Timers of an ended stream are moot; the entry waits for the final read.
            if let Some(ClientMux::Stream(s)) = self.outgoing.get_mut(&f.mux_id) {
                s.deadline = None;
                s.tick = None;
            }
            self.mux_timers.remove(deadline, key, MuxTimer::Deadline);
            self.mux_timers.remove(tick, key, MuxTimer::Tick);
        }
    }

    fn on_mux_pong(&mut self, now: Instant, f: &Frame) {
        let Some(s) = self.client_stream_for(f, false) else {
            return;
        };
        match Pong::decode(&f.payload) {
            Ok(p) if p.not_found => {
                self.fail_client_stream(f.mux_id, CallError::RemoteTerminated, false)
            }
            Ok(Pong { err: Some(e), .. }) => {
                self.fail_client_stream(f.mux_id, CallError::Remote(e), false)
            }
            Ok(_) => s.last_pong = now,
            Err(e) => debug!(target: TARGET, mux = f.mux_id, %e, "undecodable mux pong ignored"),
        }
    }

    // ----------------------------------------------------------------------------
    // Calls the peer makes.

    fn refuse(&mut self, f: &Frame, text: String) {
        debug!(target: TARGET, mux = f.mux_id, op = %f.op, %text, "refusing call");
        let e = MuxConnectError { error: text };
        let mut r = self.frame(
            Op::MuxConnectError,
            f.mux_id,
            f.seq,
            Flags::NONE,
            codec::to_payload(|b| e.encode(b)),
        );
        r.deadline_ms = f.deadline_ms;
        r.handler = f.handler;
        self.reply(r);
    }

    /// Finds the handler a request or stream open is for, or the refusal text.
    fn lookup(&self, f: &Frame) -> Result<(HandlerKey, HandlerKind), String> {
        let key = HandlerKey {
            id: f.subroute.map_or(f.handler, |s| s.handler()),
            subroute: f.subroute,
        };
        if key.subroute.is_none() && key.id == 0 {
            return Err("Invalid Handler".into());
        }
        match self.cluster.registry.get(&key) {
            Some(kind) => Ok((key, kind)),
            None => Err(match &f.subroute {
                Some(s) => {
                    let bytes: Vec<String> = s.as_bytes().iter().map(u8::to_string).collect();
                    format!("Invalid Handler for type: [{}]", bytes.join(" "))
                }
                None => format!("Invalid Handler for type: HandlerID({})", key.id),
            }),
        }
    }

    /// Checks shared by incoming requests and stream opens: `Some` to go on.
    fn admit(&mut self, f: &Frame, want_stream: bool) -> Option<(HandlerKey, HandlerKind)> {
        let (key, kind) = match self.lookup(f) {
            Ok((key, kind)) if matches!(kind, HandlerKind::Stream { .. }) == want_stream => {
                (key, kind)
            }
            Ok((key, _)) => {
                let text = format!("Invalid Handler for type: HandlerID({})", key.id);
                self.refuse(f, text);
                return None;
            }
            Err(text) => {
                self.refuse(f, text);
                return None;
            }
        };
        if self.incoming.contains_key(&f.mux_id) {
            // A duplicate ID leaves the existing call untouched.
            debug!(target: TARGET, mux = f.mux_id, "duplicate mux id ignored");
            self.stats.stale_frames += 1;
            return None;
        }
        if self.incoming.len() >= self.cluster.config.max_muxes {
            let text = format!(
                "too many concurrent muxes on this link (limit {})",
                self.cluster.config.max_muxes
            );
            self.refuse(f, text);
            return None;
        }
        // A full queue does not stop admission: an admitted call costs at most its answer
        // and is bounded by `max_muxes`, while dropping it would leave its caller waiting
        // out its whole deadline. But a stream's ack is queued on admission, and a peer
        // that cancels each call at once is not held by `max_muxes`: past
        // `max_queued_frames + max_muxes` a call is dropped like a reply.
        let cfg = &self.cluster.config;
        if self.queue.len() >= cfg.max_queued_frames.saturating_add(cfg.max_muxes) {
            self.stats.replies_dropped += 1;
            return None;
        }
        Some((key, kind))
    }

    fn on_request(&mut self, now: Instant, f: &mut Frame) {
        let Some((handler, _)) = self.admit(f, false) else {
            return;
        };
        let deadline =
            (f.deadline_ms > 0).then(|| now + Duration::from_millis(f.deadline_ms as u64));
        if let Some(at) = deadline {
            self.mux_timers
                .insert(at, MuxKey::incoming(f.mux_id), MuxTimer::Deadline);
        }
        self.incoming.insert(
            f.mux_id,
            ServerMux::Single {
                seq: f.seq,
                deadline,
            },
        );
        self.events.push_back(Event::Request {
            mux_id: f.mux_id,
            handler,
            payload: std::mem::take(&mut f.payload),
            deadline,
        });
    }

    fn on_connect_mux(&mut self, now: Instant, f: &mut Frame) {
        if f.flags.contains(Flags::STATELESS) {
            return self.refuse(f, "Stateless streams not supported".into());
        }
        let Some((
            handler,
            HandlerKind::Stream {
                in_capacity,
                out_capacity,
            },
        )) = self.admit(f, true)
        else {
            return;
        };
        let cfg = &self.cluster.config;
        let key = MuxKey::incoming(f.mux_id);
        let deadline =
            (f.deadline_ms > 0).then(|| now + Duration::from_millis(f.deadline_ms as u64));
        let tick = (f.deadline_ms == 0
            || f.deadline_ms as u128 > cfg.server_mux_timeout.as_millis())
        .then(|| now + cfg.mux_ping_interval);
        if let Some(at) = deadline {
            self.mux_timers.insert(at, key, MuxTimer::Deadline);
        }
        if let Some(at) = tick {
            self.mux_timers.insert(at, key, MuxTimer::Tick);
        }
        let mut send_seq = f.seq;
        let ack_seq = next_seq(&mut send_seq);
        self.incoming.insert(
            f.mux_id,
            ServerMux::Stream(Box::new(ServerStream {
                in_capacity,
                out_capacity,
                send_seq,
                recv_seq: f.seq.wrapping_add(1),
                credits: out_capacity,
                want_read: true,
                want_write: false,
                items: VecDeque::new(),
                owed: 0,
                input_ended: in_capacity == 0,
                pending_final: None,
                deadline,
                tick,
                last_ping: now,
            })),
        );
        let ack = self.frame(Op::AckMux, f.mux_id, ack_seq, Flags::NONE, Bytes::new());
        self.queue_frame(ack);
        let payload = f
            .payload()
            .is_some()
            .then(|| std::mem::take(&mut f.payload));
        self.events.push_back(Event::StreamOpened {
            mux_id: f.mux_id,
            handler,
            payload,
            deadline,
        });
    }

    /// Ends an incoming call from our side (deadline, liveness, loss of interest): the
    /// handler is told by [`Event::Closed`], a stream's client by a disconnect notice.
    fn kill_server_mux(&mut self, id: u64, error: CallError) {
        let Some(mux) = self.incoming.remove(&id) else {
            return;
        };
        self.remove_server_timers(id, &mux);
        if matches!(mux, ServerMux::Stream(_)) {
            let f = self.frame(Op::DisconnectClientMux, id, 0, Flags::NONE, Bytes::new());
            self.queue_frame(f);
        }
        self.events.push_back(Event::Closed {
            key: MuxKey::incoming(id),
            error,
        });
    }

    /// Ends an incoming stream because the client broke the protocol: an error frame
    /// (sent without credit) tells the client why.
    fn abort_server_stream(&mut self, id: u64, text: String) {
        let Some(ServerMux::Stream(mut s)) = self.incoming.remove(&id) else {
            return;
        };
        debug!(target: TARGET, mux = id, %text, "aborting incoming stream");
        let key = MuxKey::incoming(id);
        self.mux_timers.remove(s.deadline, key, MuxTimer::Deadline);
        self.mux_timers.remove(s.tick, key, MuxTimer::Tick);
        let seq = next_seq(&mut s.send_seq);
        let f = self.frame(
            Op::MuxServerMsg,
            id,
            seq,
            Flags::EOF | Flags::PAYLOAD_IS_ERR,
            Bytes::from(text.clone()),
        );
        self.queue_frame(f);
        self.events.push_back(Event::Closed {
            key: MuxKey::incoming(id),
            error: CallError::Remote(text),
        });
    }

    fn remove_server_timers(&mut self, id: u64, mux: &ServerMux) {
        let key = MuxKey::incoming(id);
        match mux {
            ServerMux::Single { deadline, .. } => {
                self.mux_timers.remove(*deadline, key, MuxTimer::Deadline)
            }
            ServerMux::Stream(s) => {
                self.mux_timers.remove(s.deadline, key, MuxTimer::Deadline);
                self.mux_timers.remove(s.tick, key, MuxTimer::Tick);
            }
        }
    }

    /// The incoming stream for a frame with its seq checked (when `check`); on an
    /// unknown mux, a stale frame, on a bad seq, an abort.
    fn server_stream_for(&mut self, f: &Frame, check: bool) -> Option<&mut ServerStream> {
        let want = match self.incoming.get_mut(&f.mux_id) {
            Some(ServerMux::Stream(s)) => {
                if !check || s.recv_seq == f.seq {
                    if check {
                        s.recv_seq = s.recv_seq.wrapping_add(1);
                    }
                    // Re-borrow to satisfy the borrow checker across the match.
                    return match self.incoming.get_mut(&f.mux_id) {
                        Some(ServerMux::Stream(s)) => Some(s),
                        _ => None,
                    };
                }
                s.recv_seq
            }
            _ => {
                self.stale(f);
                return None;
            }
        };
        let text = format!(
            "receive sequence number mismatch. want {want}, got {}",
            f.seq
        );
        if f.op == Op::Ping {
            let pong = Pong {
                not_found: false,
                err: Some(text.clone()),
                t: Time::GO_ZERO,
            };
            let r = self.frame(
                Op::Pong,
                f.mux_id,
                f.seq,
                Flags::NONE,
                codec::to_payload(|b| pong.encode(b)),
            );
            self.reply(r);
        }
        self.abort_server_stream(f.mux_id, text);
        None
    }

    fn on_client_msg(&mut self, f: &mut Frame) {
        let key = MuxKey::incoming(f.mux_id);
        if !self.incoming.contains_key(&f.mux_id) {
            self.stale(f);
            let r = self.frame(
                Op::DisconnectClientMux,
                f.mux_id,
                0,
                Flags::NONE,
                Bytes::new(),
            );
            return self.reply(r);
        }
        let eof = f.flags.contains(Flags::EOF);
        let payload = f
            .payload()
            .is_some()
            .then(|| std::mem::take(&mut f.payload));
        let Some(s) = self.server_stream_for(f, true) else {
            return;
        };
        if s.input_ended {
            return self.abort_server_stream(f.mux_id, "did not expect inbound message".into());
        }
        if eof {
            if payload.is_some() {
                debug!(target: TARGET, mux = f.mux_id, "EOF with a payload: payload ignored");
            }
            s.input_ended = true;
        } else if let Some(item) = payload {
            if s.items.len() >= s.in_capacity as usize {
                return self.abort_server_stream(f.mux_id, "handler blocked".into());
            }
            s.items.push_back(item);
        } else {
            return;
        }
        if std::mem::take(&mut s.want_read) {
            self.events.push_back(Event::Readable(key));
        }
    }

    fn on_unblock_server(&mut self, f: &Frame) {
        let key = MuxKey::incoming(f.mux_id);
        let Some(s) = self.server_stream_for(f, true) else {
            return;
        };
        if !give_credit(&mut s.credits, s.out_capacity, f.mux_id) {
            return;
        }
        if let Some(result) = s.pending_final.take() {
            self.send_final(f.mux_id, result);
        } else if std::mem::take(&mut s.want_write) {
            self.events.push_back(Event::Writable(key));
        }
    }

    fn on_mux_ping(&mut self, now: Instant, f: &Frame) {
        let t = Time::GO_ZERO;
        // Only streams keep server-side state: a single request's id is not found either
        // (PROTOCOL.md §5.3).
        let not_found = !matches!(self.incoming.get(&f.mux_id), Some(ServerMux::Stream(_)));
        if !not_found {
            let Some(s) = self.server_stream_for(f, true) else {
                return;
            };
            s.last_ping = now;
        }
        let pong = Pong {
            not_found,
            err: None,
            t,
        };
        let r = self.frame(
            Op::Pong,
            f.mux_id,
            f.seq,
            Flags::NONE,
            codec::to_payload(|b| pong.encode(b)),
        );
        self.reply(r);
    }

    fn on_disconnect_server(&mut self, f: &Frame) {
        let Some(mux) = self.incoming.remove(&f.mux_id) else {
            return self.stale(f);
        };
        self.remove_server_timers(f.mux_id, &mux);
        self.events.push_back(Event::Closed {
            key: MuxKey::incoming(f.mux_id),
            error: CallError::CancelledByRemote,
        });
    }

    /// Answers a single request. Returns `false` if the call is gone (its deadline
    /// passed, or the link was lost): the result is dropped, as the protocol says.
    pub fn respond(&mut self, _now: Instant, mux_id: u64, result: Result<Bytes, String>) -> bool {
        let (seq, deadline) = match self.incoming.entry(mux_id) {
            Entry::Occupied(e) if matches!(e.get(), ServerMux::Single { .. }) => match e.remove() {
                ServerMux::Single { seq, deadline } => (seq, deadline),
                ServerMux::Stream(_) => unreachable!("matched a single request"),
            },
            _ => return false,
        };
        self.mux_timers
            .remove(deadline, MuxKey::incoming(mux_id), MuxTimer::Deadline);
        let f = match result {
            Ok(p) => {
                let zero = Flags::NONE.set(Flags::PAYLOAD_IS_ZERO, p.is_empty());
                self.frame(Op::Response, mux_id, seq, Flags::EOF | zero, p)
            }
            Err(e) => self.frame(
                Op::Response,
                mux_id,
                seq,
                Flags::EOF | Flags::PAYLOAD_IS_ERR,
                Bytes::from(e),
            ),
        };
        self.queue_frame(f);
        true
    }

    /// Finishes an incoming stream: a clean end, or the handler's error. The final frame
    /// costs a credit like an item; without one it is held and sent when one arrives.
    /// Returns `false` if the stream is gone.
    pub fn finish(&mut self, _now: Instant, mux_id: u64, result: Result<(), String>) -> bool {
        let Some(ServerMux::Stream(s)) = self.incoming.get_mut(&mux_id) else {
            return false;
        };
        if s.pending_final.is_some() {
            return true;
        }
        if s.credits == 0 {
            s.pending_final = Some(result);
            return true;
        }
        self.send_final(mux_id, result);
        true
    }

    fn send_final(&mut self, id: u64, result: Result<(), String>) {
        let Some(ServerMux::Stream(mut s)) = self.incoming.remove(&id) else {
            return;
        };
        if s.credits == 0 {
            bug!(
                self.stats.bugs,
                "final frame of mux {id} sent without credit"
            );
        }
        s.credits = s.credits.saturating_sub(1);
        let key = MuxKey::incoming(id);
        self.mux_timers.remove(s.deadline, key, MuxTimer::Deadline);
        self.mux_timers.remove(s.tick, key, MuxTimer::Tick);
        let seq = next_seq(&mut s.send_seq);
        let f = match result {
            Ok(()) => self.frame(Op::MuxServerMsg, id, seq, Flags::EOF, Bytes::new()),
            Err(e) => self.frame(
                Op::MuxServerMsg,
                id,
                seq,
                Flags::EOF | Flags::PAYLOAD_IS_ERR,
                Bytes::from(e),
            ),
        };
        self.queue_frame(f);
    }

    // ----------------------------------------------------------------------------
    // Stream data, both directions.

    /// Sends one stream item: an outgoing stream's input, or an incoming stream's
    /// output. Without credit it returns [`SendError::Blocked`] and reports
    /// [`Event::Writable`] once credit arrives.
    pub fn send(&mut self, _now: Instant, key: MuxKey, item: Bytes) -> Result<(), SendError> {
        let zero = Flags::NONE.set(Flags::PAYLOAD_IS_ZERO, item.is_empty());
        let (op, seq) = match key.dir {
            Dir::Outgoing => {
                let Some(ClientMux::Stream(s)) = self.outgoing.get_mut(&key.id) else {
                    return Err(CallError::Closed.into());
                };
                if s.in_capacity == 0 {
                    return Err(CallError::NoInput.into());
                }
                if s.input_closed || s.end.is_some() {
                    return Err(CallError::Closed.into());
                }
                if s.credits == 0 {
                    s.want_write = true;
                    return Err(SendError::Blocked);
                }
                s.credits -= 1;
                (Op::MuxClientMsg, next_seq(&mut s.send_seq))
            }
            Dir::Incoming => {
                let Some(ServerMux::Stream(s)) = self.incoming.get_mut(&key.id) else {
                    return Err(CallError::Closed.into());
                };
                if s.pending_final.is_some() {
                    return Err(CallError::Closed.into());
                }
                if s.credits == 0 {
                    s.want_write = true;
                    return Err(SendError::Blocked);
                }
                s.credits -= 1;
                (Op::MuxServerMsg, next_seq(&mut s.send_seq))
            }
        };
        let f = self.frame(op, key.id, seq, zero, item);
        self.queue_frame(f);
        Ok(())
    }

    /// Ends an outgoing stream's input (EOF); the stream goes on until the server
    /// finishes. Streams without input ended theirs when they opened.
    pub fn close_send(&mut self, _now: Instant, id: u64) -> Result<(), CallError> {
        let Some(ClientMux::Stream(s)) = self.outgoing.get_mut(&id) else {
            return Err(CallError::Closed);
        };
        if s.input_closed || s.end.is_some() {
            return Ok(());
        }
        s.input_closed = true;
        let seq = next_seq(&mut s.send_seq);
        let f = self.frame(Op::MuxClientMsg, id, seq, Flags::EOF, Bytes::new());
        self.queue_frame(f);
        Ok(())
    }

    /// Takes the next item (or the end) of a stream, giving the peer one credit back.
    ///
    /// Credits go back in batches: at once when the read emptied the stream's buffer
    /// (the reader caught up and waits for more), otherwise once a quarter of the window
    /// has been read (windows under 8 return every credit at once). The sender always
    /// keeps at least three quarters of its window, and each batch leaves in one merged
    /// message instead of one message per item. With large items the window is what fits
    /// in [`crate::proto::Config::stream_window_bytes`]: the credits beyond it stay here
    /// until items are small again.
    pub fn read(&mut self, _now: Instant, key: MuxKey) -> Read {
        let bytes = self.cluster.config.stream_window_bytes;
        let (item, op, seq, n) = match key.dir {
            Dir::Outgoing => {
                let Some(ClientMux::Stream(s)) = self.outgoing.get_mut(&key.id) else {
                    return Read::End(Err(CallError::Closed));
                };
                let Some(item) = s.items.pop_front() else {
                    if let Some(end) = s.end.take() {
                        self.outgoing.remove(&key.id);
                        return Read::End(end);
                    }
                    s.want_read = true;
                    return Read::Pending;
                };
                // No credit is given back once the stream has ended.
                if s.end.is_some() {
                    return Read::Item(item);
                }
                s.owed += 1;
                let window = window_for(s.out_capacity, item.len(), bytes);
                let n = owed_now(&mut s.owed, s.items.is_empty(), s.out_capacity, window);
                let seq = s.send_seq;
                s.send_seq = seq.wrapping_add(n);
                (item, Op::UnblockSrvMux, seq, n)
            }
            Dir::Incoming => {
                let Some(ServerMux::Stream(s)) = self.incoming.get_mut(&key.id) else {
                    return Read::End(Err(CallError::Closed));
                };
                let Some(item) = s.items.pop_front() else {
                    if s.input_ended {
                        return Read::End(Ok(()));
                    }
                    s.want_read = true;
                    return Read::Pending;
                };
                s.owed += 1;
                let window = window_for(s.in_capacity, item.len(), bytes);
                let n = owed_now(&mut s.owed, s.items.is_empty(), s.in_capacity, window);
                let seq = s.send_seq;
                s.send_seq = seq.wrapping_add(n);
                (item, Op::UnblockClMux, seq, n)
            }
        };
        for i in 0..n {
            let f = self.frame(op, key.id, seq.wrapping_add(i), Flags::NONE, Bytes::new());
            self.queue_frame(f);
        }
        Read::Item(item)
    }

    /// How many items of a stream wait to be read (0 for an unknown mux).
    pub fn buffered(&self, key: MuxKey) -> usize {
        match key.dir {
            Dir::Outgoing => match self.outgoing.get(&key.id) {
                Some(ClientMux::Stream(s)) => s.items.len(),
                _ => 0,
            },
            Dir::Incoming => match self.incoming.get(&key.id) {
                Some(ServerMux::Stream(s)) => s.items.len(),
                _ => 0,
            },
        }
    }

    /// Takes what outgoing stream `id` had received and not read when the session was
    /// lost: its items, and its end if that had arrived. A driver that hands them to the
    /// reader before the [`Event::Closed`] error (or instead of it, after a clean end)
    /// loses nothing that crossed the link. `None` when the stream had nothing unread
    /// (or the session is not lost, or they were taken).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Instant;
    /// # use grid_core::codec::Time;
    /// # use grid_core::proto::{Cluster, Event, LostReason, Session};
    /// let cluster = Arc::new(Cluster::new("http://a:1", [1; 16], &["http://b:2"]));
    /// let mut s = Session::acceptor(cluster, Instant::now(), Time::default());
    /// s.close(LostReason::Local);
    /// assert!(matches!(s.poll_event(), Some(Event::Lost(LostReason::Local))));
    /// assert_eq!(s.take_unread(1), None);
    /// ```
    pub fn take_unread(&mut self, id: u64) -> Option<Unread> {
        let at = self.unread.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        self.unread[at].1.take()
    }

    /// Whether a mux is in its table.
    pub fn contains(&self, key: MuxKey) -> bool {
        match key.dir {
            Dir::Outgoing => self.outgoing.contains_key(&key.id),
            Dir::Incoming => self.incoming.contains_key(&key.id),
        }
    }
}

/// Counts one credit the peer gave back to a stream whose window is `window`; a credit
/// beyond the window is ignored (and `false` returned).
fn give_credit(credits: &mut u32, window: u32, mux_id: u64) -> bool {
    if *credits >= window {
        debug!(target: TARGET, mux = mux_id, "output unblocked overflow: ignored");
        return false;
    }
    *credits += 1;
    true
}

/// How many read items a stream with window `window` lets owe their credit before it
/// sends them back: a quarter of the window, so the sender is never held up, and at
/// least one (small windows return every credit at once).
fn credit_batch(window: u32) -> u32 {
    (window / 4).max(1)
}

/// The items a stream of `capacity` lets be in flight or unread when they are
/// `item_len` bytes long: as many as fit in `bytes`, at least one, at most `capacity`
/// ([`crate::proto::Config::stream_window_bytes`]).
fn window_for(capacity: u32, item_len: usize, bytes: usize) -> u32 {
    let fit = bytes / item_len.max(1);
    u32::try_from(fit).unwrap_or(u32::MAX).min(capacity).max(1)
}

/// The credits to send back now out of `owed` (which it lowers by what it returns). The
/// credits that take the stream's `capacity` down to `window` stay owed; of the rest, all
/// go back once the buffer is empty or a batch of `window` is complete, otherwise none.
///
/// The sender is never stalled for good: once the buffer is empty only the held credits
/// are owed, so at least `window` credits are the sender's or spent on items on the way.
fn owed_now(owed: &mut u32, drained: bool, capacity: u32, window: u32) -> u32 {
    let free = owed.saturating_sub(capacity.saturating_sub(window));
    if free > 0 && (drained || free >= credit_batch(window)) {
        *owed -= free;
        free
    } else {
        0
    }
}

/// Stamps the next sequence number. Sequence numbers wrap at 2^32 as on the wire; the
/// peer's check is an equality, so wrapping is well defined.
#[inline]
fn next_seq(seq: &mut u32) -> u32 {
    let s = *seq;
    *seq = s.wrapping_add(1);
    s
}

#[cfg(test)]
impl Session {
    /// Test hook: sets an open stream's next sequence number to send and the one it
    /// expects next, so that wraparound can be tested without 2^32 frames.
    pub(crate) fn set_stream_seqs(&mut self, key: MuxKey, send: u32, recv: u32) {
        let (s_send, s_recv) = match key.dir {
            Dir::Outgoing => match self.outgoing.get_mut(&key.id) {
                Some(ClientMux::Stream(s)) => (&mut s.send_seq, &mut s.recv_seq),
                _ => panic!("no outgoing stream {}", key.id),
            },
            Dir::Incoming => match self.incoming.get_mut(&key.id) {
                Some(ServerMux::Stream(s)) => (&mut s.send_seq, &mut s.recv_seq),
                _ => panic!("no incoming stream {}", key.id),
            },
        };
        *s_send = send;
        *s_recv = recv;
    }
}
