//! What a packet read from the TUN is, before smoltcp sees it: the endpoint's packet filter.
//!
//! Only IPv4 packets to an address served (the metadata address, and the container endpoints'
//! of `--ecs` and `--eks-pod-identity`) carrying TCP or ICMP, and with `--ipv6` IPv6 packets to
//! `fd00:ec2::254` (or `fd00:ec2::23`) carrying TCP or ICMPv6 right after the fixed header, reach
//! smoltcp.
//! Everything else (UDP, other protocols, IPv4 fragments, IPv6 extension headers, truncated or
//! malformed headers) is dropped here without a reply. A TCP segment is classified by what the
//! endpoint must do before smoltcp processes it: a SYN to our port may need a socket created
//! first, a segment with data marks its connection active. Plus the `--allow-from` rule a new
//! connection must pass.
//!
//! Pure functions of the packet bytes and the configuration; no connection state.

use super::StackConfig;
use super::table::Flow;
use smoltcp::wire::{IpAddress, IpEndpoint, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};
use std::net::IpAddr;

/// What a packet is, as far as the endpoint cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ingress {
    /// Not for us, or not something we serve: dropped without a reply.
    Drop,
    /// ICMP or ICMPv6 to us: smoltcp answers echo requests.
    Icmp,
    /// A SYN (without ACK, RST or FIN) to our port: from this client endpoint, to this address.
    NewConnection(Flow),
    /// A segment carrying data from a client.
    Data(Flow),
    /// Any other TCP segment (an ACK, a FIN, a RST, a SYN to another port).
    Segment(Flow),
}

/// Classifies one packet read from the TUN.
#[inline]
pub(crate) fn classify(config: &StackConfig, packet: &[u8]) -> Ingress {
    match packet.first().map(|byte| byte >> 4) {
        Some(4) => classify_v4(config, packet),
        Some(6) => classify_v6(config, packet),
        _ => Ingress::Drop,
    }
}

fn classify_v4(config: &StackConfig, packet: &[u8]) -> Ingress {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return Ingress::Drop;
    };
    let destination = ip.dst_addr();
    if !config.serves(IpAddress::Ipv4(destination)) {
        return Ingress::Drop;
    }
    match ip.next_header() {
        IpProtocol::Icmp => Ingress::Icmp,
        IpProtocol::Tcp => {
            // Fragments cannot be inspected; smoltcp is built without reassembly and drops them.
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Ingress::Drop;
            }
            classify_tcp(
                config,
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(destination),
                ip.payload(),
            )
        }
        _ => Ingress::Drop,
    }
}

/// IPv6 only when served, and only TCP or ICMPv6 right after the fixed header: extension
/// headers (hop-by-hop options, fragments, routing) are dropped, as IPv4 fragments are.
fn classify_v6(config: &StackConfig, packet: &[u8]) -> Ingress {
    if config.address_v6.is_none() {
        return Ingress::Drop;
    }
    let Ok(ip) = Ipv6Packet::new_checked(packet) else {
        return Ingress::Drop;
    };
    let destination = ip.dst_addr();
    if !config.serves(IpAddress::Ipv6(destination)) {
        return Ingress::Drop;
    }
    match ip.next_header() {
        IpProtocol::Icmpv6 => Ingress::Icmp,
        IpProtocol::Tcp => classify_tcp(
            config,
            IpAddress::Ipv6(ip.src_addr()),
            IpAddress::Ipv6(destination),
            ip.payload(),
        ),
        _ => Ingress::Drop,
    }
}

fn classify_tcp(
    config: &StackConfig,
    source: IpAddress,
    destination: IpAddress,
    segment: &[u8],
) -> Ingress {
    let Ok(tcp) = TcpPacket::new_checked(segment) else {
        return Ingress::Drop;
    };
    let peer = Flow {
        peer: IpEndpoint::new(source, tcp.src_port()),
        local: destination,
    };
    let opens_connection = tcp.syn() && !tcp.ack() && !tcp.rst() && !tcp.fin();
    if opens_connection && tcp.dst_port() == config.port {
        Ingress::NewConnection(peer)
    } else if !tcp.payload().is_empty() {
        Ingress::Data(peer)
    } else {
        Ingress::Segment(peer)
    }
}

/// Whether `--allow-from` lets `peer` connect (an empty rule allows everyone).
#[inline]
pub(crate) fn allowed(config: &StackConfig, peer: IpEndpoint) -> bool {
    crate::cidr::allow_from_admits(&config.allow_from, IpAddr::from(peer.addr))
}
