#!/usr/bin/env bash
# cfutures benchmark suite: builds and runs every workload on cfutures and on the
# anchors (Boost.Asio, GLib, oneTBB, libuv, Rust threadpool, CPython, Boost.Thread,
# std::async, libthread-pool; mpi4py.futures for the MPI rows M*), then prints
# medians and ratios and writes bench/results/latest.{md,png}. See bench/README.md.
#
#   bash bench/run.sh            full run: 5 repetitions (CPython anchors: 3)
#   bash bench/run.sh --quick    CI: N / 100, 2 repetitions, W8 over 2 s
#
# Options: --reps K (repetitions of every implementation), --py-reps K (of the CPython
# anchors; default 3 in full mode, as each of their runs takes up to ~30 s),
# --only W1,W3,P1-map1 (a subset of workloads), --no-install (do not apt-get).
#
# Exits 0 when every build that could be made ran and passed its correctness checks,
# whatever the timings; non-zero if cfutures cannot be built or any check failed.
set -uo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
BUILD="$BENCH_DIR/build"
RESULTS="${CF_BENCH_RESULTS:-$BENCH_DIR/results}"  # CI points this elsewhere

QUICK=0
REPS=""
PY_REPS=""
ONLY=""
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --reps) REPS="$2"; shift ;;
        --py-reps) PY_REPS="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --no-install) INSTALL=0 ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 64 ;;
    esac
    shift
done

log() { echo "[bench] $*" >&2; }
START_TS=$(date +%s)

if [ "$QUICK" = 1 ]; then
    MODE=quick
    : "${REPS:=2}"
    : "${PY_REPS:=$REPS}"
    TIMEOUT=60
else
    MODE=full
    : "${REPS:=5}"
    : "${PY_REPS:=3}"
    TIMEOUT=300
fi

# Workloads and their N: full, quick. W8's N is seconds of idling.
WORKLOADS=(W1 W2 W3 W3-1 W3-lazy W3-c10 W4 W5 W6 W7 W8 W9 W10 W10-g10 P1-submit P1-map1 P1-map100 P1-1MiB P1-1MiB-w4 P1-1MiB-map4 D1-p50 D1-p99 D1-idle D1-proc-p50 D1-proc-p99 M1 M2 M1-tcp M2-tcp)
declare -A N_FULL=([W1]=1000000 [W2]=100000 [W3]=1000000 [W3-1]=1000000 [W3-lazy]=1000000 [W3-c10]=1000000 [W4]=100000 [W5]=1000000
                   [W6]=1000000 [W7]=1000000 [W8]=10 [W9]=1000000 [W10]=100000 [W10-g10]=100000 [P1-submit]=10000 [P1-map1]=10000
                   [P1-map100]=10000 [P1-1MiB]=64 [P1-1MiB-w4]=64 [P1-1MiB-map4]=64
                   [D1-p50]=10000 [D1-p99]=10000 [D1-idle]=100000 [D1-proc-p50]=1000 [D1-proc-p99]=1000
                   [M1]=10000 [M2]=64 [M1-tcp]=10000 [M2-tcp]=64)
declare -A N_QUICK=([W1]=10000 [W2]=1000 [W3]=10000 [W3-1]=10000 [W3-lazy]=10000 [W3-c10]=10000 [W4]=1000 [W5]=10000
                    [W6]=10000 [W7]=10000 [W8]=2 [W9]=10000 [W10]=1000 [W10-g10]=1000 [P1-submit]=1000 [P1-map1]=1000
                    [P1-map100]=1000 [P1-1MiB]=8 [P1-1MiB-w4]=8 [P1-1MiB-map4]=8
                    [D1-p50]=1000 [D1-p99]=1000 [D1-idle]=10000 [D1-proc-p50]=200 [D1-proc-p99]=200
                    [M1]=1000 [M2]=8 [M1-tcp]=1000 [M2-tcp]=8)
THREAD_IMPLS=(cfutures asio glib tbb libuv rust-threadpool py-threads)
PROCESS_IMPLS=(cfutures py-processes)

if [ -n "$ONLY" ]; then
    IFS=, read -r -a WORKLOADS <<< "$ONLY"
fi

NPROC=$(nproc)
export BENCH_THREADS="${BENCH_THREADS:-$NPROC}"
export BENCH_CHUNK="${BENCH_CHUNK:-1000}"
export BENCH_IDLE_WORKERS="${BENCH_IDLE_WORKERS:-32}"

# ---------------------------------------------------------------- dependencies
if [ "$INSTALL" = 1 ]; then
    bash "$BENCH_DIR/install_deps.sh"
fi
PYTHON="$(command -v python3 || true)"
if [ -z "$PYTHON" ]; then
    log "python3 not found on PATH: the CPython anchors and the report need it"
    exit 1
fi

# ---------------------------------------------------------------- builds
mkdir -p "$BUILD/lib" "$RESULTS"
BUILD_LOG="$BUILD/build.log"
: > "$BUILD_LOG"
declare -A BIN NOT_BUILT

log "building cfutures (cargo build --release)"
if ! (cd "$ROOT" && cargo build --release) >> "$BUILD_LOG" 2>&1; then
    log "cfutures failed to build; see $BUILD_LOG"
    tail -30 "$BUILD_LOG" >&2
    exit 1
fi
# Run against a private copy of the library, so that a rebuild of target/release
# during the run (another cargo build in this tree) cannot change what is measured.
cp -f "$ROOT/target/release/libcfutures.so" "$BUILD/lib/libcfutures.so"
ln -sf libcfutures.so "$BUILD/lib/libcfutures.so.0"

log "building the C/C++ programs (make -C bench, -O2)"
for t in cf probe asio glib tbb uv boost cxx stdcxx; do
    if ! make -C "$BENCH_DIR" -s "$t" CF_LIB="$BUILD/lib" >> "$BUILD_LOG" 2>&1; then
        log "  $t: build failed (see $BUILD_LOG)"
    fi
done

declare -A PROG=([cfutures]=bench_cf [asio]=bench_asio [glib]=bench_glib [tbb]=bench_tbb [libuv]=bench_uv [boost-thread]=bench_boost [cfutures-cxx]=bench_cxx)
declare -A PKG=([boost-thread]="libboost-thread-dev" [asio]="libboost-dev" [glib]="libglib2.0-dev" [tbb]="libtbb-dev" [libuv]="libuv1-dev" [thread-pool]="libthread-pool-dev")
# std::async and libthread-pool-dev share one program, told apart by its first argument.
for impl in std-async thread-pool; do
    if [ -x "$BUILD/bench_stdcxx" ]; then
        BIN[$impl]="$BUILD/bench_stdcxx $impl"
    else
        NOT_BUILT[$impl]="not built: bench_stdcxx failed to compile (is libthread-pool-dev installed? see bench/build/build.log)"
    fi
done
for impl in "${!PROG[@]}"; do
    if [ -x "$BUILD/${PROG[$impl]}" ]; then
        BIN[$impl]="$BUILD/${PROG[$impl]}"
    else
        NOT_BUILT[$impl]="not built: ${PROG[$impl]} failed to compile (is ${PKG[$impl]:-the library} installed? see bench/build/build.log)"
    fi
done
if [ -z "${BIN[cfutures]:-}" ]; then
    log "bench_cf did not build; see $BUILD_LOG"
    tail -30 "$BUILD_LOG" >&2
    exit 1
fi

# The MPI rows (M*): cfutures' MPI executor needs the library built with the cargo
# feature `mpi` (a copy of its own, so the other rows measure the usual build) and
# bench_mpi built with mpicc; both run under mpirun through bench/mpi_one.sh.
declare -A MPI_BIN
if printf '%s\n' "${WORKLOADS[@]}" | grep -q '^M'; then
    MPI_BIN[mpi4py]="bash $BENCH_DIR/mpi_one.sh mpi4py"
    if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
        log "building cfutures with MPI (cargo build --release --features mpi) and bench_mpi (mpicc)"
        if (cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/target/bench-mpi" cargo build --release --features mpi) >> "$BUILD_LOG" 2>&1 \
                && mkdir -p "$BUILD/lib-mpi" \
                && cp -f "$ROOT/target/bench-mpi/release/libcfutures.so" "$BUILD/lib-mpi/libcfutures.so" \
                && ln -sf libcfutures.so "$BUILD/lib-mpi/libcfutures.so.0" \
                && mpicc -O2 -I"$ROOT/include" "$BENCH_DIR/src/bench_mpi.c" -o "$BUILD/bench_mpi" \
                    -L"$BUILD/lib-mpi" -lcfutures -Wl,-rpath,"$BUILD/lib-mpi" >> "$BUILD_LOG" 2>&1; then
            export CF_MPI_BENCH="$BUILD/bench_mpi"
            # mpirun's own limit, inside run_one's: a hung job is ended, not orphaned.
            export CF_MPI_TIMEOUT=$((TIMEOUT - 10))
            # Each repetition is one job reporting the best of 3 runs inside it (1 in quick
            # mode), for both implementations alike, as bench/mpi.sh does: the first run
            # of a job pays for first use (bench/mpi_one.sh).
            if [ "$MODE" = quick ]; then export CF_MPI_REPS=1; else export CF_MPI_REPS=3; fi
            MPI_BIN[cfutures]="bash $BENCH_DIR/mpi_one.sh cfutures"
        else
            log "  the MPI build failed: no M rows for cfutures (see $BUILD_LOG)"
        fi
    else
        log "  no mpicc/mpirun (Open MPI): no M rows (apt-get install libopenmpi-dev openmpi-bin)"
        MPI_BIN=()
    fi
fi

log "building the Rust anchor (bench/rust_anchor, threadpool crate)"
if (cd "$BENCH_DIR/rust_anchor" && cargo build --release) >> "$BUILD_LOG" 2>&1 \
        && [ -x "$BENCH_DIR/rust_anchor/target/release/bench_rust" ]; then
    BIN[rust-threadpool]="$BENCH_DIR/rust_anchor/target/release/bench_rust"
else
    NOT_BUILT[rust-threadpool]="not built: cargo build of bench/rust_anchor failed (see bench/build/build.log)"
fi
BIN[py-threads]="$PYTHON $BENCH_DIR/src/bench_py.py"
BIN[py-processes]="$PYTHON $BENCH_DIR/src/bench_py.py"

# ---------------------------------------------------------------- runs
RAW="$RESULTS/latest-raw.txt"
: > "$RAW"
for impl in "${!NOT_BUILT[@]}"; do
    echo "NOTBUILT impl=$impl reason=${NOT_BUILT[$impl]}" >> "$RAW"
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Runs one implementation on one workload once; appends its lines to $RAW.
run_one() {
    local w="$1" impl="$2" n="$3" out rc bin
    bin=${BIN[$impl]:-}
    case "$w" in M*) bin=${MPI_BIN[$impl]:-} ;; esac
    if [ "$w" = W3-c10 ]; then
        # W3 with chunksize 10: every program runs its W3, reported under this name.
        out=$(BENCH_CHUNK=10 timeout "$TIMEOUT" $bin W3 "$n" 2>"$BUILD/last-stderr-$impl.txt")
        rc=$?
        out=${out//workload=W3 /workload=W3-c10 }
    else
        out=$(timeout "$TIMEOUT" $bin "$w" "$n" 2>"$BUILD/last-stderr-$impl.txt")
        rc=$?
    fi
    local lines
    lines=$(printf '%s\n' "$out" | grep -E '^(RESULT|NA|FAIL) ' || true)
    if [ "$rc" != 0 ] && ! printf '%s\n' "$lines" | grep -q '^FAIL '; then
        local why="exit_status_$rc"
        [ "$rc" = 124 ] && why="timed_out_after_${TIMEOUT}s"
        lines="$lines"$'\n'"FAIL workload=$w impl=$impl reason=$why"
    fi
    if [ -z "$(printf '%s' "$lines" | tr -d '[:space:]')" ]; then
        lines="FAIL workload=$w impl=$impl reason=no_output"
    fi
    printf '%s\n' "$lines" | sed '/^$/d' | sed "s/\$/ rep=$rep/" >> "$RAW"
    if printf '%s\n' "$lines" | grep -q '^FAIL '; then
        log "  FAIL $w $impl: $(printf '%s\n' "$lines" | grep '^FAIL ' | head -1)"
        sed 's/^/      /' "$BUILD/last-stderr-$impl.txt" | tail -5 >&2
    fi
    printf '%s\n' "$lines" | grep '^RESULT ' | sed -E 's/.*impl=([^ ]+) value=([^ ]+) unit=([^ ]+).*/    \1: \2 \3/' >&2
}

for ((rep = 1; rep <= REPS; rep++)); do
    log "repetition $rep/$REPS ($MODE)"
    # What a MiB costs in fresh and in present pages, for reading P1-1MiB (report.py).
    if [ -x "$BUILD/probe_pages" ]; then
        "$BUILD/probe_pages" 2>>"$BUILD_LOG" | grep '^PROBE ' | sed "s/\$/ rep=$rep/" >> "$RAW" || true
    fi
    for w in "${WORKLOADS[@]}"; do
        if [ "$MODE" = quick ]; then n=${N_QUICK[$w]:-}; else n=${N_FULL[$w]:-}; fi
        if [ -z "$n" ]; then log "unknown workload $w"; exit 64; fi
        case "$w" in
            P1-*) impls=("${PROCESS_IMPLS[@]}") ;;
            W3-1|W3-lazy) impls=(cfutures) ;; # cfutures' own variants of W3 (see report.py)
            # Continuations and fan-in: Boost.Thread's future::then / when_all.
            W9) impls=(cfutures cfutures-cxx boost-thread) ;;
            W10|W10-g10) impls=(cfutures boost-thread) ;;
            W1|W2|W5) impls=("${THREAD_IMPLS[@]}" cfutures-cxx boost-thread std-async thread-pool) ;;
            # ThreadPoolExecutor.map ignores chunksize: CPython's W3 row applies.
            W3-c10) impls=(cfutures asio glib tbb libuv rust-threadpool) ;;
            *) impls=("${THREAD_IMPLS[@]}") ;;
        esac
        case "$w" in P1-1MiB-w4) impls=(cfutures) ;; esac # cfutures' own variant of P1-1MiB
        case "$w" in D1-*) impls=(cfutures) ;; esac # task deadlines: no anchor has them
        case "$w" in M*) impls=(cfutures mpi4py) ;; esac # MPI: mpi4py.futures is the anchor
        # rotate the order each repetition so no implementation always runs first
        k=$(( (rep - 1) % ${#impls[@]} ))
        order=("${impls[@]:k}" "${impls[@]:0:k}")
        todo=()
        for impl in "${order[@]}"; do
            case "$w" in
                M*) [ -n "${MPI_BIN[$impl]:-}" ] || continue ;;
                *) [ -n "${BIN[$impl]:-}" ] || continue ;;
            esac
            case "$impl" in py-*) [ "$rep" -le "$PY_REPS" ] || continue ;; esac
            todo+=("$impl")
        done
        log " $w (N=$n): ${todo[*]}"
        if [ "$w" = W8 ]; then
            # Idle pools use (almost) no CPU, and each program measures only its own
            # process (getrusage RUSAGE_SELF): run them side by side to save time.
            pids=()
            for impl in "${todo[@]}"; do
                run_one "$w" "$impl" "$n" &
                pids+=($!)
            done
            for p in "${pids[@]}"; do wait "$p"; done
        else
            for impl in "${todo[@]}"; do run_one "$w" "$impl" "$n"; done
        fi
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( $(date +%s) - START_TS ))

# ---------------------------------------------------------------- report
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(cd "$ROOT" && git status --porcelain -- src Cargo.toml 2>/dev/null | head -1)
"$PYTHON" "$BENCH_DIR/report.py" \
    --raw "$RAW" --out "$RESULTS/latest.md" --png "$RESULTS/latest.png" \
    --mode "$MODE" --reps "$REPS" --py-reps "$PY_REPS" --nproc "$NPROC" \
    --threads "$BENCH_THREADS" --chunk "$BENCH_CHUNK" \
    --cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    --rev "$GIT_REV${GIT_DIRTY:+ (src/ has uncommitted changes)}" \
    --load "$LOAD_START -> $LOAD_END" --elapsed "$ELAPSED"
REPORT_RC=$?

log "done in ${ELAPSED}s: bench/results/latest.md, bench/results/latest.png"
if [ "$REPORT_RC" != 0 ]; then
    log "some implementation failed its checks or the report failed (see above)"
    exit 1
fi
exit 0
