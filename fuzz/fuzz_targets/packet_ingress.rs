//! Arbitrary bytes into the TUN ingress: `Endpoint::receive` and `Endpoint::poll` must never
//! panic, and the endpoint must stay bounded whatever arrives.
//!
//! Input: a sequence of packets, each `[flags, len_hi, len_lo, bytes...]`. Flag bit 0 asks the
//! target to repair the IPv4 and TCP checksums first (for IPv6, the TCP one), so the fuzzer
//! reaches the TCP state machine instead of stopping at checksum verification; bit 1 advances
//! the clock by a second. The endpoint serves both addresses, as with `--ipv6`. A SYN held at
//! the connection limit is answered at once, as the runtime would, with a caller made from the
//! client's port (a user for even ports, the address for odd ones), so the eviction rules see
//! several callers.

#![no_main]

use imds_tun::attribution::Caller;
use imds_tun::stack::{Endpoint, StackConfig};
use libfuzzer_sys::fuzz_target;
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};
use std::net::{Ipv4Addr, Ipv6Addr};

const MAX_CONNECTIONS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let address = Ipv4Addr::new(169, 254, 169, 254);
    let mut config = StackConfig::new(address, 80, 1500, MAX_CONNECTIONS);
    config.address_v6 = Some(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254));
    let mut stack = Endpoint::new(config, Instant::ZERO);
    let mut now = Instant::ZERO;
    let mut rest = data;
    while rest.len() >= 3 {
        let flags = rest[0];
        let length = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        let mut packet = rest[3..3 + length].to_vec();
        rest = &rest[3 + length..];
        if flags & 1 != 0 {
            repair_checksums(&mut packet);
        }
        if flags & 2 != 0 {
            now += smoltcp::time::Duration::from_secs(1);
        }
        stack.receive(packet, now);
        if let Some(questions) = stack.caller_questions() {
            let answers = questions.answer(|client, _| match client.port() {
                port if port % 2 == 0 => Caller::User(u32::from(port % 8)),
                _ => Caller::Address(client.ip()),
            });
            stack.answer_callers(answers, now);
        }
        stack.poll(now);
        stack.transmit_queue().clear();
        // Eviction may let closing connections exceed the limit briefly, never without bound.
        assert!(stack.connection_count() <= 4 * MAX_CONNECTIONS);
    }
});

fn repair_checksums(packet: &mut [u8]) {
    if packet.first().is_some_and(|byte| byte >> 4 == 6) {
        repair_ipv6_checksum(packet);
        return;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut *packet) else {
        return;
    };
    ip.fill_checksum();
    let (source, destination) = (ip.src_addr(), ip.dst_addr());
    if ip.next_header() == IpProtocol::Tcp
        && let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut())
    {
        tcp.fill_checksum(&IpAddress::Ipv4(source), &IpAddress::Ipv4(destination));
    }
}

fn repair_ipv6_checksum(packet: &mut [u8]) {
    let Ok(mut ip) = Ipv6Packet::new_checked(&mut *packet) else {
        return;
    };
    let (source, destination) = (ip.src_addr(), ip.dst_addr());
    if ip.next_header() == IpProtocol::Tcp
        && let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut())
    {
        tcp.fill_checksum(&IpAddress::Ipv6(source), &IpAddress::Ipv6(destination));
    }
}
