/* test_callbacks.c: cf_future_add_done_callback.
 *
 * Covers: callbacks run in the order they were added; on a done future (result, error or
 * cancelled) a new callback runs at once in the caller's thread before the call returns;
 * otherwise it runs exactly once, after the future is done, in the thread that finishes it
 * (the worker, compared with pthread_self() captured in the task; the thread calling
 * cf_future_set_result / set_exception) or cancels it (the cancelling thread); callbacks
 * run on cancel; inside a callback the future is done and its outcome is readable; a
 * callback that submits work to the pool (and one that then waits on that work); a
 * callback that adds another callback (to its own, done, future: runs at once; to a
 * pending one: runs later); a callback that releases its own extra reference (also the
 * last one) while further callbacks remain; many callbacks racing completion.
 * Ports from CPython Lib/test/test_concurrent_futures/test_future.py:
 * test_done_callback_with_result, test_done_callback_with_exception,
 * test_done_callback_with_cancel, test_done_callback_already_successful,
 * test_done_callback_already_failed, test_done_callback_already_cancelled. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

/* ---- an event log shared by the callbacks ------------------------------------------ */

enum { MAXEV = 64 };
static struct {
    pthread_mutex_t mu;
    int ev[MAXEV];
    pthread_t th[MAXEV];
    int n;
    counter cnt;
} L = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_reset(void) {
    pthread_mutex_lock(&L.mu);
    L.n = 0;
    pthread_mutex_unlock(&L.mu);
    counter_destroy(&L.cnt);
    counter_init(&L.cnt);
}

static void log_event(int e) {
    pthread_mutex_lock(&L.mu);
    CHECK(L.n < MAXEV);
    L.ev[L.n] = e;
    L.th[L.n] = pthread_self();
    L.n++;
    pthread_mutex_unlock(&L.mu);
    counter_add(&L.cnt, 1);
}

static int log_count(void) {
    pthread_mutex_lock(&L.mu);
    int n = L.n;
    pthread_mutex_unlock(&L.mu);
    return n;
}

/* Logs its id; checks the future is done. */
static void cb_log(cf_future *f, void *ud) {
    CHECK(f != NULL);
    CHECK(cf_future_done(f));
    CHECK(!cf_future_running(f));
    CHECK_OK(cf_future_wait(f, 0));
    log_event((int)(uintptr_t)ud);
}

/* test_done_callback_with_result: the callback reads the result (even waiting forever). */
static void *cb_result_seen;
static void cb_read_result(cf_future *f, void *ud) {
    void *r = NULL;
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    cb_result_seen = r;
    log_event((int)(uintptr_t)ud);
}

/* test_done_callback_with_exception */
static int cb_code_seen;
static char cb_msg_seen[64];
static void cb_read_exception(cf_future *f, void *ud) {
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_TASK_FAILED);
    cb_code_seen = code;
    snprintf(cb_msg_seen, sizeof cb_msg_seen, "%s", msg ? msg : "(null)");
    log_event((int)(uintptr_t)ud);
}

/* test_done_callback_with_cancel */
static int cb_was_cancelled;
static void cb_read_cancelled(cf_future *f, void *ud) {
    cb_was_cancelled = cf_future_cancelled(f) ? 1 : 0;
    CHECK_STATE(f, CF_STATE_CANCELLED);
    void *r = NULL;
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_CANCELLED);
    log_event((int)(uintptr_t)ud);
}

static cf_future *new_promise(void) {
    cf_future *f = NULL;
    CHECK_OK(cf_future_new(&f));
    return f;
}

static void check_log(const int *want, int n, pthread_t thread) {
    pthread_mutex_lock(&L.mu);
    int got = L.n;
    pthread_mutex_unlock(&L.mu);
    CHECK_EQ_LL(got, n);
    for (int i = 0; i < n; i++) {
        CHECK_EQ_LL(L.ev[i], want[i]);
        CHECK(pthread_equal(L.th[i], thread));
    }
}

/* ---- promises: order, threads, already-done --------------------------------------- */

static void test_promise_callbacks(void) {
    int v = 5;
    pthread_t me = pthread_self();

    /* Order of registration; all run inside set_result, in this thread. */
    log_reset();
    cf_future *f = new_promise();
    for (uintptr_t i = 0; i < 5; i++) CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)i));
    CHECK_OK(cf_future_add_done_callback(f, cb_read_result, (void *)(uintptr_t)5));
    CHECK_EQ_LL(log_count(), 0); /* nothing ran while pending */
    CHECK_OK(cf_future_set_running_or_notify_cancel(f));
    CHECK_EQ_LL(log_count(), 0); /* nor while running */
    CHECK_OK(cf_future_set_result(f, &v));
    {
        int want[] = {0, 1, 2, 3, 4, 5};
        check_log(want, 6, me);
    }
    CHECK(cb_result_seen == &v);
    /* Exactly once: a failing second set, a failing cancel: no more calls. */
    CHECK_STATUS(cf_future_set_result(f, &v), CF_INVALID_STATE);
    CHECK(!cf_future_cancel(f));
    CHECK_EQ_LL(log_count(), 6);

    /* test_done_callback_already_successful: runs at once, in this thread. */
    cb_result_seen = NULL;
    CHECK_OK(cf_future_add_done_callback(f, cb_read_result, (void *)(uintptr_t)6));
    CHECK_EQ_LL(log_count(), 7);
    CHECK(cb_result_seen == &v);
    CHECK(pthread_equal(L.th[6], me));
    cf_future_release(f);

    /* test_done_callback_with_exception */
    log_reset();
    f = new_promise();
    CHECK_OK(cf_future_add_done_callback(f, cb_read_exception, (void *)(uintptr_t)1));
    CHECK_OK(cf_future_set_exception(f, 21, "test"));
    {
        int want[] = {1};
        check_log(want, 1, me);
    }
    CHECK_EQ_LL(cb_code_seen, 21);
    CHECK_STREQ(cb_msg_seen, "test");
    /* test_done_callback_already_failed */
    cb_code_seen = 0;
    CHECK_OK(cf_future_add_done_callback(f, cb_read_exception, (void *)(uintptr_t)2));
    CHECK_EQ_LL(log_count(), 2);
    CHECK_EQ_LL(cb_code_seen, 21);
    cf_future_release(f);

    /* test_done_callback_with_cancel */
    log_reset();
    f = new_promise();
    cb_was_cancelled = -1;
    CHECK_OK(cf_future_add_done_callback(f, cb_read_cancelled, (void *)(uintptr_t)1));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)2));
    CHECK(cf_future_cancel(f));
    {
        int want[] = {1, 2};
        check_log(want, 2, me);
    }
    CHECK_EQ_LL(cb_was_cancelled, 1);
    /* Exactly once: cancel again, notify, set: nothing more. */
    CHECK(cf_future_cancel(f));
    CHECK_STATUS(cf_future_set_running_or_notify_cancel(f), CF_CANCELLED);
    CHECK_STATUS(cf_future_set_result(f, &v), CF_INVALID_STATE);
    CHECK_EQ_LL(log_count(), 2);
    /* test_done_callback_already_cancelled */
    cb_was_cancelled = -1;
    CHECK_OK(cf_future_add_done_callback(f, cb_read_cancelled, (void *)(uintptr_t)3));
    CHECK_EQ_LL(log_count(), 3);
    CHECK_EQ_LL(cb_was_cancelled, 1);
    cf_future_release(f);
}

/* ---- the finishing / cancelling / adding thread ------------------------------------- */

typedef struct thread_op {
    cf_future *f;
    int op; /* 0 set_result, 1 cancel, 2 add callback, 3 set_exception */
    int count_after; /* log_count() right after the call returned */
} thread_op;

static void *thread_op_main(void *arg) {
    thread_op *t = (thread_op *)arg;
    static int v = 1;
    if (t->op == 0) CHECK_OK(cf_future_set_result(t->f, &v));
    if (t->op == 1) CHECK(cf_future_cancel(t->f));
    if (t->op == 2) CHECK_OK(cf_future_add_done_callback(t->f, cb_log, (void *)(uintptr_t)7));
    if (t->op == 3) CHECK_OK(cf_future_set_exception(t->f, 3, "e"));
    t->count_after = log_count();
    return NULL;
}

static pthread_t run_op_in_thread(thread_op *t) {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, thread_op_main, t) == 0);
    return th;
}

static void test_threads(void) {
    for (int op = 0; op < 4; op++) {
        log_reset();
        cf_future *f = new_promise();
        if (op == 2) CHECK_OK(cf_future_set_result(f, NULL)); /* already done */
        else {
            CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)1));
            CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)2));
        }
        thread_op t = {.f = f, .op = op, .count_after = -1};
        pthread_t th = run_op_in_thread(&t);
        pthread_t other = th;
        CHECK(pthread_join(th, NULL) == 0);
        if (op == 2) {
            int want[] = {7};
            check_log(want, 1, other);
            CHECK_EQ_LL(t.count_after, 1); /* ran before add returned */
        } else {
            int want[] = {1, 2};
            check_log(want, 2, other);
            CHECK_EQ_LL(t.count_after, 2); /* ran inside the set / cancel call */
        }
        cf_future_release(f);
    }
}

/* ---- executor futures: the worker runs the callbacks ------------------------------ */

static void *task_fail_after_gate(void *arg) {
    blocked_job *j = (blocked_job *)arg;
    task_blocked(j);
    return cf_raise(44, "worker failure");
}

static void test_worker_thread(void) {
    cf_executor *ex = make_pool(2, "cbw");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    int v = 9;
    blocked_job_init(&j, &b, &v);

    log_reset();
    cf_future *f = submit_ok(ex, task_blocked, &j);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)1));
    CHECK_OK(cf_future_add_done_callback(f, cb_read_result, (void *)(uintptr_t)2));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)3));
    CHECK_EQ_LL(log_count(), 0);
    gate_open(&b.g);
    CHECK(result_ok(f) == &v);
    CHECK(counter_wait(&L.cnt, 3, LONG_WAIT));
    {
        int want[] = {1, 2, 3};
        check_log(want, 3, j.thread); /* the worker that ran the task */
    }
    CHECK(!pthread_equal(j.thread, pthread_self()));
    CHECK(cb_result_seen == &v);
    cf_future_release(f);

    /* A failing task: the worker runs the callbacks, which see the error. */
    log_reset();
    blocker b2;
    blocker_init(&b2);
    blocked_job j2;
    blocked_job_init(&j2, &b2, NULL);
    f = submit_ok(ex, task_fail_after_gate, &j2);
    CHECK(counter_wait(&b2.started, 1, LONG_WAIT));
    cb_code_seen = 0;
    CHECK_OK(cf_future_add_done_callback(f, cb_read_exception, (void *)(uintptr_t)4));
    gate_open(&b2.g);
    CHECK(counter_wait(&L.cnt, 1, LONG_WAIT));
    {
        int want[] = {4};
        check_log(want, 1, j2.thread);
    }
    CHECK_EQ_LL(cb_code_seen, 44);
    CHECK_STREQ(cb_msg_seen, "worker failure");
    cf_future_release(f);

    /* A queued future cancelled by another thread: the callbacks run in that thread,
     * inside cf_future_cancel; its task never runs; exactly once. */
    log_reset();
    blocker b3;
    blocker_init(&b3);
    blocked_job j3a, j3b, j3q;
    blocked_job_init(&j3a, &b3, NULL);
    blocked_job_init(&j3b, &b3, NULL);
    blocked_job_init(&j3q, &b3, NULL);
    cf_future *h1 = submit_ok(ex, task_blocked, &j3a);
    cf_future *h2 = submit_ok(ex, task_blocked, &j3b);
    CHECK(counter_wait(&b3.started, 2, LONG_WAIT)); /* both workers busy */
    cf_future *q = submit_ok(ex, task_blocked, &j3q);
    CHECK_STATE(q, CF_STATE_PENDING);
    CHECK_OK(cf_future_add_done_callback(q, cb_read_cancelled, (void *)(uintptr_t)5));
    CHECK_OK(cf_future_add_done_callback(q, cb_log, (void *)(uintptr_t)6));
    thread_op t = {.f = q, .op = 1, .count_after = -1};
    pthread_t th = run_op_in_thread(&t);
    pthread_t canceller = th;
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_EQ_LL(t.count_after, 2);
    {
        int want[] = {5, 6};
        check_log(want, 2, canceller);
    }
    CHECK(cf_future_cancel(q));
    gate_open(&b3.g);
    result_ok(h1);
    result_ok(h2);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(atomic_load(&j3q.ran), 0);
    CHECK_EQ_LL(log_count(), 2);
    cf_future_release(q);
    cf_future_release(h1);
    cf_future_release(h2);

    cf_executor_free(ex);
    blocker_destroy(&b);
    blocker_destroy(&b2);
    blocker_destroy(&b3);
}

/* ---- callbacks that submit work, wait on it, add callbacks ------------------------ */

typedef struct submit_ctx {
    cf_executor *ex;
    void *arg;
    _Atomic(cf_future *) made;
    cf_status wait_status;
    void *wait_result;
    int wait_inside;
    counter done;
} submit_ctx;

static void cb_submit(cf_future *f, void *ud) {
    (void)f;
    submit_ctx *c = (submit_ctx *)ud;
    cf_future *g = NULL;
    CHECK_OK(cf_submit(c->ex, task_identity, c->arg, &g));
    CHECK(g != NULL);
    if (c->wait_inside) {
        c->wait_result = NULL;
        c->wait_status = cf_future_result(g, CF_FOREVER, &c->wait_result);
    }
    atomic_store(&c->made, g);
    counter_add(&c->done, 1);
}

static void test_callback_submits(void) {
    cf_executor *ex = make_pool(1, "cbsub");
    int y = 77;
    for (int wait_inside = 0; wait_inside < 2; wait_inside++) {
        blocker b;
        blocker_init(&b);
        blocked_job j;
        blocked_job_init(&j, &b, NULL);
        submit_ctx c = {.ex = ex, .arg = &y, .wait_status = CF_PANIC, .wait_inside = wait_inside};
        atomic_init(&c.made, NULL);
        counter_init(&c.done);
        cf_future *f = submit_ok(ex, task_blocked, &j);
        CHECK(counter_wait(&b.started, 1, LONG_WAIT));
        CHECK_OK(cf_future_add_done_callback(f, cb_submit, &c));
        gate_open(&b.g);
        result_ok(f);
        /* The callback runs in the only worker and submits to (and maybe waits on) that
         * same pool. */
        CHECK(counter_wait(&c.done, 1, LONG_WAIT));
        cf_future *g = atomic_load(&c.made);
        CHECK(g != NULL);
        CHECK(result_ok(g) == &y);
        if (wait_inside) {
            CHECK_STATUS(c.wait_status, CF_OK);
            CHECK(c.wait_result == &y);
        }
        cf_future_release(g);
        cf_future_release(f);
        counter_destroy(&c.done);
        blocker_destroy(&b);
    }

    /* On a done future the callback runs here, at once, and submits from this thread. */
    submit_ctx c = {.ex = ex, .arg = &y, .wait_status = CF_PANIC, .wait_inside = 1};
    atomic_init(&c.made, NULL);
    counter_init(&c.done);
    cf_future *p = new_promise();
    CHECK_OK(cf_future_set_result(p, NULL));
    CHECK_OK(cf_future_add_done_callback(p, cb_submit, &c));
    CHECK_EQ_LL(counter_get(&c.done), 1);
    CHECK_STATUS(c.wait_status, CF_OK);
    CHECK(c.wait_result == &y);
    cf_future_release(atomic_load(&c.made));
    cf_future_release(p);
    counter_destroy(&c.done);

    cf_executor_free(ex);
}

static cf_future *other_pending;
static void cb_inner(cf_future *f, void *ud) {
    CHECK(cf_future_done(f));
    log_event((int)(uintptr_t)ud);
}
static void cb_outer(cf_future *f, void *ud) {
    (void)ud;
    log_event(100);
    /* Own future is done: the new callback runs at once, before this call returns. */
    CHECK_OK(cf_future_add_done_callback(f, cb_inner, (void *)(uintptr_t)101));
    CHECK_EQ_LL(log_count(), 2);
    /* Another, pending future: runs when that one finishes. */
    CHECK_OK(cf_future_add_done_callback(other_pending, cb_inner, (void *)(uintptr_t)200));
    log_event(102);
}

static void test_callback_adds_callback(void) {
    log_reset();
    cf_future *f = new_promise();
    other_pending = new_promise();
    CHECK_OK(cf_future_add_done_callback(f, cb_outer, NULL));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)103));
    CHECK_OK(cf_future_set_result(f, NULL));
    {
        int want[] = {100, 101, 102, 103};
        check_log(want, 4, pthread_self());
    }
    CHECK_OK(cf_future_set_result(other_pending, NULL));
    {
        int want[] = {100, 101, 102, 103, 200};
        check_log(want, 5, pthread_self());
    }
    cf_future_release(other_pending);
    cf_future_release(f);

    /* The same with the outer callback run by a worker. */
    log_reset();
    cf_executor *ex = make_pool(1, "cbadd");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    blocked_job_init(&j, &b, NULL);
    other_pending = new_promise();
    f = submit_ok(ex, task_blocked, &j);
    CHECK_OK(cf_future_add_done_callback(f, cb_outer, NULL));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)103));
    gate_open(&b.g);
    CHECK(counter_wait(&L.cnt, 4, LONG_WAIT));
    {
        int want[] = {100, 101, 102, 103};
        check_log(want, 4, j.thread);
    }
    CHECK_OK(cf_future_set_result(other_pending, NULL));
    CHECK_EQ_LL(log_count(), 5);
    CHECK_EQ_LL(L.ev[4], 200);
    CHECK(pthread_equal(L.th[4], pthread_self()));
    cf_future_release(other_pending);
    cf_future_release(f);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

/* ---- a callback that releases its own (extra or last) reference -------------------- */

static void cb_release_ud(cf_future *f, void *ud) {
    CHECK(ud == (void *)f);
    log_event(300);
    cf_future_release((cf_future *)ud);
}

/* Completes the promise, then drops this thread's reference to it. */
static void *complete_and_release(void *arg) {
    cf_future *f = (cf_future *)arg;
    CHECK_OK(cf_future_set_result(f, NULL));
    cf_future_release(f);
    return NULL;
}

static void test_callback_releases(void) {
    /* Extra reference, promise: the caller still holds one. */
    log_reset();
    cf_future *f = new_promise();
    CHECK(cf_future_retain(f) == f);
    CHECK_OK(cf_future_add_done_callback(f, cb_release_ud, f));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)301));
    CHECK_OK(cf_future_set_result(f, NULL));
    CHECK_EQ_LL(log_count(), 2);
    void *r = (void *)&r;
    CHECK_OK(cf_future_result(f, 0, &r)); /* still alive: our reference */
    CHECK(r == NULL);
    cf_future_release(f);

    /* Last reference, executor future: the caller drops its reference while the task is
     * blocked; the callback drops the last one; a later callback still runs. */
    log_reset();
    cf_executor *ex = make_pool(1, "cbrel");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    blocked_job_init(&j, &b, NULL);
    f = submit_ok(ex, task_blocked, &j);
    CHECK(cf_future_retain(f) == f);
    CHECK_OK(cf_future_add_done_callback(f, cb_release_ud, f));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)302));
    cf_future_release(f); /* ours; the callback's userdata holds the other */
    f = NULL;
    gate_open(&b.g);
    CHECK(counter_wait(&L.cnt, 2, LONG_WAIT));
    {
        int want[] = {300, 302};
        check_log(want, 2, j.thread);
    }
    cf_executor_free(ex);
    blocker_destroy(&b);

    /* A promise completed by another thread that holds its own reference: the creator
     * drops its reference first, the callback drops the extra one it was given, and the
     * completing thread drops the last one after set_result returns. */
    log_reset();
    f = new_promise();
    cf_future *for_completer = cf_future_retain(f);
    cf_future *extra = cf_future_retain(f);
    CHECK(for_completer == f && extra == f);
    CHECK_OK(cf_future_add_done_callback(f, cb_release_ud, extra));
    CHECK_OK(cf_future_add_done_callback(f, cb_log, (void *)(uintptr_t)303));
    CHECK_OK(cf_future_set_running_or_notify_cancel(f));
    cf_future_release(f); /* the creator's reference */
    f = NULL;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, complete_and_release, for_completer) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    {
        int want[] = {300, 303};
        check_log(want, 2, th);
    }
}

/* ---- exactly once, under races ---------------------------------------------------- */

enum { NRACE = 300 };
static atomic_int race_calls[NRACE];
static cf_future *race_f[NRACE];

static void cb_race(cf_future *f, void *ud) {
    uintptr_t i = (uintptr_t)ud;
    CHECK(f == race_f[i]);
    CHECK(cf_future_done(f));
    atomic_fetch_add(&race_calls[i], 1);
}

static void *race_setter(void *arg) {
    (void)arg;
    for (int i = 0; i < NRACE; i++) {
        if (i % 3 == 0) CHECK(cf_future_cancel(race_f[i]));
        else CHECK_OK(cf_future_set_result(race_f[i], NULL));
    }
    return NULL;
}

static void test_races(void) {
    /* Promises: this thread adds, another completes or cancels, concurrently. */
    for (int i = 0; i < NRACE; i++) {
        atomic_init(&race_calls[i], 0);
        race_f[i] = new_promise();
    }
    pthread_t th;
    CHECK(pthread_create(&th, NULL, race_setter, NULL) == 0);
    for (uintptr_t i = 0; i < NRACE; i++)
        CHECK_OK(cf_future_add_done_callback(race_f[i], cb_race, (void *)i));
    CHECK(pthread_join(th, NULL) == 0);
    for (int i = 0; i < NRACE; i++) {
        CHECK_EQ_LL(atomic_load(&race_calls[i]), 1);
        cf_future_release(race_f[i]);
    }

    /* Executor futures: callbacks added right after submit race the workers. */
    cf_executor *ex = make_pool(4, "cbrace");
    for (uintptr_t i = 0; i < NRACE; i++) {
        atomic_init(&race_calls[i], 0);
        race_f[i] = submit_ok(ex, task_identity, (void *)i);
        CHECK_OK(cf_future_add_done_callback(race_f[i], cb_race, (void *)i));
    }
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    for (int i = 0; i < NRACE; i++) {
        CHECK(result_ok(race_f[i]) == (void *)(uintptr_t)i);
    }
    /* shutdown(wait) returned after every worker exited, so every callback (run by a
     * worker, or at once by this thread) has run, exactly once. */
    for (int i = 0; i < NRACE; i++) {
        CHECK_EQ_LL(atomic_load(&race_calls[i]), 1);
        cf_future_release(race_f[i]);
    }
    cf_executor_free(ex);
}

int main(void) {
    watchdog_start(100);
    counter_init(&L.cnt);
    test_promise_callbacks();
    test_threads();
    test_worker_thread();
    test_callback_submits();
    test_callback_adds_callback();
    test_callback_releases();
    test_races();
    counter_destroy(&L.cnt);
    printf("test_callbacks: ok\n");
    return 0;
}
