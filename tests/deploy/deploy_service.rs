//! Installing imds-tun as a service: scripts/install.sh and uninstall.sh in a scratch DESTDIR,
//! the systemd unit (syntax, and `systemd-analyze verify` where it runs), the least privilege
//! the unit grants (uid 65534 with only CAP_NET_ADMIN), and `imds-tun --check`.
#![cfg(target_os = "linux")]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{BINARY, METADATA, Spawn, TempDir, http, repo, text};

fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            into.insert(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, into);
            }
        }
    }
    let mut set = BTreeSet::new();
    walk(root, root, &mut set);
    set
}

/// Where no systemd runs: the scripts look for a running systemd here, and it never exists.
const NO_SYSTEMD: &str = "/nonexistent/run/systemd/system";

fn script(name: &str, destdir: &Path) -> Output {
    script_with(name, destdir, &[("SYSTEMD_RUNTIME_DIR", NO_SYSTEMD)])
}

fn script_with(name: &str, destdir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(repo().join("scripts").join(name))
        .env("DESTDIR", destdir)
        .env("IMDS_TUN_BINARY", BINARY)
        .env("IMDS_TUN_SYSTEMD", "0")
        .env_remove("IMDS_TUN_ARGS");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running the script")
}

#[test]
fn install_then_uninstall_leaves_exactly_what_was_there() {
    let scratch = TempDir::new();
    let destdir = scratch.path().join("root");
    std::fs::create_dir_all(destdir.join("etc/default")).unwrap();
    std::fs::write(destdir.join("etc/default/someone-else"), "keep").unwrap();
    // Another enabled service, as on every real system: its link must stay.
    let wants = destdir.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/someone-else.service",
        wants.join("someone-else.service"),
    )
    .unwrap();
    let before = tree(&destdir);

    let install = script("install.sh", &destdir);
    assert!(install.status.success(), "{}", text(&install));
    for file in [
        "usr/local/bin/imds-tun",
        "etc/systemd/system/imds-tun.service",
        "etc/default/imds-tun",
        "usr/local/share/imds-tun/install-manifest",
        "usr/local/share/man/man1/imds-tun.1",
        "usr/local/share/bash-completion/completions/imds-tun",
        "usr/local/share/zsh/site-functions/_imds-tun",
        "usr/local/share/fish/vendor_completions.d/imds-tun.fish",
    ] {
        assert!(
            destdir.join(file).is_file(),
            "{file} installed: {}",
            text(&install)
        );
    }
    // The man page and completions are what the installed binary prints.
    let printed = Command::new(BINARY)
        .arg("man")
        .output()
        .expect("imds-tun man");
    assert_eq!(
        std::fs::read(destdir.join("usr/local/share/man/man1/imds-tun.1")).unwrap(),
        printed.stdout
    );
    // Root only: the env file is where the service's secrets go (GOOGLE_ACCESS_TOKEN).
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(destdir.join("etc/default/imds-tun"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "etc/default/imds-tun mode {mode:o}");
    let unit =
        std::fs::read_to_string(destdir.join("etc/systemd/system/imds-tun.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/imds-tun $IMDS_TUN_ARGS"),
        "{unit}"
    );
    assert!(
        unit.contains("EnvironmentFile=-/etc/default/imds-tun"),
        "{unit}"
    );
    let env = std::fs::read_to_string(destdir.join("etc/default/imds-tun")).unwrap();
    assert!(env.contains("IMDS_TUN_ARGS=\"\""), "{env}");

    let again = script("install.sh", &destdir);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged /usr/local/bin/imds-tun"));

    // What `systemctl enable imds-tun` adds; uninstall.sh must take it away even when systemctl
    // cannot be asked (before, the dangling link stayed).
    std::os::unix::fs::symlink(
        "/etc/systemd/system/imds-tun.service",
        wants.join("imds-tun.service"),
    )
    .unwrap();

    let uninstall = script("uninstall.sh", &destdir);
    assert!(uninstall.status.success(), "{}", text(&uninstall));
    assert_eq!(tree(&destdir), before, "{}", text(&uninstall));
}

#[test]
fn install_without_systemd_says_how_to_run_it_without_systemctl() {
    let scratch = TempDir::new();
    let destdir = scratch.path().join("root");
    let install = script_with(
        "install.sh",
        &destdir,
        &[
            ("SYSTEMD_RUNTIME_DIR", NO_SYSTEMD),
            ("IMDS_TUN_ARGS", "--version"),
        ],
    );
    assert!(install.status.success(), "{}", text(&install));
    let said = String::from_utf8_lossy(&install.stdout).to_string();
    assert!(
        !said.contains("systemctl"),
        "a systemctl hint fails where no systemd runs: {said}"
    );
    // The hint, run as it says (we are root already; paths moved into DESTDIR), starts the
    // installed binary with the env file's flags: `--version` here, so it exits at once.
    let hint = said
        .lines()
        .find_map(|line| line.strip_prefix("install.sh:   sudo "))
        .unwrap_or_else(|| panic!("no `sudo ...` line to run: {said}"));
    let staged = hint
        .replace(
            "/etc/default/imds-tun",
            &destdir.join("etc/default/imds-tun").display().to_string(),
        )
        .replace(
            "/usr/local/bin/imds-tun",
            &destdir.join("usr/local/bin/imds-tun").display().to_string(),
        );
    let run = Command::new("sh")
        .args(["-c", &staged])
        .output()
        .expect("running the hint");
    assert!(run.status.success(), "{staged}\n{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stdout).starts_with("imds-tun "),
        "{staged}\n{}",
        text(&run)
    );

    // Where systemd runs but this run was told not to use it, systemctl is the right advice.
    let systemd_here = TempDir::new();
    let staged_only = script_with(
        "install.sh",
        &scratch.path().join("other-root"),
        &[(
            "SYSTEMD_RUNTIME_DIR",
            systemd_here.path().to_str().expect("temp paths are UTF-8"),
        )],
    );
    assert!(staged_only.status.success(), "{}", text(&staged_only));
    assert!(
        String::from_utf8_lossy(&staged_only.stdout).contains("systemctl enable --now imds-tun"),
        "{}",
        text(&staged_only)
    );
}

#[test]
fn unit_has_the_least_privilege_directives() {
    let unit = std::fs::read_to_string(repo().join("packaging/imds-tun.service")).unwrap();
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            assert!(line.ends_with(']'), "bad section line {line:?}");
            section = line.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?}"));
        assert!(!section.is_empty(), "{key} outside a section");
        keys.push(format!("{section}{key}={value}"));
    }
    for wanted in [
        "[Service]DynamicUser=yes",
        "[Service]CapabilityBoundingSet=CAP_NET_ADMIN",
        "[Service]AmbientCapabilities=CAP_NET_ADMIN",
        "[Service]DeviceAllow=/dev/net/tun rw",
        "[Service]ProtectSystem=strict",
        "[Service]ProtectHome=read-only",
        "[Service]PrivateTmp=yes",
        "[Service]NoNewPrivileges=yes",
        "[Service]RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX",
        "[Service]Restart=on-failure",
        "[Service]LimitNOFILE=65536",
        "[Service]EnvironmentFile=-@SYSCONFDIR@/default/imds-tun",
        "[Install]WantedBy=multi-user.target",
    ] {
        assert!(
            keys.iter().any(|key| key == wanted),
            "missing {wanted}: {keys:#?}"
        );
    }
}

#[test]
fn unit_passes_systemd_analyze_verify_where_available() {
    let test = test_name!();
    let runs = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|version| version.status.success());
    if !runs {
        common::skip_or_fail(
            test,
            "`systemd-analyze` is not installed or does not run (Debian package systemd); \
             unit_has_the_least_privilege_directives still checked the syntax",
        );
        return;
    }
    let scratch = TempDir::new();
    let bindir = Path::new(BINARY)
        .parent()
        .expect("the test binary lives in a directory")
        .display()
        .to_string();
    let unit = std::fs::read_to_string(repo().join("packaging/imds-tun.service"))
        .expect("reading packaging/imds-tun.service")
        .replace("@BINDIR@", &bindir)
        .replace("@SYSCONFDIR@", "/etc");
    let path = scratch.file("imds-tun.service", unit.as_bytes());
    let output = Command::new("systemd-analyze")
        .args(["verify", &path])
        .output()
        .expect("running systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("Failed to") && stderr.contains("bus") {
        common::skip_or_fail(
            test,
            &format!("systemd-analyze cannot verify without a system bus here: {stderr}"),
        );
        return;
    }
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{}",
        text(&output)
    );
}

/// The prefix that runs a command as uid/gid 65534 holding only CAP_NET_ADMIN, as the unit
/// does (see [`common::with_only_net_admin`]).
fn as_nobody_with_net_admin(scratch: &TempDir, rest: &str) -> String {
    common::with_only_net_admin(scratch, common::NOBODY, rest)
}

#[test]
fn binary_serves_as_nobody_with_only_cap_net_admin() {
    let namespace = namespace!();
    let device_dir = TempDir::new();
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name(), "sh", "-c"])
        .arg(as_nobody_with_net_admin(&device_dir, BINARY));
    let child = common::ImdsTun::spawn(command, &Spawn::default(), test_name!());
    child.wait_ready();
    let response = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/instance-id"));
    assert_eq!(response.status, 200, "{response:?}");
    // The shell exec'd into setpriv, which exec'd into imds-tun: the pid is the server's, and
    // it is still serving, so its status must be there to read.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid()))
        .expect("the serving process has a /proc status");
    let uid = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap_or_else(|| panic!("no Uid: line in {status}"));
    assert!(uid.contains("65534"), "{uid}");
}

fn check(namespace: &common::Namespace, prefix: Option<String>) -> Output {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace.name()]);
    match prefix {
        Some(shell) => command.args(["sh", "-c", &shell]),
        None => command.args([BINARY, "--check"]),
    };
    command.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn check_as_root_in_a_fresh_namespace_says_it_can_run() {
    let namespace = namespace!();
    let output = check(&namespace, None);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for line in stdout.lines() {
        assert!(
            line.starts_with("ok    ") || line.starts_with("warn  "),
            "{line:?} in\n{stdout}"
        );
    }
    assert!(
        stdout.contains("ok    privileges: root with CAP_NET_ADMIN"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    metadata address"), "{stdout}");
    assert!(stdout.contains("credentials: "), "{stdout}");
    assert!(namespace.tun_links().is_empty(), "--check creates nothing");
}

#[test]
fn check_as_nobody_fails_for_privileges() {
    let namespace = namespace!();
    let output = check(
        &namespace,
        Some(format!(
            "exec setpriv --reuid=65534 --regid=65534 --clear-groups {BINARY} --check"
        )),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let line = stdout
        .lines()
        .find(|line| line.starts_with("fail  privileges: uid 65534 without CAP_NET_ADMIN"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(" — "), "says what to do: {line}");

    // With only CAP_NET_ADMIN (and an openable device) it can run.
    let device_dir = TempDir::new();
    let output = check(
        &namespace,
        Some(as_nobody_with_net_admin(
            &device_dir,
            &format!("{BINARY} --check"),
        )),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn check_with_the_address_on_lo_fails_naming_lo() {
    let namespace = namespace!();
    namespace.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
    let output = check(&namespace, None);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let line = stdout
        .lines()
        .find(|line| line.starts_with("fail  metadata address:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("interface lo"), "{line}");
    assert!(line.contains("ip addr del"), "{line}");
}

#[test]
fn check_reports_a_bad_setting_and_an_unreachable_upstream() {
    let namespace = namespace!();
    let output = check(&namespace, Some(format!("exec {BINARY} --check --mtu 10")));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(stdout.contains("fail  settings: --mtu 10"), "{stdout}");

    let output = check(
        &namespace,
        Some(format!(
            "exec {BINARY} --check --upstream http://127.0.0.1:9"
        )),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(stdout.contains("warn  credentials: forwarded from the upstream http://127.0.0.1:9, which is not reachable"), "{stdout}");
}

/// `--check` decides about credentials the way a start does: with nothing to find it says a
/// start would serve FAKE credentials (not "ok"), and with `--role-arn` and nothing to assume it
/// with it fails, as a start would exit 2.
#[test]
fn check_predicts_fake_credentials_and_the_role_arn_refusal_like_a_start() {
    let namespace = namespace!();
    let check_with = |extra: &[&str]| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                namespace.name(),
                BINARY,
                "--check",
                "--no-tun",
            ])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("HOME", "/nonexistent/imds-tun-check")
            .env("AWS_CONFIG_FILE", "/nonexistent/imds-tun-check/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/imds-tun-check/credentials",
            )
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .stdin(Stdio::null())
            .output()
            .expect("imds-tun --check runs")
    };
    let nothing = check_with(&[]);
    let stdout = String::from_utf8_lossy(&nothing.stdout).to_string();
    assert_eq!(nothing.status.code(), Some(0), "{}", text(&nothing));
    assert!(
        stdout.contains(
            "warn  credentials: FAKE credentials for role imds-tun (no AWS credentials found"
        ),
        "{stdout}"
    );

    let role = check_with(&["--role-arn", "arn:aws:iam::123456789012:role/app"]);
    let stdout = String::from_utf8_lossy(&role.stdout).to_string();
    assert_eq!(role.status.code(), Some(1), "{}", text(&role));
    assert!(
        stdout.contains("fail  credentials: --role-arn arn:aws:iam::123456789012:role/app: no source credentials"),
        "{stdout}"
    );
}
