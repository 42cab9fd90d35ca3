#!/bin/bash
# Long libFuzzer runs of the decoders, several at once, and a table of what
# they did (docs/fuzzing.md records the runs made before a release).
#
#   scripts/fuzz-run.sh [-j JOBS] [-o DIR] [-n NICE] TARGET=SECONDS... | SECONDS
#
# SECONDS alone runs every target for that long. JOBS targets run at a time
# (default: the number of CPUs), each under nice NICE (default 0). Each
# target starts from tests/fuzz/corpus/T and writes new inputs to
# tests/fuzz/corpus-new/T; its log, and any crashing, leaking, slow or
# out-of-memory input, go to DIR (default fuzz-out/). Needs build-fuzz
# (make fuzz builds it). Prints a Markdown table; exits 1 if a target found
# a failure (the table names the input to reproduce it with).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS="handshake chack packet control minivm_state minivm_sdev codec_zlib codec_zstd codec_deflate_page codec_lz4 tls_record"
jobs=$(nproc)
out=fuzz-out
nice_level=0
while getopts "j:o:n:h" opt; do
    case $opt in
    j) jobs=$OPTARG ;;
    o) out=$OPTARG ;;
    n) nice_level=$OPTARG ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-j JOBS] [-o DIR] [-n NICE] TARGET=SECONDS... | SECONDS" >&2; exit 2; }

plan=()
if [ $# -eq 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    for t in $TARGETS; do plan+=("$t=$1"); done
else
    for a in "$@"; do
        t=${a%%=*} s=${a#*=}
        [[ $a == *=* && $s =~ ^[0-9]+$ && " $TARGETS " == *" $t "* ]] ||
            { echo "$0: '$a': expected TARGET=SECONDS, TARGET one of: $TARGETS" >&2; exit 2; }
        plan+=("$a")
    done
fi
for p in "${plan[@]}"; do
    t=${p%%=*}
    [ -x "build-fuzz/tests/fuzz/fuzz_$t" ] ||
        { echo "$0: build-fuzz/tests/fuzz/fuzz_$t is missing (run make fuzz FUZZ_SECONDS=1 first)" >&2; exit 2; }
done
mkdir -p "$out"

# shellcheck disable=SC2317  # run by xargs through bash -c
run_one() {
    local t=${1%%=*} s=${1#*=}
    mkdir -p "tests/fuzz/corpus-new/$t"
    local rc=0
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        nice -n "$nice_level" "./build-fuzz/tests/fuzz/fuzz_$t" -max_total_time="$s" \
        -print_final_stats=1 -artifact_prefix="$out/$t-" \
        "tests/fuzz/corpus-new/$t" "tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$out/$t.rc"
}
export -f run_one
export out nice_level
printf '%s\n' "${plan[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}

stat() { sed -n "s/^stat::$2: *//p" "$out/$1.log" | tail -1; }
failed=0
echo "| target | seconds | executions | exec/s | coverage (edges) | features | new inputs | failures |"
echo "|---|---|---|---|---|---|---|---|"
for p in "${plan[@]}"; do
    t=${p%%=*} s=${p#*=}
    last=$(grep -E '^#[0-9]+' "$out/$t.log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    arts=$(find "$out" -maxdepth 1 \( -name "$t-crash-*" -o -name "$t-leak-*" -o -name "$t-timeout-*" \
        -o -name "$t-oom-*" \) -printf '%f ')
    rc=$(cat "$out/$t.rc")
    [ "$rc" = 0 ] && [ -z "$arts" ] || failed=1
    echo "| $t | $s | $(stat "$t" number_of_executed_units) | $(stat "$t" average_exec_per_sec) | ${cov:-?} | ${ft:-?} | $(stat "$t" new_units_added) | ${arts:-none}$([ "$rc" = 0 ] || echo " (exit $rc)") |"
done
exit $failed
