//! smoltcp driven by one task, and the TCP streams it hands out.
//!
//! - [`caller`]: who is behind a connection, so the connection limit is shared fairly.
//! - [`core`]: the sans-IO endpoint (smoltcp interface, one socket per connection, reaping).
//! - [`device`]: the in-memory packet queues smoltcp reads and writes.
//! - [`driver`]: the one task that moves packets between the packet device (TUN or pipe) and
//!   the endpoint.
//! - [`memory`]: [`PacketPipe`], an in-memory packet device for tests.
//! - [`packet_io`]: [`PacketIo`], what the driver needs from a packet device (the TUN is one).
//! - `reply_hops`: when a connection's IP hop limit, lowered for a token reply, may be lifted.
//! - `schedule`: which connections a poll visits (touched, or with a timer due).
//! - `shared`: the endpoint behind its lock and the driver's wake-up, shared by the driver and
//!   every stream, and the stack's clock.
//! - [`stream`]: [`TcpStream`], a tokio `AsyncRead + AsyncWrite` over one smoltcp socket, and
//!   its [`HopLimit`] handle.

pub mod caller;
pub mod core;
pub mod device;
pub mod driver;
pub mod memory;
pub mod packet_io;
mod reply_hops;
mod schedule;
mod shared;
pub mod stream;

pub use driver::{Listener, spawn};
pub use memory::PacketPipe;
pub use packet_io::PacketIo;
pub use stream::{HopLimit, TcpStream};
