//! What Grid needs from an async runtime: spawning, a timer, TCP.
//!
//! Everything else (sessions, WebSocket, handlers, reconnection) is written once in
//! this module's parent and works on any runtime that implements [`Runtime`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use futures_util::io::{AsyncRead, AsyncWrite};

/// A boxed future, as the runtime interface passes them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream: a TCP connection, a TLS session over one, or anything else that reads
/// and writes.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// A bound TCP listener.
pub trait Listener: Send + Sync + 'static {
    /// Accepts the next connection.
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>>;
    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The runtime binding: about a hundred lines per runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Runs a task in the background.
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;
    /// Opens a TCP connection to `addr` (`host:port`), with `TCP_NODELAY` set.
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxIo>>;
    /// Wraps a bound standard-library listener for this runtime.
    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>>;
}
