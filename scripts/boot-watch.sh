#!/usr/bin/env bash
# Runs a command that boots a guest (`vagrant up`, `vagrant reload`) while watching the guest's
# serial console, so a guest that never comes up is reported in minutes, with the reason, instead
# of after vagrant-libvirt's own 15-minute wait for an IP address (docs/testing.md, "A guest that
# stops at grub>").
#
#   bash scripts/boot-watch.sh CONSOLE LOG -- COMMAND [ARGS...]
#
# COMMAND's output goes to LOG and, indented, to stdout. The watch, once a second:
#   - `grub>` on the console (GRUB found no configuration) or `Kernel panic`: stop at once;
#   - `login:` on the console: the guest is up, nothing more to watch;
#   - nothing on the console $IMDS_TUN_BOOT_SILENCE_LIMIT s (default 120) after vagrant-libvirt
#     said "Starting domain." (the guest powers on right after), or 300 s after COMMAND started if
#     it never says so; or no `login:` $IMDS_TUN_BOOT_LOGIN_LIMIT s (default 300) after the
#     console's first byte: stop.
# Only what the console gets after COMMAND starts counts, and after "Starting domain." once that
# is seen (a reload's halt writes the old guest's shutdown there first); a new domain may also
# start the file anew.
# Stopping is SIGTERM to COMMAND's process group (vagrant cleans up and releases the machine's
# lock), then SIGKILL after
# $IMDS_TUN_BOOT_STOP_GRACE s (default 30). This script stops COMMAND the same way when it
# gets SIGTERM or SIGINT itself.
#
# `boot-watch.sh --tail CONSOLE` prints the console's last lines only.
#
# Exit status: COMMAND's; or 124 after printing `the guest did not come up: WHY` and the
# console's last 25 lines. When the guest came up, one line says how long the console took.
#
# The bounds suit software emulation (TCG) on a busy 2-core machine: a guest of the VM test's
# image shows `login:` about 40 s after GRUB's first line on a quiet one.
set -uo pipefail

indent() { sed -u 's/^/    /'; }

# The console as text: no carriage returns, no terminal escapes (GRUB draws its menu with them).
console_text() { tr -d '\r' | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g'; }

console_tail() {
    echo "--- the last lines of the guest's serial console ($console) ---"
    if [ -s "$console" ]; then
        console_text <"$console" | grep -v '^[[:space:]]*$' | tail -n 25 | indent
    else
        echo "    (empty: the guest wrote nothing)"
    fi
}

usage() {
    echo "usage: boot-watch.sh CONSOLE LOG -- COMMAND [ARGS...] | boot-watch.sh --tail CONSOLE" >&2
    exit 2
}
if [ "${1:-}" = --tail ]; then
    [ "$#" -eq 2 ] || usage
    console=$2
    console_tail
    exit 0
fi
if [ "$#" -lt 4 ] || [ "$3" != -- ]; then usage; fi
console=$1
log=$2
shift 3
silence_limit=${IMDS_TUN_BOOT_SILENCE_LIMIT:-120}
# Before the domain is started (vagrant up first uploads the box into libvirt's pool).
unstarted_limit=300
login_limit=${IMDS_TUN_BOOT_LOGIN_LIMIT:-300}
stop_grace=${IMDS_TUN_BOOT_STOP_GRACE:-30}

# show_log complete|all: COMMAND's output not shown yet, indented: its complete lines, or all
# of it (at the end). Shown from the watch loop rather than by `tail -f`, which may exit
# before the command's last lines.
shown=0
show_log() {
    local lines
    if [ "$1" = all ]; then
        sed -n "$((shown + 1)),\$p" "$log" | indent
        return
    fi
    lines=$(wc -l <"$log")
    [ "$lines" -gt "$shown" ] || return 0
    sed -n "$((shown + 1)),${lines}p" "$log" | indent
    shown=$lines
}

pid=""
# stop: SIGTERM to COMMAND's process group (vagrant and what it started: ssh, rsync), SIGKILL
# after the grace.
stop() {
    [ -n "$pid" ] || return 0
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq "$stop_grace"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=""
}
trap 'stop; exit 130' INT TERM

offset=0
[ -f "$console" ] && offset=$(stat -c %s "$console")
# A process group of its own (setsid execs it in place: a background job is no group leader),
# so stopping it reaches everything it started.
setsid "$@" >"$log" 2>&1 &
pid=$!
started=$(date +%s)
domain_started=""
first_output=""
login=""
why=""
while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    show_log complete
    now=$(date +%s)
    size=0
    [ -f "$console" ] && size=$(stat -c %s "$console")
    # A restarted domain may start the file anew.
    [ "$size" -ge "$offset" ] || offset=0
    if [ -z "$domain_started" ] && grep -q 'Starting domain' "$log"; then
        domain_started=$now
        # What the console got before is the old guest's shutdown (vagrant reload).
        offset=$size
        first_output=""
        login=""
    fi
    seen=""
    [ "$size" -le "$offset" ] || seen=$(tail -c +"$((offset + 1))" "$console" | console_text)
    if [ -n "$seen" ] && [ -z "$first_output" ]; then first_output=$now; fi
    if grep -q 'grub>' <<<"$seen"; then
        why="GRUB stopped at its grub> prompt: the image has no usable /boot/grub/grub.cfg (scripts/vm-image.sh --check-disk tells why)"
    elif grep -q 'Kernel panic' <<<"$seen"; then
        why="the guest kernel panicked"
    elif grep -q 'login:' <<<"$seen"; then
        [ -n "$login" ] || login=$now
        continue
    elif [ -z "$first_output" ] && [ -n "$domain_started" ] \
        && [ $((now - domain_started)) -ge "$silence_limit" ]; then
        why="the guest wrote nothing to its serial console ${silence_limit} s after its domain started (a GRUB without grub.cfg writes only to the screen)"
    elif [ -z "$first_output" ] && [ $((now - started)) -ge "$unstarted_limit" ]; then
        why="the guest wrote nothing to its serial console in ${unstarted_limit} s"
    elif [ -n "$first_output" ] && [ $((now - first_output)) -ge "$login_limit" ]; then
        why="the guest showed no login prompt ${login_limit} s after its console started"
    fi
    [ -z "$why" ] || break
done

if [ -n "$why" ]; then
    stop
    show_log all
    echo "    the guest did not come up: $why"
    console_tail
    exit 124
fi
wait "$pid"
status=$?
pid=""
show_log all
if [ -n "$login" ]; then
    echo "    (serial console: first line $((first_output - ${domain_started:-$started})) s after the domain started, login prompt $((login - first_output)) s later)"
fi
exit "$status"
