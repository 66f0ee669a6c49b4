/* cf_future_then: continuations on a thread pool and inline (ex NULL), on done and
 * pending antecedents; failure propagation; cf_raise in the continuation; chains of a
 * million links (no stack overflow); cancelling a continuation before it runs; an
 * executor shut down before (CF_SHUTDOWN returned) and after (the future finishes with
 * CF_SHUTDOWN, counted by CF_FIRST_EXCEPTION); process pools and NULLs refused; the
 * antecedent kept alive for the call. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"
#include "test_util_many.h"

static atomic_int runs;
static pthread_t main_thread;
static atomic_int ran_on_main;

/* Adds 1 to the antecedent's result. */
static void *add1(void *arg, cf_future *ante) {
    (void)arg;
    void *r = NULL;
    CHECK_OK(cf_future_result(ante, 0.0, &r));
    return U2P(P2U(r) + 1);
}

/* Counts its runs and where it ran; returns arg. */
static void *counted(void *arg, cf_future *ante) {
    CHECK(cf_future_done(ante));
    atomic_fetch_add(&runs, 1);
    if (pthread_equal(pthread_self(), main_thread)) atomic_fetch_add(&ran_on_main, 1);
    return arg;
}

/* Reports the antecedent's outcome: its status * 1000 + its error code. */
static void *outcome_of(void *arg, cf_future *ante) {
    (void)arg;
    if (cf_future_cancelled(ante)) return U2P(999999);
    int code = -1;
    const char *msg = NULL;
    cf_status s = cf_future_exception(ante, 0.0, &code, &msg);
    return U2P((uintptr_t)s * 1000 + (uintptr_t)code);
}

static void *raises(void *arg, cf_future *ante) {
    (void)arg;
    (void)ante;
    return cf_raise(77, "continuation failed");
}

static void *sleepy_task(void *arg) {
    gate_wait((gate *)arg);
    return U2P(5);
}

static size_t chain_length(void) {
    return time_scale() >= 10.0 ? 20000 : 1000000;
}

static void test_pool_and_inline_basic(void) {
    cf_executor *ex = pool_new(2);
    /* Done antecedent, pool. */
    cf_future *a = promise_with_result(U2P(41));
    cf_future *c = NULL;
    CHECK_OK(cf_future_then(a, ex, add1, NULL, &c));
    void *r = NULL;
    CHECK_OK(cf_future_result(c, LONG_TIMEOUT, &r));
    CHECK(P2U(r) == 42);
    cf_future_release(c);

    /* Pending antecedent, pool: runs on a worker once it is done. */
    atomic_store(&runs, 0);
    atomic_store(&ran_on_main, 0);
    cf_future *p = promise_new();
    CHECK_OK(cf_future_then(p, ex, counted, U2P(9), &c));
    sleep_s(0.02);
    CHECK(!cf_future_done(c));
    CHECK(atomic_load(&runs) == 0);
    CHECK_OK(cf_future_set_result(p, NULL));
    CHECK_OK(cf_future_result(c, LONG_TIMEOUT, &r));
    CHECK(P2U(r) == 9);
    CHECK(atomic_load(&runs) == 1 && atomic_load(&ran_on_main) == 0);
    cf_future_release(c);
    cf_future_release(p);

    /* Done antecedent, inline: at once, in this thread, before the call returns. */
    atomic_store(&runs, 0);
    CHECK_OK(cf_future_then(a, NULL, counted, U2P(3), &c));
    CHECK(cf_future_done(c));
    CHECK(atomic_load(&runs) == 1 && atomic_load(&ran_on_main) == 1);
    CHECK_OK(cf_future_result(c, 0.0, &r));
    CHECK(P2U(r) == 3);
    cf_future_release(c);

    /* Pending antecedent, inline: in the completing thread, before set_result returns. */
    atomic_store(&runs, 0);
    atomic_store(&ran_on_main, 0);
    p = promise_new();
    CHECK_OK(cf_future_then(p, NULL, add1, NULL, &c));
    CHECK(!cf_future_done(c));
    CHECK(cf_future_state(c) == CF_STATE_PENDING);
    CHECK_OK(cf_future_set_result(p, U2P(1)));
    CHECK(cf_future_done(c));
    CHECK_OK(cf_future_result(c, 0.0, &r));
    CHECK(P2U(r) == 2);
    cf_future_release(c);
    cf_future_release(p);
    cf_future_release(a);
    cf_executor_free(ex);
}

static void test_failure_and_raise(void) {
    cf_executor *ex = pool_new(2);
    cf_executor *exs[2] = {ex, NULL};
    for (int k = 0; k < 2; k++) {
        cf_future *bad = promise_with_exception(7, "boom");
        cf_future *c = NULL;
        void *r = NULL;
        CHECK_OK(cf_future_then(bad, exs[k], outcome_of, NULL, &c));
        CHECK_OK(cf_future_result(c, LONG_TIMEOUT, &r));
        CHECK(P2U(r) == (uintptr_t)CF_TASK_FAILED * 1000 + 7);
        cf_future_release(c);
        cf_future_release(bad);

        cf_future *cancelled = promise_cancelled();
        CHECK_OK(cf_future_then(cancelled, exs[k], outcome_of, NULL, &c));
        CHECK_OK(cf_future_result(c, LONG_TIMEOUT, &r));
        CHECK(P2U(r) == 999999);
        cf_future_release(c);
        cf_future_release(cancelled);

        cf_future *good = promise_with_result(U2P(1));
        CHECK_OK(cf_future_then(good, exs[k], raises, NULL, &c));
        CHECK_STATUS(cf_future_result(c, LONG_TIMEOUT, &r), CF_TASK_FAILED);
        int code = 0;
        const char *msg = NULL;
        CHECK_STATUS(cf_future_exception(c, 0.0, &code, &msg), CF_TASK_FAILED);
        CHECK(code == 77 && msg && strcmp(msg, "continuation failed") == 0);
        /* A failure flows on down a chain. */
        cf_future *d = NULL;
        CHECK_OK(cf_future_then(c, exs[k], outcome_of, NULL, &d));
        CHECK_OK(cf_future_result(d, LONG_TIMEOUT, &r));
        CHECK(P2U(r) == (uintptr_t)CF_TASK_FAILED * 1000 + 77);
        cf_future_release(d);
        cf_future_release(c);
        cf_future_release(good);
    }
    cf_executor_free(ex);
}

/* A chain of `n` links each adding 1, built on a pending promise (whose completion then
 * runs them all) and released as it is built but for the last. */
static void run_chain(cf_executor *ex, size_t n) {
    cf_future *first = promise_new();
    cf_future *prev = cf_future_retain(first);
    for (size_t i = 0; i < n; i++) {
        cf_future *next = NULL;
        CHECK_OK(cf_future_then(prev, ex, add1, NULL, &next));
        cf_future_release(prev);
        prev = next;
    }
    CHECK_OK(cf_future_set_result(first, U2P(0)));
    void *r = NULL;
    CHECK_OK(cf_future_result(prev, LONG_TIMEOUT * 5, &r));
    CHECK(P2U(r) == n);
    cf_future_release(prev);
    cf_future_release(first);
}

/* The same chain grown from a running one: each link added to a future that may be done
 * already (then it runs at once, or is queued at once). */
static void run_chain_live(cf_executor *ex, size_t n) {
    cf_future *prev = promise_with_result(U2P(0));
    for (size_t i = 0; i < n; i++) {
        cf_future *next = NULL;
        CHECK_OK(cf_future_then(prev, ex, add1, NULL, &next));
        cf_future_release(prev);
        prev = next;
    }
    void *r = NULL;
    CHECK_OK(cf_future_result(prev, LONG_TIMEOUT * 5, &r));
    CHECK(P2U(r) == n);
    cf_future_release(prev);
}

static void test_long_chains(void) {
    size_t n = chain_length();
    cf_executor *ex = pool_new(2);
    run_chain(ex, n);
    run_chain(NULL, n);
    run_chain_live(ex, n / 10);
    run_chain_live(NULL, n / 10);
    cf_executor_free(ex);
}

static void test_cancel_before_run(void) {
    cf_executor *ex = pool_new(2);
    cf_executor *exs[2] = {ex, NULL};
    for (int k = 0; k < 2; k++) {
        atomic_store(&runs, 0);
        cf_future *p = promise_new();
        cf_future *c = NULL;
        CHECK_OK(cf_future_then(p, exs[k], counted, NULL, &c));
        CHECK(cf_future_cancel(c));
        CHECK(cf_future_cancelled(c));
        CHECK_OK(cf_future_set_result(p, NULL));
        cf_future_release(c);
        cf_future_release(p);
    }
    cf_executor_free(ex);
    CHECK(atomic_load(&runs) == 0);

    /* Queued behind a busy worker, then cancelled: never runs. */
    gate g;
    gate_init(&g);
    ex = pool_new(1);
    atomic_store(&runs, 0);
    cf_future *busy = NULL;
    CHECK_OK(cf_submit(ex, sleepy_task, &g, &busy));
    cf_future *p = promise_with_result(NULL);
    cf_future *c = NULL;
    CHECK_OK(cf_future_then(p, ex, counted, NULL, &c));
    CHECK(cf_future_cancel(c));
    gate_open(&g);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&runs) == 0);
    CHECK(cf_future_cancelled(c));
    cf_future_release(c);
    cf_future_release(p);
    cf_future_release(busy);
    cf_executor_free(ex);
    gate_destroy(&g);
}

static void test_shutdown(void) {
    /* Before: refused, nothing written. */
    cf_executor *ex = pool_new(1);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    cf_future *p = promise_new();
    cf_future *c = (cf_future *)&runs;
    CHECK_STATUS(cf_future_then(p, ex, counted, NULL, &c), CF_SHUTDOWN);
    CHECK(c == (cf_future *)&runs);
    cf_executor_free(ex);

    /* After: the continuation finishes with CF_SHUTDOWN at the shutdown, its function
     * never runs, and the freed executor is never touched (valgrind / ASan). */
    atomic_store(&runs, 0);
    ex = pool_new(1);
    CHECK_OK(cf_future_then(p, ex, counted, NULL, &c));
    cf_future *c2 = NULL;
    CHECK_OK(cf_future_then(p, ex, counted, NULL, &c2));
    CHECK(!cf_future_done(c));
    CHECK_OK(cf_executor_shutdown(ex, false, false));
    CHECK(cf_future_done(c) && cf_future_done(c2));
    void *r = NULL;
    CHECK_STATUS(cf_future_result(c, 0.0, &r), CF_SHUTDOWN);
    int code = -1;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(c, 0.0, &code, &msg), CF_SHUTDOWN);
    CHECK(code == 0 && msg != NULL && strlen(msg) > 0);
    cf_future *pending = promise_new();
    cf_future *fs[2] = {pending, c};
    bool done[2] = {true, false};
    CHECK_OK(cf_wait(fs, 2, CF_FIRST_EXCEPTION, 0.0, done, NULL));
    CHECK(!done[0] && done[1]);
    cf_executor_free(ex);
    CHECK_OK(cf_future_set_result(p, NULL));
    CHECK(atomic_load(&runs) == 0);
    cf_future_release(pending);
    cf_future_release(c);
    cf_future_release(c2);
    cf_future_release(p);
}

static void test_bad_arguments(void) {
    cf_executor *ex = pool_new(1);
    cf_future *p = promise_new();
    cf_future *c = NULL;
    CHECK_STATUS(cf_future_then(NULL, ex, counted, NULL, &c), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_then(p, ex, NULL, NULL, &c), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_then(p, ex, counted, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK(c == NULL);
    cf_executor *proc = NULL;
    CHECK_OK(cf_process_pool_new(NULL, &proc));
    CHECK_STATUS(cf_future_then(p, proc, counted, NULL, &c), CF_INVALID_ARGUMENT);
    CHECK(c == NULL);
    cf_executor_free(proc);
    cf_future_release(p);
    cf_executor_free(ex);
}

/* The antecedent is kept alive for the call although the caller released it. */
static void test_antecedent_reference(void) {
    gate g;
    gate_init(&g);
    cf_executor *ex = pool_new(2);
    cf_executor *exs[2] = {ex, NULL};
    for (int k = 0; k < 2; k++) {
        cf_future *a = NULL;
        CHECK_OK(cf_submit(ex, sleepy_task, &g, &a));
        cf_future *c = NULL;
        CHECK_OK(cf_future_then(a, exs[k], add1, NULL, &c));
        cf_future_release(a);
        gate_open(&g);
        void *r = NULL;
        CHECK_OK(cf_future_result(c, LONG_TIMEOUT, &r));
        CHECK(P2U(r) == 6);
        cf_future_release(c);
    }
    /* A promise released without ever being completed frees its continuation's
     * registration (valgrind finds no leak); the continuation stays pending. */
    cf_future *p = promise_new();
    cf_future *c = NULL;
    CHECK_OK(cf_future_then(p, NULL, add1, NULL, &c));
    cf_future *c2 = NULL;
    CHECK_OK(cf_future_then(p, ex, add1, NULL, &c2));
    cf_future_release(p);
    CHECK(!cf_future_done(c));
    cf_future_release(c);
    cf_executor_free(ex);
    void *r = NULL;
    CHECK_STATUS(cf_future_result(c2, 0.0, &r), CF_SHUTDOWN);
    cf_future_release(c2);
    gate_destroy(&g);
}

int main(void) {
    main_thread = pthread_self();
    test_pool_and_inline_basic();
    test_failure_and_raise();
    test_cancel_before_run();
    test_shutdown();
    test_bad_arguments();
    test_antecedent_reference();
    test_long_chains();
    printf("test_then: ok\n");
    return 0;
}
