//! The one path for things that should never happen.
//!
//! A broken internal invariant (not bad input from a peer: that is an error value) is
//! logged loudly with its context on the `grid::bug` target, counted process-wide and
//! per session, and is fatal when debug assertions are on, so that every test run
//! treats it as a failure.

use std::sync::atomic::{AtomicU64, Ordering};

static BUGS: AtomicU64 = AtomicU64::new(0);

/// How many broken invariants this process has seen.
pub fn bug_count() -> u64 {
    BUGS.load(Ordering::Relaxed)
}

#[cold]
#[track_caller]
pub(crate) fn report(args: std::fmt::Arguments<'_>) {
    BUGS.fetch_add(1, Ordering::Relaxed);
    let at = std::panic::Location::caller();
    tracing::error!(target: "grid::bug", %at, "BUG: {args}");
    if cfg!(debug_assertions) {
        panic!("grid bug at {at}: {args}");
    }
}

/// Reports a broken invariant: `bug!(counter, "format", args...)`.
macro_rules! bug {
    ($counter:expr, $($arg:tt)+) => {{
        $counter += 1;
        $crate::proto::bug::report(format_args!($($arg)+));
    }};
}
pub(crate) use bug;
