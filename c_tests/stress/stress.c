/* Randomized stress of the whole C API, from a seed.
 *
 *   stress [--seed N] [--ops N] [--threads N] [--process] [--stall S] [--verbose]
 *          [--skip op,op,...] [--prefork N]
 *
 * Several threads issue a long random mix of operations against one "current" executor
 * (a thread pool, or with --process a process pool), which is now and then shut down
 * (with and without wait and cancel_futures) and replaced by a fresh one:
 *
 *   submit (pointer and byte tasks: values, failures, slow ones, tasks that wait on a
 *   future of their own pool, and on process pools tasks that kill their worker),
 *   cancel, result / exception with timeouts 0, small and forever, state queries,
 *   promises completed (or cancelled) from other threads, racing each other, done
 *   callbacks (counting ones, ones that submit more work, add callbacks or release a
 *   reference), retain / release, cf_wait, cf_as_completed and cf_map / cf_map_bytes
 *   over random subsets with duplicates and promises mixed in, worker-count bounds;
 *   continuations (cf_future_then) and cf_when, with their own oracle (then_ops.h); on
 *   process seeds also private pools whose workers are stopped (op "stop_workers":
 *   cf_executor_terminate_workers / cf_executor_kill_workers amid deadlines, see there).
 *
 * Invariants checked (a violation prints `stress: FAILED seed=... op=...` and a command
 * that reproduces the op mix, and exits 1; a hang is reported by a stall watchdog):
 *
 *   - every future made is done at the end, and the done callback registered on it at
 *     creation ran exactly once, with that future, after it was done;
 *   - its outcome is the expected one: the task's value (or bytes), its cf_raise code
 *     and message, CF_BROKEN (naming SIGKILL) exactly for tasks that killed their worker
 *     process, or CF_CANCELLED only when a cancel was attempted or its executor was
 *     shut down with cancel_futures; a task ran (exactly once) iff its future finished;
 *     cancel true => cancelled, cancel false => finished; a promise finished iff exactly
 *     one of its racing set_result/set_exception calls won, and a losing call's
 *     CF_INVALID_STATE ("already done") comes with cf_future_done true; a winning
 *     set_result/set_exception has run the done callbacks when it returns;
 *   - every other callback ran exactly once; callbacks run by the completing thread ran
 *     in the order they were added; a callback added to a done future ran before the
 *     add returned;
 *   - states only move forward, and done/running/cancelled agree with the state;
 *   - cf_wait: n_done counts the done flags, a flag set means cf_future_done, a future
 *     done before the call is flagged, CF_OK means the condition holds, CF_TIMEOUT only
 *     with a finite timeout and not when the condition held before the call;
 *   - cf_as_completed: yields each distinct future once, only done ones, those done
 *     before the call before those not done after it (and in array order), CF_END only
 *     after all;
 *   - cf_map: results in input order, stopping (then CF_END) at the first failed item;
 *     a lazy map (cf_map_lazy_new, cf_map_bytes_lazy_new, fed from the same items by a
 *     `next` that lends each byte input only until its next call) the same, its `next`
 *     called only in the reading thread, never more than buffersize x chunksize items
 *     ahead of the reader, never after the end, a failure or cf_map_free; a refill
 *     refused by a shutdown gives CF_SHUTDOWN at the first item not submitted;
 *   - after a shutdown with wait: no task of that executor is running (a counter in
 *     shared memory, so process-pool tasks count too) and its worker count is 0;
 *   - failed calls leave their out-parameters untouched; submit after shutdown is
 *     CF_SHUTDOWN.
 *
 * The op mix is a function of the seed; the interleaving of the threads is not, so a
 * seed reproduces the mix, and usually the failure.
 */
#define _GNU_SOURCE
#include <cfutures.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(uintptr_t) >= 8, "the task argument encoding needs 64-bit pointers");

#if defined(__SANITIZE_ADDRESS__)
#define STRESS_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_UNDER_ASAN 1
#endif
#endif

/* ---- configuration -------------------------------------------------------------------- */

static uint64_t g_seed = 1;
static long g_ops = 10000;
static int g_threads = 4;
static bool g_process = false;
static double g_stall = 60.0;
static bool g_verbose = false;
static const char *g_argv0 = "stress";

/* ---- failure reporting ---------------------------------------------------------------- */

static atomic_long g_op;                    /* ops started so far (all threads) */
static _Thread_local long t_op = -1;        /* the op this thread is running, -1: not an op thread */
static _Thread_local const char *t_opname = "-";
static _Thread_local const char *t_role; /* test threads that run no op: "a promise completer", ... */

static const char *g_skip;
static void print_repro(void) {
    fprintf(stderr, "stress: reproduce with: %s --seed %" PRIu64 " --ops %ld --threads %d%s%s%s\n",
            g_argv0, g_seed, g_ops, g_threads, g_process ? " --process" : "",
            g_skip ? " --skip " : "", g_skip ? g_skip : "");
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (t_op >= 0)
        fprintf(stderr, "stress: FAILED seed=%" PRIu64 " op=%ld (%s, %s pools): %s\n", g_seed, t_op,
                t_opname, g_process ? "process" : "thread", buf);
    else
        fprintf(stderr, "stress: FAILED seed=%" PRIu64 " op=%ld (in %s, %s pools): %s\n", g_seed,
                atomic_load(&g_op), t_role != NULL ? t_role : "a library thread (a callback)",
                g_process ? "process" : "thread", buf);
    print_repro();
    fflush(stderr);
    _exit(1);
}

#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond)) fail(__VA_ARGS__);                                                     \
    } while (0)

static const char *sname(cf_status s) { return cf_status_name(s); }

/* ---- statistics (printed with --verbose: shows which paths a run reached) ---------------- */

enum stat {
    S_RESULT_OK, S_RESULT_TIMEOUT, S_RESULT_FAILED, S_RESULT_CANCELLED, S_RESULT_BLOCKED,
    S_CANCEL_TRUE, S_CANCEL_FALSE, S_WAIT_OK, S_WAIT_TIMEOUT, S_AC_YIELD, S_AC_TIMEOUT,
    S_MAP_ITEMS, S_MAP_FAILED, S_MAP_TIMEOUT, S_CB_SYNC, S_CB_ASYNC, S_SET_WON, S_SET_LOST,
    S_COUNT
};
static const char *const g_stat_names[S_COUNT] = {
    "result ok", "result timeout", "result failed/broken", "result cancelled",
    "result waited on a pending future", "cancel true", "cancel false", "wait ok",
    "wait timeout", "as_completed yields", "as_completed timeouts", "map items ok",
    "maps stopped by a failure", "map timeouts", "callbacks run at once", "callbacks run later",
    "promise sets won", "promise sets lost"};
static atomic_long g_stats[S_COUNT];
#define STAT(s) atomic_fetch_add_explicit(&g_stats[s], 1, memory_order_relaxed)

/* ---- randomness ----------------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t rnd(rng *r) { return splitmix(&r->s); }
static uint32_t rndn(rng *r, uint32_t n) { return n ? (uint32_t)(rnd(r) % n) : 0; }
static bool chance(rng *r, uint32_t per_mille) { return rndn(r, 1000) < per_mille; }

static uint64_t mix64(uint64_t a) {
    uint64_t x = a;
    return splitmix(&x);
}

/* ---- time ----------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* 0, a small timeout (up to 2 ms) or CF_FOREVER. */
static double pick_timeout(rng *r, uint32_t forever_per_mille) {
    uint32_t x = rndn(r, 1000);
    if (x < forever_per_mille) return CF_FOREVER;
    if (x < forever_per_mille + (1000 - forever_per_mille) * 2 / 5) return 0.0;
    return (double)rndn(r, 2000) / 1e6;
}

/* ---- tasks and their argument encoding ------------------------------------------------ */

enum kind {
    K_VALUE = 1,  /* returns mix(arg) (bytes: the input reversed) */
    K_FAIL = 2,   /* cf_raise(code(arg), msg(arg)) */
    K_SLOW = 3,   /* sleeps 50..450 us, then as K_VALUE */
    K_NESTED = 4, /* waits (timeout) on a never-completed promise of its pool, then value (thread pools) */
    K_CRASH = 5,  /* raise(SIGKILL) in its worker (process pools): CF_BROKEN */
    K_EMPTY = 6,  /* bytes: returns NULL, length 0 */
};

/* arg: bits 0-3 kind, bit 4 tracked, bits 5-20 pool slot, bits 21-63 entry index. */
#define MAX_POOLS 65536u
static uintptr_t make_arg(unsigned kind, bool tracked, unsigned slot, uint64_t idx) {
    return (uintptr_t)kind | ((uintptr_t)tracked << 4) | ((uintptr_t)(slot & 0xffff) << 5) |
           ((uintptr_t)idx << 21);
}
static unsigned arg_kind(uintptr_t a) { return (unsigned)(a & 15); }
static bool arg_tracked(uintptr_t a) { return (a >> 4) & 1; }
static unsigned arg_slot(uintptr_t a) { return (unsigned)((a >> 5) & 0xffff); }
static uint64_t arg_idx(uintptr_t a) { return (uint64_t)a >> 21; }
static uintptr_t task_value(uintptr_t a) { return (uintptr_t)mix64(a ^ 0x5151u); }
static int fail_code(uintptr_t a) { return 1 + (int)(mix64(a) % 1000); }
static void fail_msg(uintptr_t a, char *buf, size_t n) {
    snprintf(buf, n, "task %" PRIxPTR " failed on purpose", a);
}

/* Memory shared with every worker process (mapped before any pool exists). */
typedef struct shm {
    atomic_int running[MAX_POOLS]; /* tasks of pool slot s running now */
    atomic_int inits;              /* initializer calls */
    atomic_int owned_ran;          /* owned tasks (op "owned") that returned */
    atomic_int ran[];              /* entry i's task started (must end 0 or 1) */
} shm_t;
static shm_t *g_shm;
static size_t g_shm_size;

static cf_future *g_gate; /* a promise completed only at the end: K_NESTED waits on it */

static void *finish_task(uintptr_t a, void *ret) {
    atomic_fetch_sub(&g_shm->running[arg_slot(a)], 1);
    return ret;
}

static void start_task(uintptr_t a) {
    atomic_fetch_add(&g_shm->running[arg_slot(a)], 1);
    if (arg_tracked(a)) atomic_fetch_add(&g_shm->ran[arg_idx(a)], 1);
}

/* Tasks report surprises with this code: the checker turns it into a failure. */
#define TASK_SELF_CHECK_CODE 424242

/* The behaviour of the task's kind. Returns true if the task is over already (it failed:
 * *ret is what to return), false if it goes on to produce its value. */
static bool task_body(uintptr_t a, void **ret) {
    unsigned k = arg_kind(a);
    if (k == K_SLOW) sleep_us(50 + (long)(mix64(a) % 400));
    if (k == K_NESTED && g_gate != NULL) {
        /* On a thread-pool worker the wait runs other queued tasks of the pool meanwhile. */
        cf_status s = cf_future_wait(g_gate, 0.0002);
        if (s != CF_TIMEOUT) {
            finish_task(a, NULL);
            *ret = cf_raise(TASK_SELF_CHECK_CODE, "cf_future_wait on the gate did not time out");
            return true;
        }
        cf_future *one[1] = {g_gate};
        bool d[1] = {true};
        size_t nd = 99;
        s = cf_wait(one, 1, CF_FIRST_COMPLETED, 0.0, d, &nd);
        if (s != CF_TIMEOUT || d[0] || nd != 0) {
            finish_task(a, NULL);
            *ret = cf_raise(TASK_SELF_CHECK_CODE, "cf_wait on the gate did not time out");
            return true;
        }
    }
    if (k == K_FAIL) {
        char msg[96];
        fail_msg(a, msg, sizeof msg);
        finish_task(a, NULL);
        *ret = cf_raise(fail_code(a), msg);
        return true;
    }
    if (k == K_CRASH) {
        finish_task(a, NULL);
        raise(SIGKILL);
        *ret = cf_raise(TASK_SELF_CHECK_CODE, "survived SIGKILL");
        return true;
    }
    return false;
}

static void *ptr_task(void *p) {
    uintptr_t a = (uintptr_t)p;
    start_task(a);
    void *ret = NULL;
    if (task_body(a, &ret)) return ret;
    return finish_task(a, (void *)task_value(a));
}

/* Byte inputs: 8 bytes of arg, then `len - 8` bytes derived from it. */
static void fill_input(uint8_t *buf, size_t len, uintptr_t a) {
    memcpy(buf, &a, sizeof a);
    for (size_t j = sizeof a; j < len; j++) buf[j] = (uint8_t)(mix64(a + j) >> 17);
}

static void *bytes_task(const void *in, size_t len, size_t *out_len) {
    *out_len = 0;
    if (in == NULL || len < sizeof(uintptr_t))
        return cf_raise(TASK_SELF_CHECK_CODE, "byte task got a short input");
    uintptr_t a;
    memcpy(&a, in, sizeof a);
    start_task(a);
    void *ret = NULL;
    if (task_body(a, &ret)) return ret;
    if (arg_kind(a) == K_EMPTY) return finish_task(a, NULL);
    uint8_t *out = malloc(len);
    if (out == NULL) {
        finish_task(a, NULL);
        return cf_raise(ENOMEM, "malloc");
    }
    const uint8_t *b = in;
    for (size_t j = 0; j < len; j++) out[j] = b[len - 1 - j];
    *out_len = len;
    return finish_task(a, out);
}

static void check_bytes_out(uintptr_t a, size_t in_len, cf_bytes got, const char *where) {
    if (arg_kind(a) == K_EMPTY) {
        REQUIRE(got.data == NULL && got.len == 0, "%s: empty byte task gave data %p len %zu", where,
                got.data, got.len);
        return;
    }
    REQUIRE(got.len == in_len && got.data != NULL,
            "%s: byte task %" PRIxPTR " gave len %zu (data %p), expected %zu", where, a, got.len,
            got.data, in_len);
    uint8_t *want = malloc(in_len);
    REQUIRE(want != NULL, "malloc");
    fill_input(want, in_len, a);
    const uint8_t *g = got.data;
    for (size_t j = 0; j < in_len; j++) {
        if (g[j] != want[in_len - 1 - j]) {
            free(want);
            fail("%s: byte task %" PRIxPTR " result differs at byte %zu of %zu", where, a, j, in_len);
        }
    }
    free(want);
}

static void init_fn(void *arg) {
    (void)arg;
    atomic_fetch_add(&g_shm->inits, 1);
}

/* ---- executors ------------------------------------------------------------------------ */

typedef struct pool_ref {
    cf_executor *ex;
    unsigned slot;
    size_t max_workers; /* effective */
    atomic_int refs;    /* users now, +1 while current */
    atomic_bool shut;   /* a shutdown was started (submit may give CF_SHUTDOWN) */
    struct pool_ref *next;
} pool_ref;

static atomic_bool g_cancel_shut[MAX_POOLS]; /* pool slot s was shut down with cancel_futures */
static atomic_bool g_slot_shut[MAX_POOLS];   /* a shutdown of pool slot s was started */
static atomic_uint g_next_slot;
static pthread_mutex_t g_cur_mu = PTHREAD_MUTEX_INITIALIZER;
static pool_ref *g_cur;
static pthread_mutex_t g_retired_mu = PTHREAD_MUTEX_INITIALIZER;
static pool_ref *g_retired;
static pthread_mutex_t g_rot_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_rotations, g_pools_made;
static long g_cpus = 1;

static pool_ref *make_pool(rng *r) {
    unsigned slot = atomic_fetch_add(&g_next_slot, 1);
    REQUIRE(slot < MAX_POOLS, "too many pools");
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    if (g_process) {
        o.max_workers = chance(r, 100) ? 0 : 1 + rndn(r, 3);
        static const size_t mtpc[] = {0, 0, 0, 1, 2, 3, 7};
        o.max_tasks_per_child = mtpc[rndn(r, 7)];
    } else {
        o.max_workers = chance(r, 100) ? 0 : chance(r, 600) ? 1 + rndn(r, 2) : 1 + rndn(r, 8);
    }
    if (chance(r, 300)) o.initializer = init_fn;
    if (chance(r, 500)) o.name_prefix = "stress";
    cf_executor *ex = (cf_executor *)&o; /* sentinel: must stay untouched on failure */
    cf_status s = g_process ? cf_process_pool_new(&o, &ex) : cf_thread_pool_new(&o, &ex);
    REQUIRE(s == CF_OK, "creating a %s pool: %s (errno %d)", g_process ? "process" : "thread",
            sname(s), errno);
    REQUIRE(ex != NULL && ex != (cf_executor *)&o, "pool creation wrote no executor");
    REQUIRE(cf_executor_worker_count(ex) == 0, "a new executor has workers");
    pool_ref *p = calloc(1, sizeof *p);
    REQUIRE(p != NULL, "calloc");
    p->ex = ex;
    p->slot = slot;
    size_t dflt = g_process ? (size_t)g_cpus : (size_t)(g_cpus + 4 < 32 ? g_cpus + 4 : 32);
    p->max_workers = o.max_workers ? o.max_workers : dflt;
    atomic_store(&p->refs, 1);
    atomic_fetch_add(&g_pools_made, 1);
    return p;
}

/* The current executor with one more reference, or NULL at the end. */
static pool_ref *get_pool(void) {
    pthread_mutex_lock(&g_cur_mu);
    pool_ref *p = g_cur;
    if (p != NULL) atomic_fetch_add(&p->refs, 1);
    pthread_mutex_unlock(&g_cur_mu);
    return p;
}

static void put_pool(pool_ref *p) {
    if (p != NULL) atomic_fetch_sub(&p->refs, 1);
}

static void check_quiet_after_wait(pool_ref *p, const char *what) {
    int running = atomic_load(&g_shm->running[p->slot]);
    REQUIRE(running == 0, "%s: %d task(s) of pool %u still running after a shutdown with wait",
            what, running, p->slot);
    size_t wc = cf_executor_worker_count(p->ex);
    REQUIRE(wc == 0, "%s: worker_count %zu after a shutdown with wait (pool %u)", what, wc, p->slot);
}

/* Frees retired executors nobody uses any more. With `all`, waits until every one is. */
static void reap_retired(bool all) {
    double start = now_s();
    for (;;) {
        pool_ref *done = NULL;
        bool left = false;
        pthread_mutex_lock(&g_retired_mu);
        pool_ref **pp = &g_retired;
        while (*pp != NULL) {
            pool_ref *p = *pp;
            if (atomic_load(&p->refs) == 0) {
                *pp = p->next;
                p->next = done;
                done = p;
            } else {
                left = true;
                pp = &p->next;
            }
        }
        pthread_mutex_unlock(&g_retired_mu);
        while (done != NULL) {
            pool_ref *p = done;
            done = p->next;
            cf_executor_free(p->ex);
            int running = atomic_load(&g_shm->running[p->slot]);
            REQUIRE(running == 0, "%d task(s) of pool %u running after cf_executor_free", running,
                    p->slot);
            free(p);
        }
        if (!all || !left) return;
        REQUIRE(now_s() - start < g_stall, "retired executors still in use after %.0fs", g_stall);
        sleep_us(1000);
    }
}

static void retire(pool_ref *p) {
    pthread_mutex_lock(&g_retired_mu);
    p->next = g_retired;
    g_retired = p;
    pthread_mutex_unlock(&g_retired_mu);
    put_pool(p); /* the "current" reference */
}

/* Shuts `old` down the way `r` says, and checks what a shutdown promises. */
static void shut_down(pool_ref *old, bool wait, bool cancel, rng *r) {
    if (cancel) atomic_store(&g_cancel_shut[old->slot], true);
    atomic_store(&old->shut, true);
    atomic_store(&g_slot_shut[old->slot], true);
    if (chance(r, 250)) {
        cf_status s0 = cf_executor_shutdown(old->ex, false, false);
        REQUIRE(s0 == CF_OK, "cf_executor_shutdown(no wait) gave %s", sname(s0));
    }
    cf_status s = cf_executor_shutdown(old->ex, wait, cancel);
    REQUIRE(s == CF_OK, "cf_executor_shutdown(wait=%d, cancel=%d) gave %s", wait, cancel, sname(s));
    if (wait) check_quiet_after_wait(old, "shutdown");
    cf_future *f = (cf_future *)&s;
    cf_status s2 = cf_submit(old->ex, ptr_task, (void *)make_arg(K_VALUE, false, old->slot, 0), &f);
    REQUIRE(s2 == CF_SHUTDOWN, "cf_submit after shutdown gave %s", sname(s2));
    REQUIRE(f == (cf_future *)&s, "cf_submit after shutdown wrote its out-parameter");
    if (chance(r, 300)) {
        bool cancel2 = chance(r, 500);
        if (cancel2) atomic_store(&g_cancel_shut[old->slot], true);
        s = cf_executor_shutdown(old->ex, true, cancel2);
        REQUIRE(s == CF_OK, "a second cf_executor_shutdown(wait) gave %s", sname(s));
        check_quiet_after_wait(old, "second shutdown");
    }
}

/* ---- entries: every future the test makes --------------------------------------------- */

enum type { T_NONE = 0, T_PTR, T_BYTES, T_PROMISE };
enum pmode { P_RESULT = 1, P_EXC = 2 };

typedef struct entry {
    uintptr_t fptr; /* the future, as an identity (it may be freed long before the end) */
    uintptr_t arg;  /* tasks: the encoded argument; promises: the value to set */
    uint32_t type, kind, in_len, slot, depth;
    int n_added; /* callbacks added so far (ordinals); under its stripe lock */
    atomic_int count_calls, last_async;
    atomic_int cb_state, cb_status;
    atomic_int cancel_attempted, cancel_true, cancel_false;
    atomic_int set_wins, set_running_ok, set_running_cancelled;
} entry;

static entry *g_entries;
static size_t g_cap;
static atomic_size_t g_n_entries;

#define STRIPES 256
static pthread_mutex_t g_stripe[STRIPES];
static _Thread_local entry *t_adding; /* the entry whose add_done_callback this thread is in */

static entry *new_entry(void) {
    size_t i = atomic_fetch_add(&g_n_entries, 1);
    if (i >= g_cap) {
        atomic_fetch_sub(&g_n_entries, 1); /* racy but only used as a bound */
        return NULL;
    }
    entry *e = &g_entries[i];
    e->type = T_NONE; /* set once the future exists */
    atomic_store(&e->last_async, -1);
    atomic_store(&e->cb_state, -1);
    atomic_store(&e->cb_status, -1);
    return e;
}
static size_t entry_idx(const entry *e) { return (size_t)(e - g_entries); }

/* A cancelled outcome is legitimate only if someone could have cancelled it. */
static bool cancel_possible(entry *e) {
    if (atomic_load(&e->cancel_attempted)) return true;
    if (e->type != T_PROMISE && atomic_load(&g_cancel_shut[e->slot])) return true;
    return false;
}

static bool expect_success(entry *e) {
    if (e->type == T_PROMISE) return e->kind == P_RESULT;
    return e->kind == K_VALUE || e->kind == K_SLOW || e->kind == K_NESTED || e->kind == K_EMPTY;
}

/* Checks an error (code, message) of a failed entry. */
static void check_error(entry *e, cf_status st, int code, const char *msg, const char *where) {
    char want[96];
    if (st == CF_TASK_FAILED) {
        REQUIRE(code != TASK_SELF_CHECK_CODE, "%s: a task's self-check failed: %s", where,
                msg ? msg : "(no message)");
        if (e->type == T_PROMISE) {
            REQUIRE(e->kind == P_EXC, "%s: promise %zu (result mode) failed", where, entry_idx(e));
            REQUIRE(code == (int)(e->arg & 0xffff), "%s: promise code %d, expected %d", where, code,
                    (int)(e->arg & 0xffff));
            snprintf(want, sizeof want, "promise %zu", entry_idx(e));
        } else {
            REQUIRE(e->kind == K_FAIL, "%s: entry %zu (kind %u) failed with code %d: %s", where,
                    entry_idx(e), e->kind, code, msg ? msg : "(null)");
            REQUIRE(code == fail_code(e->arg), "%s: code %d, expected %d", where, code,
                    fail_code(e->arg));
            fail_msg(e->arg, want, sizeof want);
        }
        REQUIRE(msg != NULL && strcmp(msg, want) == 0, "%s: message \"%s\", expected \"%s\"", where,
                msg ? msg : "(null)", want);
    } else if (st == CF_BROKEN) {
        REQUIRE(e->type != T_PROMISE && e->kind == K_CRASH,
                "%s: entry %zu (type %u kind %u) is CF_BROKEN: code %d, %s", where, entry_idx(e),
                e->type, e->kind, code, msg ? msg : "(no message)");
        REQUIRE(msg != NULL && strstr(msg, "SIGKILL") != NULL,
                "%s: CF_BROKEN message does not name SIGKILL: %s", where, msg ? msg : "(null)");
    }
}

/* Checks a status that cf_future_result/_exception/_result_bytes gave for a done `f`.
 * `val` is the result (CF_OK with a pointer read), `bytes` the byte result if read. */
static void check_outcome(entry *e, cf_future *f, cf_status st, const void *val, bool have_val,
                          const cf_bytes *bytes, const char *where) {
    switch (st) {
    case CF_OK:
        REQUIRE(expect_success(e), "%s: entry %zu (type %u kind %u) succeeded, expected a failure",
                where, entry_idx(e), e->type, e->kind);
        if (e->type == T_PTR && have_val)
            REQUIRE((uintptr_t)val == task_value(e->arg),
                    "%s: entry %zu value %p, expected %" PRIxPTR, where, entry_idx(e), val,
                    task_value(e->arg));
        if (e->type == T_PROMISE && have_val)
            REQUIRE((uintptr_t)val == e->arg, "%s: promise value %p, expected %" PRIxPTR, where, val,
                    e->arg);
        if (e->type == T_BYTES) {
            cf_bytes b = {(const void *)&b, 12345};
            cf_status sb = cf_future_result_bytes(f, 0.0, &b);
            REQUIRE(sb == CF_OK, "%s: cf_future_result_bytes gave %s after CF_OK", where, sname(sb));
            check_bytes_out(e->arg, e->in_len, b, where);
            if (have_val)
                REQUIRE(val == b.data, "%s: cf_future_result gave %p, the byte data is %p", where, val,
                        b.data);
            if (bytes != NULL)
                REQUIRE(bytes->data == b.data && bytes->len == b.len,
                        "%s: two reads of the byte result differ", where);
        }
        break;
    case CF_TASK_FAILED:
    case CF_BROKEN: {
        int code = -7;
        const char *msg = (const char *)&code;
        cf_status s2 = cf_future_exception(f, 0.0, &code, &msg);
        REQUIRE(s2 == st, "%s: cf_future_exception gave %s, result gave %s", where, sname(s2),
                sname(st));
        check_error(e, st, code, msg, where);
        break;
    }
    case CF_CANCELLED:
        REQUIRE(cancel_possible(e),
                "%s: entry %zu (type %u kind %u, pool %u, depth %u) cancelled, but nobody cancelled "
                "it (no cancel attempted, its pool not shut down with cancel_futures)",
                where, entry_idx(e), e->type, e->kind, e->slot, e->depth);
        REQUIRE(cf_future_cancelled(f), "%s: CF_CANCELLED but cf_future_cancelled is false", where);
        break;
    default:
        fail("%s: unexpected status %s for entry %zu", where, sname(st), entry_idx(e));
    }
}

/* The full outcome of a done future, read without waiting. */
static cf_status read_outcome(entry *e, cf_future *f, const char *where) {
    void *v = (void *)&v;
    cf_status st = cf_future_result(f, 0.0, &v);
    REQUIRE(st != CF_TIMEOUT, "%s: cf_future_result(0) timed out on a done future", where);
    if (st != CF_OK) REQUIRE(v == (void *)&v, "%s: result written with %s", where, sname(st));
    check_outcome(e, f, st, v, st == CF_OK, NULL, where);
    return st;
}

/* Order of callbacks run by the thread that completes the future. */
static void check_order(entry *e, int ordinal, const char *what) {
    if (ordinal < 0 || t_adding == e) return;
    int prev = atomic_exchange(&e->last_async, ordinal);
    REQUIRE(prev < ordinal, "%s: callbacks of entry %zu ran out of order: #%d after #%d", what,
            entry_idx(e), ordinal, prev);
}

/* The callback every future gets at creation (ordinal 0). */
static void count_cb(cf_future *f, void *ud) {
    entry *e = ud;
    int calls = atomic_fetch_add(&e->count_calls, 1);
    REQUIRE(calls == 0, "the creation callback of entry %zu ran %d times", entry_idx(e), calls + 1);
    REQUIRE((uintptr_t)f == e->fptr, "the creation callback of entry %zu got future %p, not %p",
            entry_idx(e), (void *)f, (void *)e->fptr);
    REQUIRE(cf_future_done(f), "a done callback ran on a future that is not done");
    check_order(e, 0, "creation callback");
    STAT(t_adding == e ? S_CB_SYNC : S_CB_ASYNC);
    cf_state s = cf_future_state(f);
    REQUIRE(s == CF_STATE_FINISHED || s == CF_STATE_CANCELLED, "callback saw state %u", s);
    cf_status st = read_outcome(e, f, "creation callback");
    REQUIRE((s == CF_STATE_CANCELLED) == (st == CF_CANCELLED), "state %u but outcome %s", s, sname(st));
    atomic_store(&e->cb_status, (int)st);
    atomic_store(&e->cb_state, (int)s);
}

/* ---- the live set: futures ops pick from -------------------------------------------------- */

typedef struct live {
    size_t idx;
    cf_future *f; /* the registry's reference */
} live;

static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static live *g_live;
static size_t g_live_cap, g_live_n, g_live_head; /* ring: head is the oldest */

static void add_live(entry *e, cf_future *f) {
    cf_future *evict = NULL;
    pthread_mutex_lock(&g_reg_mu);
    if (g_live_n == g_live_cap) {
        evict = g_live[g_live_head].f;
        g_live[g_live_head].idx = entry_idx(e);
        g_live[g_live_head].f = f;
        g_live_head = (g_live_head + 1) % g_live_cap;
    } else {
        g_live[(g_live_head + g_live_n) % g_live_cap] = (live){entry_idx(e), f};
        g_live_n++;
    }
    pthread_mutex_unlock(&g_reg_mu);
    cf_future_release(evict); /* pending or not: releasing never cancels */
}

/* A random live future with a new reference (release it), or NULL. */
static cf_future *pick_live(rng *r, entry **e) {
    pthread_mutex_lock(&g_reg_mu);
    if (g_live_n == 0) {
        pthread_mutex_unlock(&g_reg_mu);
        return NULL;
    }
    /* Half the picks among the newest futures, which are likely still pending. */
    size_t k = chance(r, 500) ? rndn(r, (uint32_t)g_live_n)
                              : g_live_n - 1 - rndn(r, (uint32_t)(g_live_n < 12 ? g_live_n : 12));
    live l = g_live[(g_live_head + k) % g_live_cap];
    cf_future *f = cf_future_retain(l.f);
    pthread_mutex_unlock(&g_reg_mu);
    REQUIRE(f == l.f, "cf_future_retain returned %p for %p", (void *)f, (void *)l.f);
    *e = &g_entries[l.idx];
    return f;
}

/* ---- extra callbacks ------------------------------------------------------------------ */

enum xtype { X_COUNT, X_SPAWN, X_RELEASE, X_ADD, X_NESTED };

typedef struct xcb {
    entry *e;
    int ordinal; /* -1: added from inside a callback (runs at once, unordered) */
    int type;
    atomic_int calls;
    cf_future *to_release;
    uint64_t seed;
} xcb;

static xcb *g_xcbs;
static size_t g_xcap;
static atomic_size_t g_n_xcbs;
static atomic_bool g_stop_spawn;
static atomic_long g_spawned;

static xcb *new_xcb(entry *e, int type) {
    size_t i = atomic_fetch_add(&g_n_xcbs, 1);
    if (i >= g_xcap) {
        atomic_fetch_sub(&g_n_xcbs, 1);
        return NULL;
    }
    xcb *x = &g_xcbs[i];
    x->e = e;
    x->type = type;
    x->ordinal = -2; /* not added */
    return x;
}

static bool submit_entry(pool_ref *p, rng *r, uint32_t type, uint32_t depth, bool keep);
static void extra_cb(cf_future *f, void *ud);

/* Adds x to f from inside a callback (f is done: x must run before this returns). */
static void add_nested(cf_future *f, xcb *x) {
    x->ordinal = -1;
    entry *saved = t_adding;
    t_adding = x->e;
    cf_status s = cf_future_add_done_callback(f, extra_cb, x);
    t_adding = saved;
    REQUIRE(s == CF_OK, "add_done_callback from a callback gave %s", sname(s));
    REQUIRE(atomic_load(&x->calls) == 1,
            "a callback added to a done future (from a callback) did not run at once (%d calls)",
            atomic_load(&x->calls));
}

static void extra_cb(cf_future *f, void *ud) {
    xcb *x = ud;
    entry *e = x->e;
    int calls = atomic_fetch_add(&x->calls, 1);
    REQUIRE(calls == 0, "a callback (type %d) on entry %zu ran %d times", x->type, entry_idx(e),
            calls + 1);
    REQUIRE((uintptr_t)f == e->fptr, "a callback got future %p, not %p", (void *)f, (void *)e->fptr);
    REQUIRE(cf_future_done(f), "a done callback ran on a future that is not done");
    check_order(e, x->ordinal, "extra callback");
    switch (x->type) {
    case X_COUNT:
        read_outcome(e, f, "extra callback");
        break;
    case X_SPAWN:
        if (!atomic_load(&g_stop_spawn) && e->depth < 3) {
            pool_ref *p = get_pool();
            if (p != NULL) {
                rng r = {x->seed};
                if (submit_entry(p, &r, chance(&r, 700) ? T_PTR : T_BYTES, e->depth + 1, chance(&r, 500)))
                    atomic_fetch_add(&g_spawned, 1);
                put_pool(p);
            }
        }
        break;
    case X_RELEASE:
        REQUIRE(x->to_release == f, "release callback: wrong future");
        cf_future_release(x->to_release); /* a reference the op took for this callback */
        break;
    case X_ADD: {
        xcb *y = new_xcb(e, X_NESTED);
        if (y != NULL) add_nested(f, y);
        break;
    }
    case X_NESTED:
        REQUIRE(t_adding == e, "a callback added to a done future ran in another thread or later");
        break;
    }
}

/* Adds an extra callback of `type` to f (entry e) from an op thread. */
static void add_extra(cf_future *f, entry *e, int type, rng *r) {
    xcb *x = new_xcb(e, type);
    if (x == NULL) return;
    x->seed = rnd(r);
    if (type == X_RELEASE) x->to_release = cf_future_retain(f);
    pthread_mutex_t *mu = &g_stripe[entry_idx(e) % STRIPES];
    pthread_mutex_lock(mu);
    bool was_done = cf_future_done(f);
    x->ordinal = e->n_added++;
    t_adding = e;
    cf_status s = cf_future_add_done_callback(f, extra_cb, x);
    t_adding = NULL;
    pthread_mutex_unlock(mu);
    REQUIRE(s == CF_OK, "cf_future_add_done_callback gave %s", sname(s));
    if (was_done)
        REQUIRE(atomic_load(&x->calls) == 1,
                "a callback added to a done future did not run before the add returned");
}

/* ---- making futures ------------------------------------------------------------------- */

static uint32_t pick_kind(rng *r, uint32_t type) {
    uint32_t x = rndn(r, 1000);
    if (g_process) {
        if (x < 25) return K_CRASH;
        if (x < 100) return K_FAIL;
        if (x < 130) return K_SLOW;
        if (type == T_BYTES && x < 180) return K_EMPTY;
        return K_VALUE;
    }
    if (x < 70) return K_FAIL;
    if (x < 120) return K_SLOW;
    if (x < 170) return K_NESTED;
    if (type == T_BYTES && x < 220) return K_EMPTY;
    return K_VALUE;
}

/* A byte input's length: 8 + up to `small` bytes, or (process pools, 1.5% of inputs)
 * 60 KiB to 1.6 MiB, on both sides of the size from which inputs go through shared memory
 * (64 KiB). */
static size_t byte_len(rng *r, uint32_t small) {
    if (g_process && chance(r, 15)) return (60u << 10) + rndn(r, 1536u << 10);
    return sizeof(uintptr_t) + rndn(r, small);
}

/* Submits a new tracked task to p; keeps it in the live set or releases it at once. */
static bool submit_entry(pool_ref *p, rng *r, uint32_t type, uint32_t depth, bool keep) {
    entry *e = new_entry();
    if (e == NULL) return false;
    uint32_t kind = pick_kind(r, type);
    uintptr_t a = make_arg(kind, true, p->slot, entry_idx(e));
    e->arg = a;
    e->kind = kind;
    e->slot = p->slot;
    e->depth = depth;
    cf_future *f = (cf_future *)&e;
    cf_status s;
    if (type == T_PTR) {
        s = cf_submit(p->ex, ptr_task, (void *)a, &f);
    } else {
        e->in_len = (uint32_t)byte_len(r, 300);
        uint8_t *buf = malloc(e->in_len);
        REQUIRE(buf != NULL, "malloc");
        fill_input(buf, e->in_len, a);
        s = cf_submit_bytes(p->ex, bytes_task, buf, e->in_len, &f);
        memset(buf, 0xEE, e->in_len); /* the input was copied: scribbling on it is fine */
        free(buf);
    }
    if (s != CF_OK) {
        REQUIRE(f == (cf_future *)&e, "a failed submit wrote its out-parameter");
        REQUIRE(s == CF_SHUTDOWN && atomic_load(&p->shut), "submit gave %s (pool shut: %d)", sname(s),
                (int)atomic_load(&p->shut));
        return false; /* the entry stays T_NONE */
    }
    REQUIRE(f != NULL && f != (cf_future *)&e, "submit gave CF_OK without a future");
    e->fptr = (uintptr_t)f;
    e->n_added = 1;
    e->type = type;
    t_adding = e;
    s = cf_future_add_done_callback(f, count_cb, e);
    t_adding = NULL;
    REQUIRE(s == CF_OK, "cf_future_add_done_callback gave %s", sname(s));
    if (keep)
        add_live(e, f);
    else
        cf_future_release(f); /* fire and forget: the task still runs, the callback still fires */
    return true;
}

/* Promises: a queue the completer threads take from, in random order. */
static pthread_mutex_t g_pq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_pq_cv = PTHREAD_COND_INITIALIZER;
static live *g_pq;
static size_t g_pq_n, g_pq_cap;
static atomic_bool g_ops_done;

static void new_promise(rng *r) {
    entry *e = new_entry();
    if (e == NULL) return;
    e->kind = chance(r, 700) ? P_RESULT : P_EXC;
    e->arg = (uintptr_t)(rnd(r) | 1);
    cf_future *f = (cf_future *)&e;
    cf_status s = cf_future_new(&f);
    REQUIRE(s == CF_OK && f != NULL && f != (cf_future *)&e, "cf_future_new gave %s", sname(s));
    REQUIRE(cf_future_state(f) == CF_STATE_PENDING, "a new promise is not pending");
    e->fptr = (uintptr_t)f;
    e->n_added = 1;
    e->type = T_PROMISE;
    t_adding = e;
    s = cf_future_add_done_callback(f, count_cb, e);
    t_adding = NULL;
    REQUIRE(s == CF_OK, "cf_future_add_done_callback gave %s", sname(s));
    /* The completers get a reference of their own. */
    pthread_mutex_lock(&g_pq_mu);
    if (g_pq_n == g_pq_cap) {
        g_pq_cap = g_pq_cap ? 2 * g_pq_cap : 256;
        g_pq = realloc(g_pq, g_pq_cap * sizeof *g_pq);
        REQUIRE(g_pq != NULL, "realloc");
    }
    g_pq[g_pq_n++] = (live){entry_idx(e), cf_future_retain(f)};
    pthread_cond_signal(&g_pq_cv);
    pthread_mutex_unlock(&g_pq_mu);
    if (chance(r, 850))
        add_live(e, f);
    else
        cf_future_release(f);
}

/* One attempt to complete (or cancel) promise e; racing attempts are fine. Every path
 * leaves the promise done, or done by the racing thread that marked it running. */
static void complete_promise(entry *e, cf_future *f, rng *r) {
    char msg[64];
    snprintf(msg, sizeof msg, "promise %zu", entry_idx(e));
    int code = (int)(e->arg & 0xffff);
    uint32_t x = rndn(r, 1000);
    if (x < 150) {
        atomic_store(&e->cancel_attempted, 1);
        bool c = cf_future_cancel(f);
        if (c) {
            atomic_fetch_add(&e->cancel_true, 1);
            REQUIRE(cf_future_cancelled(f) && cf_future_done(f), "cancel true, but not cancelled");
            return;
        }
        atomic_fetch_add(&e->cancel_false, 1);
        cf_state st = cf_future_state(f);
        REQUIRE(st == CF_STATE_RUNNING || st == CF_STATE_FINISHED,
                "promise cancel false, but state %u", st);
        if (st == CF_STATE_FINISHED) return;
        /* running: another thread marked it and will set it; set it too (one wins) */
    } else if (x < 450) {
        cf_status s = cf_future_set_running_or_notify_cancel(f);
        if (s == CF_CANCELLED) {
            atomic_fetch_add(&e->set_running_cancelled, 1);
            REQUIRE(cf_future_cancelled(f), "set_running gave CF_CANCELLED, not cancelled");
            return;
        }
        if (s == CF_OK) {
            atomic_fetch_add(&e->set_running_ok, 1);
            REQUIRE(!cf_future_cancel(f), "cancel succeeded on a running promise");
            atomic_fetch_add(&e->cancel_false, 1);
            atomic_store(&e->cancel_attempted, 1);
            if (chance(r, 100)) sched_yield();
        } else {
            REQUIRE(s == CF_INVALID_STATE, "set_running_or_notify_cancel gave %s", sname(s));
            cf_state st = cf_future_state(f);
            REQUIRE(st != CF_STATE_PENDING, "set_running gave CF_INVALID_STATE on a pending promise");
        }
    }
    cf_status s = e->kind == P_RESULT ? cf_future_set_result(f, (void *)e->arg)
                                      : cf_future_set_exception(f, code, msg);
    STAT(s == CF_OK ? S_SET_WON : S_SET_LOST);
    if (s == CF_OK) {
        atomic_fetch_add(&e->set_wins, 1);
        REQUIRE(cf_future_done(f) && !cf_future_cancelled(f), "set gave CF_OK, future not finished");
        REQUIRE(atomic_load(&e->count_calls) == 1,
                "set_result returned before the done callback ran (%d calls)",
                atomic_load(&e->count_calls));
    } else {
        REQUIRE(s == CF_INVALID_STATE, "set_result/exception gave %s", sname(s));
        if (!cf_future_done(f)) {
            /* API: CF_INVALID_STATE means "already done". Say how long it took to be. */
            double t0 = now_s();
            cf_status w = cf_future_wait(f, 5.0);
            fail("cf_future_%s on promise %zu gave CF_INVALID_STATE (\"already done\"), but "
                 "cf_future_done was false right after; it became done %.6fs later (%s): a racing "
                 "completion was not yet visible",
                 e->kind == P_RESULT ? "set_result" : "set_exception", entry_idx(e), now_s() - t0,
                 sname(w));
        }
        cf_status s2 = e->kind == P_RESULT ? cf_future_set_exception(f, 1, NULL)
                                           : cf_future_set_result(f, NULL);
        REQUIRE(s2 == CF_INVALID_STATE, "setting a done promise gave %s", sname(s2));
    }
}

static void *completer_main(void *arg) {
    rng r = {g_seed ^ (0xC0FFEEull + (uint64_t)(uintptr_t)arg)};
    t_opname = "completer";
    t_role = "a promise completer thread";
    for (;;) {
        pthread_mutex_lock(&g_pq_mu);
        while (g_pq_n == 0 && !atomic_load(&g_ops_done)) pthread_cond_wait(&g_pq_cv, &g_pq_mu);
        if (g_pq_n == 0) {
            pthread_mutex_unlock(&g_pq_mu);
            return NULL;
        }
        size_t i = rndn(&r, (uint32_t)g_pq_n);
        live l = g_pq[i];
        g_pq[i] = g_pq[--g_pq_n];
        pthread_mutex_unlock(&g_pq_mu);
        if (chance(&r, 100)) sleep_us(rndn(&r, 200));
        complete_promise(&g_entries[l.idx], l.f, &r);
        cf_future_release(l.f);
    }
}

/* ---- ops -------------------------------------------------------------------------------- */

#define SET_MAX 14

/* What each op thread is blocked on, for the hang report. */
typedef struct blocked_on {
    _Atomic(const char *) what;
    cf_future *fs[SET_MAX];
    entry *es[SET_MAX];
    size_t n;
    double timeout;
    const bool *yielded; /* as_completed: which were yielded (by first index) */
    const bool *pre;     /* done before the call */
} blocked_on;
static blocked_on g_blocked[64];
static _Thread_local int t_index = -1;

static void note_blocked(const char *what, cf_future *const *fs, entry *const *es, size_t n, double t) {
    if (t_index < 0) return;
    blocked_on *b = &g_blocked[t_index];
    for (size_t i = 0; i < n && i < SET_MAX; i++) {
        b->fs[i] = fs[i];
        b->es[i] = es[i];
    }
    b->n = n;
    b->timeout = t;
    b->yielded = NULL;
    b->pre = NULL;
    atomic_store(&b->what, what);
}
static void note_unblocked(void) {
    if (t_index >= 0) atomic_store(&g_blocked[t_index].what, NULL);
}

static void op_cancel(rng *r) {
    entry *e;
    cf_future *f = pick_live(r, &e);
    if (f == NULL) return;
    if (e->type == T_PROMISE) {
        complete_promise(e, f, r);
        cf_future_release(f);
        return;
    }
    atomic_store(&e->cancel_attempted, 1);
    bool c = cf_future_cancel(f);
    STAT(c ? S_CANCEL_TRUE : S_CANCEL_FALSE);
    if (c) {
        atomic_fetch_add(&e->cancel_true, 1);
        REQUIRE(cf_future_cancelled(f) && cf_future_done(f) &&
                    cf_future_state(f) == CF_STATE_CANCELLED,
                "cancel returned true, the future is not cancelled");
        /* (its callbacks may still be running in the thread whose cancel won) */
        REQUIRE(cf_future_cancel(f), "a second cancel returned false");
    } else {
        atomic_fetch_add(&e->cancel_false, 1);
        cf_state st = cf_future_state(f);
        REQUIRE(st == CF_STATE_RUNNING || st == CF_STATE_FINISHED,
                "cancel returned false, state is %u", st);
    }
    cf_future_release(f);
}

static void op_result(rng *r, bool exception) {
    entry *e;
    cf_future *f = pick_live(r, &e);
    if (f == NULL) return;
    bool pre = cf_future_done(f);
    double t = pick_timeout(r, g_process ? 60 : 120);
    note_blocked(exception ? "cf_future_exception" : "cf_future_result", &f, &e, 1, t);
    char where[64];
    snprintf(where, sizeof where, "%s(timeout %g)", exception ? "exception" : "result", t);
    cf_status st;
    if (exception) {
        int code = -7;
        const char *msg = (const char *)&code;
        st = cf_future_exception(f, t, &code, &msg);
        if (st == CF_OK) {
            REQUIRE(code == 0 && msg == NULL, "%s: CF_OK with code %d", where, code);
            REQUIRE(expect_success(e), "%s: entry %zu succeeded, expected failure", where, entry_idx(e));
        } else if (st == CF_TASK_FAILED || st == CF_BROKEN) {
            check_error(e, st, code, msg, where);
        } else if (st != CF_TIMEOUT) {
            REQUIRE(code == -7 && msg == (const char *)&code, "%s: %s wrote code/message", where,
                    sname(st));
            check_outcome(e, f, st, NULL, false, NULL, where);
        }
    } else if (e->type == T_BYTES && chance(r, 500)) {
        cf_bytes b = {(const void *)&b, 777};
        st = cf_future_result_bytes(f, t, &b);
        if (st == CF_OK) {
            check_bytes_out(e->arg, e->in_len, b, where);
            check_outcome(e, f, st, NULL, false, &b, where);
        } else if (st != CF_TIMEOUT) {
            REQUIRE(b.data == (const void *)&b && b.len == 777, "%s: %s wrote the out-parameter",
                    where, sname(st));
            check_outcome(e, f, st, NULL, false, NULL, where);
        }
    } else {
        void *v = (void *)&v;
        st = cf_future_result(f, t, &v);
        if (st != CF_OK && st != CF_TIMEOUT)
            REQUIRE(v == (void *)&v, "%s: %s wrote the result", where, sname(st));
        if (st != CF_TIMEOUT) check_outcome(e, f, st, v, st == CF_OK, NULL, where);
    }
    STAT(st == CF_OK ? S_RESULT_OK : st == CF_TIMEOUT ? S_RESULT_TIMEOUT
         : st == CF_CANCELLED ? S_RESULT_CANCELLED : S_RESULT_FAILED);
    if (!pre && st != CF_TIMEOUT) STAT(S_RESULT_BLOCKED);
    note_unblocked();
    if (st == CF_TIMEOUT) {
        REQUIRE(t >= 0, "%s: CF_TIMEOUT with CF_FOREVER", where);
        REQUIRE(!pre, "%s: CF_TIMEOUT on a future that was done before the call", where);
    } else {
        REQUIRE(cf_future_done(f), "%s gave %s, the future is not done", where, sname(st));
    }
    cf_future_release(f);
}

static int state_rank_ok(cf_state a, cf_state b) {
    if (a == b) return 1;
    if (a == CF_STATE_PENDING) return 1; /* to running, finished or cancelled */
    if (a == CF_STATE_RUNNING) return b == CF_STATE_FINISHED;
    return 0; /* done states never change */
}

static void op_state(rng *r) {
    entry *e;
    cf_future *f = pick_live(r, &e);
    if (f == NULL) return;
    cf_state s1 = cf_future_state(f);
    bool d = cf_future_done(f);
    bool run = cf_future_running(f);
    bool c = cf_future_cancelled(f);
    cf_state s2 = cf_future_state(f);
    REQUIRE(s1 <= CF_STATE_FINISHED && s2 <= CF_STATE_FINISHED, "state out of range");
    REQUIRE(state_rank_ok(s1, s2), "state went from %u to %u", s1, s2);
    bool d1 = s1 == CF_STATE_FINISHED || s1 == CF_STATE_CANCELLED;
    bool d2 = s2 == CF_STATE_FINISHED || s2 == CF_STATE_CANCELLED;
    if (d1) REQUIRE(d, "state %u, but cf_future_done false", s1);
    if (d) REQUIRE(d2, "cf_future_done true, then state %u", s2);
    if (c) REQUIRE(s2 == CF_STATE_CANCELLED && s1 != CF_STATE_RUNNING && s1 != CF_STATE_FINISHED,
                   "cancelled true with states %u, %u", s1, s2);
    if (run) REQUIRE(s1 != CF_STATE_FINISHED && s1 != CF_STATE_CANCELLED && s2 != CF_STATE_CANCELLED,
                     "running true with states %u, %u", s1, s2);
    if (s1 == CF_STATE_RUNNING && s2 == CF_STATE_RUNNING) REQUIRE(run && !d && !c, "running state, flags disagree");
    if (d1) {
        cf_status st = read_outcome(e, f, "state op");
        REQUIRE((s1 == CF_STATE_CANCELLED) == (st == CF_CANCELLED), "state %u, outcome %s", s1, sname(st));
    }
    cf_future_release(f);
}

static void op_callback(rng *r) {
    entry *e;
    cf_future *f = pick_live(r, &e);
    if (f == NULL) return;
    uint32_t x = rndn(r, 100);
    int type = x < 40 ? X_COUNT : x < 70 ? X_SPAWN : x < 85 ? X_RELEASE : X_ADD;
    add_extra(f, e, type, r);
    cf_future_release(f);
}

static void op_retain(rng *r) {
    entry *e;
    cf_future *f = pick_live(r, &e);
    if (f == NULL) return;
    cf_future *g = cf_future_retain(f);
    REQUIRE(g == f, "cf_future_retain returned another pointer");
    REQUIRE(cf_future_retain(NULL) == NULL, "cf_future_retain(NULL) is not NULL");
    cf_future_release(NULL);
    if (chance(r, 500)) add_extra(f, e, X_RELEASE, r); /* its own reference, released in the callback */
    cf_future_release(g);
    cf_future_release(f);
}

/* Picks k futures (retained, with duplicates) into fs/es; returns k. */
static size_t pick_set(rng *r, cf_future **fs, entry **es, size_t max) {
    size_t k = rndn(r, (uint32_t)max + 1);
    size_t n = 0;
    for (size_t i = 0; i < k; i++) {
        if (n > 0 && chance(r, 200)) {
            size_t j = rndn(r, (uint32_t)n);
            fs[n] = cf_future_retain(fs[j]);
            es[n] = es[j];
            n++;
            continue;
        }
        cf_future *f = pick_live(r, &es[n]);
        if (f == NULL) break;
        fs[n++] = f;
    }
    return n;
}

static bool failed_status(entry *e, cf_future *f) {
    (void)e;
    int code;
    const char *msg;
    cf_status s = cf_future_exception(f, 0.0, &code, &msg);
    return s == CF_TASK_FAILED || s == CF_BROKEN;
}


static void op_wait(rng *r) {
    cf_future *fs[SET_MAX];
    entry *es[SET_MAX];
    size_t n = pick_set(r, fs, es, SET_MAX - 2);
    bool pre[SET_MAX], pre_any = false, pre_all = true, pre_exc = false;
    for (size_t i = 0; i < n; i++) {
        pre[i] = cf_future_done(fs[i]);
        pre_any |= pre[i];
        pre_all &= pre[i];
        if (pre[i] && failed_status(es[i], fs[i])) pre_exc = true;
    }
    cf_return_when when = (cf_return_when)rndn(r, 3);
    double t = pick_timeout(r, g_process ? 80 : 150);
    bool done[SET_MAX];
    for (size_t i = 0; i < SET_MAX; i++) done[i] = (i & 1) != 0;
    size_t nd = 12345;
    bool want_flags = chance(r, 900), want_nd = chance(r, 900);
    note_blocked("cf_wait", fs, es, n, t);
    cf_status st = cf_wait(n ? fs : (chance(r, 500) ? NULL : fs), n, when, t, want_flags ? done : NULL,
                           want_nd ? &nd : NULL);
    note_unblocked();
    REQUIRE(st == CF_OK || st == CF_TIMEOUT, "cf_wait(n=%zu, when=%u, t=%g) gave %s", n, when, t,
            sname(st));
    STAT(st == CF_OK ? S_WAIT_OK : S_WAIT_TIMEOUT);
    if (st == CF_TIMEOUT) {
        REQUIRE(t >= 0, "cf_wait timed out with CF_FOREVER");
        REQUIRE(n > 0, "cf_wait with n=0 timed out");
        bool held = when == CF_FIRST_COMPLETED ? pre_any : when == CF_ALL_COMPLETED ? pre_all : (pre_all || pre_exc);
        REQUIRE(!held, "cf_wait(when=%u) timed out although its condition held before the call", when);
    }
    if (want_flags || want_nd) {
        size_t cnt = 0;
        bool any_exc = false;
        for (size_t i = 0; i < n; i++) {
            bool di = want_flags ? done[i] : cf_future_done(fs[i]);
            if (want_flags) {
                if (pre[i]) REQUIRE(di, "cf_wait: entry %zu was done before the call, flag false", i);
                if (di) REQUIRE(cf_future_done(fs[i]), "cf_wait: flag %zu true, future not done", i);
            }
            if (di) {
                cnt++;
                if (failed_status(es[i], fs[i])) any_exc = true;
            }
        }
        if (want_flags && want_nd)
            REQUIRE(nd == cnt, "cf_wait: n_done %zu, %zu flags set (n=%zu)", nd, cnt, n);
        if (want_flags && st == CF_OK) {
            if (when == CF_FIRST_COMPLETED) REQUIRE(n == 0 || cnt >= 1, "FIRST_COMPLETED: nothing done");
            if (when == CF_ALL_COMPLETED) REQUIRE(cnt == n, "ALL_COMPLETED: %zu of %zu done", cnt, n);
            if (when == CF_FIRST_EXCEPTION)
                REQUIRE(cnt == n || any_exc, "FIRST_EXCEPTION: %zu of %zu done, none failed", cnt, n);
        }
        if (!want_flags && want_nd && st == CF_OK && when == CF_ALL_COMPLETED)
            REQUIRE(nd == n, "ALL_COMPLETED: n_done %zu of %zu", nd, n);
    }
    if (!want_flags)
        for (size_t i = 0; i < SET_MAX; i++)
            REQUIRE(done[i] == ((i & 1) != 0), "cf_wait wrote flags it was not given");
    for (size_t i = 0; i < n; i++) cf_future_release(fs[i]);
}

static void op_as_completed(rng *r) {
    cf_future *fs[SET_MAX];
    entry *es[SET_MAX];
    size_t n = pick_set(r, fs, es, SET_MAX - 2);
    bool pre[SET_MAX], post[SET_MAX];
    for (size_t i = 0; i < n; i++) pre[i] = cf_future_done(fs[i]);
    double t = pick_timeout(r, g_process ? 80 : 150);
    cf_as_completed *it = (cf_as_completed *)&t;
    cf_status st = cf_as_completed_new(n ? fs : NULL, n, t, &it);
    REQUIRE(st == CF_OK && it != NULL && it != (cf_as_completed *)&t, "cf_as_completed_new gave %s",
            sname(st));
    for (size_t i = 0; i < n; i++) post[i] = cf_future_done(fs[i]);
    /* distinct futures, their first index */
    size_t distinct = 0;
    int first[SET_MAX];
    for (size_t i = 0; i < n; i++) {
        first[i] = (int)i;
        for (size_t j = 0; j < i; j++)
            if (fs[j] == fs[i]) {
                first[i] = first[j];
                break;
            }
        if (first[i] == (int)i) distinct++;
    }
    cf_future *ids[SET_MAX];
    for (size_t i = 0; i < n; i++) ids[i] = fs[i];
    bool released = chance(r, 500);
    if (released)
        for (size_t i = 0; i < n; i++) cf_future_release(fs[i]); /* the iterator holds its own */
    bool yielded[SET_MAX] = {false};
    size_t got = 0;
    bool seen_notpost = false;
    int last_pre = -1;
    size_t stop_after = chance(r, 150) ? rndn(r, (uint32_t)distinct + 1) : SIZE_MAX;
    note_blocked("cf_as_completed_next", ids, es, n, t);
    if (t_index >= 0) {
        g_blocked[t_index].yielded = yielded;
        g_blocked[t_index].pre = pre;
    }
    for (;;) {
        if (got >= stop_after) break;
        cf_future *y = (cf_future *)&got;
        st = cf_as_completed_next(it, &y);
        if (st == CF_END) {
            REQUIRE(got == distinct, "as_completed: CF_END after %zu of %zu", got, distinct);
            st = cf_as_completed_next(it, &y);
            REQUIRE(st == CF_END, "as_completed: %s after CF_END", sname(st));
            break;
        }
        if (st == CF_TIMEOUT) {
            REQUIRE(t >= 0, "as_completed: CF_TIMEOUT with CF_FOREVER");
            STAT(S_AC_TIMEOUT);
            REQUIRE(y == (cf_future *)&got, "as_completed: CF_TIMEOUT wrote *f");
            break;
        }
        REQUIRE(st == CF_OK, "cf_as_completed_next gave %s", sname(st));
        int at = -1;
        for (size_t i = 0; i < n; i++)
            if (ids[i] == y) {
                at = first[i];
                break;
            }
        REQUIRE(at >= 0, "as_completed yielded a future not in its set");
        REQUIRE(!yielded[at], "as_completed yielded a future twice");
        yielded[at] = true;
        got++;
        STAT(S_AC_YIELD);
        REQUIRE(cf_future_done(y), "as_completed yielded a future that is not done");
        if (pre[at]) {
            REQUIRE(!seen_notpost, "as_completed: a future done before the call came after one "
                                   "not done after it");
            REQUIRE(at > last_pre, "as_completed: already-done futures not in array order");
            last_pre = at;
        }
        if (!post[at]) seen_notpost = true;
        read_outcome(es[at], y, "as_completed");
    }
    note_unblocked();
    cf_as_completed_free(it);
    if (!released)
        for (size_t i = 0; i < n; i++) cf_future_release(fs[i]);
}

#define MAP_MAX 48

/* Where the chunk holding item i ends (the index after its last item): chunks of cs
 * items, except that when `alone` (a byte map on a process pool) an input of 64 KiB or
 * more is a task of its own and ends the chunk before it (cf_map_bytes_new). */
static size_t chunk_end(const size_t *lens, size_t n, size_t cs, bool alone, size_t i) {
    size_t start = 0;
    while (start < n) {
        size_t end = start + 1;
        if (!alone || lens[start] < (64u << 10))
            while (end < n && end - start < cs && (!alone || lens[end] < (64u << 10))) end++;
        if (i < end) return end;
        start = end;
    }
    return n;
}

/* The input of a lazy map in op_map: the items of the eager one, pulled one by one. */
typedef struct lazy_feed {
    const uintptr_t *args;
    const size_t *lens;
    size_t n, pulled, calls;
    bool ended;     /* next said "end" */
    uint8_t *lent;  /* the byte input lent by the last call, freed at the next one */
    pthread_t reader;
} lazy_feed;

static void lazy_call(lazy_feed *f) {
    f->calls++;
    REQUIRE(pthread_equal(pthread_self(), f->reader), "lazy map: next called in another thread");
    REQUIRE(!f->ended, "lazy map: next called after it gave the end");
}
static bool lazy_next(void *state, void **item) {
    lazy_feed *f = state;
    lazy_call(f);
    if (f->pulled == f->n) return !(f->ended = true);
    *item = (void *)f->args[f->pulled++];
    return true;
}
static bool lazy_next_bytes(void *state, const void **data, size_t *len) {
    lazy_feed *f = state;
    lazy_call(f);
    free(f->lent);
    f->lent = NULL;
    if (f->pulled == f->n) return !(f->ended = true);
    size_t i = f->pulled++;
    f->lent = malloc(f->lens[i] ? f->lens[i] : 1);
    REQUIRE(f->lent != NULL, "malloc");
    fill_input(f->lent, f->lens[i], f->args[i]);
    *data = f->lent;
    *len = f->lens[i];
    return true;
}

static void op_map(rng *r, bool bytes, bool lazy) {
    pool_ref *p = get_pool();
    if (p == NULL) return;
    size_t n = rndn(r, g_process ? 17 : MAP_MAX + 1);
    uintptr_t args[MAP_MAX];
    size_t lens[MAP_MAX];
    /* On process pools, 3% of byte maps have only large items (1 to 2.5 MiB), each a
     * task of its own whatever the chunksize (inputs of 64 KiB or more go alone, through
     * shared memory), among the other operations. (Chunks of several MiB through the
     * socket, more in flight than it holds, are test_process_big_frames' case.) */
    bool big = bytes && g_process && chance(r, 30);
    for (size_t i = 0; i < n; i++) {
        uint32_t x = rndn(r, 1000);
        unsigned k = K_VALUE;
        if (x < 25) k = K_FAIL;
        else if (x < 60) k = K_SLOW;
        else if (x < 90) k = g_process ? (x < 70 ? K_CRASH : K_VALUE) : K_NESTED;
        else if (bytes && x < 120) k = K_EMPTY;
        args[i] = make_arg(k, false, p->slot, rnd(r) & ((1ull << 40) - 1));
        lens[i] = big ? (1u << 20) + rndn(r, 3u << 19) : byte_len(r, 200);
    }
    size_t chunk = rndn(r, 6);
    size_t cs = chunk ? chunk : 1;
    double t = chance(r, 750) ? CF_FOREVER : (double)rndn(r, 3000) / 1e6;
    cf_map *m = (cf_map *)&n;
    cf_status st;
    size_t bs = 1 + rndn(r, 4);
    lazy_feed feed = {args, lens, n, 0, 0, false, NULL, pthread_self()};
    if (lazy) {
        st = bytes ? cf_map_bytes_lazy_new(p->ex, bytes_task, lazy_next_bytes, &feed, chunk, bs, t, &m)
                   : cf_map_lazy_new(p->ex, ptr_task, lazy_next, &feed, chunk, bs, t, &m);
        /* The first fill: bs tasks' items (and the large input that cut the last one
         * short, pulled already, when large inputs go alone). */
        size_t fill = 0;
        for (size_t k = 0; k < bs && fill < n; k++) fill = chunk_end(lens, n, cs, bytes && g_process, fill);
        REQUIRE(st != CF_OK || (feed.pulled >= fill && feed.pulled <= fill + (bytes && g_process)),
                "lazy map: the first fill pulled %zu of %zu items (chunksize %zu, buffersize %zu)",
                feed.pulled, n, cs, bs);
    } else if (bytes) {
        cf_bytes in[MAP_MAX];
        uint8_t *bufs[MAP_MAX];
        for (size_t i = 0; i < n; i++) {
            bufs[i] = malloc(lens[i]);
            REQUIRE(bufs[i] != NULL, "malloc");
            fill_input(bufs[i], lens[i], args[i]);
            in[i] = (cf_bytes){bufs[i], lens[i]};
        }
        st = cf_map_bytes_new(p->ex, bytes_task, n ? in : NULL, n, chunk, t, &m);
        for (size_t i = 0; i < n; i++) free(bufs[i]);
    } else {
        st = cf_map_new(p->ex, ptr_task, n ? (void *const *)args : NULL, n, chunk, t, &m);
    }
    if (st != CF_OK) {
        REQUIRE(st == CF_SHUTDOWN && atomic_load(&p->shut), "cf_map%s%s_new gave %s", bytes ? "_bytes" : "",
                lazy ? "_lazy" : "", sname(st));
        REQUIRE(m == (cf_map *)&n, "a failed cf_map_new wrote its out-parameter");
        free(feed.lent);
        put_pool(p);
        return;
    }
    size_t stop_after = chance(r, 120) ? rndn(r, (uint32_t)n + 1) : SIZE_MAX;
    size_t i = 0;
    for (;; i++) {
        if (i >= stop_after) break;
        int code = -7;
        const char *msg = (const char *)&code;
        void *v = (void *)&v;
        cf_bytes b = {(const void *)&b, 999};
        st = bytes ? cf_map_next_bytes(m, &b, &code, &msg) : cf_map_next(m, &v, &code, &msg);
        if (lazy && st != CF_TIMEOUT)
            REQUIRE(feed.pulled <= i + 1 + cs * bs, "lazy map: %zu items pulled at item %zu (chunksize %zu, "
                    "buffersize %zu)", feed.pulled, i, cs, bs);
        if (i == n) {
            REQUIRE(st == CF_END, "map: %s after the last item", sname(st));
            break;
        }
        if (st == CF_TIMEOUT) {
            REQUIRE(t >= 0, "map: CF_TIMEOUT with CF_FOREVER");
            STAT(S_MAP_TIMEOUT);
            break;
        }
        unsigned k = arg_kind(args[i]);
        bool ok_kind = k == K_VALUE || k == K_SLOW || k == K_NESTED || k == K_EMPTY;
        if (st == CF_OK) {
            REQUIRE(ok_kind, "map item %zu (kind %u) gave CF_OK", i, k);
            REQUIRE(code == 0 && msg == NULL, "map item %zu: CF_OK with code %d", i, code);
            if (bytes)
                check_bytes_out(args[i], lens[i], b, "map_bytes");
            else
                REQUIRE((uintptr_t)v == task_value(args[i]), "map item %zu: value %p, expected %" PRIxPTR,
                        i, v, task_value(args[i]));
            STAT(S_MAP_ITEMS);
            continue;
        }
        REQUIRE(st != CF_END, "map: CF_END after %zu of %zu items", i, n);
        if (lazy && st == CF_SHUTDOWN) {
            /* A refill refused: item i was not submitted, and every item before it was. */
            REQUIRE(atomic_load(&p->shut), "lazy map item %zu: CF_SHUTDOWN, the pool is not shut down", i);
            REQUIRE(code == 0 && msg != NULL && strstr(msg, "lazy map") != NULL,
                    "lazy map item %zu: CF_SHUTDOWN with code %d", i, code);
        } else if (st == CF_TASK_FAILED) {
            REQUIRE(code != TASK_SELF_CHECK_CODE, "map: a task's self-check failed: %s",
                    msg != NULL ? msg : "(null)");
            REQUIRE(k == K_FAIL, "map item %zu (kind %u) failed with code %d (%s)", i, k, code,
                    msg != NULL && msg != (const char *)&code ? msg : "(null)");
            char want[96];
            fail_msg(args[i], want, sizeof want);
            REQUIRE(code == fail_code(args[i]) && msg != NULL && strcmp(msg, want) == 0,
                    "map item %zu: error %d \"%s\"", i, code, msg ? msg : "(null)");
        } else if (st == CF_BROKEN) {
            bool crash_in_chunk = false;
            size_t end = chunk_end(lens, n, cs, bytes && g_process, i);
            for (size_t j = i; j < end; j++)
                if (arg_kind(args[j]) == K_CRASH) crash_in_chunk = true;
            REQUIRE(crash_in_chunk, "map item %zu (kind %u, chunk %zu) is CF_BROKEN: %s", i, k, cs,
                    msg != NULL && msg != (const char *)&code ? msg : "(null)");
        } else if (st == CF_CANCELLED) {
            if (!atomic_load(&g_cancel_shut[p->slot])) {
                char kinds[MAP_MAX + 1];
                for (size_t j = 0; j < n; j++) kinds[j] = (char)('0' + arg_kind(args[j]));
                kinds[n] = 0;
                fail("map%s item %zu of %zu cancelled, nobody cancelled it (chunksize %zu, timeout %g, "
                     "item kinds %s; 1 value 2 fail 3 slow 4 nested 5 crash 6 empty)",
                     bytes ? "_bytes" : "", i, n, chunk, t, kinds);
            }
        } else {
            fail("map item %zu: cf_map_next gave %s", i, sname(st));
        }
        /* the map stops at the first failure */
        STAT(S_MAP_FAILED);
        size_t calls = feed.calls;
        st = bytes ? cf_map_next_bytes(m, &b, &code, &msg) : cf_map_next(m, &v, &code, &msg);
        REQUIRE(st == CF_END, "map: %s after a failed item", sname(st));
        REQUIRE(feed.calls == calls, "lazy map: next called after a failed item");
        break;
    }
    size_t calls = feed.calls;
    cf_map_free(m);
    REQUIRE(feed.calls == calls, "lazy map: cf_map_free called next");
    free(feed.lent);
    put_pool(p);
}

static void op_submit(rng *r, uint32_t type) {
    pool_ref *p = get_pool();
    if (p == NULL) return;
    submit_entry(p, r, type, 0, chance(r, 750));
    put_pool(p);
}

static void op_workers(void) {
    pool_ref *p = get_pool();
    if (p == NULL) return;
    size_t n = cf_executor_worker_count(p->ex);
    REQUIRE(n <= p->max_workers, "worker_count %zu > max_workers %zu", n, p->max_workers);
    put_pool(p);
}

/* Pools made up front, before any thread runs (--prefork N; the default under ASan for
 * process pools, see main). Rotations then take the next one instead of making one. */
static pool_ref **g_prefork;
static int g_n_prefork, g_prefork_next, g_prefork_arg = -1;

static void op_rotate(rng *r) {
    if (pthread_mutex_trylock(&g_rot_mu) != 0) return;
    pool_ref *np;
    if (g_prefork != NULL) {
        if (g_prefork_next == g_n_prefork) { /* none left: no more rotations */
            pthread_mutex_unlock(&g_rot_mu);
            return;
        }
        np = g_prefork[g_prefork_next++];
    } else {
        np = make_pool(r);
    }
    pthread_mutex_lock(&g_cur_mu);
    pool_ref *old = g_cur;
    g_cur = np;
    pthread_mutex_unlock(&g_cur_mu);
    bool wait = chance(r, 500), cancel = chance(r, 500);
    if (g_verbose || getenv("STRESS_DEBUG"))
        fprintf(stderr, "stress: rotate pool %u -> %u (wait=%d cancel=%d)\n", old->slot, np->slot, wait,
                cancel);
    shut_down(old, wait, cancel, r);
    retire(old);
    atomic_fetch_add(&g_rotations, 1);
    pthread_mutex_unlock(&g_rot_mu);
    reap_retired(false);
}

/* --skip a,b,c: op kinds left out (to hunt for a second bug while a first one is open). */
static bool skipped(const char *name) {
    if (g_skip == NULL) return false;
    size_t n = strlen(name);
    for (const char *p = g_skip; (p = strstr(p, name)) != NULL; p += n)
        if ((p == g_skip || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return true;
    return false;
}

#define OP(name, ...)                                                                       \
    do {                                                                                    \
        t_opname = name;                                                                    \
        if (!skipped(name)) { __VA_ARGS__; }                                                \
    } while (0)

static void op_complete_promise(rng *r) {
    entry *e;
    cf_future *f = pick_live(r, &e);
    if (f == NULL) return;
    if (e->type == T_PROMISE) complete_promise(e, f, r);
    cf_future_release(f);
}

/* A burst of submits, so that queues fill up and cancels find pending tasks. */
static void op_burst(rng *r) {
    pool_ref *p = get_pool();
    if (p == NULL) return;
    uint32_t k = 2 + rndn(r, 15);
    for (uint32_t i = 0; i < k; i++) submit_entry(p, r, chance(r, 800) ? T_PTR : T_BYTES, 0, true);
    put_pool(p);
}

/* ---- tasks that own their data, deadlines (op "owned") ----------------------------------
 * Owned tasks with random deadlines (none, 0, a few ms, 10 s), cancelled, waited for or
 * released at random; owned promise results and owned done callbacks. Counted apart from
 * the entries: at the end, after every pool is shut down with wait and every future
 * released, each free function ran exactly as often as the contract says. */
static atomic_long g_owned_accepted, g_owned_arg_frees, g_owned_result_frees;
static atomic_long g_owned_values, g_owned_value_frees, g_owned_uds, g_owned_ud_frees;

static void owned_arg_free(void *p) {
    if ((uintptr_t)p != 0x0a) fail("owned arg_free got %p", p);
    atomic_fetch_add(&g_owned_arg_frees, 1);
}
static void owned_result_free(void *p) {
    if ((uintptr_t)p != 0x0b) fail("owned result_free got %p", p);
    atomic_fetch_add(&g_owned_result_frees, 1);
}
static void owned_value_free(void *p) {
    free(p);
    atomic_fetch_add(&g_owned_value_frees, 1);
}
static void owned_ud_free(void *p) {
    free(p);
    atomic_fetch_add(&g_owned_ud_frees, 1);
}
static void owned_cb(cf_future *f, void *ud) {
    (void)f;
    if (ud == NULL) fail("owned callback without its userdata");
}
static void *owned_task_fn(void *arg) {
    if ((uintptr_t)arg != 0x0a) return cf_raise(TASK_SELF_CHECK_CODE, "owned task: wrong arg");
    long us = (long)(mix64((uint64_t)(uintptr_t)&arg ^ (uint64_t)now_s()) % 300);
    if (us > 200) sleep_us(us);
    atomic_fetch_add(&g_shm->owned_ran, 1);
    return (void *)(uintptr_t)0x0b;
}

static void op_owned(rng *r) {
    if (chance(r, 200)) {
        cf_future *p = NULL;
        if (cf_future_new(&p) != CF_OK) return;
        int n = (int)rndn(r, 3);
        for (int i = 0; i < n; i++) {
            void *ud = malloc(8);
            if (ud == NULL) continue;
            if (cf_future_add_done_callback_owned(p, owned_cb, ud, owned_ud_free) == CF_OK)
                atomic_fetch_add(&g_owned_uds, 1);
            else
                free(ud);
        }
        if (chance(r, 700)) {
            void *v = malloc(8);
            if (v != NULL) {
                atomic_fetch_add(&g_owned_values, 1);
                cf_status st = cf_future_set_result_owned(p, v, owned_value_free);
                if (st != CF_OK) fail("set_result_owned on a new promise: %s", sname(st));
            }
        }
        cf_future_release(p);
        return;
    }
    pool_ref *pr = get_pool();
    if (pr == NULL) return;
    uint32_t k = 1 + rndn(r, 4);
    for (uint32_t i = 0; i < k; i++) {
        cf_task t = CF_TASK_INIT;
        t.fn = owned_task_fn;
        t.arg = (void *)(uintptr_t)0x0a;
        t.arg_free = owned_arg_free;
        t.result_free = owned_result_free;
        uint32_t d = rndn(r, 4);
        t.timeout = d == 0 ? CF_FOREVER : d == 1 ? 0.0 : d == 2 ? 0.001 * (1 + rndn(r, 20)) : 10.0;
        cf_future *f = NULL;
        cf_status st = cf_submit_task(pr->ex, &t, &f);
        if (st != CF_OK) {
            if (st != CF_SHUTDOWN && st != CF_BROKEN && st != CF_OS_ERROR)
                fail("cf_submit_task: %s", sname(st));
            continue;
        }
        atomic_fetch_add(&g_owned_accepted, 1);
        uint32_t what = rndn(r, 3);
        if (what == 0) {
            cf_future_cancel(f);
        } else if (what == 1) {
            void *v = NULL;
            cf_status rs = cf_future_result(f, 0.002, &v);
            if (rs == CF_OK && (uintptr_t)v != 0x0b) fail("owned task result %p", v);
            if (rs == CF_TASK_FAILED) fail("owned task failed");
            if (d == 1 && rs != CF_DEADLINE) fail("owned task with timeout 0: %s", sname(rs));
        }
        cf_future_release(f);
    }
    put_pool(pr);
}

static void check_owned_counts(void) {
    long acc = atomic_load(&g_owned_accepted), af = atomic_load(&g_owned_arg_frees);
    long rf = atomic_load(&g_owned_result_frees), ran = atomic_load(&g_shm->owned_ran);
    REQUIRE(af == acc, "owned tasks: %ld accepted, arg_free called %ld times", acc, af);
    /* thread pools: a task that returned has its result freed (by the future, or
     * discarded past its deadline); process pools: unless its worker died before its
     * answer reached the parent */
    if (g_process)
        REQUIRE(rf <= ran, "owned tasks: %ld returned, result_free called %ld times", ran, rf);
    else
        REQUIRE(rf == ran, "owned tasks: %ld returned, result_free called %ld times", ran, rf);
    REQUIRE(atomic_load(&g_owned_value_frees) == atomic_load(&g_owned_values),
            "owned promise values: %ld set, %ld freed", atomic_load(&g_owned_values),
            atomic_load(&g_owned_value_frees));
    REQUIRE(atomic_load(&g_owned_ud_frees) == atomic_load(&g_owned_uds),
            "owned callbacks: %ld added, %ld userdata freed", atomic_load(&g_owned_uds),
            atomic_load(&g_owned_ud_frees));
}

#include "then_ops.h"

/* ---- stopping a private process pool's workers (op "stop_workers", process seeds) --------
 * A small pool of the op's own (1-3 workers, sometimes max_tasks_per_child 1 or 2) gets a
 * random mix: plain tasks, owned tasks (arg_free/result_free counted per task), owned
 * tasks with deadlines of 1-20 ms, endless loops under deadlines of 2-15 ms, tasks that
 * run 0-6 ms; then, after 0-5 ms, cf_executor_terminate_workers or cf_executor_kill_workers
 * (sometimes after cf_executor_shutdown without wait, sometimes a second call of either).
 * The oracle, right after the call: every future done, the worker count 0; a CF_OK task
 * ran to its end once and is not an endless one; CF_CANCELLED never started; CF_BROKEN
 * names the signal of the first call; CF_DEADLINE only with a deadline (ETIMEDOUT); a
 * task that started and did not end (killed) is CF_BROKEN or CF_DEADLINE; no worker that
 * ran a task is left (not even a zombie of the fork server); a later submit is
 * CF_SHUTDOWN (and its arg_free not called). After cf_executor_free: arg_free once per
 * owned task, result_free once per CF_OK owned task (at most once for one whose deadline
 * passed as its result came back), and the fork server gone. Under ASan these pools are
 * made before the op threads start (see main), and the op does nothing once they are
 * used up. */
#define SW_MAX 24
#define SW_PER_10000 40 /* op frequency in process runs */
enum sw_kind { SW_PLAIN, SW_OWNED, SW_DEADLINE, SW_ENDLESS };

typedef struct sw_shm {
    atomic_int ran[SW_MAX], fin[SW_MAX], pid[SW_MAX];
    atomic_int spin_us[SW_MAX]; /* -1: endless (30 s at most) */
    atomic_int server;          /* the workers' parent: the pool's fork server */
    atomic_int arg_frees[SW_MAX], result_frees[SW_MAX], bad_frees; /* counted in this process */
} sw_shm;

typedef struct sw_pool {
    cf_executor *ex;
    sw_shm *sh;
    size_t max_workers;
} sw_pool;

static sw_pool *g_sw_pre; /* made up front under ASan */
static int g_sw_n_pre;
static atomic_int g_sw_next_pre, g_sw_ops;

/* A task's argument: its shared block (page-aligned) plus its index. */
static sw_shm *sw_of(void *a) { return (sw_shm *)((uintptr_t)a & ~(uintptr_t)4095); }
static int sw_idx(void *a) { return (int)((uintptr_t)a & 4095); }

static void sw_init(void *arg) { atomic_store(&((sw_shm *)arg)->server, (int)getppid()); }

static void *sw_task(void *arg) {
    sw_shm *sh = sw_of(arg);
    int i = sw_idx(arg);
    atomic_store(&sh->pid[i], (int)getpid());
    atomic_fetch_add(&sh->ran[i], 1);
    int us = atomic_load(&sh->spin_us[i]);
    double end = now_s() + (us < 0 ? 30.0 : us * 1e-6);
    while (now_s() < end) {
    }
    atomic_store(&sh->fin[i], 1);
    return arg;
}

static void sw_arg_free(void *p) {
    sw_shm *sh = sw_of(p);
    if (sw_idx(p) < SW_MAX)
        atomic_fetch_add(&sh->arg_frees[sw_idx(p)], 1);
    else
        atomic_fetch_add(&sh->bad_frees, 1);
}
static void sw_result_free(void *p) {
    sw_shm *sh = sw_of(p);
    if (sw_idx(p) < SW_MAX)
        atomic_fetch_add(&sh->result_frees[sw_idx(p)], 1);
    else
        atomic_fetch_add(&sh->bad_frees, 1);
}

static bool sw_make(rng *r, sw_pool *out) {
    sw_shm *sh = mmap(NULL, sizeof(sw_shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(sh != MAP_FAILED, "stop_workers: mmap");
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1 + rndn(r, 3);
    o.max_tasks_per_child = chance(r, 250) ? 1 + rndn(r, 2) : 0;
    o.initializer = sw_init;
    o.initarg = sh;
    cf_status st = cf_process_pool_new(&o, &out->ex);
    if (st != CF_OK) {
        REQUIRE(st == CF_OS_ERROR || st == CF_NO_MEMORY, "stop_workers: cf_process_pool_new: %s", sname(st));
        munmap(sh, sizeof(sw_shm));
        return false;
    }
    out->sh = sh;
    out->max_workers = o.max_workers;
    return true;
}

/* Is `pid` (still) a child of `parent`, zombie or not? */
static bool sw_child_of(int pid, int parent) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    char st;
    long pp;
    return p != NULL && sscanf(p + 1, " %c %ld", &st, &pp) == 2 && pp == parent;
}

static void op_stop_workers(rng *r) {
    sw_pool p;
    if (g_sw_pre != NULL) {
        int k = atomic_fetch_add(&g_sw_next_pre, 1);
        if (k >= g_sw_n_pre) return;
        p = g_sw_pre[k];
    } else if (!sw_make(r, &p)) {
        return;
    }
    atomic_fetch_add(&g_sw_ops, 1);
    sw_shm *sh = p.sh;
    int n = 3 + (int)rndn(r, SW_MAX - 3);
    cf_future *fs[SW_MAX];
    int kinds[SW_MAX];
    for (int i = 0; i < n; i++) {
        int kind = (int)rndn(r, 4);
        kinds[i] = kind;
        atomic_store(&sh->spin_us[i], kind == SW_ENDLESS ? -1 : chance(r, 500) ? 0 : (int)rndn(r, 6000));
        void *arg = (void *)((uintptr_t)sh + (uintptr_t)i);
        cf_status st;
        if (kind == SW_PLAIN) {
            st = cf_submit(p.ex, sw_task, arg, &fs[i]);
        } else {
            cf_task t = CF_TASK_INIT;
            t.fn = sw_task;
            t.arg = arg;
            t.arg_free = sw_arg_free;
            t.result_free = sw_result_free;
            if (kind == SW_DEADLINE) t.timeout = 0.001 * (1 + rndn(r, 20));
            if (kind == SW_ENDLESS) t.timeout = 0.001 * (2 + rndn(r, 14));
            st = cf_submit_task(p.ex, &t, &fs[i]);
        }
        REQUIRE(st == CF_OK, "stop_workers: submit %d to a fresh pool: %s", i, sname(st));
    }
    sleep_us((long)rndn(r, 5000));
    if (chance(r, 300)) REQUIRE(cf_executor_shutdown(p.ex, false, chance(r, 500)) == CF_OK, "stop_workers: shutdown");
    bool term = chance(r, 500);
    const char *sig = term ? "SIGTERM" : "SIGKILL";
    cf_status st = term ? cf_executor_terminate_workers(p.ex) : cf_executor_kill_workers(p.ex);
    REQUIRE(st == CF_OK, "stop_workers: %s: %s", term ? "terminate_workers" : "kill_workers", sname(st));
    if (chance(r, 250)) {
        st = chance(r, 500) ? cf_executor_terminate_workers(p.ex) : cf_executor_kill_workers(p.ex);
        REQUIRE(st == CF_OK, "stop_workers: a second call: %s", sname(st));
    }
    size_t wc = cf_executor_worker_count(p.ex);
    REQUIRE(wc == 0, "stop_workers: %zu workers after the call returned", wc);
    cf_status outcome[SW_MAX];
    bool late[SW_MAX];
    int server = atomic_load(&sh->server), held = 0;
    for (int i = 0; i < n; i++) {
        REQUIRE(cf_future_done(fs[i]), "stop_workers: task %d (kind %d) not done after the call returned", i,
                kinds[i]);
        int code = 0;
        const char *msg = NULL;
        cf_status s = cf_future_exception(fs[i], 0, &code, &msg);
        int ran = atomic_load(&sh->ran[i]), fin = atomic_load(&sh->fin[i]);
        outcome[i] = s;
        late[i] = false;
        REQUIRE(ran <= 1, "stop_workers: task %d ran %d times", i, ran);
        switch (s) {
        case CF_OK: {
            void *v = NULL;
            REQUIRE(cf_future_result(fs[i], 0, &v) == CF_OK, "stop_workers: result");
            REQUIRE(ran == 1 && fin == 1 && kinds[i] != SW_ENDLESS && v == (void *)((uintptr_t)sh + (uintptr_t)i),
                    "stop_workers: task %d (kind %d) CF_OK with %p, ran %d, ended %d", i, kinds[i], v, ran, fin);
            break;
        }
        case CF_CANCELLED:
            REQUIRE(ran == 0, "stop_workers: task %d cancelled, but it ran", i);
            break;
        case CF_BROKEN:
            REQUIRE(msg != NULL && strstr(msg, sig) != NULL,
                    "stop_workers: task %d (kind %d, ran %d): CF_BROKEN does not name %s: %s", i, kinds[i], ran, sig,
                    msg ? msg : "(null)");
            break;
        case CF_DEADLINE:
            REQUIRE((kinds[i] == SW_DEADLINE || kinds[i] == SW_ENDLESS) && code == ETIMEDOUT,
                    "stop_workers: task %d (kind %d) CF_DEADLINE, code %d: %s", i, kinds[i], code, msg ? msg : "-");
            late[i] = fin == 1;
            break;
        default:
            fail("stop_workers: task %d (kind %d) ended %s (%s)", i, kinds[i], sname(s), msg ? msg : "-");
        }
        if (ran == 1 && fin == 0)
            REQUIRE(s == CF_BROKEN || s == CF_DEADLINE, "stop_workers: task %d was killed running, and is %s", i,
                    sname(s));
        held += s == CF_BROKEN && ran == 0;
        int pid = atomic_load(&sh->pid[i]);
        if (pid != 0 && server != 0)
            REQUIRE(!sw_child_of(pid, server), "stop_workers: worker %d (task %d) is still a child of the fork "
                                               "server %d after the call returned", pid, i, server);
    }
    /* CF_BROKEN without having started: held by a proxy (sent ahead, or about to be),
     * at most 8 per worker (src/rt/process/proxy.rs, PIPELINE); the queue was cancelled */
    REQUIRE(held <= 8 * (int)p.max_workers,
            "stop_workers: %d tasks CF_BROKEN without having started, on %zu workers: queued tasks were not "
            "cancelled", held, p.max_workers);
    cf_future *late_f = NULL;
    st = cf_submit(p.ex, sw_task, sh, &late_f);
    REQUIRE(st == CF_SHUTDOWN && late_f == NULL, "stop_workers: a submit after it: %s", sname(st));
    cf_task t = CF_TASK_INIT;
    t.fn = sw_task;
    t.arg = (void *)((uintptr_t)sh + SW_MAX - 1);
    t.arg_free = sw_arg_free;
    st = cf_submit_task(p.ex, &t, &late_f);
    REQUIRE(st == CF_SHUTDOWN && late_f == NULL, "stop_workers: a cf_submit_task after it: %s", sname(st));
    for (int i = 0; i < n; i++) cf_future_release(fs[i]);
    cf_executor_free(p.ex);
    for (int i = 0; i < SW_MAX; i++) {
        int af = atomic_load(&sh->arg_frees[i]), rf = atomic_load(&sh->result_frees[i]);
        bool owned = i < n && kinds[i] != SW_PLAIN;
        REQUIRE(af == (owned ? 1 : 0), "stop_workers: task %d (kind %d): arg_free ran %d times", i,
                i < n ? kinds[i] : -1, af);
        int want = owned && outcome[i] == CF_OK ? 1 : 0;
        REQUIRE(rf == want || (owned && late[i] && rf <= 1),
                "stop_workers: task %d (kind %d, %s): result_free ran %d times", i, i < n ? kinds[i] : -1,
                i < n ? sname(outcome[i]) : "-", rf);
    }
    REQUIRE(atomic_load(&sh->bad_frees) == 0, "stop_workers: a free function got a pointer no task had");
    if (server != 0)
        REQUIRE(!sw_child_of(server, (int)getpid()), "stop_workers: the fork server %d is left after "
                                                     "cf_executor_free", server);
    if (g_verbose || getenv("STRESS_DEBUG")) {
        int c[5] = {0, 0, 0, 0, 0}; /* ok, cancelled, broken, deadline, killed running */
        for (int i = 0; i < n; i++) {
            c[0] += outcome[i] == CF_OK;
            c[1] += outcome[i] == CF_CANCELLED;
            c[2] += outcome[i] == CF_BROKEN;
            c[3] += outcome[i] == CF_DEADLINE;
            c[4] += atomic_load(&sh->ran[i]) == 1 && atomic_load(&sh->fin[i]) == 0;
        }
        fprintf(stderr, "stress: stop_workers: %d tasks, %s: %d ok, %d cancelled, %d broken, %d deadline, %d killed running\n",
                n, sig, c[0], c[1], c[2], c[3], c[4]);
    }
    munmap(sh, sizeof(sw_shm));
}

/* Under ASan: the op's pools, made while no other thread runs (see main). */
static void sw_prefork(rng *r) {
#if defined(STRESS_UNDER_ASAN)
    if (!g_process || skipped("stop_workers")) return;
    int k = (int)(g_ops * SW_PER_10000 / 10000) + 2;
    if (k > 16) k = 16;
    g_sw_pre = calloc((size_t)k, sizeof *g_sw_pre);
    REQUIRE(g_sw_pre != NULL, "calloc");
    for (int i = 0; i < k; i++)
        if (sw_make(r, &g_sw_pre[g_sw_n_pre])) g_sw_n_pre++;
#else
    (void)r;
#endif
}

/* The pools made up front and not used. */
static void sw_cleanup(void) {
    for (int k = atomic_load(&g_sw_next_pre); k < g_sw_n_pre; k++) {
        cf_executor_free(g_sw_pre[k].ex);
        munmap(g_sw_pre[k].sh, sizeof(sw_shm));
    }
    free(g_sw_pre);
}

static void do_op(rng *r) {
    uint32_t x = rndn(r, 10000);
    uint32_t rot = g_process ? 60 : 5; /* per 10000 */
    if (x < rot) {
        OP("rotate", op_rotate(r));
        return;
    }
    if (g_process && x < rot + SW_PER_10000) {
        OP("stop_workers", op_stop_workers(r));
        return;
    }
    if (x < rot + SW_PER_10000 + 400) { /* 4%: continuations and combinators (then_ops.h) */
        if (x < rot + SW_PER_10000 + 200) OP("then", op_then(r));
        else OP("when", op_when(r));
        return;
    }
    x = rndn(r, 1000);
    if (x < 200) OP("submit", op_submit(r, T_PTR));
    else if (x < 270) OP("submit_bytes", op_submit(r, T_BYTES));
    else if (x < 330) OP("promise", new_promise(r));
    else if (x < 370) OP("complete_promise", op_complete_promise(r));
    else if (x < 440) OP("cancel", op_cancel(r));
    else if (x < 530) OP("result", op_result(r, false));
    else if (x < 560) OP("exception", op_result(r, true));
    else if (x < 600) OP("state", op_state(r));
    else if (x < 670) OP("callback", op_callback(r));
    else if (x < 700) OP("retain", op_retain(r));
    else if (x < 780) OP("wait", op_wait(r));
    else if (x < 850) OP("as_completed", op_as_completed(r));
    else if (x < 880) OP("map", op_map(r, false, false));
    else if (x < 900) OP("map_lazy", op_map(r, false, true));
    else if (x < 920) OP("map_bytes", op_map(r, true, false));
    else if (x < 930) OP("map_bytes_lazy", op_map(r, true, true));
    else if (x < 940) OP("workers", op_workers());
    else if (x < 970) OP("owned", op_owned(r));
    else OP("burst", op_burst(r));
}

static void *op_thread(void *arg) {
    rng r = {g_seed * 1000003ull + (uint64_t)(uintptr_t)arg};
    t_index = (int)(uintptr_t)arg;
    for (;;) {
        long op = atomic_fetch_add(&g_op, 1);
        if (op >= g_ops) break;
        t_op = op;
        do_op(&r);
    }
    t_op = -1;
    return NULL;
}

/* ---- stall watchdog -------------------------------------------------------------------- */

static atomic_int g_phase; /* 0 ops, 1 final */
static atomic_long g_progress;
static atomic_bool g_finished;

static const char *state_name(cf_state s) {
    static const char *const n[] = {"PENDING", "RUNNING", "CANCELLED", "FINISHED"};
    return s < 4 ? n[s] : "?";
}

/* On a hang: what each op thread waits on, and the state of those futures. */
static void print_blocked(void) {
    for (int t = 0; t < g_threads; t++) {
        blocked_on *b = &g_blocked[t];
        const char *what = atomic_load(&b->what);
        if (what == NULL) continue;
        fprintf(stderr, "stress: op thread %d is in %s (timeout %g) on %zu future(s):\n", t, what,
                b->timeout, b->n);
        for (size_t i = 0; i < b->n && i < SET_MAX; i++) {
            entry *e = b->es[i];
            cf_state st = cf_future_state(b->fs[i]);
            fprintf(stderr,
                    "    [%zu] future %p entry %zu type %u kind %u pool %u: state %s, done %d, "
                    "creation callback calls %d, cancel attempted %d, promise sets won %d, "
                    "running marks %d, task ran %d%s%s\n",
                    i, (void *)b->fs[i], entry_idx(e), e->type, e->kind, e->slot, state_name(st),
                    (int)cf_future_done(b->fs[i]), atomic_load(&e->count_calls),
                    atomic_load(&e->cancel_attempted), atomic_load(&e->set_wins),
                    atomic_load(&e->set_running_ok),
                    e->type == T_PROMISE ? -1 : atomic_load(&g_shm->ran[entry_idx(e)]),
                    b->yielded == NULL ? "" : b->yielded[i] ? ", yielded" : ", not yielded",
                    b->pre == NULL ? "" : b->pre[i] ? ", done before" : ", pending before");
        }
    }
}

/* On a hang: every thread's stack, when gdb is there (STRESS_NO_GDB=1 turns this off). */
static void dump_threads(void) {
    const char *off = getenv("STRESS_NO_GDB");
    if (off != NULL && off[0] != '\0' && strcmp(off, "0") != 0) return;
    if (access("/usr/bin/gdb", X_OK) != 0) return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "timeout 60 /usr/bin/gdb -p %ld -batch -ex 'thread apply all bt 30' 2>/dev/null "
             "| grep -v -e '^\\[New LWP' -e '^$' 1>&2",
             (long)getpid());
    fprintf(stderr, "stress: thread stacks of the hung process:\n");
    int rc = system(cmd);
    (void)rc;
    if (!g_process) return;
    /* and of the fork servers and worker processes (children and grandchildren) */
    snprintf(cmd, sizeof cmd,
             "for s in $(cat /proc/%ld/task/*/children 2>/dev/null); do "
             "for p in $s $(cat /proc/$s/task/*/children 2>/dev/null); do "
             "echo \"stress: stack of process $p ($(cat /proc/$p/comm 2>/dev/null)), child of "
             "$(awk '{print $4}' /proc/$p/stat 2>/dev/null):\"; "
             "timeout 20 /usr/bin/gdb -p $p -batch -ex 'bt 25' 2>/dev/null | grep '^#'; "
             "done; done 1>&2",
             (long)getpid());
    rc = system(cmd);
    (void)rc;
}

static void *watchdog_main(void *arg) {
    (void)arg;
    long last = -1;
    double since = now_s();
    while (!atomic_load(&g_finished)) {
        sleep_us(100000);
        long p = atomic_load(&g_op) + atomic_load(&g_progress);
        if (p != last) {
            last = p;
            since = now_s();
            continue;
        }
        if (now_s() - since > g_stall) {
            fprintf(stderr,
                    "stress: FAILED seed=%" PRIu64 " op=%ld (hang: no progress for %.0fs in the %s "
                    "phase; live futures %zu, promises queued %zu)\n",
                    g_seed, atomic_load(&g_op), g_stall, atomic_load(&g_phase) ? "final" : "ops",
                    g_live_n, g_pq_n);
            print_repro();
            print_blocked();
            dump_threads();
            fflush(stderr);
            _exit(2);
        }
    }
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: %s [--seed N] [--ops N] [--threads N] [--process] [--stall S] [--verbose]\n"
            "          [--prefork N: make N pools before the threads start; rotations use them]\n"
            "          [--skip op,op,...]   (ops: rotate submit submit_bytes promise complete_promise\n"
            "           cancel result exception state callback retain wait as_completed map\n"
            "           map_bytes map_lazy map_bytes_lazy workers burst owned stop_workers then\n"
            "           when)\n",
            g_argv0);
    exit(2);
}

int main(int argc, char **argv) {
    g_argv0 = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--seed") == 0 && i + 1 < argc) g_seed = strtoull(argv[++i], NULL, 0);
        else if (strcmp(a, "--ops") == 0 && i + 1 < argc) g_ops = strtol(argv[++i], NULL, 0);
        else if (strcmp(a, "--threads") == 0 && i + 1 < argc) g_threads = atoi(argv[++i]);
        else if (strcmp(a, "--stall") == 0 && i + 1 < argc) g_stall = atof(argv[++i]);
        else if (strcmp(a, "--process") == 0) g_process = true;
        else if (strcmp(a, "--verbose") == 0) g_verbose = true;
        else if (strcmp(a, "--skip") == 0 && i + 1 < argc) g_skip = argv[++i];
        else if (strcmp(a, "--prefork") == 0 && i + 1 < argc) g_prefork_arg = atoi(argv[++i]);
        else usage();
    }
    if (g_ops < 0 || g_threads < 1 || g_threads > 64) usage();
    const char *scale = getenv("CF_TEST_TIME_SCALE");
    if (scale != NULL && atof(scale) > 1.0) g_stall *= atof(scale);
    {
        cpu_set_t set;
        CPU_ZERO(&set);
        g_cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        if (g_cpus < 1) g_cpus = 1;
    }
    /* no core files from the workers that kill themselves */
    struct rlimit rl = {0, 0};
    if (getrlimit(RLIMIT_CORE, &rl) == 0) {
        rl.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &rl);
    }
    double t0 = now_s();

    g_cap = (size_t)g_ops + (size_t)g_ops / 2 + 1024;
    g_entries = calloc(g_cap, sizeof *g_entries);
    g_xcap = (size_t)g_ops / 2 + 1024;
    g_xcbs = calloc(g_xcap, sizeof *g_xcbs);
    g_then_cap = (size_t)g_ops / 4 + 1024;
    g_thens = calloc(g_then_cap, sizeof *g_thens);
    g_live_cap = g_process ? 256 : 1024;
    g_live = calloc(g_live_cap, sizeof *g_live);
    if (g_entries == NULL || g_xcbs == NULL || g_live == NULL || g_thens == NULL) {
        fprintf(stderr, "stress: out of memory\n");
        return 2;
    }
    for (int i = 0; i < STRIPES; i++) pthread_mutex_init(&g_stripe[i], NULL);
    g_shm_size = sizeof(shm_t) + g_cap * sizeof(atomic_int);
    g_shm = mmap(NULL, g_shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_shm == MAP_FAILED) {
        perror("stress: mmap");
        return 2;
    }
    if (!g_process) REQUIRE(cf_future_new(&g_gate) == CF_OK, "cf_future_new");

    rng r0 = {g_seed};
    g_cur = make_pool(&r0);
    /* Under AddressSanitizer, process pools are all made here, while this is the only
     * thread: GCC's libasan allocator is not fork-safe (it has no atfork handling, unlike
     * glibc's malloc), so forking a fork server while another thread (ours or a proxy
     * thread of another pool) is inside malloc leaves the allocator lock taken in the
     * server, and every worker forked from it deadlocks in its first malloc. */
    int prefork = g_prefork_arg;
#if defined(STRESS_UNDER_ASAN)
    if (prefork < 0 && g_process) prefork = (int)(g_ops * 7 / 1000) + 4;
#endif
    if (prefork > 0) {
        g_prefork = calloc((size_t)prefork, sizeof *g_prefork);
        REQUIRE(g_prefork != NULL, "calloc");
        for (int i = 0; i < prefork; i++) g_prefork[g_n_prefork++] = make_pool(&r0);
    }

    sw_prefork(&r0);

    pthread_t wd, comp[2], th[64];
    pthread_create(&wd, NULL, watchdog_main, NULL);
    for (int i = 0; i < 2; i++) pthread_create(&comp[i], NULL, completer_main, (void *)(uintptr_t)i);
    for (int i = 0; i < g_threads; i++) pthread_create(&th[i], NULL, op_thread, (void *)(uintptr_t)i);
    for (int i = 0; i < g_threads; i++) pthread_join(th[i], NULL);

    /* ---- the end: everything must finish ---- */
    atomic_store(&g_phase, 1);
    t_opname = "final";
    t_role = "the final checks (main thread)";
    atomic_store(&g_stop_spawn, true);
    pthread_mutex_lock(&g_rot_mu);
    pthread_mutex_lock(&g_cur_mu);
    pool_ref *last = g_cur;
    g_cur = NULL;
    pthread_mutex_unlock(&g_cur_mu);
    shut_down(last, true, false, &r0);
    retire(last);
    for (; g_prefork != NULL && g_prefork_next < g_n_prefork; g_prefork_next++) {
        pool_ref *p = g_prefork[g_prefork_next];
        shut_down(p, true, false, &r0);
        retire(p);
    }
    free(g_prefork);
    pthread_mutex_unlock(&g_rot_mu);
    pthread_mutex_lock(&g_pq_mu);
    atomic_store(&g_ops_done, true);
    pthread_cond_broadcast(&g_pq_cv);
    pthread_mutex_unlock(&g_pq_mu);
    for (int i = 0; i < 2; i++) pthread_join(comp[i], NULL);
    atomic_fetch_add(&g_progress, 1);
    reap_retired(true);
    atomic_fetch_add(&g_progress, 1);

    /* every live future is done */
    for (size_t i = 0; i < g_live_n; i++) {
        live l = g_live[(g_live_head + i) % g_live_cap];
        REQUIRE(cf_future_done(l.f), "entry %zu (type %u kind %u) not done at the end", l.idx,
                g_entries[l.idx].type, g_entries[l.idx].kind);
        read_outcome(&g_entries[l.idx], l.f, "final");
        cf_future_release(l.f);
    }
    g_live_n = 0;

    /* every entry: one creation callback, an outcome that fits what happened to it */
    size_t n_entries = atomic_load(&g_n_entries);
    long n_done = 0, n_cancelled = 0, n_failed = 0, n_broken = 0;
    for (size_t i = 0; i < n_entries; i++) {
        entry *e = &g_entries[i];
        if (e->type == T_NONE) continue;
        int calls = atomic_load(&e->count_calls);
        REQUIRE(calls == 1, "entry %zu (type %u kind %u): creation callback ran %d times", i, e->type,
                e->kind, calls);
        cf_state s = (cf_state)atomic_load(&e->cb_state);
        cf_status st = (cf_status)atomic_load(&e->cb_status);
        n_done++;
        if (s == CF_STATE_CANCELLED) {
            n_cancelled++;
            REQUIRE(cancel_possible(e), "entry %zu cancelled, nobody cancelled it", i);
            REQUIRE(atomic_load(&e->cancel_false) == 0, "entry %zu: cancel returned false, then cancelled", i);
            if (e->type == T_PROMISE)
                REQUIRE(atomic_load(&e->set_wins) == 0 && atomic_load(&e->set_running_ok) == 0,
                        "promise %zu cancelled, but set %d times / marked running %d times", i,
                        atomic_load(&e->set_wins), atomic_load(&e->set_running_ok));
            else
                REQUIRE(atomic_load(&g_shm->ran[i]) == 0, "entry %zu cancelled, but its task ran %d times",
                        i, atomic_load(&g_shm->ran[i]));
        } else {
            REQUIRE(s == CF_STATE_FINISHED, "entry %zu ended in state %d", i, (int)s);
            REQUIRE(atomic_load(&e->cancel_true) == 0, "entry %zu: cancel returned true, then finished", i);
            REQUIRE(atomic_load(&e->set_running_cancelled) == 0,
                    "entry %zu: set_running gave CF_CANCELLED, then finished", i);
            if (e->type == T_PROMISE)
                REQUIRE(atomic_load(&e->set_wins) == 1, "promise %zu finished, %d sets won", i,
                        atomic_load(&e->set_wins));
            else
                REQUIRE(atomic_load(&g_shm->ran[i]) == 1, "entry %zu (kind %u, %s) finished, its task ran %d times",
                        i, e->kind, sname(st), atomic_load(&g_shm->ran[i]));
            if (st == CF_TASK_FAILED) n_failed++;
            if (st == CF_BROKEN) n_broken++;
        }
    }
    size_t n_x = atomic_load(&g_n_xcbs);
    for (size_t i = 0; i < n_x; i++) {
        xcb *x = &g_xcbs[i];
        if (x->ordinal == -2) continue; /* never added */
        int calls = atomic_load(&x->calls);
        REQUIRE(calls == 1, "extra callback %zu (type %d, entry %zu): ran %d times", i, x->type,
                entry_idx(x->e), calls);
    }
    if (g_gate != NULL) {
        REQUIRE(cf_future_set_result(g_gate, NULL) == CF_OK, "gate");
        cf_future_release(g_gate);
    }
    check_owned_counts();
    check_thens();
    sw_cleanup();
    atomic_store(&g_finished, true);
    pthread_join(wd, NULL);
    printf("stress: OK seed=%" PRIu64 " ops=%ld pools=%s threads=%d futures=%ld (cancelled %ld, failed "
           "%ld, broken %ld) callbacks=%zu spawned=%ld executors=%d (rotations %d) owned=%ld %.1fs\n",
           g_seed, g_ops, g_process ? "process" : "thread", g_threads, n_done, n_cancelled, n_failed,
           n_broken, n_x, atomic_load(&g_spawned), atomic_load(&g_pools_made), atomic_load(&g_rotations),
           atomic_load(&g_owned_accepted), now_s() - t0);
    if (g_verbose)
        for (int i = 0; i < S_COUNT; i++)
            fprintf(stderr, "  %-36s %ld\n", g_stat_names[i], atomic_load(&g_stats[i]));
    munmap(g_shm, g_shm_size);
    free(g_entries);
    free(g_xcbs);
    free(g_thens);
    free(g_live);
    free(g_pq);
    for (int i = 0; i < STRIPES; i++) pthread_mutex_destroy(&g_stripe[i]);
    return 0;
}
