/* cf_map_new / cf_map_next / cf_map_free: Python's Executor.map on thread pools.
 * Ported from CPython Lib/test/test_concurrent_futures/executor.py (named per test),
 * plus the cases of the C contract: chunking, failure, timeout, free, bad input. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <cfutures.h>

#include "test_util.h"
#include "test_util_many.h"

#include <stdint.h>

/* ---- the mapped task, configured per test ------------------------------------------ */

static size_t g_fail_at;     /* this item fails with code 100 + x, "item <x> failed" */
static size_t g_block_from;  /* items in [g_block_from, g_block_to) wait for g_gate */
static size_t g_block_to;
static bool g_vary;          /* items take varying times */
static gate g_gate;
static atomic_int g_executed;       /* items that started */
static atomic_int g_blocked;        /* items that started waiting for g_gate */

static void cfg_begin(void) {
    g_fail_at = SIZE_MAX;
    g_block_from = SIZE_MAX;
    g_block_to = SIZE_MAX;
    g_vary = false;
    gate_init(&g_gate);
    atomic_store(&g_executed, 0);
    atomic_store(&g_blocked, 0);
}
static void cfg_end(void) { gate_destroy(&g_gate); }

static uintptr_t expect(size_t x) { return (uintptr_t)(x * x + 1); }

static void *map_task(void *arg) {
    size_t x = (size_t)P2U(arg);
    atomic_fetch_add(&g_executed, 1);
    if (g_vary) sleep_s((double)((x * 7) % 5) * 0.0004);
    if (x >= g_block_from && x < g_block_to) {
        atomic_fetch_add(&g_blocked, 1);
        gate_wait(&g_gate);
    }
    if (x == g_fail_at) {
        char buf[64]; /* cf_raise copies the message */
        snprintf(buf, sizeof buf, "item %zu failed", x);
        return cf_raise((int)(100 + x), buf);
    }
    return U2P(expect(x));
}

static void **make_args(size_t n) {
    void **args = malloc((n ? n : 1) * sizeof *args);
    CHECK(args != NULL);
    for (size_t i = 0; i < n; i++) args[i] = U2P(i);
    return args;
}

/* Read n results in order and check them, then CF_END twice. */
static void expect_all(cf_map *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        int code = -1;
        const char *msg = NULL;
        cf_status st = cf_map_next(m, &r, &code, &msg);
        if (st != CF_OK || P2U(r) != expect(i)) {
            fprintf(stderr, "item %zu: %s, result %zu\n", i, cf_status_name(st),
                    (size_t)P2U(r));
        }
        CHECK_OK(st);
        CHECK(P2U(r) == expect(i));
        CHECK(code == 0 && msg == NULL); /* header: set to 0/NULL on CF_OK */
    }
    void *r = (void *)&r;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    CHECK(r == (void *)&r); /* not written */
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
}

/* ---- results and order --------------------------------------------------------------- */

/* executor.py: test_map (chunksize default and 3). */
static void test_map(void) {
    cfg_begin();
    cf_executor *ex = pool_new(4);
    void **args = make_args(10);
    size_t chunks[2] = {0, 3};
    for (int c = 0; c < 2; c++) {
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, 10, chunks[c], CF_FOREVER, &m));
        CHECK(m != NULL);
        expect_all(m, 10);
        cf_map_free(m);
    }
    CHECK(atomic_load(&g_executed) == 20);
    free(args);
    cf_executor_free(ex);
    cfg_end();
}

/* Many chunk sizes (0 = 1, 1, small, n - 1, n, > n, huge) with tasks of varying
 * duration, in pools of 1 and 4 workers: results always in input order. */
static void test_map_chunksizes(void) {
    enum { N = 50 };
    size_t chunks[] = {0, 1, 2, 3, 7, 49, 50, 51, 1000, SIZE_MAX};
    size_t workers[] = {1, 4};
    void **args = make_args(N);
    for (size_t w = 0; w < 2; w++) {
        cf_executor *ex = pool_new(workers[w]);
        for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
            cfg_begin();
            g_vary = true;
            cf_map *m = NULL;
            CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
            expect_all(m, N);
            cf_map_free(m);
            CHECK(atomic_load(&g_executed) == N);
            cfg_end();
        }
        cf_executor_free(ex);
    }
    free(args);
}

/* Items finish in reverse order (item i waits until all later items finished):
 * results still come back in input order. */
enum { REV_N = 8 };
static pthread_mutex_t g_rev_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_rev_cv = PTHREAD_COND_INITIALIZER;
static int g_rev_finished;
static atomic_int g_rev_errors;

static void *rev_task(void *arg) {
    int x = (int)P2U(arg);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(10 * time_scale());
    pthread_mutex_lock(&g_rev_mu);
    while (g_rev_finished < REV_N - 1 - x) {
        if (pthread_cond_timedwait(&g_rev_cv, &g_rev_mu, &deadline) == ETIMEDOUT) {
            atomic_fetch_add(&g_rev_errors, 1); /* the pool did not run all at once */
            break;
        }
    }
    g_rev_finished++;
    pthread_cond_broadcast(&g_rev_cv);
    pthread_mutex_unlock(&g_rev_mu);
    return U2P(expect((size_t)x));
}

static void test_map_reverse_completion(void) {
    cf_executor *ex = pool_new(REV_N);
    void **args = make_args(REV_N);
    g_rev_finished = 0;
    atomic_store(&g_rev_errors, 0);
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex, rev_task, args, REV_N, 1, LONG_TIMEOUT, &m));
    expect_all(m, REV_N);
    cf_map_free(m);
    CHECK(atomic_load(&g_rev_errors) == 0);
    CHECK(g_rev_finished == REV_N);
    free(args);
    cf_executor_free(ex);
}

/* The args array is read at cf_map_new (every item is submitted at once): the caller
 * may overwrite it right after. */
static void test_map_args_copied(void) {
    enum { N = 12 };
    cfg_begin();
    g_block_from = 0;
    g_block_to = N;
    cf_executor *ex = pool_new(2);
    void **args = make_args(N);
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex, map_task, args, N, 5, LONG_TIMEOUT, &m));
    for (size_t i = 0; i < N; i++) args[i] = U2P(1000 + i);
    free(args);
    gate_open(&g_gate);
    expect_all(m, N);
    cf_map_free(m);
    cf_executor_free(ex);
    cfg_end();
}

/* n == 0: the first next gives CF_END. */
static void test_map_empty(void) {
    cfg_begin();
    cf_executor *ex = pool_new(2);
    void *one[1] = {U2P(1)};
    for (int k = 0; k < 4; k++) {
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, k % 2 ? one : NULL, 0, (size_t)k, k < 2 ? CF_FOREVER : 0.0,
                            &m));
        CHECK(m != NULL);
        void *r = (void *)&m;
        double t0 = now_s();
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        CHECK(now_s() - t0 < AT_ONCE);
        CHECK(r == (void *)&m);
        cf_map_free(m);
    }
    CHECK(atomic_load(&g_executed) == 0);
    cf_executor_free(ex);
    cfg_end();
}

/* Many items, small and larger chunks: fast. */
static void test_map_big(void) {
    enum { N = 20000 };
    cf_executor *ex = pool_new(4);
    void **args = make_args(N);
    size_t chunks[3] = {0, 64, N};
    for (int c = 0; c < 3; c++) {
        cfg_begin();
        double t0 = now_s();
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
        expect_all(m, N);
        cf_map_free(m);
        CHECK(now_s() - t0 < 8.0 * time_scale());
        CHECK(atomic_load(&g_executed) == N);
        cfg_end();
    }
    free(args);
    cf_executor_free(ex);
}

/* Maps whose copied inputs exceed 2 MiB (the library copies those into memory of their
 * own, shared by the chunks, each writing its results over its range): every result in
 * order, odd chunk sizes whose last chunk is short, and a failure in the middle of a
 * chunk, after which the iterator ends and freeing the map releases the copy. */
static void test_map_huge_inputs(void) {
    enum { N = 300007, FAIL = 250501 };
    void **args = make_args(N);
    size_t chunks[3] = {1000, 4093, 65536};
    for (int c = 0; c < 3; c++) {
        /* A pool per round: freeing it waits for chunks still running after a failure. */
        cf_executor *ex = pool_new(3);
        cfg_begin();
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
        memset(args, 0xA5, N * sizeof *args); /* the map works on its own copy */
        expect_all(m, N);
        cf_map_free(m);
        CHECK(atomic_load(&g_executed) == N);
        for (size_t i = 0; i < N; i++) args[i] = U2P(i);
        cfg_end();

        cfg_begin();
        g_fail_at = FAIL;
        CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
        for (size_t i = 0; i < FAIL; i++) {
            void *r = NULL;
            cf_status st = cf_map_next(m, &r, NULL, NULL);
            if (st != CF_OK || P2U(r) != expect(i))
                fprintf(stderr, "chunksize %zu item %zu: %s\n", chunks[c], i, cf_status_name(st));
            CHECK_OK(st);
            CHECK(P2U(r) == expect(i));
        }
        int code = 0;
        const char *msg = NULL;
        void *r = (void *)&r;
        CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_TASK_FAILED);
        CHECK(code == 100 + FAIL);
        CHECK(msg != NULL && strcmp(msg, "item 250501 failed") == 0);
        CHECK(r == (void *)&r);
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        cf_map_free(m);
        cf_executor_free(ex);
        cfg_end();
    }
    free(args);
}

/* Large maps reuse the memory of a finished one (the library keeps the last large input
 * copy for the next map that fits): two large maps alive at once, read interleaved and
 * freed in either order, then one smaller and one larger than both; every result right,
 * whichever memory each map got, fresh or reused. */
static void test_map_huge_reuse(void) {
    enum { A = 300000, B = 400000, C = 700000 };
    cf_executor *ex = pool_new(3);
    void **args = make_args(C);
    for (int order = 0; order < 2; order++) {
        cfg_begin();
        cf_map *a = NULL, *b = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, A, 1000, LONG_TIMEOUT, &a));
        CHECK_OK(cf_map_new(ex, map_task, args, B, 777, LONG_TIMEOUT, &b));
        for (size_t i = 0; i < B; i++) {
            void *r = NULL;
            if (i < A) {
                CHECK_OK(cf_map_next(a, &r, NULL, NULL));
                CHECK(P2U(r) == expect(i));
            }
            CHECK_OK(cf_map_next(b, &r, NULL, NULL));
            CHECK(P2U(r) == expect(i));
        }
        if (order == 0) {
            cf_map_free(a);
            cf_map_free(b);
        } else {
            cf_map_free(b);
            cf_map_free(a);
        }
        size_t sizes[2] = {A / 2, C};
        for (int k = 0; k < 2; k++) {
            cf_map *m = NULL;
            CHECK_OK(cf_map_new(ex, map_task, args, sizes[k], 5000, LONG_TIMEOUT, &m));
            expect_all(m, sizes[k]);
            cf_map_free(m);
        }
        cfg_end();
    }
    free(args);
    cf_executor_free(ex);
}

/* cf_map_next_n (an addition to the contract): the same results in the same order as
 * cf_map_next, many per call; mixed freely with cf_map_next. */
static void test_map_next_n(void) {
    enum { N = 10007, MAX = 64 };
    cf_executor *ex = pool_new(3);
    void **args = make_args(N);
    size_t chunks[4] = {1, 7, 1000, N};
    void **out = malloc(MAX * sizeof *out);
    CHECK(out != NULL);
    for (int c = 0; c < 4; c++) {
        cfg_begin();
        g_vary = c == 1; /* chunks finishing out of order */
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
        size_t got = 0, calls = 0;
        while (got < N) {
            size_t n = 12345;
            int code = -1;
            const char *msg = "x";
            if (calls % 5 == 4) { /* now and then one item the ordinary way */
                void *r = NULL;
                CHECK_OK(cf_map_next(m, &r, NULL, NULL));
                CHECK(P2U(r) == expect(got));
                got++;
                calls++;
                continue;
            }
            cf_status st = cf_map_next_n(m, out, MAX, &n, &code, &msg);
            if (st != CF_OK) fprintf(stderr, "chunksize %zu at %zu: %s\n", chunks[c], got, cf_status_name(st));
            CHECK_OK(st);
            CHECK(n >= 1 && n <= MAX && got + n <= N);
            CHECK(code == 0 && msg == NULL);
            for (size_t i = 0; i < n; i++) {
                if (P2U(out[i]) != expect(got + i))
                    fprintf(stderr, "chunksize %zu item %zu wrong\n", chunks[c], got + i);
                CHECK(P2U(out[i]) == expect(got + i));
            }
            got += n;
            calls++;
        }
        size_t n = 12345;
        CHECK_STATUS(cf_map_next_n(m, out, MAX, &n, NULL, NULL), CF_END);
        CHECK(n == 0);
        cf_map_free(m);
        cfg_end();
    }

    /* A failed item: the values before it, then its status with n_read 0, then CF_END. */
    for (int c = 0; c < 4; c++) {
        cf_executor *ex1 = pool_new(3); /* freed after the round: waits for what runs */
        cfg_begin();
        g_fail_at = 5003;
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex1, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
        size_t got = 0;
        cf_status st;
        size_t n = 0;
        int code = 0;
        const char *msg = NULL;
        while ((st = cf_map_next_n(m, out, MAX, &n, &code, &msg)) == CF_OK) {
            for (size_t i = 0; i < n; i++) CHECK(P2U(out[i]) == expect(got + i));
            got += n;
        }
        CHECK_STATUS(st, CF_TASK_FAILED);
        CHECK(got == 5003);
        CHECK(n == 0);
        CHECK(code == 100 + 5003);
        CHECK(msg != NULL && strcmp(msg, "item 5003 failed") == 0);
        CHECK_STATUS(cf_map_next_n(m, out, MAX, &n, NULL, NULL), CF_END);
        cf_map_free(m);
        cf_executor_free(ex1);
        cfg_end();
    }

    /* It waits only for the next item: with item 2 blocked, the first calls give items
     * 0 and 1 (never more), then CF_TIMEOUT when the map's time is up. */
    cfg_begin();
    g_block_from = 2;
    g_block_to = 3;
    cf_executor *ex2 = pool_new(3); /* freed before cfg_end: the blocked item must end */
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex2, map_task, args, 5, 1, 0.3, &m));
    size_t got = 0, n = 0;
    cf_status st;
    while ((st = cf_map_next_n(m, out, MAX, &n, NULL, NULL)) == CF_OK) {
        for (size_t i = 0; i < n; i++) CHECK(P2U(out[i]) == expect(got + i));
        got += n;
        CHECK(got <= 2);
    }
    CHECK_STATUS(st, CF_TIMEOUT);
    CHECK(got == 2 && n == 0);
    gate_open(&g_gate);
    cf_map_free(m);
    cf_executor_free(ex2);
    cfg_end();

    /* Bad input: nothing read, n_read untouched. */
    cfg_begin();
    CHECK_OK(cf_map_new(ex, map_task, args, 3, 0, LONG_TIMEOUT, &m));
    n = 777;
    CHECK_STATUS(cf_map_next_n(NULL, out, MAX, &n, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_next_n(m, NULL, MAX, &n, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_next_n(m, out, 0, &n, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_next_n(m, out, MAX, NULL, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK(n == 777);
    got = 0;
    while (got < 3) {
        CHECK_OK(cf_map_next_n(m, out, MAX, &n, NULL, NULL));
        for (size_t i = 0; i < n; i++) CHECK(P2U(out[i]) == expect(got + i));
        got += n;
    }
    cf_map_free(m);
    cfg_end();
    free(out);
    free(args);
    cf_executor_free(ex);
}

/* ---- batching -------------------------------------------------------------------- */

/* chunksize items per task: with one worker, the first item blocked and the map
 * freed, exactly the items of the first chunk run (the rest is cancelled). */
static void test_map_batching_cancel(void) {
    enum { N = 12 };
    size_t chunks[5] = {0, 1, 3, 5, 12};
    size_t runs[5] = {1, 1, 3, 5, 12};
    void **args = make_args(N);
    for (int c = 0; c < 5; c++) {
        cfg_begin();
        g_block_from = 0;
        g_block_to = 1;
        cf_executor *ex = pool_new(1);
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], CF_FOREVER, &m));
        CHECK(await_count(&g_blocked, 1, LONG_TIMEOUT));
        double t0 = now_s();
        cf_map_free(m); /* does not wait for the running chunk */
        CHECK(now_s() - t0 < AT_ONCE);
        gate_open(&g_gate);
        CHECK_OK(cf_executor_shutdown(ex, true, false));
        if ((size_t)atomic_load(&g_executed) != runs[c])
            fprintf(stderr, "chunksize %zu: %d items ran, expected %zu\n", chunks[c],
                    atomic_load(&g_executed), runs[c]);
        CHECK((size_t)atomic_load(&g_executed) == runs[c]);
        cf_executor_free(ex);
        cfg_end();
    }
    free(args);
}

/* The items of one chunk run one after another on one thread. */
enum { LOG_N = 40 };
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t g_log_len;
static size_t g_log_idx[LOG_N];
static pthread_t g_log_th[LOG_N];

static void *log_task(void *arg) {
    size_t x = (size_t)P2U(arg);
    pthread_mutex_lock(&g_log_mu);
    if (g_log_len < LOG_N) {
        g_log_idx[g_log_len] = x;
        g_log_th[g_log_len] = pthread_self();
        g_log_len++;
    }
    pthread_mutex_unlock(&g_log_mu);
    sleep_s(0.0002); /* give the other workers a chance to interleave */
    return U2P(expect(x));
}

static void test_map_batching_threads(void) {
    size_t chunks[5] = {2, 5, 7, 13, LOG_N};
    cf_executor *ex = pool_new(4);
    void **args = make_args(LOG_N);
    for (int c = 0; c < 5; c++) {
        size_t cs = chunks[c];
        g_log_len = 0;
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, log_task, args, LOG_N, cs, LONG_TIMEOUT, &m));
        expect_all(m, LOG_N);
        cf_map_free(m);
        pthread_mutex_lock(&g_log_mu);
        CHECK(g_log_len == LOG_N);
        size_t pos[LOG_N];
        for (size_t p = 0; p < LOG_N; p++) pos[g_log_idx[p]] = p;
        for (size_t first = 0; first < LOG_N; first += cs) {
            size_t last = first + cs < LOG_N ? first + cs : LOG_N;
            pthread_t t = g_log_th[pos[first]];
            for (size_t j = first + 1; j < last; j++) {
                /* Same thread, later in the log, with nothing else on that thread
                 * in between. */
                CHECK(pthread_equal(g_log_th[pos[j]], t));
                CHECK(pos[j] > pos[j - 1]);
                for (size_t p = pos[j - 1] + 1; p < pos[j]; p++)
                    CHECK(!pthread_equal(g_log_th[p], t));
            }
        }
        pthread_mutex_unlock(&g_log_mu);
    }
    free(args);
    cf_executor_free(ex);
}

/* ---- failure ------------------------------------------------------------------------ */

/* executor.py: test_map_exception (divmod by zero at the third item). */
static void *divide_task(void *arg) {
    int d = (int)P2U(arg);
    if (d == 0) return cf_raise(EDOM, "division by zero");
    return U2P(100 / d);
}

static void test_map_exception(void) {
    cf_executor *ex = pool_new(2);
    void *args[4] = {U2P(2), U2P(3), U2P(0), U2P(5)};
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex, divide_task, args, 4, 0, LONG_TIMEOUT, &m));
    void *r = NULL;
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK(P2U(r) == 50);
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK(P2U(r) == 33);
    int code = 0;
    const char *msg = NULL;
    r = (void *)&m;
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_TASK_FAILED);
    CHECK(r == (void *)&m); /* not written on failure */
    CHECK(code == EDOM);
    CHECK(msg != NULL && strcmp(msg, "division by zero") == 0);
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_END);
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
}

/* A failing item at position 10: items 0..9 are CF_OK, item 10 CF_TASK_FAILED with
 * its code and message, then CF_END, for chunk sizes that put it at the start, the
 * middle and the end of a chunk. */
static void test_map_failure_position(void) {
    enum { N = 20, FAIL = 10 };
    size_t chunks[7] = {0, 1, 3, 5, 7, 11, N};
    void **args = make_args(N);
    for (int c = 0; c < 7; c++) {
        for (int nulls = 0; nulls < 2; nulls++) {
            cfg_begin();
            g_fail_at = FAIL;
            cf_executor *ex = pool_new(4);
            cf_map *m = NULL;
            CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
            for (size_t i = 0; i < FAIL; i++) {
                void *r = NULL;
                cf_status st = nulls ? cf_map_next(m, &r, NULL, NULL)
                                     : cf_map_next(m, &r, &(int){0}, &(const char *){NULL});
                if (st != CF_OK)
                    fprintf(stderr, "chunksize %zu item %zu: %s\n", chunks[c], i,
                            cf_status_name(st));
                CHECK_OK(st);
                CHECK(P2U(r) == expect(i));
            }
            void *r = (void *)&r;
            if (nulls) {
                CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TASK_FAILED);
            } else {
                int code = 0;
                const char *msg = NULL;
                CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_TASK_FAILED);
                CHECK(code == 100 + FAIL);
                CHECK(msg != NULL && strcmp(msg, "item 10 failed") == 0);
            }
            CHECK(r == (void *)&r);
            CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
            CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
            cf_map_free(m);
            cf_executor_free(ex); /* waits for what still runs before the next round */
            cfg_end();
        }
    }
    free(args);
}

/* Only the code, or only the message, may be asked for. */
static void test_map_failure_partial_outs(void) {
    cfg_begin();
    g_fail_at = 0;
    cf_executor *ex = pool_new(1);
    void **args = make_args(3);
    for (int k = 0; k < 2; k++) {
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, 3, 1, LONG_TIMEOUT, &m));
        void *r = NULL;
        if (k == 0) {
            int code = 0;
            CHECK_STATUS(cf_map_next(m, &r, &code, NULL), CF_TASK_FAILED);
            CHECK(code == 100);
        } else {
            const char *msg = NULL;
            CHECK_STATUS(cf_map_next(m, &r, NULL, &msg), CF_TASK_FAILED);
            CHECK(msg != NULL && strcmp(msg, "item 0 failed") == 0);
        }
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        cf_map_free(m);
    }
    free(args);
    cf_executor_free(ex);
    cfg_end();
}

/* After a failure, items not yet started are cancelled: with one worker, item 4 held
 * at a gate while item 3's failure is reported, items 5.. never run. */
static void test_map_failure_cancels_rest(void) {
    enum { N = 20 };
    void **args = make_args(N);
    size_t chunks[2] = {1, 2};
    int max_runs[2] = {5, 6}; /* chunk of item 4 ran or was cancelled */
    for (int c = 0; c < 2; c++) {
        cfg_begin();
        g_fail_at = 3;
        g_block_from = 4;
        g_block_to = 5;
        cf_executor *ex = pool_new(1);
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, map_task, args, N, chunks[c], LONG_TIMEOUT, &m));
        void *r = NULL;
        for (size_t i = 0; i < 3; i++) {
            CHECK_OK(cf_map_next(m, &r, NULL, NULL));
            CHECK(P2U(r) == expect(i));
        }
        int code = 0;
        CHECK_STATUS(cf_map_next(m, &r, &code, NULL), CF_TASK_FAILED);
        CHECK(code == 103);
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        gate_open(&g_gate);
        CHECK_OK(cf_executor_shutdown(ex, true, false));
        int ran = atomic_load(&g_executed);
        if (ran < 4 || ran > max_runs[c])
            fprintf(stderr, "chunksize %zu: %d items ran\n", chunks[c], ran);
        CHECK(ran >= 4 && ran <= max_runs[c]);
        cf_map_free(m);
        cf_executor_free(ex);
        cfg_end();
    }
    free(args);
}

/* ---- timeout ------------------------------------------------------------------------ */

/* executor.py: test_map_timeout, scaled down: items [fast, fast, blocked], timeout
 * 0.5 s: two results, then CF_TIMEOUT. */
static void test_map_timeout(void) {
    cfg_begin();
    g_block_from = 2;
    g_block_to = 3;
    cf_executor *ex = pool_new(3);
    void **args = make_args(3);
    double t0 = now_s();
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex, map_task, args, 3, 0, 0.5, &m));
    void *r = NULL;
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK(P2U(r) == expect(0));
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK(P2U(r) == expect(1));
    r = (void *)&r;
    int code = 12345;
    CHECK_STATUS(cf_map_next(m, &r, &code, NULL), CF_TIMEOUT);
    double el = now_s() - t0;
    CHECK(el >= 0.49);
    CHECK(el < 0.5 + AT_ONCE);
    CHECK(r == (void *)&r);
    cf_map_free(m);
    gate_open(&g_gate);
    free(args);
    cf_executor_free(ex);
    cfg_end();
}

/* The timeout counts from cf_map_new, not from each next; timeout 0 polls. */
static void test_map_timeout_from_new(void) {
    cfg_begin();
    g_block_from = 0;
    g_block_to = 4;
    cf_executor *ex = pool_new(2);
    void **args = make_args(4);
    cf_map *m = NULL;
    double t0 = now_s();
    CHECK_OK(cf_map_new(ex, map_task, args, 4, 1, 1.0, &m));
    sleep_s(1.1); /* the passing of time is what is tested */
    double t1 = now_s();
    void *r = NULL;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TIMEOUT);
    CHECK(now_s() - t1 < 0.85); /* counted from next it would take 1 s */
    CHECK(now_s() - t0 >= 1.0);
    cf_map_free(m);

    /* Items blocked, timeout 0.1: the first next gives CF_TIMEOUT after ~0.1 s. */
    t0 = now_s();
    CHECK_OK(cf_map_new(ex, map_task, args, 4, 1, 0.1, &m));
    r = (void *)&r;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.09);
    CHECK(now_s() - t0 < 0.1 + AT_ONCE);
    CHECK(r == (void *)&r);
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TIMEOUT);
    cf_map_free(m);

    t0 = now_s();
    CHECK_OK(cf_map_new(ex, map_task, args, 4, 1, 0.0, &m));
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TIMEOUT);
    CHECK(now_s() - t0 < AT_ONCE);
    cf_map_free(m);

    /* Items released at ~0.05 s by another thread: all results, no timeout. */
    t0 = now_s();
    CHECK_OK(cf_map_new(ex, map_task, args, 4, 0, LONG_TIMEOUT, &m));
    delayed_open d;
    delayed_open_start(&d, &g_gate, 0.05);
    expect_all(m, 4);
    delayed_open_join(&d);
    cf_map_free(m);
    free(args);
    cf_executor_free(ex);
    cfg_end();
}

/* ---- free ----------------------------------------------------------------------------- */

static void test_map_free(void) {
    enum { N = 10 };
    void **args = make_args(N);

    /* Before any next, with the items blocked: returns at once, cancels the rest. */
    cfg_begin();
    g_block_from = 0;
    g_block_to = N;
    cf_executor *ex = pool_new(2);
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex, map_task, args, N, 1, CF_FOREVER, &m));
    CHECK(await_count(&g_blocked, 2, LONG_TIMEOUT));
    double t0 = now_s();
    cf_map_free(m);
    CHECK(now_s() - t0 < AT_ONCE);
    gate_open(&g_gate);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_executed) == 2);
    cf_executor_free(ex);
    cfg_end();

    /* Right after new, nothing awaited. */
    cfg_begin();
    ex = pool_new(2);
    CHECK_OK(cf_map_new(ex, map_task, args, N, 3, CF_FOREVER, &m));
    cf_map_free(m);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_executed) <= N);
    cf_executor_free(ex);
    cfg_end();

    /* In the middle, with later items blocked. */
    cfg_begin();
    g_block_from = 3;
    g_block_to = N;
    ex = pool_new(2);
    CHECK_OK(cf_map_new(ex, map_task, args, N, 1, LONG_TIMEOUT, &m));
    for (size_t i = 0; i < 3; i++) {
        void *r = NULL;
        CHECK_OK(cf_map_next(m, &r, NULL, NULL));
        CHECK(P2U(r) == expect(i));
    }
    CHECK(await_count(&g_blocked, 2, LONG_TIMEOUT));
    t0 = now_s();
    cf_map_free(m);
    CHECK(now_s() - t0 < AT_ONCE);
    gate_open(&g_gate);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_executed) == 5);
    cf_executor_free(ex);
    cfg_end();

    /* In the middle, nothing blocked; after CF_END; after a failure; NULL. */
    cfg_begin();
    ex = pool_new(3);
    CHECK_OK(cf_map_new(ex, map_task, args, N, 2, LONG_TIMEOUT, &m));
    void *r = NULL;
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    cf_map_free(m);
    CHECK_OK(cf_map_new(ex, map_task, args, N, 2, LONG_TIMEOUT, &m));
    expect_all(m, N);
    cf_map_free(m);
    g_fail_at = 1;
    CHECK_OK(cf_map_new(ex, map_task, args, N, 1, LONG_TIMEOUT, &m));
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TASK_FAILED);
    cf_map_free(m);
    cf_map_free(NULL);
    cf_executor_free(ex);
    cfg_end();

    /* The map outlives its executor being shut down (not freed). */
    cfg_begin();
    ex = pool_new(2);
    CHECK_OK(cf_map_new(ex, map_task, args, N, 1, LONG_TIMEOUT, &m));
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    expect_all(m, N);
    cf_map_free(m);
    cf_executor_free(ex);
    cfg_end();
    free(args);
}

/* Items cancelled by cf_executor_shutdown(cancel_futures) come back as CF_CANCELLED
 * (header: a failed item's status), then CF_END. Python's map raises CancelledError. */
static void test_map_cancelled_by_shutdown(void) {
    cfg_begin();
    g_block_from = 0;
    g_block_to = 1;
    cf_executor *ex = pool_new(1);
    void **args = make_args(5);
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex, map_task, args, 5, 1, LONG_TIMEOUT, &m));
    CHECK(await_count(&g_blocked, 1, LONG_TIMEOUT));
    CHECK_OK(cf_executor_shutdown(ex, false, true));
    gate_open(&g_gate);
    void *r = NULL;
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK(P2U(r) == expect(0));
    int code = 5;
    const char *msg = "x";
    r = (void *)&r;
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_CANCELLED);
    CHECK(r == (void *)&r);
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    cf_map_free(m);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_executed) == 1);
    free(args);
    cf_executor_free(ex);
    cfg_end();
}

/* A task mapping over its own 1-worker pool does not deadlock (API.md; header: a
 * waiting worker runs queued tasks of its pool meanwhile). */
typedef struct nested {
    cf_executor *ex;
    cf_status new_st;
    cf_status last_st;
    size_t got;
    bool in_order;
} nested;

static void *nested_map_task(void *arg) {
    nested *w = (nested *)arg;
    void *args[7];
    for (size_t i = 0; i < 7; i++) args[i] = U2P(i);
    cf_map *m = NULL;
    w->new_st = cf_map_new(w->ex, task_ident, args, 7, 2, LONG_TIMEOUT, &m);
    if (w->new_st != CF_OK) return NULL;
    w->got = 0;
    w->in_order = true;
    for (;;) {
        void *r = NULL;
        w->last_st = cf_map_next(m, &r, NULL, NULL);
        if (w->last_st != CF_OK) break;
        if (P2U(r) != w->got) w->in_order = false;
        w->got++;
    }
    cf_map_free(m);
    return U2P(1);
}

static void test_map_inside_task(void) {
    cf_executor *ex = pool_new(1);
    nested w = {ex, CF_INVALID_STATE, CF_INVALID_STATE, 0, false};
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, nested_map_task, &w, &f));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 2 * LONG_TIMEOUT, &r));
    CHECK(P2U(r) == 1);
    CHECK_OK(w.new_st);
    CHECK_STATUS(w.last_st, CF_END);
    CHECK(w.got == 7);
    CHECK(w.in_order);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ---- bad input ----------------------------------------------------------------------- */

static void test_map_bad_input(void) {
    cfg_begin();
    cf_executor *ex = pool_new(2);
    void **args = make_args(4);
    cf_map *sentinel = (cf_map *)&args;
    cf_map *m = sentinel;
    CHECK_STATUS(cf_map_new(NULL, map_task, args, 4, 1, CF_FOREVER, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_new(ex, NULL, args, 4, 1, CF_FOREVER, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_new(ex, map_task, NULL, 4, 1, CF_FOREVER, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_new(ex, map_task, args, 4, 1, NAN, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_new(ex, map_task, args, 4, 1, CF_FOREVER, NULL), CF_INVALID_ARGUMENT);
    /* Nothing was submitted by the rejected calls. */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_executed) == 0);

    void *r = (void *)&m;
    int code = 7;
    const char *msg = "untouched";
    CHECK_STATUS(cf_map_next(NULL, &r, &code, &msg), CF_INVALID_ARGUMENT);
    CHECK(r == (void *)&m && code == 7 && strcmp(msg, "untouched") == 0);
    cf_map_free(NULL);
    /* A NULL result is rejected (header) and consumes nothing; a pointer map is not
     * read with cf_map_next_bytes (header: CF_INVALID_ARGUMENT). */
    cf_executor *ex2 = pool_new(1);
    CHECK_OK(cf_map_new(ex2, map_task, args, 2, 1, LONG_TIMEOUT, &m));
    CHECK_STATUS(cf_map_next(m, NULL, &code, &msg), CF_INVALID_ARGUMENT);
    CHECK(code == 7 && strcmp(msg, "untouched") == 0);
    cf_bytes b = {&code, 77};
    CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK(b.data == &code && b.len == 77);
    r = NULL;
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK(P2U(r) == expect(0));
    CHECK_OK(cf_map_next(m, &r, NULL, NULL));
    CHECK(P2U(r) == expect(1));
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex2);
    CHECK(atomic_load(&g_executed) == 2);
    atomic_store(&g_executed, 0);
    m = sentinel;

    /* After shutdown: CF_SHUTDOWN and no map, as cf_submit. */
    CHECK_STATUS(cf_map_new(ex, map_task, args, 4, 1, CF_FOREVER, &m), CF_SHUTDOWN);
    CHECK(m == sentinel);
    CHECK(atomic_load(&g_executed) == 0);
    free(args);
    cf_executor_free(ex);
    cfg_end();
}

int main(void) {
    TEST(test_map);
    TEST(test_map_chunksizes);
    TEST(test_map_huge_inputs);
    TEST(test_map_huge_reuse);
    TEST(test_map_next_n);
    TEST(test_map_reverse_completion);
    TEST(test_map_args_copied);
    TEST(test_map_empty);
    TEST(test_map_big);
    TEST(test_map_batching_cancel);
    TEST(test_map_batching_threads);
    TEST(test_map_exception);
    TEST(test_map_failure_position);
    TEST(test_map_failure_partial_outs);
    TEST(test_map_failure_cancels_rest);
    TEST(test_map_timeout);
    TEST(test_map_timeout_from_new);
    TEST(test_map_free);
    TEST(test_map_cancelled_by_shutdown);
    TEST(test_map_inside_task);
    TEST(test_map_bad_input);
    return 0;
}
