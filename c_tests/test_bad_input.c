/* test_bad_input.c: NULL handles, NULL out-parameters, NULL functions, NaN timeouts and
 * out-of-range options.
 *
 * Covers, per the API.md conventions: every NULL handle, out-parameter or function pointer
 * gives CF_INVALID_ARGUMENT (never a crash) and leaves the other out-parameters untouched
 * (checked with preset sentinels); NaN timeouts are CF_INVALID_ARGUMENT on pending and on
 * done futures, without waiting; bool queries on NULL are false; a count on NULL is 0;
 * cf_future_retain(NULL) is NULL; cf_future_release(NULL) and cf_executor_free(NULL) do
 * nothing; cf_future_state(NULL) does not crash; max_workers > CF_MAX_WORKERS and
 * max_tasks_per_child != 0 on a thread pool are CF_INVALID_ARGUMENT; rejected submits run
 * nothing and start no worker.
 * Ports from CPython Lib/test/test_concurrent_futures/executor.py:
 * test_max_workers_negative (in C: above the ceiling). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

#define SENTINEL_PTR ((void *)(uintptr_t)0x5e5e5e5eu)
#define SENTINEL_FUT ((cf_future *)(uintptr_t)0x5e5e5e5eu)
#define SENTINEL_EX ((cf_executor *)(uintptr_t)0x5e5e5e5eu)
static const char sentinel_msg[] = "untouched";

static atomic_int runs;
static void *task_count(void *arg) {
    atomic_fetch_add(&runs, 1);
    return arg;
}

static atomic_int cb_calls;
static void cb_count(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    atomic_fetch_add(&cb_calls, 1);
}

static void check_timeouts_rejected(cf_future *f) {
    const double nans[] = {NAN, -NAN};
    for (int i = 0; i < 2; i++) {
        double t0 = now_s();
        void *r = SENTINEL_PTR;
        CHECK_STATUS(cf_future_result(f, nans[i], &r), CF_INVALID_ARGUMENT);
        CHECK(r == SENTINEL_PTR);
        int code = -999;
        const char *msg = sentinel_msg;
        CHECK_STATUS(cf_future_exception(f, nans[i], &code, &msg), CF_INVALID_ARGUMENT);
        CHECK_EQ_LL(code, -999);
        CHECK(msg == sentinel_msg);
        CHECK_STATUS(cf_future_wait(f, nans[i]), CF_INVALID_ARGUMENT);
        CHECK(since(t0) < 5.0); /* rejected, not waited on */
    }
}

static void test_executor_args(void) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);

    /* NULL out. */
    CHECK_STATUS(cf_thread_pool_new(NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_thread_pool_new(&o, NULL), CF_INVALID_ARGUMENT);

    /* max_workers above the documented ceiling; *out untouched. */
    cf_executor *ex = SENTINEL_EX;
    o.max_workers = (size_t)CF_MAX_WORKERS + 1;
    CHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);
    o.max_workers = SIZE_MAX;
    CHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);
    o.max_workers = (size_t)1 << 40;
    CHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);

    /* max_tasks_per_child is for process pools: a thread pool requires 0. */
    o.max_workers = 2;
    o.max_tasks_per_child = 1;
    CHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);
    o.max_tasks_per_child = 1000;
    CHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);
    o.max_workers = 0;
    o.max_tasks_per_child = SIZE_MAX;
    CHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_INVALID_ARGUMENT);
    CHECK(ex == SENTINEL_EX);

    /* NULL executor everywhere. */
    cf_future *f = SENTINEL_FUT;
    CHECK_STATUS(cf_submit(NULL, task_count, NULL, &f), CF_INVALID_ARGUMENT);
    CHECK(f == SENTINEL_FUT);
    CHECK_STATUS(cf_submit(NULL, NULL, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_executor_shutdown(NULL, true, false), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_executor_shutdown(NULL, false, true), CF_INVALID_ARGUMENT);
    CHECK_EQ_LL(cf_executor_worker_count(NULL), 0);
    cf_executor_free(NULL);

    /* A valid pool: NULL fn, NULL out. Nothing is submitted or started. */
    o.max_workers = 2;
    o.max_tasks_per_child = 0;
    ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    f = SENTINEL_FUT;
    CHECK_STATUS(cf_submit(ex, NULL, NULL, &f), CF_INVALID_ARGUMENT);
    CHECK(f == SENTINEL_FUT);
    CHECK_STATUS(cf_submit(ex, NULL, &o, &f), CF_INVALID_ARGUMENT);
    CHECK(f == SENTINEL_FUT);
    CHECK_STATUS(cf_submit(ex, task_count, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit(ex, NULL, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(atomic_load(&runs), 0);
    /* Bad arguments on a shut-down pool are still bad arguments (or refused). */
    cf_status st = cf_submit(ex, task_count, NULL, NULL);
    CHECK(st == CF_INVALID_ARGUMENT || st == CF_SHUTDOWN);
    f = SENTINEL_FUT;
    st = cf_submit(ex, NULL, NULL, &f);
    CHECK(st == CF_INVALID_ARGUMENT || st == CF_SHUTDOWN);
    CHECK(f == SENTINEL_FUT);
    cf_executor_free(ex);
    CHECK_EQ_LL(atomic_load(&runs), 0);

    /* The options struct is only read: the same one makes a second pool. */
    ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    CHECK_EQ_LL(o.max_workers, 2);
    cf_executor_free(ex);
}

static void test_future_args(void) {
    /* NULL future everywhere. */
    CHECK_STATUS(cf_future_new(NULL), CF_INVALID_ARGUMENT);
    (void)cf_future_state(NULL); /* any value; must not crash */
    CHECK(!cf_future_done(NULL));
    CHECK(!cf_future_running(NULL));
    CHECK(!cf_future_cancelled(NULL));
    CHECK(!cf_future_cancel(NULL));
    CHECK_STATUS(cf_future_wait(NULL, 0), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_wait(NULL, CF_FOREVER), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_wait(NULL, NAN), CF_INVALID_ARGUMENT);
    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(NULL, 0, &r), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_result(NULL, CF_FOREVER, &r), CF_INVALID_ARGUMENT);
    CHECK(r == SENTINEL_PTR);
    CHECK_STATUS(cf_future_result(NULL, 0, NULL), CF_INVALID_ARGUMENT);
    int code = -999;
    const char *msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(NULL, 0, &code, &msg), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_exception(NULL, CF_FOREVER, &code, &msg), CF_INVALID_ARGUMENT);
    CHECK_EQ_LL(code, -999);
    CHECK(msg == sentinel_msg);
    CHECK_STATUS(cf_future_add_done_callback(NULL, cb_count, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_add_done_callback(NULL, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK(cf_future_retain(NULL) == NULL);
    cf_future_release(NULL);
    CHECK_STATUS(cf_future_set_running_or_notify_cancel(NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_set_result(NULL, SENTINEL_PTR), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_set_exception(NULL, 1, "x"), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_set_exception(NULL, 1, NULL), CF_INVALID_ARGUMENT);
    CHECK_EQ_LL(atomic_load(&cb_calls), 0);

    /* A pending promise: NULL out-params, NULL callback, NaN timeouts. */
    cf_future *p = NULL;
    CHECK_OK(cf_future_new(&p));
    CHECK_STATUS(cf_future_result(p, 0, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_result(p, CF_FOREVER, NULL), CF_INVALID_ARGUMENT); /* no wait */
    CHECK_STATUS(cf_future_add_done_callback(p, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_add_done_callback(p, NULL, &code), CF_INVALID_ARGUMENT);
    check_timeouts_rejected(p);
    CHECK_STATE(p, CF_STATE_PENDING); /* nothing changed */
    /* Completing it now runs no phantom (NULL) callback. */
    CHECK_OK(cf_future_add_done_callback(p, cb_count, NULL));
    CHECK_OK(cf_future_set_result(p, SENTINEL_PTR));
    CHECK_EQ_LL(atomic_load(&cb_calls), 1);
    /* The same on the done future. */
    CHECK_STATUS(cf_future_result(p, 0, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_add_done_callback(p, NULL, NULL), CF_INVALID_ARGUMENT);
    check_timeouts_rejected(p);
    r = NULL;
    CHECK_OK(cf_future_result(p, 0, &r));
    CHECK(r == SENTINEL_PTR);
    CHECK_EQ_LL(atomic_load(&cb_calls), 1);
    cf_future_release(p);

    /* An executor future, blocked: NaN must not wait for it. */
    cf_executor *ex = make_pool(1, "bad");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    blocked_job_init(&j, &b, NULL);
    cf_future *f = submit_ok(ex, task_blocked, &j);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    check_timeouts_rejected(f);
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, NULL), CF_INVALID_ARGUMENT); /* no wait */
    CHECK_STATUS(cf_future_add_done_callback(f, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK(cf_future_running(f));
    gate_open(&b.g);
    result_ok(f);
    check_timeouts_rejected(f);
    cf_future_release(f);
    cf_executor_free(ex);
    blocker_destroy(&b);

    /* An out-parameter is untouched on every non-OK status. */
    CHECK_OK(cf_future_new(&p));
    r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(p, 0, &r), CF_TIMEOUT);
    CHECK(r == SENTINEL_PTR);
    CHECK(cf_future_cancel(p));
    CHECK_STATUS(cf_future_result(p, 0, &r), CF_CANCELLED);
    CHECK(r == SENTINEL_PTR);
    code = -999;
    msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(p, 0, &code, &msg), CF_CANCELLED);
    CHECK_EQ_LL(code, -999);
    CHECK(msg == sentinel_msg);
    cf_future_release(p);
    CHECK_OK(cf_future_new(&p));
    CHECK_OK(cf_future_set_exception(p, 3, "failed"));
    CHECK_STATUS(cf_future_result(p, 0, &r), CF_TASK_FAILED);
    CHECK(r == SENTINEL_PTR);
    cf_future_release(p);
}

int main(void) {
    watchdog_start(60);
    atomic_init(&runs, 0);
    atomic_init(&cb_calls, 0);
    CHECK(cf_raise(1, "not in a task") == NULL);
    test_executor_args();
    test_future_args();
    printf("test_bad_input: ok\n");
    return 0;
}
