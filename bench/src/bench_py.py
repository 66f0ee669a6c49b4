"""CPython anchors: concurrent.futures ThreadPoolExecutor (W1-W8) and
ProcessPoolExecutor (P1).  `python3 bench_py.py WORKLOAD N`; prints RESULT lines like
the C programs (impl=py-threads or impl=py-processes).  Pool size: BENCH_THREADS or
the number of CPUs, as for every implementation."""

import concurrent.futures as cf
import itertools
import os
import resource
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGESIZE")
TABLE = bytes((b + 1) & 0xFF for b in range(256))
WORKLOAD = "?"
IMPL = "py-threads"


def threads():
    n = int(os.environ.get("BENCH_THREADS", "0") or 0)
    return n if n > 0 else (os.cpu_count() or 1)


def result(value, unit, n):
    print(f"RESULT workload={WORKLOAD} impl={IMPL} value={value:.6g} unit={unit} n={n}", flush=True)


def fail(why):
    print(f"FAIL {WORKLOAD}/{IMPL}: {why}", file=sys.stderr)
    print(f"FAIL workload={WORKLOAD} impl={IMPL} reason={why.replace(' ', '_')}", flush=True)
    sys.exit(2)


def check(cond, why):
    if not cond:
        fail(why)


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def noop(x=None):
    return x


def square(x):
    return x * x


def spin(i):
    ns = (i % 7) * 200
    if ns:
        end = time.perf_counter_ns() + ns
        while time.perf_counter_ns() < end:
            pass
    return i


def inc(b):
    return b.translate(TABLE)


def make_input(size, seed):
    return bytes(((seed * 131 + k * 7) & 0xFF) for k in range(size))


def warm(ex, k=64):
    for f in [ex.submit(noop, i) for i in range(k)]:
        f.result()


def w1(n):
    with cf.ThreadPoolExecutor(threads()) as ex:
        warm(ex)
        t0 = time.perf_counter()
        fs = [ex.submit(noop, i) for i in range(n)]
        s = sum(f.result() for f in fs)
        del fs
        t = time.perf_counter() - t0
    check(s == n * (n - 1) // 2, "sum")
    result(n / t, "tasks/s", n)


def w2(n):
    with cf.ThreadPoolExecutor(threads()) as ex:
        warm(ex, 16)
        s = 0
        submit = ex.submit
        t0 = time.perf_counter()
        for i in range(n):
            s += submit(noop, i).result()
        t = time.perf_counter() - t0
    check(s == n * (n - 1) // 2, "sum")
    result(t / n * 1e6, "us/roundtrip", n)


def w3(n):
    chunk = int(os.environ.get("BENCH_CHUNK", "1000"))
    with cf.ThreadPoolExecutor(threads()) as ex:
        warm(ex)
        t0 = time.perf_counter()
        # chunksize is accepted but ignored by ThreadPoolExecutor (documented)
        out = list(ex.map(square, range(n), chunksize=chunk))
        t = time.perf_counter() - t0
    check(out == [i * i for i in range(n)], "map output")
    result(n / t, "items/s", n)


def w4(n):
    with cf.ThreadPoolExecutor(threads()) as ex:
        warm(ex)
        t0 = time.perf_counter()
        fs = [ex.submit(spin, i) for i in range(n)]
        s = 0
        got = 0
        for f in cf.as_completed(fs):
            s += f.result()
            got += 1
        t = time.perf_counter() - t0
    check(got == n and s == n * (n - 1) // 2, "as_completed sum")
    result(n / t, "tasks/s", n)


def w5(n):
    counter = itertools.count(1)  # next() is atomic under the GIL
    done = threading.Event()

    def cb(_f):
        if next(counter) == n:
            done.set()

    with cf.ThreadPoolExecutor(threads()) as ex:
        warm(ex)
        t0 = time.perf_counter()
        for i in range(n):
            ex.submit(noop, i).add_done_callback(cb)
        done.wait()
        t = time.perf_counter() - t0
    check(next(counter) == n + 1, "callback count")
    result(n / t, "tasks/s", n)


def w6(n):
    k = 4
    per = n // k
    sums = [0] * k
    with cf.ThreadPoolExecutor(threads()) as ex:
        warm(ex)
        start = threading.Barrier(k + 1)

        def submitter(j):
            start.wait()
            fs = [ex.submit(noop, i) for i in range(per)]
            sums[j] = sum(f.result() for f in fs)

        th = [threading.Thread(target=submitter, args=(j,)) for j in range(k)]
        for x in th:
            x.start()
        start.wait()
        t0 = time.perf_counter()
        for x in th:
            x.join()
        t = time.perf_counter() - t0
    check(all(s == per * (per - 1) // 2 for s in sums), "sums")
    result(per * k / t, "tasks/s", n)


def w7(n):
    gate = threading.Event()
    started = threading.Event()

    def gate_task():
        started.set()
        gate.wait()

    with cf.ThreadPoolExecutor(1) as ex:
        warm(ex, 4)
        g = ex.submit(gate_task)
        started.wait()
        r0 = rss()
        fs = [ex.submit(noop) for _ in range(n)]
        r1 = rss()
        check(sum(1 for f in fs if not f.done()) == n, "pending")
        gate.set()
        g.result()
        fs[-1].result()  # one worker, FIFO: the last one done means all are
    check(all(f.done() for f in fs), "done")
    result((r1 - r0) / n, "bytes/future", n)


def w8(seconds):
    workers = int(os.environ.get("BENCH_IDLE_WORKERS", "32"))
    barrier = threading.Barrier(workers, timeout=20)
    with cf.ThreadPoolExecutor(workers) as ex:
        fs = [ex.submit(barrier.wait) for _ in range(workers)]
        for f in fs:
            f.result()
        check(len(ex._threads) == workers, "workers started")
        time.sleep(0.2)
        c0 = cpu()
        time.sleep(seconds)
        ms = (cpu() - c0) * 1e3
    result(ms, "ms-cpu", seconds)


# P1: ProcessPoolExecutor, bytes in and out.
def ppool():
    ex = cf.ProcessPoolExecutor(threads())
    x = make_input(100, 1)
    for f in [ex.submit(inc, x) for _ in range(4 * threads())]:
        check(f.result() == inc(x), "warm-up output")
    return ex


def p1_inputs(n, size):
    return [make_input(size, i) if size < 4096 else bytes((i + k) & 0xFF for k in range(256)) * (size // 256)
            for i in range(n)]


def p1_submit(n, size):
    inputs = p1_inputs(n, size)
    with ppool() as ex:
        t0 = time.perf_counter()
        fs = [ex.submit(inc, b) for b in inputs]
        outs = [f.result() for f in fs]
        t = time.perf_counter() - t0
    for b, o in zip(inputs, outs):
        check(o == b.translate(TABLE), "output bytes")
    return t


def p1_map(n, size, chunk):
    inputs = p1_inputs(n, size)
    with ppool() as ex:
        t0 = time.perf_counter()
        outs = list(ex.map(inc, inputs, chunksize=chunk))
        t = time.perf_counter() - t0
    check(len(outs) == n, "count")
    for b, o in zip(inputs, outs):
        check(o == b.translate(TABLE), "output bytes")
    return t


def main():
    global WORKLOAD, IMPL
    if len(sys.argv) < 3:
        print(f"usage: {sys.argv[0]} WORKLOAD N", file=sys.stderr)
        sys.exit(64)
    WORKLOAD = w = sys.argv[1]
    n = int(sys.argv[2])
    if w.startswith("P1-"):
        IMPL = "py-processes"
        if w == "P1-submit":
            result(n / p1_submit(n, 100), "tasks/s", n)
        elif w == "P1-map1":
            result(n / p1_map(n, 100, 1), "tasks/s", n)
        elif w == "P1-map100":
            result(n / p1_map(n, 100, 100), "tasks/s", n)
        elif w == "P1-1MiB":
            result(n / p1_submit(n, 1 << 20), "MiB/s", n)
        elif w == "P1-1MiB-map4":
            result(n / p1_map(n, 1 << 20, 4), "MiB/s", n)
        else:
            fail("unknown workload")
        return
    fn = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "W7": w7, "W8": w8}.get(w)
    if fn is None:
        fail("unknown workload")
    fn(n)


if __name__ == "__main__":
    main()
