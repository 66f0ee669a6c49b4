/* cf_as_completed_*: Python's concurrent.futures.as_completed on thread-pool futures
 * and promises. Ported from CPython Lib/test/test_concurrent_futures/
 * test_as_completed.py (named per test), plus the cases of the C contract. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <cfutures.h>

#include "test_util.h"
#include "test_util_many.h"

/* Index of f in fs, or n if absent. */
static size_t index_of(cf_future *const *fs, size_t n, const cf_future *f) {
    for (size_t i = 0; i < n; i++)
        if (fs[i] == f) return i;
    return n;
}

/* Drain the iterator until CF_END; every yielded future must be in fs and be yielded
 * once. Returns how many were yielded. */
static size_t drain(cf_as_completed *it, cf_future *const *fs, size_t n, bool *seen) {
    size_t k = 0;
    for (;;) {
        cf_future *f = NULL;
        cf_status st = cf_as_completed_next(it, &f);
        if (st == CF_END) break;
        CHECK_OK(st);
        CHECK(f != NULL);
        CHECK(cf_future_done(f));
        size_t i = index_of(fs, n, f);
        CHECK(i < n);
        CHECK(!seen[i]);
        seen[i] = true;
        k++;
    }
    /* CF_END again after the end. */
    cf_future *f = (cf_future *)&k;
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    return k;
}

/* test_as_completed.py: test_no_timeout. */
static void test_no_timeout(void) {
    cf_executor *ex = pool_new(2);
    cf_future *f1 = NULL, *f2 = NULL;
    CHECK_OK(cf_submit(ex, task_ident, U2P(42), &f1));
    CHECK_OK(cf_submit(ex, task_ident, U2P(42), &f2));
    cf_future *fs[5] = {promise_cancelled(), promise_with_exception(EIO, "io"),
                        promise_with_result(U2P(42)), f1, f2};
    double timeouts[2] = {CF_FOREVER, LONG_TIMEOUT};
    for (int t = 0; t < 2; t++) {
        cf_as_completed *it = NULL;
        CHECK_OK(cf_as_completed_new(fs, 5, timeouts[t], &it));
        CHECK(it != NULL);
        bool seen[5] = {false, false, false, false, false};
        CHECK(drain(it, fs, 5, seen) == 5);
        cf_as_completed_free(it);
    }
    release_all(fs, 5);
    cf_executor_free(ex);
}

/* Futures already done come first; then the order of completion, completing one at
 * a time from the test thread between the calls to next. */
static void test_done_first_then_completion_order(void) {
    cf_future *fs[5] = {promise_new(), promise_with_result(U2P(1)), promise_new(),
                        promise_cancelled(), promise_new()};
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, 5, CF_FOREVER, &it));
    /* Completing one now, after new: it must come after the already-done ones. */
    CHECK_OK(cf_future_set_result(fs[4], U2P(4)));
    cf_future *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(cf_as_completed_next(it, &a));
    CHECK_OK(cf_as_completed_next(it, &b));
    CHECK(a == fs[1] && b == fs[3]); /* header: already done ones in array order */
    CHECK_OK(cf_as_completed_next(it, &c));
    CHECK(c == fs[4]);
    CHECK_OK(cf_future_set_exception(fs[0], 1, "x"));
    CHECK_OK(cf_as_completed_next(it, &c));
    CHECK(c == fs[0]);
    CHECK(cf_future_cancel(fs[2]));
    CHECK_OK(cf_as_completed_next(it, &c));
    CHECK(c == fs[2]);
    c = (cf_future *)&it;
    CHECK_STATUS(cf_as_completed_next(it, &c), CF_END);
    CHECK_STATUS(cf_as_completed_next(it, &c), CF_END);
    cf_as_completed_free(it);
    release_all(fs, 5);
}

/* Completion order from another thread: the iterator yields exactly the order in
 * which the promises were completed, whichever way they were completed. */
static void test_completion_order_other_thread(void) {
    enum { N = 64 };
    size_t order[N];
    for (size_t k = 0; k < N; k++) order[k] = (k * 37 + 5) % N; /* a permutation */
    int hows[3] = {COMPLETE_RESULT, COMPLETE_EXCEPTION, COMPLETE_CANCEL};
    for (int h = 0; h < 3; h++) {
        cf_future *fs[N];
        for (size_t i = 0; i < N; i++) fs[i] = promise_new();
        cf_as_completed *it = NULL;
        CHECK_OK(cf_as_completed_new(fs, N, LONG_TIMEOUT, &it));
        completer c;
        completer_start(&c, fs, order, N, h == 0 ? 0.05 : 0.0, hows[h]);
        for (size_t k = 0; k < N; k++) {
            cf_future *f = NULL;
            CHECK_OK(cf_as_completed_next(it, &f));
            CHECK(f == fs[order[k]]);
        }
        cf_future *f = NULL;
        CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
        completer_join(&c);
        cf_as_completed_free(it);
        release_all(fs, N);
    }
}

/* Executor futures, released one at a time: each next yields the one released. */
static void test_executor_futures_in_order(void) {
    enum { N = 4 };
    cf_executor *ex = pool_new(N);
    blocker b[N];
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        blocker_init(&b[i], U2P(100 + i));
        fs[i] = submit_blocker(ex, &b[i]);
    }
    b[1].fail_code = 12;
    b[1].fail_msg = "failed on purpose";
    cf_future *with_promise[N + 1];
    for (int i = 0; i < N; i++) with_promise[i] = fs[i];
    with_promise[N] = promise_new();
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(with_promise, N + 1, LONG_TIMEOUT, &it));
    int order[N] = {2, 0, 3, 1};
    for (int k = 0; k < N; k++) {
        gate_open(&b[order[k]].release);
        cf_future *f = NULL;
        CHECK_OK(cf_as_completed_next(it, &f));
        CHECK(f == fs[order[k]]);
        if (k == 1) {
            /* Interleave the promise. */
            completer c;
            completer_start(&c, &with_promise[N], NULL, 1, 0.02, COMPLETE_RESULT);
            CHECK_OK(cf_as_completed_next(it, &f));
            CHECK(f == with_promise[N]);
            completer_join(&c);
        }
    }
    cf_future *f = NULL;
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    cf_as_completed_free(it);
    void *r = NULL;
    CHECK_OK(cf_future_result(fs[2], 0, &r));
    CHECK(P2U(r) == 102);
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(fs[1], 0, &code, &msg), CF_TASK_FAILED);
    CHECK(code == 12 && msg != NULL && strcmp(msg, "failed on purpose") == 0);
    release_all(with_promise, N + 1);
    cf_executor_free(ex);
    for (int i = 0; i < N; i++) blocker_destroy(&b[i]);
}

/* test_as_completed.py: test_duplicate_futures (issue 20367). */
static void test_duplicate_futures(void) {
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b, NULL);
    cf_future *f1 = submit_blocker(ex, &b);
    cf_future *fs[3] = {f1, f1, f1};
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, 3, LONG_TIMEOUT, &it));
    delayed_open d;
    delayed_open_start(&d, &b.release, 0.02);
    cf_future *f = NULL;
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK(f == f1);
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    delayed_open_join(&d);
    cf_as_completed_free(it);

    /* Duplicates of a done future and of a pending promise, interleaved. */
    cf_future *done = promise_with_result(NULL);
    cf_future *pend = promise_new();
    cf_future *mix[6] = {done, pend, done, pend, f1, done};
    CHECK_OK(cf_as_completed_new(mix, 6, LONG_TIMEOUT, &it));
    bool seen_done = false, seen_f1 = false;
    for (int k = 0; k < 2; k++) {
        CHECK_OK(cf_as_completed_next(it, &f));
        if (f == done) { CHECK(!seen_done); seen_done = true; }
        else if (f == f1) { CHECK(!seen_f1); seen_f1 = true; }
        else CHECK(0);
    }
    CHECK_OK(cf_future_set_result(pend, NULL));
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK(f == pend);
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    cf_as_completed_free(it);
    cf_future_release(done);
    cf_future_release(pend);
    cf_future_release(f1);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* test_as_completed.py: test_future_times_out, for timeout 0 and 0.1. */
static void test_future_times_out(void) {
    cf_executor *ex = pool_new(1);
    double timeouts[2] = {0.0, 0.1};
    for (int t = 0; t < 2; t++) {
        blocker b;
        blocker_init(&b, NULL);
        cf_future *future = submit_blocker(ex, &b);
        cf_future *fs[4] = {promise_cancelled(), promise_with_exception(1, "e"),
                            promise_with_result(U2P(42)), future};
        double t0 = now_s();
        cf_as_completed *it = NULL;
        CHECK_OK(cf_as_completed_new(fs, 4, timeouts[t], &it));
        bool seen[4] = {false, false, false, false};
        for (int k = 0; k < 3; k++) {
            cf_future *f = NULL;
            CHECK_OK(cf_as_completed_next(it, &f));
            size_t i = index_of(fs, 4, f);
            CHECK(i < 3);
            CHECK(!seen[i]);
            seen[i] = true;
        }
        cf_future *f = (cf_future *)&b;
        CHECK_STATUS(cf_as_completed_next(it, &f), CF_TIMEOUT);
        double el = now_s() - t0;
        CHECK(el >= timeouts[t] - 0.01);
        CHECK(el < timeouts[t] + AT_ONCE);
        CHECK(f == (cf_future *)&b); /* not written */
        cf_as_completed_free(it);
        /* The future was not completed. */
        CHECK(!cf_future_done(future));
        gate_open(&b.release);
        CHECK_OK(cf_future_wait(future, LONG_TIMEOUT));
        release_all(fs, 4);
        blocker_destroy(&b);
    }
    cf_executor_free(ex);
}

/* The timeout counts from cf_as_completed_new, not from each call to next. */
static void test_timeout_from_new(void) {
    cf_future *done = promise_with_result(NULL);
    cf_future *pend = promise_new();
    cf_future *fs[2] = {done, pend};
    cf_as_completed *it = NULL;
    double t0 = now_s();
    CHECK_OK(cf_as_completed_new(fs, 2, 1.0, &it));
    sleep_s(1.1); /* the passing of time is what is tested */
    cf_future *f = NULL;
    /* Done futures are still yielded after the deadline (as Python yields those done
     * at the start; header: CF_TIMEOUT when "no further future is done yet"), then
     * CF_TIMEOUT for the pending one, at once. */
    double t1 = now_s();
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK(f == done);
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_TIMEOUT);
    CHECK(now_s() - t1 < 0.85); /* counted from next it would take 1 s */
    CHECK(now_s() - t0 >= 1.0);
    cf_as_completed_free(it);

    /* Counted from new also when a future is yielded in between: timeout 1 s, a
     * promise completed at ~0.5 s, then CF_TIMEOUT at ~1 s from new (counted from the
     * second next it would be >= 1.5 s). */
    cf_future *p2 = promise_new();
    cf_future *fs2[2] = {pend, p2};
    t0 = now_s();
    CHECK_OK(cf_as_completed_new(fs2, 2, 1.0, &it));
    completer c;
    completer_start(&c, &p2, NULL, 1, 0.5, COMPLETE_RESULT);
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK(f == p2);
    completer_join(&c);
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_TIMEOUT);
    double el = now_s() - t0;
    CHECK(el >= 0.99);
    CHECK(el < 1.4);
    cf_as_completed_free(it);
    CHECK_OK(cf_future_set_result(pend, NULL));
    cf_future_release(done);
    cf_future_release(pend);
    cf_future_release(p2);
}

/* test_as_completed.py: test_correct_timeout_exception_msg (2 of 4 unfinished) and
 * the first half of test_free_reference_yielded_future: timeout 0 yields the done
 * futures, then CF_TIMEOUT. */
static void test_timeout_zero_yields_done(void) {
    cf_future *running = promise_new();
    CHECK_OK(cf_future_set_running_or_notify_cancel(running));
    cf_future *fs[4] = {promise_cancelled(), promise_new(), running,
                        promise_with_result(U2P(42))};
    double t0 = now_s();
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, 4, 0.0, &it));
    bool seen[4] = {false, false, false, false};
    for (int k = 0; k < 2; k++) {
        cf_future *f = NULL;
        CHECK_OK(cf_as_completed_next(it, &f));
        size_t i = index_of(fs, 4, f);
        CHECK(i == 0 || i == 3);
        CHECK(!seen[i]);
        seen[i] = true;
    }
    cf_future *f = NULL;
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_TIMEOUT);
    CHECK(now_s() - t0 < AT_ONCE);
    cf_as_completed_free(it);
    CHECK_OK(cf_future_set_result(fs[1], NULL));
    CHECK_OK(cf_future_set_result(running, NULL));
    release_all(fs, 4);
}

/* test_as_completed.py: test_free_reference_yielded_future (second half), C style:
 * *f is borrowed from the iterator and stays valid until the iterator is freed, even
 * when the caller dropped its own references after cf_as_completed_new. */
static void test_borrowed_valid_until_free(void) {
    enum { N = 8 };
    cf_executor *ex = pool_new(2);
    cf_future *fs[N];
    for (int i = 0; i < N / 2; i++) fs[i] = promise_with_result(U2P(i));
    for (int i = N / 2; i < N; i++) CHECK_OK(cf_submit(ex, task_ident, U2P(i), &fs[i]));
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, N, LONG_TIMEOUT, &it));
    release_all(fs, N); /* the iterator keeps what it lends out */
    cf_future *got[N];
    bool seen[N] = {false};
    for (int k = 0; k < N; k++) {
        CHECK_OK(cf_as_completed_next(it, &got[k]));
        void *r = NULL;
        CHECK_OK(cf_future_result(got[k], 0, &r));
        CHECK(P2U(r) < N && !seen[P2U(r)]);
        seen[P2U(r)] = true;
    }
    cf_future *f = NULL;
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    /* Every yielded future is still valid after the end, until the free. */
    for (int k = 0; k < N; k++) {
        CHECK(cf_future_done(got[k]));
        cf_future *extra = cf_future_retain(got[k]);
        CHECK(extra == got[k]);
        cf_future_release(extra);
    }
    cf_as_completed_free(it);
    cf_executor_free(ex);
}

/* Freeing the iterator early, with futures still pending, then completing them. */
static void test_free_early(void) {
    enum { N = 10 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) fs[i] = i < 2 ? promise_with_result(NULL) : promise_new();
    /* Before any next. */
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, N, CF_FOREVER, &it));
    cf_as_completed_free(it);
    /* After one next. */
    CHECK_OK(cf_as_completed_new(fs, N, CF_FOREVER, &it));
    cf_future *f = NULL;
    CHECK_OK(cf_as_completed_next(it, &f));
    cf_as_completed_free(it);
    /* After a timeout. */
    CHECK_OK(cf_as_completed_new(fs, N, 0.0, &it));
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_TIMEOUT);
    cf_as_completed_free(it);
    cf_as_completed_free(NULL);
    /* Completing afterwards, from this thread and from another. */
    for (int i = 2; i < 6; i++) CHECK_OK(cf_future_set_result(fs[i], NULL));
    completer c;
    completer_start(&c, &fs[6], NULL, N - 6, 0.0, COMPLETE_EXCEPTION);
    completer_join(&c);
    /* A fresh iterator still works on them. */
    CHECK_OK(cf_as_completed_new(fs, N, 0.0, &it));
    bool seen[N] = {false};
    CHECK(drain(it, fs, N, seen) == N);
    cf_as_completed_free(it);
    release_all(fs, N);

    /* An executor future still running when the iterator is freed. */
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b, NULL);
    cf_future *running = submit_blocker(ex, &b);
    cf_future *queued = NULL;
    CHECK_OK(cf_submit(ex, task_ident, NULL, &queued));
    cf_future *two[2] = {running, queued};
    CHECK_OK(cf_as_completed_new(two, 2, CF_FOREVER, &it));
    cf_as_completed_free(it);
    gate_open(&b.release);
    CHECK_OK(cf_future_wait(queued, LONG_TIMEOUT));
    CHECK_OK(cf_future_wait(running, LONG_TIMEOUT));
    release_all(two, 2);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* A task iterating with cf_as_completed over tasks queued behind it in its own
 * 1-worker pool does not deadlock (API.md; header: the worker runs queued tasks). */
typedef struct nested {
    cf_executor *ex;
    cf_status submit_st;
    cf_status last_st;
    int yielded;
    uintptr_t sum;
} nested;

static void *nested_as_completed_task(void *arg) {
    nested *w = (nested *)arg;
    cf_future *fs[3] = {NULL, NULL, NULL};
    w->submit_st = CF_OK;
    for (int i = 0; i < 3; i++) {
        cf_status st = cf_submit(w->ex, task_ident, U2P(i + 1), &fs[i]);
        if (st != CF_OK) w->submit_st = st;
    }
    if (w->submit_st != CF_OK) return NULL;
    cf_as_completed *it = NULL;
    w->last_st = cf_as_completed_new(fs, 3, LONG_TIMEOUT, &it);
    release_all(fs, 3);
    if (w->last_st != CF_OK) return NULL;
    w->yielded = 0;
    w->sum = 0;
    for (;;) {
        cf_future *f = NULL;
        w->last_st = cf_as_completed_next(it, &f);
        if (w->last_st != CF_OK) break;
        void *r = NULL;
        if (cf_future_result(f, 0, &r) == CF_OK) w->sum += P2U(r);
        w->yielded++;
    }
    cf_as_completed_free(it);
    return U2P(1);
}

static void test_as_completed_inside_task(void) {
    cf_executor *ex = pool_new(1);
    nested w = {ex, CF_INVALID_STATE, CF_INVALID_STATE, 0, 0};
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, nested_as_completed_task, &w, &f));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 2 * LONG_TIMEOUT, &r));
    CHECK(P2U(r) == 1);
    CHECK_OK(w.submit_st);
    CHECK_STATUS(w.last_st, CF_END);
    CHECK(w.yielded == 3);
    CHECK(w.sum == 6);
    cf_future_release(f);
    cf_executor_free(ex);
}

enum { BIG = 100000 };

/* 100,000 futures in one pass, completed in order by another thread: O(n). */
static void test_big(void) {
    cf_future **fs = malloc(BIG * sizeof *fs);
    CHECK(fs != NULL);
    for (size_t i = 0; i < BIG; i++) fs[i] = promise_new();
    double t0 = now_s();
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, BIG, CF_FOREVER, &it));
    completer c;
    completer_start(&c, fs, NULL, BIG, 0.0, COMPLETE_RESULT);
    for (size_t k = 0; k < BIG; k++) {
        cf_future *f = NULL;
        CHECK_OK(cf_as_completed_next(it, &f));
        if (f != fs[k]) {
            fprintf(stderr, "position %zu: wrong future\n", k);
            CHECK(f == fs[k]);
        }
    }
    cf_future *f = NULL;
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    completer_join(&c);
    cf_as_completed_free(it);
    CHECK(now_s() - t0 < 8.0 * time_scale());

    /* All already done: each once. */
    t0 = now_s();
    bool *seen = calloc(BIG, sizeof *seen);
    CHECK(seen != NULL);
    CHECK_OK(cf_as_completed_new(fs, BIG, 0.0, &it));
    for (size_t k = 0; k < BIG; k++) {
        CHECK_OK(cf_as_completed_next(it, &f));
        void *r = NULL;
        CHECK_OK(cf_future_result(f, 0, &r));
        size_t i = P2U(r) - 1;
        CHECK(i < BIG && fs[i] == f && !seen[i]);
        seen[i] = true;
    }
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    cf_as_completed_free(it);
    CHECK(now_s() - t0 < 8.0 * time_scale());
    release_all(fs, BIG);

    /* 100,000 pending: iterator freed early, then all completed. */
    for (size_t i = 0; i < BIG; i++) fs[i] = promise_new();
    CHECK_OK(cf_as_completed_new(fs, BIG, CF_FOREVER, &it));
    CHECK_OK(cf_future_set_result(fs[BIG / 2], NULL));
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK(f == fs[BIG / 2]);
    cf_as_completed_free(it);
    for (size_t i = 0; i < BIG; i++)
        if (i != BIG / 2) CHECK_OK(cf_future_set_result(fs[i], NULL));
    release_all(fs, BIG);
    free(seen);
    free(fs);
}

/* n == 0: nothing to yield. */
static void test_empty(void) {
    cf_future *dummy = NULL;
    double timeouts[3] = {0.0, 0.05, CF_FOREVER};
    for (int t = 0; t < 3; t++) {
        cf_as_completed *it = NULL;
        CHECK_OK(cf_as_completed_new(&dummy, 0, timeouts[t], &it));
        CHECK(it != NULL);
        cf_future *f = (cf_future *)&it;
        double t0 = now_s();
        CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
        CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
        CHECK(now_s() - t0 < AT_ONCE);
        CHECK(f == (cf_future *)&it);
        cf_as_completed_free(it);
    }
}

static void test_bad_input(void) {
    cf_future *d = promise_with_result(NULL);
    cf_future *p = promise_new();
    cf_future *fs[2] = {d, p};
    cf_as_completed *sentinel = (cf_as_completed *)&fs;
    cf_as_completed *it = sentinel;
    CHECK_STATUS(cf_as_completed_new(NULL, 2, CF_FOREVER, &it), CF_INVALID_ARGUMENT);
    CHECK(it == sentinel);
    cf_future *with_null[3] = {d, NULL, p};
    CHECK_STATUS(cf_as_completed_new(with_null, 3, CF_FOREVER, &it), CF_INVALID_ARGUMENT);
    CHECK(it == sentinel);
    CHECK_STATUS(cf_as_completed_new(with_null, 3, 0.0, &it), CF_INVALID_ARGUMENT);
    CHECK(it == sentinel);
    CHECK_STATUS(cf_as_completed_new(fs, 2, NAN, &it), CF_INVALID_ARGUMENT);
    CHECK(it == sentinel);
    CHECK_STATUS(cf_as_completed_new(fs, 2, CF_FOREVER, NULL), CF_INVALID_ARGUMENT);

    cf_future *f = (cf_future *)&fs;
    CHECK_STATUS(cf_as_completed_next(NULL, &f), CF_INVALID_ARGUMENT);
    CHECK(f == (cf_future *)&fs);
    CHECK_OK(cf_as_completed_new(fs, 2, 0.0, &it));
    CHECK(it != sentinel && it != NULL);
    /* A NULL out-parameter consumes nothing: d is still yielded afterwards. */
    CHECK_STATUS(cf_as_completed_next(it, NULL), CF_INVALID_ARGUMENT);
    CHECK_OK(cf_as_completed_next(it, &f));
    CHECK(f == d);
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_TIMEOUT);
    cf_as_completed_free(it);
    cf_as_completed_free(NULL);
    /* Nothing changed. */
    CHECK(!cf_future_done(p));
    CHECK_OK(cf_future_set_result(p, NULL));
    release_all(fs, 2);
}

int main(void) {
    TEST(test_no_timeout);
    TEST(test_done_first_then_completion_order);
    TEST(test_completion_order_other_thread);
    TEST(test_executor_futures_in_order);
    TEST(test_duplicate_futures);
    TEST(test_future_times_out);
    TEST(test_timeout_from_new);
    TEST(test_timeout_zero_yields_done);
    TEST(test_borrowed_valid_until_free);
    TEST(test_free_early);
    TEST(test_as_completed_inside_task);
    TEST(test_big);
    TEST(test_empty);
    TEST(test_bad_input);
    return 0;
}
