//! Fault scenarios over real sockets: a two-node cluster whose link runs through a
//! [`FaultProxy`], and raw TCP clients that misbehave against a manager's listener.
//!
//! Written once as `async fn(Arc<dyn Runtime>)` and run on every runtime by
//! [`crate::hardening_tests!`]. The cluster runs with short timeouts
//! ([`fast_config`]) so that every fault is detected in well under a second; every
//! wait is bounded by [`within`].

use std::collections::HashMap;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};
use grid_core::codec::should_dial;
use grid_core::driver::{Connection, Manager, Request, Runtime};
use grid_core::proto::{CallError, Config};

use crate::accept_faults::{
    self, ABORTED, AcceptScript, EMFILE, ENFILE, Outcome as AcceptOutcome, RESET,
};
use crate::proxy::{Dir, FaultProxy};
use crate::suite::{
    ECHO, FAIL, HANG, PUSH, Probe, STREAM_ECHO, connect_message, handlers, peer_that_dials,
    secret_only, test_config, until_link_works, within,
};
use async_tungstenite::tungstenite;

/// Echoes the request after a short pause and records how often each request ID (the
/// payload's first 8 bytes) ran.
pub const COUNT: u8 = 20;

const LIMIT: Duration = Duration::from_secs(20);

/// Short timeouts so faults are detected fast: pings every 200 ms, lost after 400 ms
/// without a pong, writes stalled for 300 ms drop the link, handshakes get 300 ms,
/// reconnects every 20–40 ms, dials 500 ms.
pub fn fast_config() -> Config {
    let mut c = test_config();
    c.ping_interval = Duration::from_millis(200);
    c.pong_timeout = Duration::from_millis(400);
    c.write_stall_timeout = Duration::from_millis(300);
    c.handshake_timeout = Duration::from_millis(300);
    c.dial_timeout = Duration::from_millis(500);
    c
}

/// A dialer and an acceptor whose link runs through a [`FaultProxy`]: the acceptor's
/// host string names the proxy, which forwards to the acceptor's real listener.
pub struct Proxied {
    /// The node that dials.
    pub dialer: Manager,
    /// The node that accepts (its host string is the proxy's address).
    pub acceptor: Manager,
    /// The proxy on the link.
    pub proxy: FaultProxy,
    /// The acceptor's real listener (reachable without the proxy).
    pub acceptor_addr: SocketAddr,
    /// What the suite's handlers observed.
    pub probe: Arc<Probe>,
    /// Runs of [`COUNT`] by request ID.
    pub counts: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Proxied {
    /// The dialer's connection to the acceptor.
    pub fn out(&self) -> Connection {
        self.dialer
            .connection(self.acceptor.local_host())
            .expect("peer")
    }

    /// The acceptor's connection to the dialer.
    pub fn back(&self) -> Connection {
        self.acceptor
            .connection(self.dialer.local_host())
            .expect("peer")
    }

    /// Shuts both nodes down and checks that no task is left behind.
    pub async fn shutdown(self) {
        for n in [&self.dialer, &self.acceptor] {
            n.shutdown().await;
            assert_eq!(n.running_tasks(), 0, "tasks left on {}", n.local_host());
        }
    }
}

/// Starts a [`Proxied`] pair with `config` and the suite's handlers (plus [`COUNT`]),
/// and waits until the link is up.
pub async fn proxied(rt: &Arc<dyn Runtime>, config: Config) -> Proxied {
    proxied_on(rt, rt, config).await
}

/// [`proxied`], with the acceptor started on `acceptor_rt` (for example one whose
/// listener fails on cue).
pub async fn proxied_on(
    rt: &Arc<dyn Runtime>,
    acceptor_rt: &Arc<dyn Runtime>,
    config: Config,
) -> Proxied {
    // The acceptor's identity is the proxy's address; which side dials depends on the
    // two host strings, so draw ports until the proxied node is the acceptor.
    let (dl, al, proxy, dh, ah) = (0..64)
        .find_map(|_| {
            let dl = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let al = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let proxy = FaultProxy::start(al.local_addr().expect("addr"));
            let dh = format!("http://{}", dl.local_addr().expect("addr"));
            let ah = proxy.host();
            should_dial(&dh, &ah).then_some((dl, al, proxy, dh, ah))
        })
        .expect("a dialing pair of ports");
    let acceptor_addr = al.local_addr().expect("addr");
    let hosts = [dh.clone(), ah.clone()];
    let probe = Arc::new(Probe::default());
    let counts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let start = |host: &str, l: std::net::TcpListener, node_rt: &Arc<dyn Runtime>| {
        let counts = counts.clone();
        let rt2 = rt.clone();
        let b = Manager::builder(host, &hosts)
            .config(config.clone())
            .listener(l)
            .token_provider(|| "secret".into())
            .token_validator(secret_only)
            .single(COUNT, move |r: Request| {
                let counts = counts.clone();
                let rt = rt2.clone();
                async move {
                    let id = u64::from_be_bytes(r.payload[..8].try_into().expect("id"));
                    *counts.lock().expect("counts").entry(id).or_default() += 1;
                    let pause = Duration::from_millis(id % 4);
                    rt.sleep_until(Instant::now() + pause).await;
                    Ok(r.payload)
                }
            })
            .expect("register");
        handlers(b, &probe, false)
            .start(node_rt.clone())
            .expect("manager starts")
    };
    let dialer = start(&dh, dl, rt);
    let acceptor = start(&ah, al, acceptor_rt);
    let p = Proxied {
        dialer,
        acceptor,
        proxy,
        acceptor_addr,
        probe,
        counts,
    };
    within(rt, LIMIT, async {
        p.out().wait_connected().await;
        p.back().wait_connected().await;
    })
    .await;
    p
}

/// Runs blocking code (raw socket clients) on its own thread and awaits its result
/// without blocking the executor; a panic in it is raised here.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    type Slot<T> = (Option<std::thread::Result<T>>, Option<Waker>);
    let slot: Arc<Mutex<Slot<T>>> = Arc::new(Mutex::new((None, None)));
    let s2 = slot.clone();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let mut g = s2.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = Some(r);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    });
    let r = std::future::poll_fn(|cx| {
        let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
        match g.0.take() {
            Some(r) => Poll::Ready(r),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Results of calls spawned in the background; every change wakes [`Tally::wait`].
#[derive(Default)]
struct Tally {
    results: Mutex<(Vec<Outcome>, Vec<Waker>)>,
}

/// A call's ID and result.
type Outcome = (u64, Result<Bytes, CallError>);

impl Tally {
    fn push(&self, id: u64, r: Result<Bytes, CallError>) {
        let mut g = self.results.lock().expect("tally");
        g.0.push((id, r));
        for w in g.1.drain(..) {
            w.wake();
        }
    }

    fn len(&self) -> usize {
        self.results.lock().expect("tally").0.len()
    }

    fn any(&self, r: &Result<Bytes, CallError>) -> bool {
        self.results
            .lock()
            .expect("tally")
            .0
            .iter()
            .any(|(_, x)| x == r)
    }

    async fn wait(&self, n: usize) {
        std::future::poll_fn(|cx| {
            let mut g = self.results.lock().expect("tally");
            if g.0.len() >= n {
                Poll::Ready(())
            } else {
                g.1.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn take(&self) -> Vec<Outcome> {
        std::mem::take(&mut self.results.lock().expect("tally").0)
    }
}

/// Spawns `handler(payload)` on `rt` and records its result under `id`.
fn spawn_call(
    rt: &Arc<dyn Runtime>,
    tally: &Arc<Tally>,
    conn: &Connection,
    handler: u8,
    id: u64,
    payload: Bytes,
) {
    let (tally, conn) = (tally.clone(), conn.clone());
    rt.spawn(Box::pin(async move {
        let r = conn.request(handler, payload).await;
        tally.push(id, r);
    }));
}

async fn sleep(rt: &Arc<dyn Runtime>, d: Duration) {
    rt.sleep_until(Instant::now() + d).await;
}

/// The number of tasks `m` runs once it is idle (the task that served the link's
/// handshake ends just after the link comes up).
async fn idle_tasks(rt: &Arc<dyn Runtime>, m: &Manager) -> usize {
    let mut last = m.running_tasks();
    loop {
        sleep(rt, Duration::from_millis(20)).await;
        let now = m.running_tasks();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits until `m` runs no more than `n` tasks (every connection it served has been
/// let go).
async fn tasks_back_to(rt: &Arc<dyn Runtime>, m: &Manager, n: usize) {
    let t0 = Instant::now();
    while m.running_tasks() > n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} tasks still run, {n} expected",
            m.running_tasks()
        );
        sleep(rt, Duration::from_millis(5)).await;
    }
}

/// Which direction of the proxy carries `from_dialer`'s bytes.
fn dir(from_dialer: bool) -> Dir {
    if from_dialer {
        Dir::ToTarget
    } else {
        Dir::ToClient
    }
}

/// Starts a HANG request on `conn` and waits until the handler runs.
async fn hang_started(
    p: &Proxied,
    conn: &Connection,
    n: usize,
) -> impl Future<Output = Result<Bytes, CallError>> + use<> {
    let conn = conn.clone();
    let call = Box::pin(async move { conn.request(HANG, Bytes::new()).await });
    let started = p
        .probe
        .wait(move |q| q.hang_started.load(Ordering::SeqCst) == n);
    match select(call, std::pin::pin!(started)).await {
        Either::Left(_) => panic!("HANG answered"),
        Either::Right((_, call)) => call,
    }
}

// ----------------------------------------------------------------------------------
// Raw clients.

/// A valid upgrade request for the default route and the cluster's token.
fn upgrade_request(route: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "GET {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
    )
}

/// Reads until the server closes the socket (EOF or reset) or `limit` passes; returns
/// how long that took (`None`: still open) and what was received.
fn wait_closed(s: &mut TcpStream, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    while t0.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (Some(t0.elapsed()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (Some(t0.elapsed()), got),
        }
    }
    (None, got)
}

/// Reads an HTTP response head.
fn read_head(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ----------------------------------------------------------------------------------
// Scenarios.

/// The peer stops reading while we keep sending 256 KiB requests, one a millisecond,
/// until the link drops: our outbound queue never holds more than its limit (plus the
/// one frame that crossed it), calls beyond it fail with `Congested`, and once a write
/// has made no progress for `write_stall_timeout` the link drops, every call ends with
/// `Disconnected`, and the link comes back when the peer reads again.
pub async fn stalled_reader_bounded_queue(rt: Arc<dyn Runtime>) {
    let logs = crate::logs::Capture::install();
    let mut cfg = fast_config();
    // Pings must not notice first: the write stall is what this scenario shows.
    cfg.ping_interval = Duration::from_secs(5);
    cfg.pong_timeout = Duration::from_secs(10);
    cfg.max_queued_bytes = 1 << 20;
    let p = proxied(&rt, cfg.clone()).await;
    let out = p.out();
    let dialer_host = p.dialer.local_host().to_owned();
    p.proxy.stall(dir(true));
    let tally = Arc::new(Tally::default());
    const SIZE: usize = 256 << 10;
    let t0 = Instant::now();
    within(&rt, LIMIT, async {
        let mut max_bytes = 0;
        let mut max_frames = 0;
        // Sending goes on until the link drops, not for a fixed amount: the socket
        // buffers on both sides of the proxy absorb several MiB (how many depends on
        // the kernel's autotuning) before a write blocks at all.
        let mut sent = 0;
        let mut dropped = false;
        while !dropped || tally.len() < sent {
            if !dropped {
                spawn_call(&rt, &tally, &out, ECHO, sent as u64, vec![7u8; SIZE].into());
                sent += 1;
            }
            let s = out.stats().session;
            max_bytes = max_bytes.max(s.queued_bytes);
            max_frames = max_frames.max(s.queued_frames);
            sleep(&rt, Duration::from_millis(1)).await;
            dropped = dropped || tally.any(&Err(CallError::Disconnected));
        }
        let elapsed = t0.elapsed();
        assert!(
            max_bytes <= cfg.max_queued_bytes + SIZE + 1024,
            "queue grew to {max_bytes} B (limit {})",
            cfg.max_queued_bytes
        );
        assert!(max_frames <= cfg.max_queued_frames);
        let results = tally.take();
        let congested = results
            .iter()
            .filter(|(_, r)| *r == Err(CallError::Congested))
            .count();
        let disconnected = results
            .iter()
            .filter(|(_, r)| *r == Err(CallError::Disconnected))
            .count();
        assert_eq!(congested + disconnected, sent, "{results:?}");
        assert!(
            congested > 0 && disconnected > 0,
            "{congested} {disconnected}"
        );
        assert!(
            elapsed >= cfg.write_stall_timeout,
            "dropped after {elapsed:?}"
        );
        let stalled = logs.count(|l| l.contains("write stalled") && l.contains("dropping link"));
        assert!(stalled >= 1, "no write-stall drop logged");
        p.proxy.pass();
        until_link_works(&out).await;
        until_link_works(&p.back()).await;
    })
    .await;
    let _ = dialer_host;
    p.shutdown().await;
}

/// The peer vanishes without a FIN (the proxy swallows everything both ways): the
/// link is declared lost within `pong_timeout` (two ping intervals) plus one interval of
/// slack, calls end with `Disconnected` on both sides, and once the path works again
/// the dialer reconnects.
pub async fn silent_peer_detected_by_pings(rt: Arc<dyn Runtime>) {
    let cfg = fast_config();
    let p = proxied(&rt, cfg.clone()).await;
    let out = p.out();
    within(&rt, LIMIT, async {
        let call = hang_started(&p, &out, 1).await;
        let t0 = Instant::now();
        p.proxy.blackhole(Dir::ToTarget);
        p.proxy.blackhole(Dir::ToClient);
        assert_eq!(call.await, Err(CallError::Disconnected));
        let took = t0.elapsed();
        assert!(
            took <= cfg.pong_timeout + 2 * cfg.ping_interval,
            "silent peer detected after {took:?}"
        );
        // The acceptor noticed too: its handler was cancelled.
        p.probe
            .wait(|q| q.hang_dropped.load(Ordering::SeqCst) == 1)
            .await;
        assert_eq!(
            out.request(ECHO, Bytes::new()).await,
            Err(CallError::Disconnected)
        );
        p.proxy.pass();
        until_link_works(&out).await;
        until_link_works(&p.back()).await;
        assert!(out.stats().reconnects >= 1);
    })
    .await;
    p.shutdown().await;
}

async fn cut_mid_stream(rt: Arc<dyn Runtime>, rst: bool) {
    let p = proxied(&rt, fast_config()).await;
    let out = p.out();
    within(&rt, LIMIT, async {
        let mut s = out
            .new_stream(STREAM_ECHO, Some(Bytes::from_static(b">")))
            .expect("stream");
        let mut req = s.requests.take().expect("input");
        req.send(Bytes::from_static(b"a")).await.expect("send");
        assert_eq!(
            s.responses.next().await,
            Some(Ok(Bytes::from_static(b">a")))
        );
        let call = hang_started(&p, &out, 1).await;
        let cut = if rst {
            p.proxy.cut_rst()
        } else {
            p.proxy.cut_fin()
        };
        assert_eq!(cut, 1);
        assert_eq!(call.await, Err(CallError::Disconnected));
        assert_eq!(s.responses.next().await, Some(Err(CallError::Disconnected)));
        assert!(s.responses.next().await.is_none());
        assert!(req.send(Bytes::from_static(b"b")).await.is_err());
        p.probe
            .wait(|q| q.hang_dropped.load(Ordering::SeqCst) == 1)
            .await;
        until_link_works(&out).await;
        until_link_works(&p.back()).await;
        let mut s = out.new_stream(STREAM_ECHO, None).expect("stream");
        let mut req = s.requests.take().expect("input");
        req.send(Bytes::from_static(b"c")).await.expect("send");
        assert_eq!(s.responses.next().await, Some(Ok(Bytes::from_static(b"c"))));
    })
    .await;
    p.shutdown().await;
}

/// The link is cut with a FIN while a stream and a request are in flight: both end with
/// `Disconnected`, the peer's handler is cancelled, the link comes back.
pub async fn fin_mid_stream(rt: Arc<dyn Runtime>) {
    cut_mid_stream(rt, false).await;
}

/// The same with an RST.
pub async fn rst_mid_stream(rt: Arc<dyn Runtime>) {
    cut_mid_stream(rt, true).await;
}

/// A client drips its upgrade request one byte every 20 ms: the acceptor drops it at
/// the handshake deadline (not before half of it, not after it plus 700 ms of slack),
/// keeps no task for it, and the link is unaffected.
pub async fn dripped_handshake_dropped_at_deadline(rt: Arc<dyn Runtime>) {
    let cfg = fast_config();
    let p = proxied(&rt, cfg.clone()).await;
    let baseline = idle_tasks(&rt, &p.acceptor).await;
    let connects = p.out().stats().connects;
    let addr = p.acceptor_addr;
    within(&rt, LIMIT, async {
        let took = blocking(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            let t0 = Instant::now();
            for b in upgrade_request("/minio/grid/v1", Some("secret")).bytes() {
                if s.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                s.set_nonblocking(true).expect("nonblocking");
                let mut x = [0u8; 64];
                let closed = match s.read(&mut x) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                };
                s.set_nonblocking(false).expect("blocking");
                if closed {
                    return t0.elapsed();
                }
            }
            panic!("the dripping client was never dropped");
        })
        .await;
        assert!(
            took >= cfg.handshake_timeout / 2
                && took <= cfg.handshake_timeout + Duration::from_millis(700),
            "dropped after {took:?}"
        );
        tasks_back_to(&rt, &p.acceptor, baseline).await;
        assert_eq!(p.out().request(ECHO, Bytes::new()).await, Ok(Bytes::new()));
        assert_eq!(p.out().stats().connects, connects);
    })
    .await;
    p.shutdown().await;
}

/// A client completes the WebSocket upgrade and never sends the connect frame: the
/// acceptor closes it by the handshake deadline, keeps no task, the link is unaffected.
pub async fn upgrade_without_connect_frame(rt: Arc<dyn Runtime>) {
    let cfg = fast_config();
    let p = proxied(&rt, cfg.clone()).await;
    let baseline = idle_tasks(&rt, &p.acceptor).await;
    let connects = p.out().stats().connects;
    let addr = p.acceptor_addr;
    within(&rt, LIMIT, async {
        let (head, took) = blocking(move || silent_after_upgrade(addr, Duration::ZERO)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let took = took.expect("the silent client was never dropped");
        assert!(
            took <= cfg.handshake_timeout + Duration::from_millis(700),
            "dropped after {took:?}"
        );
        tasks_back_to(&rt, &p.acceptor, baseline).await;
        assert_eq!(p.out().request(ECHO, Bytes::new()).await, Ok(Bytes::new()));
        assert_eq!(p.out().stats().connects, connects);
    })
    .await;
    p.shutdown().await;
}

/// A ping that comes before the connect request is answered with its pong (RFC 6455
/// §5.5.2); a client that then stays silent is still dropped at the handshake deadline.
/// One that floods pings and never reads its pongs cannot hold the handshake (or its
/// closing) past the deadline either, and leaves no task behind.
pub async fn pings_during_the_handshake(rt: Arc<dyn Runtime>) {
    let cfg = fast_config();
    let p = proxied(&rt, cfg.clone()).await;
    let baseline = idle_tasks(&rt, &p.acceptor).await;
    let addr = p.acceptor_addr;
    within(&rt, LIMIT, async {
        let (pong, took) = blocking(move || {
            let t0 = Instant::now();
            let mut s = upgraded(addr);
            s.write_all(&client_ping(b"hello")).expect("ping");
            let mut pong = [0u8; 7];
            s.read_exact(&mut pong).expect("pong");
            let (closed, _) = wait_closed(&mut s, Duration::from_secs(5));
            (pong, closed.map(|_| t0.elapsed()))
        })
        .await;
        assert_eq!(&pong, b"\x8a\x05hello");
        let took = took.expect("the silent client was never dropped");
        assert!(
            took <= cfg.handshake_timeout + Duration::from_millis(700),
            "{took:?}"
        );

        let (sent, took) = blocking(move || {
            let t0 = Instant::now();
            let mut s = upgraded(addr);
            s.set_write_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            let pings = client_ping(&[7; 125]).repeat(1000);
            let mut sent = 0usize;
            while t0.elapsed() < Duration::from_secs(5) {
                match s.write(&pings) {
                    Ok(n) => sent += n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return (sent, Some(t0.elapsed())),
                }
            }
            (sent, None)
        })
        .await;
        let took = took.expect("the flooding client was never dropped");
        // Enough pings that their pongs fill both sockets' buffers.
        assert!(sent > 8 << 20, "{sent} bytes of pings");
        assert!(
            took <= cfg.handshake_timeout + Duration::from_millis(700),
            "{took:?}"
        );
        tasks_back_to(&rt, &p.acceptor, baseline).await;
        assert_eq!(p.out().request(ECHO, Bytes::new()).await, Ok(Bytes::new()));
    })
    .await;
    p.shutdown().await;
}

/// A socket to `addr`, upgraded to a WebSocket.
fn upgraded(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(upgrade_request("/minio/grid/v1", Some("secret")).as_bytes())
        .expect("write");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A client's ping frame carrying `payload` (at most 125 bytes), masked with the zero
/// key, which leaves the payload as it is.
fn client_ping(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x89, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Connects to `addr`, waits `delay`, upgrades and then sends nothing; returns the
/// response head and how long after the connect the server closed the socket.
fn silent_after_upgrade(addr: SocketAddr, delay: Duration) -> (String, Option<Duration>) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    std::thread::sleep(delay);
    s.write_all(upgrade_request("/minio/grid/v1", Some("secret")).as_bytes())
        .expect("write");
    let head = read_head(&mut s);
    let (closed, _) = wait_closed(&mut s, Duration::from_secs(5));
    (head, closed.map(|_| t0.elapsed()))
}

/// One handshake deadline counts from the TCP accept: a client that upgrades late
/// (0.8 s into a 1 s deadline) and then stays silent is dropped at the deadline, not a
/// full timeout after its upgrade.
pub async fn handshake_deadline_spans_upgrade_and_connect(rt: Arc<dyn Runtime>) {
    let mut cfg = fast_config();
    cfg.handshake_timeout = Duration::from_secs(1);
    let p = proxied(&rt, cfg.clone()).await;
    let baseline = idle_tasks(&rt, &p.acceptor).await;
    let addr = p.acceptor_addr;
    within(&rt, LIMIT, async {
        let delay = Duration::from_millis(800);
        let (head, took) = blocking(move || silent_after_upgrade(addr, delay)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let took = took.expect("the silent client was never dropped");
        // A second full timeout after the upgrade would be 1.8 s.
        assert!(
            took >= delay && took <= cfg.handshake_timeout + Duration::from_millis(400),
            "dropped after {took:?}"
        );
        tasks_back_to(&rt, &p.acceptor, baseline).await;
        assert_eq!(p.out().request(ECHO, Bytes::new()).await, Ok(Bytes::new()));
    })
    .await;
    p.shutdown().await;
}

/// Malformed, oversized and refused upgrade requests are dropped at once (well before
/// the 5 s handshake deadline this scenario sets), wrong routes get 404 and missing
/// tokens 403, a peer that upgrades and then sends garbage is dropped; the acceptor
/// keeps no task for any of them and its link is unaffected.
pub async fn bad_upgrade_requests(rt: Arc<dyn Runtime>) {
    let mut cfg = fast_config();
    cfg.handshake_timeout = Duration::from_secs(5);
    let p = proxied(&rt, cfg).await;
    let baseline = idle_tasks(&rt, &p.acceptor).await;
    let connects = p.out().stats().connects;
    let addr = p.acceptor_addr;
    within(&rt, LIMIT, async {
        let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
            ("garbage", b"HELLO THERE\r\n\r\n".to_vec(), None),
            ("binary", vec![0u8, 159, 255, 13, 10, 13, 10], None),
            (
                "oversized header",
                {
                    let mut r = b"GET /minio/grid/v1 HTTP/1.1\r\nX-Pad: ".to_vec();
                    r.resize(r.len() + 200_000, b'a');
                    r
                },
                None,
            ),
            (
                "too many headers",
                {
                    let mut r = b"GET /minio/grid/v1 HTTP/1.1\r\n".to_vec();
                    for i in 0..300 {
                        r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
                    }
                    r.extend_from_slice(b"\r\n");
                    r
                },
                None,
            ),
            (
                "wrong route",
                upgrade_request("/elsewhere", Some("secret")).into_bytes(),
                Some("HTTP/1.1 404"),
            ),
            (
                "no token",
                upgrade_request("/minio/grid/v1", None).into_bytes(),
                Some("HTTP/1.1 403"),
            ),
            (
                "bad token",
                upgrade_request("/minio/grid/v1", Some("forged")).into_bytes(),
                Some("HTTP/1.1 403"),
            ),
        ];
        for (name, bytes, want) in cases {
            let (took, got) = blocking(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                // The server may close before all of it is written.
                let _ = s.write_all(&bytes);
                wait_closed(&mut s, Duration::from_secs(3))
            })
            .await;
            let took = took.unwrap_or_else(|| panic!("{name}: not dropped"));
            assert!(
                took < Duration::from_secs(2),
                "{name}: dropped after {took:?}"
            );
            if let Some(want) = want {
                let text = String::from_utf8_lossy(&got);
                assert!(text.starts_with(want), "{name}: {text}");
            }
        }
        // Upgraded, then a frame no WebSocket peer may send (unmasked, reserved opcode).
        let took = blocking(move || {
            let mut s = upgraded(addr);
            let _ = s.write_all(&[0x83, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8]);
            wait_closed(&mut s, Duration::from_secs(3)).0
        })
        .await;
        let took = took.expect("garbage after upgrade: not dropped");
        assert!(took < Duration::from_secs(2), "dropped after {took:?}");
        tasks_back_to(&rt, &p.acceptor, baseline).await;
        assert_eq!(p.out().request(ECHO, Bytes::new()).await, Ok(Bytes::new()));
        assert_eq!(p.out().stats().connects, connects);
    })
    .await;
    p.shutdown().await;
}

/// The link flaps 50 times (FIN and RST in turn) while requests are in flight: no
/// deadlock, no request runs twice, every call ends exactly once (with its echo or
/// `Disconnected`), and the link is up at the end.
pub async fn reconnect_storm(rt: Arc<dyn Runtime>) {
    let p = proxied(&rt, fast_config()).await;
    let out = p.out();
    let tally = Arc::new(Tally::default());
    const FLAPS: usize = 50;
    const K: u64 = 8;
    within(&rt, Duration::from_secs(60), async {
        for flap in 0..FLAPS as u64 {
            for k in 0..K {
                let id = flap * K + k;
                spawn_call(
                    &rt,
                    &tally,
                    &out,
                    COUNT,
                    id,
                    Bytes::from(id.to_be_bytes().to_vec()),
                );
            }
            // Let some calls reach the peer before the cut.
            sleep(&rt, Duration::from_millis(flap % 3)).await;
            let cut = if flap % 2 == 0 {
                p.proxy.cut_fin()
            } else {
                p.proxy.cut_rst()
            };
            assert!(cut >= 1, "flap {flap}: no live connection to cut");
            tally.wait(((flap + 1) * K) as usize).await;
            until_link_works(&out).await;
        }
        until_link_works(&p.back()).await;
    })
    .await;
    let results = tally.take();
    assert_eq!(results.len(), FLAPS * K as usize);
    let mut ids: Vec<u64> = results.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), results.len(), "a call ended twice");
    let mut ok = 0;
    for (id, r) in &results {
        match r {
            Ok(b) => {
                assert_eq!(&b[..], &id.to_be_bytes());
                ok += 1;
            }
            Err(CallError::Disconnected) => {}
            Err(e) => panic!("call {id}: {e}"),
        }
    }
    let counts = p.counts.lock().expect("counts").clone();
    assert!(counts.values().all(|&n| n == 1), "a request ran twice");
    assert!(counts.len() >= ok);
    let stats = out.stats();
    assert!(stats.connected);
    assert!(stats.reconnects >= FLAPS as u64, "{stats:?}");
    p.shutdown().await;
}

/// Every byte both ways is written 1 byte at a time, handshake included: requests
/// small and large, errors and streams all work.
pub async fn one_byte_chunks(rt: Arc<dyn Runtime>) {
    // Liveness is not what this shows: 1-byte writes of 16 KiB under a loaded machine
    // may hold a pong back longer than the fast config's 400 ms.
    let mut cfg = fast_config();
    cfg.ping_interval = Duration::from_secs(2);
    cfg.pong_timeout = Duration::from_secs(10);
    let p = proxied(&rt, cfg).await;
    let out = p.out();
    within(&rt, LIMIT, async {
        p.proxy.chunk1(Dir::ToTarget);
        p.proxy.chunk1(Dir::ToClient);
        p.proxy.cut_fin();
        until_link_works(&out).await;
        until_link_works(&p.back()).await;
        let big: Bytes = (0..16 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        assert_eq!(out.request(ECHO, big.clone()).await.as_ref(), Ok(&big));
        assert_eq!(p.back().request(ECHO, big.clone()).await.as_ref(), Ok(&big));
        assert_eq!(
            out.request(FAIL, Bytes::from_static(b"no")).await,
            Err(CallError::Remote("no".into()))
        );
        let mut s = out.new_stream(STREAM_ECHO, None).expect("stream");
        let mut req = s.requests.take().expect("input");
        for i in 0..5u8 {
            req.send(Bytes::from(vec![i])).await.expect("send");
            assert_eq!(s.responses.next().await, Some(Ok(Bytes::from(vec![i]))));
        }
        req.close();
        assert!(s.responses.next().await.is_none());
        let mut s = out
            .new_stream(PUSH, Some(Bytes::from_static(&[20])))
            .expect("push");
        for i in 0..20u8 {
            assert_eq!(s.responses.next().await, Some(Ok(Bytes::from(vec![i]))));
        }
        assert!(s.responses.next().await.is_none());
        assert_eq!(out.stats().reconnects, 1);
    })
    .await;
    p.shutdown().await;
}

/// A link that keeps moving is not a stalled one, however long a message takes: the
/// proxy stops reading for stretches shorter than `write_stall_timeout`, with short
/// bursts between them, so one large message takes several timeouts to cross while the
/// socket never goes a whole timeout without taking bytes. The writers' stall timers
/// are not set again for every write that blocks after progress: about one per
/// timeout while writes block.
pub async fn slow_link_is_not_a_stall(rt: Arc<dyn Runtime>) {
    let stall = Duration::from_secs(2);
    let pause = Duration::from_millis(700);
    // Stall timers are set between 1.3 s (set again after firing, the socket having
    // taken bytes at most one pause earlier) and 2 s ahead; this scenario's other
    // timers are its 5 ms and 700 ms sleeps, pings 5 s ahead and deadlines further.
    let (rt, stall_timers) =
        crate::suite::timers_counted(rt, stall - pause..stall + Duration::from_millis(1));
    let mut cfg = fast_config();
    cfg.write_stall_timeout = stall;
    cfg.ping_interval = Duration::from_secs(5);
    cfg.pong_timeout = Duration::from_secs(30);
    cfg.max_frame_size = 64 << 20;
    cfg.max_queued_bytes = 128 << 20;
    let p = proxied(&rt, cfg).await;
    let out = p.out();
    within(&rt, LIMIT, async {
        until_link_works(&out).await;
        // Far more than the socket buffers on both sides of the proxy hold, so the
        // writer blocks during every pause.
        let big: Bytes = (0..40 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let toggle = async {
            loop {
                p.proxy.stall(dir(true));
                sleep(&rt, pause).await;
                p.proxy.pass();
                sleep(&rt, Duration::from_millis(5)).await;
            }
        };
        let t0 = Instant::now();
        let call = out.request(ECHO, big.clone());
        let r = match futures_util::future::select(Box::pin(call), Box::pin(toggle)).await {
            futures_util::future::Either::Left((r, _)) => r,
            futures_util::future::Either::Right(((), _)) => unreachable!("the toggle never ends"),
        };
        let took = t0.elapsed();
        p.proxy.pass();
        assert!(
            r.as_ref() == Ok(&big),
            "the echo failed after {took:?}: {:?}",
            r.map(|b| b.len())
        );
        assert!(
            took > stall + pause,
            "the message crossed in {took:?}: the link was not slow enough to show anything"
        );
        assert_eq!(out.stats().reconnects, 0, "the link was dropped as stalled");
        // Both nodes write the message (the request, then the echo); each sets one
        // timer for its first blocked write and one more each time it fires early.
        let most = 2 * (took.as_millis() / stall.as_millis() + 2) as usize;
        let set = stall_timers.load(Ordering::SeqCst);
        assert!(
            (1..=most).contains(&set),
            "{set} stall timers in {took:?} (at most {most} expected)"
        );
    })
    .await;
    p.shutdown().await;
}

/// Connections reset before the upgrade, garbage upgrades and silent sockets do not
/// stop the listener: afterwards the dialer reconnects through it, and the acceptor
/// keeps no task for any of them.
pub async fn listener_survives_failed_connections(rt: Arc<dyn Runtime>) {
    let p = proxied(&rt, fast_config()).await;
    let baseline = idle_tasks(&rt, &p.acceptor).await;
    let addr = p.acceptor_addr;
    within(&rt, LIMIT, async {
        blocking(move || {
            let mut keep = Vec::new();
            for i in 0..60 {
                let mut s = TcpStream::connect(addr).expect("connect");
                match i % 3 {
                    // Reset at once, likely before the accept.
                    0 => {
                        socket2::SockRef::from(&s)
                            .set_linger(Some(Duration::ZERO))
                            .expect("linger");
                    }
                    1 => {
                        let _ = s.write_all(b"NOT HTTP\r\n\r\n");
                    }
                    // Silent until the handshake deadline.
                    _ => keep.push(s),
                }
            }
            for mut s in keep {
                let (closed, _) = wait_closed(&mut s, Duration::from_secs(5));
                assert!(closed.is_some(), "a silent socket was kept open");
            }
        })
        .await;
        tasks_back_to(&rt, &p.acceptor, baseline).await;
        p.proxy.cut_rst();
        until_link_works(&p.out()).await;
        until_link_works(&p.back()).await;
    })
    .await;
    p.shutdown().await;
}

/// The shortest pause a test accepts between an `accept` that failed for want of
/// descriptors and the next one: the manager pauses 50 ms (a sleep never ends early);
/// a listener that spins retries within microseconds.
const MIN_ACCEPT_PAUSE: Duration = Duration::from_millis(25);

/// Asserts that after every `accept` that failed as `backs_off` says, the listener
/// paused at least [`MIN_ACCEPT_PAUSE`] before the next.
fn assert_paused_after(
    log: &[(Instant, AcceptOutcome)],
    backs_off: impl Fn(&AcceptOutcome) -> bool,
) {
    let mut paused = 0;
    for w in log.windows(2) {
        if backs_off(&w[0].1) {
            let gap = w[1].0 - w[0].0;
            assert!(
                gap >= MIN_ACCEPT_PAUSE,
                "accept retried {gap:?} after {:?}",
                w[0].1
            );
            paused += 1;
        }
    }
    assert!(paused > 0, "no failed accept was followed by another");
}

fn descriptor_fault(o: &AcceptOutcome) -> bool {
    matches!(o, AcceptOutcome::Scripted(f) if *f == EMFILE || *f == ENFILE)
}

/// The listener's own `accept` fails, from its first call: a burst of errors about the
/// process (out of descriptors: `EMFILE`, `ENFILE`) and about single connections (300
/// aborted or reset before the accept); the same burst again later, while the dialer
/// reconnects. The listener keeps accepting through both: the link comes up and comes
/// back, each descriptor error is followed by a pause, and the aborted connections are
/// skipped without one (300 pauses would take 15 s).
pub async fn listener_survives_accept_errors(rt: Arc<dyn Runtime>) {
    let script = Arc::new(AcceptScript::default());
    let burst = || {
        let mut b = vec![EMFILE, EMFILE, ENFILE];
        b.extend((0..300).map(|i| if i % 2 == 0 { ABORTED } else { RESET }));
        b.push(EMFILE);
        b
    };
    script.push(burst());
    let acceptor_rt = accept_faults::runtime(rt.clone(), script.clone());
    let t0 = Instant::now();
    let p = proxied_on(&rt, &acceptor_rt, fast_config()).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "link up after {took:?}");
    assert_eq!(script.pending(), 0);
    let accepted = |o: &AcceptOutcome| *o == AcceptOutcome::Accepted;
    within(&rt, LIMIT, async {
        let before = script.count(accepted);
        // Returned once the dialer's next connection waits in the backlog.
        script.push(burst());
        p.proxy.cut_rst();
        until_link_works(&p.out()).await;
        until_link_works(&p.back()).await;
        assert_eq!(script.pending(), 0);
        assert!(script.count(accepted) > before);
    })
    .await;
    let log = script.log();
    assert_eq!(log.iter().filter(|(_, o)| descriptor_fault(o)).count(), 8);
    assert_paused_after(&log, descriptor_fault);
    p.shutdown().await;
}

/// `accept` keeps failing with `EMFILE` (the process is out of descriptors) while the
/// dialer reconnects: the listener neither stops nor spins (every retry comes at least
/// 25 ms after the failure before it), and the link comes back as soon as descriptors
/// are available again. Shutting down while it fails leaves no task.
pub async fn persistent_accept_error_backs_off(rt: Arc<dyn Runtime>) {
    let script = Arc::new(AcceptScript::default());
    let acceptor_rt = accept_faults::runtime(rt.clone(), script.clone());
    let p = proxied_on(&rt, &acceptor_rt, fast_config()).await;
    let failed = |o: &AcceptOutcome| *o == AcceptOutcome::Scripted(EMFILE);
    within(&rt, LIMIT, async {
        script.fail_until_cleared(EMFILE);
        p.proxy.cut_rst();
        while script.count(failed) < 10 {
            sleep(&rt, Duration::from_millis(5)).await;
        }
        script.clear();
        until_link_works(&p.out()).await;
        until_link_works(&p.back()).await;
        assert_paused_after(&script.log(), failed);
        // Once more, and shut down while the listener is failing.
        script.fail_until_cleared(EMFILE);
        p.proxy.cut_rst();
        let n = script.count(failed);
        while script.count(failed) < n + 2 {
            sleep(&rt, Duration::from_millis(5)).await;
        }
    })
    .await;
    p.shutdown().await;
    assert_paused_after(&script.log(), failed);
}

/// The process runs out of descriptors while a connection waits: the listener's real
/// `accept` fails with `EMFILE` and is retried after a pause, not in a spin, and the
/// connection is accepted and upgraded once descriptors are free again.
///
/// It fills the process's descriptor table, so it must run alone in its process:
/// `tests/descriptors.rs` runs it in a child process with a low `RLIMIT_NOFILE`.
pub async fn accept_survives_descriptor_exhaustion(rt: Arc<dyn Runtime>) {
    let script = Arc::new(AcceptScript::default());
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let host = format!("http://{addr}");
    // A peer that dials this node: a node that dials would take descriptors.
    let peer = peer_that_dials(&host);
    let m = Manager::builder(&host, &[&host, &peer])
        .config(fast_config())
        .listener(l)
        .token_validator(secret_only)
        .start(accept_faults::runtime(rt.clone(), script.clone()))
        .expect("manager starts");
    // The client's descriptor is taken before the table is filled.
    let client =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let mut filler = Vec::new();
    let full = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => filler.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(full.raw_os_error(), EMFILE_ERRNO, "{full}");
    // The kernel completes the handshake into the backlog; the accept cannot take it.
    client.connect(&addr.into()).expect("connect");
    let emfile = |o: &AcceptOutcome| matches!(o, AcceptOutcome::Failed(_, n) if *n == EMFILE_ERRNO);
    within(&rt, LIMIT, async {
        while script.count(emfile) < 5 {
            sleep(&rt, Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(script.count(|o| *o == AcceptOutcome::Accepted), 0);
    drop(filler);
    let mut s = TcpStream::from(client);
    let head = within(
        &rt,
        LIMIT,
        blocking(move || {
            s.write_all(upgrade_request("/minio/grid/v1", Some("secret")).as_bytes())
                .expect("write");
            read_head(&mut s)
        }),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(script.count(|o| *o == AcceptOutcome::Accepted), 1);
    assert_paused_after(&script.log(), emfile);
    m.shutdown().await;
    assert_eq!(m.running_tasks(), 0);
}

/// `EMFILE` on Linux and the BSDs.
const EMFILE_ERRNO: Option<i32> = Some(24);

/// The path refuses connections (accepted, then dropped at once) and then drips the
/// dialer's bytes one every 5 ms (an upgrade takes longer than the dial and handshake
/// deadlines): the dialer keeps trying on its schedule without a link, calls fail with
/// `Disconnected` at once, and the link comes back as soon as the path is healthy.
pub async fn refused_and_dripping_paths(rt: Arc<dyn Runtime>) {
    let p = proxied(&rt, fast_config()).await;
    let out = p.out();
    within(&rt, LIMIT, async {
        p.proxy.refuse();
        p.proxy.cut_fin();
        let attempts = out.stats().dial_attempts;
        let accepted = p.proxy.accepted();
        while out.stats().dial_attempts < attempts + 3 || p.proxy.accepted() < accepted + 3 {
            sleep(&rt, Duration::from_millis(5)).await;
        }
        assert!(!out.is_connected());
        assert_eq!(
            out.request(ECHO, Bytes::new()).await,
            Err(CallError::Disconnected)
        );
        p.proxy.pass();
        p.proxy.drip(Dir::ToTarget, Duration::from_millis(5));
        let attempts = out.stats().dial_attempts;
        while out.stats().dial_attempts < attempts + 2 {
            sleep(&rt, Duration::from_millis(5)).await;
        }
        assert!(!out.is_connected());
        p.proxy.pass();
        until_link_works(&out).await;
        until_link_works(&p.back()).await;
    })
    .await;
    p.shutdown().await;
}

/// Shutdown with calls in flight over a link whose peer stopped reading both ways:
/// shutdown does not wait on the stuck socket, every call ends with `Disconnected`
/// and no task is left.
pub async fn shutdown_with_stalled_peer(rt: Arc<dyn Runtime>) {
    let mut cfg = fast_config();
    cfg.write_stall_timeout = Duration::from_secs(30);
    cfg.ping_interval = Duration::from_secs(10);
    cfg.pong_timeout = Duration::from_secs(20);
    let p = proxied(&rt, cfg).await;
    let out = p.out();
    let tally = Arc::new(Tally::default());
    within(&rt, LIMIT, async {
        let call = hang_started(&p, &out, 1).await;
        let mut s = out.new_stream(STREAM_ECHO, None).expect("stream");
        p.proxy.stall(Dir::ToTarget);
        p.proxy.stall(Dir::ToClient);
        for i in 0..32 {
            spawn_call(&rt, &tally, &out, ECHO, i, vec![1u8; 1 << 20].into());
        }
        let t0 = Instant::now();
        p.dialer.shutdown().await;
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(call.await, Err(CallError::Disconnected));
        assert_eq!(s.responses.next().await, Some(Err(CallError::Disconnected)));
        tally.wait(32).await;
        assert!(
            tally
                .take()
                .iter()
                .all(|(_, r)| matches!(r, Err(CallError::Disconnected | CallError::Congested)))
        );
        assert_eq!(p.dialer.running_tasks(), 0);
    })
    .await;
    p.shutdown().await;
}

/// `max_muxes` at its edge, in both directions: with a limit of 4, four calls run and
/// the fifth is refused locally with `TooManyCalls(4)`; a call freed only on our side
/// (a dropped request, which the peer keeps running until its deadline) leaves the
/// peer at its limit, so the next call is refused by the peer; the link stays up, and
/// calls work again once the peer's handlers reach their deadline.
pub async fn max_muxes_at_the_edge(rt: Arc<dyn Runtime>) {
    let mut cfg = fast_config();
    cfg.max_muxes = 4;
    let p = proxied(&rt, cfg).await;
    let out = p.out();
    within(&rt, LIMIT, async {
        let mut calls = Vec::new();
        for n in 1..=4 {
            let c = out.clone();
            let call = Box::pin(async move {
                c.request_with_deadline(HANG, Bytes::new(), Duration::from_millis(500))
                    .await
            });
            let started = p
                .probe
                .wait(move |q| q.hang_started.load(Ordering::SeqCst) == n);
            match select(call, std::pin::pin!(started)).await {
                Either::Left(_) => panic!("HANG answered"),
                Either::Right((_, call)) => calls.push(call),
            }
        }
        assert_eq!(
            out.request(ECHO, Bytes::new()).await,
            Err(CallError::TooManyCalls(4))
        );
        assert!(matches!(
            out.new_stream(PUSH, None),
            Err(CallError::TooManyCalls(4))
        ));
        drop(calls.pop());
        match out.request(ECHO, Bytes::new()).await {
            Err(CallError::Refused(t)) => assert!(t.contains("limit 4"), "{t}"),
            other => panic!("the peer took a fifth call: {other:?}"),
        }
        for c in calls {
            assert_eq!(c.await, Err(CallError::DeadlineExceeded));
        }
        p.probe
            .wait(|q| q.hang_dropped.load(Ordering::SeqCst) == 4)
            .await;
        assert_eq!(out.request(ECHO, Bytes::new()).await, Ok(Bytes::new()));
        assert_eq!(out.stats().connects, 1);
    })
    .await;
    p.shutdown().await;
}

/// A peer that pings at the WebSocket level while the node's answer is still being
/// written: the node's pongs wait until the answer's last byte is out instead of cutting
/// into it, and only the latest ping is answered. A raw peer asks for the echo of 15 MiB
/// (more than the two socket buffers hold), pauses so that the node's write blocks part
/// way, sends 500 pings at once, then reads the answer while a second thread sends a
/// ping every millisecond: the answer arrives intact, pongs follow it, and of the 500
/// only the last can have been answered.
pub async fn websocket_pings_during_a_blocked_write(rt: Arc<dyn Runtime>) {
    let (node, addr, peer_host, _) = node_for_a_raw_peer(&rt);
    let (answer_ok, pongs) = within(
        &rt,
        LIMIT,
        blocking(move || pings_during_a_large_answer(addr, &peer_host, 15 << 20)),
    )
    .await;
    assert!(answer_ok, "the 15 MiB answer arrived damaged");
    assert!(!pongs.is_empty(), "no pong after the answer");
    let burst: Vec<&Vec<u8>> = pongs.iter().filter(|p| p.len() == 2).collect();
    assert!(
        burst.iter().all(|p| p[..] == 499u16.to_be_bytes()),
        "pongs for pings that a later ping replaced: {burst:?}"
    );
    node.shutdown().await;
    assert_eq!(node.running_tasks(), 0);
}

/// The raw peer of [`websocket_pings_during_a_blocked_write`]: returns whether the
/// echo of `len` bytes came back equal, and the payloads of the pongs until the first
/// one after it.
fn pings_during_a_large_answer(
    addr: SocketAddr,
    peer_host: &str,
    len: usize,
) -> (bool, Vec<Vec<u8>>) {
    use grid_core::codec::{Flags, Frame, Op};
    use tungstenite::{Message, Utf8Bytes};

    let mut ws = raw_peer(addr, peer_host);
    let big: Bytes = (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    let mut request = Frame::new(Op::Request);
    request.mux_id = 1;
    request.handler = ECHO;
    request.deadline_ms = 30_000;
    request.flags = Flags::EOF | Flags::CRC;
    request.payload = big.clone();
    ws.send(Message::Binary(request.to_bytes())).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    // 500 pings with 2-byte payloads, read by the node while its write is blocked.
    let mut tcp = ws.get_ref().try_clone().expect("clone socket");
    for i in 0..500u16 {
        let [hi, lo] = i.to_be_bytes();
        tcp.write_all(&client_ping(&[hi, lo])).expect("ping");
    }
    std::thread::sleep(Duration::from_millis(100));
    // Pings written straight to the socket (masked with a zero key), one a millisecond,
    // from the same clone, while this thread reads; nothing else writes until the
    // pinger stops.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for i in 0u8.. {
                if stop.load(Ordering::Relaxed) || tcp.write_all(&client_ping(&[i])).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let (mut answer_ok, mut pongs) = (None, Vec::new());
    while answer_ok.is_none() || pongs.is_empty() {
        match ws.read() {
            Ok(Message::Binary(m)) => {
                if let Some(f) = frames(&m).into_iter().find(|f| f.op == Op::Response) {
                    answer_ok = Some(f.mux_id == 1 && f.payload == big);
                }
            }
            Ok(Message::Pong(p)) => pongs.push(p.to_vec()),
            Ok(_) => {}
            Err(e) => panic!("read after {} pongs: {e}", pongs.len()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    pinger.join().expect("pinger");
    let _ = ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: Utf8Bytes::from_static("done"),
    }));
    (answer_ok == Some(true), pongs)
}

/// A node on a fresh loopback listener that a raw peer can dial: the node, its address,
/// the raw peer's host string, and what the node's handlers observed.
fn node_for_a_raw_peer(rt: &Arc<dyn Runtime>) -> (Manager, SocketAddr, String, Arc<Probe>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let node_host = format!("http://{addr}");
    let peer_host = peer_that_dials(&node_host);
    let probe = Arc::new(Probe::default());
    let node = handlers(
        Manager::builder(node_host.clone(), &[node_host.clone(), peer_host.clone()])
            .config(test_config())
            .listener(l)
            .token_validator(secret_only),
        &probe,
        false,
    )
    .start(rt.clone())
    .expect("node starts");
    (node, addr, peer_host, probe)
}

/// A raw peer named `peer_host`, connected to the node at `addr` and accepted by it.
fn raw_peer(addr: SocketAddr, peer_host: &str) -> tungstenite::WebSocket<TcpStream> {
    raw_peer_after(addr, peer_host, Vec::new())
}

/// [`raw_peer`], sending `first` between the upgrade and its connect request.
fn raw_peer_after(
    addr: SocketAddr,
    peer_host: &str,
    first: Vec<tungstenite::Message>,
) -> tungstenite::WebSocket<TcpStream> {
    use grid_core::codec::{ConnectResponse, Op};
    use grid_core::driver::MINIO_ROUTE;
    use tungstenite::Message;
    use tungstenite::client::ClientRequestBuilder;

    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let url = format!("ws://{addr}{MINIO_ROUTE}");
    let req = ClientRequestBuilder::new(url.parse().expect("url"))
        .with_header("Authorization", "Bearer secret");
    let (mut ws, _) = tungstenite::client(req, tcp).expect("upgrade");
    for m in first {
        ws.send(m).expect("send");
    }
    ws.send(Message::Binary(connect_message(peer_host, 0x5b)))
        .expect("send");
    loop {
        if let Message::Binary(m) = ws.read().expect("read") {
            if let Some(f) = frames(&m).into_iter().find(|f| f.op == Op::ConnectResponse) {
                let resp = ConnectResponse::decode(&f.payload).expect("connect response");
                assert!(resp.accepted, "refused: {}", resp.rejected_reason);
                return ws;
            }
        }
    }
}

/// The frames of one of the node's messages.
fn frames(m: &Bytes) -> Vec<grid_core::codec::Frame> {
    use grid_core::codec;
    codec::decode(m, codec::DEFAULT_MAX_FRAME_SIZE)
        .and_then(codec::Message::into_frames)
        .expect("the node's message decodes")
}

/// A call cancelled in the same message that made it: its handler runs its first poll
/// after both, waits, and is dropped at once, since the call has already ended; nothing
/// is left waiting for a cancellation that came before it could watch for one.
pub async fn call_cancelled_in_its_own_message(rt: Arc<dyn Runtime>) {
    use grid_core::codec::{self, Flags, Frame, Op};
    let (node, addr, peer_host, probe) = node_for_a_raw_peer(&rt);
    let ws = within(
        &rt,
        LIMIT,
        blocking(move || {
            let mut ws = raw_peer(addr, &peer_host);
            let mut request = Frame::new(Op::Request);
            request.mux_id = 1;
            request.handler = HANG;
            request.deadline_ms = 30_000;
            request.flags = Flags::EOF | Flags::CRC;
            let mut cancel = Frame::new(Op::DisconnectServerMux);
            cancel.mux_id = 1;
            cancel.flags = Flags::CRC;
            let mut both = bytes::BytesMut::new();
            codec::encode_message(&[request, cancel], &mut both);
            ws.send(tungstenite::Message::Binary(both.freeze()))
                .expect("send");
            ws
        }),
    )
    .await;
    within(&rt, LIMIT, async {
        probe
            .wait(|p| p.hang_started.load(Ordering::SeqCst) == 1)
            .await;
        probe
            .wait(|p| p.hang_dropped.load(Ordering::SeqCst) == 1)
            .await;
    })
    .await;
    drop(ws);
    node.shutdown().await;
    assert_eq!(node.running_tasks(), 0);
}

/// A peer that sends WebSocket messages the protocol has no use for, text and pongs
/// nobody asked for, before its connect request and in the session: they are skipped,
/// the handshake and the link go on, and a request sent after them is answered.
pub async fn stray_websocket_messages_are_skipped(rt: Arc<dyn Runtime>) {
    use grid_core::codec::{Flags, Frame, Op};
    use tungstenite::Message;
    let stray = || {
        vec![
            Message::Text("not grid".into()),
            Message::Pong(Bytes::from_static(b"unasked")),
        ]
    };
    let (node, addr, peer_host, _probe) = node_for_a_raw_peer(&rt);
    let answer = within(
        &rt,
        LIMIT,
        blocking(move || {
            let mut ws = raw_peer_after(addr, &peer_host, stray());
            for m in stray() {
                ws.send(m).expect("send");
            }
            let mut request = Frame::new(Op::Request);
            request.mux_id = 1;
            request.handler = ECHO;
            request.deadline_ms = 30_000;
            request.flags = Flags::EOF | Flags::CRC;
            request.payload = Bytes::from_static(b"still here");
            ws.send(Message::Binary(request.to_bytes())).expect("send");
            loop {
                if let Message::Binary(m) = ws.read().expect("read") {
                    if let Some(f) = frames(&m).into_iter().find(|f| f.op == Op::Response) {
                        return (f.mux_id, f.payload);
                    }
                }
            }
        }),
    )
    .await;
    assert_eq!(answer, (1, Bytes::from_static(b"still here")));
    node.shutdown().await;
    assert_eq!(node.running_tasks(), 0);
}

/// Defines one `#[test]` per hardening scenario, each run with `$block_on` on the
/// runtime `$rt`.
#[macro_export]
macro_rules! hardening_tests {
    ($block_on:path, $rt:expr) => {
        $crate::scenario_tests!(hardening, $block_on, $rt;
            stalled_reader_bounded_queue,
            silent_peer_detected_by_pings,
            fin_mid_stream,
            rst_mid_stream,
            dripped_handshake_dropped_at_deadline,
            upgrade_without_connect_frame,
            pings_during_the_handshake,
            stray_websocket_messages_are_skipped,
            handshake_deadline_spans_upgrade_and_connect,
            bad_upgrade_requests,
            reconnect_storm,
            one_byte_chunks,
            slow_link_is_not_a_stall,
            listener_survives_failed_connections,
            listener_survives_accept_errors,
            persistent_accept_error_backs_off,
            refused_and_dripping_paths,
            shutdown_with_stalled_peer,
            max_muxes_at_the_edge,
            websocket_pings_during_a_blocked_write,
            call_cancelled_in_its_own_message,
        );
    };
}
