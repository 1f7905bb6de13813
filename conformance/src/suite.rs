//! Async scenarios over real loopback sockets, written once and run on every runtime.
//!
//! Each scenario is an `async fn(Arc<dyn Runtime>)`; a runtime's test file runs them on
//! its executor. Scenarios wait on events (a link coming up, a handler observing its
//! cancellation), never on fixed sleeps; [`within`] only bounds a wait so that a bug
//! fails the test instead of hanging it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream as _;
use futures_util::future::{Either, select};
use grid_core::driver::{
    BoxFuture, BoxIo, Connection, Listener, Manager, ManagerBuilder, Pacing, RemoteError, Request,
    Runtime, StreamCtx, StreamOptions,
};
use grid_core::proto::{CallError, Config};

/// Echoes the request.
pub const ECHO: u8 = 1;
/// Fails with the request as the error text.
pub const FAIL: u8 = 2;
/// Never answers (until cancelled).
pub const HANG: u8 = 3;
/// Registered on node 0 only.
pub const ONLY_FIRST: u8 = 4;
/// Panics.
pub const PANIC: u8 = 5;
/// Panics in the handler closure itself, before it returns a future (on an empty
/// request; echoes otherwise).
pub const PANIC_EARLY: u8 = 6;
/// Stream (1/1): answers each item with the initial payload followed by the item.
pub const STREAM_ECHO: u8 = 10;
/// Stream without input (0/1): sends as many one-byte items as the payload's first byte
/// says (or the u16 in its first two bytes, when it has two), then ends.
pub const PUSH: u8 = 11;
/// Stream (1/1): waits for its cancellation and records it.
pub const WAIT_CANCEL: u8 = 12;
/// Stream (5/5): waits for the gate, then echoes every item.
pub const GATED: u8 = 13;
/// Stream without input (0/1): one item, then an error.
pub const STREAM_FAIL: u8 = 14;
/// Stream without input (0/8): [`PUSH`] with an output capacity of 8 (credits return two
/// at a time).
pub const PUSH8: u8 = 15;
/// The subroute [`STREAM_ECHO`] is also registered on.
pub const ROUTE: &str = "subroute/1";

/// What the handlers of a test cluster observed; every change wakes [`Probe::wait`].
#[derive(Default)]
pub struct Probe {
    /// HANG handlers started.
    pub hang_started: AtomicUsize,
    /// HANG handlers dropped (cancelled).
    pub hang_dropped: AtomicUsize,
    /// WAIT_CANCEL handlers started.
    pub wait_started: AtomicUsize,
    /// WAIT_CANCEL handlers that saw their cancellation signal.
    pub wait_cancelled: AtomicUsize,
    /// Items GATED handlers processed.
    pub gated_items: AtomicUsize,
    gate: Arc<futures_util::lock::Mutex<()>>,
    wakers: Mutex<Vec<Waker>>,
}

impl Probe {
    fn bump(&self, c: &AtomicUsize) {
        c.fetch_add(1, Ordering::SeqCst);
        for w in self.wakers.lock().expect("probe lock").drain(..) {
            w.wake();
        }
    }

    /// Waits until `cond` holds (re-checked after every handler observation).
    pub async fn wait(&self, cond: impl Fn(&Probe) -> bool) {
        std::future::poll_fn(|cx| {
            if cond(self) {
                return Poll::Ready(());
            }
            self.wakers
                .lock()
                .expect("probe lock")
                .push(cx.waker().clone());
            if cond(self) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Closes the gate GATED handlers wait on; dropping the guard opens it.
    pub async fn close_gate(&self) -> futures_util::lock::OwnedMutexGuard<()> {
        self.gate.clone().lock_owned().await
    }
}

struct DropBump(Arc<Probe>);

impl Drop for DropBump {
    fn drop(&mut self) {
        self.0.bump(&self.0.hang_dropped);
    }
}

/// Registers the suite's handlers.
pub fn handlers(b: ManagerBuilder, probe: &Arc<Probe>, first: bool) -> ManagerBuilder {
    let p1 = probe.clone();
    let p2 = probe.clone();
    let p3 = probe.clone();
    let mut b = b
        .single(ECHO, |r: Request| async move { Ok(r.payload) })
        .and_then(|b| {
            b.single(FAIL, |r: Request| async move {
                Err(RemoteError(
                    String::from_utf8_lossy(&r.payload).into_owned(),
                ))
            })
        })
        .and_then(|b| {
            b.single(HANG, move |_r: Request| {
                let p = p1.clone();
                async move {
                    p.bump(&p.hang_started);
                    let _guard = DropBump(p);
                    std::future::pending::<Result<Bytes, RemoteError>>().await
                }
            })
        })
        .and_then(|b| {
            b.single(PANIC, |_r: Request| async move {
                if true {
                    panic!("handler exploded");
                }
                Ok(Bytes::new())
            })
        })
        .and_then(|b| {
            b.single(PANIC_EARLY, |r: Request| {
                assert!(!r.payload.is_empty(), "exploded before its first await");
                async move { Ok(r.payload) }
            })
        })
        .and_then(|b| b.stream(STREAM_ECHO, StreamOptions::default(), stream_echo))
        .and_then(|b| b.stream_on(STREAM_ECHO, ROUTE, StreamOptions::default(), stream_echo))
        .and_then(|b| {
            b.stream(
                PUSH,
                StreamOptions {
                    in_capacity: 0,
                    out_capacity: 1,
                },
                push,
            )
        })
        .and_then(|b| {
            b.stream(
                PUSH8,
                StreamOptions {
                    in_capacity: 0,
                    out_capacity: 8,
                },
                push,
            )
        })
        .and_then(|b| {
            b.stream(
                WAIT_CANCEL,
                StreamOptions::default(),
                move |ctx: StreamCtx| {
                    let p = p2.clone();
                    async move {
                        let mut cancelled = ctx.cancelled;
                        // Counted only while `is_cancelled` agrees: not yet at the
                        // start, and once the signal has fired.
                        if !cancelled.is_cancelled() {
                            p.bump(&p.wait_started);
                        }
                        (&mut cancelled).await;
                        if cancelled.is_cancelled() {
                            p.bump(&p.wait_cancelled);
                        }
                        Ok(())
                    }
                },
            )
        })
        .and_then(|b| {
            b.stream(
                GATED,
                StreamOptions {
                    in_capacity: 5,
                    out_capacity: 5,
                },
                move |mut ctx: StreamCtx| {
                    let p = p3.clone();
                    async move {
                        drop(p.gate.lock().await);
                        let mut input = ctx.input.take().expect("gated takes input");
                        while let Some(item) = input.next().await {
                            p.bump(&p.gated_items);
                            ctx.output
                                .send(item)
                                .await
                                .map_err(|e| RemoteError(e.to_string()))?;
                        }
                        Ok(())
                    }
                },
            )
        })
        .and_then(|b| {
            b.stream(
                STREAM_FAIL,
                StreamOptions {
                    in_capacity: 0,
                    out_capacity: 1,
                },
                |ctx: StreamCtx| async move {
                    ctx.output.send(Bytes::from_static(b"first")).await.ok();
                    Err(RemoteError::new("stream failed"))
                },
            )
        })
        .expect("suite handlers register");
    if first {
        b = b
            .single(ONLY_FIRST, |r: Request| async move { Ok(r.payload) })
            .expect("register");
    }
    b
}

async fn stream_echo(mut ctx: StreamCtx) -> Result<(), RemoteError> {
    let prefix = ctx.payload.clone().unwrap_or_default();
    let mut input = ctx.input.take().expect("echo takes input");
    while let Some(item) = input.next().await {
        let mut out = prefix.to_vec();
        out.extend_from_slice(&item);
        ctx.output
            .send(out.into())
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

async fn push(ctx: StreamCtx) -> Result<(), RemoteError> {
    let p = ctx.payload.unwrap_or_default();
    let n = match p.len() {
        0 => 0,
        1 => p[0] as usize,
        _ => u16::from_be_bytes([p[0], p[1]]) as usize,
    };
    for i in 0..n {
        ctx.output
            .send(Bytes::from(vec![i as u8]))
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// A cluster of managers on loopback, fully connected.
pub struct TestCluster {
    /// The managers, in host order.
    pub nodes: Vec<Manager>,
    /// Their host strings.
    pub hosts: Vec<String>,
    /// What their handlers observed.
    pub probe: Arc<Probe>,
}

impl TestCluster {
    /// The connection from node `from` to node `to`.
    pub fn conn(&self, from: usize, to: usize) -> Connection {
        self.nodes[from]
            .connection(&self.hosts[to])
            .expect("peer in cluster")
    }

    /// Waits until every link is up.
    pub async fn wait_connected(&self) {
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                if i != j {
                    self.conn(i, j).wait_connected().await;
                }
            }
        }
    }

    /// Shuts every node down and checks that no task is left behind.
    pub async fn shutdown(self) {
        for n in &self.nodes {
            n.shutdown().await;
            assert_eq!(
                n.running_tasks(),
                0,
                "tasks left behind on {}",
                n.local_host()
            );
        }
    }
}

/// Loopback listeners and the host strings that name them.
pub fn bind(n: usize) -> (Vec<std::net::TcpListener>, Vec<String>) {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    let hosts = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().expect("local addr")))
        .collect();
    (listeners, hosts)
}

/// The token validator of the test nodes: accepts `secret`, refuses anything else.
pub fn secret_only(token: &str) -> Result<(), String> {
    if token == "secret" {
        Ok(())
    } else {
        Err("bad token".into())
    }
}

/// The connect message of a raw peer named `host` (process ID `[id; 16]`, token
/// `secret`, the clock's time now): its first message after the upgrade.
pub fn connect_message(host: &str, id: u8) -> Bytes {
    use grid_core::codec::{self, ConnectRequest, Frame, Op, Time};
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let hello = ConnectRequest {
        id: [id; 16],
        host: host.to_owned(),
        time: Time::from_unix_nanos(wall.as_nanos() as i128),
        token: "secret".into(),
    };
    let mut f = Frame::new(Op::Connect);
    f.payload = codec::to_payload(|b| hello.encode(b));
    f.to_bytes()
}

/// A config for tests: fast reconnects, otherwise the defaults.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(40);
    c
}

/// Starts `n` connected nodes with the suite's handlers.
pub async fn cluster(rt: &Arc<dyn Runtime>, n: usize) -> TestCluster {
    cluster_with(rt, n, |_, b| b).await
}

/// A test cluster's node `host` among `hosts`: the test configuration, the shared
/// secret both ways and the suite's handlers (`first`: those of node 0 too).
pub fn test_node(host: &str, hosts: &[String], probe: &Arc<Probe>, first: bool) -> ManagerBuilder {
    let b = Manager::builder(host, hosts)
        .config(test_config())
        .token_provider(|| "secret".into())
        .token_validator(secret_only);
    handlers(b, probe, first)
}

/// The host string of a peer that dials `host`: a raw peer, or one that never listens,
/// only has to name a port that makes it the dialer.
pub fn peer_that_dials(host: &str) -> String {
    (1..)
        .map(|port| format!("http://127.0.0.1:{port}"))
        .find(|p| grid_core::codec::should_dial(p, host))
        .expect("a peer that dials")
}

/// Starts `n` nodes, letting `tweak` adjust each builder, and waits until all are up.
pub async fn cluster_with(
    rt: &Arc<dyn Runtime>,
    n: usize,
    tweak: impl Fn(usize, ManagerBuilder) -> ManagerBuilder,
) -> TestCluster {
    cluster_on(&vec![rt.clone(); n], tweak).await
}

/// Starts one node per runtime in `rts` (node `i` on `rts[i]`), letting `tweak` adjust
/// each builder, and waits until all are up.
pub async fn cluster_on(
    rts: &[Arc<dyn Runtime>],
    tweak: impl Fn(usize, ManagerBuilder) -> ManagerBuilder,
) -> TestCluster {
    let n = rts.len();
    let (listeners, hosts) = bind(n);
    let probe = Arc::new(Probe::default());
    let nodes = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let b = test_node(&hosts[i], &hosts, &probe, i == 0).listener(l);
            tweak(i, b).start(rts[i].clone()).expect("manager starts")
        })
        .collect();
    let c = TestCluster {
        nodes,
        hosts,
        probe,
    };
    within(&rts[0], Duration::from_secs(20), c.wait_connected()).await;
    c
}

/// Runs `fut`, failing the test if it takes longer than `limit` (a guard against
/// hangs, not a timing assertion).
pub async fn within<T>(rt: &Arc<dyn Runtime>, limit: Duration, fut: impl Future<Output = T>) -> T {
    let fut = std::pin::pin!(fut);
    match select(fut, rt.sleep_until(Instant::now() + limit)).await {
        Either::Left((v, _)) => v,
        Either::Right(_) => panic!("scenario step did not finish within {limit:?}"),
    }
}

fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

const LIMIT: Duration = Duration::from_secs(20);

/// Waits until a call on `conn` succeeds again after its link was cut. Cutting both
/// ends is not atomic: the dialer may redial before the second cut, which then ends
/// the new session too; the link is back once an echo goes through.
pub async fn until_link_works(conn: &Connection) {
    for _ in 0..1000 {
        conn.wait_connected().await;
        if conn
            .request(ECHO, Bytes::from_static(b"ping"))
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("link to {} did not come back", conn.remote());
}

// ----------------------------------------------------------------------------------
// Scenarios.

/// Single round trips: 17 B, 1 MiB, a remote error, an unknown handler, a peer without
/// the handler, a panicking handler; in every direction of a 3-node cluster.
pub async fn single_roundtrips(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 3).await;
    within(&rt, LIMIT, async {
        for i in 0..3 {
            for j in 0..3 {
                if i == j {
                    continue;
                }
                let conn = c.conn(i, j);
                let small = pattern(17);
                assert_eq!(conn.request(ECHO, small.clone()).await.unwrap(), small);
                let big = pattern(1 << 20);
                assert_eq!(conn.request(ECHO, big.clone()).await.unwrap(), big);
                assert_eq!(
                    conn.request(FAIL, Bytes::from_static(b"it broke")).await,
                    Err(CallError::Remote("it broke".into()))
                );
                let err = conn.request(99, Bytes::new()).await.unwrap_err();
                assert!(err.is_unknown_handler(), "{err:?}");
                // ONLY_FIRST exists on node 0 only.
                let r = conn.request(ONLY_FIRST, Bytes::from_static(b"x")).await;
                if j == 0 {
                    assert_eq!(r.unwrap(), "x");
                } else {
                    assert!(r.unwrap_err().is_unknown_handler());
                }
                let Err(CallError::Remote(text)) = conn.request(PANIC, Bytes::new()).await else {
                    panic!("panic did not become a remote error");
                };
                assert!(text.contains("handler exploded"), "{text}");
                let Err(CallError::Remote(text)) = conn.request(PANIC_EARLY, Bytes::new()).await
                else {
                    panic!("an early panic did not become a remote error");
                };
                assert!(text.contains("exploded before its first await"), "{text}");
                // The link survived all of it.
                assert_eq!(conn.request(ECHO, small.clone()).await.unwrap(), small);
            }
        }
    })
    .await;
    c.shutdown().await;
}

/// A request with a deadline the handler cannot meet: the caller gets
/// `DeadlineExceeded`, the handler is cancelled at its own deadline.
pub async fn request_deadline(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 2).await;
    within(&rt, LIMIT, async {
        let r = c
            .conn(0, 1)
            .request_with_deadline(HANG, Bytes::new(), Duration::from_millis(50))
            .await;
        assert_eq!(r, Err(CallError::DeadlineExceeded));
        c.probe
            .wait(|p| p.hang_dropped.load(Ordering::SeqCst) == 1)
            .await;
    })
    .await;
    c.shutdown().await;
}

/// Dropping a request future frees the call at once; the link stays usable.
pub async fn dropped_request_returns_at_once(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 2).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(0, 1);
        {
            let call = std::pin::pin!(conn.request(HANG, Bytes::new()));
            // Poll it until the handler runs, then drop it.
            let started = c.probe.wait(|p| p.hang_started.load(Ordering::SeqCst) == 1);
            match select(call, std::pin::pin!(started)).await {
                Either::Left(_) => panic!("HANG answered"),
                Either::Right(_) => {}
            }
        }
        assert_eq!(
            conn.stats().session.outgoing_muxes,
            0,
            "the mux is freed at once"
        );
        assert_eq!(
            conn.request(ECHO, Bytes::from_static(b"ok")).await.unwrap(),
            "ok"
        );
    })
    .await;
    c.shutdown().await;
}

/// Stream round trip (11 items then EOF), on a subroute too, and a stream without input.
pub async fn stream_roundtrip(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 3).await;
    within(&rt, LIMIT, async {
        for conn in [c.conn(0, 1), c.conn(1, 0), c.conn(2, 1).subroute(ROUTE)] {
            let s = conn
                .new_stream(STREAM_ECHO, Some(Bytes::from_static(b"p:")))
                .unwrap();
            let mut req = s.requests.expect("echo takes input");
            let mut resp = s.responses;
            for i in 0..11u8 {
                req.send(Bytes::from(vec![i])).await.unwrap();
                let got = resp.next().await.unwrap().unwrap();
                assert_eq!(&got[..], &[b'p', b':', i]);
            }
            req.close();
            assert!(resp.next().await.is_none(), "clean end after EOF");
        }
        let s = c
            .conn(0, 2)
            .new_stream(PUSH, Some(Bytes::from_static(&[5])))
            .unwrap();
        assert!(s.requests.is_none(), "PUSH takes no input");
        let mut resp = s.responses;
        for i in 0..5u8 {
            assert_eq!(&resp.next().await.unwrap().unwrap()[..], &[i]);
        }
        assert!(resp.next().await.is_none());
        let mut resp = c
            .conn(1, 2)
            .new_stream(STREAM_FAIL, None)
            .unwrap()
            .responses;
        assert_eq!(resp.next().await.unwrap().unwrap(), "first");
        assert_eq!(
            resp.next().await,
            Some(Err(CallError::Remote("stream failed".into())))
        );
        assert!(resp.next().await.is_none());
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    let st = c.conn(i, j).stats().session;
                    assert_eq!(st.outgoing_muxes, 0, "{i}->{j} holds muxes");
                }
            }
        }
    })
    .await;
    c.shutdown().await;
}

/// `rt` with its socket tasks paced as `pacing` says.
pub fn paced(rt: Arc<dyn Runtime>, pacing: Pacing) -> Arc<dyn Runtime> {
    Arc::new(Tweaked::new(rt, pacing))
}

/// `rt` as it is, counting the tasks spawned on it.
pub fn counted(rt: Arc<dyn Runtime>) -> (Arc<dyn Runtime>, Arc<AtomicUsize>) {
    let pacing = rt.pacing();
    let rt = Tweaked::new(rt, pacing);
    let spawned = rt.spawned.clone();
    (Arc::new(rt), spawned)
}

/// `rt` paced as `pacing` says, counting the yields of the tasks spawned on it: polls
/// that end `Pending` after the task woke itself on the polling thread.
pub fn yields_counted(
    rt: Arc<dyn Runtime>,
    pacing: Pacing,
) -> (Arc<dyn Runtime>, Arc<AtomicUsize>) {
    let yields = Arc::new(AtomicUsize::new(0));
    let rt = Tweaked {
        yields: Some(yields.clone()),
        ..Tweaked::new(rt, pacing)
    };
    (Arc::new(rt), yields)
}

/// `rt` paced as `pacing` says, noting the largest write its dialers' sockets are given
/// (what a socket task writes at once).
pub fn writes_measured(
    rt: Arc<dyn Runtime>,
    pacing: Pacing,
) -> (Arc<dyn Runtime>, Arc<AtomicUsize>) {
    let largest = Arc::new(AtomicUsize::new(0));
    let rt = Tweaked {
        largest_write: Some(largest.clone()),
        ..Tweaked::new(rt, pacing)
    };
    (Arc::new(rt), largest)
}

/// `rt` counting the timers set to fire between `ahead.start` and `ahead.end` from
/// when they are set.
pub fn timers_counted(
    rt: Arc<dyn Runtime>,
    ahead: std::ops::Range<Duration>,
) -> (Arc<dyn Runtime>, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let pacing = rt.pacing();
    let rt = Tweaked {
        timers: Some((ahead, count.clone())),
        ..Tweaked::new(rt, pacing)
    };
    (Arc::new(rt), count)
}

/// A runtime forwarding to another, with its own pacing, a count of spawned tasks and,
/// if asked for, of their yields, of the largest write on the sockets it connects and
/// of the timers set some time ahead.
struct Tweaked {
    rt: Arc<dyn Runtime>,
    pacing: Pacing,
    spawned: Arc<AtomicUsize>,
    yields: Option<Arc<AtomicUsize>>,
    largest_write: Option<Arc<AtomicUsize>>,
    timers: Option<(std::ops::Range<Duration>, Arc<AtomicUsize>)>,
}

/// A socket noting the largest buffer it is asked to write.
struct WriteSizes {
    io: BoxIo,
    largest: Arc<AtomicUsize>,
}

impl futures_util::io::AsyncRead for WriteSizes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl futures_util::io::AsyncWrite for WriteSizes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.largest.fetch_max(buf.len(), Ordering::SeqCst);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.largest.fetch_max(len, Ordering::SeqCst);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl Tweaked {
    fn new(rt: Arc<dyn Runtime>, pacing: Pacing) -> Tweaked {
        Tweaked {
            rt,
            pacing,
            spawned: Arc::default(),
            yields: None,
            largest_write: None,
            timers: None,
        }
    }
}

/// A spawned task that counts its yields (see [`yields_counted`]).
struct CountYields {
    task: BoxFuture<'static, ()>,
    yields: Arc<AtomicUsize>,
}

/// The waker a [`CountYields`] poll hands down: notes a wake on the polling thread.
struct SelfWake {
    inner: Waker,
    thread: std::thread::ThreadId,
    woke: std::sync::atomic::AtomicBool,
}

impl std::task::Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if std::thread::current().id() == self.thread {
            self.woke.store(true, Ordering::SeqCst);
        }
        self.inner.wake_by_ref()
    }
}

impl Future for CountYields {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let probe = Arc::new(SelfWake {
            inner: cx.waker().clone(),
            thread: std::thread::current().id(),
            woke: Default::default(),
        });
        let waker = Waker::from(probe.clone());
        let r = self
            .task
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        if r.is_pending() && probe.woke.load(Ordering::SeqCst) {
            self.yields.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

impl Runtime for Tweaked {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.spawned.fetch_add(1, Ordering::SeqCst);
        match &self.yields {
            Some(yields) => {
                let yields = yields.clone();
                self.rt.spawn(Box::pin(CountYields { task, yields }))
            }
            None => self.rt.spawn(task),
        }
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        if let Some((ahead, count)) = &self.timers {
            if ahead.contains(&deadline.saturating_duration_since(Instant::now())) {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.rt.sleep_until(deadline)
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, std::io::Result<BoxIo>> {
        let connect = self.rt.connect(addr);
        match self.largest_write.clone() {
            None => connect,
            Some(largest) => Box::pin(async move {
                let io = connect.await?;
                Ok(Box::new(WriteSizes { io, largest }) as BoxIo)
            }),
        }
    }

    fn listener(&self, listener: std::net::TcpListener) -> std::io::Result<Box<dyn Listener>> {
        self.rt.listener(listener)
    }

    fn pacing(&self) -> Pacing {
        self.pacing
    }
}

/// `n` echo requests one after the other, the i-th of `i * step` bytes.
async fn echo_one_by_one(conn: &Connection, n: usize, step: usize) {
    for i in 0..n {
        let body = pattern(i * step);
        assert_eq!(conn.request(ECHO, body.clone()).await.unwrap(), body);
    }
}

/// A handler answered in its first poll costs no task; one that waits gets one, and is
/// still cancelled at its deadline.
pub async fn answered_handlers_take_no_task(rt: Arc<dyn Runtime>) {
    let (counting, spawned) = counted(rt.clone());
    let c = cluster(&counting, 2).await;
    within(&rt, LIMIT, async {
        c.wait_connected().await;
        let conn = c.conn(0, 1);
        let before = spawned.load(Ordering::SeqCst);
        echo_one_by_one(&conn, 50, 100).await;
        // One item fits the output capacity: the handler ends in its first poll.
        let mut s = conn
            .new_stream(PUSH, Some(Bytes::from_static(&[1])))
            .unwrap();
        assert_eq!(s.responses.next().await.unwrap().unwrap(), &[0u8][..]);
        assert!(s.responses.next().await.is_none());
        assert_eq!(spawned.load(Ordering::SeqCst), before, "answered at once");
        let r = conn
            .request_with_deadline(HANG, Bytes::new(), Duration::from_millis(20))
            .await;
        assert_eq!(r, Err(CallError::DeadlineExceeded));
        c.probe
            .wait(|p| p.hang_dropped.load(Ordering::SeqCst) == 1)
            .await;
        assert_eq!(
            spawned.load(Ordering::SeqCst),
            before + 1,
            "a task to wait in"
        );
    })
    .await;
    c.shutdown().await;
}

/// Every pacing moves every message: the shortest turns (zero counts as one), short ones
/// and long ones, with and without a yield after a handoff, write batches of one message
/// up to a megabyte, reads of one message up to no limit per poll, each carrying 2,000
/// stream items and 64 concurrent 64 KiB requests both ways at once, so reads stop at
/// the batch limit (or the poll's) with more waiting.
pub async fn every_pacing_moves_every_message(rt: Arc<dyn Runtime>) {
    let turns = [
        (0, 0, false, 0, 0),
        (1, 1, true, 1, 1),
        (2, 1, false, 64 << 10, usize::MAX),
        (64, 16, true, 1 << 20, 256 << 10),
        (64, 16, false, 1 << 20, 100),
    ];
    for (read_batch, turns_per_poll, yield_after_handoff, write_round_bytes, read_round_bytes) in
        turns
    {
        let pacing = Pacing {
            read_batch,
            turns_per_poll,
            yield_after_handoff,
            write_round_bytes,
            read_round_bytes,
        };
        let prt = paced(rt.clone(), pacing);
        let c = cluster(&prt, 2).await;
        within(&rt, LIMIT, async {
            let n = 2000u16;
            let conn = c.conn(0, 1);
            let mut resp = conn
                .new_stream(PUSH, Some(Bytes::copy_from_slice(&n.to_be_bytes())))
                .unwrap()
                .responses;
            let items = async {
                for i in 0..n {
                    let got = resp.next().await.unwrap().unwrap();
                    assert_eq!(&got[..], &[i as u8], "{pacing:?}");
                }
                assert!(resp.next().await.is_none());
            };
            let requests = futures_util::future::join_all((0..64).map(|i| {
                let conn = c.conn(i % 2, 1 - i % 2);
                async move {
                    let body = pattern(64 << 10);
                    assert_eq!(conn.request(ECHO, body.clone()).await.unwrap(), body);
                }
            }));
            futures_util::future::join(items, requests).await;
        })
        .await;
        c.shutdown().await;
    }
}

/// A burst of large calls grows a link's buffers on both nodes ([`LinkStats::buffer_bytes`]
/// at the check after it); once the link is quiet for a ping interval, both give the room
/// back, and the link still works.
///
/// [`LinkStats::buffer_bytes`]: grid_core::driver::LinkStats::buffer_bytes
pub async fn quiet_links_give_back_their_buffers(rt: Arc<dyn Runtime>) {
    let c = cluster_with(&rt, 2, |_, b| {
        let mut cfg = test_config();
        cfg.ping_interval = Duration::from_millis(300);
        cfg.pong_timeout = Duration::from_secs(10);
        b.config(cfg)
    })
    .await;
    let conns = [c.conn(0, 1), c.conn(1, 0)];
    let gauge = |i: usize| conns[i].stats().buffer_bytes;
    // Watches node `i`'s gauge until `f` holds; what it read last.
    let watch = |i: usize, f: fn(usize) -> bool| {
        let rt = rt.clone();
        async move {
            loop {
                let n = gauge(i);
                if f(n) {
                    return n;
                }
                rt.sleep_until(Instant::now() + Duration::from_millis(5))
                    .await;
            }
        }
    };
    within(&rt, LIMIT, async {
        // Each node's gauge, watched from before the burst: first grown (the read
        // buffer, 256 KiB, and the 200 KiB messages' buffers kept for reuse), then small.
        let track = |i: usize| async move {
            let grown = watch(i, |n| n >= 400 << 10).await;
            let quiet = watch(i, |n| n < 32 << 10).await;
            (grown, quiet)
        };
        let body = pattern(200 << 10);
        let calls = (0..32).map(|_| {
            let (conn, body) = (conns[0].clone(), body.clone());
            async move { assert_eq!(conn.request(ECHO, body.clone()).await, Ok(body)) }
        });
        let burst = futures_util::future::join_all(calls);
        let (_, a, b) = futures_util::future::join3(burst, track(0), track(1)).await;
        for (i, (grown, quiet)) in [a, b].into_iter().enumerate() {
            assert!(quiet < grown, "node {i}: {grown} -> {quiet}");
        }
        let small = pattern(100);
        assert_eq!(conns[1].request(ECHO, small.clone()).await, Ok(small));
        assert_eq!(conns[0].request(ECHO, body.clone()).await, Ok(body));
    })
    .await;
    c.shutdown().await;
}

/// A socket task writes about [`Pacing::write_round_bytes`] at once: 64 requests of
/// 64 KiB, started together, leave in batches of at most the round and one message with
/// rounds of one message and of 256 KiB, and in batches over a megabyte with a 4 MiB
/// round. The calls are made from the dialing node, whose socket's writes are measured.
/// The answering node reads up to 64 requests a turn and answers them in it, more than
/// one round holds: what is left must still go out without another wake-up (pings are
/// an hour apart here, so a stalled link would not be moved again within the limit).
pub async fn write_batches_follow_the_pacing(rt: Arc<dyn Runtime>) {
    let body = pattern(64 << 10);
    // The answer to a request of `body` is larger by its frame's few dozen bytes.
    let message = body.len() + 1024;
    for round in [0, 256 << 10, 4 << 20] {
        let pacing = Pacing {
            write_round_bytes: round,
            ..Pacing::default()
        };
        let (prt, largest) = writes_measured(rt.clone(), pacing);
        let c = cluster_on(&[prt.clone(), prt], |_, b| {
            let mut cfg = test_config();
            cfg.ping_interval = Duration::from_secs(3600);
            cfg.pong_timeout = Duration::from_secs(7200);
            b.config(cfg)
        })
        .await;
        within(&rt, LIMIT, async {
            let conn = match c.conn(0, 1) {
                dialer if dialer.dials() => dialer,
                _ => c.conn(1, 0),
            };
            let calls = (0..64).map(|_| {
                let (conn, body) = (conn.clone(), body.clone());
                async move { assert_eq!(conn.request(ECHO, body.clone()).await, Ok(body)) }
            });
            futures_util::future::join_all(calls).await;
        })
        .await;
        c.shutdown().await;
        let largest = largest.load(Ordering::SeqCst);
        if round <= 1 << 20 {
            assert!(
                largest <= round + message,
                "a {largest}-byte write, round {round}"
            );
        } else {
            assert!(
                largest > 1 << 20,
                "the largest write {largest} bytes, round {round}"
            );
        }
    }
}

/// With `yield_after_handoff`, a socket task yields after each turn that handed work to
/// other tasks: on the calling node after the turn that gave a caller its answer, on the
/// answering node after the turn that started the handler. 50 requests one after the
/// other make about 50 such turns on each node (measured: 50 on each, now and then 49 on
/// the calling node on tokio); without it, and with turns enough per poll, none yields.
pub async fn socket_tasks_yield_after_a_handoff(rt: Arc<dyn Runtime>) {
    for handoff in [true, false] {
        let pacing = Pacing {
            read_batch: 64,
            turns_per_poll: 1_000,
            yield_after_handoff: handoff,
            ..Pacing::default()
        };
        let n = yields_during(&rt, pacing, |conn| async move {
            echo_one_by_one(&conn, 50, 10).await
        })
        .await;
        if handoff {
            assert!(
                n.0 >= 45 && n.1 >= 45,
                "{n:?} yields for 50 requests with a handoff"
            );
        } else {
            assert!(n.0 + n.1 < 50, "{n:?} yields for 50 requests without");
        }
    }
}

/// The yields ([`yields_counted`]) of the calling node's tasks and of the answering
/// node's while `calls` runs over the link between them, both paced as `pacing`.
async fn yields_during<F: Future<Output = ()>>(
    rt: &Arc<dyn Runtime>,
    pacing: Pacing,
    calls: impl FnOnce(Connection) -> F,
) -> (usize, usize) {
    let (caller_rt, caller) = yields_counted(rt.clone(), pacing);
    let (answerer_rt, answerer) = yields_counted(rt.clone(), pacing);
    let c = cluster_on(&[caller_rt, answerer_rt], |_, b| b).await;
    let before = within(rt, LIMIT, async {
        c.wait_connected().await;
        let before = (
            caller.load(Ordering::SeqCst),
            answerer.load(Ordering::SeqCst),
        );
        calls(c.conn(0, 1)).await;
        before
    })
    .await;
    // A yield counts once its poll has returned, which may be after the caller has its
    // answer: counted once every task has ended.
    c.shutdown().await;
    (
        caller.load(Ordering::SeqCst) - before.0,
        answerer.load(Ordering::SeqCst) - before.1,
    )
}

/// A socket task yields once a poll has read [`Pacing::read_round_bytes`] of messages,
/// with turns and messages per turn to spare: 51 echo requests of 64 KiB one after the
/// other make a poll that reads a whole message, and so a yield, on each node for each
/// request with a round of 64 KiB or of zero (one message per poll), and none with a
/// round of a megabyte (nor does anything else here make the task yield). 50 are
/// required: the poll that reads the last answer may find the link shut down by then
/// and end instead of yielding (seen on tokio, whose other thread runs the test).
pub async fn socket_tasks_yield_after_their_read_round(rt: Arc<dyn Runtime>) {
    for (round, yields) in [(64 << 10, true), (0, true), (1 << 20, false)] {
        let pacing = Pacing {
            read_batch: 64,
            turns_per_poll: 1_000,
            yield_after_handoff: false,
            read_round_bytes: round,
            ..Pacing::default()
        };
        let n = yields_during(&rt, pacing, |conn| async move {
            let body = pattern(64 << 10);
            for _ in 0..51 {
                assert_eq!(conn.request(ECHO, body.clone()).await, Ok(body.clone()));
            }
        })
        .await;
        if yields {
            assert!(
                n.0 >= 50 && n.1 >= 50,
                "{n:?} yields for 51 requests, round {round}"
            );
        } else {
            assert!(
                n.0 + n.1 < 50,
                "{n:?} yields for 51 requests, round {round}"
            );
        }
    }
}

/// A stream reader that gives credits back while more items wait yields once before its
/// next read, so that the credits leave before it drains its buffer: on an executor that
/// runs the reader and the socket task on one thread, the sender would otherwise wait for
/// the reader to empty a whole window before each batch left. Polled by hand with a
/// waker that counts: every `Pending` while items wait must be such a yield (it wakes
/// itself) and be followed by an item. The stream sends more items than are counted, so
/// its end cannot arrive during the counted reads (once it has, reads give no credits
/// back, and so no yields).
pub async fn reader_yields_once_after_returning_credits(rt: Arc<dyn Runtime>) {
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let c = cluster(&rt, 2).await;
    within(&rt, LIMIT, async {
        // Read under count; the window of 8 and the credits not yet returned keep the
        // sender's last items, and so the end, back until the count is over.
        const ITEMS: usize = 40;
        const SENT: usize = ITEMS + 20;
        let s = c
            .conn(0, 1)
            .new_stream(PUSH8, Some(Bytes::from_static(&[SENT as u8])));
        let mut resp = s.unwrap().responses;
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let (mut next, mut yields) = (0, 0);
        while next < ITEMS {
            // Three items wait, so a read never finds the buffer empty.
            until(&rt, Duration::from_millis(1), || resp.buffered() >= 3).await;
            let wakes = count.0.load(Ordering::SeqCst);
            let mut poll = Pin::new(&mut resp).poll_next(&mut cx);
            if poll.is_pending() {
                assert!(
                    count.0.load(Ordering::SeqCst) > wakes,
                    "a yield wakes itself"
                );
                yields += 1;
                poll = Pin::new(&mut resp).poll_next(&mut cx);
            }
            match poll {
                Poll::Ready(Some(Ok(item))) => assert_eq!(&item[..], &[next as u8]),
                other => panic!("item {next}: {other:?}"),
            }
            next += 1;
        }
        // Two credits per batch: one yield per two items read, the last batch's yet to
        // come with the next read.
        assert_eq!(yields, ITEMS / 2 - 1, "yields for {ITEMS} items");
        for i in ITEMS..SENT {
            assert_eq!(resp.next().await, Some(Ok(Bytes::from(vec![i as u8]))));
        }
        assert!(resp.next().await.is_none());
    })
    .await;
    c.shutdown().await;
}

/// Cancellation both ways: dropping the stream cancels the handler; a handler's error
/// ends the caller's stream.
pub async fn stream_cancel(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 2).await;
    within(&rt, LIMIT, async {
        let s = c.conn(0, 1).new_stream(WAIT_CANCEL, None).unwrap();
        c.probe
            .wait(|p| p.wait_started.load(Ordering::SeqCst) == 1)
            .await;
        drop(s);
        c.probe
            .wait(|p| p.wait_cancelled.load(Ordering::SeqCst) == 1)
            .await;
        // A deadline cancels both sides.
        let mut s = c
            .conn(1, 0)
            .new_stream_with_deadline(WAIT_CANCEL, None, Duration::from_millis(50))
            .unwrap();
        assert_eq!(
            s.responses.next().await,
            Some(Err(CallError::DeadlineExceeded))
        );
        c.probe
            .wait(|p| p.wait_cancelled.load(Ordering::SeqCst) == 2)
            .await;
    })
    .await;
    c.shutdown().await;
}

/// A stream whose consumer does not read blocks neither other streams nor requests.
pub async fn congestion_without_head_of_line_blocking(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 2).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(0, 1);
        // Out-congestion: 100 items to a consumer that does not read yet.
        let mut stalled = conn
            .new_stream(PUSH, Some(Bytes::from_static(&[100])))
            .unwrap();
        for i in 0..100u32 {
            let p = Bytes::from(i.to_be_bytes().to_vec());
            assert_eq!(conn.request(ECHO, p.clone()).await.unwrap(), p);
        }
        // In-congestion: the handler is held at its gate while we push 100 items.
        let gate = c.probe.close_gate().await;
        let s = conn.new_stream(GATED, None).unwrap();
        let mut req = s.requests.unwrap();
        let mut resp = s.responses;
        let pushing = async {
            for i in 0..100u8 {
                req.send(Bytes::from(vec![i])).await.unwrap();
            }
            req
        };
        let requests = async {
            for _ in 0..100 {
                conn.request(ECHO, Bytes::from_static(b"still here"))
                    .await
                    .unwrap();
            }
        };
        let mut pushing = std::pin::pin!(pushing);
        // The requests complete while the pusher is blocked on credit.
        match select(std::pin::pin!(requests), pushing.as_mut()).await {
            Either::Left(_) => {}
            Either::Right(_) => panic!("100 items fit into a capacity of 5"),
        }
        drop(gate);
        let reading = async {
            for i in 0..100u8 {
                assert_eq!(&resp.next().await.unwrap().unwrap()[..], &[i]);
            }
        };
        let (req, ()) = futures_util::future::join(pushing, reading).await;
        req.close();
        assert!(resp.next().await.is_none());
        for i in 0..100u8 {
            assert_eq!(&stalled.responses.next().await.unwrap().unwrap()[..], &[i]);
        }
        assert!(stalled.responses.next().await.is_none());
    })
    .await;
    c.shutdown().await;
}

/// Both sockets of a link killed with a request and then a stream in flight: the calls
/// end with `Disconnected`, the handlers are cancelled, the link comes back and new
/// calls succeed.
pub async fn link_loss_and_reconnect(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 3).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(0, 1);
        let back = c.conn(1, 0);
        let call = conn.request(HANG, Bytes::new());
        let started = c.probe.wait(|p| p.hang_started.load(Ordering::SeqCst) == 1);
        let mut call = std::pin::pin!(call);
        if let Either::Left(_) = select(call.as_mut(), std::pin::pin!(started)).await {
            panic!("HANG answered");
        }
        conn.reset();
        back.reset();
        assert_eq!(call.await, Err(CallError::Disconnected));
        c.probe
            .wait(|p| p.hang_dropped.load(Ordering::SeqCst) == 1)
            .await;
        until_link_works(&conn).await;
        until_link_works(&back).await;

        let mut s = conn.new_stream(WAIT_CANCEL, None).unwrap();
        c.probe
            .wait(|p| p.wait_started.load(Ordering::SeqCst) == 1)
            .await;
        conn.reset();
        back.reset();
        assert_eq!(s.responses.next().await, Some(Err(CallError::Disconnected)));
        assert!(s.responses.next().await.is_none());
        c.probe
            .wait(|p| p.wait_cancelled.load(Ordering::SeqCst) == 1)
            .await;
        until_link_works(&conn).await;
        until_link_works(&back).await;
        assert!(conn.stats().reconnects >= 2);
    })
    .await;
    c.shutdown().await;
}

/// Waits until `done` holds, checking it every `step`.
pub async fn until(rt: &Arc<dyn Runtime>, step: Duration, mut done: impl FnMut() -> bool) {
    while !done() {
        rt.sleep_until(Instant::now() + step).await;
    }
}

/// Items a stream received before its link was lost are still read, then its end: a
/// clean end when the end had arrived too, `Disconnected` when the stream was running.
pub async fn unread_items_outlive_a_lost_link(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 2).await;
    within(&rt, LIMIT, async {
        let (out, back) = (c.conn(0, 1), c.conn(1, 0));
        let mut running = out
            .new_stream(STREAM_ECHO, Some(Bytes::from_static(b"p:")))
            .expect("stream");
        let req = running.requests.as_mut().expect("input");
        req.send(Bytes::from_static(b"x")).await.expect("send");
        let mut ended = out
            .new_stream(PUSH8, Some(Bytes::from_static(&[5])))
            .expect("stream");
        // Everything the acceptor sent has been handled: five items and the end of one
        // stream, the echo of the other, which still runs.
        until(&rt, Duration::from_millis(2), || {
            let (o, b) = (out.stats().session, back.stats().session);
            running.responses.buffered() == 1
                && ended.responses.buffered() == 5
                && b.incoming_muxes == 1
                && b.queued_frames == 0
                && o.frames_received == b.frames_sent
        })
        .await;
        out.reset();
        for i in 0..5u8 {
            // What is left to read is counted after the loss as before it.
            assert_eq!(ended.responses.buffered(), 5 - i as usize);
            assert_eq!(ended.responses.next().await, Some(Ok(Bytes::from(vec![i]))));
        }
        assert_eq!(ended.responses.buffered(), 0);
        assert!(ended.responses.next().await.is_none(), "a clean end");
        assert_eq!(
            running.responses.next().await,
            Some(Ok(Bytes::from_static(b"p:x")))
        );
        assert_eq!(
            running.responses.next().await,
            Some(Err(CallError::Disconnected))
        );
        assert!(running.responses.next().await.is_none());
        until_link_works(&out).await;
    })
    .await;
    c.shutdown().await;
}

/// Shutdown with calls in flight: every call ends, no task is left behind.
pub async fn shutdown_with_calls_in_flight(rt: Arc<dyn Runtime>) {
    let c = cluster(&rt, 2).await;
    let conn = c.conn(0, 1);
    let call = conn.request(HANG, Bytes::new());
    let mut stream = conn.new_stream(WAIT_CANCEL, None).unwrap();
    within(&rt, LIMIT, async {
        let mut call = std::pin::pin!(call);
        let started = c.probe.wait(|p| {
            p.hang_started.load(Ordering::SeqCst) == 1 && p.wait_started.load(Ordering::SeqCst) == 1
        });
        if let Either::Left(_) = select(call.as_mut(), std::pin::pin!(started)).await {
            panic!("HANG answered");
        }
        c.nodes[0].shutdown().await;
        assert_eq!(call.await, Err(CallError::Disconnected));
        assert_eq!(
            stream.responses.next().await,
            Some(Err(CallError::Disconnected))
        );
        assert_eq!(
            conn.request(ECHO, Bytes::new()).await,
            Err(CallError::Disconnected)
        );
    })
    .await;
    c.shutdown().await;
}

/// Two nodes on `hosts` (bound as `listeners`), where the application accepts for one.
pub struct AppAccepted {
    /// The node the dial rule makes accept; started without a listener.
    pub acceptor: Manager,
    /// The other node, on its own listener.
    pub dialer: Manager,
    /// The acceptor's listener, on the runtime, for the application to accept on.
    pub app_listener: Box<dyn Listener>,
    /// The acceptor's index in `hosts`.
    pub a: usize,
    /// The dialer's index in `hosts`.
    pub d: usize,
}

/// Starts an [`AppAccepted`] pair with the suite's handlers; `configure` adds to each
/// node's builder (it is told whether the node is the acceptor).
pub fn app_accepted_pair(
    rt: &Arc<dyn Runtime>,
    mut listeners: Vec<std::net::TcpListener>,
    hosts: &[String],
    configure: impl Fn(ManagerBuilder, bool) -> ManagerBuilder,
) -> AppAccepted {
    let a = if grid_core::codec::should_dial(&hosts[0], &hosts[1]) {
        1
    } else {
        0
    };
    let d = 1 - a;
    let app_listener = rt
        .listener({
            let l = listeners.remove(a);
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
        .expect("runtime listener");
    let dialer_listener = listeners.pop().expect("one left");
    let probe = Arc::new(Probe::default());
    let start = |i: usize, b: ManagerBuilder| {
        let b = configure(b.config(test_config()), i == a);
        handlers(b, &probe, false)
            .start(rt.clone())
            .expect("starts")
    };
    AppAccepted {
        acceptor: start(a, Manager::builder(hosts[a].clone(), hosts).no_listener()),
        dialer: start(
            d,
            Manager::builder(hosts[d].clone(), hosts).listener(dialer_listener),
        ),
        app_listener,
        a,
        d,
    }
}

/// A node without its own listener: the application accepts the sockets and hands them
/// to `Manager::serve_socket`; the link works both ways.
pub async fn serve_socket_from_the_applications_listener(rt: Arc<dyn Runtime>) {
    let (listeners, hosts) = bind(2);
    let AppAccepted {
        acceptor,
        dialer,
        app_listener,
        a,
        d,
    } = app_accepted_pair(&rt, listeners, &hosts, |b, _| b);
    let server = acceptor.clone();
    let serving = async move {
        // The application's accept loop: one connection is enough here.
        let (io, peer) = app_listener.accept().await.expect("accept");
        server.serve_socket(io, Some(peer)).await;
    };
    let test = async {
        let conn = dialer.connection(&hosts[a]).expect("peer");
        conn.wait_connected().await;
        assert_eq!(
            conn.request(ECHO, Bytes::from_static(b"in")).await.unwrap(),
            "in"
        );
        let back = acceptor.connection(&hosts[d]).expect("peer");
        back.wait_connected().await;
        assert_eq!(
            back.request(ECHO, Bytes::from_static(b"out"))
                .await
                .unwrap(),
            "out"
        );
    };
    within(&rt, LIMIT, futures_util::future::join(serving, test)).await;
    dialer.shutdown().await;
    acceptor.shutdown().await;
    assert_eq!(dialer.running_tasks() + acceptor.running_tasks(), 0);
}

/// Starts a dialer and an acceptor where the acceptor refuses the dialer (bad token or
/// unknown host), waits for several attempts, and checks that the dialer sees
/// `reason` and that each side logged it exactly once.
async fn rejection(rt: &Arc<dyn Runtime>, logs: &crate::logs::Capture, bad_token: bool) {
    let (listeners, hosts) = bind(2);
    let (d, a) = if grid_core::codec::should_dial(&hosts[0], &hosts[1]) {
        (0, 1)
    } else {
        (1, 0)
    };
    let mut listeners: Vec<Option<std::net::TcpListener>> =
        listeners.into_iter().map(Some).collect();
    let mut start = |i: usize, token: &'static str, peers: Vec<String>| {
        Manager::builder(hosts[i].clone(), &peers)
            .config(test_config())
            .listener(listeners[i].take().expect("listener"))
            .token_provider(move || token.into())
            .token_validator(secret_only)
            .start(rt.clone())
            .expect("manager starts")
    };
    let (acceptor_peers, token) = if bad_token {
        (hosts.clone(), "forged")
    } else {
        (vec![hosts[a].clone()], "secret")
    };
    let acceptor = start(a, "secret", acceptor_peers);
    let dialer = start(d, token, hosts.clone());
    let conn = dialer.connection(&hosts[a]).expect("peer");
    within(rt, LIMIT, async {
        // Polls the dialer's counters: the attempts are spaced by the reconnect jitter.
        until(rt, Duration::from_millis(10), || {
            conn.stats().dial_attempts >= 4
        })
        .await;
    })
    .await;
    let reason = if bad_token {
        "auth token: bad token".to_owned()
    } else {
        format!("unknown incoming host: {}", hosts[d])
    };
    let err = conn.stats().last_error.expect("the dialer saw why");
    assert!(err.contains(&reason), "{err}");
    assert!(!conn.is_connected());
    dialer.shutdown().await;
    acceptor.shutdown().await;
    let a_addr = hosts[a].trim_start_matches("http://").to_owned();
    let lines: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains(&reason) && l.contains(&a_addr))
        .collect();
    // One line on the acceptor, one on the dialer, whatever the number of attempts.
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("rejected connection"))
            .count(),
        1
    );
}

/// A bad token: refused at the upgrade with the validator's reason.
pub async fn rejected_bad_token(rt: Arc<dyn Runtime>, logs: &crate::logs::Capture) {
    rejection(&rt, logs, true).await;
}

/// A dialer the acceptor does not know: refused in the handshake with the reason.
pub async fn rejected_unknown_host(rt: Arc<dyn Runtime>, logs: &crate::logs::Capture) {
    rejection(&rt, logs, false).await;
}

/// Nodes that bind their own address from their host string (no listener handed in)
/// and serve the lock grid's route: calls go both ways, and the managers name their
/// address, peers and links. A node dialing one of them on the default route is refused
/// with 404 and says why.
pub async fn own_listener_and_route(rt: Arc<dyn Runtime>) {
    use grid_core::driver::{MINIO_LOCK_ROUTE, MINIO_ROUTE, StartError};
    let probe = Arc::new(Probe::default());
    let start = |host: &str, hosts: &[String], route: &str| {
        test_node(host, hosts, &probe, false)
            .route(route)
            .start(rt.clone())
    };
    // Free ports, bound and released: one taken again in between fails `start` with
    // `AddrInUse`, and the ports are picked again.
    let (nodes, hosts) = 'pick: loop {
        let (listeners, hosts) = bind(2);
        drop(listeners);
        let mut nodes = Vec::new();
        for h in &hosts {
            match start(h, &hosts, MINIO_LOCK_ROUTE) {
                Ok(m) => nodes.push(m),
                Err(StartError::Listen { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    for m in nodes {
                        m.shutdown().await;
                    }
                    continue 'pick;
                }
                Err(e) => panic!("{e}"),
            }
        }
        break (nodes, hosts);
    };
    let c = TestCluster {
        nodes,
        hosts,
        probe: probe.clone(),
    };
    within(&rt, LIMIT, async {
        c.wait_connected().await;
        for (i, j) in [(0, 1), (1, 0)] {
            let p = pattern(100);
            assert_eq!(c.conn(i, j).request(ECHO, p.clone()).await.unwrap(), p);
        }
        for (i, m) in c.nodes.iter().enumerate() {
            let other = &c.hosts[1 - i];
            let port = c.hosts[i].rsplit(':').next().unwrap();
            assert_eq!(
                m.local_addr().map(|a| a.port().to_string()).as_deref(),
                Some(port)
            );
            assert_eq!(m.peers().collect::<Vec<_>>(), [other.as_str()]);
            let stats = m.stats();
            assert_eq!(stats.keys().collect::<Vec<_>>(), [other]);
            let link = &stats[other];
            assert!(link.connected && link.connects == 1, "{link:?}");
            // The handshake and the two echoes each way.
            assert!(link.session.frames_sent >= 3, "{link:?}");
            assert!(format!("{m:?}").contains(&c.hosts[i]), "{m:?}");
        }
    })
    .await;
    // A third node, on the default route, that dials node 0.
    let d = peer_that_dials(&c.hosts[0]);
    let target = c.hosts[0].clone();
    let stray = Manager::builder(&d, &[d.clone(), target.clone()])
        .config(test_config())
        .route(MINIO_ROUTE)
        .no_listener()
        .token_provider(|| "secret".into())
        .start(rt.clone())
        .expect("manager starts");
    let conn = stray.connection(&target).expect("peer");
    within(&rt, LIMIT, async {
        until(&rt, Duration::from_millis(10), || {
            conn.stats().last_error.is_some()
        })
        .await;
    })
    .await;
    let err = conn.stats().last_error.expect("the dialer saw why");
    assert!(
        err.contains("404") && err.contains(&format!("no grid route at {MINIO_ROUTE}")),
        "{err}"
    );
    assert!(!conn.is_connected());
    stray.shutdown().await;
    assert_eq!(stray.running_tasks(), 0);
    c.shutdown().await;
}

/// The dial rule across 35 hosts: each pair gets opposite answers and every host dials
/// at least 10 others. Nothing listens on their port, so the dialers are refused.
pub async fn dial_rule_across_35_hosts(rt: Arc<dyn Runtime>) {
    let hosts: Vec<String> = (1..=35).map(|i| format!("http://127.0.0.{i}:1")).collect();
    let managers: Vec<Manager> = hosts
        .iter()
        .map(|h| {
            Manager::builder(h.clone(), &hosts)
                .no_listener()
                .start(rt.clone())
                .unwrap()
        })
        .collect();
    for (i, m) in managers.iter().enumerate() {
        let mut dials = 0;
        for (j, h) in hosts.iter().enumerate() {
            if i == j {
                continue;
            }
            let here = m.connection(h).unwrap().dials();
            let there = managers[j].connection(&hosts[i]).unwrap().dials();
            assert_ne!(here, there, "{} and {h}", hosts[i]);
            dials += here as usize;
        }
        assert!(dials >= 10, "{} dials {dials}", hosts[i]);
    }
    for m in managers {
        m.shutdown().await;
        assert_eq!(m.running_tasks(), 0);
    }
}

/// Nodes on different runtimes form one cluster: calls and streams work in every
/// direction, and a link cut between two of them comes back.
pub async fn cross_runtime(rts: Vec<Arc<dyn Runtime>>) {
    let rt = rts[0].clone();
    let c = cluster_on(&rts, |_, b| b).await;
    within(&rt, LIMIT, async {
        for i in 0..rts.len() {
            for j in 0..rts.len() {
                if i == j {
                    continue;
                }
                let conn = c.conn(i, j);
                let p = pattern(64 << 10);
                assert_eq!(conn.request(ECHO, p.clone()).await.unwrap(), p);
                let s = conn
                    .new_stream(STREAM_ECHO, Some(Bytes::from_static(b">")))
                    .unwrap();
                let mut req = s.requests.unwrap();
                let mut resp = s.responses;
                for k in 0..5u8 {
                    req.send(Bytes::from(vec![k])).await.unwrap();
                    assert_eq!(&resp.next().await.unwrap().unwrap()[..], &[b'>', k]);
                }
                req.close();
                assert!(resp.next().await.is_none());
            }
        }
        let (a, b) = (c.conn(0, 1), c.conn(1, 0));
        a.reset();
        b.reset();
        until_link_works(&a).await;
        until_link_works(&b).await;
        assert!(a.stats().reconnects >= 1);
    })
    .await;
    c.shutdown().await;
}

/// Defines one `#[test]` per scenario, each run with `$block_on` (a generic function
/// taking a future) on the runtime `$rt` (an expression evaluated inside it).
#[macro_export]
macro_rules! suite_tests {
    ($block_on:path, $rt:expr) => {
        $crate::scenario_tests!(suite, $block_on, $rt;
            single_roundtrips,
            request_deadline,
            dropped_request_returns_at_once,
            stream_roundtrip,
            every_pacing_moves_every_message,
            write_batches_follow_the_pacing,
            quiet_links_give_back_their_buffers,
            socket_tasks_yield_after_a_handoff,
            socket_tasks_yield_after_their_read_round,
            answered_handlers_take_no_task,
            stream_cancel,
            reader_yields_once_after_returning_credits,
            congestion_without_head_of_line_blocking,
            link_loss_and_reconnect,
            unread_items_outlive_a_lost_link,
            shutdown_with_calls_in_flight,
            dial_rule_across_35_hosts,
            own_listener_and_route,
            serve_socket_from_the_applications_listener,
            ; logged: rejected_bad_token, rejected_unknown_host
        );
    };
}
