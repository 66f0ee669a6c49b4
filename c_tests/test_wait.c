/* cf_wait: Python's concurrent.futures.wait on thread-pool futures and promises.
 * Ported from CPython Lib/test/test_concurrent_futures/test_wait.py (named per test),
 * plus the cases of the C contract (done[] / n_done, bad input, scale). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <cfutures.h>

#include "test_util.h"
#include "test_util_many.h"

/* ---- n == 0 ---------------------------------------------------------------------- */

static void test_empty(void) {
    cf_return_when modes[3] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION, CF_ALL_COMPLETED};
    double timeouts[3] = {0.0, 0.05, CF_FOREVER};
    for (int m = 0; m < 3; m++) {
        for (int t = 0; t < 3; t++) {
            double t0 = now_s();
            CHECK_OK(cf_wait(NULL, 0, modes[m], timeouts[t], NULL, NULL));
            size_t n_done = 777;
            bool done[1] = {true};
            CHECK_OK(cf_wait(NULL, 0, modes[m], timeouts[t], done, &n_done));
            CHECK(n_done == 0);
            CHECK(done[0] == true); /* n == 0: no entry to write */
            cf_future *one = NULL;
            CHECK_OK(cf_wait(&one, 0, modes[m], timeouts[t], NULL, &n_done));
            CHECK(n_done == 0);
            CHECK(now_s() - t0 < AT_ONCE);
        }
    }
}

/* ---- duplicates -------------------------------------------------------------------- */

/* test_wait.py: test_20369 (duplicate futures, ALL_COMPLETED). */
static void test_20369(void) {
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, task_ident, U2P(2), &f));
    cf_future *fs[2] = {f, f};
    bool done[2] = {false, false};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 2, CF_ALL_COMPLETED, CF_FOREVER, done, &n_done));
    CHECK(done[0] && done[1]);
    CHECK(n_done == 2); /* counts entries, duplicates included */
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(P2U(r) == 2);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Duplicates of a pending promise in every mode: a timeout leaves both entries not
 * done, and one completion makes both done. */
static void test_duplicates_pending(void) {
    cf_future *p = promise_new();
    cf_future *q = promise_new();
    cf_future *fs[4] = {p, q, p, q};
    cf_return_when modes[3] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION, CF_ALL_COMPLETED};
    for (int m = 0; m < 3; m++) {
        bool done[4] = {true, true, true, true};
        size_t n_done = 99;
        CHECK_STATUS(cf_wait(fs, 4, modes[m], 0.0, done, &n_done), CF_TIMEOUT);
        CHECK(!done[0] && !done[1] && !done[2] && !done[3]);
        CHECK(n_done == 0);
    }
    CHECK_OK(cf_future_set_exception(p, 5, "dup"));
    bool done[4] = {false, false, false, false};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 4, CF_FIRST_COMPLETED, LONG_TIMEOUT, done, &n_done));
    CHECK(done[0] && !done[1] && done[2] && !done[3]);
    CHECK(n_done == 2);
    CHECK_OK(cf_wait(fs, 4, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done, &n_done));
    CHECK(done[0] && !done[1] && done[2] && !done[3]);
    CHECK(n_done == 2);
    CHECK_STATUS(cf_wait(fs, 4, CF_ALL_COMPLETED, 0.0, done, &n_done), CF_TIMEOUT);
    CHECK(done[0] && !done[1] && done[2] && !done[3]);
    CHECK(n_done == 2);
    /* Complete q from another thread while waiting on all four entries. */
    completer c;
    completer_start(&c, &q, NULL, 1, 0.05, COMPLETE_RESULT);
    CHECK_OK(cf_wait(fs, 4, CF_ALL_COMPLETED, LONG_TIMEOUT, done, &n_done));
    completer_join(&c);
    CHECK(done[0] && done[1] && done[2] && done[3]);
    CHECK(n_done == 4);
    cf_future_release(p);
    cf_future_release(q);
}

/* ---- FIRST_COMPLETED --------------------------------------------------------------- */

/* test_wait.py: test_first_completed. CPython's CANCELLED_FUTURE (cancelled, not yet
 * notified) has no C counterpart: here a cancelled future is done, so it is tested
 * in test_first_completed_some_already_completed. */
static void test_first_completed(void) {
    cf_executor *ex = pool_new(4);
    blocker b;
    blocker_init(&b, U2P(7));
    cf_future *f2 = submit_blocker(ex, &b);
    cf_future *f1 = NULL;
    CHECK_OK(cf_submit(ex, task_ident, U2P(42), &f1));
    cf_future *fs[2] = {f1, f2};
    bool done[2] = {false, true};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_COMPLETED, CF_FOREVER, done, &n_done));
    CHECK(done[0] && !done[1]);
    CHECK(n_done == 1);
    gate_open(&b.release);
    void *r = NULL;
    CHECK_OK(cf_future_result(f2, LONG_TIMEOUT, &r));
    CHECK(P2U(r) == 7);
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_COMPLETED, 0.0, done, &n_done));
    CHECK(done[0] && done[1] && n_done == 2);
    cf_future_release(f1);
    cf_future_release(f2);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* test_wait.py: test_first_completed_some_already_completed. */
static void test_first_completed_some_already_completed(void) {
    cf_executor *ex = pool_new(2);
    blocker b;
    blocker_init(&b, NULL);
    cf_future *f1 = submit_blocker(ex, &b);
    cf_future *cancelled = promise_cancelled();
    cf_future *success = promise_with_result(U2P(42));
    cf_future *fs[3] = {cancelled, success, f1};
    bool done[3] = {false, false, true};
    size_t n_done = 0;
    double t0 = now_s();
    CHECK_OK(cf_wait(fs, 3, CF_FIRST_COMPLETED, LONG_TIMEOUT, done, &n_done));
    CHECK(now_s() - t0 < AT_ONCE);
    CHECK(done[0] && done[1] && !done[2]);
    CHECK(n_done == 2);
    /* A cancelled future alone satisfies FIRST_COMPLETED: cancelled counts as done. */
    cf_future *only[2] = {f1, cancelled};
    CHECK_OK(cf_wait(only, 2, CF_FIRST_COMPLETED, LONG_TIMEOUT, done, &n_done));
    CHECK(!done[0] && done[1] && n_done == 1);
    gate_open(&b.release);
    CHECK_OK(cf_future_wait(f1, LONG_TIMEOUT));
    cf_future_release(f1);
    cf_future_release(cancelled);
    cf_future_release(success);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* A promise completed (result, exception or cancel) from another thread wakes a
 * FIRST_COMPLETED waiter that waits without limit. */
static void test_first_completed_woken_by_other_thread(void) {
    int hows[3] = {COMPLETE_RESULT, COMPLETE_EXCEPTION, COMPLETE_CANCEL};
    for (int h = 0; h < 3; h++) {
        cf_future *fs[3] = {promise_new(), promise_new(), promise_new()};
        completer c;
        completer_start(&c, &fs[1], NULL, 1, 0.05, hows[h]);
        bool done[3] = {true, false, true};
        size_t n_done = 0;
        CHECK_OK(cf_wait(fs, 3, CF_FIRST_COMPLETED, CF_FOREVER, done, &n_done));
        completer_join(&c);
        CHECK(!done[0] && done[1] && !done[2]);
        CHECK(n_done == 1);
        release_all(fs, 3);
    }
    /* Any negative timeout waits without limit, too. */
    cf_future *p = promise_new();
    completer c;
    completer_start(&c, &p, NULL, 1, 0.05, COMPLETE_RESULT);
    CHECK_OK(cf_wait(&p, 1, CF_FIRST_COMPLETED, -0.5, NULL, NULL));
    completer_join(&c);
    cf_future_release(p);
}

/* ---- FIRST_EXCEPTION --------------------------------------------------------------- */

static gate g_first_exc_event1;
static void *wait_and_raise(void *arg) {
    (void)arg;
    gate_wait(&g_first_exc_event1);
    return cf_raise(33, "this is an exception");
}

typedef struct future_then_open {
    cf_future *f;
    gate *g;
    cf_status st;
} future_then_open;

static void *wait_for_future1(void *arg) {
    future_then_open *w = (future_then_open *)arg;
    void *r = NULL;
    w->st = cf_future_result(w->f, LONG_TIMEOUT, &r);
    gate_open(w->g);
    return NULL;
}

/* test_wait.py: test_first_exception. */
static void test_first_exception(void) {
    cf_executor *ex = pool_new(4);
    gate_init(&g_first_exc_event1);
    blocker b3;
    blocker_init(&b3, NULL);
    cf_future *f1 = NULL, *f2 = NULL;
    CHECK_OK(cf_submit(ex, task_ident, U2P(42), &f1));
    CHECK_OK(cf_submit(ex, wait_and_raise, NULL, &f2));
    cf_future *f3 = submit_blocker(ex, &b3);
    /* Ensure that f1 is completed before f2 finishes. */
    future_then_open w = {f1, &g_first_exc_event1, CF_INVALID_STATE};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_for_future1, &w) == 0);
    cf_future *fs[3] = {f1, f2, f3};
    bool done[3] = {false, false, true};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 3, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done, &n_done));
    CHECK(done[0] && done[1] && !done[2]);
    CHECK(n_done == 2);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_OK(w.st);
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f2, 0, &code, &msg), CF_TASK_FAILED);
    CHECK(code == 33);
    CHECK(msg != NULL && strcmp(msg, "this is an exception") == 0);
    gate_open(&b3.release);
    CHECK_OK(cf_future_wait(f3, LONG_TIMEOUT));
    release_all(fs, 3);
    cf_executor_free(ex);
    blocker_destroy(&b3);
    gate_destroy(&g_first_exc_event1);
}

/* test_wait.py: test_first_exception_some_already_complete. Unlike CPython's
 * CANCELLED_FUTURE, a cancelled future is done here (it is not an exception). */
static void test_first_exception_some_already_complete(void) {
    cf_executor *ex = pool_new(4);
    blocker b;
    blocker_init(&b, NULL);
    cf_future *f2 = submit_blocker(ex, &b);
    cf_future *f1 = NULL;
    CHECK_OK(cf_submit(ex, task_raise, U2P(21), &f1));
    cf_future *success = promise_with_result(U2P(42));
    cf_future *cancelled = promise_cancelled();
    cf_future *fs[4] = {success, cancelled, f1, f2};
    bool done[4] = {false, false, false, true};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 4, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done, &n_done));
    CHECK(done[0] && done[1] && done[2] && !done[3]);
    CHECK(n_done == 3);
    gate_open(&b.release);
    CHECK_OK(cf_future_wait(f2, LONG_TIMEOUT));
    release_all(fs, 4);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* test_wait.py: test_first_exception_one_already_failed; also with a promise failed
 * by set_exception, and the failed future last in the array. */
static void test_first_exception_one_already_failed(void) {
    cf_executor *ex = pool_new(2);
    blocker b;
    blocker_init(&b, NULL);
    cf_future *f1 = submit_blocker(ex, &b);
    cf_future *failed = promise_with_exception(EIO, "io");
    cf_future *fs[2] = {failed, f1};
    bool done[2] = {false, true};
    size_t n_done = 0;
    double t0 = now_s();
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done, &n_done));
    CHECK(now_s() - t0 < AT_ONCE);
    CHECK(done[0] && !done[1] && n_done == 1);
    cf_future *rev[2] = {f1, failed};
    t0 = now_s();
    CHECK_OK(cf_wait(rev, 2, CF_FIRST_EXCEPTION, CF_FOREVER, done, &n_done));
    CHECK(now_s() - t0 < AT_ONCE);
    CHECK(!done[0] && done[1] && n_done == 1);
    /* Timeout 0 also reports the condition as met. */
    CHECK_OK(cf_wait(rev, 2, CF_FIRST_EXCEPTION, 0.0, done, &n_done));
    CHECK(!done[0] && done[1] && n_done == 1);
    /* A task that called cf_raise and is already done. */
    cf_future *raised = NULL;
    CHECK_OK(cf_submit(ex, task_raise, U2P(3), &raised));
    CHECK_STATUS(cf_future_result(raised, LONG_TIMEOUT, &(void *){NULL}), CF_TASK_FAILED);
    cf_future *fs2[2] = {f1, raised};
    CHECK_OK(cf_wait(fs2, 2, CF_FIRST_EXCEPTION, 0.0, done, &n_done));
    CHECK(!done[0] && done[1] && n_done == 1);
    gate_open(&b.release);
    CHECK_OK(cf_future_wait(f1, LONG_TIMEOUT));
    cf_future_release(f1);
    cf_future_release(failed);
    cf_future_release(raised);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* Cancelled futures are done but not exceptions: FIRST_EXCEPTION keeps waiting. */
static void test_first_exception_ignores_cancelled(void) {
    cf_future *cancelled = promise_cancelled();
    cf_future *pending = promise_new();
    cf_future *fs[2] = {cancelled, pending};
    bool done[2] = {false, true};
    size_t n_done = 0;
    double t0 = now_s();
    CHECK_STATUS(cf_wait(fs, 2, CF_FIRST_EXCEPTION, 0.05, done, &n_done), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.04);
    CHECK(done[0] && !done[1] && n_done == 1);
    /* Cancelling from another thread while waiting does not end the wait either... */
    cf_future *p2 = promise_new();
    cf_future *fs3[3] = {cancelled, pending, p2};
    completer c;
    completer_start(&c, &p2, NULL, 1, 0.0, COMPLETE_CANCEL);
    bool done3[3] = {false, true, false};
    CHECK_STATUS(cf_wait(fs3, 3, CF_FIRST_EXCEPTION, 0.3, done3, &n_done), CF_TIMEOUT);
    completer_join(&c);
    /* (p2 is cancelled by now unless the machine stalled the completer for 0.3 s.) */
    CHECK(done3[0] && !done3[1] && n_done == count_true(done3, 3));
    CHECK_STATUS(cf_wait(fs3, 3, CF_FIRST_EXCEPTION, 0.0, done3, &n_done), CF_TIMEOUT);
    CHECK(done3[0] && !done3[1] && done3[2] && n_done == 2);
    /* ...until everything is done: then it returns CF_OK. */
    completer_start(&c, &pending, NULL, 1, 0.05, COMPLETE_CANCEL);
    CHECK_OK(cf_wait(fs3, 3, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done3, &n_done));
    completer_join(&c);
    CHECK(done3[0] && done3[1] && done3[2] && n_done == 3);
    cf_future_release(cancelled);
    cf_future_release(pending);
    cf_future_release(p2);
}

/* FIRST_EXCEPTION with no failure returns once all are done. */
static void test_first_exception_all_succeed(void) {
    cf_executor *ex = pool_new(4);
    cf_future *fs[6];
    fs[0] = promise_with_result(U2P(1));
    fs[1] = promise_cancelled();
    for (int i = 2; i < 5; i++) CHECK_OK(cf_submit(ex, task_ident, U2P(i), &fs[i]));
    fs[5] = promise_new();
    completer c;
    completer_start(&c, &fs[5], NULL, 1, 0.05, COMPLETE_RESULT);
    bool done[6] = {false, false, false, false, false, false};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 6, CF_FIRST_EXCEPTION, CF_FOREVER, done, &n_done));
    completer_join(&c);
    CHECK(count_true(done, 6) == 6 && n_done == 6);
    /* And with everything already done and timeout 0. */
    CHECK_OK(cf_wait(fs, 6, CF_FIRST_EXCEPTION, 0.0, done, &n_done));
    CHECK(n_done == 6);
    release_all(fs, 6);
    cf_executor_free(ex);
}

/* A failure from another thread (set_exception on a promise, or a task calling
 * cf_raise) wakes a FIRST_EXCEPTION waiter while other futures stay pending. */
static gate g_raise_gate;
static void *gated_raise(void *arg) {
    (void)arg;
    gate_wait(&g_raise_gate);
    return cf_raise(77, "late failure");
}

static void test_first_exception_woken(void) {
    cf_future *fs[3] = {promise_new(), promise_new(), promise_with_result(NULL)};
    completer c;
    completer_start(&c, &fs[1], NULL, 1, 0.05, COMPLETE_EXCEPTION);
    bool done[3] = {true, false, false};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 3, CF_FIRST_EXCEPTION, CF_FOREVER, done, &n_done));
    completer_join(&c);
    CHECK(!done[0] && done[1] && done[2] && n_done == 2);
    release_all(fs, 3);

    cf_executor *ex = pool_new(2);
    gate_init(&g_raise_gate);
    cf_future *pending = promise_new();
    cf_future *ok = NULL, *bad = NULL;
    CHECK_OK(cf_submit(ex, task_ident, U2P(1), &ok));
    CHECK_OK(cf_submit(ex, gated_raise, NULL, &bad));
    delayed_open d;
    delayed_open_start(&d, &g_raise_gate, 0.05);
    cf_future *fs2[3] = {pending, ok, bad};
    bool done2[3] = {true, false, false};
    CHECK_OK(cf_wait(fs2, 3, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done2, &n_done));
    delayed_open_join(&d);
    CHECK(!done2[0] && done2[1] && done2[2] && n_done == 2);
    CHECK_OK(cf_future_set_result(pending, NULL));
    release_all(fs2, 3);
    cf_executor_free(ex);
    gate_destroy(&g_raise_gate);
}

/* CF_BROKEN counts as an exception: a pool whose initializer fails breaks, and the
 * future submitted to it finishes with CF_BROKEN. */
static gate g_init_gate;
static void init_fail(void *initarg) {
    (void)initarg;
    cf_raise(9, "initializer failed");
}
static void init_fail_late(void *initarg) {
    (void)initarg;
    gate_wait(&g_init_gate);
    cf_raise(9, "initializer failed late");
}

static cf_executor *broken_pool_new(cf_init_fn init) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    o.initializer = init;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    return ex;
}

static void test_first_exception_broken(void) {
    cf_executor *ex = broken_pool_new(init_fail);
    cf_future *bf = NULL;
    CHECK_OK(cf_submit(ex, task_ident, U2P(1), &bf));
    CHECK_STATUS(cf_future_result(bf, LONG_TIMEOUT, &(void *){NULL}), CF_BROKEN);
    cf_future *pending = promise_new();
    cf_future *fs[2] = {pending, bf};
    bool done[2] = {true, false};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done, &n_done));
    CHECK(!done[0] && done[1] && n_done == 1);
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_EXCEPTION, 0.0, done, &n_done));
    CHECK_STATUS(cf_wait(fs, 2, CF_ALL_COMPLETED, 0.0, done, &n_done), CF_TIMEOUT);
    CHECK(!done[0] && done[1] && n_done == 1);
    cf_future_release(bf);
    cf_executor_free(ex);

    /* The pool breaks while the caller waits. */
    gate_init(&g_init_gate);
    ex = broken_pool_new(init_fail_late);
    CHECK_OK(cf_submit(ex, task_ident, U2P(1), &bf));
    fs[1] = bf;
    delayed_open d;
    delayed_open_start(&d, &g_init_gate, 0.05);
    done[0] = true;
    done[1] = false;
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done, &n_done));
    delayed_open_join(&d);
    CHECK(!done[0] && done[1] && n_done == 1);
    CHECK_STATUS(cf_future_result(bf, 0, &(void *){NULL}), CF_BROKEN);
    CHECK_OK(cf_future_set_result(pending, NULL));
    cf_future_release(bf);
    cf_future_release(pending);
    cf_executor_free(ex);
    gate_destroy(&g_init_gate);
}

/* ---- ALL_COMPLETED ----------------------------------------------------------------- */

/* test_wait.py: test_all_completed. */
static void test_all_completed(void) {
    cf_executor *ex = pool_new(4);
    cf_future *f1 = NULL, *f2 = NULL;
    CHECK_OK(cf_submit(ex, task_raise, U2P(2), &f1));
    CHECK_OK(cf_submit(ex, task_ident, U2P(42), &f2));
    cf_future *fs[5] = {promise_with_result(U2P(42)), promise_cancelled(),
                        promise_with_exception(EIO, NULL), f1, f2};
    bool done[5] = {false, false, false, false, false};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 5, CF_ALL_COMPLETED, CF_FOREVER, done, &n_done));
    CHECK(count_true(done, 5) == 5 && n_done == 5);
    void *r = NULL;
    CHECK_OK(cf_future_result(f2, 0, &r));
    CHECK(P2U(r) == 42);
    CHECK_STATUS(cf_future_result(f1, 0, &r), CF_TASK_FAILED);
    release_all(fs, 5);
    cf_executor_free(ex);
}

/* ALL_COMPLETED, futures completed one by one from another thread, in every way. */
static void test_all_completed_woken(void) {
    int hows[3] = {COMPLETE_RESULT, COMPLETE_EXCEPTION, COMPLETE_CANCEL};
    for (int h = 0; h < 3; h++) {
        cf_future *fs[5];
        for (int i = 0; i < 5; i++) fs[i] = promise_new();
        size_t order[5] = {3, 0, 4, 1, 2};
        completer c;
        completer_start(&c, fs, order, 5, 0.05, hows[h]);
        bool done[5] = {false, false, false, false, false};
        size_t n_done = 0;
        CHECK_OK(cf_wait(fs, 5, CF_ALL_COMPLETED, CF_FOREVER, done, &n_done));
        completer_join(&c);
        CHECK(count_true(done, 5) == 5 && n_done == 5);
        release_all(fs, 5);
    }
}

/* test_wait.py: ThreadPoolWaitTests.test_pending_calls_race (issue #14406). */
static gate g_race_gate;
static void *race_task(void *arg) {
    gate_wait(&g_race_gate);
    return arg;
}
static void test_pending_calls_race(void) {
    cf_executor *ex = pool_new(8);
    gate_init(&g_race_gate);
    cf_future *fs[100];
    for (int i = 0; i < 100; i++) CHECK_OK(cf_submit(ex, race_task, U2P(i), &fs[i]));
    gate_open(&g_race_gate);
    bool done[100];
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 100, CF_ALL_COMPLETED, CF_FOREVER, done, &n_done));
    CHECK(n_done == 100 && count_true(done, 100) == 100);
    for (int i = 0; i < 100; i++) {
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[i], 0, &r));
        CHECK(P2U(r) == (uintptr_t)i);
    }
    release_all(fs, 100);
    cf_executor_free(ex);
    gate_destroy(&g_race_gate);
}

/* ---- timeouts ---------------------------------------------------------------------- */

/* test_wait.py: test_timeout (0.05 s), in every mode. */
static void test_timeout(void) {
    cf_executor *ex = pool_new(2);
    blocker b;
    blocker_init(&b, NULL);
    cf_future *future = submit_blocker(ex, &b);
    cf_future *fs[4] = {promise_cancelled(), promise_with_exception(1, "x"),
                        promise_with_result(U2P(42)), future};
    cf_future *pend[2] = {future, promise_new()};
    /* ALL_COMPLETED with some done; FIRST_COMPLETED / FIRST_EXCEPTION with none done;
     * FIRST_EXCEPTION with only cancelled and successful ones done. */
    for (int m = 0; m < 4; m++) {
        cf_future *const *arr = fs;
        size_t n = 4;
        cf_return_when when = CF_ALL_COMPLETED;
        cf_future *no_fail[3] = {fs[0], fs[2], future};
        if (m == 1) { arr = pend; n = 2; when = CF_FIRST_COMPLETED; }
        if (m == 2) { arr = pend; n = 2; when = CF_FIRST_EXCEPTION; }
        if (m == 3) { arr = no_fail; n = 3; when = CF_FIRST_EXCEPTION; }
        bool done[4] = {false, true, false, true};
        size_t n_done = 1234;
        double t0 = now_s();
        CHECK_STATUS(cf_wait(arr, n, when, 0.05, done, &n_done), CF_TIMEOUT);
        double el = now_s() - t0;
        CHECK(el >= 0.04);
        CHECK(el < AT_ONCE + 0.05);
        if (m == 0) CHECK(done[0] && done[1] && done[2] && !done[3] && n_done == 3);
        if (m == 1 || m == 2) CHECK(!done[0] && !done[1] && n_done == 0);
        if (m == 3) CHECK(done[0] && done[1] && !done[2] && n_done == 2);
        /* NULL done and n_done. */
        t0 = now_s();
        CHECK_STATUS(cf_wait(arr, n, when, 0.05, NULL, NULL), CF_TIMEOUT);
        CHECK(now_s() - t0 >= 0.04);
        CHECK_STATUS(cf_wait(arr, n, when, 0.05, done, NULL), CF_TIMEOUT);
        CHECK_STATUS(cf_wait(arr, n, when, 0.05, NULL, &n_done), CF_TIMEOUT);
        if (m == 0) CHECK(n_done == 3);
    }
    gate_open(&b.release);
    CHECK_OK(cf_future_wait(future, LONG_TIMEOUT));
    release_all(fs, 4);
    cf_future_release(pend[1]);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* Timeout 0 polls once: it returns at once whether or not the condition holds. */
static void test_timeout_zero(void) {
    cf_future *pending = promise_new();
    cf_future *success = promise_with_result(U2P(1));
    cf_future *fs[2] = {success, pending};
    bool done[2] = {false, true};
    size_t n_done = 0;
    double t0 = now_s();
    CHECK_STATUS(cf_wait(fs, 2, CF_ALL_COMPLETED, 0.0, done, &n_done), CF_TIMEOUT);
    CHECK(done[0] && !done[1] && n_done == 1);
    done[0] = false;
    done[1] = true;
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_COMPLETED, 0.0, done, &n_done));
    CHECK(done[0] && !done[1] && n_done == 1);
    CHECK_STATUS(cf_wait(fs, 2, CF_FIRST_EXCEPTION, 0.0, done, &n_done), CF_TIMEOUT);
    CHECK(done[0] && !done[1] && n_done == 1);
    CHECK_STATUS(cf_wait(&pending, 1, CF_FIRST_COMPLETED, 0.0, done, &n_done), CF_TIMEOUT);
    CHECK(!done[0] && n_done == 0);
    CHECK(now_s() - t0 < AT_ONCE);
    CHECK_OK(cf_future_set_result(pending, NULL));
    CHECK_OK(cf_wait(fs, 2, CF_ALL_COMPLETED, 0.0, done, &n_done));
    CHECK(done[0] && done[1] && n_done == 2);
    /* done NULL with n_done, and the other way round. */
    CHECK_OK(cf_wait(fs, 2, CF_ALL_COMPLETED, 0.0, NULL, &n_done));
    CHECK(n_done == 2);
    done[0] = done[1] = false;
    CHECK_OK(cf_wait(fs, 2, CF_ALL_COMPLETED, 0.0, done, NULL));
    CHECK(done[0] && done[1]);
    release_all(fs, 2);
}

/* Timeouts too large to represent, and infinity, wait without limit. */
static void test_timeout_huge(void) {
    double huge[3] = {1e300, INFINITY, 1e12};
    for (int i = 0; i < 3; i++) {
        cf_future *p = promise_new();
        completer c;
        completer_start(&c, &p, NULL, 1, 0.02, COMPLETE_RESULT);
        size_t n_done = 0;
        CHECK_OK(cf_wait(&p, 1, CF_ALL_COMPLETED, huge[i], NULL, &n_done));
        completer_join(&c);
        CHECK(n_done == 1);
        cf_future_release(p);
    }
}

/* The same future completed after a waiter gave up: no crash, the future works. */
static atomic_int g_cb_count;
static void count_cb(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    atomic_fetch_add(&g_cb_count, 1);
}
static void test_completed_after_waiter_gave_up(void) {
    atomic_store(&g_cb_count, 0);
    cf_future *p = promise_new();
    CHECK_OK(cf_future_add_done_callback(p, count_cb, NULL));
    cf_return_when modes[3] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION, CF_ALL_COMPLETED};
    for (int m = 0; m < 3; m++) {
        CHECK_STATUS(cf_wait(&p, 1, modes[m], 0.02, NULL, NULL), CF_TIMEOUT);
        CHECK_STATUS(cf_wait(&p, 1, modes[m], 0.0, NULL, NULL), CF_TIMEOUT);
    }
    CHECK_OK(cf_future_set_result(p, U2P(5)));
    CHECK(atomic_load(&g_cb_count) == 1);
    for (int m = 0; m < 3; m++) CHECK_OK(cf_wait(&p, 1, modes[m], 0.0, NULL, NULL));
    void *r = NULL;
    CHECK_OK(cf_future_result(p, 0, &r));
    CHECK(P2U(r) == 5);
    cf_future_release(p);

    /* An executor future: the waiter gives up, then the task finishes. */
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b, U2P(6));
    cf_future *f = submit_blocker(ex, &b);
    CHECK_STATUS(cf_wait(&f, 1, CF_ALL_COMPLETED, 0.02, NULL, NULL), CF_TIMEOUT);
    gate_open(&b.release);
    CHECK_OK(cf_wait(&f, 1, CF_ALL_COMPLETED, LONG_TIMEOUT, NULL, NULL));
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(P2U(r) == 6);
    cf_future_release(f);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* ---- executor futures and promises mixed ------------------------------------------- */

static void test_mixed(void) {
    cf_executor *ex = pool_new(2);
    blocker b;
    blocker_init(&b, U2P(11));
    cf_future *task = submit_blocker(ex, &b);
    cf_future *prom = promise_new();
    cf_future *fs[2] = {task, prom};
    completer c;
    completer_start(&c, &prom, NULL, 1, 0.05, COMPLETE_RESULT);
    bool done[2] = {true, false};
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_COMPLETED, LONG_TIMEOUT, done, &n_done));
    completer_join(&c);
    CHECK(!done[0] && done[1] && n_done == 1);
    delayed_open d;
    delayed_open_start(&d, &b.release, 0.05);
    CHECK_OK(cf_wait(fs, 2, CF_ALL_COMPLETED, CF_FOREVER, done, &n_done));
    delayed_open_join(&d);
    CHECK(done[0] && done[1] && n_done == 2);
    void *r = NULL;
    CHECK_OK(cf_future_result(task, 0, &r));
    CHECK(P2U(r) == 11);
    CHECK_OK(cf_future_result(prom, 0, &r));
    CHECK(P2U(r) == 1);
    release_all(fs, 2);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* Several threads wait on the same futures at once; all are woken. */
typedef struct multi_waiter {
    pthread_t th;
    cf_future *const *fs;
    size_t n;
    cf_return_when when;
    cf_status st;
    size_t n_done;
} multi_waiter;

static void *multi_waiter_main(void *arg) {
    multi_waiter *w = (multi_waiter *)arg;
    w->st = cf_wait(w->fs, w->n, w->when, LONG_TIMEOUT, NULL, &w->n_done);
    return NULL;
}

static void test_many_waiters(void) {
    enum { N = 1000, W = 6 };
    cf_future **fs = malloc(N * sizeof *fs);
    CHECK(fs != NULL);
    for (int i = 0; i < N; i++) fs[i] = promise_new();
    multi_waiter w[W];
    for (int k = 0; k < W; k++) {
        w[k].fs = fs;
        w[k].n = N;
        w[k].when = k % 3 == 0 ? CF_ALL_COMPLETED
                  : k % 3 == 1 ? CF_FIRST_COMPLETED : CF_FIRST_EXCEPTION;
        w[k].st = CF_INVALID_STATE;
        w[k].n_done = 0;
        CHECK(pthread_create(&w[k].th, NULL, multi_waiter_main, &w[k]) == 0);
    }
    for (int i = 0; i < N; i++) CHECK_OK(cf_future_set_result(fs[i], U2P(i)));
    for (int k = 0; k < W; k++) {
        CHECK(pthread_join(w[k].th, NULL) == 0);
        CHECK_OK(w[k].st);
        if (w[k].when == CF_ALL_COMPLETED || w[k].when == CF_FIRST_EXCEPTION)
            CHECK(w[k].n_done == N);
        else
            CHECK(w[k].n_done >= 1);
    }
    release_all(fs, N);
    free(fs);
}

/* A task waiting with cf_wait on tasks queued behind it in its own 1-worker pool does
 * not deadlock (API.md; the header says the worker runs queued tasks meanwhile). */
typedef struct nested {
    cf_executor *ex;
    cf_status submit_st;
    cf_status st;
    size_t n_done;
    uintptr_t sum;
} nested;

static void *nested_wait_task(void *arg) {
    nested *w = (nested *)arg;
    cf_future *fs[3] = {NULL, NULL, NULL};
    w->submit_st = CF_OK;
    for (int i = 0; i < 3; i++) {
        cf_status st = cf_submit(w->ex, task_ident, U2P(i + 1), &fs[i]);
        if (st != CF_OK) w->submit_st = st;
    }
    if (w->submit_st != CF_OK) return NULL;
    bool done[3] = {false, false, false};
    w->st = cf_wait(fs, 3, CF_ALL_COMPLETED, LONG_TIMEOUT, done, &w->n_done);
    w->sum = 0;
    for (int i = 0; i < 3; i++) {
        void *r = NULL;
        if (cf_future_result(fs[i], 0, &r) == CF_OK) w->sum += P2U(r);
        cf_future_release(fs[i]);
    }
    return U2P(1);
}

static void test_wait_inside_task(void) {
    cf_executor *ex = pool_new(1);
    nested w = {ex, CF_INVALID_STATE, CF_INVALID_STATE, 0, 0};
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, nested_wait_task, &w, &f));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 2 * LONG_TIMEOUT, &r));
    CHECK(P2U(r) == 1);
    CHECK_OK(w.submit_st);
    CHECK_OK(w.st);
    CHECK(w.n_done == 3);
    CHECK(w.sum == 6);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ---- scale ------------------------------------------------------------------------- */

enum { BIG = 100000 };

/* 100,000 promises, ALL_COMPLETED, completed by a second thread: O(n), seconds. */
static void test_big_all_completed(void) {
    cf_future **fs = malloc(BIG * sizeof *fs);
    bool *done = malloc(BIG * sizeof *done);
    CHECK(fs != NULL && done != NULL);
    for (size_t i = 0; i < BIG; i++) {
        fs[i] = promise_new();
        done[i] = false;
    }
    double t0 = now_s();
    completer c;
    completer_start(&c, fs, NULL, BIG, 0.0, COMPLETE_RESULT);
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, BIG, CF_ALL_COMPLETED, CF_FOREVER, done, &n_done));
    double el = now_s() - t0;
    completer_join(&c);
    CHECK(n_done == BIG && count_true(done, BIG) == BIG);
    CHECK(el < 8.0 * time_scale());

    /* FIRST_EXCEPTION over 100,000 where the last one fails. */
    for (size_t i = 0; i < BIG; i++) cf_future_release(fs[i]);
    for (size_t i = 0; i < BIG; i++) fs[i] = promise_new();
    t0 = now_s();
    completer_start(&c, fs, NULL, BIG - 1, 0.0, COMPLETE_RESULT);
    completer c2;
    /* The last one is never completed by c, and none fails: not yet. */
    CHECK_STATUS(cf_wait(fs, BIG, CF_FIRST_EXCEPTION, 0.0, NULL, NULL), CF_TIMEOUT);
    completer_join(&c);
    CHECK_STATUS(cf_wait(fs, BIG, CF_FIRST_EXCEPTION, 0.0, NULL, &n_done), CF_TIMEOUT);
    CHECK(n_done == BIG - 1);
    completer_start(&c2, &fs[BIG - 1], NULL, 1, 0.0, COMPLETE_EXCEPTION);
    CHECK_OK(cf_wait(fs, BIG, CF_FIRST_EXCEPTION, LONG_TIMEOUT, done, &n_done));
    completer_join(&c2);
    CHECK(n_done == BIG);
    CHECK(now_s() - t0 < 8.0 * time_scale());
    for (size_t i = 0; i < BIG; i++) cf_future_release(fs[i]);
    free(fs);
    free(done);
}

/* Waits on 100,000 pending futures that time out; the futures are completed (or
 * freed) afterwards: no waiter registration may be left behind. */
static void test_big_timeout_then_complete(void) {
    cf_future **fs = malloc(BIG * sizeof *fs);
    bool *done = malloc(BIG * sizeof *done);
    CHECK(fs != NULL && done != NULL);
    for (size_t i = 0; i < BIG; i++) fs[i] = promise_new();
    double t0 = now_s();
    size_t n_done = 42;
    CHECK_STATUS(cf_wait(fs, BIG, CF_ALL_COMPLETED, 0.01, done, &n_done), CF_TIMEOUT);
    CHECK(n_done == 0 && count_true(done, BIG) == 0);
    CHECK_STATUS(cf_wait(fs, BIG, CF_FIRST_COMPLETED, 0.01, NULL, NULL), CF_TIMEOUT);
    CHECK_STATUS(cf_wait(fs, BIG, CF_FIRST_EXCEPTION, 0.0, NULL, NULL), CF_TIMEOUT);
    /* Complete half after the waiter gave up, and wait again. */
    for (size_t i = 0; i < BIG; i += 2) CHECK_OK(cf_future_set_result(fs[i], U2P(i)));
    CHECK_STATUS(cf_wait(fs, BIG, CF_ALL_COMPLETED, 0.01, done, &n_done), CF_TIMEOUT);
    CHECK(n_done == BIG / 2);
    for (size_t i = 0; i < BIG; i++) CHECK(done[i] == (i % 2 == 0));
    for (size_t i = 1; i < BIG; i += 2) CHECK_OK(cf_future_set_exception(fs[i], 1, "late"));
    CHECK_OK(cf_wait(fs, BIG, CF_ALL_COMPLETED, 0.0, done, &n_done));
    CHECK(n_done == BIG);
    CHECK(now_s() - t0 < 8.0 * time_scale());
    release_all(fs, BIG);
    /* Pending futures released (freed) after a timed-out wait. */
    for (size_t i = 0; i < BIG; i++) fs[i] = promise_new();
    CHECK_STATUS(cf_wait(fs, BIG, CF_FIRST_COMPLETED, 0.01, NULL, NULL), CF_TIMEOUT);
    release_all(fs, BIG);
    free(fs);
    free(done);
}

/* ---- bad input --------------------------------------------------------------------- */

static void test_bad_input(void) {
    cf_future *p = promise_new();
    cf_future *d = promise_with_result(NULL);
    cf_future *fs[3] = {p, d, p};
    /* Sentinels: the opposite of the truth, so a write would show. */
    bool done[3] = {true, false, true};
    size_t n_done = 31337;
#define CHECK_UNTOUCHED() CHECK(done[0] && !done[1] && done[2] && n_done == 31337)
    CHECK_STATUS(cf_wait(NULL, 3, CF_ALL_COMPLETED, 0.0, done, &n_done), CF_INVALID_ARGUMENT);
    CHECK_UNTOUCHED();
    CHECK_STATUS(cf_wait(NULL, 1, CF_FIRST_COMPLETED, CF_FOREVER, done, &n_done),
                 CF_INVALID_ARGUMENT);
    CHECK_UNTOUCHED();
    cf_future *with_null[3] = {d, NULL, p};
    cf_return_when modes[3] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION, CF_ALL_COMPLETED};
    for (int m = 0; m < 3; m++) {
        /* A NULL entry is rejected even though d alone would satisfy FIRST_COMPLETED. */
        CHECK_STATUS(cf_wait(with_null, 3, modes[m], 0.0, done, &n_done), CF_INVALID_ARGUMENT);
        CHECK_UNTOUCHED();
        CHECK_STATUS(cf_wait(with_null, 3, modes[m], CF_FOREVER, done, &n_done),
                     CF_INVALID_ARGUMENT);
        CHECK_UNTOUCHED();
        CHECK_STATUS(cf_wait(fs, 3, modes[m], NAN, done, &n_done), CF_INVALID_ARGUMENT);
        CHECK_UNTOUCHED();
        CHECK_STATUS(cf_wait(fs, 3, modes[m], -NAN, NULL, NULL), CF_INVALID_ARGUMENT);
    }
    CHECK_STATUS(cf_wait(fs, 3, (cf_return_when)42, 0.0, done, &n_done), CF_INVALID_ARGUMENT);
    CHECK_UNTOUCHED();
    CHECK_STATUS(cf_wait(fs, 3, (cf_return_when)3, CF_FOREVER, done, &n_done),
                 CF_INVALID_ARGUMENT);
    CHECK_UNTOUCHED();
    CHECK_STATUS(cf_wait(fs, 3, (cf_return_when)-1, CF_FOREVER, done, &n_done),
                 CF_INVALID_ARGUMENT);
    CHECK_UNTOUCHED();
#undef CHECK_UNTOUCHED
    /* Nothing changed: p is still pending and still completes normally. */
    CHECK(!cf_future_done(p));
    CHECK_OK(cf_future_set_result(p, NULL));
    cf_future_release(p);
    cf_future_release(d);
}

int main(void) {
    TEST(test_empty);
    TEST(test_20369);
    TEST(test_duplicates_pending);
    TEST(test_first_completed);
    TEST(test_first_completed_some_already_completed);
    TEST(test_first_completed_woken_by_other_thread);
    TEST(test_first_exception);
    TEST(test_first_exception_some_already_complete);
    TEST(test_first_exception_one_already_failed);
    TEST(test_first_exception_ignores_cancelled);
    TEST(test_first_exception_all_succeed);
    TEST(test_first_exception_woken);
    TEST(test_first_exception_broken);
    TEST(test_all_completed);
    TEST(test_all_completed_woken);
    TEST(test_pending_calls_race);
    TEST(test_timeout);
    TEST(test_timeout_zero);
    TEST(test_timeout_huge);
    TEST(test_completed_after_waiter_gave_up);
    TEST(test_mixed);
    TEST(test_many_waiters);
    TEST(test_wait_inside_task);
    TEST(test_big_all_completed);
    TEST(test_big_timeout_then_complete);
    TEST(test_bad_input);
    return 0;
}
