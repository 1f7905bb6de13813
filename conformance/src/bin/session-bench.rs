//! `session-bench`: two sessions driven against each other in memory, next to the codec
//! floor they cannot beat, and the heap each open stream costs.
//!
//! ```text
//! cargo run --release -p grid-conformance --bin session-bench [-- --seconds N] [--json]
//! ```
//!
//! A dialer and an acceptor [`Session`] shake hands in memory and then pass every
//! message to each other through [`Session::poll_transmit`] (into one reused buffer)
//! and [`Session::handle_message`], on a virtual clock that moves 1 µs per round (timers
//! due are fired as a driver would; nothing sleeps). Everything runs on one thread.
//!
//! Workloads, all with 512-byte payloads:
//!
//! - single requests: `request` → transmit → `handle_message` → `Event::Request` →
//!   `respond` → transmit → `handle_message` → `Event::Response`; one call at a time,
//!   and 64 calls in flight (their frames leave merged in `OpMerged` containers). Each
//!   request and each response counts as a frame.
//! - stream items: one stream whose handler has an out capacity of 256; the server
//!   `send`s items until it has no credit, the client `read`s them all, which queues
//!   one unblock frame per item. Item frames are counted; unblock frames are reported
//!   separately (one per item, carried in the same time). Run with one item in flight
//!   and with the whole window of 256.
//!
//! Each figure is the fastest of 5 runs sharing the `N` seconds (default 2), so that
//! other work on the machine disturbs it less. `--frames N` runs a fixed amount of work
//! instead (N counted frames per figure), for instruction counts that no other load
//! disturbs:
//!
//! ```text
//! valgrind --tool=callgrind target/release/session-bench --frames 50000 --only "tls single"
//! callgrind_annotate --inclusive=yes callgrind.out.* | grep session_bench::
//! ```
//!
//! (`singles`, `items` and `floor_round` are never inlined, so that they show there.)
//!
//! Each workload has a floor measured in the same run: the codec alone encoding and
//! decoding exactly the messages the sessions exchanged in one round (same frames, same
//! containers, same bytes), so `session / floor` is what the state machines add on top
//! of the wire format. Both kinds of link are measured: plain-HTTP hosts, whose frames
//! carry a CRC (an XXH3 pass to write and one to check), and TLS hosts, whose frames do
//! not.
//!
//! Memory: N idle streams are opened (in batches of 64, as a driver would) and each
//! session's heap is measured by dropping it and counting the bytes the allocator gets
//! back, minus the same figure for a session with no stream. The counting allocator
//! is `stats_alloc`'s instrumented system allocator, installed as this binary's global
//! allocator: the workspace forbids `unsafe_code`, which a hand-written `GlobalAlloc`
//! would need. It adds two uncontended atomic additions to every allocation and every
//! free, in the session figures and the floors alike; `allocs/frame` shows how many
//! there are.

use std::alloc::System;
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use grid_conformance::bench_args::Args;
use grid_core::codec::{self, Frame, Message, Time};
use grid_core::proto::{Cluster, Event, HandlerKey, HandlerKind, MuxKey, Read, SendError, Session};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PAYLOAD_LEN: usize = 512;
/// Single requests in flight in the batched workload.
const BATCH: usize = 64;
/// The item stream's out capacity.
const WINDOW: u32 = 256;
/// Streams opened per round in the memory figure.
const OPEN_BATCH: usize = 64;
/// Virtual time per round.
const STEP: Duration = Duration::from_micros(1);
/// Runs per figure; the fastest is reported.
const RUNS: u32 = 5;
const STREAM_COUNTS: [usize; 2] = [10_000, 100_000];
/// The issue's targets.
const TARGET_FPS: f64 = 5e6;
const TARGET_BYTES_PER_STREAM: f64 = 1024.0;

const SINGLE: HandlerKey = HandlerKey::new(1);
/// Server → client items only, out capacity [`WINDOW`].
const ITEMS: HandlerKey = HandlerKey::new(2);
/// The idle streams of the memory figure: input and output.
const IDLE: HandlerKey = HandlerKey::new(3);

const USAGE: &str = "usage: session-bench [--seconds N | --frames N] [--json] [--only TEXT]";

/// How long each figure runs.
#[derive(Clone, Copy, Debug)]
enum Budget {
    /// This long in all (the fastest of [`RUNS`] runs is reported).
    Time(Duration),
    /// This many counted frames in all, whatever the time: the same work in every run,
    /// for instruction counts under callgrind.
    Frames(u64),
}

fn main() -> ExitCode {
    match options() {
        Ok((budget, json, only)) => {
            run(budget, json, only.as_deref());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The budget, `--json` and `--only` the arguments ask for.
fn options() -> Result<(Budget, bool, Option<String>), ExitCode> {
    let mut a = Args::from_env("session-bench", USAGE);
    let mut budget = Budget::Time(Duration::from_secs(2));
    let mut json = false;
    let mut only = None;
    while let Some(arg) = a.next() {
        match arg.as_str() {
            "--seconds" => budget = Budget::Time(Duration::from_secs_f64(a.seconds(&arg)?)),
            "--frames" => budget = Budget::Frames(a.count(&arg)?),
            "--json" => json = true,
            // Runs only the figures whose label ("crc single requests, 1 in flight",
            // "tls memory", ...) contains TEXT: for profiling one workload.
            "--only" => only = Some(a.text(&arg)?),
            "-h" | "--help" => return Err(a.help()),
            other => return Err(a.unknown(other)),
        }
    }
    Ok((budget, json, only))
}

// --------------------------------------------------------------------------------
// The pair.

/// Which kind of link: it decides whether frames carry a CRC.
#[derive(Clone, Copy, Debug)]
enum Link {
    /// Plain-HTTP hosts: every frame has a CRC trailer.
    Crc,
    /// TLS hosts on both ends: no CRC.
    Tls,
}

impl Link {
    fn hosts(self) -> [&'static str; 2] {
        match self {
            Link::Crc => ["http://node-a:9000", "http://node-b:9000"],
            Link::Tls => ["https://node-a:9000", "https://node-b:9000"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Link::Crc => "crc",
            Link::Tls => "tls",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Link::Crc => "plain-HTTP hosts: every frame carries a CRC",
            Link::Tls => "TLS hosts: no CRC",
        }
    }
}

fn cluster(host: &str, id: u8, hosts: &[&str]) -> Arc<Cluster> {
    let mut c = Cluster::new(host, [id; 16], hosts);
    let r = &mut c.registry;
    r.register(SINGLE, HandlerKind::Single).expect("register");
    r.register(ITEMS, HandlerKind::stream(0, WINDOW))
        .expect("register");
    r.register(IDLE, HandlerKind::stream(16, 16))
        .expect("register");
    Arc::new(c)
}

/// A dialer (the client of every call) and an acceptor (the server), connected.
struct Pair {
    client: Session,
    server: Session,
    now: Instant,
    buf: BytesMut,
    /// When set, every message exchanged is kept here (for the floors).
    record: Option<Vec<Bytes>>,
    /// Kept so that dropping a session frees only the session's own state.
    _clusters: [Arc<Cluster>; 2],
}

fn transmit(
    from: &mut Session,
    to: &mut Session,
    now: Instant,
    buf: &mut BytesMut,
    record: &mut Option<Vec<Bytes>>,
) {
    while from.poll_transmit(buf).is_some() {
        let msg = buf.split().freeze();
        if let Some(r) = record {
            r.push(msg.clone());
        }
        // Once the message and its slices are dropped, the next transmit reuses the
        // buffer's allocation.
        to.handle_message(now, msg);
    }
}

impl Pair {
    fn new(link: Link) -> Pair {
        let hosts = link.hosts();
        let (dialer, acceptor) = if codec::should_dial(hosts[0], hosts[1]) {
            (hosts[0], hosts[1])
        } else {
            (hosts[1], hosts[0])
        };
        let (cc, sc) = (cluster(dialer, 1, &hosts), cluster(acceptor, 2, &hosts));
        let now = Instant::now();
        let wall = Time {
            secs: 1_700_000_000,
            nanos: 0,
        };
        let mut p = Pair {
            client: Session::dialer(cc.clone(), acceptor, "token", now, wall),
            server: Session::acceptor(sc.clone(), now, wall),
            now,
            buf: BytesMut::with_capacity(64 * 1024),
            record: None,
            _clusters: [cc, sc],
        };
        p.send_to_server();
        p.send_to_client();
        assert!(p.client.is_connected() && p.server.is_connected());
        p.drain_events();
        p
    }

    fn send_to_server(&mut self) {
        transmit(
            &mut self.client,
            &mut self.server,
            self.now,
            &mut self.buf,
            &mut self.record,
        );
    }

    fn send_to_client(&mut self) {
        transmit(
            &mut self.server,
            &mut self.client,
            self.now,
            &mut self.buf,
            &mut self.record,
        );
    }

    fn drain_events(&mut self) {
        while self.client.poll_event().is_some() {}
        while self.server.poll_event().is_some() {}
    }

    /// Moves the virtual clock by [`STEP`] and fires the timers now due (connection
    /// pings, stream liveness), as a driver would.
    fn tick(&mut self) {
        self.now += STEP;
        for s in [&mut self.client, &mut self.server] {
            if s.poll_timeout().is_some_and(|t| t <= self.now) {
                s.handle_timeout(self.now);
            }
        }
    }

    /// Opens a stream to `handler` and waits for its ack: `(client key, server key)`.
    fn open(&mut self, handler: HandlerKey) -> (MuxKey, MuxKey) {
        let id = self
            .client
            .open_stream(self.now, handler, None, None)
            .expect("open stream");
        self.send_to_server();
        let mut opened = false;
        while let Some(ev) = self.server.poll_event() {
            opened |= matches!(ev, Event::StreamOpened { mux_id, .. } if mux_id == id);
        }
        assert!(opened, "stream {id} not opened");
        self.send_to_client();
        while self.client.poll_event().is_some() {}
        (MuxKey::outgoing(id), MuxKey::incoming(id))
    }

    /// The heap each session owns, measured by dropping it: `(client, server)`.
    fn into_heap_sizes(self) -> (usize, usize) {
        let Pair { client, server, .. } = self;
        let before = live_bytes();
        drop(server);
        let server_bytes = before - live_bytes();
        let before = live_bytes();
        drop(client);
        let client_bytes = before - live_bytes();
        (client_bytes, server_bytes)
    }
}

// --------------------------------------------------------------------------------
// Workloads: one round each; they return the frames counted.

/// `batch` single requests: every request and every response is a frame.
///
/// (Never inlined, here and below, so that profiles and instruction counts name it.)
#[inline(never)]
fn singles(p: &mut Pair, batch: usize, payload: &Bytes) -> u64 {
    p.tick();
    for _ in 0..batch {
        p.client
            .request(p.now, SINGLE, payload.clone(), None)
            .expect("request");
    }
    p.send_to_server();
    while let Some(ev) = p.server.poll_event() {
        if let Event::Request {
            mux_id, payload, ..
        } = ev
        {
            // An echo handler: the response is the request's bytes.
            assert!(p.server.respond(p.now, mux_id, Ok(payload)));
        }
    }
    p.send_to_client();
    let mut got = 0;
    while let Some(ev) = p.client.poll_event() {
        if let Event::Response { result, .. } = ev {
            black_box(result.expect("response"));
            got += 1;
        }
    }
    assert_eq!(got, batch, "responses");
    2 * batch as u64
}

/// Up to `window` items server → client, each read by the client (which sends an
/// unblock per item). Returns the item frames.
#[inline(never)]
fn items(p: &mut Pair, keys: (MuxKey, MuxKey), window: u32, item: &Bytes) -> u64 {
    let (client_key, server_key) = keys;
    p.tick();
    let mut sent = 0u64;
    while sent < window as u64 {
        match p.server.send(p.now, server_key, item.clone()) {
            Ok(()) => sent += 1,
            Err(SendError::Blocked) => break,
            Err(e) => panic!("send: {e:?}"),
        }
    }
    p.send_to_client();
    while p.client.poll_event().is_some() {}
    let mut read = 0u64;
    loop {
        match p.client.read(p.now, client_key) {
            Read::Item(b) => {
                black_box(b);
                read += 1;
            }
            Read::Pending => break,
            Read::End(r) => panic!("stream ended: {r:?}"),
        }
    }
    p.send_to_server();
    while p.server.poll_event().is_some() {}
    assert_eq!(sent, read, "items read");
    sent
}

// --------------------------------------------------------------------------------
// Measuring.

fn live_bytes() -> usize {
    let s = GLOBAL.stats();
    s.bytes_allocated - s.bytes_deallocated
}

fn allocations() -> usize {
    let s = GLOBAL.stats();
    s.allocations + s.reallocations
}

#[derive(Clone, Copy, Debug)]
struct Figure {
    /// Counted frames per second.
    fps: f64,
    /// Allocations (and reallocations) per counted frame.
    allocs: f64,
}

impl Figure {
    fn ns(self) -> f64 {
        1e9 / self.fps
    }
}

/// Runs `round` (which returns the frames it counted) for `dur` in all: [`RUNS`] runs,
/// of which the fastest is reported (the machine is shared: the best run is the one
/// the other work disturbed least).
fn measure(dur: Budget, mut round: impl FnMut() -> u64) -> Figure {
    // Warm caches, branch predictors and the sessions' buffers first.
    match dur {
        Budget::Time(d) => {
            let warm = Instant::now();
            while warm.elapsed() < d / 20 {
                round();
            }
        }
        Budget::Frames(n) => {
            let mut frames = 0;
            while frames < n / 20 {
                frames += round();
            }
        }
    }
    let (mut best, mut frames_all, mut allocs_all) = (0f64, 0u64, 0usize);
    for _ in 0..RUNS {
        let allocs0 = allocations();
        let start = Instant::now();
        let (mut frames, mut check) = (0u64, 0u64);
        loop {
            frames += round();
            // Read the clock about every thousand frames, not every round.
            if frames >= check {
                let elapsed = start.elapsed();
                let done = match dur {
                    Budget::Time(d) => elapsed >= d / RUNS,
                    Budget::Frames(n) => frames >= n / RUNS as u64,
                };
                if done {
                    best = best.max(frames as f64 / elapsed.as_secs_f64());
                    break;
                }
                check = frames + 1024;
            }
        }
        frames_all += frames;
        allocs_all += allocations() - allocs0;
    }
    Figure {
        fps: best,
        allocs: allocs_all as f64 / frames_all as f64,
    }
}

/// A message as the sessions sent it, decoded, to be encoded and decoded again.
enum Captured {
    Single(Frame),
    Merged(Vec<Frame>),
}

/// Runs one round of `round` with recording on; returns the messages exchanged.
fn capture(p: &mut Pair, round: impl FnOnce(&mut Pair) -> u64) -> (Vec<Captured>, u64) {
    p.record = Some(Vec::new());
    let counted = round(p);
    let wire = p.record.take().expect("recording");
    let messages = wire
        .iter()
        .map(
            |m| match codec::decode(m, codec::DEFAULT_MAX_FRAME_SIZE).expect("decodes") {
                Message::Frame(f) => Captured::Single(f),
                Message::Merged(inner) => {
                    Captured::Merged(inner.collect::<Result<_, _>>().expect("decodes"))
                }
            },
        )
        .collect::<Vec<_>>();
    // The floor writes exactly the bytes the sessions wrote.
    let mut buf = BytesMut::new();
    for (m, w) in messages.iter().zip(&wire) {
        buf.clear();
        encode_captured(m, &mut buf);
        assert_eq!(
            &buf[..],
            &w[..],
            "floor encoding differs from the session's"
        );
    }
    (messages, counted)
}

fn encode_captured(m: &Captured, buf: &mut BytesMut) {
    match m {
        Captured::Single(f) => f.encode(buf),
        Captured::Merged(frames) => codec::encode_merged(frames, buf),
    }
}

/// The floor: the codec alone encoding and decoding `messages`, `counted` frames per
/// round (as the session's round counted them).
fn floor(dur: Budget, messages: &[Captured], counted: u64) -> Figure {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    measure(dur, || floor_round(messages, &mut buf, counted))
}

/// One round of the floor.
#[inline(never)]
fn floor_round(messages: &[Captured], buf: &mut BytesMut, counted: u64) -> u64 {
    for m in messages {
        encode_captured(black_box(m), buf);
        let wire = buf.split().freeze();
        match codec::decode(&wire, codec::DEFAULT_MAX_FRAME_SIZE) {
            Ok(Message::Frame(f)) => {
                black_box(f);
            }
            Ok(Message::Merged(inner)) => {
                for f in inner {
                    black_box(f.expect("decodes"));
                }
            }
            Err(e) => panic!("decode: {e}"),
        }
    }
    counted
}

// --------------------------------------------------------------------------------
// The run.

struct Row {
    link: Link,
    name: &'static str,
    /// What a counted frame is.
    unit: &'static str,
    session: Figure,
    floor: Figure,
    /// Frames sent alongside each counted one and not counted (a stream's unblocks).
    uncounted_per_frame: f64,
}

struct Memory {
    link: Link,
    streams: usize,
    client_per_stream: f64,
    server_per_stream: f64,
}

fn run(dur: Budget, as_json: bool, only: Option<&str>) {
    let wanted =
        |link: Link, name: &str| only.is_none_or(|t| format!("{} {name}", link.name()).contains(t));
    let payload: Bytes = (0..PAYLOAD_LEN)
        .map(|i| (i * 7) as u8)
        .collect::<Vec<u8>>()
        .into();
    if !as_json {
        let per_figure = match dur {
            Budget::Time(d) => format!("{:.1} s", d.as_secs_f64()),
            Budget::Frames(n) => format!("{n} frames"),
        };
        println!(
            "session-bench: two sessions in memory, one thread, {PAYLOAD_LEN}-byte payloads, \
             {per_figure} per figure"
        );
    }
    let mut rows = Vec::new();
    for link in [Link::Crc, Link::Tls] {
        for (name, batch) in [
            ("single requests, 1 in flight", 1),
            ("single requests, 64 in flight (merged)", BATCH),
        ] {
            if !wanted(link, name) {
                continue;
            }
            let mut p = Pair::new(link);
            let session = measure(dur, || singles(&mut p, batch, &payload));
            let (messages, counted) = capture(&mut p, |p| singles(p, batch, &payload));
            rows.push(Row {
                link,
                name,
                unit: "request or response",
                session,
                floor: floor(dur, &messages, counted),
                uncounted_per_frame: 0.0,
            });
        }
        for (name, window) in [
            ("stream items, 1 in flight", 1),
            ("stream items, window of 256 (merged)", WINDOW),
        ] {
            if !wanted(link, name) {
                continue;
            }
            let mut p = Pair::new(link);
            let keys = p.open(ITEMS);
            let session = measure(dur, || items(&mut p, keys, window, &payload));
            let (messages, counted) = capture(&mut p, |p| items(p, keys, window, &payload));
            rows.push(Row {
                link,
                name,
                unit: "item (its unblock included)",
                session,
                floor: floor(dur, &messages, counted),
                uncounted_per_frame: 1.0,
            });
        }
    }

    let mut memory = Vec::new();
    for link in [Link::Crc] {
        if !wanted(link, "memory") {
            continue;
        }
        let base = idle_streams(link, 0);
        for n in STREAM_COUNTS {
            let (c, s) = idle_streams(link, n);
            memory.push(Memory {
                link,
                streams: n,
                client_per_stream: (c as f64 - base.0 as f64) / n as f64,
                server_per_stream: (s as f64 - base.1 as f64) / n as f64,
            });
        }
    }

    if as_json {
        print_json(dur, &rows, &memory);
    } else {
        print_table(&rows, &memory);
    }
}

/// The heap of a client and a server session with `n` idle streams open between them.
///
/// Streams open in batches of [`OPEN_BATCH`]; the baseline (`n == 0`) opens and cancels
/// one batch, so that buffers sized by a batch are in both figures and only the
/// per-stream state is in the difference.
fn idle_streams(link: Link, n: usize) -> (usize, usize) {
    let mut p = Pair::new(link);
    let open = |p: &mut Pair, count: usize| -> Vec<u64> {
        p.tick();
        let ids: Vec<u64> = (0..count)
            .map(|_| {
                p.client
                    .open_stream(p.now, IDLE, None, None)
                    .expect("open stream")
            })
            .collect();
        p.send_to_server();
        p.send_to_client();
        p.drain_events();
        ids
    };
    if n == 0 {
        for id in open(&mut p, OPEN_BATCH) {
            p.client.cancel(id);
        }
        p.send_to_server();
        p.drain_events();
        assert_eq!(p.server.stats().incoming_muxes, 0);
    }
    let mut left = n;
    while left > 0 {
        let count = left.min(OPEN_BATCH);
        drop(open(&mut p, count));
        left -= count;
    }
    assert_eq!(p.client.stats().outgoing_muxes, n);
    assert_eq!(p.server.stats().incoming_muxes, n);
    p.into_heap_sizes()
}

// --------------------------------------------------------------------------------
// Output.

fn print_table(rows: &[Row], memory: &[Memory]) {
    let mut last = None;
    for r in rows {
        if last.map(|l: Link| l.name()) != Some(r.link.name()) {
            println!();
            println!("link: {}", r.link.describe());
            println!(
                "  {:<40} {:>12} {:>9} {:>8} {:>12} {:>9} {:>9}",
                "workload", "frames/s", "ns/frame", "allocs", "floor fr/s", "floor ns", "x floor"
            );
            last = Some(r.link);
        }
        println!(
            "  {:<40} {:>12} {:>9.1} {:>8.2} {:>12} {:>9.1} {:>8.2}x",
            r.name,
            thousands(r.session.fps),
            r.session.ns(),
            r.session.allocs,
            thousands(r.floor.fps),
            r.floor.ns(),
            r.session.ns() / r.floor.ns()
        );
        if r.uncounted_per_frame > 0.0 {
            println!(
                "  {:<40} {:>12}   (one per item read; their time is in the item figures)",
                "  + unblock frames/s",
                thousands(r.session.fps * r.uncounted_per_frame)
            );
        }
    }
    println!();
    println!("  frames/s: requests + responses, or stream items, per second on one thread");
    println!("  allocs: heap allocations per counted frame (both sessions, the bench's loop)");
    println!("  floor: the codec alone encoding + decoding the same messages (same bytes)");
    println!();
    println!("memory per open idle stream (heap each session owns, minus its heap with none):");
    for m in memory {
        println!(
            "  {:>7} streams: client {:>7.1} B/stream, server {:>7.1} B/stream, both {:>7.1} B",
            m.streams,
            m.client_per_stream,
            m.server_per_stream,
            m.client_per_stream + m.server_per_stream
        );
    }
    println!();
    println!(
        "targets: {} frames/s per core; at most {} B of session state per open stream",
        thousands(TARGET_FPS),
        TARGET_BYTES_PER_STREAM
    );
    for r in rows {
        let verdict = if r.session.fps >= TARGET_FPS {
            "met".to_owned()
        } else {
            format!(
                "missed: {:.0}% of the target",
                100.0 * r.session.fps / TARGET_FPS
            )
        };
        println!(
            "  {:<4} {:<40} {:>12} frames/s  {verdict}",
            r.link.name(),
            r.name,
            thousands(r.session.fps)
        );
    }
    for m in memory {
        let worst = m.client_per_stream.max(m.server_per_stream);
        let verdict = if worst <= TARGET_BYTES_PER_STREAM {
            "met"
        } else {
            "missed"
        };
        println!(
            "  {:>7} streams: at most {:.0} B per stream per side  {verdict}",
            m.streams, worst
        );
    }
}

fn print_json(dur: Budget, rows: &[Row], memory: &[Memory]) {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "link": r.link.name(),
                "workload": r.name,
                "frame": r.unit,
                "frames_per_sec": r.session.fps,
                "ns_per_frame": r.session.ns(),
                "allocs_per_frame": r.session.allocs,
                "uncounted_frames_per_sec": r.session.fps * r.uncounted_per_frame,
                "floor_frames_per_sec": r.floor.fps,
                "floor_ns_per_frame": r.floor.ns(),
                "floor_allocs_per_frame": r.floor.allocs,
                "session_over_floor": r.session.ns() / r.floor.ns(),
                "target_met": r.session.fps >= TARGET_FPS,
            })
        })
        .collect();
    let memory: Vec<_> = memory
        .iter()
        .map(|m| {
            json!({
                "link": m.link.name(),
                "streams": m.streams,
                "client_bytes_per_stream": m.client_per_stream,
                "server_bytes_per_stream": m.server_per_stream,
                "target_met": m.client_per_stream.max(m.server_per_stream)
                    <= TARGET_BYTES_PER_STREAM,
            })
        })
        .collect();
    let out = json!({
        "seconds_per_figure": match dur {
            Budget::Time(d) => Some(d.as_secs_f64()),
            Budget::Frames(_) => None,
        },
        "frames_per_figure": match dur {
            Budget::Time(_) => None,
            Budget::Frames(n) => Some(n),
        },
        "payload_len": PAYLOAD_LEN,
        "target_frames_per_sec": TARGET_FPS,
        "target_bytes_per_stream": TARGET_BYTES_PER_STREAM,
        "throughput": rows,
        "memory": memory,
    });
    println!("{out}");
}

/// `n` rounded, with thousands separators.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
