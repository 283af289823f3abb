#!/bin/sh
# Builds (once) the root filesystem of the test image for tests/namespace/docker_containers.rs: this
# host's own curl, from Debian's package, with the shared libraries it links and nothing else,
# as a tar that `docker import` turns into an image. No registry is involved.
#
# Prints the tarball's path. It is cached in IMDS_TUN_TEST_CACHE (default
# /var/cache/imds-tun-tests, outside the clone), named by a hash of its inputs (this script,
# curl and every library), so an upgraded curl or library makes a new one; older ones are
# removed. Takes about a second when it builds, nothing when cached.
set -eu

cache=${IMDS_TUN_TEST_CACHE:-/var/cache/imds-tun-tests}
curl=$(command -v curl)

# curl, the dynamic loader and every library ldd resolves (the vDSO has no file).
files=$( { echo "$curl"; ldd "$curl" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'; } | sort -u)

# shellcheck disable=SC2086 # one path per word, none with spaces
key=$(cat "$0" $files | sha256sum | cut -c1-16)
tarball="$cache/curl-rootfs-$key.tar"
if [ -f "$tarball" ]; then
    echo "$tarball"
    exit 0
fi

mkdir -p "$cache"
partial=$(mktemp "$cache/.curl-rootfs.XXXXXX")
trap 'rm -f "$partial"' EXIT
# -h stores each file's content under the path given (a /lib symlink becomes a directory);
# --absolute-names off by default: leading slashes are dropped, so paths are image-relative.
# shellcheck disable=SC2086
tar -c -h -f "$partial" $files 2>/dev/null
mv "$partial" "$tarball"
trap - EXIT
for old in "$cache"/curl-rootfs-*.tar; do
    [ "$old" = "$tarball" ] || rm -f "$old"
done
echo "$tarball"
