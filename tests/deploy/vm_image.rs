//! The guard in `scripts/vm-image.sh` that keeps an unbootable guest image out of the cache
//! (issue 21, docs/testing.md "A guest that stops at grub>"): `--check-disk` on small raw disks
//! built here with `mkfs.ext4 -d`, one per way a packed image can be broken, and one whose
//! filesystem another mount namespace still holds, the way a fresh CI machine produced a guest
//! that stopped at `grub>`.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
