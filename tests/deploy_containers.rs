//! Containers on a host that runs imds-tun: a "container" namespace joined to the "host"
//! namespace by a veth pair (172.17.0.1/16 ↔ 172.17.0.2/16, Docker's bridge addresses), whose
//! default route points at the host, with `net.ipv4.ip_forward=1` on the host. The container's
//! packets to 169.254.169.254 are forwarded by the host's kernel along the TUN's host route, and
//! the replies come back the same way: no NAT, no extra route, no iptables.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use common::{METADATA, http};

#[test]
fn a_container_behind_the_host_reaches_the_metadata_service_through_forwarding() {
    let host = namespace!();
    let container = namespace!();
    host.ip(&[
        "link",
        "add",
        "docker0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        container.name(),
    ]);
    host.ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    host.ip(&["link", "set", "docker0", "up"]);
    container.ip(&["addr", "add", "172.17.0.2/16", "dev", "eth0"]);
    container.ip(&["link", "set", "eth0", "up"]);
    container.ip(&["route", "add", "default", "via", "172.17.0.1"]);
    let forwarding = host.exec(&["sysctl", "-w", "net.ipv4.ip_forward=1"]);
    assert!(forwarding.status.success(), "{forwarding:?}");

    let _child = common::start(&host, &["--instance-id", "i-0c0c0c0c0c0c0c0c0"]);
    let (v1, token, v2) = container.run_in(|| async {
        let v1 = http::get(METADATA, "/latest/meta-data/instance-id").await;
        let token = http::send(METADATA, &http::Request::token("60")).await;
        let v2 = http::send(
            METADATA,
            &http::Request::get_with_token("/latest/meta-data/instance-id", token.text()),
        )
        .await;
        (v1, token, v2)
    });
    assert_eq!(v1.status, 200, "{v1:?}");
    assert_eq!(v1.text(), "i-0c0c0c0c0c0c0c0c0");
    assert_eq!(
        token.status, 200,
        "the IMDSv2 PUT crosses one forwarding hop: {token:?}"
    );
    assert_eq!(v2.status, 200, "{v2:?}");
}
