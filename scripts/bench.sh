#!/usr/bin/env bash
# Measures imds-tun through the TUN path against the kernel TCP path of the same process.
#
# Usage: sudo bash scripts/bench.sh [--quick] [--binary PATH] [--profile-dir DIR] [--no-instructions]
#
#   --quick            2 s per wrk cell and 5 starts instead of 5 s and 20
#   --binary PATH      measure this imds-tun binary instead of building target/release/imds-tun
#   --profile-dir DIR  keep the callgrind dumps in DIR (default: a temporary directory, deleted)
#   --no-instructions  skip the instruction counts under valgrind
#
# Builds in release mode (unless --binary), makes a throwaway network namespace, starts one
# imds-tun with both the TUN and `--listen 127.0.0.1:8080` and `--max-connections 4096`, and drives
# both paths with wrk back to back in the same run, so the ratios are comparable even on a noisy
# shared machine. wrk runs with scripts/bench-percentiles.lua, which prints requests/s, p50, p99,
# p99.9 and the error counts as one line, and with `--timeout 10s`, so a slow cell shows as latency.
#
# Instructions per request: a second imds-tun (same flags, after the first has stopped) runs under
# valgrind's callgrind; for 50, 500 and 1000 clients, each path gets 3 s of wrk between
# `callgrind_control --zero` and `--dump`, and the dump's total Ir is divided by the requests wrk
# completed. Valgrind serialises the threads, so these are counts, not timings. Only imds-tun's
# user-space instructions are counted: the TUN path's include its TCP stack (smoltcp), while the
# kernel path's TCP work happens in the kernel and is not seen, nor are the system calls of either
# path; compare the two columns as "what the TUN path does in user space", not as total cost.
# `callgrind_annotate DIR/callgrind.out.tun-new-connection-500` shows where they go (files are
# named callgrind.out.PATH-MODE-CLIENTS).
#
# Prints one Markdown table under a heading line. Its first part has one row per connections mode
# (keep-alive, or `Connection: close` for a new connection per request) and number of clients:
# requests/s, p50/p99/p99.9 latency of each path, the TUN/kernel ratios of requests/s and of p99,
# the instructions per request of each path (– where not measured), the TCP segments the kernel
# retransmitted during each path's cell (from /proc/net/snmp in the namespace: the clients' on the
# TUN path, both ends' on the kernel path), the packets dropped at the TUN's kernel queue, and
# wrk's errors. After a row with **process** / **value** in its first two columns comes the second
# part: one measure per row, named in the first column with its value in the second: median
# exec-to-first-served-request over the starts, and the same probe against an instance that
# already serves (what the start-up figure includes that is not imds-tun's); RSS idle, after the load, and while 1000
# connections are held open through the TUN (in a fresh instance); and where the callgrind dumps
# were kept. Nothing is left behind: imds-tun and valgrind are
# stopped, the namespace (and with it the TUN) is deleted and the temporary directory removed on
# exit.
set -euo pipefail

usage="usage: bench.sh [--quick] [--binary PATH] [--profile-dir DIR] [--no-instructions]"
usage_error() {
    echo "bench.sh: $1; $usage" >&2
    exit 2
}

duration=5
starts=20
binary=
profile_dir=
instructions=true
while (( $# > 0 )); do
    case $1 in
        --quick) duration=2 starts=5 ;;
        --no-instructions) instructions=false ;;
        --binary | --profile-dir)
            (( $# >= 2 )) || usage_error "$1 needs a value"
            if [[ $1 == --binary ]]; then binary=$2; else profile_dir=$2; fi
            shift ;;
        --binary=*) binary=${1#*=} ;;
        --profile-dir=*) profile_dir=${1#*=} ;;
        *) usage_error "unknown option '$1'" ;;
    esac
    shift
done
if [[ -n "$profile_dir" && $instructions == false ]]; then
    usage_error "--profile-dir keeps callgrind dumps, which --no-instructions skips"
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "bench.sh: needs root (network namespace and TUN): run it with sudo" >&2
    exit 1
fi
# Absolute paths before the cd below, so relative ones mean what they meant to the caller.
if [[ -n "$binary" ]]; then
    if [[ ! -f "$binary" || ! -x "$binary" ]]; then
        echo "bench.sh: --binary $binary is not an executable file" >&2
        exit 1
    fi
    binary=$(realpath -- "$binary")
fi
if [[ -n "$profile_dir" ]]; then
    mkdir -p -- "$profile_dir"
    profile_dir=$(realpath -- "$profile_dir")
fi
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
if [[ $instructions == true ]] && ! command -v callgrind_control >/dev/null; then
    missing+=(valgrind)
fi
if (( ${#missing[@]} > 0 )); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v python3 >/dev/null; then
    echo "bench.sh: needs python3 to hold 1000 connections open" >&2
    exit 1
fi
# 1000 clients take 1000 descriptors in wrk and as many in imds-tun's kernel listener.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < 4096 )); then
    echo "bench.sh: needs at least 4096 open files for 1000 clients; the hard limit is $(ulimit -Hn)" >&2
    exit 1
fi

if [[ -z "$binary" ]]; then
    cargo build --release --quiet
    binary=$PWD/target/release/imds-tun
fi
lua=$PWD/scripts/bench-percentiles.lua
flags=(--listen 127.0.0.1:8080 --max-connections 4096)
ns=imdstun-bench-$$
work=$(mktemp -d /tmp/imdstun-bench.XXXXXX)
[[ -n "$profile_dir" ]] || profile_dir=$work/profile
mkdir -p "$profile_dir"
vgdb_prefix=$work/vgdb
pid=
vpid=

# Stops a child: SIGTERM, SIGKILL after 10 s. Valgrind removes its vgdb pipes on SIGTERM; they are
# under $work in any case.
stop() {
    local p=$1 state
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do
        state=$(ps -o stat= -p "$p" 2>/dev/null) || break
        [[ $state == Z* ]] && break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    if [[ -n "$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    if [[ -n "$vpid" ]]; then stop "$vpid"; fi
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
inns() { ip netns exec "$ns" "$@"; }

tun_url=http://169.254.169.254/latest/meta-data/instance-id
kernel_url=http://127.0.0.1:8080/latest/meta-data/instance-id

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Waits up to $1 seconds until the service answers on the TUN path.
wait_served() {
    # shellcheck disable=SC2016 # the script runs in the namespace's own bash; nothing to expand here
    inns bash -c '
        deadline=$((SECONDS + $1))
        while (( SECONDS < deadline )); do
            if { exec 3<>/dev/tcp/169.254.169.254/80; } 2>/dev/null; then
                printf "GET /latest/meta-data/instance-id HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n" >&3
                if head -c 12 <&3 | grep -q "200"; then exit 0; fi
            fi
            sleep 0.0005
        done
        exit 1' _ "$1"
}

# Runs wrk in the namespace and stores the fields of its BENCH line (see bench-percentiles.lua) in
# the associative array named by $1.
# shellcheck disable=SC2034 # result is a nameref: the caller's array is what gets used
run_wrk() { # array clients seconds timeout url [extra wrk args...]
    local -n result=$1
    local clients=$2 seconds=$3 timeout=$4 url=$5 threads=2 out line field fields
    shift 5
    (( clients < 2 )) && threads=1
    if ! out=$(inns wrk -t"$threads" -c"$clients" -d"${seconds}s" --timeout "$timeout" -s "$lua" "$@" "$url" 2>&1) \
        || ! line=$(grep -m1 '^BENCH ' <<<"$out"); then
        printf 'bench.sh: wrk with %s clients against %s failed:\n%s\n' "$clients" "$url" "$out" >&2
        exit 1
    fi
    read -ra fields <<<"${line#BENCH }"
    result=()
    for field in "${fields[@]}"; do result[${field%%=*}]=${field#*=}; done
}

# Segments the namespace's kernel TCP retransmitted so far (the clients' on the TUN path; both
# ends' on the kernel path), and packets the kernel dropped at the TUN's queue: a dropped or
# unanswered segment costs its client a retransmission timeout (200 ms, a SYN 1 s).
# shellcheck disable=SC2016 # an awk program: nothing for the shell to expand
retransmits() { inns awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ {print $13}' /proc/net/snmp; }
tun_drops() { inns sh -c 'cat /sys/class/net/imds*/statistics/tx_dropped 2>/dev/null || echo 0' | head -n1; }

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
errors() { # array -> "0", or the non-zero counts
    local -n counts=$1
    local name list=
    for name in connect read write timeout; do
        [[ ${counts[errors_$name]} == 0 ]] || list+=", $name ${counts[errors_$name]}"
    done
    [[ ${counts[non2xx]} == 0 ]] || list+=", non-2xx ${counts[non2xx]}"
    echo "${list:-, 0}" | cut -c3-
}

modes=(keep-alive new-connection)
mode_args() { # mode -> extra wrk args, one per line
    if [[ $1 == new-connection ]]; then printf '%s\n' -H "Connection: close"; fi
}

# --- start-up time: exec to first served request, median of $starts --------------------------
startup_ms=()
for _ in $(seq "$starts"); do
    begin=$(date +%s%N)
    # Not through inns: a backgrounded function is a subshell, and $! must be imds-tun itself.
    ip netns exec "$ns" "$binary" >/dev/null 2>&1 &
    pid=$!
    wait_served 10
    end=$(date +%s%N)
    startup_ms+=("$(( (end - begin) / 1000 ))")
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
done
startup_median_ms=$(printf '%s\n' "${startup_ms[@]}" | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/1000}')

# --- one long-running instance for the load --------------------------------------------------
ip netns exec "$ns" "$binary" "${flags[@]}" >/dev/null 2>&1 &
pid=$!
wait_served 10
sleep 0.5
rss_idle=$(rss_kib "$pid")
# The probe's own cost, against this instance that already serves: the start-up median above
# includes it (entering the namespace with `ip netns exec`, starting bash, one request), and on a
# busy 2-core machine it is several milliseconds.
probe_ms=()
for _ in $(seq "$starts"); do
    begin=$(date +%s%N)
    wait_served 10
    end=$(date +%s%N)
    probe_ms+=("$(( (end - begin) / 1000 ))")
done
probe_median_ms=$(printf '%s\n' "${probe_ms[@]}" | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/1000}')

declare -A tun kernel timing errs losses
for mode in "${modes[@]}"; do
    mapfile -t extra < <(mode_args "$mode")
    for clients in 1 50 500 1000; do
        retransmits_before=$(retransmits) drops_before=$(tun_drops)
        run_wrk tun "$clients" "$duration" 10s "$tun_url" "${extra[@]}"
        tun_retransmits=$(( $(retransmits) - retransmits_before ))
        tun_dropped=$(( $(tun_drops) - drops_before ))
        retransmits_before=$(retransmits)
        run_wrk kernel "$clients" "$duration" 10s "$kernel_url" "${extra[@]}"
        kernel_retransmits=$(( $(retransmits) - retransmits_before ))
        losses[$mode/$clients]="$tun_retransmits / $kernel_retransmits | $tun_dropped"
        timing[$mode/$clients]="${tun[rps]} | $(ms "${tun[p50_us]}") | $(ms "${tun[p99_us]}") | $(ms "${tun[p999_us]}") | ${kernel[rps]} | $(ms "${kernel[p50_us]}") | $(ms "${kernel[p99_us]}") | $(ms "${kernel[p999_us]}") | **$(ratio "${tun[rps]}" "${kernel[rps]}")** | $(ratio "${tun[p99_us]}" "${kernel[p99_us]}")"
        errs[$mode/$clients]="$(errors tun) / $(errors kernel)"
    done
done
rss_after=$(rss_kib "$pid")
kill -TERM "$pid"
wait "$pid" || true

# --- RSS while 1000 connections are open through the TUN --------------------------------------
# A fresh instance: after the load the allocator keeps what the 1000-client cells freed, which
# would hide what the connections themselves cost.
ip netns exec "$ns" "$binary" "${flags[@]}" >/dev/null 2>&1 &
pid=$!
wait_served 10
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
kill -TERM "$pid"
wait "$pid" || true
pid=

# --- instructions per request under callgrind -------------------------------------------------
control() { # callgrind_control arguments; it exits 0 even when it fails, but says "OK."
    local out
    out=$(callgrind_control --vgdb-prefix="$vgdb_prefix" "$@" "$vpid" 2>&1)
    if ! grep -q "OK\.$" <<<"$out"; then
        printf 'bench.sh: callgrind_control %s failed:\n%s\n' "$*" "$out" >&2
        exit 1
    fi
}
cg_seconds=3
cg_clients=(50 500 1000)
declare -A per_request cg
if [[ $instructions == true ]]; then
    ip netns exec "$ns" valgrind --tool=callgrind --vgdb-prefix="$vgdb_prefix" \
        --callgrind-out-file="$profile_dir/callgrind.%p" --log-file="$work/valgrind.log" \
        "$binary" "${flags[@]}" >"$work/imds-tun.log" 2>&1 &
    vpid=$!
    if ! wait_served 300; then
        echo "bench.sh: imds-tun under valgrind did not serve within 300 s; its output:" >&2
        tail -n 20 "$work/valgrind.log" "$work/imds-tun.log" >&2
        exit 1
    fi
    dumps=0
    for mode in "${modes[@]}"; do
        mapfile -t extra < <(mode_args "$mode")
        for clients in "${cg_clients[@]}"; do
            for path in tun kernel; do
                label=$path-$mode-$clients
                url=$tun_url
                [[ $path == kernel ]] && url=$kernel_url
                control --zero
                run_wrk cg "$clients" "$cg_seconds" 30s "$url" "${extra[@]}"
                control --dump="$label"
                dumps=$((dumps + 1))
                dump=$profile_dir/callgrind.$vpid.$dumps
                if [[ ! -s "$dump" ]]; then
                    echo "bench.sh: callgrind wrote no $dump for $label" >&2
                    exit 1
                fi
                mv "$dump" "$profile_dir/callgrind.out.$label"
                ir=$(awk '$1 == "totals:" {print $2; exit}' "$profile_dir/callgrind.out.$label")
                per_request[$path/$mode/$clients]=$(awk -v ir="$ir" -v n="${cg[requests]}" \
                    'BEGIN { if (n > 0) printf "%.0fk", ir / n / 1000; else print "n/a" }')
            done
        done
    done
    stop "$vpid"
    # What the process did after the last dump (shutting down) is no cell's.
    rm -f "$profile_dir/callgrind.$vpid"
    vpid=
fi

kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
columns=17
measure_row() { # name value: the two first columns, the rest blank
    local row="| $1 | $2 |"
    for _ in $(seq $((columns - 2))); do row+=" |"; done
    echo "$row"
}

if [[ $instructions == true ]]; then
    instructions_note="instructions: callgrind, ${cg_seconds}s per cell"
else
    instructions_note="instructions not measured"
fi
echo "### imds-tun benchmark ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r), wrk ${duration}s per cell, $instructions_note)"
echo
echo "| connections | clients | TUN req/s | TUN p50 ms | TUN p99 ms | TUN p99.9 ms | kernel req/s | kernel p50 ms | kernel p99 ms | kernel p99.9 ms | TUN/kernel req/s | TUN/kernel p99 | TUN instr/req | kernel instr/req | TCP retransmits (TUN / kernel) | TUN queue drops | errors (TUN / kernel) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for mode in "${modes[@]}"; do
    for clients in 1 50 500 1000; do
        echo "| $mode | $clients | ${timing[$mode/$clients]} | ${per_request[tun/$mode/$clients]:-–} | ${per_request[kernel/$mode/$clients]:-–} | ${losses[$mode/$clients]} | ${errs[$mode/$clients]} |"
    done
done
measure_row "**process**" "**value**"
measure_row "start-up, exec to first served request (median of $starts)" "${startup_median_ms} ms"
measure_row "the start-up probe alone, against a serving instance (median of $starts)" "${probe_median_ms} ms"
measure_row "RSS idle" "$(kib_to_mib "$rss_idle") MiB"
measure_row "RSS after the load" "$(kib_to_mib "$rss_after") MiB"
measure_row "RSS with ${held_count} connections open through the TUN (fresh instance)" "$(kib_to_mib "$rss_held") MiB"
if [[ $instructions == true && $profile_dir != "$work"/* ]]; then
    measure_row "callgrind dumps (\`callgrind_annotate DIR/callgrind.out.tun-new-connection-500\`)" "$profile_dir"
fi
