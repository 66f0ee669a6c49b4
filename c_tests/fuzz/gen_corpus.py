#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_api.c into c_tests/fuzz/corpus/ (seed-*.bin).

    python3 c_tests/fuzz/gen_corpus.py

Each seed is a short, readable scenario in the byte language of fuzz_api.c (one opcode
byte, then its operands; see LLVMFuzzerTestOneInput). The fuzzer starts from these and
mutates them; fuzz_replay runs them in every CTest run. Keep this file in step with the
opcode table and operand order in fuzz_api.c. Inputs that scripts/fuzz.sh --update-corpus
adds are named by libFuzzer (a SHA-1) and are kept as they are.
"""
import os
import struct

# Opcodes (fuzz_api.c: op % 24).
POOL_NEW, POOL_FREE, POOL_SHUTDOWN, SUBMIT, SUBMIT_BYTES = 0, 1, 2, 3, 6
PROMISE_NEW, PROMISE_COMPLETE, CANCEL, READ, CALLBACK, REFS = 7, 9, 11, 12, 14, 16
WAIT_MANY, AS_COMPLETED, MAP, STATUS_NAME, NULLS, WORKER_COUNT, YIELD = 17, 18, 19, 20, 21, 22, 23

# Timeout bytes (rd_timeout).
T_FOREVER, T_NEG0, T_ZERO, T_1NS, T_1MS, T_4MS, T_20MS, T_INF, T_NINF, T_DBLMAX = range(10)
T_1E300, T_NEG_TINY, T_DBLMIN, T_DENORM, T_U64MAX, T_295Y, T_NAN = range(10, 17)

# Pool "which" bytes for submit/map: 0..2 thread pool slots, 6 NULL, 7 the process pool.
P0, P1, P2, PNULL, PPROC = 0, 1, 2, 6, 7
# Pointer tasks (task % 10): 0 ret, 3 raise, 4 sleep, 5 NULL fn, 6 wait promise,
# 7 complete promise, 8 nested submit+wait, 9 shutdown own pool (arg odd: without wait).
T_RET, T_RAISE, T_SLEEP, T_NULLFN, T_WAITP, T_SETP, T_NESTED, T_SHUTOWN = 0, 3, 4, 5, 6, 7, 8, 9
# Byte tasks (task % 5): 0 echo, 2 null, 3 raise, 4 NULL fn.
B_ECHO, B_NULL, B_RAISE, B_NULLFN = 0, 2, 3, 4
# Callback kinds (kind % 8): 0 count, 1 retain/release, 2 read, 3 add nested, 4 submit,
# 5 cancel, 7 NULL fn.
CB_COUNT, CB_RETAIN, CB_READ, CB_NESTED, CB_SUBMIT, CB_CANCEL, CB_NULL = 0, 1, 2, 3, 4, 5, 7


def pool_new(slot, workers=2, opt=0, name=None):
    """workers: index into {0,1,2,3,4,1,2,1025,SIZE_MAX}; opt bits: 1 name, 2 initializer,
    4 it fails, 0x38 max_tasks_per_child=1, 0xc0 NULL options."""
    out = [POOL_NEW, slot, workers, opt | (1 if name is not None else 0)]
    if name is not None:
        out += [len(name)] + list(name)
    return out


def submit(which, task, arg=1, slot=0, extra=()):
    return [SUBMIT, which, task, arg, slot] + list(extra)


def submit_bytes(which, task, data=b"", slot=0, how=2):
    """how % 8: 0 NULL input with a length (how & 8: SIZE_MAX), 1 NULL and 0, else data."""
    return [SUBMIT_BYTES, which, task, len(data), slot] + list(data) + [how]


def promise(slot, b=1):
    return [PROMISE_NEW, slot, b]


def complete(slot, how):
    """how % 3: 0 set_running, 1 set_result, 2 set_exception."""
    return [PROMISE_COMPLETE, slot, how]


def read(slot, how, t):
    """how % 5: 0 wait, 1 result, 2 exception, 3 result_bytes, 4 state queries; how & 8:
    NULL out-parameter."""
    return [READ, slot, how, t]


def wait_many(slots, when=2, t=T_FOREVER, flags=0, when32=None):
    """slots: 0xff is a NULL entry; flags: 0x10 NULL array, 0x20 NULL done, 0x40 NULL n_done;
    when 3 reads a uint32 return_when."""
    out = [WAIT_MANY, len(slots)] + list(slots) + [when | flags]
    if when == 3:
        out += list(struct.pack("<I", when32))
    return out + [t]


def as_completed_new(it, slots, t=T_FOREVER, flags=0):
    """flags: 2 NULL array, 4 NULL out."""
    return [AS_COMPLETED, it, flags & ~1, len(slots)] + list(slots) + [t]


def as_completed_next(it, times=4, null_out=False):
    return [AS_COMPLETED, it, ((times - 1) << 4) | (2 if null_out else 0)]


def as_completed_free(it):
    return [AS_COMPLETED, it, 1]


def map_new(m, which, args, chunk=1, t=T_FOREVER, flags=0):
    """chunk: index into {0,1,2,3,7,64,SIZE_MAX,2^63}; flags: 2 bytes, 4 failing, 8 NULL args."""
    return [MAP, m, flags & ~1, which, chunk, len(args), t] + list(args)


def map_next(m, times=8, flags=0):
    """flags: 2 next_bytes, 4 NULL code, 8 NULL message."""
    return [MAP, m, (((times - 1) % 8) << 4) | (flags & ~1)]


def map_free(m):
    return [MAP, m, 1]


SEEDS = {
    "empty": [],
    "pool-submit-result": pool_new(0) + submit(P0, T_RET, 42) + read(0, 1, T_FOREVER),
    "pool-default-options": pool_new(0, opt=0xc0) + submit(P0, T_SLEEP, 9) + read(0, 1, T_INF),
    "pool-bad-options": pool_new(0, workers=7) + pool_new(1, workers=8) + pool_new(2, opt=0x38),
    "pool-odd-name": pool_new(0, name=b"\xff\xfe name with spaces and a very long tail")
    + submit(P0, T_RET, 1) + read(0, 0, T_DBLMAX),
    "pool-initializer-fails": pool_new(0, opt=2 | 4) + submit(P0, T_RET, 3) + read(0, 1, T_FOREVER)
    + submit(P0, T_RET, 4, slot=1),
    "pool-initializer-ok": pool_new(0, opt=2) + submit(P0, T_RAISE, 0x29) + read(0, 2, T_FOREVER),
    "raise-messages": pool_new(0) + submit(P0, T_RAISE, 0x10) + submit(P0, T_RAISE, 0x11, slot=1)
    + submit(P0, T_RAISE, 0x12, slot=2) + submit(P0, T_RAISE, 0x13, slot=3)
    + read(0, 2, T_FOREVER) + read(1, 2, T_FOREVER) + read(2, 2, T_FOREVER) + read(3, 2, T_FOREVER),
    "submit-null-fn-and-pool": submit(PNULL, T_RET) + pool_new(0) + submit(P0, T_NULLFN),
    "shutdown-then-submit": pool_new(0) + [POOL_SHUTDOWN, 0, 1] + submit(P0, T_RET, 5),
    "shutdown-cancel-queued": pool_new(0, workers=1) + submit(P0, T_SLEEP, 250)
    + submit(P0, T_RET, 2, slot=1) + submit(P0, T_RET, 3, slot=2) + [POOL_SHUTDOWN, 0, 2]
    + read(1, 1, T_FOREVER) + read(2, 4, T_ZERO),
    "free-in-the-middle": pool_new(0) + submit(P0, T_SLEEP, 200) + [CALLBACK, 0, CB_COUNT]
    + [POOL_FREE, 0] + read(0, 1, T_ZERO) + submit(P0, T_RET, 1, slot=1),
    "timeouts-on-promise": promise(0) + read(0, 0, T_FOREVER) + read(0, 1, T_NEG0) + read(0, 2, T_1NS)
    + read(0, 0, T_INF) + read(0, 0, T_NAN) + read(0, 1, T_DENORM) + read(0, 0, T_U64MAX)
    + read(0, 0, T_NINF) + read(0, 0, T_NEG_TINY) + read(0, 0, T_DBLMIN),
    "timeouts-on-done": promise(0) + complete(0, 1) + read(0, 0, T_FOREVER) + read(0, 1, T_INF)
    + read(0, 2, T_1E300) + read(0, 1, T_295Y) + read(0, 3, T_ZERO) + read(0, 1, T_NAN),
    "promise-lifecycle": promise(0) + complete(0, 0) + [CANCEL, 0] + complete(0, 2) + complete(0, 1)
    + read(0, 2, T_ZERO),
    "promise-cancel": promise(0) + [CALLBACK, 0, CB_READ] + [CANCEL, 0] + complete(0, 0)
    + complete(0, 1) + read(0, 1, T_FOREVER),
    "promise-callbacks": promise(0, 7) + [CALLBACK, 0, CB_COUNT, CALLBACK, 0, CB_NESTED, CALLBACK, 0, CB_RETAIN,
                                          CALLBACK, 0, CB_CANCEL, CALLBACK, 0, CB_READ]
    + complete(0, 2) + [CALLBACK, 0, CB_NESTED, CALLBACK, 0, CB_NULL],
    "callbacks-on-tasks": pool_new(0) + submit(P0, T_SLEEP, 50) + [CALLBACK, 0, CB_SUBMIT, CALLBACK, 0, CB_READ]
    + read(0, 1, T_FOREVER) + [CALLBACK, 0, CB_SUBMIT],
    "refs": promise(0) + [REFS, 0, 1, REFS, 0, 1, REFS, 0, 0, REFS, 0, 0] + complete(0, 1) + [REFS, 0, 0]
    + [REFS, 0, 0],
    "release-pending-task": pool_new(0) + submit(P0, T_SLEEP, 100) + [CALLBACK, 0, CB_COUNT] + [REFS, 0, 0],
    "wait-all": pool_new(0) + submit(P0, T_RET, 1) + submit(P0, T_SLEEP, 2, slot=1) + promise(2)
    + complete(2, 1) + wait_many([0, 1, 2, 1], when=2, t=T_FOREVER),
    "wait-first-exception": pool_new(0) + submit(P0, T_RAISE, 8) + submit(P0, T_SLEEP, 90, slot=1)
    + wait_many([1, 0], when=1, t=T_INF),
    "wait-bad-arguments": promise(0) + wait_many([0, 0xff], when=0) + wait_many([0], when=3, when32=42)
    + wait_many([0, 0], flags=0x10) + wait_many([0], t=T_NAN) + wait_many([], when=3, when32=0xFFFFFFFF)
    + wait_many([], t=T_NAN),
    "wait-null-outputs": promise(0) + promise(1) + complete(1, 1)
    + wait_many([0, 1], when=0, t=T_ZERO, flags=0x20) + wait_many([0, 1], when=2, t=T_1MS, flags=0x40)
    + wait_many([0, 1], when=1, t=T_FOREVER, flags=0x60),
    "as-completed": pool_new(0) + submit(P0, T_RET, 1) + submit(P0, T_SLEEP, 30, slot=1) + promise(2)
    + as_completed_new(0, [0, 1, 2, 0]) + [REFS, 0, 0] + as_completed_next(0, 2) + complete(2, 2)
    + as_completed_next(0, 4) + as_completed_free(0),
    "as-completed-bad": promise(0) + as_completed_new(0, [0, 0xff]) + as_completed_new(0, [0], flags=2)
    + as_completed_new(0, [0], flags=4) + as_completed_new(0, [0], t=T_NAN) + as_completed_new(1, [], t=T_ZERO)
    + as_completed_next(1, 2, null_out=True),
    "as-completed-timeout": promise(0) + as_completed_new(0, [0], t=T_4MS) + as_completed_next(0, 2),
    "map": pool_new(0) + map_new(0, P0, range(1, 20), chunk=3) + map_next(0, 8) + map_next(0, 8, flags=4)
    + map_next(0, 8) + map_free(0),
    "map-chunks": pool_new(0) + map_new(0, P0, range(5), chunk=6) + map_new(1, P0, range(5), chunk=7)
    + map_next(0, 8) + map_next(1, 8) + map_free(0) + map_new(0, P0, range(9), chunk=0) + map_next(0, 3),
    "map-failing": pool_new(0, workers=1) + map_new(0, P0, [1, 2, 3, 4, 10, 11], chunk=2, flags=4)
    + map_next(0, 8) + map_next(0, 2, flags=8),
    "map-bytes": pool_new(0) + map_new(0, P0, [0, 1, 2, 200], flags=2) + map_next(0, 8, flags=2)
    + map_new(1, P0, [3, 0xff], flags=2) + map_new(1, P0, [1, 2], flags=2 | 8) + map_new(1, P0, [5], flags=2)
    + map_next(1, 2),
    "map-bad": map_new(0, PNULL, [1]) + pool_new(0) + map_new(0, P0, [1, 2], flags=8) + map_new(0, P0, [1], t=T_NAN)
    + map_new(0, P0, []) + map_next(0, 2) + [POOL_SHUTDOWN, 0, 0] + map_new(1, P0, [1, 2]),
    "map-then-free-pool": pool_new(0, workers=1) + map_new(0, P0, range(40), chunk=1, t=T_1MS) + map_next(0, 2)
    + [POOL_FREE, 0] + map_next(0, 8),
    "bytes": pool_new(0) + submit_bytes(P0, B_ECHO, b"hello fuzzer") + read(0, 3, T_FOREVER) + read(0, 1, T_FOREVER)
    + submit_bytes(P0, B_NULL, b"x", slot=1) + read(1, 3, T_FOREVER) + submit_bytes(P0, B_RAISE, b"\x01", slot=2)
    + read(2, 2, T_FOREVER) + read(2, 3, T_FOREVER),
    "bytes-bad": pool_new(0) + submit_bytes(P0, B_ECHO, b"", how=0) + submit_bytes(P0, B_ECHO, b"", how=8)
    + submit_bytes(P0, B_ECHO, b"", how=1) + submit_bytes(P0, B_NULLFN, b"ab", slot=1) + read(0, 3, T_ZERO)
    + submit(P0, T_RET, 1, slot=2) + read(2, 3, T_FOREVER),
    "heavy-tasks": pool_new(0, workers=1) + promise(0) + submit(P0, T_WAITP, 3, slot=1, extra=[0])
    + submit(P0, T_SETP, 0, slot=2, extra=[0]) + submit(P0, T_NESTED, 0, slot=3) + read(3, 1, T_FOREVER)
    + read(1, 1, T_FOREVER),
    "nested-wait-one-worker": pool_new(0, workers=1) + submit(P0, T_NESTED, 0) + submit(P0, T_NESTED, 0, slot=1)
    + wait_many([0, 1], when=2),
    "shutdown-own-pool": pool_new(0) + submit(P0, T_SHUTOWN, 0) + read(0, 1, T_FOREVER) + submit(P0, T_SHUTOWN, 1, slot=1)
    + read(1, 0, T_FOREVER) + submit(P0, T_RET, 1, slot=2),
    "status-names": [STATUS_NAME, 0, 0, 0, 0, STATUS_NAME, 11, 0, 0, 0, STATUS_NAME, 12, 0, 0, 0,
                     STATUS_NAME, 0xff, 0xff, 0xff, 0xff, STATUS_NAME, 0, 0, 0, 0x80],
    "nulls": sum(([NULLS, k, 0] for k in range(16)), []) + promise(0) + [NULLS, 7, 0, NULLS, 15, 0],
    "worker-count": pool_new(0, workers=3) + submit(P0, T_SLEEP, 10) + submit(P0, T_SLEEP, 10, slot=1)
    + [WORKER_COUNT, 0] + [POOL_SHUTDOWN, 0, 1] + [WORKER_COUNT, 0],
    "three-pools": pool_new(0) + pool_new(1, workers=4) + pool_new(2, workers=1) + submit(P0, T_RET, 1)
    + submit(P1, T_RET, 2, slot=1) + submit(P2, T_RET, 3, slot=2) + pool_new(1) + wait_many([0, 1, 2]),
    "process-pool": submit(PPROC, T_RET, 11) + submit(PPROC, T_RAISE, 0x41, slot=1) + read(0, 1, T_FOREVER)
    + read(1, 2, T_FOREVER) + [CALLBACK, 0, CB_COUNT],
    "process-pool-bytes-map": submit_bytes(PPROC, B_ECHO, b"over the socket") + read(0, 3, T_FOREVER)
    + map_new(0, PPROC, [1, 2, 3], chunk=2) + map_next(0, 4) + [CALLBACK, 0, CB_READ],
    "process-pool-callbacks": submit(PPROC, T_SLEEP, 100) + [CALLBACK, 0, CB_COUNT, CALLBACK, 0, CB_NESTED]
    + [REFS, 0, 0],
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.startswith("seed-"):
            os.remove(os.path.join(out, name))
    for name, ops in SEEDS.items():
        with open(os.path.join(out, "seed-" + name + ".bin"), "wb") as f:
            f.write(bytes(b & 0xFF for b in ops))
    print(f"{len(SEEDS)} seeds written to {out}")


if __name__ == "__main__":
    main()
