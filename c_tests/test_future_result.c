/* test_future_result.c: results, errors (cf_raise) and timeouts of executor futures.
 *
 * Covers:
 *  - cf_future_result / cf_future_exception / cf_future_wait with timeout 0 (poll), a small
 *    timeout on a blocked task (CF_TIMEOUT after having waited at least ~0.04 s), negative
 *    timeouts and CF_FOREVER (wait without limit), large and infinite timeouts;
 *    out-parameters untouched on CF_TIMEOUT and CF_TASK_FAILED.
 *  - cf_raise: code and message, NULL message (cf_future_exception gives a NULL message),
 *    empty / long / non-ASCII messages copied byte for byte, the message is a copy (the
 *    task's buffer is overwritten after the call), the last call wins, the task's return
 *    value is ignored after cf_raise, cf_raise returns NULL, cf_raise outside a task (main
 *    thread, a plain pthread, a done callback) does nothing and returns NULL, and a raise
 *    does not leak into the next task run by the same worker.
 *  - cf_future_exception after success gives code 0 and a NULL message; the message of a
 *    failed future stays valid while the future lives; the result of a failed future is
 *    CF_TASK_FAILED; several threads waiting on one future all get the outcome.
 * Ports from CPython Lib/test/test_concurrent_futures/: test_future.py
 * test_result_with_timeout, test_exception_with_timeout, test_result_with_success,
 * test_exception_with_success; executor.py test_submit. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

#define SENTINEL_PTR ((void *)(uintptr_t)0x5e5e5e5eu)
static const char sentinel_msg[] = "untouched";

/* ---- tasks ------------------------------------------------------------------------- */

typedef struct raise_spec {
    int code;
    const char *msg; /* copied into a stack buffer, which is scribbled over afterwards */
    atomic_int raise_returned_null;
} raise_spec;

static void *task_raise_copy(void *arg) {
    raise_spec *s = (raise_spec *)arg;
    void *r;
    if (s->msg == NULL) {
        r = cf_raise(s->code, NULL);
    } else {
        size_t n = strlen(s->msg);
        char *buf = malloc(n + 1);
        CHECK(buf != NULL);
        memcpy(buf, s->msg, n + 1);
        r = cf_raise(s->code, buf);
        memset(buf, '#', n); /* the library must have copied it */
        free(buf);
    }
    atomic_store(&s->raise_returned_null, r == NULL ? 1 : 2);
    return (void *)(uintptr_t)0x1234; /* ignored after cf_raise */
}

static void *task_raise_twice(void *arg) {
    (void)arg;
    char first[16];
    strcpy(first, "first");
    cf_raise(1, first);
    memset(first, 0, sizeof first);
    cf_raise(2, "second");
    return SENTINEL_PTR;
}

static void *task_raise_then_null(void *arg) {
    (void)arg;
    cf_raise(1, "first");
    cf_raise(2, NULL);
    return SENTINEL_PTR;
}

static void *task_blocked_then_raise(void *arg) {
    blocked_job *j = (blocked_job *)arg;
    task_blocked(j);
    return cf_raise(13, "late failure");
}

static void *task_double(void *arg) { return (void *)((uintptr_t)arg * 2u); }

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct waiter {
    cf_future *f;
    double timeout;
    int use_exception;
    cf_status st;
    void *result;
    int code;
    const char *msg;
    pthread_t thread;
} waiter;

static void *waiter_main(void *arg) {
    waiter *w = (waiter *)arg;
    if (w->use_exception)
        w->st = cf_future_exception(w->f, w->timeout, &w->code, &w->msg);
    else
        w->st = cf_future_result(w->f, w->timeout, &w->result);
    return NULL;
}

static void start_waiter(waiter *w, cf_future *f, double timeout, int use_exception) {
    w->f = f;
    w->timeout = timeout;
    w->use_exception = use_exception;
    w->st = CF_PANIC;
    w->result = SENTINEL_PTR;
    w->code = -999;
    w->msg = sentinel_msg;
    CHECK(pthread_create(&w->thread, NULL, waiter_main, w) == 0);
}

/* Run a failing spec, check every accessor, return the future (caller releases it). */
static cf_future *check_failure(cf_executor *ex, raise_spec *s, int want_code,
                                const char *want_msg) {
    atomic_init(&s->raise_returned_null, 0);
    cf_future *f = submit_ok(ex, task_raise_copy, s);

    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_TASK_FAILED);
    CHECK(r == SENTINEL_PTR); /* untouched on failure */
    CHECK_EQ_LL(atomic_load(&s->raise_returned_null), 1);

    int code = -999;
    const char *msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_TASK_FAILED);
    CHECK_EQ_LL(code, want_code);
    if (want_msg == NULL) {
        CHECK(msg == NULL);
    } else {
        CHECK(msg != NULL && msg != sentinel_msg);
        CHECK_STREQ(msg, want_msg);
    }
    /* Polling a done future gives the same outcome at once. */
    code = -999;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TASK_FAILED);
    CHECK_EQ_LL(code, want_code);
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_TASK_FAILED);
    CHECK(r == SENTINEL_PTR);
    CHECK_OK(cf_future_wait(f, 0));
    CHECK_STATE(f, CF_STATE_FINISHED);
    CHECK(cf_future_done(f));
    CHECK(!cf_future_cancelled(f));
    CHECK(!cf_future_running(f));
    return f;
}

static counter cb_raise_calls;
static void cb_raises(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    if (cf_raise(99, "raised in a callback") == NULL) counter_add(&cb_raise_calls, 1);
}

static void *plain_thread_raise(void *arg) {
    (void)arg;
    return cf_raise(3, "not in a task") == NULL ? (void *)(uintptr_t)1 : (void *)(uintptr_t)2;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_success_and_timeouts_on_done(void) {
    cf_executor *ex = make_pool(2, "res");
    int x = 7;

    /* executor.py test_submit */
    cf_future *f = submit_ok(ex, task_double, (void *)(uintptr_t)128);
    CHECK(result_ok(f) == (void *)(uintptr_t)256);
    cf_future_release(f);

    f = submit_ok(ex, task_identity, &x);
    void *r = NULL;
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    CHECK(r == &x);
    CHECK_OK(cf_future_wait(f, CF_FOREVER));
    CHECK_OK(cf_future_wait(f, 0));
    /* Every timeout gives the value of a done future at once. */
    double timeouts[] = {0.0, 0.05, 1.0, 3600.0, 1e9, -1.0, -5.0, -INFINITY, INFINITY, 1e300};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        double t0 = now_s();
        r = NULL;
        CHECK_OK(cf_future_result(f, timeouts[i], &r));
        CHECK(r == &x);
        CHECK_OK(cf_future_wait(f, timeouts[i]));
        int code = -999;
        const char *msg = sentinel_msg;
        CHECK_OK(cf_future_exception(f, timeouts[i], &code, &msg));
        CHECK_EQ_LL(code, 0); /* 0 and NULL after success */
        CHECK(msg == NULL);
        CHECK(since(t0) < 5.0);
    }
    CHECK_STATE(f, CF_STATE_FINISHED);
    cf_future_release(f);

    /* A task returning NULL succeeds with NULL. */
    f = submit_ok(ex, task_noop, &x);
    r = SENTINEL_PTR;
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    CHECK(r == NULL);
    cf_future_release(f);

    /* Large and infinite timeouts on tasks not yet done behave like forever. */
    f = submit_ok(ex, task_identity, &x);
    CHECK_OK(cf_future_result(f, INFINITY, &r));
    CHECK(r == &x);
    cf_future_release(f);
    f = submit_ok(ex, task_identity, &x);
    CHECK_OK(cf_future_result(f, 1e300, &r));
    CHECK(r == &x);
    cf_future_release(f);
    f = submit_ok(ex, task_identity, &x);
    CHECK_OK(cf_future_result(f, -123.0, &r));
    CHECK(r == &x);
    cf_future_release(f);

    cf_executor_free(ex);
}

static void test_timeouts_on_blocked_task(void) {
    cf_executor *ex = make_pool(1, "blk");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    int value = 5;
    blocked_job_init(&j, &b, &value);
    cf_future *f = submit_ok(ex, task_blocked, &j);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    CHECK_STATE(f, CF_STATE_RUNNING);

    /* test_result_with_timeout / test_exception_with_timeout: timeout 0 polls once. */
    void *r = SENTINEL_PTR;
    int code = -999;
    const char *msg = sentinel_msg;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_TIMEOUT);
    CHECK(r == SENTINEL_PTR);
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TIMEOUT);
    CHECK_EQ_LL(code, -999);
    CHECK(msg == sentinel_msg);
    CHECK_STATUS(cf_future_wait(f, 0), CF_TIMEOUT);

    /* A small timeout really waits, then gives up. */
    double t0 = now_s();
    CHECK_STATUS(cf_future_result(f, 0.05, &r), CF_TIMEOUT);
    double el = since(t0);
    CHECK(el >= 0.04);
    CHECK(el < 20.0);
    CHECK(r == SENTINEL_PTR);

    t0 = now_s();
    CHECK_STATUS(cf_future_exception(f, 0.05, &code, &msg), CF_TIMEOUT);
    el = since(t0);
    CHECK(el >= 0.04);
    CHECK(el < 20.0);
    CHECK_EQ_LL(code, -999);
    CHECK(msg == sentinel_msg);

    t0 = now_s();
    CHECK_STATUS(cf_future_wait(f, 0.05), CF_TIMEOUT);
    el = since(t0);
    CHECK(el >= 0.04);
    CHECK(el < 20.0);

    t0 = now_s();
    CHECK_STATUS(cf_future_result(f, 0.15, &r), CF_TIMEOUT);
    CHECK(since(t0) >= 0.13);

    CHECK(!cf_future_done(f));
    CHECK(cf_future_running(f));

    /* test_result_with_success: waiters blocked without limit (and with a long limit) get
     * the value once the task finishes. */
    waiter w[4];
    start_waiter(&w[0], f, CF_FOREVER, 0);
    start_waiter(&w[1], f, -2.5, 0);
    start_waiter(&w[2], f, LONG_WAIT, 0);
    start_waiter(&w[3], f, CF_FOREVER, 1);
    /* Let the waiters block (if they are not blocked yet, they still must see the value). */
    CHECK_STATUS(cf_future_wait(f, 0.05), CF_TIMEOUT);
    gate_open(&b.g);
    for (int i = 0; i < 4; i++) CHECK(pthread_join(w[i].thread, NULL) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK_STATUS(w[i].st, CF_OK);
        CHECK(w[i].result == &value);
    }
    CHECK_STATUS(w[3].st, CF_OK);
    CHECK_EQ_LL(w[3].code, 0);
    CHECK(w[3].msg == NULL);

    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(r == &value);
    cf_future_release(f);

    /* A blocked task that then fails: every waiter gets CF_TASK_FAILED and the code
     * (test_exception_with_success). */
    blocker b2;
    blocker_init(&b2);
    blocked_job j2;
    blocked_job_init(&j2, &b2, NULL);
    f = submit_ok(ex, task_blocked_then_raise, &j2);
    CHECK(counter_wait(&b2.started, 1, LONG_WAIT));
    CHECK_STATUS(cf_future_exception(f, 0.05, &code, &msg), CF_TIMEOUT);
    start_waiter(&w[0], f, CF_FOREVER, 0);
    start_waiter(&w[1], f, CF_FOREVER, 1);
    start_waiter(&w[2], f, LONG_WAIT, 1);
    gate_open(&b2.g);
    for (int i = 0; i < 3; i++) CHECK(pthread_join(w[i].thread, NULL) == 0);
    CHECK_STATUS(w[0].st, CF_TASK_FAILED);
    CHECK(w[0].result == SENTINEL_PTR);
    for (int i = 1; i < 3; i++) {
        CHECK_STATUS(w[i].st, CF_TASK_FAILED);
        CHECK_EQ_LL(w[i].code, 13);
        CHECK_STREQ(w[i].msg, "late failure");
    }
    cf_future_release(f);

    cf_executor_free(ex);
    blocker_destroy(&b);
    blocker_destroy(&b2);
}

static void test_raise_variants(void) {
    cf_executor *ex = make_pool(2, "raise");

    raise_spec s1 = {.code = 42, .msg = "boom"};
    cf_future *boom = check_failure(ex, &s1, 42, "boom");

    raise_spec s2 = {.code = 7, .msg = NULL};
    cf_future_release(check_failure(ex, &s2, 7, NULL));

    raise_spec s3 = {.code = 0, .msg = "code zero still fails"};
    cf_future_release(check_failure(ex, &s3, 0, "code zero still fails"));

    raise_spec s4 = {.code = -3, .msg = "negative"};
    cf_future_release(check_failure(ex, &s4, -3, "negative"));

    raise_spec s5 = {.code = 1, .msg = ""};
    cf_future_release(check_failure(ex, &s5, 1, ""));

    raise_spec s6 = {.code = EINVAL, .msg = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93"};
    cf_future_release(check_failure(ex, &s6, EINVAL, "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93"));

    /* A C string is bytes: not valid UTF-8 must come back unchanged too. */
    raise_spec s7 = {.code = 2, .msg = "bytes \xff\xfe\x80 end"};
    cf_future_release(check_failure(ex, &s7, 2, "bytes \xff\xfe\x80 end"));

    enum { LONG_LEN = 20000 };
    char *long_msg = malloc(LONG_LEN + 1);
    CHECK(long_msg != NULL);
    for (int i = 0; i < LONG_LEN; i++) long_msg[i] = (char)('a' + i % 26);
    long_msg[LONG_LEN] = '\0';
    raise_spec s8 = {.code = 8, .msg = long_msg};
    cf_future_release(check_failure(ex, &s8, 8, long_msg));
    free(long_msg);

    /* The last call wins, and the return value is ignored. */
    cf_future *f = submit_ok(ex, task_raise_twice, NULL);
    void *r = NULL;
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_TASK_FAILED);
    CHECK(r == NULL);
    int code = -1;
    const char *msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_TASK_FAILED);
    CHECK_EQ_LL(code, 2);
    CHECK_STREQ(msg, "second");
    cf_future_release(f);

    f = submit_ok(ex, task_raise_then_null, NULL);
    msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_TASK_FAILED);
    CHECK_EQ_LL(code, 2);
    CHECK(msg == NULL);
    cf_future_release(f);

    /* The message of `boom` stays valid while the future lives, however much else runs. */
    const char *boom_msg = NULL;
    CHECK_STATUS(cf_future_exception(boom, 0, &code, &boom_msg), CF_TASK_FAILED);
    CHECK_STREQ(boom_msg, "boom");
    for (int i = 0; i < 200; i++) {
        raise_spec other = {.code = i, .msg = "some other failure message, longer than boom"};
        atomic_init(&other.raise_returned_null, 0);
        cf_future *g = submit_ok(ex, task_raise_copy, &other);
        CHECK_STATUS(cf_future_wait(g, CF_FOREVER), CF_OK);
        cf_future_release(g);
    }
    CHECK_STREQ(boom_msg, "boom");
    const char *again = NULL;
    CHECK_STATUS(cf_future_exception(boom, CF_FOREVER, &code, &again), CF_TASK_FAILED);
    CHECK_STREQ(again, "boom");
    CHECK_STREQ(boom_msg, "boom"); /* asking again does not invalidate the first answer */
    CHECK_EQ_LL(code, 42);
    cf_future_release(boom);

    cf_executor_free(ex);
}

static void test_raise_outside_task(void) {
    /* Main thread. */
    CHECK(cf_raise(5, "outside") == NULL);
    CHECK(cf_raise(0, NULL) == NULL);

    /* A plain thread. */
    pthread_t t;
    void *ret = NULL;
    CHECK(pthread_create(&t, NULL, plain_thread_raise, NULL) == 0);
    CHECK(pthread_join(t, &ret) == 0);
    CHECK(ret == (void *)(uintptr_t)1);

    /* Nothing leaked into later work: one worker runs a failing task, then a good one. */
    cf_executor *ex = make_pool(1, "leak");
    int x = 1;
    cf_future *f = submit_ok(ex, task_identity, &x);
    CHECK(result_ok(f) == &x);
    cf_future_release(f);

    raise_spec s = {.code = 11, .msg = "fail once"};
    cf_future_release(check_failure(ex, &s, 11, "fail once"));
    for (int i = 0; i < 5; i++) {
        f = submit_ok(ex, task_identity, &x);
        CHECK(result_ok(f) == &x); /* the same worker, no stale error */
        cf_future_release(f);
    }
    CHECK_EQ_LL(cf_executor_worker_count(ex), 1);

    /* In a done callback (immediate, in this thread): nothing happens to anything. */
    counter_init(&cb_raise_calls);
    f = submit_ok(ex, task_identity, &x);
    CHECK(result_ok(f) == &x);
    CHECK_OK(cf_future_add_done_callback(f, cb_raises, NULL));
    CHECK_EQ_LL(counter_get(&cb_raise_calls), 1);
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(r == &x);
    cf_future_release(f);

    /* In a done callback run by the worker after the task: the task's future stays a
     * success, and the worker's next task is not failed by it. */
    blocker b;
    blocker_init(&b);
    blocked_job j;
    blocked_job_init(&j, &b, &x);
    f = submit_ok(ex, task_blocked, &j);
    CHECK_OK(cf_future_add_done_callback(f, cb_raises, NULL));
    gate_open(&b.g);
    CHECK(result_ok(f) == &x);
    CHECK(counter_wait(&cb_raise_calls, 2, LONG_WAIT));
    cf_future *g = submit_ok(ex, task_identity, &x);
    CHECK(result_ok(g) == &x);
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(r == &x);
    cf_future_release(g);
    cf_future_release(f);

    cf_executor_free(ex);
    blocker_destroy(&b);
    counter_destroy(&cb_raise_calls);

    CHECK(cf_raise(6, "after everything") == NULL);
}

int main(void) {
    watchdog_start(100);
    test_success_and_timeouts_on_done();
    test_timeouts_on_blocked_task();
    test_raise_variants();
    test_raise_outside_task();
    printf("test_future_result: ok\n");
    return 0;
}
