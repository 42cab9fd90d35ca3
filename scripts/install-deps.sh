#!/bin/sh
# Install the Debian packages vmig needs to build, test and benchmark.
# The one list of build dependencies. As root it installs what is missing;
# otherwise it prints the apt-get line to run.
set -eu
PKGS="gcc clang make meson ninja-build pkg-config python3 libxxhash-dev libisal-dev \
zlib1g-dev libzstd-dev liblz4-dev \
libclang-rt-14-dev iproute2 procps libgnutls28-dev gnutls-bin"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "vmig needs these Debian packages:$missing" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
