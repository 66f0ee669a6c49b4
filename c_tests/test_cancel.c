/* test_cancel.c: cf_future_cancel on executor futures in each state.
 *
 * Covers: in a 1-worker pool whose worker is blocked behind a gate, a queued (PENDING)
 * future cancels (true, state CANCELLED, done, result/exception CF_CANCELLED with
 * out-parameters untouched, wait CF_OK) and cancelling again is true; a RUNNING future
 * does not cancel (false, stays RUNNING, finishes normally); a FINISHED future (result or
 * error) does not cancel; a cancelled future's task never runs while the others queued
 * around it run in order; cancelling from another thread wakes a waiter (CF_CANCELLED).
 * Ports from CPython Lib/test/test_concurrent_futures/test_future.py: test_cancel,
 * test_result_with_cancel, test_result_with_timeout (cancelled cases). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

#define SENTINEL_PTR ((void *)(uintptr_t)0x5e5e5e5eu)
static const char sentinel_msg[] = "untouched";

enum { NQ = 10 };
static atomic_int ran[NQ];
static atomic_int order_next;
static int order[NQ];

static void *task_mark(void *arg) {
    uintptr_t i = (uintptr_t)arg;
    atomic_fetch_add(&ran[i], 1);
    int k = atomic_fetch_add(&order_next, 1);
    if (k < NQ) order[k] = (int)i;
    return (void *)(i + 100);
}

static void *task_fail(void *arg) {
    (void)arg;
    return cf_raise(9, "failed");
}

typedef struct waiter {
    cf_future *f;
    cf_status st;
    void *r;
    counter *ready;
} waiter;

static void *waiter_main(void *arg) {
    waiter *w = (waiter *)arg;
    counter_add(w->ready, 1);
    w->st = cf_future_result(w->f, CF_FOREVER, &w->r);
    return NULL;
}

static void check_cancelled(cf_future *f) {
    CHECK_STATE(f, CF_STATE_CANCELLED);
    CHECK(cf_future_cancelled(f));
    CHECK(cf_future_done(f));
    CHECK(!cf_future_running(f));
    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_CANCELLED);
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_CANCELLED);
    CHECK_STATUS(cf_future_result(f, 0.05, &r), CF_CANCELLED);
    CHECK(r == SENTINEL_PTR);
    int code = -999;
    const char *msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_CANCELLED);
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_CANCELLED);
    CHECK_OK(cf_future_wait(f, 0));
    CHECK_OK(cf_future_wait(f, CF_FOREVER));
}

int main(void) {
    watchdog_start(100);
    for (int i = 0; i < NQ; i++) atomic_init(&ran[i], 0);
    atomic_init(&order_next, 0);

    cf_executor *ex = make_pool(1, "cancel");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    int head_value = 1;
    blocked_job_init(&j, &b, &head_value);

    /* The only worker runs `head`, blocked on the gate. */
    cf_future *head = submit_ok(ex, task_blocked, &j);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    CHECK_STATE(head, CF_STATE_RUNNING);

    /* Queue NQ tasks behind it; they are all PENDING. */
    cf_future *q[NQ];
    for (uintptr_t i = 0; i < NQ; i++) {
        q[i] = submit_ok(ex, task_mark, (void *)i);
        CHECK_STATE(q[i], CF_STATE_PENDING);
        CHECK(!cf_future_running(q[i]));
        CHECK(!cf_future_done(q[i]));
    }

    /* Running: cannot be cancelled. */
    CHECK(!cf_future_cancel(head));
    CHECK_STATE(head, CF_STATE_RUNNING);
    CHECK(!cf_future_cancelled(head));

    /* Pending: cancel the even ones. */
    for (int i = 0; i < NQ; i += 2) {
        CHECK(cf_future_cancel(q[i]));
        check_cancelled(q[i]);
        CHECK(cf_future_cancel(q[i])); /* again: still true */
        check_cancelled(q[i]);
    }
    /* The odd ones are untouched. */
    for (int i = 1; i < NQ; i += 2) CHECK_STATE(q[i], CF_STATE_PENDING);

    /* test_result_with_cancel: a waiter blocked on q[1] is woken by a cancel from this
     * thread with CF_CANCELLED. */
    counter ready;
    counter_init(&ready);
    waiter w = {.f = q[1], .st = CF_PANIC, .r = SENTINEL_PTR, .ready = &ready};
    pthread_t wt;
    CHECK(pthread_create(&wt, NULL, waiter_main, &w) == 0);
    CHECK(counter_wait(&ready, 1, LONG_WAIT));
    CHECK_STATUS(cf_future_wait(q[1], 0.05), CF_TIMEOUT); /* let it block */
    CHECK(cf_future_cancel(q[1]));
    CHECK(pthread_join(wt, NULL) == 0);
    CHECK_STATUS(w.st, CF_CANCELLED);
    CHECK(w.r == SENTINEL_PTR);
    check_cancelled(q[1]);
    counter_destroy(&ready);

    /* Nothing ran yet: the worker is still blocked. */
    for (int i = 0; i < NQ; i++) CHECK_EQ_LL(atomic_load(&ran[i]), 0);

    /* Release the worker: head finishes normally, then the survivors run in order. */
    gate_open(&b.g);
    CHECK(result_ok(head) == &head_value);
    CHECK_STATE(head, CF_STATE_FINISHED);
    CHECK(!cf_future_cancel(head)); /* finished: false */
    CHECK_STATE(head, CF_STATE_FINISHED);
    CHECK(!cf_future_cancelled(head));

    for (int i = 3; i < NQ; i += 2) {
        CHECK(result_ok(q[i]) == (void *)(uintptr_t)(i + 100));
        CHECK(!cf_future_cancel(q[i]));
        CHECK_STATE(q[i], CF_STATE_FINISHED);
    }

    /* After a full shutdown, the cancelled tasks have still never run. */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    for (int i = 0; i < NQ; i++) {
        int want = (i % 2 == 1 && i != 1) ? 1 : 0;
        CHECK_EQ_LL(atomic_load(&ran[i]), want);
    }
    CHECK_EQ_LL(atomic_load(&order_next), 4);
    CHECK_EQ_LL(order[0], 3);
    CHECK_EQ_LL(order[1], 5);
    CHECK_EQ_LL(order[2], 7);
    CHECK_EQ_LL(order[3], 9);
    for (int i = 0; i < NQ; i += 2) check_cancelled(q[i]);
    check_cancelled(q[1]);

    /* A finished-with-error future cannot be cancelled either. */
    cf_executor *ex2 = make_pool(1, "cancel2");
    cf_future *bad = submit_ok(ex2, task_fail, NULL);
    CHECK_STATUS(cf_future_wait(bad, CF_FOREVER), CF_OK);
    CHECK(!cf_future_cancel(bad));
    CHECK_STATE(bad, CF_STATE_FINISHED);
    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(bad, 0, &r), CF_TASK_FAILED);
    cf_future_release(bad);

    cf_executor_free(ex2);

    /* Cancel immediately after submit, racing the worker: either it was cancelled (and
     * its task never runs) or it was not (and the task runs once and finishes). */
    for (int round = 0; round < 100; round++) {
        atomic_store(&ran[0], 0);
        ex2 = make_pool(1, "race");
        cf_future *f = submit_ok(ex2, task_mark, (void *)(uintptr_t)0);
        bool c = cf_future_cancel(f);
        CHECK_OK(cf_future_wait(f, CF_FOREVER));
        cf_executor_free(ex2); /* waits for everything accepted */
        if (c) {
            check_cancelled(f);
            CHECK_EQ_LL(atomic_load(&ran[0]), 0);
        } else {
            CHECK(result_ok(f) == (void *)(uintptr_t)100);
            CHECK_EQ_LL(atomic_load(&ran[0]), 1);
        }
        cf_future_release(f);
    }

    for (int i = 0; i < NQ; i++) cf_future_release(q[i]);
    cf_future_release(head);
    cf_executor_free(ex);
    blocker_destroy(&b);
    printf("test_cancel: ok\n");
    return 0;
}
