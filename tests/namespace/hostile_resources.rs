//! A hostile local user against what imds-tun has only so much of: the control channel's
//! slots, descriptors and connection places on `--listen`, requests that hold their answer
//! (`wait_for_change`, faults) after their client left, and the token commands' runs and
//! cache. The attacker is always another user (`nobody`, Debian's `/usr/bin/python3`) in the
//! test's namespace; the victim is root, as the user a service runs for would be.
#![cfg(target_os = "linux")]

use crate::common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Namespace, text};

/// `/usr/bin/python3 -c SCRIPT ARGS` as `nobody` in `namespace`, stdout piped: the attacker.
fn attacker(namespace: &Namespace, script: &str, args: &[&str]) -> Attacker {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name()])
        .args(common::nobody_prefix())
        .args(["/usr/bin/python3", "-c", script])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("python3 runs");
    let output = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    Attacker { child, output }
}

/// The attacking process; killed on drop.
struct Attacker {
    child: Child,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Attacker {
    /// The next line it prints (its progress reports), trimmed.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .expect("the attacker reports");
        line.trim().to_owned()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `@imds-tun/control` 16 times every 100 ms and holds each connection 6 s without
/// sending a byte (the server waits 5 s for a request), for `argv[1]` seconds.
const CONTROL_SLOT_HOG: &str = r#"
import socket, sys, time
end = time.time() + float(sys.argv[1])
held = []
print("started", flush=True)
while time.time() < end:
    for _ in range(16):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect("\0imds-tun/control")
            held.append((time.time(), s))
        except OSError:
            s.close()
    now = time.time()
    keep = []
    for at, s in held:
        if now - at > 6:
            s.close()
        else:
            keep.append((at, s))
    held = keep
    time.sleep(0.1)
print("done", flush=True)
"#;

/// Issue 23, item 17: the control server read a request (for up to 5 s) before it asked who
/// was asking, in one of its 8 slots, so another user holding 8 connections locked root out of
/// `ctl` (20 of 20 failed). The peer is now checked at accept, and a refused user never holds a
/// slot.
#[test]
fn another_user_holding_control_connections_cannot_lock_root_out_of_ctl() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let mut hog = attacker(&namespace, CONTROL_SLOT_HOG, &["14"]);
    assert_eq!(hog.line(), "started");
    // Let the hog fill the slots (8 within the first 100 ms) and keep them filled.
    std::thread::sleep(Duration::from_secs(1));
    let mut failures = Vec::new();
    let started = Instant::now();
    for _ in 0..20 {
        let status = namespace.exec(&[common::BINARY, "ctl", "status"]);
        if !status.status.success() {
            failures.push(text(&status));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "root's `imds-tun ctl status` failed {} of 20 times while nobody held control \
         connections; first failure:\n{}",
        failures.len(),
        failures[0]
    );
    assert!(took < Duration::from_secs(12), "20 ctl calls took {took:?}");
    // The refused user still hears why.
    let refused = namespace.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        common::BINARY,
        "ctl",
        "status",
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("uid 65534 may not control"),
        "{}",
        text(&refused)
    );
}
