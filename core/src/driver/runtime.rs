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

/// How the socket task of each link shares its executor thread.
///
/// One turn of the socket task reads up to `read_batch` inbound messages, hands them to
/// the session under one lock and writes what the session has to send. After
/// `turns_per_poll` turns the task yields even when there is more to do. Long turns
/// batch more work per lock and per wake-up; short ones let the tasks a turn woke
/// (handlers, waiting callers, stream readers) run sooner, which on a work-stealing
/// scheduler also lets another thread take them. Which is faster depends on the
/// scheduler, so each [`Runtime`] picks; zero counts as one.
///
/// ```
/// use grid_core::driver::Pacing;
///
/// let short = Pacing {
///     read_batch: 2,
///     turns_per_poll: 1,
///     ..Pacing::default()
/// };
/// assert_ne!(short, Pacing::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// Inbound messages per turn.
    pub read_batch: usize,
    /// Turns per poll of the socket task.
    pub turns_per_poll: usize,
    /// Whether the socket task yields after a turn that handed work to other tasks: one
    /// that started handlers (which run their first poll in that turn, and whose answers
    /// leave in it) or gave callers their answers. The task then runs again after the
    /// tasks already queued (those callers among them), instead of going on with more
    /// turns; turns that only move stream items keep going.
    pub yield_after_handoff: bool,
    /// About how many encoded bytes the socket task takes from the session per turn and
    /// writes as one batch; the rest waits in the session. A message is never split, so a
    /// batch passes this by less than one message; zero takes one message per turn.
    /// Smaller batches reach the socket sooner and need a smaller buffer to encode into;
    /// larger ones take fewer turns and writes.
    pub write_round_bytes: usize,
    /// About how many bytes of inbound messages one poll of the socket task reads before
    /// it yields (a message is never split; zero reads one message per poll). The tasks
    /// the messages go to, stream readers above all, then take them while their buffers
    /// are still in the processor's cache, and the link holds fewer of them at once.
    /// Matters on an executor that runs the socket task and the readers on one thread;
    /// `usize::MAX` leaves only `read_batch` and `turns_per_poll` to end a poll.
    pub read_round_bytes: usize,
}

impl Default for Pacing {
    /// 64 messages per turn, 16 turns per poll, no yield after a handoff, batches of
    /// about a megabyte, no limit on the bytes read per poll.
    fn default() -> Self {
        Pacing {
            read_batch: 64,
            turns_per_poll: 16,
            yield_after_handoff: false,
            write_round_bytes: 1 << 20,
            read_round_bytes: usize::MAX,
        }
    }
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
    /// How each link's socket task shares its thread; [`Pacing::default`] unless the
    /// runtime measured better otherwise. A runtime that wraps another forwards it.
    fn pacing(&self) -> Pacing {
        Pacing::default()
    }
}
