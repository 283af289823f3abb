#!/usr/bin/env bash
# Measures imds-tun through the TUN path against the kernel TCP path of the same process.
#
# Usage: sudo bash scripts/bench.sh [--quick]
#
# Builds in release mode, makes a throwaway network namespace, starts one imds-tun with both the
# TUN and `--listen 127.0.0.1:8080`, and drives both with wrk in the same run, so the ratios are
# comparable even on a noisy shared machine. Prints one Markdown table: requests/s and p50/p99
# latency with keep-alive and with a new connection per request, at 1, 50 and 500 clients, the
# TUN/kernel ratio of each; median exec-to-first-served-request over 20 starts; RSS idle, after
# the load, and while 1000 connections are held open. Nothing is left behind: the namespace (and
# with it the TUN) is deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5
starts=20
if [[ "${1:-}" == "--quick" ]]; then
    duration=2
    starts=5
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "bench.sh: needs root (network namespace and TUN): run it with sudo" >&2
    exit 1
fi
if ! command -v wrk >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
if ! command -v python3 >/dev/null; then
    echo "bench.sh: needs python3 to hold 1000 connections open" >&2
    exit 1
fi

cargo build --release --quiet
binary=$PWD/target/release/imds-tun
ns=imdstun-bench-$$
pid=
cleanup() {
    if [[ -n "$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
inns() { ip netns exec "$ns" "$@"; }

tun_url=http://169.254.169.254/latest/meta-data/instance-id
kernel_url=http://127.0.0.1:8080/latest/meta-data/instance-id

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Waits until the service answers on the TUN path.
wait_served() {
    # shellcheck disable=SC2016 # the script runs in the namespace's own bash; nothing to expand here
    inns bash -c '
        for _ in $(seq 5000); do
            if { exec 3<>/dev/tcp/169.254.169.254/80; } 2>/dev/null; then
                printf "GET /latest/meta-data/instance-id HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n" >&3
                if head -c 12 <&3 | grep -q "200"; then exit 0; fi
            fi
            sleep 0.0005
        done
        exit 1'
}

# --- start-up time: exec to first served request, median of $starts --------------------------
startup_ms=()
for _ in $(seq "$starts"); do
    begin=$(date +%s%N)
    # Not through inns: a backgrounded function is a subshell, and $! must be imds-tun itself.
    ip netns exec "$ns" "$binary" >/dev/null 2>&1 &
    pid=$!
    wait_served
    end=$(date +%s%N)
    startup_ms+=("$(( (end - begin) / 1000 ))")
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
done
startup_median_ms=$(printf '%s\n' "${startup_ms[@]}" | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/1000}')

# --- one long-running instance for the load --------------------------------------------------
ip netns exec "$ns" "$binary" --listen 127.0.0.1:8080 --max-connections 4096 >/dev/null 2>&1 &
pid=$!
wait_served
sleep 0.5
rss_idle=$(rss_kib "$pid")

# wrk prints latency percentiles in us/ms/s; normalise to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
        printf "%.2f", n }'
}

run_wrk() { # clients url [extra wrk args...]
    local clients=$1 url=$2
    shift 2
    local threads=2
    (( clients < 2 )) && threads=1
    inns wrk -t"$threads" -c"$clients" -d"${duration}s" --latency "$@" "$url" 2>&1
}

parse() { # wrk output -> "rps p50 p99 errors"
    local out=$1 rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Socket errors|Non-2xx/ {e = e $0 "; "} END {print (e == "" ? "0" : e)}' <<<"$out")
    echo "$rps|$p50|$p99|$errors"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

rows=()
for mode in keep-alive new-connection; do
    extra=()
    [[ "$mode" == new-connection ]] && extra=(-H "Connection: close")
    for clients in 1 50 500; do
        IFS='|' read -r t_rps t_p50 t_p99 t_err < <(parse "$(run_wrk "$clients" "$tun_url" "${extra[@]}")")
        IFS='|' read -r k_rps k_p50 k_p99 k_err < <(parse "$(run_wrk "$clients" "$kernel_url" "${extra[@]}")")
        rows+=("| $mode | $clients | $t_rps | $t_p50 | $t_p99 | $k_rps | $k_p50 | $k_p99 | **$(ratio "$t_rps" "$k_rps")** | $t_err / $k_err |")
    done
done
rss_after=$(rss_kib "$pid")

# --- RSS while 1000 connections are open through the TUN --------------------------------------
held=$(inns python3 - "$pid" <<'PY'
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
socks = []
for _ in range(1000):
    s = socket.create_connection(("169.254.169.254", 80), timeout=5)
    socks.append(s)
time.sleep(1.0)
with open(f"/proc/{sys.argv[1]}/status") as status:
    rss = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
print(len(socks), rss)
PY
)
read -r held_count rss_held <<<"$held"

kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

cat <<EOF
### imds-tun benchmark ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r), wrk ${duration}s per cell)

| connections | clients | TUN req/s | TUN p50 ms | TUN p99 ms | kernel req/s | kernel p50 ms | kernel p99 ms | TUN/kernel | errors (TUN / kernel) |
|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

| measure | value |
|---|---|
| start-up, exec to first served request (median of $starts) | ${startup_median_ms} ms |
| RSS idle | $(kib_to_mib "$rss_idle") MiB |
| RSS after the load | $(kib_to_mib "$rss_after") MiB |
| RSS with ${held_count} connections open through the TUN | $(kib_to_mib "$rss_held") MiB |
EOF
