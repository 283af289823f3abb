//! The transport through the TUN: the kernel's TCP talking to the userspace smoltcp endpoint.
//! Concurrency, keep-alive, refused ports, ICMP, misbehaving clients, and byte-identical answers
//! compared with the kernel `--listen` socket of the same process.
#![cfg(target_os = "linux")]

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::METADATA;
use common::http::{self, Connection, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A kernel listener inside the test namespace (fresh, so a fixed port cannot clash).
const KERNEL_LISTENER: &str = "127.0.0.1:8080";

fn kernel_address() -> SocketAddr {
    KERNEL_LISTENER.parse().expect("a socket address")
}

/// Sends `count` concurrent GETs, each on its own connection, and returns the statuses.
async fn concurrent_gets(count: usize, path: &'static str) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        tasks.spawn(async move { http::get(METADATA, path).await.status });
    }
    let mut statuses = Vec::with_capacity(count);
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.expect("a request task panicked"));
    }
    statuses
}

#[test]
fn three_hundred_concurrent_connections_through_the_tun_are_all_answered() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    let statuses = namespace.run_in(|| concurrent_gets(300, "/latest/meta-data/instance-id"));
    assert_eq!(statuses.len(), 300);
    let failures: Vec<_> = statuses.iter().filter(|status| **status != 200).collect();
    assert!(failures.is_empty(), "non-200 answers: {failures:?}");
    assert!(child.is_running(), "stderr:\n{}", child.stderr());
}

#[test]
fn process_stays_healthy_after_three_hundred_connections_close() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        // 100 orderly closes, 100 abrupt ones (RST via SO_LINGER 0) mid-response, 100 idle.
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..300 {
            tasks.spawn(async move {
                let stream = TcpStream::connect(METADATA).await.expect("connect");
                match index % 3 {
                    0 => {
                        let mut connection = stream;
                        connection
                            .write_all(
                                b"GET /latest/ HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
                            )
                            .await
                            .expect("write");
                        let mut sink = Vec::new();
                        tokio::io::AsyncReadExt::read_to_end(&mut connection, &mut sink)
                            .await
                            .expect("read");
                        assert!(
                            sink.starts_with(b"HTTP/1.1 200"),
                            "{:?}",
                            String::from_utf8_lossy(&sink)
                        );
                    }
                    1 => {
                        let mut connection = stream;
                        connection
                            .write_all(b"GET /latest/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
                            .await
                            .expect("write");
                        connection.set_zero_linger().expect("SO_LINGER 0");
                        drop(connection);
                    }
                    _ => drop(stream),
                }
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.expect("a connection task panicked");
        }
    });
    // The endpoint must still accept and answer, repeatedly, and the process must be alive.
    let statuses = namespace.run_in(|| concurrent_gets(20, "/latest/"));
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    assert!(child.is_running(), "stderr:\n{}", child.stderr());
    assert_eq!(namespace.tun_links().len(), 1);
}

#[test]
fn keep_alive_carries_sequential_requests_on_one_connection() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let mut connection = Connection::open(METADATA).await;
        for round in 0..25 {
            let path = if round % 2 == 0 {
                "/latest/"
            } else {
                "/latest/meta-data/"
            };
            let response = connection.send(&Request::get(path)).await;
            assert_eq!(response.status, 200, "request {round}: {response:?}");
            assert!(
                !response.closes(),
                "request {round} closed the connection: {response:?}"
            );
        }
    });
}

#[test]
fn connections_to_other_ports_are_refused_fast() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        for port in [81, 443, 22, 8080] {
            let started = Instant::now();
            let address = SocketAddr::new(METADATA.ip(), port);
            let outcome = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address))
                .await
                .unwrap_or_else(|_| {
                    panic!("connecting to port {port} hung for 1 s instead of a RST")
                });
            let error = outcome.expect_err("nothing listens on that port");
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "port {port}: {error}"
            );
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    });
}

#[test]
fn icmp_echo_to_the_metadata_address_is_answered() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let ping = namespace.exec(&["ping", "-n", "-c", "1", "-W", "2", "169.254.169.254"]);
    assert!(
        ping.status.success(),
        "ping failed: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    let output = String::from_utf8_lossy(&ping.stdout);
    assert!(output.contains("1 received"), "{output}");
}

#[test]
fn idle_and_half_sent_requests_do_not_stop_others_being_served() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let mut stalled = Vec::new();
        for _ in 0..10 {
            // Connects and says nothing.
            stalled.push(TcpStream::connect(METADATA).await.expect("connect"));
            // Sends half a request and then nothing more.
            let mut half = TcpStream::connect(METADATA).await.expect("connect");
            half.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.16")
                .await
                .expect("write");
            stalled.push(half);
        }
        for _ in 0..5 {
            // Sends half a request and disappears (RST).
            let mut gone = TcpStream::connect(METADATA).await.expect("connect");
            gone.write_all(b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-")
                .await
                .expect("write");
            gone.set_zero_linger().expect("SO_LINGER 0");
            drop(gone);
        }
        let started = Instant::now();
        for _ in 0..20 {
            let response = http::get(METADATA, "/latest/").await;
            assert_eq!(response.status, 200, "{response:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "20 requests took {:?} beside stalled clients",
            started.elapsed()
        );
        drop(stalled);
    });
    assert!(child.is_running(), "stderr:\n{}", child.stderr());
}

#[test]
fn malformed_http_gets_a_400_not_a_hang() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let garbage: [&[u8]; 3] = [
            b"THIS IS NOT HTTP AT ALL\r\n\r\n",
            b"GET /latest/ HTTP/1.1\r\nHost: 169.254.169.254\r\nA header without a colon\r\n\r\n",
            b"GET /latest/ HTTP/9.9\r\nHost: 169.254.169.254\r\n\r\n",
        ];
        for bytes in garbage {
            let mut connection = Connection::open(METADATA).await;
            connection.write_raw(bytes).await;
            let response = connection.read_response().await;
            assert_eq!(
                response.status,
                400,
                "{:?} → {response:?}",
                String::from_utf8_lossy(bytes)
            );
            // And the server then closes the connection instead of leaving it hanging.
            connection.read_to_close().await;
        }
        let response = http::get(METADATA, "/latest/").await;
        assert_eq!(response.status, 200, "still serving: {response:?}");
    });
}

/// Headers that legitimately differ between two answers to the same request.
const VOLATILE_HEADERS: [&str; 1] = ["date"];

fn stable_headers(response: &Response) -> Vec<(String, String)> {
    response
        .headers
        .iter()
        .filter(|(name, _)| {
            !VOLATILE_HEADERS
                .iter()
                .any(|v| name.eq_ignore_ascii_case(v))
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect()
}

fn header_names(response: &Response) -> Vec<String> {
    response
        .headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect()
}

fn assert_identical(what: &str, tun: &Response, kernel: &Response) {
    assert_eq!(tun.version, kernel.version, "{what}: HTTP version");
    assert_eq!(tun.status, kernel.status, "{what}: status");
    assert_eq!(tun.reason, kernel.reason, "{what}: reason");
    assert_eq!(
        stable_headers(tun),
        stable_headers(kernel),
        "{what}: headers"
    );
    assert_eq!(
        tun.body,
        kernel.body,
        "{what}: body\nTUN:    {:?}\nkernel: {:?}",
        String::from_utf8_lossy(&tun.body),
        String::from_utf8_lossy(&kernel.body)
    );
}

/// For answers that carry per-request secrets: same status, header names, and same JSON keys
/// (or same length for an opaque token).
fn assert_same_shape(what: &str, tun: &Response, kernel: &Response) {
    assert_eq!(tun.status, kernel.status, "{what}: status");
    assert_eq!(
        header_names(tun),
        header_names(kernel),
        "{what}: header names"
    );
    for (name, value) in stable_headers(tun) {
        if name != "content-length" {
            assert_eq!(
                kernel.header(&name),
                Some(value.as_str()),
                "{what}: header {name}"
            );
        }
    }
    match (
        serde_json::from_slice::<serde_json::Value>(&tun.body),
        serde_json::from_slice::<serde_json::Value>(&kernel.body),
    ) {
        (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => {
            let keys = |o: &serde_json::Map<String, serde_json::Value>| {
                o.keys().cloned().collect::<BTreeSet<_>>()
            };
            assert_eq!(keys(&a), keys(&b), "{what}: JSON keys");
            for stable in ["Code", "Type"] {
                assert_eq!(a.get(stable), b.get(stable), "{what}: {stable}");
            }
        }
        _ => assert_eq!(tun.body.len(), kernel.body.len(), "{what}: body length"),
    }
}

#[test]
fn tun_and_kernel_listener_answer_identically() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--listen", KERNEL_LISTENER]);
    namespace.run_in(|| async {
        let kernel = kernel_address();
        let requests = [
            Request::get("/"),
            Request::get("/latest/"),
            Request::get("/latest/meta-data/"),
            Request::get("/latest/meta-data/instance-id"),
            Request::get("/latest/meta-data/no-such-leaf"),
            Request::new("HEAD", "/latest/meta-data/instance-id"),
            Request::get("/latest/meta-data/iam/security-credentials/"),
        ];
        for request in &requests {
            let what = format!("{} {}", request.method, request.path);
            let tun = http::send(METADATA, request).await;
            let kern = http::send(kernel, request).await;
            assert_identical(&what, &tun, &kern);
        }

        let tun_token = http::send(METADATA, &Request::token("21600")).await;
        let kernel_token = http::send(kernel, &Request::token("21600")).await;
        assert_same_shape("PUT /latest/api/token", &tun_token, &kernel_token);

        let roles = http::get(METADATA, "/latest/meta-data/iam/security-credentials/").await;
        let role = String::from_utf8_lossy(&roles.body)
            .lines()
            .next()
            .unwrap_or("no-role-listed")
            .to_string();
        let path = format!("/latest/meta-data/iam/security-credentials/{role}");
        let tun = http::get(METADATA, &path).await;
        let kern = http::get(kernel, &path).await;
        assert_same_shape(&path, &tun, &kern);
    });
}

#[test]
fn connections_beyond_max_connections_are_refused_and_capacity_comes_back() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--max-connections", "5"]);
    namespace.run_in(|| async {
        let mut held = Vec::new();
        for index in 0..5 {
            let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(METADATA))
                .await
                .unwrap_or_else(|_| panic!("connection {index} hung"))
                .unwrap_or_else(|error| panic!("connection {index} within the limit: {error}"));
            held.push(stream);
        }
        let started = Instant::now();
        let over = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(METADATA))
            .await
            .expect("the sixth connection is answered (with a RST), not left hanging");
        assert_eq!(
            over.expect_err("the sixth connection is over the limit")
                .kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(held);
        // Closed connections are reaped; the limit frees up again. (Each refused attempt and
        // each closed one may hold a slot until reaped, so the request goes on the first
        // connection that gets through rather than on a new one.)
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match TcpStream::connect(METADATA).await {
                Ok(stream) => break stream,
                Err(error) if Instant::now() < deadline => {
                    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("capacity never came back: {error}"),
            }
        };
        stream
            .write_all(
                b"GET /latest/ HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
        )
        .await
        .expect("an answer in time")
        .expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    });
    assert!(child.is_running(), "stderr:\n{}", child.stderr());
}

#[test]
fn small_mtu_still_carries_large_responses_intact() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--mtu", "576", "--listen", KERNEL_LISTENER]);
    namespace.run_in(|| async {
        for path in [
            "/latest/dynamic/instance-identity/pkcs7",
            "/latest/dynamic/instance-identity/document",
            "/latest/meta-data/",
        ] {
            let tun = http::get(METADATA, path).await;
            let kernel = http::get(kernel_address(), path).await;
            assert_eq!(tun.status, 200, "{path}: {tun:?}");
            assert_identical(path, &tun, &kernel);
        }
        let pkcs7 = http::get(METADATA, "/latest/dynamic/instance-identity/pkcs7").await;
        assert!(
            pkcs7.body.len() > 576,
            "the check needs a body larger than one packet: {} bytes",
            pkcs7.body.len()
        );
    });
}

/// A client that sends its request and then half-closes (`shutdown(SHUT_WR)`, what
/// `printf ... | nc -N` does) still gets its answer, on the TUN and on a kernel listener, for
/// HTTP/1.0 and HTTP/1.1 alike.
#[test]
fn a_request_followed_by_a_half_close_is_answered_on_both_paths() {
    let namespace = namespace!();
    let child = common::start(&namespace, &["--listen", KERNEL_LISTENER]);
    namespace.run_in(|| async {
        for address in [METADATA, kernel_address()] {
            for request in [
                "GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n",
                "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
            ] {
                let answer = half_closed_exchange(address, request.as_bytes()).await;
                assert!(
                    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
                    "{request:?} then a half-close via {address}: got {answer:?}"
                );
                assert!(answer.contains("\r\n\r\ni-"), "the instance id: {answer:?}");
            }
        }
    });
    // And with the real tool, when it is installed.
    if std::process::Command::new("nc").arg("-h").output().is_ok() {
        for target in ["169.254.169.254 80", "127.0.0.1 8080"] {
            let script = format!(
                "printf 'GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n' | nc -N -w 5 {target}"
            );
            let output = namespace.exec(&["sh", "-c", &script]);
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                text.starts_with("HTTP/1.0 200") && text.contains("\r\n\r\ni-"),
                "nc -N {target}: {text:?} (stderr {:?})",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    drop(child);
}

/// Writes `request`, shuts down the write side and reads until the server closes.
async fn half_closed_exchange(address: SocketAddr, request: &[u8]) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write the request");
    stream.shutdown().await.expect("shutdown(SHUT_WR)");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "no close within 5 s after a half-close; got {:?}",
        String::from_utf8_lossy(&answer)
    );
    String::from_utf8_lossy(&answer).into_owned()
}
