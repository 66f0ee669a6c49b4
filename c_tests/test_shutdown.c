/* test_shutdown.c: cf_executor_shutdown and cf_executor_free.
 *
 * Covers: submit after shutdown is CF_SHUTDOWN with *out untouched (also from inside a
 * task); shutdown(wait=true) returns only after running and queued tasks finished and every
 * worker exited (worker_count 0); shutdown(wait=false) returns at once while a task is
 * blocked, and the accepted tasks still complete; cancel_futures=true cancels the queued
 * futures (state CANCELLED, their callbacks run, their tasks never run) and leaves the
 * running one to finish, with wait=false and with wait=true; shutdown may be called more
 * than once; shutdown(wait=true) from one of the pool's own workers (a task, or a done
 * callback run by the worker) returns CF_INVALID_STATE instead of deadlocking and still
 * starts the shutdown, while shutdown(wait=false) from a task is fine; a task may shut down
 * another pool with wait; cf_executor_free with tasks pending runs them all (like the end
 * of a `with` block); futures outlive their executor.
 * Ports from CPython Lib/test/test_concurrent_futures/test_shutdown.py:
 * test_run_after_shutdown, test_hang_issue12364, test_cancel_futures, test_hang_gh94440,
 * test_threads_terminate, test_context_manager_shutdown, test_del_shutdown,
 * test_shutdown_no_wait, test_cancel_futures_wait_false (in-process). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

#define SENTINEL_FUT ((cf_future *)(uintptr_t)0x5e5e5e5eu)

static atomic_int runs;
static void *task_count(void *arg) {
    atomic_fetch_add(&runs, 1);
    return arg;
}

static void *task_short_work(void *arg) {
    sleep_s(0.002); /* stands for a little work, so that tasks are still queued */
    atomic_fetch_add(&runs, 1);
    return arg;
}

static void check_submit_refused(cf_executor *ex) {
    cf_future *f = SENTINEL_FUT;
    CHECK_STATUS(cf_submit(ex, task_count, NULL, &f), CF_SHUTDOWN);
    CHECK(f == SENTINEL_FUT);
}

/* ---- test_run_after_shutdown ------------------------------------------------------ */

static void test_run_after_shutdown(void) {
    cf_executor *ex = make_pool(2, "after");
    cf_future *f = submit_ok(ex, task_identity, &runs);
    CHECK(result_ok(f) == &runs);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    check_submit_refused(ex);
    check_submit_refused(ex);
    /* test_threads_terminate-like: nothing left running. */
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    /* Shutdown again, in every combination. */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_OK(cf_executor_shutdown(ex, false, false));
    CHECK_OK(cf_executor_shutdown(ex, false, true));
    CHECK_OK(cf_executor_shutdown(ex, true, true));
    check_submit_refused(ex);
    cf_executor_free(ex);
    /* The future outlives its executor. */
    CHECK(result_ok(f) == &runs);
    cf_future_release(f);

    /* A pool never used, shut down without waiting. */
    ex = make_pool(2, "after2");
    CHECK_OK(cf_executor_shutdown(ex, false, false));
    check_submit_refused(ex);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_executor_free(ex);
}

/* ---- shutdown(wait=true) waits for running and queued tasks ------------------------ */

typedef struct opener {
    cf_executor *ex;
    gate *g;
} opener;

/* Opens the gate once the executor refuses work, i.e. once shutdown has begun. There is
 * no API to await that, so this probes with short sleeps. */
static void *open_when_shut_down(void *arg) {
    opener *o = (opener *)arg;
    double end = now_s() + LONG_WAIT;
    for (;;) {
        cf_future *f = NULL;
        cf_status st = cf_submit(o->ex, task_noop, NULL, &f);
        if (st == CF_SHUTDOWN) break;
        CHECK_STATUS(st, CF_OK);
        cf_future_release(f);
        CHECK(now_s() < end);
        sleep_s(0.002);
    }
    gate_open(o->g);
    return NULL;
}

static void test_wait_true(void) {
    atomic_store(&runs, 0);
    cf_executor *ex = make_pool(2, "waitT");
    blocker b;
    blocker_init(&b);
    blocked_job j[2];
    cf_future *fs[8];
    for (int i = 0; i < 2; i++) {
        blocked_job_init(&j[i], &b, (void *)(uintptr_t)(i + 1));
        fs[i] = submit_ok(ex, task_blocked, &j[i]);
    }
    CHECK(counter_wait(&b.started, 2, LONG_WAIT));
    for (int i = 2; i < 8; i++) fs[i] = submit_ok(ex, task_count, (void *)(uintptr_t)(i + 1));
    for (int i = 2; i < 8; i++) CHECK_STATE(fs[i], CF_STATE_PENDING);

    opener o = {.ex = ex, .g = &b.g};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, open_when_shut_down, &o) == 0);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    /* Everything accepted has finished, and every worker has exited. */
    for (int i = 0; i < 8; i++) {
        CHECK(cf_future_done(fs[i]));
        CHECK_STATE(fs[i], CF_STATE_FINISHED);
    }
    CHECK_EQ_LL(counter_get(&b.finished), 2);
    CHECK_EQ_LL(atomic_load(&runs), 6);
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    CHECK(pthread_join(th, NULL) == 0);
    for (int i = 0; i < 8; i++) {
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[i], 0, &r));
        CHECK(r == (void *)(uintptr_t)(i + 1));
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    blocker_destroy(&b);

    /* test_hang_issue12364: 50 short tasks, shutdown, all results there. */
    atomic_store(&runs, 0);
    ex = make_pool(5, "hang");
    cf_future *many[50];
    for (uintptr_t i = 0; i < 50; i++) many[i] = submit_ok(ex, task_short_work, (void *)i);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(atomic_load(&runs), 50);
    for (uintptr_t i = 0; i < 50; i++) {
        void *r = NULL;
        CHECK_OK(cf_future_result(many[i], 0, &r));
        CHECK(r == (void *)i);
        cf_future_release(many[i]);
    }
    cf_executor_free(ex);

    /* test_hang_gh94440: a future cancelled right before shutdown(wait) does not hang it. */
    ex = make_pool(1, "gh94440");
    cf_future *f = submit_ok(ex, task_noop, NULL);
    result_ok(f);
    cf_future_release(f);
    f = submit_ok(ex, task_noop, NULL);
    cf_future_cancel(f);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(cf_future_done(f));
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ---- shutdown(wait=false) ------------------------------------------------------------ */

typedef struct submit_job {
    blocked_job bj;
    cf_executor *ex;
} submit_job;

/* Blocks, then tries to submit to its own (by then shut down) pool; returns the status. */
static void *task_block_then_submit(void *arg) {
    submit_job *s = (submit_job *)arg;
    task_blocked(&s->bj);
    cf_future *f = SENTINEL_FUT;
    cf_status st = cf_submit(s->ex, task_count, NULL, &f);
    if (f != SENTINEL_FUT) return (void *)(uintptr_t)999; /* *out must stay untouched */
    return (void *)(uintptr_t)st;
}

static void test_wait_false(void) {
    atomic_store(&runs, 0);
    cf_executor *ex = make_pool(1, "nowait");
    blocker b;
    blocker_init(&b);
    submit_job sj;
    blocked_job_init(&sj.bj, &b, NULL);
    sj.ex = ex;
    cf_future *head = submit_ok(ex, task_block_then_submit, &sj);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    cf_future *q[3];
    for (uintptr_t i = 0; i < 3; i++) q[i] = submit_ok(ex, task_count, (void *)(i + 10));

    double t0 = now_s();
    CHECK_OK(cf_executor_shutdown(ex, false, false));
    CHECK(since(t0) < 5.0); /* at once, although a task is blocked */
    CHECK(!cf_future_done(head));
    CHECK(cf_future_running(head));
    for (int i = 0; i < 3; i++) {
        CHECK_STATE(q[i], CF_STATE_PENDING); /* not cancelled: they will still run */
        CHECK(!cf_future_cancelled(q[i]));
    }
    check_submit_refused(ex);

    /* test_shutdown_no_wait: the accepted tasks still complete. */
    gate_open(&b.g);
    CHECK(result_ok(head) == (void *)(uintptr_t)CF_SHUTDOWN); /* submit from the task */
    for (uintptr_t i = 0; i < 3; i++) CHECK(result_ok(q[i]) == (void *)(i + 10));
    CHECK_EQ_LL(atomic_load(&runs), 3);
    /* Workers exit on their own; a second shutdown with wait observes it. */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    for (int i = 0; i < 3; i++) cf_future_release(q[i]);
    cf_future_release(head);
    cf_executor_free(ex);
    blocker_destroy(&b);

    /* shutdown(wait=false), then free while the task may still run: free waits for it. */
    ex = make_pool(1, "nowait2");
    blocker b2;
    blocker_init(&b2);
    blocked_job j2;
    int v = 4;
    blocked_job_init(&j2, &b2, &v);
    head = submit_ok(ex, task_blocked, &j2);
    CHECK(counter_wait(&b2.started, 1, LONG_WAIT));
    CHECK_OK(cf_executor_shutdown(ex, false, false));
    gate_open(&b2.g);
    cf_executor_free(ex);
    CHECK(cf_future_done(head));
    CHECK_EQ_LL(counter_get(&b2.finished), 1);
    CHECK(result_ok(head) == &v);
    cf_future_release(head);
    blocker_destroy(&b2);
}

/* ---- cancel_futures ------------------------------------------------------------------ */

static counter cancel_cbs;
static atomic_int cancel_cb_saw_cancelled;
static void cb_on_cancel(cf_future *f, void *ud) {
    (void)ud;
    if (cf_future_cancelled(f)) atomic_fetch_add(&cancel_cb_saw_cancelled, 1);
    counter_add(&cancel_cbs, 1);
}

typedef struct shutdown_call {
    cf_executor *ex;
    bool wait, cancel;
    cf_status st;
} shutdown_call;

static void *shutdown_in_thread(void *arg) {
    shutdown_call *c = (shutdown_call *)arg;
    c->st = cf_executor_shutdown(c->ex, c->wait, c->cancel);
    return NULL;
}

static void test_cancel_futures(void) {
    for (int with_wait = 0; with_wait < 2; with_wait++) {
        atomic_store(&runs, 0);
        counter_init(&cancel_cbs);
        atomic_init(&cancel_cb_saw_cancelled, 0);
        cf_executor *ex = make_pool(1, "cancelF");
        blocker b;
        blocker_init(&b);
        blocked_job j;
        int v = 8;
        blocked_job_init(&j, &b, &v);
        cf_future *head = submit_ok(ex, task_blocked, &j);
        CHECK(counter_wait(&b.started, 1, LONG_WAIT));
        CHECK_OK(cf_future_add_done_callback(head, cb_on_cancel, NULL));
        enum { NQ = 5 };
        cf_future *q[NQ];
        for (int i = 0; i < NQ; i++) {
            q[i] = submit_ok(ex, task_count, NULL);
            CHECK_OK(cf_future_add_done_callback(q[i], cb_on_cancel, NULL));
        }

        pthread_t th;
        shutdown_call call = {.ex = ex, .wait = true, .cancel = true, .st = CF_PANIC};
        if (!with_wait) {
            /* test_cancel_futures_wait_false */
            CHECK_OK(cf_executor_shutdown(ex, false, true));
            for (int i = 0; i < NQ; i++) {
                CHECK(cf_future_cancelled(q[i]));
                CHECK_STATE(q[i], CF_STATE_CANCELLED);
            }
            CHECK_EQ_LL(counter_get(&cancel_cbs), NQ); /* their callbacks ran */
        } else {
            /* test_cancel_futures: shutdown(wait, cancel) blocks in another thread until
             * the running task ends; the queued ones become cancelled meanwhile. */
            CHECK(pthread_create(&th, NULL, shutdown_in_thread, &call) == 0);
            for (int i = 0; i < NQ; i++) {
                CHECK_OK(cf_future_wait(q[i], LONG_WAIT));
                CHECK(cf_future_cancelled(q[i]));
            }
            CHECK(counter_wait(&cancel_cbs, NQ, LONG_WAIT));
        }
        CHECK_EQ_LL(atomic_load(&cancel_cb_saw_cancelled), NQ);
        /* The running one is left alone. */
        CHECK(cf_future_running(head));
        CHECK(!cf_future_cancelled(head));
        check_submit_refused(ex);

        gate_open(&b.g);
        if (with_wait) {
            CHECK(pthread_join(th, NULL) == 0);
            CHECK_STATUS(call.st, CF_OK);
            CHECK(cf_future_done(head)); /* shutdown(wait) returned: head finished */
        } else {
            CHECK_OK(cf_executor_shutdown(ex, true, false));
        }
        CHECK(result_ok(head) == &v);
        CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
        CHECK(counter_wait(&cancel_cbs, NQ + 1, LONG_WAIT));
        CHECK_EQ_LL(atomic_load(&runs), 0); /* no cancelled task ever ran */
        CHECK_EQ_LL(counter_get(&cancel_cbs), NQ + 1); /* every callback exactly once */
        for (int i = 0; i < NQ; i++) {
            void *r = NULL;
            CHECK_STATUS(cf_future_result(q[i], 0, &r), CF_CANCELLED);
            cf_future_release(q[i]);
        }
        cf_future_release(head);
        cf_executor_free(ex);
        blocker_destroy(&b);
        counter_destroy(&cancel_cbs);
    }
}

/* ---- shutdown from inside the pool -------------------------------------------------- */

typedef struct self_shutdown {
    cf_executor *ex;
    bool wait;
    blocked_job *first; /* if not NULL, block on it first */
} self_shutdown;

static void *task_shutdown_own_pool(void *arg) {
    self_shutdown *s = (self_shutdown *)arg;
    if (s->first != NULL) task_blocked(s->first);
    return (void *)(uintptr_t)cf_executor_shutdown(s->ex, s->wait, false);
}

static atomic_int cb_shutdown_status;
static void cb_shutdown_own_pool(cf_future *f, void *ud) {
    (void)f;
    atomic_store(&cb_shutdown_status, (int)cf_executor_shutdown((cf_executor *)ud, true, false));
}

static void *task_shutdown_other_pool(void *arg) {
    return (void *)(uintptr_t)cf_executor_shutdown((cf_executor *)arg, true, false);
}

static void test_shutdown_from_inside(void) {
    atomic_store(&runs, 0);
    /* wait=true from a task of the same pool: CF_INVALID_STATE, no deadlock. */
    cf_executor *ex = make_pool(2, "inside");
    cf_future *before = submit_ok(ex, task_count, NULL);
    result_ok(before);
    self_shutdown s = {.ex = ex, .wait = true, .first = NULL};
    cf_future *f = submit_ok(ex, task_shutdown_own_pool, &s);
    CHECK(result_ok(f) == (void *)(uintptr_t)CF_INVALID_STATE);
    /* ...but the shutdown was started. */
    check_submit_refused(ex);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_future_release(f);
    cf_future_release(before);
    cf_executor_free(ex);

    /* wait=false from a task is fine; the work queued behind it still runs. */
    ex = make_pool(1, "inside2");
    blocker b0;
    blocker_init(&b0);
    blocked_job j0;
    blocked_job_init(&j0, &b0, NULL);
    s = (self_shutdown){.ex = ex, .wait = false, .first = &j0};
    f = submit_ok(ex, task_shutdown_own_pool, &s);
    cf_future *after = submit_ok(ex, task_count, (void *)(uintptr_t)5);
    gate_open(&b0.g);
    CHECK(result_ok(f) == (void *)(uintptr_t)CF_OK);
    CHECK(result_ok(after) == (void *)(uintptr_t)5);
    check_submit_refused(ex);
    cf_executor_free(ex);
    cf_future_release(f);
    cf_future_release(after);
    blocker_destroy(&b0);

    /* wait=true from a done callback run by one of the pool's workers. */
    ex = make_pool(1, "inside3");
    atomic_init(&cb_shutdown_status, -1);
    blocker b;
    blocker_init(&b);
    blocked_job j;
    blocked_job_init(&j, &b, NULL);
    f = submit_ok(ex, task_blocked, &j);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    CHECK_OK(cf_future_add_done_callback(f, cb_shutdown_own_pool, ex));
    gate_open(&b.g);
    result_ok(f);
    CHECK_OK(cf_executor_shutdown(ex, true, false)); /* returns once the worker exited */
    CHECK_EQ_LL(atomic_load(&cb_shutdown_status), CF_INVALID_STATE);
    cf_future_release(f);
    cf_executor_free(ex);
    blocker_destroy(&b);

    /* wait=true on ANOTHER pool from a task: allowed, waits for that pool. */
    cf_executor *a = make_pool(1, "poolA");
    cf_executor *other = make_pool(1, "poolB");
    blocker b2;
    blocker_init(&b2);
    blocked_job j2;
    blocked_job_init(&j2, &b2, NULL);
    cf_future *in_other = submit_ok(other, task_blocked, &j2);
    CHECK(counter_wait(&b2.started, 1, LONG_WAIT));
    f = submit_ok(a, task_shutdown_other_pool, other);
    CHECK_STATUS(cf_future_wait(f, 0.05), CF_TIMEOUT); /* blocked on the other pool */
    gate_open(&b2.g);
    CHECK(result_ok(f) == (void *)(uintptr_t)CF_OK);
    CHECK(cf_future_done(in_other));
    CHECK_EQ_LL(cf_executor_worker_count(other), 0);
    cf_future_release(f);
    cf_future_release(in_other);
    cf_executor_free(a);
    cf_executor_free(other);
    blocker_destroy(&b2);
}

/* ---- cf_executor_free runs pending tasks; futures outlive the executor --------------- */

static counter late_cb;
static void cb_late(cf_future *f, void *ud) {
    (void)ud;
    CHECK(cf_future_done(f));
    counter_add(&late_cb, 1);
}

static void test_free(void) {
    /* test_context_manager_shutdown / test_del_shutdown */
    atomic_store(&runs, 0);
    cf_executor *ex = make_pool(1, "free");
    enum { N = 40 };
    cf_future *fs[N];
    for (uintptr_t i = 0; i < N; i++) fs[i] = submit_ok(ex, task_short_work, (void *)(i + 1));
    /* Half the futures are released now, the others kept. */
    for (int i = 0; i < N; i += 2) cf_future_release(fs[i]);
    cf_executor_free(ex); /* shutdown(wait) + release */
    CHECK_EQ_LL(atomic_load(&runs), N);
    counter_init(&late_cb);
    for (uintptr_t i = 1; i < N; i += 2) {
        CHECK(cf_future_done(fs[i]));
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[i], 0, &r));
        CHECK(r == (void *)(i + 1));
        CHECK(!cf_future_cancel(fs[i]));
        /* A callback added now runs at once. */
        CHECK_OK(cf_future_add_done_callback(fs[i], cb_late, NULL));
        cf_future_release(fs[i]);
    }
    CHECK_EQ_LL(counter_get(&late_cb), N / 2);
    counter_destroy(&late_cb);

    /* A free with a pool that never ran anything, and with one already shut down. */
    ex = make_pool(2, "free2");
    cf_executor_free(ex);
    ex = make_pool(2, "free3");
    CHECK_OK(cf_executor_shutdown(ex, true, true));
    cf_executor_free(ex);
}

/* test_threads_terminate */
static void test_threads_terminate(void) {
    cf_executor *ex = make_pool(3, "term");
    blocker b;
    blocker_init(&b);
    blocked_job j[3];
    cf_future *fs[3];
    for (int i = 0; i < 3; i++) {
        blocked_job_init(&j[i], &b, NULL);
        fs[i] = submit_ok(ex, task_blocked, &j[i]);
    }
    CHECK(counter_wait(&b.started, 3, LONG_WAIT));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 3);
    gate_open(&b.g);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    for (int i = 0; i < 3; i++) {
        CHECK(cf_future_done(fs[i]));
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    blocker_destroy(&b);
}

int main(void) {
    watchdog_start(100);
    atomic_init(&runs, 0);
    test_run_after_shutdown();
    test_wait_true();
    test_wait_false();
    test_cancel_futures();
    test_shutdown_from_inside();
    test_free();
    test_threads_terminate();
    printf("test_shutdown: ok\n");
    return 0;
}
