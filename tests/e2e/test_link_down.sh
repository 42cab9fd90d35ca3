#!/usr/bin/env bash
# End-to-end test of a link that goes down in the middle of a migration: two
# network namespaces joined by a veth pair shaped to 200 Mbit/s
# (bench/linkemu.sh), vmig bench's sender in one and its receiver in the
# other, 4 channels.
#   - The link goes down for 3 s while the pages flow (linkemu.sh cut, both
#     ends of the veth pair down: every packet in flight is lost) and comes
#     back: TCP retransmits, the migration completes and is verified, and it
#     took the outage longer than the transfer alone.
#   - The link goes down for 10 s, longer than the source's connect-timeout
#     (1 s here): the source's writes time out and it fails with the reason
#     before the link comes back.
#   - vmig recv alone, its source behind a link that stays down: TCP
#     keepalive gives the silent source up 1 + 5 s after its last packet,
#     with the reason, before the link comes back.
#
# Run by meson with VMIG=<path to the vmig binary>, as root. Exit 0 pass,
# 1 fail, 77 skip (no network namespaces here). Leaves no namespace, process
# or file behind. About 45 s.
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
    # ENDED_DOWN: whether vmig bench ended while the link was still down
    local n=$((secs * 10))
    while [ $n -gt 0 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1
        n=$((n - 1))
    done
    kill -0 "$pid" 2>/dev/null && ENDED_DOWN=0 || ENDED_DOWN=1
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

# connect-timeout 1 s: the source's writes time out after 1 s; the
# destination's keepalive gives up the silent source 1 + 5 s after its
# last packet. The link stays down 10 s: both must be done before it is back.
outage long 1.5 10 --size 96M --connect-timeout 1000
check "an outage longer than connect-timeout: exit 1 (not a hang: $RC)" [ "$RC" = 1 ]
check "an outage longer than connect-timeout: the source says its writes timed out" \
    eval 'json_last long "d[\"ok\"] is False and \"timed out\" in d[\"error\"]" ||
          grep -q "timed out" "$T/long.err"'
check "a link that stays down: the source gave up before it came back" [ "$ENDED_DOWN" = 1 ]

# The destination alone, as 'vmig recv' in its namespace, facing a 'vmig send'
# whose link goes away for good: the source's writes time out after 1 s, but
# its goodbye (FIN) is lost with the link; only TCP keepalive (idle 1 s, then
# 5 unanswered probes a second apart) tells the destination, about 6 s after
# the last packet. Without it, it would wait for the link forever.
head -c 96M /dev/urandom >"$DEST/img" || skip "cannot write 96 MiB in /dev/shm"
timeout -k 5 60 ip netns exec "$NAME-dst" "$VMIG" recv --no-progress --connect-timeout 1000 \
    "tcp:$DST_ADDR:4444" "$DEST/copy" >"$T/kr.out" 2>"$T/kr.err" &
KR=$!
PIDS+=("$KR")
sleep 0.5
timeout -k 5 60 ip netns exec "$NAME-src" "$VMIG" send --no-progress --connect-timeout 1000 \
    -c 4 "$DEST/img" "tcp:$DST_ADDR:4444" >"$T/ks.out" 2>"$T/ks.err" &
KS=$!
PIDS+=("$KS")
sleep 1.5
"$LINKEMU" cut "$NAME" 2>>"$T/link.err"
T_CUT=$(now)
n=150 # the link stays down 15 s at most
while [ $n -gt 0 ] && kill -0 "$KR" 2>/dev/null; do
    sleep 0.1
    n=$((n - 1))
done
T_END=$(now)
kill -0 "$KR" 2>/dev/null && KR_DOWN=0 || KR_DOWN=1
"$LINKEMU" mend "$NAME" 2>>"$T/link.err"
wait_exit "$KR" 20 && KR_RC=$WRC || KR_RC=timeout
wait_exit "$KS" 20 && KS_RC=$WRC || KS_RC=timeout
python3 -c 'import sys; print("# vmig recv gave up %.1f s after the cut" % (float(sys.argv[2]) - float(sys.argv[1])))' \
    "$T_CUT" "$T_END"
check "a silent source behind a dead link: vmig recv gave up while the link was down" \
    [ "$KR_DOWN" = 1 ]
check "... with exit 1 ($KR_RC) and the reason (keepalive)" \
    eval '[ "$KR_RC" = 1 ] && grep -q "stopped answering" "$T/kr.err"' ||
    head -c 600 "$T/kr.err"
check "... and vmig send failed too (exit 1: $KS_RC)" [ "$KS_RC" = 1 ]

run down "$LINKEMU" down "$NAME"
check "linkemu.sh down: no namespace left" eval '[ "$RC" = 0 ] && [ ! -e "/run/netns/$NAME-src" ]'
UP=0
finish
