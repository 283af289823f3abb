//! Real credentials end to end: moto's STS server and imds-tun in one network namespace, and the
//! AWS SDK's own IMDS client fetching the role's keys through the TUN.
//!
//! ```text
//!  namespace ──────────────────────────────────────────────────────────────────────────┐
//!  │ test thread (setns): aws_config::imds::Client ──► 169.254.169.254 ──► imds-tun     │
//!  │                      aws_sdk_sts::Client ─┐                 │ AssumeRole /         │
//!  │                                           ▼                 ▼ GetSessionToken      │
//!  │                                  moto_server 127.0.0.1:5000 (records every request)│
//!  └────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! STS calls are counted from moto's request recorder (`MOTO_ENABLE_RECORDING`): one JSON line
//! per request with its body, whose `Action=` names the operation. That counts what reached
//! the server, independent of log formats and of moto's internal state.
//!
//! moto comes from `<repo>/.venv` (`scripts/test.sh` installs it). Without it the tests print
//! SKIPPED, and fail under `CI=true`.
#![cfg(target_os = "linux")]

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::imds::Client;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use common::{METADATA, Moto, Namespace, Spawn, TempDir, http};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/app";
const SESSION: &str = "e2e-session";
/// Long-term style source keys, as an IAM user has them. (Not moto's own example pair, which
/// its GetSessionToken hands out as the session's keys.)
const SOURCE_KEY: &str = "AKIAI44QH8DHBEXAMPLE";
const SOURCE_SECRET: &str = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY";
const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/app";

/// The environment imds-tun gets: moto as STS, long-term keys (or none), no config files.
fn sts_env(with_keys: bool) -> Spawn {
    let mut env = vec![
        ("AWS_ENDPOINT_URL_STS".to_owned(), Moto::endpoint()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("RUST_LOG".to_owned(), "info,imds_tun=debug".to_owned()),
    ];
    if with_keys {
        env.push(("AWS_ACCESS_KEY_ID".to_owned(), SOURCE_KEY.to_owned()));
        env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), SOURCE_SECRET.to_owned()));
    }
    Spawn {
        env,
        ..Spawn::default()
    }
}

/// The role credentials as the SDK's IMDS provider obtains them, through the TUN.
async fn sdk_credentials() -> Credentials {
    let client = Client::builder().build();
    ImdsCredentialsProvider::builder()
        .imds_client(client)
        .build()
        .provide_credentials()
        .await
        .expect("the SDK obtains role credentials from imds-tun")
}

/// `GetCallerIdentity` at moto, signed with `credentials`: the ARN STS says they belong to.
async fn caller_arn(credentials: Credentials) -> String {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(Moto::endpoint())
        .credentials_provider(credentials)
        .build();
    aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity at moto")
        .arn()
        .unwrap_or_default()
        .to_owned()
}

fn json(response: &http::Response) -> serde_json::Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", response.text()))
}

/// Secrets never reach imds-tun's log.
fn assert_no_secrets(log: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }
}

#[test]
fn assumed_role_credentials_reach_the_sdk_and_fifty_requests_make_one_call() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let Some(moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    let child = namespace.spawn_with(
        &["--role-arn", ROLE_ARN, "--role-session-name", SESSION],
        &sts_env(true),
    );
    child.wait_ready();
    let (credentials, arn, answers) = namespace.run_in(|| async {
        let credentials = sdk_credentials().await;
        let arn = caller_arn(credentials.clone()).await;
        let mut answers = Vec::new();
        for _ in 0..49 {
            answers.push(json(&http::get(METADATA, ROLE_PATH).await));
        }
        (credentials, arn, answers)
    });
    assert_ne!(credentials.access_key_id(), SOURCE_KEY);
    assert!(
        credentials.access_key_id().starts_with("ASIA"),
        "STS's temporary key id: {}",
        credentials.access_key_id()
    );
    assert!(credentials.session_token().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        arn,
        format!("arn:aws:sts::123456789012:assumed-role/app/{SESSION}")
    );
    for answer in &answers {
        assert_eq!(answer["Code"], "Success");
        assert_eq!(answer["AccessKeyId"], credentials.access_key_id());
    }
    // 1 SDK fetch + 49 raw requests: exactly one AssumeRole reached STS.
    assert_eq!(moto.count("AssumeRole"), 1, "{:?}", moto.actions());
    let log = child.stderr();
    assert!(
        log.contains("credentials: AssumeRole arn:aws:iam::123456789012:role/app"),
        "{log}"
    );
    assert_no_secrets(
        &log,
        &[
            SOURCE_SECRET,
            credentials.secret_access_key(),
            credentials.session_token().unwrap(),
        ],
    );
}

#[test]
fn long_term_keys_are_traded_for_a_session_token() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let Some(moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    let child = namespace.spawn_with(&[], &sts_env(true));
    child.wait_ready();
    let credentials = namespace.run_in(sdk_credentials);
    assert_ne!(credentials.access_key_id(), SOURCE_KEY);
    assert_ne!(credentials.secret_access_key(), SOURCE_SECRET);
    assert!(credentials.session_token().is_some_and(|t| !t.is_empty()));
    assert_eq!(moto.count("GetSessionToken"), 1, "{:?}", moto.actions());
    assert_eq!(moto.count("AssumeRole"), 0);
    let log = child.stderr();
    // The line names where the keys came from: the environment, not a profile (before issue
    // 23 it said `profile "default"` whatever the chain had used).
    assert!(
        log.contains(
            "credentials: GetSessionToken for 43200s with the long-term keys from the environment \
             (AWS_ACCESS_KEY_ID)"
        ),
        "{log}"
    );
    assert!(!log.contains("profile \"default\""), "{log}");
    assert_no_secrets(&log, &[SOURCE_SECRET]);
}

/// The `credentials:` line names the profile the chain read the keys from, and its file.
#[test]
fn the_credentials_line_names_the_profile_the_keys_came_from() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let Some(moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    let dir = TempDir::new();
    let config = dir.file("config", b"[profile dev]\nregion = us-east-1\n");
    let credentials = dir.file(
        "credentials",
        format!(
            "[dev]\naws_access_key_id = {SOURCE_KEY}\naws_secret_access_key = {SOURCE_SECRET}\n"
        )
        .as_bytes(),
    );
    let mut spawn = sts_env(false);
    spawn
        .env
        .push(("AWS_CONFIG_FILE".to_owned(), config.clone()));
    spawn.env.push((
        "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
        credentials.clone(),
    ));
    let child = namespace.spawn_with(&["--profile", "dev"], &spawn);
    child.wait_ready();
    let line = child.wait_for_line(Duration::from_secs(1), |line| {
        line.contains("credentials: ")
    });
    assert!(
        line.contains(&format!(
            "with the long-term keys from profile \"dev\" in {config} and {credentials}"
        )),
        "{line}"
    );
    assert!(!line.contains("environment"), "{line}");
    assert_eq!(moto.count("GetSessionToken"), 1, "{:?}", moto.actions());
}

#[test]
fn credentials_are_refreshed_before_they_expire_without_a_failed_answer() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let Some(moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    // 900 s credentials with an 899 s margin: a refresh one second after every call.
    let child = namespace.spawn_with(
        &[
            "--role-arn",
            ROLE_ARN,
            "--duration",
            "900",
            "--refresh-margin",
            "899",
        ],
        &sts_env(true),
    );
    child.wait_ready();
    let keys = namespace.run_in(|| async {
        let mut keys = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let answer = json(&http::get(METADATA, ROLE_PATH).await);
            assert_eq!(
                answer["Code"], "Success",
                "every answer during refreshes: {answer}"
            );
            let key = answer["AccessKeyId"].as_str().unwrap().to_owned();
            if keys.last() != Some(&key) {
                keys.push(key);
            }
            if keys.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        keys
    });
    assert!(
        keys.len() >= 2,
        "a new key id after a refresh: {keys:?}\n{}",
        child.stderr()
    );
    assert!(moto.count("AssumeRole") >= 2, "{:?}", moto.actions());
}

#[test]
fn sts_down_serves_the_last_good_credentials_then_the_ec2_error() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let Some(mut moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    // Test-only cap: every set expires 8 s after it was obtained (refresh due after 4 s).
    let child = namespace.spawn_with(
        &[
            "--role-arn",
            ROLE_ARN,
            "--credentials-max-lifetime",
            "8",
            "--retry-base-ms",
            "200",
        ],
        &sts_env(true),
    );
    child.wait_ready();
    let first = namespace.run_in(|| async { json(&http::get(METADATA, ROLE_PATH).await) });
    assert_eq!(first["Code"], "Success");
    moto.stop();
    let obtained = Instant::now();
    // Until expiry: the same keys, although every refresh fails.
    let (during, after, elapsed) = namespace.run_in(move || async move {
        let mut during = Vec::new();
        while obtained.elapsed() < Duration::from_secs(6) {
            during.push(json(&http::get(METADATA, ROLE_PATH).await));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let started = Instant::now();
        let after = http::get(METADATA, ROLE_PATH).await;
        (during, after, started.elapsed())
    });
    for answer in &during {
        assert_eq!(answer["Code"], "Success", "{answer}");
        assert_eq!(answer["AccessKeyId"], first["AccessKeyId"]);
    }
    assert_eq!(after.status, 200);
    let after = json(&after);
    assert_eq!(after["Code"], "AssumeRoleUnauthorizedAccess", "{after}");
    let message = after["Message"].as_str().unwrap();
    // The kind of failure, nothing of imds-tun's internals (every local process reads it).
    assert_eq!(
        message,
        "EC2 cannot assume the role app. imds-tun has no valid credentials: STS cannot be \
         reached; imds-tun's log says why"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "answered from memory: {elapsed:?}"
    );
    // Said when the keys expire (8 s after they were obtained, 2 s ago at most).
    child.wait_for_line(Duration::from_secs(10), |line| {
        line.contains("the last good credentials have expired")
    });
    let log = child.stderr();
    // Said once, as a person says it, with what is served; then once more when the last good
    // keys expire, with the count of failed attempts; never the SDK's Debug.
    let failed: Vec<&str> = log
        .lines()
        .filter(|line| {
            line.contains("failed: cannot reach STS at 127.0.0.1:5000: connection refused")
        })
        .filter(|line| !line.contains(" DEBUG "))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains("WARN"), "{log}");
    assert!(
        failed[0].contains("serving the last good credentials until"),
        "{log}"
    );
    let expired: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("the last good credentials have expired"))
        .collect();
    assert_eq!(expired.len(), 1, "{log}");
    assert!(expired[0].contains(" failed attempts since "), "{log}");
    assert_no_internals(&log);
    assert_no_secrets(
        &log,
        &[SOURCE_SECRET, first["SecretAccessKey"].as_str().unwrap()],
    );
}

/// What the SDK's error types look like in `Debug`, which no log line or answer may carry.
fn assert_no_internals(text: &str) {
    for internal in [
        "ConnectorError",
        "hyper_util",
        "ConnectError",
        "Os {",
        "kind:",
        "os error",
        "DispatchFailure",
    ] {
        assert!(!text.contains(internal), "{internal} in:\n{text}");
    }
}

/// Item 5 of issue 23: STS refusing connections is logged once, in words, with what is served,
/// not on every retry; the JSON served says only the kind of failure; when STS comes back, one
/// line says so with the count of failed attempts.
#[test]
fn sts_refused_is_said_once_in_words_never_served_and_its_end_counts_the_attempts() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    // moto's port, before moto runs: every call is refused.
    let child = namespace.spawn_with(
        &["--role-arn", ROLE_ARN, "--retry-base-ms", "200"],
        &sts_env(true),
    );
    child.wait_ready();
    // At least two attempts fail: ours start 0.2 s apart and double, but each may take the
    // SDK's own retry (a second try after about a second) before it counts as failed.
    std::thread::sleep(Duration::from_secs(3));
    let answer = namespace.run_in(|| async { http::get(METADATA, ROLE_PATH).await });
    let served = answer.text();
    assert_eq!(
        json(&answer)["Message"],
        "EC2 cannot assume the role app. imds-tun has no valid credentials: STS cannot be \
         reached; imds-tun's log says why",
        "{served}"
    );
    assert!(
        !served.contains("127.0.0.1") && !served.contains("NetworkError"),
        "{served}"
    );
    assert_no_internals(served);

    let Some(moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    let line = child.wait_for_line(Duration::from_secs(30), |line| {
        line.contains("new credentials")
    });
    let log = child.stderr();
    let failed: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("cannot reach STS at 127.0.0.1:5000: connection refused"))
        // Every retry is there at debug level (RUST_LOG=imds_tun=debug here), for who asks.
        .filter(|line| !line.contains(" DEBUG "))
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "the failure once, then its count with the recovery:\n{log}"
    );
    assert!(
        failed[0].contains("WARN")
            && failed[0].contains("AssumeRole arn:aws:iam::123456789012:role/app failed: "),
        "{log}"
    );
    let count: u32 = line
        .split("(after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of failed attempts in {line}"));
    assert!(count >= 2, "{line}");
    assert_no_internals(&log);
    let answer = namespace.run_in(|| async { json(&http::get(METADATA, ROLE_PATH).await) });
    assert_eq!(answer["Code"], "Success", "{answer}");
    assert!(moto.count("AssumeRole") >= 1);
}

#[test]
fn unreachable_sts_at_start_up_is_not_fatal() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    // Nothing listens on port 9 in the fresh namespace: every call is refused.
    let mut spawn = sts_env(true);
    spawn.env[0].1 = "http://127.0.0.1:9".to_owned();
    let started = Instant::now();
    let child = namespace.spawn_with(&["--role-arn", ROLE_ARN, "--retry-base-ms", "200"], &spawn);
    child.wait_ready();
    let ready_after = started.elapsed();
    let answer = namespace.run_in(|| async { json(&http::get(METADATA, ROLE_PATH).await) });
    assert_eq!(answer["Code"], "AssumeRoleUnauthorizedAccess", "{answer}");
    assert!(
        ready_after < Duration::from_secs(8),
        "start-up took {ready_after:?}"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("    start-up with an unreachable STS: {ready_after:?}\n").as_bytes(),
    );
    let log = child.stderr();
    assert!(
        log.contains("failed: cannot reach STS at 127.0.0.1:9: connection refused"),
        "{log}"
    );
    assert_no_internals(&log);
}

#[test]
fn no_credentials_anywhere_serves_fake_ones_quickly_and_never_asks_itself() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let spawn = Spawn {
        env: vec![
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("RUST_LOG".to_owned(), "info,imds_tun=debug".to_owned()),
        ],
        ..Spawn::default()
    };
    let started = Instant::now();
    let child = namespace.spawn_with(&[], &spawn);
    child.wait_ready();
    let ready_after = started.elapsed();
    assert!(
        ready_after < Duration::from_secs(5),
        "start-up took {ready_after:?}"
    );
    let warning = child.wait_for_line(Duration::from_secs(1), |line| line.contains("FAKE"));
    assert!(
        warning.contains("WARN") && warning.contains("no AWS credentials found"),
        "{warning}"
    );
    let answer = namespace.run_in(|| async {
        json(
            &http::get(
                METADATA,
                "/latest/meta-data/iam/security-credentials/imds-tun",
            )
            .await,
        )
    });
    assert_eq!(answer["Code"], "Success");
    assert!(
        answer["Token"]
            .as_str()
            .unwrap()
            .starts_with("aW1kcy10dW4tZmFrZ")
    );
    // The only request imds-tun ever served is the test's own one: it never asked itself.
    std::thread::sleep(Duration::from_millis(200));
    let log = child.stderr();
    let served = log
        .lines()
        .filter(|line| line.contains("request") && line.contains("path="))
        .count();
    assert_eq!(served, 1, "{log}");
}

#[test]
fn a_profile_whose_source_is_instance_metadata_never_reaches_imds_tun_itself() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let dir = TempDir::new();
    let config = dir.file(
        "config",
        format!("[profile loop]\nrole_arn = {ROLE_ARN}\ncredential_source = Ec2InstanceMetadata\n")
            .as_bytes(),
    );
    let spawn = Spawn {
        env: vec![
            ("AWS_CONFIG_FILE".to_owned(), config),
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                "/nonexistent/credentials".to_owned(),
            ),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            (
                "AWS_ENDPOINT_URL_STS".to_owned(),
                "http://127.0.0.1:9".to_owned(),
            ),
            ("RUST_LOG".to_owned(), "info,imds_tun=debug".to_owned()),
        ],
        ..Spawn::default()
    };
    let child = namespace.spawn_with(&["--profile", "loop", "--retry-base-ms", "100"], &spawn);
    child.wait_ready();
    // Let the background retries run a while: none of them may come back through the TUN.
    std::thread::sleep(Duration::from_secs(2));
    let answer = namespace.run_in(|| async {
        http::get(
            METADATA,
            "/latest/meta-data/iam/security-credentials/imds-tun",
        )
        .await
    });
    assert_eq!(answer.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let log = child.stderr();
    let served = log
        .lines()
        .filter(|line| line.contains("request") && line.contains("path="))
        .count();
    assert_eq!(
        served, 1,
        "only the test's own request reached imds-tun:\n{log}"
    );
}

/// Runs the binary without a namespace (the error comes before any device) and returns its exit
/// code, stderr and how long it took.
fn run_failing(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut command = Command::new("setsid");
    command.args(["-w", common::BINARY]).args(args);
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("running imds-tun under setsid");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn malformed_role_arn_exits_2_naming_the_flag() {
    let (code, stderr, took) = run_failing(
        &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--role-arn",
            "arn:aws:iam::123:role/app",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("imds-tun: --role-arn \"arn:aws:iam::123:role/app\""),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn unknown_profile_exits_2_with_the_known_ones() {
    let dir = TempDir::new();
    let config = dir.file("config", b"[default]\nregion = us-east-1\n[profile dev]\n");
    let (code, stderr, took) = run_failing(
        &["--no-tun", "--listen", "127.0.0.1:0", "--profile", "prod"],
        &[
            ("AWS_CONFIG_FILE", &config),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("imds-tun: --profile \"prod\": no such profile"),
        "{stderr}"
    );
    assert!(last.contains("default, dev"), "{stderr}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn mfa_serial_without_code_or_terminal_exits_2() {
    let dir = TempDir::new();
    let credentials = dir.file(
        "credentials",
        format!(
            "[default]\naws_access_key_id = {SOURCE_KEY}\naws_secret_access_key = {SOURCE_SECRET}\n"
        )
        .as_bytes(),
    );
    let (code, stderr, _) = run_failing(
        &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--role-arn",
            ROLE_ARN,
            "--mfa-serial",
            "arn:aws:iam::123456789012:mfa/alice",
        ],
        &[
            ("AWS_CONFIG_FILE", "/nonexistent/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", &credentials),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--mfa-serial arn:aws:iam::123456789012:mfa/alice: no --mfa-code"),
        "{stderr}"
    );
}

#[test]
fn role_arn_without_any_source_credentials_exits_2() {
    let (code, stderr, _) = run_failing(
        &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--role-arn",
            ROLE_ARN,
        ],
        &[
            ("AWS_CONFIG_FILE", "/nonexistent/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--role-arn arn:aws:iam::123456789012:role/app: no source credentials"),
        "{stderr}"
    );
}

/// RoleArns of the AssumeRole calls moto saw.
fn assumed_roles(moto: &Moto) -> Vec<String> {
    moto.bodies()
        .iter()
        .filter(|body| body.contains("Action=AssumeRole"))
        .filter_map(|body| {
            body.split('&')
                .find_map(|pair| pair.strip_prefix("RoleArn="))
                .map(|arn| arn.replace("%3A", ":").replace("%2F", "/"))
        })
        .collect()
}

#[test]
fn each_caller_gets_its_own_role_assumed_once_and_cannot_read_anothers() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let guest = namespace!();
    let Some(moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    namespace.link_guest(&guest, "10.77.0.1", "10.77.0.2");
    guest.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    let forwarding = namespace.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    assert!(forwarding.status.success(), "{forwarding:?}");
    let child = namespace.spawn_with(
        &[
            "--role-session-name",
            SESSION,
            "--caller-role",
            "uid:65534=arn:aws:iam::123456789012:role/batch",
            "--caller-role",
            "uid:4321=arn:aws:iam::123456789012:role/web",
            "--caller-role",
            "cidr:10.77.0.0/24=arn:aws:iam::123456789012:role/guest",
        ],
        &sts_env(true),
    );
    child.wait_ready();
    let base = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
    let read_as = |namespace: &Namespace, prefix: &[&str], path: &str| {
        let mut command: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
        command.extend([
            "curl".into(),
            "-s".into(),
            "-w".into(),
            "\n%{http_code}".into(),
            format!("{base}{path}"),
        ]);
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let output = namespace.exec(&command);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (code.to_owned(), body.to_owned())
    };
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let web = ["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups"];
    let key_of = |body: &str| -> String {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|json| json["AccessKeyId"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("credentials JSON: {body}"))
    };

    assert_eq!(
        read_as(&namespace, &nobody, "").1,
        "batch",
        "a caller lists only its role"
    );
    assert_eq!(read_as(&namespace, &web, "").1, "web");
    assert_eq!(read_as(&guest, &[], "").1, "guest");
    let batch = key_of(&read_as(&namespace, &nobody, "batch").1);
    let web_key = key_of(&read_as(&namespace, &web, "web").1);
    let guest_key = key_of(&read_as(&guest, &[], "guest").1);
    assert!(batch != web_key && web_key != guest_key && batch != guest_key);
    for _ in 0..5 {
        assert_eq!(
            key_of(&read_as(&namespace, &nobody, "batch").1),
            batch,
            "served from the cache"
        );
    }
    assert_eq!(
        read_as(&namespace, &web, "batch").0,
        "404",
        "another caller's role is a 404"
    );
    assert_eq!(read_as(&namespace, &nobody, "web").0, "404");

    let mut assumed = assumed_roles(&moto);
    assumed.sort();
    assert_eq!(
        assumed,
        [
            "arn:aws:iam::123456789012:role/batch",
            "arn:aws:iam::123456789012:role/guest",
            "arn:aws:iam::123456789012:role/web",
        ],
        "each role assumed exactly once, and no other"
    );
    // The audit line is written after the answer: a curl that reads twice on one connection,
    // 300 ms apart, still holds its socket when imds-tun looks for its process.
    let url = format!("{base}web");
    let mut held: Vec<&str> = web.to_vec();
    held.extend(["curl", "-s", "-o", "/dev/null", "--rate", "3/s", &url, &url]);
    let output = namespace.exec(&held);
    assert!(output.status.success(), "{output:?}");
    child.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("(curl) uid 4321 read role credentials web")
    });
}

#[test]
fn a_credential_source_outage_serves_the_last_good_keys_until_they_expire_then_ec2s_error() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let Some(_moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    let child = namespace.spawn_with(
        &[
            "--role-arn",
            ROLE_ARN,
            "--credentials-max-lifetime",
            "6",
            "--retry-base-ms",
            "200",
        ],
        &sts_env(true),
    );
    child.wait_ready();
    let read = |namespace: &Namespace| {
        namespace.run_in(|| async { json(&http::get(METADATA, ROLE_PATH).await) })
    };
    let first = read(&namespace);
    assert_eq!(first["Code"], "Success", "{first}");
    let key = first["AccessKeyId"].as_str().expect("key").to_owned();
    let down = namespace.exec(&[
        common::BINARY,
        "ctl",
        "fault",
        "--credential-source",
        "down",
    ]);
    assert!(down.status.success(), "{down:?}");

    // Until the keys expire, every answer is the same keys; then EC2's error.
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let answer = read(&namespace);
        if answer["Code"] != "Success" {
            break answer;
        }
        assert_eq!(
            answer["AccessKeyId"],
            key.as_str(),
            "no new keys during the outage"
        );
        assert!(Instant::now() < deadline, "the keys never expired");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        error["Message"]
            .as_str()
            .is_some_and(|message| message.contains("credential source is unreachable")),
        "{error}"
    );

    let clear = namespace.exec(&[common::BINARY, "ctl", "fault", "clear"]);
    assert!(clear.status.success(), "{clear:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = read(&namespace);
        if answer["Code"] == "Success" {
            assert_ne!(
                answer["AccessKeyId"],
                key.as_str(),
                "new keys after the outage"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no keys after the outage: {answer}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
