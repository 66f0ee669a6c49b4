/* test_nested_wait.c: tasks that wait on futures of their own pool.
 *
 * API.md requires that a task waiting on a future of its own thread pool does not
 * deadlock the pool even when every worker does the same (CPython deadlocks here; this
 * library runs other queued tasks of the pool in the waiting worker).
 * Covers: a 2-worker pool with 2, then 8, outer tasks each submitting an inner task to the
 * same pool and waiting on it with CF_FOREVER; fan-out (each outer task waits on several
 * inner ones); a chain of depth 10 (each level submits the next and waits) in a 2-worker
 * and a 1-worker pool; waiting with cf_future_wait and cf_future_exception too; an inner
 * failure reaches the outer task; worker_count never exceeds max_workers.
 * A hang is turned into a failure by the watchdog. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

static cf_executor *pool; /* the pool the tasks submit to */

static void *task_inner(void *arg) { return (void *)((uintptr_t)arg + 1u); }

static void *task_inner_fail(void *arg) { return cf_raise((int)(uintptr_t)arg, "inner failed"); }

/* Submits task_inner(x) to its own pool, waits forever, returns the result * 10. */
static void *task_outer(void *arg) {
    uintptr_t x = (uintptr_t)arg;
    cf_future *f = NULL;
    CHECK_OK(cf_submit(pool, task_inner, (void *)x, &f));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    cf_future_release(f);
    CHECK(cf_executor_worker_count(pool) <= 2);
    return (void *)((uintptr_t)r * 10u);
}

/* Waits on several inner tasks. */
static void *task_fan_out(void *arg) {
    uintptr_t x = (uintptr_t)arg;
    cf_future *fs[4];
    for (uintptr_t i = 0; i < 4; i++) CHECK_OK(cf_submit(pool, task_inner, (void *)(x + i), &fs[i]));
    uintptr_t sum = 0;
    for (int i = 3; i >= 0; i--) { /* wait in reverse order, for variety */
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[i], CF_FOREVER, &r));
        sum += (uintptr_t)r;
        cf_future_release(fs[i]);
    }
    return (void *)sum;
}

/* Level n submits level n-1 and waits; level 0 returns 0. Each level adds 1. */
static void *task_chain(void *arg) {
    uintptr_t n = (uintptr_t)arg;
    if (n == 0) return (void *)(uintptr_t)0;
    cf_future *f = NULL;
    CHECK_OK(cf_submit(pool, task_chain, (void *)(n - 1), &f));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    cf_future_release(f);
    return (void *)((uintptr_t)r + 1u);
}

/* Same, waiting with cf_future_wait and reading the value with a 0 timeout. */
static void *task_chain_wait(void *arg) {
    uintptr_t n = (uintptr_t)arg;
    if (n == 0) return (void *)(uintptr_t)0;
    cf_future *f = NULL;
    CHECK_OK(cf_submit(pool, task_chain_wait, (void *)(n - 1), &f));
    CHECK_OK(cf_future_wait(f, CF_FOREVER));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 0, &r));
    cf_future_release(f);
    return (void *)((uintptr_t)r + 1u);
}

/* The inner task fails; the outer waits with cf_future_exception and reports the code. */
static void *task_outer_sees_failure(void *arg) {
    cf_future *f = NULL;
    CHECK_OK(cf_submit(pool, task_inner_fail, arg, &f));
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_TASK_FAILED);
    CHECK_STREQ(msg, "inner failed");
    void *r = NULL;
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_TASK_FAILED);
    cf_future_release(f);
    return (void *)(uintptr_t)code;
}

static void run_outer(size_t n) {
    cf_future **fs = calloc(n, sizeof *fs);
    CHECK(fs != NULL);
    for (uintptr_t i = 0; i < n; i++) fs[i] = submit_ok(pool, task_outer, (void *)(i * 3));
    for (uintptr_t i = 0; i < n; i++) {
        CHECK(result_ok(fs[i]) == (void *)((i * 3 + 1) * 10));
        cf_future_release(fs[i]);
    }
    free(fs);
}

int main(void) {
    watchdog_start(90);

    /* 2 workers, 2 outer tasks, each waiting on an inner one. */
    pool = make_pool(2, "nested");
    run_outer(2);
    /* 8 outer tasks: the pool is saturated with waiting tasks. */
    run_outer(8);
    /* Again, many times, to shake out races. */
    for (int round = 0; round < 20; round++) run_outer(8);
    CHECK(cf_executor_worker_count(pool) <= 2);

    /* Fan-out: 6 outer tasks each waiting on 4 inner ones. */
    cf_future *fo[6];
    for (uintptr_t i = 0; i < 6; i++) fo[i] = submit_ok(pool, task_fan_out, (void *)(i * 10));
    for (uintptr_t i = 0; i < 6; i++) {
        uintptr_t x = i * 10, want = (x + 1) + (x + 2) + (x + 3) + (x + 4);
        CHECK(result_ok(fo[i]) == (void *)want);
        cf_future_release(fo[i]);
    }

    /* Chains of depth 10, several at once. */
    cf_future *ch[4];
    for (int i = 0; i < 4; i++) ch[i] = submit_ok(pool, i % 2 ? task_chain : task_chain_wait, (void *)(uintptr_t)10);
    for (int i = 0; i < 4; i++) {
        CHECK(result_ok(ch[i]) == (void *)(uintptr_t)10);
        cf_future_release(ch[i]);
    }

    /* Failures propagate through the nesting. */
    cf_future *ff[4];
    for (uintptr_t i = 0; i < 4; i++) ff[i] = submit_ok(pool, task_outer_sees_failure, (void *)(i + 40));
    for (uintptr_t i = 0; i < 4; i++) {
        CHECK(result_ok(ff[i]) == (void *)(i + 40));
        cf_future_release(ff[i]);
    }
    CHECK(cf_executor_worker_count(pool) <= 2);
    cf_executor_free(pool);

    /* One worker: every wait must be served by the waiting worker itself. */
    pool = make_pool(1, "nested1");
    cf_future *f = submit_ok(pool, task_chain, (void *)(uintptr_t)10);
    CHECK(result_ok(f) == (void *)(uintptr_t)10);
    cf_future_release(f);
    f = submit_ok(pool, task_chain_wait, (void *)(uintptr_t)10);
    CHECK(result_ok(f) == (void *)(uintptr_t)10);
    cf_future_release(f);
    cf_future *one[3];
    for (uintptr_t i = 0; i < 3; i++) one[i] = submit_ok(pool, task_outer, (void *)i);
    for (uintptr_t i = 0; i < 3; i++) {
        CHECK(result_ok(one[i]) == (void *)((i + 1) * 10));
        cf_future_release(one[i]);
    }
    f = submit_ok(pool, task_outer_sees_failure, (void *)(uintptr_t)77);
    CHECK(result_ok(f) == (void *)(uintptr_t)77);
    cf_future_release(f);
    CHECK_EQ_LL(cf_executor_worker_count(pool), 1);
    CHECK_OK(cf_executor_shutdown(pool, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(pool), 0);
    cf_executor_free(pool);

    printf("test_nested_wait: ok\n");
    return 0;
}
