//! The container endpoints' addresses (`--ecs`, `--eks-pod-identity`): served beside the
//! metadata address, answered from the address dialled, dropped when not served.

use super::*;

const ECS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
const EKS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
const EKS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

fn with_container_endpoints(max_connections: usize) -> Server {
    let mut config = StackConfig::new(SERVER, 80, 1500, max_connections);
    config.address_v6 = Some(SERVER_V6);
    config.extra_addresses = vec![ECS.into(), EKS.into(), EKS_V6.into()];
    Server::by_address(config)
}

#[test]
fn each_container_endpoint_is_served_and_answers_from_the_address_dialled() {
    let mut stack = with_container_endpoints(8);
    let cases = [
        (IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(ECS)),
        (IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(EKS)),
        (IpAddress::Ipv6(CLIENT_V6), IpAddress::Ipv6(EKS_V6)),
        (IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(SERVER)),
    ];
    for (port, (client_address, server)) in (47000..).zip(cases) {
        let mut client = Client::at(client_address, server);
        client.connect(port, 80);
        let established = shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(established.len(), 1, "{server}");
        assert_eq!(
            established[0].local,
            SocketAddr::new(IpAddr::from(server), 80),
            "the stream knows which address was dialled"
        );
        let socket = stack.socket(established[0].id).expect("socket");
        socket.send_slice(b"hello").expect("send");
        stack.poll(Instant::ZERO);
        let replies: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
        let source = match server {
            IpAddress::Ipv4(_) => IpAddress::Ipv4(
                Ipv4Packet::new_checked(&replies[0])
                    .expect("ipv4")
                    .src_addr(),
            ),
            IpAddress::Ipv6(_) => IpAddress::Ipv6(
                Ipv6Packet::new_checked(&replies[0])
                    .expect("ipv6")
                    .src_addr(),
            ),
        };
        assert_eq!(source, server, "answered from the address it was asked on");
    }
    assert_eq!(stack.connection_count(), 4, "one table, one limit for all");
}

#[test]
fn one_client_port_to_two_addresses_is_two_connections() {
    let mut stack = with_container_endpoints(8);
    let mut client = Client::at(IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(ECS));
    client.connect(47100, 80);
    client.server = IpAddress::Ipv4(EKS);
    client.connect(47100, 80);
    let established = shuttle(&mut stack, &mut client, Instant::ZERO);
    let mut locals: Vec<SocketAddr> = established.iter().map(|e| e.local).collect();
    locals.sort();
    assert_eq!(
        locals,
        vec![
            SocketAddr::new(ECS.into(), 80),
            SocketAddr::new(EKS.into(), 80)
        ]
    );
}

#[test]
fn a_container_endpoint_not_asked_for_is_dropped_without_a_reply() {
    let mut stack = dual_stack(8);
    for (client_address, server) in [
        (IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(ECS)),
        (IpAddress::Ipv6(CLIENT_V6), IpAddress::Ipv6(EKS_V6)),
    ] {
        let mut client = Client::at(client_address, server);
        let handle = client.connect(47200, 80);
        assert!(shuttle(&mut stack, &mut client, Instant::ZERO).is_empty());
        assert_eq!(
            client.socket(handle).state(),
            tcp::State::SynSent,
            "no answer, not even a RST"
        );
    }
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn an_ipv6_container_endpoint_needs_the_ipv6_pair() {
    let mut config = StackConfig::new(SERVER, 80, 1500, 8);
    config.extra_addresses = vec![EKS_V6.into()];
    assert!(!config.serves(IpAddress::Ipv6(EKS_V6)));
    config.address_v6 = Some(SERVER_V6);
    assert!(config.serves(IpAddress::Ipv6(EKS_V6)));
    assert!(!config.serves(IpAddress::Ipv4(ECS)));
}

#[test]
fn at_the_limit_the_container_endpoints_share_it_with_the_metadata_address() {
    let mut stack = with_container_endpoints(1);
    let mut first = Client::at(IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(ECS));
    first.connect(47300, 80);
    assert_eq!(shuttle(&mut stack, &mut first, Instant::ZERO).len(), 1);
    // Same caller (by address), nothing idle: the newcomer is refused with a RST.
    let mut second = Client::at(IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(SERVER));
    let handle = second.connect(47301, 80);
    assert!(shuttle(&mut stack, &mut second, Instant::ZERO).is_empty());
    assert_ne!(second.socket(handle).state(), tcp::State::Established);
    assert_eq!(stack.connection_count(), 1);
}

#[test]
fn questions_about_callers_name_the_address_each_client_dialled() {
    let mut stack = with_container_endpoints(1);
    let mut first = Client::at(IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(ECS));
    first.connect(47400, 80);
    assert_eq!(shuttle(&mut stack, &mut first, Instant::ZERO).len(), 1);
    // At the limit a newcomer to another address is held until callers are known: the kernel
    // is asked about each socket by both its ends, so ours must be the address dialled.
    let mut second = Client::at(IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(EKS));
    second.connect(47401, 80);
    let syn = second.outgoing(Instant::ZERO);
    assert_eq!(
        stack.endpoint.receive(syn[0].clone(), Instant::ZERO),
        Received::Held
    );
    let questions = stack.endpoint.caller_questions().expect("a SYN is held");
    let mut asked: Vec<(SocketAddr, SocketAddr)> = questions
        .iter()
        .map(|question| (question.client, question.server))
        .collect();
    asked.sort();
    assert_eq!(
        asked,
        vec![
            (
                SocketAddr::new(CLIENT.into(), 47400),
                SocketAddr::new(ECS.into(), 80)
            ),
            (
                SocketAddr::new(CLIENT.into(), 47401),
                SocketAddr::new(EKS.into(), 80)
            ),
        ]
    );
}
