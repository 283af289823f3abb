use super::*;

#[test]
fn host_route_to_metadata_address_is_found_in_proc_net_route() {
    let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0000FEA9\t00000000\t0001\t0\t0\t1000\t0000FFFF\t0\t0\t0\n\
                 alias0\tFEA9FEA9\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    assert_eq!(
        host_route_in(table, METADATA_ADDRESS),
        Some(Claim::Route {
            destination: IpAddr::V4(METADATA_ADDRESS),
            interface: Some("alias0".to_string()),
            gateway: None,
        })
    );
    // Via a gateway (192.168.2.1, flags UGH), and a reject route without a device.
    let via = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
               eth0\tFEA9FEA9\t0102A8C0\t0007\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    assert_eq!(
        host_route_in(via, METADATA_ADDRESS),
        Some(Claim::Route {
            destination: IpAddr::V4(METADATA_ADDRESS),
            interface: Some("eth0".to_string()),
            gateway: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 2, 1))),
        })
    );
    let reject = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                  *\tFEA9FEA9\t00000000\t0205\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    assert!(matches!(
        host_route_in(reject, METADATA_ADDRESS),
        Some(Claim::Route {
            interface: None,
            ..
        })
    ));
}

#[test]
fn link_local_network_route_is_not_a_claim() {
    let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t0000FEA9\t00000000\t0001\t0\t0\t1000\t0000FFFF\t0\t0\t0\n";
    assert_eq!(host_route_in(table, METADATA_ADDRESS), None);
}

#[test]
fn a_host_route_to_the_ipv6_metadata_address_is_found_in_proc_net_ipv6_route() {
    let table = "fd000ec2000000000000000000000254 80 00000000000000000000000000000000 00 \
                 00000000000000000000000000000000 00000100 00000001 00000000 00000001 imds0\n\
                 fd000ec2000000000000000000000000 40 00000000000000000000000000000000 00 \
                 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
    assert_eq!(
        ipv6_host_route_in(table, METADATA_ADDRESS_V6),
        Some(Claim::Route {
            destination: IpAddr::V6(METADATA_ADDRESS_V6),
            interface: Some("imds0".to_string()),
            gateway: None,
        })
    );
    let only_the_prefix = table.lines().nth(1).unwrap_or_default();
    assert_eq!(
        ipv6_host_route_in(only_the_prefix, METADATA_ADDRESS_V6),
        None
    );
    assert_eq!(ipv6_host_route_in("garbage\n", METADATA_ADDRESS_V6), None);
}

fn rule(priority: u32, action: netlink::RuleAction, to: Option<&str>) -> netlink::Rule {
    netlink::Rule {
        priority,
        action,
        to: to.map(|to| (to.parse().expect("address"), 32)),
        selective: false,
    }
}

fn standard_rules() -> Vec<netlink::Rule> {
    use netlink::RuleAction::Lookup;
    vec![
        rule(0, Lookup(255), None),
        rule(32766, Lookup(netlink::MAIN_TABLE), None),
        rule(32767, Lookup(253), None),
    ]
}

#[test]
fn a_rule_ahead_of_main_whose_table_answers_diverts_and_one_behind_does_not() {
    use netlink::{RouteAnswer, RuleAction};
    let metadata = IpAddr::V4(METADATA_ADDRESS);
    let answer = RouteAnswer::Route {
        interface: None,
        table: 100,
    };
    let mut rules = standard_rules();
    rules.push(rule(
        32765,
        RuleAction::Lookup(100),
        Some("169.254.169.254"),
    ));
    let found = diversion(answer, &rules, metadata).expect("diverted");
    assert!(
        found.contains("policy rule 32765: lookup table 100"),
        "{found}"
    );
    let mut behind = standard_rules();
    behind.push(rule(40000, RuleAction::Lookup(100), None));
    assert_eq!(diversion(answer, &behind, metadata), None);
    let from_main = RouteAnswer::Route {
        interface: Some(2),
        table: netlink::MAIN_TABLE,
    };
    assert_eq!(
        diversion(from_main, &rules, metadata),
        None,
        "our /32 wins in main"
    );
}

#[test]
fn a_refusing_rule_ahead_of_main_diverts_unless_it_selects_some_packets_only() {
    use netlink::{RouteAnswer, RuleAction};
    let metadata = IpAddr::V4(METADATA_ADDRESS);
    let refused = RouteAnswer::Refused(13);
    let mut rules = standard_rules();
    assert_eq!(
        diversion(refused, &rules, metadata),
        None,
        "no route at all yet"
    );
    rules.push(rule(
        100,
        RuleAction::Refuse("prohibit"),
        Some("169.254.169.254"),
    ));
    let found = diversion(refused, &rules, metadata).expect("diverted");
    assert_eq!(found, "nowhere (policy rule 100: prohibit)");
    rules.last_mut().expect("the rule").selective = true;
    assert_eq!(diversion(refused, &rules, metadata), None);
    let mut elsewhere = standard_rules();
    elsewhere.push(rule(100, RuleAction::Refuse("blackhole"), Some("10.0.0.1")));
    assert_eq!(diversion(refused, &elsewhere, metadata), None);
}

#[test]
fn without_a_rule_for_the_main_table_no_device_route_is_found() {
    let mut rules = standard_rules();
    rules.retain(|rule| rule.action != netlink::RuleAction::Lookup(netlink::MAIN_TABLE));
    let answer = netlink::RouteAnswer::Refused(101);
    assert!(diversion(answer, &rules, IpAddr::V4(METADATA_ADDRESS)).is_some());
}

#[test]
fn interface_names_are_checked_before_the_kernel_sees_them() {
    assert!(validate_name("imds%d").is_ok());
    assert!(validate_name("a-name-that-is-too-long").is_err());
    assert!(validate_name("bad/name").is_err());
    assert!(validate_name("").is_err());
}

#[test]
fn a_host_route_to_a_container_endpoint_is_found_as_the_metadata_address_is() {
    let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 lo\t02AAFEA9\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    let ecs = super::super::ECS_ADDRESS;
    assert_eq!(
        host_route_in(table, ecs),
        Some(Claim::Route {
            destination: IpAddr::V4(ecs),
            interface: Some("lo".into()),
            gateway: None,
        })
    );
    assert_eq!(host_route_in(table, METADATA_ADDRESS), None);
}
