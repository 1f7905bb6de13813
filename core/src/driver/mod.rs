//! The runtime-agnostic async API: [`Manager`], [`Connection`], [`Stream`], handlers and
//! the WebSocket transport, written once for every runtime.
//!
//! A runtime crate (`grid-tokio`, `grid-async-std`) implements [`Runtime`] (spawn, a
//! timer, TCP) and re-exports this module. Each link runs one socket task (reads,
//! writes, timers) around one [`crate::proto::Session`]; callers talk to the session
//! directly under a short lock and are woken by its events.
//!
//! A handler's future is first polled on the socket task that received its call: one
//! that answers in that poll costs no task of its own, and one that waits is spawned.
//! Work done before a handler's first wait therefore holds up its link's traffic; a
//! handler that computes for long moves that work to a task or thread of its own.

mod connection;
mod handler;
mod link;
mod manager;
mod recycle;
mod runtime;
mod signal;
#[cfg(feature = "tls")]
mod tls;
mod ws;

pub use connection::{Connection, Requests, Responses, Stream};
pub use handler::{Cancelled, Input, Output, RemoteError, Request, StreamCtx, StreamOptions};
pub use link::LinkStats;
pub use manager::{MINIO_LOCK_ROUTE, MINIO_ROUTE, Manager, ManagerBuilder, StartError};
pub use runtime::{BoxFuture, BoxIo, Io, Listener, Pacing, Runtime};
/// The rustls version [`TlsConfig::new`] takes configurations of.
#[cfg(feature = "tls")]
pub use rustls;
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsError};
