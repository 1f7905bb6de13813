//! Deterministic tests of the session on a virtual clock.

mod harness;

mod faults;
mod flow;
mod fuzz_regressions;
mod handshake;
mod limits;
mod liveness;
mod single;
mod stream;
mod wire;
