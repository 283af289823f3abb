#!/usr/bin/env bash
# Removes what scripts/install.sh installed: exactly the files and directories in its manifest
# ($PREFIX/share/imds-tun/install-manifest), nothing else. Directories go only when empty.
# Environment: DESTDIR, PREFIX (as given to install.sh), IMDS_TUN_SYSTEMD=0 (never call systemctl).
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
manifest="$DESTDIR$PREFIX/share/imds-tun/install-manifest"

say() { printf 'uninstall.sh: %s\n' "$*"; }

if [ ! -f "$manifest" ]; then
    say "no manifest at $manifest: nothing was installed there (or it was removed by hand)" >&2
    exit 1
fi

if [ -z "$DESTDIR" ] && [ "${IMDS_TUN_SYSTEMD:-1}" != 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now imds-tun.service || true
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

if [ -z "$DESTDIR" ] && [ "${IMDS_TUN_SYSTEMD:-1}" != 0 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
