/* test_process_wait.c: cf_wait and cf_as_completed over process-pool futures mixed with
 * promises (and with crashed and failed tasks).
 *
 * Tasks block in worker processes on gates in shared memory that only this test opens,
 * so which futures are done at each step is decided by the test, not by timing.
 *
 * Ports from CPython Lib/test/test_concurrent_futures:
 *   test_wait.py: WaitTests.test_20369 (duplicates), test_first_completed,
 *     test_first_completed_some_already_completed, test_first_exception,
 *     test_first_exception_some_already_complete, test_first_exception_one_already_failed,
 *     test_all_completed, test_timeout (run here with ProcessPoolExecutor, as CPython's
 *     ProcessPoolForkWaitTest does);
 *   test_as_completed.py: AsCompletedTests.test_no_timeout, test_future_times_out,
 *     test_duplicate_futures, test_free_reference_yielded_future (the iterator's own
 *     references). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

enum { NGATES = 8 };
typedef struct shared {
    px_gate g[NGATES];
} shared;
static shared *S;

static void reset_gates(void) { memset(S, 0, sizeof *S); }

static void *t_value(void *arg) { return arg; }
static void *t_fail(void *arg) { return cf_raise((int)PX_P2I(arg), "failed on purpose"); }
static void *t_kill_self(void *arg) {
    (void)arg;
    raise(SIGKILL);
    return NULL;
}

static cf_future *promise(void) {
    cf_future *p = NULL;
    CHECK_OK(cf_future_new(&p));
    return p;
}

/* Opens a gate and/or completes a promise from another thread, while the test waits. */
typedef struct helper {
    pthread_t th;
    atomic_int *open; /* NULL: none */
    cf_future *p;     /* NULL: none */
    void *value;
} helper;
static void *helper_main(void *arg) {
    helper *h = (helper *)arg;
    if (h->open) px_add(h->open, 1);
    if (h->p) cf_future_set_result(h->p, h->value);
    return NULL;
}
static void helper_start(helper *h, atomic_int *open, cf_future *p, void *value) {
    h->open = open;
    h->p = p;
    h->value = value;
    CHECK(pthread_create(&h->th, NULL, helper_main, h) == 0);
}
static void helper_join(helper *h) { CHECK(pthread_join(h->th, NULL) == 0); }

static cf_future *blocked(cf_executor *ex, px_gate *g) {
    cf_future *f = px_submit(ex, px_gate_task, g);
    CHECK(px_wait_ge(&g->started, 1, PX_LONG));
    return f;
}

static void test_wait_first_completed(cf_executor *ex) {
    px_phase("cf_wait FIRST_COMPLETED");
    reset_gates();
    cf_future *p = promise();
    cf_future *b = blocked(ex, &S->g[0]);
    cf_future *q = px_submit(ex, t_value, PX_I2P(42));
    cf_future *fs[3] = {p, b, q};
    bool done[3] = {true, true, false};
    size_t n_done = 99;
    CHECK_OK(cf_wait(fs, 3, CF_FIRST_COMPLETED, PX_LONG, done, &n_done));
    CHECK(!done[0] && !done[1] && done[2]);
    PX_CHECK_EQ(n_done, 1);
    PX_CHECK_EQ(px_result(q), 42);

    /* test_first_completed_some_already_completed: returns at once. */
    cf_future *fs2[2] = {b, q};
    double t0 = now_s();
    CHECK_OK(cf_wait(fs2, 2, CF_FIRST_COMPLETED, PX_LONG, done, &n_done));
    CHECK(now_s() - t0 < 2.0 * px_scale());
    CHECK(!done[0] && done[1]);
    PX_CHECK_EQ(n_done, 1);

    /* A promise completed by another thread wakes a wait on a process future too. */
    cf_future *fs3[2] = {b, p};
    helper h;
    helper_start(&h, NULL, p, PX_I2P(5));
    CHECK_OK(cf_wait(fs3, 2, CF_FIRST_COMPLETED, PX_LONG, done, &n_done));
    helper_join(&h);
    CHECK(!done[0] && done[1]);
    PX_CHECK_EQ(n_done, 1);

    /* ... and a process future wakes a wait on a pending promise. */
    cf_future *p2 = promise();
    cf_future *fs4[2] = {p2, b};
    helper_start(&h, &S->g[0].open, NULL, NULL);
    CHECK_OK(cf_wait(fs4, 2, CF_FIRST_COMPLETED, PX_LONG, done, &n_done));
    helper_join(&h);
    CHECK(!done[0] && done[1]);
    CHECK(px_result(b) > 0);

    /* Duplicates (test_20369) count each time. */
    cf_future *fs5[3] = {q, q, p2};
    CHECK_OK(cf_wait(fs5, 3, CF_FIRST_COMPLETED, PX_LONG, done, &n_done));
    CHECK(done[0] && done[1] && !done[2]);
    PX_CHECK_EQ(n_done, 2);

    CHECK_OK(cf_future_set_result(p2, NULL));
    cf_future_release(p);
    cf_future_release(p2);
    cf_future_release(b);
    cf_future_release(q);
}

static void test_wait_first_exception(cf_executor *ex) {
    px_phase("cf_wait FIRST_EXCEPTION");
    reset_gates();
    cf_future *b = blocked(ex, &S->g[0]);
    cf_future *q = px_submit(ex, t_value, PX_I2P(1));
    cf_future *f = px_submit(ex, t_fail, PX_I2P(EPIPE));
    cf_future *fs[3] = {b, q, f};
    bool done[3];
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 3, CF_FIRST_EXCEPTION, PX_LONG, done, &n_done));
    CHECK(!done[0] && done[2]);
    int code;
    const char *msg;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, EPIPE);
    PX_CHECK_STREQ(msg, "failed on purpose");

    /* test_first_exception_one_already_failed: at once. */
    cf_future *fs2[2] = {b, f};
    CHECK_OK(cf_wait(fs2, 2, CF_FIRST_EXCEPTION, PX_LONG, done, &n_done));
    CHECK(!done[0] && done[1]);
    PX_CHECK_EQ(n_done, 1);

    /* A worker that dies (CF_BROKEN) counts as an exception. */
    cf_future *k = px_submit(ex, t_kill_self, NULL);
    cf_future *fs3[2] = {b, k};
    CHECK_OK(cf_wait(fs3, 2, CF_FIRST_EXCEPTION, PX_LONG, done, &n_done));
    CHECK(!done[0] && done[1]);
    CHECK_STATUS(cf_future_exception(k, 0, &code, &msg), CF_BROKEN);
    PX_CHECK_CONTAINS(msg, "SIGKILL");
    CHECK(cf_future_running(b)); /* the other worker's task is untouched */

    /* A cancelled future is not an exception: with b still blocked this times out. */
    cf_future *c = promise();
    CHECK(cf_future_cancel(c));
    cf_future *fs4[2] = {c, b};
    double t0 = now_s();
    CHECK_STATUS(cf_wait(fs4, 2, CF_FIRST_EXCEPTION, 0.3, done, &n_done), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.25);
    CHECK(done[0] && !done[1]);
    PX_CHECK_EQ(n_done, 1);

    /* ... and once b succeeds, "all done" ends the wait. */
    helper h;
    helper_start(&h, &S->g[0].open, NULL, NULL);
    CHECK_OK(cf_wait(fs4, 2, CF_FIRST_EXCEPTION, PX_LONG, done, &n_done));
    helper_join(&h);
    CHECK(done[0] && done[1]);
    PX_CHECK_EQ(n_done, 2);
    CHECK(px_result(b) > 0);
    PX_CHECK_EQ(px_result(q), 1);

    cf_future_release(b);
    cf_future_release(q);
    cf_future_release(f);
    cf_future_release(k);
    cf_future_release(c);
}

static void test_wait_all_and_timeout(cf_executor *ex) {
    px_phase("cf_wait ALL_COMPLETED and timeout");
    reset_gates();
    cf_future *p = promise();
    cf_future *b = blocked(ex, &S->g[1]);
    cf_future *q = px_submit(ex, t_value, PX_I2P(2));
    cf_future *f = px_submit(ex, t_fail, PX_I2P(3));
    cf_future *fs[4] = {p, b, q, f};
    bool done[4];
    size_t n_done = 0;

    /* test_timeout */
    double t0 = now_s();
    CHECK_STATUS(cf_wait(fs, 4, CF_ALL_COMPLETED, 0.3, done, &n_done), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.25);
    CHECK(!done[0] && !done[1]);

    /* test_all_completed */
    helper h;
    helper_start(&h, &S->g[1].open, p, PX_I2P(77));
    CHECK_OK(cf_wait(fs, 4, CF_ALL_COMPLETED, PX_LONG, done, &n_done));
    helper_join(&h);
    CHECK(done[0] && done[1] && done[2] && done[3]);
    PX_CHECK_EQ(n_done, 4);
    PX_CHECK_EQ(px_result(p), 77);
    CHECK(px_result(b) > 0);
    PX_CHECK_EQ(px_result(q), 2);
    int code;
    const char *msg;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, 3);
    for (int i = 0; i < 4; i++) cf_future_release(fs[i]);
}

static void test_as_completed_order(cf_executor *ex) {
    px_phase("cf_as_completed: completion order, timeout");
    reset_gates();
    cf_future *b1 = blocked(ex, &S->g[2]);
    cf_future *b2 = blocked(ex, &S->g[3]);
    cf_future *p = promise();
    cf_future *qd = px_submit(ex, t_value, PX_I2P(9));
    PX_CHECK_EQ(px_result(qd), 9); /* already done before the iterator exists */
    cf_future *fs[5] = {b1, p, b2, qd, qd};
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, 5, PX_LONG, &it));
    /* The iterator holds its own references (test_free_reference_yielded_future). */
    for (int i = 0; i < 4; i++) cf_future_release(fs[i]);

    cf_future *got = NULL;
    CHECK_OK(cf_as_completed_next(it, &got));
    CHECK(got == qd); /* already done: first, and once despite the duplicate */

    px_add(&S->g[2].open, 1);
    CHECK_OK(cf_as_completed_next(it, &got));
    CHECK(got == b1);
    CHECK(px_result(got) > 0);

    CHECK_OK(cf_future_set_result(p, PX_I2P(4)));
    CHECK_OK(cf_as_completed_next(it, &got));
    CHECK(got == p);

    px_add(&S->g[3].open, 1);
    CHECK_OK(cf_as_completed_next(it, &got));
    CHECK(got == b2);
    CHECK_STATUS(cf_as_completed_next(it, &got), CF_END);
    CHECK_STATUS(cf_as_completed_next(it, &got), CF_END);
    cf_as_completed_free(it);

    /* test_future_times_out: a blocked process task; later it may still be yielded. */
    cf_future *b3 = blocked(ex, &S->g[4]);
    cf_future *p2 = promise();
    CHECK_OK(cf_future_set_result(p2, NULL));
    cf_future *fs2[2] = {b3, p2};
    CHECK_OK(cf_as_completed_new(fs2, 2, 0.3, &it));
    double t0 = now_s();
    CHECK_OK(cf_as_completed_next(it, &got));
    CHECK(got == p2);
    CHECK_STATUS(cf_as_completed_next(it, &got), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.25);
    px_add(&S->g[4].open, 1);
    CHECK_OK(cf_future_wait(b3, PX_LONG));
    CHECK_OK(cf_as_completed_next(it, &got));
    CHECK(got == b3);
    CHECK_STATUS(cf_as_completed_next(it, &got), CF_END);
    cf_as_completed_free(it);
    cf_future_release(b3);
    cf_future_release(p2);
}

/* 200 process futures and 200 promises completed by another thread. */
typedef struct setter {
    pthread_t th;
    cf_future **ps;
    int n;
} setter;
static void *setter_main(void *arg) {
    setter *s = (setter *)arg;
    for (int i = 0; i < s->n; i++) cf_future_set_result(s->ps[i], PX_I2P(-1 - i));
    return NULL;
}

static void test_as_completed_many(cf_executor *ex) {
    px_phase("cf_as_completed and cf_wait over 200 process futures + 200 promises");
    enum { N = 200 };
    cf_future *fs[2 * N];
    for (int i = 0; i < N; i++) {
        fs[2 * i] = px_submit(ex, t_value, PX_I2P(i));
        fs[2 * i + 1] = promise();
    }
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, 2 * N, PX_LONG, &it));
    cf_future *ps[N];
    for (int i = 0; i < N; i++) ps[i] = fs[2 * i + 1];
    setter s = {.ps = ps, .n = N};
    CHECK(pthread_create(&s.th, NULL, setter_main, &s) == 0);
    static unsigned char seen[2 * N];
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < 2 * N; k++) {
        cf_future *got = NULL;
        CHECK_OK(cf_as_completed_next(it, &got));
        int idx = -1;
        for (int j = 0; j < 2 * N; j++)
            if (fs[j] == got) idx = j;
        CHECK(idx >= 0);
        CHECK(!seen[idx]);
        seen[idx] = 1;
        intptr_t v = px_result(got);
        PX_CHECK_EQ(v, idx % 2 == 0 ? idx / 2 : -1 - idx / 2);
    }
    cf_future *got = NULL;
    CHECK_STATUS(cf_as_completed_next(it, &got), CF_END);
    cf_as_completed_free(it);
    CHECK(pthread_join(s.th, NULL) == 0);

    bool done[2 * N];
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 2 * N, CF_ALL_COMPLETED, PX_LONG, done, &n_done));
    PX_CHECK_EQ(n_done, 2 * N);
    for (int i = 0; i < 2 * N; i++) cf_future_release(fs[i]);
}

int main(void) {
    px_watchdog(100);
    S = px_shm_new(sizeof *S);
    cf_executor *ex = px_pool(3, 0);
    test_wait_first_completed(ex);
    test_wait_first_exception(ex);
    test_wait_all_and_timeout(ex);
    test_as_completed_order(ex);
    test_as_completed_many(ex);
    cf_executor_free(ex);
    PX_CHECK_NO_CHILDREN();
    px_shm_free(S, sizeof *S);
    fprintf(stderr, "test_process_wait: all passed\n");
    return 0;
}
