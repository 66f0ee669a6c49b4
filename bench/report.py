"""Turns the RESULT/NA/FAIL lines of one bench/run.sh run into the tables (stdout and
bench/results/latest.md) and the plot (bench/results/latest.png, with gnuplot).
Standard library only. Exits 1 if any implementation failed a correctness check."""

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys

IMPLS = ["cfutures", "asio", "glib", "tbb", "libuv", "rust-threadpool", "py-threads", "py-processes", "boost-thread",
         "cfutures-cxx", "std-async", "thread-pool", "mpi4py"]
# The C++ face's rows: cfutures-cxx against the C API and the C++ anchors (see CXX_ROWS below).
CXX_WORKLOADS = ["W1", "W2", "W5", "W9"]
CXX_ANCHORS = ["cfutures", "boost-thread", "std-async", "thread-pool"]
ANCHORS = IMPLS[1:]
TITLES = {
    "cfutures": "cfutures",
    "asio": "Boost.Asio",
    "glib": "GLib",
    "tbb": "oneTBB",
    "libuv": "libuv",
    "rust-threadpool": "Rust threadpool",
    "py-threads": "CPython threads",
    "py-processes": "CPython processes",
    "boost-thread": "Boost.Thread",
    "cfutures-cxx": "cfutures C++",
    "std-async": "std::async",
    "thread-pool": "libthread-pool",
    "mpi4py": "mpi4py.futures",
}
WORKLOADS = ["W1", "W2", "W3", "W3-1", "W3-lazy", "W3-c10", "W4", "W5", "W6", "W7", "W8", "W9", "W10", "W10-g10", "P1-submit", "P1-map1", "P1-map100", "P1-1MiB", "P1-1MiB-w4", "P1-1MiB-map4", "D1-p50", "D1-p99", "D1-idle", "D1-proc-p50", "D1-proc-p99", "M1", "M2", "M1-tcp", "M2-tcp"]
DESCR = {
    "W1": "burst: submit N no-ops, keep futures, collect",
    "W2": "ping-pong: submit one, wait, N times",
    "W3": "map x*x over N inputs, in order (chunk {chunk})",
    "W3-1": "W3 for cfutures with cf_map_next, one result per call",
    "W3-lazy": "W3 for cfutures through cf_map_lazy_new, buffersize 4 x workers",
    "W3-c10": "W3 with chunksize 10: what a chunk costs",
    "W4": "as-completed: N tasks spinning (i%7)x200 ns",
    "W5": "N tasks + one done callback each",
    "W6": "4 submitter threads x N/4, own results",
    "W7": "RSS per pending future (N queued, 1 worker gated)",
    "W8": "CPU of an idle 32-worker pool over {secs} s",
    "W9": "chain of N then links (+1 each), 2-worker pool",
    "W10": "cf_when ALL over N submitted no-ops",
    "W10-g10": "N/10 cf_when ALL of 10 submitted no-ops each",
    "P1-submit": "process pool: N x 100 B submit_bytes + result_bytes",
    "P1-map1": "process pool: map_bytes N x 100 B, chunksize 1",
    "P1-map100": "process pool: map_bytes N x 100 B, chunksize 100",
    "P1-1MiB": "process pool: N x 1 MiB in and out (MiB/s each way)",
    "P1-1MiB-w4": "P1-1MiB for cfutures with at most 4 tasks in flight",
    "P1-1MiB-map4": "process pool: map_bytes N x 1 MiB, chunksize 4 (MiB/s each way)",
    "D1-p50": "deadlines: median lateness of N thread-task futures past their deadlines (ms)",
    "D1-p99": "deadlines: 99th-percentile lateness of the same (ms)",
    "D1-idle": "deadlines: CPU of a held 2-worker pool with N deadlines an hour away, over 10 s",
    "D1-proc-p50": "deadlines: median lateness of N process-task futures past their deadlines, 2 workers killed as they overrun (ms)",
    "D1-proc-p99": "deadlines: 99th-percentile lateness of the same (ms)",
    "M1": "MPI, 3 worker ranks, shared memory: N x 100 B byte tasks, submit + result",
    "M2": "MPI, shared memory: N x 1 MiB in and out (MiB/s each way)",
    "M1-tcp": "M1 over btl self,tcp on the loopback (the transport between machines)",
    "M2-tcp": "M2 over btl self,tcp on the loopback (MiB/s each way)",
}
PROBES = [
    ("fresh_private", "copy into fresh private pages (mmap + MADV_POPULATE_WRITE + memcpy)"),
    ("fresh_shared", "copy into fresh shared-memory pages (memfd + mmap + MADV_POPULATE_WRITE + memcpy)"),
    ("warm_copy", "copy into pages already present (memcpy)"),
    ("task_work", "the P1 task's own work (+1 on every byte, a byte loop)"),
]
HIGHER_IS_BETTER = {"tasks/s": True, "items/s": True, "links/s": True, "MiB/s": True,
                    "us/roundtrip": False, "bytes/future": False, "ms-cpu": False,
                    "ms-late": False}
UNIT_LABEL = {"tasks/s": "tasks/s", "items/s": "items/s", "links/s": "links/s", "MiB/s": "MiB/s",
              "us/roundtrip": "µs/round trip", "bytes/future": "bytes/future", "ms-cpu": "ms CPU",
              "ms-late": "ms late"}

ANCHOR_NOTES = """\
- **Boost.Asio**: `boost::asio::thread_pool`, one `std::packaged_task` posted per task and its `std::future` kept (W1, W2, W6, W7). W3: one packaged_task per chunk of the same chunksize writing into the output vector, futures awaited in order. W4: **n/a**, `std::future` has no completion-order wait. W5: no future callbacks in Asio; its idiom is a completion handler the posted function invokes, here inline on the worker.
- **GLib**: `GThreadPool` (exclusive, `max_threads` = pool size). No futures: each task pushes its result to a `GAsyncQueue` the submitter pops (W1, W2, W4 in completion order, W6 one queue per submitter); W3 one task per chunk writing into the output array; W5 the task's last statement increments the counter (no callback API); W7 counts GLib's own queue node per pending item.
- **oneTBB**: `task_group` (W1, W2, W4, W5, W6, W7) and `parallel_for` over a `blocked_range` with grainsize = chunksize and the default partitioner (W3), in a `task_arena` of pool-size slots; the waiting thread runs tasks too (work stealing). No per-task futures, results go into an array, and no completion order (W4 is the same tasks without ordering): **the ceiling**, not a like-for-like comparison. W2 in particular mostly measures the waiting thread running the task itself. W7: an arena of 2 slots (main + 1 worker) whose worker is gated, tasks waiting in the main thread's deque. W8: an arena of 32 worker slots fed with `enqueue`.
- **libuv**: `uv_queue_work` on libuv's thread pool (`UV_THREADPOOL_SIZE` = pool size) with the after-work callback on the loop (the main thread inside `uv_run`) collecting each result. W4: after-work callbacks arrive in completion order. W5: the after-work callback is the done callback. W6: one loop per submitter thread, sharing libuv's (global) pool. W7 counts the `uv_work_t` each pending task needs.
- **Rust threadpool**: the `threadpool` crate (1.8) with std `mpsc` channels: each job sends its result on its submitter's channel (W1, W2, W4 in completion order, W6 one channel per submitter); W3 one job per chunk sending its `Vec`, reassembled in input order; W5 the job's last statement increments an atomic (no callback API); W7 counts the boxed job and its `Sender` clone.
- **CPython threads**: `concurrent.futures.ThreadPoolExecutor(pool size)` of the `python3` on PATH: `submit`/`result`, `map(chunksize=...)` (which ThreadPoolExecutor accepts but ignores: one future per item), `as_completed`, `add_done_callback`. Fewer repetitions in full mode (each run takes up to ~30 s).
- **CPython processes**: `ProcessPoolExecutor(pool size)` (fork on Linux), `bytes` in and out (`bytes.translate`, +1 per byte), `submit`/`result` and `map(chunksize=1, 4 or 100)`.
- **mpi4py.futures**: `MPIPoolExecutor` under `mpirun -n 4` (`python3 -m mpi4py.futures`, 3 worker ranks), `bytes` in and out, `submit` of every task then every `result()`, on the same Open MPI as cfutures' `cf_mpi_pool_new` executor (`bench/src/bench_mpi.c`, byte tasks); both through `bench/mpi_one.sh`, shared memory (btl self,vader) and TCP on the loopback (M*-tcp).
- **cfutures**: a thread pool of pool-size workers (`cf_submit`, `cf_future_result`, `cf_map_new` + `cf_map_next_n` (W3; `cf_map_next` in W3-1), `cf_as_completed_*`, `cf_future_add_done_callback`); P1 a process pool of pool-size workers with byte tasks (`cf_submit_bytes` + `cf_future_result_bytes`, `cf_map_bytes_new` + `cf_map_next_bytes`). W7 counts the `cf_future *` array the caller keeps, as for every anchor its own handles.
"""


def parse(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^(RESULT|NA|FAIL|NOTBUILT|PROBE) (.*)$", line)
            if not m:
                continue
            kind, rest = m.groups()
            rep = None
            mr = re.search(r" rep=(\d+)$", rest)
            if mr:
                rep = int(mr.group(1))
                rest = rest[: mr.start()]
            d = {"kind": kind, "rep": rep}
            if "reason=" in rest:
                i = rest.index("reason=")
                d["reason"] = rest[i + len("reason="):]
                rest = rest[:i]
            for kv in rest.split():
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    d[k] = v
            rows.append(d)
    return rows


def human(v, unit):
    if v is None:
        return "—"
    if unit in ("tasks/s", "items/s", "links/s"):
        for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= div:
                return f"{v / div:.3g}{suf}"
        return f"{v:.3g}"
    if unit == "ms-cpu":
        return f"{v:.3f}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--reps", default="?")
    ap.add_argument("--py-reps", default="?")
    ap.add_argument("--nproc", default=str(os.cpu_count()))
    ap.add_argument("--threads", default="?")
    ap.add_argument("--chunk", default="1000")
    ap.add_argument("--cpu", default="?")
    ap.add_argument("--rev", default="?")
    ap.add_argument("--load", default="?")
    ap.add_argument("--elapsed", default="?")
    a = ap.parse_args()

    rows = parse(a.raw)
    values = {}   # (w, impl) -> [values]
    units = {}    # w -> unit
    ns = {}       # w -> n
    na = {}       # (w, impl) -> reason
    fails = {}    # (w, impl) -> [reasons]
    not_built = {}
    probes = {}   # name -> [ms per MiB]
    for r in rows:
        if r["kind"] == "PROBE":
            probes.setdefault(r.get("name"), []).append(float(r["value"]))
            continue
        if r["kind"] == "NOTBUILT":
            not_built[r["impl"]] = r.get("reason", "not built")
            continue
        key = (r.get("workload"), r.get("impl"))
        if r["kind"] == "RESULT":
            values.setdefault(key, []).append(float(r["value"]))
            units.setdefault(key[0], r["unit"])
            ns.setdefault(key[0], r.get("n"))
        elif r["kind"] == "NA":
            na[key] = r.get("reason", "n/a")
        elif r["kind"] == "FAIL":
            fails.setdefault(key, []).append(r.get("reason", "failed"))

    workloads = [w for w in WORKLOADS if any(k[0] == w for k in list(values) + list(na) + list(fails))]
    impls = [i for i in IMPLS if any(k[1] == i for k in list(values) + list(na) + list(fails)) or i in not_built]
    anchors = [i for i in impls if i != "cfutures"]
    med = {k: statistics.median(v) for k, v in values.items()}

    def cell(w, impl):
        k = (w, impl)
        if k in fails:
            return "FAIL"
        if k in med:
            v = values[k]
            s = human(med[k], units[w])
            if len(v) > 1 and med[k] > 0 and units[w] != "ms-cpu":
                spread = (max(v) - min(v)) / 2 / med[k] * 100
                s += f" ±{spread:.0f}%"
            return s
        if k in na:
            return "n/a"
        if impl in not_built:
            return "not built"
        return ""

    idle_marks = False

    def ratio(w, anchor, base="cfutures"):
        nonlocal idle_marks
        c, x = (w, base), (w, anchor)
        if x in fails or c in fails:
            return "FAIL", None
        if x not in med:
            if x in na:
                return "n/a", None
            if anchor in not_built:
                return "not built", None
            return "", None
        if c not in med:
            return "—", None
        cv, av = med[c], med[x]
        unit = units[w]
        if unit == "ms-cpu" and cv < 1.0 and av < 1.0:
            idle_marks = True
            r = (av / cv) if cv > 0 else float("inf")
            return (f"{r:.2f}†" if r != float("inf") else "∞†"), (r if r != float("inf") else None)
        if HIGHER_IS_BETTER[unit]:
            r = cv / av if av > 0 else float("inf")
        else:
            r = av / cv if cv > 0 else float("inf")
        if r == float("inf"):
            return "∞", None
        return (f"{r:.3g}" if r < 0.1 else f"{r:.2f}" if r < 100 else f"{r:.0f}"), r

    secs = ns.get("W8", "?")
    lines = []
    P = lines.append
    P(f"# cfutures benchmark results ({a.mode} mode)")
    P("")
    P(f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S %Z').strip()}")
    P(f"- machine: `nproc` = {a.nproc}, CPU: {a.cpu}; load average at start -> end: {a.load}")
    P(f"- cfutures: commit {a.rev}, built with `cargo build --release`")
    P(f"- pool size {a.threads} (= nproc) unless stated; W3 chunksize {a.chunk}; W8: 32 workers, {secs} s")
    P(f"- repetitions: {a.reps} per implementation, interleaved (order rotated each repetition); "
      f"CPython anchors: {a.py_reps}. Values are medians; ±x% is half the min-max range over repetitions.")
    P(f"- wall time of the whole run: {a.elapsed} s")
    P("")
    P("## Medians")
    P("")
    hdr = ["workload", "N", "unit"] + [TITLES[i] for i in impls]
    P("| " + " | ".join(hdr) + " |")
    P("|" + "|".join(["---"] * 3 + ["--:"] * len(impls)) + "|")
    for w in workloads:
        u = units.get(w, "")
        d = DESCR[w].format(chunk=a.chunk, secs=secs)
        P("| " + " | ".join([f"**{w}** {d}", str(ns.get(w, "")), UNIT_LABEL.get(u, u)] +
                            [cell(w, i) for i in impls]) + " |")
    P("")
    P("## Ratios: cfutures ÷ anchor, oriented so that > 1 means cfutures is faster (or uses less memory / CPU)")
    P("")
    P("For throughputs (tasks/s, items/s, MiB/s) the ratio is cfutures' median ÷ the anchor's; for costs "
      "(µs per round trip, bytes per future, CPU ms) it is the anchor's ÷ cfutures', so that in every row "
      "> 1 favours cfutures and < 1 favours the anchor.")
    P("")
    P("| " + " | ".join(["workload"] + [TITLES[i] for i in anchors]) + " |")
    P("|" + "|".join(["---"] + ["--:"] * len(anchors)) + "|")
    plot_rows = []
    for w in workloads:
        cells, nums = [], []
        for x in anchors:
            s, r = ratio(w, x)
            cells.append(s)
            nums.append(r)
        P("| " + " | ".join([w] + cells) + " |")
        plot_rows.append((w, nums))
    P("")
    cxx_rows = [w for w in CXX_WORKLOADS if (w, "cfutures-cxx") in med]
    if cxx_rows:
        cols = [x for x in CXX_ANCHORS if x in impls]
        P("## The C++ face: cfutures C++ ÷ anchor (same orientation: > 1 favours cfutures C++)")
        P("")
        P("`cfutures C++` is `include/cfutures.hpp` (cf::thread_pool and lambdas); its column "
          "against `cfutures` (the C API, same run) is the wrapper's cost: 1.00 costs nothing, 0.90 is 10% slower.")
        P("")
        P("| " + " | ".join(["workload"] + [TITLES[i] + (" (C API)" if i == "cfutures" else "") for i in cols]) + " |")
        P("|" + "|".join(["---"] + ["--:"] * len(cols)) + "|")
        for w in cxx_rows:
            P("| " + " | ".join([w] + [ratio(w, x, "cfutures-cxx")[0] for x in cols]) + " |")
        P("")
    if idle_marks:
        P("† both used under 1 ms of CPU in the whole idle interval: both are idle, the ratio is noise.")
        P("")
    if ("W3", "cfutures") in med and ("W3-lazy", "cfutures") in med:
        P(f"**cfutures W3-lazy/W3** (lazy map with buffersize 4 x workers vs eager map, items/s): {med[('W3-lazy', 'cfutures')] / med[('W3', 'cfutures')]:.2f} (goal: 0.80 or more)")
        P("")
    if ("M2", "cfutures") in med:
        gbs = med[("M2", "cfutures")] * 1048576 / 1e9
        P(f"**cfutures M2** (MPI, shared memory, each way): {med[('M2', 'cfutures')]:.0f} MiB/s = {gbs:.2f} GB/s (goal: 1 GB/s or more)")
        P("")
    if ("W1", "cfutures") in med and ("W6", "cfutures") in med:
        P(f"**cfutures W6/W1** (4 submitters vs 1, tasks/s): {med[('W6', 'cfutures')] / med[('W1', 'cfutures')]:.2f}")
        P("")
    if fails:
        P("## Failures")
        P("")
        for (w, i), rs in sorted(fails.items()):
            P(f"- {w} / {i}: {'; '.join(sorted(set(rs)))}")
        P("")
    if not_built:
        P("## Not built")
        P("")
        for i, why in sorted(not_built.items()):
            P(f"- {TITLES.get(i, i)}: {why}")
        P("")
    if na:
        P("## n/a")
        P("")
        for (w, i), why in sorted(na.items()):
            if w in workloads and not (why.startswith("no process pool")):
                P(f"- {w} / {TITLES.get(i, i)}: {why}")
        P("- P1 (process pools): only CPython's ProcessPoolExecutor is an anchor; the thread-pool libraries have none.")
        P("- W3-lazy: cfutures' W3 through `cf_map_lazy_new` (inputs pulled from a `next` callback, at most 4 x workers chunks ahead of the reader); the anchors' W3 row is the comparison, and cfutures' W3-lazy/W3 ratio is printed under the ratio table.")
        P("- W3-1: cfutures' W3 read one result per call (`cf_map_next`) instead of many (`cf_map_next_n`); the anchors' W3 row is the comparison.")
        P("- W3-c10 / CPython threads: `ThreadPoolExecutor.map` ignores `chunksize` (only `ProcessPoolExecutor` uses it), so its W3 row applies.")
        P("- P1-1MiB-w4: cfutures' P1-1MiB with each result collected and released before the task 4 places later is submitted (a streaming caller); the P1-1MiB row is the comparison.")
        P("")
    if probes:
        P("## Memory probes (`bench/build/probe_pages`, this run)")
        P("")
        P("What one MiB costs on this machine, median over the repetitions (each a median of 5 rounds of 64 MiB), for reading P1-1MiB: there all 64 inputs are copied at submit before any result is collected, so each input copy and each result held for collection lands in fresh pages, while a streaming caller (P1-1MiB-w4) reuses present ones.")
        P("")
        P("| probe | what | ms per MiB |")
        P("|---|---|--:|")
        for name, what in PROBES:
            if name in probes:
                P(f"| {name} | {what} | {statistics.median(probes[name]):.3f} |")
        P("")
    P("## Notes per implementation")
    P("")
    P(ANCHOR_NOTES)
    P(f"Plot: `latest.png` (ratio per workload and anchor, log scale; bars above 1 favour cfutures).")
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)

    # ---- plot
    dat = os.path.splitext(a.png)[0] + "-ratios.dat"
    with open(dat, "w") as f:
        f.write("workload " + " ".join(f'"{TITLES[x]}"' for x in anchors) + "\n")
        for w, nums in plot_rows:
            f.write(f'"{w}" ' + " ".join("?" if (r is None or r <= 0 or r == float("inf")) else f"{r:.6g}" for r in nums) + "\n")
    ok_plot = False
    finite = [r for _, nums in plot_rows for r in nums if r and r != float("inf")]
    lo = min([0.1] + finite) / 2
    hi = max([10.0] + finite) * 2
    if shutil.which("gnuplot"):
        ncol = len(anchors)
        # One colour per anchor (gnuplot's default palette repeats after eight).
        palette = ["#9400d3", "#009e73", "#56b4e9", "#e69f00", "#f0e442", "#0072b2", "#e51e10",
                   "#000000", "#ff69b4", "#8b4513", "#7f7f7f", "#00ced1", "#556b2f", "#dc143c"]
        colours = "\n".join(f'set linetype {k + 1} lc rgb "{palette[k % len(palette)]}"'
                             for k in range(ncol))
        script = f"""
set terminal pngcairo size 1400,700 font ",11" noenhanced
set output "{a.png}"
set title "cfutures vs anchors: ratio of medians ({a.mode} mode, nproc={a.nproc}); > 1 means cfutures is faster / leaner"
set datafile missing "?"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 10
set yrange [{lo:g}:{hi:g}]
set ylabel "cfutures ÷ anchor (log scale)"
set grid ytics
set key outside right top vertical
set xtics rotate by -30
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 dt 2 lc rgb "black" front
{colours}
plot for [i=2:{ncol + 1}] "{dat}" using i:xtic(1) title columnheader(i) lc i-1
"""
        try:
            subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
            ok_plot = True
        except subprocess.CalledProcessError as e:
            print(f"[bench] gnuplot failed: {e.stderr}", file=sys.stderr)
    if not ok_plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(14, 7))
            width = 0.8 / max(1, len(anchors))
            for j, x in enumerate(anchors):
                xs = [i + j * width for i in range(len(plot_rows))]
                ys = [r[1][j] if r[1][j] and r[1][j] != float("inf") else 0 for r in plot_rows]
                ax.bar(xs, ys, width, label=TITLES[x])
            ax.set_yscale("log")
            ax.set_ylim(lo, hi)
            ax.axhline(1, color="black", ls="--")
            ax.set_xticks([i + 0.4 for i in range(len(plot_rows))], [r[0] for r in plot_rows], rotation=30)
            ax.set_ylabel("cfutures ÷ anchor (log)")
            ax.legend()
            fig.savefig(a.png, dpi=100, bbox_inches="tight")
            ok_plot = True
        except Exception as e:  # noqa: BLE001
            print(f"[bench] no plot: neither gnuplot nor matplotlib worked ({e})", file=sys.stderr)
    if ok_plot:
        print(f"[bench] plot: {a.png}", file=sys.stderr)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
