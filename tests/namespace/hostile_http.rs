//! Hostile HTTP through the TUN: oversized heads and paths, request-smuggling shapes, NUL and
//! non-UTF-8 bytes, pipelining, a thousand requests on one connection, foreign `Host` names
//! (the DNS-rebinding guard) and oversized bodies. Every answer is a definite status (asserted
//! exactly, as the server gives it today), never a panic or a hang, and after each case the
//! process is alive and still answers a real request within a second.
#![cfg(target_os = "linux")]

use crate::common;
use crate::hostile_support;

use std::time::Duration;

use common::METADATA;
use common::http::{self, Connection, Request};
use hostile_support::{PROBE_PATH, assert_still_serving};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "Host: 169.254.169.254\r\n";

/// Writes `raw` on a fresh connection (concurrently, ignoring write errors: the server may
/// answer and close before it has read everything) and returns every byte the server sent
/// until it closed the connection.
async fn raw_exchange(raw: Vec<u8>) -> Vec<u8> {
    raw_exchange_to(METADATA, raw).await
}

/// [`raw_exchange`] with a server at `address`.
async fn raw_exchange_to(address: std::net::SocketAddr, raw: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&raw).await;
        // Keep the write half open: a shutdown would end the request early.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    writing.abort();
    match read {
        Ok(Ok(_)) => {}
        // A reset after the answer (the server had unread data when it closed) is fine.
        Ok(Err(error)) if !answer.is_empty() => {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
        }
        Ok(Err(error)) => panic!("no answer, only {error}"),
        Err(_) => panic!(
            "the server neither answered nor closed within 10 s; got {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
    answer
}

/// The status codes of every response in `answer`, in order.
fn statuses(answer: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(answer);
    text.split("\r\n")
        .filter_map(|line| line.strip_prefix("HTTP/1.1 "))
        .filter_map(|rest| rest.get(..3)?.parse().ok())
        .collect()
}

/// `raw` on its own connection gets exactly one response, `expected`, and then a close.
async fn answers_once(what: &str, raw: Vec<u8>, expected: u16) {
    let answer = raw_exchange(raw).await;
    assert_eq!(
        statuses(&answer),
        vec![expected],
        "{what}: answer was {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(600)])
    );
}

fn get_with(extra_head: &[u8]) -> Vec<u8> {
    let mut raw = format!("GET {PROBE_PATH} HTTP/1.1\r\n{HOST}").into_bytes();
    raw.extend_from_slice(extra_head);
    raw.extend_from_slice(b"Connection: close\r\n\r\n");
    raw
}

fn get_path(path: &[u8]) -> Vec<u8> {
    let mut raw = b"GET ".to_vec();
    raw.extend_from_slice(path);
    raw.extend_from_slice(format!(" HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n").as_bytes());
    raw
}

fn token_put_with(head_and_body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "PUT /latest/api/token HTTP/1.1\r\n{HOST}X-aws-ec2-metadata-token-ttl-seconds: 60\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(head_and_body);
    raw
}

#[test]
fn oversized_request_heads_get_431() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        // --max-header-bytes defaults to 16 KiB: hyper's read buffer, so the whole head
        // (request line and every header) must fit. 15 KiB of header fits, 20 KiB does not.
        let header = format!("X-Big: {}\r\n", "a".repeat(15 * 1024));
        answers_once("a 15 KiB header", get_with(header.as_bytes()), 200).await;
        let header = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
        answers_once("a 20 KiB header", get_with(header.as_bytes()), 431).await;
        let header = format!("X-Big: {}\r\n", "a".repeat(500 * 1024));
        answers_once("a 500 KiB header", get_with(header.as_bytes()), 431).await;
        // Many small headers: hyper's fixed limit of 100.
        let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
        answers_once("120 headers", get_with(many.as_bytes()), 431).await;
        // 16 KiB of headers in small pieces: the byte limit, not the count.
        let pieces: String = (0..90)
            .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(200)))
            .collect();
        answers_once("90 headers of 200 bytes", get_with(pieces.as_bytes()), 431).await;
    });
    assert_still_serving(&namespace, &mut child, "oversized request heads");
}

#[test]
fn very_long_paths_get_414() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        // --max-path-length defaults to 1024 bytes of path and query.
        let prefix = "/latest/meta-data/";
        let at_limit = format!("{prefix}{}", "a".repeat(1024 - prefix.len()));
        answers_once("a 1024-byte path", get_path(at_limit.as_bytes()), 404).await;
        let over = format!("{at_limit}a");
        answers_once("a 1025-byte path", get_path(over.as_bytes()), 414).await;
        let query = format!("{prefix}instance-id?{}", "q".repeat(1024));
        answers_once("a 1 KiB query", get_path(query.as_bytes()), 414).await;
        let path = format!("{prefix}{}", "a".repeat(5 * 1024));
        answers_once("a 5 KiB path", get_path(path.as_bytes()), 414).await;
        // Beyond the 16 KiB head limit the head itself is too large.
        let path = format!("{prefix}{}", "a".repeat(70 * 1024));
        let answer = raw_exchange(get_path(path.as_bytes())).await;
        let status = statuses(&answer);
        assert!(
            status == vec![414] || status == vec![431],
            "a 70 KiB path: {status:?}"
        );
        // The token PUT is refused the same way, before it could mint a token.
        let raw = format!(
            "PUT /latest/api/token?{} HTTP/1.1\r\n{HOST}X-aws-ec2-metadata-token-ttl-seconds: 60\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            "q".repeat(2000)
        );
        answers_once("a token PUT with a 2 KB query", raw.into_bytes(), 414).await;
    });
    assert_still_serving(&namespace, &mut child, "very long paths");
}

#[test]
fn request_smuggling_shapes_are_refused_or_cannot_smuggle() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        // The smuggled request a front end reading Content-Length would see as body, and a
        // back end reading chunked as a second request.
        let smuggled = format!("GET /smuggled HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n");
        for (what, framing) in [
            (
                "Content-Length then chunked",
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            ),
            (
                "chunked then Content-Length",
                "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
            ),
        ] {
            let raw = token_put_with(format!("{framing}\r\n0\r\n\r\n{smuggled}").as_bytes());
            // hyper lets chunked win (RFC 9112 6.3) and closes the connection after the
            // response, so the smuggled request is never read. (The issue asked for 400; hyper
            // does not offer that: reported to the lead.)
            answers_once(what, raw, 200).await;
        }
        for (what, framing, body) in [
            (
                "two different Content-Lengths",
                "Content-Length: 0\r\nContent-Length: 5\r\n",
                "hello",
            ),
            (
                "chunked not last",
                "Transfer-Encoding: chunked, identity\r\n",
                "0\r\n\r\n",
            ),
            (
                "a space before the colon",
                "Transfer-Encoding : chunked\r\n",
                "0\r\n\r\n",
            ),
            ("a negative Content-Length", "Content-Length: -1\r\n", ""),
            (
                "a Content-Length with a sign",
                "Content-Length: +5\r\n",
                "hello",
            ),
        ] {
            let raw =
                token_put_with(format!("{framing}Connection: close\r\n\r\n{body}").as_bytes());
            answers_once(what, raw, 400).await;
        }
        // A malformed chunked body fails while the service reads it: 400, not 413.
        let raw = token_put_with(
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        );
        answers_once("a bad chunk size", raw, 400).await;
        // Identical duplicates are allowed by RFC 9110 and harmless.
        let raw =
            token_put_with(b"Content-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        answers_once("two identical Content-Lengths", raw, 200).await;
    });
    assert_still_serving(&namespace, &mut child, "request smuggling shapes");
}

#[test]
fn nul_and_non_utf8_bytes_get_400_or_404_never_a_panic() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let cases: [(&str, Vec<u8>, u16); 9] = [
            ("a NUL in the path", get_path(b"/latest/meta-data/\x00x"), 400),
            ("raw non-UTF-8 in the path", get_path(b"/latest/meta-data/\xff\xfe"), 400),
            ("%00 in the path", get_path(b"/latest/meta-data/%00"), 404),
            ("%ff%fe in the path", get_path(b"/latest/meta-data/%ff%fe"), 404),
            ("a NUL in a header value", get_with(b"X-A: a\x00b\r\n"), 400),
            ("a non-UTF-8 header name", get_with(b"X-\xff: a\r\n"), 400),
            // Header values are opaque bytes to HTTP; an unknown header is ignored.
            ("a non-UTF-8 header value", get_with(b"X-A: \xff\xfe\r\n"), 200),
            // The Host guard refuses what it cannot read as a name.
            (
                "a non-UTF-8 Host",
                [
                    format!("GET {PROBE_PATH} HTTP/1.1\r\nHost: 169.254.").as_bytes(),
                    b"\xff\r\nConnection: close\r\n\r\n",
                ]
                .concat(),
                403,
            ),
            (
                "a NUL in the token TTL header",
                token_put_with(b"X-aws-ec2-metadata-token-ttl-seconds: 6\x000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                400,
            ),
        ];
        for (what, raw, expected) in cases {
            answers_once(what, raw, expected).await;
        }
    });
    assert_still_serving(&namespace, &mut child, "NUL and non-UTF-8 bytes");
}

#[test]
fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let paths = [
            "/latest/meta-data/instance-id",
            "/latest/meta-data/instance-type",
            "/latest/meta-data/placement/availability-zone",
            "/latest/meta-data/no-such-leaf",
            "/latest/meta-data/ami-id",
        ];
        let mut expected = Vec::new();
        for path in paths {
            expected.push(http::get(METADATA, path).await);
        }
        let mut connection = Connection::open(METADATA).await;
        let pipelined: String = paths
            .iter()
            .map(|path| format!("GET {path} HTTP/1.1\r\n{HOST}\r\n"))
            .collect();
        connection.write_raw(pipelined.as_bytes()).await;
        for (path, expected) in paths.iter().zip(&expected) {
            let response = connection.read_response().await;
            assert_eq!(
                (response.status, &response.body),
                (expected.status, &expected.body),
                "pipelined answer for {path} out of order or wrong"
            );
        }
    });
    assert_still_serving(&namespace, &mut child, "pipelined requests");
}

#[test]
fn a_thousand_requests_on_one_keep_alive_connection() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let mut connection = Connection::open(METADATA).await;
        let token = http::token(METADATA, 60).await;
        for index in 0..1000 {
            let request = if index % 2 == 0 {
                Request::get(PROBE_PATH)
            } else {
                Request::get_with_token("/latest/meta-data/instance-type", &token)
            };
            let response = connection.send(&request).await;
            assert_eq!(response.status, 200, "request {index} on the connection");
            assert!(
                !response.closes(),
                "the server closed after request {index}"
            );
        }
    });
    assert_still_serving(&namespace, &mut child, "1000 keep-alive requests");
}

#[test]
fn foreign_host_names_are_forbidden_and_documented_names_served() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        for host in [
            "attacker.example",
            "169.254.169.254.attacker.example",
            "instance-data.attacker.example",
            "localhost.attacker.example",
            "attacker.example:80",
            "[fd00:ec2::254",
        ] {
            let response =
                http::send(METADATA, &Request::get(PROBE_PATH).header("Host", host)).await;
            assert_eq!(response.status, 403, "Host: {host}");
            // The token, too: a rebinding page must not get one.
            let response = http::send(METADATA, &Request::token("60").header("Host", host)).await;
            assert_eq!(response.status, 403, "token PUT with Host: {host}");
        }
        for host in [
            "169.254.169.254",
            "169.254.169.254:80",
            "instance-data",
            "instance-data.ec2.internal",
            "INSTANCE-DATA.EC2.INTERNAL.",
            "localhost",
            "[fd00:ec2::254]",
        ] {
            let response =
                http::send(METADATA, &Request::get(PROBE_PATH).header("Host", host)).await;
            assert_eq!(response.status, 200, "Host: {host}");
        }
    });
    assert_still_serving(&namespace, &mut child, "foreign Host names");
}

#[test]
fn oversized_bodies_get_413() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        // Exactly the limit is read (and ignored).
        let body = "x".repeat(64 * 1024);
        let raw = token_put_with(
            format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        );
        answers_once("a 64 KiB token PUT body", raw, 200).await;
        let body = "x".repeat(64 * 1024 + 1);
        let raw = token_put_with(
            format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        );
        answers_once("a 64 KiB + 1 token PUT body", raw, 413).await;
        let chunk = format!("8000\r\n{}\r\n", "x".repeat(0x8000));
        let raw = token_put_with(
            format!(
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
                chunk.repeat(3)
            )
            .as_bytes(),
        );
        answers_once("a 96 KiB chunked token PUT body", raw, 413).await;
        // A GET with a body: the limit is the same whatever the method.
        let body = "x".repeat(1024 * 1024);
        let raw = format!(
            "GET {PROBE_PATH} HTTP/1.1\r\n{HOST}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        answers_once("a 1 MiB GET body", raw.into_bytes(), 413).await;
    });
    assert_still_serving(&namespace, &mut child, "oversized bodies");
}

/// The Host guard looks at every `Host` header and at the authority of an absolute-form target
/// (RFC 9112 §3.2.2: it replaces `Host`). RFC 9112 §3.2: more than one `Host` is a 400. A browser
/// sends neither shape, but anything that relays requests might.
#[test]
fn conflicting_host_information_is_refused() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    namespace.run_in(|| async {
        let two_hosts = format!(
            "GET {PROBE_PATH} HTTP/1.1\r\n{HOST}Host: attacker.example\r\nConnection: close\r\n\r\n"
        );
        answers_once("two Host headers", two_hosts.into_bytes(), 400).await;
        let absolute = format!(
            "GET http://attacker.example{PROBE_PATH} HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n"
        );
        answers_once(
            "an absolute-form foreign authority",
            absolute.into_bytes(),
            403,
        )
        .await;
        let absolute = format!(
            "GET http://169.254.169.254{PROBE_PATH} HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n"
        );
        answers_once(
            "an absolute-form metadata authority",
            absolute.into_bytes(),
            200,
        )
        .await;
    });
    assert_still_serving(&namespace, &mut child, "conflicting Host information");
}

/// Clients that ask for a large answer and never read it: each connection pipelines a few GETs
/// of a 1 MiB user-data and then sits still with a tiny receive buffer. The answer must not be
/// copied per connection (the user-data is one shared buffer that each response only
/// references), and hyper must not queue one answer per pipelined request behind a client that
/// never reads: memory stays bounded and a real client is still served.
#[test]
fn clients_that_never_read_large_answers_do_not_exhaust_memory() {
    const CLIENTS: usize = 200;
    const PIPELINED: usize = 8;
    const USER_DATA_BYTES: usize = 1024 * 1024;
    let namespace = namespace!();
    let dir = common::TempDir::new();
    let user_data: Vec<u8> = (0..USER_DATA_BYTES)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let path = dir.file("user-data", &user_data);
    let size = USER_DATA_BYTES.to_string();
    let mut args = vec!["--user-data", path.as_str()];
    // A build with a user-data size cap must be told to allow this one.
    if binary_accepts("--max-user-data-bytes") {
        args.extend(["--max-user-data-bytes", size.as_str()]);
    }
    let mut child = common::start(&namespace, &args);
    let before = hostile_support::rss_kib(&child);
    let pid = child.pid();
    let (rss, held) = namespace.run_in(move || async move {
        let request = format!("GET /latest/user-data HTTP/1.1\r\n{HOST}\r\n").repeat(PIPELINED);
        let mut held = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            // A small receive buffer: the kernel cannot soak up what the server sends, so the
            // server's own buffers are what is measured.
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            let mut stream = socket.connect(METADATA).await.expect("connect");
            stream
                .write_all(request.as_bytes())
                .await
                .expect("writing the pipelined requests");
            held.push(stream);
        }
        // Let the server read and answer everything it will; the highest RSS seen counts.
        let mut rss = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            rss = rss.max(rss_of(pid));
        }
        hostile_support::answered_quickly("while 200 clients hold unread answers").await;
        (rss, held.len())
    });
    assert_eq!(held, CLIENTS);
    eprintln!(
        "RSS with {CLIENTS} clients each pipelining {PIPELINED} unread {USER_DATA_BYTES}-byte \
         answers: {rss} KiB (before them: {before} KiB)"
    );
    assert!(
        rss < hostile_support::RSS_LIMIT_KIB,
        "imds-tun used {rss} KiB with {CLIENTS} non-reading clients (limit {} KiB)",
        hostile_support::RSS_LIMIT_KIB
    );
    assert_still_serving(&namespace, &mut child, "clients that never read");
}

/// True when `imds-tun --help` lists `flag`.
fn binary_accepts(flag: &str) -> bool {
    std::process::Command::new(common::BINARY)
        .arg("--help")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(flag))
}

/// `VmRSS` of `pid` in KiB, 0 if it cannot be read.
fn rss_of(pid: nix::unistd::Pid) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host` gets a 400. HTTP/1.0 has no `Host` and is
/// still served. Both paths, the TUN and a kernel `--listen` socket, answer the same.
#[test]
fn http_1_1_without_host_gets_400_and_http_1_0_is_served() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--listen", "127.0.0.1:8080"]);
    let listener = child.listen_addresses()[0];
    namespace.run_in(move || async move {
        for address in [METADATA, listener] {
            let request = format!("GET {PROBE_PATH} HTTP/1.1\r\nConnection: close\r\n\r\n");
            let answer = raw_exchange_to(address, request.into_bytes()).await;
            assert_eq!(
                statuses(&answer),
                vec![400],
                "HTTP/1.1 without Host via {address}: {:?}",
                String::from_utf8_lossy(&answer)
            );
            let request = format!("GET {PROBE_PATH} HTTP/1.0\r\n\r\n");
            let answer = raw_exchange_to(address, request.into_bytes()).await;
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
                "HTTP/1.0 without Host via {address}: {text:?}"
            );
        }
    });
    assert_still_serving(&namespace, &mut child, "requests without Host");
}

/// Requests that each cause a log line (a foreign `Host` of 8 KiB) must not turn into an
/// unbounded log: one line per kind per interval, with client text cut short. Before, 5 000 such
/// requests wrote 40 MB of log in half a second.
#[test]
fn log_lines_caused_by_clients_are_rate_limited_and_bounded() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    let before = child.stderr().len();
    let foreign = format!("{}.attacker.example", "h".repeat(8 * 1024));
    const CONNECTIONS: usize = 10;
    const REQUESTS_EACH: usize = 500;
    namespace.run_in(move || async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let request = Request::get("/latest/meta-data/").header("Host", &foreign);
            tasks.spawn(async move {
                let mut connection = Connection::open(METADATA).await;
                for _ in 0..REQUESTS_EACH {
                    let response = connection.send(&request).await;
                    assert_eq!(response.status, 403, "{response:?}");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("every foreign-Host request is answered 403");
        }
    });
    let logged = &child.stderr()[before..];
    let lines = logged.matches("foreign Host").count();
    assert!(
        (1..=3).contains(&lines),
        "5 000 refusals within seconds should log 1 to 3 lines, logged {lines}:\n{logged:.2000}"
    );
    assert!(
        logged.len() < 4 * 1024,
        "the refusals wrote {} bytes of log",
        logged.len()
    );
    assert_still_serving(&namespace, &mut child, "5 000 foreign-Host requests");
}
