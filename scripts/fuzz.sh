#!/usr/bin/env bash
# Fuzzes the C API with libFuzzer for a bounded time (c_tests/fuzz/fuzz_api.c).
#
#   bash scripts/fuzz.sh [SECONDS] [--update-corpus]
#
# SECONDS defaults to 60. Installs clang and libclang-rt-14-dev with apt if clang cannot
# build a libFuzzer program, configures and builds the CMake tree ($BUILD_DIR, default
# build; the fuzzer target fuzz_api is built there once clang is found), then runs
#
#   fuzz_api -max_total_time=SECONDS -timeout=10 -rss_limit_mb=4096 WORK corpus/
#
# where WORK ($BUILD_DIR/fuzz/work) receives the new inputs and c_tests/fuzz/corpus/ (the
# committed seeds) is only read. With --update-corpus, the inputs that add coverage are
# then merged into c_tests/fuzz/corpus/ (libFuzzer -merge=1; commit them).
#
# Fails (non-zero) on any crash, contract violation (abort), ASan/UBSan/LeakSanitizer
# report, timeout (an input running more than 10 s: a hang) or out-of-memory. The input
# that did it is saved under c_tests/fuzz/crashes/ (crash-*, leak-*, timeout-*, oom-*);
# reproduce it with
#
#   build/c_tests/fuzz/fuzz_api c_tests/fuzz/crashes/crash-...       (ASan + UBSan)
#   CF_FUZZ_TRACE=1 build/c_tests/fuzz/fuzz_replay c_tests/fuzz/crashes/crash-...
#
# Environment: BUILD_DIR, FUZZ_JOBS (parallel fuzzing processes, default 1),
# FUZZ_NO_BUILD=1 (use the build tree as it is).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SECONDS_TO_RUN=60
UPDATE_CORPUS=0
for arg in "$@"; do
    case "$arg" in
    --update-corpus) UPDATE_CORPUS=1 ;;
    '' | *[!0-9]*)
        echo "usage: bash scripts/fuzz.sh [SECONDS] [--update-corpus]" >&2
        exit 2
        ;;
    *) SECONDS_TO_RUN=$arg ;;
    esac
done

CORPUS="$CFUTURES_ROOT/c_tests/fuzz/corpus"
CRASHES="$CFUTURES_ROOT/c_tests/fuzz/crashes"

# Can this clang build a libFuzzer program with ASan and UBSan?
clang_fuzzer_ok() {
    command -v clang >/dev/null 2>&1 || return 1
    local dir
    dir=$(mktemp -d)
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$dir/probe.c"
    local ok=0
    clang -fsanitize=fuzzer,address,undefined "$dir/probe.c" -o "$dir/probe" >/dev/null 2>&1 || ok=1
    rm -rf "$dir"
    return "$ok"
}

ensure_build_tools
if ! clang_fuzzer_ok; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "==> installing clang libclang-rt-14-dev with apt-get (libFuzzer)"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        clang libclang-rt-14-dev
    if ! clang_fuzzer_ok; then
        echo "fuzz: clang still cannot build with -fsanitize=fuzzer,address,undefined" >&2
        exit 1
    fi
fi

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    configure_and_build
fi
FUZZER="$CFUTURES_ROOT/$BUILD_DIR/c_tests/fuzz/fuzz_api"
if [ ! -x "$FUZZER" ]; then
    echo "fuzz: $FUZZER was not built (see 'fuzz_api:' in the cmake output)" >&2
    exit 1
fi

WORK="$CFUTURES_ROOT/$BUILD_DIR/fuzz/work"
mkdir -p "$WORK" "$CRASHES"
JOBS=${FUZZ_JOBS:-1}
args=(
    -max_total_time="$SECONDS_TO_RUN"
    -timeout=10
    -rss_limit_mb=4096
    -max_len=4096
    -print_final_stats=1
    -artifact_prefix="$CRASHES/"
)
echo "==> fuzz_api ${args[*]} (${JOBS} job(s)) $WORK $CORPUS"
LOG="$CFUTURES_ROOT/$BUILD_DIR/fuzz/fuzz.log"
extra=()
if [ "$JOBS" -gt 1 ]; then
    # -fork keeps going after a finding unless told not to: stop at the first one.
    extra=(-fork="$JOBS" -ignore_crashes=0 -ignore_timeouts=0 -ignore_ooms=0)
fi
stamp=$(mktemp)
status=0
start=$(date +%s)
"$FUZZER" "${args[@]}" "${extra[@]}" "$WORK" "$CORPUS" </dev/null >"$LOG" 2>&1 || status=$?
# The progress lines are many; keep the start, the final stats and any report.
grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)' "$LOG" | tail -n 150
took=$(($(date +%s) - start))

if [ "$status" -ne 0 ]; then
    echo
    echo "==> fuzz: FAILED after ${took}s (libFuzzer exit status $status); full log in $LOG"
    found=$(find "$CRASHES" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
        -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) -newer "$stamp" || true)
    rm -f "$stamp"
    for f in $found; do
        echo "reproduce: $FUZZER $f"
        echo "           CF_FUZZ_TRACE=1 $CFUTURES_ROOT/$BUILD_DIR/c_tests/fuzz/fuzz_replay $f"
    done

    exit 1
fi

rm -f "$stamp"
if [ "$UPDATE_CORPUS" = 1 ]; then
    before=$(find "$CORPUS" -type f | wc -l)
    echo "==> fuzz_api -merge=1 $CORPUS $WORK"
    "$FUZZER" -merge=1 -timeout=10 -rss_limit_mb=4096 "$CORPUS" "$WORK" </dev/null \
        >"$CFUTURES_ROOT/$BUILD_DIR/fuzz/merge.log" 2>&1
    after=$(find "$CORPUS" -type f | wc -l)
    echo "==> corpus: $before -> $after files in c_tests/fuzz/corpus (commit the new ones)"
fi
stats=$(grep -E '^stat::number_of_executed_units' "$LOG" | tail -1 || true)
echo "==> fuzz: no crash, leak or timeout in ${took}s (${stats#stat::})"

