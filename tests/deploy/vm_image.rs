//! The guard in `scripts/vm-image.sh` that keeps an unbootable guest image out of the cache
//! (issue 21, docs/testing.md "A guest that stops at grub>"): `--check-disk` on small raw disks
//! built here with `mkfs.ext4 -d`, one per way a packed image can be broken, and one whose
//! filesystem another mount namespace still holds, the way a fresh CI machine produced a guest
//! that stopped at `grub>`.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{TempDir, repo, text};

const KERNEL: &str = "/boot/vmlinuz-6.1.0-28-cloud-amd64";
const INITRD: &str = "/boot/initrd.img-6.1.0-28-cloud-amd64";

fn script() -> PathBuf {
    repo().join("scripts/vm-image.sh")
}

/// The tools the disks are made with, or skip (fail under CI) naming the Debian package.
fn tools_present(test: &str) -> bool {
    for (tool, package) in [
        ("sfdisk", "fdisk"),
        ("mkfs.ext4", "e2fsprogs"),
        ("partx", "util-linux"),
    ] {
        if Command::new(tool).arg("--version").output().is_err() {
            common::skip_or_fail(
                test,
                &format!(
                    "`{tool}` is not installed (Debian package {package}; scripts/test.sh installs it)"
                ),
            );
            return false;
        }
    }
    true
}

/// A grub.cfg as update-grub writes it, booting `root`.
fn grub_cfg(root: &str, kernel: &str) -> String {
    format!(
        "set timeout=1\nmenuentry 'Debian GNU/Linux' {{\n\tsearch --no-floppy --fs-uuid --set=root x\n\
         \tlinux\t{kernel} root={root} ro console=tty0 console=ttyS0,115200n8\n\tinitrd\t{INITRD}\n}}\n"
    )
}

/// A 64 MiB raw disk: one MBR partition at 1 MiB holding an ext4 made from `files` (path under
/// the root, contents) with filesystem UUID `uuid`, the layout vm-image.sh packs.
fn disk(scratch: &TempDir, uuid: &str, files: &[(&str, String)]) -> PathBuf {
    let tree = scratch.path().join("tree");
    for (path, contents) in files {
        let path = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("a file under the root"))
            .expect("creating the tree");
        std::fs::write(&path, contents).expect("writing the tree");
    }
    let raw = scratch.path().join("disk.raw");
    let run = |command: &mut Command| {
        let output = command.output().expect("running a disk tool");
        assert!(output.status.success(), "{command:?}: {}", text(&output));
    };
    run(Command::new("truncate").args(["-s", "64M"]).arg(&raw));
    let mut sfdisk = Command::new("sh");
    sfdisk
        .arg("-c")
        .arg("printf 'label: dos\\n,,L,*\\n' | sfdisk -q \"$0\"")
        .arg(&raw);
    run(&mut sfdisk);
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "root",
            "-U",
            uuid,
            "-E",
            "offset=1048576",
            "-d",
        ])
        .arg(&tree)
        .arg(&raw)
        .arg("63M"));
    raw
}

fn check_disk(raw: &Path) -> Output {
    Command::new("bash")
        .arg(script())
        .arg("--check-disk")
        .arg(raw)
        .output()
        .expect("running scripts/vm-image.sh --check-disk")
}

fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("reading a random UUID")
        .trim()
        .to_string()
}

#[test]
fn a_disk_as_update_grub_leaves_it_passes() {
    if !tools_present(test_name!()) {
        return;
    }
    let scratch = TempDir::new();
    let uuid = uuid();
    let raw = disk(
        &scratch,
        &uuid,
        &[
            (
                "/boot/grub/grub.cfg",
                grub_cfg(&format!("UUID={uuid}"), KERNEL),
            ),
            (KERNEL, "kernel".into()),
            (INITRD, "initrd".into()),
        ],
    );
    let output = check_disk(&raw);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!(
            "clean, no journal to replay, e2fsck -fn finds nothing, grub.cfg boots root=UUID={uuid}"
        )),
        "{}",
        text(&output)
    );
}

/// Each way a packed disk leaves GRUB without a bootable entry, and the one line that says so.
#[test]
fn a_disk_grub_cannot_boot_is_refused_with_one_line() {
    if !tools_present(test_name!()) {
        return;
    }
    let uuid = uuid();
    let with_uuid = format!("UUID={uuid}");
    // (what is wrong, where the config is, the config, the line that must say so)
    let cases = [
        (
            "update-grub's rename never reached the disk",
            "/boot/grub/grub.cfg.new",
            grub_cfg(&with_uuid, KERNEL),
            "no /boot/grub/grub.cfg with a menu entry: GRUB would stop at grub>".to_string(),
        ),
        (
            "the build's loop device as the root",
            "/boot/grub/grub.cfg",
            grub_cfg("/dev/loop0p1", KERNEL),
            format!("the packed grub.cfg does not boot root=UUID={uuid}"),
        ),
        (
            "another filesystem's UUID",
            "/boot/grub/grub.cfg",
            grub_cfg("UUID=0e9c2e2f-7c62-4f43-9b43-2d1f3c0ad111", KERNEL),
            format!("the packed grub.cfg does not boot root=UUID={uuid}"),
        ),
        (
            "a kernel that is not in the image",
            "/boot/grub/grub.cfg",
            grub_cfg(&with_uuid, "/boot/vmlinuz-6.1.0-99-cloud-amd64"),
            "boots /boot/vmlinuz-6.1.0-99-cloud-amd64, which is not in the image".to_string(),
        ),
    ];
    for (case, config_path, config, message) in cases {
        let scratch = TempDir::new();
        let files = [
            (config_path, config),
            (KERNEL, "kernel".into()),
            (INITRD, "initrd".into()),
        ];
        let raw = disk(&scratch, &uuid, &files);
        let output = check_disk(&raw);
        assert!(
            !output.status.success(),
            "{case}: accepted\n{}",
            text(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.lines().count(),
            1,
            "{case}: one line\n{}",
            text(&output)
        );
        assert!(
            stderr.contains(&message),
            "{case}: expected '{message}'\n{}",
            text(&output)
        );
    }
}

/// The failure seen on a fresh machine: the build unmounts the image, but a process that took a
/// mount namespace while it was mounted still holds the filesystem, so the disk's bytes carry an
/// unreplayed journal (and GRUB reads the filesystem as it was before). The check refuses that
/// disk, and passes the same disk once the holder is gone and the kernel has unmounted it.
#[test]
fn a_filesystem_still_mounted_in_another_namespace_is_refused() {
    let test = test_name!();
    if !tools_present(test) {
        return;
    }
    if !common::is_root() {
        common::skip_or_fail(test, "needs root (a loop device and a mount)");
        return;
    }
    let scratch = TempDir::new();
    let uuid = uuid();
    let raw = disk(
        &scratch,
        &uuid,
        &[
            (
                "/boot/grub/grub.cfg",
                grub_cfg(&format!("UUID={uuid}"), KERNEL),
            ),
            (KERNEL, "kernel".into()),
            (INITRD, "initrd".into()),
        ],
    );
    let mount_point = scratch.path().join("mnt");
    std::fs::create_dir(&mount_point).expect("creating the mount point");
    // All in a private mount namespace of the test's own, so the host's mount table never sees
    // the disk; the holder copies that namespace while the disk is mounted, as an unrelated
    // `unshare --mount` on the machine did during a build.
    let held = r#"
        set -eu
        disk=$1 mnt=$2 script=$3
        loop=$(losetup -f --show "$disk")
        trap 'umount "$mnt" 2>/dev/null; partx -d "$loop" 2>/dev/null; losetup -d "$loop" 2>/dev/null' EXIT
        # A partition left by an earlier user of this loop device (see add_partitions).
        partx -d "$loop" 2>/dev/null || true
        partx -a "$loop"
        mount "${loop}p1" "$mnt"
        unshare --mount --propagation private sleep 60 &
        holder=$!
        for _ in $(seq 100); do
            [ "$(readlink /proc/$holder/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] && break
            sleep 0.05
        done
        mv "$mnt/boot/grub/grub.cfg" "$mnt/boot/grub/grub.cfg.old"
        cp "$mnt/boot/grub/grub.cfg.old" "$mnt/boot/grub/grub.cfg"
        umount "$mnt"
        partx -d "$loop" 2>/dev/null || true
        losetup -d "$loop"
        trap - EXIT
        status=0
        bash "$script" --check-disk "$disk" 2>&1 || status=$?
        echo "held: status $status"
        kill "$holder"
        wait "$holder" 2>/dev/null || true
        for _ in $(seq 100); do
            losetup -j "$disk" | grep -q . || break
            sleep 0.1
        done
        echo "attached after the holder: $(losetup -j "$disk" | wc -l)"
        # The partition outlived the detach (see add_partitions in vm-image.sh).
        partx -d "$loop" 2>/dev/null || true
        status=0
        bash "$script" --check-disk "$disk" 2>&1 || status=$?
        echo "released: status $status"
    "#;
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            held,
            "held",
        ])
        .arg(&raw)
        .arg(&mount_point)
        .arg(script())
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout.contains(
            "the packed filesystem needs journal recovery: it was still mounted when packed"
        ),
        "{}",
        text(&output)
    );
    assert!(stdout.contains("held: status 1"), "{}", text(&output));
    assert!(
        stdout.contains("attached after the holder: 0"),
        "{}",
        text(&output)
    );
    assert!(stdout.contains("released: status 0"), "{}", text(&output));
}

// --- scripts/boot-watch.sh: a guest that does not come up is reported in seconds, not after
// vagrant-libvirt's 15 minutes. The "guest" here is a shell that writes to the console file
// what a real one printed, then sleeps as vagrant up does while it waits for an IP.

fn boot_watch(scratch: &TempDir, guest: &str, limits: &[(&str, &str)]) -> (Output, Duration) {
    let console = scratch.path().join("console.log");
    let log = scratch.path().join("up.log");
    let mut command = Command::new("bash");
    command
        .arg(script().with_file_name("boot-watch.sh"))
        .arg(&console)
        .arg(&log)
        .args(["--", "bash", "-c", guest, "guest"])
        .arg(&console)
        .env("IMDS_TUN_BOOT_STOP_GRACE", "5");
    for (name, value) in limits {
        command.env(name, value);
    }
    let started = Instant::now();
    let output = command.output().expect("running scripts/boot-watch.sh");
    (output, started.elapsed())
}

/// What the guest printed before GRUB gave up, as the serial console carried it.
/// It also leaves its pid and a child's (as vagrant runs ssh) for the test to check.
const GRUB_PROMPT: &str = r#"sleep 1; printf '\033[2J\033[1;1HWelcome to GRUB!\r\n\r\ngrub> ' >>"$1"
    sleep 60 & echo "$$ $!" >"$1.pid"; wait"#;

/// Whether none of the pids in `file` (written by the guest) runs any more. A killed child of
/// the killed guest is a zombie until whoever adopted it reaps it: that counts as gone.
fn all_gone(file: &Path) -> bool {
    let pids = std::fs::read_to_string(file).expect("the guest's pids");
    assert_eq!(pids.split_whitespace().count(), 2, "two pids in {pids:?}");
    pids.split_whitespace().all(|pid| {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name in parentheses.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
            Err(_) => true,
        }
    })
}

#[test]
fn boot_watch_stops_a_guest_at_the_grub_prompt_at_once() {
    let scratch = TempDir::new();
    let (output, took) = boot_watch(&scratch, GRUB_PROMPT, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(124), "{}", text(&output));
    assert!(
        stdout.contains("the guest did not come up: GRUB stopped at its grub> prompt"),
        "{}",
        text(&output)
    );
    assert!(
        stdout.contains("    grub>"),
        "the console's last lines: {}",
        text(&output)
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        all_gone(&scratch.path().join("console.log.pid")),
        "the guest command or its child was left running"
    );
}

#[test]
fn boot_watch_reports_a_silent_console_a_panic_and_a_missing_login() {
    let cases = [
        (
            "silent",
            "echo '==> default: Starting domain.'; sleep 60",
            ("IMDS_TUN_BOOT_SILENCE_LIMIT", "2"),
            "the guest wrote nothing to its serial console 2 s after its domain started",
        ),
        (
            "panic",
            r#"printf 'Loading Linux ...\nKernel panic - not syncing: VFS: Unable to mount root fs\n' >>"$1"; sleep 60"#,
            ("IMDS_TUN_BOOT_LOGIN_LIMIT", "300"),
            "the guest kernel panicked",
        ),
        (
            "no login",
            r#"printf 'Loading Linux ...\n' >>"$1"; sleep 60"#,
            ("IMDS_TUN_BOOT_LOGIN_LIMIT", "2"),
            "the guest showed no login prompt 2 s after its console started",
        ),
    ];
    for (case, guest, limit, why) in cases {
        let scratch = TempDir::new();
        let (output, took) = boot_watch(&scratch, guest, &[limit]);
        assert_eq!(output.status.code(), Some(124), "{case}: {}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout)
                .contains(&format!("the guest did not come up: {why}")),
            "{case}: {}",
            text(&output)
        );
        assert!(took < Duration::from_secs(20), "{case}: took {took:?}");
    }
}

#[test]
fn boot_watch_passes_a_guest_that_comes_up_and_the_command_status() {
    let scratch = TempDir::new();
    let up = r#"printf 'Loading Linux ...\n\nimds-tun-guest login: ' >>"$1"; sleep 2; echo "Machine booted and ready!""#;
    let (output, _) = boot_watch(&scratch, up, &[("IMDS_TUN_BOOT_LOGIN_LIMIT", "1")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        stdout.contains("    Machine booted and ready!"),
        "{}",
        text(&output)
    );
    assert!(
        stdout.contains("(serial console: first line"),
        "{}",
        text(&output)
    );

    // A reload: the old guest's shutdown is on the console before the domain starts again; it
    // is not the new boot's first line, and its "login:" is not the new guest's.
    let scratch = TempDir::new();
    let reload = r#"printf 'imds-tun-guest login: \nreboot: Power down\n' >>"$1"; sleep 2
        echo '==> default: Starting domain.'; sleep 2; printf 'Loading Linux ...\n' >>"$1"; sleep 60"#;
    let (output, _) = boot_watch(&scratch, reload, &[("IMDS_TUN_BOOT_LOGIN_LIMIT", "2")]);
    assert_eq!(output.status.code(), Some(124), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("showed no login prompt 2 s after"),
        "{}",
        text(&output)
    );

    let scratch = TempDir::new();
    let failed =
        r#"printf 'imds-tun-guest login: ' >>"$1"; echo 'The provider failed' >&2; exit 3"#;
    let (output, _) = boot_watch(&scratch, failed, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("    The provider failed"),
        "{}",
        text(&output)
    );
}

/// SIGTERM to the watcher (the VM test's trap during a boot) stops the command it runs.
#[test]
fn boot_watch_stops_its_command_when_it_is_stopped() {
    let scratch = TempDir::new();
    let console = scratch.path().join("console.log");
    let guest = r#"sleep 60 & echo "$$ $!" >"$1.pid"; wait"#;
    let mut watcher = Command::new("bash")
        .arg(script().with_file_name("boot-watch.sh"))
        .arg(&console)
        .arg(scratch.path().join("up.log"))
        .args(["--", "bash", "-c", guest, "guest"])
        .arg(&console)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting scripts/boot-watch.sh");
    let pid_file = scratch.path().join("console.log.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100)); // the file is written, not yet closed
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watcher.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signalling the watcher");
    let status = watcher.wait().expect("waiting for the watcher");
    assert_eq!(status.code(), Some(130));
    assert!(
        all_gone(&pid_file),
        "the guest command or its child was left running"
    );
}
