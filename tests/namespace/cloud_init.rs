//! cloud-init against imds-tun: Debian's cloud-init (unpacked, not installed; see
//! `tests/common/cloud_init.rs`) finds its EC2 datasource through the TUN as at boot on a Nitro
//! instance, reads the instance id, region and user-data imds-tun was given, and writes an
//! `instance-data.json` that `snapshot::cloud_init` turns back into the leaves imds-tun serves.
//!
//! `IMDS_TUN_WRITE_CLOUD_INIT_FIXTURE=1` makes
//! `instance_data_from_cloud_init_converts_to_the_leaves_imds_tun_serves` write the file it got
//! to `tests/fixtures/cloud-init/`, the fixture of the converter's unit tests.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;

use crate::common;

use common::cloud_init::{CloudInit, Crawl};
use common::{ImdsTun, Namespace, TempDir};
use imds_tun::snapshot::{self, LeafValue, Redaction};

const INSTANCE_ID: &str = "i-0123456789abcdef0";
const REGION: &str = "eu-west-1";
const USER_DATA: &[u8] = b"#cloud-config\nruncmd:\n  - [echo, imds-tun replayed me]\n";
const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMPHzKTEUvUM1dvl0dTzB8wNQYFQpDrbtXHwWcCmqM4z laptop";

/// An imds-tun unlike the defaults in every way cloud-init reports or writes down: region,
/// instance id, a tag, user-data, two security groups (a multi-line leaf), a key pair, a public
/// address, fake credentials, and IMDSv2 required (a tokenless request would fail the crawl).
fn start_instance(namespace: &Namespace, dir: &TempDir) -> ImdsTun {
    let user_data = dir.file("user-data", USER_DATA);
    let config = dir.file(
        "config.json",
        serde_json::json!({
            "security_groups": ["default", "web"],
            "public_key": {"name": "laptop", "openssh_key": PUBLIC_KEY},
        })
        .to_string()
        .as_bytes(),
    );
    common::start(
        namespace,
        &[
            "--config",
            &config,
            "--region",
            REGION,
            "--instance-id",
            INSTANCE_ID,
            "--tag",
            "Team=payments",
            "--user-data",
            &user_data,
            "--public-ipv4",
            "203.0.113.25",
            "--mock-credentials",
            "--imdsv2",
            "required",
        ],
    )
}

/// `curl` in the namespace with an IMDSv2 token: the body of `/latest/PATH`.
fn curl(namespace: &Namespace, path: &str) -> Vec<u8> {
    let token = namespace.exec(&[
        "curl",
        "-sSf",
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        "http://169.254.169.254/latest/api/token",
    ]);
    assert!(token.status.success(), "token: {}", common::text(&token));
    let token = String::from_utf8(token.stdout).expect("a token is text");
    let body = namespace.exec(&[
        "curl",
        "-sSf",
        "-H",
        &format!("X-aws-ec2-metadata-token: {token}"),
        &format!("http://169.254.169.254/latest/{path}"),
    ]);
    assert!(body.status.success(), "GET {path}: {}", common::text(&body));
    body.stdout
}

fn crawl(namespace: &Namespace, dir: &TempDir, cloud_init: &CloudInit) -> Crawl {
    let crawl = cloud_init.crawl(namespace, dir);
    assert_eq!(crawl.datasource, "DataSourceEc2", "{}", crawl.log);
    assert_eq!(crawl.cloud_name, "aws", "{}", crawl.log);
    crawl
}

#[test]
fn cloud_init_crawls_imds_tun_and_finds_instance_id_region_and_user_data() {
    let Some(cloud_init) = CloudInit::find(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let dir = TempDir::new();
    let _imds = start_instance(&namespace, &dir);

    let crawl = crawl(&namespace, &dir, &cloud_init);

    // The datasource's own view, as cloud-init's later stages and `cloud-init query` use it.
    assert!(crawl.used_imdsv2_token, "{}", crawl.log);
    assert_eq!(crawl.instance_id, INSTANCE_ID, "{}", crawl.log);
    assert_eq!(crawl.region, REGION, "{}", crawl.log);
    assert_eq!(crawl.availability_zone, "eu-west-1a", "{}", crawl.log);
    assert_eq!(
        String::from_utf8_lossy(&crawl.user_data),
        String::from_utf8_lossy(USER_DATA)
    );
    // And what it wrote down for everyone else.
    let data = &crawl.instance_data;
    assert_eq!(data["v1"]["instance_id"], INSTANCE_ID);
    assert_eq!(data["v1"]["region"], REGION);
    assert_eq!(data["v1"]["cloud_name"], "aws");
    assert_eq!(
        data["v1"]["public_ssh_keys"],
        serde_json::json!([PUBLIC_KEY])
    );
    let meta = &data["ds"]["meta-data"];
    assert_eq!(meta["tags"]["instance"]["Team"], "payments");
    assert_eq!(
        meta["security-groups"],
        serde_json::json!(["default", "web"])
    );
    assert_eq!(
        data["ds"]["dynamic"]["instance-identity"]["document"]["instanceId"],
        INSTANCE_ID
    );
    // Neither file holds the credentials imds-tun serves: cloud-init does not fetch them.
    let role = String::from_utf8(curl(&namespace, "meta-data/iam/security-credentials/"))
        .expect("role names are text");
    let credentials: serde_json::Value = serde_json::from_slice(&curl(
        &namespace,
        &format!("meta-data/iam/security-credentials/{role}"),
    ))
    .expect("credentials are JSON");
    let sensitive = crawl.instance_data_sensitive.to_string();
    for key in ["AccessKeyId", "SecretAccessKey", "Token"] {
        let secret = credentials[key].as_str().expect("a credential field");
        assert!(
            !crawl.instance_data_text.contains(secret),
            "{key} in instance-data.json"
        );
        assert!(
            !sensitive.contains(secret),
            "{key} in instance-data-sensitive.json"
        );
    }
}

#[test]
fn instance_data_from_cloud_init_converts_to_the_leaves_imds_tun_serves() {
    let Some(cloud_init) = CloudInit::find(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let dir = TempDir::new();
    let _imds = start_instance(&namespace, &dir);
    let crawl = crawl(&namespace, &dir, &cloud_init);
    if std::env::var_os("IMDS_TUN_WRITE_CLOUD_INIT_FIXTURE").is_some_and(|v| v == "1") {
        write_fixture(&crawl, &cloud_init);
    }

    // Through `load`, as `--replay FILE` reads it.
    let snapshot = snapshot::load(crawl.instance_data_text.as_bytes())
        .unwrap_or_else(|error| panic!("instance-data.json does not convert: {error}"));
    let tree = snapshot.ec2.expect("an EC2 tree");
    assert!(tree.imdsv2);

    let mac = String::from_utf8(curl(&namespace, "meta-data/mac")).expect("a MAC is text");
    let interface = format!("meta-data/network/interfaces/macs/{mac}");
    let paths = [
        "meta-data/instance-id".to_owned(),
        "meta-data/placement/region".to_owned(),
        "meta-data/placement/availability-zone".to_owned(),
        "meta-data/tags/instance/Team".to_owned(),
        "meta-data/security-groups".to_owned(),
        "meta-data/public-keys/0/openssh-key".to_owned(),
        "meta-data/public-ipv4".to_owned(),
        "meta-data/iam/info".to_owned(),
        "dynamic/instance-identity/document".to_owned(),
        format!("{interface}/security-group-ids"),
        format!("{interface}/ipv4-associations/203.0.113.25"),
    ];
    let mut differ = BTreeMap::new();
    for path in &paths {
        let served = curl(&namespace, path);
        let converted = tree.leaves.get(path.as_str()).and_then(|leaf| leaf.bytes());
        if converted != Some(served.as_slice()) {
            differ.insert(
                path.clone(),
                (
                    String::from_utf8_lossy(&served).into_owned(),
                    converted.map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
                ),
            );
        }
    }
    assert!(differ.is_empty(), "served vs converted: {differ:#?}");
    assert_eq!(
        tree.listings
            .get("meta-data/public-keys/")
            .map(String::as_str),
        Some(String::from_utf8_lossy(&curl(&namespace, "meta-data/public-keys/")).as_ref())
    );

    // The role under the name imds-tun serves it, its keys nowhere.
    let role = String::from_utf8(curl(&namespace, "meta-data/iam/security-credentials/"))
        .expect("role names are text");
    let credentials = tree
        .leaves
        .get(&format!("meta-data/iam/security-credentials/{role}"))
        .unwrap_or_else(|| {
            panic!(
                "no credentials leaf for role {role}: {:?}",
                tree.leaves.keys()
            )
        });
    assert_eq!(
        credentials.value,
        LeafValue::Redacted(Redaction::Credentials)
    );
    for signature in ["pkcs7", "rsa2048", "signature"] {
        let leaf = &tree.leaves[&format!("dynamic/instance-identity/{signature}")];
        assert_eq!(leaf.value, LeafValue::Redacted(Redaction::Signature));
    }
}

/// Writes the crawl's `instance-data.json` as the converter's unit-test fixture, with the
/// cloud-init version that wrote it.
fn write_fixture(crawl: &Crawl, cloud_init: &CloudInit) {
    let dir = common::repo().join("tests/fixtures/cloud-init");
    std::fs::create_dir_all(&dir).expect("creating tests/fixtures/cloud-init");
    std::fs::write(dir.join("instance-data.json"), &crawl.instance_data_text)
        .expect("writing the fixture");
    std::fs::write(
        dir.join("VERSION"),
        format!(
            "Written by Debian's cloud-init {} (DataSourceEc2, as on a Nitro instance) crawling\n\
             imds-tun in tests/namespace/cloud_init.rs; regenerate with\n\
             IMDS_TUN_WRITE_CLOUD_INIT_FIXTURE=1 cargo test --test namespace cloud_init::\n",
            cloud_init.version
        ),
    )
    .expect("writing the fixture's VERSION");
}

/// `--replay` takes the `instance-data.json` cloud-init wrote on one instance: a second
/// imds-tun serving it is, to cloud-init crawling again, the same instance (id, region, zone,
/// tag), with the role under the name cloud-init's file gives.
#[test]
fn replaying_cloud_init_s_instance_data_is_the_same_instance_to_cloud_init() {
    let Some(cloud_init) = CloudInit::find(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let dir = TempDir::new();
    let mut instance = start_instance(&namespace, &dir);
    let first = crawl(&namespace, &dir, &cloud_init);
    let role = String::from_utf8(curl(&namespace, "meta-data/iam/security-credentials/"))
        .expect("role names are text");
    instance.signal(nix::sys::signal::Signal::SIGTERM);
    let status = instance.wait_exit(std::time::Duration::from_secs(10));
    common::assert_exit_code(&instance, status, 0);

    let copied = dir.file("instance-data.json", first.instance_data_text.as_bytes());
    let _replayed = common::start(
        &namespace,
        &[
            "--replay",
            &copied,
            "--mock-credentials",
            "--imdsv2",
            "required",
        ],
    );
    let again = crawl(&namespace, &TempDir::new(), &cloud_init);
    assert!(again.used_imdsv2_token, "{}", again.log);
    assert_eq!(again.instance_id, INSTANCE_ID, "{}", again.log);
    assert_eq!(again.region, REGION, "{}", again.log);
    assert_eq!(again.availability_zone, "eu-west-1a", "{}", again.log);
    assert_eq!(
        again.instance_data["ds"]["meta-data"]["tags"]["instance"]["Team"],
        "payments"
    );
    assert_eq!(
        curl(&namespace, "meta-data/iam/security-credentials/"),
        role.as_bytes(),
        "the role's name"
    );
    let credentials: serde_json::Value = serde_json::from_slice(&curl(
        &namespace,
        &format!("meta-data/iam/security-credentials/{role}"),
    ))
    .expect("credentials are JSON");
    assert_eq!(credentials["Code"], "Success", "{credentials}");
}

/// The whole copy, as the issue puts it: `imds-tun record` on one instance, `--replay` of its
/// snapshot on another, and cloud-init booting there finds the recorded instance id, region
/// and user-data.
#[test]
fn cloud_init_finds_a_recorded_instance_in_its_replay() {
    let Some(cloud_init) = CloudInit::find(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let dir = TempDir::new();
    let mut instance = start_instance(&namespace, &dir);
    let snapshot = dir.path().join("snapshot.json");
    let snapshot = snapshot.to_str().expect("a UTF-8 path");
    let binary = common::binary();
    let recorded = namespace.exec(&[
        binary.to_str().expect("a UTF-8 path"),
        "record",
        "--out",
        snapshot,
    ]);
    assert!(recorded.status.success(), "{}", common::text(&recorded));
    instance.signal(nix::sys::signal::Signal::SIGTERM);
    let status = instance.wait_exit(std::time::Duration::from_secs(10));
    common::assert_exit_code(&instance, status, 0);

    let _replayed = common::start(
        &namespace,
        &[
            "--replay",
            snapshot,
            "--mock-credentials",
            "--imdsv2",
            "required",
        ],
    );
    let booted = crawl(&namespace, &TempDir::new(), &cloud_init);
    assert!(booted.used_imdsv2_token, "{}", booted.log);
    assert_eq!(booted.instance_id, INSTANCE_ID, "{}", booted.log);
    assert_eq!(booted.region, REGION, "{}", booted.log);
    assert_eq!(
        String::from_utf8_lossy(&booted.user_data),
        String::from_utf8_lossy(USER_DATA)
    );
    assert_eq!(
        booted.instance_data["ds"]["meta-data"]["tags"]["instance"]["Team"],
        "payments"
    );
}
