#!/usr/bin/env bash
# The one command that runs the whole imds-tun test suite on a fresh Debian machine:
# system packages, /dev/net/tun, formatting, clippy, rustdoc, cargo deny, then every test target.
#
# Assumes only: Debian, a Rust toolchain with cargo, CPython 3.11 with pip, apt reachable.
# Root is needed for the namespace/TUN tests: a non-root user with sudo is elevated (below);
# without root and without sudo (or with IMDS_TUN_TEST_NO_SUDO=1) they print SKIPPED, and with
# CI=true they fail instead (see docs/testing.md).
set -euo pipefail

cd "$(dirname "$0")/.."

# The same command for root (CI, these machines: no sudo installed) and for a workstation user
# with sudo: a non-root run elevates itself, keeping the user's Rust toolchain.
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && [ -z "${IMDS_TUN_TEST_NO_SUDO:-}" ]; then
    exec sudo env PATH="$PATH" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" \
        RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CI="${CI:-}" \
        IMDS_TUN_ARM64="${IMDS_TUN_ARM64:-0}" IMDS_TUN_CHECK_REPRODUCIBLE="${IMDS_TUN_CHECK_REPRODUCIBLE:-1}" \
        FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash "$0" "$@"
fi

# Each step's time is printed when it ends and again in a table at the end, so a closing note
# (and whoever trims the run under its 45 minutes) can see where the minutes go.
step_names=()
step_seconds=()
step_name=""
step_started=""
end_step() {
    if [ -n "$step_started" ]; then
        local took=$(($(date +%s) - step_started))
        step_names+=("$step_name")
        step_seconds+=("$took")
        printf '(%s: %ss)\n' "$step_name" "$took"
    fi
    step_started=""
}
step() {
    end_step
    step_name="$*"
    step_started=$(date +%s)
    printf '\n==> %s\n' "$*"
}
print_step_times() {
    end_step
    printf '\nTime per step (s):\n'
    local i
    for i in "${!step_names[@]}"; do
        printf '%6s  %s\n' "${step_seconds[$i]}" "${step_names[$i]}"
    done
}

started=$(date +%s)

if [ "$(id -u)" -eq 0 ]; then
    step "system packages (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        iproute2 iputils-ping curl procps util-linux fdisk e2fsprogs openssl hping3 netcat-openbsd python3 jq >/dev/null
    # tests/namespace/exec.rs: pasta for `imds-tun exec --network pasta`; boto3, pytest and
    # libseccomp's binding (a refusal inside the user namespace) for Debian's /usr/bin/python3,
    # which uid 65534 can run (the .venv's Python may live under /root).
    apt-get install -y -qq --no-install-recommends passt python3-boto3 python3-pytest python3-seccomp >/dev/null
    # The static binary (scripts/package.sh) links against musl and compiles aws-lc's C with
    # musl-gcc. package.sh would install it too; here it rides on the update above.
    apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
    # Issue 31's artefacts: Debian's rpm tools build and read the RPMs; ruby checks the Homebrew
    # formula's syntax; the container image carries Debian's CA bundle. With IMDS_TUN_ARM64=1,
    # qemu-user runs the arm64 binary (tests/deploy/cross_artifacts.rs); the arm64 cross toolchain
    # (gcc-aarch64-linux-gnu, musl-dev:arm64) is package.sh's to install, as it adds the arm64
    # architecture to dpkg first.
    apt-get install -y -qq --no-install-recommends rpm ruby ca-certificates >/dev/null
    if [ "${IMDS_TUN_ARM64:-0}" = 1 ]; then
        apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
    fi
    # Deployment checks (tests/deploy_*.rs): `vagrant validate` and shellcheck. If they cannot be
    # installed, those tests skip, or fail under CI=true.
    apt-get install -y -qq --no-install-recommends vagrant shellcheck >/dev/null \
        || echo "warning: could not install vagrant/shellcheck; the deploy tests will say so"
    # Real Docker for tests/namespace/docker_containers.rs: Debian's docker.io (dockerd,
    # containerd, runc) and nft to read the packet filter. The test starts a private dockerd
    # inside its own network namespace and never uses a system one, so the package must not
    # start a daemon on the host (without systemd its init script would, adding iptables rules
    # to the host): service starts are denied while it installs, unless a policy-rc.d already
    # decides that.
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1; then
        policy=/usr/sbin/policy-rc.d
        added_policy=""
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 0755 "$policy"
            added_policy=yes
        fi
        apt-get install -y -qq --no-install-recommends docker.io nftables >/dev/null \
            || echo "warning: could not install docker.io; tests/namespace/docker_containers.rs will say so"
        [ -z "$added_policy" ] || rm -f "$policy"
    fi
    # cloud-init for tests/namespace/cloud_init.rs, without installing it: the package would
    # enable its boot services on this machine. Its .deb is downloaded and unpacked into a cache
    # outside the clone, keyed by its version, and run from there with PYTHONPATH
    # (tests/common/cloud_init.rs); only the python3-* modules it depends on are installed.
    # If this fails, those tests say so: SKIPPED on a workstation, failed under CI=true.
    cloud_init_cache=/var/cache/imds-tun-test
    cloud_init_version=$(apt-cache policy cloud-init | awk '$1 == "Candidate:" { print $2 }')
    if [ -z "$cloud_init_version" ] || [ "$cloud_init_version" = "(none)" ]; then
        echo "warning: apt knows no cloud-init package; tests/namespace/cloud_init.rs will say so"
    else
        cloud_init_dir="$cloud_init_cache/cloud-init-$cloud_init_version"
        mapfile -t cloud_init_modules < <(apt-cache depends --no-recommends --no-suggests cloud-init \
            | awk '$1 ~ /Depends:$/ && $2 ~ /^python3-/ { print $2 }' | sort -u)
        apt-get install -y -qq --no-install-recommends "${cloud_init_modules[@]}" >/dev/null \
            || echo "warning: could not install cloud-init's python3 modules; tests/namespace/cloud_init.rs will say so"
        if [ ! -d "$cloud_init_dir/usr/lib/python3/dist-packages/cloudinit" ]; then
            mkdir -p "$cloud_init_cache"
            download=$(mktemp -d "$cloud_init_cache/download.XXXXXX")
            # apt drops to _apt to download; let it write here (no "unsandboxed" warning).
            chown _apt "$download" 2>/dev/null || true
            if (cd "$download" && apt-get download -qq "cloud-init=$cloud_init_version" >/dev/null) \
                && dpkg-deb -x "$download"/cloud-init_*.deb "$download/tree"; then
                rm -rf "$cloud_init_dir"
                mv "$download/tree" "$cloud_init_dir"
            else
                echo "warning: could not download or unpack cloud-init $cloud_init_version; tests/namespace/cloud_init.rs will say so"
            fi
            rm -rf "$download"
        fi
        if [ -d "$cloud_init_dir" ]; then
            ln -sfn "cloud-init-$cloud_init_version" "$cloud_init_cache/cloud-init"
            echo "cloud-init $cloud_init_version: $cloud_init_dir (unpacked, not installed)"
        fi
    fi
else
    step "system packages: not root, skipping apt-get (the namespace tests will be skipped, or fail under CI=true)"
fi

step "/dev/net/tun"
if [ ! -c /dev/net/tun ]; then
    if [ "$(id -u)" -eq 0 ]; then
        modprobe tun 2>/dev/null || true
        if [ ! -c /dev/net/tun ]; then
            mkdir -p /dev/net
            mknod /dev/net/tun c 10 200
            chmod 0666 /dev/net/tun
        fi
        echo "created /dev/net/tun"
    else
        echo "/dev/net/tun is missing and this is not root: TUN tests cannot run"
    fi
else
    echo "present"
fi

# --- Python tooling: moto's STS server for tests/sdk/sts_e2e.rs --------------------------------
step "moto server (.venv)"
if [ ! -x .venv/bin/moto_server ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q 'moto[server]'
fi
.venv/bin/moto_server --help >/dev/null && echo "moto_server: .venv/bin/moto_server"

# Real cloud clients for tests/namespace/gce_clients.rs, azure_clients.rs and
# container_clients.rs: Google's and Microsoft's Python libraries, boto3 and the AWS CLI, and
# Google's and AWS's Node libraries (versions pinned by the lockfile). tests/namespace/metrics.rs
# parses the --metrics exposition with Prometheus' own Python parser (prometheus_client).
step "cloud clients (.venv, tests/clients/node_modules)"
# PyYAML: tests/action/runner.py reads action.yml as a runner would (tests/namespace/ci_action.rs).
if ! .venv/bin/python -c 'import google.auth, requests, azure.identity, boto3, prometheus_client, yaml' \
    2>/dev/null || [ ! -x .venv/bin/aws ]; then
    .venv/bin/pip install -q google-auth requests azure-identity boto3 awscli prometheus_client pyyaml
fi
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -d tests/clients/node_modules/google-auth-library ] \
    || [ ! -d tests/clients/node_modules/@aws-sdk/credential-provider-imds ] \
    || [ ! -d tests/clients/node_modules/@aws-sdk/credential-provider-http ]; then
    (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "google-auth, azure-identity, boto3, awscli, prometheus_client, pyyaml: .venv; google-auth-library, @aws-sdk/credential-provider-imds, @aws-sdk/credential-provider-http: tests/clients/node_modules"
# ----------------------------------------------------------------------------------------------

failed=()

step "cargo fmt --all -- --check"
cargo fmt --all -- --check || failed+=("cargo fmt")

step "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings || failed+=("cargo clippy")

# Prose that names code must name code that exists: rustdoc fails on a doc link to an item that
# is gone (private items included); tests/docs/docs_prose.rs covers the code spans that are not links.
step "cargo doc --no-deps --document-private-items (rustdoc warnings are errors)"
RUSTDOCFLAGS='-D warnings' cargo doc --no-deps --document-private-items --locked \
    || failed+=("cargo doc")

# The dependency tree against deny.toml: licenses, duplicate versions, crates.io only, and known
# vulnerabilities when the RustSec database (a git repository on github.com) can be fetched.
step "cargo deny check (deny.toml)"
if ! command -v cargo-deny >/dev/null 2>&1; then
    cargo install cargo-deny --locked || failed+=("cargo install cargo-deny")
fi
if command -v cargo-deny >/dev/null 2>&1; then
    cargo deny --locked check bans licenses sources || failed+=("cargo deny")
    if cargo deny fetch db >/dev/null 2>&1; then
        cargo deny --locked --offline check advisories || failed+=("cargo deny advisories")
    else
        # Not a failure: the machine cannot reach github.com, and an old copy of the database
        # would pass silently. Said in the log instead.
        echo "advisories: NOT CHECKED (cannot fetch github.com/RustSec/advisory-db from here)"
    fi
fi

# The shipped artefacts, which tests/deploy/{package,cross,rpm,release}_artifacts.rs and
# tests/namespace/docker_image.rs check (and, under CI=true, fail without): the static musl
# binary, the .deb and the .rpm, then dist/ with SHA256SUMS and the SBOM (scripts/release.sh
# runs scripts/package.sh). Built before the tests that read them.
# amd64 always; arm64 (a second cold musl build with fat LTO, the cross toolchain and qemu-user)
# with IMDS_TUN_ARM64=1: with it the run would come too close to the 45 minutes CI may take
# (docs/packaging.md, "Build minutes"). The tests expect exactly what IMDS_TUN_ARCHES names.
# --check-reproducible=amd64 builds the amd64 artefacts a second time from scratch and fails
# unless they are byte-identical (IMDS_TUN_CHECK_REPRODUCIBLE=0 leaves it out on a workstation).
arches=(amd64)
if [ "${IMDS_TUN_ARM64:-0}" = 1 ]; then
    arches+=(arm64)
fi
export IMDS_TUN_ARCHES="${arches[*]}"
release_args=("${arches[@]}")
if [ "${IMDS_TUN_CHECK_REPRODUCIBLE:-1}" != 0 ]; then
    release_args+=(--check-reproducible=amd64)
fi
step "scripts/release.sh ${release_args[*]} (static binary, .deb, .rpm of each; dist/ with SHA256SUMS and the SBOM)"
bash scripts/release.sh "${release_args[@]}" || failed+=("scripts/release.sh")

# Keep going after a failed lint step so the test results are always visible.
step "cargo test --all-targets --locked --no-fail-fast"
cargo test --all-targets --locked --no-fail-fast || failed+=("cargo test")

# The arm64 checks are #[ignore]d unless arm64 was built: then they run, and must pass.
if [ "${IMDS_TUN_ARM64:-0}" = 1 ]; then
    step "cargo test --test deploy cross_artifacts -- --ignored (the arm64 artefacts under qemu-user)"
    cargo test --locked --test deploy cross_artifacts -- --ignored \
        || failed+=("cargo test --test deploy cross_artifacts -- --ignored")
fi

# Without `sts` (the only default feature; the fuzz build uses it this way) the crate must still
# build and its logic hold. The library's unit tests are enough: the end-to-end tests exercise
# the same binary paths, take minutes, and three of them need the AWS SDK's client (they declare
# required-features = ["sts"] and would be skipped anyway).
step "cargo test --no-default-features --lib --locked"
cargo test --no-default-features --lib --locked || failed+=("cargo test --no-default-features")

# --- The benchmark keeps measuring (docs/performance.md) ---------------------------------------
# A quick run on the shipped static binary. The numbers are not judged (shared machines; the
# ratios in docs/performance.md come from quiet runs); what must hold is that bench.sh still
# measures every cell of both paths, counts instructions where it should, and leaves nothing.
step "scripts/bench.sh --quick on the static binary (every cell measured, nothing left behind)"
if [ "$(id -u)" -eq 0 ]; then
    if bench_table=$(bash scripts/bench.sh --quick --binary target/x86_64-unknown-linux-musl/release/imds-tun); then
        printf '%s\n' "$bench_table"
        bash scripts/bench-check.sh <<<"$bench_table" || failed+=("scripts/bench.sh: incomplete table")
    else
        failed+=("scripts/bench.sh")
    fi
    if ip netns list | grep -q '^imdstun-bench'; then
        failed+=("scripts/bench.sh left a network namespace")
    fi
elif [ "${CI:-}" = true ]; then
    failed+=("scripts/bench.sh needs root")
else
    echo "SKIPPED: scripts/bench.sh needs root"
fi

# --- macOS: the port must type-check for both Apple targets (issue 10) ------------------------
# Without `sts`: aws-lc-sys's C cannot be cross-built here (no Apple toolchain), and the AWS
# crates are platform-neutral Rust above it. A build that does not type-check fails the run.
for target in x86_64-apple-darwin aarch64-apple-darwin; do
    step "cargo clippy --target $target --no-default-features --all-targets -- -D warnings"
    if rustup target list --installed | grep -qx "$target" || rustup target add "$target"; then
        cargo clippy --target "$target" --no-default-features --all-targets --locked -- -D warnings \
            || failed+=("clippy $target")
    else
        failed+=("rustup target add $target")
    fi
done

# --- Fuzzing: both targets, bounded, on the committed corpus (docs/hardening.md) --------------
# FUZZ_SECONDS=0 skips running (the targets are still built, so they cannot rot).
# -O at opt-level 1: a cold build takes about as long as --dev (~9.5 min on 2 busy cores, against
# ~21 min at the default opt-level 3) and runs as fast as opt-level 3 (--dev is ~20x slower).
# RUSTC_BOOTSTRAP=1 lets stable rustc take cargo-fuzz's sanitizer flags.
# As root the build goes to a target directory outside the clone, one per toolchain (rustc's
# version line is the key; cargo's own fingerprints decide what to rebuild within it), so a run in
# a fresh clone rebuilds only what changed: about 5 of a cold run's minutes. A new toolchain
# starts a new directory and removes the older ones.
fuzz_seconds=${FUZZ_SECONDS:-30}
fuzz_env=(env RUSTC_BOOTSTRAP=1 CARGO_PROFILE_RELEASE_OPT_LEVEL=1)
fuzz_target_dir=target
if [ "$(id -u)" -eq 0 ]; then
    fuzz_cache=/var/cache/imds-tun-test
    fuzz_key=$(rustc -vV | sha256sum | cut -c1-16)
    mkdir -p "$fuzz_cache"
    find "$fuzz_cache" -maxdepth 1 -name 'fuzz-target-*' ! -name "fuzz-target-$fuzz_key" \
        -exec rm -rf {} +
    fuzz_target_dir="$fuzz_cache/fuzz-target-$fuzz_key"
    echo "fuzz target directory: $fuzz_target_dir"
fi
step "fuzz: build both targets (cargo fuzz build -O, opt-level 1)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || failed+=("cargo install cargo-fuzz")
fi
fuzz_started=$(date +%s)
if command -v cargo-fuzz >/dev/null 2>&1 \
    && (cd fuzz && "${fuzz_env[@]}" cargo fuzz build -O --target-dir "$fuzz_target_dir"); then
    echo "built in $(($(date +%s) - fuzz_started))s"
    for target in packet_ingress http_request; do
        [ "$fuzz_seconds" -gt 0 ] || break
        step "fuzz: $target for ${fuzz_seconds}s"
        # New inputs go to a scratch directory; the committed corpus is only read.
        scratch=$(mktemp -d)
        log=$(mktemp)
        if (cd fuzz && "${fuzz_env[@]}" cargo fuzz run -O --target-dir "$fuzz_target_dir" "$target" "$scratch" "corpus/$target" -- \
            -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
            >"$log" 2>&1; then
            grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 3 "$log"
        else
            tail -n 60 "$log"
            echo "fuzz target $target FAILED; the crashing input:"
            # The artifact directory dies with a CI machine: print the input itself too.
            grep -o 'Test unit written to .*' "$log" | sed 's/^Test unit written to //' \
                | while read -r artifact; do
                    echo "$artifact (base64; replay: base64 -d > crash && cargo fuzz run $target crash):"
                    base64 "$artifact" | head -c 65536
                done || true
            failed+=("fuzz $target")
        fi
        rm -rf "$scratch" "$log"
    done
else
    failed+=("cargo fuzz build")
fi

# --- The VM test: a real guest, a real `vagrant up`, real systemd (docs/testing.md) -------------
# Root only: it installs QEMU, libvirt and vagrant-libvirt, builds (once per machine, cached in
# /var/cache/imds-tun-vm) a Debian 12 guest image, and runs the guest under software emulation.
# Without root it says SKIPPED, or fails under CI=true.
step "VM test (scripts/vm-test.sh)"
bash scripts/vm-test.sh || failed+=("VM test")

print_step_times
elapsed=$(($(date +%s) - started))
if [ "${#failed[@]}" -gt 0 ]; then
    printf '\nFAILED (%ss): %s\n' "$elapsed" "${failed[*]}"
    exit 1
fi
printf '\nOK: fmt, clippy, rustdoc, cargo deny, all tests, the fuzz runs and the VM test passed (%ss)\n' "$elapsed"
