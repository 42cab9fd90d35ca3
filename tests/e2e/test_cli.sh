#!/usr/bin/env bash
# End-to-end test of the vmig command line: help and usage errors, send/recv
# of a memory image file over tcp and unix sockets (compared byte for byte
# with cmp), reuse of an existing OUTPUT, the --json summary, refusals and
# interruptions (exit status, message, nobody hangs), and vmig bench.
#
# Run by meson with VMIG=<path to the vmig binary>. Exit 0 pass, 1 fail,
# 77 skip (with the reason on stderr). Leaves no process and no file behind.
#
# Checks read `check DESCRIPTION eval '...'`, in single quotes on purpose: the
# text is expanded when the check runs (which is also where t0 is used).
# shellcheck disable=SC2016,SC2034
set -u

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
lib_init cli python3 cmp timeout truncate dd head mktemp mkfifo tr grep

MiB=1048576
SIZE=$((20 * MiB))
PAGES=$((SIZE / 4096))

# ---------------------------------------------------------------- help
run help "$VMIG" --help
check "vmig --help exits 0" [ "$RC" = 0 ]
check "vmig --help names the commands and options" \
    eval 'has help.out "vmig send" && has help.out "vmig recv" && has help.out "vmig bench" &&
          has help.out "--channels" && has help.out "--json" && has help.out max-bandwidth &&
          has help.out "Exit status"'
run version "$VMIG" --version
check "vmig --version prints the version" eval '[ "$RC" = 0 ] && has version.out "^vmig [0-9]"'
run send_help "$VMIG" send --help
check "vmig send --help exits 0 and lists its options" \
    eval '[ "$RC" = 0 ] && has send_help.out "IMAGE URI" && has send_help.out "--name" &&
          has send_help.out "--page-size" && has send_help.out "--max-bandwidth"'
run help_send "$VMIG" help send
check "vmig help send is vmig send --help" \
    eval '[ "$RC" = 0 ] && cmp -s "$T/help_send.out" "$T/send_help.out"'
run recv_help "$VMIG" recv --help
check "vmig recv --help exits 0 and lists its options" \
    eval '[ "$RC" = 0 ] && has recv_help.out "URI OUTPUT" && has recv_help.out "--uri-file" &&
          has recv_help.out "--channels"'
run bench_help "$VMIG" bench --help
check "vmig bench --help exits 0 and lists its options" \
    eval '[ "$RC" = 0 ] && has bench_help.out "--size" && has bench_help.out "--mix" &&
          has bench_help.out "--seed" && has bench_help.out "--transport" &&
          has bench_help.out "--prefault" && has bench_help.out "--live" &&
          has bench_help.out "--dirty-rate" && has bench_help.out "dirty-track" &&
          has bench_help.out "downtime-limit" && has bench_help.out "throttle"'

# ---------------------------------------------------------------- usage errors
# usage DESCRIPTION PATTERN ARGS...: exit 2, PATTERN on stderr, nothing on stdout.
usage() {
    local d=$1 pat=$2
    shift 2
    run usage "$VMIG" "$@"
    if [ "$RC" = 2 ] && has usage.err "$pat" && empty usage.out; then
        pass "usage error: $d"
    else
        fail "usage error: $d (exit $RC, stderr: $(head -c 300 "$T/usage.err"))"
    fi
}
usage "no command" "Usage"
usage "unknown command" "unknown command" frobnicate
usage "send: unknown option" "unknown option '--frob'" send --frob img tcp:127.0.0.1:1
usage "send: missing URI" "Usage: vmig send" send img
usage "send: too many arguments" "too many arguments" send a b c
usage "send: option without its value" "needs a value" send img tcp:127.0.0.1:1 -c
usage "send: channels out of range" "channels" send -c 0 img tcp:127.0.0.1:1
usage "send: malformed max-bandwidth" "max-bandwidth" send --max-bandwidth abc img tcp:127.0.0.1:1
usage "send: -o without NAME=VALUE" "NAME=VALUE" send -o channels img tcp:127.0.0.1:1
usage "send: unknown parameter" "unknown parameter" send -o frob=1 img tcp:127.0.0.1:1
usage "send: bad page size" "bad page size" send --page-size 4X img tcp:127.0.0.1:1
usage "recv: no arguments" "Usage: vmig recv" recv
usage "recv: unknown option" "unknown option '--frob'" recv --frob tcp:127.0.0.1:0 out
usage "bench: unknown option" "unknown option '--frob'" bench --frob
usage "bench: size not a multiple of 4K" "multiple of 4K" bench --size 1000
usage "bench: negative size" "multiple of 4K" bench --size " -4096"
usage "bench: bad mix" "mix" bench --mix 50/50/50
usage "bench: writers 0" "not in 1..64" bench --live --writers 0
usage "bench: redirty 101" "not in 0..100" bench --live --redirty 101
usage "bench: bad dirty rate" "not a rate" bench --live --dirty-rate fast
usage "bench: live without a tracker" "built-in tracker" bench --live -o dirty-track=none
usage "bench: bad throttle" "throttle" bench --live --throttle sometimes
check "usage errors created no file" eval '[ ! -e out ] && [ ! -e img ] && [ ! -e a ]'

# ---------------------------------------------------------------- the image
# 20 MiB: random runs, zero runs (holes), and pages that hold a single
# non-zero byte at the start or the end (the hard case for zero detection).
IMG=$T/image
{
    head -c $((3 * MiB)) /dev/urandom >"$IMG" &&
        truncate -s $((7 * MiB)) "$IMG" &&
        head -c $((2 * MiB)) /dev/urandom >>"$IMG" &&
        truncate -s $SIZE "$IMG" &&
        dd if=/dev/urandom of="$IMG" bs=$MiB seek=14 count=2 conv=notrunc status=none &&
        printf '\001' | dd of="$IMG" bs=1 seek=$((12 * MiB + 4095)) conv=notrunc status=none &&
        printf '\200' | dd of="$IMG" bs=1 seek=$((13 * MiB)) conv=notrunc status=none &&
        printf '\377' | dd of="$IMG" bs=1 seek=$((SIZE - 4096)) conv=notrunc status=none &&
        [ "$(stat -c %s "$IMG")" = $SIZE ]
} || skip "cannot build the test image in $T"
ZERO_PAGES=$(python3 - "$IMG" <<'EOF'
import sys
z = bytes(4096)
with open(sys.argv[1], "rb") as f:
    data = f.read()
print(sum(data[i:i + 4096] == z for i in range(0, len(data), 4096)))
EOF
)
echo "# image: $SIZE bytes, $PAGES pages, $ZERO_PAGES zero"

# transfer NAME LISTEN-URI OUTPUT SEND-ARGS...: one migration of $IMG.
# Sets SRC (sender status) and WRC (receiver status).
transfer() {
    local name=$1 uri=$2 out=$3
    shift 3
    start_recv "$name.r" "$uri" "$out"
    if [ -z "$RURI" ]; then
        fail "$name: the receiver did not start: $(head -c 300 "$T/$name.r.err")"
        SRC=x
        WRC=x
        return
    fi
    run "$name.s" "$VMIG" send --no-progress "$@" "$IMG" "$RURI"
    SRC=$RC
    wait_exit "$RPID" 20 ||
        fail "$name: the receiver hung after the sender exited $SRC; sender said:" \
            "$(head -c 600 "$T/$name.s.err")"
    if [ "$SRC" != 0 ]; then
        echo "# $name: the sender exited $SRC: $(head -c 600 "$T/$name.s.err")"
    fi
}

# ---------------------------------------------------------------- send/recv
for ch in 1 4; do
    out=$T/tcp$ch.img
    transfer "tcp$ch" "tcp:127.0.0.1:0" "$out" -c $ch
    check "tcp, $ch channel(s): send and recv exit 0" eval '[ "$SRC" = 0 ] && [ "$WRC" = 0 ]'
    check "tcp, $ch channel(s): recv reported the port it bound" \
        eval '[[ "$RURI" =~ ^tcp:127\.0\.0\.1:[1-9][0-9]*$ ]] &&
              has "tcp$ch.r.err" "listening on $RURI"'
    check "tcp, $ch channel(s): OUTPUT equals IMAGE" cmp "$IMG" "$out"
    check "tcp, $ch channel(s): both summaries say verified" \
        eval 'has "tcp$ch.s.out" "completed, verified" && has "tcp$ch.r.out" "completed, verified"'
    check "tcp, $ch channel(s): recv removed its --uri-file" [ ! -e "$T/tcp$ch.r.uri" ]
    rm -f "$out"

    out=$T/unix$ch.img
    transfer "unix$ch" "unix:$T/s$ch.sock" "$out" -c $ch
    check "unix, $ch channel(s): send and recv exit 0" eval '[ "$SRC" = 0 ] && [ "$WRC" = 0 ]'
    check "unix, $ch channel(s): recv reported its URI" [ "$RURI" = "unix:$T/s$ch.sock" ]
    check "unix, $ch channel(s): OUTPUT equals IMAGE" cmp "$IMG" "$out"
    rm -f "$out"
done

# ---------------------------------------------------------------- existing OUTPUT
# Stale non-zero bytes everywhere: zero pages of the image must become zero.
STALE=$T/stale.img
head -c $SIZE /dev/urandom >"$STALE"
transfer stale "tcp:127.0.0.1:0" "$STALE" -c 4
check "stale OUTPUT of the same size: send and recv exit 0" \
    eval '[ "$SRC" = 0 ] && [ "$WRC" = 0 ]'
check "stale OUTPUT of the same size: now equals IMAGE" cmp "$IMG" "$STALE"

tr '\0' '\252' </dev/zero | head -c $((SIZE + 3 * MiB + 123)) >"$STALE"
transfer longer "tcp:127.0.0.1:0" "$STALE" -c 2
check "longer existing OUTPUT: resized to the image and equal to it" \
    eval '[ "$SRC" = 0 ] && [ "$WRC" = 0 ] && cmp "$IMG" "$STALE"'

tr '\0' '\252' </dev/zero | head -c 5000 >"$STALE"
transfer shorter "tcp:127.0.0.1:0" "$STALE" -c 2
check "shorter existing OUTPUT: grown to the image and equal to it" \
    eval '[ "$SRC" = 0 ] && [ "$WRC" = 0 ] && cmp "$IMG" "$STALE"'

# ---------------------------------------------------------------- --json
out=$T/json.img
start_recv jr "tcp:127.0.0.1:0" "$out" --json
if [ -n "$RURI" ]; then
    run js "$VMIG" send --no-progress -c 4 --json "$IMG" "$RURI"
    SRC=$RC
    wait_exit "$RPID" 20 || fail "json: the receiver hung"
else
    SRC=x
    WRC=x
fi
check "--json: send and recv exit 0, OUTPUT equals IMAGE" \
    eval '[ "$SRC" = 0 ] && [ "$WRC" = 0 ] && cmp -s "$IMG" "$out"'
check "--json: send prints one JSON object" json js.out 'True'
check "--json: recv prints one JSON object" json jr.out 'True'
check "--json: send's fields are plausible" json js.out \
    "d['role'] == 'sender' and d['ok'] is True and d['error'] == '' and
     d['state'] == 'completed' and d['total_bytes'] == $SIZE and d['ram_bytes'] == $SIZE and
     d['normal_pages'] + d['zero_pages'] == $PAGES and d['zero_pages'] == $ZERO_PAGES and
     d['normal_pages'] * 4096 <= d['wire_bytes'] < $SIZE and d['packets'] > 0 and
     d['seconds'] > 0 and d['mbps'] > 0 and len(d['channels']) == 4 and
     sum(c['bytes'] for c in d['channels']) == d['wire_bytes'] and
     sum(c['packets'] for c in d['channels']) == d['packets']"
check "--json: recv agrees with send" python3 - "$T/js.out" "$T/jr.out" <<'EOF'
import json, sys
s, r = (json.load(open(p)) for p in sys.argv[1:3])
keys = ("total_bytes", "ram_bytes", "wire_bytes", "normal_pages", "zero_pages", "packets")
if r["role"] != "receiver" or not r["ok"] or any(s[k] != r[k] for k in keys):
    sys.exit("sender %s, receiver %s" % ({k: s[k] for k in keys}, r))
EOF
check "--json: nothing but the object on stdout (the table is not printed)" \
    eval '! has js.out "bytes on the wire"'
rm -f "$out"

# --max-bandwidth reaches the library: 8 MiB/s must take wire_bytes / rate.
transfer paced "tcp:127.0.0.1:0" "$out" --json --max-bandwidth 8M
check "--max-bandwidth 8M: exit 0, OUTPUT equals IMAGE" \
    eval '[ "$SRC" = 0 ] && [ "$WRC" = 0 ] && cmp -s "$IMG" "$out"'
check "--max-bandwidth 8M: the transfer took wire_bytes / 8 MiB/s" json paced.s.out \
    "0.9 * d['wire_bytes'] / (8 << 20) <= d['seconds'] <= 1.5 * d['wire_bytes'] / (8 << 20) + 0.2"
rm -f "$out"

# --progress draws on stderr.
transfer progress "tcp:127.0.0.1:0" "$out" -q --progress
check "--progress: a bar on stderr reaching 100%" \
    eval '[ "$SRC" = 0 ] && has progress.s.err "100.0%" && empty progress.s.out'
rm -f "$out"

# ---------------------------------------------------------------- refusals
FREE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
t0=$(now)
run noone "$VMIG" send -q --connect-timeout 2000 "$IMG" "tcp:127.0.0.1:$FREE_PORT"
check "send to a tcp port where nobody listens: exit 1, message, quickly" \
    eval '[ "$RC" = 1 ] && has noone.err "127.0.0.1:$FREE_PORT" && has noone.err "refused" &&
          empty noone.out && elapsed_lt "$t0" "$(now)" 5'
run noone_json "$VMIG" send --json --connect-timeout 2000 "$IMG" "tcp:127.0.0.1:$FREE_PORT"
check "a failed send with --json: exit 1 and ok=false with the error" \
    eval '[ "$RC" = 1 ] && json noone_json.out "d[\"ok\"] is False and \"$FREE_PORT\" in d[\"error\"]"'
run nosock "$VMIG" send -q --connect-timeout 2000 "$IMG" "unix:$T/nobody.sock"
check "send to a unix socket that does not exist: exit 1 with a message" \
    eval '[ "$RC" = 1 ] && has nosock.err "nobody.sock"'
run noimg "$VMIG" send -q "$T/no-such-image" "tcp:127.0.0.1:$FREE_PORT"
check "send of a missing IMAGE: exit 1 with a message" \
    eval '[ "$RC" = 1 ] && has noimg.err "no-such-image: No such file"'
head -c 5000 /dev/urandom >"$T/odd.img"
run oddimg "$VMIG" send -q "$T/odd.img" "tcp:127.0.0.1:$FREE_PORT"
check "send of an IMAGE that is not a multiple of the page size: exit 1" \
    eval '[ "$RC" = 1 ] && has oddimg.err "multiple of the page size"'
run badscheme "$VMIG" send -q "$IMG" "bogus:x"
check "send to a URI of an unknown scheme: exit 1 with a message" \
    eval '[ "$RC" = 1 ] && has badscheme.err "bogus"'

mkdir "$T/adir"
run recvdir "$VMIG" recv -q tcp:127.0.0.1:0 "$T/adir"
check "recv into a directory: exit 1 at once with a message" \
    eval '[ "$RC" = 1 ] && has recvdir.err "adir: Is a directory"'

# The receiver refuses the block (a FIFO cannot be resized or mapped): both
# sides fail with the receiver's reason, neither hangs.
mkfifo "$T/fifo"
start_recv fifo "tcp:127.0.0.1:0" "$T/fifo"
if [ -n "$RURI" ]; then
    run fifo.s "$VMIG" send -q "$IMG" "$RURI"
    wait_exit "$RPID" 20
    check "recv into an OUTPUT that cannot hold the block: both exit 1, reasons on stderr" \
        eval '[ "$RC" = 1 ] && [ "$WRC" = 1 ] && has fifo.err "cannot grow" &&
              has fifo.s.err "refused"'
else
    fail "recv into a FIFO: the receiver did not start: $(head -c 300 "$T/fifo.err")"
fi

# A port already taken: the second receiver fails; SIGTERM ends the first (exit 4).
start_recv busy1 "tcp:127.0.0.1:0" "$T/busy1.img"
if [ -n "$RURI" ]; then
    B1=$RPID
    run busy2 "$VMIG" recv -q "$RURI" "$T/busy2.img"
    check "recv on a port in use: exit 1 with a message, no OUTPUT left" \
        eval '[ "$RC" = 1 ] && has busy2.err "${RURI#tcp:}" && [ ! -e "$T/busy2.img" ]'
    kill -TERM "$B1"
    wait_exit "$B1" 10
    check "SIGTERM to a waiting recv: exit 4 (canceled), no OUTPUT left" \
        eval '[ "$WRC" = 4 ] && has busy1.err "canceled" && [ ! -e "$T/busy1.img" ]'
else
    fail "port in use: the first receiver did not start: $(head -c 300 "$T/busy1.err")"
fi

# The sender dies mid-transfer (paced so that it is still running): the
# receiver fails promptly; a file it created is removed, a reused one is kept
# with a warning.
# interrupt NAME OUTPUT SIGNAL: start a paced migration and send SIGNAL to
# the sender once data flows. Sets SRC and WRC.
interrupt() {
    local name=$1 out=$2 sig=$3
    start_recv "$name" "tcp:127.0.0.1:0" "$out"
    SRC=x
    WRC=x
    if [ -z "$RURI" ]; then
        fail "$name: the receiver did not start: $(head -c 300 "$T/$name.err")"
        return
    fi
    # The sender runs under a subshell that collects its status, so that bash
    # does not print a "Killed" notice on our stderr.
    rm -f "$T/$name.s.pid" "$T/$name.s.rc"
    (
        "$VMIG" send -q --max-bandwidth 4M "$IMG" "$RURI" >"$T/$name.s.out" 2>"$T/$name.s.err" &
        echo $! >"$T/$name.s.pid"
        wait $!
        echo $? >"$T/$name.s.rc"
    ) 2>/dev/null &
    local sub=$! sp=
    PIDS+=("$sub")
    for _ in $(seq 200); do
        [ -s "$T/$name.s.pid" ] && break
        sleep 0.025
    done
    sp=$(cat "$T/$name.s.pid" 2>/dev/null)
    if [ -z "$sp" ]; then
        fail "$name: the sender did not start"
        return
    fi
    PIDS+=("$sp")
    # Wait until data lands (the first page is random in the image and in a
    # stale OUTPUT alike); at 4 MiB/s the rest takes another second or so.
    for _ in $(seq 400); do
        cmp -s -n 4096 "$IMG" "$out" && break
        sleep 0.025
    done
    cmp -s -n 4096 "$IMG" "$out" || fail "$name: no data arrived within 10 s"
    kill "-$sig" "$sp"
    wait_exit "$sub" 10
    forget "$sp"
    SRC=$(cat "$T/$name.s.rc" 2>/dev/null)
    wait_exit "$RPID" 10 || WRC=hung
}
interrupt killed "$T/killed.img" KILL
check "sender killed mid-transfer: recv exits 1 promptly with a message" \
    eval '[ "$SRC" = 137 ] && [ "$WRC" = 1 ] && has killed.err "closed\\|reset"'
check "sender killed mid-transfer: the OUTPUT recv created is removed" [ ! -e "$T/killed.img" ]

head -c $SIZE /dev/urandom >"$STALE"
interrupt termed "$STALE" TERM
check "SIGTERM to a sender mid-transfer: send exits 4, recv exits 1" \
    eval '[ "$SRC" = 4 ] && has termed.s.err "canceled" && [ "$WRC" = 1 ]' ||
    echo "# send exited ${SRC:-?}, recv ${WRC:-?}; send said: $(head -c 300 "$T/termed.s.err" 2>/dev/null)"
check "SIGTERM to a sender mid-transfer: reused OUTPUT kept, with a warning" \
    eval '[ -e "$STALE" ] && has termed.err "partial image"'

# ---------------------------------------------------------------- bench
run bench "$VMIG" bench --size 64M --no-progress
check "bench --size 64M: exit 0, summary says verified" \
    eval '[ "$RC" = 0 ] && has bench.out "completed, verified" && has bench.out "64.00 MiB of 64.00 MiB"'
run bench_json "$VMIG" bench --size 64M --no-progress --json
check "bench --json: exit 0, one JSON object, verified" \
    eval '[ "$RC" = 0 ] && json bench_json.out "d[\"ok\"] is True and d[\"bench\"][\"verified\"] is True and
          d[\"total_bytes\"] == 64 << 20 and d[\"normal_pages\"] + d[\"zero_pages\"] == 16384 and
          d[\"bench\"][\"image_bytes\"] == 64 << 20"'
run bench_unix "$VMIG" bench --size 16M --no-progress --transport unix -c 2
check "bench --transport unix: exit 0, verified" \
    eval '[ "$RC" = 0 ] && has bench_unix.out "completed, verified"'
run bench_noverify "$VMIG" bench --size 16M --no-progress -o verify=off
check "bench with verify=off: exit 0, the summary does not claim verified" \
    eval '[ "$RC" = 0 ] && has bench_noverify.out "completed" && ! has bench_noverify.out "verified"'

run bench_live "$VMIG" bench --live --size 64M --hot-set 16M --dirty-rate 20000000 \
    --max-bandwidth 100M --no-progress --json
check "bench --live: exit 0, several passes, destination == source at switchover" \
    eval '[ "$RC" = 0 ] && json bench_live.out "d[\"ok\"] is True and d[\"passes\"] >= 2 and
          d[\"bench\"][\"live\"][\"same_at_switchover\"] is True and
          d[\"downtime_seconds\"] > 0 and d[\"dirty_track\"] in (\"wp-async\", \"wp-sync\") and
          d[\"bench\"][\"live\"][\"device_state_bytes\"] == 65536"'
run bench_live_table "$VMIG" bench --live --size 32M --hot-set 8M --dirty-rate 20000000 \
    --max-bandwidth 50M --no-progress -o dirty-track=wp-sync
check "bench --live with wp-sync: the summary shows passes, downtime and the comparison" \
    eval '[ "$RC" = 0 ] && has bench_live_table.out "wp-sync" && has bench_live_table.out "downtime" &&
          has bench_live_table.out "destination memory == source memory"'
# Zero pages through the DSA path (the software model), live: writers dirty
# pages while the device and the channels check them; the destination must
# equal the source at switchover, and the statistics must add up.
run bench_accel "$VMIG" bench --live --size 64M --hot-set 16M --dirty-rate 20000000 \
    --max-bandwidth 100M --no-progress --json --accel dsa-model --accel-path model:depth=8 \
    --touch-zero
check "bench --live --accel dsa-model: verified, the device answered pages, counts add up" \
    eval '[ "$RC" = 0 ] && json bench_accel.out "d[\"ok\"] is True and
          d[\"bench\"][\"live\"][\"same_at_switchover\"] is True and
          d[\"accel\"][\"engine\"].startswith(\"dsa-model\") and d[\"accel\"][\"device_pages\"] > 0 and
          d[\"accel\"][\"device_pages\"] + d[\"accel\"][\"cpu_pages\"] + d[\"accel\"][\"untouched\"] ==
          d[\"normal_pages\"] + d[\"zero_pages\"]"'
run bench_accel_dsa "$VMIG" bench --size 16M --no-progress --accel dsa
if [ -e /sys/bus/dsa/devices ]; then
    echo "ok   - (a DSA bus exists here: accel=dsa without a device not checked)"
else
    check "bench --accel dsa without a device: exit 1, says why" \
        eval '[ "$RC" = 1 ] && has bench_accel_dsa.err "accel=dsa: no usable DSA work queue"'
fi
run bench_live_fail "$VMIG" bench --live --size 32M --hot-set 32M --dirty-rate 200000000 \
    --max-bandwidth 10M --no-progress --throttle off --max-time 1000
check "bench --live that cannot converge: exit 1, says why, the writers ran on" \
    eval '[ "$RC" = 1 ] && has bench_live_fail.err "did not converge" &&
          has bench_live_fail.out "the writers run on"'

finish
