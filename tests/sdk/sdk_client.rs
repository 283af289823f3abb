//! The official Rust SDK (aws-config) against the real binary through the TUN, with no endpoint
//! override: it dials `http://169.254.169.254` exactly as on EC2, or in IPv6 endpoint mode
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`) `http://[fd00:ec2::254]` (`--ipv6`).
//! aws-config always uses IMDSv2 (no v1 fallback), so it works in both `--imdsv2` modes.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::SystemTime;

use aws_config::imds::Client;
use aws_config::imds::client::EndpointMode;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_credential_types::provider::ProvideCredentials;
use common::{METADATA, http};

const INSTANCE_ID: &str = "i-0123456789abcdef0";
const REGION: &str = "eu-west-1";
const ZONE: &str = "eu-west-1b";

fn instance_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--instance-id",
        INSTANCE_ID,
        "--region",
        REGION,
        "--availability-zone",
        ZONE,
    ];
    args.extend_from_slice(extra);
    args
}

/// What the SDK saw.
#[derive(Debug)]
struct Seen {
    instance_id: String,
    region: Option<String>,
    zone: String,
    access_key_id: String,
    session_token: Option<String>,
    expiry: Option<SystemTime>,
}

async fn ask_the_sdk() -> Seen {
    ask_the_sdk_with(Client::builder().build()).await
}

/// What the SDK in IPv6 endpoint mode sees: the mode the endpoint-mode variable selects.
async fn ask_the_sdk_over_ipv6() -> Seen {
    ask_the_sdk_with(Client::builder().endpoint_mode(EndpointMode::IpV6).build()).await
}

async fn ask_the_sdk_with(client: Client) -> Seen {
    let instance_id = client
        .get("/latest/meta-data/instance-id")
        .await
        .expect("the SDK fetches instance-id")
        .as_ref()
        .to_string();
    let zone = client
        .get("/latest/meta-data/placement/availability-zone")
        .await
        .expect("the SDK fetches the zone")
        .as_ref()
        .to_string();
    let region = ImdsRegionProvider::builder()
        .imds_client(client.clone())
        .build()
        .region()
        .await
        .map(|region| region.as_ref().to_string());
    let credentials = ImdsCredentialsProvider::builder()
        .imds_client(client)
        .build()
        .provide_credentials()
        .await
        .expect("the SDK obtains role credentials");
    Seen {
        instance_id,
        region,
        zone,
        access_key_id: credentials.access_key_id().to_string(),
        session_token: credentials.session_token().map(str::to_string),
        expiry: credentials.expiry(),
    }
}

fn assert_realistic(seen: &Seen) {
    assert_eq!(seen.instance_id, INSTANCE_ID, "{seen:?}");
    assert_eq!(seen.region.as_deref(), Some(REGION), "{seen:?}");
    assert_eq!(seen.zone, ZONE, "{seen:?}");
    assert!(
        seen.access_key_id.starts_with("ASIA") && seen.access_key_id.len() == 20,
        "temporary keys look like ASIA + 16 characters: {seen:?}"
    );
    assert!(
        seen.session_token
            .as_deref()
            .is_some_and(|token| !token.is_empty()),
        "temporary credentials carry a session token: {seen:?}"
    );
    let expiry = seen.expiry.expect("the SDK reports an expiry");
    assert!(
        expiry > SystemTime::now(),
        "expiry is in the future: {seen:?}"
    );
}

#[test]
fn sdk_reads_identity_region_and_credentials_in_optional_mode() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let _child = common::start(&namespace, &instance_args(&[]));
    let seen = namespace.run_in(ask_the_sdk);
    assert_realistic(&seen);
}

#[test]
fn sdk_reads_identity_region_and_credentials_in_required_mode() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let _child = common::start(&namespace, &instance_args(&["--imdsv2", "required"]));
    let seen = namespace.run_in(ask_the_sdk);
    assert_realistic(&seen);
    // And the server really is in required mode: a tokenless request is refused.
    let tokenless = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/instance-id"));
    assert_eq!(tokenless.status, 401, "{tokenless:?}");
}

#[test]
fn sdk_gets_credentials_of_a_custom_role_name() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let _child = common::start(&namespace, &instance_args(&["--role-name", "custom-role"]));
    let seen = namespace.run_in(ask_the_sdk);
    assert_realistic(&seen);
    let (roles, role) = namespace.run_in(|| async {
        let roles = http::get(METADATA, "/latest/meta-data/iam/security-credentials/").await;
        let role = http::get(
            METADATA,
            "/latest/meta-data/iam/security-credentials/custom-role",
        )
        .await;
        (roles, role)
    });
    assert_eq!(roles.status, 200, "{roles:?}");
    assert_eq!(roles.text().lines().collect::<Vec<_>>(), ["custom-role"]);
    assert_eq!(role.status, 200, "{role:?}");
    let document: serde_json::Value =
        serde_json::from_slice(&role.body).expect("credentials are JSON");
    assert_eq!(
        document["AccessKeyId"], seen.access_key_id,
        "the SDK's keys are the custom role's keys"
    );
}

#[test]
fn sdk_reads_identity_region_and_credentials_with_gce_served_beside_ec2() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let _child = common::start(
        &namespace,
        &instance_args(&["--gcp-project", "imds-tun-e2e", "--imdsv2", "required"]),
    );
    let seen = namespace.run_in(ask_the_sdk);
    assert_realistic(&seen);
}

#[test]
fn sdk_in_ipv6_endpoint_mode_reads_identity_region_and_credentials_from_fd00_ec2_254() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    // Only the IPv6 pair's source may connect: the SDK can only succeed over IPv6.
    let _child = common::start(
        &namespace,
        &instance_args(&[
            "--ipv6",
            "--allow-from",
            "fd00:ec2::253/128",
            "--imdsv2",
            "required",
        ]),
    );
    let seen = namespace.run_in(ask_the_sdk_over_ipv6);
    assert_realistic(&seen);
    let refused = namespace.run_in(|| async {
        tokio::net::TcpStream::connect(METADATA)
            .await
            .map(|_| ())
            .map_err(|error| error.kind())
    });
    assert!(
        refused.is_err(),
        "IPv4 is refused by --allow-from, so the SDK used IPv6: {refused:?}"
    );
}
