//! Settings for one run: flags, an optional JSON file and machine-derived defaults, resolved once.
//!
//! CONTRACT (owned by the config/imds helper; `app` relies on these names):
//! `Settings`, `TunSettings`, `Imdsv2Mode`, `ConfigError` as below.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything a run needs, fully resolved and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The TUN side; `None` with `--no-tun`.
    pub tun: Option<TunSettings>,
    /// Kernel TCP listeners serving the same service (`--listen`, repeatable).
    pub listen: Vec<SocketAddr>,
    /// Most concurrent TCP connections through the TUN.
    pub max_connections: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// IMDSv2 token policy.
    pub imdsv2: Imdsv2Mode,
}

/// The TUN device to create.
#[derive(Debug, Clone)]
pub struct TunSettings {
    /// Interface name; a `%d` lets the kernel pick a free number.
    pub name: String,
    pub mtu: u16,
}

/// Whether metadata requests need an IMDSv2 session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imdsv2Mode {
    Optional,
    Required,
}

/// A setting that could not be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
