#!/usr/bin/env bash
# Runs the C tests under valgrind memcheck on a Release build (STYLE.md section 7, row 8).
#
#   bash scripts/memcheck.sh            # builds (or reuses) build/, runs every test below
#   bash scripts/memcheck.sh test_wait  # only the tests whose CTest name matches a regex
#
# Which tests: every CTest test named test_* (one per c_tests/test_*.c), plus every test
# with the CTest label `memcheck` or `stress_short` (short stress/fault variants sized for
# slow tools; see c_tests/stress/CMakeLists.txt). A test that cannot run under valgrind
# (e.g. it relies on RLIMIT_AS) simply does not carry those labels.
#
# Each test runs with its own CTest command line, working directory and ENVIRONMENT under
#   valgrind --error-exitcode=1 --leak-check=full
#            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect
# two at a time (xargs -P; MEMCHECK_JOBS, default 2), each bounded by MEMCHECK_TIMEOUT
# seconds (default 400). The tests' own watchdogs are off
# (CF_TEST_NO_WATCHDOG=1) and their upper time bounds are loosened (CF_TEST_TIME_SCALE=10).
#
# Process pools fork (a fork server, then workers): valgrind follows a fork by itself
# (--trace-children only concerns exec), so workers run under memcheck too, each with its
# own log file (%p). The run fails if any test exits non-zero (a test failure, or
# valgrind's --error-exitcode in the test's own process), times out, if the test's own
# process reports any error or definitely/indirectly lost bytes, or if a forked process
# reports a memory error (not a leak: see judge.py below for why, and for the workers
# that the tests crash on purpose).
#
# Logs: $BUILD_DIR/memcheck/<test>.out (the test's output) and <test>.vg.<pid>.log.
# The library's block cache is off (CFUTURES_NO_BLOCK_CACHE=1), so that valgrind sees
# every free; four tests run a second time with it on (see CACHE_ON).
# Environment: BUILD_DIR (default build), MEMCHECK_JOBS, MEMCHECK_TIMEOUT (per test),
# MEMCHECK_TOTAL_TIMEOUT (the whole run, default 1200 s), MEMCHECK_NO_BUILD=1 (use the
# build tree as it is).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

FILTER=${1:-}

# The library's small-block cache (src/rt/blocks.rs) keeps freed futures for reuse,
# where valgrind could not see a use after free: off for this run, except in a second
# run of the tests in CACHE_ON below (jobs named <test>.cache_on), whose leak check
# covers the cache's own paths (blocks handed between threads, magazines given back
# when a thread exits).
export CFUTURES_NO_BLOCK_CACHE=1
CACHE_ON="test_callbacks test_shutdown test_thread_pool test_lazy_workers"

ensure_build_tools
if ! command -v valgrind >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
    pkgs=()
    command -v valgrind >/dev/null 2>&1 || pkgs+=(valgrind)
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "==> installing ${pkgs[*]} with apt-get"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
fi

if [ "${MEMCHECK_NO_BUILD:-0}" != 1 ]; then
    configure_and_build
fi
if ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD_DIR/CMakeCache.txt"; then
    echo "memcheck: $BUILD_DIR is not a Release build" >&2
    exit 1
fi
if grep -q '^CFUTURES_SANITIZE:BOOL=ON$' "$BUILD_DIR/CMakeCache.txt"; then
    echo "memcheck: $BUILD_DIR is built with sanitizers, which do not mix with valgrind" >&2
    exit 1
fi

OUT="$(cd "$BUILD_DIR" && pwd)/memcheck"
rm -rf "$OUT"
mkdir -p "$OUT"

# One job file per selected test: line 1 the name, line 2 the working directory, then
# NAME=VALUE environment lines up to a line "--", then one argument per line.
ctest --test-dir "$BUILD_DIR" --show-only=json-v1 >"$OUT/tests.json"
python3 - "$OUT" "$FILTER" "$CACHE_ON" <<'EOF'
import json, os, re, sys
out, flt, cache_on = sys.argv[1], sys.argv[2], sys.argv[3].split()
tests = json.load(open(os.path.join(out, "tests.json")))["tests"]
n = 0
for t in tests:
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    labels = props.get("LABELS", [])
    if not (t["name"].startswith("test_") or "memcheck" in labels or "stress_short" in labels):
        continue
    if flt and not re.search(flt, t["name"]):
        continue
    if props.get("DISABLED"):
        continue
    for arg in t["command"]:
        if "\n" in arg:
            sys.exit("memcheck: newline in the command of " + t["name"])
    variants = [(t["name"], [])]
    if t["name"] in cache_on:
        variants.append((t["name"] + ".cache_on", ["CFUTURES_NO_BLOCK_CACHE=0"]))
    for name, extra in variants:
        with open(os.path.join(out, name + ".job"), "w") as f:
            f.write(name + "\n")
            f.write(props.get("WORKING_DIRECTORY", os.getcwd()) + "\n")
            for e in props.get("ENVIRONMENT", []) + extra:
                f.write(e + "\n")
            f.write("--\n")
            for arg in t["command"]:
                f.write(arg + "\n")
        n += 1
if n == 0:
    sys.exit("memcheck: no test selected")
EOF

# Judges the valgrind logs of one test (every process: the test's own and each forked
# fork server and worker; valgrind follows fork, one log per pid). Prints one line per
# process with a problem and exits 1 if there is one.
#  - The test's own process (the one whose parent has no log): any error, and any
#    definitely or indirectly lost block.
#  - A forked process: any error other than a leak record, unless the process was
#    killed by a signal (the process-pool tests crash workers on purpose: SIGSEGV after
#    an invalid write is the test, not a bug). Leaks are not counted in forked processes:
#    a worker or the fork server ends with _exit() without freeing, and whatever it
#    inherited from the multi-threaded parent is referenced only from the parent's other
#    thread stacks, which the child does not have, so memcheck calls it "definitely lost".
cat >"$OUT/judge.py" <<'EOF'
import glob, os, re, sys
out, name = sys.argv[1], sys.argv[2]
logs = {}
for path in glob.glob(os.path.join(out, name + ".vg.*.log")):
    logs[int(path.rsplit(".", 2)[-2])] = (path, open(path, errors="replace").read())
bad = 0
for pid, (path, text) in sorted(logs.items()):
    m = re.search(r"Parent PID: (\d+)", text)
    main = not m or int(m.group(1)) not in logs
    es = re.search(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts", text)
    contexts = int(es.group(2)) if es else 0
    leaks = len(re.findall(r"are (?:definitely|indirectly) lost in loss record", text))
    lost = re.findall(r"(definitely|indirectly) lost: ([\d,]+) bytes", text)
    lost = [(k, n) for k, n in lost if n != "0"]
    signal = re.search(r"Process terminating with default action of signal \d+ \((\w+)\)", text)
    base = os.path.basename(path)
    if main:
        if contexts or lost:
            print(f"  {base} (the test's process): {contexts} error contexts"
                  + "".join(f", {k} lost {n} bytes" for k, n in lost))
            bad = 1
    elif contexts - leaks > 0 and not signal:
        print(f"  {base} (forked process): {contexts - leaks} error contexts (leaks not counted)")
        bad = 1
sys.exit(bad)
EOF

# Runs one job file; prints one line ok/FAIL with the time taken.
run_one() {
    local job=$1 out=$2 timeout=$3
    local name dir envs=() args=() line state=env
    {
        read -r name
        read -r dir
        while IFS= read -r line; do
            if [ "$state" = env ]; then
                if [ "$line" = "--" ]; then state=args; else envs+=("$line"); fi
            else
                args+=("$line")
            fi
        done
    } <"$job"
    local start rc=0
    start=$(date +%s)
    (
        cd "$dir"
        exec env CF_TEST_NO_WATCHDOG=1 CF_TEST_TIME_SCALE=10 "${envs[@]}" \
            timeout --kill-after=20 "$timeout" \
            valgrind --error-exitcode=1 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
            --trace-children=no --num-callers=40 \
            --log-file="$out/$name.vg.%p.log" "${args[@]}"
    ) >"$out/$name.out" 2>&1 </dev/null || rc=$?
    local took=$(($(date +%s) - start)) bad="" judged
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        bad="timed out after ${timeout}s"
    elif [ "$rc" -ne 0 ]; then
        bad="exit status $rc (the test failed, or valgrind found errors in its process)"
    fi
    judged=$(python3 "$out/judge.py" "$out" "$name") || bad="${bad:+$bad; }valgrind errors"
    if [ -n "$bad" ]; then
        { echo "FAIL $name (${took}s): $bad"; [ -z "$judged" ] || echo "$judged"; } |
            tee "$out/$name.failed"
    else
        echo "ok   $name (${took}s)"
        echo "$name" >>"$out/passed"
    fi
}
export -f run_one

JOBS=${MEMCHECK_JOBS:-2}
TIMEOUT=${MEMCHECK_TIMEOUT:-400}
TOTAL_TIMEOUT=${MEMCHECK_TOTAL_TIMEOUT:-1200}
njobs=$(find "$OUT" -name '*.job' | wc -l)
echo "==> valgrind memcheck: $njobs tests, $JOBS at a time, at most ${TIMEOUT}s each (logs in $OUT)"
start=$(date +%s)
# Longest first (process pools, stress), so that the two lanes end together.
# The whole run is bounded too (MEMCHECK_TOTAL_TIMEOUT, default 1200 s): timeout signals
# its whole process group, so the valgrind runs still going end with it.
total_rc=0
find "$OUT" -name '*.job' | sort | awk '{ k = ($0 ~ /process|stress|fault/) ? 0 : 1; print k "\t" $0 }' |
    sort -k1,1n -s | cut -f2- |
    timeout --kill-after=30 "$TOTAL_TIMEOUT" \
        xargs -P "$JOBS" -I{} bash -c 'run_one "$1" "$2" "$3"' _ {} "$OUT" "$TIMEOUT" ||
    total_rc=$?
took=$(($(date +%s) - start))
if [ "$total_rc" -ne 0 ]; then
    echo "memcheck: the run did not finish within ${TOTAL_TIMEOUT}s (status $total_rc)" |
        tee "$OUT/_total.failed"
fi

failed=("$OUT"/*.failed)
if [ -e "${failed[0]}" ]; then
    echo
    echo "==> memcheck FAILED (${took}s):"
    for f in "${failed[@]}"; do
        name=$(basename "$f" .failed)
        cat "$f"
        echo "---- $name: output (last 30 lines)"
        tail -n 30 "$OUT/$name.out" || true
        for log in $(grep -o "$name"'\.vg\.[0-9]*\.log' "$f" | sort -u); do
            echo "---- $name: $log (errors and leak records; full log in $OUT)"
            # Without the banner and the pidfd_open noise of valgrind 3.19.
            grep -v -E '^==[0-9]+== (Memcheck|Copyright|Using Valgrind|Command|Parent PID)|unhandled amd64-linux syscall|write your own handler|README_MISSING|Nevertheless we consider|valgrind.org/support' \
                "$OUT/$log" | head -n 250
        done
    done
    nfailed=$(find "$OUT" -name '*.failed' ! -name '_total.failed' | wc -l)
    echo "$(grep -c '' "$OUT/passed" 2>/dev/null || echo 0) passed, $nfailed failed"
    exit 1
fi
echo "==> memcheck: all $njobs tests clean (${took}s)"
echo "$njobs passed, 0 failed"
