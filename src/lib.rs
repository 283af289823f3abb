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
//!          with --ipv6 also fd00:ec2::254/128 dev imds0 (p2p peer, src fd00:ec2::253)
//!     │ IP packets
//!     ▼
//!  platform ── TUN fd ──▶ stack::runtime (one task) ── stack::Endpoint (smoltcp, sans-IO)
//!  (a stack::PacketIo; in       │ one socket per SYN; a stream once established
//!   tests a PacketPipe)         │ and the client has sent its first byte
//!                               ▼
//!                         stack::TcpStream (AsyncRead + AsyncWrite, smoltcp wakers)
//!                               │
//!  --listen ADDR:PORT ─▶ tokio::net::TcpStream ─┐   (runtime: the accept loops of both)
//!                               ▼               ▼
//!                         http::Server::serve (hyper HTTP/1.1, one task per connection)
//!                               │ the first http::MetadataService that claims the request
//!                               ▼
//!                         clouds::gce (/computeMetadata/), clouds::azure (/metadata/),
//!                         clouds::ec2 (everything else: tree, IMDSv2 tokens, credentials)
//!                         or, with --upstream, http::Upstream (forwarded)
//! ```
//!
//! Layers, each a folder or file, from the bottom up. Each layer is built from settings of its
//! own (`platform::TunRequest`, `stack::StackConfig`, `http::Limits`, `clouds::ec2::Instance`
//! and `clouds::ec2::TokenPolicy`, `credentials::Settings`) and imports only layers below it;
//! `config` produces exactly those from flags and the config file, and `runtime` wires them:
//! - [`platform`]: the TUN device and its point-to-point address, the claim lock, giving up
//!   root, netlink questions, host facts, opening a file with another user's rights; all
//!   `unsafe` and OS code.
//! - [`cidr`], [`log_limit`], [`logging`], [`output`], [`query`] and [`secret`]: leaf helpers
//!   (address blocks; how much of the log clients can cause; the log's format, text or JSON; a
//!   command's output and error lines written without a panic on a closed pipe or a full disk;
//!   a request's query string; a value `Debug` never shows).
//! - [`snapshot`]: the recorded metadata service `imds-tun record` writes and `--replay`
//!   serves: its versioned JSON schema, bounds and errors, and cloud-init's `instance-data.json`
//!   read as one; a leaf.
//! - [`metrics`]: what a run counts for Prometheus (`--metrics`) and its text exposition; a
//!   leaf, so every layer that counts may be handed its [`metrics::Metrics`].
//! - [`attribution`]: who is behind a connection (socket owner, process, address), for the log
//!   line every credentials read leaves and for sharing the connection limit among callers.
//! - [`callers`]: the callers report (`imds-tun ctl callers`): who called, how often without
//!   a session token (IMDSv1), bounded; fed by `http` with what [`attribution`] found.
//! - [`stack`]: a sans-IO TCP endpoint over smoltcp, and the runtime that drives it with one
//!   task over any packet device (the TUN, or in tests an in-memory pipe) and hands out streams.
//! - [`credentials`]: where the role credentials come from (one small trait).
//! - [`token_command`]: running the user's `gcloud`/`az` for a token, bounded, without a shell.
//! - [`http`]: hyper connections over any stream, the Host guard, the listener token, upstream
//!   forwarding, graceful shutdown, and which replies go with the token hop limit (the stream
//!   below applies it); and the seam it serves through, [`http::MetadataService`] with one
//!   [`http::Reply`], without knowing any cloud.
//! - [`clouds`]: the metadata protocols behind that seam, one folder each ([`clouds::ec2`],
//!   [`clouds::gce`], [`clouds::azure`]), their rules plain functions of a request, and the
//!   token cache GCE and Azure share.
//! - [`container_env`]: `imds-tun env`, the `export` lines for the ECS and EKS Pod Identity
//!   endpoints.
//! - [`record`]: `imds-tun record`, a plain HTTP client that crawls a metadata service (EC2,
//!   GCE, Azure) into a [`snapshot`], bounded and redacted; it serves nothing.
//! - [`config`] and [`cli`]: settings from flags, a JSON file and machine-derived defaults,
//!   resolved into each layer's own settings; every file a user names is read by
//!   `config::named_file`.
//! - [`control`]: `imds-tun ctl`, the control socket that changes a running imds-tun's
//!   interruptions, faults and credential source.
//! - [`runtime`]: one running imds-tun as a library ([`runtime::Runtime::start`] over a packet
//!   device and bound listeners, and the services a run's settings describe): what the binary
//!   and the in-memory tests both start.
//! - [`doctor`]: `imds-tun --check`, what this machine lacks to run it, decided as a start would.
//! - [`app`]: the process: the command line, then what needs root in the order it must happen
//!   (bind, claim, the control channel, giving root up), signals, and one exit code per failure.

#![deny(unsafe_code)]

pub mod app;
pub mod attribution;
pub mod callers;
pub mod cidr;
pub mod cli;
pub mod clouds;
pub mod config;
pub mod container_env;
pub mod control;
pub mod credentials;
pub mod doctor;
pub mod exec;
pub mod http;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod platform;
pub mod query;
pub mod record;
pub mod runtime;
pub mod secret;
pub mod snapshot;
pub mod stack;
pub mod token_command;

// The test suite's one temporary-directory type, the same file the integration tests use.
#[cfg(test)]
#[path = "../tests/common/temp_dir.rs"]
mod temp_dir;
