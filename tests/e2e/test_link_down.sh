#!/usr/bin/env bash
# End-to-end test of a link that goes down in the middle of a migration: two
# network namespaces joined by a veth pair shaped to 200 Mbit/s
# (bench/linkemu.sh), vmig bench's sender in one and its receiver in the
# other, 4 channels.
#   - The link goes down for 3 s while the pages flow (linkemu.sh cut, both
#     ends of the veth pair down: every packet in flight is lost) and comes
#     back: TCP retransmits, the migration completes and is verified, and it
#     took the outage longer than the transfer alone.
#   - The link goes down for longer than the source's connect-timeout (1 s
#     here): the source's writes time out, the migration fails with the
#     reason on both sides (exit 1), nobody hangs once the link is back.
#
# Run by meson with VMIG=<path to the vmig binary>, as root. Exit 0 pass,
# 1 fail, 77 skip (no network namespaces here). Leaves no namespace, process
# or file behind. About 25 s.
# shellcheck disable=SC2016,SC2317
set -u

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
lib_init link-down python3 timeout mktemp grep
LINKEMU=$here/../../bench/linkemu.sh
[ -x "$LINKEMU" ] || skip "$LINKEMU is not an executable"
export LINKEMU_DELAY=optional # the delay does not matter here
"$LINKEMU" check >/dev/null 2>"$T/check.err"
case $? in
0) ;;
77) skip "$(tail -n 1 "$T/check.err")" ;;
*) echo "FAIL - linkemu.sh check failed: $(cat "$T/check.err")" && exit 1 ;;
esac

RATE=200000000 # bit/s
NAME=vmigld$$
DST_ADDR=10.201.0.2
DEST=$(mktemp -d /dev/shm/vmig-link-down.XXXXXX) || skip "cannot make a directory in /dev/shm"
UP=0
cleanup_hook() {
    [ "$UP" = 0 ] || "$LINKEMU" down "$NAME" 2>/dev/null
    rm -rf "$DEST"
}

run up "$LINKEMU" up "$NAME" 200mbit 0
check "linkemu.sh up: a 200 Mbit/s link between two namespaces" [ "$RC" = 0 ] || finish
UP=1


# outage NAME AFTER SECONDS ARGS...: vmig bench across the link, which goes
# down AFTER seconds into the run for SECONDS; status in RC.
outage() {
    local name=$1 after=$2 secs=$3
    shift 3
    timeout -k 5 90 "$VMIG" bench --mix 0/0/100 --channels 4 --dest-dir "$DEST" \
        --netns-src "$NAME-src" --netns-dst "$NAME-dst" --host "$DST_ADDR" --json --quiet \
        "$@" >"$T/$name.out" 2>"$T/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    sleep "$after"
    "$LINKEMU" cut "$NAME" 2>>"$T/link.err"
    sleep "$secs"
    "$LINKEMU" mend "$NAME" 2>>"$T/link.err"
    if wait_exit "$pid" 60; then RC=$WRC; else RC=timeout; fi
}

# 96 MiB of random pages: about 4 s at 200 Mbit/s, cut after 1.5 s.
outage short 1.5 3 --size 96M
check "a 3 s outage mid-migration: exit 0" [ "$RC" = 0 ] || head -c 600 "$T/short.err"
check "a 3 s outage: verified, every page arrived" \
    json_last short "d['ok'] is True and d['bench']['verified'] is True and
                     d['normal_pages'] == 24576"
check "a 3 s outage: the migration took the outage longer (>= transfer + 2.5 s)" \
    json_last short "d['seconds'] >= d['wire_bytes'] * 8 / $RATE + 2.5"
python3 - "$T/short.out" <<'PY' || true
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("# 3 s outage: %.2f s for %.1f MiB on the wire" % (d["seconds"], d["wire_bytes"] / 2**20))
PY

outage long 1.5 4 --size 96M --connect-timeout 1000
check "an outage longer than connect-timeout: exit 1 (not a hang: $RC)" [ "$RC" = 1 ]
check "an outage longer than connect-timeout: the source says its writes timed out" \
    eval 'json_last long "d[\"ok\"] is False and \"timed out\" in d[\"error\"]" ||
          grep -q "timed out" "$T/long.err"'

run down "$LINKEMU" down "$NAME"
check "linkemu.sh down: no namespace left" eval '[ "$RC" = 0 ] && [ ! -e "/run/netns/$NAME-src" ]'
UP=0
finish
