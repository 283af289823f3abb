//! The edges of a run as a process: output that meets a closed pipe or a full disk, exit codes
//! of refused settings, what is logged before serving, and a `--tun-name` that already names an
//! interface.
#![cfg(target_os = "linux")]

use crate::common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Namespace, assert_exit_code, text};

/// Refusals come before any work.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a command's stdout (or stderr) goes.
#[derive(Debug, Clone, Copy)]
enum Sink {
    /// A pipe whose reader is gone before the command writes: its writes fail with EPIPE, as
    /// `imds-tun ... | true` does when `true` wins the race (the issue saw that 10 of 10 times).
    ClosedPipe,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

impl Sink {
    fn open(self) -> Stdio {
        match self {
            Sink::ClosedPipe => {
                let (reader, writer) = std::io::pipe().expect("a pipe");
                drop(reader);
                writer.into()
            }
            Sink::Full => std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full exists")
                .into(),
        }
    }
}

/// Runs `command` (in `namespace` when given) with its stdout, or its stderr, going to `sink`.
fn run(
    namespace: Option<&Namespace>,
    command: &[&str],
    stdout: Option<Sink>,
    stderr: Option<Sink>,
) -> Output {
    let mut process = match namespace {
        Some(namespace) => {
            let mut process = Command::new("ip");
            process.args(["netns", "exec", namespace.name()]);
            process.args(command);
            process
        }
        None => {
            let mut process = Command::new(command[0]);
            process.args(&command[1..]);
            process
        }
    };
    process.stdin(Stdio::null()).env("NO_COLOR", "1");
    process.stdout(stdout.map_or_else(Stdio::piped, Sink::open));
    process.stderr(stderr.map_or_else(Stdio::piped, Sink::open));
    process.output().expect("the command runs")
}

/// A closed pipe ends the command quietly with its own exit code; `/dev/full` is one line on
/// stderr and exit 1. Never a panic (exit 101 and a backtrace).
fn assert_quiet_or_one_line(what: &str, sink: Sink, output: &Output, own_code: i32) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{what} into {sink:?} panicked: {}",
        text(output)
    );
    match sink {
        Sink::ClosedPipe => {
            assert_eq!(
                output.status.code(),
                Some(own_code),
                "{what}: {}",
                text(output)
            );
            assert_eq!(stderr, "", "{what} into a closed pipe says nothing");
        }
        Sink::Full => {
            assert_eq!(output.status.code(), Some(1), "{what}: {}", text(output));
            assert_eq!(
                stderr.trim_end(),
                "imds-tun: cannot write the output: No space left on device (os error 28)",
                "{what}: one line"
            );
        }
    }
}

#[test]
fn help_and_version_into_a_closed_pipe_or_a_full_disk_do_not_panic() {
    let binary = common::binary();
    let binary = binary.to_str().expect("a UTF-8 path");
    for arguments in [&["--help"][..], &["--version"], &["ctl", "--help"]] {
        for sink in [Sink::ClosedPipe, Sink::Full] {
            let mut command = vec![binary];
            command.extend_from_slice(arguments);
            let output = run(None, &command, Some(sink), None);
            assert_quiet_or_one_line(&format!("{arguments:?}"), sink, &output, 0);
        }
    }
}

#[test]
fn ctl_status_and_check_into_a_closed_pipe_or_a_full_disk_do_not_panic() {
    let namespace = namespace!();
    let _running = common::start(&namespace, &[]);
    let binary = common::binary();
    let binary = binary.to_str().expect("a UTF-8 path");
    for sink in [Sink::ClosedPipe, Sink::Full] {
        for _ in 0..5 {
            let output = run(
                Some(&namespace),
                &[binary, "ctl", "status"],
                Some(sink),
                None,
            );
            assert_quiet_or_one_line("ctl status", sink, &output, 0);
        }
        // Another imds-tun holds the address, so --check fails (exit 1) in either case.
        let output = run(Some(&namespace), &[binary, "--check"], Some(sink), None);
        assert_quiet_or_one_line("--check", sink, &output, 1);
    }
}

/// The one line a failed run exits with goes to stderr; when stderr itself fails there is
/// nowhere to say it, but the exit code still does, and nothing panics.
#[test]
fn a_failed_run_with_stderr_on_a_full_disk_or_a_closed_pipe_still_exits_with_its_code() {
    let binary = common::binary();
    let binary = binary.to_str().expect("a UTF-8 path");
    for sink in [Sink::ClosedPipe, Sink::Full] {
        let output = run(None, &[binary, "--mtu", "abc"], None, Some(sink));
        assert_eq!(output.status.code(), Some(2), "{sink:?}: {}", text(&output));
        let output = run(None, &[binary, "--no-tun"], None, Some(sink));
        assert_eq!(output.status.code(), Some(2), "{sink:?}: {}", text(&output));
        let output = run(None, &[binary, "ctl", "spot"], None, Some(sink));
        assert_eq!(output.status.code(), Some(2), "{sink:?}: {}", text(&output));
    }
}

/// A service whose stderr (its log) goes to a full disk or a closed pipe serves and ends as
/// always: lines that cannot be written are dropped, not a panic (exit 101) of the thread that
/// logged them.
#[test]
fn a_run_whose_log_cannot_be_written_serves_and_exits_with_its_code() {
    for sink in [Sink::Full, Sink::ClosedPipe] {
        let namespace = namespace!();
        let binary = common::binary();
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace.name()])
            .arg(&binary)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(sink.open())
            .env("RUST_LOG", "info")
            .spawn()
            .expect("imds-tun runs");
        let deadline = std::time::Instant::now() + common::READY_TIMEOUT;
        while namespace.tun_links().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let response = namespace.run_in(|| common::http::get(common::METADATA, "/latest/"));
        assert_eq!(response.status, 200, "{sink:?}: {response:?}");
        let tun = namespace.tun_links().pop().expect("the TUN");
        // Losing the claim logs and exits 1; a panic would be 101.
        namespace.ip(&["link", "del", &tun]);
        let status = child.wait().expect("waitpid");
        assert_eq!(status.code(), Some(1), "{sink:?}: {status}");
    }
}

/// An unknown `--user` is a setting that cannot work: exit 2 like every other, one line, and
/// nothing created.
#[test]
fn an_unknown_user_exits_2_with_one_line_and_creates_nothing() {
    let namespace = namespace!();
    let mut child = namespace.spawn(&["--user", "no-such-user-imds"]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 2);
    let stderr = child.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("imds-tun: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--user \"no-such-user-imds\": no such user"),
        "{stderr}"
    );
    assert_eq!(namespace.links(), vec!["lo".to_string()], "nothing created");
}

/// "serving as root" is said once the run serves, never by a start that then fails.
#[test]
fn serving_as_root_is_said_once_serving_and_never_by_a_failed_start() {
    let namespace = namespace!();
    let holder = namespace.run_in(|| async {
        std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port")
    });
    let busy = holder.local_addr().expect("local address").to_string();
    let mut refused = namespace.spawn(&["--listen", &busy]);
    let status = refused.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&refused, status, 1);
    assert!(
        !refused.stderr().contains("serving as root"),
        "a failed start did not serve: {}",
        refused.stderr()
    );
    drop(holder);

    let serving = common::start(&namespace, &[]);
    let line = serving.wait_for_line(Duration::from_secs(2), |line| {
        line.contains("serving as root")
    });
    let stderr = serving.stderr();
    let ready_at = stderr
        .lines()
        .position(|line| line.contains(common::READY_LINE))
        .expect("the ready line");
    let root_at = stderr
        .lines()
        .position(|each| each == line)
        .expect("the root line");
    assert!(root_at > ready_at, "said after serving began: {stderr}");
    assert_eq!(stderr.matches("serving as root").count(), 1, "{stderr}");
}

/// `--tun-name` naming a persistent TUN (`ip tuntap add`) must not attach to it and change it:
/// one line, exit 1, and the device exactly as it was (down, no address).
#[test]
fn a_tun_name_that_names_a_persistent_tun_is_refused_and_the_device_left_alone() {
    let namespace = namespace!();
    namespace.ip(&["tuntap", "add", "dev", "imdsp", "mode", "tun"]);
    let before = namespace.ip_json(&["addr", "show", "dev", "imdsp"]);
    let mut child = namespace.spawn(&["--tun-name", "imdsp"]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    let stderr = child.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("imds-tun: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for needle in [
        "--tun-name \"imdsp\"",
        "already exists",
        "ip link del imdsp",
    ] {
        assert!(errors[0].contains(needle), "{needle:?} in {}", errors[0]);
    }
    let after = namespace.ip_json(&["addr", "show", "dev", "imdsp"]);
    assert_eq!(before, after, "the device is untouched");
    assert!(namespace.routes_to_metadata().is_empty());
    // A name with %d is a new device whatever exists.
    let child = common::start(&namespace, &["--tun-name", "imdsp%d"]);
    assert_eq!(child.tun_name(), "imdsp0");
}
