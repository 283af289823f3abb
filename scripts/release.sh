#!/usr/bin/env bash
# Puts every release artefact of imds-tun in dist/ with SHA256SUMS:
#   imds-tun-<version>-<arch>-linux-musl     the static binaries (x86_64, aarch64)
#   imds-tun_<version>-1_<deb-arch>.deb      the Debian packages (amd64, arm64)
#   imds-tun-<version>-1.<rpm-arch>.rpm      the RPMs (x86_64, aarch64)
#   imds-tun-<version>.cdx.json              the SBOM: every crate compiled into the binary,
#                                            CycloneDX JSON from cargo-cyclonedx
#   SHA256SUMS                               `sha256sum -c SHA256SUMS` checks all of the above
# The container image is not a file here: packaging/docker/Dockerfile builds it from the static
# binary (docs/guides/docker-desktop.md).
#
# Usage: scripts/release.sh [--check-reproducible[=ARCH,...]] [amd64] [arm64]   (both
# architectures when none is named). --check-reproducible generates the SBOM again and builds
# the static binary, .deb and .rpm of each architecture (or of those named) a second time from
# scratch in another target directory, and fails unless each is byte-identical to dist/'s
# (minutes per architecture: docs/packaging.md says how many, and what is reproducible and why).
#
# cargo-cyclonedx is installed once per version into /var/cache/imds-tun-test (outside the
# clone; IMDS_TUN_TOOL_CACHE overrides), like the test suite's other caches.
set -euo pipefail

cd "$(dirname "$0")/.."

check_reproducible=""
arches=()
for arg in "$@"; do
    case $arg in
        --check-reproducible) check_reproducible=all ;;
        --check-reproducible=*) check_reproducible=${arg#*=} ;;
        amd64 | arm64) arches+=("$arg") ;;
        *) echo "release.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
[ "${#arches[@]}" -gt 0 ] || arches=(amd64 arm64)

version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
target_dir=${CARGO_TARGET_DIR:-target}
dist=dist
# The version Cargo.lock's format and the SBOM's fields were checked against.
cyclonedx_version=0.5.9
tool_cache=${IMDS_TUN_TOOL_CACHE:-/var/cache/imds-tun-test}
cyclonedx_root="$tool_cache/cargo-cyclonedx-$cyclonedx_version"

say() { printf '\n==> %s\n' "$*"; }
fail() { printf 'release.sh: %s\n' "$*" >&2; exit 1; }
triple_of() { case $1 in amd64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; esac; }

say "scripts/package.sh ${arches[*]}"
bash scripts/package.sh "${arches[@]}"

rm -rf "$dist"
mkdir -p "$dist"
for arch in "${arches[@]}"; do
    triple=$(triple_of "$arch")
    machine=${triple%%-*}
    rpm_arch=$machine
    cp "$target_dir/$triple/release/imds-tun" "$dist/imds-tun-$version-$machine-linux-musl"
    cp "$target_dir/debian/imds-tun_${version}-1_$arch.deb" "$dist/"
    cp "$target_dir/rpm/imds-tun-$version-1.$rpm_arch.rpm" "$dist/"
done

say "SBOM (cargo-cyclonedx $cyclonedx_version)"
if [ ! -x "$cyclonedx_root/bin/cargo-cyclonedx" ]; then
    started=$(date +%s)
    cargo install --locked cargo-cyclonedx --version "=$cyclonedx_version" --root "$cyclonedx_root"
    echo "installed in $(($(date +%s) - started))s"
fi
# The crates of the shipped binary: its normal dependencies (no dev or build ones) on Linux.
sbom_name="imds-tun-$version"
# SOURCE_DATE_EPOCH (the commit's time, as package.sh uses): cargo-cyclonedx then writes it as
# the timestamp and leaves out the random serialNumber, so the SBOM is reproducible too.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
SOURCE_DATE_EPOCH=$epoch "$cyclonedx_root/bin/cargo-cyclonedx" cyclonedx --format json --spec-version 1.5 --no-build-deps \
    --target x86_64-unknown-linux-musl --override-filename "$sbom_name" >/dev/null
mv "$sbom_name.json" "$dist/$sbom_name.cdx.json"

mapfile -t released < <(cd "$dist" && find . -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort)
(cd "$dist" && sha256sum "${released[@]}" >SHA256SUMS)
say "dist/"
cat "$dist/SHA256SUMS"

if [ -n "$check_reproducible" ]; then
    say "reproducible? the SBOM, generated again"
    again_sbom=$(mktemp -d "${TMPDIR:-/tmp}/imds-tun-sbom.XXXXXX")
    SOURCE_DATE_EPOCH=$epoch "$cyclonedx_root/bin/cargo-cyclonedx" cyclonedx --format json \
        --spec-version 1.5 --no-build-deps --target x86_64-unknown-linux-musl \
        --override-filename "$sbom_name" >/dev/null
    mv "$sbom_name.json" "$again_sbom/"
    if cmp -s "$dist/$sbom_name.cdx.json" "$again_sbom/$sbom_name.json"; then
        echo "identical"
    else
        rm -rf "$again_sbom"
        fail "the SBOM differs when generated again"
    fi
    rm -rf "$again_sbom"
    for arch in "${arches[@]}"; do
        [ "$check_reproducible" = all ] || [[ ",$check_reproducible," == *",$arch,"* ]] || continue
        triple=$(triple_of "$arch")
        machine=${triple%%-*}
        say "reproducible? $arch: the static binary, .deb and .rpm built again from scratch in another target directory"
        again=$(mktemp -d "${TMPDIR:-/tmp}/imds-tun-release.XXXXXX")
        started=$(date +%s)
        if ! CARGO_TARGET_DIR="$again" bash scripts/package.sh "$arch" >"$again.log" 2>&1; then
            tail -n 40 "$again.log"
            rm -rf "$again" "$again.log"
            fail "the second build of $arch failed"
        fi
        echo "rebuilt in $(($(date +%s) - started))s"
        differ=()
        for pair in \
            "imds-tun-$version-$machine-linux-musl:$triple/release/imds-tun" \
            "imds-tun_${version}-1_$arch.deb:debian/imds-tun_${version}-1_$arch.deb" \
            "imds-tun-$version-1.$machine.rpm:rpm/imds-tun-$version-1.$machine.rpm"; do
            artefact=${pair%%:*}
            if cmp -s "$dist/$artefact" "$again/${pair#*:}"; then
                echo "identical: $artefact ($(sha256sum <"$dist/$artefact" | cut -c1-16)...)"
            else
                echo "DIFFERS: $artefact"
                differ+=("$artefact")
            fi
        done
        rm -rf "$again" "$again.log"
        [ "${#differ[@]}" -eq 0 ] || fail "$arch: built again, these differ: ${differ[*]}"
    done
fi
