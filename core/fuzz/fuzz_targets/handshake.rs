//! The handshake, from both sides.
//!
//! The first input byte picks the side (bit 0) and, for the acceptor, its host.
//!
//! * Acceptor: an acceptor session, optionally ticked first (past the handshake timeout
//!   it must be lost with `HandshakeTimeout` and ignore what follows), is fed a first
//!   message: raw bytes, or a connect request built from fuzzed fields (op, flags, host
//!   among the peers, itself or strangers, clock skew around the limit, token, ID; alone
//!   or in a container). It must either accept, with `remote_host()` one of its
//!   configured peers that dials it by the protocol's rule, one `Connected` event and
//!   exactly one queued ConnectResponse with accepted=true; or close with
//!   `Lost(RejectedPeer(reason))` and exactly one queued ConnectResponse with
//!   accepted=false carrying that reason, and nothing else. For a built request the
//!   outcome must be the one the protocol prescribes (known host, dial direction, skew
//!   within `max_clock_skew`, valid token).
//! * Dialer: a dialer session (its connect request is checked) is fed a fuzzed first
//!   message: raw bytes, or a connect response built from fuzzed fields. It must either
//!   connect (`remote_id()` the responder's) or be lost with `Rejected` (for a rejection:
//!   the peer's reason) or `Handshake`; a built response decides which.
//!
//! Then both go on with more fuzzed messages and ticks. Throughout: no panic, the checks
//! of [`common::Node`], `bug_count()` 0; at the end a close leaves the tables empty.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{FrameSpec, Input, Node, HOSTS};
use grid_core::codec::{self, ConnectRequest, ConnectResponse, Flags, Frame, Message, Op, Time};
use grid_core::proto::{Event, LostReason, Role, Session};
use libfuzzer_sys::fuzz_target;

const MAX_CHUNKS: usize = 64;

struct Single {
    node: Node,
    now: Instant,
    wire: VecDeque<Bytes>,
    buf: BytesMut,
}

impl Single {
    fn settle(&mut self) -> Vec<Bytes> {
        self.node.settle(&mut self.wire, &mut self.buf);
        self.wire.drain(..).collect()
    }

    fn message(&mut self, msg: Bytes) -> Vec<Bytes> {
        self.node.begin();
        self.node.s.handle_message(self.now, msg);
        self.settle()
    }

    fn tick(&mut self, d: Duration) -> Vec<Bytes> {
        self.now += d;
        self.node.begin();
        self.node.timeout(self.now);
        self.settle()
    }

    /// More fuzzed input after the handshake: messages and ticks.
    fn go_on(&mut self, inp: &mut Input<'_>) {
        let mut chunks = 0;
        while !inp.is_empty() && chunks < MAX_CHUNKS {
            chunks += 1;
            let tag = inp.u8();
            let closed = self.node.s.is_closed();
            let sent = match tag % 4 {
                0 => self.message(Bytes::copy_from_slice(inp.blob())),
                1 | 2 => {
                    let count = usize::from(tag >> 6) + 1;
                    let frames: Vec<_> = (0..count)
                        .map(|_| FrameSpec::read(inp, &self.node).frame())
                        .collect();
                    self.message(common::encode_frames(&frames))
                }
                _ => {
                    let scale = [1, 10, 100, 1000][usize::from((tag >> 2) & 3)];
                    self.tick(Duration::from_millis(u64::from(inp.u16()) * scale))
                }
            };
            if closed {
                assert!(
                    sent.is_empty(),
                    "a closed session sent {} messages",
                    sent.len()
                );
                assert!(
                    self.node.log.is_empty(),
                    "a closed session reported {:?}",
                    self.node.log
                );
            }
            self.node.log.clear();
        }
        self.node.begin();
        self.node.s.close(LostReason::Local);
        self.settle();
        let st = self.node.s.stats();
        assert!(self.node.s.is_closed() && self.node.lost.is_some());
        assert_eq!(
            (st.outgoing_muxes, st.incoming_muxes, st.queued_frames),
            (0, 0, 0)
        );
        assert!(self.node.out.is_empty() && self.node.inc.is_empty());
        assert_eq!(self.node.s.scheduled_timers(), 0);
    }
}

/// The only frame of a handshake message.
fn handshake_frame(msg: &Bytes, op: Op) -> Frame {
    let f = match codec::decode(msg, usize::MAX) {
        Ok(Message::Frame(f)) => f,
        other => panic!("handshake message is not a single frame: {other:?}"),
    };
    assert_eq!(f.op, op);
    // Handshake frames carry no CRC and no other flag.
    assert_eq!(f.flags, Flags::NONE, "{f:?}");
    f
}

fn host(inp: &mut Input<'_>) -> String {
    let b = inp.u8();
    match b % 8 {
        0..=5 => HOSTS[usize::from(b % 8) % HOSTS.len()].to_owned(),
        6 => "http://w:9000".to_owned(),
        _ => String::from_utf8_lossy(inp.short_blob()).into_owned(),
    }
}

/// A frame's op: mostly the handshake op, sometimes any.
fn op(inp: &mut Input<'_>, want: Op) -> Op {
    let b = inp.u8();
    if b < 200 {
        want
    } else {
        Op::from_u8(b % 19)
    }
}

/// Flags of a built handshake frame: mostly none, as the protocol sends them.
fn flags(inp: &mut Input<'_>) -> Flags {
    let b = inp.u8();
    if b & 0x80 != 0 {
        Flags(b & 0x7f)
    } else {
        Flags::NONE
    }
}

fn acceptor(inp: &mut Input<'_>, local: &'static str) {
    let cfg = common::config();
    let t0 = Instant::now();
    let s = Session::acceptor(common::cluster(local, 2, &cfg), t0, common::wall0());
    assert_eq!(s.role(), Role::Acceptor);
    let mut a = Single {
        node: Node::new("acceptor", s, cfg.clone()),
        now: t0,
        wire: VecDeque::new(),
        buf: BytesMut::new(),
    };
    assert!(a.settle().is_empty(), "an acceptor speaks first");
    assert_eq!(a.node.s.poll_timeout(), Some(t0 + cfg.handshake_timeout));

    // Time may pass before the request arrives.
    let wait = Duration::from_millis(u64::from(inp.u16()) * 5);
    if !wait.is_zero() {
        assert!(a.tick(wait).is_empty());
    }
    let timed_out = wait >= cfg.handshake_timeout;
    if timed_out {
        assert!(
            matches!(a.node.lost, Some(LostReason::HandshakeTimeout(_))),
            "{:?}",
            a.node.log
        );
    } else {
        assert!(a.node.log.is_empty() && !a.node.s.is_closed() && !a.node.s.is_connected());
    }
    a.node.log.clear();

    // The first message, and what the protocol says it must lead to (for a built one).
    let kind = inp.u8() % 4;
    let (msg, expect) = if kind == 0 {
        (Bytes::copy_from_slice(inp.blob()), None)
    } else {
        let op = op(inp, Op::Connect);
        let flags = flags(inp);
        let host = host(inp);
        let wall_now = Time::from_unix_nanos(
            common::wall0().as_unix_nanos() + (a.now - t0).as_nanos() as i128,
        );
        let limit = cfg.max_clock_skew.as_nanos() as i128;
        let sk = inp.u8();
        let skew: i128 = match sk % 4 {
            0 => 0,
            1 => i128::from(inp.u16() as i16) * 1_000_000_000,
            // Around the limit, either way, to the millisecond.
            2 => {
                let d = i128::from(inp.u8() as i8) * 1_000_000;
                if sk & 4 != 0 {
                    limit + d
                } else {
                    -limit + d
                }
            }
            _ => i128::from(inp.u64() as i64) * 1_000 + i128::from(inp.u8()),
        };
        let token = match inp.u8() % 4 {
            0 | 1 => common::GOOD_TOKEN.to_owned(),
            2 => "bad".to_owned(),
            _ => String::from_utf8_lossy(inp.short_blob()).into_owned(),
        };
        let req = ConnectRequest {
            id: [inp.u8(); 16],
            host: host.clone(),
            time: Time::from_unix_nanos(wall_now.as_unix_nanos() + skew),
            token: token.clone(),
        };
        let mut f = Frame::new(op);
        f.flags = flags;
        f.payload = codec::to_payload(|b| req.encode(b));
        let msg = if kind == 3 {
            let mut other = Frame::new(Op::Ping);
            other.flags = Flags::CRC;
            common::encode_frames(&[f, other])
        } else {
            common::encode_frames(&[f])
        };
        let skew_ok = (req.time.as_unix_nanos() - wall_now.as_unix_nanos()).abs() <= limit;
        let accept = kind != 3
            && op == Op::Connect
            && host != local
            && HOSTS.contains(&host.as_str())
            && codec::should_dial(&host, local)
            && skew_ok
            && token == common::GOOD_TOKEN;
        (msg, Some((accept, req)))
    };
    let sent = a.message(msg);

    if timed_out {
        assert!(
            sent.is_empty() && a.node.log.is_empty(),
            "a timed-out acceptor answered"
        );
    } else if a.node.s.is_connected() {
        let remote = a.node.s.remote_host().expect("remote host").to_owned();
        assert_ne!(remote, local);
        assert!(
            HOSTS.contains(&remote.as_str()),
            "accepted unknown host {remote:?}"
        );
        assert!(
            codec::should_dial(&remote, local),
            "accepted {remote} dialing {local} against the dial rule"
        );
        assert!(
            matches!(a.node.log.as_slice(), [Event::Connected { remote_host, .. }] if *remote_host == remote),
            "{:?}",
            a.node.log
        );
        assert_eq!(sent.len(), 1, "an acceptance is one message");
        let f = handshake_frame(&sent[0], Op::ConnectResponse);
        let r = ConnectResponse::decode(&f.payload).expect("our response decodes");
        assert_eq!(
            (r.accepted, r.id, r.rejected_reason.as_str()),
            (true, [2; 16], "")
        );
        if let Some((accept, req)) = &expect {
            assert!(*accept, "accepted a request the protocol rejects: {req:?}");
            assert_eq!(remote, req.host);
            assert_eq!(a.node.s.remote_id(), Some(req.id));
        }
    } else {
        assert!(
            a.node.s.is_closed(),
            "the first message left the acceptor waiting"
        );
        let reason = match a.node.log.as_slice() {
            [Event::Lost(LostReason::RejectedPeer(r))] => r.clone(),
            other => panic!("acceptor neither accepted nor rejected: {other:?}"),
        };
        assert_eq!(sent.len(), 1, "a rejection is exactly one message");
        let f = handshake_frame(&sent[0], Op::ConnectResponse);
        let r = ConnectResponse::decode(&f.payload).expect("our rejection decodes");
        assert!(!r.accepted);
        assert_eq!(r.id, [2; 16]);
        assert_eq!(r.rejected_reason, reason);
        if let Some((accept, req)) = &expect {
            assert!(!*accept, "rejected a valid request {req:?}: {reason}");
        }
    }
    a.node.log.clear();
    a.go_on(inp);
}

fn dialer(inp: &mut Input<'_>) {
    let cfg = common::config();
    let t0 = Instant::now();
    let local = HOSTS[usize::from(inp.u8()) % HOSTS.len()];
    let remote = HOSTS[usize::from(inp.u8()) % HOSTS.len()];
    let token = match inp.u8() % 4 {
        0 => String::from_utf8_lossy(inp.short_blob()).into_owned(),
        _ => common::GOOD_TOKEN.to_owned(),
    };
    let s = Session::dialer(
        common::cluster(local, 1, &cfg),
        remote,
        &token,
        t0,
        common::wall0(),
    );
    assert_eq!(s.role(), Role::Dialer);
    let mut d = Single {
        node: Node::new("dialer", s, cfg),
        now: t0,
        wire: VecDeque::new(),
        buf: BytesMut::new(),
    };
    let sent = d.settle();
    assert_eq!(sent.len(), 1, "a dialer sends its connect request first");
    let f = handshake_frame(&sent[0], Op::Connect);
    let req = ConnectRequest::decode(&f.payload).expect("our request decodes");
    assert_eq!(req.id, [1; 16]);
    assert_eq!(req.host, local);
    assert_eq!(req.time, common::wall0());
    assert_eq!(req.token, token);

    // The dialer waits for its answer without a deadline.
    let wait = Duration::from_millis(u64::from(inp.u16()) * 10);
    if !wait.is_zero() {
        assert!(d.tick(wait).is_empty());
    }
    assert!(d.node.log.is_empty() && !d.node.s.is_closed() && !d.node.s.is_connected());

    let kind = inp.u8() % 4;
    let (msg, expect) = if kind == 0 {
        (Bytes::copy_from_slice(inp.blob()), None)
    } else {
        let op = op(inp, Op::ConnectResponse);
        let flags = flags(inp);
        let resp = ConnectResponse {
            accepted: inp.bool(),
            rejected_reason: String::from_utf8_lossy(inp.short_blob()).into_owned(),
            id: [inp.u8(); 16],
        };
        let mut f = Frame::new(op);
        f.flags = flags;
        f.payload = codec::to_payload(|b| resp.encode(b));
        let msg = if kind == 3 {
            common::encode_frames(&[f.clone(), f])
        } else {
            common::encode_frames(&[f])
        };
        let valid = kind != 3 && op == Op::ConnectResponse;
        (msg, Some((valid, resp)))
    };
    let sent = d.message(msg);
    assert!(sent.is_empty(), "the dialer answered the response");
    if d.node.s.is_connected() {
        assert!(
            matches!(d.node.log.as_slice(), [Event::Connected { remote_host, .. }] if remote_host == remote),
            "{:?}",
            d.node.log
        );
        assert_eq!(d.node.s.remote_host(), Some(remote));
        if let Some((valid, resp)) = &expect {
            assert!(*valid && resp.accepted, "connected on {resp:?}");
            assert_eq!(d.node.s.remote_id(), Some(resp.id));
        }
    } else {
        assert!(d.node.s.is_closed(), "the response left the dialer waiting");
        let reason = match d.node.log.as_slice() {
            [Event::Lost(r)] => r.clone(),
            other => panic!("dialer neither connected nor lost: {other:?}"),
        };
        match (&expect, &reason) {
            (None, LostReason::Rejected(_) | LostReason::Handshake(_)) => {}
            (Some((true, resp)), LostReason::Rejected(r)) => {
                assert!(!resp.accepted);
                assert_eq!(*r, resp.rejected_reason);
            }
            (Some((false, _)), LostReason::Handshake(_)) => {}
            (e, r) => panic!("dialer lost with {r:?} for {e:?}"),
        }
    }
    d.node.log.clear();
    d.go_on(inp);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    if mode & 1 == 0 {
        let local = HOSTS[usize::from(mode >> 1) % HOSTS.len()];
        acceptor(&mut inp, local);
    } else {
        dialer(&mut inp);
    }
});
