//! The TUN side of a run: the device `platform` claims ([`TunRequest`]: `--tun-name`, `--mtu`,
//! `--ipv6`, the container endpoints' addresses of `--ecs` and `--eks-pod-identity`, its queue) and the TCP endpoint `stack` runs on it ([`StackConfig`]:
//! `--max-connections`, `--allow-from`); `None` with `--no-tun`.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::layer::Layer;
use super::super::origin::{label, number_of, pick, text};
use super::super::{ConfigError, TunSide};
use super::super::{defaults, validate};
use crate::cidr::IpNet;
use crate::platform::{
    self, ExtraAddress, IPV6_MIN_MTU, METADATA_ADDRESS, METADATA_ADDRESS_V6, TunRequest,
};
use crate::stack::StackConfig;

/// `listen` are the kernel listeners (`--no-tun` needs one); `allow_from` and the
/// `header_timeout` are shared with the other paths a client arrives by.
pub(super) fn resolve_tun(
    file: &Layer,
    flags: &Layer,
    listen: &[SocketAddr],
    allow_from: &[IpNet],
    header_timeout: Duration,
) -> Result<Option<TunSide>, ConfigError> {
    let no_tun = pick(flags.no_tun, file.no_tun);
    if let Some((true, origin)) = no_tun
        && listen.is_empty()
    {
        return Err(ConfigError(format!(
            "{}: nothing would be served; give at least one --listen ADDR:PORT",
            label(origin, "no_tun")
        )));
    }
    // Every value is validated with --no-tun too: a bad setting is reported, not ignored.
    let name = text(
        pick(flags.tun_name.clone(), file.tun_name.clone()),
        "tun_name",
        validate::tun_name,
    )?
    .map_or_else(|| defaults::TUN_NAME.to_owned(), |(name, _)| name);
    // 576 is the smallest MTU every IPv4 host must accept; above 65535 an IP packet cannot go.
    let mtu = number_of!(file, flags, mtu, 576..=65535, "bytes", defaults::MTU)?;
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    let max_connections = number_of!(
        file,
        flags,
        max_connections,
        1..=65536,
        "connections",
        defaults::MAX_CONNECTIONS
    )?;
    let max_connections = usize::try_from(max_connections).unwrap_or(usize::MAX);
    let tun_disabled = no_tun.is_some_and(|(disabled, _)| disabled);
    let ipv6 = match pick(flags.ipv6, file.ipv6) {
        Some((true, origin)) if tun_disabled => {
            return Err(ConfigError(format!(
                "{}: fd00:ec2::254 is served through the TUN, and --no-tun has none; drop one \
                 of them",
                label(origin, "ipv6")
            )));
        }
        Some((true, origin)) if mtu < IPV6_MIN_MTU => {
            return Err(ConfigError(format!(
                "{}: IPv6 needs an MTU of at least {IPV6_MIN_MTU} (the kernel turns IPv6 off on \
                 smaller links); raise --mtu",
                label(origin, "ipv6"),
            )));
        }
        Some((enabled, _)) => enabled,
        None => false,
    };
    // The container endpoints are addresses the TUN claims: without one there is nothing to
    // claim them with, which is said rather than silently ignored.
    let wanted =
        |flag: Option<bool>, file: Option<bool>, key: &str, address: &str| match pick(flag, file) {
            Some((true, origin)) if tun_disabled => Err(ConfigError(format!(
                "{}: {address} is claimed through the TUN, and --no-tun has none; drop one of them",
                label(origin, key)
            ))),
            Some((enabled, _)) => Ok(enabled),
            None => Ok(false),
        };
    let ecs = wanted(flags.ecs, file.ecs, "ecs", "169.254.170.2")?;
    let eks_pod_identity = wanted(
        flags.eks_pod_identity,
        file.eks_pod_identity,
        "eks_pod_identity",
        "169.254.170.23",
    )?;
    // 0 stands for "none given": the range starts at 1.
    let packet_budget = number_of!(
        file,
        flags,
        packet_budget,
        1..=u64::from(crate::stack::endpoint::budget::MAX_PACKETS_PER_SECOND),
        "packets a second",
        0
    )?;
    let packet_budget = u32::try_from(packet_budget)
        .ok()
        .filter(|budget| *budget > 0);
    if let Some((_, origin)) =
        pick(flags.packet_budget, file.packet_budget).filter(|_| tun_disabled)
    {
        return Err(ConfigError(format!(
            "{}: the budget drops packets in the TUN's stack, and --no-tun has none; drop one \
             of them",
            label(origin, "packet_budget")
        )));
    }
    if tun_disabled {
        return Ok(None);
    }
    let extra = ExtraAddress::requested(ecs, eks_pod_identity, ipv6);
    let mut stack = StackConfig::new(METADATA_ADDRESS, 80, usize::from(mtu), max_connections);
    stack.address_v6 = ipv6.then_some(METADATA_ADDRESS_V6);
    stack.extra_addresses = extra.iter().map(|extra| extra.address()).collect();
    stack.allow_from = allow_from.to_vec();
    stack.packet_budget = packet_budget;
    // A client that connects and says nothing is held to the same bound as one that stops
    // half-way through its headers (docs/hardening.md): until its first byte it is the stack's
    // to reset, after it hyper's header timeout runs.
    stack.first_data_timeout = header_timeout.into();
    Ok(Some(TunSide {
        device: TunRequest {
            name,
            mtu,
            ipv6,
            extra,
            queue_packets: platform::transmit_queue_packets(max_connections),
            // The kernel's answer, asked at start (`crate::app`), before the claim.
            real_route: None,
        },
        stack,
    }))
}
