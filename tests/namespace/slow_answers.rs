//! Answers that take their time, through the TUN: a client waits as long as its answer takes
//! (a GCE `wait_for_change`, a fault's latency or drop, a slow token command), a client that
//! half-closes its side after the request still gets a held answer, and a held answer ends
//! when its client is gone.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::{Duration, Instant};

use common::METADATA;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What became of one request within the client's patience.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A response with this status came, after this long.
    Answered(u16, Duration),
    /// The connection was reset (or closed without a response) after this long.
    Ended(String, Duration),
    /// Nothing yet: the client is still waiting.
    Waiting,
}

/// `GET path` with `headers` on a new connection, waiting up to `patience` for the whole
/// response.
async fn slow_get(path: &str, headers: &[(&str, &str)], patience: Duration) -> Outcome {
    let started = Instant::now();
    let mut stream = TcpStream::connect(METADATA).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = Vec::new();
    match tokio::time::timeout(patience, stream.read_to_end(&mut response)).await {
        Err(_) => Outcome::Waiting,
        Ok(Err(error)) => Outcome::Ended(error.to_string(), started.elapsed()),
        Ok(Ok(_)) => {
            let text = String::from_utf8_lossy(&response);
            match text
                .strip_prefix("HTTP/1.1 ")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok())
            {
                Some(status) => Outcome::Answered(status, started.elapsed()),
                None => Outcome::Ended(format!("closed, sent {text:?}"), started.elapsed()),
            }
        }
    }
}

const GOOGLE: (&str, &str) = ("Metadata-Flavor", "Google");

/// Issue 23, item 21: through the TUN anything slower than 10 s was reset at 10.0 s (smoltcp's
/// timeout counted the client's silence while it waited for us), while `--listen` served the
/// same requests. Four answers that take 12-13 s, all at once: a `wait_for_change`, a latency
/// fault, a slow token command, and a dropped request the client gives up on itself.
#[test]
fn through_the_tun_a_client_waits_as_long_as_its_answer_takes() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let script = scratch.file("slow-token", b"sleep 12\necho ya29.slow-but-real\n");
    let command = format!("sh {script}");
    let child = common::start(
        &namespace,
        &[
            "--gcp-project",
            "slow-project",
            "--gcp-access-token-command",
            &command,
        ],
    );
    for fault in [
        ["--path", "/latest/meta-data/ami-id", "--latency", "12000"],
        ["--path", "/latest/meta-data/hostname", "--drop", "100"],
    ] {
        let mut args = vec![common::BINARY, "ctl", "fault"];
        args.extend_from_slice(&fault);
        let output = namespace.exec(&args);
        assert!(output.status.success(), "{}", common::text(&output));
    }
    let patience = Duration::from_secs(20);
    let (waited, delayed, token, dropped) = namespace.run_in(move || async move {
        tokio::join!(
            slow_get(
                "/computeMetadata/v1/instance/id?wait_for_change=true&timeout_sec=13",
                &[GOOGLE],
                patience,
            ),
            slow_get("/latest/meta-data/ami-id", &[], patience),
            slow_get(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                &[GOOGLE],
                patience,
            ),
            // A dropped request is never answered: the client's own timeout ends it.
            slow_get("/latest/meta-data/hostname", &[], Duration::from_secs(14)),
        )
    });
    let in_time = |outcome: &Outcome, at_least: u64| {
        matches!(outcome, Outcome::Answered(200, took)
            if *took >= Duration::from_secs(at_least) && *took < patience)
    };
    let outcomes = format!(
        "wait_for_change: {waited:?}; --latency 12000: {delayed:?}; a 12 s token command: \
         {token:?}; --drop: {dropped:?}"
    );
    eprintln!("{outcomes}");
    let seen = format!("{outcomes}\nstderr:\n{}", child.stderr());
    assert!(in_time(&waited, 13), "{seen}");
    assert!(in_time(&delayed, 12), "{seen}");
    assert!(in_time(&token, 12), "{seen}");
    // No reset: the client times out (14 s).
    assert_eq!(dropped, Outcome::Waiting, "{seen}");
}
