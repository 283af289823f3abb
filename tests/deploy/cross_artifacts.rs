//! The arm64 artefacts `scripts/package.sh arm64` cross-builds on x86_64: the static binary
//! (`target/aarch64-unknown-linux-musl/release/imds-tun`) and the .deb
//! (`target/debian/imds-tun_<version>-1_arm64.deb`).
//!
//! The binary is read (an aarch64 ELF, static, stripped) and run under qemu-user
//! (`qemu-aarch64-static`, Debian's qemu-user-static, called directly: no binfmt_misc
//! registration is needed or made): `--version`, `--help` (the same as this source's),
//! `--check` as root in a fresh network namespace (where two answers are qemu's own limits,
//! pinned), and serving the token flow and credentials through a TUN there. What qemu-user can
//! and cannot prove is in docs/packaging.md: it translates one process's system calls to the
//! x86_64 kernel, so the TUN ioctl, the address set-up and the sockets are the real kernel's,
//! but not every netlink message is translated, and nothing here says how the binary behaves
//! on arm64 hardware or an arm64 kernel.
//!
//! The package: architecture arm64, the same files as the amd64 one, and /usr/bin/imds-tun
//! byte-identical to the arm64 binary. These tests are ignored by default (arm64 is built only
//! with `IMDS_TUN_ARM64=1`, docs/packaging.md), so a run without arm64 reports them as ignored,
//! never as passed; scripts/test.sh runs them with `--ignored` when it built arm64, and then
//! missing artefacts or qemu skip, and fail under `CI=true`.
#![cfg(target_os = "linux")]

use crate::common;
use crate::package_artifacts::{ElfFacts, Unpacked, VERSION, elf_facts, help, succeed, target_dir};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{BINARY, METADATA, Spawn, http, text};
use nix::sys::signal::Signal;

const TRIPLE: &str = "aarch64-unknown-linux-musl";
const QEMU: &str = "qemu-aarch64-static";

/// ELF's e_machine of aarch64.
const EM_AARCH64: u16 = 183;

/// Under emulation a start takes longer than natively (about 10x in the measurements here).
const GRACEFUL_EXIT_TIMEOUT: Duration = Duration::from_secs(15);
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

struct Arm64 {
    binary: PathBuf,
    deb: PathBuf,
    /// The amd64 package, whose file list the arm64 one must repeat.
    deb_amd64: PathBuf,
}

impl Arm64 {
    /// `qemu-aarch64-static BINARY ARGS`: the emulator runs the binary (no script in between,
    /// which a test writing it could race with another test's fork: ETXTBSY).
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(QEMU);
        command.arg(&self.binary).args(args);
        command
    }

    fn help(&self) -> String {
        let output = succeed(&mut self.command(&["--help"]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The artefacts and qemu, or `None` after a skip notice (a failure under `CI=true`).
fn arm64(test: &str) -> Option<Arm64> {
    let target = target_dir();
    let binary = target.join(TRIPLE).join("release/imds-tun");
    let deb = target.join(format!("debian/imds-tun_{VERSION}-1_arm64.deb"));
    let deb_amd64 = target.join(format!("debian/imds-tun_{VERSION}-1_amd64.deb"));
    for path in [&binary, &deb, &deb_amd64] {
        if !path.is_file() {
            common::skip_or_fail(
                test,
                &format!(
                    "{} is missing: build it with `bash scripts/package.sh amd64 arm64`",
                    path.display()
                ),
            );
            return None;
        }
    }
    if Command::new(QEMU).arg("--version").output().is_err() {
        common::skip_or_fail(
            test,
            "qemu-aarch64-static is missing (Debian: apt-get install qemu-user-static; scripts/test.sh does)",
        );
        return None;
    }
    let found = Arm64 {
        binary,
        deb,
        deb_amd64,
    };
    if found.help() != help(Path::new(BINARY)) {
        common::skip_or_fail(
            test,
            &format!(
                "{} is stale (its --help differs from this source's): rebuild it with \
                 `bash scripts/package.sh arm64`",
                found.binary.display()
            ),
        );
        return None;
    }
    Some(found)
}

#[test]
#[ignore = "arm64 is built only with IMDS_TUN_ARM64=1; scripts/test.sh then runs these with --ignored"]
fn arm64_binary_is_a_static_stripped_aarch64_executable() {
    let Some(arm64) = arm64(test_name!()) else {
        return;
    };
    let elf = std::fs::read(&arm64.binary).expect("reading the arm64 binary");
    assert_eq!(
        elf.get(0x12..0x14),
        Some(&EM_AARCH64.to_le_bytes()[..]),
        "e_machine is aarch64"
    );
    let facts = elf_facts(&elf).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        facts,
        ElfFacts {
            interpreter: false,
            needed_libraries: 0,
            symbol_or_debug_sections: vec![],
        },
        "{} ({} bytes)",
        arm64.binary.display(),
        elf.len()
    );
}

#[test]
#[ignore = "arm64 is built only with IMDS_TUN_ARM64=1; scripts/test.sh then runs these with --ignored"]
fn arm64_binary_under_qemu_reports_the_version_and_this_sources_help() {
    let Some(arm64) = arm64(test_name!()) else {
        return;
    };
    let output = succeed(&mut arm64.command(&["--version"]));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("imds-tun {VERSION}\n")
    );
    // The same text as the x86_64 test build's (arm64() compared it already; here it must
    // also be a real help text, not two empty outputs).
    let help = arm64.help();
    assert!(help.contains("--mock-credentials"), "{help}");
}

/// `--check` under qemu-user, line by line. Two of its answers are qemu's, not the binary's,
/// and are pinned here so that a qemu (or a binary) that changes them fails this test and the
/// record in docs/packaging.md is updated: the kernel's route for 169.254.169.254 (a netlink
/// RTM_GETROUTE question) comes back from qemu's netlink translation as EOPNOTSUPP, and qemu's
/// own second thread (its RCU thread) makes the environment check count two threads.
#[test]
#[ignore = "arm64 is built only with IMDS_TUN_ARM64=1; scripts/test.sh then runs these with --ignored"]
fn arm64_binary_under_qemu_checks_a_namespace_and_only_qemu_s_limits_fail() {
    let Some(arm64) = arm64(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let output = Command::new("ip")
        .args(["netns", "exec", namespace.name(), QEMU])
        .arg(&arm64.binary)
        .arg("--check")
        .output()
        .expect("running --check under qemu");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = |name: &str| {
        report
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{}", text(&output)))
            .to_owned()
    };
    for ok in ["settings:", "tun", "privileges:", "user:"] {
        assert!(line(ok).starts_with("ok "), "{}", text(&output));
    }
    assert!(
        line("metadata").starts_with("fail ")
            && line("metadata")
                .ends_with("checking the route to 169.254.169.254: Not supported (os error 95)"),
        "qemu-user's netlink answer changed: update docs/packaging.md\n{}",
        text(&output)
    );
    assert!(
        line("credentials:").contains(
            "the environment may only be changed while the process has one thread (2 run)"
        ),
        "qemu-user's threads changed: update docs/packaging.md\n{}",
        text(&output)
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    // The same check of the x86_64 test build in a namespace of its own passes, so the two
    // failures above are the emulator's.
    let native = namespace!();
    let output = Command::new("ip")
        .args(["netns", "exec", native.name()])
        .arg(BINARY)
        .arg("--check")
        .output()
        .expect("running --check");
    assert!(output.status.success(), "{}", text(&output));
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

#[test]
#[ignore = "arm64 is built only with IMDS_TUN_ARM64=1; scripts/test.sh then runs these with --ignored"]
fn arm64_binary_under_qemu_serves_through_a_tun_and_leaves_nothing_behind() {
    let Some(arm64) = arm64(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let options = Spawn {
        binary: Some(PathBuf::from(QEMU)),
        ..Spawn::default()
    };
    let binary = arm64.binary.display().to_string();
    let mut child = namespace.spawn_with(&[&binary, "--mock-credentials"], &options);
    child.wait_ready();
    let (instance_id, credentials) = namespace.run_in(|| async {
        let instance_id = http::get(METADATA, "/latest/meta-data/instance-id").await;
        let token = http::token(METADATA, 60).await;
        let credentials = http::send(
            METADATA,
            &http::Request::get_with_token(
                "/latest/meta-data/iam/security-credentials/imds-tun",
                &token,
            ),
        )
        .await;
        (instance_id, credentials)
    });
    assert_eq!(instance_id.status, 200, "{instance_id:?}");
    assert!(instance_id.text().starts_with("i-"), "{instance_id:?}");
    let document: serde_json::Value =
        serde_json::from_slice(&credentials.body).expect("the credentials are JSON");
    assert_eq!(document["Code"], "Success", "{document}");
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(GRACEFUL_EXIT_TIMEOUT);
    common::assert_exit_code(&child, status, 0);
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

#[test]
#[ignore = "arm64 is built only with IMDS_TUN_ARM64=1; scripts/test.sh then runs these with --ignored"]
fn arm64_deb_is_the_amd64_deb_with_the_arm64_binary() {
    let Some(arm64) = arm64(test_name!()) else {
        return;
    };
    let info = succeed(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&arm64.deb)
            .arg("Architecture"),
    );
    assert_eq!(String::from_utf8_lossy(&info.stdout), "arm64\n");
    let listing = |deb: &Path| {
        let output = succeed(Command::new("dpkg-deb").arg("--contents").arg(deb));
        // Mode and path; sizes differ (the binary), dates do not matter.
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                format!("{} {}", fields[0], fields[fields.len() - 1])
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&arm64.deb), listing(&arm64.deb_amd64));
    let unpacked = Unpacked::new(&arm64.deb);
    let packaged = std::fs::read(unpacked.file("/usr/bin/imds-tun")).unwrap();
    assert!(
        packaged == std::fs::read(&arm64.binary).unwrap(),
        "/usr/bin/imds-tun in {} is the arm64 binary",
        arm64.deb.display()
    );
    assert_eq!(
        unpacked.read("/usr/lib/systemd/system/imds-tun.service"),
        Unpacked::new(&arm64.deb_amd64).read("/usr/lib/systemd/system/imds-tun.service")
    );
}
