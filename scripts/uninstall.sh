#!/usr/bin/env bash
# Removes what scripts/install.sh installed: exactly the files and directories in its manifest
# ($PREFIX/share/imds-tun/install-manifest), nothing else. Directories go only when empty.
# Also removes the `multi-user.target.wants` symlink that `systemctl enable` made, even when
# systemctl cannot be asked (no running systemd, DESTDIR, IMDS_TUN_SYSTEMD=0): it is not in the
# manifest, but left behind it points at a unit that no longer exists.
# Environment: DESTDIR, PREFIX, UNITDIR (as given to install.sh), IMDS_TUN_SYSTEMD=0 (never call
# systemctl), SYSTEMD_RUNTIME_DIR (default /run/systemd/system).
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
UNITDIR=${UNITDIR:-/etc/systemd/system}
systemd_runtime_dir=${SYSTEMD_RUNTIME_DIR:-/run/systemd/system}
manifest="$DESTDIR$PREFIX/share/imds-tun/install-manifest"

say() { printf 'uninstall.sh: %s\n' "$*"; }

if [ ! -f "$manifest" ]; then
    say "no manifest at $manifest: nothing was installed there (or it was removed by hand)" >&2
    exit 1
fi

if [ -z "$DESTDIR" ] && [ "${IMDS_TUN_SYSTEMD:-1}" != 0 ] && [ -d "$systemd_runtime_dir" ]; then
    systemctl disable --now imds-tun.service || true
fi
wants_link="$UNITDIR/multi-user.target.wants/imds-tun.service"
if [ -L "$DESTDIR$wants_link" ]; then
    rm -f "$DESTDIR$wants_link"
    say "removed $wants_link"
fi

mapfile -t entries <"$manifest"
# Files first, then directories deepest first (the manifest lists parents before children).
for entry in "${entries[@]}"; do
    case "$entry" in
        */) ;;
        *) if [ -e "$DESTDIR$entry" ] || [ -L "$DESTDIR$entry" ]; then
               rm -f "$DESTDIR$entry"
               say "removed $entry"
           fi ;;
    esac
done
for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
    entry=${entries[$i]}
    case "$entry" in
        */) if rmdir "$DESTDIR${entry%/}" 2>/dev/null; then say "removed $entry"; fi ;;
    esac
done

if [ -z "$DESTDIR" ] && [ "${IMDS_TUN_SYSTEMD:-1}" != 0 ] && [ -d "$systemd_runtime_dir" ]; then
    systemctl daemon-reload
fi
