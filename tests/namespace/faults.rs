//! Faults on demand, end to end in a fresh network namespace: `imds-tun ctl fault` makes the
//! service fail, slow down or stay silent, and real SDKs (boto3 from `<repo>/.venv`, the AWS SDK
//! for JavaScript's IMDS credential provider from `tests/clients/node_modules`; `scripts/test.sh`
//! installs both) are watched while it lasts and after it ends.
#![cfg(target_os = "linux")]

use crate::common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Namespace, repo, text};

fn ctl(namespace: &Namespace, args: &[&str]) -> Output {
    let mut command = vec![common::BINARY, "ctl", "fault"];
    command.extend_from_slice(args);
    namespace.exec(&command)
}

fn ctl_ok(namespace: &Namespace, args: &[&str]) {
    let output = ctl(namespace, args);
    assert!(
        output.status.success(),
        "ctl fault {args:?}: {}",
        text(&output)
    );
}

/// boto3 asks IMDS for credentials once (botocore's fetcher: 1 s timeout, one retry) and
/// prints what it got: `KEY` or `NONE`, and whether it used a token.
const BOTO3: &str = r#"
import boto3, botocore.session, sys, logging
from botocore.utils import InstanceMetadataFetcher
fetcher = InstanceMetadataFetcher(timeout=1, num_attempts=1)
credentials = fetcher.retrieve_iam_role_credentials()
print(credentials.get("access_key", "NONE") if credentials else "NONE")
"#;

fn boto3(test: &str, namespace: &Namespace) -> Option<String> {
    let python = repo().join(".venv/bin/python");
    if !python.exists() {
        common::skip_or_fail(test, ".venv is missing; scripts/test.sh creates it");
        return None;
    }
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        python.to_str().expect("utf-8 path"),
        "-c",
        BOTO3,
    ]);
    if String::from_utf8_lossy(&output.stderr).contains("No module named 'boto3'") {
        common::skip_or_fail(
            test,
            "boto3 is not installed in .venv; scripts/test.sh installs it",
        );
        return None;
    }
    assert!(output.status.success(), "boto3: {}", text(&output));
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The AWS SDK for JavaScript's IMDS provider with its defaults (1 s timeout, no retries):
/// `KEY` or `ERROR <name>`.
const JAVASCRIPT: &str = r#"
const { fromInstanceMetadata } = require('@aws-sdk/credential-provider-imds');
fromInstanceMetadata()()
  .then((credentials) => console.log(credentials.accessKeyId))
  .catch((error) => console.log('ERROR ' + error.name));
"#;

fn javascript(test: &str, namespace: &Namespace) -> Option<String> {
    let modules = repo().join("tests/clients/node_modules");
    if !modules.join("@aws-sdk/credential-provider-imds").exists() {
        common::skip_or_fail(
            test,
            "@aws-sdk/credential-provider-imds is missing; scripts/test.sh installs it",
        );
        return None;
    }
    let node_path = format!("NODE_PATH={}", modules.display());
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        &node_path,
        "node",
        "-e",
        JAVASCRIPT,
    ]);
    assert!(output.status.success(), "node: {}", text(&output));
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn both_sdks_fail_during_a_500_on_the_credentials_path_and_recover_when_it_expires() {
    let test = "both_sdks_fail_during_a_500_on_the_credentials_path_and_recover_when_it_expires";
    let namespace = namespace!();
    let child = common::start(&namespace, &["--mock-credentials"]);
    ctl_ok(
        &namespace,
        &[
            "--status",
            "500",
            "--path",
            "/latest/meta-data/iam/",
            "--for",
            "4",
        ],
    );
    let started = Instant::now();
    let (Some(python_during), Some(node_during)) =
        (boto3(test, &namespace), javascript(test, &namespace))
    else {
        return;
    };
    assert_eq!(
        python_during, "NONE",
        "boto3 gets no credentials during the fault"
    );
    assert!(
        node_during.starts_with("ERROR"),
        "the JS SDK fails during the fault: {node_during}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "both asked while it lasted"
    );
    child.wait_for_line(Duration::from_secs(8), |line| {
        line.contains("fault 1 expired")
    });
    let python_after = boto3(test, &namespace).expect("boto3");
    let node_after = javascript(test, &namespace).expect("node");
    assert!(
        python_after.starts_with("ASIA"),
        "boto3 recovers: {python_after}"
    );
    assert!(
        node_after.starts_with("ASIA"),
        "the JS SDK recovers: {node_after}"
    );
}

#[test]
fn a_two_second_latency_outlasts_both_sdks_one_second_timeouts_until_cleared() {
    let test = "a_two_second_latency_outlasts_both_sdks_one_second_timeouts_until_cleared";
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--mock-credentials"]);
    ctl_ok(
        &namespace,
        &["--latency", "2000", "--path", "/latest/meta-data/iam/"],
    );
    let (Some(python_during), Some(node_during)) =
        (boto3(test, &namespace), javascript(test, &namespace))
    else {
        return;
    };
    assert_eq!(python_during, "NONE", "boto3 times out");
    assert!(
        node_during.starts_with("ERROR"),
        "the JS SDK times out: {node_during}"
    );
    ctl_ok(&namespace, &["clear"]);
    assert!(boto3(test, &namespace).expect("boto3").starts_with("ASIA"));
    assert!(
        javascript(test, &namespace)
            .expect("node")
            .starts_with("ASIA")
    );
}

#[test]
fn a_dropped_token_put_makes_boto3_fall_back_to_imdsv1() {
    let test = "a_dropped_token_put_makes_boto3_fall_back_to_imdsv1";
    let namespace = namespace!();
    let child = common::start(&namespace, &["--mock-credentials", "--imdsv2", "optional"]);
    ctl_ok(
        &namespace,
        &[
            "--drop",
            "100",
            "--method",
            "PUT",
            "--path",
            "/latest/api/token",
        ],
    );
    let Some(key) = boto3(test, &namespace) else {
        return;
    };
    assert!(key.starts_with("ASIA"), "boto3 falls back to IMDSv1: {key}");
    drop(child);

    // With IMDSv2 required there is no fallback to be had.
    let strict = namespace!();
    let _child = common::start(&strict, &["--mock-credentials", "--imdsv2", "required"]);
    ctl_ok(&strict, &["--drop", "100", "--method", "PUT"]);
    assert_eq!(boto3(test, &strict).expect("boto3"), "NONE");
}

#[test]
fn reset_closes_without_an_answer_and_other_paths_are_untouched() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    ctl_ok(
        &namespace,
        &["--reset", "100", "--path", "/latest/meta-data/ami-id"],
    );
    let reset = namespace.exec(&[
        "curl",
        "-s",
        "http://169.254.169.254/latest/meta-data/ami-id",
    ]);
    assert_eq!(
        reset.status.code(),
        Some(52),
        "curl: empty reply: {}",
        text(&reset)
    );
    let fine = namespace.exec(&[
        "curl",
        "-sf",
        "http://169.254.169.254/latest/meta-data/instance-id",
    ]);
    assert!(fine.status.success(), "{}", text(&fine));
    let list = ctl(&namespace, &["list"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(listed["faults"][0]["reset"], 100, "{listed}");
}

#[test]
fn an_unprivileged_user_cannot_set_a_fault() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let mut command: Vec<String> = common::nobody_prefix();
    command.extend([
        common::BINARY.to_owned(),
        "ctl".into(),
        "fault".into(),
        "--status".into(),
        "503".into(),
    ]);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let refused = namespace.exec(&command);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let fine = namespace.exec(&[
        "curl",
        "-sf",
        "http://169.254.169.254/latest/meta-data/instance-id",
    ]);
    assert!(fine.status.success(), "no fault was set: {}", text(&fine));
}

#[test]
fn the_worked_example_a_service_survives_a_30_second_credentials_outage() {
    let namespace = namespace!();
    let child = common::start(&namespace, &[]);
    ctl_ok(&namespace, &["--credential-source", "down", "--for", "30"]);
    let service = namespace.exec(&[
        "sh",
        "-c",
        "for i in $(seq 30); do \
             curl -sf http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun >/dev/null \
                 && echo ok || echo FAIL; \
             sleep 1; \
         done",
    ]);
    let lines = String::from_utf8_lossy(&service.stdout).into_owned();
    assert_eq!(lines.lines().count(), 30, "{lines}");
    assert!(lines.lines().all(|line| line == "ok"), "{lines}");
    child.wait_for_line(Duration::from_secs(10), |line| {
        line.contains("the credential-source outage ended")
    });
    assert!(
        child
            .stderr()
            .contains("took the credential source down for 30 s")
    );
}
