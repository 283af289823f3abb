//! Who read the credentials: every credentials read through the TUN leaves one log line naming
//! the caller's process and user (a local caller) or its address (a forwarded one), in a fresh
//! network namespace with real clients run as other users.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::Duration;

const LOG_WAIT: Duration = Duration::from_secs(5);

#[test]
fn a_local_readers_process_and_uid_are_named_and_each_caller_keeps_its_line() {
    let namespace = namespace!();
    let child = common::start(&namespace, &["--mock-credentials"]);
    let curl_as = |uid: &str| {
        let output = namespace.exec(&[
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            // Twice on one connection, 300 ms apart: the audit line is written after the
            // answer, so curl must still hold the socket when imds-tun looks for its process.
            "--rate",
            "3/s",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun",
        ]);
        assert!(output.status.success(), "curl as {uid}: {output:?}");
    };
    curl_as("65534");
    let line = child.wait_for_line(LOG_WAIT, |line| line.contains("read role credentials"));
    assert!(
        line.contains("(curl) uid 65534 read role credentials imds-tun"),
        "{line}"
    );
    assert!(line.contains("pid "), "{line}");
    // In text the caller is said in words once, not again as `uid=` fields (those are JSON's).
    assert!(!line.contains("uid="), "{line}");
    // Right after: another user's read is not swallowed by the first one's rate limit.
    curl_as("4321");
    child.wait_for_line(LOG_WAIT, |line| {
        line.contains("(curl) uid 4321 read role credentials imds-tun")
    });
    // A metadata read is not a credentials read.
    let other = namespace.exec(&[
        "curl",
        "-sf",
        "http://169.254.169.254/latest/meta-data/instance-id",
    ]);
    assert!(other.status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        child.stderr().matches("read role credentials").count(),
        2,
        "{}",
        child.stderr()
    );
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host), from this process's mount table.
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })
}

/// A cgroup made for one test, removed on drop.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_forwarded_reader_is_named_by_its_address_and_its_containers_cgroup_picks_its_role() {
    let test =
        "a_forwarded_reader_is_named_by_its_address_and_its_containers_cgroup_picks_its_role";
    let Some(mount) = cgroup2_mount() else {
        common::skip_or_fail(test, "no cgroup2 hierarchy is mounted");
        return;
    };
    let name = format!("imds-tun-test-{}", std::process::id());
    let cgroup = TestCgroup(mount.join(&name));
    std::fs::create_dir_all(&cgroup.0).expect("a test cgroup");
    let host = namespace!();
    let guest = namespace!();
    host.link_guest(&guest, "10.88.0.1", "10.88.0.2");
    // The guest reaches 169.254.169.254 through the host, as a container on a bridge does.
    guest.ip(&["route", "add", "default", "via", "10.88.0.1"]);
    let forwarding = host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    assert!(forwarding.status.success(), "{forwarding:?}");
    let rule = format!("cgroup:/{name}=arn:aws:iam::123456789012:role/container");
    let child = common::start(&host, &["--mock-credentials", "--caller-role", &rule]);
    // The guest's curl runs in the test cgroup, as a container's processes run in theirs.

    let procs = cgroup.0.join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec curl -sf http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        procs.display()
    );
    // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup hierarchy.
    let in_guest = |script: &str| {
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", guest.path().display()))
            .args(["sh", "-c", script])
            .output()
            .expect("nsenter runs")
    };
    let listed = in_guest(&script);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "container",
        "the container's cgroup picked its role"
    );
    let script = format!(
        "echo $$ > {} && exec curl -sf -o /dev/null http://169.254.169.254/latest/meta-data/iam/security-credentials/container",
        procs.display()
    );
    let read = in_guest(&script);
    assert!(read.status.success(), "{read:?}");
    let line = child.wait_for_line(LOG_WAIT, |line| line.contains("read role credentials"));
    assert!(
        line.contains(&format!(
            "10.88.0.2 (cgroup /{name}) read role credentials container"
        )),
        "{line}"
    );
}

#[test]
fn with_mock_credentials_each_caller_role_has_its_own_fake_keys() {
    let namespace = namespace!();
    let _child = common::start(
        &namespace,
        &[
            "--mock-credentials",
            "--caller-role",
            "uid:65534=arn:aws:iam::123456789012:role/batch",
            "--caller-role",
            "uid:4321=arn:aws:iam::123456789012:role/web",
        ],
    );
    let key_as = |uid: &str, role: &str| {
        let output = namespace.exec(&[
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "curl",
            "-sf",
            &format!("http://169.254.169.254/latest/meta-data/iam/security-credentials/{role}"),
        ]);
        assert!(
            output.status.success(),
            "uid {uid} reads {role}: {output:?}"
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        json["AccessKeyId"].as_str().expect("a key").to_owned()
    };
    let batch = key_as("65534", "batch");
    let web = key_as("4321", "web");
    let default = key_as("0", "imds-tun");
    assert!(
        batch != web && web != default && batch != default,
        "{batch} {web} {default}"
    );
    assert_eq!(key_as("65534", "batch"), batch, "one role, one set of keys");
}

/// `--log-format json`: every line the run writes is one JSON object with `timestamp`, `level`
/// and `message`, and the line naming a credentials reader carries it as fields.
#[test]
fn json_logs_carry_the_readers_uid_pid_command_and_role_as_fields() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--mock-credentials", "--log-format", "json"]);
    let output = namespace.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "curl",
        "-sf",
        "-o",
        "/dev/null",
        // As above: curl still holds its socket when its process is looked for.
        "--rate",
        "3/s",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun",
    ]);
    assert!(output.status.success(), "{output:?}");
    child.wait_for_line(LOG_WAIT, |line| line.contains("read role credentials"));
    child.signal(nix::sys::signal::Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10));
    common::assert_exit_code(&child, status, 0);
    let stderr = child.stderr();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    let read = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.contains("read role credentials"))
        })
        .unwrap_or_else(|| panic!("no credentials read line: {stderr}"));
    assert_eq!(read["level"], "INFO", "{read}");
    assert_eq!(read["uid"], 65534, "{read}");
    assert_eq!(read["command"], "curl", "{read}");
    assert!(read["pid"].as_u64().is_some_and(|pid| pid > 1), "{read}");
    assert_eq!(read["role"], "imds-tun", "{read}");
    assert!(read["address"].is_string(), "{read}");
}
