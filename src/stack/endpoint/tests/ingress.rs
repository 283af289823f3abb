//! The packet filter: what reaches smoltcp, what is dropped without a reply, what is reset.

use super::*;
use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet};

#[test]
fn ipv6_is_dropped_unless_it_is_served() {
    let mut stack = stack(8);
    let mut client = Client::new_v6();
    let handle = client.connect(46001, 80);
    assert!(shuttle(&mut stack, &mut client, Instant::ZERO).is_empty());
    assert_eq!(
        client.socket(handle).state(),
        tcp::State::SynSent,
        "no answer, not even a RST"
    );
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn icmpv6_echo_is_answered_and_extension_headers_are_dropped() {
    let mut stack = dual_stack(8);
    let mut icmp = vec![0u8; 8 + 4];
    let mut echo = Icmpv6Packet::new_unchecked(&mut icmp);
    echo.set_msg_type(Icmpv6Message::EchoRequest);
    echo.set_msg_code(0);
    echo.set_echo_ident(0x1234);
    echo.set_echo_seq_no(1);
    echo.payload_mut().copy_from_slice(b"ping");
    echo.fill_checksum(&CLIENT_V6, &SERVER_V6);
    stack.receive(ipv6(IpProtocol::Icmpv6, &icmp), Instant::ZERO);
    stack.poll(Instant::ZERO);
    let replies: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
    assert_eq!(replies.len(), 1);
    let reply = Ipv6Packet::new_checked(&replies[0]).expect("ipv6");
    assert_eq!(reply.dst_addr(), CLIENT_V6);
    let reply = Icmpv6Packet::new_checked(reply.payload()).expect("icmpv6");
    assert_eq!(reply.msg_type(), Icmpv6Message::EchoReply);

    // Hop-by-hop options in front of the same echo: never reaches smoltcp.
    let mut options = vec![u8::from(IpProtocol::Icmpv6), 0, 1, 4, 0, 0, 0, 0];
    options.extend_from_slice(&icmp);
    stack.receive(ipv6(IpProtocol::HopByHop, &options), Instant::ZERO);
    stack.poll(Instant::ZERO);
    assert!(stack.transmit_queue().is_empty());
}

#[test]
fn other_ports_are_reset() {
    let mut stack = stack(8);
    let mut client = Client::new();
    let handle = client.connect(40004, 443);
    let established = shuttle(&mut stack, &mut client, Instant::ZERO);
    assert!(established.is_empty());
    assert_eq!(client.socket(handle).state(), tcp::State::Closed);
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn clients_outside_allow_from_are_reset() {
    let mut config = StackConfig::new(SERVER, 80, 1500, 8);
    config.allow_from = vec![crate::cidr::parse("10.0.0.0/8").expect("cidr")];
    let mut stack = Server::by_address(config);
    let mut client = Client::new();
    let handle = client.connect(42000, 80);
    assert!(shuttle(&mut stack, &mut client, Instant::ZERO).is_empty());
    assert_eq!(client.socket(handle).state(), tcp::State::Closed);
    assert_eq!(stack.connection_count(), 0);

    let mut config = StackConfig::new(SERVER, 80, 1500, 8);
    config.allow_from = vec![crate::cidr::parse("169.254.169.253/32").expect("cidr")];
    let mut stack = Server::by_address(config);
    client.connect(42001, 80);
    assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 1);
}

#[test]
fn syn_with_a_bad_checksum_leaves_no_socket() {
    let mut stack = stack(8);
    let mut client = Client::new();
    client.connect(40007, 80);
    let mut syn = client.outgoing(Instant::ZERO).remove(0);
    let last = syn.len() - 1;
    syn[last] ^= 0xff;
    stack.receive(syn, Instant::ZERO);
    stack.poll(Instant::ZERO);
    assert_eq!(stack.connection_count(), 0);
    assert!(stack.transmit_queue().is_empty());
    assert_live_count_true(&stack);
}

#[test]
fn icmp_echo_is_answered() {
    let mut stack = stack(8);
    let mut icmp = vec![0u8; 8 + 4];
    let mut echo = Icmpv4Packet::new_unchecked(&mut icmp);
    echo.set_msg_type(Icmpv4Message::EchoRequest);
    echo.set_msg_code(0);
    echo.set_echo_ident(0x1234);
    echo.set_echo_seq_no(1);
    echo.data_mut().copy_from_slice(b"ping");
    echo.fill_checksum();
    stack.receive(ipv4(IpProtocol::Icmp, &icmp), Instant::ZERO);
    stack.poll(Instant::ZERO);
    let replies: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
    assert_eq!(replies.len(), 1);
    let reply = Ipv4Packet::new_checked(&replies[0]).expect("ipv4");
    assert_eq!(reply.dst_addr(), CLIENT);
    let reply = Icmpv4Packet::new_checked(reply.payload()).expect("icmp");
    assert_eq!(reply.msg_type(), Icmpv4Message::EchoReply);
}

#[test]
fn udp_and_other_protocols_are_dropped_without_a_reply() {
    let mut stack = stack(8);
    let udp = [
        0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'd', b'n', b's', b'?',
    ];
    stack.receive(ipv4(IpProtocol::Udp, &udp), Instant::ZERO);
    stack.receive(ipv4(IpProtocol::Unknown(253), b"x"), Instant::ZERO);
    stack.poll(Instant::ZERO);
    assert!(stack.transmit_queue().is_empty());
}

#[test]
fn garbage_and_truncated_packets_are_dropped_without_panic() {
    let mut stack = stack(8);
    let mut client = Client::new();
    client.connect(40008, 80);
    let syn = client.outgoing(Instant::ZERO).remove(0);
    for cut in 0..syn.len() {
        stack.receive(syn[..cut].to_vec(), Instant::ZERO);
    }
    let mut state = 0x9e37_79b9_u32;
    for length in [0usize, 1, 19, 20, 21, 40, 60, 576, 1500, 9000] {
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        stack.receive(bytes, Instant::ZERO);
    }
    stack.poll(Instant::ZERO);
    assert_eq!(stack.connection_count(), 0);
}
