//! The kernel listeners (`--listen`): their addresses, what a client at each must pass (the
//! shared token on a non-loopback address, `--allow-from`), and the connection limit they share
//! (`--max-listen-connections`).

use std::net::SocketAddr;
use std::sync::Arc;

use super::super::layer::Layer;
use super::super::origin::{given, number_of, pick};
use super::super::{ConfigError, ListenSettings, ListenerSettings, defaults};
use super::upstream::ListenerProtection;
use crate::cidr::IpNet;
use crate::http::Access;

/// The `--listen` addresses, which other parts check against (`--no-tun` needs one; an
/// `--upstream` must not be one of them). Parsed at the edge (clap, or the file's `listen`), so
/// only the choice is left.
pub(super) fn addresses(file: &Layer, flags: &Layer) -> Vec<SocketAddr> {
    pick(given(&flags.listen), given(&file.listen))
        .map_or_else(Vec::new, |(addresses, _)| addresses)
}

/// Each listener with what its clients must pass: loopback listeners admit every request,
/// others only those with the shared token (unless the user opted out, loudly).
pub(super) fn resolve_listen(
    file: &Layer,
    flags: &Layer,
    addresses: &[SocketAddr],
    protection: &ListenerProtection,
    allow_from: &[IpNet],
) -> Result<ListenSettings, ConfigError> {
    Ok(ListenSettings {
        listeners: addresses
            .iter()
            .map(|&address| ListenerSettings {
                address,
                access: protection
                    .token_for(address)
                    .map_or(Access::Open, |token| Access::Token(Arc::new(token.clone()))),
                allow_from: allow_from.to_vec(),
            })
            .collect(),
        max_connections: usize::try_from(number_of!(
            file,
            flags,
            max_listen_connections,
            1..=65536,
            "connections",
            defaults::MAX_CONNECTIONS
        )?)
        .unwrap_or(usize::MAX),
    })
}
