//! Handlers: the application code a node serves, and what a stream handler is given.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream as FutStream;

use super::link::Link;
use super::runtime::BoxFuture;
use super::signal::{Signal, SignalWait};
use crate::codec::SubrouteId;
use crate::proto::{CallError, HandlerKey, HandlerKind, MuxKey, RegisterError, Registry};

/// An error a handler returns; its text travels to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError(pub String);

impl RemoteError {
    /// An error with this text.
    pub fn new(text: impl Into<String>) -> RemoteError {
        RemoteError(text.into())
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteError {}

impl From<&str> for RemoteError {
    fn from(s: &str) -> Self {
        RemoteError(s.to_owned())
    }
}

impl From<String> for RemoteError {
    fn from(s: String) -> Self {
        RemoteError(s)
    }
}

/// Capacities of a stream handler. Both peers must register the same values.
///
/// They count items; a reader also keeps large items to about
/// [`Config::stream_window_bytes`](crate::proto::Config::stream_window_bytes) on the way
/// or unread, once the first window has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Items client→server the server buffers; 0 means the stream takes no input.
    pub in_capacity: u32,
    /// Items server→client in flight (0 means 1).
    pub out_capacity: u32,
}

impl Default for StreamOptions {
    /// The protocol's defaults: one item each way.
    fn default() -> Self {
        StreamOptions {
            in_capacity: 1,
            out_capacity: 1,
        }
    }
}

pub(crate) type SingleFn =
    Arc<dyn Fn(Request) -> BoxFuture<'static, Result<Bytes, RemoteError>> + Send + Sync>;
pub(crate) type StreamFn =
    Arc<dyn Fn(StreamCtx) -> BoxFuture<'static, Result<(), RemoteError>> + Send + Sync>;

/// A single request as its handler sees it.
#[derive(Debug)]
pub struct Request {
    /// The request bytes.
    pub payload: Bytes,
    /// The caller's host.
    pub remote: Arc<str>,
    /// The subroute the request was made on, if any.
    pub subroute: Option<Arc<str>>,
}

/// The handlers of a manager, by ID and subroute. Looked up on every incoming call:
/// ordered maps of a few keys compare a byte or two per key, where a hash map would
/// hash the whole key (subroute included) first.
#[derive(Clone, Default)]
pub(crate) struct Handlers {
    pub(crate) registry: Registry,
    singles: BTreeMap<HandlerKey, SingleFn>,
    streams: BTreeMap<HandlerKey, StreamFn>,
    routes: BTreeMap<SubrouteId, Arc<str>>,
}

impl Handlers {
    fn key(id: u8, route: Option<&str>) -> HandlerKey {
        match route {
            Some(r) => HandlerKey::with_route(id, r),
            None => HandlerKey::new(id),
        }
    }

    fn note_route(&mut self, key: &HandlerKey, route: Option<&str>) {
        if let (Some(s), Some(r)) = (key.subroute, route) {
            self.routes.insert(s, r.into());
        }
    }

    pub(crate) fn add_single(
        &mut self,
        id: u8,
        route: Option<&str>,
        f: SingleFn,
    ) -> Result<(), RegisterError> {
        let key = Self::key(id, route);
        self.registry.register(key, HandlerKind::Single)?;
        self.note_route(&key, route);
        self.singles.insert(key, f);
        Ok(())
    }

    pub(crate) fn add_stream(
        &mut self,
        id: u8,
        route: Option<&str>,
        opts: StreamOptions,
        f: StreamFn,
    ) -> Result<(), RegisterError> {
        let key = Self::key(id, route);
        self.registry.register(
            key,
            HandlerKind::stream(opts.in_capacity, opts.out_capacity),
        )?;
        self.note_route(&key, route);
        self.streams.insert(key, f);
        Ok(())
    }

    pub(crate) fn single(&self, key: &HandlerKey) -> Option<&SingleFn> {
        self.singles.get(key)
    }

    pub(crate) fn stream(&self, key: &HandlerKey) -> Option<&StreamFn> {
        self.streams.get(key)
    }

    pub(crate) fn route(&self, key: &HandlerKey) -> Option<Arc<str>> {
        key.subroute.and_then(|s| self.routes.get(&s).cloned())
    }
}

/// What a stream handler is given.
#[derive(Debug)]
pub struct StreamCtx {
    /// The initial payload, if the caller sent one.
    pub payload: Option<Bytes>,
    /// The caller's items; `None` when the handler takes no input.
    pub input: Option<Input>,
    /// Where the handler sends its items.
    pub output: Output,
    /// Fires when the call ends early: the caller cancelled, the deadline passed or the
    /// link was lost. The handler's future is also dropped then.
    pub cancelled: Cancelled,
    /// The caller's host.
    pub remote: Arc<str>,
    /// The subroute the stream was opened on, if any.
    pub subroute: Option<Arc<str>>,
}

/// Completes when the call it belongs to is cancelled.
pub struct Cancelled {
    signal: Signal,
    wait: SignalWait,
}

impl Cancelled {
    pub(crate) fn new(signal: Signal) -> Cancelled {
        Cancelled {
            wait: signal.wait(),
            signal,
        }
    }

    /// Whether the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_fired()
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cancelled({})", self.is_cancelled())
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.wait).poll(cx)
    }
}

/// A stream handler's input: the caller's items, in order, until its EOF.
#[derive(Debug)]
pub struct Input {
    pub(crate) link: Arc<Link>,
    pub(crate) epoch: u64,
    pub(crate) id: u64,
    pub(crate) done: bool,
    /// Set when the last read gave credits back ([`Link::poll_read`]).
    pub(crate) yield_next: bool,
}

impl Input {
    /// The next item; `None` once the caller closed its side (or the call ended).
    pub async fn next(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.link.poll_read(
            self.epoch,
            MuxKey::incoming(self.id),
            cx,
            &mut self.yield_next,
        ) {
            Poll::Ready(Ok(Some(item))) => Poll::Ready(Some(item)),
            Poll::Ready(_) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl FutStream for Input {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.poll_item(cx)
    }
}

/// A stream handler's output: items to the caller, each waiting for flow-control credit.
#[derive(Debug)]
pub struct Output {
    pub(crate) link: Arc<Link>,
    pub(crate) epoch: u64,
    pub(crate) id: u64,
}

impl Output {
    /// Sends one item, waiting while the caller has not consumed earlier ones.
    pub async fn send(&self, item: Bytes) -> Result<(), CallError> {
        let key = MuxKey::incoming(self.id);
        std::future::poll_fn(|cx| self.link.poll_send(self.epoch, key, &item, cx)).await
    }
}
