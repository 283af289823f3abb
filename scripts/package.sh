#!/usr/bin/env bash
# Builds the two shipped artefacts of imds-tun and prints their paths and sizes:
#   target/x86_64-unknown-linux-musl/release/imds-tun  static (musl), stripped: runs on any x86_64
#                                                      Linux, whatever its glibc
#   target/debian/imds-tun_<version>-1_amd64.deb       that same binary as /usr/bin/imds-tun, the
#                                                      systemd unit (not enabled, not started),
#                                                      /etc/default/imds-tun, man page, completions
# (under $CARGO_TARGET_DIR instead of target/ when that is set).
#
# As root it installs what the build needs and is missing: musl-tools (apt), the Rust standard
# library for the musl target (rustup), cargo-deb (cargo install, kept in CARGO_HOME). As another
# user it says what is missing. tests/deploy/package_artifacts.rs checks what this builds;
# scripts/test.sh runs this first. Build times: docs/testing.md.
set -euo pipefail

cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-target}
# Generated inputs of the .deb (unit, man page, completions). Always under the crate's own
# target/, because [package.metadata.deb] names them relative to the crate (cargo-deb rewrites
# only `target/release/` paths to the real target directory).
assets=target/deb-assets
# The cargo-deb major version whose [package.metadata.deb] keys and maintainer scripts
# (dh_installsystemd's, with enable = false and start = false) Cargo.toml was written for.
cargo_deb_major=3

say() { printf '\n==> %s\n' "$*"; }
fail() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(($(date +%s) - $1))s"; }

# --- What the build needs ----------------------------------------------------------------------
say "build tools"
# aws-lc-sys (the TLS crypto under the AWS SDK) compiles C for the target with the cc crate, which
# finds musl's gcc wrapper as musl-gcc; no cmake, nasm or Go is needed on x86_64.
if ! command -v musl-gcc >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || fail "musl-gcc is missing: install musl-tools (apt-get install musl-tools), or run this as root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
echo "musl-gcc: $(command -v musl-gcc)"
command -v rustup >/dev/null 2>&1 \
    || fail "rustup is missing: it adds the Rust standard library for $target; install Rust with rustup"
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
echo "rust target: $target"
cargo_deb_version() { cargo deb --version 2>/dev/null | awk '{ print $NF }'; }
if [ "$(cargo_deb_version | cut -d. -f1)" != "$cargo_deb_major" ]; then
    cargo install --locked cargo-deb --version "^$cargo_deb_major"
fi
echo "cargo-deb: $(cargo_deb_version)"

# --- The static binary ---------------------------------------------------------------------------
# The release profile as committed (opt-level 3), changed for what is shipped, measured on the
# 2-core machine (docs/testing.md):
# - no debug info, stripped: the line tables [profile.release] keeps for developers'
#   backtraces are most of the 69 MB of `cargo build --release`; stripped, it is 15 MB;
# - fat LTO in one codegen unit: 12.4 MB instead of 15.2 MB, and no slower to build from scratch
#   here (about 4-5 min either way); developers keep thin LTO and 4 units, which rebuild faster.
# Overridden here rather than in a named profile so that the artefact stays at
# target/<triple>/release/, where cargo-deb and the VM test look for it; `cargo build --release`
# and `cargo install --path .` are unchanged.
release_for_shipping=(
    CARGO_PROFILE_RELEASE_DEBUG=false
    CARGO_PROFILE_RELEASE_STRIP=symbols
    CARGO_PROFILE_RELEASE_LTO=fat
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
)
say "static binary (cargo build --release --target $target, ${release_for_shipping[*]})"
started=$(date +%s)
env "${release_for_shipping[@]}" cargo build --release --locked --target "$target" --bin imds-tun
binary="$target_dir/$target/release/imds-tun"
echo "built in $(elapsed "$started")"

# --- The .deb ----------------------------------------------------------------------------------
say "man page and completions (imds-tun man, imds-tun completions SHELL of the static binary)"
started=$(date +%s)
rm -rf "$assets"
mkdir -p "$assets"
"$binary" man >"$assets/imds-tun.1"
"$binary" completions bash >"$assets/imds-tun.bash"
"$binary" completions zsh >"$assets/_imds-tun"
"$binary" completions fish >"$assets/imds-tun.fish"
# The unit as scripts/install.sh renders it, with the paths the package installs to.
sed -e 's#@BINDIR@#/usr/bin#g' -e 's#@SYSCONFDIR@#/etc#g' \
    packaging/imds-tun.service >"$assets/imds-tun.service"
echo "generated in $(elapsed "$started")"

say "cargo deb"
started=$(date +%s)
# --no-build: package exactly the binary built above; --no-strip: it is stripped already, so the
# packaged /usr/bin/imds-tun is byte-identical to the static artefact.
deb=$(cargo deb --no-build --no-strip --target "$target" --output "$target_dir/debian/" \
    | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not report the .deb it wrote (got: $deb)"
echo "packaged in $(elapsed "$started")"

say "artefacts"
for artefact in "$binary" "$deb"; do
    printf '%s  %s bytes (%s)\n' "$(realpath "$artefact")" "$(stat -c %s "$artefact")" \
        "$(du -h "$artefact" | cut -f1)"
done
