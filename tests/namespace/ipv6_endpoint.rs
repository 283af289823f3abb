//! `--ipv6`: the same TUN also claims `fd00:ec2::254`, the Nitro IPv6 endpoint, with the pair
//! `fd00:ec2::253 peer fd00:ec2::254/128`, and serves the same tree there. The claim is checked
//! and cleaned up like the IPv4 one: an existing `fd00:ec2::254` refuses the start before
//! anything is created, and SIGTERM or SIGKILL leave no address and no route. Real clients:
//! a raw HTTP client, `ping -6`, and botocore (Python) steered by
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`; the Rust SDK in IPv6 mode is in
//! `tests/sdk/sdk_client.rs`.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::{METADATA, METADATA_V6, Namespace, assert_exit_code, http, repo};
use nix::sys::signal::Signal;

const INSTANCE_ID: &str = "i-0f0e0d0c0b0a09080";

/// Refusals come before any work.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the kernel may take to remove a device after its last descriptor closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

fn start_v6(namespace: &Namespace, extra: &[&str]) -> common::ImdsTun {
    let mut args = vec!["--instance-id", INSTANCE_ID, "--ipv6"];
    args.extend_from_slice(extra);
    common::start(namespace, &args)
}

/// A request to the IPv6 endpoint, named as IPv6 clients name it.
fn v6(request: http::Request) -> http::Request {
    request.header("Host", "[fd00:ec2::254]")
}

/// Polls until nothing names fd00:ec2::253/254, or panics with what is left.
fn wait_until_no_ipv6_claim(namespace: &Namespace) {
    let deadline = std::time::Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let left = namespace.ipv6_claims();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {CLEANUP_TIMEOUT:?} the namespace still has {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_tun_gets_the_pair_and_the_kernel_routes_fd00_ec2_254_into_it_and_nothing_more() {
    let namespace = namespace!();
    let child = start_v6(&namespace, &[]);
    let tun = child.tun_name();
    assert!(
        child.wait_ready().contains("[fd00:ec2::254]:80"),
        "{}",
        child.wait_ready()
    );

    let addresses = namespace.ip_json(&["-6", "addr", "show", "dev", &tun]);
    let ours: Vec<&serde_json::Value> = addresses[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|address| address["scope"] == "global")
        .collect();
    assert_eq!(ours.len(), 1, "{addresses}");
    assert_eq!(ours[0]["local"], "fd00:ec2::253");
    assert_eq!(ours[0]["address"], "fd00:ec2::254", "the peer");
    assert_eq!(ours[0]["prefixlen"], 128);

    // The pair adds exactly the route to the peer (main table) and the local address's own
    // entry (local table); no route to fd00:ec2::253's prefix, nothing wider.
    let claims = namespace.ipv6_claims();
    let routes: Vec<&String> = claims
        .iter()
        .filter(|line| !line.contains("inet6"))
        .collect();
    assert_eq!(routes.len(), 2, "{claims:?}");
    assert!(
        routes
            .iter()
            .any(|route| route.starts_with(&format!("fd00:ec2::254 dev {tun} proto kernel"))),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|route| route.starts_with(&format!("local fd00:ec2::253 dev {tun} table local"))),
        "{routes:?}"
    );
    let route_get = namespace.ip(&["-6", "route", "get", "fd00:ec2::254"]);
    assert!(
        route_get.contains(&format!("dev {tun}")) && route_get.contains("src fd00:ec2::253"),
        "{route_get}"
    );
}

#[test]
fn the_tree_and_imdsv2_are_served_over_ipv6_and_ping_is_answered() {
    let namespace = namespace!();
    let _child = start_v6(&namespace, &["--imdsv2", "required"]);
    let (tokenless, token, instance_id, v4) = namespace.run_in(|| async {
        let tokenless = http::send(
            METADATA_V6,
            &v6(http::Request::get("/latest/meta-data/instance-id")),
        )
        .await;
        let token = http::send(METADATA_V6, &v6(http::Request::token("60"))).await;
        let instance_id = http::send(
            METADATA_V6,
            &v6(http::Request::get_with_token(
                "/latest/meta-data/instance-id",
                token.text(),
            )),
        )
        .await;
        let v4 = http::send(
            METADATA,
            &http::Request::get_with_token("/latest/meta-data/instance-id", token.text()),
        )
        .await;
        (tokenless, token, instance_id, v4)
    });
    assert_eq!(tokenless.status, 401, "required mode over IPv6 too");
    assert_eq!(token.status, 200, "{token:?}");
    assert_eq!(instance_id.status, 200, "{instance_id:?}");
    assert_eq!(instance_id.text(), INSTANCE_ID);
    assert_eq!(
        v4.status, 200,
        "one service: a token from IPv6 works on IPv4"
    );

    let ping = namespace.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:ec2::254"]);
    assert!(ping.status.success(), "{ping:?}");
}

#[test]
fn sigterm_and_sigkill_leave_no_ipv6_address_or_route() {
    let namespace = namespace!();
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let mut child = start_v6(&namespace, &[]);
        assert!(!namespace.ipv6_claims().is_empty());
        child.signal(signal);
        child.wait_exit(Duration::from_secs(8));
        wait_until_no_ipv6_claim(&namespace);
        namespace.wait_until_clean(CLEANUP_TIMEOUT);
    }
}

#[test]
fn fd00_ec2_254_on_lo_refuses_an_ipv6_start_and_creates_nothing() {
    let namespace = namespace!();
    namespace.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:ec2::254/128",
        "dev",
        "lo",
        "nodad",
    ]);
    let mut child = namespace.spawn(&["--ipv6"]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    let stderr = child.stderr();
    assert!(
        stderr.contains(
            "fd00:ec2::254 is already claimed by an address (fd00:ec2::254/128) on interface lo"
        ),
        "{stderr}"
    );
    assert!(namespace.tun_links().is_empty(), "no TUN may be created");
    assert!(namespace.routes_to_metadata().is_empty());

    // Without --ipv6 the address is none of imds-tun's business.
    let _child = common::start(&namespace, &[]);
}

#[test]
fn a_host_route_to_fd00_ec2_254_refuses_an_ipv6_start() {
    let namespace = namespace!();
    namespace.ip(&["-6", "route", "add", "unreachable", "fd00:ec2::254/128"]);
    let mut child = namespace.spawn(&["--ipv6"]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    assert!(
        child
            .stderr()
            .contains("fd00:ec2::254 is already claimed by a host route"),
        "{}",
        child.stderr()
    );
    assert!(namespace.tun_links().is_empty(), "no TUN may be created");
}

#[test]
fn ipv6_turned_off_in_the_namespace_is_refused_before_anything_is_created() {
    let namespace = namespace!();
    let off = namespace.exec(&["sysctl", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
    assert!(off.status.success(), "{off:?}");
    let mut child = namespace.spawn(&["--ipv6"]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    assert!(
        child.stderr().contains("--ipv6 cannot be served here")
            && child.stderr().contains("disable_ipv6"),
        "{}",
        child.stderr()
    );
    assert!(namespace.tun_links().is_empty(), "no TUN may be created");
}

#[test]
fn with_hop_limit_1_a_client_one_forwarded_hop_away_gets_no_token_over_ipv6_either() {
    let host = namespace!();
    let guest = namespace!();
    host.ip(&[
        "link",
        "add",
        "vhost",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        guest.name(),
    ]);
    // nodad: usable at once, so the test does not wait out duplicate address detection.
    host.ip(&["-6", "addr", "add", "fd01::1/64", "dev", "vhost", "nodad"]);
    host.ip(&["link", "set", "vhost", "up"]);
    guest.ip(&["-6", "addr", "add", "fd01::2/64", "dev", "eth0", "nodad"]);
    guest.ip(&["link", "set", "eth0", "up"]);
    guest.ip(&["-6", "route", "add", "default", "via", "fd01::1"]);
    let forwarding = host.exec(&["sysctl", "-w", "net.ipv6.conf.all.forwarding=1"]);
    assert!(forwarding.status.success(), "{forwarding:?}");

    let _child = start_v6(&host, &["--hop-limit", "1"]);
    let (instance_id, token) = guest.run_in(|| async {
        let instance_id = http::send(
            METADATA_V6,
            &v6(http::Request::get("/latest/meta-data/instance-id")),
        )
        .await;
        let token = tokio::time::timeout(
            Duration::from_secs(2),
            http::send(METADATA_V6, &v6(http::Request::token("60"))),
        )
        .await
        .ok();
        (instance_id, token)
    });
    assert_eq!(instance_id.status, 200, "{instance_id:?}");
    assert!(
        token.is_none(),
        "the token reply (hop limit 1) dies at the host's forwarding step: {token:?}"
    );
    let local =
        host.run_in(|| async { http::send(METADATA_V6, &v6(http::Request::token("60"))).await });
    assert_eq!(
        local.status, 200,
        "0 hops: the host's own processes get one"
    );
}

/// Python with botocore from `.venv` (moto depends on it; `scripts/test.sh` creates the venv).
fn python(test: &str) -> Option<PathBuf> {
    let path = repo().join(".venv/bin/python");
    let usable = std::process::Command::new(&path)
        .args(["-c", "import botocore"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !usable {
        common::skip_or_fail(
            test,
            ".venv/bin/python with botocore is missing; scripts/test.sh creates it",
        );
        return None;
    }
    Some(path)
}

/// botocore's default credential chain, with nothing but the instance metadata provider to
/// find, and the region from the identity document, configured as botocore configures its own
/// metadata clients (the endpoint mode read from the environment).
const BOTOCORE_CLIENT: &str = r#"
import botocore.session, botocore.utils
session = botocore.session.Session()
credentials = session.get_credentials()
fetcher = botocore.utils.InstanceMetadataRegionFetcher(
    timeout=2, num_attempts=1,
    config={"ec2_metadata_service_endpoint_mode":
            botocore.utils.resolve_imds_endpoint_mode(session)})
print(credentials.method if credentials else "none")
print(credentials.access_key if credentials else "")
print(fetcher.retrieve_region())
"#;

#[test]
fn botocore_steered_by_the_endpoint_mode_variable_reads_credentials_over_ipv6_only() {
    let namespace = namespace!();
    let Some(python) = python(test_name!()) else {
        return;
    };
    // Only the IPv6 pair's source may connect: an IPv4 request would be reset, so success
    // proves the client went to fd00:ec2::254.
    let _child = start_v6(
        &namespace,
        &[
            "--allow-from",
            "fd00:ec2::253/128",
            "--region",
            "eu-central-1",
        ],
    );
    let python = python.display().to_string();
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        "AWS_CONFIG_FILE=/nonexistent/config",
        "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6",
        &python,
        "-c",
        BOTOCORE_CLIENT,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"iam-role"), "{stdout}");
    assert!(
        lines.get(1).is_some_and(|key| key.starts_with("ASIA")),
        "{stdout}"
    );
    assert_eq!(lines.get(2), Some(&"eu-central-1"), "{stdout}");

    let v4 = namespace.exec(&[
        "curl",
        "-sS",
        "-m",
        "2",
        "http://169.254.169.254/latest/meta-data/instance-id",
    ]);
    assert!(
        !v4.status.success(),
        "IPv4 is refused by --allow-from, so the check above proves IPv6: {v4:?}"
    );
}

#[test]
fn a_local_caller_over_ipv6_is_named_by_process_and_uid_and_gets_its_own_role() {
    let namespace = namespace!();
    let child = start_v6(
        &namespace,
        &[
            "--mock-credentials",
            "--caller-role",
            "uid:65534=arn:aws:iam::123456789012:role/nobody-role",
        ],
    );
    let curl_as_nobody = |url: &str| {
        let output = namespace.exec(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-sS",
            "-m",
            "5",
            url,
        ]);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The kernel names the owner of an IPv6 socket as it does an IPv4 one, so dialling
    // fd00:ec2::254 is no way around a per-user role.
    let roles = curl_as_nobody("http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/");
    assert_eq!(roles.trim(), "nobody-role");
    // Read twice on one connection, 300 ms apart: the audit line is written after the answer,
    // so curl must still hold the socket when imds-tun looks for its process.
    let credentials =
        "http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/nobody-role";
    let output = namespace.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "--rate",
        "3/s",
        credentials,
        credentials,
    ]);
    assert!(output.status.success(), "{output:?}");
    let line = child.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("read role credentials")
    });
    assert!(
        line.contains("(curl) uid 65534 read role credentials nobody-role"),
        "{line}"
    );
    let own = namespace.exec(&[
        "curl",
        "-sS",
        "http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&own.stdout).trim(),
        "imds-tun",
        "root matches no selector: the instance's role"
    );
}
