#!/usr/bin/env bash
# The VM test: imds-tun installed as users install it, in a real Debian 12 guest with real
# systemd, booted under QEMU (software emulation) by a real `vagrant up --provider=libvirt` of
# vagrant/Vagrantfile. What it proves, step by step, and its timings: docs/testing.md.
#
#   bash scripts/vm-test.sh            # as root; installs what it needs (scripts/vm-image.sh)
#   CI=true bash scripts/vm-test.sh    # what CI runs: "cannot run here" is a failure, not a skip
#
# One line per check, `PASS name` or `FAIL name: why`, then each step's time; exit 1 if any
# check failed. Whatever happens, the guest is destroyed (`vagrant destroy -f`), the host-side
# imds-tun stopped, and libvirtd/virtlogd stopped if this script started them; only the caches
# stay (the image and box of scripts/vm-image.sh, the box's copy in libvirt's default pool).
#
# Environment (optional):
#   IMDS_TUN_VM_DEB   the .deb to test [default: the newest target/debian/imds-tun_*.deb, which
#                     scripts/package.sh builds with the static binary the provisioner installs]
#   IMDS_TUN_VM_TEST  0 = skip (refused under CI=true)
#   IMDS_TUN_VM_BOX   a box already added to Vagrant to boot instead of scripts/vm-image.sh's
#                     (e.g. a deliberately broken one, to watch the test fail fast and say why)
#   CI                true = a missing prerequisite fails instead of skipping
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
repo=$(pwd)

skipped=""
in_ci() { case "${CI:-}" in true | TRUE | True | 1) return 0 ;; esac; return 1; }
cannot_run() {
    if in_ci; then
        echo "FAIL vm-test: cannot run: $1 (CI=true, so this is a failure, not a skip)"
        exit 1
    fi
    echo "SKIPPED vm-test: $1"
    skipped=$1
    exit 0
}

[ "${IMDS_TUN_VM_TEST:-1}" != 0 ] || cannot_run "IMDS_TUN_VM_TEST=0"
[ "$(id -u)" -eq 0 ] || cannot_run "needs root (apt-get, loop devices, libvirt's system instance)"

# --- reporting --------------------------------------------------------------------------------
failures=()
passes=0
pass() { echo "PASS $1"; passes=$((passes + 1)); }
fail() { echo "FAIL $1: $2"; failures+=("$1"); }
# expect NAME EXPECTED ACTUAL
expect() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}
# expect_match NAME REGEX ACTUAL
expect_match() {
    if [[ $3 =~ $2 ]]; then pass "$1"; else fail "$1" "'$3' does not match /$2/"; fi
}
# expect_contains NAME NEEDLE HAYSTACK
expect_contains() {
    if [[ $3 == *"$2"* ]]; then pass "$1"; else fail "$1" "no '$2' in: $3"; fi
}

steps=()        # "seconds name" of every finished step
current_step=""
step_started=0
step() {
    printf '\n==> %s\n' "$1"
    current_step=$1
    step_started=$(date +%s%N)
}
step_done() {
    local tenths=$((($(date +%s%N) - step_started) / 100000000))
    steps+=("$((tenths / 10)).$((tenths % 10)) $current_step")
    echo "    ($((tenths / 10)).$((tenths % 10))s)"
    current_step=""
}

indent() { sed 's/^/    /'; }
# The value of KEY in `key=value` lines.
value() { sed -n "s/^$1=//p" | head -n 1; }

# --- state to undo ----------------------------------------------------------------------------
scratch=$(mktemp -d /tmp/imds-tun-vm-test.XXXXXX)
started_daemons=()
host_pid=""
token_created=""
vm_created=""
network_existed=""
watcher=""      # scripts/boot-watch.sh, while it runs a boot
guest_up=""     # set once vagrant up succeeded

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ -z "$current_step" ] || step_done # the step a fatal failure ended
    # A signal during a boot: the watcher stops vagrant, which holds the machine's lock until
    # it ends, and destroy below needs that lock.
    if [ -n "$watcher" ]; then
        kill -TERM "$watcher" 2>/dev/null
        wait "$watcher" 2>/dev/null
    fi
    if [ -n "$vm_created" ]; then
        # A guest that never came up has no journal to read, and boot-watch.sh showed its console.
        if [ "${#failures[@]}" -gt 0 ] && [ -n "$guest_up" ]; then
            echo "--- the guest's journal for imds-tun (a check failed) ---"
            in_guest 'sudo journalctl -u imds-tun --no-pager -n 40' | indent
            echo "--- stderr of the commands run in the guest ---"
            tail -n 40 "$scratch/guest-stderr.log" | indent
            bash scripts/boot-watch.sh --tail "$console"
        fi
        step "vagrant destroy -f"
        vagrant_cmd destroy -f 2>&1 | indent
        step_done
        if virsh -c qemu:///system list --all --name 2>/dev/null | grep -qx "$domain"; then
            fail "destroy removes the domain" "$domain is still defined"
        else
            pass "destroy removes the domain"
        fi
        if [ -z "$network_existed" ] && virsh -c qemu:///system net-info vagrant-libvirt >/dev/null 2>&1; then
            fail "destroy removes the network" "vagrant-libvirt is still defined"
        fi
    fi
    if [ -n "$host_pid" ]; then
        kill "$host_pid" 2>/dev/null
        wait "$host_pid" 2>/dev/null
    fi
    [ -z "$token_created" ] || rm -f "$repo/.imds-tun-token"
    local daemon
    for daemon in "${started_daemons[@]}"; do
        kill "$(cat "/run/$daemon.pid")" 2>/dev/null && echo "stopped $daemon (started by this test)"
    done
    rm -rf "$scratch"
    summary "$status"
    if [ "${#failures[@]}" -gt 0 ] || [ "$status" -ne 0 ]; then exit 1; fi
    exit 0
}

summary() {
    local i
    printf '\n==> VM test timings\n'
    for i in "${steps[@]}"; do
        printf '    %6ss  %s\n' "${i%% *}" "${i#* }"
    done
    printf '    %6ss  total\n' "$(($(date +%s) - test_started))"
    if [ -n "$skipped" ]; then
        printf '\nVM test SKIPPED: %s\n' "$skipped"
    elif [ "${#failures[@]}" -eq 0 ] && [ "$1" -ne 0 ]; then
        printf '\nVM test FAILED: ended early (status %s) after %s passed checks\n' "$1" "$passes"
    elif [ "${#failures[@]}" -gt 0 ]; then
        printf '\nVM test FAILED: %s passed, %s failed: %s\n' "$passes" "${#failures[@]}" "${failures[*]}"
    else
        printf '\nVM test OK: %s checks passed\n' "$passes"
    fi
}

# A step that everything after it needs: stop here (the trap still cleans up).
fatal() {
    fail "$1" "$2"
    exit 1
}

test_started=$(date +%s)
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. the guest image and the local box -------------------------------------------------------
step "guest image and box (scripts/vm-image.sh)"
if [ -n "${IMDS_TUN_VM_BOX:-}" ]; then
    box=$IMDS_TUN_VM_BOX
    status=0
    echo "    IMDS_TUN_VM_BOX: $box"
else
    box=$(bash scripts/vm-image.sh)
    status=$?
fi
step_done
case $status in
    0) ;;
    3) cannot_run "scripts/vm-image.sh could not install the host packages or reach the Debian archive" ;;
    *) fatal "guest image" "scripts/vm-image.sh exited with $status" ;;
esac
pass "guest image and box: $box"

# --- 2. what goes into the guest ----------------------------------------------------------------
step "binaries (scripts/package.sh amd64)"
# The amd64 static binary and .deb (the guest is x86_64), rebuilt if the sources changed (a no-op when scripts/test.sh
# built them already). In the checkout's target/, which is what the Vagrantfile syncs.
unset CARGO_TARGET_DIR
nice bash scripts/package.sh amd64 2>&1 | indent
[ "${PIPESTATUS[0]}" -eq 0 ] || fatal "build" "scripts/package.sh failed"
binary=target/x86_64-unknown-linux-musl/release/imds-tun
[ -x "$binary" ] || fatal "build" "no binary at $binary"
binary_sha=$(sha256sum "$binary" | cut -d' ' -f1)
echo "    the guest gets $binary ($(du -h "$binary" | cut -f1))"
deb=${IMDS_TUN_VM_DEB:-$(find target/debian -maxdepth 1 -name 'imds-tun_*_amd64.deb' -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n 1 | cut -d' ' -f2-)}
[ -z "$deb" ] || deb=$(realpath "$deb")
step_done

# --- 3. libvirt -------------------------------------------------------------------------------
step "libvirt daemons"
for daemon in virtlogd libvirtd; do
    if [ -f "/run/$daemon.pid" ] && kill -0 "$(cat "/run/$daemon.pid")" 2>/dev/null; then
        echo "    $daemon already runs"
    else
        "$daemon" -d || fatal "libvirt" "$daemon -d failed"
        started_daemons=("$daemon" "${started_daemons[@]}")
        echo "    started $daemon"
    fi
done
for _ in $(seq 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
virsh -c qemu:///system version | indent || fatal "libvirt" "virsh cannot reach libvirtd"
# The box's copy in the pool is named after the box; copies of older boxes (older image keys)
# are removed so they do not pile up.
# vagrant-libvirt 0.11 names it <box, / as -VAGRANTSLASH->_vagrant_box_image_<version>_<time>_box.img.
current_volume="${box//\//-VAGRANTSLASH-}_"
[ -n "${IMDS_TUN_VM_BOX:-}" ] || virsh -c qemu:///system vol-list default 2>/dev/null | awk '{print $1}' \
    | grep '^imds-tun-VAGRANTSLASH-debian12-' | grep -vF "$current_volume" \
    | while read -r volume; do
        echo "    removing $volume (an older box)"
        virsh -c qemu:///system vol-delete --pool default "$volume" >/dev/null
    done
step_done

# --- 4. vagrant up ------------------------------------------------------------------------------
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
# The machine's state lives outside the checkout, so a developer's own `vagrant up` from
# vagrant/ is neither seen nor touched.
export VAGRANT_DOTFILE_PATH="$scratch/dotfile"
# The settings docs/guides/vagrant.md shows for this kind of host.
export IMDS_TUN_BOX=$box IMDS_TUN_GUEST=debian IMDS_TUN_LIBVIRT_DRIVER=qemu \
    IMDS_TUN_LIBVIRT_CPU_MODEL=qemu64 IMDS_TUN_LIBVIRT_NETWORK_MODE=none \
    IMDS_TUN_LIBVIRT_GRAPHICS=none IMDS_TUN_LIBVIRT_SERIAL_LOG="$scratch/console.log"
console=$IMDS_TUN_LIBVIRT_SERIAL_LOG
unset IMDS_TUN_UPSTREAM IMDS_TUN_TOKEN_FILE IMDS_TUN_ARGS
domain=vagrant_default

vagrant_cmd() { (cd "$repo/vagrant" && vagrant "$@"); }
# in_guest COMMAND: runs COMMAND in the guest as the vagrant user; its stdout is the command's,
# stderr goes to a log (shown when a check fails).
in_guest() { vagrant_cmd ssh --no-tty -c "$1" 2>>"$scratch/guest-stderr.log"; }
# in_guest_script [sudo]: runs the bash script on stdin in the guest (as root with "sudo").
in_guest_script() { vagrant_cmd ssh --no-tty -c "${1:+sudo }bash -s" 2>>"$scratch/guest-stderr.log"; }

# boot_watched LOG COMMAND...: runs COMMAND (a vagrant command that boots the guest: up, reload)
# under scripts/boot-watch.sh, which stops it when the guest's serial console shows it will not
# come up (grub>, a kernel panic, silence, no login prompt) and then says why (status 124). In
# the background, so a signal reaches this script's trap at once (see cleanup).
boot_watched() {
    local log=$1 status
    shift
    bash scripts/boot-watch.sh "$console" "$log" -- "$@" &
    watcher=$!
    wait "$watcher"
    status=$?
    watcher=""
    return "$status"
}

if virsh -c qemu:///system list --all --name | grep -qx "$domain"; then
    fatal "vagrant up" "a libvirt domain $domain exists already (another vagrant up from a vagrant/ directory); destroy it first"
fi
virsh -c qemu:///system net-info vagrant-libvirt >/dev/null 2>&1 && network_existed=1

# The host-credentials shape (below) needs the shared token in the synced folder, as the
# guide's `openssl rand` makes it; a token already there is used as it is.
if [ ! -f .imds-tun-token ]; then
    (umask 077 && openssl rand -hex 32 >.imds-tun-token) || fatal "token" "openssl rand failed"
    token_created=1
fi

step "vagrant up --provider=libvirt (guest-only shape)"
vm_created=1
boot_watched "$scratch/up.log" env -C "$repo/vagrant" vagrant up --provider=libvirt
up_status=$?
step_done
case $up_status in
    0) guest_up=1 ;;
    124) fatal "vagrant up" "the guest did not come up (why, and its console, above)" ;;
    *)
        bash scripts/boot-watch.sh --tail "$console"
        fatal "vagrant up" "exited with $up_status"
        ;;
esac
up_log=$(cat "$scratch/up.log")
expect_contains "vagrant up: the provisioner installed and started the service" \
    "service restarted (systemd)" "$up_log"
expect_contains "vagrant up: the provisioner chose the binary" "binary: /vagrant/$binary" "$up_log"
# The rsync folder carries the binaries and the sources, not target/ (many GB), .git or fuzz/.
synced=$(in_guest 'cd /vagrant && find target -type f | sort | tr "\n" " "; echo; ls -A | tr "\n" " "')
expect "rsync folder: only the imds-tun binaries from target/" \
    "$(printf '%s\n' target/x86_64-unknown-linux-musl/release/imds-tun target/release/imds-tun \
        | while read -r f; do [ -f "$f" ] && echo "$f"; done | sort | tr '\n' ' ')" \
    "$(head -n 1 <<<"$synced")"
if [[ " $(tail -n 1 <<<"$synced") " =~ \ (\.git|fuzz|\.venv|\.vagrant)\  ]]; then
    fail "rsync folder: no .git, fuzz, .venv, .vagrant" "/vagrant has: $(tail -n 1 <<<"$synced")"
else
    pass "rsync folder: no .git, fuzz, .venv, .vagrant"
fi

# --- 5. guest-only shape: curl and two SDK clients ----------------------------------------------
# Prints key=value facts about the metadata service as seen from inside the guest.
imds_probe() {
    cat <<'PROBE'
set -u
m=http://169.254.169.254
token=$(curl -sS --fail --max-time 10 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' $m/latest/api/token)
echo "token=$token"
h="X-aws-ec2-metadata-token: $token"
echo "bad_token_status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'X-aws-ec2-metadata-token: made-up' $m/latest/meta-data/instance-id)"
echo "instance_id=$(curl -sS --fail --max-time 10 -H "$h" $m/latest/meta-data/instance-id)"
echo "region=$(curl -sS --fail --max-time 10 -H "$h" $m/latest/meta-data/placement/region)"
role=$(curl -sS --fail --max-time 10 -H "$h" $m/latest/meta-data/iam/security-credentials/)
echo "role=$role"
curl -sS --fail --max-time 10 -H "$h" "$m/latest/meta-data/iam/security-credentials/$role" >/tmp/creds.json
python3 - <<'PY'
import datetime, json
c = json.load(open("/tmp/creds.json"))
print("code=" + c.get("Code", ""))
print("access_key=" + c.get("AccessKeyId", ""))
print("session_token_set=" + str(bool(c.get("Token"))))
expires = datetime.datetime.strptime(c["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
print("expires_in_future=" + str(expires > datetime.datetime.utcnow()))
PY
# The SDKs: no AWS_* variable, no config or credentials file, so the instance-metadata
# provider is the only source left.
for v in $(env | sed -n 's/^\(AWS_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export AWS_CONFIG_FILE=/nonexistent/config AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials
python3 - <<'PY'
import boto3
from botocore.utils import InstanceMetadataRegionFetcher
credentials = boto3.Session().get_credentials()
frozen = credentials.get_frozen_credentials()
print("boto3_method=" + credentials.method)
print("boto3_access_key=" + frozen.access_key)
print("boto3_region=" + str(InstanceMetadataRegionFetcher().retrieve_region()))
PY
aws configure list | awk '$1 == "access_key" { print "cli_access_key=" $2; print "cli_type=" $3 }'
PROBE
}

# check_imds LABEL EXPECTED_INSTANCE_ID EXPECTED_ROLE: runs imds_probe and checks its facts;
# sets $seen_access_key.
check_imds() {
    local label=$1 out
    out=$(imds_probe | in_guest_script)
    seen_access_key=$(value access_key <<<"$out")
    expect_match "$label: IMDSv2 token" '^[A-Za-z0-9_-]{20,}$' "$(value token <<<"$out")"
    expect "$label: a made-up token is refused" 401 "$(value bad_token_status <<<"$out")"
    expect "$label: instance-id" "$2" "$(value instance_id <<<"$out")"
    expect "$label: role" "$3" "$(value role <<<"$out")"
    expect "$label: credentials Code" Success "$(value code <<<"$out")"
    expect_match "$label: credentials AccessKeyId" '^ASIA[A-Z2-7]{16}$' "$seen_access_key"
    expect "$label: credentials Token" True "$(value session_token_set <<<"$out")"
    expect "$label: credentials Expiration in the future" True "$(value expires_in_future <<<"$out")"
    expect "$label: boto3 got its credentials from instance metadata" iam-role \
        "$(value boto3_method <<<"$out")"
    expect "$label: boto3 access key = curl's" "$seen_access_key" "$(value boto3_access_key <<<"$out")"
    expect "$label: botocore's IMDS region = curl's" "$(value region <<<"$out")" \
        "$(value boto3_region <<<"$out")"
    expect "$label: aws configure list: source" iam-role "$(value cli_type <<<"$out")"
    expect "$label: aws configure list: access key ends like curl's" \
        "****************${seen_access_key: -4}" "$(value cli_access_key <<<"$out")"
    [ -n "$seen_access_key" ] || indent <<<"$out"
}

# Facts about the service, its process and the kernel state in the guest, as key=value lines.
service_probe() {
    cat <<'PROBE'
systemctl show imds-tun -p ActiveState -p SubState -p MainPID -p ExecMainPID -p NRestarts \
    -p ActiveEnterTimestamp -p UID -p DynamicUser -p AmbientCapabilities -p CapabilityBoundingSet \
    -p DevicePolicy -p DeviceAllow -p ProtectSystem -p ProtectHome -p PrivateTmp -p NoNewPrivileges \
    -p RestrictAddressFamilies -p UnitFileState
# Properties with several values (one line each), and one systemctl show cannot print (252).
echo "DeviceAllowAll=$(systemctl show -p DeviceAllow --value imds-tun | sort | tr '\n' ';')"
echo "LoadCredentialLine=$(systemctl cat imds-tun 2>/dev/null | grep '^LoadCredential=')"
pid=$(systemctl show -p MainPID --value imds-tun)
if [ "$pid" != 0 ]; then
    sed -n 's/^\(Uid\|Gid\|CapEff\|CapPrm\|CapInh\|CapBnd\|CapAmb\|NoNewPrivs\):[[:space:]]*/\1=/p' \
        "/proc/$pid/status" | tr '\t' ' '
    echo "CapEffDecoded=$(capsh --decode="$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")" | cut -d= -f2)"
    # The sandbox as the process sees it: root, entering only its mount namespace, tries to write.
    writable=""
    for dir in /usr /etc /var /home /root; do
        if nsenter -t "$pid" -m touch "$dir/.imds-tun-probe" 2>/dev/null; then
            rm -f "$dir/.imds-tun-probe"
            writable="$writable $dir"
        fi
    done
    echo "writable_in_sandbox=${writable# }"
    rm -f /tmp/.imds-tun-probe
    if nsenter -t "$pid" -m touch /tmp/.imds-tun-probe; then
        echo "private_tmp=$([ -e /tmp/.imds-tun-probe ] && echo no || echo yes)"
    fi
    echo "tmp_source=$(findmnt --task "$pid" -no SOURCE /tmp)"
    credential=/run/credentials/imds-tun.service/upstream-token
    if [ -f "$credential" ]; then
        echo "credential=$(stat -c '%a %u' "$credential") $(cmp -s "$credential" /usr/local/etc/imds-tun/upstream-token && echo same)"
    fi
    echo "cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    echo "exe=$(readlink "/proc/$pid/exe")"
fi
echo "tun_links=$(ip -o link show type tun | wc -l)"
for tun in $(ip -o link show type tun | awk -F': ' '{print $2}'); do
    echo "tun_disable_ipv6=$(cat "/proc/sys/net/ipv6/conf/$tun/disable_ipv6")"
done
echo "metadata_routes=$(ip -o route show table all | grep -cE '^169\.254\.169\.254(/32)? ')"
echo "metadata_route=$(ip -o route show table all | grep -E '^169\.254\.169\.254(/32)? ' | head -n 1)"
echo "binary_sha=$( [ -f /usr/local/bin/imds-tun ] && sha256sum /usr/local/bin/imds-tun | cut -d' ' -f1)"
PROBE
}
service_facts() { service_probe | in_guest_script sudo; }

step "guest-only shape: curl, boto3 and the AWS CLI inside the guest"
instance_out=$(in_guest 'curl -s http://169.254.169.254/latest/meta-data/instance-id')
expect_match "guest-only: instance-id (IMDSv1, as the guide shows)" '^i-[0-9a-f]{17}$' "$instance_out"
guest_instance_id=$instance_out
check_imds "guest-only" "$guest_instance_id" imds-tun
step_done

# --- 6. the unit under real systemd -------------------------------------------------------------
step "the systemd unit: sandbox, dynamic user, capabilities"
facts=$(service_facts)
expect "unit: active" active/running "$(value ActiveState <<<"$facts")/$(value SubState <<<"$facts")"
expect "unit: enabled" enabled "$(value UnitFileState <<<"$facts")"
expect "unit: DynamicUser" yes "$(value DynamicUser <<<"$facts")"
expect "unit: AmbientCapabilities" cap_net_admin "$(value AmbientCapabilities <<<"$facts")"
expect "unit: CapabilityBoundingSet" cap_net_admin "$(value CapabilityBoundingSet <<<"$facts")"
expect "unit: DevicePolicy" closed "$(value DevicePolicy <<<"$facts")"
# ProtectClock=yes adds read access to the RTC; nothing else may be opened.
expect "unit: DeviceAllow" "/dev/net/tun rw;char-rtc r;" "$(value DeviceAllowAll <<<"$facts")"
expect "unit: ProtectSystem" strict "$(value ProtectSystem <<<"$facts")"
expect "unit: ProtectHome" read-only "$(value ProtectHome <<<"$facts")"
expect "unit: NoNewPrivileges" yes "$(value NoNewPrivileges <<<"$facts")"
expect "unit: RestrictAddressFamilies" "AF_INET AF_INET6 AF_NETLINK AF_UNIX" \
    "$(value RestrictAddressFamilies <<<"$facts" | tr ' ' '\n' | sort | xargs)"
uid=$(value Uid <<<"$facts")
service_uid=$(value UID <<<"$facts")
read -r ruid euid suid fsuid <<<"$uid"
expect "process: real, effective, saved and fs uid are the service's dynamic uid" \
    "$service_uid $service_uid $service_uid $service_uid" "$ruid $euid $suid $fsuid"
if [ -n "$service_uid" ] && [ "$service_uid" -ge 61184 ] && [ "$service_uid" -le 65519 ]; then
    pass "process: uid $service_uid is in systemd's dynamic range 61184-65519"
else
    fail "process: dynamic uid" "uid '$service_uid' is not in 61184-65519"
fi
# Not root, so imds-tun keeps what systemd gave it (it drops privileges only when it runs as
# root, src/platform/privileges.rs): CAP_NET_ADMIN alone, in every set that matters.
expect "process: CapEff = CAP_NET_ADMIN only" 0000000000001000 "$(value CapEff <<<"$facts")"
expect "process: CapEff decodes to cap_net_admin" cap_net_admin "$(value CapEffDecoded <<<"$facts")"
expect "process: CapPrm = CAP_NET_ADMIN only" 0000000000001000 "$(value CapPrm <<<"$facts")"
expect "process: CapBnd = CAP_NET_ADMIN only" 0000000000001000 "$(value CapBnd <<<"$facts")"
expect "process: NoNewPrivs" 1 "$(value NoNewPrivs <<<"$facts")"
expect "sandbox: /usr /etc /var /home /root are read-only (ProtectSystem=strict, ProtectHome)" "" \
    "$(value writable_in_sandbox <<<"$facts")"
expect "sandbox: /tmp is writable and private (PrivateTmp)" yes "$(value private_tmp <<<"$facts")"
expect "process: runs the installed binary" /usr/local/bin/imds-tun "$(value exe <<<"$facts")"
expect "guest: the installed binary is the host's $binary" "$binary_sha" "$(value binary_sha <<<"$facts")"
expect "guest: one TUN" 1 "$(value tun_links <<<"$facts")"
# Under ProtectKernelTunables=yes, the unit's ReadWritePaths= exception lets imds-tun do this.
expect "guest: IPv6 is off on the TUN" 1 "$(value tun_disable_ipv6 <<<"$facts")"
expect "guest: one route to 169.254.169.254" 1 "$(value metadata_routes <<<"$facts")"
expect_match "guest: the route goes through the TUN" '^169\.254\.169\.254 dev imds[0-9]+ ' \
    "$(value metadata_route <<<"$facts")"
step_done

step "systemd-analyze security imds-tun"
security=$(in_guest 'sudo systemd-analyze security --no-pager imds-tun')
echo "$security" | grep -E '^✗|Overall' | indent
exposure=$(sed -n 's/.*Overall exposure level for imds-tun.service: \([0-9.]*\).*/\1/p' <<<"$security")
echo "    exposure score: ${exposure:-?}"
# The score docs/testing.md reports; a change to the unit that raises it fails here.
max_exposure=2.0
if [ -n "$exposure" ] && awk -v s="$exposure" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
    pass "systemd-analyze security: exposure $exposure <= $max_exposure"
else
    fail "systemd-analyze security" "exposure '${exposure}' above $max_exposure"
fi
step_done

# --- 7. a second provision changes nothing ------------------------------------------------------
step "vagrant provision (second run: unchanged)"
before=$(service_facts)
provision_out=$(vagrant_cmd provision 2>&1)
indent <<<"$provision_out"
after=$(service_facts)
expect_contains "second provision: says unchanged" "imds-tun provision: unchanged; service running" "$provision_out"
expect "second provision: same ExecMainPID" "$(value ExecMainPID <<<"$before")" "$(value ExecMainPID <<<"$after")"
expect "second provision: same ActiveEnterTimestamp" "$(value ActiveEnterTimestamp <<<"$before")" \
    "$(value ActiveEnterTimestamp <<<"$after")"
expect "second provision: no restart" "$(value NRestarts <<<"$before")" "$(value NRestarts <<<"$after")"
step_done

# --- 8. SIGKILL: systemd restarts it, one TUN, one route -----------------------------------------
step "systemctl kill -s SIGKILL imds-tun"
old_pid=$(value ExecMainPID <<<"$after")
old_restarts=$(value NRestarts <<<"$after")
in_guest "sudo systemctl kill -s SIGKILL imds-tun
for _ in \$(seq 100); do
    if [ \"\$(systemctl show -p ExecMainPID --value imds-tun)\" != $old_pid ] && systemctl is-active --quiet imds-tun \\
        && curl -s --max-time 2 -o /dev/null http://169.254.169.254/latest/meta-data/instance-id; then
        break
    fi
    sleep 0.2
done" >/dev/null
facts=$(service_facts)
expect "after SIGKILL: active again" active "$(value ActiveState <<<"$facts")"
if [ "$(value ExecMainPID <<<"$facts")" != "$old_pid" ]; then
    pass "after SIGKILL: a new process ($old_pid -> $(value ExecMainPID <<<"$facts"))"
else
    fail "after SIGKILL: a new process" "ExecMainPID is still $old_pid"
fi
expect "after SIGKILL: systemd counted one restart" "$((old_restarts + 1))" "$(value NRestarts <<<"$facts")"
expect "after SIGKILL: exactly one TUN" 1 "$(value tun_links <<<"$facts")"
expect "after SIGKILL: exactly one route to 169.254.169.254" 1 "$(value metadata_routes <<<"$facts")"
expect "after SIGKILL: serving the same instance-id" "$guest_instance_id" \
    "$(in_guest 'curl -s --max-time 5 http://169.254.169.254/latest/meta-data/instance-id')"
step_done

# --- 9. vagrant reload ----------------------------------------------------------------------------
step "vagrant reload"
before=$facts
boot_watched "$scratch/reload.log" env -C "$repo/vagrant" vagrant reload
reload_status=$?
reload_out=$(cat "$scratch/reload.log")
step_done
case $reload_status in
    0) ;;
    124) fatal "vagrant reload" "the guest did not come up (why, and its console, above)" ;;
    *)
        bash scripts/boot-watch.sh --tail "$console"
        fatal "vagrant reload" "exited with $reload_status"
        ;;
esac
facts=$(service_facts)
if [ "$(value ActiveEnterTimestamp <<<"$facts")" != "$(value ActiveEnterTimestamp <<<"$before")" ]; then
    pass "after reload: the service started anew with the guest"
else
    fail "after reload: the service started anew" "ActiveEnterTimestamp unchanged: the guest did not reboot?"
fi
# Enabled at boot: by the time the provisioner runs after the reboot, systemd has started it.
expect_contains "after reload: systemd started it at boot (the provisioner found it running)" \
    "imds-tun provision: unchanged; service running" "$reload_out"
expect "after reload: serving the same instance-id" "$guest_instance_id" \
    "$(in_guest 'curl -s --max-time 5 http://169.254.169.254/latest/meta-data/instance-id')"
expect "after reload: one TUN" 1 "$(value tun_links <<<"$facts")"

# --- 10. settings through IMDS_TUN_ARGS -----------------------------------------------------------
step "IMDS_TUN_ARGS=\"--region eu-west-1 --tag Name=web\" vagrant provision"
provision_out=$(IMDS_TUN_ARGS="--region eu-west-1 --tag Name=web" vagrant_cmd provision 2>&1)
indent <<<"$provision_out"
expect_contains "IMDS_TUN_ARGS provision: restarted with the new flags" "service restarted (systemd)" \
    "$provision_out"
settings=$(in_guest 'curl -s http://169.254.169.254/latest/meta-data/placement/region; echo; curl -s http://169.254.169.254/latest/meta-data/tags/instance/Name')
expect "IMDS_TUN_ARGS provision: region and tag served" "eu-west-1 web" "$(xargs <<<"$settings")"
step_done

# --- 11. host-credentials shape -------------------------------------------------------------------
step "host-credentials shape: an imds-tun on the host, the guest forwarding to it"
network_xml=$(virsh -c qemu:///system net-dumpxml vagrant-libvirt 2>&1)
if grep -q '<forward' <<<"$network_xml"; then
    fail "the management network is isolated" "it has a <forward> element: $network_xml"
else
    pass "the management network is isolated (no <forward>: guest traffic stays on this machine)"
fi
host_address=$(sed -n "s/.*<ip address='\([0-9.]*\)'.*/\1/p" <<<"$network_xml" | head -n 1)
[ -n "$host_address" ] || fatal "host address" "no <ip address> in the vagrant-libvirt network: $network_xml"
host_instance_id="i-0a1b2c3d4e5f60718"
# The host side, bound to the bridge's host address, from the repository root, as docs/guides/vagrant.md shows it, plus flags that make the host's
# answers recognisable in the guest.
"./$binary" --no-tun --listen "$host_address:8080" --listen-token-file .imds-tun-token \
    --mock-credentials --instance-id "$host_instance_id" --role-name host-role \
    >"$scratch/host.log" 2>&1 &
host_pid=$!
for _ in $(seq 100); do
    grep -q 'serving EC2 instance metadata' "$scratch/host.log" && break
    kill -0 "$host_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q 'serving EC2 instance metadata' "$scratch/host.log" \
    || fatal "host imds-tun" "did not start: $(cat "$scratch/host.log")"
host_access_key=$(curl -s --max-time 5 -H "X-Imds-Tun-Token: $(cat "$repo/.imds-tun-token")" \
    "http://$host_address:8080/latest/meta-data/iam/security-credentials/host-role" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["AccessKeyId"])')

provision_out=$(IMDS_TUN_UPSTREAM="http://$host_address:8080" vagrant_cmd provision 2>&1)
indent <<<"$provision_out"
expect_contains "host-credentials provision: the token copied into the guest" \
    "/usr/local/etc/imds-tun/upstream-token" "$provision_out"
expect_contains "host-credentials provision: restarted with the new flags" "service restarted (systemd)" \
    "$provision_out"
check_imds "host-credentials" "$host_instance_id" host-role
expect "host-credentials: the guest's credentials are the host's" "$host_access_key" "$seen_access_key"
facts=$(service_facts)
expect "host-credentials: LoadCredential in the unit" \
    "LoadCredential=upstream-token:/usr/local/etc/imds-tun/upstream-token" "$(value LoadCredentialLine <<<"$facts")"
expect "host-credentials: the credential is the token, readable only by the dynamic user" \
    "400 $(value UID <<<"$facts") same" "$(value credential <<<"$facts")"
expect_contains "host-credentials: the service reads the token systemd handed over" \
    "--upstream-token-file /run/credentials/imds-tun.service/upstream-token" "$(value cmdline <<<"$facts")"
expect "host-credentials: the guest's token copy is root's, mode 600" "600 root" \
    "$(in_guest 'sudo stat -c "%a %U" /usr/local/etc/imds-tun/upstream-token')"
expect "host-credentials: the host's listener refuses the guest without the token" 401 \
    "$(in_guest "curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://$host_address:8080/latest/meta-data/instance-id")"
kill "$host_pid" 2>/dev/null
wait "$host_pid" 2>/dev/null
host_pid=""
expect "host-credentials: host down -> 502 within seconds" 502 \
    "$(in_guest "curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://169.254.169.254/latest/meta-data/instance-id")"
step_done

# --- 12. systemctl stop leaves nothing behind -----------------------------------------------------
step "systemctl stop imds-tun"
in_guest 'sudo systemctl stop imds-tun && sleep 3' >/dev/null
facts=$(service_facts)
expect "after stop: inactive (and not restarted)" inactive "$(value ActiveState <<<"$facts")"
expect "after stop: no TUN" 0 "$(value tun_links <<<"$facts")"
expect "after stop: no route to 169.254.169.254" 0 "$(value metadata_routes <<<"$facts")"
if in_guest 'curl -s --max-time 3 http://169.254.169.254/latest/meta-data/instance-id' >/dev/null; then
    fail "after stop: nothing answers on 169.254.169.254" "curl got an answer"
else
    pass "after stop: nothing answers on 169.254.169.254"
fi
step_done

# --- 13. the .deb -----------------------------------------------------------------------------------
# The .deb on a stock guest: dpkg -i, systemctl enable --now, apt-get purge, and nothing left.
check_deb() {
    local snapshot install_out deb_facts purge_out left file
    if [ -z "$deb" ] || [ ! -f "$deb" ]; then
        fail ".deb" "no target/debian/imds-tun_*_amd64.deb after scripts/package.sh"
        return
    fi
    echo "    $deb"
    # Back to a stock guest: the provisioner's install goes (it has no uninstall of its own),
    # then the file list every later step is compared with.
    in_guest_script sudo >/dev/null <<'GUEST'
systemctl disable --now imds-tun
rm -rf /etc/systemd/system/imds-tun.service /etc/default/imds-tun /usr/local/bin/imds-tun \
    /usr/local/etc/imds-tun /usr/local/run/imds-tun
systemctl daemon-reload
systemctl reset-failed
GUEST
    snapshot='find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/dpkg \
        -o -path /var/lib/apt -o -path /home/vagrant -o -path /vagrant -o -path /var/lib/systemd/timers \
        -o -path /var/lib/systemd/random-seed \) -prune -o -print | sort'
    in_guest "sudo sh -c '$snapshot' >/tmp/before.txt" >/dev/null
    local listed
    listed=$(in_guest 'wc -l </tmp/before.txt')
    if [ "${listed:-0}" -lt 10000 ]; then
        fail "deb: the file list of the stock guest" "only '${listed}' entries"
        return
    fi
    if ! vagrant_cmd upload "$deb" /tmp/imds-tun.deb >"$scratch/upload.log" 2>&1; then
        fail "deb: vagrant upload" "$(cat "$scratch/upload.log")"
        return
    fi
    if ! install_out=$(in_guest 'sudo dpkg -i /tmp/imds-tun.deb && sudo systemctl enable --now imds-tun'); then
        indent <<<"$install_out"
        fail "deb: dpkg -i and systemctl enable --now" "failed (the guest's stderr is shown below)"
        return
    fi
    indent <<<"$install_out"
    deb_facts=$(in_guest_script sudo <<'GUEST'
for _ in $(seq 50); do
    curl -s --max-time 2 -o /dev/null http://169.254.169.254/latest/meta-data/instance-id && break
    sleep 0.2
done
echo "instance_id=$(curl -s --max-time 5 http://169.254.169.254/latest/meta-data/instance-id)"
echo "active=$(systemctl is-active imds-tun)"
echo "enabled=$(systemctl is-enabled imds-tun)"
echo "exe=$(readlink "/proc/$(systemctl show -p MainPID --value imds-tun)/exe")"
echo "unit=$(systemctl show -p FragmentPath --value imds-tun)"
echo "files=$(dpkg -L imds-tun | tr '\n' ' ')"
echo "binary_sha=$(sha256sum /usr/bin/imds-tun | cut -d' ' -f1)"
GUEST
)
    # The same file list while installed: it must see the package, or its silence after the
    # purge would prove nothing.
    local added
    added=$(in_guest "sudo sh -c '$snapshot' | diff /tmp/before.txt - | sed -n 's/^> //p' | tr '\n' ' '")
    expect "deb: serves after systemctl enable --now" "$guest_instance_id" "$(value instance_id <<<"$deb_facts")"
    expect "deb: active" active "$(value active <<<"$deb_facts")"
    expect "deb: enabled" enabled "$(value enabled <<<"$deb_facts")"
    expect "deb: runs /usr/bin/imds-tun" /usr/bin/imds-tun "$(value exe <<<"$deb_facts")"
    expect "deb: /usr/bin/imds-tun is the binary the provisioner installed ($binary)" "$binary_sha" \
        "$(value binary_sha <<<"$deb_facts")"
    expect_match "deb: the packaged unit" '^/(usr/)?lib/systemd/system/imds-tun\.service$' "$(value unit <<<"$deb_facts")"
    for file in /etc/default/imds-tun /usr/share/man/man1/imds-tun.1.gz; do
        expect_contains "deb: ships $file" " $file " " $(value files <<<"$deb_facts")"
    done
    expect_match "deb: ships bash completion" ' /usr/share/bash-completion/completions/imds-tun ' \
        " $(value files <<<"$deb_facts")"
    for file in /usr/bin/imds-tun /etc/default/imds-tun /etc/systemd/system/multi-user.target.wants/imds-tun.service; do
        expect_contains "deb: the file list sees $file while installed" " $file " " $added"
    done
    if ! purge_out=$(in_guest 'sudo apt-get purge -y -q imds-tun'); then
        indent <<<"$purge_out"
        fail "deb: apt-get purge" "failed (the guest's stderr is shown below)"
        return
    fi
    indent <<<"$purge_out"
    left=$(in_guest_script sudo <<GUEST
sh -c '$snapshot' >/tmp/after.txt
echo "diff=\$(diff /tmp/before.txt /tmp/after.txt | grep '^[<>]' | tr '\n' ' ')"
echo "package=\$(dpkg-query -W -f '\${db:Status-Abbrev}' imds-tun 2>/dev/null)"
echo "unit=\$(systemctl list-unit-files --no-legend imds-tun.service | wc -l)"
echo "tun_links=\$(ip -o link show type tun | wc -l)"
echo "metadata_routes=\$(ip -o route show table all | grep -cE '^169\.254\.169\.254(/32)? ')"
GUEST
)
    expect "deb purge: no file added or removed (outside logs, caches and dpkg's database)" "" \
        "$(value diff <<<"$left")"
    expect "deb purge: the package is gone" "" "$(value package <<<"$left")"
    expect "deb purge: no unit" 0 "$(value unit <<<"$left")"
    expect "deb purge: no TUN" 0 "$(value tun_links <<<"$left")"
    expect "deb purge: no route to 169.254.169.254" 0 "$(value metadata_routes <<<"$left")"
}

step ".deb: dpkg -i, systemctl enable --now, apt-get purge"
check_deb
step_done
# cleanup (the EXIT trap) destroys the guest and prints the summary.
