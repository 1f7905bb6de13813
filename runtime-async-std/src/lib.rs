//! Grid on the async-std and smol runtimes.
//!
//! Both run on the same async-io reactor, so timers and TCP are shared; only task
//! spawning and the socket tasks' [`Pacing`] differ: [`AsyncStd`] spawns on async-std's
//! executor, [`Smol`] on smol's.
//! The whole API of [`grid_core::driver`] is re-exported.
//!
//! ```no_run
//! use bytes::Bytes;
//! use grid_async_std::{Manager, Request};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let hosts = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
//! let manager = Manager::builder(hosts[0], &hosts)
//!     .single(1, |req: Request| async move { Ok(req.payload) })?
//!     .start(grid_async_std::runtime())?; // or grid_async_std::smol_runtime()
//! let peer = manager.connection(hosts[1]).unwrap();
//! peer.wait_connected().await;
//! assert_eq!(peer.request(1, Bytes::from_static(b"hi")).await?, "hi");
//! manager.shutdown().await;
//! # Ok(()) }
//! ```

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use grid_core::codec;
pub use grid_core::driver::*;
pub use grid_core::proto::{CallError, Config, RegisterError};
pub use grid_core::typed;
pub use grid_core::{self as core};
use smol::Async;
use smol::net::{TcpListener, TcpStream};

mod sock;
use crate::sock::ShortReads;

/// Where tasks run; everything else is the shared async-io stack.
pub trait Executor: Send + Sync + 'static {
    /// Runs a task in the background.
    fn spawn(task: BoxFuture<'static, ()>);

    /// How socket tasks share this executor's threads ([`Runtime::pacing`]).
    fn pacing() -> Pacing {
        Pacing::default()
    }
}

/// async-std's executor.
#[derive(Debug)]
pub enum AsyncStdExecutor {}

impl Executor for AsyncStdExecutor {
    fn spawn(task: BoxFuture<'static, ()>) {
        async_std::task::spawn(task);
    }

    /// A socket task reads two messages per turn and yields after a turn that started
    /// handlers or answered callers, so the tasks it handed work to run (or are taken by
    /// the other thread) before it reads more; turns that only move stream items go on,
    /// 16 to a poll. Measured with `grid-bench` on 2 cores against the previous pacing
    /// (64 messages a turn, a yield only after handlers), four runs each in turn, medians:
    /// 128 concurrent callers 500 k -> 722 k requests per second (1.12x -> 1.59x the
    /// floor's), 16 callers 1.25x -> 1.36x, the two-way echo stream 1.15x -> 1.29x;
    /// 512-byte stream items 1.91 -> 1.82 M/s. On tokio a yield after handlers doubled
    /// the 1-caller latency (20 to 58 µs).
    fn pacing() -> Pacing {
        Pacing {
            read_batch: 2,
            turns_per_poll: 16,
            yield_after_handoff: true,
            ..Pacing::default()
        }
    }
}

/// smol's global executor.
#[derive(Debug)]
pub enum SmolExecutor {}

impl Executor for SmolExecutor {
    fn spawn(task: BoxFuture<'static, ()>) {
        smol::spawn(task).detach();
    }

    /// A poll of the socket task reads about 256 KiB of messages at most: smol runs it
    /// and the stream readers on one executor thread, and a reader then takes its items
    /// while their buffers are still in the cache, where longer polls queued megabytes
    /// ahead of it. Measured with `grid-bench` against the default pacing, eight runs
    /// each in turn: 64 KiB stream items 2.33-3.05 GB/s against 1.83-2.41.
    fn pacing() -> Pacing {
        Pacing {
            read_round_bytes: 256 << 10,
            ..Pacing::default()
        }
    }
}

/// A [`Runtime`] on the async-io reactor, spawning on executor `E`.
pub struct AsyncIoRuntime<E>(PhantomData<fn() -> E>);

impl<E> Default for AsyncIoRuntime<E> {
    fn default() -> Self {
        AsyncIoRuntime(PhantomData)
    }
}

impl<E> std::fmt::Debug for AsyncIoRuntime<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsyncIoRuntime<{}>", std::any::type_name::<E>())
    }
}

/// The async-std binding.
pub type AsyncStd = AsyncIoRuntime<AsyncStdExecutor>;
/// The smol binding.
pub type Smol = AsyncIoRuntime<SmolExecutor>;

/// async-std, ready for [`ManagerBuilder::start`].
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(AsyncStd::default())
}

/// smol, ready for [`ManagerBuilder::start`].
pub fn smol_runtime() -> Arc<dyn Runtime> {
    Arc::new(Smol::default())
}

/// A connected socket as a link's [`Io`], with `TCP_NODELAY` set.
fn boxed(s: TcpStream) -> io::Result<BoxIo> {
    s.set_nodelay(true)?;
    Ok(Box::new(ShortReads::new(
        Arc::<Async<std::net::TcpStream>>::from(s),
    )))
}

struct AsyncIoListener(TcpListener);

impl Listener for AsyncIoListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let (s, peer) = self.0.accept().await?;
            Ok((boxed(s)?, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl<E: Executor> Runtime for AsyncIoRuntime<E> {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        E::spawn(task);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let timer = smol::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxIo>> {
        Box::pin(async move { boxed(TcpStream::connect(addr).await?) })
    }

    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(AsyncIoListener(TcpListener::try_from(listener)?)))
    }

    fn pacing(&self) -> Pacing {
        E::pacing()
    }
}
