#!/usr/bin/env bash
# The macOS acceptance test: builds imds-tun, runs it through a real utun and checks what
# Linux's namespace tests check there. Run on a Mac from the repository:
#   scripts/macos-smoke.sh            (asks for sudo if not root)
# Prints one line per check, `PASS name` or `FAIL name: why`, and exits 1 if any check failed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

METADATA=169.254.169.254
LOG=$(mktemp -t imds-tun-smoke)
failures=0
pid=

pass() { printf 'PASS %s\n' "$1"; }
fail() { printf 'FAIL %s: %s\n' "$1" "$2"; failures=$((failures + 1)); }

if [ "$(uname -s)" != Darwin ]; then
    echo "FAIL platform: this is the macOS smoke test; on Linux run scripts/test.sh"
    exit 1
fi

# Root for the utun. A function, not an array: macOS's bash 3.2 calls an empty array unbound.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# The imds-tun process itself (not sudo): the newest one, which is the one this script started.
server_pid() {
    pgrep -n -x imds-tun
}

alias_added=

cleanup() {
    local real
    if [ -n "$alias_added" ]; then
        as_root ifconfig lo0 -alias "$METADATA" || true
    fi
    real=$(server_pid)
    if [ -n "$real" ]; then
        as_root kill -KILL "$real" 2>/dev/null || true
    fi
    rm -f "$LOG"
}
trap cleanup EXIT

# The utun (if any) whose point-to-point peer is the metadata address.
peer_utun() {
    ifconfig | awk -v peer="$METADATA" '
        /^[a-z]/ { name = $1; sub(":$", "", name) }
        $1 == "inet" && $3 == "-->" && $4 == peer { print name }'
}

# The interface `route -n get` names for the metadata address (empty when there is no route).
route_interface() {
    route -n get "$METADATA" 2>/dev/null | awk '$1 == "interface:" { print $2 }'
}

start() {
    # $! is sudo's (or a subshell's) pid, so the signals go to server_pid instead.
    as_root ./target/release/imds-tun >"$LOG" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do
        if [ -n "$(peer_utun)" ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}


no_trace_left() {
    local name=$1 utun route
    for _ in $(seq 1 25); do
        utun=$(peer_utun)
        route=$(route_interface)
        if [ -z "$utun" ] && [[ "$route" != utun* ]]; then
            pass "$name"
            return
        fi
        sleep 0.2
    done
    fail "$name" "utun with peer $METADATA: '${utun}', route via: '${route}'"
}

if cargo build --release --quiet; then
    pass build
else
    fail build "cargo build --release failed"
    exit 1
fi

# --check: as root it can run; as a plain user it says root is missing.
if report=$(as_root ./target/release/imds-tun --check) && grep -q '^ok    utun control' <<<"$report"; then
    pass check-as-root
else
    fail check-as-root "imds-tun --check as root: ${report:-no output}"
fi
if [ "$(id -u)" -ne 0 ]; then
    if ! report=$(./target/release/imds-tun --check) && grep -q '^fail  privileges' <<<"$report"; then
        pass check-as-user
    else
        fail check-as-user "imds-tun --check as $(id -un) did not fail on privileges: $report"
    fi
fi

# Files named under sudo are opened with the invoking user's rights: nobody cannot read
# /etc/master.passwd (root-only), but can read /etc/hosts.
as_nobody_under_sudo() {
    as_root env SUDO_USER=nobody SUDO_UID="$(id -u nobody)" SUDO_GID="$(id -g nobody)" \
        ./target/release/imds-tun --check "$@"
}
if report=$(as_nobody_under_sudo --user-data /etc/master.passwd) \
    || ! grep -q 'permission denied for user nobody' <<<"$report"; then
    fail user-files "--user-data /etc/master.passwd under sudo as nobody: $report"
elif ! report=$(as_nobody_under_sudo --user-data /etc/hosts) \
    || ! grep -q '^ok    settings' <<<"$report"; then
    fail user-files "--user-data /etc/hosts under sudo as nobody: $report"
else
    pass user-files
fi

# An lo0 alias on the address is refused before anything is created.
if as_root ifconfig lo0 alias "$METADATA"; then
    alias_added=1
    if ! as_root ./target/release/imds-tun >"$LOG" 2>&1 && grep -q 'already claimed by' "$LOG" \
        && [ -z "$(peer_utun)" ]; then
        pass lo0-alias-refused
    else
        fail lo0-alias-refused "with an lo0 alias: $(tail -n 3 "$LOG")"
    fi
    as_root ifconfig lo0 -alias "$METADATA" && alias_added=
else
    fail lo0-alias-refused "could not add the lo0 alias to test with"
fi

if start; then
    pass "start (utun $(peer_utun))"
else
    fail start "no utun with peer $METADATA after 10 s; log: $(tail -n 5 "$LOG")"
    exit 1
fi

utun=$(peer_utun)
served_as=$(ps -o user= -p "$(server_pid)" | tr -d ' ')
if [ "$served_as" = "$(id -un)" ]; then
    pass "serves as $served_as after set-up"
else
    fail privilege-drop "the server runs as '$served_as', not $(id -un)"
fi
if [ "$(route_interface)" = "$utun" ]; then
    pass "route via $utun"
else
    fail route "route -n get $METADATA names '$(route_interface)', not $utun"
fi

if id=$(curl -sf --max-time 5 "http://$METADATA/latest/meta-data/instance-id") && [[ "$id" == i-* ]]; then
    pass instance-id
else
    fail instance-id "curl through the utun answered '${id:-nothing}'"
fi

token=$(curl -sf --max-time 5 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
    "http://$METADATA/latest/api/token")
if [ -n "$token" ] \
    && curl -sf --max-time 5 -H "X-aws-ec2-metadata-token: $token" \
        "http://$METADATA/latest/meta-data/instance-id" >/dev/null; then
    pass imdsv2-token
else
    fail imdsv2-token "PUT /latest/api/token or the GET with the token failed"
fi

if curl -s --max-time 5 -o /dev/null -w '%{http_code}' -H "X-aws-ec2-metadata-token: not-a-token" \
    "http://$METADATA/latest/meta-data/instance-id" | grep -q '^401$'; then
    pass imdsv2-bad-token-refused
else
    fail imdsv2-bad-token-refused "a made-up token was not answered 401"
fi

real=$(server_pid)
if [ -n "$real" ]; then
    as_root kill -TERM "$real"
fi
wait "$pid" 2>/dev/null
pid=
no_trace_left "sigterm leaves no utun and no route"

if start; then
    real=$(server_pid)
    if [ -n "$real" ]; then
        as_root kill -KILL "$real"
    fi
    wait "$pid" 2>/dev/null
    pid=
    no_trace_left "sigkill leaves no utun and no route"
else
    fail "sigkill leaves no utun and no route" "the second start did not come up"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
