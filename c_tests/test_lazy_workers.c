/* test_lazy_workers.c: workers start lazily and idle workers are reused.
 *
 * Covers: a new pool has 0 workers (default and explicit max_workers) and still 0 after
 * failed submits; submit + wait in sequence x10 keeps 1 worker (an idle worker is reused
 * instead of starting another); a submit starts a new worker only when none is idle and
 * fewer than max_workers run (1 blocked task -> 1 worker, 2 -> 2, ...); once the busy
 * workers are idle again, new work reuses them; worker_count is 0 after shutdown(wait), and
 * a pool shut down without ever getting work never starts a worker.
 * Ports from CPython Lib/test/test_concurrent_futures/test_thread_pool.py:
 * test_idle_thread_reuse; test_shutdown.py test_threads_terminate. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

static void *task_mul(void *arg) { return (void *)((uintptr_t)arg * 2u); }

int main(void) {
    watchdog_start(100);

    /* A new pool has no worker. */
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(NULL, &ex));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);

    /* test_idle_thread_reuse: sequential submit + wait reuses the one worker. */
    for (uintptr_t i = 0; i < 10; i++) {
        cf_future *f = submit_ok(ex, task_mul, (void *)(21 + i));
        CHECK(result_ok(f) == (void *)((21 + i) * 2));
        cf_future_release(f);
        CHECK_EQ_LL(cf_executor_worker_count(ex), 1);
    }
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_executor_free(ex);

    /* Explicit max_workers: grows one worker per blocked task, up to the limit. */
    ex = make_pool(4, "lazy");
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    /* Failed submits start nothing. */
    cf_future *none = NULL;
    CHECK_STATUS(cf_submit(ex, NULL, NULL, &none), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit(ex, task_noop, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK(none == NULL);
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);

    blocker b;
    blocker_init(&b);
    blocked_job jobs[6];
    cf_future *fs[6];
    for (int i = 0; i < 4; i++) {
        blocked_job_init(&jobs[i], &b, (void *)(uintptr_t)(i + 1));
        fs[i] = submit_ok(ex, task_blocked, &jobs[i]);
        /* Each worker so far is busy, so each submit starts exactly one more. */
        CHECK(counter_wait(&b.started, i + 1, LONG_WAIT));
        CHECK_EQ_LL(cf_executor_worker_count(ex), i + 1);
    }
    /* At the limit: more work queues, no new worker. */
    for (int i = 4; i < 6; i++) {
        blocked_job_init(&jobs[i], &b, (void *)(uintptr_t)(i + 1));
        fs[i] = submit_ok(ex, task_blocked, &jobs[i]);
        CHECK_EQ_LL(cf_executor_worker_count(ex), 4);
    }
    gate_open(&b.g);
    for (int i = 0; i < 6; i++) {
        CHECK(result_ok(fs[i]) == (void *)(uintptr_t)(i + 1));
        cf_future_release(fs[i]);
    }
    CHECK_EQ_LL(cf_executor_worker_count(ex), 4);

    /* All four are idle now: sequential work starts no fifth (the limit would forbid it
     * anyway) and keeps the same four alive. */
    for (uintptr_t i = 0; i < 10; i++) {
        cf_future *f = submit_ok(ex, task_mul, (void *)i);
        CHECK(result_ok(f) == (void *)(i * 2));
        cf_future_release(f);
        CHECK_EQ_LL(cf_executor_worker_count(ex), 4);
    }
    /* test_threads_terminate: after shutdown(wait) no worker is left. */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_executor_free(ex);
    blocker_destroy(&b);

    /* Two workers, one idle: a new task goes to the idle one, no third worker. */
    ex = make_pool(8, "reuse");
    blocker b2;
    blocker_init(&b2);
    blocked_job j2;
    blocked_job_init(&j2, &b2, NULL);
    cf_future *first = submit_ok(ex, task_mul, (void *)(uintptr_t)1);
    CHECK(result_ok(first) == (void *)(uintptr_t)2);
    CHECK_EQ_LL(cf_executor_worker_count(ex), 1);
    cf_future *busy = submit_ok(ex, task_blocked, &j2); /* the idle worker takes it */
    CHECK(counter_wait(&b2.started, 1, LONG_WAIT));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 1);
    cf_future *second = submit_ok(ex, task_mul, (void *)(uintptr_t)2); /* none idle: start one */
    CHECK(result_ok(second) == (void *)(uintptr_t)4);
    CHECK_EQ_LL(cf_executor_worker_count(ex), 2);
    for (uintptr_t i = 0; i < 10; i++) { /* the second worker is idle again: reused */
        cf_future *f = submit_ok(ex, task_mul, (void *)i);
        CHECK(result_ok(f) == (void *)(i * 2));
        cf_future_release(f);
        CHECK_EQ_LL(cf_executor_worker_count(ex), 2);
    }
    gate_open(&b2.g);
    result_ok(busy);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_future_release(first);
    cf_future_release(second);
    cf_future_release(busy);
    cf_executor_free(ex);
    blocker_destroy(&b2);

    /* Never used: no worker, before or after shutdown. */
    ex = make_pool(3, "idle");
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_executor_free(ex);

    printf("test_lazy_workers: ok\n");
    return 0;
}
