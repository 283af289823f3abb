//! The clouds as one run registers them, behind `http::Server` over an in-memory connection:
//! the address a client connected to decides who answers, and `http`'s own rules (faults by
//! path, the `Host` guard) come first for the container endpoints too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::credentials::fake::FakeCredentials;
use crate::credentials::roles::{RoleSource, RoleStarter};
use crate::http::Server;
use crate::http::faults::FaultSpec;
use crate::http::shared_token::SharedToken;

const TOKEN: &str = "pod-identity-token-0123456789";

fn clock() -> time::OffsetDateTime {
    time::macros::datetime!(2030-01-02 03:04:05 UTC)
}

fn server() -> Server {
    let instance = ec2::Instance::example();
    let source = Arc::new(FakeCredentials::new(Duration::from_secs(3600)));
    let role = instance_role::InstanceRole::new(
        source.clone(),
        None,
        &instance.role_name,
        &instance.account_id,
        &instance.region,
    );
    let starter: RoleStarter = Arc::new(|_: &crate::credentials::naming::RoleArn| {
        Arc::new(FakeCredentials::new(Duration::from_secs(3600))) as Arc<dyn RoleSource>
    });
    let ecs = ecs::Ecs::new(
        &instance,
        &ecs::EcsSettings::default(),
        role.clone(),
        starter,
        clock(),
    );
    let pod_identity = eks_pod_identity::PodIdentity::new(
        &eks_pod_identity::PodIdentitySettings {
            token: SharedToken::parse(TOKEN).expect("a token"),
        },
        role,
    );
    let ec2 = ec2::Ec2::new(&instance, ec2::TokenPolicy::Optional, source);
    let services = local(
        std::sync::Arc::new(ec2),
        None,
        None,
        ContainerEndpoints {
            ecs: Some(ecs),
            pod_identity: Some(pod_identity),
        },
        None,
    );
    Server::new(services).with_clock(clock)
}

/// Sends `request` to `server` as if the client had connected to `local`; the whole response.
async fn exchange(server: &Server, local: &str, request: &str) -> String {
    let (mut client, connection) = tokio::io::duplex(256 * 1024);
    let local: SocketAddr = local.parse().expect("an address");
    server.serve_from(
        connection,
        "169.254.170.9:40000".parse().expect("an address"),
        Some(local),
        crate::http::Access::Open,
    );
    client.write_all(request.as_bytes()).await.expect("written");
    let mut response = Vec::new();
    client.read_to_end(&mut response).await.expect("read");
    String::from_utf8(response).expect("text")
}

fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn the_address_decides_who_answers_the_same_request() {
    let server = server();
    let request = get("/v2/credentials/imds-tun", "169.254.170.2", "");
    let ecs = exchange(&server, "169.254.170.2:80", &request).await;
    assert!(ecs.starts_with("HTTP/1.1 200 OK\r\n"), "{ecs}");
    assert!(ecs.contains("content-type: application/json\r\n"), "{ecs}");
    assert!(ecs.contains("\"RoleArn\":\"arn:aws:iam::123456789012:role/imds-tun\""));
    let ec2 = exchange(&server, "169.254.169.254:80", &request).await;
    assert!(ec2.starts_with("HTTP/1.1 404 Not Found\r\n"), "{ec2}");
    assert!(
        ec2.contains("<title>404 - Not Found</title>"),
        "EC2's page: {ec2}"
    );
    let metadata = get("/latest/meta-data/instance-id", "169.254.170.2", "");
    let on_ecs = exchange(&server, "169.254.170.2:80", &metadata).await;
    assert!(on_ecs.ends_with("\r\n\r\n404 page not found\n"), "{on_ecs}");
    let on_pod = exchange(&server, "169.254.170.23:80", &metadata).await;
    assert!(on_pod.ends_with("\r\n\r\n404 page not found\n"), "{on_pod}");
}

#[tokio::test]
async fn pod_identity_answers_on_both_addresses_with_the_token_only() {
    let server = server();
    let authorized = format!("Authorization: {TOKEN}\r\n");
    for (local, host) in [
        ("169.254.170.23:80", "169.254.170.23"),
        ("[fd00:ec2::23]:80", "[fd00:ec2::23]"),
    ] {
        let good = exchange(&server, local, &get("/v1/credentials", host, &authorized)).await;
        assert!(good.starts_with("HTTP/1.1 200 OK\r\n"), "{good}");
        assert!(good.contains("\"AccountId\":\"123456789012\""), "{good}");
        let none = exchange(&server, local, &get("/v1/credentials", host, "")).await;
        assert!(none.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{none}");
        assert!(
            none.contains("\"Code\":\"InvalidTokenException\""),
            "{none}"
        );
    }
}

#[tokio::test]
async fn http_faults_and_host_rules_come_first_on_the_container_addresses() {
    let server = server();
    let misaddressed = get("/v2/credentials/imds-tun", "metadata.example.com", "");
    let refused = exchange(&server, "169.254.170.2:80", &misaddressed).await;
    assert!(
        refused.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{refused}"
    );
    server.faults().add(
        FaultSpec {
            status: Some(503),
            latency_ms: None,
            drop: 0,
            reset: 0,
            path: Some("/v2/credentials/".into()),
            method: None,
            throttle: None,
            per_caller: false,
        },
        None,
    );
    let request = get("/v2/credentials/imds-tun", "169.254.170.2", "");
    let faulted = exchange(&server, "169.254.170.2:80", &request).await;
    assert!(faulted.starts_with("HTTP/1.1 503 "), "{faulted}");
    assert!(!faulted.contains("AccessKeyId"), "{faulted}");
}

/// Every cloud one run serves, GCE and Azure included.
fn server_of_every_cloud() -> Server {
    let instance = ec2::Instance::example();
    let source = Arc::new(FakeCredentials::new(Duration::from_secs(3600)));
    let gce = gce::Gce::new(
        gce::GceSettings {
            instance: gce::GceInstance::example(),
            access_tokens: gce::tokens::AccessTokenSource::Fake,
            identity_tokens: gce::tokens::IdentityTokenSource::Signed,
        },
        clock().unix_timestamp(),
    )
    .expect("the committed key loads");
    let azure = azure::Azure::new(
        azure::AzureInstance::example(),
        azure::tokens::TokenSource::Fake,
    );
    let ec2 = ec2::Ec2::new(&instance, ec2::TokenPolicy::Optional, source);
    Server::new(local(
        std::sync::Arc::new(ec2),
        Some(gce),
        Some(azure),
        ContainerEndpoints::default(),
        None,
    ))
    .with_clock(clock)
}

#[tokio::test]
async fn a_throttle_answers_429_in_the_shape_of_the_cloud_asked() {
    let server = server_of_every_cloud();
    let ec2 = get("/latest/meta-data/instance-id", "169.254.169.254", "");
    let gce = get(
        "/computeMetadata/v1/instance/id",
        "169.254.169.254",
        "Metadata-Flavor: Google\r\n",
    );
    let azure = get(
        "/metadata/instance?api-version=2021-02-01",
        "169.254.169.254",
        "Metadata: true\r\n",
    );
    server.faults().add(
        FaultSpec {
            status: None,
            latency_ms: None,
            drop: 0,
            reset: 0,
            path: None,
            method: None,
            throttle: Some(1),
            per_caller: false,
        },
        None,
    );
    let within = exchange(&server, "169.254.169.254:80", &ec2).await;
    assert!(within.starts_with("HTTP/1.1 200 OK\r\n"), "{within}");

    let beyond = exchange(&server, "169.254.169.254:80", &ec2).await;
    assert!(
        beyond.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{beyond}"
    );
    assert!(beyond.contains("server: EC2ws\r\n"), "{beyond}");
    assert!(beyond.contains("content-type: text/plain\r\n"), "{beyond}");
    assert!(
        beyond.contains("<title>429 - Too Many Requests</title>"),
        "EC2's XHTML page: {beyond}"
    );

    let on_gce = exchange(&server, "169.254.169.254:80", &gce).await;
    assert!(
        on_gce.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{on_gce}"
    );
    assert!(on_gce.contains("metadata-flavor: Google\r\n"), "{on_gce}");
    assert!(
        on_gce.contains("server: Metadata Server for VM\r\n"),
        "{on_gce}"
    );
    assert!(
        on_gce.ends_with("\r\n\r\nToo Many Requests\n"),
        "a line of text: {on_gce}"
    );

    let on_azure = exchange(&server, "169.254.169.254:80", &azure).await;
    assert!(
        on_azure.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{on_azure}"
    );
    assert!(
        on_azure.contains("content-type: application/json; charset=utf-8\r\n"),
        "{on_azure}"
    );
    assert!(
        on_azure.ends_with("\r\n\r\n{\"error\":\"Too many requests\"}"),
        "IMDS's error JSON: {on_azure}"
    );
}

#[tokio::test]
async fn a_faults_status_is_written_on_the_page_of_the_cloud_asked() {
    let server = server_of_every_cloud();
    server.faults().add(
        FaultSpec {
            status: Some(503),
            latency_ms: None,
            drop: 0,
            reset: 0,
            path: None,
            method: None,
            throttle: None,
            per_caller: false,
        },
        None,
    );
    let gce = get(
        "/computeMetadata/v1/instance/id",
        "169.254.169.254",
        "Metadata-Flavor: Google\r\n",
    );
    let on_gce = exchange(&server, "169.254.169.254:80", &gce).await;
    assert!(on_gce.starts_with("HTTP/1.1 503 "), "{on_gce}");
    assert!(
        on_gce.contains("<title>Error 503 (Service Unavailable)</title>"),
        "Google's error page: {on_gce}"
    );
    let ec2 = get("/latest/meta-data/instance-id", "169.254.169.254", "");
    let on_ec2 = exchange(&server, "169.254.169.254:80", &ec2).await;
    assert!(on_ec2.starts_with("HTTP/1.1 503 "), "{on_ec2}");
    assert!(on_ec2.contains("server: EC2ws\r\n"), "{on_ec2}");
}
