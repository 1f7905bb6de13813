//! An in-process loopback TCP proxy that injects faults into a live link.
//!
//! Built on std threads and blocking sockets, so it works under any async runtime (and
//! never depends on the executor it is testing). Every accepted connection is forwarded
//! to one loopback target by two pump threads, one per direction. The controls take
//! effect at once, on live connections and on new ones:
//!
//! | control | effect |
//! |---|---|
//! | [`FaultProxy::pass`] | forward everything (the default); accept new connections |
//! | [`FaultProxy::blackhole`] | read a direction's bytes and deliver none |
//! | [`FaultProxy::stall`] | stop reading a direction, so TCP backpressure builds |
//! | [`FaultProxy::drip`] | forward a direction one byte at a time, with a delay |
//! | [`FaultProxy::chunk1`] | forward a direction in 1-byte writes, without delay |
//! | [`FaultProxy::cut_fin`] | shut down both sockets of every live connection (FIN) |
//! | [`FaultProxy::cut_rst`] | close every live connection with `SO_LINGER` 0 (RST) |
//! | [`FaultProxy::refuse`] | accept new connections and drop them at once |
//!
//! Bounded: it listens and forwards on 127.0.0.1 only, holds at most
//! [`MAX_CONNECTIONS`] connections at once (more are dropped on accept), and every
//! thread polls with a short timeout and ends soon after the proxy is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections a proxy holds at once; more are dropped on accept.
pub const MAX_CONNECTIONS: usize = 256;

/// How often blocked threads look at the controls and the shutdown flag.
const TICK: Duration = Duration::from_millis(5);

/// A direction through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the connecting side (the dialer) to the target.
    ToTarget,
    /// From the target back to the connecting side.
    ToClient,
}

/// What a pump does with the bytes of its direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward as read.
    Pass,
    /// Read and discard.
    Blackhole,
    /// Do not read.
    Stall,
    /// Forward one byte per write, sleeping this long after each.
    Drip(Duration),
    /// Forward one byte per write.
    Chunk1,
}

struct Conn {
    client: Arc<TcpStream>,
    target: Arc<TcpStream>,
    dead: Arc<AtomicBool>,
}

struct State {
    modes: Mutex<[Mode; 2]>,
    refuse: AtomicBool,
    stop: AtomicBool,
    live: Mutex<Vec<Conn>>,
    accepted: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl State {
    fn mode(&self, d: Dir) -> Mode {
        self.modes.lock().unwrap_or_else(|p| p.into_inner())[d as usize]
    }
}

/// A fault-injecting TCP proxy in front of one loopback address. Dropping it ends
/// every connection and thread it started.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `target`,
    /// which must be a 127.0.0.1 address.
    pub fn start(target: SocketAddr) -> FaultProxy {
        assert!(
            target.ip().is_loopback(),
            "the fault proxy forwards to loopback only, not {target}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            modes: Mutex::new([Mode::Pass; 2]),
            refuse: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, target, st))
            .expect("spawn proxy thread");
        FaultProxy {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A host string naming the proxy (`http://127.0.0.1:<port>`).
    pub fn host(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, d: Dir, m: Mode) {
        self.state.modes.lock().unwrap_or_else(|p| p.into_inner())[d as usize] = m;
    }

    /// Forwards everything both ways and accepts new connections again.
    pub fn pass(&self) {
        *self.state.modes.lock().unwrap_or_else(|p| p.into_inner()) = [Mode::Pass; 2];
        self.state.refuse.store(false, Ordering::SeqCst);
    }

    /// Reads `d`'s bytes and delivers none.
    pub fn blackhole(&self, d: Dir) {
        self.set(d, Mode::Blackhole);
    }

    /// Stops reading `d`, so the sender's writes back up.
    pub fn stall(&self, d: Dir) {
        self.set(d, Mode::Stall);
    }

    /// Forwards `d` one byte at a time, `delay` apart.
    pub fn drip(&self, d: Dir, delay: Duration) {
        self.set(d, Mode::Drip(delay));
    }

    /// Forwards `d` in 1-byte writes.
    pub fn chunk1(&self, d: Dir) {
        self.set(d, Mode::Chunk1);
    }

    /// Accepts new connections and drops them at once.
    pub fn refuse(&self) {
        self.state.refuse.store(true, Ordering::SeqCst);
    }

    /// Ends every live connection with a FIN to both ends. Returns how many it cut.
    pub fn cut_fin(&self) -> usize {
        self.cut(false)
    }

    /// Ends every live connection with an RST to both ends. Returns how many it cut.
    pub fn cut_rst(&self) -> usize {
        self.cut(true)
    }

    fn cut(&self, rst: bool) -> usize {
        let conns: Vec<Conn> =
            std::mem::take(&mut *self.state.live.lock().unwrap_or_else(|p| p.into_inner()));
        let n = conns.len();
        for c in conns {
            c.dead.store(true, Ordering::SeqCst);
            for s in [&c.client, &c.target] {
                if rst {
                    // Closing with a zero linger time sends RST instead of FIN. The
                    // descriptor closes when the pumps (which poll `dead`) drop it.
                    let _ = socket2::SockRef::from(&**s).set_linger(Some(Duration::ZERO));
                } else {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
        n
    }

    /// Connections currently forwarded.
    pub fn connections(&self) -> usize {
        let mut live = self.state.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|c| !c.dead.load(Ordering::SeqCst));
        live.len()
    }

    /// Connections accepted since the start (refused ones included).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut(false);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads =
            std::mem::take(&mut *self.state.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, st: Arc<State>) {
    while !st.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(TICK);
                continue;
            }
            Err(_) => {
                std::thread::sleep(TICK);
                continue;
            }
        };
        st.accepted.fetch_add(1, Ordering::SeqCst);
        let full = {
            let mut live = st.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|c| !c.dead.load(Ordering::SeqCst));
            live.len() >= MAX_CONNECTIONS
        };
        if st.refuse.load(Ordering::SeqCst) || full {
            drop(client);
            continue;
        }
        let Ok(target) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
            continue;
        };
        let setup = |s: &TcpStream| {
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(TICK))?;
            s.set_write_timeout(Some(TICK))
        };
        if setup(&client).and_then(|()| setup(&target)).is_err() {
            continue;
        }
        let client = Arc::new(client);
        let target = Arc::new(target);
        let dead = Arc::new(AtomicBool::new(false));
        st.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Conn {
                client: client.clone(),
                target: target.clone(),
                dead: dead.clone(),
            });
        let mut threads = st.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        for (d, from, to) in [
            (Dir::ToTarget, client.clone(), target.clone()),
            (Dir::ToClient, target.clone(), client.clone()),
        ] {
            let st = st.clone();
            let dead = dead.clone();
            let t = std::thread::Builder::new()
                .name("fault-proxy-pump".into())
                .spawn(move || {
                    pump(&st, d, &from, &to, &dead);
                    dead.store(true, Ordering::SeqCst);
                })
                .expect("spawn pump");
            threads.push(t);
        }
    }
}

/// Whether the pump should end.
fn over(st: &State, dead: &AtomicBool) -> bool {
    dead.load(Ordering::SeqCst) || st.stop.load(Ordering::SeqCst)
}

/// Moves `from`'s bytes to `to` as the direction's mode says, until either side ends,
/// the connection is cut or the proxy stops. Ending one direction ends the other.
fn pump(st: &State, d: Dir, mut from: &TcpStream, to: &TcpStream, dead: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    while !over(st, dead) {
        let mode = st.mode(d);
        if mode == Mode::Stall {
            std::thread::sleep(TICK);
            continue;
        }
        let n = match from.read(&mut buf) {
            // A blackhole hides the end too: the other side sees silence, not a FIN.
            Ok(0) if st.mode(d) == Mode::Blackhole => {
                while st.mode(d) == Mode::Blackhole && !over(st, dead) {
                    std::thread::sleep(TICK);
                }
                break;
            }
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // The mode is read again per byte so a change applies mid-buffer too.
        let mut i = 0;
        while i < n {
            if over(st, dead) {
                return;
            }
            let (len, delay) = match st.mode(d) {
                Mode::Blackhole => break,
                Mode::Pass | Mode::Stall => (n - i, None),
                Mode::Chunk1 => (1, None),
                Mode::Drip(t) => (1, Some(t)),
            };
            if !write_all(st, to, &buf[i..i + len], dead) {
                return;
            }
            i += len;
            if let Some(t) = delay {
                std::thread::sleep(t);
            }
        }
    }
    // Pass the end on (FIN), unless the connection was cut (an RST cut must not send
    // a FIN first) or the proxy is stopping.
    if !over(st, dead) {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}

/// Writes all of `b`, retrying on timeouts so the pump still notices a cut.
fn write_all(st: &State, mut to: &TcpStream, mut b: &[u8], dead: &AtomicBool) -> bool {
    while !b.is_empty() {
        if over(st, dead) {
            return false;
        }
        match to.write(b) {
            Ok(0) => return false,
            Ok(n) => b = &b[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}
