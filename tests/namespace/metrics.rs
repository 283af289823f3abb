//! `--metrics`: Prometheus' text exposition on a kernel socket, scraped end to end in a fresh
//! namespace and parsed with Prometheus' own Python parser
//! (`prometheus_client.parser.text_string_to_metric_families`, in `<repo>/.venv`, which
//! `scripts/test.sh` installs): the request counter grows by exactly the requests made, and the
//! expiry gauge is the `Expiration` boto3 received through the TUN from moto's STS. Who may
//! scrape: loopback without a token, any address with the `--listen-token-file` secret.
#![cfg(target_os = "linux")]

use crate::common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use common::http::{self, Request};
use common::{Moto, Namespace, Spawn, TempDir, repo, text};

/// The role moto's STS assumes; served as `app`.
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/app";
/// Where the metrics are served in the namespace.
const METRICS: &str = "127.0.0.1:9464";
/// The metadata address, through the TUN.
const METADATA: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254)),
    80,
);
/// Requests made between two scrapes.
const REQUESTS: usize = 5;

/// Scrapes, makes [`REQUESTS`] tokenless GETs through the TUN, scrapes again, then has boto3
/// read the role's credentials (with a token, as it does) and scrapes a third time. Prints one
/// JSON object: the counters' growth, boto3's expiry, the gauge, and what each scrape parsed as.
const SCRAPE_AND_READ: &str = r#"
import json, sys, urllib.request, datetime
from prometheus_client.parser import text_string_to_metric_families
from botocore.utils import InstanceMetadataFetcher

def scrape():
    text = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + json.dumps(sample.labels, sort_keys=True)
            samples[key] = sample.value
    return samples

def total(samples, name):
    return sum(v for k, v in samples.items() if k.startswith(name + "{"))

before = scrape()
for _ in range(int(sys.argv[1])):
    urllib.request.urlopen("http://169.254.169.254/latest/meta-data/instance-id", timeout=5).read()
after = scrape()
credentials = InstanceMetadataFetcher(timeout=2, num_attempts=2).retrieve_iam_role_credentials()
expiry = credentials["expiry_time"]
expiry_unix = datetime.datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(
    tzinfo=datetime.timezone.utc).timestamp()
last = scrape()
print(json.dumps({
    "requests_grew": total(after, "imds_tun_requests_total") - total(before, "imds_tun_requests_total"),
    "ec2_200_grew": after.get('imds_tun_requests_total{"cloud": "ec2", "status": "200"}', 0)
        - before.get('imds_tun_requests_total{"cloud": "ec2", "status": "200"}', 0),
    "tokenless_grew": total(after, "imds_tun_tokenless_requests_total")
        - total(before, "imds_tun_tokenless_requests_total"),
    "boto3_expiration": expiry,
    "boto3_expiration_unix": expiry_unix,
    "gauge": last.get('imds_tun_credentials_expiration_timestamp_seconds{"role": "app"}'),
    "refreshes_ok": last.get('imds_tun_credentials_refreshes_total{"result": "ok", "role": "app"}'),
    "tokens_issued": total(last, "imds_tun_imdsv2_tokens_issued_total"),
    "open_connections": total(last, "imds_tun_open_connections"),
    "resident_bytes": total(last, "process_resident_memory_bytes"),
    "names": sorted({k.split("{")[0] for k in last}),
}))
"#;

/// `imds-tun` with the role from moto's STS, the source keys in its environment.
fn sts_spawn() -> Spawn {
    Spawn {
        env: vec![
            ("AWS_ENDPOINT_URL_STS".to_owned(), Moto::endpoint()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                "AKIAIOSFODNN7EXAMPLE".to_owned(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
            ),
        ],
        ..Spawn::default()
    }
}

/// `.venv`'s python with `prometheus_client` and boto3, or `None` after a skip notice (a
/// failure under CI).
fn python(test: &str) -> Option<String> {
    let python = repo().join(".venv/bin/python");
    let has = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client.parser, boto3"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has {
        common::skip_or_fail(
            test,
            ".venv lacks prometheus_client or boto3; scripts/test.sh installs them",
        );
        return None;
    }
    Some(python.to_string_lossy().into_owned())
}

#[test]
fn the_exposition_parses_counts_each_request_and_carries_the_expiration_boto3_received() {
    let test = test_name!();
    let Some(python) = python(test) else {
        return;
    };
    let namespace = namespace!();
    let Some(_moto) = Moto::start(&namespace, test) else {
        return;
    };
    let child = namespace.spawn_with(
        &["--role-arn", ROLE_ARN, "--metrics", METRICS],
        &sts_spawn(),
    );
    child.wait_ready();
    child.wait_for_line(std::time::Duration::from_secs(5), |line| {
        line.contains(&format!(
            "serving Prometheus metrics at http://{METRICS}/metrics"
        ))
    });
    let requests = REQUESTS.to_string();
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        &python,
        "-c",
        SCRAPE_AND_READ,
        &requests,
    ]);
    assert!(output.status.success(), "the scraper: {}", text(&output));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", text(&output)));
    let grew = |key: &str| seen[key].as_f64().unwrap_or(-1.0);
    assert_eq!(grew("requests_grew"), REQUESTS as f64, "{seen:#}");
    assert_eq!(grew("ec2_200_grew"), REQUESTS as f64, "{seen:#}");
    assert_eq!(grew("tokenless_grew"), REQUESTS as f64, "{seen:#}");
    assert_eq!(
        seen["gauge"].as_f64(),
        seen["boto3_expiration_unix"].as_f64(),
        "the gauge is the Expiration boto3 received: {seen:#}"
    );
    assert!(grew("refreshes_ok") >= 1.0, "{seen:#}");
    assert!(
        grew("tokens_issued") >= 1.0,
        "boto3 asked for a token: {seen:#}"
    );
    assert!(grew("open_connections") >= 0.0, "{seen:#}");
    assert!(grew("resident_bytes") > 0.0, "{seen:#}");

    // ctl status tells the same story, in the words of the issue.
    let status = namespace.exec(&[common::BINARY, "ctl", "status"]);
    assert!(status.status.success(), "ctl status: {}", text(&status));
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("ctl status prints JSON");
    let role = &status["credentials"][0];
    assert_eq!(role["role"], "app", "{status:#}");
    assert_eq!(role["source"], "sts-role", "{status:#}");
    assert_eq!(
        role["expiration"], seen["boto3_expiration"],
        "ctl status: {status:#}"
    );
    assert!(role["next_refresh"].is_string(), "{status:#}");
    assert!(
        status["imdsv2_tokens_issued"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{status:#}"
    );
}

/// A token file `--listen-token-file` accepts: not world-readable.
fn token_file(dir: &TempDir, secret: &str) -> String {
    let path = dir.file("metrics-token", secret.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 the token file");
    path
}

#[test]
fn a_non_loopback_metrics_socket_requires_the_listen_token() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let secret = "metrics-secret-0123456789abcdef";
    let token = token_file(&dir, secret);
    let child = common::start(
        &namespace,
        &["--metrics", "0.0.0.0:9464", "--listen-token-file", &token],
    );
    child.wait_for_line(std::time::Duration::from_secs(5), |line| {
        line.contains("serving Prometheus metrics at http://0.0.0.0:9464/metrics")
    });
    let address: SocketAddr = ([127, 0, 0, 1], 9464).into();
    let answers = namespace.run_in(move || async move {
        let with = |request: Request| request.header("X-Imds-Tun-Token", secret);
        vec![
            http::send(address, &Request::get("/metrics")).await,
            http::send(
                address,
                &Request::get("/metrics").header("X-Imds-Tun-Token", "not-the-secret-at-all"),
            )
            .await,
            http::send(address, &with(Request::get("/metrics"))).await,
            http::send(address, &with(Request::get("/"))).await,
            http::send(address, &with(Request::new("POST", "/metrics"))).await,
        ]
    });
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(
        statuses,
        [401, 401, 200, 404, 405],
        "{:?}",
        answers[0].text()
    );
    assert!(
        answers[2]
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        answers[2].header("content-type")
    );
    assert!(
        answers[2]
            .text()
            .contains("# TYPE imds_tun_open_connections gauge"),
        "{}",
        answers[2].text()
    );
    assert_eq!(answers[4].header("allow"), Some("GET, HEAD"));
}

/// `--metrics` without a token on an address others reach, and on a port already taken: one
/// line, exit 2, and no TUN was created.
#[test]
fn an_exposed_or_busy_metrics_address_stops_the_start_with_exit_2_before_the_tun() {
    let namespace = namespace!();
    let holder = namespace.run_in(|| async {
        std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port")
    });
    let busy = holder.local_addr().expect("local address").to_string();
    for (args, says) in [
        (
            vec!["--metrics", "0.0.0.0:9464"],
            "--metrics 0.0.0.0:9464 is not a loopback address".to_owned(),
        ),
        (
            vec!["--metrics", busy.as_str()],
            format!("cannot serve metrics on {busy}"),
        ),
    ] {
        let mut child = namespace.spawn(&args);
        let status = child.wait_exit(std::time::Duration::from_secs(10));
        common::assert_exit_code(&child, status, 2);
        let stderr = child.stderr();
        let lines: Vec<&str> = stderr.lines().filter(|line| !line.is_empty()).collect();
        assert!(
            lines.last().is_some_and(|line| line.contains(&says)),
            "{args:?}: {stderr}"
        );
        assert!(
            lines
                .iter()
                .filter(|line| line.contains("imds-tun:"))
                .count()
                == 1,
            "one line: {stderr}"
        );
        assert!(
            namespace.tun_links().is_empty(),
            "{args:?}: a TUN was created"
        );
    }
    drop(holder);
}

/// `--check` refuses what the start refuses.
#[test]
fn check_refuses_the_metrics_addresses_a_start_refuses() {
    let namespace = namespace!();
    let holder = namespace.run_in(|| async {
        std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port")
    });
    let busy = holder.local_addr().expect("local address").to_string();
    for (args, says) in [
        (
            ["--metrics", "0.0.0.0:9464"],
            "--metrics 0.0.0.0:9464 is not a loopback address".to_owned(),
        ),
        (
            ["--metrics", busy.as_str()],
            format!("cannot serve metrics on {busy}"),
        ),
    ] {
        let output = check(&namespace, &args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with("fail") && line.contains(&says)),
            "{args:?}: {stdout}"
        );
    }
    drop(holder);
}

fn check(namespace: &Namespace, args: &[&str]) -> std::process::Output {
    let binary = common::binary();
    let mut command = vec![binary.to_str().expect("utf-8 path"), "--check"];
    command.extend_from_slice(args);
    namespace.exec(&command)
}

/// The value of the unlabelled or labelled sample `series` in a scrape, as the exposition
/// writes it (`name` or `name{label="value"}`).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// A connection `--allow-from` refuses through the TUN is counted under its reason.
#[test]
fn a_tun_connection_allow_from_refuses_is_counted() {
    let namespace = namespace!();
    // Only 127.0.0.0/8 may connect: the host's own TUN clients (169.254.169.253) may not.
    let _child = common::start(
        &namespace,
        &["--metrics", METRICS, "--allow-from", "127.0.0.0/8"],
    );
    let metrics: SocketAddr = METRICS.parse().expect("an address");
    let (refused, scraped) = namespace.run_in(move || async move {
        let refused = tokio::net::TcpStream::connect(METADATA).await.is_err();
        (
            refused,
            http::get(metrics, "/metrics").await.text().to_owned(),
        )
    });
    assert!(refused, "--allow-from refuses the connection");
    assert_eq!(
        sample(
            &scraped,
            r#"imds_tun_refused_connections_total{reason="allow_from"}"#
        ),
        Some(1.0),
        "{scraped}"
    );
}

/// A keep-alive connection through the TUN counts as open while it lasts, and no longer.
#[test]
fn a_tun_connection_is_open_while_it_lasts() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--metrics", METRICS]);
    let metrics: SocketAddr = METRICS.parse().expect("an address");
    let (open, closed) = namespace.run_in(move || async move {
        let mut connection = http::Connection::open(METADATA).await;
        let answer = connection.send(&Request::get("/latest/meta-data/")).await;
        assert_eq!(answer.status, 200);
        let open = http::get(metrics, "/metrics").await.text().to_owned();
        drop(connection);
        // The server sees the FIN and drops the connection soon after.
        let mut closed = String::new();
        for _ in 0..50 {
            closed = http::get(metrics, "/metrics").await.text().to_owned();
            if sample(&closed, "imds_tun_open_connections") == Some(0.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        (open, closed)
    });
    assert_eq!(
        sample(&open, "imds_tun_open_connections"),
        Some(1.0),
        "{open}"
    );
    assert_eq!(
        sample(&closed, "imds_tun_open_connections"),
        Some(0.0),
        "{closed}"
    );
}
