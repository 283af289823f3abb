//! Faults on demand, end to end in a fresh network namespace: `imds-tun ctl fault` makes the
//! service fail, slow down, throttle (429 in each cloud's shape), stay silent or serve expired
//! credentials, and real SDKs (boto3 from `<repo>/.venv`, the AWS SDK for JavaScript's IMDS
//! credential provider from `tests/clients/node_modules`; `scripts/test.sh` installs both) are
//! watched while it lasts and after it ends. The worked examples of docs/metadata.md's Faults
//! section are run here as written.
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

/// The first ` ```sh ` block under `heading` in docs/metadata.md: a worked example a test runs.
fn worked_example(heading: &str) -> String {
    let docs = std::fs::read_to_string(repo().join("docs/metadata.md")).expect("docs/metadata.md");
    let after = docs
        .split_once(heading)
        .unwrap_or_else(|| panic!("docs/metadata.md has no {heading:?}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no sh block under {heading:?}"))
        .0;
    block.to_owned()
}

/// Asserts the worked example under `heading` shows `line`, the command a test runs, verbatim.
fn documented(heading: &str, line: &str) {
    let example = worked_example(heading);
    assert!(
        example.lines().any(|shown| shown.trim() == line.trim()),
        "the worked example {heading:?} no longer shows {line:?}:\n{example}"
    );
}

const THROTTLE_EXAMPLE: &str = "### Worked example: does my client back off when IMDS throttles?";

/// The status codes of three GETs in a row, as the worked example prints them.
const THREE_GETS: &str = "for i in 1 2 3; do \
    curl -s -o /dev/null -w '%{http_code}\\n' http://169.254.169.254/latest/meta-data/instance-id; \
done";

#[test]
fn the_worked_example_curl_sees_429_beyond_the_budget_and_200_after_the_fault() {
    let namespace = namespace!();
    let child = common::start(&namespace, &[]);
    documented(
        THROTTLE_EXAMPLE,
        "sudo imds-tun ctl fault --throttle 1 --for 10",
    );
    documented(THROTTLE_EXAMPLE, "for i in 1 2 3; do");
    documented(
        THROTTLE_EXAMPLE,
        "curl -s -o /dev/null -w '%{http_code}\\n' http://169.254.169.254/latest/meta-data/instance-id",
    );
    ctl_ok(&namespace, &["--throttle", "1", "--for", "10"]);
    let during = namespace.exec(&["sh", "-c", THREE_GETS]);
    assert_eq!(
        String::from_utf8_lossy(&during.stdout),
        "200\n429\n429\n",
        "one within the budget of 1 per second, then 429: {}",
        text(&during)
    );
    let status = namespace.exec(&[common::BINARY, "ctl", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(
        status["faults"][0]["throttle"], 1,
        "ctl status shows it: {status}"
    );
    child.wait_for_line(Duration::from_secs(15), |line| {
        line.contains("fault 1 expired")
    });
    let after = namespace.exec(&["sh", "-c", THREE_GETS]);
    assert_eq!(
        String::from_utf8_lossy(&after.stdout),
        "200\n200\n200\n",
        "{}",
        text(&after)
    );
}

/// One throttled request per cloud, each as `curl -si` shows it: EC2's, GCE's and Azure's 429.
const THROTTLED_PER_CLOUD: &str = "\
curl -s -o /dev/null http://169.254.169.254/latest/meta-data/instance-id; \
curl -si http://169.254.169.254/latest/meta-data/instance-id; echo '#'; \
curl -si -H 'Metadata-Flavor: Google' http://169.254.169.254/computeMetadata/v1/instance/id; echo '#'; \
curl -si -H 'Metadata: true' 'http://169.254.169.254/metadata/instance?api-version=2021-02-01'";

#[test]
fn a_throttled_request_gets_429_in_the_shape_of_its_cloud() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--gcp-project", "my-project"]);
    ctl_ok(&namespace, &["--throttle", "1", "--for", "30"]);
    let shown = namespace.exec(&["sh", "-c", THROTTLED_PER_CLOUD]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let answers: Vec<&str> = shown.split("#\n").collect();
    assert_eq!(answers.len(), 3, "{shown}");
    let (ec2, gce, azure) = (answers[0], answers[1], answers[2]);
    assert!(
        ec2.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{ec2}"
    );
    assert!(ec2.contains("server: EC2ws\r\n"), "{ec2}");
    assert!(
        ec2.contains("<title>429 - Too Many Requests</title>"),
        "EC2's error page: {ec2}"
    );
    assert!(
        gce.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{gce}"
    );
    assert!(gce.contains("metadata-flavor: Google\r\n"), "{gce}");
    assert!(gce.ends_with("\r\n\r\nToo Many Requests\n"), "{gce}");
    assert!(
        azure.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{azure}"
    );
    assert!(
        azure.ends_with("\r\n\r\n{\"error\":\"Too many requests\"}"),
        "{azure}"
    );
}

#[test]
fn a_throttle_per_caller_spares_other_users() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    ctl_ok(
        &namespace,
        &["--throttle", "1", "--per-caller", "--for", "30"],
    );
    let code = |prefix: &[String]| {
        let mut command: Vec<&str> = prefix.iter().map(String::as_str).collect();
        command.extend([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://169.254.169.254/latest/meta-data/instance-id",
        ]);
        String::from_utf8_lossy(&namespace.exec(&command).stdout).into_owned()
    };
    assert_eq!(code(&[]), "200", "root's budget");
    assert_eq!(code(&[]), "429", "root's budget is spent");
    assert_eq!(code(&common::nobody_prefix()), "200", "nobody's own budget");
    assert_eq!(code(&common::nobody_prefix()), "429");
}

/// botocore's fetcher, `num_attempts` from argv, logging what IMDS answered: prints the key or
/// `NONE`, how many answers were 429, and whether it extended an expired `Expiration` (its
/// "static stability"), and the expiry it keeps, `future` or `past`.
const BOTO3_WATCHED: &str = r#"
import datetime, io, logging, sys
from botocore.utils import InstanceMetadataFetcher
log = io.StringIO()
logger = logging.getLogger("botocore.utils")
logger.setLevel(logging.DEBUG)
logger.addHandler(logging.StreamHandler(log))
fetcher = InstanceMetadataFetcher(timeout=1, num_attempts=int(sys.argv[1]))
credentials = fetcher.retrieve_iam_role_credentials()
key = credentials.get("access_key", "NONE") if credentials else "NONE"
expiry = "none"
if credentials:
    at = datetime.datetime.strptime(credentials["expiry_time"], "%Y-%m-%dT%H:%M:%SZ")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    expiry = "future" if at > now else "past"
text = log.getvalue()
print(key, text.count("status code of 429"),
      "extended" if "expiration extension" in text else "as-served", expiry)
"#;

fn boto3_watched(test: &str, namespace: &Namespace, attempts: u32) -> Option<Vec<String>> {
    let python = repo().join(".venv/bin/python");
    if !python.exists() {
        common::skip_or_fail(test, ".venv is missing; scripts/test.sh creates it");
        return None;
    }
    let attempts = attempts.to_string();
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        python.to_str().expect("utf-8 path"),
        "-c",
        BOTO3_WATCHED,
        &attempts,
    ]);
    assert!(output.status.success(), "boto3: {}", text(&output));
    Some(
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn boto3_retries_a_429_at_once_reports_the_throttling_and_recovers_after_it() {
    let test = "boto3_retries_a_429_at_once_reports_the_throttling_and_recovers_after_it";
    let namespace = namespace!();
    let child = common::start(&namespace, &["--mock-credentials"]);
    // One request a second under iam/: the role name takes it, the credentials are throttled.
    ctl_ok(
        &namespace,
        &[
            "--throttle",
            "1",
            "--path",
            "/latest/meta-data/iam/",
            "--for",
            "5",
        ],
    );
    let Some(during) = boto3_watched(test, &namespace, 3) else {
        return;
    };
    // botocore retries every non-200 at once, without waiting: all three attempts meet the
    // spent budget, and it reports no credentials (its debug log names each 429).
    assert_eq!(during[..2], ["NONE", "3"], "{during:?}");
    child.wait_for_line(Duration::from_secs(10), |line| {
        line.contains("fault 1 expired")
    });
    let after = boto3_watched(test, &namespace, 3).expect("boto3");
    assert!(after[0].starts_with("ASIA"), "{after:?}");
    assert_eq!(after[1], "0", "no 429 after the fault: {after:?}");
}

/// The AWS SDK for JavaScript's IMDS provider, its warnings kept: the key, whether the
/// `expiration` it hands out is `future` or `past`, the `originalExpiration` it recorded, and
/// whether it extended the credentials (`extended`) or used them as served (`as-served`).
const JAVASCRIPT_WATCHED: &str = r#"
const { fromInstanceMetadata } = require('@aws-sdk/credential-provider-imds');
const warnings = [];
const logger = { warn: (m) => warnings.push(String(m)), info() {}, debug() {}, error() {} };
fromInstanceMetadata({ logger })()
  .then((c) => console.log([
    c.accessKeyId,
    c.expiration.getTime() > Date.now() ? 'future' : 'past',
    c.originalExpiration ? c.originalExpiration.toISOString() : 'none',
    warnings.some((w) => w.includes('expiration extension')) ? 'extended' : 'as-served',
  ].join(' ')))
  .catch((error) => console.log('ERROR ' + error.name));
"#;

fn javascript_watched(test: &str, namespace: &Namespace) -> Option<Vec<String>> {
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
        JAVASCRIPT_WATCHED,
    ]);
    assert!(output.status.success(), "node: {}", text(&output));
    Some(
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// `AccessKeyId` and `Expiration` of a credentials answer from `url`.
fn served_credentials(namespace: &Namespace, url: &str) -> (String, time::OffsetDateTime) {
    let output = namespace.exec(&["curl", "-sf", url]);
    assert!(output.status.success(), "{url}: {}", text(&output));
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let expiration = body["Expiration"].as_str().expect("an Expiration");
    (
        body["AccessKeyId"].as_str().expect("a key").to_owned(),
        time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 time"),
    )
}

const EXPIRED_EXAMPLE: &str =
    "### Worked example: does my SDK keep working on expired credentials?";

const EC2_CREDENTIALS: &str =
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun";

#[test]
fn the_worked_example_expired_credentials_keep_their_keys_and_both_sdks_use_them() {
    let test = "the_worked_example_expired_credentials_keep_their_keys_and_both_sdks_use_them";
    let namespace = namespace!();
    let child = common::start(&namespace, &["--mock-credentials", "--ecs"]);
    documented(
        EXPIRED_EXAMPLE,
        "sudo imds-tun ctl fault --expired-credentials --for 10",
    );
    documented(EXPIRED_EXAMPLE, &format!("curl -s {EC2_CREDENTIALS}"));
    let ecs = "http://169.254.170.2/v2/credentials/imds-tun";
    let (key, fresh) = served_credentials(&namespace, EC2_CREDENTIALS);
    let now = time::OffsetDateTime::now_utc();
    assert!(fresh > now, "fresh before the fault: {fresh}");

    ctl_ok(&namespace, &["--expired-credentials", "--for", "10"]);
    let (during_key, during) = served_credentials(&namespace, EC2_CREDENTIALS);
    assert_eq!(during_key, key, "the same keys");
    assert!(
        during < time::OffsetDateTime::now_utc(),
        "an Expiration in the past: {during}"
    );
    let (ecs_key, ecs_during) = served_credentials(&namespace, ecs);
    assert_eq!(ecs_key, key, "ECS serves the instance's role");
    assert_eq!(ecs_during, during, "the same past Expiration on ECS");
    let status = namespace.exec(&[common::BINARY, "ctl", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert!(
        status["expired_credentials"].is_string(),
        "ctl status shows it: {status}"
    );

    // Both SDKs use them (static stability): they extend the expiry by minutes and warn.
    let (Some(python), Some(node)) = (
        boto3_watched(test, &namespace, 1),
        javascript_watched(test, &namespace),
    ) else {
        return;
    };
    assert_eq!(python, [key.as_str(), "0", "extended", "future"], "boto3");
    assert_eq!(node[0], key, "the JS SDK: {node:?}");
    assert_eq!(node[1], "future", "the JS SDK extends the expiry: {node:?}");
    assert_eq!(node[3], "extended", "{node:?}");
    let original =
        time::OffsetDateTime::parse(&node[2], &time::format_description::well_known::Rfc3339)
            .expect("originalExpiration");
    assert_eq!(original, during, "it keeps what was served: {node:?}");

    child.wait_for_line(Duration::from_secs(15), |line| {
        line.contains("the expired-credentials fault ended")
    });
    let (after_key, after) = served_credentials(&namespace, EC2_CREDENTIALS);
    assert_eq!(after_key, key);
    assert!(
        after > time::OffsetDateTime::now_utc(),
        "fresh, a future Expiration: {after}"
    );
    let python_after = boto3_watched(test, &namespace, 1).expect("boto3");
    assert_eq!(python_after, [key.as_str(), "0", "as-served", "future"]);
    let node_after = javascript_watched(test, &namespace).expect("node");
    assert_eq!(
        node_after[1..],
        ["future", "none", "as-served"],
        "{node_after:?}"
    );
}

#[test]
fn a_scenario_throttles_and_expires_the_credentials_from_its_first_step() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let scenario = scratch.file(
        "trouble.json",
        br#"[
  {"at": "+0s", "command": "fault", "throttle": 1, "path": "/latest/meta-data/instance-id", "for": 60},
  {"at": "+0s", "command": "fault", "expired_credentials": true, "for": 60}
]"#,
    );
    let _child = common::start(&namespace, &["--mock-credentials", "--scenario", &scenario]);
    let codes = namespace.exec(&[
        "sh",
        "-c",
        "for i in 1 2; do curl -s -o /dev/null -w '%{http_code}\\n' \
         http://169.254.169.254/latest/meta-data/instance-id; done",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&codes.stdout),
        "200\n429\n",
        "{}",
        text(&codes)
    );
    let (_, expiration) = served_credentials(&namespace, EC2_CREDENTIALS);
    assert!(
        expiration < time::OffsetDateTime::now_utc(),
        "served expired: {expiration}"
    );
}
