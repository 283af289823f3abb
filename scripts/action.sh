#!/usr/bin/env bash
# The work of action.yml (the GitHub Actions step): start imds-tun in the background and wait
# until 169.254.169.254 answers, or (IMDS_TUN_STOP=true) stop it and print its callers report.
#
# Environment (set by action.yml from its inputs): IMDS_TUN_BINARY, IMDS_TUN_ROLE_ARN,
# IMDS_TUN_MOCK_CREDENTIALS (true/false), IMDS_TUN_IMDSV2 (optional/required),
# IMDS_TUN_EXTRA_ARGS (split on white space), IMDS_TUN_STOP (true/false),
# IMDS_TUN_TIMEOUT_SECONDS, IMDS_TUN_STATE_DIR (pid and log file; the runner's temp directory),
# GITHUB_OUTPUT (pid=, log=). Nothing is written to GITHUB_ENV: no credential, token or key
# leaves imds-tun's process except through 169.254.169.254.
#
# Privileges: imds-tun needs CAP_NET_ADMIN. As root (containers, these test machines) it runs
# as is; otherwise through `sudo -n` (hosted runners have passwordless sudo). The stop runs the
# same way, because the process belongs to root.
set -euo pipefail

binary=${IMDS_TUN_BINARY:-imds-tun}
state=${IMDS_TUN_STATE_DIR:?IMDS_TUN_STATE_DIR is not set (action.yml sets it to runner.temp/imds-tun)}
pid_file="$state/imds-tun.pid"
log="$state/imds-tun.log"
timeout=${IMDS_TUN_TIMEOUT_SECONDS:-10}

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo -n)
fi

output() {
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
        printf '%s=%s\n' "$1" "$2" >>"$GITHUB_OUTPUT"
    fi
}

if [ "${IMDS_TUN_STOP:-false}" = true ]; then
    [ -f "$pid_file" ] || { echo "imds-tun: no $pid_file: this job started no imds-tun with this action" >&2; exit 1; }
    pid=$(cat "$pid_file")
    echo "::group::imds-tun ctl callers (who asked, tokenless callers first)"
    "${as_root[@]}" "$binary" ctl callers || echo "(imds-tun no longer answers ctl)"
    echo "::endgroup::"
    "${as_root[@]}" kill -TERM "$pid" 2>/dev/null || true
    # A graceful exit finishes requests in flight (5 s grace by default).
    for _ in $(seq 100); do
        "${as_root[@]}" kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if "${as_root[@]}" kill -0 "$pid" 2>/dev/null; then
        echo "imds-tun (pid $pid) did not exit within 10 s of SIGTERM; killing it" >&2
        "${as_root[@]}" kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    echo "::group::imds-tun log (the exit-time callers report is at its end)"
    cat "$log" 2>/dev/null || true
    echo "::endgroup::"
    output log "$log"
    exit 0
fi

args=(--imdsv2 "${IMDS_TUN_IMDSV2:-optional}")
if [ -n "${IMDS_TUN_ROLE_ARN:-}" ]; then
    args+=(--role-arn "$IMDS_TUN_ROLE_ARN")
fi
if [ "${IMDS_TUN_MOCK_CREDENTIALS:-false}" = true ]; then
    args+=(--mock-credentials)
fi
if [ -n "${IMDS_TUN_EXTRA_ARGS:-}" ]; then
    read -r -a extra <<<"$IMDS_TUN_EXTRA_ARGS"
    args+=("${extra[@]}")
fi

mkdir -p "$state"
if [ -f "$pid_file" ] && "${as_root[@]}" kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "imds-tun: already running (pid $(cat "$pid_file")); stop it first (stop: true)" >&2
    exit 1
fi
echo "imds-tun ${args[*]}"
"${as_root[@]}" "$binary" --check "${args[@]}"
# setsid: out of the step's process group, so the runner's end of the step does not end it.
"${as_root[@]}" setsid "$binary" "${args[@]}" </dev/null >"$log" 2>&1 &
pid=$!
echo "$pid" >"$pid_file"
deadline=$((SECONDS + timeout))
# Any HTTP answer counts (without -f): under `imdsv2: required` a tokenless GET gets 401.
until curl -s -m 1 -o /dev/null http://169.254.169.254/; do
    if ! "${as_root[@]}" kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "imds-tun did not answer on 169.254.169.254 within ${timeout}s; its log:" >&2
        cat "$log" >&2
        "${as_root[@]}" kill -TERM "$pid" 2>/dev/null || true
        rm -f "$pid_file"
        exit 1
    fi
    sleep 0.1
done
echo "imds-tun answers on 169.254.169.254 (pid $pid, log $log)"
output pid "$pid"
output log "$log"
