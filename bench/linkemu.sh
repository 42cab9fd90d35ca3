#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair,
# the link shaped with tc to a rate and a delay, so that a migration between
# two processes of this machine crosses a 1 Gbit/s or 10 Gbit/s "network".
#
#   NAME-src                                           NAME-dst
#   10.201.0.1/30  veth-src ══════════════════ veth-dst  10.201.0.2/30
#                  egress: netem delay DELAY   egress: netem delay DELAY
#                          └ tbf rate RATE             └ tbf rate RATE
#
# Both directions get the same rate and the same one-way delay (a symmetric
# full-duplex link; the round trip is 2 x DELAY): the src->dst direction
# carries the pages, the dst->src direction the ACKs and the receiver's
# control messages, which so see the propagation delay of a real link; the
# rate limit never bites them (they are a small fraction of it).
#
# The addresses exist only inside the two namespaces, so that nothing here
# can reach or be reached from any other network; traffic between the
# namespaces never leaves the machine.
#
# Usage:
#   linkemu.sh up NAME RATE DELAY   create the link. RATE: 1gbit, 10gbit,
#                                   200mbit, 500kbit, a number of bit/s, or
#                                   none (no rate limit); DELAY: 0.1ms, 1ms,
#                                   50us, or 0 (no delay). Prints on stdout
#                                   "src NS ADDR dst NS ADDR rate BIT/S|none
#                                   delay DELAY|none"
#   linkemu.sh down NAME            remove both namespaces (and with them the
#                                   veth pair and the qdiscs); idempotent
#   linkemu.sh cut NAME             take both ends of the link down (a pulled
#                                   cable: packets are lost, connections stay)
#   linkemu.sh mend NAME            bring both ends up again (routes and the
#                                   shaping come back with them)
#   linkemu.sh check                exit 0 when links can be made here, 77
#                                   with the reason on stderr when not; stdout
#                                   lists what works: "netns veth tbf netem"
#   linkemu.sh measure NAME [SECONDS [STREAMS]]
#                                   TCP bulk transfer from NAME-src to
#                                   NAME-dst (python3) for SECONDS (default 3)
#                                   over STREAMS connections (default 1);
#                                   prints the bit/s the receiver got on
#                                   stdout
#
# The delay needs the sch_netem qdisc, the rate sch_tbf. Kernels without
# netem exist (small VM kernels); with LINKEMU_DELAY=optional in the
# environment, `check` does not require netem and `up` builds the link
# without the delay, saying so on stderr (and printing "delay none" on
# stdout instead of "delay DELAY"), so that a caller can record it.
#
# The rate limit: veth does TSO/GSO, so TCP hands tbf packets of up to 64 KiB
# (plus headers). tbf drops (or, in newer kernels, re-segments at a CPU cost)
# any packet longer than its bucket, and a bucket that holds only a few
# packets loses tokens whenever the dequeue runs late (softirq latency on a
# busy 2-core machine), which shows as a link slower than RATE. So the bucket
# holds 2 ms of the rate, at least 256 KiB (1 Gbit/s: 256 KiB, 10 Gbit/s:
# 2.4 MiB), and the queue (limit) another 20 ms of it, at least 2 MiB, so
# that a few TCP flows at full window (tcp_limit_output_bytes per flow) are
# queued rather than dropped. The rate counts whole Ethernet frames, so TCP
# gets about 95.7% of it (1448 payload bytes per 1514-byte frame), as on a
# real link; measured here with `measure` (4 streams): 958 Mbit/s at 1gbit,
# 9.47 Gbit/s at 10gbit, 193 Mbit/s at 200mbit (1 stream).
#
# Exit status: 0 done, 1 failed, 2 usage, 77 not possible here (check, and up
# when a needed feature is missing). Prints what it does on stderr.
set -euo pipefail

SRC_ADDR=10.201.0.1
DST_ADDR=10.201.0.2
PREFIX=30
SRC_IF=veth-src
DST_IF=veth-dst

PROG=${0##*/}
say() { echo "$PROG: $*" >&2; }
die() {
    say "$*"
    exit 1
}
bad_arg() {
    say "$*"
    exit 2
}
usage() {
    sed -n '/^# Usage:/,/^# The delay/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2
    exit 2
}
# run CMD...: print it on stderr, run it.
run() {
    say "+ $*"
    "$@"
}

need_tools() {
    local t
    for t in ip tc; do
        command -v "$t" >/dev/null 2>&1 || {
            say "$t is not installed (Debian: apt-get install iproute2)"
            return 1
        }
    done
}

# Load a qdisc module if this kernel has modules; quiet, never fatal.
try_modprobe() {
    if command -v modprobe >/dev/null 2>&1; then
        modprobe -q "$1" 2>/dev/null || true
    fi
}

# rate_bits RATE: RATE in bit/s on stdout (tc's units: k, m, g, t are powers
# of 1000; "bit" may follow); fails on anything else.
rate_bits() {
    local r=${1,,} n unit
    [[ $r =~ ^([0-9]+)([kmgt]?)(bit)?$ ]] || return 1
    n=${BASH_REMATCH[1]}
    unit=${BASH_REMATCH[2]}
    case $unit in
    k) n=$((n * 1000)) ;;
    m) n=$((n * 1000000)) ;;
    g) n=$((n * 1000000000)) ;;
    t) n=$((n * 1000000000000)) ;;
    esac
    [ "$n" -gt 0 ] || return 1
    echo "$n"
}

# delay_ok DELAY: a delay tc understands (0, 0.1ms, 1ms, 50us, 1s).
delay_ok() { [[ ${1,,} =~ ^([0-9]+(\.[0-9]+)?(us|usec|ms|msec|s|sec)|0)$ ]]; }
delay_zero() { [[ $1 =~ ^0+(\.0+)?([a-z]*)$ ]]; }

ns_exists() { [ -e "/run/netns/$1" ]; }

# shape NS DEV BITS DELAY NETEM: the egress qdiscs of DEV in NS.
shape() {
    local ns=$1 dev=$2 bits=$3 delay=$4 netem=$5 burst limit parent=root
    if [ "$netem" = 1 ]; then
        # The tfifo holds the packets in flight for DELAY; 100000 packets is
        # far more than any rate x delay here needs, so netem never drops.
        run tc -n "$ns" qdisc add dev "$dev" root handle 1: netem delay "$delay" limit 100000
        parent="parent 1:1"
    fi
    if [ "$bits" != none ]; then
        burst=$((bits / 8 / 500)) # 2 ms of the rate
        [ "$burst" -ge 262144 ] || burst=262144
        limit=$((bits / 8 / 50)) # 20 ms of the rate
        [ "$limit" -ge 2097152 ] || limit=2097152
        # shellcheck disable=SC2086 # $parent is two words on purpose
        run tc -n "$ns" qdisc add dev "$dev" $parent handle 10: tbf rate "${bits}bit" \
            burst "$burst" limit "$((limit + burst))"
    fi
}

cmd_down() {
    local name=$1 ns
    for ns in "$name-src" "$name-dst"; do
        if ns_exists "$ns"; then
            run ip netns del "$ns"
        fi
    done
    return 0
}

# cmd_link NAME up|down: both ends of the veth pair.
cmd_link() {
    local name=$1 state=$2
    { ns_exists "$name-src" && ns_exists "$name-dst"; } || die "no link named $name (linkemu.sh up first)"
    run ip -n "$name-src" link set "$SRC_IF" "$state"
    run ip -n "$name-dst" link set "$DST_IF" "$state"
}

# can_qdisc KIND ARGS...: whether this kernel has the qdisc (tried on a
# dummy veth in the check namespace $CHECK_NS).
can_qdisc() {
    local kind=$1
    shift
    tc -n "$CHECK_NS" qdisc add dev ck0 root "$kind" "$@" 2>/dev/null && {
        tc -n "$CHECK_NS" qdisc del dev ck0 root 2>/dev/null || true
        return 0
    }
    try_modprobe "sch_$kind"
    tc -n "$CHECK_NS" qdisc add dev ck0 root "$kind" "$@" 2>/dev/null && {
        tc -n "$CHECK_NS" qdisc del dev ck0 root 2>/dev/null || true
        return 0
    }
    return 1
}

# features NEED_NETEM: "netns veth tbf netem" (what works) on stdout, or the
# reason on stderr and status 77 (also when NEED_NETEM is 1 and there is no
# netem). Run it in a subshell ($(features)): its EXIT trap removes the
# check namespace.
features() {
    local need_netem=$1
    local err have="netns veth"
    need_tools || return 77
    CHECK_NS=linkemu-check-$$
    if ! err=$(ip netns add "$CHECK_NS" 2>&1); then
        say "cannot create a network namespace: ${err:-ip netns add failed}" \
            "(needs root or CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        return 77
    fi
    # From here on the check namespace exists: remove it on every path.
    trap 'ip netns del "$CHECK_NS" 2>/dev/null || true' EXIT
    if ! err=$(ip -n "$CHECK_NS" link add ck0 type veth peer name ck1 2>&1); then
        say "cannot create a veth pair: $err (CONFIG_VETH)"
        return 77
    fi
    ip -n "$CHECK_NS" link set ck0 up 2>/dev/null || true
    if can_qdisc tbf rate 1gbit burst 262144 limit 2359296; then
        have+=" tbf"
    else
        say "the kernel has no sch_tbf qdisc (tc qdisc add ... tbf failed; CONFIG_NET_SCH_TBF)"
        return 77
    fi
    if can_qdisc netem delay 1ms; then
        have+=" netem"
    elif [ "$need_netem" = 1 ]; then
        say "the kernel has no sch_netem qdisc: delays cannot be emulated" \
            "(CONFIG_NET_SCH_NETEM; LINKEMU_DELAY=optional makes links without the delay)"
        return 77
    fi
    echo "$have"
}

cmd_check() {
    local have rc=0 need=1
    [ "${LINKEMU_DELAY:-}" != optional ] || need=0
    have=$(features "$need") || rc=$?
    [ "$rc" = 0 ] || exit "$rc"
    say "links can be made here ($have)"
    echo "$have"
}

# The EXIT trap of a failing `up`: remove what it made.
up_failed() {
    [ "$1" = 0 ] && return
    say "failed; removing $UP_NAME-src and $UP_NAME-dst"
    cmd_down "$UP_NAME"
}

cmd_up() {
    local name=$1 rate=$2 delay=$3 bits have netem=0 src=$1-src dst=$1-dst rc=0 need=0
    if [ "${rate,,}" = none ]; then
        bits=none
    else
        bits=$(rate_bits "$rate") || bad_arg "RATE '$rate' is not a rate (1gbit, 200mbit, none)"
    fi
    delay_ok "$delay" || bad_arg "DELAY '$delay' is not a delay (0.1ms, 50us, 0)"
    [[ $name =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || bad_arg "NAME '$name' must be 1..40 of [A-Za-z0-9_.-]"
    if ns_exists "$src" || ns_exists "$dst"; then
        die "$src or $dst exists already ('$PROG down $name' removes them)"
    fi
    if ! delay_zero "$delay" && [ "${LINKEMU_DELAY:-}" != optional ]; then
        need=1
    fi
    have=$(features "$need") || rc=$?
    [ "$rc" = 0 ] || exit "$rc"
    if ! delay_zero "$delay"; then
        if [[ " $have " == *" netem "* ]]; then
            netem=1
        else
            say "WARNING: no sch_netem in this kernel: the link gets no delay (asked: $delay)"
            delay=0
        fi
    fi

    # Any failure from here on removes what was made.
    UP_NAME=$name
    trap 'up_failed $?' EXIT
    run ip netns add "$src"
    run ip netns add "$dst"
    run ip -n "$src" link set lo up
    run ip -n "$dst" link set lo up
    # Made in the two namespaces directly: the names never exist outside.
    run ip link add "$SRC_IF" netns "$src" type veth peer name "$DST_IF" netns "$dst"
    run ip -n "$src" addr add "$SRC_ADDR/$PREFIX" dev "$SRC_IF"
    run ip -n "$dst" addr add "$DST_ADDR/$PREFIX" dev "$DST_IF"
    if [ "$netem" = 1 ] || [ "$bits" != none ]; then
        shape "$src" "$SRC_IF" "$bits" "$delay" "$netem"
        shape "$dst" "$DST_IF" "$bits" "$delay" "$netem"
    fi
    run ip -n "$src" link set "$SRC_IF" up
    run ip -n "$dst" link set "$DST_IF" up
    # The link is usable once both ends have carrier (it comes up
    # asynchronously); IPv4 addresses need no duplicate detection.
    local i
    for i in $(seq 50); do
        ip -n "$src" -o link show "$SRC_IF" | grep -q 'state UP' &&
            ip -n "$dst" -o link show "$DST_IF" | grep -q 'state UP' && break
        [ "$i" -lt 50 ] || die "the veth pair has no carrier after 5 s"
        sleep 0.1
    done
    trap - EXIT
    [ "$netem" = 1 ] || delay=none
    say "link $name up: $src $SRC_ADDR <-> $dst $DST_ADDR," \
        "rate $([ "$bits" = none ] && echo unlimited || echo "$rate") each way," \
        "delay $delay each way"
    echo "src $src $SRC_ADDR dst $dst $DST_ADDR rate $bits delay $delay"
}

# The receiving and the sending end of `measure` (python3, run in the
# namespaces with ip netns exec).
SINK_PY='
import socket, sys, threading, time
addr, n, portfile, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ls = socket.socket()
ls.bind((addr, 0))
ls.listen(n)
ls.settimeout(timeout)
with open(portfile + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
import os
os.rename(portfile + ".tmp", portfile)
lock = threading.Lock()
got = [0, None, None]  # bytes, first, last
def drain(c):
    buf = bytearray(1 << 20)
    c.settimeout(timeout)
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        t = time.monotonic()
        with lock:
            if got[1] is None:
                got[1] = t
            got[0] += k
            got[2] = t
ts = [threading.Thread(target=drain, args=(ls.accept()[0],)) for _ in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
span = (got[2] or 0) - (got[1] or 0)
print("%d %.6f" % (got[0], span))
'
SOURCE_PY='
import socket, sys, threading, time
addr, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def pump():
    s = socket.create_connection((addr, port), timeout=secs + 10)
    buf = memoryview(bytes(range(256)) * 4096)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        s.sendall(buf)
    s.close()
ts = [threading.Thread(target=pump) for _ in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
'

MEASURE_TMP=
MEASURE_SINK=
measure_cleanup() {
    if [ -n "$MEASURE_SINK" ]; then
        kill "$MEASURE_SINK" 2>/dev/null || true
        wait "$MEASURE_SINK" 2>/dev/null || true
    fi
    [ -z "$MEASURE_TMP" ] || rm -rf "$MEASURE_TMP"
}

cmd_measure() {
    local name=$1 secs=${2:-3} streams=${3:-1} tmp sink out bytes span i
    command -v python3 >/dev/null 2>&1 || die "measure needs python3"
    if ! ns_exists "$name-src" || ! ns_exists "$name-dst"; then
        die "no link $name ('$PROG up' first)"
    fi
    [[ $secs =~ ^[0-9]+(\.[0-9]+)?$ && $streams =~ ^[1-9][0-9]?$ ]] || usage
    trap measure_cleanup EXIT
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/linkemu.XXXXXX")
    MEASURE_TMP=$tmp
    ip netns exec "$name-dst" python3 -c "$SINK_PY" "$DST_ADDR" "$streams" "$tmp/port" \
        "$(awk -v s="$secs" 'BEGIN { print s + 20 }')" >"$tmp/out" &
    sink=$!
    MEASURE_SINK=$sink
    for i in $(seq 100); do
        [ -s "$tmp/port" ] && break
        kill -0 "$sink" 2>/dev/null || break
        [ "$i" -lt 100 ] || die "the receiving end did not start"
        sleep 0.05
    done
    [ -s "$tmp/port" ] || die "the receiving end did not start"
    say "measure: $streams TCP stream(s) $name-src -> $name-dst:$(cat "$tmp/port") for $secs s"
    ip netns exec "$name-src" python3 -c "$SOURCE_PY" "$DST_ADDR" "$(cat "$tmp/port")" \
        "$streams" "$secs" || die "the sending end failed"
    wait "$sink" || die "the receiving end failed"
    MEASURE_SINK=
    out=$(cat "$tmp/out")
    bytes=${out% *}
    span=${out#* }
    awk -v b="$bytes" -v s="$span" 'BEGIN {
        if (s <= 0) exit 1
        r = b * 8 / s
        printf "%s: measured %.1f Mbit/s (%.0f bytes in %.3f s)\n", ENVIRON["PROG"], r / 1e6,
            b, s > "/dev/stderr"
        printf "%.0f\n", r
    }'
}

[ $# -ge 1 ] || usage
export PROG
case $1 in
up)
    [ $# = 4 ] || usage
    cmd_up "$2" "$3" "$4"
    ;;
down)
    [ $# = 2 ] || usage
    need_tools || exit 1
    cmd_down "$2"
    ;;
cut | mend)
    [ $# = 2 ] || usage
    need_tools || exit 1
    cmd_link "$2" "$([ "$1" = cut ] && echo down || echo up)"
    ;;
check)
    [ $# = 1 ] || usage
    cmd_check
    ;;
measure)
    { [ $# -ge 2 ] && [ $# -le 4 ]; } || usage
    cmd_measure "$2" "${3:-3}" "${4:-1}"
    ;;
-h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    ;;
*) usage ;;
esac
