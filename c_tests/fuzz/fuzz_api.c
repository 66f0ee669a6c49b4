/* libFuzzer target for the whole C API: input bytes become a sequence of API calls.
 *
 *   clang -fsanitize=fuzzer,address,undefined fuzz_api.c -lcfutures   (see CMakeLists.txt)
 *   fuzz_replay corpus/                                                 (gcc, no libFuzzer)
 *
 * Each input is read as a list of operations, one opcode byte followed by its operands,
 * until the bytes run out (a missing byte reads as 0). The operations cover:
 *
 *   - thread pools (up to 3 at once) made from decoded options (max_workers 0..SIZE_MAX,
 *     name prefixes of arbitrary bytes, initializers that fail, max_tasks_per_child),
 *     shut down (any wait/cancel_futures) and freed in the middle of everything else;
 *   - one process pool, made the first time an input asks for it and kept for the whole
 *     run (a fork server per input would be slow), used sparingly;
 *   - submit / submit_bytes of tasks that return values, raise, sleep, wait on a
 *     promise, complete a promise, wait on a nested future of their own pool, or shut
 *     their own pool down; byte tasks with a NULL input and a huge length;
 *   - promises: set_running_or_notify_cancel, set_result, set_exception, cancel;
 *   - result / exception / wait / result_bytes with timeouts decoded from a byte (NaN,
 *     negative, -0, 0, denormals, tiny, huge, infinite);
 *   - done callbacks that count, retain and release, add callbacks, submit work;
 *   - retain / release, with the harness's own count of the references it holds, so it
 *     never releases a future it does not hold;
 *   - cf_wait over arrays with duplicates, NULL entries, a NULL array with n > 0, any
 *     return_when value, NULL done/n_done; as_completed; map and map_bytes with zero,
 *     small and huge chunksizes; cf_status_name of any uint32; calls with NULL handles.
 *
 * Only NULL and live handles are ever passed: a freed executor or a released future is
 * never touched again. A wait that could block forever (a pending promise nobody will
 * complete) gets a small timeout instead of an unbounded one.
 *
 * Contract checks (a violation prints "fuzz_api: CONTRACT VIOLATION" and aborts, which
 * libFuzzer reports as a crash): status codes are among those the header allows; failed
 * calls leave out-parameters untouched; results, codes and messages are the ones set;
 * CF_TIMEOUT never comes from an unbounded wait on the calling thread; a callback added
 * to a done future ran before the add returned, and no callback ran twice; callbacks ran
 * before cancel / set_result returned; cf_wait's n_done matches done[]; as_completed
 * yields distinct, done futures of the set, then CF_END forever; map results come in
 * input order and stop at the first failure; cf_status_name never returns NULL.
 */
#define _GNU_SOURCE
#include <cfutures.h>

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- checks ------------------------------------------------------------------------ */

#define FZ_CHECK(cond, ...)                                                            \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "fuzz_api: CONTRACT VIOLATION at %s:%d: %s\n  ", __FILE__, \
                    __LINE__, #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#define FZ_STATUS_IN(st, what, ...)                                                    \
    do {                                                                               \
        cf_status st_ = (st);                                                          \
        const cf_status ok_[] = {__VA_ARGS__};                                         \
        bool found_ = false;                                                           \
        for (size_t i_ = 0; i_ < sizeof ok_ / sizeof ok_[0]; i_++)                     \
            if (ok_[i_] == st_) found_ = true;                                         \
        FZ_CHECK(found_, "%s returned %s (%u)", what, cf_status_name(st_), (unsigned)st_); \
    } while (0)

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- input reader ------------------------------------------------------------------ */

typedef struct reader {
    const uint8_t *p;
    size_t n, i;
} reader;

static bool rd_more(const reader *r) { return r->i < r->n; }
static uint8_t rd_u8(reader *r) { return r->i < r->n ? r->p[r->i++] : 0; }
static uint32_t rd_u32(reader *r) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v |= (uint32_t)rd_u8(r) << (8 * k);
    return v;
}

/* Fills dst[0..len) (len at most cap) from the input. */
static void rd_fill(reader *r, uint8_t *dst, size_t len, size_t cap) {
    if (len > cap) len = cap;
    for (size_t i = 0; i < len; i++) dst[i] = rd_u8(r);
}

/* A timeout from one byte. */
typedef struct tmo {
    double t;
    bool nan;
    bool unbounded; /* negative or huge: the wait cannot end with CF_TIMEOUT */
    bool may_block; /* unbounded, or -0.0 (which an implementation may take either way) */
} tmo;

static tmo rd_timeout(reader *r) {
    static const double table[] = {
        -1.0,          /* CF_FOREVER */
        -0.0,     0.0, 1e-9, 0.001, 0.004, 0.02, INFINITY, -INFINITY, DBL_MAX, 1e300,
        -1e-300,       /* negative: forever */
        DBL_MIN,  5e-324, 1.8446744073709552e19, /* u64::MAX as seconds */
        9.3e9,         /* finite, but 295 years */
    };
    uint8_t b = rd_u8(r);
    tmo t;
    if (b % 17 == 16) {
        t.t = NAN;
        t.nan = true;
        t.unbounded = false;
        t.may_block = false;
        return t;
    }
    t.t = table[b % 17 % (sizeof table / sizeof table[0])];
    t.nan = false;
    t.unbounded = t.t < 0 || t.t > 1.0;
    t.may_block = t.unbounded || signbit(t.t);
    return t;
}

/* ---- harness state ------------------------------------------------------------------ */

enum { MAX_POOLS = 3, MAX_FUTS = 24, MAX_ITERS = 2, MAX_RECORDS = 4096, MAX_PX = 64 };

typedef enum fkind {
    K_PROMISE,
    K_TASK,  /* thread-pool or process-pool pointer task */
    K_BYTES, /* byte task */
} fkind;

/* What a future's outcome must be. */
typedef struct expect {
    bool value_known;
    void *value;     /* CF_OK value (pointer tasks, promises) */
    bool may_fail;   /* CF_TASK_FAILED possible */
    int code;        /* its code when may_fail */
    const char *msg; /* its message (static), NULL allowed */
    bool code_known; /* code and msg are the only possible error */
    bool may_break;  /* CF_BROKEN possible (the pool's initializer fails) */
    bool bytes_known;
    size_t bytes_len;
    uint32_t bytes_sum;
} expect;

typedef struct fslot {
    cf_future *f;
    unsigned serial; /* which future this is, unique in an input */
    int refs; /* references the harness holds (0: slot free) */
    fkind kind;
    bool process;     /* made by the process pool */
    bool cancelled;   /* a cancel by the harness returned true */
    bool settable;    /* a promise: the harness may complete it */
    cf_executor *ex;  /* the pool that made it, NULL for promises */
    expect e;
} fslot;

typedef struct pslot {
    cf_executor *ex;
    size_t max_workers;
    bool shut;     /* shut down: submits give CF_SHUTDOWN (or CF_BROKEN) */
    bool may_break;
} pslot;

typedef struct iter {
    cf_as_completed *ac;
    cf_future *set[MAX_FUTS]; /* distinct futures of the iterator (borrowed by it) */
    size_t nset;
    cf_future *seen[MAX_FUTS];
    size_t nseen;
    bool ended;
    bool unbounded; /* its timeout is unbounded: CF_TIMEOUT is impossible */
} iter;

typedef struct mapit {
    cf_map *m;
    bool bytes;
    size_t n, next;
    void *args[64];
    bool failing; /* items may fail (map_fail_some) */
    bool stopped; /* a failure was returned: CF_END from now on */
    bool may_break;
    bool unbounded; /* CF_TIMEOUT is impossible */
} mapit;

/* Callback records: a static ring, so that a callback that runs late (on a process
 * pool's driver thread) never touches freed memory. */
typedef struct record {
    atomic_int count;
    atomic_int bad_future; /* the callback got a future other than the one it was added to */
    cf_future *f;
    unsigned serial; /* the fslot serial of f */
    bool process;
    cf_executor *submit_to; /* callbacks that submit: a live pool of the future */
    int kind;
} record;

static record g_records[MAX_RECORDS];
static atomic_uint g_next_record;

static _Thread_local int t_cb_depth;

typedef struct state {
    pslot pools[MAX_POOLS];
    fslot futs[MAX_FUTS];
    iter iters[MAX_ITERS];
    mapit maps[MAX_ITERS];
    record *recs[512]; /* records used by this input, in order */
    size_t nrecs;
    cf_future *px[MAX_PX]; /* hidden references to process-pool futures */
    size_t npx;
    unsigned serial;
} state;

static cf_executor *g_process_pool;
static bool g_process_pool_failed;

/* ---- tasks ---------------------------------------------------------------------------- */

static const char *const k_messages[4] = {NULL, "boom", "", "a longer message with \xc3\xa9 and \xff bytes"};

static void *task_ret(void *arg) { return arg; }

static void *task_raise(void *arg) {
    uintptr_t v = (uintptr_t)arg;
    cf_raise((int)(v >> 2), "first call, overwritten");
    return cf_raise((int)(v >> 2), k_messages[v & 3]);
}

static void *task_sleep(void *arg) {
    sleep_us((long)((uintptr_t)arg % 2000));
    return arg;
}

/* Tasks with a heap argument: freed by a done callback on the task's future (which runs
 * exactly once, whether the task ran or was cancelled). */
typedef struct heavy_arg {
    int op;
    cf_future *promise; /* a reference of its own, or NULL */
    cf_executor *ex;    /* the pool it runs on */
    void *value;        /* what it sets the promise to */
    int code;
    const char *msg;
    bool set_exception;
    double wait;
} heavy_arg;

static void *task_heavy(void *p) {
    heavy_arg *a = (heavy_arg *)p;
    switch (a->op) {
    case 0: { /* wait on a promise, bounded */
        void *v = NULL;
        cf_status st = cf_future_result(a->promise, a->wait, &v);
        FZ_STATUS_IN(st, "cf_future_result(promise) in a task", CF_OK, CF_TIMEOUT,
                     CF_TASK_FAILED, CF_CANCELLED);
        if (st == CF_OK) FZ_CHECK(v == a->value, "promise value %p, expected %p", v, a->value);
        return v;
    }
    case 1: { /* complete a promise from a worker */
        cf_status st = a->set_exception ? cf_future_set_exception(a->promise, a->code, a->msg)
                                        : cf_future_set_result(a->promise, a->value);
        FZ_STATUS_IN(st, "cf_future_set_* in a task", CF_OK, CF_INVALID_STATE);
        if (st == CF_INVALID_STATE)
            FZ_CHECK(cf_future_done(a->promise), "set_* in a task: CF_INVALID_STATE but not done");
        return NULL;
    }
    case 2: { /* submit to its own pool and wait for it without limit: no deadlock */
        cf_future *f = NULL;
        cf_status st = cf_submit(a->ex, task_ret, (void *)(uintptr_t)77, &f);
        FZ_STATUS_IN(st, "cf_submit from a task", CF_OK, CF_SHUTDOWN, CF_BROKEN);
        if (st != CF_OK) return NULL;
        void *v = NULL;
        st = cf_future_result(f, CF_FOREVER, &v);
        FZ_STATUS_IN(st, "cf_future_result(nested) in a task", CF_OK, CF_CANCELLED, CF_BROKEN);
        if (st == CF_OK) FZ_CHECK(v == (void *)(uintptr_t)77, "nested value %p", v);
        cf_future_release(f);
        return NULL;
    }
    case 3: { /* shut its own pool down: with wait it cannot, CF_INVALID_STATE */
        cf_status st = cf_executor_shutdown(a->ex, true, false);
        FZ_STATUS_IN(st, "cf_executor_shutdown(own pool, wait) in a task", CF_INVALID_STATE);
        return NULL;
    }
    default: {
        cf_status st = cf_executor_shutdown(a->ex, false, false);
        FZ_STATUS_IN(st, "cf_executor_shutdown(own pool) in a task", CF_OK);
        return NULL;
    }
    }
}

static void cb_free_heavy(cf_future *f, void *userdata) {
    (void)f;
    heavy_arg *a = (heavy_arg *)userdata;
    cf_future_release(a->promise);
    free(a);
}

static uint32_t checksum(const void *p, size_t n) {
    const uint8_t *b = (const uint8_t *)p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}

static void *bytes_echo(const void *in, size_t in_len, size_t *out_len) {
    if (in_len == 0) {
        *out_len = 0;
        return NULL;
    }
    void *out = malloc(in_len);
    if (out == NULL) return cf_raise(12, "no memory");
    memcpy(out, in, in_len);
    *out_len = in_len;
    return out;
}

static void *bytes_null(const void *in, size_t in_len, size_t *out_len) {
    (void)in;
    (void)in_len;
    *out_len = 12345; /* ignored when NULL is returned */
    return NULL;
}

static void *bytes_raise(const void *in, size_t in_len, size_t *out_len) {
    void *buf = malloc(8); /* returned anyway: the library frees it */
    if (buf != NULL) memset(buf, 0, 8);
    *out_len = 8;
    cf_raise((int)in_len + 1000, in_len > 0 && ((const uint8_t *)in)[0] & 1 ? "odd" : NULL);
    return buf;
}

static void *map_fail_some(void *arg) {
    uintptr_t v = (uintptr_t)arg;
    if (v % 7 == 3) return cf_raise((int)v, "map item failed");
    return arg;
}

static void init_ok(void *initarg) { (void)initarg; }
static void init_fail(void *initarg) {
    (void)initarg;
    cf_raise(99, "initializer failed");
}

/* ---- callbacks -------------------------------------------------------------------------- */

static record *new_record(state *s, const fslot *fs, int kind, cf_executor *submit_to) {
    if (s->nrecs == sizeof s->recs / sizeof s->recs[0]) return NULL;
    unsigned i = atomic_fetch_add(&g_next_record, 1) % MAX_RECORDS;
    record *r = &g_records[i];
    atomic_store(&r->count, 0);
    atomic_store(&r->bad_future, 0);
    r->f = fs->f;
    r->serial = fs->serial;
    r->process = fs->process;
    r->kind = kind;
    r->submit_to = submit_to;
    s->recs[s->nrecs++] = r;
    return r;
}

static void cb_nested_count(cf_future *f, void *userdata) {
    (void)f;
    atomic_fetch_add((atomic_int *)userdata, 1);
}

static void cb_main(cf_future *f, void *userdata) {
    record *r = (record *)userdata;
    if (f != r->f) atomic_store(&r->bad_future, 1);
    FZ_CHECK(cf_future_done(f), "a done callback ran on a future that is not done");
    t_cb_depth++;
    switch (r->kind) {
    case 1: { /* retain and release */
        cf_future *g = cf_future_retain(f);
        FZ_CHECK(g == f, "cf_future_retain returned %p for %p", (void *)g, (void *)f);
        cf_future_release(g);
        break;
    }
    case 2: { /* read the outcome without waiting */
        void *v;
        int code = -1;
        const char *msg = NULL;
        cf_status st = cf_future_result(f, 0.0, &v);
        FZ_STATUS_IN(st, "cf_future_result in a callback", CF_OK, CF_TASK_FAILED, CF_BROKEN,
                     CF_CANCELLED);
        cf_status st2 = cf_future_exception(f, 0.0, &code, &msg);
        FZ_CHECK(st2 == st, "exception() gave %s, result() %s", cf_status_name(st2),
                 cf_status_name(st));
        break;
    }
    case 3: { /* add a callback to the (done) future: it runs at once, here */
        if (t_cb_depth < 4) {
            atomic_int c = 0;
            cf_status st = cf_future_add_done_callback(f, cb_nested_count, &c);
            FZ_STATUS_IN(st, "cf_future_add_done_callback in a callback", CF_OK);
            FZ_CHECK(atomic_load(&c) == 1, "a callback added to a done future ran %d times",
                     atomic_load(&c));
        }
        break;
    }
    case 4: { /* submit to the future's pool, and drop the future at once */
        if (r->submit_to != NULL) {
            cf_future *g = NULL;
            cf_status st = cf_submit(r->submit_to, task_ret, (void *)(uintptr_t)5, &g);
            FZ_STATUS_IN(st, "cf_submit in a callback", CF_OK, CF_SHUTDOWN, CF_BROKEN);
            if (st == CF_OK) cf_future_release(g);
        }
        break;
    }
    case 5: /* cancel a done future: false, unless it was cancelled */
        FZ_CHECK(cf_future_cancel(f) == cf_future_cancelled(f), "cancel() in a callback");
        break;
    default:
        break;
    }
    t_cb_depth--;
    atomic_fetch_add(&r->count, 1); /* last: the harness waits for this */
}

/* ---- helpers on the state ----------------------------------------------------------------- */

static fslot *pick_fut(state *s, reader *r) {
    uint8_t b = rd_u8(r);
    for (int k = 0; k < MAX_FUTS; k++) {
        fslot *fs = &s->futs[(b + k) % MAX_FUTS];
        if (fs->refs > 0) return fs;
    }
    return NULL;
}

static fslot *free_fut_slot(state *s, reader *r) {
    uint8_t b = rd_u8(r);
    for (int k = 0; k < MAX_FUTS; k++) {
        fslot *fs = &s->futs[(b + k) % MAX_FUTS];
        if (fs->refs == 0) return fs;
    }
    return NULL;
}

/* Whether waiting on this future could block forever: a promise nobody completes. */
static bool may_never_complete(const fslot *fs) {
    return fs->kind == K_PROMISE && !cf_future_done(fs->f);
}

static double bounded(tmo t, bool risky) {
    if (risky && t.may_block) return 0.004;
    return t.t;
}

static void drop_ref(state *s, fslot *fs) {
    (void)s;
    cf_future_release(fs->f);
    if (--fs->refs == 0) memset(fs, 0, sizeof *fs);
}

static cf_executor *process_pool(void) {
    if (g_process_pool == NULL && !g_process_pool_failed) {
        cf_executor_options o;
        memset(&o, 0, sizeof o);
        o.max_workers = 2;
        o.name_prefix = "fuzzpx";
        o.max_tasks_per_child = 50;
        cf_status st = cf_process_pool_new(&o, &g_process_pool);
        FZ_STATUS_IN(st, "cf_process_pool_new", CF_OK, CF_OS_ERROR);
        if (st != CF_OK) g_process_pool_failed = true;
    }
    return g_process_pool;
}

/* Check what a finished future gave against what it must give. */
static void check_outcome(const fslot *fs, cf_status st, const void *const *v, const char *what) {
    const expect *e = &fs->e;
    switch (st) {
    case CF_OK:
        if (v != NULL && e->value_known && fs->kind != K_BYTES)
            FZ_CHECK(*v == e->value, "%s: value %p, expected %p", what, *v, e->value);
        break;
    case CF_TASK_FAILED:
        FZ_CHECK(e->may_fail, "%s: CF_TASK_FAILED from a future that cannot fail", what);
        break;
    case CF_BROKEN:
        FZ_CHECK(e->may_break, "%s: CF_BROKEN from a future of a pool that cannot break", what);
        break;
    case CF_CANCELLED:
        FZ_CHECK(fs->kind != K_PROMISE || fs->cancelled,
                 "%s: CF_CANCELLED from a promise never cancelled", what);
        break;
    default:
        break;
    }
}

/* ---- operations ------------------------------------------------------------------------------- */

static void op_pool_new(state *s, reader *r) {
    pslot *p = &s->pools[rd_u8(r) % MAX_POOLS];
    static const size_t workers[] = {0, 1, 2, 3, 4, 1, 2, CF_MAX_WORKERS + 1, SIZE_MAX};
    uint8_t b = rd_u8(r);
    uint8_t opt = rd_u8(r);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = workers[b % (sizeof workers / sizeof workers[0])];
    char name[24];
    if (opt & 1) {
        size_t len = rd_u8(r) % sizeof name;
        for (size_t i = 0; i < len; i++) name[i] = (char)(rd_u8(r) | 1); /* no NUL inside */
        name[len] = '\0';
        o.name_prefix = name;
    }
    bool fails = false;
    if (opt & 2) {
        fails = (opt & 4) != 0;
        o.initializer = fails ? init_fail : init_ok;
    }
    if ((opt & 0x38) == 0x38) o.max_tasks_per_child = 1;
    bool valid = o.max_workers <= CF_MAX_WORKERS && o.max_tasks_per_child == 0;
    const cf_executor_options *po = (opt & 0xc0) == 0xc0 ? NULL : &o;
    if (po == NULL) valid = true, fails = false;
    if (p->ex != NULL) {
        /* Replace: free the old one first (the slot then holds the new one). */
        cf_executor_free(p->ex);
        memset(p, 0, sizeof *p);
    }
    cf_executor *ex = (cf_executor *)(uintptr_t)0x1;
    cf_status st = cf_thread_pool_new(po, &ex);
    if (!valid) {
        FZ_STATUS_IN(st, "cf_thread_pool_new(bad options)", CF_INVALID_ARGUMENT);
        FZ_CHECK(ex == (cf_executor *)(uintptr_t)0x1, "out written on failure");
        return;
    }
    FZ_STATUS_IN(st, "cf_thread_pool_new", CF_OK, CF_OS_ERROR);
    if (st != CF_OK) return;
    FZ_CHECK(cf_executor_worker_count(ex) == 0, "a new pool has %zu workers",
             cf_executor_worker_count(ex));
    p->ex = ex;
    p->max_workers = po == NULL || o.max_workers == 0 ? 32 : o.max_workers;
    p->may_break = fails;
}

static void op_pool_free(state *s, reader *r) {
    pslot *p = &s->pools[rd_u8(r) % MAX_POOLS];
    cf_executor_free(p->ex); /* NULL does nothing */
    memset(p, 0, sizeof *p);
}

static void op_pool_shutdown(state *s, reader *r) {
    pslot *p = &s->pools[rd_u8(r) % MAX_POOLS];
    uint8_t b = rd_u8(r);
    cf_status st = cf_executor_shutdown(p->ex, b & 1, (b & 2) != 0);
    if (p->ex == NULL) {
        FZ_STATUS_IN(st, "cf_executor_shutdown(NULL)", CF_INVALID_ARGUMENT);
        return;
    }
    FZ_STATUS_IN(st, "cf_executor_shutdown", CF_OK);
    p->shut = true;
    if (b & 1)
        FZ_CHECK(cf_executor_worker_count(p->ex) == 0, "%zu workers after shutdown(wait)",
                 cf_executor_worker_count(p->ex));
}

static void op_submit(state *s, reader *r, bool bytes) {
    uint8_t which = rd_u8(r);
    uint8_t task = rd_u8(r);
    uint8_t argb = rd_u8(r);
    fslot *fs = free_fut_slot(s, r);
    cf_executor *ex = NULL;
    pslot *p = NULL;
    bool process = false;
    if (which % 8 == 7) {
        ex = process_pool();
        process = ex != NULL;
    } else if (which % 8 != 6) {
        p = &s->pools[which % MAX_POOLS];
        ex = p->ex;
    }
    cf_future *f = (cf_future *)(uintptr_t)0x1;
    cf_future **out = fs != NULL ? &f : NULL; /* no free slot: a NULL out */
    expect e;
    memset(&e, 0, sizeof e);
    e.may_break = p != NULL && p->may_break;
    heavy_arg *heavy = NULL;
    cf_status st;
    uint8_t inbuf[64];
    if (!bytes) {
        cf_fn fn;
        void *arg = (void *)(uintptr_t)argb;
        switch (task % 10) {
        case 0: case 1: case 2:
            fn = task_ret;
            e.value_known = true;
            e.value = arg;
            break;
        case 3:
            fn = task_raise;
            e.may_fail = true;
            e.code_known = true;
            e.code = (int)(argb >> 2);
            e.msg = k_messages[argb & 3];
            break;
        case 4:
            fn = task_sleep;
            e.value_known = true;
            e.value = arg;
            break;
        case 5:
            fn = NULL; /* CF_INVALID_ARGUMENT */
            break;
        default: {
            if (process || ex == NULL) {
                fn = task_ret;
                e.value_known = true;
                e.value = arg;
                break;
            }
            /* Heavy tasks: thread pools only (they hold pointers into this process). */
            int op = task % 10 - 6; /* 0..3 */
            if (op == 3 && (argb & 1)) op = 4;
            fslot *prom = NULL;
            if (op <= 1) {
                prom = pick_fut(s, r);
                if (prom == NULL || prom->kind != K_PROMISE) op = 2;
            }
            heavy = (heavy_arg *)calloc(1, sizeof *heavy);
            if (heavy == NULL) return;
            heavy->op = op;
            heavy->ex = ex;
            heavy->wait = (double)(argb % 4) * 0.002;
            if (prom != NULL && op <= 1) {
                heavy->promise = cf_future_retain(prom->f);
                heavy->value = prom->e.value;
                heavy->code = prom->e.code;
                heavy->msg = prom->e.msg;
                heavy->set_exception = (argb & 2) != 0;
            }
            fn = task_heavy;
            arg = heavy;
            e.value_known = false;
            break;
        }
        }
        st = cf_submit(ex, fn, arg, out);
        if (fn == NULL || ex == NULL || out == NULL) {
            FZ_STATUS_IN(st, "cf_submit(NULL ...)", CF_INVALID_ARGUMENT);
        } else if (p != NULL && p->shut) {
            FZ_STATUS_IN(st, "cf_submit after shutdown", CF_SHUTDOWN, CF_BROKEN);
        } else {
            FZ_STATUS_IN(st, "cf_submit", CF_OK, CF_BROKEN, CF_SHUTDOWN, CF_OS_ERROR);
            if (st == CF_BROKEN) FZ_CHECK(e.may_break || process, "cf_submit: CF_BROKEN");
        }
    } else {
        cf_bytes_fn fn;
        switch (task % 5) {
        case 0: case 1: fn = bytes_echo; break;
        case 2: fn = bytes_null; break;
        case 3: fn = bytes_raise; e.may_fail = true; break;
        default: fn = NULL; break;
        }
        size_t len = argb % sizeof inbuf;
        rd_fill(r, inbuf, len, sizeof inbuf);
        const void *in = inbuf;
        size_t in_len = len;
        bool bad = fn == NULL || ex == NULL || out == NULL;
        uint8_t how = rd_u8(r);
        if (how % 8 == 0) {
            in = NULL; /* NULL with a (huge) length: CF_INVALID_ARGUMENT */
            in_len = how & 8 ? SIZE_MAX : (size_t)how + 1;
            bad = true;
        } else if (how % 8 == 1) {
            in = NULL;
            in_len = 0;
            len = 0;
        }
        if (fn == bytes_echo) {
            e.bytes_known = true;
            e.bytes_len = len;
            e.bytes_sum = checksum(inbuf, len);
        } else if (fn == bytes_null) {
            e.bytes_known = true;
            e.bytes_len = 0;
            e.bytes_sum = checksum(NULL, 0);
        }
        st = cf_submit_bytes(ex, fn, in, in_len, out);
        memset(inbuf, 0xee, sizeof inbuf); /* the input was copied */
        if (bad) {
            FZ_STATUS_IN(st, "cf_submit_bytes(bad arguments)", CF_INVALID_ARGUMENT);
        } else if (p != NULL && p->shut) {
            FZ_STATUS_IN(st, "cf_submit_bytes after shutdown", CF_SHUTDOWN, CF_BROKEN);
        } else {
            FZ_STATUS_IN(st, "cf_submit_bytes", CF_OK, CF_BROKEN, CF_SHUTDOWN, CF_OS_ERROR);
        }
    }
    if (st != CF_OK) {
        FZ_CHECK(f == (cf_future *)(uintptr_t)0x1, "out written by a failed submit");
        if (heavy != NULL) {
            cf_future_release(heavy->promise);
            free(heavy);
        }
        return;
    }
    FZ_CHECK(f != NULL && f != (cf_future *)(uintptr_t)0x1, "submit gave no future");
    if (heavy != NULL) {
        cf_status cst = cf_future_add_done_callback(f, cb_free_heavy, heavy);
        FZ_STATUS_IN(cst, "cf_future_add_done_callback(cleanup)", CF_OK);
    }
    memset(fs, 0, sizeof *fs);
    fs->f = f;
    fs->serial = ++s->serial;
    fs->refs = 1;
    fs->kind = bytes ? K_BYTES : K_TASK;
    fs->process = process;
    fs->ex = ex;
    fs->e = e;
    if (process && s->npx < MAX_PX) {
        s->px[s->npx++] = cf_future_retain(f);
    } else if (process) {
        /* No room for a hidden reference: wait for it here. */
        FZ_STATUS_IN(cf_future_wait(f, CF_FOREVER), "cf_future_wait(process)", CF_OK);
    }
}

static void op_promise_new(state *s, reader *r) {
    fslot *fs = free_fut_slot(s, r);
    uint8_t b = rd_u8(r);
    if (fs == NULL) {
        FZ_STATUS_IN(cf_future_new(NULL), "cf_future_new(NULL)", CF_INVALID_ARGUMENT);
        return;
    }
    cf_future *f = NULL;
    FZ_STATUS_IN(cf_future_new(&f), "cf_future_new", CF_OK);
    FZ_CHECK(cf_future_state(f) == CF_STATE_PENDING, "a new promise is not pending");
    memset(fs, 0, sizeof *fs);
    fs->f = f;
    fs->serial = ++s->serial;
    fs->refs = 1;
    fs->kind = K_PROMISE;
    fs->settable = true;
    fs->e.value_known = true;
    fs->e.value = (void *)(uintptr_t)(0x1000 + b);
    fs->e.may_fail = true;
    fs->e.code_known = true;
    fs->e.code = -(int)b;
    fs->e.msg = k_messages[b & 3];
}

static void check_records_ran(state *s, const fslot *fs, const char *after) {
    for (size_t i = 0; i < s->nrecs; i++) {
        record *rec = s->recs[i];
        if (rec->serial == fs->serial)
            FZ_CHECK(atomic_load(&rec->count) == 1, "a callback ran %d times after %s returned",
                     atomic_load(&rec->count), after);
    }
}

static void op_promise_complete(state *s, reader *r) {
    fslot *fs = pick_fut(s, r);
    uint8_t how = rd_u8(r);
    if (fs == NULL) return;
    bool was_done = cf_future_done(fs->f);
    cf_status st;
    if (fs->kind != K_PROMISE) {
        /* Setting a task's future is allowed only once it is done: CF_INVALID_STATE. */
        if (!was_done) return;
        st = how & 1 ? cf_future_set_result(fs->f, NULL) : cf_future_set_exception(fs->f, 1, "x");
        FZ_STATUS_IN(st, "cf_future_set_*(done task future)", CF_INVALID_STATE);
        return;
    }
    switch (how % 3) {
    case 0:
        st = cf_future_set_running_or_notify_cancel(fs->f);
        FZ_STATUS_IN(st, "cf_future_set_running_or_notify_cancel", CF_OK, CF_CANCELLED,
                     CF_INVALID_STATE);
        if (st == CF_CANCELLED) FZ_CHECK(cf_future_cancelled(fs->f), "CF_CANCELLED but not cancelled");
        if (st == CF_INVALID_STATE)
            FZ_CHECK(cf_future_state(fs->f) != CF_STATE_PENDING,
                     "set_running_or_notify_cancel: CF_INVALID_STATE on a pending promise");
        if (st == CF_OK) {
            FZ_CHECK(cf_future_running(fs->f) || cf_future_done(fs->f), "not running after OK");
            FZ_CHECK(!cf_future_cancel(fs->f) || cf_future_done(fs->f),
                     "cancel() succeeded on a running promise");
        }
        break;
    case 1:
        st = cf_future_set_result(fs->f, fs->e.value);
        FZ_STATUS_IN(st, "cf_future_set_result", CF_OK, CF_INVALID_STATE);
        if (was_done) FZ_CHECK(st == CF_INVALID_STATE, "set_result on a done future gave OK");
        /* CF_INVALID_STATE means done: a completion racing on a worker must be visible. */
        if (st == CF_INVALID_STATE)
            FZ_CHECK(cf_future_done(fs->f), "set_result: CF_INVALID_STATE but not done");
        if (st == CF_OK) check_records_ran(s, fs, "cf_future_set_result");
        break;
    default:
        st = cf_future_set_exception(fs->f, fs->e.code, fs->e.msg);
        FZ_STATUS_IN(st, "cf_future_set_exception", CF_OK, CF_INVALID_STATE);
        if (was_done) FZ_CHECK(st == CF_INVALID_STATE, "set_exception on a done future gave OK");
        if (st == CF_INVALID_STATE)
            FZ_CHECK(cf_future_done(fs->f), "set_exception: CF_INVALID_STATE but not done");
        if (st == CF_OK) check_records_ran(s, fs, "cf_future_set_exception");
        break;
    }
}

static void op_cancel(state *s, reader *r) {
    fslot *fs = pick_fut(s, r);
    if (fs == NULL) {
        FZ_CHECK(!cf_future_cancel(NULL), "cancel(NULL) true");
        return;
    }
    bool done_before = cf_future_done(fs->f);
    bool was_cancelled = cf_future_cancelled(fs->f);
    bool ok = cf_future_cancel(fs->f);
    if (ok) {
        FZ_CHECK(cf_future_cancelled(fs->f) && cf_future_done(fs->f) &&
                     cf_future_state(fs->f) == CF_STATE_CANCELLED,
                 "cancel() true but the future is not cancelled");
        FZ_CHECK(!done_before || was_cancelled, "cancel() true on a finished future");
        fs->cancelled = true;
        if (fs->kind == K_PROMISE) check_records_ran(s, fs, "cf_future_cancel");
    } else {
        FZ_CHECK(!cf_future_cancelled(fs->f), "cancel() false on a cancelled future");
    }
}

static void op_read(state *s, reader *r) {
    fslot *fs = pick_fut(s, r);
    uint8_t how = rd_u8(r);
    tmo t = rd_timeout(r);
    if (fs == NULL) {
        void *v;
        FZ_STATUS_IN(cf_future_result(NULL, 0.0, &v), "cf_future_result(NULL)", CF_INVALID_ARGUMENT);
        return;
    }
    bool risky = may_never_complete(fs);
    double to = bounded(t, risky);
    bool unbounded = t.unbounded && to == t.t;
    bool done_before = cf_future_done(fs->f);
    cf_status st;
    void *v = (void *)(uintptr_t)0x2;
    switch (how % 5) {
    case 0:
        st = cf_future_wait(fs->f, to);
        if (t.nan) {
            FZ_STATUS_IN(st, "cf_future_wait(NaN)", CF_INVALID_ARGUMENT);
            return;
        }
        FZ_STATUS_IN(st, "cf_future_wait", CF_OK, CF_TIMEOUT);
        if (st == CF_OK) FZ_CHECK(cf_future_done(fs->f), "wait OK but not done");
        break;
    case 1:
        st = cf_future_result(fs->f, to, (how & 8) ? NULL : &v);
        if (t.nan || (how & 8)) {
            FZ_STATUS_IN(st, "cf_future_result(NaN or NULL out)", CF_INVALID_ARGUMENT);
            return;
        }
        FZ_STATUS_IN(st, "cf_future_result", CF_OK, CF_TIMEOUT, CF_TASK_FAILED, CF_BROKEN,
                     CF_CANCELLED);
        if (st != CF_OK) FZ_CHECK(v == (void *)(uintptr_t)0x2, "result written with %s", cf_status_name(st));
        check_outcome(fs, st, (const void *const *)&v, "cf_future_result");
        break;
    case 2: {
        int code = 12345;
        const char *msg = "untouched";
        st = cf_future_exception(fs->f, to, (how & 8) ? NULL : &code, &msg);
        if (t.nan || (how & 8)) {
            FZ_STATUS_IN(st, "cf_future_exception(NaN or NULL out)", CF_INVALID_ARGUMENT);
            return;
        }
        FZ_STATUS_IN(st, "cf_future_exception", CF_OK, CF_TIMEOUT, CF_TASK_FAILED, CF_BROKEN,
                     CF_CANCELLED);
        if (st == CF_OK) FZ_CHECK(code == 0 && msg == NULL, "exception() OK gave %d %p", code, (const void *)msg);
        if (st == CF_TIMEOUT || st == CF_CANCELLED)
            FZ_CHECK(code == 12345 && strcmp(msg, "untouched") == 0, "exception() wrote on %s",
                     cf_status_name(st));
        if (st == CF_TASK_FAILED && fs->e.code_known) {
            FZ_CHECK(code == fs->e.code, "error code %d, expected %d", code, fs->e.code);
            FZ_CHECK((msg == NULL) == (fs->e.msg == NULL) &&
                         (msg == NULL || strcmp(msg, fs->e.msg) == 0),
                     "error message \"%s\", expected \"%s\"", msg ? msg : "(null)",
                     fs->e.msg ? fs->e.msg : "(null)");
        }
        if (st == CF_TASK_FAILED && msg != NULL) (void)strlen(msg); /* valid string */
        check_outcome(fs, st, NULL, "cf_future_exception");
        break;
    }
    case 3: {
        cf_bytes b = {(const void *)(uintptr_t)0x3, 7};
        st = cf_future_result_bytes(fs->f, to, (how & 8) ? NULL : &b);
        if (t.nan || (how & 8)) {
            FZ_STATUS_IN(st, "cf_future_result_bytes(NaN or NULL out)", CF_INVALID_ARGUMENT);
            return;
        }
        FZ_STATUS_IN(st, "cf_future_result_bytes", CF_OK, CF_TIMEOUT, CF_TASK_FAILED, CF_BROKEN,
                     CF_CANCELLED, CF_INVALID_ARGUMENT);
        if (st == CF_INVALID_ARGUMENT) {
            FZ_CHECK(fs->kind != K_BYTES, "result_bytes on a byte task gave CF_INVALID_ARGUMENT");
            return;
        }
        if (st == CF_OK) {
            FZ_CHECK(fs->kind == K_BYTES, "result_bytes OK on a pointer future");
            FZ_CHECK(b.len == 0 || b.data != NULL, "result_bytes: NULL data with length %zu", b.len);
            if (fs->e.bytes_known) {
                FZ_CHECK(b.len == fs->e.bytes_len && checksum(b.data, b.len) == fs->e.bytes_sum,
                         "byte result of %zu bytes differs from the %zu expected", b.len,
                         fs->e.bytes_len);
            }
        } else {
            FZ_CHECK(b.data == (const void *)(uintptr_t)0x3 && b.len == 7, "bytes written with %s",
                     cf_status_name(st));
        }
        check_outcome(fs, st, NULL, "cf_future_result_bytes");
        break;
    }
    default: {
        cf_state a = cf_future_state(fs->f);
        bool d = cf_future_done(fs->f);
        bool run = cf_future_running(fs->f);
        bool c = cf_future_cancelled(fs->f);
        cf_state b2 = cf_future_state(fs->f);
        FZ_CHECK(a <= CF_STATE_FINISHED && b2 <= CF_STATE_FINISHED, "unknown state %u", a);
        if (a == CF_STATE_CANCELLED || a == CF_STATE_FINISHED)
            FZ_CHECK(d && !run && b2 == a, "state %u then done=%d running=%d state %u", a, d, run, b2);
        if (c) FZ_CHECK(d && b2 == CF_STATE_CANCELLED, "cancelled but state %u", b2);
        if (done_before) FZ_CHECK(d, "done went back to false");
        return;
    }
    }
    if (st == CF_TIMEOUT) {
        FZ_CHECK(!unbounded, "CF_TIMEOUT from an unbounded wait (timeout %g)", to);
        FZ_CHECK(!done_before, "CF_TIMEOUT on a future that was already done");
    } else {
        FZ_CHECK(cf_future_done(fs->f), "%s but not done", cf_status_name(st));
    }
}

static void op_callback(state *s, reader *r) {
    fslot *fs = pick_fut(s, r);
    uint8_t kind = rd_u8(r);
    if (fs == NULL) {
        FZ_STATUS_IN(cf_future_add_done_callback(NULL, cb_main, NULL),
                     "cf_future_add_done_callback(NULL)", CF_INVALID_ARGUMENT);
        return;
    }
    if (kind % 8 == 7) {
        FZ_STATUS_IN(cf_future_add_done_callback(fs->f, NULL, NULL),
                     "cf_future_add_done_callback(fn NULL)", CF_INVALID_ARGUMENT);
        return;
    }
    /* A callback that submits targets the future's own pool only while it is alive (it then
     * runs before the pool's free returns); process-pool futures never submit. */
    cf_executor *submit_to = NULL;
    if (fs->ex != NULL && !fs->process)
        for (int i = 0; i < MAX_POOLS; i++)
            if (s->pools[i].ex == fs->ex) submit_to = fs->ex;
    record *rec = new_record(s, fs, kind % 8, submit_to);
    if (rec == NULL) return;
    bool done_before = cf_future_done(fs->f);
    FZ_STATUS_IN(cf_future_add_done_callback(fs->f, cb_main, rec), "cf_future_add_done_callback",
                 CF_OK);
    if (done_before)
        FZ_CHECK(atomic_load(&rec->count) == 1,
                 "a callback added to a done future ran %d times before the add returned",
                 atomic_load(&rec->count));
}

static void op_refs(state *s, reader *r) {
    fslot *fs = pick_fut(s, r);
    uint8_t how = rd_u8(r);
    if (fs == NULL) {
        FZ_CHECK(cf_future_retain(NULL) == NULL, "retain(NULL)");
        cf_future_release(NULL);
        return;
    }
    if (how & 1 && fs->refs < 1000) {
        FZ_CHECK(cf_future_retain(fs->f) == fs->f, "retain returned another pointer");
        fs->refs++;
    } else {
        drop_ref(s, fs); /* may free the slot */
    }
}

/* An array of futures for cf_wait / as_completed. Returns n; *risky when one of them may
 * never complete; *has_null when an entry is NULL. */
static size_t build_array(state *s, reader *r, cf_future **fs, size_t cap, bool *risky,
                          bool *has_null, fslot **slots) {
    size_t n = rd_u8(r) % (cap + 1);
    *risky = false;
    *has_null = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = rd_u8(r);
        if (b == 0xff) {
            fs[i] = NULL;
            slots[i] = NULL;
            *has_null = true;
            continue;
        }
        fslot *f = &s->futs[b % MAX_FUTS];
        if (f->refs == 0) f = pick_fut(s, r);
        if (f == NULL) {
            fs[i] = NULL;
            slots[i] = NULL;
            *has_null = true;
            continue;
        }
        fs[i] = f->f;
        slots[i] = f;
        if (may_never_complete(f)) *risky = true;
    }
    return n;
}

static void op_wait_many(state *s, reader *r) {
    cf_future *fs[16];
    fslot *slots[16];
    bool risky, has_null;
    size_t n = build_array(s, r, fs, 16, &risky, &has_null, slots);
    uint8_t b = rd_u8(r);
    cf_return_when when = b % 4 == 3 ? rd_u32(r) : (cf_return_when)(b % 4);
    tmo t = rd_timeout(r);
    double to = bounded(t, risky);
    bool unbounded = t.unbounded && to == t.t;
    bool done_arr[16];
    memset(done_arr, 0xaa, sizeof done_arr);
    size_t n_done = 999;
    bool pass_null_fs = (b & 0x10) && n > 0;
    bool *dp = (b & 0x20) ? NULL : done_arr;
    size_t *np = (b & 0x40) ? NULL : &n_done;
    bool done_before[16];
    for (size_t i = 0; i < n; i++) done_before[i] = fs[i] != NULL && cf_future_done(fs[i]);
    cf_status st = cf_wait(pass_null_fs ? NULL : fs, n, when, to, dp, np);
    bool bad_when_or_nan = when > CF_ALL_COMPLETED || t.nan;
    if (n == 0) {
        /* "n == 0 returns CF_OK at once"; an unknown when or NaN may still be rejected. */
        if (bad_when_or_nan)
            FZ_STATUS_IN(st, "cf_wait(n=0, bad when or NaN)", CF_OK, CF_INVALID_ARGUMENT);
        else
            FZ_STATUS_IN(st, "cf_wait(n=0)", CF_OK);
        if (st == CF_OK && np != NULL) FZ_CHECK(n_done == 0, "n_done %zu for n=0", n_done);
        return;
    }
    if (pass_null_fs || has_null || bad_when_or_nan) {
        FZ_STATUS_IN(st, "cf_wait(bad arguments)", CF_INVALID_ARGUMENT);
        FZ_CHECK(n_done == 999, "n_done written on CF_INVALID_ARGUMENT");
        for (size_t i = 0; i < n; i++)
            FZ_CHECK(((unsigned char *)done_arr)[i] == 0xaa, "done[] written on CF_INVALID_ARGUMENT");
        return;
    }
    FZ_STATUS_IN(st, "cf_wait", CF_OK, CF_TIMEOUT);
    if (st == CF_TIMEOUT) FZ_CHECK(!unbounded, "cf_wait: CF_TIMEOUT from an unbounded wait");
    if (np != NULL && dp != NULL) {
        size_t c = 0;
        for (size_t i = 0; i < n; i++) c += done_arr[i] ? 1 : 0;
        FZ_CHECK(c == n_done, "n_done %zu but %zu flags set", n_done, c);
    }
    if (dp != NULL) {
        for (size_t i = 0; i < n; i++) {
            if (done_arr[i]) FZ_CHECK(cf_future_done(fs[i]), "done[%zu] set on a pending future", i);
            if (done_before[i]) FZ_CHECK(done_arr[i], "done[%zu] clear on a done future", i);
        }
        if (st == CF_OK && when == CF_ALL_COMPLETED)
            for (size_t i = 0; i < n; i++) FZ_CHECK(done_arr[i], "ALL_COMPLETED with a pending one");
        if (st == CF_OK && n > 0 && when == CF_FIRST_COMPLETED) {
            bool any = false;
            for (size_t i = 0; i < n; i++) any = any || done_arr[i];
            FZ_CHECK(any, "FIRST_COMPLETED returned CF_OK with nothing done");
        }
    }
    (void)slots;
}

static void op_as_completed(state *s, reader *r) {
    iter *it = &s->iters[rd_u8(r) % MAX_ITERS];
    uint8_t b = rd_u8(r);
    if (it->ac != NULL && (b & 1)) {
        cf_as_completed_free(it->ac);
        memset(it, 0, sizeof *it);
        return;
    }
    if (it->ac == NULL) {
        cf_future *fs[16];
        fslot *slots[16];
        bool risky, has_null;
        size_t n = build_array(s, r, fs, 16, &risky, &has_null, slots);
        tmo t = rd_timeout(r);
        double to = bounded(t, risky);
        bool null_fs = (b & 2) && n > 0;
        cf_as_completed *ac = (cf_as_completed *)(uintptr_t)0x1;
        cf_status st = cf_as_completed_new(null_fs ? NULL : fs, n, to, (b & 4) ? NULL : &ac);
        if ((b & 4) || t.nan || (n > 0 && (null_fs || has_null))) {
            FZ_STATUS_IN(st, "cf_as_completed_new(bad arguments)", CF_INVALID_ARGUMENT);
            FZ_CHECK(ac == (cf_as_completed *)(uintptr_t)0x1, "out written on failure");
            return;
        }
        FZ_STATUS_IN(st, "cf_as_completed_new", CF_OK);
        memset(it, 0, sizeof *it);
        it->ac = ac;
        it->unbounded = t.unbounded && to == t.t;
        for (size_t i = 0; i < n; i++) {
            bool dup = false;
            for (size_t k = 0; k < it->nset; k++) dup = dup || it->set[k] == fs[i];
            if (!dup) it->set[it->nset++] = fs[i];
        }
        /* The iterator holds its own references: dropping ours must be fine. */
        return;
    }
    /* next, a few times */
    int times = 1 + (b >> 4) % 4;
    for (int k = 0; k < times; k++) {
        cf_future *f = (cf_future *)(uintptr_t)0x1;
        cf_status st = cf_as_completed_next(it->ac, (b & 2) && k == 0 ? NULL : &f);
        if ((b & 2) && k == 0) {
            FZ_STATUS_IN(st, "cf_as_completed_next(NULL out)", CF_INVALID_ARGUMENT);
            continue;
        }
        FZ_STATUS_IN(st, "cf_as_completed_next", CF_OK, CF_TIMEOUT, CF_END);
        if (it->ended) FZ_CHECK(st == CF_END, "as_completed gave %s after CF_END", cf_status_name(st));
        if (st == CF_END) {
            FZ_CHECK(it->nseen == it->nset, "CF_END after %zu of %zu futures", it->nseen, it->nset);
            it->ended = true;
            break;
        }
        if (st == CF_TIMEOUT) {
            FZ_CHECK(!it->unbounded, "as_completed: CF_TIMEOUT with an unbounded timeout");
            FZ_CHECK(f == (cf_future *)(uintptr_t)0x1, "as_completed wrote *f with CF_TIMEOUT");
            break;
        }
        FZ_CHECK(cf_future_done(f), "as_completed yielded a pending future");
        bool in_set = false, dup = false;
        for (size_t i = 0; i < it->nset; i++) in_set = in_set || it->set[i] == f;
        for (size_t i = 0; i < it->nseen; i++) dup = dup || it->seen[i] == f;
        FZ_CHECK(in_set && !dup, "as_completed yielded %s future", in_set ? "a repeated" : "a foreign");
        it->seen[it->nseen++] = f;
    }
}

static void op_map(state *s, reader *r) {
    mapit *mi = &s->maps[rd_u8(r) % MAX_ITERS];
    uint8_t b = rd_u8(r);
    if (mi->m != NULL && (b & 1)) {
        cf_map_free(mi->m);
        memset(mi, 0, sizeof *mi);
        return;
    }
    if (mi->m == NULL) {
        uint8_t which = rd_u8(r);
        cf_executor *ex = NULL;
        pslot *p = NULL;
        bool process = false;
        if (which % 8 == 7) {
            ex = process_pool();
            process = true;
        } else if (which % 8 != 6) {
            p = &s->pools[which % MAX_POOLS];
            ex = p->ex;
        }
        static const size_t chunks[] = {0, 1, 2, 3, 7, 64, SIZE_MAX, SIZE_MAX / 2 + 1};
        size_t chunksize = chunks[rd_u8(r) % 8];
        size_t n = rd_u8(r) % (process ? 9 : 65);
        tmo t = rd_timeout(r);
        bool bytes = (b & 2) != 0;
        bool failing = (b & 4) != 0;
        bool null_args = (b & 8) && n > 0;
        cf_map *m = (cf_map *)(uintptr_t)0x1;
        cf_status st;
        memset(mi, 0, sizeof *mi);
        for (size_t i = 0; i < n; i++) mi->args[i] = (void *)(uintptr_t)rd_u8(r);
        if (!bytes) {
            st = cf_map_new(ex, failing ? map_fail_some : task_ret, null_args ? NULL : mi->args, n,
                            chunksize, t.t, &m);
        } else {
            cf_bytes in[64];
            uint8_t store[64];
            bool bad_item = false;
            for (size_t i = 0; i < n; i++) {
                store[i] = (uint8_t)(uintptr_t)mi->args[i];
                in[i].data = &store[i];
                in[i].len = 1;
                if (store[i] == 0) in[i].data = NULL, in[i].len = 0;
                if (store[i] == 0xff) in[i].data = NULL, in[i].len = SIZE_MAX, bad_item = true;
            }
            null_args = null_args || bad_item;
            st = cf_map_bytes_new(ex, failing ? bytes_raise : bytes_echo, (b & 8) && n > 0 ? NULL : in,
                                  n, chunksize, t.t, &m);
        }
        bool bad = ex == NULL || null_args || t.nan;
        if (bad) {
            FZ_STATUS_IN(st, "cf_map_new(bad arguments)", CF_INVALID_ARGUMENT);
            FZ_CHECK(m == (cf_map *)(uintptr_t)0x1, "map out written on failure");
            return;
        }
        if (p != NULL && p->shut) {
            FZ_STATUS_IN(st, "cf_map_new after shutdown", CF_SHUTDOWN, CF_BROKEN, CF_OK);
            if (n > 0) FZ_CHECK(st != CF_OK, "cf_map_new on a shut-down pool gave CF_OK");
        } else {
            FZ_STATUS_IN(st, "cf_map_new", CF_OK, CF_BROKEN, CF_SHUTDOWN, CF_OS_ERROR);
        }
        if (st != CF_OK) return;
        mi->m = m;
        mi->bytes = bytes;
        mi->n = n;
        mi->failing = failing;
        mi->may_break = (p != NULL && p->may_break) || process;
        mi->unbounded = t.unbounded;
        return;
    }
    int times = 1 + (b >> 4) % 8;
    for (int k = 0; k < times; k++) {
        int code = 7;
        const char *msg = "x";
        cf_status st;
        void *v = (void *)(uintptr_t)0x2;
        cf_bytes bb = {NULL, 0};
        bool use_bytes = mi->bytes && (b & 2);
        if (!mi->bytes && (b & 0x80) && !(b & 2)) {
            /* cf_map_next_n: many at once, the same items in the same order. */
            void *vals[5];
            size_t max = 1 + (size_t)k % 5, nr = 99;
            st = cf_map_next_n(mi->m, vals, max, &nr, (b & 4) ? NULL : &code, (b & 8) ? NULL : &msg);
            if (st == CF_OK) {
                FZ_CHECK(nr >= 1 && nr <= max, "cf_map_next_n read %zu of at most %zu", nr, max);
                for (size_t j = 0; j < nr; j++) {
                    FZ_CHECK(mi->next < mi->n, "cf_map_next_n read past the end");
                    size_t i = mi->next++;
                    uintptr_t a = (uintptr_t)mi->args[i];
                    FZ_CHECK(vals[j] == mi->args[i], "map item %zu gave %p, expected %p", i, vals[j],
                             mi->args[i]);
                    FZ_CHECK(!mi->failing || a % 7 != 3, "map item %zu should have failed", i);
                }
                continue;
            }
            FZ_CHECK(nr == 0, "cf_map_next_n: n_read %zu with %s", nr, cf_status_name(st));
        } else if (use_bytes)
            st = cf_map_next_bytes(mi->m, &bb, (b & 4) ? NULL : &code, (b & 8) ? NULL : &msg);
        else if (!mi->bytes && (b & 2))
            st = cf_map_next_bytes(mi->m, &bb, &code, &msg);
        else
            st = cf_map_next(mi->m, &v, (b & 4) ? NULL : &code, (b & 8) ? NULL : &msg);
        if (!mi->bytes && (b & 2)) {
            FZ_STATUS_IN(st, "cf_map_next_bytes on a pointer map", CF_INVALID_ARGUMENT);
            return;
        }
        FZ_STATUS_IN(st, "cf_map_next", CF_OK, CF_TIMEOUT, CF_END, CF_TASK_FAILED, CF_BROKEN,
                     CF_CANCELLED);
        if (mi->stopped || mi->next == mi->n)
            FZ_CHECK(st == CF_END, "map gave %s after its end", cf_status_name(st));
        if (st == CF_END) {
            FZ_CHECK(mi->stopped || mi->next == mi->n, "CF_END at item %zu of %zu", mi->next, mi->n);
            return;
        }
        if (st == CF_TIMEOUT) {
            FZ_CHECK(!mi->unbounded, "cf_map_next: CF_TIMEOUT with an unbounded timeout");
            return;
        }
        size_t i = mi->next++;
        uintptr_t a = (uintptr_t)mi->args[i];
        if (st == CF_OK) {
            if (use_bytes) {
                if (a == 0) FZ_CHECK(bb.len == 0, "empty item gave %zu bytes", bb.len);
                else FZ_CHECK(bb.len == 1 && ((const uint8_t *)bb.data)[0] == (uint8_t)a,
                              "map_bytes item %zu wrong", i);
            } else if (!mi->bytes) {
                FZ_CHECK(v == mi->args[i], "map item %zu gave %p, expected %p", i, v, mi->args[i]);
                FZ_CHECK(!mi->failing || a % 7 != 3, "map item %zu should have failed", i);
            }
        } else {
            if (st == CF_TASK_FAILED) {
                FZ_CHECK(mi->failing, "map item %zu failed in a map that cannot fail", i);
                if (!mi->bytes && !(b & 4)) FZ_CHECK(code == (int)a, "map item code %d, expected %d", code, (int)a);
            }
            if (st == CF_BROKEN) FZ_CHECK(mi->may_break, "map item %zu broke", i);
            mi->stopped = true;
        }
    }
}

static void op_status_name(reader *r) {
    uint32_t v = rd_u32(r);
    const char *n = cf_status_name(v);
    FZ_CHECK(n != NULL && strncmp(n, "CF_", 3) == 0, "cf_status_name(%u)", v);
    if (v > CF_DEADLINE) FZ_CHECK(strcmp(n, "CF_UNKNOWN_STATUS") == 0, "cf_status_name(%u) = %s", v, n);
    const char *ver = cf_version();
    FZ_CHECK(ver != NULL && strcmp(ver, CF_VERSION) == 0, "cf_version");
}

/* Every function with NULL handles / out-parameters. */
static void op_nulls(state *s, reader *r) {
    uint8_t b = rd_u8(r);
    cf_future *f = NULL;
    fslot *fs = pick_fut(s, r);
    void *v;
    int code;
    const char *msg;
    cf_bytes bb;
    switch (b % 16) {
    case 0: FZ_STATUS_IN(cf_thread_pool_new(NULL, NULL), "pool_new(NULL out)", CF_INVALID_ARGUMENT); break;
    case 1: FZ_STATUS_IN(cf_process_pool_new(NULL, NULL), "process_pool_new(NULL out)", CF_INVALID_ARGUMENT); break;
    case 2: FZ_STATUS_IN(cf_submit(NULL, task_ret, NULL, &f), "submit(NULL)", CF_INVALID_ARGUMENT); break;
    case 3: FZ_STATUS_IN(cf_executor_shutdown(NULL, true, true), "shutdown(NULL)", CF_INVALID_ARGUMENT); break;
    case 4: cf_executor_free(NULL); FZ_CHECK(cf_executor_worker_count(NULL) == 0, "count(NULL)"); break;
    case 5:
        FZ_CHECK(cf_future_state(NULL) == CF_STATE_PENDING && !cf_future_done(NULL) &&
                     !cf_future_running(NULL) && !cf_future_cancelled(NULL) && !cf_future_cancel(NULL),
                 "queries on NULL");
        break;
    case 6: FZ_STATUS_IN(cf_future_wait(NULL, 0.0), "wait(NULL)", CF_INVALID_ARGUMENT); break;
    case 7:
        FZ_STATUS_IN(cf_future_exception(NULL, 0.0, &code, &msg), "exception(NULL)", CF_INVALID_ARGUMENT);
        if (fs) FZ_STATUS_IN(cf_future_exception(fs->f, 0.0, &code, NULL), "exception(NULL msg)", CF_INVALID_ARGUMENT);
        break;
    case 8: FZ_STATUS_IN(cf_future_result_bytes(NULL, 0.0, &bb), "result_bytes(NULL)", CF_INVALID_ARGUMENT); break;
    case 9:
        FZ_STATUS_IN(cf_future_set_result(NULL, NULL), "set_result(NULL)", CF_INVALID_ARGUMENT);
        FZ_STATUS_IN(cf_future_set_exception(NULL, 1, NULL), "set_exception(NULL)", CF_INVALID_ARGUMENT);
        FZ_STATUS_IN(cf_future_set_running_or_notify_cancel(NULL), "set_running(NULL)", CF_INVALID_ARGUMENT);
        break;
    case 10:
        FZ_STATUS_IN(cf_map_new(NULL, task_ret, NULL, 0, 0, 0.0, NULL), "map_new(NULL)", CF_INVALID_ARGUMENT);
        FZ_STATUS_IN(cf_map_bytes_new(NULL, bytes_echo, NULL, 0, 0, 0.0, NULL), "map_bytes_new(NULL)", CF_INVALID_ARGUMENT);
        break;
    case 11:
        FZ_STATUS_IN(cf_map_next(NULL, &v, &code, &msg), "map_next(NULL)", CF_INVALID_ARGUMENT);
        FZ_STATUS_IN(cf_map_next_n(NULL, &v, 1, &(size_t){0}, NULL, NULL), "map_next_n(NULL)", CF_INVALID_ARGUMENT);
        FZ_STATUS_IN(cf_map_next_bytes(NULL, &bb, NULL, NULL), "map_next_bytes(NULL)", CF_INVALID_ARGUMENT);
        cf_map_free(NULL);
        break;
    case 12:
        FZ_STATUS_IN(cf_as_completed_new(NULL, 0, 0.0, NULL), "as_completed_new(NULL out)", CF_INVALID_ARGUMENT);
        FZ_STATUS_IN(cf_as_completed_next(NULL, &f), "as_completed_next(NULL)", CF_INVALID_ARGUMENT);
        cf_as_completed_free(NULL);
        break;
    case 13:
        FZ_CHECK(cf_raise(1, "outside a task") == NULL, "cf_raise outside a task");
        FZ_CHECK(cf_raise(2, NULL) == NULL, "cf_raise outside a task");
        break;
    case 14:
        FZ_STATUS_IN(cf_wait(NULL, 0, CF_ALL_COMPLETED, 0.0, NULL, NULL), "cf_wait(NULL, 0)", CF_OK);
        FZ_STATUS_IN(cf_wait(NULL, 3, CF_ALL_COMPLETED, 0.0, NULL, NULL), "cf_wait(NULL, 3)", CF_INVALID_ARGUMENT);
        break;
    default:
        if (fs) FZ_STATUS_IN(cf_future_result(fs->f, 0.0, NULL), "result(NULL out)", CF_INVALID_ARGUMENT);
        FZ_STATUS_IN(cf_future_new(NULL), "future_new(NULL)", CF_INVALID_ARGUMENT);
        break;
    }
}

static void op_worker_count(state *s, reader *r) {
    pslot *p = &s->pools[rd_u8(r) % MAX_POOLS];
    if (p->ex == NULL) return;
    size_t n = cf_executor_worker_count(p->ex);
    FZ_CHECK(n <= p->max_workers, "%zu workers, at most %zu", n, p->max_workers);
}

/* ---- one input ----------------------------------------------------------------------- */

static void cleanup(state *s) {
    /* Iterators first (they hold references of their own), then complete every promise the
     * harness still holds, free the pools (every task runs or is cancelled, every worker
     * exits: callbacks on their threads are over), drop the references. */
    for (int i = 0; i < MAX_ITERS; i++) {
        cf_as_completed_free(s->iters[i].ac);
        cf_map_free(s->maps[i].m);
    }
    for (int i = 0; i < MAX_FUTS; i++) {
        fslot *fs = &s->futs[i];
        if (fs->refs > 0 && fs->kind == K_PROMISE) {
            cf_status st = cf_future_set_result(fs->f, fs->e.value);
            FZ_STATUS_IN(st, "cf_future_set_result at cleanup", CF_OK, CF_INVALID_STATE);
        }
    }
    for (int i = 0; i < MAX_POOLS; i++) cf_executor_free(s->pools[i].ex);
    for (int i = 0; i < MAX_FUTS; i++) {
        fslot *fs = &s->futs[i];
        if (fs->refs > 0 && !fs->process)
            FZ_CHECK(cf_future_done(fs->f) || fs->kind == K_PROMISE,
                     "a task future is not done after its pool was freed");
        while (fs->refs > 0) drop_ref(s, fs);
    }
    /* Process-pool futures: wait for each, then for the callbacks on it (they run on a
     * driver thread, possibly just after the wait returns). */
    for (size_t i = 0; i < s->npx; i++) {
        cf_status st = cf_future_wait(s->px[i], CF_FOREVER);
        FZ_STATUS_IN(st, "cf_future_wait(process future) at cleanup", CF_OK);
    }
    double deadline = now_s() + 30.0;
    for (size_t i = 0; i < s->nrecs; i++) {
        record *rec = s->recs[i];
        if (!rec->process) continue;
        while (atomic_load(&rec->count) == 0) {
            FZ_CHECK(now_s() < deadline, "a callback on a done process-pool future never ran");
            sleep_us(100);
        }
    }
    for (size_t i = 0; i < s->npx; i++) cf_future_release(s->px[i]);
    for (size_t i = 0; i < s->nrecs; i++) {
        record *rec = s->recs[i];
        FZ_CHECK(atomic_load(&rec->count) <= 1, "a done callback ran %d times", atomic_load(&rec->count));
        FZ_CHECK(atomic_load(&rec->bad_future) == 0, "a done callback got another future");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const names[24] = {
        "pool_new", "pool_free", "pool_shutdown", "submit", "submit", "submit", "submit_bytes",
        "promise_new", "promise_new", "promise_complete", "promise_complete", "cancel", "read",
        "read", "callback", "callback", "refs", "wait_many", "as_completed", "map",
        "status_name", "nulls", "worker_count", "yield"};
    static int trace = -1; /* CF_FUZZ_TRACE=1: print each operation on stderr */
    if (trace < 0) trace = getenv("CF_FUZZ_TRACE") != NULL && getenv("CF_FUZZ_TRACE")[0] == '1';
    static state s; /* static: large, and zeroed below */
    memset(&s, 0, sizeof s);
    reader r = {data, size, 0};
    int ops = 0;
    while (rd_more(&r) && ops++ < 200) {
        if (trace) fprintf(stderr, "  @%zu %s\n", r.i, names[r.p[r.i] % 24]);
        uint8_t op = rd_u8(&r);
        switch (op % 24) {
        case 0: op_pool_new(&s, &r); break;
        case 1: op_pool_free(&s, &r); break;
        case 2: op_pool_shutdown(&s, &r); break;
        case 3: case 4: case 5: op_submit(&s, &r, false); break;
        case 6: op_submit(&s, &r, true); break;
        case 7: case 8: op_promise_new(&s, &r); break;
        case 9: case 10: op_promise_complete(&s, &r); break;
        case 11: op_cancel(&s, &r); break;
        case 12: case 13: op_read(&s, &r); break;
        case 14: case 15: op_callback(&s, &r); break;
        case 16: op_refs(&s, &r); break;
        case 17: op_wait_many(&s, &r); break;
        case 18: op_as_completed(&s, &r); break;
        case 19: op_map(&s, &r); break;
        case 20: op_status_name(&r); break;
        case 21: op_nulls(&s, &r); break;
        case 22: op_worker_count(&s, &r); break;
        default: sched_yield(); break;
        }
    }
    cleanup(&s);
    return 0;
}
