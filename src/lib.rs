//! imds-tun: an EC2 instance metadata service on `169.254.169.254`, reached through a TUN device.
//!
//! The process claims the metadata address without touching the loopback interface or any packet
//! filter: it creates a point-to-point TUN device whose peer is `169.254.169.254`, so the kernel
//! routes exactly that address into it, and terminates the TCP connections that arrive with a
//! userspace stack. When the process exits, the device and its route exit with it.
//!
//! ```text
//!  client (SDK, curl)
//!     │ connect(169.254.169.254:80)
//!     ▼
//!  kernel: route 169.254.169.254/32 dev imds0 (p2p peer, src 169.254.169.253)
//!     │ IP packets
//!     ▼
//!  platform ── TUN fd ──▶ stack::driver (one task) ── smoltcp Interface + SocketSet
//!  (a stack::PacketIo; in       │ one socket per SYN; a stream once established
//!   tests a PacketPipe)         │ and the client has sent its first byte
//!                               ▼
//!                         stack::TcpStream (AsyncRead + AsyncWrite, smoltcp wakers)
//!                               │
//!  --listen ADDR:PORT ─▶ tokio::net::TcpStream ─┐
//!                               ▼               ▼
//!                         http::Server::serve (hyper HTTP/1.1, one task per connection)
//!                               │
//!                               ▼
//!                         imds::Imds::respond (metadata tree, IMDSv2 tokens, credentials)
//! ```
//!
//! Layers, each a folder or file:
//! - [`platform`]: the TUN device and its point-to-point address, and opening a file with another
//!   user's rights; all `unsafe` and OS code.
//! - [`stack`]: smoltcp driven by one task over any packet device (the TUN, or in tests an
//!   in-memory pipe), and the streams it hands out.
//! - [`http`]: hyper connections over any stream, listeners, graceful shutdown.
//! - [`imds`]: the EC2 metadata protocol as plain functions of a request.
//! - [`credentials`]: where the role credentials come from (one small trait).
//! - [`config`] and [`cli`]: settings from flags, a JSON file and machine-derived defaults; every
//!   file a user names is read by `config::named_file`.
//! - [`app`]: wires the layers together for one run.
//! - [`log_limit`]: how much of the log clients can cause (rate limits, bounded client text).
//! - [`doctor`]: `imds-tun --check`, what this machine lacks to run it.

#![deny(unsafe_code)]

pub mod app;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod doctor;
pub mod http;
pub mod imds;
pub mod log_limit;
pub mod platform;
pub mod stack;
