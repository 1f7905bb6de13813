//! The caller's side: a cheap handle to a peer, single requests and streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream as FutStream;

use super::link::{Link, LinkStats};
use crate::proto::{CallError, HandlerKey, MuxKey};

/// A handle to the link with one peer. Cheap to clone; calls made while the link is
/// down fail at once with [`CallError::Disconnected`].
#[derive(Clone, Debug)]
pub struct Connection {
    link: Arc<Link>,
    route: Option<Arc<str>>,
}

impl Connection {
    pub(crate) fn new(link: Arc<Link>) -> Connection {
        Connection { link, route: None }
    }

    /// The peer's host string.
    pub fn remote(&self) -> &str {
        &self.link.remote
    }

    /// Whether this side dials the peer (otherwise the peer dials us).
    pub fn dials(&self) -> bool {
        self.link.dials
    }

    /// The same peer, calling handlers on subroute `route` (nested: joined with `/`).
    pub fn subroute(&self, route: &str) -> Connection {
        let route: Arc<str> = match &self.route {
            Some(r) => format!("{r}/{route}").into(),
            None => route.into(),
        };
        Connection {
            link: self.link.clone(),
            route: Some(route),
        }
    }

    fn key(&self, handler: u8) -> HandlerKey {
        match &self.route {
            Some(r) => HandlerKey::with_route(handler, r),
            None => HandlerKey::new(handler),
        }
    }

    /// Whether the link is up.
    pub fn is_connected(&self) -> bool {
        self.link.stats().connected
    }

    /// Completes when the link is up.
    pub async fn wait_connected(&self) {
        std::future::poll_fn(|cx| self.link.poll_connected(cx)).await
    }

    /// Drops the link's current socket, as a network failure would: in-flight calls
    /// end with [`CallError::Disconnected`] and the dialing side reconnects.
    pub fn reset(&self) {
        self.link.reset();
    }

    /// The link's counters.
    pub fn stats(&self) -> LinkStats {
        self.link.stats()
    }

    /// Calls a single-request handler. Without a deadline the protocol's default (60 s)
    /// applies; dropping the future frees the call at once.
    pub async fn request(&self, handler: u8, payload: Bytes) -> Result<Bytes, CallError> {
        self.call(handler, payload, None).await
    }

    /// Calls a single-request handler with a deadline, which the peer also applies.
    pub async fn request_with_deadline(
        &self,
        handler: u8,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, CallError> {
        self.call(handler, payload, Some(deadline)).await
    }

    fn call(&self, handler: u8, payload: Bytes, deadline: Option<Duration>) -> ResponseFuture {
        ResponseFuture {
            link: self.link.clone(),
            start: Some((self.key(handler), payload, deadline)),
            call: None,
        }
    }

    /// Opens a stream to a handler registered locally as a stream handler (its
    /// capacities size the buffers). `requests` is `None` when it takes no input.
    pub fn new_stream(&self, handler: u8, payload: Option<Bytes>) -> Result<Stream, CallError> {
        self.open(handler, payload, None)
    }

    /// Opens a stream with a deadline, which the peer also applies.
    pub fn new_stream_with_deadline(
        &self,
        handler: u8,
        payload: Option<Bytes>,
        deadline: Duration,
    ) -> Result<Stream, CallError> {
        self.open(handler, payload, Some(deadline))
    }

    fn open(
        &self,
        handler: u8,
        payload: Option<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Stream, CallError> {
        let (epoch, id, has_input) =
            self.link
                .start_stream(self.key(handler), payload, deadline)?;
        let call = Arc::new(StreamCall {
            link: self.link.clone(),
            epoch,
            id,
        });
        Ok(Stream {
            requests: has_input.then(|| Requests {
                call: call.clone(),
                closed: false,
            }),
            responses: Responses {
                call,
                done: false,
                yield_next: false,
            },
        })
    }
}

/// The outcome of a single request; dropping it frees the call.
/// A single request: started in its first poll, which also leaves the caller's waker
/// with the call (one lock for both), then waiting for its response.
struct ResponseFuture {
    link: Arc<Link>,
    /// The request, until the first poll sends it.
    start: Option<(HandlerKey, Bytes, Option<Duration>)>,
    /// `(generation, mux)` of the call in flight.
    call: Option<(u64, u64)>,
}

impl Future for ResponseFuture {
    type Output = Result<Bytes, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some((handler, payload, deadline)) = self.start.take() {
            // The response cannot come before the call is in the link's table, waker
            // and all.
            self.call = Some(self.link.start_request(handler, payload, deadline, cx)?);
            return Poll::Pending;
        }
        let (_, id) = self.call.expect("polled after completion");
        let r = self.link.poll_response(id, cx);
        if r.is_ready() {
            self.call = None;
        }
        r
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Some((epoch, id)) = self.call {
            self.link.forget_request(epoch, id);
        }
    }
}

/// Shared by the two halves of a stream; the last one dropped cancels the stream.
#[derive(Debug)]
struct StreamCall {
    link: Arc<Link>,
    epoch: u64,
    id: u64,
}

impl Drop for StreamCall {
    fn drop(&mut self) {
        self.link.cancel_stream(self.epoch, self.id);
    }
}

/// A stream to a peer's handler. Dropping both halves cancels it on both sides.
#[derive(Debug)]
pub struct Stream {
    /// The handler's items, each a `Result`; ends after an error or the handler's end.
    pub responses: Responses,
    /// Items to the handler; `None` when it takes no input. Closing or dropping it
    /// ends the input (EOF).
    pub requests: Option<Requests>,
}

/// The items a stream handler sends.
///
/// Items that arrived before the link was lost are still read after the loss; then the
/// stream ends as it had (cleanly, or with the handler's error) if its end had arrived
/// too, and with [`CallError::Disconnected`] if the handler was still running.
#[derive(Debug)]
pub struct Responses {
    call: Arc<StreamCall>,
    done: bool,
    /// Set when the last read gave credits back ([`Link::poll_read`]).
    yield_next: bool,
}

impl Responses {
    /// How many items have arrived and wait to be read (at most the handler's output
    /// capacity).
    pub fn buffered(&self) -> usize {
        let c = &self.call;
        c.link.buffered(c.epoch, MuxKey::outgoing(c.id))
    }

    /// The next item: `None` after the handler's end or after an error.
    pub async fn next(&mut self) -> Option<Result<Bytes, CallError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl FutStream for Responses {
    type Item = Result<Bytes, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let c = &this.call;
        match c
            .link
            .poll_read(c.epoch, MuxKey::outgoing(c.id), cx, &mut this.yield_next)
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(item))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(Ok(None)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// Items to a stream handler.
#[derive(Debug)]
pub struct Requests {
    call: Arc<StreamCall>,
    closed: bool,
}

impl Requests {
    /// Sends one item, waiting for flow-control credit.
    pub async fn send(&mut self, item: Bytes) -> Result<(), CallError> {
        if self.closed {
            return Err(CallError::Closed);
        }
        let c = &self.call;
        let key = MuxKey::outgoing(c.id);
        std::future::poll_fn(|cx| c.link.poll_send(c.epoch, key, &item, cx)).await
    }

    /// Ends the input (EOF); the handler's items keep coming.
    pub fn close(mut self) {
        self.close_input();
    }

    fn close_input(&mut self) {
        if !self.closed {
            self.closed = true;
            self.call.link.close_send(self.call.epoch, self.call.id);
        }
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.close_input();
    }
}
