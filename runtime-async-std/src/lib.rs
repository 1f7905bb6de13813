//! Grid on the async-std and smol runtimes.
//!
//! This crate binds [`grid_core`] to the async-io stack shared by async-std and smol.
//! Until the runtime binding lands it re-exports the core so that users can depend on
//! one crate.

pub use grid_core::*;
