//! The hardening flags, end to end: the serving process gives up root and the TUN keeps working;
//! `--allow-from` resets other clients on both paths; the request limits answer 414 and 431; the
//! header timeout closes silent connections.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::{Duration, Instant};

use common::http::{self, Connection, Request};
use common::{METADATA, Spawn};
use nix::sys::signal::Signal;

/// The `Uid:`/`Gid:` (real, effective, saved, filesystem) and `CapEff:` lines of a process.
fn identity(pid: nix::unistd::Pid) -> (Vec<u32>, Vec<u32>, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .expect("the field exists")
            .split_whitespace()
            .map(|id| id.parse().expect("numeric id"))
            .collect()
    };
    let capabilities = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .expect("CapEff")
        .trim()
        .to_string();
    (ids("Uid:"), ids("Gid:"), capabilities)
}

#[test]
fn with_user_the_serving_process_is_not_root_and_the_tun_still_works() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--user", "nobody"]);
    let (uids, gids, capabilities) = identity(child.pid());
    assert_eq!(uids, vec![65534; 4], "every uid is nobody's");
    assert_eq!(gids, vec![65534; 4], "every gid is nobody's");
    assert_eq!(capabilities, "0000000000000000", "no capability is kept");
    assert!(
        child.stderr().contains("gave up root"),
        "{}",
        child.stderr()
    );

    let instance_id =
        namespace.run_in(|| async { http::get(METADATA, "/latest/meta-data/instance-id").await });
    assert_eq!(instance_id.status, 200, "the TUN serves after the drop");

    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(8));
    common::assert_exit_code(&child, status, 0);
    namespace.wait_until_clean(Duration::from_secs(3));
}

#[test]
fn under_sudo_the_serving_process_becomes_the_invoking_user() {
    let namespace = namespace!();
    let options = Spawn {
        env: vec![
            ("SUDO_UID".into(), "65534".into()),
            ("SUDO_GID".into(), "65534".into()),
            ("SUDO_USER".into(), "nobody".into()),
        ],
        ..Spawn::default()
    };
    let child = namespace.spawn_with(&["--mock-credentials"], &options);
    child.wait_ready();
    let (uids, _, _) = identity(child.pid());
    assert_eq!(uids, vec![65534; 4]);
    let served = namespace.run_in(|| async { http::get(METADATA, "/latest/meta-data/").await });
    assert_eq!(served.status, 200);
}

/// Every thread's capability sets and no_new_privs, as `(thread, field, value)` for each one
/// that still grants something.
fn privileges_left_in_any_thread(pid: nix::unistd::Pid) -> Vec<(String, String, String)> {
    let mut left = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("threads");
    for task in tasks.flatten() {
        let thread = task.file_name().to_string_lossy().into_owned();
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for field in [
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "NoNewPrivs",
        ] {
            let value = status
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{field}:")))
                .unwrap_or("missing")
                .trim()
                .to_string();
            let expected = if field == "NoNewPrivs" {
                "1"
            } else {
                "0000000000000000"
            };
            if value != expected {
                left.push((thread.clone(), field.to_string(), value));
            }
        }
    }
    left
}

#[test]
fn after_the_drop_no_thread_keeps_any_capability_set_and_no_new_privs_is_set() {
    let namespace = namespace!();
    for (how, args, env) in [
        ("--user nobody", vec!["--user", "nobody"], vec![]),
        (
            "sudo",
            vec![],
            vec![
                ("SUDO_UID".to_string(), "65534".to_string()),
                ("SUDO_GID".to_string(), "65534".to_string()),
            ],
        ),
    ] {
        let mut child = namespace.spawn_with(
            &args,
            &Spawn {
                env,
                ..Spawn::default()
            },
        );
        child.wait_ready();
        assert_eq!(
            privileges_left_in_any_thread(child.pid()),
            Vec::<(String, String, String)>::new(),
            "{how}: effective, permitted, inheritable, bounding and ambient sets must be empty \
             and no_new_privs set in every thread"
        );
        let served = namespace.run_in(|| async { http::get(METADATA, "/latest/meta-data/").await });
        assert_eq!(served.status, 200, "{how}: the TUN serves after the drop");
        child.signal(Signal::SIGTERM);
        let status = child.wait_exit(Duration::from_secs(8));
        common::assert_exit_code(&child, status, 0);
        namespace.wait_until_clean(Duration::from_secs(3));
    }
}

#[test]
fn an_unknown_user_is_refused_before_serving() {
    let namespace = namespace!();
    let mut child = namespace.spawn(&["--user", "no-such-user-imds-tun"]);
    let status = child.wait_exit(Duration::from_secs(5));
    assert!(!status.success(), "{}", child.stderr());
    assert!(
        child.stderr().contains("no-such-user-imds-tun"),
        "{}",
        child.stderr()
    );
    assert!(namespace.tun_links().is_empty(), "nothing was created");
}

#[test]
fn clients_outside_allow_from_are_reset_on_the_tun_and_on_listeners() {
    let namespace = namespace!();
    let child = common::start(
        &namespace,
        &["--allow-from", "10.0.0.0/8", "--listen", "127.0.0.1:0"],
    );
    let listener = child.listen_addresses()[0];
    namespace.run_in(move || async move {
        for address in [METADATA, listener] {
            let started = Instant::now();
            let outcome = tokio::time::timeout(Duration::from_secs(2), async {
                let mut stream = tokio::net::TcpStream::connect(address).await?;
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                stream
                    .write_all(b"GET /latest/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
                    .await?;
                let mut buffer = [0u8; 64];
                stream.read(&mut buffer).await
            })
            .await
            .expect("refused promptly, not hung");
            match outcome {
                Err(error) => assert!(
                    matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ),
                    "{address}: {error}"
                ),
                Ok(read) => panic!("{address}: expected a reset, read {read} bytes"),
            }
            assert!(started.elapsed() < Duration::from_secs(1), "{address}");
        }
    });
}

#[test]
fn clients_inside_allow_from_are_served() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--allow-from", "169.254.169.253/32"]);
    let served = namespace.run_in(|| async { http::get(METADATA, "/latest/").await });
    assert_eq!(served.status, 200);
}

#[test]
fn an_over_long_path_is_414_and_an_over_large_head_is_431() {
    let namespace = namespace!();
    let _child = common::start(
        &namespace,
        &["--max-path-length", "64", "--max-header-bytes", "8192"],
    );
    namespace.run_in(|| async {
        let long_path = format!("/latest/meta-data/{}", "a".repeat(100));
        let too_long = http::get(METADATA, &long_path).await;
        assert_eq!(too_long.status, 414, "{}", too_long.text());
        assert_eq!(too_long.header("server"), Some("EC2ws"));

        let huge = Request::get("/latest/meta-data/").header("X-Padding", &"p".repeat(10_000));
        let mut connection = Connection::open(METADATA).await;
        connection.write_raw(&encode(&huge)).await;
        let answer = String::from_utf8_lossy(&connection.read_to_close().await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

        let fine = http::get(METADATA, "/latest/meta-data/instance-id").await;
        assert_eq!(fine.status, 200, "still serving");
    });
}

#[test]
fn the_header_timeout_closes_a_silent_connection() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--header-timeout", "1"]);
    namespace.run_in(|| async {
        let mut connection = Connection::open(METADATA).await;
        let started = Instant::now();
        let rest = connection.read_to_close().await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
            "closed after {waited:?}, {rest:?}"
        );
    });
}

fn encode(request: &Request) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 169.254.169.254\r\n",
        request.method, request.path
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}
