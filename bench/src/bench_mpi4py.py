"""M1 and M2 with mpi4py.futures.MPIPoolExecutor, the anchor of bench_mpi.c.

    mpiexec -n 4 python3 -m mpi4py.futures bench/src/bench_mpi4py.py M1 10000
    mpiexec -n 4 python3 -m mpi4py.futures bench/src/bench_mpi4py.py M2 64

Rank 0 runs this; the other 3 ranks are the pool's workers (mpi4py.futures' own
launcher). Prints "M1 <tasks/s>" or "M2 <MiB/s each way>", the best of REPS runs.
"""
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def echo(b):
    return b


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "M1"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    size = (1 << 20) if which == "M2" else 100
    data = bytes(7 for _ in range(size))
    best = 0.0
    with MPIPoolExecutor() as ex:
        for f in [ex.submit(echo, b"x") for _ in range(9)]:
            f.result()
        for rep in range(reps):
            t0 = time.perf_counter()
            fs = [ex.submit(echo, data) for _ in range(n)]
            for f in fs:
                assert len(f.result()) == size
            t = time.perf_counter() - t0
            rate = n * size / (1 << 20) / t if which == "M2" else n / t
            print(f"bench_mpi4py {which} rep {rep}: {rate:.0f} {'MiB/s each way' if which == 'M2' else 'tasks/s'}, {t:.3f} s",
                  file=sys.stderr)
            best = max(best, rate)
    print(f"{which} {best:.0f}")


if __name__ == "__main__":
    main()
