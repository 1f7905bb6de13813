//! The sans-IO protocol state machines: no IO, no clock, no executor, no threads.
//!
//! A [`Session`] is one link: it takes inbound messages, timer ticks and application
//! commands, and produces outbound messages, timer deadlines and [`Event`]s. Time is
//! always passed in. Handlers are not run here: the session reports a request and
//! later takes its result.

pub(crate) mod bug;
mod config;
mod error;
mod event;
mod link;
pub(crate) mod muxmap;
mod session;
mod stats;
mod timer;

pub use bug::bug_count;
pub use config::{
    Cluster, Config, HandlerKey, HandlerKind, RegisterError, Registry, TokenValidator,
    link_uses_crc,
};
pub use error::{CallError, LostReason, SendError};
pub use event::{Dir, Event, MuxKey, Read};
pub use link::{Backoff, Redial, should_dial};
pub use session::{Role, Session, Transmit, Unread};
pub use stats::Stats;

#[cfg(test)]
mod tests;
