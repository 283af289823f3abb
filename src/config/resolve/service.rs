//! The service: the TUN, the kernel listeners, the connection limit, the shutdown grace, the
//! token policy and the fake credentials' lifetime.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::layer::{Imdsv2, Layer};
use super::super::origin::{given, label, number, pick, text};
use super::super::{ConfigError, TokenPolicy, TunSettings};
use super::super::{defaults, validate};

/// The service half of [`Settings`](crate::config::Settings), resolved before the instance.
pub(super) struct Service {
    pub(super) tun: Option<TunSettings>,
    pub(super) listen: Vec<SocketAddr>,
    pub(super) max_connections: usize,
    pub(super) hop_limit: u8,
    pub(super) shutdown_grace: Duration,
    pub(super) imdsv2: TokenPolicy,
    pub(super) credentials_lifetime: Duration,
}

/// Everything but the instance: listeners, TUN, limits, token mode.
pub(super) fn resolve_service(file: &Layer, flags: &Layer) -> Result<Service, ConfigError> {
    // Parsed at the edge (clap, or the file's `listen`), so only the choice is left.
    let listen = pick(given(&flags.listen), given(&file.listen))
        .map_or_else(Vec::new, |(addresses, _)| addresses);
    let no_tun = pick(flags.no_tun, file.no_tun);
    if let Some((true, origin)) = no_tun
        && listen.is_empty()
    {
        return Err(ConfigError(format!(
            "{}: nothing would be served; give at least one --listen ADDR:PORT",
            label(origin, "no_tun")
        )));
    }
    let tun_name = text(
        pick(flags.tun_name.clone(), file.tun_name.clone()),
        "tun_name",
        validate::tun_name,
    )?
    .map_or_else(|| defaults::TUN_NAME.to_owned(), |(name, _)| name);
    // 576 is the smallest MTU every IPv4 host must accept; above 65535 an IP packet cannot go.
    let mtu = number(
        pick(flags.mtu, file.mtu),
        "mtu",
        576..=65535,
        "bytes",
        defaults::MTU,
    )?;
    let max_connections = number(
        pick(flags.max_connections, file.max_connections),
        "max_connections",
        1..=65536,
        "connections",
        defaults::MAX_CONNECTIONS,
    )?;
    // EC2 accepts 1-64 for HttpPutResponseHopLimit.
    let hop_limit = number(
        pick(flags.hop_limit, file.hop_limit),
        "hop_limit",
        1..=64,
        "hops",
        u64::from(crate::http::Limits::DEFAULT_PUT_REPLY_HOP_LIMIT),
    )?;
    let shutdown_grace = number(
        pick(flags.shutdown_grace, file.shutdown_grace),
        "shutdown_grace",
        0..=3600,
        "seconds",
        defaults::SHUTDOWN_GRACE_SECONDS,
    )?;
    // At least 30 minutes, so credentials outlive the 15-minute rotation margin; at most 12
    // hours, the longest an instance-profile session lasts.
    let credentials_lifetime = number(
        pick(flags.credentials_lifetime, file.credentials_lifetime),
        "credentials_lifetime",
        1800..=43200,
        "seconds",
        defaults::CREDENTIALS_LIFETIME_SECONDS,
    )?;
    let imdsv2 = match pick(flags.imdsv2, file.imdsv2) {
        None | Some((Imdsv2::Optional, _)) => TokenPolicy::Optional,
        Some((Imdsv2::Required, _)) => TokenPolicy::Required,
    };

    let tun_disabled = no_tun.is_some_and(|(disabled, _)| disabled);
    let ipv6 = match pick(flags.ipv6, file.ipv6) {
        Some((true, origin)) if tun_disabled => {
            return Err(ConfigError(format!(
                "{}: fd00:ec2::254 is served through the TUN, and --no-tun has none; drop one \
                 of them",
                label(origin, "ipv6")
            )));
        }
        Some((true, origin)) if mtu < u64::from(crate::platform::IPV6_MIN_MTU) => {
            return Err(ConfigError(format!(
                "{}: IPv6 needs an MTU of at least {} (the kernel turns IPv6 off on smaller \
                 links); raise --mtu",
                label(origin, "ipv6"),
                crate::platform::IPV6_MIN_MTU
            )));
        }
        Some((enabled, _)) => enabled,
        None => false,
    };
    Ok(Service {
        tun: (!tun_disabled).then(|| TunSettings {
            name: tun_name,
            mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
            ipv6,
        }),
        listen,
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        hop_limit: u8::try_from(hop_limit).unwrap_or(u8::MAX),
        shutdown_grace: Duration::from_secs(shutdown_grace),
        imdsv2,
        credentials_lifetime: Duration::from_secs(credentials_lifetime),
    })
}
