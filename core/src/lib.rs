//! Grid's core: the wire codec and the sans-IO protocol state machines.
//!
//! Grid is a peer-to-peer RPC layer for clusters of servers that speaks the MinIO grid
//! wire protocol byte for byte. This crate holds everything that needs no socket, no
//! clock and no executor:
//!
//! - [`codec`]: frames, merged containers, control payloads, subroute IDs and the
//!   "who dials" rule;
//! - [`proto`]: the per-link state machine (handshake, requests, streams, keepalive);
//! - `driver` (feature `driver`): the runtime-agnostic async API;
//! - `typed` (feature `driver`): typed handlers and calls over serde and msgpack.

pub mod codec;
#[cfg(feature = "driver")]
pub mod driver;
pub mod proto;
#[cfg(feature = "driver")]
pub mod typed;
