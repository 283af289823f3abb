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
# Cache: $IMDS_TUN_VM_CACHE (default /var/cache/imds-tun-vm)/<key>/, where <key> hashes this
# script, the Debian release and the guest's package list; the box is imds-tun/debian12-<key>.
# Caches of other keys (an older version of this script) and their boxes are removed.
# Each step's time goes to <key>/timings (and stderr).
#
# Host packages are installed with apt when any is missing (exit status 3 if that fails). Needs
# root (loop devices, mount, chroot) and a Debian host: the mirror comes from apt's own sources
# at run time.
set -euo pipefail

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

[ "$(id -u)" -eq 0 ] || die "needs root (loop devices, mount, chroot, apt-get)"

key=$({ cat "$0"; echo "$release"; printf '%s\n' "${guest_base[@]}" "${guest_tools[@]}"; } \
    | sha256sum | cut -c1-16)
box="imds-tun/debian12-$key"
dir="$cache_root/$key"

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

# Set while the image is being built, so the EXIT trap can undo mounts and the loop device.
root=""
loop=""
cleanup_build() {
    local d
    [ -n "$root" ] || return 0
    for d in sys proc dev; do
        if mountpoint -q "$root/$d"; then umount "$root/$d"; fi
    done
    if mountpoint -q "$root"; then umount "$root"; fi
    if [ -n "$loop" ]; then
        partx -d "$loop" 2>/dev/null || true
        losetup -d "$loop" 2>/dev/null || true
    fi
    root=""
    loop=""
}
trap cleanup_build EXIT

build_image() {
    local work=$1 mirror key_file packages uuid
    mirror=$(debian_mirror | head -n 1)
    [ -n "$mirror" ] || die "no Debian mirror for $release in apt's sources (/etc/apt/sources.list*)"
    key_file=$(dpkg -L vagrant | grep '/keys/vagrant.pub$' | head -n 1)
    [ -f "$key_file" ] || die "vagrant's insecure public key is not installed (dpkg -L vagrant)"

    qemu-img create -q -f raw "$work/disk.raw" 8G
    printf 'label: dos\n,,L,*\n' | sfdisk -q "$work/disk.raw"
    root="$work/mnt"
    loop=$(losetup -f --show "$work/disk.raw")
    # This host's kernel has no partition-table parser: losetup -P makes no p1, partx does.
    partx -a "$loop"
    mkfs.ext4 -q -L root "${loop}p1"
    mkdir -p "$root"
    mount "${loop}p1" "$root"

    packages=$(IFS=,; echo "${guest_base[*]}")
    timed "debootstrap ($release minbase + ${#guest_base[@]} packages)" \
        quiet "$work/debootstrap.log" \
        debootstrap --variant=minbase --include="$packages" "$release" "$root" "$mirror"

    for d in dev proc sys; do mount --bind "/$d" "$root/$d"; done
    # Stage 2, with apt (see guest_tools): the chroot uses the host's resolver for the download
    # and starts no daemon.
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    timed "apt-get install in the guest (${guest_tools[*]})" \
        quiet "$work/guest-apt.log" chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update -q && apt-get install -y -q --no-install-recommends "$@"' \
        sh "${guest_tools[@]}"
    rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
    rm -rf "$root"/var/lib/apt/lists/*

    cp "$key_file" "$root/tmp/vagrant.pub"
    configure_guest_script >"$root/tmp/configure-guest.sh"
    chmod 0755 "$root/tmp/configure-guest.sh"
    timed "configure guest (users, network, ssh, grub)" \
        quiet "$work/configure.log" chroot "$root" /tmp/configure-guest.sh "$loop"
    # Without udev on the host, update-grub names the loop device as the root.
    uuid=$(blkid -s UUID -o value "${loop}p1")
    sed -i "s#root=${loop}p1#root=UUID=$uuid#g" "$root/boot/grub/grub.cfg"
    grep -q "root=UUID=$uuid" "$root/boot/grub/grub.cfg" || die "grub.cfg does not boot by UUID"
    { du -sxh "$root" 2>/dev/null || true; } | sed "s/^/vm-image: installed size /" >&2
    cleanup_build

    timed "qemu-img convert -c (raw to qcow2)" \
        qemu-img convert -f raw -O qcow2 -c "$work/disk.raw" "$work/debian12.qcow2"
    rm -f "$work/disk.raw"
}

build_box() {
    local work=$1
    mkdir -p "$work/box"
    ln -f "$work/debian12.qcow2" "$work/box/box.img"
    echo '{"provider":"libvirt","format":"qcow2","virtual_size":8}' >"$work/box/metadata.json"
    tar -C "$work/box" -cf "$work/debian12.box" metadata.json box.img
    # The box is all that is used later; the image lives on inside it.
    rm -rf "${work:?}/box" "$work/debian12.qcow2"
    rmdir "$work/mnt"  # empty: unmounted by cleanup_build (rmdir never deletes what is inside)
}

if [ ! -f "$dir/debian12.box" ]; then
    say "building the guest image for key $key in $dir"
    # A build that died half-way left only a .partial directory behind.
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    build_image "$dir.partial"
    timed "box (tar)" build_box "$dir.partial"
    mv "$dir.partial" "$dir"
fi

boxes=$(vagrant box list 2>/dev/null | awk '{print $1}')
if ! grep -qx "$box" <<<"$boxes"; then
    timed "vagrant box add" vagrant box add --force --name "$box" "$dir/debian12.box" >&2
fi

# Older keys: their caches and boxes go (the libvirt pool copy is removed by scripts/vm-test.sh).
for old in "$cache_root"/*/; do
    old=${old%/}
    [ "$old" = "$dir" ] && continue
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
