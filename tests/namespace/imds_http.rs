//! The EC2 metadata protocol as a client sees it through the TUN: IMDSv1/v2 token rules, status
//! codes, headers, listings and the values the configuration puts in. Checklist: section (b) of
//! the protocol reference notes; choices where EC2 is undocumented: `docs/metadata.md`.
#![cfg(target_os = "linux")]

use crate::common;

use common::http::{self, Connection, Request, Response};
use common::{METADATA, TempDir};

const INSTANCE_ID: &str = "i-0123456789abcdef0";

fn assert_status(response: &Response, status: u16, what: &str) {
    assert_eq!(
        response.status,
        status,
        "{what}: {} {} {:?}",
        response.status,
        response.reason,
        String::from_utf8_lossy(&response.body)
    );
}

fn assert_ec2ws(response: &Response, what: &str) {
    assert_eq!(
        response.header("server"),
        Some("EC2ws"),
        "{what}: {response:?}"
    );
}

#[test]
fn v1_get_is_served_in_optional_mode() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--instance-id", INSTANCE_ID]);
    let response = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/instance-id"));
    assert_status(&response, 200, "tokenless GET");
    assert_eq!(response.text(), INSTANCE_ID);
}

#[test]
fn v2_token_then_get_is_served() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--instance-id", INSTANCE_ID]);
    let response = namespace.run_in(|| async {
        let token = http::token(METADATA, 60).await;
        assert!(!token.is_empty(), "the token is the body");
        http::send(
            METADATA,
            &Request::get_with_token("/latest/meta-data/instance-id", &token),
        )
        .await
    });
    assert_status(&response, 200, "GET with token");
    assert_eq!(response.text(), INSTANCE_ID);
}

#[test]
fn required_mode_refuses_tokenless_get_and_serves_with_token() {
    let namespace = namespace!();
    let _child = common::start(
        &namespace,
        &["--imdsv2", "required", "--instance-id", INSTANCE_ID],
    );
    namespace.run_in(|| async {
        let tokenless = http::get(METADATA, "/latest/meta-data/instance-id").await;
        assert_status(&tokenless, 401, "tokenless GET in required mode");
        assert!(
            tokenless.text().contains("401 - Unauthorized"),
            "{tokenless:?}"
        );
        assert_ec2ws(&tokenless, "401");
        let token = http::token(METADATA, 21600).await;
        let with_token = http::send(
            METADATA,
            &Request::get_with_token("/latest/meta-data/instance-id", &token),
        )
        .await;
        assert_status(&with_token, 200, "GET with token in required mode");
        assert_eq!(with_token.text(), INSTANCE_ID);
    });
}

#[test]
fn token_put_without_ttl_is_a_bad_request() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let response = namespace
        .run_in(|| async { http::send(METADATA, &Request::put("/latest/api/token")).await });
    assert_status(&response, 400, "PUT without TTL");
    assert_ec2ws(&response, "400");
}

#[test]
fn token_put_with_ttl_out_of_range_or_not_a_number_is_a_bad_request() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        for ttl in ["0", "21601", "-1", "abc", "", "1.5", "99999999999999999999"] {
            let response = http::send(METADATA, &Request::token(ttl)).await;
            assert_status(&response, 400, &format!("PUT with TTL {ttl:?}"));
            assert_ec2ws(&response, "400");
        }
    });
}

#[test]
fn token_put_with_the_longest_ttl_echoes_the_ttl_header() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        for ttl in ["1", "21600"] {
            let response = http::send(METADATA, &Request::token(ttl)).await;
            assert_status(&response, 200, &format!("PUT with TTL {ttl}"));
            assert_eq!(
                response.header("x-aws-ec2-metadata-token-ttl-seconds"),
                Some(ttl),
                "{response:?}"
            );
            assert!(!response.body.is_empty(), "a token in the body");
            assert_ec2ws(&response, "token");
        }
    });
}

#[test]
fn token_put_with_forwarded_for_is_forbidden() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let response = namespace.run_in(|| async {
        let request = Request::token("21600").header("X-Forwarded-For", "203.0.113.7");
        http::send(METADATA, &request).await
    });
    assert_status(&response, 403, "PUT with X-Forwarded-For");
    assert_ec2ws(&response, "403");
}

#[test]
fn token_put_on_a_dated_path_is_forbidden() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let response = namespace.run_in(|| async {
        let request = Request::put("/2021-03-23/api/token")
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600");
        http::send(METADATA, &request).await
    });
    assert_status(&response, 403, "PUT /2021-03-23/api/token");
}

#[test]
fn token_get_is_method_not_allowed_with_allow_options_put() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let response = namespace.run_in(|| http::get(METADATA, "/latest/api/token"));
    assert_status(&response, 405, "GET /latest/api/token");
    assert_eq!(
        response.header("allow"),
        Some("OPTIONS, PUT"),
        "{response:?}"
    );
    assert_ec2ws(&response, "405");
    assert!(
        response.body.is_empty(),
        "empty body as on EC2: {response:?}"
    );
}

#[test]
fn bad_token_is_unauthorized_in_both_modes() {
    for mode in ["optional", "required"] {
        let namespace = namespace!();
        let _child = common::start(&namespace, &["--imdsv2", mode]);
        namespace.run_in(move || async move {
            for token in [
                "not-a-token",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ] {
                let response = http::send(
                    METADATA,
                    &Request::get_with_token("/latest/meta-data/instance-id", token),
                )
                .await;
                assert_status(&response, 401, &format!("{mode}: token {token:?}"));
                assert_ec2ws(&response, "401");
            }
        });
    }
}

#[test]
fn token_from_another_process_is_unauthorized() {
    let namespace = namespace!();
    let mut first = common::start(&namespace, &[]);
    let token = namespace.run_in(|| http::token(METADATA, 21600));
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.wait_exit(std::time::Duration::from_secs(8));
    namespace.wait_until_clean(std::time::Duration::from_secs(3));
    let _second = common::start(&namespace, &[]);
    let response = namespace.run_in(move || async move {
        http::send(
            METADATA,
            &Request::get_with_token("/latest/meta-data/instance-id", &token),
        )
        .await
    });
    assert_status(&response, 401, "a token issued before a restart");
}

#[test]
fn every_response_says_server_ec2ws() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let requests = [
            Request::get("/"),
            Request::get("/latest/"),
            Request::get("/latest/meta-data/"),
            Request::get("/latest/meta-data/instance-id"),
            Request::get("/latest/dynamic/instance-identity/document"),
            Request::get("/latest/no-such-thing"),
            Request::new("POST", "/latest/meta-data/"),
            Request::new("HEAD", "/latest/meta-data/"),
            Request::token("21600"),
            Request::token("0"),
            Request::get("/latest/api/token"),
            Request::get_with_token("/latest/meta-data/", "bad"),
        ];
        for request in &requests {
            let response = http::send(METADATA, request).await;
            assert_ec2ws(&response, &format!("{} {}", request.method, request.path));
        }
    });
}

#[test]
fn metadata_is_text_plain_and_user_data_is_octet_stream() {
    let namespace = namespace!();
    let files = TempDir::new();
    let user_data = b"#!/bin/sh\necho hello\n\x00\xff binary tail";
    let path = files.file("user-data", user_data);
    let _child = common::start(&namespace, &["--user-data", &path]);
    namespace.run_in(move || async move {
        for path in [
            "/latest/meta-data/",
            "/latest/meta-data/instance-id",
            "/latest/dynamic/instance-identity/document",
            "/latest/meta-data/iam/info",
        ] {
            let response = http::get(METADATA, path).await;
            assert_status(&response, 200, path);
            assert_eq!(
                response.header("content-type"),
                Some("text/plain"),
                "{path}"
            );
        }
        let response = http::get(METADATA, "/latest/user-data").await;
        assert_status(&response, 200, "user-data");
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream"),
            "{response:?}"
        );
        assert_eq!(
            response.body, user_data,
            "user-data is served byte for byte"
        );
        let listing = http::get(METADATA, "/latest/").await;
        assert!(
            listing.text().lines().any(|line| line == "user-data"),
            "{listing:?}"
        );
    });
}

#[test]
fn directory_answers_the_same_with_and_without_trailing_slash() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        for directory in [
            "/latest/meta-data",
            "/latest/meta-data/placement",
            "/latest/meta-data/iam/security-credentials",
            "/latest/dynamic/instance-identity",
        ] {
            let bare = http::get(METADATA, directory).await;
            let slashed = http::get(METADATA, &format!("{directory}/")).await;
            assert_status(&bare, 200, directory);
            assert_status(&slashed, 200, &format!("{directory}/"));
            assert_eq!(bare.body, slashed.body, "{directory}");
            assert!(!bare.body.is_empty(), "{directory} lists something");
        }
    });
}

#[test]
fn listing_suffixes_subdirectories_with_slash() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let response = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/"));
    assert_status(&response, 200, "meta-data/");
    let entries: Vec<&str> = response.text().lines().collect();
    for directory in [
        "placement/",
        "iam/",
        "network/",
        "services/",
        "block-device-mapping/",
    ] {
        assert!(entries.contains(&directory), "{directory} in {entries:?}");
    }
    for leaf in [
        "instance-id",
        "ami-id",
        "local-ipv4",
        "instance-type",
        "mac",
    ] {
        assert!(entries.contains(&leaf), "{leaf} in {entries:?}");
    }
    assert!(
        !response.text().contains("//") && !response.text().contains("/placement"),
        "immediate children only: {entries:?}"
    );
}

#[test]
fn unknown_path_is_404_with_the_ec2_not_found_page() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        for path in [
            "/latest/meta-data/no-such-leaf",
            "/latest/meta-data/placement/nothing",
            "/1999-01-01/meta-data/",
            "/latest/meta-data/iam/security-credentials/no-such-role",
        ] {
            let response = http::get(METADATA, path).await;
            assert_status(&response, 404, path);
            assert!(
                response.text().contains("<title>404 - Not Found</title>"),
                "{path}: {response:?}"
            );
            assert!(
                response.text().contains("<h1>404 - Not Found</h1>"),
                "{path}"
            );
            assert_ec2ws(&response, path);
        }
    });
}

#[test]
fn post_on_metadata_is_method_not_allowed() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        for method in ["POST", "PUT", "DELETE"] {
            let response = http::send(
                METADATA,
                &Request::new(method, "/latest/meta-data/instance-id"),
            )
            .await;
            assert_status(&response, 405, &format!("{method} on metadata"));
            assert_ec2ws(&response, method);
        }
    });
}

#[test]
fn head_has_content_length_but_no_body() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--instance-id", INSTANCE_ID]);
    namespace.run_in(|| async {
        let mut connection = Connection::open(METADATA).await;
        let head = connection
            .send(&Request::new("HEAD", "/latest/meta-data/instance-id"))
            .await;
        assert_status(&head, 200, "HEAD");
        assert_eq!(
            head.header("content-length"),
            Some(INSTANCE_ID.len().to_string().as_str()),
            "{head:?}"
        );
        // If any body bytes followed the HEAD response, they would corrupt the next response on
        // this keep-alive connection.
        let get = connection
            .send(&Request::get("/latest/meta-data/instance-id"))
            .await;
        assert_status(&get, 200, "GET after HEAD");
        assert_eq!(get.text(), INSTANCE_ID);
        assert_eq!(
            head.headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("date"))
                .collect::<Vec<_>>(),
            get.headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("date"))
                .collect::<Vec<_>>(),
            "HEAD has GET's headers"
        );
    });
}

#[test]
fn dated_version_serves_the_same_tree_as_latest() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--instance-id", INSTANCE_ID]);
    namespace.run_in(|| async {
        for leaf in [
            "meta-data/instance-id",
            "meta-data/",
            "dynamic/instance-identity/document",
        ] {
            let latest = http::get(METADATA, &format!("/latest/{leaf}")).await;
            let dated = http::get(METADATA, &format!("/2021-07-15/{leaf}")).await;
            assert_status(&latest, 200, leaf);
            assert_status(&dated, 200, leaf);
            assert_eq!(latest.body, dated.body, "{leaf}");
        }
        let versions = http::get(METADATA, "/").await;
        let versions: Vec<&str> = versions.text().lines().collect();
        assert!(versions.contains(&"2021-07-15"), "{versions:?}");
        assert_eq!(versions.first(), Some(&"1.0"), "{versions:?}");
        assert_eq!(versions.last(), Some(&"latest"), "{versions:?}");
    });
}

#[test]
fn identity_document_agrees_with_meta_data_leaves() {
    let namespace = namespace!();
    let _child = common::start(
        &namespace,
        &[
            "--instance-id",
            INSTANCE_ID,
            "--region",
            "eu-west-1",
            "--availability-zone",
            "eu-west-1b",
            "--instance-type",
            "m6g.large",
            "--account-id",
            "210987654321",
            "--local-ipv4",
            "172.31.20.7",
        ],
    );
    namespace.run_in(|| async {
        let document = http::get(METADATA, "/latest/dynamic/instance-identity/document").await;
        assert_status(&document, 200, "identity document");
        let document: serde_json::Value =
            serde_json::from_slice(&document.body).expect("the document is JSON");
        let pairs = [
            ("instanceId", "/latest/meta-data/instance-id"),
            ("region", "/latest/meta-data/placement/region"),
            (
                "availabilityZone",
                "/latest/meta-data/placement/availability-zone",
            ),
            ("privateIp", "/latest/meta-data/local-ipv4"),
            ("imageId", "/latest/meta-data/ami-id"),
            ("instanceType", "/latest/meta-data/instance-type"),
        ];
        for (field, path) in pairs {
            let leaf = http::get(METADATA, path).await;
            assert_status(&leaf, 200, path);
            assert_eq!(document[field], leaf.text(), "{field} vs {path}");
        }
        assert_eq!(document["instanceId"], INSTANCE_ID);
        assert_eq!(document["region"], "eu-west-1");
        assert_eq!(document["availabilityZone"], "eu-west-1b");
        assert_eq!(document["instanceType"], "m6g.large");
        assert_eq!(document["privateIp"], "172.31.20.7");
        assert_eq!(document["accountId"], "210987654321");
        // The account also appears as the interface owner.
        let mac = http::get(METADATA, "/latest/meta-data/mac").await;
        let owner = http::get(
            METADATA,
            &format!(
                "/latest/meta-data/network/interfaces/macs/{}/owner-id",
                mac.text()
            ),
        )
        .await;
        assert_status(&owner, 200, "owner-id");
        assert_eq!(document["accountId"], owner.text());
    });
}

#[test]
fn instance_tags_are_listed_and_served() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--tag", "Name=web", "--tag", "Team=a=b"]);
    namespace.run_in(|| async {
        let listing = http::get(METADATA, "/latest/meta-data/tags/instance/").await;
        assert_status(&listing, 200, "tags/instance/");
        let mut keys: Vec<&str> = listing.text().lines().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["Name", "Team"]);
        let name = http::get(METADATA, "/latest/meta-data/tags/instance/Name").await;
        assert_status(&name, 200, "tags/instance/Name");
        assert_eq!(name.text(), "web");
        let team = http::get(METADATA, "/latest/meta-data/tags/instance/Team").await;
        assert_eq!(
            team.text(),
            "a=b",
            "only the first = separates key and value"
        );
        let missing = http::get(METADATA, "/latest/meta-data/tags/instance/Nope").await;
        assert_status(&missing, 404, "unknown tag");
    });
}

/// `--max-path-length 4096` admits paths the metadata service used to cut at a fixed 1024 bytes
/// (404 for a served tag; 404 instead of 401 for a tokenless request in required mode).
#[test]
fn paths_up_to_max_path_length_are_served_past_1024_bytes() {
    let namespace = namespace!();
    let long_key = "k".repeat(1500);
    let _child = common::start(
        &namespace,
        &[
            "--max-path-length",
            "4096",
            "--imdsv2",
            "required",
            "--tag",
            &format!("{long_key}=long"),
        ],
    );
    let tag = format!("/latest/meta-data/tags/instance/{long_key}");
    namespace.run_in(move || async move {
        let token = http::token(METADATA, 60).await;
        let served = http::send(METADATA, &Request::get_with_token(&tag, &token)).await;
        assert_status(&served, 200, "a 1500-byte tag key");
        assert_eq!(served.text(), "long");

        let missing = format!("/latest/meta-data/{}", "m".repeat(2000));
        let absent = http::send(METADATA, &Request::get_with_token(&missing, &token)).await;
        assert_status(&absent, 404, "a missing 2000-byte path");
        let tokenless = http::get(METADATA, &missing).await;
        assert_status(
            &tokenless,
            401,
            "a tokenless 2000-byte path in required mode",
        );
        let too_long = format!("/latest/meta-data/{}", "m".repeat(4096));
        let refused = http::send(METADATA, &Request::get_with_token(&too_long, &token)).await;
        assert_status(&refused, 414, "beyond --max-path-length");
    });
}

#[test]
fn without_tags_the_tags_directory_is_absent() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let response = http::get(METADATA, "/latest/meta-data/tags/").await;
        assert_status(&response, 404, "tags/ without tags");
        let listing = http::get(METADATA, "/latest/meta-data/").await;
        assert!(
            !listing.text().lines().any(|line| line == "tags/"),
            "{listing:?}"
        );
    });
}

#[test]
fn config_file_is_honoured_and_flags_override_it() {
    let namespace = namespace!();
    let files = TempDir::new();
    let config = files.file(
        "config.json",
        br#"{
            "instance_id": "i-0fedcba9876543210",
            "region": "ap-southeast-2",
            "availability_zone": "ap-southeast-2c",
            "instance_type": "c7g.xlarge",
            "role_name": "from-file",
            "imdsv2": "required",
            "tag": ["Env=test"]
        }"#,
    );
    let _child = common::start(
        &namespace,
        &["--config", &config, "--instance-type", "t3.nano"],
    );
    namespace.run_in(|| async {
        let tokenless = http::get(METADATA, "/latest/meta-data/instance-id").await;
        assert_status(&tokenless, 401, "imdsv2 required from the file");
        let token = http::token(METADATA, 300).await;
        let get = |path: &'static str| {
            let token = token.clone();
            async move {
                let response = http::send(METADATA, &Request::get_with_token(path, &token)).await;
                assert_status(&response, 200, path);
                response.text().to_string()
            }
        };
        assert_eq!(
            get("/latest/meta-data/instance-id").await,
            "i-0fedcba9876543210"
        );
        assert_eq!(
            get("/latest/meta-data/placement/region").await,
            "ap-southeast-2"
        );
        assert_eq!(
            get("/latest/meta-data/placement/availability-zone").await,
            "ap-southeast-2c"
        );
        assert_eq!(
            get("/latest/meta-data/instance-type").await,
            "t3.nano",
            "flag wins"
        );
        assert_eq!(
            get("/latest/meta-data/iam/security-credentials/").await,
            "from-file"
        );
        assert_eq!(get("/latest/meta-data/tags/instance/Env").await, "test");
    });
}

#[test]
fn bad_config_file_exits_2_naming_the_field() {
    let namespace = namespace!();
    let files = TempDir::new();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "bad-id.json",
            br#"{"instance_id": "instance-1"}"#,
            "instance_id",
        ),
        ("bad-mtu.json", br#"{"mtu": 12}"#, "mtu"),
        (
            "unknown.json",
            br#"{"instance_idd": "i-0123456789abcdef0"}"#,
            "instance_idd",
        ),
    ];
    for (name, contents, field) in cases {
        let config = files.file(name, contents);
        let mut child = namespace.spawn(&["--config", &config]);
        let status = child.wait_exit(std::time::Duration::from_secs(5));
        common::assert_exit_code(&child, status, 2);
        let stderr = child.stderr();
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("imds-tun: "))
            .collect();
        assert_eq!(errors.len(), 1, "{name}: one error line; stderr:\n{stderr}");
        assert!(
            errors[0].contains(field),
            "{name}: names {field}: {}",
            errors[0]
        );
        assert!(namespace.tun_links().is_empty(), "{name}: nothing created");
    }
}

/// A browser page whose domain was rebound to 169.254.169.254 sends its own name as `Host`; it
/// must not read anything, least of all credentials. IP literals and `instance-data` still work.
#[test]
fn a_request_for_a_foreign_host_is_refused_as_dns_rebinding() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--role-name", "app"]);
    namespace.run_in(|| async {
        for path in [
            "/latest/meta-data/iam/security-credentials/app",
            "/latest/meta-data/instance-id",
        ] {
            let refused = http::send(
                METADATA,
                &Request::get(path).header("Host", "attacker.example"),
            )
            .await;
            assert_eq!(refused.status, 403, "{path}: {}", refused.text());
            assert!(
                !refused.text().contains("AccessKeyId"),
                "{}",
                refused.text()
            );
        }
        let token = http::send(
            METADATA,
            &Request::token("60").header("Host", "rebound.attacker.example:80"),
        )
        .await;
        assert_eq!(token.status, 403, "no token for a rebound page either");
        for host in ["169.254.169.254", "169.254.169.254:80", "instance-data"] {
            let served = http::send(
                METADATA,
                &Request::get("/latest/meta-data/instance-id").header("Host", host),
            )
            .await;
            assert_eq!(served.status, 200, "Host: {host}");
        }
    });
}
