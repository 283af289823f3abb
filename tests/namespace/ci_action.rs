//! The GitHub Actions action (`action.yml`, its work in `scripts/action.sh`) run as a runner
//! runs it: `tests/action/runner.py` parses the action, fills in the inputs and expressions,
//! and runs each step with bash and the GITHUB_* files in a scratch runner directory, inside
//! a fresh network namespace. The start step must leave imds-tun serving with the flags the
//! inputs name, write its pid and log as outputs and nothing to GITHUB_ENV; the stop step
//! (the same action with `stop: true`) must print the callers report and leave nothing behind.
//!
//! These machines run as root without sudo: the action calls `sudo -n` only when it is not
//! root, so this test proves the root path; the sudo path is the same commands behind `sudo -n`.
//! Needs PyYAML in `.venv` (moto brings it; scripts/test.sh installs both).
#![cfg(target_os = "linux")]

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{METADATA, Namespace, TempDir, http, repo, text};

const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// `.venv`'s python with PyYAML, or `None` after a skip notice (a failure under `CI=true`).
fn python(test: &str) -> Option<PathBuf> {
    let python = common::installed(test, repo().join(".venv/bin/python"))?;
    let probe = Command::new(&python).args(["-c", "import yaml"]).output();
    if !probe.is_ok_and(|output| output.status.success()) {
        common::skip_or_fail(
            test,
            "PyYAML is missing from .venv (scripts/test.sh installs it)",
        );
        return None;
    }
    Some(python)
}

/// Runs the action in `namespace` with `inputs` (JSON), as a runner with its files in `runner`.
fn run_action(
    python: &PathBuf,
    namespace: &Namespace,
    runner: &TempDir,
    inputs: &serde_json::Value,
) -> (serde_json::Value, String) {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace.name()])
        .arg(python)
        .arg(repo().join("tests/action/runner.py"))
        .arg(repo())
        .arg(runner.path())
        .arg(inputs.to_string())
        .output()
        .expect("running tests/action/runner.py");
    assert!(output.status.success(), "{}", text(&output));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("runner.py's answer: {error}\n{}", text(&output)));
    (result, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn the_action_starts_imds_tun_with_its_inputs_exports_nothing_and_its_stop_reports_callers() {
    let Some(python) = python(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let runner = TempDir::new();
    let binary = common::binary().display().to_string();
    let inputs = serde_json::json!({
        "binary": binary,
        "mock-credentials": "true",
        "imdsv2": "required",
        "args": "--instance-id i-0ac7100ac7100ac71 --region eu-west-1",
    });
    let (started, log) = run_action(&python, &namespace, &runner, &inputs);
    assert_eq!(started["exit"], 0, "{started}\n{log}");
    let pid: i32 = started["outputs"]["pid"]
        .as_str()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid output: {started}"));
    assert!(
        PathBuf::from(format!("/proc/{pid}")).exists(),
        "imds-tun runs after the step: {started}\n{log}"
    );
    for file in ["GITHUB_ENV", "GITHUB_PATH"] {
        assert_eq!(started["files"][file], "", "{file} stays empty: {started}");
    }

    let (tokenless, instance_id, credentials) = namespace.run_in(|| async {
        let tokenless = http::get(METADATA, "/latest/meta-data/instance-id").await;
        let token = http::token(METADATA, 60).await;
        let instance_id = http::send(
            METADATA,
            &http::Request::get_with_token("/latest/meta-data/instance-id", &token),
        )
        .await;
        let credentials = http::send(
            METADATA,
            &http::Request::get_with_token(
                "/latest/meta-data/iam/security-credentials/imds-tun",
                &token,
            ),
        )
        .await;
        (tokenless, instance_id, credentials)
    });
    assert_eq!(tokenless.status, 401, "imdsv2: required was passed on");
    assert_eq!(
        instance_id.text(),
        "i-0ac7100ac7100ac71",
        "args were passed on"
    );
    let document: serde_json::Value =
        serde_json::from_slice(&credentials.body).expect("the credentials are JSON");
    let secret = document["SecretAccessKey"]
        .as_str()
        .unwrap_or_else(|| panic!("mock credentials: {document}"))
        .to_owned();
    let everything = format!("{started}");
    assert!(
        !everything.contains(&secret),
        "no runner file or output holds the secret key: {started}"
    );

    let (stopped, stop_log) = run_action(
        &python,
        &namespace,
        &runner,
        &serde_json::json!({ "binary": binary, "stop": "true" }),
    );
    assert_eq!(stopped["exit"], 0, "{stopped}\n{stop_log}");
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "imds-tun was stopped: {stop_log}"
    );
    // The one tokenless request above is the report's one caller, in the table `ctl callers`
    // printed before the stop and in the exit-time lines of the log printed after it.
    assert!(
        stop_log.contains("::group::imds-tun ctl callers") && stop_log.contains("TOKENLESS"),
        "{stop_log}"
    );
    assert!(
        stop_log.contains("IMDSv1 (tokenless) callers since start"),
        "{stop_log}"
    );
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}
