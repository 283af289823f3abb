//! `imds-tun ctl`: changing a running imds-tun from outside: its interruptions, its faults and
//! the credential source's outage, each a handle the service shares (`server::Targets`).
//!
//! One abstract Unix socket per network namespace (`@imds-tun/control`, Linux): it needs no
//! file, so nothing is left behind, and it vanishes with the process, even on SIGKILL. The
//! protocol is one JSON request line and one JSON response line per connection
//! ([`protocol`]); [`server`] is the service's side (who may, bounds, the background scenario),
//! [`client`] the command's (which checks who holds the socket before it says anything);
//! [`clouds`] what a command does to the GCE and Azure events.

pub mod client;
pub mod clouds;
pub mod protocol;
pub mod server;
