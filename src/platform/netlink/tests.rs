use super::*;
use std::net::{Ipv4Addr, SocketAddrV6};

#[test]
fn the_route_request_asks_for_a_host_route_to_the_address() {
    let request = route_request(Ipv4Addr::new(169, 254, 169, 254).into());
    assert_eq!(request.len(), RTMSG_LEN + 8);
    assert_eq!(request[0], AF_INET);
    assert_eq!(request[1], 32);
    assert_eq!(&request[RTMSG_LEN + 4..], &[169, 254, 169, 254]);

    let v6: Ipv6Addr = "fd00:ec2::254".parse().expect("address");
    let request = route_request(v6.into());
    assert_eq!(request.len(), RTMSG_LEN + 20);
    assert_eq!((request[0], request[1]), (AF_INET6, 128));
    assert_eq!(&request[RTMSG_LEN + 4..], &v6.octets());
}

#[test]
fn the_host_route_request_is_a_static_link_route_in_main_with_our_source() {
    let request = host_route_request(
        9,
        Ipv4Addr::new(169, 254, 170, 2).into(),
        Ipv4Addr::new(169, 254, 169, 253).into(),
    );
    // family, /32, no source prefix, tos, main, proto static, scope link, unicast.
    assert_eq!(&request[..8], &[AF_INET, 32, 0, 0, 254, 4, 253, 1]);
    assert_eq!(request.len(), RTMSG_LEN + 3 * 8);
    assert_eq!(
        &request[RTMSG_LEN + 2..RTMSG_LEN + 4],
        &RTA_DST.to_ne_bytes()
    );
    assert_eq!(&request[RTMSG_LEN + 4..RTMSG_LEN + 8], &[169, 254, 170, 2]);
    assert_eq!(
        &request[RTMSG_LEN + 10..RTMSG_LEN + 12],
        &RTA_OIF.to_ne_bytes()
    );
    assert_eq!(
        &request[RTMSG_LEN + 12..RTMSG_LEN + 16],
        &9u32.to_ne_bytes()
    );
    assert_eq!(
        &request[RTMSG_LEN + 18..RTMSG_LEN + 20],
        &7u16.to_ne_bytes()
    );
    assert_eq!(&request[RTMSG_LEN + 20..], &[169, 254, 169, 253]);

    let v6: Ipv6Addr = "fd00:ec2::23".parse().expect("address");
    let source: Ipv6Addr = "fd00:ec2::253".parse().expect("address");
    let request = host_route_request(9, v6.into(), source.into());
    assert_eq!((request[0], request[1]), (AF_INET6, 128));
    assert_eq!(request.len(), RTMSG_LEN + 20 + 8 + 20);
    assert_eq!(&request[request.len() - 16..], &source.octets());
}

#[test]
fn the_peer_address_request_names_local_then_peer_without_dad() {
    let local: Ipv6Addr = "fd00:ec2::253".parse().expect("address");
    let peer: Ipv6Addr = "fd00:ec2::254".parse().expect("address");
    let request = peer_address_request(7, local, peer);
    assert_eq!(request.len(), IFADDRMSG_LEN + 2 * 20 + 8);
    assert_eq!(&request[..4], &[AF_INET6, 128, 0x02, 0]);
    assert_eq!(&request[4..8], &7u32.to_ne_bytes());
    assert_eq!(&request[10..12], &IFA_LOCAL.to_ne_bytes());
    assert_eq!(&request[12..28], &local.octets());
    assert_eq!(&request[30..32], &IFA_ADDRESS.to_ne_bytes());
    assert_eq!(&request[32..48], &peer.octets());
    assert_eq!(&request[50..52], &IFA_FLAGS.to_ne_bytes());
    assert_eq!(&request[52..56], &0x202u32.to_ne_bytes());
}

#[test]
fn a_rule_is_read_with_its_priority_table_destination_and_selectors() {
    // fib_rule_hdr: AF_INET, dst_len 32, src_len 0, tos 0, table 100, res, res,
    // FR_ACT_TO_TBL, flags 0; then FRA_TABLE 100, FRA_PRIORITY 32765, FRA_DST.
    let mut body = vec![AF_INET, 32, 0, 0, 100, 0, 0, 1, 0, 0, 0, 0];
    attribute(&mut body, FRA_TABLE, &100u32.to_ne_bytes());
    attribute(&mut body, FRA_PRIORITY, &32765u32.to_ne_bytes());
    attribute(&mut body, FRA_DST, &[169, 254, 169, 254]);
    let rule = rule_of(&body).expect("a rule");
    assert_eq!(rule.priority, 32765);
    assert_eq!(rule.action, RuleAction::Lookup(100));
    assert_eq!(rule.to, Some((IpAddr::from([169, 254, 169, 254]), 32)));
    assert!(!rule.selective);
    // A firewall mark makes it selective; `prohibit` refuses.
    body[7] = 8;
    attribute(&mut body, 10, &1u32.to_ne_bytes());
    let rule = rule_of(&body).expect("a rule");
    assert_eq!(rule.action, RuleAction::Refuse("prohibit"));
    assert!(rule.selective);
    assert_eq!(rule_of(&body[..5]), None);
}

#[test]
fn the_route_answer_names_its_table() {
    let mut route = vec![0u8; RTMSG_LEN];
    route[4] = 254;
    attribute(&mut route, RTA_TABLE, &100u32.to_ne_bytes());
    attribute(&mut route, RTA_OIF, &7u32.to_ne_bytes());
    assert_eq!(
        route_answer(&route),
        RouteAnswer::Route {
            interface: Some(7),
            table: 100
        }
    );
}

#[test]
fn the_route_path_names_interface_gateway_and_source() {
    let mut route = vec![0u8; RTMSG_LEN];
    route[RTMSG_TYPE_OFFSET] = 1; // unicast
    attribute(&mut route, RTA_TABLE, &254u32.to_ne_bytes());
    attribute(&mut route, RTA_OIF, &3u32.to_ne_bytes());
    attribute(&mut route, 5, &[10, 0, 0, 1]);
    attribute(&mut route, 7, &[10, 0, 0, 4]);
    assert_eq!(
        route_path_of(&route),
        RoutePath {
            interface: Some(3),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1).into()),
            source: Some(Ipv4Addr::new(10, 0, 0, 4).into()),
            local: false,
        }
    );
    // A link route has no gateway; an odd-sized address is no address.
    let mut link = vec![0u8; RTMSG_LEN];
    attribute(&mut link, RTA_OIF, &3u32.to_ne_bytes());
    attribute(&mut link, 7, &[10, 0, 0]);
    let path = route_path_of(&link);
    assert_eq!((path.gateway, path.source), (None, None));
    assert_eq!(route_path_of(&[1, 2]).interface, None);
}

#[test]
fn an_acknowledgement_carries_the_negative_errno() {
    assert_eq!(acknowledgement(&0i32.to_ne_bytes()), Some(0));
    assert_eq!(acknowledgement(&(-17i32).to_ne_bytes()), Some(-17));
    assert_eq!(acknowledgement(&[0, 0]), None);
}

#[test]
fn the_output_interface_is_found_among_other_attributes() {
    let mut route = vec![0u8; RTMSG_LEN];
    // RTA_TABLE (4 bytes of value), then RTA_OIF = 7.
    for (kind, value) in [(15u16, 254u32), (RTA_OIF, 7)] {
        route.extend_from_slice(&8u16.to_ne_bytes());
        route.extend_from_slice(&kind.to_ne_bytes());
        route.extend_from_slice(&value.to_ne_bytes());
    }
    assert_eq!(output_interface_of(&route), Some(7));
}

#[test]
fn truncated_or_lying_replies_are_unknown_not_a_panic() {
    assert_eq!(output_interface_of(&[]), None);
    let mut route = vec![0u8; RTMSG_LEN];
    route.extend_from_slice(&200u16.to_ne_bytes()); // claims more than there is
    route.extend_from_slice(&RTA_OIF.to_ne_bytes());
    assert_eq!(output_interface_of(&route), None);
    assert_eq!(owner_of(&[0; INET_DIAG_MSG_LEN - 1]), None);
    assert_eq!(messages(&[0xff; 3]).count(), 0);
    let mut lying = 1000u32.to_ne_bytes().to_vec();
    lying.extend_from_slice(&[0; 12]);
    assert_eq!(messages(&lying).count(), 0);
}

#[test]
fn a_reply_counts_only_for_the_asked_endpoints_and_carries_state_and_cgroup() {
    let request = sock_diag_request(
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000).into(),
        SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80).into(),
    )
    .expect("one family");
    let mut message = vec![0u8; INET_DIAG_MSG_LEN];
    message[INET_DIAG_MSG_STATE_OFFSET] = tcp_state::ESTABLISHED;
    message[4..40].copy_from_slice(&request[8..44]);
    message[64..68].copy_from_slice(&1000u32.to_ne_bytes());
    message[68..72].copy_from_slice(&77u32.to_ne_bytes());
    assert!(same_endpoints(&request, &message));
    // INET_DIAG_PAD (empty), then INET_DIAG_CGROUP_ID.
    message.extend_from_slice(&4u16.to_ne_bytes());
    message.extend_from_slice(&14u16.to_ne_bytes());
    message.extend_from_slice(&12u16.to_ne_bytes());
    message.extend_from_slice(&INET_DIAG_CGROUP_ID.to_ne_bytes());
    message.extend_from_slice(&4242u64.to_ne_bytes());
    assert_eq!(
        owner_of(&message),
        Some(SocketOwner {
            state: tcp_state::ESTABLISHED,
            uid: 1000,
            inode: 77,
            cgroup_id: Some(4242),
        })
    );
    // A listener's answer: the remote end is all zeros.
    message[24..40].fill(0);
    assert!(!same_endpoints(&request, &message));
    assert!(!same_endpoints(&request, &message[..10]));
    let mut route = vec![0u8; RTMSG_LEN];
    assert!(!is_local_route(&route));
    route[RTMSG_TYPE_OFFSET] = RTN_LOCAL;
    assert!(is_local_route(&route));
    assert!(!is_local_route(&route[..4]));
}

#[test]
fn the_socket_id_is_local_end_first_in_network_order() {
    let request = sock_diag_request(
        SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 253), 40000).into(),
        SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80).into(),
    )
    .expect("one family");
    assert_eq!(request.len(), INET_DIAG_REQ_V2_LEN);
    assert_eq!(&request[8..10], &40000u16.to_be_bytes());
    assert_eq!(&request[10..12], &80u16.to_be_bytes());
    assert_eq!(&request[12..16], &[169, 254, 169, 253]);
    assert_eq!(&request[28..32], &[169, 254, 169, 254]);
    assert_eq!(&request[48..56], &[0xff; 8]);
}

#[test]
fn an_ipv6_socket_id_carries_the_whole_addresses_and_mixed_families_ask_nothing() {
    let local: Ipv6Addr = "fd00:ec2::253".parse().expect("address");
    let remote: Ipv6Addr = "fd00:ec2::254".parse().expect("address");
    let request = sock_diag_request(
        SocketAddrV6::new(local, 40000, 0, 0).into(),
        SocketAddrV6::new(remote, 80, 0, 0).into(),
    )
    .expect("one family");
    assert_eq!(request.len(), INET_DIAG_REQ_V2_LEN);
    assert_eq!(request[0], AF_INET6);
    assert_eq!(&request[12..28], &local.octets());
    assert_eq!(&request[28..44], &remote.octets());
    let mixed = sock_diag_request(
        SocketAddrV6::new(local, 40000, 0, 0).into(),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80).into(),
    );
    assert_eq!(mixed, None);
}

#[test]
fn the_kernel_answers_where_loopback_goes_and_who_owns_a_socket() {
    // Runs unprivileged: both questions are open to every user.
    let Ok(Some(lo)) = route_output_interface(Ipv4Addr::LOCALHOST.into()) else {
        panic!("the kernel has no route to 127.0.0.1");
    };
    assert_eq!(
        Some(lo),
        nix::net::if_::if_nametoindex("lo").ok(),
        "127.0.0.1 goes out of lo"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("address");
    let client = std::net::TcpStream::connect(server).expect("connect");
    let (std::net::SocketAddr::V4(local), std::net::SocketAddr::V4(remote)) =
        (client.local_addr().expect("local"), server)
    else {
        panic!("IPv4 expected");
    };
    let mut owners = SocketOwners::open().expect("sock_diag");
    let owner = owners
        .owner(local, remote)
        .expect("ask")
        .expect("the client socket exists");
    assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
    assert_ne!(owner.inode, 0);
    assert_eq!(owner.state, tcp_state::ESTABLISHED);
    let gone = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
    assert_eq!(owners.owner(gone, remote).expect("ask"), None);
    // A listener on the asked port is what the kernel falls back to: not an answer.
    let port = listener.local_addr().expect("address").port();
    let listening = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    assert_eq!(owners.owner(listening, gone).expect("ask"), None);

    let mut ours = LocalAddresses::open().expect("route netlink");
    assert!(ours.contains(Ipv4Addr::LOCALHOST.into()).expect("ask"));
    assert!(
        ours.contains(Ipv4Addr::new(127, 0, 0, 9).into())
            .expect("ask")
    );
    assert!(
        !ours
            .contains(Ipv4Addr::new(192, 0, 2, 1).into())
            .unwrap_or(false)
    );

    // The same over IPv6, where the host has it (a kernel without IPv6 has no ::1).
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        return;
    };
    let server = listener.local_addr().expect("address");
    let client = std::net::TcpStream::connect(server).expect("connect");
    let owner = owners
        .owner_of(client.local_addr().expect("local"), server)
        .expect("ask")
        .expect("the IPv6 client socket exists");
    assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
}
