//! `grid-bench`: Grid's throughput, latency and memory over real loopback sockets, next
//! to floors measured in the same run.
//!
//! ```text
//! cargo run --release -p grid-conformance --bin grid-bench -- \
//!     [--seconds N] [--only single,streams,typed,cluster,memory,runtimes]
//!     [--runtimes tokio,async-std,smol] [--tcp-congestion NAME] [--json]
//! ```
//!
//! Every figure runs for `N` seconds (default 2) after a short warm-up, in one process:
//! both nodes (or all of them) and the callers share the runtime, as do the floors.
//!
//! * **single**: 512-byte echo from node 0 to node 1 over their one link, at 1, 16 and
//!   128 concurrent callers: requests per second, p50 and p99 latency. The floor is a
//!   minimal request-ID multiplexer on the same WebSocket library (async-tungstenite)
//!   over the runtime's TCP: each request is one binary message `[8-byte id][payload]`,
//!   the server runs each request in its own task (as any multiplexer with async
//!   handlers must) and echoes, the client matches responses to waiters by ID, and each
//!   side has one writer task that feeds every queued message and flushes once.
//! * **streams**: one way, 512-byte items (items/s) and 64 KiB items (GB/s), with out
//!   capacity 1 and 256; and a two-way echo stream (in and out capacity 256). The floor
//!   sends the same bytes as bare WebSocket binary messages (flushing only when it has
//!   to wait), and for the echo, echoes them back with 256 messages in flight. One-way
//!   items flow from the WebSocket server to its client in both, so neither masks them.
//!   The capacity-256 figures are also given against a windowed floor, which keeps a
//!   Grid stream's flow control: it has as many messages in flight as the stream's window
//!   (16 of 64 KiB or 256 of 512 bytes, under the default `stream_window_bytes`), and its
//!   reader answers each quarter window with a small message worth that many credits.
//! * **typed**: the single-request workload with a small struct through the typed layer
//!   (msgpack), against raw bytes of the same encoded size.
//! * **cluster**: 2, 4 and 8 nodes; 32 callers, each call from a random node to another.
//!   The floor is the single-request floor's multiplexer on every pair of nodes, a
//!   connection for each direction (its calls go one way), with the same callers.
//! * **memory**: 100,000 idle streams (handlers waiting for their cancellation) on one
//!   link; resident memory before and after, per stream (both ends: caller's and
//!   handler's session and driver state, the handler's task). The floor holds the least
//!   a hand-written multiplexer would: for each stream, the caller's channel for its
//!   items, routed by ID, and a server task waiting for its cancellation. Each is
//!   measured in a fresh process (the benchmark runs itself again), so neither reuses
//!   the other's pages.
//! * **runtimes**: async-std's and smol's single-request throughput as a ratio to
//!   tokio's (from the single figures).
//!
//! tokio runs multi-threaded with 2 workers; async-std with its default pool; smol on its
//! global executor (`SMOL_THREADS`, default 1). `single` and `streams` run on all three,
//! the other sections on tokio. The machine is shared and noisy: read the ratios, which
//! compare figures measured back to back in the same run.
//!
//! `--tcp-congestion NAME` sets the TCP congestion control of every listening socket
//! the benchmark opens, Grid's nodes and the floors alike, so the connections they
//! accept (which carry the one-way stream items) use it; without it they use the
//! system's. On loopback, BBR's pacing follows the rate a connection has delivered: a
//! long-lived link (Grid's) stays paced well below what the CPU can move, where a
//! fresh connection (a floor's) sometimes escapes it (see `conformance/BENCHMARKS.md`).

use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use bytes::{BufMut, Bytes, BytesMut};
use futures_channel::{mpsc, oneshot};
use futures_util::{SinkExt, StreamExt};
use grid_conformance::bench_args::Args;
use grid_conformance::suite::bind;
use grid_core::driver::{
    BoxFuture, BoxIo, Connection, Manager, ManagerBuilder, RemoteError, Request, Runtime,
    StreamCtx, StreamOptions,
};
use grid_core::typed::SingleHandler;
use serde::{Deserialize, Serialize};

const USAGE: &str = "usage: grid-bench [--seconds N] \
     [--only single,streams,typed,cluster,memory,runtimes] \
     [--runtimes tokio,async-std,smol] [--callers 1,16,128] [--repeat N] \
     [--tcp-congestion NAME] [--json]";
const SECTIONS: [&str; 6] = [
    "single", "streams", "typed", "cluster", "memory", "runtimes",
];

const ECHO: u8 = 1;
const PUSH_1: u8 = 2;
const PUSH_256: u8 = 3;
/// The large capacity of the stream figures: `PUSH_256`'s out capacity, the echo's in
/// and out capacities, the window the windowed floor keeps for `PUSH_256` and the echo
/// floor's messages in flight.
const LARGE_CAPACITY: u32 = 256;
const ECHO_STREAM: u8 = 4;
const IDLE: u8 = 5;
const TYPED: u8 = 6;

/// Concurrent callers in the cluster figures.
const CLUSTER_CALLERS: usize = 32;

const SMALL: usize = 512;
const LARGE: usize = 64 * 1024;
const CALLERS: [usize; 3] = [1, 16, 128];
const IDLE_STREAMS: usize = 100_000;

// ---------------------------------------------------------------------------------------
// Runtimes

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rt {
    Tokio,
    AsyncStd,
    Smol,
}

impl Rt {
    const ALL: [Rt; 3] = [Rt::Tokio, Rt::AsyncStd, Rt::Smol];

    fn name(self) -> &'static str {
        match self {
            Rt::Tokio => "tokio",
            Rt::AsyncStd => "async-std",
            Rt::Smol => "smol",
        }
    }

    /// Runs `f` to completion with this runtime's Grid binding.
    fn run<F: Future>(self, f: impl FnOnce(Arc<dyn Runtime>) -> F) -> F::Output {
        match self {
            Rt::Tokio => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let out = rt.block_on(async { f(grid_tokio::runtime()).await });
                rt.shutdown_timeout(Duration::from_secs(1));
                out
            }
            Rt::AsyncStd => async_std::task::block_on(f(grid_async_std::runtime())),
            Rt::Smol => smol::block_on(f(grid_async_std::smol_runtime())),
        }
    }
}

/// Runs `f` as a task on `rt` (so that it runs where the nodes' tasks run) at once;
/// the returned future waits for its result.
fn on<T: Send + 'static>(
    rt: &Arc<dyn Runtime>,
    f: impl Future<Output = T> + Send + 'static,
) -> BoxFuture<'static, T> {
    let (tx, rx) = oneshot::channel();
    rt.spawn(Box::pin(async move {
        let _ = tx.send(f.await);
    }));
    Box::pin(async move { rx.await.expect("benchmark task finished") })
}

async fn sleep(rt: &Arc<dyn Runtime>, d: Duration) {
    rt.sleep_until(Instant::now() + d).await
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Clone, Copy, Debug, Serialize)]
enum Goal {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
}

impl Goal {
    /// Whether `ratio` meets `goal`; `None` when either is missing.
    fn met(goal: Option<Goal>, ratio: Option<f64>) -> Option<bool> {
        match (ratio, goal) {
            (Some(r), Some(Goal::AtLeast(t))) => Some(r >= t),
            (Some(r), Some(Goal::AtMost(t))) => Some(r <= t),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    section: &'static str,
    runtime: &'static str,
    figure: String,
    unit: &'static str,
    grid: f64,
    /// What Grid is compared with: the floor, or the reference figure.
    floor: Option<f64>,
    ratio: Option<f64>,
    target: Option<Goal>,
    met: Option<bool>,
    /// In a median row: each round's ratio, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    round_ratios: Vec<f64>,
}

struct Report {
    json: bool,
    rows: Vec<Row>,
    header_printed: bool,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        section: &'static str,
        rt: Rt,
        figure: String,
        unit: &'static str,
        grid: f64,
        floor: Option<f64>,
        target: Option<Goal>,
    ) {
        let ratio = floor.map(|f| grid / f);
        let met = Goal::met(target, ratio);
        let row = Row {
            section,
            runtime: rt.name(),
            figure,
            unit,
            grid,
            floor,
            ratio,
            target,
            met,
            round_ratios: Vec::new(),
        };
        if !self.json {
            if !self.header_printed {
                self.header_printed = true;
                print_header();
            }
            println!("{}", line(&row));
        }
        self.rows.push(row);
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn print_header() {
    println!(
        "{:<9} {:<9} {:<34} {:>12} {:>12} {:>7}  {:<8} target",
        "section", "runtime", "figure", "grid", "floor/ref", "ratio", "unit"
    );
}

fn line(r: &Row) -> String {
    let target = match (r.target, r.met) {
        (Some(Goal::AtLeast(t)), Some(m)) => {
            format!(">= {t}x {}", if m { "met" } else { "MISSED" })
        }
        (Some(Goal::AtMost(t)), Some(m)) => {
            format!("<= {t}x {}", if m { "met" } else { "MISSED" })
        }
        _ => String::new(),
    };
    // A median's spread: its rounds' ratios, lowest to highest.
    let rounds = match r.round_ratios.iter().copied().reduce(f64::min) {
        Some(lo) if r.round_ratios.len() > 1 => {
            let hi = r.round_ratios.iter().copied().fold(lo, f64::max);
            format!("rounds {lo:.2}-{hi:.2}x  ")
        }
        _ => String::new(),
    };
    format!(
        "{:<9} {:<9} {:<34} {:>12} {:>12} {:>7}  {:<8} {rounds}{}",
        r.section,
        r.runtime,
        r.figure,
        num(r.grid),
        r.floor.map(num).unwrap_or_default(),
        r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
        r.unit,
        target
    )
}

// ---------------------------------------------------------------------------------------
// Grid clusters

async fn push_handler(ctx: StreamCtx) -> Result<(), RemoteError> {
    let p = ctx.payload.clone().unwrap_or_default();
    let len = u32::from_le_bytes(p[..4].try_into().expect("4-byte size")) as usize;
    let item = Bytes::from(vec![0x5a; len]);
    while ctx.output.send(item.clone()).await.is_ok() {}
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Small {
    id: u64,
    bucket: String,
    object: String,
    size: u64,
    versioned: bool,
}

const TYPED_HANDLER: SingleHandler<Small, Small> = SingleHandler::new(TYPED);

fn register(b: ManagerBuilder, started: &Arc<AtomicUsize>) -> ManagerBuilder {
    let started = started.clone();
    let cap = |in_capacity, out_capacity| StreamOptions {
        in_capacity,
        out_capacity,
    };
    let b = b
        .single(ECHO, |r: Request| async move { Ok(r.payload) })
        .and_then(|b| b.stream(PUSH_1, cap(0, 1), push_handler))
        .and_then(|b| b.stream(PUSH_256, cap(0, LARGE_CAPACITY), push_handler))
        .and_then(|b| {
            b.stream(
                ECHO_STREAM,
                cap(LARGE_CAPACITY, LARGE_CAPACITY),
                |mut ctx: StreamCtx| async move {
                    let mut input = ctx.input.take().expect("echo takes input");
                    while let Some(item) = input.next().await {
                        if ctx.output.send(item).await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                },
            )
        })
        .and_then(|b| {
            b.stream(IDLE, cap(0, 1), move |ctx: StreamCtx| {
                started.fetch_add(1, Ordering::Relaxed);
                async move {
                    ctx.cancelled.await;
                    Ok(())
                }
            })
        })
        .expect("register");
    TYPED_HANDLER
        .register(b, |s: Small| async move { Ok(s) })
        .expect("register typed")
}

struct Cluster {
    nodes: Vec<Manager>,
    hosts: Vec<String>,
    started: Arc<AtomicUsize>,
}

impl Cluster {
    async fn start(rt: &Arc<dyn Runtime>, n: usize) -> Cluster {
        let (listeners, hosts) = bind(n);
        listeners.iter().for_each(congestion_control);
        let started = Arc::new(AtomicUsize::new(0));
        let nodes: Vec<Manager> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                register(Manager::builder(hosts[i].clone(), &hosts), &started)
                    .listener(l)
                    .start(rt.clone())
                    .expect("start")
            })
            .collect();
        let c = Cluster {
            nodes,
            hosts,
            started,
        };
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    c.conn(i, j).wait_connected().await;
                }
            }
        }
        c
    }

    fn conn(&self, from: usize, to: usize) -> Connection {
        self.nodes[from]
            .connection(&self.hosts[to])
            .expect("peer in cluster")
    }

    /// The connection from the node of the first pair that dials: a stream it opens
    /// flows from the accepting side (the WebSocket server, whose frames are not
    /// masked) to the dialing side, as the floor's one-way messages do. Which node
    /// dials follows from the host strings, and so from the ports the run was given.
    fn dialers_conn(&self) -> Connection {
        let c = self.conn(0, 1);
        if c.dials() { c } else { self.conn(1, 0) }
    }

    async fn stop(self) {
        for n in &self.nodes {
            n.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The floor: a minimal request-ID multiplexer and bare WebSocket streams

type Ws = WebSocketStream<BoxIo>;
type WsTx = async_tungstenite::WebSocketSender<BoxIo>;
type WsRx = async_tungstenite::WebSocketReceiver<BoxIo>;

/// The congestion control `--tcp-congestion` asked for, if any.
static CONGESTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets `name` as the TCP congestion control of `l` (inherited by what it accepts).
#[cfg(target_os = "linux")]
fn set_congestion(l: &std::net::TcpListener, name: &str) -> std::io::Result<()> {
    socket2::SockRef::from(l).set_tcp_congestion(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn set_congestion(_: &std::net::TcpListener, _: &str) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Gives `l` the congestion control `--tcp-congestion` asked for, if any.
fn congestion_control(l: &std::net::TcpListener) {
    if let Some(name) = CONGESTION.get() {
        set_congestion(l, name).expect("checked when the options were read");
    }
}

/// The congestion control connections get where none is set: the system's default.
fn system_congestion() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A connected WebSocket pair over the runtime's TCP: (client, server).
async fn ws_pair(rt: &Arc<dyn Runtime>) -> (Ws, Ws) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    congestion_control(&l);
    let addr = l.local_addr().expect("local addr");
    l.set_nonblocking(true).expect("nonblocking");
    let l = rt.listener(l).expect("listener");
    let server = on(rt, async move {
        let (io, _) = l.accept().await.expect("accept");
        async_tungstenite::accept_async(io).await.expect("upgrade")
    });
    let io = rt.connect(addr.to_string()).await.expect("connect");
    let (client, _) = async_tungstenite::client_async(format!("ws://{addr}/floor"), io)
        .await
        .expect("upgrade");
    (client, server.await)
}

/// One writer per side: feeds every queued message, flushes once, closes at the end.
async fn ws_writer(mut tx: WsTx, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(m) = rx.next().await {
        if tx.feed(m).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            if tx.feed(m).await.is_err() {
                return;
            }
        }
        if tx.flush().await.is_err() {
            return;
        }
    }
    let _ = tx.close(None).await;
}

/// The floor's client: a request-ID multiplexer.
struct FloorClient {
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    out: mpsc::UnboundedSender<Message>,
}

impl FloorClient {
    async fn start(rt: &Arc<dyn Runtime>) -> Arc<FloorClient> {
        let (client, server) = ws_pair(rt).await;
        // Server: a task per request, responses through one writer.
        let (stx, srx) = server.split();
        let (sout, sout_rx) = mpsc::unbounded();
        rt.spawn(Box::pin(ws_writer(stx, sout_rx)));
        let rt2 = rt.clone();
        rt.spawn(Box::pin(floor_serve(rt2, srx, sout)));
        // Client.
        let (ctx, crx) = client.split();
        let (out, out_rx) = mpsc::unbounded();
        rt.spawn(Box::pin(ws_writer(ctx, out_rx)));
        let fc = Arc::new(FloorClient {
            next_id: AtomicU64::new(1),
            waiters: Mutex::new(HashMap::new()),
            out,
        });
        rt.spawn(Box::pin(floor_read(fc.clone(), crx)));
        fc
    }

    async fn call(&self, payload: Bytes) -> Bytes {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut m = BytesMut::with_capacity(8 + payload.len());
        m.put_u64_le(id);
        m.extend_from_slice(&payload);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters").insert(id, tx);
        self.out
            .unbounded_send(Message::Binary(m.freeze()))
            .expect("floor writer");
        rx.await.expect("floor response")
    }

    fn close(&self) {
        self.out.close_channel();
    }
}

async fn floor_read(fc: Arc<FloorClient>, mut rx: WsRx) {
    while let Some(Ok(m)) = rx.next().await {
        if let Message::Binary(b) = m {
            let id = u64::from_le_bytes(b[..8].try_into().expect("id"));
            let w = fc.waiters.lock().expect("waiters").remove(&id);
            if let Some(w) = w {
                let _ = w.send(b.slice(8..));
            }
        }
    }
}

async fn floor_serve(rt: Arc<dyn Runtime>, mut rx: WsRx, out: mpsc::UnboundedSender<Message>) {
    while let Some(Ok(m)) = rx.next().await {
        let b = match m {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let out = out.clone();
        rt.spawn(Box::pin(async move {
            let id = &b[..8];
            // The handler: an echo.
            let resp = b.slice(8..);
            let mut m = BytesMut::with_capacity(8 + resp.len());
            m.extend_from_slice(id);
            m.extend_from_slice(&resp);
            let _ = out.unbounded_send(Message::Binary(m.freeze()));
        }));
    }
}

/// Sends `item` as fast as the socket takes it until the peer goes away.
async fn floor_push(mut ws: Ws, item: Bytes) {
    loop {
        for _ in 0..32 {
            if ws.feed(Message::Binary(item.clone())).await.is_err() {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// The flow control of the floor with a stream's window: the sender has at most `items`
/// messages unanswered, and the reader answers each `batch` messages it reads with one
/// small message worth `batch` credits, as a Grid stream's reader gives credits back a
/// quarter window at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FloorWindow {
    items: usize,
    batch: usize,
}

impl FloorWindow {
    /// The window of a Grid stream with out capacity `capacity` and items of `len`
    /// bytes: as many items as fit in the default `stream_window_bytes`, at least one,
    /// at most the capacity.
    fn of_stream(capacity: u32, len: usize) -> FloorWindow {
        let bytes = grid_core::proto::Config::default().stream_window_bytes;
        let items = (bytes / len.max(1)).min(capacity as usize).max(1);
        FloorWindow {
            items,
            batch: (items / 4).max(1),
        }
    }

    /// Counts one message read into `unanswered`; true when a batch is complete and
    /// its credits go back (the count starts again).
    fn answer_after_read(self, unanswered: &mut usize) -> bool {
        *unanswered += 1;
        if *unanswered < self.batch {
            return false;
        }
        *unanswered = 0;
        true
    }

    /// The sender's credit at the start: the whole window.
    fn credit(self) -> FloorCredit {
        FloorCredit {
            left: self.items,
            batch: self.batch,
        }
    }
}

/// What the windowed floor's sender may still send.
#[derive(Debug)]
struct FloorCredit {
    left: usize,
    batch: usize,
}

impl FloorCredit {
    /// Spends a credit on one message; false when none is left.
    fn take(&mut self) -> bool {
        let some = self.left > 0;
        self.left -= usize::from(some);
        some
    }

    /// An answer from the reader: a batch of credits back.
    fn answered(&mut self) {
        self.left += self.batch;
    }
}

/// Sends `item` while it has credit from the peer, as [`FloorWindow`] lays out, until
/// the peer goes away. Credits come back as binary messages, each worth a batch.
async fn floor_push_windowed(ws: Ws, item: Bytes, w: FloorWindow, rt: Arc<dyn Runtime>) {
    let (mut tx, mut rx) = ws.split();
    let (answers, mut answered) = mpsc::unbounded::<()>();
    rt.spawn(Box::pin(async move {
        while let Some(Ok(_)) = rx.next().await {
            if answers.unbounded_send(()).is_err() {
                return;
            }
        }
    }));
    let mut credit = w.credit();
    let mut fed = 0;
    loop {
        while answered.try_recv().is_ok() {
            credit.answered();
        }
        let spent = credit.take();
        if !spent || fed == 32 {
            // Out of credit (or 32 messages fed): put what is buffered on the wire.
            fed = 0;
            if tx.flush().await.is_err() {
                return;
            }
        }
        if !spent {
            if answered.next().await.is_none() {
                return;
            }
            credit.answered();
            continue;
        }
        if tx.feed(Message::Binary(item.clone())).await.is_err() {
            return;
        }
        fed += 1;
    }
}

/// Echoes every message back, through one batching writer.
async fn floor_echo_serve(ws: Ws, rt: Arc<dyn Runtime>) {
    let (tx, mut rx) = ws.split();
    let (out, out_rx) = mpsc::unbounded();
    rt.spawn(Box::pin(ws_writer(tx, out_rx)));
    while let Some(Ok(m)) = rx.next().await {
        match m {
            Message::Binary(_) => {
                let _ = out.unbounded_send(m);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

type CallFn = Arc<dyn Fn(Bytes) -> BoxFuture<'static, Bytes> + Send + Sync>;

struct Calls {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn warmup(dur: Duration) -> Duration {
    (dur / 10).max(Duration::from_millis(100))
}

/// `callers` tasks call `call` back to back for `dur` (after a warm-up).
async fn drive(
    rt: &Arc<dyn Runtime>,
    callers: usize,
    dur: Duration,
    payload: Bytes,
    call: CallFn,
) -> Calls {
    let start = Instant::now() + warmup(dur);
    let end = start + dur;
    let (tx, rx) = mpsc::unbounded::<Vec<u32>>();
    for _ in 0..callers {
        let (call, p, tx) = (call.clone(), payload.clone(), tx.clone());
        rt.spawn(Box::pin(async move {
            let mut lat = Vec::with_capacity(1 << 14);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = call(p.clone()).await;
                assert_eq!(r.len(), p.len(), "echo");
                if t0 >= start {
                    let ns = t0.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                    lat.push(ns);
                }
            }
            let _ = tx.unbounded_send(lat);
        }));
    }
    drop(tx);
    let mut all: Vec<u32> = rx.collect::<Vec<_>>().await.concat();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    Calls {
        per_sec: all.len() as f64 / dur.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn grid_call(conn: Connection) -> CallFn {
    Arc::new(move |p| {
        let c = conn.clone();
        Box::pin(async move { c.request(ECHO, p).await.expect("grid echo") })
    })
}

fn payload(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31) as u8).collect::<Vec<u8>>().into()
}

/// Counts items arriving for `dur` after a warm-up; returns items per second.
async fn count_for(dur: Duration, mut next: impl FnMut() -> BoxFuture<'static, bool>) -> f64 {
    let start = Instant::now() + warmup(dur);
    let end = start + dur;
    let mut n = 0u64;
    let mut counting = false;
    let mut t0 = start;
    while next().await {
        let now = Instant::now();
        if !counting && now >= start {
            counting = true;
            t0 = now;
            n = 0;
        }
        n += 1;
        if now >= end {
            return n as f64 / (now - t0).as_secs_f64();
        }
    }
    panic!("stream ended early");
}

async fn grid_push(
    rt: &Arc<dyn Runtime>,
    c: &Cluster,
    handler: u8,
    len: usize,
    dur: Duration,
) -> f64 {
    let conn = c.dialers_conn();
    on(rt, async move {
        let p = Bytes::copy_from_slice(&(len as u32).to_le_bytes());
        let s = conn.new_stream(handler, Some(p)).expect("open stream");
        let resp = Arc::new(futures_util::lock::Mutex::new(s.responses));
        count_for(dur, || {
            let r = resp.clone();
            Box::pin(async move {
                let item = r.lock().await.next().await;
                matches!(item, Some(Ok(b)) if b.len() == len)
            })
        })
        .await
    })
    .await
}

/// Messages per second the floor pushes one way: bare, or within a stream's window.
async fn floor_push_rate(
    rt: &Arc<dyn Runtime>,
    len: usize,
    dur: Duration,
    window: Option<FloorWindow>,
) -> f64 {
    let (client, server) = ws_pair(rt).await;
    match window {
        None => rt.spawn(Box::pin(floor_push(server, payload(len)))),
        Some(w) => rt.spawn(Box::pin(floor_push_windowed(
            server,
            payload(len),
            w,
            rt.clone(),
        ))),
    }
    on(rt, async move {
        let ws = Arc::new(futures_util::lock::Mutex::new((client, 0)));
        count_for(dur, || {
            let ws = ws.clone();
            Box::pin(async move {
                let (ws, unanswered) = &mut *ws.lock().await;
                let m = ws.next().await;
                let answer = window.is_some_and(|w| w.answer_after_read(unanswered));
                if answer
                    && ws
                        .send(Message::Binary(Bytes::from_static(&[0; 4])))
                        .await
                        .is_err()
                {
                    return false;
                }
                matches!(m, Some(Ok(Message::Binary(b))) if b.len() == len)
            })
        })
        .await
    })
    .await
}

async fn grid_echo_stream(rt: &Arc<dyn Runtime>, c: &Cluster, dur: Duration) -> f64 {
    let conn = c.conn(0, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    on(rt, async move {
        let s = conn.new_stream(ECHO_STREAM, None).expect("open stream");
        let mut req = s.requests.expect("echo takes input");
        let item = payload(SMALL);
        let rt_stop = stop2.clone();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let sender = async move {
            while !rt_stop.load(Ordering::Relaxed) {
                if req.send(item.clone()).await.is_err() {
                    break;
                }
            }
            drop(req);
            let _ = done_tx.send(());
        };
        let resp = Arc::new(futures_util::lock::Mutex::new(s.responses));
        let counting = async {
            let r = count_for(dur, || {
                let r = resp.clone();
                Box::pin(async move {
                    matches!(r.lock().await.next().await, Some(Ok(b)) if b.len() == SMALL)
                })
            })
            .await;
            stop2.store(true, Ordering::Relaxed);
            r
        };
        let (r, _) = futures_util::future::join(counting, sender).await;
        drop(done_rx);
        r
    })
    .await
}

async fn floor_echo_rate(rt: &Arc<dyn Runtime>, dur: Duration) -> f64 {
    let (client, server) = ws_pair(rt).await;
    rt.spawn(Box::pin(floor_echo_serve(server, rt.clone())));
    on(rt, async move {
        let (mut tx, rx) = client.split();
        // As many messages in flight as the Grid stream's capacities allow (a sender
        // has one slot of its own on top of the channel's buffer).
        let in_flight = LARGE_CAPACITY as usize;
        let (mut credit, credits) = mpsc::channel::<()>(in_flight - 1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let item = payload(SMALL);
        let sender = async move {
            while !stop2.load(Ordering::Relaxed) {
                if credit.try_send(()).is_err() {
                    // Out of credit: put what is buffered on the wire, then wait.
                    let ready = std::future::poll_fn(|cx| credit.poll_ready(cx));
                    if tx.flush().await.is_err()
                        || ready.await.is_err()
                        || credit.try_send(()).is_err()
                    {
                        break;
                    }
                }
                if tx.feed(Message::Binary(item.clone())).await.is_err() {
                    break;
                }
            }
            let _ = tx.close(None).await;
        };
        let state = Arc::new(futures_util::lock::Mutex::new((rx, credits)));
        let counting = async {
            let r = count_for(dur, || {
                let st = state.clone();
                Box::pin(async move {
                    let mut g = st.lock().await;
                    let (rx, credits) = &mut *g;
                    let ok =
                        matches!(rx.next().await, Some(Ok(Message::Binary(b))) if b.len() == SMALL);
                    let _ = credits.next().await;
                    ok
                })
            })
            .await;
            stop.store(true, Ordering::Relaxed);
            // Let the sender see the stop even if it waits for credit.
            state.lock().await.1.close();
            r
        };
        futures_util::future::join(counting, sender).await.0
    })
    .await
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------
// Sections

struct Opts {
    dur: Duration,
    only: Vec<String>,
    runtimes: Vec<Rt>,
    callers: Vec<usize>,
}

impl Opts {
    fn wants(&self, s: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == s)
    }
}

fn single(report: &mut Report, o: &Opts, rt: Rt, with_floor: bool) -> Vec<(usize, f64)> {
    let dur = o.dur;
    let callers = o.callers.clone();
    let results = rt.run(|r| async move {
        let c = Cluster::start(&r, 2).await;
        let floor = FloorClient::start(&r).await;
        let p = payload(SMALL);
        let mut out = Vec::new();
        for &n in &callers {
            let g = drive(&r, n, dur, p.clone(), grid_call(c.conn(0, 1))).await;
            let f = if with_floor {
                let fc = floor.clone();
                let call: CallFn = Arc::new(move |p| {
                    let fc = fc.clone();
                    Box::pin(async move { fc.call(p).await })
                });
                Some(drive(&r, n, dur, p.clone(), call).await)
            } else {
                None
            };
            out.push((n, g, f));
        }
        floor.close();
        c.stop().await;
        out
    });
    let mut tput = Vec::new();
    for (n, g, f) in results {
        let (tgt_rps, tgt_p50) = match n {
            1 => (None, Some(Goal::AtMost(1.1))),
            _ => (Some(Goal::AtLeast(1.0)), None),
        };
        let fv = |x: fn(&Calls) -> f64| f.as_ref().map(x);
        let s = "single";
        let fig = |w: &str| format!("512B echo, {n} callers: {w}");
        report.add(
            s,
            rt,
            fig("req/s"),
            "req/s",
            g.per_sec,
            fv(|c| c.per_sec),
            tgt_rps,
        );
        report.add(s, rt, fig("p50"), "us", g.p50_us, fv(|c| c.p50_us), tgt_p50);
        report.add(s, rt, fig("p99"), "us", g.p99_us, fv(|c| c.p99_us), None);
        tput.push((n, g.per_sec));
    }
    tput
}

fn streams(report: &mut Report, o: &Opts, rt: Rt) {
    let dur = o.dur;
    let r = rt.run(|r| async move {
        let c = Cluster::start(&r, 2).await;
        let mut out = Vec::new();
        for len in [SMALL, LARGE] {
            let f = floor_push_rate(&r, len, dur, None).await;
            let g1 = grid_push(&r, &c, PUSH_1, len, dur).await;
            let g256 = grid_push(&r, &c, PUSH_256, len, dur).await;
            let w = Some(FloorWindow::of_stream(LARGE_CAPACITY, len));
            let fw = floor_push_rate(&r, len, dur, w).await;
            out.push((len, f, g1, g256, fw));
        }
        let fe = floor_echo_rate(&r, dur).await;
        let ge = grid_echo_stream(&r, &c, dur).await;
        c.stop().await;
        (out, fe, ge)
    });
    let (one_way, fe, ge) = r;
    let s = "streams";
    for (len, f, g1, g256, fw) in one_way {
        if len == SMALL {
            let fig = |cap| format!("one way 512B, out cap {cap}");
            report.add(s, rt, fig(1), "items/s", g1, Some(f), None);
            report.add(
                s,
                rt,
                fig(256),
                "items/s",
                g256,
                Some(f),
                Some(Goal::AtLeast(0.5)),
            );
            let fig = "512B, cap 256, vs windowed floor".to_string();
            report.add(s, rt, fig, "items/s", g256, Some(fw), None);
        } else {
            let gb = |x: f64| x * len as f64 / 1e9;
            let fig = |cap| format!("one way 64KiB, out cap {cap}");
            report.add(s, rt, fig(1), "GB/s", gb(g1), Some(gb(f)), None);
            let t = Some(Goal::AtLeast(0.8));
            report.add(s, rt, fig(256), "GB/s", gb(g256), Some(gb(f)), t);
            let fig = "64KiB, cap 256, vs windowed floor".to_string();
            report.add(s, rt, fig, "GB/s", gb(g256), Some(gb(fw)), None);
        }
    }
    report.add(
        s,
        rt,
        "two-way echo 512B, cap 256".into(),
        "items/s",
        ge,
        Some(fe),
        None,
    );
}

fn typed(report: &mut Report, o: &Opts) {
    let dur = o.dur;
    let small = Small {
        id: 42,
        bucket: "bucket-0001".into(),
        object: "photos/2026/11/24/IMG_0042.jpg".into(),
        size: 3_456_789,
        versioned: true,
    };
    let raw_len = grid_core::typed::Message::encode(&small)
        .expect("encode")
        .len();
    let res = Rt::Tokio.run(|r| async move {
        let c = Cluster::start(&r, 2).await;
        let mut out = Vec::new();
        for n in [1, 16] {
            let conn = c.conn(0, 1);
            let s = Arc::new(small.clone());
            // Typed: the struct in, the struct out, checked equal; `drive` checks lengths,
            // so the call gives back a payload of the encoded length.
            let call: CallFn = Arc::new(move |p| {
                let fut = TYPED_HANDLER.call(&conn, &s);
                let s = s.clone();
                Box::pin(async move {
                    assert_eq!(fut.await.expect("typed call"), *s, "typed echo");
                    p
                })
            });
            let t = drive(&r, n, dur, payload(raw_len), call).await;
            let raw = drive(&r, n, dur, payload(raw_len), grid_call(c.conn(0, 1))).await;
            out.push((n, t, raw));
        }
        c.stop().await;
        out
    });
    for (n, t, raw) in res {
        let fig = |w: &str| format!("{raw_len}B struct, {n} callers: {w}");
        report.add(
            "typed",
            Rt::Tokio,
            fig("req/s"),
            "req/s",
            t.per_sec,
            Some(raw.per_sec),
            None,
        );
        report.add(
            "typed",
            Rt::Tokio,
            fig("p50"),
            "us",
            t.p50_us,
            Some(raw.p50_us),
            None,
        );
    }
}

/// A random pair of distinct nodes out of `n` (at least 2), from a shared counter that
/// every draw steps and bit-mixes, so every call of every caller draws its own.
fn random_pair(seed: &AtomicU64, n: usize) -> (usize, usize) {
    let mut x = seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let from = (x % n as u64) as usize;
    let to = (from + 1 + ((x >> 32) % (n as u64 - 1)) as usize) % n;
    (from, to)
}

/// A call from a random node to another, through `conns[from][to]`.
fn random_calls<C: Clone + Send + Sync + 'static, F>(
    conns: Vec<Vec<Option<C>>>,
    call: fn(C, Bytes) -> F,
) -> CallFn
where
    F: Future<Output = Bytes> + Send + 'static,
{
    let n = conns.len();
    let seed = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    Arc::new(move |p| {
        let (from, to) = random_pair(&seed, n);
        let c = conns[from][to].clone().expect("distinct nodes");
        Box::pin(call(c, p))
    })
}

fn cluster(report: &mut Report, o: &Opts) {
    let dur = o.dur;
    for n in [2, 4, 8] {
        let (grid, floor) = Rt::Tokio.run(|r| async move {
            let c = Cluster::start(&r, n).await;
            let conns = (0..n)
                .map(|i| (0..n).map(|j| (i != j).then(|| c.conn(i, j))).collect())
                .collect();
            let call = random_calls(conns, |conn: Connection, p| async move {
                conn.request(ECHO, p).await.expect("cluster echo")
            });
            let grid = drive(&r, CLUSTER_CALLERS, dur, payload(SMALL), call).await;
            c.stop().await;
            // The floor's multiplexer carries calls one way: a connection for each
            // direction of each pair.
            let mut floors = Vec::with_capacity(n);
            for i in 0..n {
                let mut row = Vec::with_capacity(n);
                for j in 0..n {
                    row.push(if i == j {
                        None
                    } else {
                        Some(FloorClient::start(&r).await)
                    });
                }
                floors.push(row);
            }
            let all: Vec<Arc<FloorClient>> = floors.iter().flatten().flatten().cloned().collect();
            let call = random_calls(
                floors,
                |fc: Arc<FloorClient>, p| async move { fc.call(p).await },
            );
            let floor = drive(&r, CLUSTER_CALLERS, dur, payload(SMALL), call).await;
            all.iter().for_each(|fc| fc.close());
            (grid.per_sec, floor.per_sec)
        });
        let fig = format!("{n} nodes, {CLUSTER_CALLERS} callers, random pairs");
        report.add("cluster", Rt::Tokio, fig, "req/s", grid, Some(floor), None);
    }
}

/// Resident memory around [`IDLE_STREAMS`] idle streams, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mem {
    /// Before opening them.
    before: u64,
    /// With all of them open.
    after: u64,
}

impl Mem {
    fn per_stream(self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / IDLE_STREAMS as f64
    }

    /// What `--memory-of` prints: the two sizes on one line.
    fn line(self) -> String {
        format!("{} {}", self.before, self.after)
    }

    fn parse(line: &str) -> Option<Mem> {
        let mut w = line.split_whitespace().map(|v| v.parse().ok());
        let m = Mem {
            before: w.next()??,
            after: w.next()??,
        };
        w.next().is_none().then_some(m)
    }
}

/// Opens idle streams through `open`, 2,000 at a time, until [`IDLE_STREAMS`] are open,
/// after a warm-up round of 1,000 (which warms the allocator and the tables) is closed;
/// `started` counts the streams the serving side runs. Returns the resident memory
/// before and with them, the streams still open.
async fn idle_streams<S>(
    rt: &Arc<dyn Runtime>,
    started: &AtomicUsize,
    open: impl Fn() -> S,
) -> (Mem, Vec<S>) {
    let settle = |n: usize| async move {
        while started.load(Ordering::Relaxed) < n {
            sleep(rt, Duration::from_millis(2)).await;
        }
    };
    let warm: Vec<S> = (0..1000).map(|_| open()).collect();
    settle(1000).await;
    drop(warm);
    sleep(rt, Duration::from_millis(200)).await;
    let before = rss();
    let base = started.load(Ordering::Relaxed);
    let mut streams = Vec::with_capacity(IDLE_STREAMS);
    while streams.len() < IDLE_STREAMS {
        streams.extend((0..2000).map(|_| open()));
        settle(base + streams.len()).await;
    }
    sleep(rt, Duration::from_millis(200)).await;
    let after = rss();
    (Mem { before, after }, streams)
}

/// Grid's idle streams: handlers waiting for their cancellation.
fn grid_memory() -> Mem {
    Rt::Tokio.run(|r| async move {
        let c = Cluster::start(&r, 2).await;
        let conn = c.conn(0, 1);
        let open = || conn.new_stream(IDLE, None).expect("open idle stream");
        let (mem, streams) = idle_streams(&r, &c.started, open).await;
        assert!(
            c.conn(0, 1).is_connected(),
            "link survived {IDLE_STREAMS} streams"
        );
        drop(streams);
        c.stop().await;
        mem
    })
}

/// The floor's idle streams: the least a hand-written multiplexer keeps per open stream.
/// The caller holds the receiving end of the channel its items would arrive on, whose
/// sending end the client keeps by stream ID; the server runs a task per stream that
/// waits for its cancellation, whose trigger it keeps by stream ID. A stream is opened
/// with one message carrying its ID and cancelled with one carrying the ID and a flag.
struct FloorStreams {
    next_id: AtomicU64,
    routes: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    out: mpsc::UnboundedSender<Message>,
    /// Nothing arrives on the client's side; its read half is kept with the rest.
    _rx: WsRx,
}

/// The flag of a cancellation in the floor streams' messages.
const FLOOR_CANCEL: u64 = 1 << 63;

/// An open floor stream: dropping it cancels it.
struct FloorStream {
    id: u64,
    _items: mpsc::Receiver<Bytes>,
    owner: Arc<FloorStreams>,
}

impl FloorStreams {
    async fn start(rt: &Arc<dyn Runtime>, started: Arc<AtomicUsize>) -> Arc<FloorStreams> {
        let (client, server) = ws_pair(rt).await;
        rt.spawn(Box::pin(floor_stream_serve(rt.clone(), server, started)));
        let (tx, rx) = client.split();
        let (out, out_rx) = mpsc::unbounded();
        rt.spawn(Box::pin(ws_writer(tx, out_rx)));
        Arc::new(FloorStreams {
            next_id: AtomicU64::new(1),
            routes: Mutex::new(HashMap::new()),
            out,
            _rx: rx,
        })
    }

    fn open(self: &Arc<Self>) -> FloorStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(1);
        self.routes.lock().expect("routes").insert(id, tx);
        self.send(id);
        FloorStream {
            id,
            _items: rx,
            owner: self.clone(),
        }
    }

    fn send(&self, word: u64) {
        let m = Message::Binary(Bytes::copy_from_slice(&word.to_le_bytes()));
        let _ = self.out.unbounded_send(m);
    }
}

impl Drop for FloorStream {
    fn drop(&mut self) {
        self.owner.routes.lock().expect("routes").remove(&self.id);
        self.owner.send(self.id | FLOOR_CANCEL);
    }
}

async fn floor_stream_serve(rt: Arc<dyn Runtime>, ws: Ws, started: Arc<AtomicUsize>) {
    let (_tx, mut rx) = ws.split();
    let mut cancels: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
    while let Some(Ok(Message::Binary(b))) = rx.next().await {
        let word = u64::from_le_bytes(b[..8].try_into().expect("8-byte word"));
        if word & FLOOR_CANCEL != 0 {
            cancels.remove(&(word & !FLOOR_CANCEL)).map(|c| c.send(()));
            continue;
        }
        let (tx, cancelled) = oneshot::channel::<()>();
        cancels.insert(word, tx);
        let started = started.clone();
        rt.spawn(Box::pin(async move {
            started.fetch_add(1, Ordering::Relaxed);
            let _ = cancelled.await;
        }));
    }
}

fn floor_memory() -> Mem {
    Rt::Tokio.run(|r| async move {
        let started = Arc::new(AtomicUsize::new(0));
        let fs = FloorStreams::start(&r, started.clone()).await;
        let (mem, streams) = idle_streams(&r, &started, || fs.open()).await;
        drop(streams);
        mem
    })
}

/// Each side's memory is measured in a process of its own (this binary again, with
/// `--memory-of`), so neither reuses pages the other's allocations left behind.
fn memory(report: &mut Report) {
    let child = |which: &str| -> Mem {
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let out = std::process::Command::new(exe)
            .args(["--memory-of", which])
            .output()
            .expect("run the memory measurement");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "memory of {which}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        Mem::parse(text.trim()).unwrap_or_else(|| panic!("memory of {which}: {text:?}"))
    };
    let (grid, floor) = (child("grid"), child("floor"));
    let m = "memory";
    let fig = "bytes per idle stream (both ends)".to_owned();
    report.add(
        m,
        Rt::Tokio,
        fig,
        "B",
        grid.per_stream(),
        Some(floor.per_stream()),
        None,
    );
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let fig = "RSS before opening them".to_owned();
    report.add(
        m,
        Rt::Tokio,
        fig,
        "MiB",
        mb(grid.before),
        Some(mb(floor.before)),
        None,
    );
    let fig = format!("RSS with {IDLE_STREAMS} idle streams");
    report.add(
        m,
        Rt::Tokio,
        fig,
        "MiB",
        mb(grid.after),
        Some(mb(floor.after)),
        None,
    );
}

/// Every section but memory, once.
fn rounds(report: &mut Report, o: &Opts) {
    let single_on = o.wants("single");
    if single_on || o.wants("runtimes") {
        let mut tputs = Vec::new();
        for &rt in &o.runtimes {
            tputs.push((rt, single(report, o, rt, single_on)));
        }
        if o.wants("runtimes") && o.runtimes.first() == Some(&Rt::Tokio) {
            let tokio = tputs[0].1.clone();
            for (rt, t) in &tputs[1..] {
                for ((n, x), (_, base)) in t.iter().zip(&tokio) {
                    let fig = format!("single req/s, {n} callers, vs tokio");
                    let goal = Some(Goal::AtLeast(0.8));
                    report.add("runtimes", *rt, fig, "req/s", *x, Some(*base), goal);
                }
            }
        }
    }
    if o.wants("streams") {
        for &rt in &o.runtimes {
            streams(report, o, rt);
        }
    }
    if o.wants("typed") {
        typed(report, o);
    }
    if o.wants("cluster") {
        cluster(report, o);
    }
}

/// The median of each figure over the rounds, in first-seen order: of Grid's figure, of
/// its floor, and of the per-round ratios (each against the floor of its own round).
fn medians(rows: Vec<Row>) -> Vec<Row> {
    let mut groups: Vec<Vec<Row>> = Vec::new();
    for r in rows {
        let key = |x: &Row| (x.section, x.runtime, x.figure.clone());
        match groups.iter_mut().find(|g| key(&g[0]) == key(&r)) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    groups
        .into_iter()
        .map(|g| {
            let grid = median(g.iter().map(|r| r.grid).collect());
            let floors: Vec<f64> = g.iter().filter_map(|r| r.floor).collect();
            let ratios: Vec<f64> = g.iter().filter_map(|r| r.ratio).collect();
            let first = &g[0];
            let ratio = (!ratios.is_empty()).then(|| median(ratios.clone()));
            let met = Goal::met(first.target, ratio);
            Row {
                section: first.section,
                runtime: first.runtime,
                figure: first.figure.clone(),
                unit: first.unit,
                grid,
                floor: (!floors.is_empty()).then(|| median(floors)),
                ratio,
                target: first.target,
                met,
                round_ratios: ratios,
            }
        })
        .collect()
}

fn main() -> ExitCode {
    // The memory section runs each of its measurements in a process of its own.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, which] = &args[..] {
        if flag == "--memory-of" {
            let mem = match which.as_str() {
                "grid" => grid_memory(),
                "floor" => floor_memory(),
                _ => return ExitCode::FAILURE,
            };
            println!("{}", mem.line());
            return ExitCode::SUCCESS;
        }
    }
    match options() {
        Ok((o, json, repeat)) => bench(o, json, repeat),
        Err(code) => code,
    }
}

/// The options, `--json` and `--repeat` the arguments ask for.
fn options() -> Result<(Opts, bool, usize), ExitCode> {
    let mut a = Args::from_env("grid-bench", USAGE);
    let mut seconds = 2.0f64;
    let mut json = false;
    let mut only = Vec::new();
    let mut runtimes = Vec::new();
    let mut callers = Vec::new();
    let mut repeat = 1usize;
    while let Some(arg) = a.next() {
        match arg.as_str() {
            "--seconds" => seconds = a.seconds(&arg)?,
            "--only" => {
                only = a.list(|s| match SECTIONS.contains(&s) {
                    true => Ok(s.to_owned()),
                    false => Err(format!("unknown section {s:?}")),
                })?
            }
            "--runtimes" => {
                runtimes = a.list(|s| match Rt::ALL.iter().find(|r| r.name() == s) {
                    Some(r) => Ok(*r),
                    None => Err(format!("unknown runtime {s:?}")),
                })?
            }
            "--callers" => {
                callers = a.list(|s| match s.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err("--callers needs positive counts".to_owned()),
                })?
            }
            "--repeat" => repeat = a.count(&arg)?,
            "--tcp-congestion" => {
                let name = a.text(&arg)?;
                let probe = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| set_congestion(&l, &name));
                if let Err(e) = probe {
                    return Err(a.fail(format!("TCP congestion control {name:?}: {e}")));
                }
                let _ = CONGESTION.set(name);
            }
            "--json" => json = true,
            "-h" | "--help" => return Err(a.help()),
            other => return Err(a.unknown(other)),
        }
    }
    let o = Opts {
        dur: Duration::from_secs_f64(seconds),
        only,
        runtimes: if runtimes.is_empty() {
            Rt::ALL.to_vec()
        } else {
            runtimes
        },
        callers: if callers.is_empty() {
            CALLERS.to_vec()
        } else {
            callers
        },
    };
    Ok((o, json, repeat))
}

/// Runs the figures `o` asks for, `repeat` times, and prints them.
fn bench(o: Opts, json: bool, repeat: usize) -> ExitCode {
    let mut report = Report {
        json,
        rows: Vec::new(),
        header_printed: false,
    };
    let congestion = CONGESTION.get().cloned().unwrap_or_else(system_congestion);
    if !report.json {
        println!("TCP congestion control of the accepted connections: {congestion}");
    }
    // Memory once, in processes of its own.
    if o.wants("memory") {
        memory(&mut report);
    }
    for round in 0..repeat {
        if repeat > 1 && !report.json {
            println!("\nround {} of {repeat}", round + 1);
            report.header_printed = false;
        }
        rounds(&mut report, &o);
    }
    if repeat > 1 {
        report.rows = medians(std::mem::take(&mut report.rows));
        if !report.json {
            println!("\nmedian of {repeat} rounds (each ratio against the floor of its own round)");
            print_header();
            for r in &report.rows {
                println!("{}", line(r));
            }
        }
    }
    if report.json {
        let doc = serde_json::json!({
            "seconds": o.dur.as_secs_f64(),
            "tcp_congestion": congestion,
            "rows": report.rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        let missed: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.met == Some(false))
            .collect();
        println!(
            "\ntargets: {} met, {} missed",
            report.rows.iter().filter(|r| r.met == Some(true)).count(),
            missed.len()
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reno is built into Linux and open to every user.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_listener_passes_its_congestion_control_to_what_it_accepts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_congestion(&l, "reno").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let cc = socket2::SockRef::from(&accepted).tcp_congestion().unwrap();
        assert_eq!(&cc[..4], b"reno");
        drop(c);
        let e = set_congestion(&l, "no-such-control").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn random_pairs_are_distinct_nodes_and_reach_every_pair() {
        for n in [2, 4, 8] {
            let seed = AtomicU64::new(1);
            let mut seen = vec![vec![0u32; n]; n];
            for _ in 0..100 * n * n {
                let (from, to) = random_pair(&seed, n);
                assert_ne!(from, to, "{n} nodes");
                seen[from][to] += 1;
            }
            let draws = (100 * n * n) as f64 / (n * (n - 1)) as f64;
            for (from, row) in seen.iter().enumerate() {
                for (to, &k) in row.iter().enumerate() {
                    if from != to {
                        // Each pair's share is within a third of an even share.
                        assert!(
                            (k as f64 - draws).abs() < draws / 3.0,
                            "{n}: {from}->{to} {k}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_memory_measurement_crosses_the_process_boundary_whole() {
        let m = Mem {
            before: 7 << 20,
            after: (7 << 20) + 100 * IDLE_STREAMS as u64,
        };
        assert_eq!(Mem::parse(&m.line()), Some(m));
        assert_eq!(m.per_stream(), 100.0);
        for bad in ["", "1", "1 x", "1 2 3", "-1 2"] {
            assert_eq!(Mem::parse(bad), None, "{bad:?}");
        }
    }

    fn row(figure: &str, grid: f64, floor: f64) -> Row {
        Row {
            section: "single",
            runtime: "tokio",
            figure: figure.into(),
            unit: "req/s",
            grid,
            floor: Some(floor),
            ratio: Some(grid / floor),
            target: Some(Goal::AtLeast(1.0)),
            met: None,
            round_ratios: Vec::new(),
        }
    }

    /// The windowed floor keeps a Grid stream's window: at out capacity 256, 16 items of
    /// 64 KiB or 256 of 512 bytes, one item at capacity 1 or when one item passes the
    /// window's bytes. Its reader answers each quarter window, and a sender that sends
    /// while it has credit, taking turns with the reader, keeps the whole window in
    /// flight and never more.
    #[test]
    fn the_windowed_floor_keeps_a_streams_window_in_flight() {
        let cases = [
            (256, LARGE, 16, 4),
            (256, SMALL, 256, 64),
            (1, LARGE, 1, 1),
            (256, 4 << 20, 1, 1),
            (256, 300 << 10, 3, 1),
        ];
        for (capacity, len, items, batch) in cases {
            let w = FloorWindow::of_stream(capacity, len);
            assert_eq!(w, FloorWindow { items, batch }, "{capacity} x {len} B");
            let (mut credit, mut in_flight, mut unanswered) = (w.credit(), 0, 0);
            let (mut most, mut answers, mut read) = (0, 0, 0);
            for turn in 0..100 {
                // The sender's turn: everything its credit allows (bounded, so credit
                // that never runs out shows as one item too many).
                while in_flight <= w.items && credit.take() {
                    in_flight += 1;
                }
                most = most.max(in_flight);
                // The reader's: a batch, or what is there on every third turn.
                let n = if turn % 3 == 0 {
                    in_flight
                } else {
                    in_flight.min(w.batch)
                };
                for _ in 0..n {
                    in_flight -= 1;
                    read += 1;
                    if w.answer_after_read(&mut unanswered) {
                        answers += 1;
                        credit.answered();
                    }
                }
            }
            assert_eq!(most, w.items, "{capacity} x {len} B");
            assert_eq!(answers, read / w.batch, "{capacity} x {len} B");
            assert!(read >= 100 * w.batch, "{capacity} x {len} B: {read} read");
        }
    }

    /// The windowed floor moves items over a real socket: its reader's answers reach
    /// the sender, which would stop after one window without them.
    #[test]
    fn the_windowed_floor_moves_more_than_a_window() {
        let rate = Rt::Smol.run(|r| async move {
            let w = FloorWindow::of_stream(256, LARGE);
            let run = floor_push_rate(&r, LARGE, Duration::from_millis(50), Some(w));
            let stalled = smol::Timer::after(Duration::from_secs(60));
            match futures_util::future::select(Box::pin(run), stalled).await {
                futures_util::future::Either::Left((rate, _)) => rate,
                futures_util::future::Either::Right(_) => panic!("the windowed floor stalled"),
            }
        });
        // Counting starts after a warm-up of 100 ms, so a window of 16 items alone
        // would never end the count: it returns only once items keep coming.
        assert!(rate > 0.0, "{rate}");
    }

    #[test]
    fn medians_take_each_figure_and_ratio_over_the_rounds() {
        let rows = vec![
            row("a", 10.0, 10.0),
            row("b", 1.0, 4.0),
            row("a", 30.0, 10.0),
            row("b", 3.0, 4.0),
            row("a", 9.0, 10.0),
            row("b", 2.0, 4.0),
        ];
        let m = medians(rows);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].figure.as_str(), m[0].grid), ("a", 10.0));
        assert_eq!(m[0].ratio, Some(1.0));
        assert_eq!(m[0].met, Some(true));
        assert_eq!((m[1].figure.as_str(), m[1].grid), ("b", 2.0));
        assert_eq!(m[1].ratio, Some(0.5));
        assert_eq!(m[1].met, Some(false));
        assert_eq!(m[1].round_ratios, [0.25, 0.75, 0.5]);
        // The table shows the spread of the rounds next to the median.
        assert!(
            line(&m[1]).ends_with("rounds 0.25-0.75x  >= 1x MISSED"),
            "{}",
            line(&m[1])
        );
        assert!(
            !line(&row("c", 1.0, 1.0)).contains("rounds"),
            "one round: no spread"
        );
    }
}
