#!/usr/bin/env bash
# End-to-end test of compression=auto across an emulated link: two network
# namespaces joined by a veth pair shaped to 200 Mbit/s with 1 ms of delay
# each way (bench/linkemu.sh), vmig bench's sender in one and its receiver in
# the other. On that slow link, auto must compress most normal pages of a
# text-heavy image; on plain loopback, an image of random pages must go
# (nearly) all uncompressed. Both migrations verified.
#
# Run by meson with VMIG=<path to the vmig binary>, as root. Exit 0 pass,
# 1 fail, 77 skip (with the reason on stderr: no namespaces here). Without
# sch_netem in the kernel the link has no delay (said on stdout). Leaves no
# namespace, process or file behind. About 10 s.
#
# Checks of several commands read `check DESCRIPTION eval '...'`, in single
# quotes on purpose (expanded when the check runs); cleanup is
# called indirectly (trap).
# shellcheck disable=SC2016,SC2317
set -u -o pipefail

# skip, pass, fail, check, run, json_last, finish (cleanup is this test's own)
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

VMIG=${VMIG:-}
[ -n "$VMIG" ] || skip "VMIG is not set (meson sets it to the vmig binary)"
[ -x "$VMIG" ] || skip "VMIG=$VMIG is not an executable"
LINKEMU=$(cd "$(dirname "$0")/../../bench" && pwd)/linkemu.sh
[ -x "$LINKEMU" ] || skip "$LINKEMU is not an executable"
for tool in python3 timeout mktemp; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
done

# Without sch_netem the link is made without the delay (said below): the
# assertions are about what auto chooses at 200 Mbit/s, which 1 ms of delay
# hardly changes.
export LINKEMU_DELAY=optional
RATE=200000000 # bit/s
DST_ADDR=10.201.0.2
NAME=vmigtc$$
T=$(mktemp -d "${TMPDIR:-/tmp}/vmig-compress.XXXXXX") || skip "mktemp -d failed"
# The receivers' destination files: memory, like the default /dev/shm.
DEST=$(mktemp -d /dev/shm/vmig-compress.XXXXXX) || skip "cannot make a directory in /dev/shm"
UP=0
cleanup() {
    [ "$UP" = 0 ] || "$LINKEMU" down "$NAME" 2>/dev/null
    rm -rf "$T" "$DEST"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

features=$("$LINKEMU" check 2>"$T/check.err")
case $? in
0) ;;
77) skip "$(grep -v '^linkemu.sh: links can' "$T/check.err" | tail -n 1)" ;;
*) echo "FAIL - linkemu.sh check failed: $(cat "$T/check.err")" && exit 1 ;;
esac


# ---------------------------------------------------------------- the link
UP=1
run up "$LINKEMU" up "$NAME" 200mbit 1ms
if ! check "linkemu.sh up $NAME 200mbit 1ms: exit 0, both namespaces exist" \
    eval '[ "$RC" = 0 ] && [ -e "/run/netns/$NAME-src" ] && [ -e "/run/netns/$NAME-dst" ]'; then
    cat "$T/up.err"
    finish
fi
if [[ " $features " != *" netem "* ]]; then
    echo "# no sch_netem in this kernel: the link has no delay"
fi
run measure "$LINKEMU" measure "$NAME" 1 1
check "the link carries 80..101% of 200 Mbit/s (TCP, 1 s)" python3 -c '
import sys
r = float(sys.argv[1] or 0)
sys.exit(not 0.80 * float(sys.argv[2]) <= r <= 1.01 * float(sys.argv[2]))' \
    "$(tail -n 1 "$T/measure.out")" "$RATE"
echo "# measured: $(tail -n 1 "$T/measure.err")"

COMP=(--compression auto)
# (The help into a variable first: grep -q stops reading at the match, and
# under pipefail the SIGPIPE of a help longer than grep's read would fail.)
HELP=$("$VMIG" bench --help 2>/dev/null)
if ! grep -qE '^ +compression +' <<<"$HELP"; then
    fail "vmig has a 'compression' parameter (vmig bench --help lists none): the runs below go" \
        "without --compression, and the checks of what auto chose fail"
    COMP=()
fi

# ---------------------------------------------------------------- 200 Mbit/s
run slow "$VMIG" bench --size 256M --mix 50/50/0 --channels 2 --dest-dir "$DEST" \
    --netns-src "$NAME-src" --netns-dst "$NAME-dst" --host "$DST_ADDR" ${COMP[@]+"${COMP[@]}"} \
    --json --quiet
check "200 Mbit/s, 256M of text and zero pages: exit 0" [ "$RC" = 0 ] || head -c 600 "$T/slow.err"
check "200 Mbit/s: verified, all pages accounted for" \
    json_last slow "d['ok'] is True and d['bench']['verified'] is True and
               d['normal_pages'] == 32768 and d['zero_pages'] == 32768"
check "200 Mbit/s: the bytes crossed the shaped link (seconds >= 0.9 x wire bits / rate)" \
    json_last slow "d['seconds'] >= 0.9 * d['wire_bytes'] * 8 / $RATE"
check "200 Mbit/s: auto compressed most normal pages (packets of codecs other than none > none's)" \
    json_last slow "sum(c['packets'] for k, c in d['codecs'].items() if k != 'none') >
               d['codecs'].get('none', {}).get('packets', 0) and
               sum(c['pages'] for c in d['codecs'].values()) == d['normal_pages']"
python3 - "$T/slow.out" <<'EOF' || true
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("# 200 Mbit/s: %.2f s, %.1f MiB on the wire, codecs %s" % (
    d["seconds"], d["wire_bytes"] / 2**20,
    {k: (c["packets"], c["pages"]) for k, c in d.get("codecs", {}).items()}))
EOF

# ---------------------------------------------------------------- loopback
run fast "$VMIG" bench --size 256M --mix 0/0/100 --channels 2 --dest-dir "$DEST" \
    ${COMP[@]+"${COMP[@]}"} --json --quiet
check "loopback, 256M of random pages: exit 0" [ "$RC" = 0 ] || head -c 600 "$T/fast.err"
check "loopback: verified, all pages accounted for" \
    json_last fast "d['ok'] is True and d['bench']['verified'] is True and d['normal_pages'] == 65536"
check "loopback, random pages: auto sent at least 95% of them uncompressed (none)" \
    json_last fast "d['codecs'].get('none', {}).get('pages', 0) >= 0.95 * d['normal_pages']"
python3 - "$T/fast.out" <<'EOF' || true
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("# loopback: %.2f s, codecs %s" % (
    d["seconds"], {k: (c["packets"], c["pages"]) for k, c in d.get("codecs", {}).items()}))
EOF

# ---------------------------------------------------------------- teardown
run down "$LINKEMU" down "$NAME"
if check "linkemu.sh down: exit 0, no namespace left" \
    eval '[ "$RC" = 0 ] && [ ! -e "/run/netns/$NAME-src" ] && [ ! -e "/run/netns/$NAME-dst" ]'; then
    UP=0
fi
check "no destination file left" [ -z "$(ls -A "$DEST")" ]
finish
