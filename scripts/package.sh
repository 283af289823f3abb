#!/usr/bin/env bash
# Builds the shipped artefacts of imds-tun for each architecture named (amd64, arm64; amd64 when
# none is named: arm64 needs a cross toolchain and the arm64 architecture added to dpkg) and
# prints their paths and sizes:
#   target/<triple>/release/imds-tun                  static (musl), stripped: runs on any Linux of
#                                                     that architecture, whatever its C library
#   target/debian/imds-tun_<version>-1_<deb-arch>.deb that same binary as /usr/bin/imds-tun, the
#                                                     systemd unit (not enabled, not started),
#                                                     /etc/default/imds-tun, man page, completions
#   target/rpm/imds-tun-<version>-1.<rpm-arch>.rpm    the same files, with /etc/sysconfig/imds-tun
#                                                     (packaging/imds-tun.spec, Debian's rpmbuild)
# where <triple> is x86_64-unknown-linux-musl or aarch64-unknown-linux-musl, <deb-arch> amd64 or
# arm64 and <rpm-arch> x86_64 or aarch64 (under $CARGO_TARGET_DIR instead of target/ when set).
#
# As root it installs what the build needs and is missing: musl-tools, rpm (apt), for arm64 also
# gcc-aarch64-linux-gnu and musl-dev:arm64 (apt, after `dpkg --add-architecture arm64`), the Rust
# standard library of each target (rustup), cargo-deb (cargo install, kept in CARGO_HOME). As
# another user it says what is missing. tests/deploy/package_artifacts.rs and
# tests/deploy/cross_artifacts.rs check what this builds; scripts/test.sh runs this first.
# Build times and the cross toolchain's quirks: docs/packaging.md.
set -euo pipefail

cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
# Generated inputs of the .deb (unit, man page, completions). Always under the crate's own
# target/, because [package.metadata.deb] names them relative to the crate (cargo-deb rewrites
# only `target/release/` paths to the real target directory).
assets=target/deb-assets
# The cargo-deb major version whose [package.metadata.deb] keys and maintainer scripts
# (dh_installsystemd's, with enable = false and start = false) Cargo.toml was written for.
cargo_deb_major=3
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)

say() { printf '\n==> %s\n' "$*"; }
fail() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(($(date +%s) - $1))s"; }

# The Rust target, Debian architecture and RPM architecture of each name this script takes.
triple_of() { case $1 in amd64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; esac; }
rpm_arch_of() { case $1 in amd64) echo x86_64 ;; arm64) echo aarch64 ;; esac; }

arches=("$@")
[ "${#arches[@]}" -gt 0 ] || arches=(amd64)
for arch in "${arches[@]}"; do
    [ -n "$(triple_of "$arch")" ] || fail "unknown architecture $arch (amd64 or arm64)"
done

# Package timestamps (rpm's build time and file times, cargo-deb's file times) from the last
# commit, so that packaging the same commit twice gives the same bytes (docs/packaging.md).
# Given to the packaging tools only, not to cargo build: the cc crate reruns a build script
# (aws-lc-sys's, and with it the whole fat-LTO link) whenever SOURCE_DATE_EPOCH changes, so every
# commit would cost a full rebuild; the binary does not need it to be reproducible
# (scripts/release.sh --check-reproducible proves that, and would catch a __DATE__ in the C).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

as_root_install() {
    # $1: what to say when not root; the rest: apt-get install arguments.
    local why=$1
    shift
    [ "$(id -u)" -eq 0 ] || fail "$why is missing: apt-get install $*, or run this as root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- What the build needs ----------------------------------------------------------------------
say "build tools"
# aws-lc-sys (the TLS crypto under the AWS SDK) compiles C for the target with the cc crate, which
# finds musl's gcc wrapper as musl-gcc on x86_64; no cmake, nasm or Go is needed.
if ! command -v musl-gcc >/dev/null 2>&1; then
    as_root_install musl-gcc musl-tools
fi
echo "musl-gcc: $(command -v musl-gcc)"
if ! command -v rpmbuild >/dev/null 2>&1; then
    as_root_install rpmbuild rpm
fi
echo "rpmbuild: $(rpmbuild --version)"
# arm64: Debian has no aarch64 musl cross compiler, but it has the pieces of one: the aarch64 gcc
# (gcc-aarch64-linux-gnu) and musl's arm64 headers, crt files and specs file (musl-dev:arm64,
# which needs the architecture added to dpkg). The wrapper below is what musl-gcc is on x86_64:
# gcc with musl's specs file.
musl_specs_arm64=/usr/lib/aarch64-linux-musl/musl-gcc.specs
if [[ " ${arches[*]} " == *" arm64 "* ]]; then
    if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || [ ! -f "$musl_specs_arm64" ]; then
        if [ "$(id -u)" -eq 0 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
            dpkg --add-architecture arm64
        fi
        as_root_install "the arm64 cross toolchain" gcc-aarch64-linux-gnu libc6-dev-arm64-cross musl-dev:arm64
    fi
    cross_bin="$(realpath -m "$target_dir")/cross-bin"
    mkdir -p "$cross_bin"
    printf '#!/bin/sh\nexec aarch64-linux-gnu-gcc -specs %s "$@"\n' "$musl_specs_arm64" \
        >"$cross_bin/aarch64-linux-musl-gcc"
    chmod 0755 "$cross_bin/aarch64-linux-musl-gcc"
    # C of aws-lc-sys through the musl wrapper; Rust's own link with plain aarch64 gcc, because
    # rustc brings musl's crt objects and libc.a for the target itself (self-contained linking).
    export CC_aarch64_unknown_linux_musl="$cross_bin/aarch64-linux-musl-gcc"
    export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
    echo "aarch64 musl cc: $CC_aarch64_unknown_linux_musl (aarch64-linux-gnu-gcc $(aarch64-linux-gnu-gcc -dumpversion), $musl_specs_arm64)"
fi
command -v rustup >/dev/null 2>&1 \
    || fail "rustup is missing: it adds the Rust standard library for the musl targets; install Rust with rustup"
for arch in "${arches[@]}"; do
    target=$(triple_of "$arch")
    if ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
    echo "rust target: $target"
done
cargo_deb_version() { cargo deb --version 2>/dev/null | awk '{ print $NF }'; }
if [ "$(cargo_deb_version | cut -d. -f1)" != "$cargo_deb_major" ]; then
    cargo install --locked cargo-deb --version "^$cargo_deb_major"
fi
echo "cargo-deb: $(cargo_deb_version)"

# Runs a built binary of any architecture: directly, or under qemu-user for a foreign one (the
# man page and completions come from the binary; they are the same on every architecture).
run_built() {
    local arch=$1
    shift
    if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
        command -v qemu-aarch64-static >/dev/null 2>&1 || as_root_install qemu-aarch64-static qemu-user-static
        qemu-aarch64-static "$@"
    else
        "$@"
    fi
}

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

built=()
for arch in "${arches[@]}"; do
    target=$(triple_of "$arch")
    rpm_arch=$(rpm_arch_of "$arch")

    # --- The static binary -----------------------------------------------------------------------
    say "static binary (cargo build --release --target $target, ${release_for_shipping[*]})"
    started=$(date +%s)
    env "${release_for_shipping[@]}" cargo build --release --locked --target "$target" --bin imds-tun
    binary="$target_dir/$target/release/imds-tun"
    echo "built in $(elapsed "$started")"

    # --- The .deb ----------------------------------------------------------------------------------
    say "man page and completions (imds-tun man, imds-tun completions SHELL of the $arch binary)"
    started=$(date +%s)
    rm -rf "$assets"
    mkdir -p "$assets"
    run_built "$arch" "$binary" man >"$assets/imds-tun.1"
    run_built "$arch" "$binary" completions bash >"$assets/imds-tun.bash"
    run_built "$arch" "$binary" completions zsh >"$assets/_imds-tun"
    run_built "$arch" "$binary" completions fish >"$assets/imds-tun.fish"
    # The unit as scripts/install.sh renders it, with the paths the package installs to.
    sed -e 's#@BINDIR@#/usr/bin#g' -e 's#@SYSCONFDIR@#/etc#g' \
        packaging/imds-tun.service >"$assets/imds-tun.service"
    echo "generated in $(elapsed "$started")"

    say "cargo deb ($arch)"
    started=$(date +%s)
    # --no-build: package exactly the binary built above; --no-strip: it is stripped already, so
    # the packaged /usr/bin/imds-tun is byte-identical to the static artefact.
    deb=$(SOURCE_DATE_EPOCH=$epoch cargo deb --no-build --no-strip --target "$target" --output "$target_dir/debian/" \
        | tail -n 1)
    [ -f "$deb" ] || fail "cargo deb did not report the .deb it wrote (got: $deb)"
    echo "packaged in $(elapsed "$started")"

    # --- The .rpm ----------------------------------------------------------------------------------
    say "rpmbuild ($rpm_arch, packaging/imds-tun.spec)"
    started=$(date +%s)
    rpm_top=$(realpath -m "$target_dir/rpmbuild")
    rm -rf "$rpm_top"
    mkdir -p "$rpm_top" "$target_dir/rpm"
    # The unit reads /etc/sysconfig/imds-tun, where RPM systems keep a service's settings.
    sed -e 's#@BINDIR@#/usr/bin#g' -e 's#@SYSCONFDIR@/default/#/etc/sysconfig/#g' \
        packaging/imds-tun.service >"$assets/imds-tun.rpm.service"
    # Binary-only: the spec installs the files built above, so --target only names the
    # architecture (nothing is compiled or stripped by rpmbuild).
    SOURCE_DATE_EPOCH=$epoch rpmbuild -bb --quiet --target "$rpm_arch-linux" \
        --define "_topdir $rpm_top" \
        --define "_rpmdir $(realpath -m "$target_dir/rpm")" \
        --define "_rpmfilename %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm" \
        --define "imds_tun_version $version" \
        --define "imds_tun_source $PWD" \
        --define "imds_tun_binary $(realpath "$binary")" \
        --define "imds_tun_assets $(realpath "$assets")" \
        packaging/imds-tun.spec
    rpm="$target_dir/rpm/imds-tun-$version-1.$rpm_arch.rpm"
    [ -f "$rpm" ] || fail "rpmbuild did not write $rpm"
    rm -rf "$rpm_top"
    echo "packaged in $(elapsed "$started")"
    built+=("$binary" "$deb" "$rpm")
done

say "artefacts"
for artefact in "${built[@]}"; do
    printf '%s  %s bytes (%s)\n' "$(realpath "$artefact")" "$(stat -c %s "$artefact")" \
        "$(du -h "$artefact" | cut -f1)"
done
