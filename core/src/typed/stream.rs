//! Typed stream handlers: typed payload, input and output on both sides.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream as FutStream;
use futures_util::task::AtomicWaker;

use super::{Error, Message, NoPayload, decode, encode, join_route};
use crate::driver::{self, Cancelled, Connection, ManagerBuilder, RemoteError, StreamOptions};
use crate::proto::RegisterError;

/// A stream handler with initial payload `P`, input items `I` (caller → handler) and
/// output items `O` (handler → caller), its capacities and, optionally, its subroute.
///
/// Both peers must register the same definition: as for byte-level streams, the
/// calling side sizes its buffers from its own registration. Three shapes:
///
/// - [`new`](Self::new): a payload, and input unless `in_capacity` is 0;
/// - [`no_input`](Self::no_input): a payload, no input (`I` is [`NoPayload`]);
/// - [`no_payload`](Self::no_payload): input, and no payload on the wire (`P` is
///   [`NoPayload`]; the opening frame carries no payload and the handler decodes none).
///
/// ```no_run
/// use grid_core::driver::{Connection, ManagerBuilder, RemoteError};
/// use grid_core::typed::{self, NoPayload, StreamHandler};
///
/// /// Prefixes every input line with the payload.
/// const PREFIX: StreamHandler<String, String, String> = StreamHandler::new(40, 4, 4);
/// /// Counts from 0 to the payload, without input.
/// const COUNT: StreamHandler<u32, NoPayload, u32> = StreamHandler::no_input(41, 8);
///
/// fn serve(b: ManagerBuilder) -> Result<ManagerBuilder, grid_core::proto::RegisterError> {
///     let b = PREFIX.register(b, |mut ctx| async move {
///         let mut input = ctx.input.take().expect("PREFIX takes input");
///         while let Some(line) = input.next().await {
///             let out = format!("{}{line}", ctx.payload);
///             ctx.output.send(&out).await.map_err(|e| RemoteError(e.to_string()))?;
///         }
///         Ok(())
///     })?;
///     COUNT.register(b, |ctx| async move {
///         for i in 0..ctx.payload {
///             ctx.output.send(&i).await.map_err(|e| RemoteError(e.to_string()))?;
///         }
///         Ok(())
///     })
/// }
///
/// async fn prefix(peer: &Connection) -> Result<Vec<String>, typed::Error> {
///     let mut s = PREFIX.call(peer, &"> ".to_owned())?;
///     let mut req = s.requests.take().expect("PREFIX takes input");
///     let mut out = Vec::new();
///     for line in ["a", "b"] {
///         req.send(&line.to_owned()).await?;
///         out.push(s.responses.next().await.expect("an answer")?);
///     }
///     req.close();
///     Ok(out)
/// }
/// ```
pub struct StreamHandler<P, I, O> {
    id: u8,
    route: Option<&'static str>,
    opts: StreamOptions,
    with_payload: bool,
    types: PhantomData<fn(P, I) -> O>,
}

impl<P, I, O> Clone for StreamHandler<P, I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P, I, O> Copy for StreamHandler<P, I, O> {}

impl<P, I, O> fmt::Debug for StreamHandler<P, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHandler")
            .field("id", &self.id)
            .field("route", &self.route)
            .field("opts", &self.opts)
            .field("with_payload", &self.with_payload)
            .field("payload", &std::any::type_name::<P>())
            .field("input", &std::any::type_name::<I>())
            .field("output", &std::any::type_name::<O>())
            .finish()
    }
}

impl<P, I, O> StreamHandler<P, I, O> {
    /// The stream with ID `id`, taking a payload and, when `in_capacity > 0`, input.
    /// `in_capacity` items of input are buffered by the handler's side, `out_capacity`
    /// items of output are in flight (0 means 1); both peers must use the same values.
    pub const fn new(id: u8, in_capacity: u32, out_capacity: u32) -> Self {
        StreamHandler {
            id,
            route: None,
            opts: StreamOptions {
                in_capacity,
                out_capacity,
            },
            with_payload: true,
            types: PhantomData,
        }
    }

    /// The same stream on subroute `route` (nested routes are spelled joined with `/`).
    /// For routes known only at run time, use [`register_on`](Self::register_on) and
    /// call on [`Connection::subroute`].
    pub const fn subroute(self, route: &'static str) -> Self {
        StreamHandler {
            id: self.id,
            route: Some(route),
            opts: self.opts,
            with_payload: self.with_payload,
            types: PhantomData,
        }
    }

    /// The handler ID.
    pub const fn id(&self) -> u8 {
        self.id
    }

    /// The subroute, if any.
    pub const fn route(&self) -> Option<&'static str> {
        self.route
    }

    /// The capacities.
    pub const fn options(&self) -> StreamOptions {
        self.opts
    }

    /// Whether the stream takes input.
    pub const fn has_input(&self) -> bool {
        self.opts.in_capacity > 0
    }

    /// Whether the stream carries an initial payload.
    pub const fn has_payload(&self) -> bool {
        self.with_payload
    }

    fn connection(&self, conn: &Connection) -> Connection {
        match self.route {
            Some(r) => conn.subroute(r),
            None => conn.clone(),
        }
    }
}

impl<P, O> StreamHandler<P, NoPayload, O> {
    /// The stream with ID `id`, taking a payload and no input (in capacity 0: the
    /// caller's side ends its input when it opens the stream).
    pub const fn no_input(id: u8, out_capacity: u32) -> Self {
        StreamHandler::new(id, 0, out_capacity)
    }
}

impl<I, O> StreamHandler<NoPayload, I, O> {
    /// The stream with ID `id`, taking input (when `in_capacity > 0`) and no payload:
    /// the caller sends none and the handler decodes none.
    pub const fn no_payload(id: u8, in_capacity: u32, out_capacity: u32) -> Self {
        let mut h = StreamHandler::new(id, in_capacity, out_capacity);
        h.with_payload = false;
        h
    }
}

impl<P, I, O> StreamHandler<P, I, O>
where
    P: Message + 'static,
    I: Message + 'static,
    O: Message + 'static,
{
    /// Registers `f` as this stream's handler on `builder`.
    ///
    /// A payload that does not decode as `P` ends the call with the remote error
    /// `decode payload: <why>` without calling `f`; an input item that does not decode
    /// as `I` ends it with `decode item: <why>` (the handler's future is dropped).
    pub fn register<F, Fut>(
        &self,
        builder: ManagerBuilder,
        f: F,
    ) -> Result<ManagerBuilder, RegisterError>
    where
        F: Fn(StreamCtx<P, I, O>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_inner(builder, None, f)
    }

    /// Registers `f` on subroute `route`, a route known only at run time. A definition
    /// with its own subroute is registered at `route/<its subroute>`. Callers reach it
    /// by calling on `connection.subroute(route)`.
    pub fn register_on<F, Fut>(
        &self,
        builder: ManagerBuilder,
        route: &str,
        f: F,
    ) -> Result<ManagerBuilder, RegisterError>
    where
        F: Fn(StreamCtx<P, I, O>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_inner(builder, Some(route), f)
    }

    fn register_inner<F, Fut>(
        &self,
        builder: ManagerBuilder,
        route: Option<&str>,
        f: F,
    ) -> Result<ManagerBuilder, RegisterError>
    where
        F: Fn(StreamCtx<P, I, O>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let with_payload = self.with_payload;
        let handler = move |ctx: driver::StreamCtx| {
            // Without a payload, `P` is `NoPayload`, which decodes from nothing.
            let payload = match (with_payload, &ctx.payload) {
                (true, Some(p)) => P::decode(p),
                _ => P::decode(&[]),
            };
            let failure = Arc::new(Failure::default());
            let started = payload.map(|payload| {
                f(StreamCtx {
                    payload,
                    input: ctx.input.map(|inner| Input {
                        inner,
                        failure: failure.clone(),
                        types: PhantomData,
                    }),
                    output: Output {
                        inner: ctx.output,
                        types: PhantomData,
                    },
                    cancelled: ctx.cancelled,
                    remote: ctx.remote,
                    subroute: ctx.subroute,
                })
            });
            async move {
                let fut = started.map_err(|e| RemoteError(format!("decode payload: {e}")))?;
                let mut fut = std::pin::pin!(fut);
                std::future::poll_fn(|cx| {
                    let r = fut.as_mut().poll(cx);
                    // An item that failed to decode ends the call, whatever the handler
                    // made of the end of its input.
                    match failure.poll(cx) {
                        Poll::Ready(text) => Poll::Ready(Err(RemoteError(text))),
                        Poll::Pending => r,
                    }
                })
                .await
            }
        };
        match join_route(route, self.route) {
            Some(r) => builder.stream_on(self.id, &r, self.opts, handler),
            None => builder.stream(self.id, self.opts, handler),
        }
    }

    /// Opens the stream on `conn` (on `conn`'s subroute, if it has one, followed by the
    /// definition's, if it has one), sending `payload` unless the stream has none (then
    /// pass `&NoPayload`). Like [`Connection::new_stream`], it fails at once with
    /// `UnknownHandler` if this side has not registered the stream.
    pub fn call(&self, conn: &Connection, payload: &P) -> Result<Stream<I, O>, Error> {
        self.open(conn, payload, None)
    }

    /// Opens the stream with a deadline, which the peer also applies.
    pub fn call_with_deadline(
        &self,
        conn: &Connection,
        payload: &P,
        deadline: Duration,
    ) -> Result<Stream<I, O>, Error> {
        self.open(conn, payload, Some(deadline))
    }

    fn open(
        &self,
        conn: &Connection,
        payload: &P,
        deadline: Option<Duration>,
    ) -> Result<Stream<I, O>, Error> {
        let payload = match self.with_payload {
            true => Some(encode(payload)?),
            false => None,
        };
        let conn = self.connection(conn);
        let s = match deadline {
            Some(d) => conn.new_stream_with_deadline(self.id, payload, d)?,
            None => conn.new_stream(self.id, payload)?,
        };
        Ok(Stream {
            responses: Responses {
                inner: s.responses,
                types: PhantomData,
            },
            requests: s.requests.map(|inner| Requests {
                inner,
                types: PhantomData,
            }),
        })
    }
}

/// The first decode failure of a handler's input, and who waits for it.
#[derive(Default)]
struct Failure {
    text: Mutex<Option<String>>,
    waker: AtomicWaker,
}

impl Failure {
    fn set(&self, text: String) {
        let mut t = self.text.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_none() {
            *t = Some(text);
        }
        drop(t);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<String> {
        self.waker.register(cx.waker());
        let t = self.text.lock().unwrap_or_else(|p| p.into_inner());
        match &*t {
            Some(text) => Poll::Ready(text.clone()),
            None => Poll::Pending,
        }
    }
}

/// What a typed stream handler is given.
pub struct StreamCtx<P, I, O> {
    /// The initial payload ([`NoPayload`] for a stream without one).
    pub payload: P,
    /// The caller's items; `None` when the stream takes no input.
    pub input: Option<Input<I>>,
    /// Where the handler sends its items.
    pub output: Output<O>,
    /// Fires when the call ends early: the caller cancelled, the deadline passed or the
    /// link was lost. The handler's future is also dropped then.
    pub cancelled: Cancelled,
    /// The caller's host.
    pub remote: Arc<str>,
    /// The subroute the stream was opened on, if any.
    pub subroute: Option<Arc<str>>,
}

impl<P: fmt::Debug, I, O> fmt::Debug for StreamCtx<P, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCtx")
            .field("payload", &self.payload)
            .field("input", &self.input)
            .field("cancelled", &self.cancelled)
            .field("remote", &self.remote)
            .field("subroute", &self.subroute)
            .finish_non_exhaustive()
    }
}

/// A typed stream handler's input: the caller's items, decoded, until its EOF.
pub struct Input<I> {
    inner: driver::Input,
    failure: Arc<Failure>,
    types: PhantomData<fn() -> I>,
}

impl<I> fmt::Debug for Input<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Input").field(&self.inner).finish()
    }
}

impl<I: Message> Input<I> {
    /// The next item; `None` once the caller closed its side or the call ended. An item
    /// that does not decode ends the input and the call (with the remote error
    /// `decode item: <why>`).
    pub async fn next(&mut self) -> Option<I> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<I>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(item)) => match I::decode(&item) {
                Ok(v) => Poll::Ready(Some(v)),
                Err(e) => {
                    tracing::debug!(target: "grid::typed", error = %e, "input item does not decode");
                    self.failure.set(format!("decode item: {e}"));
                    Poll::Ready(None)
                }
            },
        }
    }
}

impl<I: Message> FutStream for Input<I> {
    type Item = I;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<I>> {
        self.poll_item(cx)
    }
}

/// A typed stream handler's output: items to the caller, each waiting for flow-control
/// credit.
pub struct Output<O> {
    inner: driver::Output,
    types: PhantomData<fn(O)>,
}

impl<O> fmt::Debug for Output<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Output").field(&self.inner).finish()
    }
}

impl<O: Message> Output<O> {
    /// Encodes and sends one item, waiting while the caller has not consumed earlier
    /// ones. The item is encoded before this returns, so the future does not borrow it.
    pub fn send(
        &self,
        item: &O,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ + use<'_, O> {
        let item = encode(item);
        async move { Ok(self.inner.send(item?).await?) }
    }

    /// The byte-level output, to send an already encoded item.
    pub fn raw(&self) -> &driver::Output {
        &self.inner
    }
}

/// A typed stream to a peer's handler. Dropping both halves cancels it on both sides.
pub struct Stream<I, O> {
    /// The handler's items, decoded.
    pub responses: Responses<O>,
    /// Items to the handler; `None` when it takes no input. Closing or dropping it ends
    /// the input (EOF).
    pub requests: Option<Requests<I>>,
}

impl<I, O> fmt::Debug for Stream<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("responses", &self.responses)
            .field("requests", &self.requests)
            .finish()
    }
}

/// The items a typed stream handler sends.
pub struct Responses<O> {
    inner: driver::Responses,
    types: PhantomData<fn() -> O>,
}

impl<O> fmt::Debug for Responses<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Responses").field(&self.inner).finish()
    }
}

impl<O: Message> Responses<O> {
    /// The next item: `None` after the handler's end or after a call error. An item
    /// that does not decode as `O` is an [`Error::Decode`], after which the stream goes
    /// on (the item is skipped).
    pub async fn next(&mut self) -> Option<Result<O, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<O: Message> FutStream for Responses<O> {
    type Item = Result<O, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(bytes) => decode(&bytes),
                Err(e) => Err(Error::Call(e)),
            })
        })
    }
}

/// Items to a typed stream handler.
pub struct Requests<I> {
    inner: driver::Requests,
    types: PhantomData<fn(I)>,
}

impl<I> fmt::Debug for Requests<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Requests").field(&self.inner).finish()
    }
}

impl<I: Message> Requests<I> {
    /// Encodes and sends one item, waiting for flow-control credit. The item is encoded
    /// before this returns, so the future does not borrow it.
    pub fn send(
        &mut self,
        item: &I,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ + use<'_, I> {
        let item = encode(item);
        async move { Ok(self.inner.send(item?).await?) }
    }

    /// Sends an already encoded item (or bytes that are not an `I` at all).
    pub async fn send_raw(&mut self, item: Bytes) -> Result<(), Error> {
        Ok(self.inner.send(item).await?)
    }

    /// Ends the input (EOF); the handler's items keep coming.
    pub fn close(self) {
        self.inner.close();
    }
}
