//! Files named on the command line or in the config file, end to end (docs/hardening.md, "Files
//! named by the user"): under sudo they are opened with the invoking user's rights, a root
//! service keeps root's, only regular files are read, and every read has a cap.
//!
//! "Under sudo" is the environment sudo gives a root process: `SUDO_UID`/`SUDO_GID` of the user
//! who ran it (here 65534, `nobody`). The binary runs as root inside a fresh namespace.
#![cfg(target_os = "linux")]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::http;
use common::{METADATA, Namespace, Spawn, TempDir};

/// A refusal is quick: no read of a device or a FIFO may hold the start-up.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

fn under_sudo_as_nobody() -> Spawn {
    Spawn {
        env: vec![
            ("SUDO_UID".into(), common::NOBODY.to_string()),
            ("SUDO_GID".into(), common::NOBODY.to_string()),
            ("SUDO_USER".into(), "nobody".into()),
        ],
        ..Spawn::default()
    }
}

/// Writes `contents` to `name` in `dir` with `mode` (owned by root, the test's user).
fn file_with_mode(dir: &TempDir, name: &str, contents: &[u8], mode: u32) -> String {
    let path = dir.file(name, contents);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {path}: {error}"));
    path
}

/// Runs `imds-tun ARGS` with `options`, expects exit 2 within [`REFUSAL_TIMEOUT`] and exactly
/// one error line containing every needle; returns that line. Nothing may have been created.
fn refused(namespace: &Namespace, args: &[&str], options: &Spawn, needles: &[&str]) -> String {
    let started = Instant::now();
    let mut child = namespace.spawn_with(args, options);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    let took = started.elapsed();
    common::assert_exit_code(&child, status, 2);
    let stderr = child.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("imds-tun: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line; stderr:\n{stderr}");
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "names {needle:?}: {}",
            errors[0]
        );
    }
    assert!(namespace.tun_links().is_empty(), "nothing was created");
    eprintln!("refused in {took:?}: {}", errors[0]);
    errors[0].to_string()
}

/// Starts `imds-tun ARGS` (TUN and all) with `options` and returns what `/latest/user-data`
/// serves.
fn served_user_data(namespace: &Namespace, args: &[&str], options: &Spawn) -> Vec<u8> {
    let child = namespace.spawn_with(args, options);
    child.wait_ready();
    let response = namespace.run_in(|| async { http::get(METADATA, "/latest/user-data").await });
    assert_eq!(response.status, 200, "{response:?}");
    response.body.to_vec()
}

#[test]
fn under_sudo_a_root_only_user_data_file_is_refused_naming_file_and_user() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let secret = file_with_mode(&dir, "root-only", b"root-secret-123\n", 0o600);
    let line = refused(
        &namespace,
        &["--user-data", &secret],
        &under_sudo_as_nobody(),
        &[
            &format!("--user-data {secret}"),
            "permission denied for user nobody",
        ],
    );
    assert!(!line.contains("root-secret"), "{line}");
}

#[test]
fn under_sudo_a_file_in_a_root_only_directory_is_refused() {
    // The file's own bits would let anyone read it; the directory does not let nobody in. Only
    // a real open with nobody's rights sees that.
    let namespace = namespace!();
    let dir = TempDir::new();
    std::fs::create_dir(dir.path().join("private")).expect("mkdir");
    let inside = file_with_mode(&dir, "private/user-data", b"#!/bin/sh\n", 0o644);
    std::fs::set_permissions(
        dir.path().join("private"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod 700");
    refused(
        &namespace,
        &["--user-data", &inside],
        &under_sudo_as_nobody(),
        &["permission denied for user nobody"],
    );
}

#[test]
fn under_sudo_a_root_only_config_or_token_file_is_refused() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let config = file_with_mode(&dir, "imds.json", br#"{"region": "eu-west-1"}"#, 0o600);
    refused(
        &namespace,
        &["--config", &config],
        &under_sudo_as_nobody(),
        &[
            &format!("--config {config}"),
            "permission denied for user nobody",
        ],
    );
    let token = file_with_mode(&dir, "token", b"0123456789abcdef0123456789abcdef\n", 0o600);
    refused(
        &namespace,
        &["--listen", "0.0.0.0:0", "--listen-token-file", &token],
        &under_sudo_as_nobody(),
        &[
            &format!("--listen-token-file {token}"),
            "permission denied for user nobody",
        ],
    );
}

#[test]
fn under_sudo_a_world_readable_user_data_file_is_served_and_the_tun_still_comes_up() {
    // Also proves the ids came back: the TUN is created after the file was opened as nobody.
    let namespace = namespace!();
    let dir = TempDir::new();
    let contents = b"#!/bin/sh\necho served under sudo\n";
    let public = file_with_mode(&dir, "user-data", contents, 0o644);
    let served = served_user_data(
        &namespace,
        &["--user-data", &public],
        &under_sudo_as_nobody(),
    );
    assert_eq!(served, contents);
}

#[test]
fn a_root_service_without_sudo_still_reads_a_root_only_file() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let contents = b"#cloud-config\nfrom: root service\n";
    let root_only = file_with_mode(&dir, "user-data", contents, 0o600);
    let served = served_user_data(
        &namespace,
        &["--user-data", &root_only, "--user", "nobody"],
        &Spawn::default(),
    );
    assert_eq!(served, contents);
}

#[test]
fn dev_zero_as_user_data_or_config_exits_2_at_once() {
    let namespace = namespace!();
    for flag in ["--user-data", "--config"] {
        refused(
            &namespace,
            &[flag, "/dev/zero"],
            &Spawn::default(),
            &[
                &format!("{flag} /dev/zero"),
                "is a character device, not a regular file",
            ],
        );
    }
}

#[test]
fn a_fifo_as_config_exits_2_without_waiting_for_a_writer() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let fifo = dir.path().join("config.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    let fifo = fifo.to_str().expect("UTF-8 path").to_string();
    refused(
        &namespace,
        &["--config", &fifo],
        &under_sudo_as_nobody(),
        &["is a FIFO (named pipe), not a regular file"],
    );
}

#[test]
fn a_token_file_that_is_a_device_is_refused_as_such() {
    let namespace = namespace!();
    let line = refused(
        &namespace,
        &["--listen", "0.0.0.0:0", "--listen-token-file", "/dev/zero"],
        &Spawn::default(),
        &["--listen-token-file /dev/zero", "not a regular file"],
    );
    assert!(!line.contains("chmod"), "no permission advice: {line}");
}

#[test]
fn user_data_over_16_kib_is_refused_unless_the_cap_is_raised() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let large = vec![b'x'; 16385];
    let path = file_with_mode(&dir, "user-data", &large, 0o644);
    refused(
        &namespace,
        &["--user-data", &path],
        &Spawn::default(),
        &[
            "16385 bytes",
            "limit of 16384 bytes",
            "--max-user-data-bytes",
        ],
    );
    let served = served_user_data(
        &namespace,
        &["--user-data", &path, "--max-user-data-bytes", "20000"],
        &Spawn::default(),
    );
    assert_eq!(served, large);
}

#[test]
fn a_config_value_of_the_wrong_type_is_not_echoed() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let config = file_with_mode(
        &dir,
        "imds.json",
        br#"{"external_id": 5, "duration": "wJalrXUtnFEMI-hunter2"}"#,
        0o600,
    );
    let line = refused(
        &namespace,
        &["--config", &config],
        &Spawn::default(),
        &["line 1 column", "`external_id`"],
    );
    assert!(!line.contains("hunter2"), "{line}");
    let config = file_with_mode(
        &dir,
        "second.json",
        br#"{"duration": "wJalrXUtnFEMI-hunter2"}"#,
        0o600,
    );
    let line = refused(
        &namespace,
        &["--config", &config],
        &Spawn::default(),
        &["`duration`: expected a whole number, found a string"],
    );
    assert!(!line.contains("hunter2"), "{line}");
}
