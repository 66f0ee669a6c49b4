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
RUN=(mpirun --oversubscribe -n 4)
[ "$(id -u)" = 0 ] && RUN+=(--allow-run-as-root)
SHM=(--mca btl self,vader)
TCP=(--mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
PY=${PYTHON:-python3}

cf() { # transport workload n [env...]
    local t=$1 w=$2 n=$3; shift 3
    local -a tr; if [ "$t" = shm ]; then tr=("${SHM[@]}"); else tr=("${TCP[@]}"); fi
    env "$@" timeout 600 "${RUN[@]}" "${tr[@]}" -x CFUTURES_MPI_WAIT "$BIN" "$w" "$n" "$REPS" \
        2>/dev/null | awk -v w="$w" '$1 == w { print $2 }'
}
py() { # transport workload n
    local t=$1 w=$2 n=$3
    local -a tr; if [ "$t" = shm ]; then tr=("${SHM[@]}"); else tr=("${TCP[@]}"); fi
    if ! "$PY" -c "import mpi4py" 2>/dev/null; then echo "-"; return; fi
    timeout 900 "${RUN[@]}" "${tr[@]}" "$PY" -m mpi4py.futures bench/src/bench_mpi4py.py \
        "$w" "$n" "$REPS" 2>/dev/null | awk -v w="$w" '$1 == w { print $2 }'
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
