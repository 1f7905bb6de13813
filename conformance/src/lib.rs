//! Grid's conformance tools: the `gridwire` inspector, the deterministic simulation,
//! the async suites (byte-level, typed and TLS) shared by every runtime, and the benchmarks.

pub mod accept_faults;
pub mod hardening;
pub mod logs;
pub mod proxy;
pub mod sim;
pub mod suite;
pub mod tls_suite;
pub mod typed_suite;
pub mod wire;
