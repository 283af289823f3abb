//! The ECS container-credentials endpoint (`--ecs`, 169.254.170.2) and the EKS Pod Identity
//! endpoint (`--eks-pod-identity`, 169.254.170.23 and fd00:ec2::23) read by the AWS SDKs' own
//! providers in a fresh network namespace, steered only by the variables `imds-tun env` prints:
//! boto3/botocore and the AWS CLI (`aws configure export-credentials`) from `<repo>/.venv`, the
//! AWS SDK for JavaScript's `fromContainerMetadata` (`@aws-sdk/credential-provider-imds`) and
//! `fromHttp` (`@aws-sdk/credential-provider-http`, the provider its default chain uses for both
//! variables) from `tests/clients/node_modules`; and a container on Docker's default bridge of
//! the private dockerd `docker_containers` runs. `scripts/test.sh` installs them all; without
//! them the tests skip, and under `CI=true` they fail. The Rust SDK's ECS provider is in
//! `tests/sdk/container_credentials.rs`.
//!
//! What each SDK does with an unknown ID or a wrong token is printed (`eprintln!`, shown with
//! `--nocapture`): status and error text, and how long it took to give up.
//!
//! One test needs no namespace and no root: `imds-tun env`'s output, `eval`ed by `sh`.
#![cfg(target_os = "linux")]

use crate::common;
use crate::docker_containers::Dockerd;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use common::{Namespace, TempDir, http, installed, repo, text};
use imds_tun::container_env::{INSTANCE_ROLE_ID, ecs_variables, eks_variables};

/// The ECS endpoint, as the SDKs dial it.
const ECS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 170, 2)),
    80,
);
/// The Pod Identity endpoint.
const EKS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 170, 23)),
    80,
);
/// The token the server and the clients share (no newline: the SDKs send a file's bytes as
/// the header, and a header cannot hold a newline).
const POD_TOKEN: &str = "imds-tun-e2e-pod-identity-token";

/// A client refused gives up within this, its start-up and its own retries included (they
/// took 0.3-4.5 s here, most of it botocore's and fromHttp's retries a second apart).
const FAST_SECONDS: f64 = 10.0;

/// A 0600 token file holding `token` in `dir`.
fn token_file(dir: &TempDir, name: &str, token: &str) -> String {
    let path = dir.file(name, token.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// `imds-tun --mock-credentials` with both container endpoints, the server's token file
/// holding [`POD_TOKEN`], plus `extra`.
fn start_server(namespace: &Namespace, dir: &TempDir, extra: &[&str]) -> common::ImdsTun {
    let server_token = token_file(dir, "server-token", POD_TOKEN);
    let mut args = vec![
        "--mock-credentials",
        "--ecs",
        "--eks-pod-identity",
        "--eks-pod-identity-token-file",
        &server_token,
    ];
    args.extend_from_slice(extra);
    common::start(namespace, &args)
}

/// The access key id the server hands out at `path` on `address` (read raw, as the reference).
fn served_key(
    namespace: &Namespace,
    address: SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> String {
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
    let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    body["AccessKeyId"]
        .as_str()
        .expect("AccessKeyId")
        .to_owned()
}

/// The environment of a client: nothing of the host's, no config files, IMDS off (so a
/// fallback to 169.254.169.254, which imds-tun also serves, cannot pass for the container
/// endpoint), and `variables`.
fn client_env(variables: &[(&str, String)]) -> Vec<String> {
    let mut env = vec![
        "PATH=/usr/bin:/bin".to_owned(),
        "HOME=/nonexistent".to_owned(),
        "AWS_CONFIG_FILE=/nonexistent/config".to_owned(),
        "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials".to_owned(),
        "AWS_EC2_METADATA_DISABLED=true".to_owned(),
        "AWS_DEFAULT_REGION=us-east-1".to_owned(),
    ];
    env.extend(
        variables
            .iter()
            .map(|(name, value)| format!("{name}={value}")),
    );
    env
}

/// What one client got: the key, or the error it gave and how long it took.
#[derive(Debug)]
struct Outcome {
    client: &'static str,
    key: Option<String>,
    error: String,
    seconds: f64,
}

/// Runs `command` with only `env` in the namespace; the client prints one JSON object
/// `{"ok", "key", "error", "seconds"}` as its last stdout line.
fn run_client(
    namespace: &Namespace,
    client: &'static str,
    env: &[String],
    command: &[&str],
) -> Outcome {
    let mut full = vec!["env", "-i"];
    full.extend(env.iter().map(String::as_str));
    full.extend_from_slice(command);
    let started = std::time::Instant::now();
    let output = namespace.exec(&full);
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let seen: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("{client} printed no JSON ({error}): {}", text(&output)));
    Outcome {
        client,
        key: seen["key"].as_str().map(str::to_owned),
        error: seen["error"].as_str().unwrap_or_default().to_owned(),
        seconds,
    }
}

const BOTO3: &str = r#"
import json, time
import boto3
started = time.monotonic()
try:
    credentials = boto3.Session().get_credentials()
    if credentials is None:
        out = {"error": "no credentials found"}
    else:
        frozen = credentials.get_frozen_credentials()
        out = {"key": frozen.access_key, "method": credentials.method}
        if credentials.method != "container-role" or not frozen.token:
            out = {"error": "not the container provider: %s" % credentials.method}
except Exception as error:
    out = {"error": "%s: %s" % (type(error).__name__, error)}
out["seconds"] = time.monotonic() - started
print(json.dumps(out))
"#;

/// The AWS CLI's own resolution: `aws configure list` (AWS CLI v1 has no `configure
/// export-credentials`) shows the credentials' type and the key's last four characters, which
/// need no STS; reshaped into the clients' JSON (`key` is then `****...ABCD`).
const AWS_CLI: &str = r#"
import json, os, subprocess, sys
run = subprocess.run([os.environ["AWS"], "configure", "list"], capture_output=True, text=True)
key = None
for line in run.stdout.splitlines():
    words = line.split()
    if words[:1] == ["access_key"] and len(words) >= 3 and words[2] == "container-role":
        key = words[1]
if key is None:
    error = " ".join((run.stderr + run.stdout).split())
    print(json.dumps({"error": "exit %d: %s" % (run.returncode, error)}))
else:
    print(json.dumps({"key": key}))
"#;

const NODE: &str = r#"
const { fromContainerMetadata } = require("@aws-sdk/credential-provider-imds");
const { fromHttp } = require("@aws-sdk/credential-provider-http");
const provider = process.env.PROVIDER === "fromHttp" ? fromHttp({}) : fromContainerMetadata({});
provider().then(
  (c) => console.log(JSON.stringify({ key: c.sessionToken ? c.accessKeyId : undefined,
                                       error: c.sessionToken ? "" : "no session token" })),
  (e) => console.log(JSON.stringify({ error: `${e.name}: ${e.message}` })),
);
"#;

fn venv(test: &str, program: &str) -> Option<String> {
    installed(test, repo().join(".venv/bin").join(program))
        .map(|path| path.to_str().expect("utf-8 path").to_owned())
}

fn node_modules(test: &str) -> Option<PathBuf> {
    installed(
        test,
        repo().join("tests/clients/node_modules/@aws-sdk/credential-provider-http"),
    )?;
    Some(repo().join("tests/clients/node_modules"))
}

/// Every client, each with `variables`: boto3, the AWS CLI, and Node's two providers
/// (`fromContainerMetadata` only where it applies: it knows no token file and no
/// 169.254.170.23). `None` after a skip notice when a client is missing.
fn every_client(
    test: &str,
    namespace: &Namespace,
    variables: &[(&str, String)],
    with_from_container_metadata: bool,
) -> Option<Vec<Outcome>> {
    let python = venv(test, "python")?;
    let aws = venv(test, "aws")?;
    let modules = node_modules(test)?;
    let env = client_env(variables);
    let mut outcomes = vec![run_client(
        namespace,
        "boto3",
        &env,
        &[&python, "-c", BOTO3],
    )];
    let mut cli_env = env.clone();
    cli_env.push(format!("AWS={aws}"));
    outcomes.push(run_client(
        namespace,
        "aws-cli",
        &cli_env,
        &[&python, "-c", AWS_CLI],
    ));
    let mut node_env = env.clone();
    node_env.push(format!("NODE_PATH={}", modules.display()));
    let mut http_env = node_env.clone();
    http_env.push("PROVIDER=fromHttp".to_owned());
    outcomes.push(run_client(
        namespace,
        "node fromHttp",
        &http_env,
        &["node", "-e", NODE],
    ));
    if with_from_container_metadata {
        outcomes.push(run_client(
            namespace,
            "node fromContainerMetadata",
            &node_env,
            &["node", "-e", NODE],
        ));
    }
    Some(outcomes)
}

/// Every client got `key` (the AWS CLI shows only its last four characters).
fn assert_all_got(outcomes: &[Outcome], key: &str) {
    for outcome in outcomes {
        let got = outcome.key.as_deref().unwrap_or_default();
        if outcome.client == "aws-cli" {
            assert!(
                got.starts_with("****") && key.ends_with(got.trim_start_matches('*')),
                "{key}: {outcome:?}"
            );
        } else {
            assert_eq!(got, key, "{outcome:?}");
        }
    }
}

/// Every client failed with an error, within [`FAST_SECONDS`]; what each said is printed.
fn assert_all_refused(what: &str, outcomes: &[Outcome]) {
    for outcome in outcomes {
        eprintln!(
            "{what}: {} failed after {:.2} s: {}",
            outcome.client, outcome.seconds, outcome.error
        );
    }
    for outcome in outcomes {
        assert!(outcome.key.is_none(), "{what}: {outcome:?}");
        assert!(!outcome.error.is_empty(), "{what}: {outcome:?}");
        assert!(outcome.seconds < FAST_SECONDS, "{what}: slow: {outcome:?}");
    }
}

#[test]
fn env_output_evaluated_by_sh_sets_what_the_sdks_read() {
    let binary = common::binary();
    let binary = binary.to_str().expect("utf-8 path");
    let dir = TempDir::new();
    let token = token_file(&dir, "it's a token", POD_TOKEN);
    let script = r#"
        export AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=stale
        eval "$("$BIN" env --ecs app.v2)" || exit 9
        printf '%s\n' "$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" "$ECS_CONTAINER_METADATA_URI_V4"
        eval "$("$BIN" env --eks --token-file "$TOKEN")" || exit 9
        printf '%s\n' "${AWS_CONTAINER_CREDENTIALS_RELATIVE_URI-unset}" \
            "$AWS_CONTAINER_CREDENTIALS_FULL_URI" "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
        eval "$("$BIN" env --eks --ipv6 --token-file "$TOKEN")" || exit 9
        printf '%s\n' "$AWS_CONTAINER_CREDENTIALS_FULL_URI"
        cat "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    "#;
    let output = Command::new("sh")
        .args(["-c", script])
        .env("BIN", binary)
        .env("TOKEN", &token)
        .current_dir(dir.path())
        .output()
        .expect("sh");
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "/v2/credentials/app.v2",
            "http://169.254.170.2/v4/app.v2",
            "unset",
            "http://169.254.170.23/v1/credentials",
            token.as_str(),
            "http://[fd00:ec2::23]/v1/credentials",
            POD_TOKEN,
        ],
        "{}",
        text(&output)
    );
    // What the library says the SDKs need is what the binary prints.
    assert_eq!(ecs_variables("app.v2")[0].1, lines[0]);
    assert_eq!(eks_variables(&token, false)[0].1, lines[3]);

    // A relative token file is printed absolute; a bad ID or a missing file prints nothing.
    let relative = Command::new(binary)
        .args(["env", "--eks", "--token-file", "it's a token"])
        .current_dir(dir.path())
        .output()
        .expect("imds-tun env");
    assert!(
        String::from_utf8_lossy(&relative.stdout).contains(&format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='{}'",
            token.replace('\'', r"'\''")
        )),
        "{}",
        text(&relative)
    );
    for (args, says) in [
        (&["env", "--ecs", "$(touch pwned)"][..], "invalid value"),
        (
            &["env", "--eks", "--token-file", "absent"][..],
            "--token-file absent",
        ),
        (&["env"][..], "--ecs <ID>|--eks"),
    ] {
        let refused = Command::new(binary)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("imds-tun env");
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&refused)
        );
        assert!(refused.stdout.is_empty(), "{args:?}: {}", text(&refused));
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains(says),
            "{args:?}: {}",
            text(&refused)
        );
    }
    assert!(!dir.path().join("pwned").exists());

    // A full disk is one line and exit 1, never a panic.
    let full = Command::new(binary)
        .args(["env", "--ecs", "app"])
        .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
        .output()
        .expect("imds-tun env");
    assert_eq!(full.status.code(), Some(1), "{}", text(&full));
    assert_eq!(
        String::from_utf8_lossy(&full.stderr).lines().count(),
        1,
        "{}",
        text(&full)
    );
    assert!(
        String::from_utf8_lossy(&full.stderr).starts_with("imds-tun: cannot write the output"),
        "{}",
        text(&full)
    );
}

#[test]
fn boto3_the_aws_cli_and_node_get_ecs_credentials_from_the_relative_uri_alone() {
    let test = test_name!();
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start_server(&namespace, &dir, &[]);
    let key = served_key(
        &namespace,
        ECS,
        &format!("/v2/credentials/{INSTANCE_ROLE_ID}"),
        None,
    );
    let Some(outcomes) = every_client(test, &namespace, &ecs_variables(INSTANCE_ROLE_ID), true)
    else {
        return;
    };
    assert_all_got(&outcomes, &key);

    let Some(unknown) = every_client(test, &namespace, &ecs_variables("no-such-id"), true) else {
        return;
    };
    assert_all_refused("unknown ECS ID", &unknown);
}

#[test]
fn boto3_the_aws_cli_and_node_get_pod_identity_credentials_with_the_token_file() {
    let test = test_name!();
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start_server(&namespace, &dir, &[]);
    let key = served_key(&namespace, EKS, "/v1/credentials", Some(POD_TOKEN));
    let client_token = token_file(&dir, "client-token", POD_TOKEN);
    let Some(outcomes) = every_client(
        test,
        &namespace,
        &eks_variables(&client_token, false),
        false,
    ) else {
        return;
    };
    assert_all_got(&outcomes, &key);

    let wrong = token_file(&dir, "wrong-token", "not-the-token");
    let Some(refused) = every_client(test, &namespace, &eks_variables(&wrong, false), false) else {
        return;
    };
    assert_all_refused("wrong Pod Identity token", &refused);

    let mut no_token = eks_variables(&client_token, false);
    no_token.retain(|(name, _)| *name != "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    let Some(refused) = every_client(test, &namespace, &no_token, false) else {
        return;
    };
    assert_all_refused("no Pod Identity token", &refused);
}

#[test]
fn boto3_and_node_reach_pod_identity_over_ipv6() {
    let test = test_name!();
    let namespace = namespace!();
    let dir = TempDir::new();
    let _child = start_server(&namespace, &dir, &["--ipv6"]);
    let v6: SocketAddr = "[fd00:ec2::23]:80".parse().expect("address");
    let key = served_key(&namespace, v6, "/v1/credentials", Some(POD_TOKEN));
    let client_token = token_file(&dir, "client-token", POD_TOKEN);
    let Some(outcomes) = every_client(test, &namespace, &eks_variables(&client_token, true), false)
    else {
        return;
    };
    assert_all_got(&outcomes, &key);
}

#[test]
fn a_docker_container_with_the_ecs_environment_gets_credentials_and_task_metadata() {
    let namespace = namespace!();
    let Some(dockerd) = Dockerd::start(&namespace, test_name!()) else {
        return;
    };
    let image = dockerd.image();
    let dir = TempDir::new();
    let _child = start_server(&namespace, &dir, &[]);
    let key = served_key(
        &namespace,
        ECS,
        &format!("/v2/credentials/{INSTANCE_ROLE_ID}"),
        None,
    );
    // The image holds curl and its libraries; the host's dash (which needs only the same
    // libc) is mounted as its shell, so the container expands the variables itself.
    let mut args = vec![
        "run".to_owned(),
        "--rm".to_owned(),
        "--pull".to_owned(),
        "never".to_owned(),
        "--network".to_owned(),
        "bridge".to_owned(),
        "-v".to_owned(),
        "/usr/bin/dash:/bin/sh:ro".to_owned(),
    ];
    for (name, value) in ecs_variables(INSTANCE_ROLE_ID) {
        args.push("-e".to_owned());
        args.push(format!("{name}={value}"));
    }
    args.extend(
        [
            image.as_str(),
            "/bin/sh",
            "-c",
            "curl -sS --max-time 5 \"http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\" \
             && echo && curl -sS --max-time 5 \"$ECS_CONTAINER_METADATA_URI_V4/task\" \
             && echo && curl -sS --max-time 5 \"$ECS_CONTAINER_METADATA_URI_V4\"",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = dockerd.docker(&args);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let documents: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {stdout}")))
        .collect();
    let [credentials, task, container] = &documents[..] else {
        panic!("three documents: {stdout}");
    };
    assert_eq!(credentials["AccessKeyId"], key.as_str(), "{credentials}");
    for field in ["SecretAccessKey", "Token", "Expiration", "RoleArn"] {
        assert!(credentials[field].is_string(), "{field}: {credentials}");
    }
    for field in [
        "Cluster",
        "TaskARN",
        "Family",
        "Revision",
        "DesiredStatus",
        "KnownStatus",
        "AvailabilityZone",
        "LaunchType",
    ] {
        assert!(
            task[field].as_str().is_some_and(|value| !value.is_empty()),
            "task {field}: {task}"
        );
    }
    let containers = task["Containers"].as_array().expect("Containers");
    assert!(!containers.is_empty(), "{task}");
    for entry in containers.iter().chain([container]) {
        for field in ["DockerId", "Name", "Image"] {
            assert!(
                entry[field].as_str().is_some_and(|value| !value.is_empty()),
                "container {field}: {entry}"
            );
        }
        let network = &entry["Networks"][0];
        assert!(network["NetworkMode"].is_string(), "Networks: {entry}");
        assert!(network["IPv4Addresses"][0].is_string(), "Networks: {entry}");
    }
    assert_eq!(container["DockerId"], containers[0]["DockerId"], "{stdout}");
    assert_eq!(container["Name"], INSTANCE_ROLE_ID, "{container}");
}

/// The fenced blocks of docs/guides/containers-endpoints.md after its worked-example marker:
/// the server's terminal, the client's, and the output.
fn worked_example() -> Vec<String> {
    let guide = std::fs::read_to_string(repo().join("docs/guides/containers-endpoints.md"))
        .expect("the guide");
    let (_, example) = guide
        .split_once("<!-- worked example:")
        .expect("the guide marks its worked example");
    let blocks: Vec<String> = example
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| {
            let (_language, body) = block.split_once('\n').unwrap_or_default();
            body.to_owned()
        })
        .collect();
    assert_eq!(blocks.len(), 3, "server, client, output: {blocks:?}");
    blocks
}

#[test]
fn the_guides_worked_example_runs_as_written() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(python) = venv(test, "python") else {
        return;
    };
    let blocks = worked_example();
    let scratch = TempDir::new();
    // `imds-tun` and `python3` on the PATH, as the guide's reader has them: the binary under
    // test and the .venv's Python (through a script: a venv is found from its own bin/).
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    std::os::unix::fs::symlink(common::binary(), bin.join("imds-tun")).expect("symlink");
    std::fs::write(
        bin.join("python3"),
        format!("#!/bin/sh\nexec {python} \"$@\"\n"),
    )
    .expect("python3");
    std::fs::set_permissions(bin.join("python3"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).expect("work");
    let path = format!("PATH={}:/usr/bin:/bin", bin.display());
    let run = |script: &str| {
        let mut command: Vec<String> = client_env(&[]);
        command[0] = path.clone();
        let mut full = vec!["env", "-i"];
        full.extend(command.iter().map(String::as_str));
        let cd = format!("cd '{}' && {script}", work.display());
        full.extend_from_slice(&["sh", "-e", "-c", &cd]);
        namespace.exec(&full)
    };

    // The server's terminal: everything before the `sudo imds-tun` line in sh, that line
    // through the harness (which waits for it to serve), files it names made absolute.
    let (setup, server) = blocks[0]
        .trim_end()
        .rsplit_once('\n')
        .expect("setup lines, then the server");
    let prepared = run(setup);
    assert!(prepared.status.success(), "{}", text(&prepared));
    let args: Vec<String> = server
        .strip_prefix("sudo imds-tun ")
        .expect("the last line starts the server")
        .split_whitespace()
        .map(|arg| {
            let file = work.join(arg);
            if file.exists() {
                file.display().to_string()
            } else {
                arg.to_owned()
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _child = common::start(&namespace, &args);

    let client = run(&blocks[1]);
    assert!(client.status.success(), "{}", text(&client));
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        blocks[2],
        "{}",
        text(&client)
    );
}
