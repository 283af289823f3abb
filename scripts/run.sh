#!/usr/bin/env bash
# The one command that runs imds-tun on its embedded defaults: build the release binary, then
# run it as root (directly when already root, as on CI machines without sudo; through sudo
# otherwise). Extra arguments are passed to imds-tun, e.g. `bash scripts/run.sh --imdsv2 required`.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build --release --locked
if [ "$(id -u)" -eq 0 ]; then
    exec ./target/release/imds-tun "$@"
fi
exec sudo ./target/release/imds-tun "$@"
