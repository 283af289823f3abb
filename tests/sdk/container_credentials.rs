//! The Rust SDK's container provider (`aws_config::ecs::EcsCredentialsProvider`) against
//! imds-tun's ECS endpoint (`--ecs`, 169.254.170.2) and EKS Pod Identity endpoint
//! (`--eks-pod-identity`, 169.254.170.23 and fd00:ec2::23), steered only by the variables
//! `imds-tun env` prints; and real STS (moto) behind two `--ecs-credentials` IDs.
//!
//! The provider reads its variables from the process environment, which a test must not change
//! (the tests of this crate run in parallel; see `common::isolate_sdk_from_host_config`). So it
//! runs in a child: this test binary itself, started in the test's namespace with a clean
//! environment holding the variables, running only [`ecs_provider_child`], which prints what
//! the provider got. Without its variable that function returns at once.
//!
//! What the provider does with an unknown ID or a wrong token is printed (`eprintln!`).
#![cfg(target_os = "linux")]

use crate::common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Instant;

use aws_config::ecs::EcsCredentialsProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_types::error::display::DisplayErrorContext;
use common::{Moto, Namespace, Spawn, TempDir, http, text};
use imds_tun::container_env::{INSTANCE_ROLE_ID, ecs_variables, eks_variables};

/// Set in the child's environment: run the provider.
const CHILD: &str = "IMDS_TUN_ECS_PROVIDER_CHILD";
/// The child's answer on stdout: this, then JSON (after libtest's `test ... ` on its line).
const ANSWER: &str = "ecs-provider-answer: ";

const ECS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 170, 2)),
    80,
);
const EKS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 170, 23)),
    80,
);
const POD_TOKEN: &str = "imds-tun-e2e-pod-identity-token";

/// Not a test of its own: the child the tests below start (see the module docs). Prints
/// `ecs-provider-answer: {"key": ...}` or `{"error": ...}`.
#[test]
fn ecs_provider_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        EcsCredentialsProvider::builder()
            .build()
            .provide_credentials()
            .await
    });
    let answer = match result {
        Ok(credentials) if credentials.session_token().is_some() => {
            serde_json::json!({"key": credentials.access_key_id()})
        }
        Ok(_) => serde_json::json!({"error": "credentials without a session token"}),
        Err(error) => serde_json::json!({"error": DisplayErrorContext(&error).to_string()}),
    };
    println!("{ANSWER}{answer}");
}

/// What the provider got in a child with only `variables` set: the key, or its error, and
/// how long it took.
fn rust_sdk(namespace: &Namespace, variables: &[(&str, String)]) -> (Option<String>, String, f64) {
    let me = std::env::current_exe().expect("the test binary");
    let mut command = vec![
        "env".to_owned(),
        "-i".to_owned(),
        "PATH=/usr/bin:/bin".to_owned(),
        "HOME=/nonexistent".to_owned(),
        "AWS_CONFIG_FILE=/nonexistent/config".to_owned(),
        "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials".to_owned(),
        format!("{CHILD}=1"),
    ];
    command.extend(
        variables
            .iter()
            .map(|(name, value)| format!("{name}={value}")),
    );
    command.extend(
        [
            me.to_str().expect("utf-8 path"),
            "--exact",
            "container_credentials::ecs_provider_child",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(str::to_owned),
    );
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = namespace.exec(&command);
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.split_once(ANSWER).map(|(_, answer)| answer))
        .unwrap_or_else(|| panic!("the child printed no answer: {}", text(&output)));
    let answer: serde_json::Value = serde_json::from_str(line).expect("JSON");
    (
        answer["key"].as_str().map(str::to_owned),
        answer["error"].as_str().unwrap_or_default().to_owned(),
        seconds,
    )
}

fn token_file(dir: &TempDir, name: &str, token: &str) -> String {
    let path = dir.file(name, token.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The JSON body at `path` on `address`, read raw (the reference the SDK is held to).
fn served(
    namespace: &Namespace,
    address: SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> serde_json::Value {
    let host = match address.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let mut request = http::Request::get(path).header("Host", &host);
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = namespace.run_in(move || async move { http::send(address, &request).await });
    assert_eq!(response.status, 200, "{path}: {response:?}");
    serde_json::from_slice(&response.body).expect("JSON")
}

#[test]
fn the_rust_sdk_reads_the_ecs_and_the_pod_identity_endpoints_and_fails_fast_on_a_wrong_token() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let dir = TempDir::new();
    let server_token = token_file(&dir, "server-token", POD_TOKEN);
    let _child = common::start(
        &namespace,
        &[
            "--mock-credentials",
            "--ipv6",
            "--ecs",
            "--eks-pod-identity",
            "--eks-pod-identity-token-file",
            &server_token,
        ],
    );
    let ecs_key = served(
        &namespace,
        ECS,
        &format!("/v2/credentials/{INSTANCE_ROLE_ID}"),
        None,
    )["AccessKeyId"]
        .clone();
    let eks_key =
        served(&namespace, EKS, "/v1/credentials", Some(POD_TOKEN))["AccessKeyId"].clone();
    let client_token = token_file(&dir, "client-token", POD_TOKEN);

    let (key, error, _) = rust_sdk(&namespace, &ecs_variables(INSTANCE_ROLE_ID));
    assert_eq!(key.as_deref(), ecs_key.as_str(), "ECS: {error}");
    let (key, error, _) = rust_sdk(&namespace, &eks_variables(&client_token, false));
    assert_eq!(key.as_deref(), eks_key.as_str(), "Pod Identity: {error}");
    let (key, error, _) = rust_sdk(&namespace, &eks_variables(&client_token, true));
    assert_eq!(
        key.as_deref(),
        eks_key.as_str(),
        "Pod Identity over IPv6: {error}"
    );

    let wrong = token_file(&dir, "wrong-token", "not-the-token");
    for (what, variables) in [
        ("unknown ECS ID", ecs_variables("no-such-id")),
        ("wrong Pod Identity token", eks_variables(&wrong, false)),
    ] {
        let (key, error, seconds) = rust_sdk(&namespace, &variables);
        eprintln!("{what}: aws-config EcsCredentialsProvider failed after {seconds:.2} s: {error}");
        assert_eq!(key, None, "{what}");
        assert!(!error.is_empty(), "{what}");
        assert!(seconds < 5.0, "{what}: {seconds} s");
    }
}

const SOURCE_KEY: &str = "AKIAI44QH8DHBEXAMPLE";
const SOURCE_SECRET: &str = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY";

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

#[test]
fn two_ecs_ids_get_two_assumed_roles_each_assumed_once() {
    common::isolate_sdk_from_host_config();
    let namespace = namespace!();
    let Some(moto) = Moto::start(&namespace, test_name!()) else {
        return;
    };
    let spawn = Spawn {
        env: vec![
            ("AWS_ENDPOINT_URL_STS".to_owned(), Moto::endpoint()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), SOURCE_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), SOURCE_SECRET.to_owned()),
        ],
        ..Spawn::default()
    };
    let child = namespace.spawn_with(
        &[
            "--ecs",
            "--role-session-name",
            "e2e-session",
            "--ecs-credentials",
            "alpha=arn:aws:iam::123456789012:role/alpha",
            "--ecs-credentials",
            "beta=arn:aws:iam::123456789012:role/beta",
        ],
        &spawn,
    );
    child.wait_ready();
    let mut arns = Vec::new();
    for id in ["alpha", "beta"] {
        let (key, error, _) = rust_sdk(&namespace, &ecs_variables(id));
        let path = format!("/v2/credentials/{id}");
        let mut bodies: Vec<serde_json::Value> = (0..5)
            .map(|_| served(&namespace, ECS, &path, None))
            .collect();
        let body = bodies.pop().expect("five");
        assert_eq!(
            key.as_deref(),
            body["AccessKeyId"].as_str(),
            "{id}: {error}"
        );
        for other in &bodies {
            assert_eq!(other["AccessKeyId"], body["AccessKeyId"], "{id}: cached");
        }
        let credentials = Credentials::new(
            body["AccessKeyId"].as_str().expect("key"),
            body["SecretAccessKey"].as_str().expect("secret"),
            body["Token"].as_str().map(str::to_owned),
            None,
            "imds-tun",
        );
        let arn = namespace.run_in(move || caller_arn(credentials));
        assert_eq!(
            body["RoleArn"],
            format!("arn:aws:iam::123456789012:role/{id}"),
            "{body}"
        );
        arns.push(arn);
    }
    assert!(
        arns[0].starts_with("arn:aws:sts::123456789012:assumed-role/alpha/"),
        "{arns:?}"
    );
    assert!(
        arns[1].starts_with("arn:aws:sts::123456789012:assumed-role/beta/"),
        "{arns:?}"
    );
    // Each role assumed once for its SDK fetch and five raw reads; no other role assumed.
    let assumed: Vec<String> = moto
        .bodies()
        .into_iter()
        .filter(|body| body.contains("Action=AssumeRole"))
        .collect();
    assert_eq!(assumed.len(), 2, "{:?}", moto.actions());
    for role in ["role%2Falpha", "role%2Fbeta"] {
        assert_eq!(
            assumed.iter().filter(|body| body.contains(role)).count(),
            1,
            "{role}: {assumed:?}"
        );
    }
}
