//! Upstream proxy mode end to end, in the shape of a Vagrant box: a "host" namespace runs
//! `imds-tun --no-tun --listen 10.0.2.2:PORT --listen-token-file F`, a "guest" namespace joined
//! to it by a veth pair (10.0.2.2/24 ↔ 10.0.2.15/24, the VirtualBox NAT addresses) runs
//! `imds-tun --upstream http://10.0.2.2:PORT --upstream-token-file F`, and clients in the guest
//! dial 169.254.169.254 as on EC2.
//!
//! Credentials: the host serves imds-tun's fake credentials (STS support had not landed when
//! these tests were written); the point is that the guest's SDK receives exactly the host's.
#![cfg(target_os = "linux")]

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_config::imds::Client;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_credential_types::provider::ProvideCredentials;
use common::http::{self, Request};
use common::{METADATA, Moto, Namespace, TempDir};

const HOST_IP: &str = "10.0.2.2";
const GUEST_IP: &str = "10.0.2.15";
const INSTANCE_ID: &str = "i-0a1b2c3d4e5f60718";
const SECRET: &str = "4f1d2e3c4b5a69788796a5b4c3d2e1f0";

/// Joins `host` and `guest` with a veth pair: 10.0.2.2/24 on the host side, 10.0.2.15/24 on
/// the guest side, and a default route in the guest via the host (as VirtualBox NAT does).
fn link(host: &Namespace, guest: &Namespace) {
    host.link_guest(guest, HOST_IP, GUEST_IP);
    guest.ip(&["route", "add", "default", "via", HOST_IP]);
}

/// A secret file readable by its owner only, as the token flags require.
fn secret_file(dir: &TempDir, name: &str, secret: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.file(name, format!("{secret}\n").as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The host side: `--no-tun --listen 10.0.2.2:0 --listen-token-file F` plus `extra`; returns the
/// child and its real listen address.
fn start_host(host: &Namespace, token_file: &str, extra: &[&str]) -> (common::ImdsTun, SocketAddr) {
    let listen = format!("{HOST_IP}:0");
    let mut args = vec![
        "--no-tun",
        "--listen",
        &listen,
        "--listen-token-file",
        token_file,
        "--instance-id",
        INSTANCE_ID,
    ];
    args.extend_from_slice(extra);
    let child = common::start(host, &args);
    let address = child.listen_addresses()[0];
    (child, address)
}

/// The guest side: the TUN, forwarding to `upstream`.
fn start_guest(guest: &Namespace, upstream: SocketAddr, extra: &[&str]) -> common::ImdsTun {
    let url = format!("http://{upstream}");
    let mut args = vec!["--upstream", url.as_str()];
    args.extend_from_slice(extra);
    common::start(guest, &args)
}

#[test]
fn guest_sdk_receives_the_hosts_credentials_through_the_upstream() {
    common::isolate_sdk_from_host_config();
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let dir = TempDir::new();
    let token = secret_file(&dir, "token", SECRET);
    let (_host_child, upstream) = start_host(&host, &token, &[]);
    let guest_child = start_guest(&guest, upstream, &["--upstream-token-file", &token]);
    assert!(
        guest_child.wait_ready().contains("forwarding to upstream"),
        "{}",
        guest_child.stderr()
    );

    let (instance_id, access_key_id) = guest.run_in(|| async {
        let client = Client::builder().build();
        let instance_id = client
            .get("/latest/meta-data/instance-id")
            .await
            .expect("the SDK in the guest fetches instance-id")
            .as_ref()
            .to_string();
        let credentials = ImdsCredentialsProvider::builder()
            .imds_client(client)
            .build()
            .provide_credentials()
            .await
            .expect("the SDK in the guest obtains role credentials");
        (instance_id, credentials.access_key_id().to_string())
    });
    assert_eq!(
        instance_id, INSTANCE_ID,
        "the guest sees the host's instance"
    );

    // What the host itself serves, asked directly on its listener with the secret.
    let served = host.run_in(move || async move {
        http::send(
            upstream,
            &Request::get("/latest/meta-data/iam/security-credentials/imds-tun")
                .header("X-Imds-Tun-Token", SECRET),
        )
        .await
    });
    assert_eq!(served.status, 200, "{served:?}");
    let document: serde_json::Value = serde_json::from_slice(&served.body).unwrap();
    assert_eq!(
        document["AccessKeyId"], access_key_id,
        "the guest's SDK got the host's credentials"
    );
    assert!(
        !guest_child.stderr().contains(SECRET),
        "the secret is never logged"
    );
}

#[test]
fn imdsv2_token_put_passes_through_and_the_upstream_enforces_its_rules() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let dir = TempDir::new();
    let token = secret_file(&dir, "token", SECRET);
    let (_host_child, upstream) = start_host(&host, &token, &["--imdsv2", "required"]);
    let _guest_child = start_guest(&guest, upstream, &["--upstream-token-file", &token]);

    let (put, get, tokenless, forwarded_for) = guest.run_in(|| async {
        let put = http::send(METADATA, &Request::token("21600")).await;
        let get = http::send(
            METADATA,
            &Request::get_with_token("/latest/meta-data/instance-id", put.text()),
        )
        .await;
        let tokenless = http::get(METADATA, "/latest/meta-data/instance-id").await;
        let forwarded_for = http::send(
            METADATA,
            &Request::token("60").header("X-Forwarded-For", "10.9.9.9"),
        )
        .await;
        (put, get, tokenless, forwarded_for)
    });
    assert_eq!(put.status, 200, "{put:?}");
    assert_eq!(
        put.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600"),
        "{put:?}"
    );
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.text(), INSTANCE_ID);
    assert_eq!(
        tokenless.status, 401,
        "the host's required mode applies: {tokenless:?}"
    );
    assert_eq!(
        forwarded_for.status, 403,
        "a client's X-Forwarded-For passes through and the upstream refuses it: {forwarded_for:?}"
    );

    // The token came from the host: the host itself accepts it.
    let session = put.text().to_string();
    let direct = host.run_in(move || async move {
        http::send(
            upstream,
            &Request::get_with_token("/latest/meta-data/instance-id", &session)
                .header("X-Imds-Tun-Token", SECRET),
        )
        .await
    });
    assert_eq!(direct.status, 200, "{direct:?}");
}

/// One request as a fake upstream received it, and what it answered.
fn fake_upstream(
    listener: TcpListener,
    reply: &'static [u8],
    hold: Option<mpsc::Receiver<()>>,
    rest: &'static [u8],
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the guest connects upstream");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        // Read the head, then the body it announces.
        loop {
            let n = stream
                .read(&mut buffer)
                .expect("reading the forwarded request");
            assert!(n > 0, "the guest closed before a full request");
            seen.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&seen).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    break;
                }
            }
        }
        stream.write_all(reply).unwrap();
        if let Some(hold) = hold {
            let _ = hold.recv_timeout(Duration::from_secs(10));
        }
        stream.write_all(rest).unwrap();
        String::from_utf8_lossy(&seen).to_string()
    })
}

#[test]
fn forwarded_request_keeps_end_to_end_headers_and_drops_hop_by_hop_ones() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let dir = TempDir::new();
    let token = secret_file(&dir, "token", SECRET);
    let listener = host.run_in(|| async { TcpListener::bind((HOST_IP, 0)).unwrap() });
    let upstream = listener.local_addr().unwrap();
    let seen = fake_upstream(
        listener,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nConnection: X-Upstream-Hop\r\n\
          X-Upstream-Hop: 1\r\nX-End-To-End: yes\r\n\r\nok",
        None,
        b"",
    );
    let _guest_child = start_guest(&guest, upstream, &["--upstream-token-file", &token]);

    let response = guest.run_in(|| async {
        let mut request = Request::new("PUT", "/latest/api/token?x=1&y=2")
            .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
            .header("Connection", "X-Client-Hop")
            .header("X-Client-Hop", "drop me")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Authorization", "Basic c2VjcmV0")
            .header("TE", "trailers")
            .header("X-Imds-Tun-Token", "a client cannot choose the token")
            .header("X-Custom", "kept");
        request.body = b"body bytes".to_vec();
        http::send(METADATA, &request).await
    });
    let request = seen.join().expect("the fake upstream saw a request");
    let head = request.to_ascii_lowercase();

    assert!(
        request.starts_with("PUT /latest/api/token?x=1&y=2 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.ends_with("\r\n\r\nbody bytes"), "{request}");
    assert!(
        head.contains("\r\nx-aws-ec2-metadata-token-ttl-seconds: 300\r\n"),
        "{request}"
    );
    assert!(head.contains("\r\nx-custom: kept\r\n"), "{request}");
    assert!(head.contains("\r\nhost: 169.254.169.254\r\n"), "{request}");
    assert!(
        head.contains(&format!("\r\nx-imds-tun-token: {SECRET}\r\n")),
        "our token replaces the client's: {request}"
    );
    assert_eq!(head.matches("x-imds-tun-token").count(), 1, "{request}");
    assert!(
        head.contains("\r\nvia: 1.1 imds-tun-"),
        "the hop marker that stops loops: {request}"
    );
    for dropped in [
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
        "\r\nte:",
        "x-forwarded-for",
    ] {
        assert!(
            !head.contains(dropped),
            "{dropped} must not be forwarded: {request}"
        );
    }

    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "ok");
    assert_eq!(response.header("x-end-to-end"), Some("yes"), "{response:?}");
    assert_eq!(response.header("x-upstream-hop"), None, "{response:?}");
    assert_eq!(response.header("keep-alive"), None, "{response:?}");
}

#[test]
fn upstream_response_streams_back_without_buffering() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let listener = host.run_in(|| async { TcpListener::bind((HOST_IP, 0)).unwrap() });
    let upstream = listener.local_addr().unwrap();
    let (release, hold) = mpsc::channel();
    let fake = fake_upstream(
        listener,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n",
        Some(hold),
        b"7\r\nsecond\n\r\n0\r\n\r\n",
    );
    let _guest_child = start_guest(&guest, upstream, &[]);

    let body = guest.run_in(move || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(METADATA).await.unwrap();
        stream
            .write_all(
                b"GET /stream HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 1024];
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            while !String::from_utf8_lossy(&seen).contains("first") {
                let n = stream.read(&mut buffer).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buffer[..n]);
            }
        })
        .await;
        assert!(
            first.is_ok(),
            "the first chunk must arrive while the upstream still holds the rest: {}",
            String::from_utf8_lossy(&seen)
        );
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut seen))
            .await
            .expect("the rest arrives")
            .unwrap();
        String::from_utf8_lossy(&seen).to_string()
    });
    fake.join().unwrap();
    assert!(body.contains("first") && body.contains("second"), "{body}");
}

/// The Host guard runs before forwarding: a rebinding page (or anything that names a foreign
/// authority) gets nothing from the upstream either, and an HTTP/1.1 request without `Host`
/// is a 400 (RFC 9112 §3.2) instead of being forwarded with the upstream's address as `Host`.
#[test]
fn the_host_guard_runs_before_forwarding() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let dir = TempDir::new();
    let token = secret_file(&dir, "token", SECRET);
    let (_host_child, upstream) = start_host(&host, &token, &[]);
    let _guest_child = start_guest(&guest, upstream, &["--upstream-token-file", &token]);
    let credentials = "/latest/meta-data/iam/security-credentials/imds-tun";
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "an absolute-form foreign authority",
            format!(
                "GET http://attacker.example{credentials} HTTP/1.1\r\nHost: 169.254.169.254\r\n\
                 Connection: close\r\n\r\n"
            ),
            403,
        ),
        (
            "a foreign Host",
            format!(
                "GET {credentials} HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n"
            ),
            403,
        ),
        (
            "two Host headers",
            format!(
                "GET {credentials} HTTP/1.1\r\nHost: 169.254.169.254\r\nHost: 169.254.169.254\r\n\
                 Connection: close\r\n\r\n"
            ),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            format!("GET {credentials} HTTP/1.1\r\nConnection: close\r\n\r\n"),
            400,
        ),
        (
            "HTTP/1.0 without Host",
            "GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n".to_string(),
            200,
        ),
    ];
    let answers = guest.run_in(move || async move {
        let mut answers = Vec::new();
        for (what, raw, expected) in cases {
            let mut connection = http::Connection::open(METADATA).await;
            connection.write_raw(raw.as_bytes()).await;
            answers.push((what, connection.read_response().await, expected));
        }
        answers
    });
    for (what, response, expected) in answers {
        assert_eq!(response.status, expected, "{what}: {response:?}");
        if expected != 200 {
            assert!(
                !String::from_utf8_lossy(&response.body).contains("SecretAccessKey"),
                "{what}: {response:?}"
            );
        }
    }
}

#[test]
fn upstream_down_gives_a_fast_502() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    // Nothing listens on the host side: connection refused.
    let refused: SocketAddr = format!("{HOST_IP}:9").parse().unwrap();
    let child = start_guest(&guest, refused, &[]);
    let (response, took) = guest.run_in(|| async {
        let started = Instant::now();
        let response = http::get(METADATA, "/latest/meta-data/instance-id").await;
        (response, started.elapsed())
    });
    assert_eq!(response.status, 502, "{response:?}");
    assert!(took < Duration::from_secs(2), "502 took {took:?}");
    assert!(
        response
            .text()
            .contains("the upstream metadata service is unreachable"),
        "{response:?}"
    );
    // Any local process reads this body: where the upstream is stays in the log.
    assert!(!response.text().contains("10.0.2.2"), "{response:?}");
    child.wait_for_line(Duration::from_secs(2), |line| {
        line.contains("upstream http://10.0.2.2:9 unreachable")
    });
    eprintln!("502 with the upstream refusing connections: {took:?}");
}

#[test]
fn silent_upstream_gives_502_after_the_connect_timeout() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    // A host on the link that never answers ARP: the SYN never leaves, connect() hangs.
    let silent: SocketAddr = "10.0.2.99:8080".parse().unwrap();
    let _child = start_guest(&guest, silent, &[]);
    let (response, took) = guest.run_in(|| async {
        let started = Instant::now();
        let response = http::get(METADATA, "/latest/meta-data/instance-id").await;
        (response, started.elapsed())
    });
    assert_eq!(response.status, 502, "{response:?}");
    assert!(took < Duration::from_secs(2), "502 took {took:?}");
    assert!(
        response.text().contains("no connection within 1s"),
        "{response:?}"
    );
    eprintln!("502 with a silent upstream (1 s connect timeout): {took:?}");
}

#[test]
fn slow_upstream_gives_504_after_the_configured_response_timeout() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let dir = TempDir::new();
    let config = dir.file("config.json", br#"{"upstream_response_timeout_ms": 300}"#);
    let listener = host.run_in(|| async { TcpListener::bind((HOST_IP, 0)).unwrap() });
    let upstream = listener.local_addr().unwrap();
    // Accepts and reads, never answers.
    let _silent = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buffer = [0u8; 1024];
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
    });
    let _child = start_guest(&guest, upstream, &["--config", &config]);
    let (response, took) = guest.run_in(|| async {
        let started = Instant::now();
        let response = http::get(METADATA, "/latest/meta-data/instance-id").await;
        (response, started.elapsed())
    });
    assert_eq!(response.status, 504, "{response:?}");
    assert!(
        response.text().contains("did not answer within"),
        "{response:?}"
    );
    assert!(took < Duration::from_secs(2), "504 took {took:?}");
}

#[test]
fn host_listener_refuses_missing_or_wrong_token_with_401() {
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let dir = TempDir::new();
    let token = secret_file(&dir, "token", SECRET);
    let (_host_child, upstream) = start_host(&host, &token, &["--listen", "127.0.0.1:0"]);
    let (missing, wrong, right) = guest.run_in(move || async move {
        let path = "/latest/meta-data/instance-id";
        (
            http::get(upstream, path).await,
            http::send(
                upstream,
                &Request::get(path).header("X-Imds-Tun-Token", "0123456789abcdef-wrong"),
            )
            .await,
            http::send(
                upstream,
                &Request::get(path).header("X-Imds-Tun-Token", SECRET),
            )
            .await,
        )
    });
    for response in [&missing, &wrong] {
        assert_eq!(response.status, 401, "{response:?}");
        assert!(response.text().contains("X-Imds-Tun-Token"), "{response:?}");
    }
    assert_eq!(right.status, 200, "{right:?}");
    assert_eq!(right.text(), INSTANCE_ID);

    // The loopback listener of the same process needs no token.
    let loopback = host.run_in(|| async {
        let output = std::process::Command::new("ss").args(["-Hltn"]).output();
        output
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    });
    let port = loopback
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .find_map(|local| local.strip_prefix("127.0.0.1:"))
        .and_then(|port| port.parse::<u16>().ok());
    if let Some(port) = port {
        let local = host.run_in(move || async move {
            http::get(
                SocketAddr::from(([127, 0, 0, 1], port)),
                "/latest/meta-data/instance-id",
            )
            .await
        });
        assert_eq!(local.status, 200, "{local:?}");
    }
}

#[test]
fn non_loopback_listen_without_a_token_is_refused_at_startup() {
    let namespace = namespace!();
    let mut child = namespace.spawn(&["--no-tun", "--listen", "0.0.0.0:8080"]);
    let status = child.wait_exit(Duration::from_secs(5));
    common::assert_exit_code(&child, status, 2);
    let stderr = child.stderr();
    let line = stderr
        .lines()
        .find(|line| line.starts_with("imds-tun: "))
        .unwrap_or_default();
    assert!(line.contains("0.0.0.0:8080"), "{stderr}");
    assert!(line.contains("--listen-token-file"), "{stderr}");
    assert!(line.contains("--insecure-listen-without-token"), "{stderr}");

    let mut opted_out = namespace.spawn(&[
        "--no-tun",
        "--listen",
        "0.0.0.0:0",
        "--insecure-listen-without-token",
    ]);
    opted_out.wait_for_line(common::READY_TIMEOUT, |line| {
        line.contains("serves role credentials to anyone")
    });
    assert!(opted_out.is_running());
}

#[test]
fn world_readable_token_file_is_refused_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    let namespace = namespace!();
    let dir = TempDir::new();
    let path = dir.file("token", format!("{SECRET}\n").as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = namespace.spawn(&[
        "--no-tun",
        "--listen",
        "10.0.0.1:8080",
        "--listen-token-file",
        &path,
    ]);
    let status = child.wait_exit(Duration::from_secs(5));
    common::assert_exit_code(&child, status, 2);
    assert!(child.stderr().contains("chmod 600"), "{}", child.stderr());
    assert!(!child.stderr().contains(SECRET), "{}", child.stderr());
}

#[test]
fn upstream_url_with_a_password_is_refused_without_showing_it() {
    let namespace = namespace!();
    let mut child = namespace.spawn(&["--upstream", "http://admin:hunter2-secret@10.0.2.2:8080"]);
    let status = child.wait_exit(Duration::from_secs(5));
    common::assert_exit_code(&child, status, 2);
    let stderr = child.stderr();
    assert!(stderr.contains("user name or password"), "{stderr}");
    assert!(stderr.contains("***@10.0.2.2:8080"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// The reported reproduction: one request became 18 689 descriptors and 347 MB.
#[test]
fn an_upstream_that_is_our_own_listener_is_refused_at_startup() {
    let namespace = namespace!();
    let mut child = namespace.spawn(&[
        "--listen",
        "127.0.0.1:8081",
        "--upstream",
        "http://127.0.0.1:8081",
    ]);
    let status = child.wait_exit(Duration::from_secs(5));
    common::assert_exit_code(&child, status, 2);
    let stderr = child.stderr();
    assert!(stderr.contains("own --listen 127.0.0.1:8081"), "{stderr}");
    assert!(namespace.tun_links().is_empty(), "nothing was created");
}

/// A loop the start-up check cannot see: two instances that forward to each other. The
/// request comes back to the first one with its own name in `Via` and is answered with 508 at
/// once; neither process piles up connections.
#[test]
fn a_forwarding_loop_through_two_instances_gets_a_quick_508() {
    let namespace = namespace!();
    let a = common::start(
        &namespace,
        &[
            "--no-tun",
            "--listen",
            "127.0.0.1:8081",
            "--upstream",
            "http://127.0.0.1:8082",
        ],
    );
    let b = common::start(
        &namespace,
        &[
            "--no-tun",
            "--listen",
            "127.0.0.1:8082",
            "--upstream",
            "http://127.0.0.1:8081",
        ],
    );
    let (responses, slowest) = namespace.run_in(|| async {
        let mut responses = Vec::new();
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let address: SocketAddr = "127.0.0.1:8081".parse().unwrap();
            responses.push(http::get(address, "/latest/meta-data/instance-id").await);
            slowest = slowest.max(started.elapsed());
        }
        (responses, slowest)
    });
    for response in &responses {
        assert_eq!(response.status, 508, "{response:?}");
        assert!(response.text().contains("forwarding loop"), "{response:?}");
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest 508 took {slowest:?}"
    );
    for (name, child) in [("A", &a), ("B", &b)] {
        let descriptors = descriptors(child);
        eprintln!("{name}: {descriptors} descriptors after 20 looping requests");
        assert!(descriptors < 64, "{name} holds {descriptors} descriptors");
    }
    // One line, not one per request.
    let logged = a.stderr().matches("forwarding loop").count();
    assert_eq!(logged, 1, "{}", a.stderr());
}

/// How many descriptors `child` has open.
fn descriptors(child: &common::ImdsTun) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", child.pid()))
        .map(|entries| entries.count())
        .unwrap_or_else(|error| panic!("listing /proc/{}/fd: {error}", child.pid()))
}

#[test]
fn https_upstream_is_refused_with_a_clear_error() {
    let namespace = namespace!();
    let mut child = namespace.spawn(&["--upstream", "https://10.0.2.2:8443"]);
    let status = child.wait_exit(Duration::from_secs(5));
    common::assert_exit_code(&child, status, 2);
    assert!(
        child.stderr().contains("https upstreams are not supported"),
        "{}",
        child.stderr()
    );
}

#[test]
fn guest_sdk_receives_the_hosts_real_sts_credentials() {
    common::isolate_sdk_from_host_config();
    let host = namespace!();
    let guest = namespace!();
    link(&host, &guest);
    let Some(_moto) = Moto::start(&host, test_name!()) else {
        return;
    };
    let dir = TempDir::new();
    let token = secret_file(&dir, "token", SECRET);
    let listen = format!("{HOST_IP}:0");
    let host_child = host.spawn_with(
        &[
            "--no-tun",
            "--listen",
            &listen,
            "--listen-token-file",
            &token,
            "--role-arn",
            "arn:aws:iam::123456789012:role/app",
        ],
        &common::Spawn {
            env: vec![
                (
                    "AWS_ENDPOINT_URL_STS".into(),
                    "http://127.0.0.1:5000".into(),
                ),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID".into(), "AKIAI44QH8DHBEXAMPLE".into()),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY".into(),
                ),
            ],
            ..common::Spawn::default()
        },
    );
    host_child.wait_ready();
    let upstream = host_child.listen_addresses()[0];
    let _guest_child = start_guest(&guest, upstream, &["--upstream-token-file", &token]);

    let (access_key_id, session_token) = guest.run_in(|| async {
        let credentials = ImdsCredentialsProvider::builder()
            .imds_client(Client::builder().build())
            .build()
            .provide_credentials()
            .await
            .expect("the SDK in the guest obtains the host's role credentials");
        (
            credentials.access_key_id().to_string(),
            credentials.session_token().unwrap_or_default().to_string(),
        )
    });
    assert_ne!(access_key_id, "AKIAI44QH8DHBEXAMPLE", "not the source keys");
    assert!(
        !session_token.starts_with("aW1kcy10dW4tZmFrZ"),
        "real STS credentials, not imds-tun's fake ones"
    );
    let served = host.run_in(move || async move {
        http::send(
            upstream,
            &Request::get("/latest/meta-data/iam/security-credentials/app")
                .header("X-Imds-Tun-Token", SECRET),
        )
        .await
    });
    assert_eq!(served.status, 200, "{served:?}");
    let document: serde_json::Value = serde_json::from_slice(&served.body).unwrap();
    assert_eq!(
        document["AccessKeyId"], access_key_id,
        "the host's STS keys"
    );
}
