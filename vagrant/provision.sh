#!/usr/bin/env bash
# Vagrant shell provisioner (run: "always"): installs imds-tun in the guest and keeps it serving
# 169.254.169.254. Idempotent: a run that finds everything in place changes nothing, restarts
# nothing and says "unchanged".
#
#   provision.sh          install or update, then make sure the service runs
#   provision.sh stop     stop the service started without systemd (the supervised process)
#
# Environment (all optional):
#   IMDS_TUN_BINARY      binary to install [default: the first that exists of /vagrant/imds-tun,
#                        /vagrant/target/x86_64-unknown-linux-musl/release/imds-tun (static, from
#                        scripts/package.sh: runs on any Linux guest) and /vagrant/target/release/imds-tun
#                        (needs the guest's glibc to be as new as the host's); else built with
#                        cargo from IMDS_TUN_SOURCE, slow, and only where the guest has a toolchain]
#   IMDS_TUN_SOURCE      source tree to build from when no binary is found [default: /vagrant]
#   IMDS_TUN_UPSTREAM    host-credentials shape: forward to this URL, e.g. http://10.0.2.2:8080
#   IMDS_TUN_TOKEN_FILE  shared secret for the upstream (copied into the guest with mode 0600)
#   IMDS_TUN_ARGS        further flags for imds-tun
#   IMDS_TUN_PREFIX      install prefix [default: /usr/local]; state lives under $PREFIX/etc/imds-tun
#                        and $PREFIX/run/imds-tun
#   IMDS_TUN_SYSTEMD     1 = use systemd, 0 = never (a supervised background process instead)
#                        [default: 1 when systemd runs and the prefix is /usr/local]
set -euo pipefail

prefix=${IMDS_TUN_PREFIX:-/usr/local}
source_dir=${IMDS_TUN_SOURCE:-/vagrant}
bin="$prefix/bin/imds-tun"
etc="$prefix/etc/imds-tun"
run="$prefix/run/imds-tun"
log="$run/imds-tun.log"
supervisor="$prefix/libexec/imds-tun-supervise"

say() { printf 'imds-tun provision: %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }

if [ -n "${IMDS_TUN_SYSTEMD:-}" ]; then
    use_systemd=$IMDS_TUN_SYSTEMD
elif [ -d /run/systemd/system ] && [ "$prefix" = /usr/local ]; then
    use_systemd=1
else
    use_systemd=0
fi

# The pid in FILE if that process is alive.
live_pid() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

stop_supervised() {
    local pid
    if pid=$(live_pid "$run/supervisor.pid"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if pid=$(live_pid "$run/imds-tun.pid"); then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$run/supervisor.pid" "$run/imds-tun.pid"
}

if [ "${1:-}" = stop ]; then
    stop_supervised
    say "stopped"
    exit 0
fi

# --- what should be installed -------------------------------------------------------------------
binary=${IMDS_TUN_BINARY:-}
if [ -z "$binary" ]; then
    for candidate in /vagrant/imds-tun /vagrant/target/x86_64-unknown-linux-musl/release/imds-tun \
        /vagrant/target/release/imds-tun; do
        if [ -x "$candidate" ]; then binary=$candidate; break; fi
    done
fi
if [ -z "$binary" ]; then
    if command -v cargo >/dev/null && [ -f "$source_dir/Cargo.toml" ]; then
        say "no binary found; building from $source_dir (cargo build --release --locked)"
        (cd "$source_dir" && cargo build --release --locked)
        binary="${CARGO_TARGET_DIR:-$source_dir/target}/release/imds-tun"
    else
        die "no imds-tun binary: put one at /vagrant/imds-tun, set IMDS_TUN_BINARY, or install a Rust toolchain so it can be built from $source_dir"
    fi
fi
[ -x "$binary" ] || die "$binary is not an executable file"
say "binary: $binary"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Flags, one per line (no word splitting surprises); the token path depends on the service kind.
token_installed="$etc/upstream-token"
if [ "$use_systemd" = 1 ]; then
    token_for_service=/run/credentials/imds-tun.service/upstream-token
else
    token_for_service=$token_installed
fi
{
    if [ -n "${IMDS_TUN_UPSTREAM:-}" ]; then
        printf -- '--upstream\n%s\n' "$IMDS_TUN_UPSTREAM"
        if [ -n "${IMDS_TUN_TOKEN_FILE:-}" ]; then
            printf -- '--upstream-token-file\n%s\n' "$token_for_service"
        fi
    fi
    if [ -n "${IMDS_TUN_ARGS:-}" ]; then
        # Deliberately split on whitespace: IMDS_TUN_ARGS is a flag list.
        # shellcheck disable=SC2086
        printf '%s\n' $IMDS_TUN_ARGS
    fi
} >"$scratch/args"

changed=()
# put SOURCE TARGET MODE: installs only when the content differs (compared byte for byte).
put() {
    mkdir -p "$(dirname "$2")"
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        return 0
    fi
    install -m "$3" "$1" "$2"
    changed+=("$2")
}

put "$binary" "$bin" 0755
put "$scratch/args" "$etc/args" 0644
if [ -n "${IMDS_TUN_TOKEN_FILE:-}" ]; then
    [ -f "$IMDS_TUN_TOKEN_FILE" ] || die "IMDS_TUN_TOKEN_FILE=$IMDS_TUN_TOKEN_FILE does not exist"
    # Synced folders show every file as world-readable; the guest's copy is root's only.
    put "$IMDS_TUN_TOKEN_FILE" "$token_installed" 0600
fi

if [ "$use_systemd" = 1 ]; then
    # --- systemd: the hardened unit of packaging/imds-tun.service -----------------------------
    {
        # BEGIN UNIT (kept equal to packaging/imds-tun.service by tests/deploy/deploy_vagrant.rs)
        cat <<UNIT
[Unit]
Description=EC2 instance metadata service on 169.254.169.254 (imds-tun)
After=network.target
Wants=network.target

[Service]
Type=simple
EnvironmentFile=-/etc/default/imds-tun
ExecStart=$prefix/bin/imds-tun \$IMDS_TUN_ARGS
Restart=on-failure
RestartSec=2
LimitNOFILE=65536
DynamicUser=yes
CapabilityBoundingSet=CAP_NET_ADMIN
AmbientCapabilities=CAP_NET_ADMIN
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
NoNewPrivileges=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectKernelTunables=yes
ReadWritePaths=-/proc/sys/net/ipv6/conf
ProtectHostname=yes
ProtectControlGroups=yes
ProtectClock=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
UMask=0077

[Install]
WantedBy=multi-user.target
UNIT
        # END UNIT
        if [ -n "${IMDS_TUN_TOKEN_FILE:-}" ]; then
            printf '\n[Service]\nLoadCredential=upstream-token:%s\n' "$token_installed"
        fi
    } >"$scratch/imds-tun.service"
    printf 'IMDS_TUN_ARGS="%s"\n' "$(tr '\n' ' ' <"$scratch/args" | sed 's/ $//')" >"$scratch/env"
    put "$scratch/imds-tun.service" /etc/systemd/system/imds-tun.service 0644
    # Root's only, as the .deb and install.sh make it: the service's secrets go there.
    put "$scratch/env" /etc/default/imds-tun 0600
    if [ "${#changed[@]}" -gt 0 ]; then
        systemctl daemon-reload
        systemctl enable imds-tun.service >/dev/null 2>&1
        systemctl restart imds-tun.service
        say "changed: ${changed[*]}; service restarted (systemd)"
    elif ! systemctl is-active --quiet imds-tun.service; then
        systemctl enable imds-tun.service >/dev/null 2>&1
        systemctl start imds-tun.service
        say "unchanged; service was not running, started it (systemd)"
    else
        say "unchanged; service running (systemd, pid $(systemctl show -p MainPID --value imds-tun.service))"
    fi
    exit 0
fi

# --- no systemd: a supervised background process ------------------------------------------------
cat >"$scratch/supervise" <<'SUPERVISE'
#!/usr/bin/env bash
# Keeps imds-tun running: restarts it 2 s after any exit; SIGTERM stops both.
# Usage: imds-tun-supervise BINARY ARGS_FILE RUN_DIR
set -u
binary=$1 args_file=$2 run=$3
mapfile -t args <"$args_file"
child=
trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; rm -f "$run/imds-tun.pid" "$run/supervisor.pid"; exit 0' TERM INT
echo $$ >"$run/supervisor.pid"
while :; do
    "$binary" "${args[@]}" &
    child=$!
    echo "$child" >"$run/imds-tun.pid"
    wait "$child"
    echo "imds-tun-supervise: imds-tun exited with status $?; restarting in 2 s" >&2
    sleep 2
done
SUPERVISE
put "$scratch/supervise" "$supervisor" 0755
mkdir -p "$run"

if [ "${#changed[@]}" -eq 0 ] && pid=$(live_pid "$run/imds-tun.pid") && live_pid "$run/supervisor.pid" >/dev/null; then
    say "unchanged; service running (pid $pid, supervised without systemd, log $log)"
    exit 0
fi

if [ "${#changed[@]}" -gt 0 ]; then
    say "changed: ${changed[*]}"
fi
stop_supervised
: >"$log"
setsid "$supervisor" "$bin" "$etc/args" "$run" </dev/null >>"$log" 2>&1 &
for _ in $(seq 100); do
    if grep -q 'serving EC2 instance metadata' "$log"; then
        say "started (pid $(cat "$run/imds-tun.pid")); no systemd here, so it runs as a supervised background process (pid file $run/imds-tun.pid, log $log; stop it with: $0 stop)"
        exit 0
    fi
    sleep 0.1
done
die "imds-tun did not start within 10 s; its log ($log) says: $(tail -n 3 "$log")"
