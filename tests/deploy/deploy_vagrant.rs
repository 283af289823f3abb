//! The Vagrant example and its provisioner: `vagrant validate`, a provisioner run inside a fresh
//! network namespace with its prefix in a scratch directory (the no-systemd path), after which
//! 169.254.169.254 answers through the TUN; a second run is a no-op; shellcheck on every script.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BINARY, METADATA, Namespace, TempDir, http, repo, text};

/// A tool the test needs, or skip (fail under CI) naming the Debian package.
fn tool(test: &str, name: &str, package: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok();
    if !found {
        common::skip_or_fail(
            test,
            &format!(
                "`{name}` is not installed (Debian package {package}; scripts/test.sh installs it)"
            ),
        );
    }
    found
}

/// The entries of a directory, to show that a command left it alone.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn vagrantfile_passes_vagrant_validate() {
    if !tool(test_name!(), "vagrant", "vagrant") {
        return;
    }
    validate(&[]);
}

/// The settings scripts/vm-test.sh passes for a local libvirt box under software emulation
/// (docs/guides/vagrant.md); the VM test itself proves they boot.
#[test]
fn vagrantfile_with_the_vm_test_settings_passes_vagrant_validate() {
    if !tool(test_name!(), "vagrant", "vagrant") {
        return;
    }
    validate(&[
        ("IMDS_TUN_BOX", "imds-tun/debian12-test"),
        ("IMDS_TUN_GUEST", "debian"),
        ("IMDS_TUN_LIBVIRT_DRIVER", "qemu"),
        ("IMDS_TUN_LIBVIRT_CPU_MODEL", "qemu64"),
        ("IMDS_TUN_LIBVIRT_NETWORK_MODE", "none"),
        ("IMDS_TUN_LIBVIRT_GRAPHICS", "none"),
        (
            "IMDS_TUN_LIBVIRT_SERIAL_LOG",
            "/tmp/imds-tun-vm-test/console.log",
        ),
    ]);
}

/// `vagrant validate` of a copy of vagrant/ with `env` set.
fn validate(env: &[(&str, &str)]) {
    // `vagrant validate` writes `.vagrant/` next to the Vagrantfile (VAGRANT_DOTFILE_PATH is not
    // honoured by every version for every file), so it validates a copy, never the source tree.
    let scratch = TempDir::new();
    let project = scratch.path().join("vagrant");
    std::fs::create_dir(&project).expect("creating the scratch project");
    for name in ["Vagrantfile", "provision.sh"] {
        std::fs::copy(repo().join("vagrant").join(name), project.join(name))
            .unwrap_or_else(|error| panic!("copying vagrant/{name}: {error}"));
    }
    let source_before = entries(&repo().join("vagrant"));
    let mut command = Command::new("vagrant");
    command
        .args(["validate", "--ignore-provider"])
        .current_dir(&project)
        .env("VAGRANT_HOME", scratch.path().join("vagrant.d"))
        .env("VAGRANT_DOTFILE_PATH", scratch.path().join("dotfile"))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("running vagrant");
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("validated successfully"),
        "{}",
        text(&output)
    );
    assert_eq!(
        entries(&repo().join("vagrant")),
        source_before,
        "vagrant validate wrote into the source tree"
    );
}

/// Runs the provisioner in `namespace` with the scratch `prefix` and no systemd.
fn provision(namespace: &Namespace, prefix: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let script = repo().join("vagrant/provision.sh");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name(), "bash"])
        .arg(&script)
        .args(args)
        .env("IMDS_TUN_PREFIX", prefix)
        .env("IMDS_TUN_SYSTEMD", "0")
        .env("IMDS_TUN_BINARY", BINARY)
        .env_remove("IMDS_TUN_UPSTREAM")
        .env_remove("IMDS_TUN_TOKEN_FILE")
        .env_remove("IMDS_TUN_ARGS");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running vagrant/provision.sh")
}

/// Stops the supervised service when the test ends, however it ends.
struct Stop<'a> {
    namespace: &'a Namespace,
    prefix: PathBuf,
}

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = provision(self.namespace, &self.prefix, &[], &["stop"]);
    }
}

fn pid(prefix: &Path) -> String {
    std::fs::read_to_string(prefix.join("run/imds-tun/imds-tun.pid"))
        .expect("the provisioner writes a pid file")
        .trim()
        .to_string()
}

#[test]
fn provisioner_serves_through_the_tun_and_a_second_run_changes_nothing() {
    let namespace = namespace!();
    let scratch = TempDir::new();
    let prefix = scratch.path().join("prefix");
    let _stop = Stop {
        namespace: &namespace,
        prefix: prefix.clone(),
    };

    let first = provision(&namespace, &prefix, &[], &[]);
    assert!(first.status.success(), "{}", text(&first));
    let said = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(said.contains("supervised background process"), "{said}");
    let started = pid(&prefix);

    let response = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/instance-id"));
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.text().starts_with("i-"), "{response:?}");

    let binary_before = std::fs::metadata(prefix.join("bin/imds-tun"))
        .unwrap()
        .modified()
        .unwrap();
    let second = provision(&namespace, &prefix, &[], &[]);
    assert!(second.status.success(), "{}", text(&second));
    let said = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(said.contains("unchanged"), "{said}");
    assert_eq!(
        pid(&prefix),
        started,
        "a no-op run must not restart the service"
    );
    assert!(
        Path::new(&format!("/proc/{started}")).exists(),
        "the same process still runs"
    );
    assert_eq!(
        std::fs::metadata(prefix.join("bin/imds-tun"))
            .unwrap()
            .modified()
            .unwrap(),
        binary_before,
        "the binary was not rewritten"
    );
    let again = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/instance-id"));
    assert_eq!(again.text(), response.text());

    // A changed setting restarts it with the new flags.
    let third = provision(
        &namespace,
        &prefix,
        &[("IMDS_TUN_ARGS", "--instance-type m5.large")],
        &[],
    );
    assert!(third.status.success(), "{}", text(&third));
    assert_ne!(
        pid(&prefix),
        started,
        "a changed setting restarts the service"
    );
    let kind = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/instance-type"));
    assert_eq!(kind.text(), "m5.large");
}

#[test]
fn provisioner_host_credentials_shape_forwards_with_a_private_copy_of_the_token() {
    let host = namespace!();
    let guest = namespace!();
    host.link_guest(&guest, "10.0.2.2", "10.0.2.15");

    let scratch = TempDir::new();
    let secret = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let host_token = scratch.file("host-token", secret.as_bytes());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&host_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    // As a synced folder shows it: readable by everyone.
    let synced_token = scratch.file("synced-token", secret.as_bytes());
    std::fs::set_permissions(&synced_token, std::fs::Permissions::from_mode(0o777)).unwrap();
    let _host_child = common::start(
        &host,
        &[
            "--no-tun",
            "--listen",
            "10.0.2.2:18080",
            "--listen-token-file",
            &host_token,
            "--instance-id",
            "i-0fedcba9876543210",
        ],
    );

    let prefix = PathBuf::from(&host_token).parent().unwrap().join("prefix");
    let _stop = Stop {
        namespace: &guest,
        prefix: prefix.clone(),
    };
    let run = provision(
        &guest,
        &prefix,
        &[
            ("IMDS_TUN_UPSTREAM", "http://10.0.2.2:18080"),
            ("IMDS_TUN_TOKEN_FILE", &synced_token),
        ],
        &[],
    );
    assert!(run.status.success(), "{}", text(&run));
    let copy = prefix.join("etc/imds-tun/upstream-token");
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the guest's copy of the token is root's only");
    let response = guest.run_in(|| http::get(METADATA, "/latest/meta-data/instance-id"));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "i-0fedcba9876543210", "served by the host");
}

#[test]
fn provisioner_unit_is_the_packaged_unit() {
    let script = std::fs::read_to_string(repo().join("vagrant/provision.sh")).unwrap();
    let start = script.find("cat <<UNIT\n").expect("the unit heredoc") + "cat <<UNIT\n".len();
    let end = script[start..].find("\nUNIT\n").expect("the heredoc end") + start;
    let embedded = script[start..end]
        .replace("$prefix/bin", "@BINDIR@")
        .replace("\\$IMDS_TUN_ARGS", "$IMDS_TUN_ARGS")
        .replace("/etc/default", "@SYSCONFDIR@/default");
    let packaged = std::fs::read_to_string(repo().join("packaging/imds-tun.service")).unwrap();
    let packaged: Vec<&str> = packaged
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert_eq!(embedded.lines().collect::<Vec<_>>(), packaged);
}

/// Every shell script in the repository: `*.sh`, and files whose first line names a shell.
fn shell_scripts(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | ".vagrant" | ".venv" | "node_modules"
            ) {
                shell_scripts(&path, found);
            }
        } else if name.ends_with(".sh")
            || std::fs::read(&path).is_ok_and(|bytes| {
                let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
                first.starts_with(b"#!") && (first.ends_with(b"bash") || first.ends_with(b"/sh"))
            })
        {
            found.push(path);
        }
    }
}

#[test]
fn shellcheck_is_clean_on_every_shell_script() {
    if !tool(test_name!(), "shellcheck", "shellcheck") {
        return;
    }
    let mut scripts = Vec::new();
    shell_scripts(&repo(), &mut scripts);
    assert!(
        scripts
            .iter()
            .any(|path| path.ends_with("vagrant/provision.sh")),
        "{scripts:?}"
    );
    let output = Command::new("shellcheck")
        .args(&scripts)
        .output()
        .expect("running shellcheck");
    assert!(output.status.success(), "{scripts:?}\n{}", text(&output));
}

#[test]
fn provisioner_without_a_binary_or_toolchain_says_what_to_do() {
    if Path::new("/vagrant/imds-tun").exists() {
        // Inside a Vagrant guest the provisioner finds that binary, so there is nothing to miss.
        common::skip_or_fail(
            test_name!(),
            "/vagrant/imds-tun exists here, so the provisioner has a binary to install",
        );
        return;
    }
    let scratch = TempDir::new();
    let prefix = scratch.path().join("p");
    let output = Command::new("bash")
        .arg(repo().join("vagrant/provision.sh"))
        .env("IMDS_TUN_PREFIX", &prefix)
        .env("IMDS_TUN_SYSTEMD", "0")
        .env("IMDS_TUN_SOURCE", "/nonexistent")
        .env("PATH", "/usr/bin:/bin")
        .env_remove("IMDS_TUN_BINARY")
        .output()
        .expect("running vagrant/provision.sh");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("IMDS_TUN_BINARY"),
        "{}",
        text(&output)
    );
}
