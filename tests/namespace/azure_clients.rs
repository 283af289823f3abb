//! Azure IMDS through the TUN, read by Microsoft's own client in a fresh network namespace:
//! `azure-identity`'s `ManagedIdentityCredential` (from `<repo>/.venv`; `scripts/test.sh`
//! installs it; without it the tests skip, and under `CI=true` they fail), plus the instance
//! document and its error rules as any client meets them.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::PathBuf;

use common::{METADATA, Namespace, http, installed, repo, text};

fn python(test: &str) -> Option<PathBuf> {
    installed(test, repo().join(".venv/bin/python"))
}

const CLIENT: &str = r#"
import json, sys
from azure.identity import ManagedIdentityCredential
credential = ManagedIdentityCredential(**json.loads(sys.argv[1]))
token = credential.get_token("https://management.azure.com/.default")
print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
"#;

/// `ManagedIdentityCredential(**arguments).get_token(...)` in the namespace.
fn managed_identity_token(
    test: &str,
    namespace: &Namespace,
    arguments: &str,
) -> Option<Result<serde_json::Value, String>> {
    let python = python(test)?;
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        python.to_str().expect("utf-8 path"),
        "-c",
        CLIENT,
        arguments,
    ]);
    if String::from_utf8_lossy(&output.stderr).contains("No module named 'azure'") {
        common::skip_or_fail(
            test,
            "azure-identity is not installed in .venv; scripts/test.sh installs it",
        );
        return None;
    }
    Some(if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("the script prints JSON"))
    } else {
        Err(text(&output))
    })
}

#[test]
fn azure_identity_gets_a_managed_identity_token_from_the_users_command() {
    let test = "azure_identity_gets_a_managed_identity_token_from_the_users_command";
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    // What `az account get-access-token --resource R` prints, with the resource echoed back so
    // the test sees it arrive as one argument.
    let script = scratch.file(
        "az",
        br#"#!/bin/sh
expires=$(( $(date +%s) + 3000 ))
printf '{"accessToken":"eyJ.from-az.%s","expires_on":%s,"tokenType":"Bearer"}\n' "$4" "$expires"
"#,
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let command = format!("{script} account get-access-token --resource {{resource}}");
    let _child = common::start(&namespace, &["--azure-token-command", &command]);
    let Some(seen) = managed_identity_token(test, &namespace, "{}") else {
        return;
    };
    let seen = seen.unwrap_or_else(|error| panic!("azure-identity failed: {error}"));
    assert_eq!(
        seen["token"], "eyJ.from-az.https://management.azure.com",
        "the scope became the resource, passed as one argument: {seen}"
    );
    let expires_on = seen["expires_on"].as_i64().expect("expires_on");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (now + 2900..=now + 3010).contains(&expires_on),
        "the expiry az printed reaches the client: {expires_on} vs now {now} (a few seconds of\n         slack: the wall clock here can step)"
    );
}

#[test]
fn azure_identity_gets_a_fake_token_and_refuses_a_client_id_that_is_not_ours() {
    let test = "azure_identity_gets_a_fake_token_and_refuses_a_client_id_that_is_not_ours";
    let namespace = namespace!();
    let client_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let config = common::TempDir::new();
    let path = config.file(
        "imds-tun.json",
        format!(r#"{{"azure_client_id": "{client_id}"}}"#).as_bytes(),
    );
    let child = common::start(&namespace, &["--config", &path]);
    let Some(fake) = managed_identity_token(
        test,
        &namespace,
        &format!(r#"{{"client_id": "{client_id}"}}"#),
    ) else {
        return;
    };
    let fake = fake.unwrap_or_else(|error| panic!("azure-identity failed: {error}"));
    let token = fake["token"].as_str().expect("token");
    let claims = token.split('.').nth(1).expect("JWT-shaped");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
            .expect("base64url"),
    )
    .expect("JSON claims");
    assert_eq!(claims["imds_tun"], "fake", "{claims}");
    assert_eq!(claims["appid"], client_id, "{claims}");
    child.wait_for_line(common::READY_TIMEOUT, |line| {
        line.contains("served a FAKE managed identity token")
    });

    let other = managed_identity_token(
        test,
        &namespace,
        r#"{"client_id": "11111111-2222-4333-8444-555555555555"}"#,
    )
    .expect("azure-identity is installed");
    let error = other.expect_err("another identity's token is refused");
    assert!(error.contains("Identity not found"), "{error}");
}

#[test]
fn the_instance_document_and_the_protocol_errors_reach_any_client() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--azure-vm-name", "build-agent-7"]);
    let (document, leaf, no_header, no_version, ec2) = namespace.run_in(|| async {
        let metadata = |path: &str| http::Request::get(path).header("Metadata", "true");
        (
            http::send(
                METADATA,
                &metadata("/metadata/instance?api-version=2021-02-01"),
            )
            .await,
            http::send(
                METADATA,
                &metadata("/metadata/instance/compute/name?api-version=2021-02-01&format=text"),
            )
            .await,
            http::get(METADATA, "/metadata/instance?api-version=2021-02-01").await,
            http::send(METADATA, &metadata("/metadata/instance")).await,
            http::get(METADATA, "/latest/meta-data/instance-type").await,
        )
    });
    assert_eq!(document.status, 200, "{document:?}");
    let json: serde_json::Value = serde_json::from_slice(&document.body).expect("JSON");
    assert_eq!(json["compute"]["name"], "build-agent-7");
    assert_eq!(leaf.text(), "build-agent-7");
    assert_eq!(no_header.status, 400, "{no_header:?}");
    assert!(
        no_header
            .text()
            .contains("Required metadata header not specified")
    );
    assert_eq!(no_version.status, 400, "{no_version:?}");
    assert!(no_version.text().contains("newest-versions"));
    assert_eq!(ec2.status, 200, "EC2 still answers next to Azure: {ec2:?}");
}
