#!/usr/bin/env bash
# One run of an MPI benchmark (bench/README.md, "MPI"), printed as the RESULT line
# bench/run.sh collects (or a FAIL / NA line):
#
#   bash bench/mpi_one.sh IMPL WORKLOAD N [REPS] [VAR=VALUE ...]
#
# IMPL: cfutures (the program $CF_MPI_BENCH, bench/src/bench_mpi.c built with mpicc:
# bench/run.sh and bench/mpi.sh build it) or mpi4py (mpi4py.futures.MPIPoolExecutor,
# bench/src/bench_mpi4py.py). WORKLOAD: M1 (N byte tasks of 100 B) or M2 (N x 1 MiB in
# and out), over shared memory (btl self,vader), or M1-tcp / M2-tcp (btl self,tcp on the
# loopback, the transport between machines). Always 4 ranks under mpirun
# --oversubscribe: rank 0 submits, 3 worker ranks. The value is the best of REPS
# (default $CF_MPI_REPS, else 1) runs inside the one job: the first run of a job also
# pays for first use (Open MPI's first large messages between two ranks, fresh memory on
# every side), which the later ones do not. VAR=VALUE pairs go into the ranks'
# environment (CFUTURES_MPI_WAIT=spin, say).
set -uo pipefail
impl=$1 w=$2 n=$3 reps=${4:-${CF_MPI_REPS:-1}}
shift $(($# < 4 ? $# : 4))
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

base=${w%-tcp}
case "$base" in
    M1) unit=tasks/s ;;
    M2) unit=MiB/s ;;
    *) echo "FAIL workload=$w impl=$impl reason=unknown_workload"; exit 64 ;;
esac
RUN=(mpirun --oversubscribe -n 4)
[ "$(id -u)" = 0 ] && RUN+=(--allow-run-as-root)
if [ "$w" = "$base" ]; then
    RUN+=(--mca btl self,vader)
else
    RUN+=(--mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
fi
for kv in "$@"; do RUN+=(-x "$kv"); done

case "$impl" in
    cfutures)
        if [ ! -x "${CF_MPI_BENCH:-}" ]; then
            echo "NA workload=$w impl=$impl reason=bench_mpi not built (no MPI, or no CMake build with MPI)"
            exit 0
        fi
        cmd=("$CF_MPI_BENCH" "$base" "$n" "$reps") ;;
    mpi4py)
        py=${PYTHON:-python3}
        if ! "$py" -c "import mpi4py" 2>/dev/null; then
            echo "NA workload=$w impl=$impl reason=mpi4py not installed (bench/install_deps.sh)"
            exit 0
        fi
        cmd=("$py" -m mpi4py.futures "$BENCH_DIR/src/bench_mpi4py.py" "$base" "$n" "$reps") ;;
    *) echo "FAIL workload=$w impl=$impl reason=unknown_impl"; exit 64 ;;
esac

out=$(timeout "${CF_MPI_TIMEOUT:-900}" "${RUN[@]}" "${cmd[@]}" 2>/dev/null)
rc=$?
value=$(printf '%s\n' "$out" | awk -v w="$base" '$1 == w { print $2 }' | tail -1)
if [ -z "$value" ]; then
    echo "FAIL workload=$w impl=$impl reason=exit_status_${rc}_no_result"
    exit 1
fi
echo "RESULT workload=$w impl=$impl value=$value unit=$unit n=$n"
