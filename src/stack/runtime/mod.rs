//! The endpoint's runtime: one tokio task that owns the packet device and drives the
//! [`crate::stack::endpoint::Endpoint`] behind a lock, the streams it hands out, and the clock.
//!
//! Everything here waits on something outside the endpoint: the device (the TUN, or an
//! in-memory pipe), the streams' tasks, tokio's timer, the kernel's answer about a caller. The
//! endpoint below waits on nothing; this layer is what turns its packets, deadlines and
//! questions into I/O, and it never waits while holding the endpoint's lock. It does not open,
//! configure or close the device (`platform` does), and it does not know what its streams serve.
//!
//! - [`driver`]: the one task ([`spawn`], [`Door`], [`Driver`]), and the questions about
//!   callers it answers with `crate::attribution` outside the lock.
//! - `shared`: the endpoint behind its lock and the driver's wake-up, shared by the driver and
//!   every stream, and the stack's clock.
//! - [`stream`]: [`TcpStream`], a tokio `AsyncRead + AsyncWrite` over one smoltcp socket, and
//!   its [`HopLimit`] handle.
//! - [`packet_io`]: [`PacketIo`], what the driver needs from a packet device (the TUN is one).
//! - [`memory`]: [`PacketPipe`], an in-memory packet device for tests.

pub mod driver;
pub mod memory;
pub mod packet_io;
mod shared;
pub mod stream;

pub use driver::{Door, Driver, spawn};
pub use memory::PacketPipe;
pub use packet_io::PacketIo;
pub use stream::{HopLimit, TcpStream};
