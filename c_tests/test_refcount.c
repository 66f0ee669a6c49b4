/* test_refcount.c: cf_future_retain / cf_future_release.
 *
 * Covers: retain returns its argument; every retain balanced by a release frees the future
 * exactly once (checked for leaks and double frees under valgrind: this file frees
 * everything it creates); releasing a running or still queued executor future does not
 * cancel it: its task still runs and its callbacks still fire; a callback may retain the
 * future it is given and the caller may use that reference later; concurrent
 * retain/release from several threads; releasing promises in every state; futures hold
 * their result after the executor is freed.
 * Ports from CPython Lib/test/test_concurrent_futures/executor.py: test_no_stale_references
 * (a discarded future's work still runs and nothing is kept), test_free_reference. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

static atomic_int task_runs;
static void *task_count(void *arg) {
    atomic_fetch_add(&task_runs, 1);
    return arg;
}

static counter cb_counter;
static void cb_count(cf_future *f, void *ud) {
    (void)ud;
    CHECK(cf_future_done(f));
    counter_add(&cb_counter, 1);
}

static _Atomic(cf_future *) kept;
static void cb_keep(cf_future *f, void *ud) {
    (void)ud;
    CHECK(cf_future_retain(f) == f);
    atomic_store(&kept, f);
    counter_add(&cb_counter, 1);
}

enum { NTHREADS = 4, NLOOPS = 2000 };
static void *retain_release_loop(void *arg) {
    cf_future *f = (cf_future *)arg;
    for (int i = 0; i < NLOOPS; i++) {
        CHECK(cf_future_retain(f) == f);
        if (i % 2) {
            CHECK(cf_future_retain(f) == f);
            cf_future_release(f);
        }
        cf_future_release(f);
    }
    return NULL;
}

int main(void) {
    watchdog_start(100);
    atomic_init(&task_runs, 0);
    counter_init(&cb_counter);

    /* retain returns its argument; balanced calls keep the future usable. */
    cf_future *p = NULL;
    CHECK_OK(cf_future_new(&p));
    CHECK(cf_future_retain(p) == p);
    CHECK(cf_future_retain(p) == p);
    cf_future_release(p);
    CHECK_OK(cf_future_set_result(p, (void *)(uintptr_t)5));
    cf_future_release(p);
    void *r = NULL;
    CHECK_OK(cf_future_result(p, 0, &r)); /* one reference left: still alive */
    CHECK(r == (void *)(uintptr_t)5);
    cf_future_release(p); /* freed */

    /* Promises released in every state. */
    CHECK_OK(cf_future_new(&p));
    cf_future_release(p); /* pending */
    CHECK_OK(cf_future_new(&p));
    CHECK_OK(cf_future_set_running_or_notify_cancel(p));
    cf_future_release(p); /* running */
    CHECK_OK(cf_future_new(&p));
    CHECK(cf_future_cancel(p));
    cf_future_release(p); /* cancelled */
    CHECK_OK(cf_future_new(&p));
    CHECK_OK(cf_future_set_exception(p, 1, "a message the library copied"));
    cf_future_release(p); /* failed, with a message */
    CHECK_OK(cf_future_new(&p));
    CHECK_OK(cf_future_add_done_callback(p, cb_count, NULL));
    cf_future_release(p); /* pending with a callback that will never run */
    CHECK_EQ_LL(counter_get(&cb_counter), 0);

    /* Concurrent retain/release on one future. */
    CHECK_OK(cf_future_new(&p));
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&th[i], NULL, retain_release_loop, p) == 0);
    CHECK_OK(cf_future_set_result(p, (void *)(uintptr_t)6));
    for (int i = 0; i < NTHREADS; i++) CHECK(pthread_join(th[i], NULL) == 0);
    CHECK_OK(cf_future_result(p, 0, &r));
    CHECK(r == (void *)(uintptr_t)6);
    cf_future_release(p);

    /* Release a RUNNING executor future: the task still finishes, callbacks still fire. */
    cf_executor *ex = make_pool(1, "ref");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    blocked_job_init(&j, &b, NULL);
    cf_future *running = submit_ok(ex, task_blocked, &j);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    CHECK_OK(cf_future_add_done_callback(running, cb_count, NULL));
    /* And a QUEUED one behind it, also released at once, with two callbacks. */
    cf_future *queued = submit_ok(ex, task_count, NULL);
    CHECK_OK(cf_future_add_done_callback(queued, cb_count, NULL));
    CHECK_OK(cf_future_add_done_callback(queued, cb_count, NULL));
    /* A third, never even looked at (test_no_stale_references). */
    cf_future *discarded = submit_ok(ex, task_count, NULL);
    cf_future_release(discarded);
    cf_future_release(queued);
    cf_future_release(running);
    CHECK_EQ_LL(counter_get(&cb_counter), 0);
    CHECK_EQ_LL(atomic_load(&task_runs), 0);
    gate_open(&b.g);
    CHECK(counter_wait(&cb_counter, 3, LONG_WAIT));
    CHECK(counter_wait(&b.finished, 1, LONG_WAIT));
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(atomic_load(&task_runs), 2);
    CHECK_EQ_LL(counter_get(&cb_counter), 3);

    /* A callback retains the future; the caller drops its own; the kept one works. */
    cf_executor_free(ex);
    ex = make_pool(2, "ref2");
    blocker b2;
    blocker_init(&b2);
    blocked_job j2;
    int v = 12;
    blocked_job_init(&j2, &b2, &v);
    atomic_init(&kept, NULL);
    cf_future *f = submit_ok(ex, task_blocked, &j2);
    CHECK_OK(cf_future_add_done_callback(f, cb_keep, NULL));
    cf_future_release(f);
    f = NULL;
    gate_open(&b2.g);
    CHECK(counter_wait(&cb_counter, 4, LONG_WAIT));
    cf_future *k = atomic_load(&kept);
    CHECK(k != NULL);
    CHECK(result_ok(k) == &v);
    CHECK(cf_future_done(k));
    cf_future_release(k);

    /* Futures outlive their executor, and still take references. */
    cf_future *outlive = submit_ok(ex, task_identity, &v);
    cf_executor_free(ex);
    CHECK(cf_future_retain(outlive) == outlive);
    cf_future_release(outlive);
    CHECK(result_ok(outlive) == &v);
    cf_future_release(outlive);

    /* Many submitted futures released immediately: all run (counted), nothing leaks. */
    atomic_store(&task_runs, 0);
    ex = make_pool(3, "ref3");
    for (int i = 0; i < 500; i++) cf_future_release(submit_ok(ex, task_count, NULL));
    cf_executor_free(ex);
    CHECK_EQ_LL(atomic_load(&task_runs), 500);

    blocker_destroy(&b);
    blocker_destroy(&b2);
    counter_destroy(&cb_counter);
    printf("test_refcount: ok\n");
    return 0;
}
