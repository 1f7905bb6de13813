//! Deterministic tests of the session on a virtual clock.

mod harness;

mod faults;
mod flow;
mod handshake;
mod liveness;
mod single;
mod stream;
mod wire;
