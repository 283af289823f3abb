//! The RPMs `scripts/package.sh` builds with rpmbuild and `packaging/imds-tun.spec`, one per
//! architecture (`target/rpm/imds-tun-<version>-1.{x86_64,aarch64}.rpm`), read with Debian's
//! rpm tools: name, version, architecture, license and dependencies; exactly the .deb's files
//! with their modes (settings in /etc/sysconfig, marked %config(noreplace), and the unit reading
//! them from there); scriptlets that, run against a stand-in `systemctl`, never enable or start
//! the service; and an install into a throwaway root (`rpm --root`), verified by rpm itself and
//! erased again, keeping an edited config as `.rpmsave`.
//!
//! Like `package_artifacts`, these read what package.sh left in the target directory: missing,
//! they skip (and fail under `CI=true`). The arm64 one is checked when it is expected
//! (`package_artifacts::arm64_expected`).
#![cfg(target_os = "linux")]

use crate::common;
use crate::package_artifacts::{VERSION, arm64_expected, succeed, target_dir};

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TempDir, repo, text};

/// (Debian architecture, RPM architecture, Rust target).
const ARCHES: [(&str, &str, &str); 2] = [
    ("amd64", "x86_64", "x86_64-unknown-linux-musl"),
    ("arm64", "aarch64", "aarch64-unknown-linux-musl"),
];

struct Built {
    rpm_arch: &'static str,
    rpm: PathBuf,
    deb: PathBuf,
    binary: PathBuf,
}

/// Every architecture's rpm, .deb and binary, or `None` after a skip notice (a failure under
/// `CI=true`) when one is missing.
fn built(test: &str) -> Option<Vec<Built>> {
    let target = target_dir();
    let mut all = Vec::new();
    let arm64 = arm64_expected(test);
    for (deb_arch, rpm_arch, triple) in ARCHES {
        if deb_arch == "arm64" && !arm64 {
            continue;
        }
        let found = Built {
            rpm_arch,
            rpm: target.join(format!("rpm/imds-tun-{VERSION}-1.{rpm_arch}.rpm")),
            deb: target.join(format!("debian/imds-tun_{VERSION}-1_{deb_arch}.deb")),
            binary: target.join(triple).join("release/imds-tun"),
        };
        for path in [&found.rpm, &found.deb, &found.binary] {
            if !path.is_file() {
                common::skip_or_fail(
                    test,
                    &format!(
                        "{} is missing: build it with `bash scripts/package.sh`",
                        path.display()
                    ),
                );
                return None;
            }
        }
        all.push(found);
    }
    Some(all)
}

fn query(rpm: &Path, format: &str) -> String {
    let output = succeed(Command::new("rpm").args(["-qp", "--qf", format]).arg(rpm));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn rpm_names_the_package_its_architecture_and_depends_on_no_library() {
    let Some(built) = built(test_name!()) else {
        return;
    };
    for one in &built {
        assert_eq!(
            query(
                &one.rpm,
                "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{OS}|%{LICENSE}|%{SUMMARY}"
            ),
            format!(
                "imds-tun {VERSION} 1 {} linux|MIT OR Apache-2.0|EC2 instance metadata service \
                 on 169.254.169.254 for laptops, guests and CI",
                one.rpm_arch
            )
        );
        // Static: no library. What rpm itself adds (its own features, the scriptlets' shell)
        // is all there is.
        let requires = succeed(
            Command::new("rpm")
                .args(["-qp", "--requires"])
                .arg(&one.rpm),
        );
        let requires = String::from_utf8_lossy(&requires.stdout).into_owned();
        let unexpected: Vec<&str> = requires
            .lines()
            .filter(|line| !line.starts_with("rpmlib(") && *line != "/bin/sh")
            .collect();
        assert!(unexpected.is_empty(), "{}: {requires}", one.rpm.display());
        let recommends = succeed(
            Command::new("rpm")
                .args(["-qp", "--recommends"])
                .arg(&one.rpm),
        );
        assert_eq!(
            String::from_utf8_lossy(&recommends.stdout),
            "ca-certificates\n"
        );
        // Reproducible builds: no build host, and the build time and every file's time from
        // SOURCE_DATE_EPOCH (package.sh: the commit's time), not the time of the build.
        assert_eq!(query(&one.rpm, "%{BUILDHOST}"), "reproducible");
        let built = query(&one.rpm, "%{BUILDTIME}");
        let times: BTreeSet<String> = query(&one.rpm, "[%{FILEMTIMES}\n]")
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(times, BTreeSet::from([built]), "{}", one.rpm.display());
    }
}

/// `mode path` of every file (not directory) the .deb installs, as dpkg-deb lists them.
fn deb_files(deb: &Path) -> BTreeSet<String> {
    let output = succeed(Command::new("dpkg-deb").arg("--contents").arg(deb));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('-'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            format!("{} {}", fields[0], fields[5].trim_start_matches('.'))
        })
        .collect()
}

#[test]
fn rpm_holds_the_debs_files_with_settings_in_sysconfig_as_noreplace_config() {
    let Some(built) = built(test_name!()) else {
        return;
    };
    for one in &built {
        let listing = query(
            &one.rpm,
            "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
        );
        let mut files = BTreeSet::new();
        let mut config = Vec::new();
        for line in listing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // An empty flags field leaves four fields.
            let (mode, owner, flags, path) = match fields[..] {
                [mode, owner, flags, path] => (mode, owner, flags, path),
                [mode, owner, path] => (mode, owner, "", path),
                _ => panic!("unexpected line {line:?}"),
            };
            assert_eq!(owner, "root:root", "{line}");
            if flags.contains('c') {
                config.push(format!("{path} {flags}"));
            }
            if mode.starts_with('-') {
                files.insert(format!("{mode} {path}"));
            }
        }
        // The same files as the .deb, where Debian and RPM systems differ in place: settings
        // in /etc/sysconfig, zsh's functions in site-functions; the Debian copyright file is
        // Debian's own.
        let expected: BTreeSet<String> = deb_files(&one.deb)
            .into_iter()
            .filter(|line| !line.ends_with("/usr/share/doc/imds-tun/copyright"))
            .map(|line| {
                line.replace("/etc/default/imds-tun", "/etc/sysconfig/imds-tun")
                    .replace(
                        "/usr/share/zsh/vendor-completions/",
                        "/usr/share/zsh/site-functions/",
                    )
            })
            .collect();
        assert!(expected.len() > 20, "{expected:?}");
        assert_eq!(files, expected, "{}", one.rpm.display());
        assert_eq!(config, ["/etc/sysconfig/imds-tun cn"], "{listing}");
    }
}

/// What a scriptlet called: each scriptlet is run by sh with `systemctl` replaced by a stand-in
/// that logs its arguments, and with the test's own directory standing for
/// /run/systemd/system (the scriptlets act only where systemd runs).
fn run_scriptlet(script: &str, argument: &str) -> Vec<String> {
    let scratch = TempDir::new();
    let log = scratch.path().join("calls");
    let stub = format!(
        "#!/bin/sh\necho \"$(basename \"$0\") $*\" >>'{}'\n",
        log.display()
    );
    let path = scratch.file("systemctl", stub.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let running = scratch.path().join("systemd-running");
    std::fs::create_dir(&running).unwrap();
    let script = script.replace("/run/systemd/system", &running.display().to_string());
    assert!(script.contains(&running.display().to_string()), "{script}");
    succeed(
        Command::new("sh")
            .args(["-c", &script, "scriptlet", argument])
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", scratch.path().display()),
            ),
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    calls.lines().map(str::to_owned).collect()
}

#[test]
fn rpm_scriptlets_never_enable_or_start_the_service() {
    let Some(built) = built(test_name!()) else {
        return;
    };
    let rpm = &built[0].rpm;
    let scriptlet = |tag: &str| query(rpm, &format!("%{{{tag}}}"));
    // RPM passes the number of installed instances after the operation: 1 on first install,
    // 2 during an upgrade, 0 on the final removal.
    let first_install = run_scriptlet(&scriptlet("POSTIN"), "1");
    assert_eq!(first_install, ["systemctl daemon-reload"]);
    let upgrade_removes_old = run_scriptlet(&scriptlet("PREUN"), "1");
    assert!(upgrade_removes_old.is_empty(), "{upgrade_removes_old:?}");
    let upgraded = run_scriptlet(&scriptlet("POSTUN"), "1");
    assert_eq!(
        upgraded,
        [
            "systemctl daemon-reload",
            "systemctl try-restart imds-tun.service"
        ]
    );
    let removal = run_scriptlet(&scriptlet("PREUN"), "0");
    assert_eq!(
        removal,
        ["systemctl --no-reload disable --now imds-tun.service"]
    );
    let removed = run_scriptlet(&scriptlet("POSTUN"), "0");
    assert_eq!(removed, ["systemctl daemon-reload"]);
}

#[test]
fn rpm_installs_into_a_throwaway_root_verifies_and_erases_keeping_edited_settings() {
    let Some(built) = built(test_name!()) else {
        return;
    };
    for one in &built {
        let root = TempDir::new();
        let rpm = |args: &[&str]| {
            let mut command = Command::new("rpm");
            command.arg("--root").arg(root.path()).args(args);
            command
        };
        succeed(&mut rpm(&["--initdb"]));
        // --noscripts: the scriptlets would run under chroot, where this root has no shell
        // (they are checked above); --ignorearch: the aarch64 package on an x86_64 host.
        succeed(rpm(&["-i", "--nodeps", "--noscripts", "--ignorearch"]).arg(&one.rpm));
        let installed = succeed(&mut rpm(&["-q", "imds-tun"]));
        assert_eq!(
            String::from_utf8_lossy(&installed.stdout),
            format!("imds-tun-{VERSION}-1.{}\n", one.rpm_arch)
        );
        // --nodeps: the root has no /bin/sh for the scriptlets' dependency.
        let verified = rpm(&["-V", "--nodeps", "imds-tun"]).output().unwrap();
        assert!(verified.status.success(), "rpm -V: {}", text(&verified));
        let binary = std::fs::read(root.path().join("usr/bin/imds-tun")).unwrap();
        assert!(
            binary == std::fs::read(&one.binary).unwrap(),
            "the installed binary is the static one ({})",
            one.binary.display()
        );
        let unit =
            std::fs::read_to_string(root.path().join("usr/lib/systemd/system/imds-tun.service"))
                .unwrap();
        let template = std::fs::read_to_string(repo().join("packaging/imds-tun.service")).unwrap();
        assert_eq!(
            unit,
            template
                .replace("@BINDIR@", "/usr/bin")
                .replace("@SYSCONFDIR@/default/", "/etc/sysconfig/")
        );
        assert!(
            unit.contains("\nEnvironmentFile=-/etc/sysconfig/imds-tun\n"),
            "{unit}"
        );
        let settings = root.path().join("etc/sysconfig/imds-tun");
        let mode = std::fs::metadata(&settings).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let shipped = std::fs::read_to_string(&settings).unwrap();
        assert!(
            shipped.contains("IMDS_TUN_ARGS=\"\"") && !shipped.contains("/etc/default"),
            "{shipped}"
        );

        // An administrator's edit survives removal as .rpmsave; everything else goes.
        std::fs::write(&settings, "IMDS_TUN_ARGS=\"--region eu-west-1\"\n").unwrap();
        let changed = rpm(&["-V", "--nodeps", "imds-tun"]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&changed.stdout).contains(" c /etc/sysconfig/imds-tun"),
            "rpm -V sees the edited config: {}",
            text(&changed)
        );
        succeed(&mut rpm(&["-e", "--noscripts", "imds-tun"]));
        assert!(root.path().join("etc/sysconfig/imds-tun.rpmsave").is_file());
        for gone in [
            "usr/bin/imds-tun",
            "usr/lib/systemd/system/imds-tun.service",
            "usr/share/doc/imds-tun",
        ] {
            assert!(
                !root.path().join(gone).exists(),
                "{gone} is left after rpm -e"
            );
        }
    }
}
