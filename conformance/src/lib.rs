//! Grid's conformance tools: the `gridwire` inspector, the deterministic simulation,
//! the async suite shared by every runtime, and the benchmarks.

pub mod logs;
pub mod suite;
pub mod wire;
