# Helpers of the shell end-to-end tests (sourced by test_cli.sh and
# test_tls.sh): skip, checks that count passes and failures, commands run
# with a deadline, vmig recv started in the background, JSON summaries.
# Each test calls lib_init first and finish last. KEEP_T=1 in the
# environment keeps the test's directory (its .out/.err files) for a look.
# shellcheck shell=bash disable=SC2034

skip() {
    echo "SKIP: $*" >&2
    exit 77
}

# Background processes still to be reaped. A pid leaves the list when it is
# waited for, so that cleanup never signals a pid the kernel gave to another.
PIDS=()
forget() {
    local p keep=()
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

# Stop every background process we started (TERM first: vmig cancels and
# exits; then KILL the process group that timeout(1) made), run the test's
# cleanup_hook if it has one, remove the dir.
cleanup() {
    local p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        kill -0 "$p" 2>/dev/null || continue
        kill -TERM "$p" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
    done
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        wait "$p" 2>/dev/null
    done
    [ "$(type -t cleanup_hook)" != function ] || cleanup_hook
    [ -n "${KEEP_T:-}" ] || { cd / && rm -rf "$T"; }
}

npass=0
nfail=0
pass() {
    npass=$((npass + 1))
    echo "ok   - $*"
}
fail() {
    nfail=$((nfail + 1))
    echo "FAIL - $*"
}
# check DESCRIPTION COMMAND...: pass if COMMAND succeeds.
check() {
    local d=$1
    shift
    if "$@"; then pass "$d"; else
        fail "$d"
        return 1
    fi
}

# run NAME CMD...: run with a deadline; stdout/stderr in $T/NAME.{out,err}, status in RC.
run() {
    local name=$1
    shift
    timeout -k 5 60 "$@" >"$T/$name.out" 2>"$T/$name.err"
    RC=$?
}
has() { grep -q -e "$2" "$T/$1" 2>/dev/null; }
empty() { [ ! -s "$T/$1" ]; }

now() { date +%s.%N; }
elapsed_lt() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) < float(sys.argv[3]) else 1)' "$@"; }

# start_recv NAME URI OUTPUT [ARGS...]: start 'vmig recv' in the background and
# wait until it listens. Sets RPID (the timeout(1) process; it passes signals
# on and exits with vmig's status) and RURI (the URI actually bound).
start_recv() {
    local name=$1 uri=$2 out=$3
    shift 3
    rm -f "$T/$name.uri"
    timeout -k 5 60 "$VMIG" recv --no-progress --uri-file "$T/$name.uri" "$@" "$uri" "$out" \
        >"$T/$name.out" 2>"$T/$name.err" &
    RPID=$!
    PIDS+=("$RPID")
    RURI=
    for _ in $(seq 200); do
        [ -s "$T/$name.uri" ] && break
        kill -0 "$RPID" 2>/dev/null || break
        sleep 0.025
    done
    [ -s "$T/$name.uri" ] && RURI=$(cat "$T/$name.uri")
}

# wait_exit PID SECONDS: wait for PID to exit; status in WRC; 1 if it is still
# running after SECONDS (it is then killed).
wait_exit() {
    local pid=$1 n=$(($2 * 20))
    while [ $n -gt 0 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.05
        n=$((n - 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        forget "$pid"
        WRC=137
        return 1
    fi
    wait "$pid" 2>/dev/null # (no "Killed" notice from bash)
    WRC=$?
    forget "$pid"
    return 0
}

# json FILE PYTHON-EXPR: FILE holds exactly one JSON object `d`; EXPR must be true.
json() {
    python3 - "$T/$1" "$2" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)  # fails on anything but one JSON value
if not isinstance(d, dict):
    sys.exit("not an object")
if not eval("(" + sys.argv[2] + ")", {}, {"d": d, "sum": sum, "len": len}):
    sys.exit("false: " + sys.argv[2] + "\n" + json.dumps(d))
EOF
}

# lib_init NAME TOOL...: check VMIG and the tools the test needs (skip
# without them), make the test's directory $T (vmig-NAME.XXXXXX) and enter it,
# and set the trap that cleans up.
lib_init() {
    local name=$1 tool
    shift
    VMIG=${VMIG:-}
    [ -n "$VMIG" ] || skip "VMIG is not set (meson sets it to the vmig binary)"
    [ -x "$VMIG" ] || skip "VMIG=$VMIG is not an executable"
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
    done
    T=$(mktemp -d "${TMPDIR:-/tmp}/vmig-$name.XXXXXX") || skip "mktemp -d failed"
    cd "$T" || skip "cannot enter $T"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# finish: the count line; exit 0 if nothing failed.
finish() {
    echo "$npass passed, $nfail failed, 0 skipped"
    [ "$nfail" = 0 ]
    exit
}

# json_last NAME EXPR: the last line of $T/NAME.out (vmig bench --json) is
# a JSON object d; EXPR (python) must be true.
json_last() {
    python3 - "$T/$1.out" "$2" <<'EOF'
import json, sys
try:
    d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except (IndexError, ValueError) as e:
    sys.exit("no JSON summary: %s" % e)
if not eval("(" + sys.argv[2] + "\n)"):
    sys.exit("false for %s" % {k: d.get(k) for k in ("ok", "error", "seconds", "wire_bytes",
                                                      "normal_pages", "codecs")})
EOF
}
