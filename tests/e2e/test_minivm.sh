#!/usr/bin/env bash
# minivm end to end: a running KVM guest migrates live between two minivm
# processes on a unix socket, and is checked twice: by the destination VMM
# (every page against the guest's generation table, before the vCPUs
# resume) and by the guest itself (its checker vCPU and its counter, which
# must go on). Cases: verified live migration with 2 and with 1 and 4 vCPUs, a data channel
# cut mid-migration with resume on (it reconnects; verified),
# a migration that needs throttling, a destination killed half way (the
# source guest runs on and reports no failure; then it migrates again from
# the monitor and verifies), ping-pong A -> B -> A, a
# migration started from the monitor, KVM's dirty ring instead of the
# bitmap, a page corrupted under the running guest (its checker must
# report it), a device with 64 MiB of state over both device-state
# paths, and continuous checkpoints (COLO): the primary killed (the standby
# takes over, verifies, and the guest goes on), the standby killed (the
# primary's guest runs on), output commit of the guest's console, and no
# standby at all.
#
# Run by meson with MINIVM=<minivm binary>. Exit 0 pass, 1 fail, 77 skip
# (no usable /dev/kvm, or no guest binary built), with the reason on stderr.
set -u
skip() {
    echo "SKIP: $*" >&2
    exit 77
}
MINIVM=${MINIVM:-}
[ -x "$MINIVM" ] || skip "MINIVM is not set to the minivm binary"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || skip "/dev/kvm is not usable here"
GUEST=${MINIVM_GUEST:-$(dirname "$MINIVM")/guest/guest.bin}
[ -r "$GUEST" ] || skip "no guest binary at $GUEST"

T=$(mktemp -d "${TMPDIR:-/tmp}/vmig-minivm.XXXXXX") || skip "mktemp -d failed"
PIDS=()
cleanup() {
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
npass=0 nfail=0
pass() { echo "ok   - $*"; npass=$((npass + 1)); }
fail() { echo "FAIL - $*"; nfail=$((nfail + 1)); }
has() { grep -q -e "$2" "$T/$1"; }

# live CASE ARGS...: source with --verify-dest (the destination is its child)
live() {
    local name=$1
    shift
    timeout 120 "$MINIVM" run --guest "$GUEST" --migrate-to "unix:$T/$name.sock" \
        --verify-dest "$@" >"$T/$name.out" 2>"$T/$name.err"
    RC=$?
}

live basic --mem 256M --vcpus 2 --migrate-after 1s
if [ "$RC" = 0 ] && has basic.err "verified [0-9]* pages" && has basic.err "guest ran on" &&
    has basic.out "completed"; then
    pass "2 vCPUs: live migration, destination verified every page, the guest ran on"
else
    fail "2 vCPUs: exit $RC: $(tail -5 "$T/basic.err")"
fi

for n in 1 4; do
    live "vcpus$n" --mem 128M --vcpus "$n" --migrate-after 1s
    if [ "$RC" = 0 ] && has "vcpus$n.err" "verified [0-9]* pages"; then
        pass "$n vCPU(s): verified"
    else
        fail "$n vCPU(s): exit $RC: $(tail -5 "$T/vcpus$n.err")"
    fi
done

# resume=on: the source cuts data channel 1 at its 30th packet; the channel
# reconnects, the unacknowledged packets go again, the guest is verified.
VMIG_FAULTS=close:role=src:ch=1:pkt=30 live resume --mem 256M --vcpus 2 --migrate-after 1s \
    --resume on
if [ "$RC" = 0 ] && has resume.err "verified [0-9]* pages" && has resume.err "guest ran on" &&
    has resume.out "resume  *1 channel connection(s) broke and resumed"; then
    pass "a data channel cut mid-migration (resume on): reconnected, verified, the guest ran on"
else
    fail "resume: exit $RC: $(tail -5 "$T/resume.err")"
fi

# A slow link and a fast writer: converges only by throttling (or, where a
# sanitizer slows the VMM, switches over after 12 passes, still throttled).
live throttle --mem 64M --vcpus 2 --dirty-rate 5000 --hot-set 8M --hot-share 100 --migrate-after 1s \
    --max-bandwidth 2M --on-limit switch --max-passes 12
if [ "$RC" = 0 ] && has throttle.err "verified" && ! has throttle.out "throttle  *highest 0%"; then
    pass "throttled migration: verified, throttle used"
else
    fail "throttled migration: exit $RC: $(tail -5 "$T/throttle.err")"
fi

# The destination killed half way: the source resumes its guest, which runs
# on without reporting a failure; minivm reports the failed migration.
"$MINIVM" run --incoming "unix:$T/kill.sock" >"$T/kdst.out" 2>"$T/kdst.err" &
dpid=$!
PIDS+=("$dpid")
for _ in $(seq 100); do [ -S "$T/kill.sock" ] && break; sleep 0.05; done
timeout 120 "$MINIVM" run --guest "$GUEST" --mem 256M --migrate-to "unix:$T/kill.sock" \
    --migrate-after 1s --max-bandwidth 20M --run-for 4s >"$T/ksrc.out" 2>"$T/ksrc.err" &
spid=$!
PIDS+=("$spid")
sleep 1.6
kill -9 "$dpid"
wait "$spid"
RC=$?
if [ "$RC" = 1 ] && ! grep -q "CHECK_FAIL\|did not continue\|guest failure" "$T/ksrc.err"; then
    pass "destination killed: the migration failed (exit 1), the source guest ran on unharmed"
else
    fail "destination killed: exit $RC: $(tail -5 "$T/ksrc.err")"
fi

# wait_sock PATH: until a listener's unix socket exists (5 s at most).
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

# Killed, then migrated again: the guest that survived a failed migration
# migrates (from the monitor) to a second destination, which verifies it.
"$MINIVM" run --incoming "unix:$T/k2.sock" >"$T/k2.out" 2>"$T/k2.err" &
d2=$!
PIDS+=("$d2")
"$MINIVM" run --incoming "unix:$T/k3.sock" --verify >"$T/k3.out" 2>"$T/k3.err" &
d3=$!
PIDS+=("$d3")
wait_sock "$T/k2.sock" && wait_sock "$T/k3.sock"
(sleep 1; echo "migrate unix:$T/k2.sock"; sleep 5; echo "migrate unix:$T/k3.sock"; sleep 60) |
    timeout 120 "$MINIVM" run --guest "$GUEST" --mem 128M --monitor --max-bandwidth 20M \
        >"$T/kr.out" 2>"$T/kr.err" &
sr=$!
PIDS+=("$sr")
sleep 1.6
kill -9 "$d2"
wait "$sr"
RC=$?
wait "$d3"
rd3=$?
if [ "$RC" = 0 ] && [ "$rd3" = 0 ] && has kr.err "migration to unix:.*k2.sock failed" &&
    has k3.err "verified [0-9]* pages" && has k3.err "guest ran on"; then
    pass "destination killed, then migrated again: the surviving guest verified on the second"
else
    fail "killed then again: exits $RC $rd3: $(tail -3 "$T/kr.err") $(tail -3 "$T/k3.err")"
fi

# Ping-pong: A -> B, then B (after running 1 s) -> A' on A's first address.
"$MINIVM" run --incoming "unix:$T/pa2.sock" --verify >"$T/pa2.out" 2>"$T/pa2.err" &
p3=$!
PIDS+=("$p3")
"$MINIVM" run --incoming "unix:$T/pb.sock" --verify --migrate-to "unix:$T/pa2.sock" \
    --migrate-after 1s >"$T/pb.out" 2>"$T/pb.err" &
p2=$!
PIDS+=("$p2")
wait_sock "$T/pa2.sock" && wait_sock "$T/pb.sock"
timeout 120 "$MINIVM" run --guest "$GUEST" --mem 256M --migrate-to "unix:$T/pb.sock" \
    --migrate-after 1s >"$T/pa.out" 2>"$T/pa.err"
ra=$?
wait "$p2"
rb=$?
wait "$p3"
rc3=$?
if [ "$ra" = 0 ] && [ "$rb" = 0 ] && [ "$rc3" = 0 ] && has pb.err "verified [0-9]* pages" &&
    has pa2.err "verified [0-9]* pages" && has pa2.err "guest ran on"; then
    pass "ping-pong A -> B -> A: both legs verified, the guest ran on at the end"
else
    fail "ping-pong: exits $ra $rb $rc3: $(tail -3 "$T/pb.err") $(tail -3 "$T/pa2.err")"
fi

# The monitor: 'migrate URI' typed into a running VM (here through a pipe).
"$MINIVM" run --incoming "unix:$T/mon.sock" --verify >"$T/mdst.out" 2>"$T/mdst.err" &
p4=$!
PIDS+=("$p4")
wait_sock "$T/mon.sock"
(sleep 1; echo info; echo "migrate unix:$T/mon.sock") |
    timeout 120 "$MINIVM" run --guest "$GUEST" --mem 128M --monitor >"$T/msrc.out" 2>"$T/msrc.err"
rm_=$?
wait "$p4"
rd=$?
if [ "$rm_" = 0 ] && [ "$rd" = 0 ] && has msrc.err "guest now: counter" &&
    has mdst.err "verified [0-9]* pages"; then
    pass "monitor: 'migrate URI' migrated the running guest, verified"
else
    fail "monitor: exits $rm_ $rd: $(tail -3 "$T/msrc.err") $(tail -3 "$T/mdst.err")"
fi

# KVM's dirty ring instead of the bitmap (skipped where KVM lacks it).
if "$MINIVM" probe 2>/dev/null | grep -q "dirty ring available"; then
    live ring --mem 256M --vcpus 2 --migrate-after 1s --dirty-log ring
    if [ "$RC" = 0 ] && has ring.err "verified [0-9]* pages" && has ring.err "dirty ring:"; then
        pass "dirty ring: live migration verified"
    else
        fail "dirty ring: exit $RC: $(tail -5 "$T/ring.err")"
    fi
else
    echo "skip - dirty ring: this KVM has no KVM_CAP_DIRTY_LOG_RING"
fi

# A bit flipped under the running guest: its checker reports it (exit 5).
(sleep 1.5; echo corrupt; sleep 5) |
    timeout 60 "$MINIVM" run --guest "$GUEST" --mem 64M --dirty-rate 100 --hot-set 1M \
        --monitor --run-for 8s >"$T/bad.out" 2>"$T/bad.err"
RC=$?
if [ "$RC" = 5 ] && has bad.err "CHECK_FAIL"; then
    pass "corrupted page: the guest's checker reported it, exit 5"
else
    fail "corrupted page: exit $RC: $(tail -3 "$T/bad.err")"
fi

# The synthetic device: 64 MiB of state that the guest rewrites through its
# ports, migrated as device state next to the vCPUs, over the data channels
# and over the control channel. The destination checks the whole buffer,
# the guest reads words back through the device after the migration.
for path in channels control; do
    live "dev$path" --mem 128M --vcpus 2 --device-state 64M --device-rate 200 --migrate-after 1s \
        -o devstate-path=$path
    if [ "$RC" = 0 ] && has "dev$path.err" "verified device state: 64 MiB" &&
        has "dev$path.err" "read [1-9][0-9]* device words back here" &&
        has "dev$path.out" "2 device(s), 64.0.* MiB"; then
        pass "device state ($path): buffer verified by the destination, words by the guest"
    else
        fail "device state ($path): exit $RC: $(tail -5 "$T/dev$path.err")"
    fi
done
# One vCPU does both: the writer's rewrites and the checker's reads.
live dev1 --mem 64M --vcpus 1 --device-state 16M --device-rate 500 --migrate-after 1s
if [ "$RC" = 0 ] && has dev1.err "verified device state: 16 MiB"; then
    pass "device state, 1 vCPU: verified"
else
    fail "device state, 1 vCPU: exit $RC: $(tail -5 "$T/dev1.err")"
fi
# refused NAME "DEST ARGS" "SOURCE ARGS": a destination that is to refuse the
# source's migration; RC is the source's exit status, RD the destination's.
refused() {
    local name=$1 dargs=$2 sargs=$3
    # shellcheck disable=SC2086
    "$MINIVM" run --incoming "unix:$T/$name.sock" $dargs >"$T/$name.dout" 2>"$T/$name.derr" &
    local dpid=$!
    PIDS+=("$dpid")
    for _ in $(seq 100); do [ -S "$T/$name.sock" ] && break; sleep 0.05; done
    # shellcheck disable=SC2086
    timeout 60 "$MINIVM" run --guest "$GUEST" $sargs --migrate-after 500ms \
        --migrate-to "unix:$T/$name.sock" --run-for 3s >"$T/$name.sout" 2>"$T/$name.serr"
    RC=$?
    wait "$dpid"
    RD=$?
}
# A destination without the device refuses, naming it; the source guest runs on.
refused nodev "" "--mem 64M --device-state 8M"
if [ "$RC" = 1 ] && [ "$RD" != 0 ] && has nodev.serr "minivm-sdev' instance 0.*not registered" &&
    has nodev.serr "the guest runs on"; then
    pass "destination without the device: refused by name, the source guest ran on"
else
    fail "destination without the device: exits $RC $RD: $(tail -3 "$T/nodev.serr")"
fi
# A destination whose device is of another size refuses its state, saying so.
refused devsz "--device-state 16M" "--mem 64M --device-state 8M"
if [ "$RC" = 1 ] && [ "$RD" != 0 ] && has devsz.derr "holds 8388608 bytes.*this one 16777216" &&
    has devsz.serr "the guest runs on"; then
    pass "device of another size: its state refused with the reason, the source guest ran on"
else
    fail "device of another size: exits $RC $RD: $(tail -3 "$T/devsz.derr")"
fi

# ---- Continuous checkpoints (COLO): a standby that takes over ----

# colo_secondary NAME ARGS...: a standby on unix:$T/NAME.sock (pid in SPID),
# waited for through --ready-fd.
colo_secondary() {
    local name=$1
    shift
    "$MINIVM" run --colo-secondary "unix:$T/$name.sock" --ready-fd 3 "$@" 3>"$T/$name.ready" \
        >"$T/$name.sout" 2>"$T/$name.serr" &
    SPID=$!
    PIDS+=("$SPID")
    for _ in $(seq 200); do
        grep -q "^listening" "$T/$name.ready" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
# acked FILE: the last checkpoint a primary's stderr reports acknowledged (-1: none).
acked() {
    grep -o "checkpoint [0-9]* acknowledged" "$1" 2>/dev/null | awk '{ n = $2 } END { print n + 0 - (NR == 0) }'
}
# wait_acked FILE N: until checkpoint N (or a later one) is acknowledged, 60 s at most.
wait_acked() {
    for _ in $(seq 600); do
        [ "$(acked "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
# wait_for PID SECONDS: its exit status, or 124 after killing it at the deadline.
wait_for() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$1" 2>/dev/null && { kill -9 "$1"; wait "$1" 2>/dev/null; return 124; }
    wait "$1"
}
ms_now() { date +%s%3N; }

# The primary killed (SIGKILL) after several checkpoints: the standby takes
# over from its last committed checkpoint within seconds, verifies every page
# and the device's buffer, and the guest's counter goes on with no failure.
colo_secondary cfo --verify --device-state 8M
"$MINIVM" run --guest "$GUEST" --mem 256M --device-state 8M --colo-primary "unix:$T/cfo.sock" \
    --checkpoint 200ms --run-for 60s >"$T/cfo.pout" 2>"$T/cfo.perr" &
ppid=$!
PIDS+=("$ppid")
took=none RC=none
if wait_acked "$T/cfo.perr" 5; then
    kill -9 "$ppid"
    wait "$ppid" 2>/dev/null
    t0=$(ms_now)
    for _ in $(seq 200); do
        has cfo.serr "failover:" && { took=$(($(ms_now) - t0)); break; }
        sleep 0.05
    done
    wait_for "$SPID" 30
    RC=$?
fi
at=$(sed -n 's/.*running checkpoint \([0-9]*\).*/\1/p' "$T/cfo.serr")
if [ "$RC" = 0 ] && [ "$took" != none ] && [ "$took" -le 5000 ] && [ "${at:-0}" -ge 5 ] &&
    has cfo.serr "verified [0-9]* pages" && has cfo.serr "verified device state: 8 MiB" &&
    has cfo.serr "guest ran on: counter" && has cfo.serr "read [1-9][0-9]* device words back"; then
    pass "COLO: primary killed after checkpoint $at: the standby took over in $took ms, verified, the guest ran on"
else
    fail "COLO failover: exit $RC, took $took ms, checkpoint ${at:-none}: $(tail -5 "$T/cfo.serr")"
fi

# The standby killed: the primary reports it lost, and its guest runs on
# (its counter moves on after the loss) to --run-for, exit 0.
colo_secondary csl
"$MINIVM" run --guest "$GUEST" --mem 128M --colo-primary "unix:$T/csl.sock" --checkpoint 200ms \
    --run-for 6s >"$T/csl.pout" 2>"$T/csl.perr" &
ppid=$!
PIDS+=("$ppid")
RC=none
if wait_acked "$T/csl.perr" 3; then
    kill -9 "$SPID"
    wait "$SPID" 2>/dev/null
    wait_for "$ppid" 60
    RC=$?
fi
c1=$(sed -n 's/.*guest when the protection ended: counter \([0-9]*\).*/\1/p' "$T/csl.perr")
c2=$(sed -n 's/.*guest at the end: counter \([0-9]*\).*/\1/p' "$T/csl.perr")
if [ "$RC" = 0 ] && has csl.perr "protection ended: the secondary is lost" &&
    [ -n "$c1" ] && [ -n "$c2" ] && [ "$c2" -gt "$c1" ] && ! has csl.perr "guest reports"; then
    pass "COLO: standby killed: the primary reported it lost, its guest ran on ($c1 -> $c2)"
else
    fail "COLO standby lost: exit $RC, counter ${c1:-?} -> ${c2:-?}: $(tail -4 "$T/csl.perr")"
fi

# Output commit, and the monitor: with checkpoints on demand only, a line the
# guest writes after checkpoint 0 (its "done" at --run-pages) stays held
# until 'checkpoint' is typed and that checkpoint is acknowledged. Then
# 'quit' ends the protection: the standby is told, and does not take over.
colo_secondary coc
wait_line() { # FILE REGEX: 20 s at most
    for _ in $(seq 200); do grep -q -e "$2" "$1" && return 0; sleep 0.1; done
    return 1
}
feed_coc() {
    wait_line "$T/coc.perr" "checkpoint 0 acknowledged" || return
    echo info
    sleep 0.3
    grep -o "guest now: counter [0-9]*, writes [0-9]*" "$T/coc.perr" | tail -1 >"$T/coc.first"
    for _ in $(seq 40); do
        grep -q "writes 3000," "$T/coc.perr" && break
        echo info
        sleep 0.5
    done
    grep -c "guest: done" "$T/coc.perr" >"$T/coc.before"
    echo checkpoint
    wait_line "$T/coc.perr" "checkpoint 1 acknowledged"
    echo info
    sleep 0.3
    echo quit
}
feed_coc | timeout 60 "$MINIVM" run --guest "$GUEST" --mem 64M --colo-primary "unix:$T/coc.sock" \
    --checkpoint 0 --dirty-rate 1000 --run-pages 3000 --monitor >"$T/coc.pout" 2>"$T/coc.perr"
RC=$?
wait_for "$SPID" 30
RD=$?
w0=$(sed -n 's/.*writes \([0-9]*\)$/\1/p' "$T/coc.first" 2>/dev/null)
lreq=$(grep -n "checkpoint requested" "$T/coc.perr" | head -1 | cut -d: -f1)
ldone=$(grep -n "guest: done: 3000 writes" "$T/coc.perr" | head -1 | cut -d: -f1)
if [ "$RC" = 0 ] && [ "$RD" = 4 ] && [ "${w0:-3000}" -lt 3000 ] && [ "$(cat "$T/coc.before")" = 0 ] &&
    [ -n "$lreq" ] && [ -n "$ldone" ] && [ "$ldone" -gt "$lreq" ] &&
    has coc.perr "protection: 1 checkpoints acknowledged" && has coc.serr "ended the protection"; then
    pass "COLO: guest output held until its checkpoint was acknowledged; 'checkpoint', 'info', 'quit'"
else
    fail "COLO output commit: exits $RC $RD, writes at ack 0 ${w0:-?}, held $(cat "$T/coc.before" 2>/dev/null): $(tail -4 "$T/coc.perr")"
fi

# No standby: the protection never starts; the guest runs on, exit 1.
timeout 60 "$MINIVM" run --guest "$GUEST" --mem 64M --colo-primary "unix:$T/none.sock" --run-for 2s \
    >"$T/none.out" 2>"$T/none.err"
RC=$?
if [ "$RC" = 1 ] && has none.err "never established" && has none.err "guest at the end" &&
    ! has none.err "guest reports"; then
    pass "COLO without a standby: reported, the guest ran on, exit 1"
else
    fail "COLO without a standby: exit $RC: $(tail -3 "$T/none.err")"
fi

echo "$npass passed, $nfail failed, 0 skipped"
[ "$nfail" = 0 ]
