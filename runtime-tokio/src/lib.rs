//! Grid on the tokio runtime.
//!
//! This crate binds [`grid_core`] to tokio's sockets, timers and executor. Until the
//! runtime binding lands it re-exports the core so that users can depend on one crate.

pub use grid_core::*;
