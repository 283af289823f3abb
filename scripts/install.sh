#!/usr/bin/env bash
# Builds imds-tun and installs it as a systemd service:
#   $PREFIX/bin/imds-tun                      (default /usr/local/bin/imds-tun)
#   $UNITDIR/imds-tun.service                 (default /etc/systemd/system)
#   $SYSCONFDIR/default/imds-tun              (IMDS_TUN_ARGS=...; mode 0600, it may hold a token;
#                                             kept if it already exists)
#   $PREFIX/share/man/man1/imds-tun.1         (`imds-tun man`)
#   $PREFIX/share/{bash-completion/completions/imds-tun, zsh/site-functions/_imds-tun,
#                  fish/vendor_completions.d/imds-tun.fish}   (`imds-tun completions SHELL`)
#   $PREFIX/share/imds-tun/install-manifest   (every file this script created; uninstall.sh reads it)
# then enables and starts the service when systemd runs and DESTDIR is empty.
#
# Environment: DESTDIR (stage into a directory, e.g. for packaging or tests), PREFIX, SYSCONFDIR,
# UNITDIR, IMDS_TUN_BINARY (install this binary instead of building one), IMDS_TUN_ARGS (flags
# for a new env file), IMDS_TUN_SYSTEMD=0 (never call systemctl), SYSTEMD_RUNTIME_DIR (where a
# running systemd shows itself, default /run/systemd/system; tests point it elsewhere).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/etc/systemd/system}
IMDS_TUN_ARGS=${IMDS_TUN_ARGS:-}

say() { printf 'install.sh: %s\n' "$*"; }

binary=${IMDS_TUN_BINARY:-}
if [ -z "$binary" ]; then
    say "building (cargo build --release --locked)"
    (cd "$here" && cargo build --release --locked)
    binary="${CARGO_TARGET_DIR:-$here/target}/release/imds-tun"
fi
[ -x "$binary" ] || { say "no executable at $binary" >&2; exit 1; }

manifest="$DESTDIR$PREFIX/share/imds-tun/install-manifest"
created=()
if [ -f "$manifest" ]; then
    mapfile -t created <"$manifest"
fi

# Records a path (relative to DESTDIR) as ours unless it is already listed.
own() {
    local path=$1 entry
    for entry in "${created[@]}"; do
        [ "$entry" = "$path" ] && return 0
    done
    created+=("$path")
}

# Creates the directories of a path that do not exist yet, recording each as ours.
make_parents() {
    local dir missing=()
    dir=$(dirname "$1")
    # Stops at / as well: with a DESTDIR that does not exist yet, "$DESTDIR/" is never a
    # directory and dirname / is / (this loop used to spin forever).
    while [ "$dir" != / ] && [ ! -d "$DESTDIR$dir" ]; do
        missing=("$dir" "${missing[@]}")
        dir=$(dirname "$dir")
    done
    for dir in "${missing[@]}"; do
        mkdir -m 0755 "$DESTDIR$dir"
        own "$dir/"
    done
}

# install_file SOURCE TARGET MODE: copies unless the content is already there.
install_file() {
    local source=$1 target=$2 mode=$3
    make_parents "$target"
    if [ -f "$DESTDIR$target" ] && cmp -s "$source" "$DESTDIR$target"; then
        say "unchanged $target"
    else
        install -m "$mode" "$source" "$DESTDIR$target"
        say "installed $target"
    fi
    own "$target"
}

# A staging root is made on demand; it is the caller's, so it is not in the manifest.
[ -z "$DESTDIR" ] || mkdir -p "$DESTDIR"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

install_file "$binary" "$PREFIX/bin/imds-tun" 0755

sed -e "s#@BINDIR@#$PREFIX/bin#g" -e "s#@SYSCONFDIR@#$SYSCONFDIR#g" \
    "$here/packaging/imds-tun.service" >"$scratch/imds-tun.service"
install_file "$scratch/imds-tun.service" "$UNITDIR/imds-tun.service" 0644

# The man page and the completions, as the binary being installed prints them (a binary older
# than `imds-tun man` has none to give; the rest of the install does not depend on them).
if "$binary" man >"$scratch/imds-tun.1" 2>/dev/null; then
    install_file "$scratch/imds-tun.1" "$PREFIX/share/man/man1/imds-tun.1" 0644
    for completion in bash:bash-completion/completions/imds-tun zsh:zsh/site-functions/_imds-tun \
        fish:fish/vendor_completions.d/imds-tun.fish; do
        shell=${completion%%:*}
        "$binary" completions "$shell" >"$scratch/completion.$shell"
        install_file "$scratch/completion.$shell" "$PREFIX/share/${completion#*:}" 0644
    done
else
    say "$binary prints no man page (older than imds-tun man): man page and completions skipped"
fi

# Root-only: besides the flags it is where the service's secrets go (GOOGLE_ACCESS_TOKEN).
env_file="$SYSCONFDIR/default/imds-tun"
if [ -e "$DESTDIR$env_file" ]; then
    say "kept existing $env_file"
    if [ -n "$(find "$DESTDIR$env_file" -perm /044 2>/dev/null)" ]; then
        say "warning: $env_file is readable by other users; it may hold a token: chmod 600 $env_file"
    fi
else
    sed -e "s#^IMDS_TUN_ARGS=.*#IMDS_TUN_ARGS=\"$IMDS_TUN_ARGS\"#" \
        "$here/packaging/imds-tun.default" >"$scratch/imds-tun.default"
    install_file "$scratch/imds-tun.default" "$env_file" 0600
fi

make_parents "$PREFIX/share/imds-tun/install-manifest"
own "$PREFIX/share/imds-tun/install-manifest"
printf '%s\n' "${created[@]}" >"$manifest"
say "manifest: $PREFIX/share/imds-tun/install-manifest (${#created[@]} entries)"

systemd_runtime_dir=${SYSTEMD_RUNTIME_DIR:-/run/systemd/system}
if [ -z "$DESTDIR" ] && [ "${IMDS_TUN_SYSTEMD:-1}" != 0 ] && [ -d "$systemd_runtime_dir" ]; then
    systemctl daemon-reload
    systemctl enable imds-tun.service
    systemctl restart imds-tun.service
    say "service imds-tun enabled and (re)started: systemctl status imds-tun"
elif [ -d "$systemd_runtime_dir" ]; then
    # systemd runs here; we were only asked not to touch it (DESTDIR or IMDS_TUN_SYSTEMD=0).
    say "systemd not used by this run; start it with: systemctl daemon-reload && systemctl enable --now imds-tun"
else
    # No systemd: a systemctl hint would fail. The unit only adds the flags of the env file.
    say "no systemd on this machine ($systemd_runtime_dir is missing), so the unit is not used;"
    say "run it as root, in the foreground or under your own supervisor:"
    say "  sudo sh -c '. $SYSCONFDIR/default/imds-tun && exec $PREFIX/bin/imds-tun \$IMDS_TUN_ARGS'"
fi
