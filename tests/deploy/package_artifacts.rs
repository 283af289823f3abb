//! The two shipped artefacts that `scripts/package.sh` builds: the static binary
//! (`target/x86_64-unknown-linux-musl/release/imds-tun`) and the Debian package
//! (`target/debian/imds-tun_<version>-1_amd64.deb`).
//!
//! The binary: statically linked and stripped (read from its ELF headers), the crate's version,
//! serving through a TUN in a fresh network namespace as root and as a uid that no user database
//! knows holding only CAP_NET_ADMIN (what the unit's `DynamicUser=yes` gives it).
//! The package, read with `dpkg-deb`: exactly the files it should install with their owners and
//! modes, `/etc/default/imds-tun` as its one conffile, the unit pointing at `/usr/bin/imds-tun`,
//! the packaged binary byte-identical to the static one, a man page and completions that list
//! every flag of the binary's `--help`, and maintainer scripts that, run against stand-ins for
//! `deb-systemd-helper`/`deb-systemd-invoke`/`systemctl`, never enable or start the service and
//! clean up on purge. Installing it under a real systemd is the VM test's part (issue 11).
//!
//! These tests do not build the artefacts (a musl release build takes minutes): they read what
//! package.sh left in the target directory. Missing, or built from a source whose flags differ
//! from this one's, they skip (and fail under `CI=true`, see `common::skip_or_fail`).
#![cfg(target_os = "linux")]

use crate::common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use clap::CommandFactory;
use common::{BINARY, METADATA, Spawn, TempDir, http, repo, text};
use imds_tun::cli::Cli;
use nix::sys::signal::Signal;

const TRIPLE: &str = "x86_64-unknown-linux-musl";
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A graceful exit finishes in-flight requests (grace 5 s by default) and nothing was in flight.
const GRACEFUL_EXIT_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the kernel may take to remove a device after its last descriptor closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// A uid in systemd's `DynamicUser=` range (61184-65519) that /etc/passwd does not name.
const DYNAMIC_UID: u32 = 61_999;

/// The target directory of this build (`CARGO_TARGET_TMPDIR` is its `tmp/`), so a
/// `CARGO_TARGET_DIR` given to both package.sh and cargo test is followed.
pub(super) fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// Whether the arm64 artefacts are expected: `IMDS_TUN_ARCHES` (scripts/test.sh sets it to
/// what it built, arm64 only with `IMDS_TUN_ARM64=1`: docs/packaging.md) names arm64, or,
/// without that variable, the arm64 binary exists. When they are not expected, a test's arm64
/// part is left out and said so (its amd64 part is checked all the same; the arm64-only tests
/// of cross_artifacts.rs are #[ignore]d); when they are, a missing one fails under `CI=true`.
pub(super) fn arm64_expected(test: &str) -> bool {
    let expected = match std::env::var("IMDS_TUN_ARCHES") {
        Ok(arches) => arches.split_whitespace().any(|arch| arch == "arm64"),
        Err(_) => target_dir()
            .join("aarch64-unknown-linux-musl/release/imds-tun")
            .is_file(),
    };
    if !expected {
        eprintln!(
            "\n    NOT BUILT: {test}: the arm64 artefacts (IMDS_TUN_ARM64=1 bash scripts/test.sh, or \
             bash scripts/package.sh arm64)\n"
        );
    }
    expected
}

/// Runs `command` and returns its output, failing the test if it did not succeed.
pub(super) fn succeed(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(output.status.success(), "{command:?}\n{}", text(&output));
    output
}

pub(super) fn help(binary: &Path) -> String {
    let output = succeed(Command::new(binary).arg("--help"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What package.sh built.
struct Artifacts {
    binary: PathBuf,
    deb: PathBuf,
}

/// The artefacts, or `None` after a skip notice (a failure under `CI=true`) when they are
/// missing or stale: built from a source whose `--help` differs from this test build's.
fn artifacts(test: &str) -> Option<Artifacts> {
    let target = target_dir();
    let found = Artifacts {
        binary: target.join(TRIPLE).join("release/imds-tun"),
        deb: target.join(format!("debian/imds-tun_{VERSION}-1_amd64.deb")),
    };
    for path in [&found.binary, &found.deb] {
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
    if help(&found.binary) != help(Path::new(BINARY)) {
        common::skip_or_fail(
            test,
            &format!(
                "{} is stale (its --help differs from this source's): rebuild it with \
                 `bash scripts/package.sh`",
                found.binary.display()
            ),
        );
        return None;
    }
    Some(found)
}

// --- The static binary ---------------------------------------------------------------------------

/// What the ELF headers say about linking and symbols.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ElfFacts {
    /// A PT_INTERP segment: the kernel would start a dynamic loader first.
    pub(super) interpreter: bool,
    /// DT_NEEDED entries: shared libraries the loader would have to find.
    pub(super) needed_libraries: usize,
    /// Sections that a stripped binary has none of: `.symtab` and `.debug_*`.
    pub(super) symbol_or_debug_sections: Vec<String>,
}

/// Reads an x86_64 or aarch64 ELF file's program and section headers (little-endian ELF64 only).
pub(super) fn elf_facts(elf: &[u8]) -> Result<ElfFacts, String> {
    let bytes = |at: usize, len: usize| {
        at.checked_add(len)
            .and_then(|end| elf.get(at..end))
            .ok_or_else(|| format!("no {len} bytes at offset {at}"))
    };
    let u16_at = |at| bytes(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at| bytes(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at| {
        bytes(at, 8).and_then(|b| {
            let mut word = [0; 8];
            word.copy_from_slice(b);
            usize::try_from(u64::from_le_bytes(word)).map_err(|error| error.to_string())
        })
    };
    if bytes(0, 6)? != b"\x7fELF\x02\x01" {
        return Err("not a little-endian ELF64 file".into());
    }
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NEEDED: usize = 1;
    const SHT_SYMTAB: u32 = 2;
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
    let mut interpreter = false;
    let mut needed_libraries = 0;
    for index in 0..phnum {
        let header = phoff + index * phentsize;
        match u32_at(header)? {
            PT_INTERP => interpreter = true,
            // A static PIE keeps a dynamic section for relocating itself; what matters is that
            // it names no library.
            PT_DYNAMIC => {
                let (offset, size) = (u64_at(header + 8)?, u64_at(header + 32)?);
                for entry in (offset..offset + size).step_by(16) {
                    match u64_at(entry)? {
                        0 => break,
                        DT_NEEDED => needed_libraries += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let names_at = u64_at(shoff + shstrndx * shentsize + 24)?;
    let mut symbol_or_debug_sections = Vec::new();
    for index in 0..shnum {
        let header = shoff + index * shentsize;
        let name_start = names_at + u32_at(header)? as usize;
        let name_len = elf
            .get(name_start..)
            .and_then(|rest| rest.iter().position(|&b| b == 0))
            .ok_or("a section name runs off the end of the file")?;
        let name = String::from_utf8_lossy(bytes(name_start, name_len)?).into_owned();
        if u32_at(header + 4)? == SHT_SYMTAB || name.starts_with(".debug") {
            symbol_or_debug_sections.push(name);
        }
    }
    Ok(ElfFacts {
        interpreter,
        needed_libraries,
        symbol_or_debug_sections,
    })
}

#[test]
fn static_binary_needs_no_loader_and_no_library_and_is_stripped() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let elf = std::fs::read(&artifacts.binary).expect("reading the static binary");
    let facts = elf_facts(&elf).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        facts,
        ElfFacts {
            interpreter: false,
            needed_libraries: 0,
            symbol_or_debug_sections: vec![],
        },
        "{} ({} bytes)",
        artifacts.binary.display(),
        elf.len()
    );
    // The reader itself, on the dynamically linked binary of this test run: glibc's loader and
    // libc must show up, else the assertion above proves nothing.
    let dynamic = elf_facts(&std::fs::read(BINARY).expect("reading the test build"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        dynamic.interpreter && dynamic.needed_libraries > 0,
        "{dynamic:?}"
    );
}

#[test]
fn static_binary_reports_the_crate_version() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let output = succeed(Command::new(&artifacts.binary).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("imds-tun {VERSION}\n")
    );
}

#[test]
fn static_binary_serves_through_a_tun_and_leaves_nothing_behind() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let options = Spawn {
        binary: Some(artifacts.binary),
        ..Spawn::default()
    };
    let mut child = namespace.spawn_with(&[], &options);
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
    assert_eq!(credentials.status, 200, "{credentials:?}");
    let document: serde_json::Value =
        serde_json::from_slice(&credentials.body).expect("the credentials are JSON");
    assert_eq!(document["Code"], "Success", "{document}");
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(GRACEFUL_EXIT_TIMEOUT);
    common::assert_exit_code(&child, status, 0);
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

/// musl has no NSS: a uid that only systemd's nss module could name is nameless to it. The
/// unit's `DynamicUser=yes` runs the binary as exactly such a uid, with only CAP_NET_ADMIN.
#[test]
fn static_binary_serves_as_a_nameless_uid_with_only_cap_net_admin() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let namespace = namespace!();
    let uid = nix::unistd::Uid::from_raw(DYNAMIC_UID);
    assert!(
        matches!(nix::unistd::User::from_uid(uid), Ok(None)),
        "uid {DYNAMIC_UID} should have no user database entry here"
    );
    let device_dir = TempDir::new();
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name(), "sh", "-c"])
        .arg(common::with_only_net_admin(
            &device_dir,
            DYNAMIC_UID,
            &artifacts.binary.display().to_string(),
        ));
    let child = common::ImdsTun::spawn(command, &Spawn::default(), test_name!());
    child.wait_ready();
    let response = namespace.run_in(|| http::get(METADATA, "/latest/meta-data/instance-id"));
    assert_eq!(response.status, 200, "{response:?}");
    // sh exec'd setpriv, which exec'd imds-tun: the pid is the server's.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid()))
        .expect("the serving process has a /proc status");
    let uids = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap_or_else(|| panic!("no Uid: line in {status}"));
    assert!(uids.contains(&DYNAMIC_UID.to_string()), "{uids}");
}

/// The sizes the docs state, `N.N MB` (10^6 bytes) where they name the artefact, and the
/// artefact they describe: README.md, docs/testing.md and docs/packaging.md (its arm64 rows
/// when arm64 is expected).
fn stated_sizes() -> Vec<(String, &'static str, PathBuf)> {
    let target = target_dir();
    let static_binary = target.join(TRIPLE).join("release/imds-tun");
    let deb = target.join(format!("debian/imds-tun_{VERSION}-1_amd64.deb"));
    let mut stated = Vec::new();
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    // "`scripts/package.sh` (13.7 MB, stripped, linked with musl)"
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let size = flat
        .split("`scripts/package.sh` (")
        .nth(1)
        .and_then(|rest| rest.split(" MB, stripped").next())
        .unwrap_or_else(|| panic!("README.md no longer states the static binary's size"));
    stated.push((
        size.to_owned(),
        "README.md: the static binary",
        static_binary.clone(),
    ));
    let testing = std::fs::read_to_string(repo().join("docs/testing.md")).expect("testing.md");
    let packaging =
        std::fs::read_to_string(repo().join("docs/packaging.md")).expect("packaging.md");
    let arm64 = arm64_expected("the_sizes_the_docs_state_are_the_artefacts_sizes");
    let mut rows = vec![
        (
            &testing,
            "| static binary (musl, static-pie, stripped) |",
            "docs/testing.md: the static binary",
            static_binary,
        ),
        (
            &testing,
            "| Debian package |",
            "docs/testing.md: the .deb",
            deb,
        ),
        (
            &packaging,
            "| x86_64 RPM |",
            "docs/packaging.md: the x86_64 .rpm",
            target.join(format!("rpm/imds-tun-{VERSION}-1.x86_64.rpm")),
        ),
    ];
    if arm64 {
        rows.extend([
            (
                &packaging,
                "| arm64 static binary |",
                "docs/packaging.md: the arm64 static binary",
                target.join("aarch64-unknown-linux-musl/release/imds-tun"),
            ),
            (
                &packaging,
                "| arm64 Debian package |",
                "docs/packaging.md: the arm64 .deb",
                target.join(format!("debian/imds-tun_{VERSION}-1_arm64.deb")),
            ),
            (
                &packaging,
                "| aarch64 RPM |",
                "docs/packaging.md: the aarch64 .rpm",
                target.join(format!("rpm/imds-tun-{VERSION}-1.aarch64.rpm")),
            ),
        ]);
    }
    for (document, row, what, artefact) in rows {
        let line = document
            .lines()
            .find(|line| line.starts_with(row))
            .unwrap_or_else(|| panic!("{what}: no row {row:?}"));
        let size = line
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .map(str::trim)
            .and_then(|cell| cell.strip_suffix(" MB"))
            .unwrap_or_else(|| panic!("no `N MB` cell in {line:?}"));
        stated.push((size.to_owned(), what, artefact));
    }
    stated
}

/// The sizes the README and docs/testing.md state are the artefacts' (within a tenth, so a
/// small change need not touch the docs): before issue 23 the README said 12 MB of a 13.4 MB
/// binary.
#[test]
fn the_sizes_the_docs_state_are_the_artefacts_sizes() {
    if artifacts(test_name!()).is_none() {
        return;
    }
    let mut wrong = Vec::new();
    for (stated, what, artefact) in stated_sizes() {
        let megabytes: f64 = stated
            .parse()
            .unwrap_or_else(|_| panic!("{what}: {stated:?} is not a number"));
        let bytes = std::fs::metadata(&artefact)
            .unwrap_or_else(|error| panic!("{}: {error}", artefact.display()))
            .len();
        let actual = bytes as f64 / 1e6;
        if (actual - megabytes).abs() > actual / 10.0 {
            wrong.push(format!(
                "{what} is stated as {stated} MB, but {} is {actual:.1} MB ({bytes} bytes)",
                artefact.display()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// --- The Debian package --------------------------------------------------------------------------

/// The package unpacked into a scratch directory: `root/` (what dpkg would install) and
/// `control/` (the control archive: control, conffiles, maintainer scripts).
pub(super) struct Unpacked {
    dir: TempDir,
}

impl Unpacked {
    pub(super) fn new(deb: &Path) -> Unpacked {
        let dir = TempDir::new();
        succeed(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb)
                .arg(dir.path().join("root")),
        );
        succeed(
            Command::new("dpkg-deb")
                .arg("-e")
                .arg(deb)
                .arg(dir.path().join("control")),
        );
        Unpacked { dir }
    }

    pub(super) fn file(&self, path: &str) -> PathBuf {
        self.dir
            .path()
            .join("root")
            .join(path.trim_start_matches('/'))
    }

    pub(super) fn read(&self, path: &str) -> String {
        let file = self.file(path);
        std::fs::read_to_string(&file)
            .unwrap_or_else(|error| panic!("reading {}: {error}", file.display()))
    }

    fn control(&self, name: &str) -> PathBuf {
        self.dir.path().join("control").join(name)
    }

    /// The man page, decompressed.
    fn man_page(&self) -> String {
        let output = succeed(
            Command::new("gzip")
                .arg("-dc")
                .arg(self.file("/usr/share/man/man1/imds-tun.1.gz")),
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

const UNIT: &str = "/usr/lib/systemd/system/imds-tun.service";
const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/imds-tun";
const ZSH_COMPLETION: &str = "/usr/share/zsh/vendor-completions/_imds-tun";
const FISH_COMPLETION: &str = "/usr/share/fish/vendor_completions.d/imds-tun.fish";

#[test]
fn deb_control_names_the_package_and_depends_on_no_library() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let output = succeed(Command::new("dpkg-deb").arg("--info").arg(&artifacts.deb));
    let info = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
    };
    assert_eq!(field("Package").as_deref(), Some("imds-tun"), "{info}");
    assert_eq!(field("Version"), Some(format!("{VERSION}-1")), "{info}");
    assert_eq!(field("Architecture").as_deref(), Some("amd64"), "{info}");
    // The synopsis is the crate's description, whole: cargo-deb folds one longer than 79
    // characters into the extended description, where it reads as a broken sentence.
    let synopsis = env!("CARGO_PKG_DESCRIPTION");
    assert!(synopsis.len() < 80, "{synopsis:?} is too long a synopsis");
    assert_eq!(field("Description").as_deref(), Some(synopsis), "{info}");
    // Static: nothing to depend on, so the package installs on any Debian or Ubuntu release.
    assert_eq!(field("Depends"), None, "{info}");
    assert_eq!(
        field("Recommends").as_deref(),
        Some("ca-certificates"),
        "{info}"
    );
}

#[test]
fn deb_holds_exactly_the_binary_unit_conffile_man_page_completions_and_docs() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let output = succeed(
        Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&artifacts.deb),
    );
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    // `-rwxr-xr-x 0/0 12443528 2026-12-01 00:00 ./usr/bin/imds-tun`
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [mode, owner, _size, _date, _time, path] = fields[..] else {
            panic!("unexpected dpkg-deb --contents line {line:?}");
        };
        // cargo-deb records numeric ids; dpkg installs them as root either way.
        assert!(matches!(owner, "0/0" | "root/root"), "{line}");
        if mode.starts_with('-') {
            files.insert(format!("{mode} {}", path.trim_start_matches('.')));
        } else {
            assert!(mode.starts_with('d'), "only files and directories: {line}");
        }
    }
    let mut expected: BTreeSet<String> = [
        "-rwxr-xr-x /usr/bin/imds-tun",
        // Root only: the service's secrets go there (GOOGLE_ACCESS_TOKEN).
        "-rw------- /etc/default/imds-tun",
        &format!("-rw-r--r-- {UNIT}"),
        "-rw-r--r-- /usr/share/man/man1/imds-tun.1.gz",
        &format!("-rw-r--r-- {BASH_COMPLETION}"),
        &format!("-rw-r--r-- {ZSH_COMPLETION}"),
        &format!("-rw-r--r-- {FISH_COMPLETION}"),
        "-rw-r--r-- /usr/share/doc/imds-tun/README.md",
        "-rw-r--r-- /usr/share/doc/imds-tun/copyright",
        "-rw-r--r-- /usr/share/doc/imds-tun/packaging/imds-tun.service",
        "-rw-r--r-- /usr/share/doc/imds-tun/vagrant/Vagrantfile",
        "-rw-r--r-- /usr/share/doc/imds-tun/vagrant/provision.sh",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    // Every file of docs/, as in the source.
    let mut pending = vec![repo().join("docs")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing docs/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(repo()).expect("under the repository");
                expected.insert(format!(
                    "-rw-r--r-- /usr/share/doc/imds-tun/{}",
                    relative.display()
                ));
            }
        }
    }
    assert_eq!(files, expected, "{listing}");

    let unpacked = Unpacked::new(&artifacts.deb);
    // Kept on upgrade, removed on purge; the only file an administrator edits.
    let conffiles = std::fs::read_to_string(unpacked.control("conffiles")).unwrap_or_default();
    assert_eq!(conffiles.trim(), "/etc/default/imds-tun");
    assert_eq!(
        unpacked.read("/etc/default/imds-tun"),
        std::fs::read_to_string(repo().join("packaging/imds-tun.default")).unwrap()
    );
}

/// The relative links of a Markdown text (`[text](target)`), without their `#anchor`; links
/// to the web and pure anchors are not files.
fn relative_links(markdown: &str) -> Vec<String> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| {
            target
                .split('#')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .filter(|target| {
            !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:")
        })
        .collect()
}

/// The README the package installs links to guides and references: each link must lead to a
/// file the package installs, from the README and from every document it ships (before issue
/// 23, every `docs/...` link of `/usr/share/doc/imds-tun/README.md` led nowhere).
#[test]
fn deb_documents_link_only_to_files_the_package_installs() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let unpacked = Unpacked::new(&artifacts.deb);
    let doc = unpacked.file("/usr/share/doc/imds-tun");
    let mut checked = 0;
    let mut broken = Vec::new();
    let mut pending = vec![doc.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing the docs").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "md") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a shipped document");
            for link in relative_links(&text) {
                checked += 1;
                let target = path.parent().expect("a directory").join(&link);
                if !target.exists() {
                    broken.push(format!(
                        "{}: {link}",
                        path.strip_prefix(&doc).unwrap_or(&path).display()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} links read");
    assert!(
        broken.is_empty(),
        "links to nothing in the package: {broken:#?}"
    );
}

#[test]
fn deb_binary_is_the_static_binary() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let unpacked = Unpacked::new(&artifacts.deb);
    let packaged = std::fs::read(unpacked.file("/usr/bin/imds-tun")).unwrap();
    let built = std::fs::read(&artifacts.binary).unwrap();
    // Not `assert_eq!`: a failure would print 15 MB of bytes.
    assert!(
        packaged == built,
        "/usr/bin/imds-tun in {} ({} bytes) differs from {} ({} bytes)",
        artifacts.deb.display(),
        packaged.len(),
        artifacts.binary.display(),
        built.len()
    );
}

#[test]
fn deb_unit_is_the_packaged_unit_running_usr_bin_imds_tun_with_the_env_file() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let unpacked = Unpacked::new(&artifacts.deb);
    let unit = unpacked.read(UNIT);
    let template = std::fs::read_to_string(repo().join("packaging/imds-tun.service")).unwrap();
    assert_eq!(
        unit,
        template
            .replace("@BINDIR@", "/usr/bin")
            .replace("@SYSCONFDIR@", "/etc")
    );
    for line in [
        "ExecStart=/usr/bin/imds-tun $IMDS_TUN_ARGS",
        "EnvironmentFile=-/etc/default/imds-tun",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}:\n{unit}");
    }
}

/// Runs one maintainer script with `deb-systemd-helper`, `deb-systemd-invoke` and `systemctl`
/// replaced by stand-ins that log their arguments; `was_enabled` is what the stand-in for
/// `deb-systemd-helper was-enabled` answers (whether the administrator had enabled the unit).
/// Returns the calls, one per line.
fn run_maintainer_script(
    unpacked: &Unpacked,
    script: &str,
    args: &[&str],
    was_enabled: bool,
) -> Vec<String> {
    let scratch = TempDir::new();
    let log = scratch.path().join("calls");
    let stub = format!(
        "#!/bin/sh\n\
         echo \"$(basename \"$0\") $*\" >>'{}'\n\
         case \" $* \" in *\" was-enabled \"*) exit {} ;; esac\n\
         exit 0\n",
        log.display(),
        if was_enabled { 0 } else { 1 }
    );
    for tool in ["deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
        let path = scratch.file(tool, stub.as_bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let output = succeed(
        Command::new("sh")
            .arg(unpacked.control(script))
            .args(args)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", scratch.path().display()),
            ),
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let calls: Vec<String> = calls.lines().map(str::to_owned).collect();
    eprintln!("{script} {args:?}: {calls:?}\n{}", text(&output));
    calls
}

/// `deb-systemd-helper enable …`, `deb-systemd-invoke start …` and the like: anything that
/// would enable or start the service.
fn enables_or_starts(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|call| {
            // The tool, then its options (`--quiet`), then the action.
            let action = call
                .split_whitespace()
                .skip(1)
                .find(|word| !word.starts_with('-'));
            matches!(
                action,
                Some("enable" | "start" | "restart" | "reload-or-restart")
            )
        })
        .collect()
}

#[test]
fn deb_maintainer_scripts_never_enable_or_start_and_purge_forgets_the_unit() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let unpacked = Unpacked::new(&artifacts.deb);

    // A first install: the unit is registered, nothing is enabled or started.
    let install = run_maintainer_script(&unpacked, "postinst", &["configure", ""], false);
    assert!(enables_or_starts(&install).is_empty(), "{install:?}");
    assert!(
        install
            .iter()
            .any(|call| call == "deb-systemd-helper update-state imds-tun.service"),
        "{install:?}"
    );
    // An upgrade keeps the administrator's choice: re-enabled only if it was enabled, and a
    // running service is restarted only if it runs (try-restart, where systemd runs).
    let upgrade = run_maintainer_script(&unpacked, "postinst", &["configure", "0.0.1-1"], false);
    assert!(enables_or_starts(&upgrade).is_empty(), "{upgrade:?}");
    let upgrade_enabled =
        run_maintainer_script(&unpacked, "postinst", &["configure", "0.0.1-1"], true);
    assert_eq!(
        enables_or_starts(&upgrade_enabled),
        ["deb-systemd-helper enable imds-tun.service"],
        "{upgrade_enabled:?}"
    );

    // Removal stops a running service where systemd runs (this host may not run it, so read).
    let prerm = std::fs::read_to_string(unpacked.control("prerm")).unwrap();
    assert!(
        prerm.contains("[ \"$1\" = remove ]")
            && prerm.contains("deb-systemd-invoke stop imds-tun.service"),
        "{prerm}"
    );
    // Purge drops every trace systemd and deb-systemd-helper kept of the unit (the script
    // asks only when /usr/bin/deb-systemd-helper exists, as on every Debian); dpkg itself
    // removes the conffile, and there is no user (DynamicUser) or state directory to remove.
    let purge = run_maintainer_script(&unpacked, "postrm", &["purge"], false);
    for wanted in [
        "deb-systemd-helper purge imds-tun.service",
        "deb-systemd-helper unmask imds-tun.service",
    ] {
        assert!(
            purge.iter().any(|call| call == wanted),
            "{wanted}: {purge:?}"
        );
    }
}

/// The long flags `--help` lists (`--listen`, …, `--help`, `--version`).
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(|line| line.split([' ', ',', '=', '<', '[']))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(str::to_owned)
        .collect()
}

/// True if `text` contains `word` not followed by another flag character (`--tag` is not
/// `--tag-x`).
fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        !text[at + word.len()..]
            .chars()
            .next()
            .is_some_and(|next| next.is_ascii_alphanumeric() || next == '-' || next == '_')
    })
}

#[test]
fn man_page_documents_every_flag_of_the_binarys_help_and_no_hidden_one() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let flags = long_flags(&help(&artifacts.binary));
    assert!(flags.len() > 40, "{flags:?}");
    let page = Unpacked::new(&artifacts.deb).man_page();
    let printed = succeed(Command::new(&artifacts.binary).arg("man"));
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        page,
        "the packaged page is what `imds-tun man` prints"
    );
    // roff writes a hyphen-minus as `\-`.
    let plain = page.replace("\\-", "-");
    assert!(plain.contains("\n.TH imds-tun 1 "), "{page}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH COMMANDS",
        ".SS \"imds-tun ctl spot\"",
        ".SS \"imds-tun ctl fault\"",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
    ] {
        assert!(plain.contains(section), "no {section} in\n{page}");
    }
    let missing: Vec<_> = flags
        .iter()
        .filter(|flag| !contains_word(&plain, flag))
        .collect();
    assert!(missing.is_empty(), "not in the man page: {missing:?}");
    for flag in hidden_flags() {
        assert!(
            !contains_word(&plain, &flag),
            "test-only {flag} in the man page"
        );
    }
}

/// The flags `--help` does not show (`--retry-base-ms`, …): they exist for the tests only.
fn hidden_flags() -> Vec<String> {
    let hidden: Vec<String> = Cli::command()
        .get_arguments()
        .filter(|arg| arg.is_hide_set())
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect();
    assert!(!hidden.is_empty(), "the check below would prove nothing");
    hidden
}

#[test]
fn completions_offer_every_visible_flag_and_bash_completes_a_prefix() {
    let Some(artifacts) = artifacts(test_name!()) else {
        return;
    };
    let flags = long_flags(&help(&artifacts.binary));
    let unpacked = Unpacked::new(&artifacts.deb);
    let bash = unpacked.read(BASH_COMPLETION);
    let zsh = unpacked.read(ZSH_COMPLETION);
    let fish = unpacked.read(FISH_COMPLETION);
    assert!(zsh.starts_with("#compdef imds-tun"), "{zsh}");
    for flag in &flags {
        let name = flag.trim_start_matches('-');
        assert!(contains_word(&bash, flag), "bash lacks {flag}");
        assert!(contains_word(&zsh, flag), "zsh lacks {flag}");
        assert!(
            contains_word(&fish, &format!("-l {name}")),
            "fish lacks {flag}"
        );
    }
    for flag in hidden_flags() {
        for (shell, script) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            let name = flag.trim_start_matches('-');
            assert!(
                !contains_word(script, &flag) && !contains_word(script, &format!("-l {name}")),
                "{shell} offers the test-only {flag}"
            );
        }
    }

    let script = unpacked.file(BASH_COMPLETION);
    succeed(Command::new("bash").arg("-n").arg(&script));
    // The function bash calls on <TAB> after `imds-tun`, as the script registers it.
    let function = bash
        .lines()
        .find_map(|line| line.trim().strip_prefix("complete -F "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `complete -F` line in\n{bash}"));
    // What bash does on `imds-tun --inst<TAB>` and `imds-tun --imdsv2 <TAB>`.
    let complete = |words: &str| {
        let output = succeed(Command::new("bash").arg("-c").arg(format!(
            "source '{}' && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && \
             {function} imds-tun \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" && \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        )));
        let replies = String::from_utf8_lossy(&output.stdout).into_owned();
        replies
            .lines()
            .map(str::to_owned)
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        complete("imds-tun --inst"),
        BTreeSet::from(["--instance-id".to_owned(), "--instance-type".to_owned()])
    );
    assert_eq!(
        complete("imds-tun --imdsv2 ''"),
        BTreeSet::from(["optional".to_owned(), "required".to_owned()])
    );
    // Under ctl too (before issue 23 the completions knew no subcommand).
    assert_eq!(
        complete("imds-tun ctl sp"),
        BTreeSet::from(["spot".to_owned()])
    );
    assert_eq!(
        complete("imds-tun ctl spot --action ''"),
        BTreeSet::from([
            "terminate".to_owned(),
            "stop".to_owned(),
            "hibernate".to_owned()
        ])
    );
    // What the package ships is what the binary prints, for any install path.
    for (shell, script) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
        let printed = succeed(Command::new(&artifacts.binary).args(["completions", shell]));
        assert_eq!(&String::from_utf8_lossy(&printed.stdout), script, "{shell}");
    }
}
