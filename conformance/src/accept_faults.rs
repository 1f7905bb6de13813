//! Listeners whose `accept` fails on cue, to show that a manager's listener survives
//! accept errors.
//!
//! [`runtime`] wraps a real runtime: everything is delegated, except that every listener
//! it makes consults an [`AcceptScript`] first. The script's faults are returned when
//! the manager asks for a connection (on the first poll of an `accept`, or when a
//! waiting `accept` is woken by an arriving connection), without taking that connection
//! from the backlog, as a kernel does when it fails an `accept` with `EMFILE`. The
//! script also records every outcome with its time, so that a test can see how the
//! manager paced its retries.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use grid_core::driver::{BoxFuture, BoxIo, Listener, Pacing, Runtime};

/// An error an `accept` can fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An OS error number.
    Os(i32),
    /// An error of this kind.
    Kind(ErrorKind),
}

/// The process is out of descriptors (`EMFILE` on Linux and the BSDs).
pub const EMFILE: Fault = Fault::Os(24);
/// The system is out of descriptors (`ENFILE` on Linux and the BSDs).
pub const ENFILE: Fault = Fault::Os(23);
/// The connection was aborted before it was accepted.
pub const ABORTED: Fault = Fault::Kind(ErrorKind::ConnectionAborted);
/// The connection was reset before it was accepted.
pub const RESET: Fault = Fault::Kind(ErrorKind::ConnectionReset);

impl Fault {
    /// The error itself.
    pub fn error(self) -> io::Error {
        match self {
            Fault::Os(n) => io::Error::from_raw_os_error(n),
            Fault::Kind(k) => io::Error::from(k),
        }
    }
}

/// What one `accept` returned: a connection, or an error (scripted or real).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A connection was accepted.
    Accepted,
    /// The script made the call fail with this.
    Scripted(Fault),
    /// The real listener failed: the error's kind and OS error number.
    Failed(ErrorKind, Option<i32>),
}

#[derive(Default)]
struct State {
    /// Faults still to return, front first.
    burst: VecDeque<Fault>,
    /// While set, every `accept` fails with this.
    persistent: Option<Fault>,
    /// Every outcome, with the instant it was returned.
    log: Vec<(Instant, Outcome)>,
}

/// The faults a listener returns, and the record of every `accept` outcome.
#[derive(Default)]
pub struct AcceptScript {
    state: Mutex<State>,
}

impl AcceptScript {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `faults`, returned one per `accept`, before the real listener is asked.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().burst.extend(faults);
    }

    /// Makes every `accept` fail with `fault` (after any queued faults) until
    /// [`AcceptScript::clear`].
    pub fn fail_until_cleared(&self, fault: Fault) {
        self.lock().persistent = Some(fault);
    }

    /// Ends [`AcceptScript::fail_until_cleared`].
    pub fn clear(&self) {
        self.lock().persistent = None;
    }

    /// Queued faults not yet returned.
    pub fn pending(&self) -> usize {
        self.lock().burst.len()
    }

    /// Every outcome so far, with the instant it was returned.
    pub fn log(&self) -> Vec<(Instant, Outcome)> {
        self.lock().log.clone()
    }

    /// How many outcomes satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.lock().log.iter().filter(|(_, o)| pred(o)).count()
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut g = self.lock();
        let f = g.burst.pop_front().or(g.persistent)?;
        g.log.push((Instant::now(), Outcome::Scripted(f)));
        Some(f)
    }

    fn record<T>(&self, r: &io::Result<T>) {
        let o = match r {
            Ok(_) => Outcome::Accepted,
            Err(e) => Outcome::Failed(e.kind(), e.raw_os_error()),
        };
        self.lock().log.push((Instant::now(), o));
    }
}

/// `rt`, except that its listeners follow `script`.
pub fn runtime(rt: Arc<dyn Runtime>, script: Arc<AcceptScript>) -> Arc<dyn Runtime> {
    Arc::new(Scripted { rt, script })
}

struct Scripted {
    rt: Arc<dyn Runtime>,
    script: Arc<AcceptScript>,
}

impl Runtime for Scripted {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.rt.spawn(task)
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        self.rt.sleep_until(deadline)
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxIo>> {
        self.rt.connect(addr)
    }

    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(ScriptedListener {
            inner: self.rt.listener(listener)?,
            script: self.script.clone(),
        }))
    }

    fn pacing(&self) -> Pacing {
        self.rt.pacing()
    }
}

struct ScriptedListener {
    inner: Box<dyn Listener>,
    script: Arc<AcceptScript>,
}

impl Listener for ScriptedListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        let mut real = self.inner.accept();
        let script = &self.script;
        Box::pin(std::future::poll_fn(move |cx| {
            // Checked on every poll: a fault scripted while the manager waits is
            // returned when the next connection arrives, which stays in the backlog.
            if let Some(f) = script.next_fault() {
                return Poll::Ready(Err(f.error()));
            }
            let r = std::task::ready!(real.as_mut().poll(cx));
            script.record(&r);
            Poll::Ready(r)
        }))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripted runtime changes only how listeners accept: its links keep the pacing
    /// of the runtime it wraps.
    #[test]
    fn scripted_runtime_keeps_the_wrapped_pacing() {
        let pacing = Pacing {
            read_batch: 3,
            turns_per_poll: 5,
            yield_after_handoff: true,
            write_round_bytes: 7,
            read_round_bytes: 11,
        };
        let inner = crate::suite::paced(grid_async_std::smol_runtime(), pacing);
        let script = Arc::new(AcceptScript::default());
        assert_eq!(runtime(inner, script).pacing(), pacing);
    }
}
