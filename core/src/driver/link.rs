//! One link per peer: its current session behind a lock, the per-call slots that wake
//! callers, and the socket task that moves bytes between the session and the WebSocket.
//!
//! Callers never hop through a channel: they take the lock, tell the session what to
//! do, wake the socket task and wait on their own slot. The socket task owns the
//! WebSocket: each turn it reads what the socket reported, hands those messages to the
//! session under one lock, runs due timers, takes the outbound frames and dispatches the
//! events; then, with the lock released, it encodes the frames, spawns the handlers the
//! events started, writes and flushes once.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{Either, FutureExt, select};
use futures_util::task::AtomicWaker;
use tracing::{debug, error, info, warn};

use super::handler::{Cancelled, Handlers, Input, Output, RemoteError, Request, StreamCtx};
use super::runtime::{BoxFuture, Runtime};
use super::signal::{Notify, Signal, SignalWait, TaskGuard, Tasks};
use super::ws::{self, Inbound};
use crate::codec::{Frame, Time};
use crate::proto::muxmap::{MuxMap, mux_map};
use crate::proto::{
    Backoff, CallError, Cluster, Dir, Event, HandlerKey, HandlerKind, LostReason, MuxKey, Read,
    Redial, SendError, Session, Stats, Unread,
};

const TARGET: &str = "grid::link";

/// How many frames the socket task takes from the session per turn before writing.
const WRITE_ROUND_FRAMES: usize = 4096;

/// What every link of a manager shares.
pub(crate) struct Shared {
    pub(crate) rt: Arc<dyn Runtime>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) handlers: Handlers,
    pub(crate) route: String,
    pub(crate) token: Arc<dyn Fn() -> String + Send + Sync>,
    pub(crate) shutdown: Signal,
    pub(crate) tasks: Tasks,
    /// (peer, reason) pairs of rejections already logged by the acceptor.
    pub(crate) rejections: Mutex<HashSet<(String, String)>>,
    pub(crate) seed: u64,
    /// How this node speaks TLS, if it was given a configuration.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<super::tls::TlsConfig>,
}

impl Shared {
    /// Spawns a task that shutdown waits for.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let guard = self.tasks.start();
        self.rt.spawn(Box::pin(async move {
            task.await;
            drop(guard);
        }));
    }

    pub(crate) fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        self.rt.sleep_until(at)
    }
}

/// The wall-clock time now, for handshakes and pings.
pub(crate) fn wall_now() -> Time {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
}

/// How an incoming call of one kind ends: the text a panic of its handler is reported
/// with, and where its outcome goes.
struct CallEnd<T> {
    panic_prefix: &'static str,
    done: fn(&Link, u64, u64, Result<T, String>),
}

const SINGLE_END: CallEnd<Bytes> = CallEnd {
    panic_prefix: "handleMessages: panic recovered: ",
    done: Link::respond,
};

const STREAM_END: CallEnd<()> = CallEnd {
    panic_prefix: "handler panic: ",
    done: Link::finish,
};

/// The handler's future, as [`Link::run_handler`]'s `start` makes it.
type HandlerFuture<T> = BoxFuture<'static, Result<T, RemoteError>>;

/// An incoming call's handler as its task runs it ([`Link::run_handler`]): `start` makes
/// the handler's future from the call's parts in the first poll, then the future runs
/// until it ends, its outcome going to `end`, or until the call is cancelled, which
/// drops it. A panic in either becomes the call's error. Written out rather than as an
/// `async` block, which would keep the handler's future twice (as captured and where it
/// is pinned), and with the call's parts kept once, here, rather than in `start` too.
struct HandlerTask<T: 'static, S> {
    _guard: TaskGuard,
    link: Arc<Link>,
    epoch: u64,
    id: u64,
    handler: HandlerKey,
    end: &'static CallEnd<T>,
    /// The call's cancellation. Most single requests are answered in their handler's
    /// first poll, so theirs is watched only once the handler waits.
    cancelled: Option<SignalWait>,
    stage: Stage<S, T>,
}

/// Where an incoming call's handler is: `start` waits for the first poll, which turns it
/// into the running future (so the two never take room side by side); `Ended` after a
/// panic in `start`.
enum Stage<S, T> {
    Start(S),
    Run(HandlerFuture<T>),
    Ended,
}

impl<T, S> Future for HandlerTask<T, S>
where
    S: FnOnce(&Arc<Link>, u64, u64, &HandlerKey) -> HandlerFuture<T> + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if matches!(this.stage, Stage::Start(_)) {
                if let Stage::Start(start) = std::mem::replace(&mut this.stage, Stage::Ended) {
                    this.stage = Stage::Run(start(&this.link, this.epoch, this.id, &this.handler));
                }
            }
            match &mut this.stage {
                Stage::Run(run) => run.as_mut().poll(cx),
                // Only after a panic, which ended the task.
                Stage::Start(_) | Stage::Ended => Poll::Pending,
            }
        }));
        let r = match polled {
            Ok(Poll::Pending) => None,
            Ok(Poll::Ready(r)) => Some(Ok(r)),
            Err(panic) => Some(Err(panic)),
        };
        if let Some(r) = r {
            this.link
                .handler_done(this.epoch, this.id, this.handler, r, this.end);
            return Poll::Ready(());
        }
        let cancelled = match &mut this.cancelled {
            Some(c) => c,
            None => match this.link.watch_cancel(this.epoch, this.id) {
                Some(c) => this.cancelled.insert(c.wait()),
                // Cancelled before it could wait: dropped like any cancelled call.
                None => return Poll::Ready(()),
            },
        };
        // Cancelled: the handler is dropped with this task.
        cancelled.poll_unpin(cx)
    }
}

/// Who waits on a call: its reader and its writer.
#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

impl Wakers {
    fn wake(&mut self) {
        if let Some(w) = self.read.take() {
            w.wake();
        }
        if let Some(w) = self.write.take() {
            w.wake();
        }
    }
}

/// Driver-side state of a call this node made: who to wake, and what ended it.
#[derive(Default)]
struct OutSlot {
    wakers: Wakers,
    /// A single request's outcome, or a stream's abrupt end (always an error).
    end: Option<Result<Bytes, CallError>>,
    /// A stream's items (and end) that arrived before its session was lost, read before
    /// anything else.
    unread: Option<Box<Unread>>,
}

/// Driver-side state of a call this node serves: who to wake, and its cancellation.
#[derive(Default)]
struct InSlot {
    wakers: Wakers,
    cancel: Option<Signal>,
}

/// The calls' slots, a table for each direction: an incoming call's slot is half the
/// size of an outgoing one's. Keyed by peer-chosen IDs too: the session's keyed mux
/// hash.
struct Slots {
    outgoing: MuxMap<OutSlot>,
    incoming: MuxMap<InSlot>,
}

impl Slots {
    fn wakers(&mut self, key: MuxKey) -> Option<&mut Wakers> {
        match key.dir {
            Dir::Outgoing => self.outgoing.get_mut(&key.id).map(|s| &mut s.wakers),
            Dir::Incoming => self.incoming.get_mut(&key.id).map(|s| &mut s.wakers),
        }
    }

    /// An outgoing stream's slot; `None` for an incoming one.
    fn outgoing(&mut self, key: MuxKey) -> Option<&mut OutSlot> {
        match key.dir {
            Dir::Outgoing => self.outgoing.get_mut(&key.id),
            Dir::Incoming => None,
        }
    }

    fn remove(&mut self, key: MuxKey) {
        match key.dir {
            Dir::Outgoing => drop(self.outgoing.remove(&key.id)),
            Dir::Incoming => drop(self.incoming.remove(&key.id)),
        }
    }
}

pub(crate) struct LinkState {
    session: Option<Session>,
    /// Bumped for every installed session; handles of an older one see "disconnected".
    epoch: u64,
    /// Fires when the current session ends.
    done: Signal,
    slots: Slots,
    last_mux_id: u64,
    /// The generation that last completed its handshake.
    connected_epoch: u64,
    connects: u64,
    connect_waiters: Vec<Waker>,
    /// The dialer's last logged rejection reason (logged again only when it changes).
    last_rejection: Option<String>,
    last_stats: Stats,
    dial_attempts: u64,
    last_error: Option<String>,
    /// Set by shutdown: no session is installed any more.
    shut: bool,
    /// Incoming calls' handlers, to spawn once the lock is released.
    handlers: Vec<BoxFuture<'static, ()>>,
    /// When the socket task last stepped the session: the time given to session calls
    /// that do not read it (stream reads and sends, answers), which saves a clock read
    /// per item.
    now: Instant,
    /// The buffer room the socket task and the session held at the task's last quiet
    /// check ([`LinkStats::buffer_bytes`]).
    buffer_bytes: usize,
}

/// A link to one peer.
pub(crate) struct Link {
    pub(crate) remote: Arc<str>,
    pub(crate) dials: bool,
    pub(crate) shared: Arc<Shared>,
    state: Mutex<LinkState>,
    /// Wakes the socket task: the session has frames to send or a new deadline.
    writer: Notify,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("remote", &self.remote)
            .field("dials", &self.dials)
            .finish_non_exhaustive()
    }
}

/// Link-level counters, with the current (or last) session's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Whether the link is up.
    pub connected: bool,
    /// Handshakes completed on this link.
    pub connects: u64,
    /// Handshakes after the first (reconnections).
    pub reconnects: u64,
    /// Connection attempts made by this side (dialers only).
    pub dial_attempts: u64,
    /// Why the last attempt or session failed, until the link is up again: a dial
    /// error, or the peer's rejection reason.
    pub last_error: Option<String>,
    /// The current or last session's counters.
    pub session: Stats,
    /// Bytes of buffer room the link held at its last check: the socket's read and
    /// encode buffers, free message buffers kept for reuse, and the session's queues and
    /// tables (not the messages in them). A burst grows them; a link that moved less than
    /// 64 KiB between two checks gives the room back. The socket task checks when the
    /// session's timers fire, at most once per [`Config::ping_interval`](crate::proto::Config::ping_interval);
    /// 0 before the first.
    pub buffer_bytes: usize,
}

impl Link {
    pub(crate) fn new(remote: &str, dials: bool, shared: Arc<Shared>) -> Arc<Link> {
        Arc::new(Link {
            remote: remote.into(),
            dials,
            shared,
            state: Mutex::new(LinkState {
                session: None,
                epoch: 0,
                done: Signal::new(),
                slots: Slots {
                    outgoing: mux_map(),
                    incoming: mux_map(),
                },
                last_mux_id: 0,
                connected_epoch: 0,
                connects: 0,
                connect_waiters: Vec::new(),
                last_rejection: None,
                last_stats: Stats::default(),
                dial_attempts: 0,
                last_error: None,
                shut: false,
                now: Instant::now(),
                handlers: Vec::new(),
                buffer_bytes: 0,
            }),
            writer: Notify::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stats(&self) -> LinkStats {
        let st = self.lock();
        let session = st.session.as_ref().map_or(st.last_stats, Session::stats);
        LinkStats {
            connected: st.session.as_ref().is_some_and(Session::is_connected),
            connects: st.connects,
            reconnects: st.connects.saturating_sub(1),
            dial_attempts: st.dial_attempts,
            last_error: st.last_error.clone(),
            session,
            buffer_bytes: st.buffer_bytes,
        }
    }

    pub(crate) fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.session.as_ref().is_some_and(Session::is_connected) {
            return Poll::Ready(());
        }
        st.connect_waiters.push(cx.waker().clone());
        Poll::Pending
    }

    // ------------------------------------------------------------------------------
    // Calls.

    pub(crate) fn start_request(
        &self,
        handler: HandlerKey,
        payload: Bytes,
        deadline: Option<Duration>,
        cx: &Context<'_>,
    ) -> Result<(u64, u64), CallError> {
        let mut st = self.lock();
        let epoch = st.epoch;
        let s = st.session.as_mut().ok_or(CallError::Disconnected)?;
        let id = s.request(Instant::now(), handler, payload, deadline)?;
        let slot = OutSlot {
            wakers: Wakers {
                read: Some(cx.waker().clone()),
                write: None,
            },
            ..OutSlot::default()
        };
        st.slots.outgoing.insert(id, slot);
        drop(st);
        self.writer.notify();
        Ok((epoch, id))
    }

    pub(crate) fn poll_response(
        &self,
        id: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, CallError>> {
        let mut st = self.lock();
        let Some(slot) = st.slots.outgoing.get_mut(&id) else {
            return Poll::Ready(Err(CallError::Disconnected));
        };
        if let Some(r) = slot.end.take() {
            st.slots.outgoing.remove(&id);
            return Poll::Ready(r);
        }
        slot.wakers.read = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The caller stopped waiting: free the call at once.
    pub(crate) fn forget_request(&self, epoch: u64, id: u64) {
        let mut st = self.lock();
        st.slots.outgoing.remove(&id);
        if st.epoch == epoch {
            if let Some(s) = st.session.as_mut() {
                s.cancel(id);
            }
        }
    }

    pub(crate) fn start_stream(
        &self,
        handler: HandlerKey,
        payload: Option<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<(u64, u64, bool), CallError> {
        let has_input = matches!(
            self.shared.cluster.registry.get(&handler),
            Some(HandlerKind::Stream { in_capacity, .. }) if in_capacity > 0
        );
        let mut st = self.lock();
        let epoch = st.epoch;
        let s = st.session.as_mut().ok_or(CallError::Disconnected)?;
        let id = s.open_stream(Instant::now(), handler, payload, deadline)?;
        st.slots.outgoing.insert(id, OutSlot::default());
        drop(st);
        self.writer.notify();
        Ok((epoch, id, has_input))
    }

    /// Reads the next item of a stream: `Ok(None)` at its clean end.
    ///
    /// `yield_next` is the reader's own flag. A read that gives credits back while more
    /// items wait sets it, and the reader's next poll then yields once: the credits
    /// leave with the socket task's next turn instead of after the reader has drained
    /// its whole buffer (on an executor that runs the reader and the socket task on one
    /// thread, the sender would otherwise wait a full window for every batch).
    pub(crate) fn poll_read(
        &self,
        epoch: u64,
        key: MuxKey,
        cx: &mut Context<'_>,
        yield_next: &mut bool,
    ) -> Poll<Result<Option<Bytes>, CallError>> {
        if std::mem::take(yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(slot) = st.slots.outgoing(key) {
            // Items that arrived before a loss come first, then the stream's end
            // (`Disconnected` if its end had not arrived); or an abrupt end.
            let end = match slot.unread.as_mut() {
                Some(u) => match u.items.pop_front() {
                    Some(item) => return Poll::Ready(Ok(Some(item))),
                    None => Some(u.end.take().unwrap_or(Err(CallError::Disconnected))),
                },
                None => slot.end.take().map(|r| r.map(|_| ())),
            };
            if let Some(end) = end {
                st.slots.remove(key);
                return Poll::Ready(end.map(|()| None));
            }
        }
        if st.epoch != epoch {
            st.slots.remove(key);
            return Poll::Ready(Err(CallError::Disconnected));
        }
        let Some(s) = st.session.as_mut() else {
            return Poll::Ready(Err(CallError::Disconnected));
        };
        let queued = s.queued_frames();
        match s.read(st.now, key) {
            Read::Item(b) => {
                // Credits go back in batches: the writer is woken only when this read
                // released one.
                if s.queued_frames() > queued {
                    self.writer.notify();
                    *yield_next = s.buffered(key) > 0;
                }
                Poll::Ready(Ok(Some(b)))
            }
            Read::End(r) => {
                if key.dir == Dir::Outgoing {
                    st.slots.remove(key);
                }
                Poll::Ready(r.map(|()| None))
            }
            Read::Pending => match st.slots.wakers(key) {
                Some(wakers) => {
                    wakers.read = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(Err(CallError::Closed)),
            },
        }
    }

    /// How many items of a stream have arrived and wait to be read.
    pub(crate) fn buffered(&self, epoch: u64, key: MuxKey) -> usize {
        let mut st = self.lock();
        if let Some(u) = st.slots.outgoing(key).and_then(|s| s.unread.as_ref()) {
            return u.items.len();
        }
        match st.session.as_ref() {
            Some(s) if st.epoch == epoch => s.buffered(key),
            _ => 0,
        }
    }

    pub(crate) fn poll_send(
        &self,
        epoch: u64,
        key: MuxKey,
        item: &Bytes,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), CallError>> {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(Err(e)) = st.slots.outgoing(key).and_then(|s| s.end.clone()) {
            return Poll::Ready(Err(e));
        }
        if st.epoch != epoch {
            return Poll::Ready(Err(CallError::Disconnected));
        }
        let Some(s) = st.session.as_mut() else {
            return Poll::Ready(Err(CallError::Disconnected));
        };
        match s.send(st.now, key, item.clone()) {
            Ok(()) => {
                self.writer.notify();
                Poll::Ready(Ok(()))
            }
            Err(SendError::Blocked) => match st.slots.wakers(key) {
                Some(wakers) => {
                    wakers.write = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(Err(CallError::Closed)),
            },
            Err(SendError::Call(e)) => Poll::Ready(Err(e)),
        }
    }

    pub(crate) fn close_send(&self, epoch: u64, id: u64) {
        let mut st = self.lock();
        if st.epoch != epoch {
            return;
        }
        let now = st.now;
        if let Some(s) = st.session.as_mut() {
            let _ = s.close_send(now, id);
        }
        drop(st);
        self.writer.notify();
    }

    /// The caller dropped its stream: cancel it on both sides.
    pub(crate) fn cancel_stream(&self, epoch: u64, id: u64) {
        let mut st = self.lock();
        st.slots.outgoing.remove(&id);
        if st.epoch == epoch {
            if let Some(s) = st.session.as_mut() {
                s.cancel(id);
            }
        }
        drop(st);
        self.writer.notify();
    }

    fn respond(&self, epoch: u64, id: u64, result: Result<Bytes, String>) {
        self.end_incoming(epoch, id, |s, now| {
            s.respond(now, id, result);
        });
    }

    fn finish(&self, epoch: u64, id: u64, result: Result<(), String>) {
        self.end_incoming(epoch, id, |s, now| {
            s.finish(now, id, result);
        });
    }

    /// Gives an incoming call's outcome to the session (`end`), frees its slot and wakes
    /// the socket task; a call of an earlier session is dropped.
    fn end_incoming(&self, epoch: u64, id: u64, end: impl FnOnce(&mut Session, Instant)) {
        let mut st = self.lock();
        if st.epoch != epoch {
            return;
        }
        st.slots.incoming.remove(&id);
        let now = st.now;
        if let Some(s) = st.session.as_mut() {
            end(s, now);
        }
        drop(st);
        self.writer.notify();
    }

    // ------------------------------------------------------------------------------
    // Events.

    /// Dispatches every pending event of the current session.
    ///
    /// Returns whether it handed answers to waiting callers.
    fn pump(self: &Arc<Self>, st: &mut LinkState) -> bool {
        let epoch = st.epoch;
        let mut lost = None;
        let mut answered = false;
        loop {
            let Some(ev) = st.session.as_mut().and_then(Session::poll_event) else {
                break;
            };
            match ev {
                Event::Connected { remote_host, .. } => {
                    st.connects += 1;
                    st.connected_epoch = epoch;
                    st.last_rejection = None;
                    st.last_error = None;
                    info!(target: TARGET, local = %self.shared.cluster.local_host, remote = %remote_host, connects = st.connects, "link up");
                    for w in st.connect_waiters.drain(..) {
                        w.wake();
                    }
                }
                Event::Lost(reason) => lost = Some(reason),
                Event::Request {
                    mux_id,
                    handler,
                    payload,
                    ..
                } => self.spawn_single(st, epoch, mux_id, handler, payload),
                Event::StreamOpened {
                    mux_id,
                    handler,
                    payload,
                    ..
                } => self.spawn_stream(st, epoch, mux_id, handler, payload),
                Event::Response { mux_id, result } => {
                    if let Some(slot) = st.slots.outgoing.get_mut(&mux_id) {
                        slot.end = Some(result);
                        slot.wakers.wake();
                        answered = true;
                    }
                }
                Event::Readable(key) => {
                    if let Some(w) = st.slots.wakers(key).and_then(|w| w.read.take()) {
                        w.wake();
                    }
                }
                Event::Writable(key) => {
                    if let Some(w) = st.slots.wakers(key).and_then(|w| w.write.take()) {
                        w.wake();
                    }
                }
                Event::Closed { key, error } => match key.dir {
                    Dir::Outgoing => {
                        if let Some(slot) = st.slots.outgoing.get_mut(&key.id) {
                            // After a loss, what arrived is still read, then the end.
                            match st.session.as_mut().and_then(|s| s.take_unread(key.id)) {
                                Some(u) => slot.unread = Some(Box::new(u)),
                                None => slot.end = Some(Err(error)),
                            }
                            slot.wakers.wake();
                        }
                    }
                    Dir::Incoming => {
                        if let Some(mut slot) = st.slots.incoming.remove(&key.id) {
                            debug!(target: "grid::handler", remote = %self.remote, mux = key.id, %error, "incoming call cancelled");
                            if let Some(c) = slot.cancel.take() {
                                c.fire();
                            }
                            slot.wakers.wake();
                        }
                    }
                },
            }
        }
        if let Some(reason) = lost {
            self.on_lost(st, reason);
        }
        answered
    }

    fn on_lost(&self, st: &mut LinkState, reason: LostReason) {
        if let Some(s) = st.session.take() {
            st.last_mux_id = s.last_mux_id();
            st.last_stats = s.stats();
        }
        match &reason {
            LostReason::Rejected(why) => {
                st.last_error = Some(format!("connection rejected: {why}"));
                // Logged once per reason, not on every retry.
                if st.last_rejection.as_deref() != Some(why.as_str()) {
                    warn!(target: TARGET, local = %self.shared.cluster.local_host, remote = %self.remote, reason = %why, "connection rejected");
                    st.last_rejection = Some(why.clone());
                }
            }
            LostReason::Local => debug!(target: TARGET, remote = %self.remote, "link closed"),
            other => {
                info!(target: TARGET, local = %self.shared.cluster.local_host, remote = %self.remote, reason = %other, "link lost")
            }
        }
        st.done.fire();
        self.writer.notify();
    }

    fn spawn_single(
        self: &Arc<Self>,
        st: &mut LinkState,
        epoch: u64,
        id: u64,
        handler: HandlerKey,
        payload: Bytes,
    ) {
        let Some(f) = self.shared.handlers.single(&handler).cloned() else {
            crate::proto::bug::report(format_args!("no code for registered handler {handler:?}"));
            if let Some(s) = st.session.as_mut() {
                s.respond(Instant::now(), id, Err("handler missing".into()));
            }
            return;
        };
        let start = move |link: &Arc<Link>, _: u64, _: u64, handler: &HandlerKey| {
            f(Request {
                payload,
                remote: link.remote.clone(),
                subroute: link.shared.handlers.route(handler),
            })
        };
        self.run_handler(st, epoch, id, handler, None, start, &SINGLE_END);
    }

    fn spawn_stream(
        self: &Arc<Self>,
        st: &mut LinkState,
        epoch: u64,
        id: u64,
        handler: HandlerKey,
        payload: Option<Bytes>,
    ) {
        let Some(f) = self.shared.handlers.stream(&handler).cloned() else {
            crate::proto::bug::report(format_args!("no code for registered handler {handler:?}"));
            if let Some(s) = st.session.as_mut() {
                s.finish(Instant::now(), id, Err("handler missing".into()));
            }
            return;
        };
        let has_input = matches!(
            self.shared.cluster.registry.get(&handler),
            Some(HandlerKind::Stream { in_capacity, .. }) if in_capacity > 0
        );
        let cancel = Signal::new();
        let signal = cancel.clone();
        let start = move |link: &Arc<Link>, epoch: u64, id: u64, handler: &HandlerKey| {
            let ctx = StreamCtx {
                payload,
                input: has_input.then(|| Input {
                    link: link.clone(),
                    epoch,
                    id,
                    done: false,
                    yield_next: false,
                }),
                output: Output {
                    link: link.clone(),
                    epoch,
                    id,
                },
                cancelled: Cancelled::new(signal),
                remote: link.remote.clone(),
                subroute: link.shared.handlers.route(handler),
            };
            f(ctx)
        };
        self.run_handler(st, epoch, id, handler, Some(cancel), start, &STREAM_END);
    }

    /// Runs an incoming call's handler in a task ([`HandlerTask`]), its future made by
    /// `start` from the link, the call's generation and ID and the handler's key. The
    /// call's cancellation (`cancel`, or one made when the handler first waits) drops
    /// the handler's future; a panic, even in `start`, becomes the call's error (the
    /// end's `panic_prefix` + the panic's text); the outcome goes to the end's `done`.
    #[allow(clippy::too_many_arguments)]
    fn run_handler<T: Send + 'static>(
        self: &Arc<Self>,
        st: &mut LinkState,
        epoch: u64,
        id: u64,
        handler: HandlerKey,
        cancel: Option<Signal>,
        start: impl FnOnce(&Arc<Link>, u64, u64, &HandlerKey) -> HandlerFuture<T>
        + Send
        + Unpin
        + 'static,
        end: &'static CallEnd<T>,
    ) {
        // A single request gets its slot only if its handler waits ([`Link::watch_cancel`]).
        if cancel.is_some() {
            let slot = InSlot {
                cancel: cancel.clone(),
                ..InSlot::default()
            };
            st.slots.incoming.insert(id, slot);
        }
        // Counted as running from now (shutdown waits for it); started once the link's
        // lock is released, and spawned as it is, one allocation, if it waits
        // ([`Link::start_handlers`]).
        st.handlers.push(Box::pin(HandlerTask {
            _guard: self.shared.tasks.start(),
            link: self.clone(),
            epoch,
            id,
            handler,
            end,
            cancelled: cancel.map(|c| c.wait()),
            stage: Stage::Start(start),
        }));
    }

    /// Gives a handler's outcome (or its panic) to `end`.
    fn handler_done<T>(
        &self,
        epoch: u64,
        id: u64,
        handler: HandlerKey,
        r: std::thread::Result<Result<T, RemoteError>>,
        end: &CallEnd<T>,
    ) {
        match r {
            Ok(r) => (end.done)(self, epoch, id, r.map_err(|e| e.0)),
            Err(panic) => {
                let text = panic_text(&panic);
                error!(target: "grid::handler", remote = %self.remote, ?handler, %text, "handler panicked");
                let why = format!("{}{text}", end.panic_prefix);
                (end.done)(self, epoch, id, Err(why));
            }
        }
    }

    /// A cancellation signal for incoming call `id` of generation `epoch`, kept in a
    /// slot made for it; `None` when the call has ended already (cancelled, or its
    /// session is gone), which the session knows: it forgets a call as it ends it.
    fn watch_cancel(&self, epoch: u64, id: u64) -> Option<Signal> {
        let mut st = self.lock();
        let key = MuxKey::incoming(id);
        if st.epoch != epoch || !st.session.as_ref().is_some_and(|s| s.contains(key)) {
            return None;
        }
        let slot = st.slots.incoming.entry(id).or_default();
        Some(slot.cancel.get_or_insert_with(Signal::new).clone())
    }

    /// Starts the handlers the last events started, after the link's lock is released.
    /// Each is polled once here, on the socket task: one answered in that poll (most
    /// single requests are) costs no task, and its answer leaves in the socket task's
    /// next turn with the others. One that waits is spawned, and its task polls it
    /// again; the no-op waker of the first poll is never needed, since that task's
    /// first poll registers the real one.
    fn start_handlers(&self, handlers: &mut Vec<BoxFuture<'static, ()>>) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for mut h in handlers.drain(..) {
            if h.as_mut().poll(&mut cx).is_pending() {
                self.shared.rt.spawn(h);
            }
        }
    }

    // ------------------------------------------------------------------------------
    // Sessions and sockets.

    /// Makes `session` the link's current one, ending any previous session, and starts
    /// the tasks that run it over `ws`. Returns its generation and its end signal, or
    /// `None` (dropping the socket) once the link is shut down.
    pub(crate) fn install(
        self: &Arc<Self>,
        mut session: Session,
        ws: ws::Socket,
    ) -> Option<(u64, Signal)> {
        let (epoch, done) = {
            let mut st = self.lock();
            if st.shut {
                // A socket that raced shutdown: nothing may run on it.
                return None;
            }
            if let Some(old) = st.session.as_mut() {
                old.close(LostReason::Local);
                self.pump(&mut st);
            }
            session.continue_mux_ids(st.last_mux_id);
            st.epoch += 1;
            st.done = Signal::new();
            st.session = Some(session);
            self.pump(&mut st);
            (st.epoch, st.done.clone())
        };
        self.shared
            .spawn(io_loop(self.clone(), epoch, ws, done.clone()));
        Some((epoch, done))
    }

    /// Whether generation `epoch` completed its handshake.
    fn connected_in(&self, epoch: u64) -> bool {
        self.lock().connected_epoch == epoch
    }

    fn note_attempt(&self, error: Option<String>) {
        let mut st = self.lock();
        st.dial_attempts += 1;
        if error.is_some() {
            st.last_error = error;
        }
    }

    /// Drops the current socket (the dialer reconnects); in-flight calls end with
    /// `Disconnected`.
    pub(crate) fn reset(self: &Arc<Self>) {
        let epoch = self.lock().epoch;
        self.transport_failed(epoch, "reset by the application".into());
    }

    fn transport_failed(self: &Arc<Self>, epoch: u64, why: String) {
        let mut st = self.lock();
        if st.epoch != epoch {
            return;
        }
        if let Some(s) = st.session.as_mut() {
            s.close(LostReason::Transport(why));
            self.pump(&mut st);
        }
    }

    /// Ends the current session for good (shutdown): every call ends with
    /// `Disconnected` and no new session is installed.
    pub(crate) fn close(self: &Arc<Self>) {
        let mut st = self.lock();
        st.shut = true;
        if let Some(s) = st.session.as_mut() {
            s.close(LostReason::Local);
            self.pump(&mut st);
        }
        for w in st.connect_waiters.drain(..) {
            w.wake();
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Runs one session over its socket: reads, writes and timers in one task, so the socket
/// is never shared between tasks and frames provoked by a read leave in the same turn.
async fn io_loop(link: Arc<Link>, epoch: u64, ws: ws::Socket, done: Signal) {
    let shared = link.shared.clone();
    let pacing = shared.rt.pacing();
    let mut io = SocketTask {
        read_batch: pacing.read_batch.max(1),
        turns_per_poll: pacing.turns_per_poll.max(1),
        read_round: pacing.read_round_bytes.max(1),
        read_this_poll: 0,
        yield_after_handoff: pacing.yield_after_handoff,
        write_round: pacing.write_round_bytes.max(1),
        handed_off: false,
        stall: shared.cluster.config.write_stall_timeout,
        quiet: Quiet::new(shared.cluster.config.ping_interval),
        link,
        epoch,
        ws,
        done,
        read_wake: Arc::new(ReadWake {
            ready: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }),
        inbound: Vec::new(),
        frames: Vec::new(),
        counts: Vec::new(),
        close_code: None,
        pong: None,
        buf: BytesMut::new(),
        out: VecDeque::new(),
        unflushed: false,
        dirty: true,
        due: false,
        timer: None,
        stalled_since: None,
        stall_timer: None,
        written: 0,
        handlers: Vec::new(),
    };
    std::future::poll_fn(|cx| io.poll(cx)).await;
    // Best effort: tell the peer (answering its close, if it sent one), but never wait
    // long on a dead socket.
    let mut ws = io.ws;
    let code = io.close_code.unwrap_or(ws::CLOSE_NORMAL);
    let close = async {
        ws.close(Some(code)).await;
    };
    let _ = select(
        Box::pin(close),
        shared.sleep_until(Instant::now() + Duration::from_millis(100)),
    )
    .await;
}

/// The state of [`io_loop`].
struct SocketTask {
    link: Arc<Link>,
    epoch: u64,
    ws: ws::Socket,
    /// Fired when the session ends, whoever ended it (who also notifies the task).
    done: Signal,
    /// Set when the socket may have something to read.
    read_wake: Arc<ReadWake>,
    /// Messages read and not yet handed to the session.
    inbound: Vec<Bytes>,
    /// At most this many inbound messages per turn (see [`Pacing`](super::Pacing)).
    read_batch: usize,
    /// At most this many turns per poll.
    turns_per_poll: usize,
    /// A poll reads inbound messages until they reach this many bytes.
    read_round: usize,
    /// Bytes of inbound messages read in the current poll.
    read_this_poll: usize,
    /// Yield after a turn that handed work to other tasks.
    yield_after_handoff: bool,
    /// About this many encoded bytes are taken from the session per turn.
    write_round: usize,
    /// The last turn started handlers or answered callers.
    handed_off: bool,
    /// Frames taken from the session, to encode outside the lock; `counts` splits them
    /// into messages (frames, encoded length).
    frames: Vec<Frame>,
    counts: Vec<(usize, usize)>,
    /// The status code of the peer's close frame, which ours echoes.
    close_code: Option<u16>,
    /// The payload of the last ping, until its pong is queued.
    pong: Option<Bytes>,
    buf: BytesMut,
    /// Encoded messages not yet written, each a whole WebSocket frame, in segments (a
    /// large payload is a segment of its own); the first may be partly written.
    out: VecDeque<ws::Segment>,
    /// Bytes written to the socket since its last flush.
    unflushed: bool,
    /// The session may have frames to send or a new next deadline.
    dirty: bool,
    /// The session timer fired.
    due: bool,
    /// The armed session timer and when it fires.
    timer: Option<(Instant, BoxFuture<'static, ()>)>,
    stall: Duration,
    /// While a write is blocked: since when the socket has taken no byte.
    stalled_since: Option<Instant>,
    /// The stall timer and when it fires. Progress does not move it: when it fires
    /// early it is set again for the real deadline, so a busy link sets about one timer
    /// per stall period instead of one per blocked write.
    stall_timer: Option<(Instant, BoxFuture<'static, ()>)>,
    /// Bytes the socket had taken when `stalled_since` was last set.
    written: u64,
    /// Handlers taken from the link state, started after its lock is released.
    handlers: Vec<BoxFuture<'static, ()>>,
    /// When the buffers are given back.
    quiet: Quiet,
}

/// A link that moved fewer bytes than this between two quiet checks gives back its
/// buffers.
const QUIET_BYTES: u64 = 64 * 1024;

/// Decides when a link has been quiet long enough to give back the buffer room a burst
/// grew: asked when the session's timers fire, it checks at most once per `period`, and
/// the link is quiet when fewer than [`QUIET_BYTES`] were read and written since the
/// last check. A busy link keeps its buffers; an idle one (only pings) frees them within
/// two periods.
#[derive(Debug)]
struct Quiet {
    period: Duration,
    next: Option<Instant>,
    moved: u64,
}

impl Quiet {
    fn new(period: Duration) -> Quiet {
        Quiet {
            period,
            next: None,
            moved: 0,
        }
    }

    /// With `moved` bytes read and written so far: `None` when no check is due,
    /// else whether the link was quiet since the last check.
    fn check(&mut self, now: Instant, moved: u64) -> Option<bool> {
        if self.next.is_some_and(|next| now < next) {
            return None;
        }
        self.next = Some(now + self.period);
        let quiet = moved.saturating_sub(self.moved) < QUIET_BYTES;
        self.moved = moved;
        Some(quiet)
    }
}

/// The waker the socket's read side gets: it marks the socket readable, then wakes the
/// socket task.
struct ReadWake {
    ready: AtomicBool,
    task: AtomicWaker,
}

impl futures_util::task::ArcWake for ReadWake {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.ready.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

/// Why the socket task stopped.
enum Stop {
    /// The session ended elsewhere (shutdown, reset, a newer socket, a handshake refused).
    Ended,
    /// The socket failed: the session is lost for this reason.
    Failed(String),
}

/// Takes the session's frames to write when `take` (the socket is idle): about `round`
/// bytes ([`Pacing::write_round_bytes`](super::Pacing)), or a few thousand frames, per
/// turn, so the socket gets busy sooner, the task's buffers stay small however many tiny
/// frames are queued, and the rest waits in the session, where it counts against the
/// queue limits. A closed session's last frames all leave now. Clears `dirty` once every
/// frame is taken. Returns the session's next deadline and whether it is closed; `None`
/// when the session is gone.
fn take_frames(
    st: &mut LinkState,
    take: bool,
    frames: &mut Vec<Frame>,
    counts: &mut Vec<(usize, usize)>,
    dirty: &mut bool,
    round: usize,
) -> Option<(Option<Instant>, bool)> {
    let s = st.session.as_mut()?;
    if take {
        let last = s.is_closed();
        let mut bytes: usize = counts.iter().map(|&(_, len)| len).sum();
        while last || (bytes < round && frames.len() < WRITE_ROUND_FRAMES) {
            let Some(t) = s.poll_transmit_frames(frames) else {
                *dirty = false;
                break;
            };
            counts.push((t.frames, t.len));
            bytes += t.len;
        }
    }
    Some((s.poll_timeout(), s.is_closed()))
}

impl SocketTask {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.read_this_poll = 0;
        for _ in 0..self.turns_per_poll {
            if self.read_this_poll >= self.read_round {
                break;
            }
            match self.turn(cx) {
                Poll::Ready(Some(Stop::Ended)) => return Poll::Ready(()),
                Poll::Ready(Some(Stop::Failed(why))) => {
                    self.link.transport_failed(self.epoch, why);
                    return Poll::Ready(());
                }
                // See `Pacing::yield_after_handoff`.
                Poll::Ready(None) | Poll::Pending
                    if std::mem::take(&mut self.handed_off) && self.yield_after_handoff =>
                {
                    break;
                }
                Poll::Ready(None) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        // Busy: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One turn: read what is there, step the session, write what it produced.
    /// `Ready(None)` asks for another turn at once.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<Option<Stop>> {
        let mut failed = None;
        // The socket is read only when it said it may have data: an attempt costs a
        // system call even when nothing is there.
        self.read_wake.task.register(cx.waker());
        // Stopped at the turn's or the poll's limit: there may be more.
        let mut read_more = false;
        if self.read_wake.ready.swap(false, Ordering::AcqRel) {
            let waker = futures_util::task::waker_ref(&self.read_wake);
            let mut rcx = Context::from_waker(&waker);
            loop {
                if self.inbound.len() >= self.read_batch || self.read_this_poll >= self.read_round {
                    read_more = true;
                    self.read_wake.ready.store(true, Ordering::Release);
                    break;
                }
                match self.ws.poll_next(&mut rcx) {
                    Poll::Ready(Ok(Some(Inbound::Binary(b)))) => {
                        self.read_this_poll += b.len();
                        self.inbound.push(b);
                    }
                    // Only the latest ping is answered (RFC 6455 §5.5.3): a peer that
                    // pings and does not read cannot make the pongs pile up.
                    Poll::Ready(Ok(Some(Inbound::Ping(p)))) => self.pong = Some(p),
                    Poll::Ready(Ok(Some(Inbound::Close(code)))) => {
                        self.close_code = code;
                        failed = Some("peer closed the WebSocket".to_owned());
                        break;
                    }
                    // Pongs and text messages are not part of the protocol.
                    Poll::Ready(Ok(Some(Inbound::Skipped))) => {}
                    Poll::Ready(Err(e)) => {
                        failed = Some(format!("read: {e}"));
                        break;
                    }
                    Poll::Ready(Ok(None)) => {
                        failed = Some("connection closed by peer".to_owned());
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if self.link.writer.poll_notified(cx).is_ready() {
            self.dirty = true;
        }
        let idle = self.out.is_empty() && !self.unflushed;
        let mut closed = false;
        if !self.inbound.is_empty() || self.due || (self.dirty && idle) {
            let due = std::mem::take(&mut self.due);
            match self.step(idle, due) {
                Some(c) => closed = c,
                None => return Poll::Ready(Some(Stop::Ended)),
            }
        }
        // Messages read before the socket failed were handed to the session first.
        if let Some(why) = failed {
            return Poll::Ready(Some(Stop::Failed(why)));
        }
        let wrote = match self.write(cx) {
            Ok(w) => w,
            Err(why) => return Poll::Ready(Some(Stop::Failed(why))),
        };
        let blocked = !wrote;
        if closed && !blocked {
            return Poll::Ready(Some(Stop::Ended));
        }
        if self.done.is_fired() {
            // A write blocked on a peer that stopped reading must not outlive its
            // session; a healthy socket took the last frames in the write above.
            return Poll::Ready(Some(Stop::Ended));
        }
        if blocked {
            if self.stalled(cx) {
                let stall = self.stall;
                warn!(target: TARGET, remote = %self.link.remote, ?stall, "write stalled; dropping link");
                return Poll::Ready(Some(Stop::Failed(format!("write stalled for {stall:?}"))));
            }
        } else {
            // The timer stays armed: the next blocked write is likely soon.
            self.stalled_since = None;
        }
        // Polled after the step, which may have armed it anew.
        if let Some((_, t)) = self.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                self.timer = None;
                self.due = true;
            }
        }
        if read_more || self.due || (self.dirty && !blocked) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// With the write blocked: whether the socket has taken no byte for the stall
    /// limit. Every byte it takes starts the measure again, so a slow link that keeps
    /// moving is not a stall.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let written = self.ws.io.written();
        let since = match self.stalled_since {
            Some(since) if written == self.written => since,
            _ => {
                self.written = written;
                *self.stalled_since.insert(Instant::now())
            }
        };
        let deadline = since + self.stall;
        loop {
            let link = &self.link;
            let (at, t) = self
                .stall_timer
                .get_or_insert_with(|| (deadline, link.shared.sleep_until(deadline)));
            if t.as_mut().poll(cx).is_pending() {
                return false;
            }
            let at = *at;
            self.stall_timer = None;
            if at >= deadline {
                return true;
            }
            // It fired for an earlier deadline: progress since moved the real one.
        }
    }

    /// Hands the inbound messages to the session, runs its due timers, takes its
    /// outbound frames when the socket is idle (`take`), dispatches its events and
    /// encodes the frames taken. When the timer fired (`due`), checks whether the link
    /// is quiet ([`Quiet`]) and if so gives back the session's and its own spare buffer
    /// room. Returns whether the session is closed, or `None` when this socket's session
    /// is gone.
    fn step(&mut self, take: bool, due: bool) -> Option<bool> {
        let mut session_bytes = None;
        let (mut next, mut closed) = {
            let mut st = self.link.lock();
            if st.epoch != self.epoch {
                return None;
            }
            let now = Instant::now();
            st.now = now;
            let s = st.session.as_mut()?;
            // Whatever happens below may queue frames; cleared once they are all taken.
            self.dirty = true;
            for b in self.inbound.drain(..) {
                s.handle_message(now, b);
            }
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
            // Bytes moved so far, read only when a check is due.
            let moved = || self.ws.io.read() + self.ws.io.written();
            if let Some(quiet) = due.then(|| self.quiet.check(now, moved())).flatten() {
                if quiet {
                    s.shrink_buffers();
                }
                session_bytes = Some((quiet, s.buffer_bytes()));
            }
            let taken = take_frames(
                &mut st,
                take,
                &mut self.frames,
                &mut self.counts,
                &mut self.dirty,
                self.write_round,
            )?;
            // Last under the lock: the callers it wakes find it free.
            self.handed_off |= self.link.pump(&mut st);
            std::mem::swap(&mut st.handlers, &mut self.handlers);
            taken
        };
        if !self.handlers.is_empty() {
            // Answers given in the handlers' first poll leave in this turn, so they need
            // not wake this task: notifications are held while they run, and taken
            // before the frames are, so one sent meanwhile by another task announces
            // frames taken here, and a later one wakes this task as usual.
            self.link.writer.hold();
            self.handed_off = true;
            self.link.start_handlers(&mut self.handlers);
            self.link.writer.take();
            // The handlers' frames came after the ones taken above, which may have
            // emptied the session; with the notifications held, only this flag says
            // that frames wait if a round cannot take them all.
            self.dirty = true;
            let mut st = self.link.lock();
            if st.epoch != self.epoch {
                return None;
            }
            (next, closed) = take_frames(
                &mut st,
                take,
                &mut self.frames,
                &mut self.counts,
                &mut self.dirty,
                self.write_round,
            )?;
        }
        // Encoding and checksumming happen without the lock.
        ws::encode_round(
            &self.frames,
            self.counts.drain(..),
            self.ws.mask.as_mut(),
            &mut self.buf,
            &mut self.out,
        );
        self.frames.clear();
        if let Some((quiet, session)) = session_bytes {
            if quiet {
                self.trim();
            }
            let own = self.buffer_bytes();
            self.link.lock().buffer_bytes = session + own;
        }
        if let Some(at) = next {
            // Re-armed only when the deadline moved earlier: a timer that fires early
            // finds nothing due and is set again for the real deadline.
            if self.timer.as_ref().is_none_or(|(armed, _)| at < *armed) {
                self.timer = Some((at, self.link.shared.sleep_until(at)));
            }
        }
        Some(closed)
    }

    /// Gives back the room its buffers and queues grew to beyond what they hold.
    fn trim(&mut self) {
        self.ws.trim();
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.inbound.shrink_to_fit();
        self.frames.shrink_to_fit();
        self.counts.shrink_to_fit();
        self.out.shrink_to_fit();
        self.handlers.shrink_to_fit();
    }

    /// Bytes of buffer room held: the socket's buffers and the task's queues.
    fn buffer_bytes(&self) -> usize {
        use std::mem::size_of;
        self.ws.reader.buffer_bytes()
            + self.buf.capacity()
            + self.inbound.capacity() * size_of::<Bytes>()
            + self.frames.capacity() * size_of::<Frame>()
            + self.counts.capacity() * size_of::<(usize, usize)>()
            + self.out.capacity() * size_of::<ws::Segment>()
            + self.handlers.capacity() * size_of::<BoxFuture<'static, ()>>()
    }

    /// Writes the queued batches and flushes them; returns whether everything queued
    /// was written. A pong goes ahead of the batches, where no frame is partly written.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<bool, String> {
        if self.ws.io.mid_batch() && !self.write_out(cx, true)? {
            return Ok(false);
        }
        if let Some(p) = self.pong.take() {
            self.ws.put_pong(&mut self.buf, &p);
            self.out.push_front(ws::Segment {
                bytes: self.buf.split().freeze(),
                edge: true,
            });
        }
        if !self.write_out(cx, false)? {
            return Ok(false);
        }
        if self.unflushed {
            match self.ws.io.poll_flush_frames(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(format!("write: {e}")),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Writes the queued segments, all of them or (`to_edge`) up to the end of a frame;
    /// returns whether that was done.
    fn write_out(&mut self, cx: &mut Context<'_>, to_edge: bool) -> Result<bool, String> {
        if self.out.is_empty() {
            return Ok(true);
        }
        match self.ws.io.poll_write_segments(cx, &mut self.out, to_edge) {
            Poll::Ready(Ok(())) => {
                self.unflushed = true;
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(format!("write: {e}")),
            Poll::Pending => Ok(false),
        }
    }
}

/// The dialer's loop: connect, run the session until it ends, and try again on the
/// protocol's schedule ([`Redial`]), until shutdown.
pub(crate) async fn dial_loop(link: Arc<Link>) {
    let shared = link.shared.clone();
    let cfg = shared.cluster.config.clone();
    let seed = shared.seed ^ twox_hash::XxHash3_64::oneshot(link.remote.as_bytes());
    let backoff = Backoff::new(seed, cfg.reconnect_min, cfg.reconnect_max);
    let mut redial = Redial::new(backoff, Instant::now());
    let mut last_error: Option<String> = None;
    let mut shutdown = shared.shutdown.wait();
    loop {
        if let Some(at) = redial.poll_timeout() {
            if let Either::Right(_) = select(shared.sleep_until(at), &mut shutdown).await {
                break;
            }
        }
        if shared.shutdown.is_fired() {
            break;
        }
        if !redial.poll_dial(Instant::now()) {
            continue;
        }
        let dial = ws::dial(&shared, &link.remote);
        let timeout = shared.sleep_until(Instant::now() + cfg.dial_timeout);
        let attempt = select(Box::pin(dial), timeout);
        let result = match select(attempt, &mut shutdown).await {
            Either::Right(_) => break,
            Either::Left((Either::Left((r, _)), _)) => r,
            Either::Left((Either::Right(_), _)) => {
                Err(format!("dial timed out after {:?}", cfg.dial_timeout))
            }
        };
        link.note_attempt(result.as_ref().err().cloned());
        match result {
            Ok(socket) => {
                last_error = None;
                let token = (shared.token)();
                let session = Session::dialer(
                    shared.cluster.clone(),
                    &link.remote,
                    &token,
                    Instant::now(),
                    wall_now(),
                );
                let Some((epoch, done)) = link.install(session, socket) else {
                    break;
                };
                if let Either::Right(_) = select(done.wait(), &mut shutdown).await {
                    break;
                }
                // A session that ran is redialled at once; a refused handshake waits
                // like a failed dial.
                if link.connected_in(epoch) {
                    redial.connected();
                }
                redial.ended(Instant::now());
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    info!(target: TARGET, local = %shared.cluster.local_host, remote = %link.remote, error = %e, "dial failed; retrying");
                    last_error = Some(e);
                }
                redial.failed(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handlers_panic_message_becomes_the_error_text() {
        let caught = |f: fn()| std::panic::catch_unwind(f).expect_err("it panics");
        // The harness captures what the panics print.
        let literal = caught(|| panic!("handler exploded"));
        let formatted = caught(|| panic!("handler {} exploded", 7));
        let other = caught(|| std::panic::panic_any(42u8));
        assert_eq!(panic_text(&literal), "handler exploded");
        assert_eq!(panic_text(&formatted), "handler 7 exploded");
        assert_eq!(panic_text(&other), "unknown panic");
    }

    #[test]
    fn a_link_is_quiet_after_a_period_with_less_than_64_kib_moved() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut q = Quiet::new(Duration::from_secs(10));
        // The first check comes at the first timer; the handshake moved little.
        assert_eq!(q.check(s(0), 300), Some(true));
        // No second check within the period, however much moved.
        assert_eq!(q.check(s(9), 10 << 20), None);
        // A burst since the last check: busy.
        assert_eq!(q.check(s(10), 10 << 20), Some(false));
        // Then pings only, up to one byte short of the limit: quiet.
        let busy = 10 << 20;
        assert_eq!(q.check(s(25), busy + QUIET_BYTES - 1), Some(true));
        // Exactly the limit is not quiet.
        let at = busy + QUIET_BYTES - 1;
        assert_eq!(q.check(s(35), at + QUIET_BYTES), Some(false));
        // The period runs from the last check, not from the first.
        assert_eq!(q.check(s(44), at + QUIET_BYTES), None);
        assert_eq!(q.check(s(45), at + QUIET_BYTES), Some(true));
    }
}
