//! GCE metadata through the TUN, read by Google's own client libraries in a fresh network
//! namespace: Python `google-auth` (from `<repo>/.venv`) and Node `google-auth-library` (from
//! `tests/clients/node_modules`); `scripts/test.sh` installs both. Without them the tests say so
//! and skip, and under `CI=true` they fail.
//!
//! What is proved: the libraries detect the metadata server, read the project, get an access
//! token from a command the user names, and get an identity token that verifies against the
//! certificates imds-tun publishes. Python reaches the server by the name
//! `metadata.google.internal` through the one `/etc/hosts` line docs/metadata.md suggests (the
//! namespace's own hosts file: `ip netns exec` mounts `/etc/netns/NAME/hosts`), or by
//! `GCE_METADATA_HOST`. Node's gcp-metadata asks 169.254.169.254 and the name at once and gives
//! up when the name fails first, so it needs the hosts line (or `GCE_METADATA_HOST`) too.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};

use common::{METADATA, Namespace, http, installed, repo, text};

const PROJECT: &str = "imds-tun-e2e";

/// The `/etc/hosts` line docs/metadata.md and `--check` suggest. Node asks for the name with its
/// trailing dot, which the hosts file only matches when listed so.
const HOSTS_LINE: &str = imds_tun::doctor::GCE_HOSTS_LINE;

/// An executable script in a scratch directory that prints a recognisable access token.
fn token_command(directory: &Path) -> PathBuf {
    let script = directory.join("print-access-token");
    std::fs::write(&script, "#!/bin/sh\necho ya29.from-the-users-command\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    script
}

/// `/etc/netns/NAME/hosts`, which `ip netns exec` mounts over `/etc/hosts`; removed on drop.
struct NamespaceHosts(PathBuf);

impl NamespaceHosts {
    fn write(namespace: &Namespace, lines: &str) -> NamespaceHosts {
        let directory = Path::new("/etc/netns").join(namespace.name());
        std::fs::create_dir_all(&directory).expect("/etc/netns/NAME");
        std::fs::write(directory.join("hosts"), lines).expect("hosts");
        NamespaceHosts(directory)
    }
}

impl Drop for NamespaceHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PYTHON_CLIENT: &str = r#"
import json, sys
import google.auth
import google.auth.transport.requests as transport
from google.auth import compute_engine
from google.oauth2 import id_token

request = transport.Request()
credentials, project = google.auth.default()
credentials.refresh(request)
audience = "https://service.example.com"
identity = compute_engine.IDTokenCredentials(
    request, audience, use_metadata_identity_endpoint=True)
identity.refresh(request)
claims = id_token.verify_token(
    identity.token, request, audience=audience,
    certs_url="http://169.254.169.254/imds-tun/gce/certs")
print(json.dumps({
    "kind": type(credentials).__name__,
    "project": project,
    "token": credentials.token,
    "email": credentials.service_account_email,
    "claims": claims,
}))
"#;

fn run_python(test: &str, namespace: &Namespace, env: &[&str]) -> Option<serde_json::Value> {
    let python = installed(test, repo().join(".venv/bin/python"))?;
    let python = python.to_str().expect("utf-8 path");
    let mut command = vec!["env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent"];
    command.extend_from_slice(env);
    command.extend_from_slice(&[python, "-c", PYTHON_CLIENT]);
    let output = namespace.exec(&command);
    if !output.status.success()
        && String::from_utf8_lossy(&output.stderr).contains("No module named 'google'")
    {
        common::skip_or_fail(
            test,
            "google-auth is not installed in .venv; scripts/test.sh installs it",
        );
        return None;
    }
    assert!(
        output.status.success(),
        "google-auth failed: {}",
        text(&output)
    );
    Some(serde_json::from_slice(&output.stdout).expect("the script prints JSON"))
}

fn assert_python_saw_the_instance(seen: &serde_json::Value, email: &str) {
    assert_eq!(
        seen["kind"], "Credentials",
        "compute_engine credentials: {seen}"
    );
    assert_eq!(seen["project"], PROJECT, "{seen}");
    assert_eq!(seen["token"], "ya29.from-the-users-command", "{seen}");
    assert_eq!(seen["email"], email, "{seen}");
    assert_eq!(
        seen["claims"]["aud"], "https://service.example.com",
        "{seen}"
    );
    assert_eq!(
        seen["claims"]["iss"], "https://accounts.google.com",
        "{seen}"
    );
    assert_eq!(seen["claims"]["email"], email, "{seen}");
}

#[test]
fn python_google_auth_reads_project_tokens_and_a_verified_id_token_by_name() {
    let test = "python_google_auth_reads_project_tokens_and_a_verified_id_token_by_name";
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let command = token_command(scratch.path());
    let _hosts = NamespaceHosts::write(&namespace, &format!("127.0.0.1 localhost\n{HOSTS_LINE}\n"));
    let _child = common::start(
        &namespace,
        &[
            "--gcp-project",
            PROJECT,
            "--gcp-service-account",
            "app@imds-tun-e2e.iam.gserviceaccount.com",
            "--gcp-access-token-command",
            command.to_str().expect("utf-8 path"),
        ],
    );
    let Some(seen) = run_python(test, &namespace, &[]) else {
        return;
    };
    assert_python_saw_the_instance(&seen, "app@imds-tun-e2e.iam.gserviceaccount.com");
}

#[test]
fn python_google_auth_finds_the_server_with_gce_metadata_host_and_no_hosts_line() {
    let test = "python_google_auth_finds_the_server_with_gce_metadata_host_and_no_hosts_line";
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let command = token_command(scratch.path());
    let _child = common::start(
        &namespace,
        &[
            "--gcp-project",
            PROJECT,
            "--gcp-project-number",
            "123456789012",
            "--gcp-access-token-command",
            command.to_str().expect("utf-8 path"),
        ],
    );
    let Some(seen) = run_python(test, &namespace, &["GCE_METADATA_HOST=169.254.169.254"]) else {
        return;
    };
    assert_python_saw_the_instance(&seen, "123456789012-compute@developer.gserviceaccount.com");
}

const NODE_CLIENT: &str = r#"
const {GoogleAuth} = require('google-auth-library');
(async () => {
  const auth = new GoogleAuth({scopes: ['https://www.googleapis.com/auth/cloud-platform']});
  const client = await auth.getClient();
  const token = await client.getAccessToken();
  const project = await auth.getProjectId();
  const idClient = await auth.getIdTokenClient('https://service.example.com');
  const headers = await idClient.getRequestHeaders();
  const jwt = (headers.Authorization || headers.get?.('authorization') || '').replace('Bearer ', '');
  const claims = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
  console.log(JSON.stringify({kind: client.constructor.name, project, token: token.token, claims}));
})().catch((error) => { console.error(error); process.exit(1); });
"#;

#[test]
fn node_google_auth_library_reads_project_and_tokens_with_the_hosts_line() {
    let test = "node_google_auth_library_reads_project_and_tokens_with_the_hosts_line";
    let Some(modules) = installed(test, repo().join("tests/clients/node_modules")) else {
        return;
    };
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let command = token_command(scratch.path());
    // gcp-metadata races 169.254.169.254 against metadata.google.internal. and gives up if the
    // name fails first, as it does at once where it does not resolve.
    let _hosts = NamespaceHosts::write(&namespace, &format!("127.0.0.1 localhost\n{HOSTS_LINE}\n"));
    let _child = common::start(
        &namespace,
        &[
            "--gcp-project",
            PROJECT,
            "--gcp-access-token-command",
            command.to_str().expect("utf-8 path"),
        ],
    );
    let node_path = format!("NODE_PATH={}", modules.display());
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        &node_path,
        "node",
        "-e",
        NODE_CLIENT,
    ]);
    assert!(
        output.status.success(),
        "google-auth-library failed: {}",
        text(&output)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(seen["kind"], "Compute", "{seen}");
    assert_eq!(seen["project"], PROJECT, "{seen}");
    assert_eq!(seen["token"], "ya29.from-the-users-command", "{seen}");
    assert_eq!(
        seen["claims"]["aud"], "https://service.example.com",
        "{seen}"
    );
}

#[test]
fn ec2_is_unchanged_and_gce_requests_need_their_header_when_both_are_served() {
    let namespace = namespace!();
    let _child = common::start(
        &namespace,
        &[
            "--gcp-project",
            PROJECT,
            "--instance-id",
            "i-0123456789abcdef0",
        ],
    );
    let (ec2, versions, gce_without_header, gce_root) = namespace.run_in(|| async {
        (
            http::get(METADATA, "/latest/meta-data/instance-id").await,
            http::get(METADATA, "/").await,
            http::get(METADATA, "/computeMetadata/v1/project/project-id").await,
            http::send(
                METADATA,
                &http::Request::get("/").header("Metadata-Flavor", "Google"),
            )
            .await,
        )
    });
    assert_eq!(ec2.text(), "i-0123456789abcdef0", "{ec2:?}");
    assert!(
        versions.text().contains("latest"),
        "EC2 keeps / : {versions:?}"
    );
    assert_eq!(gce_without_header.status, 403, "{gce_without_header:?}");
    assert!(
        gce_without_header
            .text()
            .contains("Missing Metadata-Flavor:Google header.")
    );
    assert_eq!(gce_root.text(), "computeMetadata/\n", "{gce_root:?}");
    assert_eq!(gce_root.header("metadata-flavor"), Some("Google"));
}

#[test]
fn a_failing_token_command_is_a_503_and_a_log_line_without_the_output() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let script = scratch.path().join("fail");
    std::fs::write(
        &script,
        "#!/bin/sh\necho ya29.secret-that-must-not-be-logged\necho 'ERROR: not logged in' >&2\nexit 1\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let child = common::start(
        &namespace,
        &[
            "--gcp-project",
            PROJECT,
            "--gcp-access-token-command",
            script.to_str().expect("utf-8 path"),
        ],
    );
    let reply = namespace.run_in(|| async {
        http::send(
            METADATA,
            &http::Request::get("/computeMetadata/v1/instance/service-accounts/default/token")
                .header("Metadata-Flavor", "Google"),
        )
        .await
    });
    assert_eq!(reply.status, 503, "{reply:?}");
    let log = child.wait_for_line(common::READY_TIMEOUT, |line| {
        line.contains("GCE token unavailable")
    });
    assert!(
        log.contains("ERROR: not logged in"),
        "the cause is logged: {log}"
    );
    let everything = child.stderr();
    assert!(
        !everything.contains("secret-that-must-not-be-logged"),
        "stdout is never logged: {everything}"
    );
}

#[test]
fn the_token_command_runs_as_the_user_behind_sudo_not_root() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let script = scratch.path().join("whoami-token");
    std::fs::write(&script, "#!/bin/sh\necho \"ya29.uid-$(id -u)\"\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let under_sudo = common::Spawn {
        env: vec![
            ("SUDO_UID".into(), common::NOBODY.to_string()),
            ("SUDO_GID".into(), common::NOBODY.to_string()),
            ("SUDO_USER".into(), "nobody".into()),
        ],
        ..common::Spawn::default()
    };
    let child = namespace.spawn_with(
        &[
            "--gcp-project",
            PROJECT,
            "--gcp-access-token-command",
            script.to_str().expect("utf-8 path"),
        ],
        &under_sudo,
    );
    child.wait_ready();
    let reply = namespace.run_in(|| async {
        http::send(
            METADATA,
            &http::Request::get("/computeMetadata/v1/instance/service-accounts/default/token")
                .header("Metadata-Flavor", "Google"),
        )
        .await
    });
    assert_eq!(reply.status, 200, "{reply:?}");
    let token: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(
        token["access_token"],
        format!("ya29.uid-{}", common::NOBODY),
        "the command ran as the invoking user"
    );
}

#[test]
fn check_says_whether_gce_clients_find_the_server_by_name() {
    let namespace = namespace!();
    let check = |namespace: &Namespace| {
        let output = namespace.exec(&[common::BINARY, "--check", "--gcp-project", PROJECT]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let without = check(&namespace);
    assert!(
        without.contains(
            "warn  gce name: metadata.google.internal and metadata.google.internal. do not resolve"
        ),
        "{without}"
    );
    assert!(without.contains(HOSTS_LINE), "{without}");
    let _hosts = NamespaceHosts::write(&namespace, &format!("127.0.0.1 localhost\n{HOSTS_LINE}\n"));
    let with = check(&namespace);
    assert!(
        with.contains("ok    gce name: metadata.google.internal resolves to 169.254.169.254"),
        "{with}"
    );
}

#[test]
fn wait_for_change_holds_the_request_until_its_timeout_and_a_stale_etag_answers_at_once() {
    let namespace = namespace!();
    let _child = common::start(
        &namespace,
        &[
            "--gcp-project",
            PROJECT,
            "--gcp-instance-attribute",
            "mode=blue",
        ],
    );
    let (first, held, stale) = namespace.run_in(|| async move {
        let ask = |query: String| {
            http::Request::get(&format!(
                "/computeMetadata/v1/instance/attributes/mode?{query}"
            ))
            .header("Metadata-Flavor", "Google")
        };
        let first = http::send(METADATA, &ask(String::new())).await;
        let etag = first.header("etag").unwrap_or_default().to_owned();
        let started = std::time::Instant::now();
        let held = http::send(
            METADATA,
            &ask(format!(
                "wait_for_change=true&last_etag={etag}&timeout_sec=1"
            )),
        )
        .await;
        let held_for = started.elapsed();
        let started = std::time::Instant::now();
        let stale = http::send(
            METADATA,
            &ask("wait_for_change=true&last_etag=0123456789abcdef&timeout_sec=30".into()),
        )
        .await;
        (first, (held, held_for), (stale, started.elapsed()))
    });
    assert_eq!(first.text(), "blue", "{first:?}");
    let (held, held_for) = held;
    assert_eq!(held.text(), "blue", "{held:?}");
    assert!(
        held_for >= std::time::Duration::from_millis(950)
            && held_for < std::time::Duration::from_secs(5),
        "held for its timeout_sec of 1 s: {held_for:?}"
    );
    let (stale, stale_for) = stale;
    assert_eq!(stale.text(), "blue", "{stale:?}");
    assert!(
        stale_for < std::time::Duration::from_secs(2),
        "a stale etag answers at once: {stale_for:?}"
    );
}
