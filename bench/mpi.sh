#!/usr/bin/env bash
# The MPI benchmarks M1 and M2 (bench/README.md, "MPI"): cfutures' MPI executor
# (bench/src/bench_mpi.c, 3 worker ranks under mpirun -n 4) against
# mpi4py.futures.MPIPoolExecutor (bench/src/bench_mpi4py.py) on the same Open MPI, in
# the same run, over shared memory and over TCP on the loopback; then cfutures' three
# ways of waiting for MPI messages (CFUTURES_MPI_WAIT). Needs a CMake build with MPI in
# $BUILD_DIR (default build) and mpi4py (bench/install_deps.sh). Writes the table to
# $CF_BENCH_RESULTS/mpi-latest.md (default bench/results).
#
#   bash bench/mpi.sh [--quick]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}
OUT=${CF_BENCH_RESULTS:-bench/results}
N1=10000 N2=64 REPS=3
if [ "${1:-}" = --quick ]; then N1=1000 N2=8 REPS=1; fi
if ! command -v mpicc >/dev/null || [ ! -e "$BUILD_DIR/lib/libcfutures.so" ]; then
    echo "[mpi] no MPI or no $BUILD_DIR/lib/libcfutures.so: skipped" >&2
    exit 0
fi
BIN=$(mktemp -d)/bench_mpi
mpicc -O2 -Iinclude bench/src/bench_mpi.c -o "$BIN" -L"$BUILD_DIR/lib" -lcfutures \
    -Wl,-rpath,"$PWD/$BUILD_DIR/lib"
PY=${PYTHON:-python3}
export CF_MPI_BENCH=$BIN PYTHON=$PY

# The value of one run (bench/mpi_one.sh): impl, workload, n, then VAR=VALUE pairs.
one() {
    local impl=$1 w=$2 n=$3; shift 3
    bash bench/mpi_one.sh "$impl" "$w" "$n" "$REPS" "$@" | sed -n 's/^RESULT .* value=\([^ ]*\) .*/\1/p'
}
cf() { # transport workload n [VAR=VALUE...]
    local t=$1 w=$2 n=$3; shift 3
    if [ "$t" = tcp ]; then w=$w-tcp; fi
    one cfutures "$w" "$n" "$@"
}
py() { # transport workload n
    local t=$1 w=$2 n=$3
    if [ "$t" = tcp ]; then w=$w-tcp; fi
    one mpi4py "$w" "$n"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.1fx", a / b; else print "-" }'; }

mkdir -p "$OUT"
{
    echo "| workload | transport | cfutures | mpi4py.futures | ratio |"
    echo "|---|---|---|---|---|"
    for t in shm tcp; do
        a=$(cf $t M1 $N1); b=$(py $t M1 $N1)
        echo "| M1 $N1 x 100 B (tasks/s) | $t | $a | $b | $(ratio "$a" "$b") |"
        a=$(cf $t M2 $N2); b=$(py $t M2 $N2)
        echo "| M2 $N2 x 1 MiB (MiB/s each way) | $t | $a | $b | $(ratio "$a" "$b") |"
    done
    echo
    echo "| waiting (CFUTURES_MPI_WAIT), shm | M1 tasks/s | M2 MiB/s each way |"
    echo "|---|---|---|"
    for mode in backoff spin block; do
        echo "| $mode | $(cf shm M1 $N1 CFUTURES_MPI_WAIT=$mode) | $(cf shm M2 $N2 CFUTURES_MPI_WAIT=$mode) |"
    done
} | tee "$OUT/mpi-latest.md"
