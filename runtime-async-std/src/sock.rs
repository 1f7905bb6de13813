//! The TCP stream Grid's links read and write on the async-io reactor.

use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

/// A non-blocking socket: what [`ShortReads`] needs from it.
pub(crate) trait Readiness {
    /// Ready once the reactor has reported the socket readable since the last call
    /// returned `Pending`; otherwise registers `cx`'s waker and returns `Pending`.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what the socket holds now, `WouldBlock` when it holds nothing.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Readiness for Arc<Async<TcpStream>> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_readable(self, cx)
    }

    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.get_ref().read(buf)
    }
}

/// A socket that, after a read that did not fill the buffer, waits for the reactor to
/// report it readable before reading again, instead of reading once more to find it
/// empty (as async-io's own streams do). A socket that gets one message at a time thus
/// costs one `recv` per message instead of two; tokio's streams skip that read in the
/// same way. A short read leaves nothing behind it when it was made, and anything that
/// arrives later is reported: the reactor's registration is level-triggered.
pub(crate) struct ShortReads<S> {
    sock: S,
    /// The last read did not fill its buffer (or found the socket empty): the next one
    /// waits for the reactor first.
    drained: bool,
}

impl<S> ShortReads<S> {
    pub(crate) fn new(sock: S) -> ShortReads<S> {
        ShortReads {
            sock,
            drained: false,
        }
    }
}

impl<S: Readiness + Unpin> AsyncRead for ShortReads<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.drained {
                ready!(this.sock.poll_readable(cx))?;
                this.drained = false;
            }
            match this.sock.read_now(buf) {
                Ok(n) => {
                    this.drained = n != 0 && n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.drained = true,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ShortReads<Arc<Async<TcpStream>>> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.sock).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.sock).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.sock).poll_flush(cx)
    }

    /// Shuts the write side down, as async-net's stream does.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.sock.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::io::Write;
    use std::task::Waker;

    use smol::io::AsyncReadExt;

    use super::*;

    /// A socket whose reads follow a script (`None`: empty) and that reports itself
    /// readable when the test says so.
    #[derive(Default)]
    struct Scripted {
        reads: RefCell<VecDeque<Option<&'static [u8]>>>,
        calls: Cell<usize>,
        reported: Cell<bool>,
        registered: Cell<usize>,
    }

    impl Readiness for Scripted {
        fn poll_readable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.reported.replace(false) {
                Poll::Ready(Ok(()))
            } else {
                self.registered.set(self.registered.get() + 1);
                Poll::Pending
            }
        }

        fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls.set(self.calls.get() + 1);
            match self
                .reads
                .borrow_mut()
                .pop_front()
                .expect("a read beyond the script")
            {
                Some(b) => {
                    buf[..b.len()].copy_from_slice(b);
                    Ok(b.len())
                }
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn read(s: &mut ShortReads<Scripted>, len: usize) -> Poll<io::Result<Vec<u8>>> {
        let mut buf = vec![0; len];
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(s)
            .poll_read(&mut cx, &mut buf)
            .map_ok(|n| buf[..n].to_vec())
    }

    /// A read that must complete: its bytes.
    fn ready(s: &mut ShortReads<Scripted>, len: usize) -> Vec<u8> {
        match read(s, len) {
            Poll::Ready(r) => r.unwrap(),
            Poll::Pending => panic!("a read of {len} bytes waited"),
        }
    }

    fn script(reads: &[Option<&'static [u8]>]) -> ShortReads<Scripted> {
        let s = Scripted::default();
        s.reads.borrow_mut().extend(reads.iter().copied());
        ShortReads::new(s)
    }

    #[test]
    fn a_short_read_waits_for_the_reactor_instead_of_reading_again() {
        let mut s = script(&[Some(b"abc"), Some(b"de")]);
        assert_eq!(ready(&mut s, 8), b"abc".to_vec());
        assert!(read(&mut s, 8).is_pending());
        assert!(read(&mut s, 8).is_pending());
        assert_eq!(
            s.sock.calls.get(),
            1,
            "no read until the socket is reported"
        );
        assert_eq!(s.sock.registered.get(), 2);
        s.sock.reported.set(true);
        assert_eq!(ready(&mut s, 8), b"de".to_vec());
        assert_eq!(s.sock.calls.get(), 2);
    }

    #[test]
    fn a_full_read_reads_again_at_once() {
        let mut s = script(&[Some(b"abcd"), Some(b""), Some(b"ef")]);
        assert_eq!(ready(&mut s, 4), b"abcd".to_vec());
        // An empty buffer's read is not a short one either.
        assert_eq!(ready(&mut s, 0), Vec::<u8>::new());
        assert_eq!(ready(&mut s, 4), b"ef".to_vec());
        assert_eq!(s.sock.registered.get(), 0);
    }

    #[test]
    fn an_empty_socket_waits_and_a_spurious_report_reads_again() {
        let mut s = script(&[None, None, Some(b"x")]);
        s.sock.reported.set(true);
        // Empty, a stale report, empty again, then registered.
        assert!(read(&mut s, 8).is_pending());
        assert_eq!((s.sock.calls.get(), s.sock.registered.get()), (2, 1));
        s.sock.reported.set(true);
        assert_eq!(ready(&mut s, 8), b"x".to_vec());
    }

    #[test]
    fn the_end_of_the_stream_is_not_a_short_read() {
        let mut s = script(&[Some(b"")]);
        assert_eq!(ready(&mut s, 8), Vec::<u8>::new());
        assert!(!s.drained, "an end is not a short read");
    }

    #[test]
    fn a_loopback_socket_is_read_to_its_end() {
        smol::block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (sock, _) = listener.accept().unwrap();
            let mut s = ShortReads::new(Arc::new(Async::new(sock).unwrap()));
            let mut buf = [0; 64];
            peer.write_all(b"one").unwrap();
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"one");
            assert!(s.drained);
            let mut cx = Context::from_waker(Waker::noop());
            assert!(Pin::new(&mut s).poll_read(&mut cx, &mut buf).is_pending());
            peer.write_all(b"two").unwrap();
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"two");
            drop(peer);
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(n, 0);
        });
    }
}
