//! Small runtime-agnostic synchronisation: a one-shot broadcast signal, a wake-up
//! notification for one task, and a tracker of spawned tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

/// A signal fired once and awaited by any number of tasks.
#[derive(Clone, Default)]
pub(crate) struct Signal(Arc<SignalInner>);

#[derive(Default)]
struct SignalInner {
    fired: AtomicBool,
    next_id: AtomicU64,
    waiters: Mutex<Vec<(u64, Waker)>>,
}

impl Signal {
    pub(crate) fn new() -> Signal {
        Signal::default()
    }

    pub(crate) fn fire(&self) {
        if self.0.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiters = std::mem::take(&mut *self.0.waiters.lock().expect("signal lock"));
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }

    /// A future that completes when the signal fires.
    pub(crate) fn wait(&self) -> SignalWait {
        SignalWait {
            signal: self.clone(),
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            registered: false,
        }
    }
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signal(fired: {})", self.is_fired())
    }
}

/// Completes when its [`Signal`] fires.
pub(crate) struct SignalWait {
    signal: Signal,
    id: u64,
    registered: bool,
}

impl Future for SignalWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &self.signal.0;
        if inner.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut waiters = inner.waiters.lock().expect("signal lock");
        if inner.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let id = self.id;
        match waiters.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => {
                // Most signals have two waiters (an incoming call's task and its
                // handler's `cancelled`), not the four a first push makes room for.
                if waiters.capacity() == 0 {
                    waiters.reserve_exact(2);
                }
                waiters.push((id, cx.waker().clone()))
            }
        }
        drop(waiters);
        self.registered = true;
        Poll::Pending
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        if self.registered && !self.signal.is_fired() {
            let mut waiters = self.signal.0.waiters.lock().expect("signal lock");
            waiters.retain(|(i, _)| *i != self.id);
        }
    }
}

/// Wakes one waiting task; a notification sent while nobody waits is kept for the next
/// wait, so none is lost.
#[derive(Default)]
pub(crate) struct Notify {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Notify {
    pub(crate) fn notify(&self) {
        // A notification still pending has woken the task already, or the task takes
        // it in its next poll: a burst of notifications wakes it once.
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Holds wake-ups back until [`Notify::take`]: notifications meanwhile only mark one
    /// pending. For the waiting task itself, about to look at whatever they announce.
    pub(crate) fn hold(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// Takes a pending notification, if any, without waiting; what it announced is
    /// visible after this.
    pub(crate) fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Takes a notification sent since the last one taken. Either way `cx` is woken by
    /// the next one, so a task that polls this once per turn never misses one.
    pub(crate) fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Counts spawned tasks so that shutdown can wait for every one of them.
#[derive(Clone, Default)]
pub(crate) struct Tasks(Arc<TasksInner>);

#[derive(Default)]
struct TasksInner {
    running: AtomicUsize,
    idle: Mutex<Vec<Waker>>,
}

/// Held by a running task; dropping it marks the task finished.
pub(crate) struct TaskGuard(Tasks);

impl Tasks {
    pub(crate) fn start(&self) -> TaskGuard {
        self.0.running.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    pub(crate) fn running(&self) -> usize {
        self.0.running.load(Ordering::Acquire)
    }

    /// Completes when no task is running.
    pub(crate) async fn idle(&self) {
        std::future::poll_fn(|cx| {
            if self.running() == 0 {
                return Poll::Ready(());
            }
            let mut idle = self.0.idle.lock().expect("tasks lock");
            if self.running() == 0 {
                return Poll::Ready(());
            }
            idle.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            let idle = std::mem::take(&mut *self.0.0.idle.lock().expect("tasks lock"));
            for w in idle {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    #[test]
    fn signal_wakes_every_waiter_once_fired() {
        let s = Signal::new();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut a = s.wait();
        let mut b = s.wait();
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut b).poll(&mut cx).is_pending());
        assert_eq!(s.0.waiters.lock().unwrap().len(), 2);
        drop(b);
        assert_eq!(
            s.0.waiters.lock().unwrap().len(),
            1,
            "a dropped wait unregisters"
        );
        s.fire();
        assert!(Pin::new(&mut a).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut s.wait()).poll(&mut cx).is_ready());
    }

    #[test]
    fn notify_keeps_a_notification_sent_before_the_wait() {
        let n = Notify::default();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(n.poll_notified(&mut cx).is_pending());
        n.notify();
        n.notify();
        assert!(n.poll_notified(&mut cx).is_ready());
        assert!(n.poll_notified(&mut cx).is_pending());
    }

    /// Counts its wake-ups.
    struct CountingWaker(AtomicUsize);

    impl futures_util::task::ArcWake for CountingWaker {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_notification_after_a_ready_poll_still_wakes_the_task() {
        let n = Notify::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = futures_util::task::waker(counter.clone());
        let mut cx = Context::from_waker(&waker);
        n.notify();
        // The task takes the notification and goes to sleep without polling again.
        assert!(n.poll_notified(&mut cx).is_ready());
        n.notify();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the second notification woke nobody"
        );
        assert!(n.poll_notified(&mut cx).is_ready());
    }

    #[test]
    fn held_notifications_wake_nobody_and_are_taken_once() {
        let n = Notify::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = futures_util::task::waker(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(n.poll_notified(&mut cx).is_pending());
        n.hold();
        n.notify();
        n.notify();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "held");
        assert!(n.take());
        assert!(!n.take(), "taken once");
        assert!(n.poll_notified(&mut cx).is_pending());
        // Once taken, a notification wakes the task again.
        n.notify();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(n.poll_notified(&mut cx).is_ready());
    }

    #[test]
    fn tasks_count_down_to_idle() {
        let t = Tasks::default();
        let g1 = t.start();
        let g2 = t.start();
        assert_eq!(t.running(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(t.running(), 0);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut idle = Box::pin(t.idle());
        assert!(idle.as_mut().poll(&mut cx).is_ready());
    }
}
