//! `imds-tun --replay FILE`, end to end in a fresh network namespace: the snapshot written by
//! hand that docs/replay.md shows (read from it) is served byte for byte, paths imds-tun does
//! not know included; credentials come under the recorded role name (boto3 from
//! `<repo>/.venv`, which `scripts/test.sh` creates); the identity document is the recorded one,
//! signed again with the documented key (checked with `openssl`); `--region` overrides the
//! recording and `--role-name` renames the role; `ctl spot` and `ctl fault` work on top; GCE
//! and Azure answer with the recorded documents; the curl commands docs/replay.md shows print
//! what their comments say; and a broken snapshot stops the start (and fails `--check`) with
//! one line naming the JSON path, exit 2, nothing left behind; under sudo a snapshot the
//! invoking user cannot read is refused.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{METADATA, Namespace, TempDir, http, repo, text};

/// The hand-written snapshot docs/replay.md shows: an instance in ap-south-1 with a role
/// `recorded-role`, a partition number and a directory imds-tun's own tree lacks, gzip
/// user-data, GCE and Azure.
fn documented_snapshot() -> String {
    let docs = std::fs::read_to_string(repo().join("docs/replay.md")).expect("docs/replay.md");
    let blocks = common::fenced_blocks(&docs, "## A snapshot written by hand", "\n## ");
    let snapshot = blocks.first().expect("the example snapshot").clone();
    serde_json::from_str::<serde_json::Value>(&snapshot).expect("the example is JSON");
    snapshot
}

/// The gzip of `hello` that `user-data` records as base64.
const USER_DATA: &[u8] = &[
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
    0x00, 0x86, 0xa6, 0x10, 0x36, 0x05, 0x00, 0x00, 0x00,
];

/// Writes `snapshot` into `dir` and returns its path.
fn snapshot_file(dir: &TempDir, snapshot: &str) -> String {
    let path = dir.path().join("snapshot.json");
    std::fs::write(&path, snapshot).expect("write the snapshot");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Starts imds-tun on `snapshot` with fake credentials and `extra` flags.
fn start(namespace: &Namespace, snapshot: &str, extra: &[&str]) -> common::ImdsTun {
    let mut args = vec!["--replay", snapshot, "--mock-credentials"];
    args.extend_from_slice(extra);
    common::start(namespace, &args)
}

/// GET `path` on 169.254.169.254 with `headers`.
fn get(namespace: &Namespace, path: &str, headers: &[(&str, &str)]) -> http::Response {
    let mut request = http::Request::get(path);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    namespace.run_in(move || async move { http::send(METADATA, &request).await })
}

/// The body of a 200 answer to `path` (EC2, no token) as text.
fn ec2(namespace: &Namespace, path: &str) -> String {
    let response = get(namespace, path, &[]);
    assert_eq!(response.status, 200, "{path}: {response:?}");
    response.text().to_owned()
}

fn ctl(namespace: &Namespace, args: &[&str]) {
    let mut command = vec![common::BINARY, "ctl"];
    command.extend_from_slice(args);
    let output = namespace.exec(&command);
    assert!(output.status.success(), "ctl {args:?}: {}", text(&output));
}

#[test]
fn recorded_and_hand_added_paths_are_served_byte_for_byte_and_listed() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start(
        &namespace,
        &snapshot_file(&dir, &documented_snapshot()),
        &[],
    );

    assert_eq!(
        ec2(&namespace, "/latest/meta-data/placement/partition-number"),
        "2"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/placement/"),
        "availability-zone\npartition-number\nregion"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/custom/x"),
        "added by hand"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/custom/"),
        "settings.json\nx"
    );
    let typed = get(&namespace, "/latest/meta-data/custom/settings.json", &[]);
    assert_eq!(typed.header("content-type"), Some("application/json"));
    assert_eq!(typed.text(), "{\"a\": 1}");
    // The recorded listing, byte for byte, with the directory added by hand after it.
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/"),
        "ami-launch-index\niam/\ninstance-id\ninstance-life-cycle\nplacement/\nservices/\ntags/\ncustom/"
    );
    assert_eq!(ec2(&namespace, "/latest/meta-data/ami-launch-index"), "3");
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/instance-id"),
        "i-0123456789abcdef0"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/tags/instance/Team"),
        "payments"
    );
    assert_eq!(ec2(&namespace, "/latest/meta-data/tags/instance"), "Team");
    // imds-tun's own paths the recording lacks are not served.
    assert_eq!(get(&namespace, "/latest/meta-data/mac", &[]).status, 404);

    let user_data = get(&namespace, "/latest/user-data", &[]);
    assert_eq!(user_data.status, 200);
    assert_eq!(user_data.body, USER_DATA);
    assert_eq!(
        user_data.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(ec2(&namespace, "/latest/"), "dynamic\nmeta-data\nuser-data");
}

/// Verifies `signature` and `pkcs7` over `document` with the documented certificate, as
/// docs/identity-signing.md does; `None` (after a skip notice) without `openssl`.
fn verify_with_documented_key(
    test: &str,
    document: &str,
    signature: &str,
    pkcs7: &str,
) -> Option<()> {
    if Command::new("openssl").arg("version").output().is_err() {
        common::skip_or_fail(
            test,
            "openssl is not installed; scripts/test.sh installs it",
        );
        return None;
    }
    let dir = TempDir::new();
    let at = |name: &str| dir.path().join(name);
    let certificate = repo().join("assets/identity/signing-cert.pem");
    std::fs::write(at("document"), document).expect("write");
    std::fs::write(
        at("pkcs7"),
        format!("-----BEGIN PKCS7-----\n{pkcs7}\n-----END PKCS7-----\n"),
    )
    .expect("write");
    let decoded = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .expect("the signature is base64")
    };
    std::fs::write(at("signature"), decoded).expect("write");
    let openssl = |args: &[&Path]| {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            text(&output)
        );
        output
    };
    let key = openssl(&[
        Path::new("x509"),
        Path::new("-pubkey"),
        Path::new("-noout"),
        Path::new("-in"),
        &certificate,
    ]);
    std::fs::write(at("key"), key.stdout).expect("write");
    let paths: [PathBuf; 4] = [at("key"), at("signature"), at("document"), at("pkcs7")];
    openssl(&[
        Path::new("dgst"),
        Path::new("-sha256"),
        Path::new("-verify"),
        &paths[0],
        Path::new("-signature"),
        &paths[1],
        &paths[2],
    ]);
    let encapsulated = openssl(&[
        Path::new("smime"),
        Path::new("-verify"),
        Path::new("-in"),
        &paths[3],
        Path::new("-inform"),
        Path::new("PEM"),
        Path::new("-certfile"),
        &certificate,
        Path::new("-noverify"),
    ]);
    assert_eq!(String::from_utf8_lossy(&encapsulated.stdout), document);
    Some(())
}

/// boto3's IMDS credential fetcher in the namespace: the access key it got, or `NONE`.
fn boto3(test: &str, namespace: &Namespace) -> Option<String> {
    const BOTO3: &str = r#"
from botocore.utils import InstanceMetadataFetcher
credentials = InstanceMetadataFetcher(timeout=1, num_attempts=1).retrieve_iam_role_credentials()
print(credentials.get("access_key", "NONE") if credentials else "NONE")
print(credentials.get("role_name", "NONE") if credentials else "NONE")
"#;
    let python = common::installed(test, repo().join(".venv/bin/python"))?;
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        python.to_str().expect("utf-8 path"),
        "-c",
        BOTO3,
    ]);
    assert!(output.status.success(), "boto3: {}", text(&output));
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn the_recorded_role_serves_credentials_and_the_document_is_signed_again() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start(
        &namespace,
        &snapshot_file(&dir, &documented_snapshot()),
        &[],
    );

    assert_eq!(
        ec2(&namespace, "/latest/meta-data/iam/security-credentials/"),
        "recorded-role"
    );
    let credentials: serde_json::Value = serde_json::from_str(&ec2(
        &namespace,
        "/latest/meta-data/iam/security-credentials/recorded-role",
    ))
    .expect("credentials JSON");
    assert_eq!(credentials["Code"], "Success");
    assert!(
        credentials["AccessKeyId"]
            .as_str()
            .is_some_and(|key| key.starts_with("ASIA")),
        "{credentials}"
    );
    if let Some(answer) = boto3(crate::test_name!(), &namespace) {
        let lines: Vec<&str> = answer.lines().collect();
        assert_eq!(lines.len(), 2, "{answer}");
        assert!(lines[0].starts_with("ASIA"), "boto3 got keys: {answer}");
        assert_eq!(lines[1], "recorded-role", "{answer}");
    }

    let document = ec2(&namespace, "/latest/dynamic/instance-identity/document");
    let recorded: serde_json::Value =
        serde_json::from_str(&documented_snapshot()).expect("the snapshot");
    assert_eq!(
        document,
        recorded["ec2"]["leaves"]["dynamic/instance-identity/document"]
            .as_str()
            .expect("the recorded document"),
        "the recorded document, byte for byte"
    );
    let signature = ec2(&namespace, "/latest/dynamic/instance-identity/signature");
    let pkcs7 = ec2(&namespace, "/latest/dynamic/instance-identity/pkcs7");
    verify_with_documented_key(crate::test_name!(), &document, &signature, &pkcs7);
}

#[test]
fn region_flag_overrides_the_recorded_region_in_placement_and_the_document() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start(
        &namespace,
        &snapshot_file(&dir, &documented_snapshot()),
        &["--region", "eu-west-1"],
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/placement/region"),
        "eu-west-1"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/placement/availability-zone"),
        "eu-west-1a"
    );
    // What the flag does not change stays as recorded.
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/placement/partition-number"),
        "2"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/instance-id"),
        "i-0123456789abcdef0"
    );
    let document = ec2(&namespace, "/latest/dynamic/instance-identity/document");
    let fields: serde_json::Value = serde_json::from_str(&document).expect("document JSON");
    assert_eq!(fields["region"], "eu-west-1", "{document}");
    assert_eq!(fields["availabilityZone"], "eu-west-1a", "{document}");
    assert_eq!(fields["instanceId"], "i-0123456789abcdef0", "{document}");
    assert_eq!(fields["accountId"], "210987654321", "{document}");
    let signature = ec2(&namespace, "/latest/dynamic/instance-identity/signature");
    let pkcs7 = ec2(&namespace, "/latest/dynamic/instance-identity/pkcs7");
    verify_with_documented_key(crate::test_name!(), &document, &signature, &pkcs7);
}

#[test]
fn ctl_spot_and_a_fault_work_on_a_replayed_tree() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start(
        &namespace,
        &snapshot_file(&dir, &documented_snapshot()),
        &[],
    );
    assert_eq!(
        get(&namespace, "/latest/meta-data/spot/instance-action", &[]).status,
        404
    );

    ctl(&namespace, &["spot", "--action", "terminate"]);
    let action: serde_json::Value =
        serde_json::from_str(&ec2(&namespace, "/latest/meta-data/spot/instance-action"))
            .expect("instance-action JSON");
    assert_eq!(action["action"], "terminate");
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/instance-life-cycle"),
        "spot"
    );
    assert!(
        ec2(&namespace, "/latest/meta-data/")
            .lines()
            .any(|line| line == "spot/"),
        "the listing gains spot/"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/custom/x"),
        "added by hand"
    );

    ctl(
        &namespace,
        &[
            "fault",
            "--status",
            "500",
            "--path",
            "/latest/meta-data/placement/",
            "--for",
            "30",
        ],
    );
    assert_eq!(
        get(
            &namespace,
            "/latest/meta-data/placement/partition-number",
            &[]
        )
        .status,
        500
    );
    assert_eq!(ec2(&namespace, "/latest/meta-data/ami-launch-index"), "3");

    ctl(&namespace, &["fault", "clear"]);
    ctl(&namespace, &["clear"]);
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/placement/partition-number"),
        "2"
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/instance-life-cycle"),
        "on-demand"
    );
}

#[test]
fn gce_and_azure_answer_with_the_recorded_documents_and_their_flags_override_them() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start(
        &namespace,
        &snapshot_file(&dir, &documented_snapshot()),
        &[
            "--gcp-instance-attribute",
            "env=dev",
            "--azure-location",
            "northeurope",
        ],
    );
    let google = [("Metadata-Flavor", "Google")];
    let gce = |path: &str| {
        let response = get(&namespace, path, &google);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        response.text().to_owned()
    };
    assert_eq!(
        gce("/computeMetadata/v1/project/project-id"),
        "recorded-project"
    );
    assert_eq!(gce("/computeMetadata/v1/instance/name"), "recorded-vm");
    assert_eq!(
        gce("/computeMetadata/v1/instance/attributes/team"),
        "payments"
    );
    assert_eq!(gce("/computeMetadata/v1/instance/attributes/env"), "dev");
    assert_eq!(
        gce("/computeMetadata/v1/instance/attributes/"),
        "env\nteam\n"
    );

    let azure = [("Metadata", "true")];
    let response = get(
        &namespace,
        "/metadata/instance?api-version=2021-02-01",
        &azure,
    );
    assert_eq!(response.status, 200, "{response:?}");
    let instance: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    assert_eq!(instance["compute"]["name"], "recorded-azure-vm");
    assert_eq!(instance["compute"]["vmSize"], "Standard_B2s");
    assert_eq!(instance["compute"]["location"], "northeurope");
    let name = get(
        &namespace,
        "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
        &azure,
    );
    assert_eq!(name.text(), "recorded-azure-vm");
}

#[test]
fn a_broken_snapshot_stops_the_start_with_one_line_naming_the_json_path() {
    let namespace = namespace!();
    let dir = TempDir::new();
    for (snapshot, path) in [
        (
            "{\"imds_tun_snapshot\": 1, \"ec2\": ",
            "$: not JSON (line 1, column ",
        ),
        (
            r#"{"imds_tun_snapshot": 1, "ec2": {"leaves": {"user-data": 42}}}"#,
            r#"$.ec2.leaves["user-data"]: "#,
        ),
    ] {
        let file = snapshot_file(&dir, snapshot);
        let mut child = namespace.spawn(&["--replay", &file, "--mock-credentials"]);
        let status = child.wait_exit(Duration::from_secs(10));
        common::assert_exit_code(&child, status, 2);
        let stderr = child.stderr();
        let lines: Vec<&str> = stderr.lines().filter(|line| !line.is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].starts_with("imds-tun: --replay "), "{stderr}");
        assert!(lines[0].contains(path), "names {path}: {stderr}");
        assert!(namespace.tun_links().is_empty(), "no TUN is left behind");
        // `--check` reports the same line as its failed settings check.
        let check = namespace.exec(&[common::BINARY, "--check", "--replay", &file]);
        let report = String::from_utf8_lossy(&check.stdout);
        let line = lines[0].trim_start_matches("imds-tun: ");
        assert!(
            report.contains(&format!("fail  settings: {line}")),
            "{report}"
        );
    }
    let not_json = {
        let file = snapshot_file(&dir, "not json at all");
        let mut child = namespace.spawn(&["--replay", &file]);
        let status = child.wait_exit(Duration::from_secs(10));
        common::assert_exit_code(&child, status, 2);
        child.stderr()
    };
    assert!(
        not_json.contains(": $: not JSON (line 1, column "),
        "{not_json}"
    );
    assert!(namespace.tun_links().is_empty(), "no TUN is left behind");
}

#[test]
fn role_name_flag_serves_the_credentials_under_another_name() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start(
        &namespace,
        &snapshot_file(&dir, &documented_snapshot()),
        &["--role-name", "flagged-role"],
    );
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/iam/security-credentials/"),
        "flagged-role"
    );
    let credentials: serde_json::Value = serde_json::from_str(&ec2(
        &namespace,
        "/latest/meta-data/iam/security-credentials/flagged-role",
    ))
    .expect("credentials JSON");
    assert_eq!(credentials["Code"], "Success");
    assert_eq!(
        get(
            &namespace,
            "/latest/meta-data/iam/security-credentials/recorded-role",
            &[]
        )
        .status,
        404
    );
    assert!(
        ec2(&namespace, "/latest/meta-data/iam/info").contains("instance-profile/flagged-role"),
        "iam/info names the new role"
    );
}

#[test]
fn the_documented_commands_print_what_their_comments_say() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start(
        &namespace,
        &snapshot_file(&dir, &documented_snapshot()),
        &[],
    );
    let docs = std::fs::read_to_string(repo().join("docs/replay.md")).expect("docs/replay.md");
    let blocks = common::fenced_blocks(&docs, "Served as it stands", "\n## ");
    let commands = blocks.first().expect("the curl commands");
    let shell = common::DocShell::new();
    let mut literal = 0;
    for line in commands.lines().filter(|line| !line.trim().is_empty()) {
        let (command, comment) = line
            .split_once("   # ")
            .expect("each line says what it prints");
        let printed = shell.run(&namespace, command);
        let comment = comment.trim();
        if comment.contains(' ') {
            assert!(!printed.is_empty(), "{command} prints something");
        } else {
            assert_eq!(printed, comment, "{command}");
            literal += 1;
        }
    }
    assert!(literal >= 5, "the values the comments promise are checked");
}

#[test]
fn under_sudo_a_snapshot_the_invoking_user_cannot_read_is_refused() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let file = snapshot_file(&dir, &documented_snapshot());
    let set_mode = |mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let under_sudo_as_nobody = common::Spawn {
        env: vec![
            ("SUDO_UID".into(), common::NOBODY.to_string()),
            ("SUDO_GID".into(), common::NOBODY.to_string()),
            ("SUDO_USER".into(), "nobody".into()),
        ],
        ..common::Spawn::default()
    };
    set_mode(0o600);
    let mut child = namespace.spawn_with(&["--replay", &file], &under_sudo_as_nobody);
    let status = child.wait_exit(Duration::from_secs(10));
    common::assert_exit_code(&child, status, 2);
    let stderr = child.stderr();
    assert!(
        stderr.contains(&format!("--replay {file}"))
            && stderr.contains("permission denied for user nobody"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("recorded-role"),
        "nothing of the file is shown: {stderr}"
    );
    assert!(namespace.tun_links().is_empty(), "nothing was created");
    drop(child);

    set_mode(0o644);
    let served = namespace.spawn_with(
        &["--replay", &file, "--mock-credentials"],
        &under_sudo_as_nobody,
    );
    served.wait_ready();
    assert_eq!(
        ec2(&namespace, "/latest/meta-data/placement/partition-number"),
        "2"
    );
}
