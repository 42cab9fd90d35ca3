#!/usr/bin/env bash
# make demo: a running KVM guest (minivm, 2 GiB, 2 vCPUs) migrates live
# between two minivm processes over a unix socket on this machine, with
# vmig's progress bar and summary, the destination's page-by-page check and
# the guest's own verdict. Without a usable /dev/kvm (or without the guest
# binary) it says why and runs the synthetic live workload instead.
#
# Usage: scripts/demo.sh BUILD_DIR [SIZE]   (SIZE: guest RAM or image, default 2G)
set -u
BUILD=${1:-build}
SIZE=${2:-2G}
MINIVM=$BUILD/tools/minivm/minivm
VMIG=$BUILD/tools/vmig/vmig

synthetic() {
    echo "demo: $1; running the synthetic live workload instead"
    echo "demo: (vmig bench --live: writer threads dirty 100 MB/s of a $SIZE image)"
    exec "$VMIG" bench --live --size "$SIZE" --hot-set 512M --dirty-rate 100000000 \
        --max-bandwidth 1000000000 --progress
}

[ -x "$MINIVM" ] && [ -r "$BUILD/tools/minivm/guest/guest.bin" ] ||
    synthetic "minivm or its guest binary is not built"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || synthetic "/dev/kvm is not usable here"
why=$("$MINIVM" probe 2>&1 >/dev/null) || synthetic "KVM does not work here: ${why:-minivm probe failed}"

T=$(mktemp -d "${TMPDIR:-/tmp}/vmig-demo.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
echo "demo: a $SIZE minivm guest, vCPU 0 dirtying 25000 pages/s (90% over a 512 MiB hot"
echo "demo: set), vCPU 1 checking pages against the guest's generation table, migrates"
echo "demo: live after 2 s to a second minivm, which checks every page before resuming it"
echo
"$MINIVM" run --mem "$SIZE" --vcpus 2 --dirty-rate 25000 --hot-set 512M \
    --migrate-to "unix:$T/demo.sock" --migrate-after 2s --verify-dest --progress
rc=$?
echo
if [ "$rc" = 0 ]; then
    echo "demo: done: migrated live, every page verified, the guest ran on without a failure"
else
    echo "demo: FAILED with exit code $rc (see 'minivm --help' for the codes)"
fi
exit "$rc"
