#!/usr/bin/env bash
# Builds, once per machine, the Debian 12 guest that scripts/vm-test.sh boots, and adds it to
# Vagrant as a local libvirt box. Prints the box name on stdout (everything else goes to stderr).
#
#   bash scripts/vm-image.sh                 # as root; a second run with the same inputs is instant
#
# The recipe is docs/testing.md ("The VM test"): a raw disk with one MBR partition, debootstrap
# with systemd and everything the test runs inside the guest (it has no network beyond this
# machine and no apt mirror), GRUB on the serial console, converted to a compressed qcow2.
#
# The disk is packed only once it is proven whole (docs/testing.md, "A guest that stops at
# grub>"): the build mounts it in a mount namespace of its own, so no other process can take a
# copy of that mount and keep the filesystem mounted after the build's umount; after the umount
# nothing on the machine may still mount it, e2fsck has checked it, and the bytes about to be
# packed hold a clean ext4 (no journal to replay: GRUB never replays one) whose
# /boot/grub/grub.cfg boots the kernel by UUID. A failed check stops the build with one line
# saying what is wrong, and nothing of it is cached.
#
# Cache: $IMDS_TUN_VM_CACHE (default /var/cache/imds-tun-vm)/<key>/, where <key> hashes this
# script, the Debian release and the guest's package list; the box is imds-tun/debian12-<key>.
# Caches of other keys (an older version of this script) and their boxes are removed.
# Each step's time goes to <key>/timings (and stderr).
#
# Host packages are installed with apt when any is missing (exit status 3 if that fails). Needs
# root (loop devices, mount, chroot) and a Debian host: the mirror comes from apt's own sources
# at run time.
set -euo pipefail

invoked_from=$PWD
cd "$(dirname "$0")/.."

release=bookworm
# What the guest needs. The base system goes in with debootstrap (the recipe's list: a bootable
# minimal Debian with systemd and ssh); the tools the VM test runs inside the guest go in with
# apt in the chroot, because debootstrap's resolver does not follow virtual packages (boto3's
# python3-cryptography needs python3-cffi-backend-api-min, which only a Provides: satisfies).
# The guest has no network beyond this machine, so everything it needs is here: curl, boto3 and
# the AWS CLI as real SDK clients, iproute2 for `ip`, libcap2-bin for `capsh --decode`, rsync for
# Vagrant's synced folder.
guest_base=(
    systemd systemd-sysv udev dbus linux-image-cloud-amd64 grub-pc initramfs-tools zstd kmod
    openssh-server sudo rsync ca-certificates procps less curl iproute2
)
guest_tools=(libcap2-bin python3-boto3 awscli)
# As in the verified recipe: the first line without recommends, the libvirt/Vagrant line with.
host_packages_plain=(debootstrap qemu-system-x86 qemu-utils fdisk rsync)
host_packages_recommends=(
    vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base iptables
)
host_packages=("${host_packages_plain[@]}" "${host_packages_recommends[@]}")
cache_root=${IMDS_TUN_VM_CACHE:-/var/cache/imds-tun-vm}

say() { printf 'vm-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# check_packed_filesystem RAW_DISK [UUID]: the bytes about to be packed hold a clean ext4 that
# GRUB can boot: no journal left to replay, e2fsck finds nothing, /boot/grub/grub.cfg exists,
# names the root by the filesystem's UUID (never by the build's loop device), and its kernels
# and initrds exist. Read straight from the file (e2fsprogs' "?offset=" syntax): no device, no
# mount, no cache.
check_packed_filesystem() {
    local raw=$1 uuid=${2:-} start fs header cfg path out
    start=$(partx -g -n 1 -o START "$raw" | tr -d ' ')
    [[ $start =~ ^[0-9]+$ ]] || die "cannot read the partition table of $raw"
    fs="$raw?offset=$((start * 512))"
    header=$(dumpe2fs -h "$fs" 2>/dev/null) || die "dumpe2fs cannot read the filesystem in $raw"
    grep -q '^Filesystem state: *clean$' <<<"$header" \
        || die "the packed filesystem is not clean ($(grep '^Filesystem state:' <<<"$header")): it was still mounted when packed"
    if grep '^Filesystem features:' <<<"$header" | grep -qw needs_recovery; then
        die "the packed filesystem needs journal recovery: it was still mounted when packed, and GRUB would stop at grub>"
    fi
    [ -n "$uuid" ] || uuid=$(sed -n 's/^Filesystem UUID: *//p' <<<"$header")
    grep -q "^Filesystem UUID: *$uuid$" <<<"$header" \
        || die "the packed filesystem's UUID is not $uuid: $(grep '^Filesystem UUID:' <<<"$header")"
    out=$(e2fsck -fn "$fs" 2>&1) \
        || die "e2fsck -fn finds errors in the packed filesystem: $(tail -n 4 <<<"$out" | tr '\n' ' ')"
    cfg=$(debugfs -R 'cat /boot/grub/grub.cfg' "$fs" 2>/dev/null)
    grep -q '^menuentry ' <<<"$cfg" \
        || die "the packed image has no /boot/grub/grub.cfg with a menu entry: GRUB would stop at grub>"
    grep -q "root=UUID=$uuid " <<<"$cfg" || die "the packed grub.cfg does not boot root=UUID=$uuid"
    if grep -q 'root=/dev/' <<<"$cfg"; then
        die "the packed grub.cfg names a device of the build machine: $(grep -o 'root=/dev/[^ ]*' <<<"$cfg" | head -n 1)"
    fi
    while read -r path; do
        debugfs -R "stat $path" "$fs" 2>&1 | grep -q '^Inode:' \
            || die "the packed grub.cfg boots $path, which is not in the image"
    done < <(awk '$1 == "linux" || $1 == "initrd" { print $2 }' <<<"$cfg" | sort -u)
    say "checked the packed filesystem: clean, no journal to replay, e2fsck -fn finds nothing, grub.cfg boots root=UUID=$uuid"
}

# `--check-disk RAW_DISK` runs only the check above, on any raw disk: what tests/deploy/vm_image.rs
# holds it to, and a way to look at a disk of one's own.
if [ "${1:-}" = --check-disk ]; then
    disk=${2:-}
    [ -z "$disk" ] || [ "${disk#/}" != "$disk" ] || disk="$invoked_from/$disk"
    [ -f "$disk" ] || die "usage: vm-image.sh --check-disk RAW_DISK (no such file: ${2:-})"
    check_packed_filesystem "$disk"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "needs root (loop devices, mount, chroot, apt-get)"

# The whole build runs in a private mount namespace: mounts made here are invisible to the rest
# of the machine, so a process elsewhere that takes a mount namespace of its own (unshare, a
# container runtime, a sandboxing service) while the image is mounted cannot copy that mount and
# keep the filesystem mounted, its journal unreplayed, after the build unmounts it.
if [ "${IMDS_TUN_VM_IMAGE_PRIVATE_MOUNTS:-}" != "$$" ]; then
    export IMDS_TUN_VM_IMAGE_PRIVATE_MOUNTS=$$
    exec unshare --mount --propagation private -- bash "$0" "$@"
fi

key=$({ cat "$0"; echo "$release"; printf '%s\n' "${guest_base[@]}" "${guest_tools[@]}"; } \
    | sha256sum | cut -c1-16)
box="imds-tun/debian12-$key"
dir="$cache_root/$key"
# The logs of the last build of this key, kept when the build fails (its disk is not).
logs="$cache_root/$key.logs"

mkdir -p "$cache_root"
# One build at a time per machine; a second caller waits, then finds the cache.
exec 9>"$cache_root/lock"
flock 9

# quiet LOG COMMAND...: runs COMMAND with its output appended to LOG; shows the end of LOG if
# it fails.
quiet() {
    local log=$1
    shift
    if "$@" >>"$log" 2>&1; then return 0; fi
    say "failed: $*; the end of $log:"
    tail -n 40 "$log" >&2
    return 1
}

recorded=()
# timed NAME COMMAND...: runs COMMAND and records how long it took (written to $dir/timings).
timed() {
    local name=$1 start tenths status=0
    shift
    start=$(date +%s%N)
    "$@" || status=$?
    tenths=$((($(date +%s%N) - start) / 100000000))
    say "$name: $((tenths / 10)).$((tenths % 10))s"
    recorded+=("$name: $((tenths / 10)).$((tenths % 10))s")
    return "$status"
}

# --- host packages -------------------------------------------------------------------------------
# qemu-utils must come from the same QEMU build as qemu-system-x86 (it Breaks other versions of
# qemu-system-common). A machine image may carry a newer qemu-utils from backports without
# backports in its sources; it is then moved to the version qemu-system-x86 gets.
install_host_packages() {
    local qemu
    # Called as `... || exit 3`, where set -e does not apply: every step says so itself.
    export DEBIAN_FRONTEND=noninteractive
    : >"$cache_root/apt.log"
    apt-get update -qq || return 1
    qemu=$(dpkg-query -W -f '${Version}' qemu-system-x86 2>/dev/null || true)
    [ -n "$qemu" ] || qemu=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    # The daemons' postinst scripts print "policy-rc.d denied" / "Failed to connect to bus"
    # where systemd is not PID 1; scripts/vm-test.sh starts the daemons by hand.
    quiet "$cache_root/apt.log" apt-get install -y -q --allow-downgrades --no-install-recommends \
        "${host_packages_plain[@]/#qemu-utils/qemu-utils=$qemu}" || return 1
    quiet "$cache_root/apt.log" apt-get install -y -q "${host_packages_recommends[@]}" || return 1
}
missing=()
for package in "${host_packages[@]}"; do
    dpkg-query -W -f '${db:Status-Status}\n' "$package" 2>/dev/null | grep -qx installed \
        || missing+=("$package")
done
if [ "$(dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null)" \
    != "$(dpkg-query -W -f '${Version}' qemu-system-x86 2>/dev/null)" ]; then
    missing+=("qemu-utils (same version as qemu-system-x86)")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing host packages: ${missing[*]}"
    # Exit status 3: this machine cannot get them (scripts/vm-test.sh skips, or fails under CI).
    timed "host packages (apt-get update + install)" install_host_packages \
        || { say "could not install the host packages"; exit 3; }
fi

# --- the image -----------------------------------------------------------------------------------
# The Debian mirror apt uses here: the first URIs/deb line that serves $release's main component.
debian_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v release="$release" '
            function flush() {
                if (uri != "" && suites ~ ("(^| )" release "( |$)") && components ~ /(^| )main( |$)/) {
                    print uri; found = 1; exit
                }
                uri = ""; suites = ""; components = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^Components:/ { sub(/^Components:[ \t]*/, ""); components = $0 }
            END { if (!found) flush() }
        ' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        awk -v release="$release" '$1 == "deb" && $0 !~ /\[/ && $3 == release { print $2 }' "$file"
    done
}

# Runs inside the chroot as /tmp/configure-guest.sh LOOPDEVICE.
configure_guest_script() {
    cat <<'GUEST'
#!/bin/sh
set -e
echo imds-tun-guest >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 imds-tun-guest\n' >/etc/hosts
echo 'LABEL=root / ext4 errors=remount-ro 0 1' >/etc/fstab
echo 'root:vagrant' | chpasswd
useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
mkdir -p /etc/systemd/network
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >/etc/systemd/network/20-dhcp.network
systemctl enable systemd-networkd ssh serial-getty@ttyS0.service
echo 'UseDNS no' >/etc/ssh/sshd_config.d/vagrant.conf
# Every copy of the image gets its own id at first boot.
: >/etc/machine-id
sed -i -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/' \
    -e 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"/' \
    /etc/default/grub
printf 'GRUB_TERMINAL="console serial"\nGRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n' \
    >>/etc/default/grub
grub-install --target=i386-pc --modules="part_msdos ext2" "$1"
update-grub
apt-get clean
rm -f /tmp/configure-guest.sh /tmp/vagrant.pub
GUEST
}

# Set while the image is being built, so the EXIT trap can undo mounts and the loop device, and
# remove a half-built cache entry.
root=""
loop=""
partial=""
unmount_and_detach() {
    local d
    [ -n "$root" ] || return 0
    for d in sys proc dev; do
        if mountpoint -q "$root/$d"; then umount "$root/$d"; fi
    done
    if mountpoint -q "$root"; then umount "$root"; fi
    root=""
}
detach_loop() {
    [ -n "$loop" ] || return 0
    partx -d "$loop" 2>/dev/null || true
    losetup -d "$loop" 2>/dev/null || true
    loop=""
}
cleanup_build() {
    unmount_and_detach
    detach_loop
    if [ -n "$partial" ]; then
        rm -rf "$partial"
        say "nothing of the failed build is cached; its logs are in $logs"
    fi
}
trap cleanup_build EXIT
trap 'exit 130' INT TERM

# add_partitions LOOP: the partition nodes of LOOP. This host's kernel has no partition-table
# parser (losetup -P makes no p1), partx adds them from user space (BLKPG). A partition added
# that way outlives the loop device's detach: the next user of the same loop device then finds a
# stale p1 (of the old disk's size) and `partx -a` fails with "error adding partition 1". So any
# partition already there goes first, and a failure is retried.
add_partitions() {
    local attempt
    for attempt in 1 2 3 4 5; do
        partx -d "$1" 2>/dev/null || true
        # /sys, not /dev: without udev a node of an earlier loop partition can outlive it.
        if partx -a "$1" 2>>"$logs/partx.log" && [ -e "/sys/class/block/${1#/dev/}p1" ]; then
            return 0
        fi
        sleep "$attempt"
    done
    die "partx -a $1 made no ${1}p1 in 5 attempts (see $logs/partx.log): no partition to format"
}

# mounted_by MAJ:MIN: the processes whose mount namespace still mounts that device, as
# "pid command" lines (the first process seen in each namespace).
mounted_by() {
    local info pid seen=" " ns
    for info in /proc/[0-9]*/mountinfo; do
        pid=${info#/proc/}
        pid=${pid%/mountinfo}
        awk -v dev="$1" '$3 == dev { found = 1 } END { exit !found }' "$info" 2>/dev/null || continue
        ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null) || continue
        [[ $seen == *" $ns "* ]] && continue
        seen+="$ns "
        echo "$pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)"
    done
}

# wait_until_unmounted PARTITION: after the build's own umount, no mount namespace on the machine
# may still hold the filesystem (its journal would stay unreplayed). Waits up to 90 s for holders
# to go, then stops the build naming them.
wait_until_unmounted() {
    local majmin holders waited
    majmin=$(lsblk -dno MAJ:MIN "$1" | tr -d ' ')
    [ -n "$majmin" ] || die "cannot read the device number of $1"
    for waited in $(seq 0 90); do
        holders=$(mounted_by "$majmin")
        [ -n "$holders" ] || return 0
        [ "$waited" -ne 0 ] || say "the guest filesystem is still mounted elsewhere; waiting up to 90 s for: $(head -n 3 <<<"$holders" | tr '\n' ';')"
        sleep 1
    done
    die "the guest filesystem ($1) is still mounted by another mount namespace after 90 s (pid and command: $(head -n 3 <<<"$holders" | tr '\n' ';')); end those processes and run again"
}

build_image() {
    local work=$1 mirror key_file packages uuid status
    mirror=$(debian_mirror | head -n 1)
    [ -n "$mirror" ] || die "no Debian mirror for $release in apt's sources (/etc/apt/sources.list*)"
    key_file=$(dpkg -L vagrant | grep '/keys/vagrant.pub$' | head -n 1)
    [ -f "$key_file" ] || die "vagrant's insecure public key is not installed (dpkg -L vagrant)"

    qemu-img create -q -f raw "$work/disk.raw" 8G
    printf 'label: dos\n,,L,*\n' | sfdisk -q "$work/disk.raw"
    root="$work/mnt"
    loop=$(losetup -f --show "$work/disk.raw")
    add_partitions "$loop"
    mkfs.ext4 -q -L root "${loop}p1"
    mkdir -p "$root"
    mount "${loop}p1" "$root"

    packages=$(IFS=,; echo "${guest_base[*]}")
    timed "debootstrap ($release minbase + ${#guest_base[@]} packages)" \
        quiet "$logs/debootstrap.log" \
        debootstrap --variant=minbase --include="$packages" "$release" "$root" "$mirror"

    for d in dev proc sys; do mount --bind "/$d" "$root/$d"; done
    # Stage 2, with apt (see guest_tools): the chroot uses the host's resolver for the download
    # and starts no daemon.
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    timed "apt-get install in the guest (${guest_tools[*]})" \
        quiet "$logs/guest-apt.log" chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update -q && apt-get install -y -q --no-install-recommends "$@"' \
        sh "${guest_tools[@]}"
    rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
    rm -rf "$root"/var/lib/apt/lists/*

    cp "$key_file" "$root/tmp/vagrant.pub"
    configure_guest_script >"$root/tmp/configure-guest.sh"
    chmod 0755 "$root/tmp/configure-guest.sh"
    timed "configure guest (users, network, ssh, grub)" \
        quiet "$logs/configure.log" chroot "$root" /tmp/configure-guest.sh "$loop"
    # Without udev on the host, update-grub names the loop device as the root.
    uuid=$(blkid -s UUID -o value "${loop}p1")
    sed -i "s#root=${loop}p1#root=UUID=$uuid#g" "$root/boot/grub/grub.cfg"
    grep -q "root=UUID=$uuid" "$root/boot/grub/grub.cfg" || die "grub.cfg does not boot by UUID"
    { du -sxh "$root" 2>/dev/null || true; } | sed "s/^/vm-image: installed size /" >&2

    # Unmounted, and proven so: then e2fsck on the device, which also replays a journal if
    # anything were left in it (exit 1: it repaired something, said in the log).
    unmount_and_detach
    wait_until_unmounted "${loop}p1"
    status=0
    e2fsck -fy "${loop}p1" >>"$logs/e2fsck.log" 2>&1 || status=$?
    case $status in
        0) ;;
        1) say "e2fsck -fy repaired the guest filesystem (see $logs/e2fsck.log)" ;;
        *) die "e2fsck -fy ${loop}p1 failed with status $status (see $logs/e2fsck.log)" ;;
    esac
    detach_loop
    if losetup -j "$work/disk.raw" | grep -q .; then
        die "the disk is still attached after losetup -d: $(losetup -j "$work/disk.raw" | head -n 1)"
    fi
    timed "check the packed filesystem (dumpe2fs, e2fsck -fn, grub.cfg)" \
        check_packed_filesystem "$work/disk.raw" "$uuid"

    timed "qemu-img convert -c (raw to qcow2)" \
        qemu-img convert -f raw -O qcow2 -c "$work/disk.raw" "$work/debian12.qcow2"
    rm -f "$work/disk.raw"
    echo "root=UUID=$uuid; filesystem clean; grub.cfg present" >"$work/checked"
}

build_box() {
    local work=$1
    mkdir -p "$work/box"
    ln -f "$work/debian12.qcow2" "$work/box/box.img"
    echo '{"provider":"libvirt","format":"qcow2","virtual_size":8}' >"$work/box/metadata.json"
    tar -C "$work/box" -cf "$work/debian12.box" metadata.json box.img
    # The box is all that is used later; the image lives on inside it.
    rm -rf "${work:?}/box" "$work/debian12.qcow2"
    rmdir "$work/mnt"  # empty: unmounted above (rmdir never deletes what is inside)
}

# A cache entry counts only with the mark the checks above leave; one built by an older script
# (which packed without checking) has none, besides hashing to another key.
if [ ! -f "$dir/debian12.box" ] || [ ! -f "$dir/checked" ]; then
    say "building the guest image for key $key in $dir"
    rm -rf "$dir"
    partial="$dir.partial"
    # A build that died half-way left only a .partial directory behind.
    rm -rf "$partial" "$logs"
    mkdir -p "$partial" "$logs"
    build_image "$partial"
    timed "box (tar)" build_box "$partial"
    mv "$partial" "$dir"
    partial=""
fi

boxes=$(vagrant box list 2>/dev/null | awk '{print $1}')
if ! grep -qx "$box" <<<"$boxes"; then
    timed "vagrant box add" vagrant box add --force --name "$box" "$dir/debian12.box" >&2
fi

# Older keys: their caches and boxes go (the libvirt pool copy is removed by scripts/vm-test.sh).
for old in "$cache_root"/*/; do
    old=${old%/}
    [ "$old" = "$dir" ] || [ "$old" = "$logs" ] && continue
    say "removing the cache of an older key: $old"
    rm -rf "$old"
done
for stale in $(grep '^imds-tun/debian12-' <<<"$boxes" | grep -vx "$box" || true); do
    say "removing the box of an older key: $stale"
    vagrant box remove --force --all "$stale" >&2 || true
done

if [ "${#recorded[@]}" -gt 0 ]; then
    { echo "# $(date -u +%FT%TZ)"; printf '%s\n' "${recorded[@]}"; } >>"$dir/timings"
fi
echo "$box"
