//! Routing, status codes and headers of the [`Ec2`] service, driven with in-memory requests and
//! written as `http` writes them.

use super::*;
use crate::credentials::CredentialError;
use crate::credentials::fake::FakeCredentials;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use http_body_util::{BodyExt as _, Either};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2025-03-01 10:00:00 UTC);
const START: OffsetDateTime = datetime!(2025-03-01 09:00:00 UTC);

/// The service for [`Instance::example`] changed by `change`, tokens optional.
fn imds_with(change: impl FnOnce(&mut Instance)) -> Ec2 {
    imds_with_policy(TokenPolicy::Optional, change)
}

fn imds_with_policy(policy: TokenPolicy, change: impl FnOnce(&mut Instance)) -> Ec2 {
    let mut instance = Instance::example();
    change(&mut instance);
    Ec2::started_at(
        &instance,
        policy,
        Arc::new(FakeCredentials::new(Duration::from_secs(6 * 3600))),
        START,
    )
}

fn imds() -> Ec2 {
    imds_with(|_| {})
}

fn required() -> Ec2 {
    imds_with_policy(TokenPolicy::Required, |_| {})
}

fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

/// Runs `future` to its end if it never waits, as EC2's answers do (`None` if it would wait).
fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The response to `request` at `now`: the service's answer, asked as `http` asks it, written
/// as `http` writes it (hyper then sends a HEAD's headers without the body).
fn respond_at(
    imds: &Ec2,
    request: &http::request::Parts,
    now: OffsetDateTime,
) -> http::Response<Bytes> {
    let context = Context {
        request: request.clone(),
        body: None,
        now,
        caller: None,
    };
    let reply = now_or_never(imds.answer(context)).expect("EC2 answers without waiting");
    let (response, _) = reply.into_response();
    response.map(|body| match body {
        Either::Left(whole) => now_or_never(whole.collect())
            .expect("in memory")
            .expect("infallible")
            .to_bytes(),
        Either::Right(_) => panic!("EC2 answers with whole bodies"),
    })
}

fn get(imds: &Ec2, path: &str) -> http::Response<Bytes> {
    respond_at(imds, &request(Method::GET, path, &[]), NOW)
}

fn body(response: &http::Response<Bytes>) -> String {
    String::from_utf8(response.body().to_vec()).unwrap()
}

fn ok_body(imds: &Ec2, path: &str) -> String {
    let response = get(imds, path);
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    body(&response)
}

fn token(imds: &Ec2, ttl: &str) -> String {
    let response = respond_at(
        imds,
        &request(
            Method::PUT,
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
        ),
        NOW,
    );
    assert_eq!(response.status(), StatusCode::OK);
    body(&response)
}

// Versions and listings.

#[test]
fn root_lists_versions_ending_with_latest() {
    let text = ok_body(&imds(), "/");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"1.0"));
    assert_eq!(lines.last(), Some(&"latest"));
    assert!(lines.contains(&"2021-07-15"));
    assert!(lines.contains(&"2024-04-11"));
    assert!(!text.ends_with('\n'));
}

#[test]
fn latest_lists_categories_with_and_without_slash() {
    let imds = imds();
    assert_eq!(ok_body(&imds, "/latest"), "dynamic\nmeta-data");
    assert_eq!(ok_body(&imds, "/latest/"), "dynamic\nmeta-data");
}

#[test]
fn latest_lists_user_data_when_configured() {
    let imds = imds_with(|instance| {
        instance.user_data = Some(Bytes::from_static(b"#cloud-config\n"));
    });
    assert_eq!(ok_body(&imds, "/latest/"), "dynamic\nmeta-data\nuser-data");
    let response = get(&imds, "/latest/user-data");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/octet-stream");
    assert_eq!(body(&response), "#cloud-config\n");
    assert_eq!(get(&imds, "/latest/user-data/").status(), StatusCode::OK);
}

#[test]
fn user_data_is_404_when_absent() {
    assert_eq!(
        get(&imds(), "/latest/user-data").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn dated_versions_serve_the_same_tree() {
    let imds = imds();
    assert_eq!(
        ok_body(&imds, "/2021-07-15/meta-data/instance-id"),
        ok_body(&imds, "/latest/meta-data/instance-id")
    );
    assert_eq!(
        ok_body(&imds, "/1.0/meta-data/"),
        ok_body(&imds, "/latest/meta-data/")
    );
}

#[test]
fn unknown_version_is_404() {
    assert_eq!(
        get(&imds(), "/2099-01-01/meta-data/").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn meta_data_lists_top_level_entries() {
    let text = ok_body(&imds(), "/latest/meta-data/");
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "block-device-mapping/",
        "hostname",
        "iam/",
        "instance-action",
        "instance-id",
        "instance-life-cycle",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "mac",
        "network/",
        "placement/",
        "profile",
        "reservation-id",
        "security-groups",
        "services/",
    ] {
        assert!(lines.contains(&expected), "missing {expected} in {text}");
    }
    for absent in ["public-ipv4", "public-hostname", "public-keys/", "tags/"] {
        assert!(!lines.contains(&absent), "{absent} listed without config");
    }
}

#[test]
fn directory_answers_with_and_without_trailing_slash() {
    let imds = imds();
    for path in [
        "/latest/meta-data",
        "/latest/meta-data/iam/security-credentials",
        "/latest/dynamic/instance-identity",
        "/latest/meta-data/placement",
    ] {
        assert_eq!(ok_body(&imds, path), ok_body(&imds, &format!("{path}/")));
    }
}

#[test]
fn leaf_with_trailing_slash_is_served() {
    let imds = imds();
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/instance-id/"),
        ok_body(&imds, "/latest/meta-data/instance-id")
    );
}

#[test]
fn interface_directory_lists_one_mac() {
    let imds = imds();
    let mac = ok_body(&imds, "/latest/meta-data/mac");
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/network/interfaces/macs/"),
        format!("{mac}/")
    );
    let interface = ok_body(
        &imds,
        &format!("/latest/meta-data/network/interfaces/macs/{mac}/"),
    );
    for leaf in [
        "device-number",
        "interface-id",
        "local-hostname",
        "local-ipv4s",
        "mac",
        "owner-id",
        "security-group-ids",
        "security-groups",
        "subnet-id",
        "subnet-ipv4-cidr-block",
        "vpc-id",
        "vpc-ipv4-cidr-block",
        "vpc-ipv4-cidr-blocks",
    ] {
        assert!(interface.lines().any(|line| line == leaf), "{leaf}");
    }
    let base = format!("/latest/meta-data/network/interfaces/macs/{mac}");
    assert_eq!(
        ok_body(&imds, &format!("{base}/local-ipv4s")),
        ok_body(&imds, "/latest/meta-data/local-ipv4")
    );
    assert_eq!(ok_body(&imds, &format!("{base}/owner-id")), "123456789012");
    assert!(ok_body(&imds, &format!("{base}/interface-id")).starts_with("eni-"));
}

#[test]
fn placement_and_services_leaves() {
    let imds = imds();
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/placement/"),
        "availability-zone\navailability-zone-id\nregion"
    );
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/placement/availability-zone"),
        "us-east-1a"
    );
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/placement/availability-zone-id"),
        "use1-az1"
    );
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/services/domain"),
        "amazonaws.com"
    );
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/services/partition"),
        "aws"
    );
    assert_eq!(ok_body(&imds, "/latest/meta-data/profile"), "default-hvm");
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/instance-life-cycle"),
        "on-demand"
    );
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/block-device-mapping/"),
        "ami\nroot"
    );
}

#[test]
fn public_leaves_are_404_without_a_public_address_and_served_with_one() {
    let imds = imds();
    assert_eq!(
        get(&imds, "/latest/meta-data/public-ipv4").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&imds, "/latest/meta-data/public-hostname").status(),
        StatusCode::NOT_FOUND
    );
    let public = imds_with(|instance| {
        instance.public_ipv4 = Some(std::net::Ipv4Addr::new(54, 1, 2, 3));
        instance.public_hostname = Some("ec2-54-1-2-3.compute-1.amazonaws.com".into());
    });
    assert_eq!(
        ok_body(&public, "/latest/meta-data/public-ipv4"),
        "54.1.2.3"
    );
    let mac = ok_body(&public, "/latest/meta-data/mac");
    assert_eq!(
        ok_body(
            &public,
            &format!("/latest/meta-data/network/interfaces/macs/{mac}/public-ipv4s")
        ),
        "54.1.2.3"
    );
}

#[test]
fn public_keys_list_index_and_name() {
    let imds = imds();
    assert_eq!(
        get(&imds, "/latest/meta-data/public-keys/").status(),
        StatusCode::NOT_FOUND
    );
    let with_key = imds_with(|instance| {
        instance.public_key = Some(PublicKey {
            name: "deploy".into(),
            openssh_key: "ssh-ed25519 AAAAC3Nza deploy".into(),
        });
    });
    assert_eq!(
        ok_body(&with_key, "/latest/meta-data/public-keys/"),
        "0=deploy"
    );
    assert_eq!(
        ok_body(&with_key, "/latest/meta-data/public-keys/0/openssh-key"),
        "ssh-ed25519 AAAAC3Nza deploy"
    );
}

#[test]
fn tags_are_served_only_when_configured() {
    let imds = imds();
    assert_eq!(
        get(&imds, "/latest/meta-data/tags/").status(),
        StatusCode::NOT_FOUND
    );
    let tagged = imds_with(|instance| {
        instance.tags = BTreeMap::from([
            ("Name".to_string(), "web-1".to_string()),
            ("Env".to_string(), "test".to_string()),
        ]);
    });
    assert_eq!(
        ok_body(&tagged, "/latest/meta-data/tags/instance"),
        "Env\nName"
    );
    assert_eq!(
        ok_body(&tagged, "/latest/meta-data/tags/instance/Name"),
        "web-1"
    );
    assert_eq!(
        get(&tagged, "/latest/meta-data/tags/instance/Missing").status(),
        StatusCode::NOT_FOUND
    );
}

// Errors and headers.

#[test]
fn unknown_path_is_404_with_the_real_page() {
    let response = get(&imds(), "/latest/meta-data/no-such-thing");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body(&response),
        responses::error_page(StatusCode::NOT_FOUND)
    );
    assert_eq!(response.headers()[CONTENT_TYPE], "text/plain");
}

#[test]
fn dot_segments_and_missing_long_paths_are_404() {
    let imds = imds();
    for path in [
        "/latest/meta-data/../meta-data/ami-id",
        "/latest/./meta-data",
        "/latest//meta-data",
        &format!("/latest/{}", "a".repeat(5000)),
    ] {
        assert_eq!(get(&imds, path).status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// Before, a fixed 1024-byte cap here answered 404 to every longer path, whatever
/// `--max-path-length` admitted: a served tag was unreachable, and the method and token checks
/// were skipped.
#[test]
fn a_long_path_is_routed_like_any_other() {
    let long_key = "k".repeat(1500);
    let tagged = imds_with_policy(TokenPolicy::Required, |instance| {
        instance.tags = BTreeMap::from([(long_key.clone(), "long".to_string())]);
    });
    let tag_path = format!("/latest/meta-data/tags/instance/{long_key}");
    let session = token(&tagged, "60");
    let with_token = [("X-aws-ec2-metadata-token", session.as_str())];
    let served = respond_at(&tagged, &request(Method::GET, &tag_path, &with_token), NOW);
    assert_eq!(served.status(), StatusCode::OK, "a 1500-byte tag key");
    assert_eq!(body(&served), "long");

    let missing = format!("/latest/meta-data/{}", "m".repeat(2000));
    let answered = |method: Method, headers: &[(&str, &str)]| {
        respond_at(&tagged, &request(method, &missing, headers), NOW).status()
    };
    assert_eq!(answered(Method::GET, &with_token), StatusCode::NOT_FOUND);
    assert_eq!(answered(Method::GET, &[]), StatusCode::UNAUTHORIZED);
    assert_eq!(
        answered(Method::POST, &with_token),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[test]
fn query_strings_are_ignored() {
    assert_eq!(
        ok_body(&imds(), "/latest/meta-data/instance-type?x=1"),
        "t3.micro"
    );
}

#[test]
fn every_response_has_server_type_and_length() {
    let imds = imds();
    for path in [
        "/",
        "/latest/meta-data/",
        "/latest/meta-data/ami-id",
        "/nope",
    ] {
        let response = get(&imds, path);
        assert_eq!(response.headers()[SERVER], "EC2ws");
        assert_eq!(response.headers()[CONTENT_TYPE], "text/plain");
        assert_eq!(
            response.headers()[CONTENT_LENGTH],
            response.body().len().to_string().as_str()
        );
    }
}

#[test]
fn head_is_answered_like_get_content_length_included() {
    let imds = imds();
    let got = get(&imds, "/latest/meta-data/instance-id");
    let head = respond_at(
        &imds,
        &request(Method::HEAD, "/latest/meta-data/instance-id", &[]),
        NOW,
    );
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers(), got.headers(), "Content-Length included");
    assert_eq!(head.body(), got.body(), "hyper drops it for a HEAD");
    let missing = respond_at(&imds, &request(Method::HEAD, "/nope", &[]), NOW);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()[CONTENT_LENGTH],
        get(&imds, "/nope").headers()[CONTENT_LENGTH]
    );
}

#[test]
fn other_methods_on_metadata_are_405_with_allow() {
    let imds = imds();
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let response = respond_at(
            &imds,
            &request(method.clone(), "/latest/meta-data/", &[]),
            NOW,
        );
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        assert_eq!(
            body(&response),
            responses::error_page(StatusCode::METHOD_NOT_ALLOWED)
        );
    }
}

// IMDSv2.

#[test]
fn token_put_returns_token_and_ttl_header() {
    let imds = imds();
    let response = respond_at(
        &imds,
        &request(
            Method::PUT,
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
        ),
        NOW,
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-aws-ec2-metadata-token-ttl-seconds"],
        "21600"
    );
    assert_eq!(response.headers()[SERVER], "EC2ws");
    assert!(!response.body().is_empty());
}

#[test]
fn token_put_with_bad_ttl_is_400() {
    let imds = imds();
    for headers in [
        vec![],
        vec![("X-aws-ec2-metadata-token-ttl-seconds", "0")],
        vec![("X-aws-ec2-metadata-token-ttl-seconds", "21601")],
        vec![("X-aws-ec2-metadata-token-ttl-seconds", "abc")],
    ] {
        let response = respond_at(
            &imds,
            &request(Method::PUT, "/latest/api/token", &headers),
            NOW,
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(body(&response).contains("400 - Missing or Invalid Parameters"));
    }
}

#[test]
fn token_put_with_forwarded_for_is_forbidden() {
    let response = respond_at(
        &imds(),
        &request(
            Method::PUT,
            "/latest/api/token",
            &[
                ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                ("X-Forwarded-For", "10.0.0.1"),
            ],
        ),
        NOW,
    );
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[test]
fn token_put_on_dated_version_is_forbidden() {
    let response = respond_at(
        &imds(),
        &request(
            Method::PUT,
            "/2021-03-23/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        ),
        NOW,
    );
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[test]
fn get_on_token_path_is_405_with_empty_body() {
    let response = get(&imds(), "/latest/api/token");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[ALLOW], "OPTIONS, PUT");
    assert_eq!(response.headers()[SERVER], "EC2ws");
    assert!(response.body().is_empty());
}

#[test]
fn optional_mode_serves_tokenless_requests() {
    assert_eq!(get(&imds(), "/latest/meta-data/").status(), StatusCode::OK);
}

#[test]
fn required_mode_rejects_tokenless_requests() {
    let response = get(&required(), "/latest/meta-data/");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(body(&response).contains("401 - Unauthorized"));
}

#[test]
fn required_mode_serves_requests_with_a_valid_token() {
    let imds = required();
    let token = token(&imds, "60");
    let response = respond_at(
        &imds,
        &request(
            Method::GET,
            "/latest/meta-data/instance-id",
            &[("X-aws-ec2-metadata-token", &token)],
        ),
        NOW,
    );
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn bad_or_expired_token_is_401_in_both_modes() {
    for imds in [imds(), required()] {
        let token = token(&imds, "60");
        let expired = respond_at(
            &imds,
            &request(
                Method::GET,
                "/latest/meta-data/",
                &[("X-aws-ec2-metadata-token", &token)],
            ),
            NOW + Duration::from_secs(61),
        );
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        let garbage = respond_at(
            &imds,
            &request(
                Method::GET,
                "/latest/meta-data/",
                &[("X-aws-ec2-metadata-token", "garbage")],
            ),
            NOW,
        );
        assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    }
}

// IAM and identity.

#[test]
fn security_credentials_lists_the_role_and_serves_ec2_json() {
    let imds = imds();
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/iam/security-credentials/"),
        "imds-tun"
    );
    let text = ok_body(&imds, "/latest/meta-data/iam/security-credentials/imds-tun");
    assert!(text.starts_with("{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \""));
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"'))
        .filter_map(|line| line.split('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "Code",
            "LastUpdated",
            "Type",
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration"
        ]
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["Type"], "AWS-HMAC");
    assert_eq!(json["LastUpdated"], "2025-03-01T10:00:00Z");
    assert_eq!(json["Expiration"], "2025-03-01T16:00:00Z");
    assert!(json["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
}

#[test]
fn extended_credentials_add_the_account_id() {
    let imds = imds();
    let text = ok_body(
        &imds,
        "/latest/meta-data/iam/security-credentials-extended/imds-tun",
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["AccountId"], "123456789012");
    assert_eq!(json["Code"], "Success");
}

#[test]
fn unknown_role_is_404() {
    let imds = imds();
    for path in [
        "/latest/meta-data/iam/security-credentials/other",
        "/latest/meta-data/iam/security-credentials-extended/other",
    ] {
        assert_eq!(get(&imds, path).status(), StatusCode::NOT_FOUND);
    }
}

#[test]
fn iam_info_names_the_instance_profile() {
    let imds = imds_with(|instance| instance.role_name = "web".into());
    assert_eq!(
        ok_body(&imds, "/latest/meta-data/iam/"),
        "info\nsecurity-credentials/"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok_body(&imds, "/latest/meta-data/iam/info")).unwrap();
    assert_eq!(
        json["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/web"
    );
    assert!(
        json["InstanceProfileId"]
            .as_str()
            .unwrap()
            .starts_with("AIPA")
    );
}

struct FailingSource;

impl CredentialSource for FailingSource {
    fn current(&self, _now: OffsetDateTime) -> Result<RoleCredentials, CredentialError> {
        Err(CredentialError {
            code: "AssumeRoleUnauthorizedAccess".into(),
            message: "EC2 cannot assume the role imds-tun.".into(),
        })
    }
}

#[test]
fn credential_failure_is_served_in_ec2_error_shape() {
    let imds = Ec2::started_at(
        &Instance::example(),
        TokenPolicy::Optional,
        Arc::new(FailingSource),
        START,
    );
    let text = ok_body(&imds, "/latest/meta-data/iam/security-credentials/imds-tun");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["Code"], "AssumeRoleUnauthorizedAccess");
    assert!(json["Message"].as_str().unwrap().contains("cannot assume"));
}

#[test]
fn dynamic_lists_identity_documents() {
    let imds = imds();
    assert_eq!(
        ok_body(&imds, "/latest/dynamic/"),
        "fws/\ninstance-identity/"
    );
    assert_eq!(
        ok_body(&imds, "/latest/dynamic/instance-identity/"),
        "document\npkcs7\nrsa2048\nsignature"
    );
}

#[test]
fn identity_document_agrees_with_meta_data() {
    let imds = imds_with(|instance| {
        instance.region = "eu-west-1".into();
        instance.availability_zone = "eu-west-1c".into();
        instance.availability_zone_id = "euw1-az3".into();
    });
    let text = ok_body(&imds, "/latest/dynamic/instance-identity/document");
    assert!(text.contains("\"instanceId\" : \""));
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    let leaf = |path: &str| ok_body(&imds, &format!("/latest/meta-data/{path}"));
    assert_eq!(document["instanceId"], leaf("instance-id"));
    assert_eq!(document["imageId"], leaf("ami-id"));
    assert_eq!(document["instanceType"], leaf("instance-type"));
    assert_eq!(document["privateIp"], leaf("local-ipv4"));
    assert_eq!(
        document["availabilityZone"],
        leaf("placement/availability-zone")
    );
    assert_eq!(document["region"], leaf("placement/region"));
    assert_eq!(
        document["accountId"],
        leaf(&format!("network/interfaces/macs/{}/owner-id", leaf("mac")))
    );
    assert_eq!(document["pendingTime"], "2025-03-01T09:00:00Z");
    assert_eq!(document["version"], "2017-09-30");
    assert!(document["kernelId"].is_null());
    assert!(document["billingProducts"].is_null());
    let architecture = document["architecture"].as_str().unwrap();
    assert!(["x86_64", "arm64", "i386"].contains(&architecture) || !architecture.is_empty());
}

#[test]
fn identity_document_is_stable_within_a_run() {
    let imds = imds();
    assert_eq!(
        ok_body(&imds, "/latest/dynamic/instance-identity/document"),
        ok_body(&imds, "/2016-09-02/dynamic/instance-identity/document")
    );
}

#[test]
fn imds_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Ec2>();
}

/// The mark the callers report and the metrics count: every read without a token, served
/// (optional mode) or refused (required mode); never a token request or a read with a token.
#[test]
fn tokenless_reads_are_marked_in_both_modes() {
    let marked = |imds: &Ec2, method: Method, path: &str, headers: &[(&str, &str)]| {
        let context = Context {
            request: request(method, path, headers),
            body: None,
            now: NOW,
            caller: None,
        };
        now_or_never(imds.answer(context))
            .expect("EC2 answers without waiting")
            .tokenless
    };
    for imds in [imds(), required()] {
        assert!(marked(&imds, Method::GET, "/latest/meta-data/", &[]));
        assert!(marked(&imds, Method::HEAD, "/latest/meta-data/ami-id", &[]));
        assert!(marked(&imds, Method::GET, "/no/such/version", &[]));
        let token = token(&imds, "60");
        let with_token = [("X-aws-ec2-metadata-token", token.as_str())];
        assert!(!marked(
            &imds,
            Method::GET,
            "/latest/meta-data/",
            &with_token
        ));
        let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "60")];
        assert!(!marked(&imds, Method::PUT, "/latest/api/token", &ttl));
        assert!(!marked(&imds, Method::GET, "/latest/api/token", &[]));
    }
}

/// `--max-token-ttl 60`: a PUT asking for six hours gets a token of 60 s, and says so.
#[test]
fn a_token_is_issued_for_at_most_the_max_ttl_and_its_header_says_so() {
    let imds = imds().with_max_token_ttl(60);
    let asked = |ttl: &str| {
        respond_at(
            &imds,
            &request(
                Method::PUT,
                "/latest/api/token",
                &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
            ),
            NOW,
        )
    };
    for (ttl, granted) in [("21600", "60"), ("60", "60"), ("30", "30")] {
        let response = asked(ttl);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response
                .headers()
                .get("x-aws-ec2-metadata-token-ttl-seconds")
                .map(|value| value.as_bytes()),
            Some(granted.as_bytes()),
            "asked {ttl}"
        );
    }
    let token = body(&asked("21600"));
    let read_at = |at: OffsetDateTime| {
        respond_at(
            &imds,
            &request(
                Method::GET,
                "/latest/meta-data/instance-id",
                &[("X-aws-ec2-metadata-token", &token)],
            ),
            at,
        )
        .status()
    };
    assert_eq!(read_at(NOW + Duration::from_secs(59)), StatusCode::OK);
    assert_eq!(
        read_at(NOW + Duration::from_secs(60)),
        StatusCode::UNAUTHORIZED
    );
}
