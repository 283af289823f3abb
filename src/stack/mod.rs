//! The TCP side of the TUN: a sans-IO endpoint, and the runtime that drives it.
//!
//! - [`endpoint`]: smoltcp and the bookkeeping it leaves to its user (the packet filter, the
//!   connection table, who gives way at the connection limit, the hop limit of token replies,
//!   which connections a poll visits). No I/O and no clock: `now` and the packets are handed
//!   in, and who is calling is asked of its caller, so tests drive it entirely in memory.
//! - [`runtime`]: the one task that moves packets between a packet device (the TUN, or an
//!   in-memory [`PacketPipe`]) and the endpoint, the [`TcpStream`]s it hands out, and the
//!   questions about callers it answers with [`crate::attribution`] outside the endpoint's lock.
//!
//! The imports run one way: `runtime` uses `endpoint`, never the reverse.

pub mod endpoint;
pub mod runtime;

pub(crate) use endpoint::admission;
pub use endpoint::budget::PacketBudget;
pub use endpoint::{Endpoint, StackConfig};
pub use runtime::{Door, Driver, HopLimit, PacketIo, PacketPipe, TcpStream, spawn};
