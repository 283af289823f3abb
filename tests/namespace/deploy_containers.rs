//! Containers on a host that runs imds-tun: a "container" namespace joined to the "host"
//! namespace by a veth pair (172.17.0.1/16 ↔ 172.17.0.2/16, Docker's bridge addresses), whose
//! default route points at the host, with `net.ipv4.ip_forward=1` on the host. The container's
//! packets to 169.254.169.254 are forwarded by the host's kernel along the TUN's host route, and
//! the replies come back the same way: no NAT, no extra route, no iptables.
//!
//! The hop limit (`--hop-limit`, EC2's `HttpPutResponseHopLimit`) is proved here too, without
//! Docker and in a second: the token reply leaves the TUN with the limit as its IP TTL, so with 1
//! it dies at the host's forwarding step and the container's PUT times out, with the default 2
//! it arrives; a client two forwarded hops away (a second namespace routed through the first)
//! gets no token with 2. GET replies are never limited. The same with real Docker:
//! `tests/namespace/docker_containers.rs`.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::Duration;

use common::{METADATA, Namespace, http};

/// How long a client waits for a token before calling the PUT timed out (the reply is dropped
/// on the way, so it never comes; a delivered one takes milliseconds).
const PUT_PATIENCE: Duration = Duration::from_secs(2);

const INSTANCE_ID: &str = "i-0c0c0c0c0c0c0c0c0";

/// Joins `container` to `host` as Docker's default bridge does, with forwarding on in `host`.
fn container_behind(host: &Namespace, container: &Namespace) {
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
    forward(host);
}

fn forward(namespace: &Namespace) {
    let forwarding = namespace.exec(&["sysctl", "-w", "net.ipv4.ip_forward=1"]);
    assert!(forwarding.status.success(), "{forwarding:?}");
}

/// What a client saw: IMDSv1 answers, and the token PUT's answer or `None` if it timed out.
struct Seen {
    instance_id: http::Response,
    credentials: http::Response,
    token: Option<http::Response>,
}

/// Statuses and bodies as text, so a failure reads as what the client saw.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |response: &http::Response| {
            format!(
                "{} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )
        };
        f.debug_struct("Seen")
            .field("instance_id", &show(&self.instance_id))
            .field("credentials", &show(&self.credentials))
            .field(
                "token",
                &self.token.as_ref().map_or("timed out".into(), show),
            )
            .finish()
    }
}

/// Reads the instance id and the role's credentials (IMDSv1), then asks for a token.
async fn read_metadata() -> Seen {
    let instance_id = http::get(METADATA, "/latest/meta-data/instance-id").await;
    let roles = http::get(METADATA, "/latest/meta-data/iam/security-credentials/").await;
    let role = roles.text().lines().next().unwrap_or_default().to_owned();
    let credentials = http::get(
        METADATA,
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
    )
    .await;
    let token = tokio::time::timeout(
        PUT_PATIENCE,
        http::send(METADATA, &http::Request::token("60")),
    )
    .await
    .ok();
    Seen {
        instance_id,
        credentials,
        token,
    }
}

fn assert_imdsv1_served(seen: &Seen) {
    assert_eq!(seen.instance_id.status, 200, "{seen:?}");
    assert_eq!(seen.instance_id.text(), INSTANCE_ID);
    assert_eq!(seen.credentials.status, 200, "{seen:?}");
    assert!(
        seen.credentials.text().contains("\"AccessKeyId\""),
        "{seen:?}"
    );
}

fn token_status(seen: &Seen) -> Option<u16> {
    seen.token.as_ref().map(|token| token.status)
}

/// The packet filter of `namespace` as text: nftables and, where installed, legacy iptables.
/// Without `nft` the comparison would prove nothing: a skip (a failure under `CI=true`).
fn firewall(namespace: &Namespace, test: &str) -> String {
    if !namespace.exec(&["nft", "--version"]).status.success() {
        common::skip_or_fail(
            test,
            "nft is not installed (Debian: nftables), so the check that imds-tun adds no \
             packet-filter rule proves nothing",
        );
    }
    let mut text = String::new();
    for command in [
        &["nft", "list", "ruleset"][..],
        &["iptables-legacy-save"][..],
    ] {
        let output = namespace.exec(command);
        if output.status.success() {
            // iptables-save stamps the time on its comment lines.
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                if !line.starts_with('#') {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    text
}

#[test]
fn a_container_behind_the_host_reaches_the_metadata_service_through_forwarding() {
    let host = namespace!();
    let container = namespace!();
    container_behind(&host, &container);

    let _child = common::start(&host, &["--instance-id", INSTANCE_ID]);
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
    assert_eq!(v1.text(), INSTANCE_ID);
    assert_eq!(
        token.status, 200,
        "with the default hop limit (2) the IMDSv2 PUT crosses one forwarding hop: {token:?}"
    );
    assert_eq!(v2.status, 200, "{v2:?}");
}

#[test]
fn with_hop_limit_1_a_container_gets_imdsv1_but_its_token_put_times_out() {
    let host = namespace!();
    let container = namespace!();
    container_behind(&host, &container);
    let before = firewall(&host, test_name!());

    let _child = common::start(&host, &["--instance-id", INSTANCE_ID, "--hop-limit", "1"]);
    assert_eq!(
        firewall(&host, test_name!()),
        before,
        "imds-tun adds no packet-filter rule"
    );
    let seen = container.run_in(read_metadata);
    assert_imdsv1_served(&seen);
    assert_eq!(
        token_status(&seen),
        None,
        "the token reply (TTL 1) dies at the host's forwarding step, as on EC2: {seen:?}"
    );
    // A process on the host itself is 0 hops away: TTL 1 reaches it.
    let local = host.run_in(read_metadata);
    assert_imdsv1_served(&local);
    assert_eq!(token_status(&local), Some(200), "{local:?}");
}

#[test]
fn with_the_default_hop_limit_a_client_two_forwarded_hops_away_gets_no_token() {
    // host (imds-tun) ← 10.1.0.0/24 → router ← 10.2.0.0/24 → far: a container inside a guest.
    let host = namespace!();
    let router = namespace!();
    let far = namespace!();
    host.ip(&[
        "link",
        "add",
        "to-router",
        "type",
        "veth",
        "peer",
        "name",
        "to-host",
        "netns",
        router.name(),
    ]);
    router.ip(&[
        "link",
        "add",
        "to-far",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        far.name(),
    ]);
    for (namespace, address, device) in [
        (&host, "10.1.0.1/24", "to-router"),
        (&router, "10.1.0.2/24", "to-host"),
        (&router, "10.2.0.1/24", "to-far"),
        (&far, "10.2.0.2/24", "eth0"),
    ] {
        namespace.ip(&["addr", "add", address, "dev", device]);
        namespace.ip(&["link", "set", device, "up"]);
    }
    router.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    far.ip(&["route", "add", "default", "via", "10.2.0.1"]);
    host.ip(&["route", "add", "10.2.0.0/24", "via", "10.1.0.2"]);
    forward(&host);
    forward(&router);

    let _child = common::start(&host, &["--instance-id", INSTANCE_ID]);
    let one_hop = router.run_in(read_metadata);
    assert_imdsv1_served(&one_hop);
    assert_eq!(
        token_status(&one_hop),
        Some(200),
        "one hop away, TTL 2 arrives: {one_hop:?}"
    );
    let two_hops = far.run_in(read_metadata);
    assert_imdsv1_served(&two_hops);
    assert_eq!(
        token_status(&two_hops),
        None,
        "two hops away, TTL 2 dies at the second router: {two_hops:?}"
    );
}
