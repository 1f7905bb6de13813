//! The manager: one node's view of the cluster, its handlers and its links.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};
use tracing::{debug, info, warn};

use super::connection::Connection;
use super::handler::{Handlers, RemoteError, Request, StreamCtx, StreamOptions};
use super::link::{Link, LinkStats, Shared, dial_loop, wall_now};
use super::runtime::{BoxIo, Io, Listener, Runtime};
use super::signal::{Signal, Tasks};
use super::ws;
use crate::codec::should_dial;
use crate::proto::{Cluster, Config, LostReason, RegisterError, Session};

/// The route MinIO serves its general grid on.
pub const MINIO_ROUTE: &str = "/minio/grid/v1";
/// The route MinIO serves its lock grid on.
pub const MINIO_LOCK_ROUTE: &str = "/minio/grid/lock/v1";

/// Why a manager could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A handler was registered twice, or with ID 0.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The local host string is not usable, or a peer this node dials is not a URL it
    /// can dial.
    #[error("{0}")]
    Host(String),
    /// The route is not a URL path (see [`ManagerBuilder::route`]).
    #[error("{0}")]
    Route(String),
    /// A host string is a TLS host (`https://`, `wss://`) but the manager has no TLS
    /// configuration (see `ManagerBuilder::tls`, feature `tls`). Any TLS host in the
    /// cluster needs one: this node may have to dial it.
    #[cfg_attr(
        feature = "tls",
        error(
            "{host} is a TLS host but the manager has no TLS configuration (ManagerBuilder::tls)"
        )
    )]
    #[cfg_attr(
        not(feature = "tls"),
        error("{host} is a TLS host but Grid was built without its `tls` feature")
    )]
    TlsNotConfigured {
        /// The first TLS host string found (this node's own, or a peer's).
        host: String,
    },
}

/// Builds a [`Manager`]: its identity, its peers, its handlers and its options.
pub struct ManagerBuilder {
    local_host: String,
    hosts: Vec<String>,
    config: Config,
    route: String,
    token: Arc<dyn Fn() -> String + Send + Sync>,
    validator: Arc<crate::proto::TokenValidator>,
    handlers: Handlers,
    listener: Option<std::net::TcpListener>,
    listen: bool,
    seed: u64,
    #[cfg(feature = "tls")]
    tls: Option<super::tls::TlsConfig>,
}

impl ManagerBuilder {
    /// A node called `local_host` (`scheme://host:port`, spelled as every node spells it)
    /// in a cluster of `hosts` (which may include `local_host`).
    pub fn new(local_host: impl Into<String>, hosts: &[impl AsRef<str>]) -> ManagerBuilder {
        ManagerBuilder {
            local_host: local_host.into(),
            hosts: hosts.iter().map(|h| h.as_ref().to_owned()).collect(),
            config: Config::default(),
            route: MINIO_ROUTE.to_owned(),
            token: Arc::new(String::new),
            validator: Arc::new(|_| Ok(())),
            handlers: Handlers::default(),
            listener: None,
            listen: true,
            seed: 0x6772_6964,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Limits and timeouts.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The URL path of the WebSocket upgrade (default [`MINIO_ROUTE`]; MinIO serves its
    /// lock grid on [`MINIO_LOCK_ROUTE`]): this node dials its peers on it and accepts
    /// upgrades only there, answering any other path with 404. It starts with `/` and
    /// has no query; [`ManagerBuilder::start`] refuses one that does not.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = route.into();
        self
    }

    /// Produces the token sent when dialing.
    pub fn token_provider(mut self, f: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.token = Arc::new(f);
        self
    }

    /// Checks a dialing peer's token; `Err` carries the reason sent back.
    pub fn token_validator(
        mut self,
        f: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Arc::new(f);
        self
    }

    /// Serves on an already bound listener instead of binding the local host's address.
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Does not listen at all: the application hands accepted sockets to
    /// [`Manager::serve_socket`] (for example from its own HTTP server).
    pub fn no_listener(mut self) -> Self {
        self.listen = false;
        self
    }

    /// Speaks TLS with `tls` (feature `tls`): required when this node's host string or
    /// a peer's is a TLS host (`https://` or `wss://`).
    ///
    /// The links this node dials to a TLS host run over TLS, checking the peer's
    /// certificate against the host string's name or IP address; when this node is a
    /// TLS host, its listener and [`Manager::serve_socket`] serve TLS. Links between two
    /// TLS hosts carry no CRC (`PROTOCOL.md` §1.3); a cluster may mix TLS and plain
    /// hosts, each link following the host string of the node that accepts it.
    ///
    /// ```no_run
    /// # fn demo(rt: std::sync::Arc<dyn grid_core::driver::Runtime>, chain: &[u8], key: &[u8], ca: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    /// use grid_core::driver::{Manager, TlsConfig};
    ///
    /// let hosts = ["https://node1:9000", "https://node2:9000"];
    /// let manager = Manager::builder(hosts[0], &hosts)
    ///     .tls(TlsConfig::from_pem(chain, key, ca)?)
    ///     .start(rt)?;
    /// # let _ = manager; Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: super::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Seeds the reconnect jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Registers a single-request handler.
    ///
    /// Its future is first polled on the link's socket task (see the
    /// [module docs](crate::driver)): compute-heavy work belongs in a task of its own.
    pub fn single<F, Fut>(self, id: u8, f: F) -> Result<Self, RegisterError>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.single_inner(id, None, f)
    }

    /// Registers a single-request handler on a subroute.
    pub fn single_on<F, Fut>(self, id: u8, route: &str, f: F) -> Result<Self, RegisterError>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.single_inner(id, Some(route), f)
    }

    fn single_inner<F, Fut>(
        mut self,
        id: u8,
        route: Option<&str>,
        f: F,
    ) -> Result<Self, RegisterError>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.handlers
            .add_single(id, route, Arc::new(move |r| Box::pin(f(r))))?;
        Ok(self)
    }

    /// Registers a stream handler. Both peers must register it with the same options.
    pub fn stream<F, Fut>(self, id: u8, opts: StreamOptions, f: F) -> Result<Self, RegisterError>
    where
        F: Fn(StreamCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.stream_inner(id, None, opts, f)
    }

    /// Registers a stream handler on a subroute.
    pub fn stream_on<F, Fut>(
        self,
        id: u8,
        route: &str,
        opts: StreamOptions,
        f: F,
    ) -> Result<Self, RegisterError>
    where
        F: Fn(StreamCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.stream_inner(id, Some(route), opts, f)
    }

    fn stream_inner<F, Fut>(
        mut self,
        id: u8,
        route: Option<&str>,
        opts: StreamOptions,
        f: F,
    ) -> Result<Self, RegisterError>
    where
        F: Fn(StreamCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.handlers
            .add_stream(id, route, opts, Arc::new(move |c| Box::pin(f(c))))?;
        Ok(self)
    }

    /// Starts the manager on `rt`: binds (unless told not to), accepts peers and dials
    /// the peers this node dials. Before it spawns anything it fails with a
    /// [`StartError`] on a route that is not a URL path, a peer it dials whose host
    /// string is not a URL (or, for a TLS host, names no certificate: neither a DNS name
    /// nor an IP address), a TLS host without a TLS configuration, or an address it
    /// cannot bind.
    pub fn start(self, rt: Arc<dyn Runtime>) -> Result<Manager, StartError> {
        #[cfg(feature = "tls")]
        let has_tls = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let has_tls = false;
        let tls_host = std::iter::once(&self.local_host)
            .chain(&self.hosts)
            .find(|h| ws::is_tls(h));
        if let (Some(host), false) = (tls_host, has_tls) {
            return Err(StartError::TlsNotConfigured { host: host.clone() });
        }
        ws::check_route(&self.route).map_err(StartError::Route)?;
        // A typo in a peer's host string fails here, not in every attempt of its dialer.
        for peer in self
            .hosts
            .iter()
            .filter(|p| should_dial(&self.local_host, p))
        {
            ws::check_dialable(peer, &self.route).map_err(StartError::Host)?;
        }
        let mut id = [0u8; 16];
        let entropy = twox_hash::XxHash3_128::oneshot(
            format!(
                "{}{:?}{}",
                self.local_host,
                Instant::now(),
                std::process::id()
            )
            .as_bytes(),
        ) ^ (wall_now().as_unix_nanos() as u128);
        id.copy_from_slice(&entropy.to_le_bytes());
        let peers: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        let mut cluster = Cluster::new(self.local_host.clone(), id, &peers);
        cluster.registry = self.handlers.registry.clone();
        cluster.validate_token = self.validator;
        cluster.config = self.config;
        let shared = Arc::new(Shared {
            rt: rt.clone(),
            cluster: Arc::new(cluster),
            handlers: self.handlers,
            route: self.route,
            token: self.token,
            shutdown: Signal::new(),
            tasks: Tasks::default(),
            rejections: Mutex::new(HashSet::new()),
            seed: self.seed,
            #[cfg(feature = "tls")]
            tls: self.tls,
        });
        let links: BTreeMap<String, Arc<Link>> = shared
            .cluster
            .peers
            .iter()
            .map(|p| {
                let dials = should_dial(&self.local_host, p);
                (p.clone(), Link::new(p, dials, shared.clone()))
            })
            .collect();
        let listener = match (self.listen, self.listener) {
            (false, _) => None,
            (true, Some(l)) => Some(l),
            (true, None) => {
                let addr = ws::endpoint(&self.local_host, "")
                    .map_err(StartError::Host)?
                    .addr;
                Some(
                    std::net::TcpListener::bind(&addr).map_err(|source| StartError::Listen {
                        addr: addr.clone(),
                        source,
                    })?,
                )
            }
        };
        let mut local_addr = None;
        if let Some(l) = listener {
            let addr = l.local_addr().ok();
            l.set_nonblocking(true)
                .map_err(|source| StartError::Listen {
                    addr: format!("{addr:?}"),
                    source,
                })?;
            let l = rt.listener(l).map_err(|source| StartError::Listen {
                addr: format!("{addr:?}"),
                source,
            })?;
            local_addr = l.local_addr().ok();
            let inner = Inner {
                shared: shared.clone(),
                links: links.clone(),
                local_addr,
            };
            shared.spawn(accept_loop(Arc::new(inner), l));
        }
        for link in links.values().filter(|l| l.dials) {
            shared.spawn(dial_loop(link.clone()));
        }
        info!(target: "grid::manager", local = %self.local_host, peers = links.len(), ?local_addr, "manager started");
        Ok(Manager {
            inner: Arc::new(Inner {
                shared,
                links,
                local_addr,
            }),
        })
    }
}

struct Inner {
    shared: Arc<Shared>,
    links: BTreeMap<String, Arc<Link>>,
    local_addr: Option<SocketAddr>,
}

/// One node of a cluster: serves its handlers to every peer and calls theirs, over one
/// WebSocket per pair, kept up for as long as the manager runs.
///
/// Cheap to clone. [`Manager::shutdown`] ends every call and every task it spawned.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("local_host", &self.local_host())
            .field("peers", &self.inner.links.keys())
            .finish()
    }
}

impl Manager {
    /// Starts building a manager.
    pub fn builder(local_host: impl Into<String>, hosts: &[impl AsRef<str>]) -> ManagerBuilder {
        ManagerBuilder::new(local_host, hosts)
    }

    /// This node's host string.
    pub fn local_host(&self) -> &str {
        &self.inner.shared.cluster.local_host
    }

    /// The address the manager listens on, if it listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The connection to `host`, if it is a peer.
    pub fn connection(&self, host: &str) -> Option<Connection> {
        self.inner
            .links
            .get(host)
            .map(|l| Connection::new(l.clone()))
    }

    /// Every peer's host string.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.inner.links.keys().map(String::as_str)
    }

    /// Counters of every link.
    pub fn stats(&self) -> BTreeMap<String, LinkStats> {
        self.inner
            .links
            .iter()
            .map(|(h, l)| (h.clone(), l.stats()))
            .collect()
    }

    /// Tasks the manager has running (links, handlers, listener).
    pub fn running_tasks(&self) -> usize {
        self.inner.shared.tasks.running()
    }

    /// Serves a socket accepted elsewhere: upgrades it on the manager's route and, if
    /// the peer's handshake passes, makes it the link to that peer.
    ///
    /// When this node is a TLS host (`https://`, `wss://`) the socket is served exactly
    /// as the manager's own listener would: the TLS handshake runs first, within the
    /// handshake timeout. An application that terminated TLS itself hands the decrypted
    /// stream to `serve_plain_socket` (feature `tls`) instead.
    pub async fn serve_socket(&self, io: impl Io, peer: Option<SocketAddr>) {
        let tls = ws::is_tls(self.local_host());
        let stop = self.inner.shared.shutdown.wait();
        let _ = select(Box::pin(serve(&self.inner, Box::new(io), peer, tls)), stop).await;
    }

    /// [`Manager::serve_socket`] for a stream whose TLS the application has already
    /// terminated (or that never had any): no TLS handshake runs, whatever this node's
    /// host string says.
    #[cfg(feature = "tls")]
    pub async fn serve_plain_socket(&self, io: impl Io, peer: Option<SocketAddr>) {
        let stop = self.inner.shared.shutdown.wait();
        let _ = select(
            Box::pin(serve(&self.inner, Box::new(io), peer, false)),
            stop,
        )
        .await;
    }

    /// Ends every call with `Disconnected`, closes every link, stops listening and
    /// dialing, cancels every handler, and waits until every task has finished.
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        shared.shutdown.fire();
        for link in self.inner.links.values() {
            link.close();
        }
        shared.tasks.idle().await;
        debug!(target: "grid::manager", local = %self.local_host(), "manager shut down");
    }
}

/// How long the listener pauses after an accept error that is not about one connection
/// (out of descriptors or buffers): such an error lasts until something is freed, and
/// retrying at once would spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Whether an accept error concerns only the connection being accepted (reset or
/// aborted before we took it), so that the next one can be taken at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

async fn accept_loop(inner: Arc<Inner>, listener: Box<dyn Listener>) {
    let shared = inner.shared.clone();
    // Backed-off failures in a row: only the first is a warning, so a process out of
    // descriptors logs once per episode, not twenty times a second.
    let mut failing = 0u64;
    let tls = ws::is_tls(&shared.cluster.local_host);
    let mut shutdown = shared.shutdown.wait();
    loop {
        let next = match select(listener.accept(), &mut shutdown).await {
            Either::Right(_) => break,
            Either::Left((r, _)) => r,
        };
        match next {
            Ok((io, peer)) => {
                if failing > 0 {
                    info!(target: "grid::manager", failed = failing, "accepting again");
                    failing = 0;
                }
                let inner2 = inner.clone();
                shared.spawn(async move {
                    // A handshake in progress must not outlive shutdown.
                    let stop = inner2.shared.shutdown.wait();
                    let _ = select(Box::pin(serve(&inner2, io, Some(peer), tls)), stop).await;
                });
            }
            Err(e) if is_connection_error(&e) => {
                debug!(target: "grid::manager", error = %e, "connection failed before accept");
            }
            Err(e) => {
                // Out of descriptors or buffers: the listener must neither stop nor
                // spin; it backs off, as production servers do, and tries again.
                failing += 1;
                if failing == 1 {
                    warn!(target: "grid::manager", error = %e, "accept failed; backing off");
                } else {
                    debug!(target: "grid::manager", error = %e, failing, "accept failed");
                }
                let pause = shared.sleep_until(Instant::now() + ACCEPT_BACKOFF);
                if let Either::Right(_) = select(pause, &mut shutdown).await {
                    break;
                }
            }
        }
    }
}

/// Logs a rejection once per (peer, reason).
fn log_rejection_once(shared: &Shared, peer: String, reason: &str) {
    log_rejection_once_as(shared, peer, reason, reason);
}

/// Logs a rejection once per (peer, key).
fn log_rejection_once_as(shared: &Shared, peer: String, key: &str, reason: &str) {
    let mut seen = shared.rejections.lock().unwrap_or_else(|p| p.into_inner());
    if seen.len() > 4096 {
        seen.clear();
    }
    if seen.insert((peer.clone(), key.to_owned())) {
        let local = &shared.cluster.local_host;
        warn!(target: "grid::manager", %local, %peer, %reason, "rejected connection");
    }
}

/// Serves one accepted socket: TLS (when `tls`), the upgrade, then the handshake.
async fn serve(inner: &Inner, io: BoxIo, peer: Option<SocketAddr>, tls: bool) {
    let shared = &inner.shared;
    let cfg = &shared.cluster.config;
    // One deadline for TLS, the upgrade and the connect request together: a client that
    // upgrades just before it must not get a second full timeout for the handshake.
    let accepted = Instant::now();
    let deadline = accepted + cfg.handshake_timeout;
    let upgrade = async {
        let io = if tls {
            ws::tls_accept(shared, io).await?
        } else {
            io
        };
        ws::accept(shared, io, peer).await
    };
    let ws = match select(Box::pin(upgrade), shared.sleep_until(deadline)).await {
        Either::Left((Ok(ws), _)) => ws,
        Either::Left((Err(e), _)) => {
            let ip = peer.map_or("?".into(), |p| p.ip().to_string());
            // A dialer that refuses our certificate sends an alert or just hangs up,
            // depending on timing: every TLS failure of a peer shares one line.
            let key = if e.starts_with(ws::TLS_FAILED) {
                ws::TLS_FAILED
            } else {
                &e
            };
            return log_rejection_once_as(shared, ip, key, &e);
        }
        Either::Right(_) => return debug!(target: "grid::manager", ?peer, "upgrade timed out"),
    };
    handshake(inner, ws, peer, accepted).await;
}

/// How long a refused or failed handshake may take to send its last frames and close.
const GOODBYE: Duration = Duration::from_millis(100);

/// Runs the acceptor's handshake on an upgraded socket, then installs the session.
async fn handshake(inner: &Inner, mut ws: ws::Socket, peer: Option<SocketAddr>, accepted: Instant) {
    let shared = &inner.shared;
    // The session's handshake deadline counts from the TCP accept.
    let mut session = Session::acceptor(shared.cluster.clone(), accepted, wall_now());
    while !session.is_connected() && !session.is_closed() {
        let at = session.poll_timeout().unwrap_or_else(Instant::now);
        let next = std::future::poll_fn(|cx| ws.poll_next(cx));
        match select(Box::pin(next), shared.sleep_until(at)).await {
            Either::Left((Ok(Some(ws::Inbound::Binary(b))), _)) => {
                session.handle_message(Instant::now(), b)
            }
            Either::Left((Ok(Some(ws::Inbound::Close(_)) | None) | Err(_), _)) => {
                session.close(LostReason::Transport("closed during handshake".into()))
            }
            // Answered as RFC 6455 asks; a peer that pings and does not read cannot
            // hold the handshake past its deadline with a blocked pong.
            Either::Left((Ok(Some(ws::Inbound::Ping(p))), _)) => {
                let pong = Box::pin(ws.pong(&p));
                if let Either::Right(_) = select(pong, shared.sleep_until(at)).await {
                    session.handle_timeout(Instant::now());
                }
            }
            // Pongs and text: not part of the protocol.
            Either::Left((Ok(Some(ws::Inbound::Skipped)), _)) => {}
            Either::Right(_) => session.handle_timeout(Instant::now()),
        }
    }
    if session.is_closed() {
        let mut buf = bytes::BytesMut::new();
        let goodbye = async {
            while session.poll_transmit(&mut buf).is_some() {
                let _ = ws.send(&buf.split()).await;
            }
            ws.close(Some(ws::CLOSE_NORMAL)).await;
        };
        // Best effort: a peer that does not read (one that flooded pings, say) must
        // not hold this task.
        let _ = select(
            Box::pin(goodbye),
            shared.sleep_until(Instant::now() + GOODBYE),
        )
        .await;
        while let Some(ev) = session.poll_event() {
            if let crate::proto::Event::Lost(LostReason::RejectedPeer(reason)) = ev {
                let who = peer.map_or("?".into(), |p| p.ip().to_string());
                log_rejection_once(shared, who, &reason);
            }
        }
        return;
    }
    let remote = session.remote_host().unwrap_or_default().to_owned();
    match inner.links.get(&remote) {
        Some(link) => {
            link.install(session, ws);
        }
        None => {
            // The session checked the peer list; a host without a link is a bug.
            crate::proto::bug::report(format_args!("accepted unknown host {remote}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime that is never used: `start` fails before it spawns anything.
    struct Unused;

    impl Runtime for Unused {
        fn spawn(&self, _: super::super::runtime::BoxFuture<'static, ()>) {
            unreachable!("spawn")
        }
        fn sleep_until(&self, _: Instant) -> super::super::runtime::BoxFuture<'static, ()> {
            unreachable!("sleep_until")
        }
        fn connect(
            &self,
            _: String,
        ) -> super::super::runtime::BoxFuture<'static, std::io::Result<BoxIo>> {
            unreachable!("connect")
        }
        fn listener(&self, _: std::net::TcpListener) -> std::io::Result<Box<dyn Listener>> {
            unreachable!("listener")
        }
    }

    /// `local` with a port from 1 up chosen so that it dials `peer` (or not).
    fn local_that_dials(peer: &str, dials: bool) -> String {
        (1..)
            .map(|port| format!("http://127.0.0.1:{port}"))
            .find(|l| should_dial(l, peer) == dials)
            .expect("a port")
    }

    #[test]
    fn a_peer_this_node_dials_must_be_a_url() {
        for (peer, why) in [
            ("127.0.0.1:9000", "has no scheme"),
            ("ftp://127.0.0.1:9000", "unsupported scheme"),
            ("http://", "has no address"),
            ("http://a b:9000", "does not make a URL"),
        ] {
            let local = local_that_dials(peer, true);
            let err = Manager::builder(&local, &[local.as_str(), peer])
                .no_listener()
                .start(Arc::new(Unused))
                .expect_err(peer);
            assert!(
                matches!(&err, StartError::Host(text) if text.contains(why) && text.contains(peer)),
                "{peer}: {err:?}"
            );
            // A peer that dials this node names itself; its string is only compared.
            let local = local_that_dials(peer, false);
            let m = Manager::builder(&local, &[local.as_str(), peer])
                .no_listener()
                .start(Arc::new(Unused))
                .expect("nothing to dial, nothing to bind");
            assert_eq!(m.peers().collect::<Vec<_>>(), [peer]);
            assert_eq!(m.running_tasks(), 0);
        }
    }

    #[test]
    fn a_route_that_is_not_a_path_does_not_start() {
        for route in ["grid", "/grid?x=1", "/a b"] {
            let err = Manager::builder("http://127.0.0.1:1", &["http://127.0.0.1:1"])
                .route(route)
                .no_listener()
                .start(Arc::new(Unused))
                .expect_err(route);
            assert!(
                matches!(&err, StartError::Route(text) if text.starts_with(&format!("route {route:?}: "))),
                "{err:?}"
            );
        }
    }

    #[test]
    fn an_address_taken_is_a_listen_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = taken.local_addr().expect("local addr").to_string();
        let local = format!("http://{addr}");
        let err = Manager::builder(&local, &[&local])
            .start(Arc::new(Unused))
            .expect_err("the address is taken");
        match &err {
            StartError::Listen { addr: a, source } => {
                assert_eq!(a, &addr);
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().starts_with(&format!("listen on {addr}: ")),
            "{err}"
        );
        // An address the host string does not hold is a host error.
        let err = Manager::builder("http://", &["http://"])
            .start(Arc::new(Unused))
            .expect_err("no address");
        assert!(
            matches!(&err, StartError::Host(t) if t.contains("has no address")),
            "{err:?}"
        );
    }

    #[test]
    fn a_tls_host_without_tls_configuration_does_not_start() {
        for (local, peer) in [
            ("https://127.0.0.1:1", "https://127.0.0.1:2"),
            ("http://127.0.0.1:1", "wss://127.0.0.1:2"),
        ] {
            let err = Manager::builder(local, &[local, peer])
                .start(Arc::new(Unused))
                .expect_err("a TLS host needs a TLS configuration");
            let first_tls = if local.starts_with("https") {
                local
            } else {
                peer
            };
            assert!(
                matches!(&err, StartError::TlsNotConfigured { host } if host == first_tls),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{first_tls} is a TLS host but ")),
                "{text}"
            );
            #[cfg(feature = "tls")]
            assert!(
                text.ends_with("no TLS configuration (ManagerBuilder::tls)"),
                "{text}"
            );
            #[cfg(not(feature = "tls"))]
            assert!(text.ends_with("built without its `tls` feature"), "{text}");
        }
    }
}
