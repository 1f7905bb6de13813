//! A local Grid cluster under load, with one link cut and healed midway.
//!
//! The demo starts `N` nodes on loopback, each a [`grid_tokio::Manager`] listening on an
//! ephemeral `127.0.0.1` port and sharing one token. Every node serves two handlers:
//!
//! * `ECHO`, a single-request handler that returns its payload;
//! * `STREAM_ECHO`, a stream handler (capacity 4 in, 4 out) that echoes every item.
//!
//! Once every link is up, each node runs several concurrent callers against all its
//! peers for the requested duration: 512-byte single requests, and short streams (open,
//! send a few items while reading their echoes, close, see the clean end). Every echo is
//! checked. Halfway through, the link between the first two nodes is reset on both ends,
//! as a network failure would; calls in flight on it end with `Disconnected` (counted in
//! the error table), the dialing side reconnects and the workload carries on.
//!
//! At the end the demo prints throughput, errors by kind, p50/p99 latencies and the
//! reconnect count, shuts every manager down and checks that none left a task behind.
//!
//! ```text
//! cargo run --release --example cluster -- --nodes 4 --seconds 5
//! ```
//!
//! The exit code is 0 when every echo matched, the cut link came back and every task
//! ended; 1 otherwise; 2 for bad arguments.

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_tokio::{CallError, Connection, Manager, Request, StreamCtx, StreamOptions};

/// The single-request echo handler.
const ECHO: u8 = 1;
/// The stream echo handler.
const STREAM_ECHO: u8 = 2;
/// Its capacities; every node registers the same.
const STREAM_OPTIONS: StreamOptions = StreamOptions {
    in_capacity: 4,
    out_capacity: 4,
};
/// The token every node presents and accepts.
const TOKEN: &str = "grid-demo-token";

/// Size of a single request's payload.
const PAYLOAD_LEN: usize = 512;
/// Concurrent single-request callers per node.
const REQUEST_CALLERS: usize = 4;
/// Concurrent stream callers per node.
const STREAM_CALLERS: usize = 1;
/// Items sent (and echoed) per stream.
const ITEMS_PER_STREAM: usize = 8;
/// Deadline of every call.
const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// How long the demo waits for links to come up, or for shutdown, before giving up.
const PATIENCE: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: cluster [--nodes N] [--seconds S]   (defaults: 4 nodes, 5 s)";

/// Command-line options.
struct Options {
    nodes: usize,
    seconds: f64,
}

/// Parses `--nodes N` and `--seconds S` (also spelled `--nodes=N`, `--seconds=S`);
/// `None` for `--help`.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options {
        nodes: 4,
        seconds: 5.0,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value\n{USAGE}")),
        };
        match name.as_str() {
            "--nodes" => {
                opts.nodes = value
                    .parse()
                    .ok()
                    .filter(|n| (2..=64).contains(n))
                    .ok_or_else(|| format!("--nodes: expected 2..=64, got {value:?}"))?;
            }
            "--seconds" => {
                opts.seconds = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .ok_or_else(|| {
                        format!("--seconds: expected a duration in seconds, got {value:?}")
                    })?;
            }
            _ => return Err(format!("unknown option {name:?}\n{USAGE}")),
        }
    }
    Ok(Some(opts))
}

// ------------------------------------------------------------------------------------
// The cluster.

/// `N` managers on loopback, all knowing each other.
struct Cluster {
    hosts: Vec<String>,
    nodes: Vec<Manager>,
}

impl Cluster {
    /// Binds `n` ephemeral loopback ports, then starts one manager on each.
    fn start(n: usize) -> Result<Cluster, Box<dyn Error>> {
        let listeners = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = listeners
            .iter()
            .map(|l| Ok(format!("http://{}", l.local_addr()?)))
            .collect::<Result<Vec<_>, std::io::Error>>()?;
        let mut nodes = Vec::with_capacity(n);
        for (listener, host) in listeners.into_iter().zip(&hosts) {
            let manager = Manager::builder(host.clone(), &hosts)
                .listener(listener)
                .token_provider(|| TOKEN.to_owned())
                .token_validator(|t| {
                    if t == TOKEN {
                        Ok(())
                    } else {
                        Err("bad token".to_owned())
                    }
                })
                .single(ECHO, |req: Request| async move { Ok(req.payload) })?
                .stream(STREAM_ECHO, STREAM_OPTIONS, stream_echo)?
                .start(grid_tokio::runtime())?;
            nodes.push(manager);
        }
        Ok(Cluster { hosts, nodes })
    }

    /// Node `from`'s connection to node `to`.
    fn conn(&self, from: usize, to: usize) -> Connection {
        self.nodes[from]
            .connection(&self.hosts[to])
            .expect("every other node is a peer")
    }

    /// Node `from`'s connections to every other node, starting after itself (so that
    /// the nodes do not all hit the same peer at the same time).
    fn peers_of(&self, from: usize) -> Vec<Connection> {
        let n = self.nodes.len();
        (1..n).map(|k| self.conn(from, (from + k) % n)).collect()
    }

    /// Waits until both ends of every link are up.
    async fn wait_connected(&self) {
        for i in 0..self.nodes.len() {
            for conn in self.peers_of(i) {
                conn.wait_connected().await;
            }
        }
    }

    /// Reconnections counted by every end of every link.
    fn reconnects(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|m| m.stats().into_values())
            .map(|s| s.reconnects)
            .sum()
    }

    /// The port a node listens on, for display.
    fn port(&self, i: usize) -> u16 {
        self.nodes[i].local_addr().map_or(0, |a| a.port())
    }
}

/// The stream handler: sends every item back, in order, until the caller's EOF.
async fn stream_echo(mut ctx: StreamCtx) -> Result<(), grid_tokio::RemoteError> {
    let mut input = ctx.input.take().ok_or("STREAM_ECHO takes input")?;
    while let Some(item) = input.next().await {
        ctx.output.send(item).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------
// Measurements.

/// Error kinds in the table, in display order.
const ERROR_KINDS: [&str; 5] = ["disconnected", "deadline", "remote", "refused", "other"];

fn error_kind(e: &CallError) -> usize {
    match e {
        CallError::Disconnected => 0,
        CallError::DeadlineExceeded => 1,
        CallError::Remote(_) => 2,
        CallError::Refused(_) => 3,
        _ => 4,
    }
}

/// Outcomes of one kind of call (requests or streams).
#[derive(Default)]
struct Calls {
    /// Latencies of the successful calls.
    latencies: Vec<Duration>,
    /// Failed calls, by [`ERROR_KINDS`].
    errors: [u64; ERROR_KINDS.len()],
}

impl Calls {
    fn ok(&self) -> usize {
        self.latencies.len()
    }

    fn failed(&mut self, e: &CallError) {
        self.errors[error_kind(e)] += 1;
    }

    fn merge(&mut self, other: Calls) {
        self.latencies.extend(other.latencies);
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
    }

    /// The `q` quantile (0..=1) of the latencies; sorts them.
    fn quantile(&mut self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        self.latencies.sort_unstable();
        let idx = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        Some(self.latencies[idx])
    }
}

/// What one caller task (or, merged, the whole cluster) observed.
#[derive(Default)]
struct Tally {
    requests: Calls,
    streams: Calls,
    /// Stream items sent and echoed back.
    stream_items: u64,
    /// Echoes that did not match what was sent (never expected).
    corrupt: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests.merge(other.requests);
        self.streams.merge(other.streams);
        self.stream_items += other.stream_items;
        self.corrupt += other.corrupt;
    }
}

// ------------------------------------------------------------------------------------
// The workload.

/// After a `Disconnected`, waits (until `end` at most) for the link to come back rather
/// than spinning on calls that fail at once.
async fn await_link(conn: &Connection, end: Instant) {
    let _ = tokio::time::timeout_at(end.into(), conn.wait_connected()).await;
}

/// Sends 512-byte requests to the peers in turn until `end`, checking every echo.
async fn request_caller(peers: Vec<Connection>, first: usize, end: Instant) -> Tally {
    let payload: Bytes = (0..PAYLOAD_LEN).map(|i| (i * 7 + first) as u8).collect();
    let mut tally = Tally::default();
    for conn in peers.iter().cycle().skip(first) {
        if Instant::now() >= end {
            break;
        }
        let started = Instant::now();
        match conn
            .request_with_deadline(ECHO, payload.clone(), CALL_DEADLINE)
            .await
        {
            Ok(echo) if echo == payload => tally.requests.latencies.push(started.elapsed()),
            Ok(_) => tally.corrupt += 1,
            Err(e) => {
                tally.requests.failed(&e);
                if e == CallError::Disconnected {
                    await_link(conn, end).await;
                }
            }
        }
    }
    tally
}

/// Runs short streams to the peers in turn until `end`.
async fn stream_caller(peers: Vec<Connection>, node: usize, end: Instant) -> Tally {
    let mut tally = Tally::default();
    for (seq, conn) in peers.iter().cycle().enumerate() {
        if Instant::now() >= end {
            break;
        }
        let started = Instant::now();
        match stream_once(conn, node, seq).await {
            Ok(()) => {
                tally.streams.latencies.push(started.elapsed());
                tally.stream_items += ITEMS_PER_STREAM as u64;
            }
            Err(StreamFailure::Call(e)) => {
                tally.streams.failed(&e);
                if e == CallError::Disconnected {
                    await_link(conn, end).await;
                }
            }
            Err(StreamFailure::Corrupt) => tally.corrupt += 1,
        }
    }
    tally
}

/// Why one stream failed.
enum StreamFailure {
    Call(CallError),
    /// An echo differed from the item sent, or came after the end.
    Corrupt,
}

impl From<CallError> for StreamFailure {
    fn from(e: CallError) -> Self {
        StreamFailure::Call(e)
    }
}

/// One stream: opens it, sends the items while reading their echoes (flow control
/// paces the sender), closes its input and waits for the handler's clean end.
async fn stream_once(conn: &Connection, node: usize, seq: usize) -> Result<(), StreamFailure> {
    let items: Vec<Bytes> = (0..ITEMS_PER_STREAM)
        .map(|k| Bytes::from(format!("n{node}/s{seq}/item{k}")))
        .collect();
    let stream = conn.new_stream_with_deadline(STREAM_ECHO, None, CALL_DEADLINE)?;
    let mut requests = stream.requests.ok_or(CallError::NoInput)?;
    let mut responses = stream.responses;

    let send = {
        let items = items.clone();
        async move {
            for item in items {
                requests.send(item).await?;
            }
            requests.close();
            Ok::<(), CallError>(())
        }
    };
    let receive = async {
        for sent in &items {
            match responses.next().await {
                Some(Ok(echo)) if echo == *sent => {}
                Some(Ok(_)) => return Err(StreamFailure::Corrupt),
                Some(Err(e)) => return Err(e.into()),
                // The handler ended early without an error: not a clean stream.
                None => return Err(CallError::Closed.into()),
            }
        }
        match responses.next().await {
            None => Ok(()),
            Some(Ok(_)) => Err(StreamFailure::Corrupt),
            Some(Err(e)) => Err(e.into()),
        }
    };
    // The receiver decides the outcome; a failing sender ends the stream early (its
    // success only disables its branch).
    tokio::select! {
        r = receive => r,
        Err(e) = send => Err(e.into()),
    }
}

// ------------------------------------------------------------------------------------
// The demo.

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(opts).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("FAILED (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo; `Ok(false)` when a check failed.
async fn run(opts: Options) -> Result<bool, Box<dyn Error>> {
    let n = opts.nodes;
    let duration = Duration::from_secs_f64(opts.seconds);
    let mut healthy = true;

    // Start the nodes and wait for the full mesh.
    let started = Instant::now();
    let cluster = Cluster::start(n)?;
    let ports: Vec<String> = (0..n)
        .map(|i| format!("n{i}=:{}", cluster.port(i)))
        .collect();
    println!(
        "Grid cluster demo: {n} nodes on 127.0.0.1 ({})",
        ports.join(" ")
    );
    if tokio::time::timeout(PATIENCE, cluster.wait_connected())
        .await
        .is_err()
    {
        return Err(format!("links not all up after {PATIENCE:?}").into());
    }
    println!(
        "mesh:     {} links up in {:.1?}",
        n * (n - 1) / 2,
        started.elapsed()
    );
    println!(
        "workload: {:.1} s; per node {REQUEST_CALLERS} request callers ({PAYLOAD_LEN} B), \
         {STREAM_CALLERS} stream caller ({ITEMS_PER_STREAM} items, capacity 4/4)",
        opts.seconds
    );

    // The workload: every node calls every other node.
    let begin = Instant::now();
    let end = begin + duration;
    let mut workers = Vec::new();
    for node in 0..n {
        for c in 0..REQUEST_CALLERS {
            let peers = cluster.peers_of(node);
            workers.push(tokio::spawn(request_caller(peers, c, end)));
        }
        for _ in 0..STREAM_CALLERS {
            let peers = cluster.peers_of(node);
            workers.push(tokio::spawn(stream_caller(peers, node, end)));
        }
    }

    // Midway: cut the link n0 <-> n1 on both ends and wait for it to come back. The
    // accepting end goes first: the dialing end redials as soon as its own end is reset,
    // and a reconnect on loopback can beat a second reset that comes late.
    tokio::time::sleep_until((begin + duration / 2).into()).await;
    let (a, b) = (cluster.conn(0, 1), cluster.conn(1, 0));
    let (dialer, acceptor) = if a.dials() { (&a, &b) } else { (&b, &a) };
    let cut = Instant::now();
    acceptor.reset();
    dialer.reset();
    println!(
        "t={:.2}s   cut link n0 <-> n1 (reset on both ends)",
        (cut - begin).as_secs_f64()
    );
    let back = async {
        a.wait_connected().await;
        b.wait_connected().await;
    };
    if tokio::time::timeout(PATIENCE, back).await.is_ok() {
        let now = Instant::now();
        println!(
            "t={:.2}s   link n0 <-> n1 back after {:.1?}",
            (now - begin).as_secs_f64(),
            now - cut
        );
    } else {
        println!("link n0 <-> n1 did not come back within {PATIENCE:?}");
        healthy = false;
    }

    // Collect the results.
    let mut total = Tally::default();
    for w in workers {
        total.merge(w.await?);
    }
    let elapsed = begin.elapsed();
    let reconnects = cluster.reconnects();
    print_report(&mut total, n, elapsed, reconnects);
    if total.corrupt > 0 {
        println!("{} echoes did not match what was sent", total.corrupt);
        healthy = false;
    }
    if total.requests.ok() == 0 || total.streams.ok() == 0 {
        println!("no successful calls of some kind");
        healthy = false;
    }
    if reconnects == 0 {
        println!("the cut link was not counted as a reconnect");
        healthy = false;
    }

    // Shut every node down and check that nothing is left running.
    let stopping = Instant::now();
    let all_stopped = async {
        for m in &cluster.nodes {
            m.shutdown().await;
        }
    };
    if tokio::time::timeout(PATIENCE, all_stopped).await.is_err() {
        println!("shutdown did not finish within {PATIENCE:?}");
        healthy = false;
    }
    let left: usize = cluster.nodes.iter().map(Manager::running_tasks).sum();
    println!(
        "shutdown: {n} managers stopped in {:.1?}, {left} tasks left{}",
        stopping.elapsed(),
        if left == 0 { " (all tasks ended)" } else { "" }
    );
    healthy &= left == 0;
    if healthy {
        println!("OK");
    }
    Ok(healthy)
}

/// Prints the results table.
fn print_report(t: &mut Tally, nodes: usize, elapsed: Duration, reconnects: u64) {
    let secs = elapsed.as_secs_f64();
    let rate = |count: usize| format!("{:.0}", count as f64 / secs);
    let lat = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{d:.1?}"));
    let (req_ok, st_ok) = (t.requests.ok(), t.streams.ok());
    let failed: u64 = t.requests.errors.iter().chain(&t.streams.errors).sum();
    let calls = req_ok + st_ok + failed as usize;

    println!("results:  {nodes} nodes, {secs:.2} s");
    println!("  {:<16}{:>12}{:>12}", "", "requests", "streams");
    println!("  {:<16}{:>12}{:>12}", "completed", req_ok, st_ok);
    println!(
        "  {:<16}{:>12}{:>12}",
        "per second",
        rate(req_ok),
        rate(st_ok)
    );
    let (rp50, rp99) = (t.requests.quantile(0.50), t.requests.quantile(0.99));
    let (sp50, sp99) = (t.streams.quantile(0.50), t.streams.quantile(0.99));
    println!("  {:<16}{:>12}{:>12}", "p50 latency", lat(rp50), lat(sp50));
    println!("  {:<16}{:>12}{:>12}", "p99 latency", lat(rp99), lat(sp99));
    for (k, name) in ERROR_KINDS.iter().enumerate() {
        let label = format!("err {name}");
        println!(
            "  {label:<16}{:>12}{:>12}",
            t.requests.errors[k], t.streams.errors[k]
        );
    }
    println!(
        "  calls           {calls} ({}/s), {failed} failed",
        rate(calls)
    );
    println!(
        "  stream items    {} echoed ({ITEMS_PER_STREAM} per stream)",
        t.stream_items
    );
    println!("  reconnects      {reconnects} (summed over both ends of every link)");
}
