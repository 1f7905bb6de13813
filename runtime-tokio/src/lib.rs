//! Grid on the tokio runtime.
//!
//! Binds [`grid_core::driver`] to tokio's executor, timers and TCP, and re-exports the
//! whole API, so that this crate is the only one an application needs.
//!
//! ```no_run
//! use bytes::Bytes;
//! use grid_tokio::{Manager, Request};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let hosts = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
//! let manager = Manager::builder(hosts[0], &hosts)
//!     .single(1, |req: Request| async move { Ok(req.payload) })?
//!     .start(grid_tokio::runtime())?;
//! let peer = manager.connection(hosts[1]).unwrap();
//! peer.wait_connected().await;
//! let echo = peer.request(1, Bytes::from_static(b"hello")).await?;
//! assert_eq!(echo, "hello");
//! manager.shutdown().await;
//! # Ok(()) }
//! ```

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pub use grid_core::codec;
pub use grid_core::driver::*;
pub use grid_core::proto::{CallError, Config, RegisterError};
pub use grid_core::typed;
pub use grid_core::{self as core};

/// The tokio binding of [`Runtime`].
#[derive(Clone, Debug)]
pub struct Tokio {
    handle: tokio::runtime::Handle,
}

impl Tokio {
    /// Binds to the runtime the caller runs in.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> Tokio {
        Tokio {
            handle: tokio::runtime::Handle::current(),
        }
    }

    /// Binds to a given runtime.
    pub fn with_handle(handle: tokio::runtime::Handle) -> Tokio {
        Tokio { handle }
    }
}

/// The current tokio runtime, ready for [`ManagerBuilder::start`].
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(Tokio::current())
}

struct TokioListener(tokio::net::TcpListener);

/// tokio's TCP stream under the I/O traits of `futures`, which the driver uses; vectored
/// writes are passed on (the driver writes large payloads from their own buffers).
struct TcpIo(tokio::net::TcpStream);

impl futures_util::io::AsyncRead for TcpIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut b = tokio::io::ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut b) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(b.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_util::io::AsyncWrite for TcpIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut self.0), cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

impl Listener for TokioListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let (s, peer) = self.0.accept().await?;
            s.set_nodelay(true)?;
            Ok((Box::new(TcpIo(s)) as BoxIo, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Runtime for Tokio {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.handle.spawn(task);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        // The timer binds to this runtime even when created from another executor.
        let _guard = self.handle.enter();
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxIo>> {
        // Connecting runs on this runtime, so it may be awaited from any executor.
        let task = self.handle.spawn(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(TcpIo(s)) as BoxIo)
        });
        Box::pin(async move { task.await.map_err(io::Error::other)? })
    }

    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        let _guard = self.handle.enter();
        Ok(Box::new(TokioListener(tokio::net::TcpListener::from_std(
            listener,
        )?)))
    }

    /// Short turns: on tokio's work-stealing scheduler, yielding after every two
    /// inbound messages lets the handlers and callers a turn woke run (or be stolen by
    /// the other worker) while more messages arrive. Measured with `grid-bench` against
    /// the default pacing on 2 cores: 128 concurrent callers 1.6x the requests per
    /// second, 512-byte stream items 1.3x, 64 KiB items 1.4x.
    fn pacing(&self) -> Pacing {
        Pacing {
            read_batch: 2,
            turns_per_poll: 1,
            ..Pacing::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;

    /// Several slices leave in one vectored write (tokio's own, not the one-slice
    /// fallback of the `futures` trait), and what is written reads back.
    #[tokio::test]
    async fn vectored_writes_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dial = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
        let (server, _) = listener.accept().await.unwrap();
        let (mut a, mut b) = (TcpIo(dial.await.unwrap().unwrap()), TcpIo(server));
        let parts = [&b"grid "[..], b"over ", b"one socket"];
        let slices = parts.map(IoSlice::new);
        let n = std::future::poll_fn(|cx| Pin::new(&mut a).poll_write_vectored(cx, &slices));
        assert_eq!(n.await.unwrap(), 20);
        a.close().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"grid over one socket");
    }
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
