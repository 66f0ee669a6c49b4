/* test_process_basic.c: process pools, the basics.
 *
 * Covers: cf_process_pool_new bad input (NULL out, max_workers > CF_MAX_WORKERS, with
 * *out untouched) and CF_MAX_WORKERS itself; workers start lazily (0 after creation) and
 * an idle worker is reused; the default max_workers is the number of CPUs (saturation);
 * submit/result with the worker's pid (not ours); pointer-sized args and results
 * round-trip exactly; the state a worker starts from is the program as of
 * cf_process_pool_new (a global set before is seen, one set after is not; memory that
 * existed then is readable through a pointer arg; a worker's writes never reach the
 * parent); 2000 tasks with correct results; cf_raise carrying code and message (NULL
 * message, negative code, last call wins, a 64 KiB message, a return value after
 * cf_raise ignored); done callbacks on process-pool futures (added before and after
 * completion, in order, in the adding thread when already done, submitting new work from
 * a callback); cf_future_cancel on a queued task (it never runs) and on a running one;
 * after cf_executor_free no worker and no child process is left.
 *
 * Ports from CPython Lib/test/test_concurrent_futures:
 *   executor.py: ExecutorTest.test_submit, test_submit_keyword, test_map_exception (as
 *     the failing-task checks), test_max_workers_negative (as the bad-input checks);
 *   test_process_pool.py: ProcessPoolExecutorTest.test_max_workers_too_large,
 *     test_saturation, test_idle_process_reuse_one, test_idle_process_reuse_multiple,
 *     test_traceback (the error crosses the process boundary with its message);
 *   test_future.py: FutureTests.test_done_callback_with_result,
 *     test_done_callback_already_successful (on process-pool futures). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

#include <sys/prctl.h>

#define SENTINEL_EX ((cf_executor *)(uintptr_t)0x5e5e5e5eu)
#define SENTINEL_FUT ((cf_future *)(uintptr_t)0x5e5e5e5eu)
#define SENTINEL_RES ((void *)(uintptr_t)0x7a7a7a7au)

/* Shared with every worker: created in main before the first pool. */
typedef struct shared {
    px_gate gate;     /* for the saturation test */
    px_gate gate2;    /* for the cancel test */
    px_gate gate3;    /* for the callback test */
    atomic_int runs;  /* t_count_run */
} shared;
static shared *S;

/* ---- tasks (run in worker processes) ----------------------------------------------- */

static void *t_square_plus(void *arg) {
    intptr_t x = PX_P2I(arg);
    return PX_I2P(x * x + 1);
}

static void *t_count_run(void *arg) {
    px_add(&S->runs, 1);
    return arg;
}

/* arg -> ~arg: every bit of the pointer-sized value matters. */
static void *t_invert(void *arg) { return (void *)~(uintptr_t)arg; }

static intptr_t g_global = 1;
static void *t_read_global(void *arg) {
    (void)arg;
    return PX_I2P(g_global);
}
/* Writes the worker's copy of the global, returns the value it had. */
static void *t_write_global(void *arg) {
    intptr_t old = g_global;
    g_global = PX_P2I(arg);
    return PX_I2P(old);
}

typedef struct blob {
    size_t n;
    unsigned char data[];
} blob;
/* Sums the bytes of a blob that existed in the parent when the pool was made. */
static void *t_sum_blob(void *arg) {
    const blob *b = (const blob *)arg;
    uintptr_t s = 0;
    for (size_t i = 0; i < b->n; i++) s = s * 31u + b->data[i];
    return (void *)s;
}
static uintptr_t sum_blob(const blob *b) {
    uintptr_t s = 0;
    for (size_t i = 0; i < b->n; i++) s = s * 31u + b->data[i];
    return s;
}

static void *t_raise_fmt(void *arg) {
    char msg[64];
    snprintf(msg, sizeof msg, "task %d failed in %ld", (int)PX_P2I(arg), (long)getpid());
    return cf_raise((int)PX_P2I(arg), msg);
}
static void *t_raise_null(void *arg) {
    (void)arg;
    return cf_raise(-42, NULL);
}
static void *t_raise_twice(void *arg) {
    (void)arg;
    cf_raise(1, "first");
    cf_raise(2, "second");
    return NULL;
}
static void *t_raise_then_return(void *arg) {
    (void)arg;
    cf_raise(EDOM, "raised, then returned a value");
    return PX_I2P(12345);
}
#define LONG_MSG 65536
static void *t_raise_long(void *arg) {
    (void)arg;
    char *m = malloc(LONG_MSG + 1);
    if (!m) return cf_raise(ENOMEM, "malloc");
    for (size_t i = 0; i < LONG_MSG; i++) m[i] = (char)('a' + i % 26);
    m[LONG_MSG] = '\0';
    cf_raise(E2BIG, m);
    free(m);
    return NULL;
}

/* The worker's process name (PR_GET_NAME), as bytes. */
static void *b_comm(const void *in, size_t len, size_t *out_len) {
    (void)in;
    (void)len;
    char *name = calloc(1, 17);
    if (!name) return cf_raise(ENOMEM, "malloc");
    if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0) {
        free(name);
        return cf_raise(errno, "prctl(PR_GET_NAME)");
    }
    *out_len = strlen(name);
    return name;
}

/* ---- 1. bad input, CF_MAX_WORKERS, lazy workers ------------------------------------ */

static void test_bad_input(void) {
    px_phase("bad input");
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    CHECK_STATUS(cf_process_pool_new(NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_process_pool_new(&o, NULL), CF_INVALID_ARGUMENT);

    cf_executor *ex = SENTINEL_EX;
    o.max_workers = (size_t)CF_MAX_WORKERS + 1;
    CHECK_STATUS(cf_process_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);
    o.max_workers = SIZE_MAX;
    CHECK_STATUS(cf_process_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);

    /* The ceiling itself is fine; workers are lazy, so nothing like 1024 processes. */
    o.max_workers = CF_MAX_WORKERS;
    ex = NULL;
    CHECK_OK(cf_process_pool_new(&o, &ex));
    CHECK(ex != NULL);
    PX_CHECK_EQ(cf_executor_worker_count(ex), 0);
    cf_future *f = px_submit(ex, px_task_getpid, NULL);
    CHECK(px_result(f) != (intptr_t)getpid());
    PX_CHECK_EQ(cf_executor_worker_count(ex), 1);
    cf_future_release(f);
    cf_executor_free(ex);

    /* NULL options: all defaults. */
    ex = NULL;
    CHECK_OK(cf_process_pool_new(NULL, &ex));
    CHECK(ex != NULL);
    PX_CHECK_EQ(cf_executor_worker_count(ex), 0);
    CHECK_STATUS(cf_submit(ex, NULL, NULL, &f), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit(ex, px_task_getpid, NULL, NULL), CF_INVALID_ARGUMENT);
    PX_CHECK_EQ(cf_executor_worker_count(ex), 0);
    cf_executor_free(ex);
    PX_CHECK_NO_CHILDREN();
}

/* ---- 2. submit/result, pids, lazy start and reuse ---------------------------------- */

static void test_submit_pids(void) {
    px_phase("submit/result with pids; idle worker reuse");
    cf_executor *ex = px_pool(4, 0);
    PX_CHECK_EQ(cf_executor_worker_count(ex), 0);

    cf_future *f = px_submit(ex, px_task_getpid, NULL);
    long pid = (long)px_result(f);
    CHECK(pid > 0);
    CHECK(pid != (long)getpid());
    PX_CHECK_EQ(cf_future_state(f), CF_STATE_FINISHED);
    CHECK(cf_future_done(f));
    CHECK(!cf_future_running(f));
    CHECK(!cf_future_cancelled(f));
    CHECK(!cf_future_cancel(f));
    int code = 7;
    const char *msg = "x";
    CHECK_OK(cf_future_exception(f, 0, &code, &msg));
    PX_CHECK_EQ(code, 0);
    CHECK(msg == NULL);
    cf_future_release(f);

    /* test_idle_process_reuse_one: tasks one after the other reuse the idle worker. */
    long pids[10];
    for (int i = 0; i < 10; i++) {
        f = px_submit(ex, px_task_getpid, NULL);
        pids[i] = (long)px_result(f);
        cf_future_release(f);
    }
    PX_CHECK_EQ(px_distinct(pids, 10), 1);
    PX_CHECK_EQ(pids[0], pid);
    PX_CHECK_EQ(cf_executor_worker_count(ex), 1);

    /* Pointer-sized values round-trip exactly, all bits. */
    uintptr_t vals[] = {0, 1, 0x80u, (uintptr_t)-1, (uintptr_t)INTPTR_MAX,
                        (uintptr_t)INTPTR_MIN, (uintptr_t)0x0123456789abcdefull};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        f = px_submit(ex, t_invert, (void *)vals[i]);
        CHECK((uintptr_t)px_result(f) == ~vals[i]);
        cf_future_release(f);
        f = px_submit(ex, px_task_ident, (void *)vals[i]);
        CHECK((uintptr_t)px_result(f) == vals[i]);
        cf_future_release(f);
    }

    /* A timeout of 0 on a finished future, and cf_future_wait. */
    f = px_submit(ex, t_square_plus, PX_I2P(-3));
    CHECK_OK(cf_future_wait(f, PX_LONG));
    void *r = SENTINEL_RES;
    CHECK_OK(cf_future_result(f, 0, &r));
    PX_CHECK_EQ(PX_P2I(r), 10);
    cf_future_release(f);

    cf_executor_free(ex);
    PX_CHECK_PIDS_GONE(pids, 10);
    PX_CHECK_NO_CHILDREN();
}

/* Workers carry "<prefix>_<n>" as their process name (the header's documentation). */
static void test_worker_names(void) {
    px_phase("worker process names");
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 2;
    o.name_prefix = "pxname";
    cf_executor *ex = NULL;
    CHECK_OK(cf_process_pool_new(&o, &ex));
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_comm, NULL, 0, &f));
    cf_bytes b;
    CHECK_OK(cf_future_result_bytes(f, PX_LONG, &b));
    char name[32] = {0};
    memcpy(name, b.data, b.len < 31 ? b.len : 31);
    fprintf(stderr, "   worker name \"%s\"\n", name);
    CHECK(strncmp(name, "pxname_", 7) == 0);
    CHECK(name[7] >= '0' && name[7] <= '9');
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ---- 3. default max_workers = CPUs (test_saturation) ------------------------------- */

static void test_default_max_workers(void) {
    px_phase("default max_workers (saturation)");
    long aff = px_cpus_affinity(), onl = px_cpus_online();
    if (aff < 1) aff = onl;
    long lo = aff < onl ? aff : onl, hi = aff < onl ? onl : aff;
    if (hi > 32) {
        fprintf(stderr, "   (skipped: %ld CPUs is more blocked workers than this test makes)\n", hi);
        return;
    }
    memset(&S->gate, 0, sizeof S->gate);
    cf_executor *ex = NULL;
    CHECK_OK(cf_process_pool_new(NULL, &ex));
    int n = (int)(2 * hi + 2);
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    CHECK(fs != NULL);
    for (int i = 0; i < n; i++) fs[i] = px_submit(ex, px_gate_task, &S->gate);
    CHECK(px_wait_ge(&S->gate.started, (int)lo, PX_LONG));
    /* The queue must not make progress past max_workers: give it a fair chance to. */
    CHECK_STATUS(cf_future_wait(fs[n - 1], 0.3), CF_TIMEOUT);
    int started = atomic_load(&S->gate.started);
    if (started != lo && started != hi)
        fprintf(stderr, "   %d tasks started at once; CPUs: %ld (affinity), %ld (online)\n",
                started, aff, onl);
    CHECK(started == lo || started == hi);
    PX_CHECK_EQ(cf_executor_worker_count(ex), started);
    px_add(&S->gate.open, 1);
    long *pids = calloc((size_t)n, sizeof *pids);
    CHECK(pids != NULL);
    for (int i = 0; i < n; i++) {
        pids[i] = (long)px_result(fs[i]);
        cf_future_release(fs[i]);
    }
    PX_CHECK_EQ(px_distinct(pids, (size_t)n), started);
    PX_CHECK_EQ(cf_executor_worker_count(ex), started);
    cf_executor_free(ex);
    PX_CHECK_EQ(cf_executor_worker_count(NULL), 0);
    PX_CHECK_PIDS_GONE(pids, (size_t)n);
    PX_CHECK_NO_CHILDREN();
    free(pids);
    free(fs);
}

/* ---- 4. the state a worker starts from --------------------------------------------- */

static void test_worker_state(void) {
    px_phase("worker state: the program as of cf_process_pool_new");
    g_global = 41;
    blob *b = malloc(sizeof *b + 1000);
    CHECK(b != NULL);
    b->n = 1000;
    for (size_t i = 0; i < b->n; i++) b->data[i] = (unsigned char)(i * 7 + 3);
    uintptr_t want_sum = sum_blob(b);

    cf_executor *ex = px_pool(1, 0);
    g_global = 99; /* after the pool was made: workers must not see it */
    memset(b->data, 0, b->n);

    cf_future *f = px_submit(ex, t_read_global, NULL);
    PX_CHECK_EQ(px_result(f), 41);
    cf_future_release(f);

    f = px_submit(ex, t_sum_blob, b);
    CHECK((uintptr_t)px_result(f) == want_sum);
    cf_future_release(f);

    /* A worker's writes stay in the worker (and persist there: the one worker is reused). */
    f = px_submit(ex, t_write_global, PX_I2P(7));
    PX_CHECK_EQ(px_result(f), 41);
    cf_future_release(f);
    PX_CHECK_EQ(g_global, 99);
    f = px_submit(ex, t_read_global, NULL);
    PX_CHECK_EQ(px_result(f), 7);
    cf_future_release(f);
    PX_CHECK_EQ(g_global, 99);
    cf_executor_free(ex);

    /* A pool made now starts from the program as it is now. */
    ex = px_pool(1, 0);
    f = px_submit(ex, t_read_global, NULL);
    PX_CHECK_EQ(px_result(f), 99);
    cf_future_release(f);
    f = px_submit(ex, t_sum_blob, b);
    CHECK((uintptr_t)px_result(f) == 0);
    cf_future_release(f);
    cf_executor_free(ex);
    free(b);
    PX_CHECK_NO_CHILDREN();
}

/* ---- 5. many tasks ----------------------------------------------------------------- */

static void test_many_tasks(void) {
    px_phase("2000 tasks");
    enum { N = 2000 };
    cf_executor *ex = px_pool(2, 0);
    cf_future **fs = calloc(N, sizeof *fs);
    CHECK(fs != NULL);
    for (int i = 0; i < N; i++) fs[i] = px_submit(ex, t_square_plus, PX_I2P(i - 1000));
    for (int i = 0; i < N; i++) {
        intptr_t x = i - 1000;
        PX_CHECK_EQ(px_result(fs[i]), x * x + 1);
    }
    CHECK(cf_executor_worker_count(ex) >= 1 && cf_executor_worker_count(ex) <= 2);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);

    /* The same through the default pool, released before they finish. */
    atomic_store(&S->runs, 0);
    for (int i = 0; i < N; i++) {
        cf_future *f = px_submit(ex, t_count_run, NULL);
        cf_future_release(f);
    }
    cf_executor_free(ex); /* waits for all of them */
    PX_CHECK_EQ(atomic_load(&S->runs), N);
    free(fs);
    PX_CHECK_NO_CHILDREN();
}

/* ---- 6. cf_raise across the process boundary --------------------------------------- */

static void test_raise(void) {
    px_phase("cf_raise carries code and message");
    cf_executor *ex = px_pool(2, 0);
    int code;
    const char *msg;
    void *r;

    for (int c = 1; c <= 20; c++) {
        cf_future *f = px_submit(ex, t_raise_fmt, PX_I2P(c * 11));
        r = SENTINEL_RES;
        CHECK_STATUS(cf_future_result(f, PX_LONG, &r), CF_TASK_FAILED);
        CHECK(r == SENTINEL_RES);
        CHECK_STATUS(px_outcome(f, &code, &msg), CF_TASK_FAILED);
        PX_CHECK_EQ(code, c * 11);
        char want[64];
        snprintf(want, sizeof want, "task %d failed in ", c * 11);
        CHECK(msg != NULL && strncmp(msg, want, strlen(want)) == 0);
        long wpid = atol(msg + strlen(want));
        CHECK(wpid > 0 && wpid != (long)getpid()); /* it really ran in a worker */
        PX_CHECK_EQ(cf_future_state(f), CF_STATE_FINISHED);
        cf_future_release(f);
    }

    cf_future *f = px_submit(ex, t_raise_null, NULL);
    CHECK_STATUS(px_outcome(f, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, -42);
    CHECK(msg == NULL);
    cf_future_release(f);

    f = px_submit(ex, t_raise_twice, NULL);
    CHECK_STATUS(px_outcome(f, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, 2);
    PX_CHECK_STREQ(msg, "second");
    cf_future_release(f);

    f = px_submit(ex, t_raise_then_return, NULL);
    r = SENTINEL_RES;
    CHECK_STATUS(cf_future_result(f, PX_LONG, &r), CF_TASK_FAILED);
    CHECK(r == SENTINEL_RES);
    CHECK_STATUS(px_outcome(f, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, EDOM);
    PX_CHECK_STREQ(msg, "raised, then returned a value");
    cf_future_release(f);

    f = px_submit(ex, t_raise_long, NULL);
    CHECK_STATUS(px_outcome(f, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, E2BIG);
    CHECK(msg != NULL);
    PX_CHECK_EQ(strlen(msg), LONG_MSG);
    for (size_t i = 0; i < LONG_MSG; i++) CHECK(msg[i] == (char)('a' + i % 26));
    cf_future_release(f);

    /* The pool is fine after failures (nothing is broken). */
    f = px_submit(ex, t_square_plus, PX_I2P(5));
    PX_CHECK_EQ(px_result(f), 26);
    cf_future_release(f);

    /* cf_raise in the parent, outside a task, does nothing. */
    CHECK(cf_raise(1, "outside") == NULL);
    cf_executor_free(ex);
    PX_CHECK_NO_CHILDREN();
}

/* ---- 7. done callbacks on process-pool futures ------------------------------------- */

static gate cb_gate;
static atomic_int cb_seq;
static atomic_int cb_first, cb_second; /* position (1-based) at which each ran */
static atomic_int cb_saw_done, cb_result;
static pthread_t cb_thread;
static cf_executor *cb_ex;
static cf_future *cb_sub; /* submitted from a callback */

static void cb_one(cf_future *f, void *ud) {
    (void)ud;
    void *r = NULL;
    if (cf_future_done(f) && cf_future_result(f, 0, &r) == CF_OK) {
        atomic_store(&cb_saw_done, 1);
        atomic_store(&cb_result, (int)PX_P2I(r));
    }
    atomic_store(&cb_first, atomic_fetch_add(&cb_seq, 1) + 1);
}
static void cb_two(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    atomic_store(&cb_second, atomic_fetch_add(&cb_seq, 1) + 1);
    /* Submitting new work from a callback (run by the library's thread). */
    cf_future *g = NULL;
    if (cf_submit(cb_ex, t_square_plus, PX_I2P(9), &g) == CF_OK) cb_sub = g;
    gate_open(&cb_gate);
}
static void cb_here(cf_future *f, void *ud) {
    (void)f;
    cb_thread = pthread_self();
    atomic_fetch_add((atomic_int *)ud, 1);
}

static void test_callbacks(void) {
    px_phase("done callbacks");
    gate_init(&cb_gate);
    memset(&S->gate3, 0, sizeof S->gate3);
    cb_ex = px_pool(2, 0);

    cf_future *f = px_submit(cb_ex, px_gate_task, &S->gate3);
    CHECK(px_wait_ge(&S->gate3.started, 1, PX_LONG));
    CHECK(cf_future_running(f));
    CHECK_OK(cf_future_add_done_callback(f, cb_one, NULL));
    CHECK_OK(cf_future_add_done_callback(f, cb_two, NULL));
    PX_CHECK_EQ(atomic_load(&cb_seq), 0);
    px_add(&S->gate3.open, 1);
    long pid = (long)px_result(f);
    gate_wait(&cb_gate);
    PX_CHECK_EQ(atomic_load(&cb_first), 1);
    PX_CHECK_EQ(atomic_load(&cb_second), 2);
    PX_CHECK_EQ(atomic_load(&cb_saw_done), 1);
    PX_CHECK_EQ(atomic_load(&cb_result), pid);
    CHECK(cb_sub != NULL);
    PX_CHECK_EQ(px_result(cb_sub), 82);
    cf_future_release(cb_sub);

    /* Added after completion: runs at once, in this thread. */
    atomic_int here = 0;
    CHECK_OK(cf_future_add_done_callback(f, cb_here, &here));
    PX_CHECK_EQ(atomic_load(&here), 1);
    CHECK(pthread_equal(cb_thread, pthread_self()));
    PX_CHECK_EQ(atomic_load(&cb_seq), 2); /* the earlier ones ran exactly once */
    cf_future_release(f);

    /* A callback on a failed task runs too. */
    atomic_int failed_cb = 0;
    f = px_submit(cb_ex, t_raise_fmt, PX_I2P(3));
    int code;
    const char *msg;
    CHECK_STATUS(px_outcome(f, &code, &msg), CF_TASK_FAILED);
    CHECK_OK(cf_future_add_done_callback(f, cb_here, &failed_cb));
    PX_CHECK_EQ(atomic_load(&failed_cb), 1);
    cf_future_release(f);

    cf_executor_free(cb_ex);
    gate_destroy(&cb_gate);
    PX_CHECK_NO_CHILDREN();
}

/* ---- 8. cancel a queued task ------------------------------------------------------- */

static void test_cancel_queued(void) {
    px_phase("cf_future_cancel on queued and running tasks");
    enum { Q = 10 };
    memset(&S->gate2, 0, sizeof S->gate2);
    atomic_store(&S->runs, 0);
    cf_executor *ex = px_pool(1, 0);
    cf_future *running = px_submit(ex, px_gate_task, &S->gate2);
    CHECK(px_wait_ge(&S->gate2.started, 1, PX_LONG));
    cf_future *q[Q];
    for (int i = 0; i < Q; i++) q[i] = px_submit(ex, t_count_run, PX_I2P(i));

    CHECK(!cf_future_cancel(running));
    CHECK(cf_future_running(running));
    /* The last one queued is surely not started: the only worker is busy. */
    CHECK(cf_future_cancel(q[Q - 1]));
    CHECK(cf_future_cancel(q[Q - 1])); /* already cancelled: still true */
    CHECK(cf_future_cancelled(q[Q - 1]));
    PX_CHECK_EQ(cf_future_state(q[Q - 1]), CF_STATE_CANCELLED);
    void *r = SENTINEL_RES;
    CHECK_STATUS(cf_future_result(q[Q - 1], 0, &r), CF_CANCELLED);
    CHECK(r == SENTINEL_RES);

    px_add(&S->gate2.open, 1);
    CHECK(px_result(running) > 0);
    for (int i = 0; i < Q - 1; i++) PX_CHECK_EQ(px_result(q[i]), i);
    cf_executor_free(ex);
    PX_CHECK_EQ(atomic_load(&S->runs), Q - 1); /* the cancelled task never ran */
    cf_future_release(running);
    for (int i = 0; i < Q; i++) cf_future_release(q[i]);
    PX_CHECK_NO_CHILDREN();
}

int main(void) {
    px_watchdog(100);
    S = px_shm_new(sizeof *S);
    test_bad_input();
    test_submit_pids();
    test_worker_names();
    test_default_max_workers();
    test_worker_state();
    test_many_tasks();
    test_raise();
    test_callbacks();
    test_cancel_queued();
    px_shm_free(S, sizeof *S);
    fprintf(stderr, "test_process_basic: all passed\n");
    return 0;
}
