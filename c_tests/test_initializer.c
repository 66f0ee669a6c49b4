/* test_initializer.c: executor initializers.
 *
 * Covers: the initializer runs lazily (not at pool creation), exactly once in each new
 * worker, in that worker's thread, before its first task, with `initarg` passed through;
 * a failing initializer (cf_raise, with or without a message) breaks the executor: the
 * pending futures finish CF_BROKEN (their tasks never run, their callbacks run), later
 * submits return CF_BROKEN with *out untouched, a task already running on a healthy
 * worker still finishes normally, and the broken pool still shuts down and frees cleanly.
 * Ports from CPython Lib/test/test_concurrent_futures/test_init.py:
 * InitializerMixin.test_initializer, FailingInitializerMixin.test_initializer. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

#define SENTINEL_FUT ((cf_future *)(uintptr_t)0x5e5e5e5eu)

/* ---- a good initializer ------------------------------------------------------------ */

typedef struct init_arg {
    const char *status;
} init_arg;

static _Thread_local const init_arg *tl_init;
static atomic_int init_calls;
static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t init_threads[64];

static void init_ok(void *initarg) {
    CHECK(tl_init == NULL); /* once per worker */
    tl_init = (const init_arg *)initarg;
    int k = atomic_fetch_add(&init_calls, 1);
    pthread_mutex_lock(&init_mu);
    if (k < 64) init_threads[k] = pthread_self();
    pthread_mutex_unlock(&init_mu);
}

/* get_init_status: what this worker's initializer stored (NULL if it did not run). */
static void *task_get_init_status(void *arg) {
    (void)arg;
    return (void *)tl_init;
}

typedef struct init_job {
    blocked_job bj;
    const init_arg *seen;
} init_job;

static void *task_blocked_get_init(void *arg) {
    init_job *j = (init_job *)arg;
    j->seen = tl_init;
    task_blocked(&j->bj);
    return (void *)tl_init;
}

static void test_good_initializer(void) {
    atomic_init(&init_calls, 0);
    init_arg ia = {.status = "initialized"};
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 3;
    o.name_prefix = "init";
    o.initializer = init_ok;
    o.initarg = &ia;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    CHECK_EQ_LL(atomic_load(&init_calls), 0); /* lazy: no worker yet */
    CHECK(tl_init == NULL);                    /* never in the caller's thread */

    /* Three blocked tasks: three workers, each initialized before its first task. */
    blocker b;
    blocker_init(&b);
    init_job jobs[3];
    cf_future *fs[3];
    for (int i = 0; i < 3; i++) {
        blocked_job_init(&jobs[i].bj, &b, NULL);
        jobs[i].seen = NULL;
        fs[i] = submit_ok(ex, task_blocked_get_init, &jobs[i]);
    }
    CHECK(counter_wait(&b.started, 3, LONG_WAIT));
    CHECK_EQ_LL(atomic_load(&init_calls), 3);
    for (int i = 0; i < 3; i++) CHECK(jobs[i].seen == &ia);
    gate_open(&b.g);
    for (int i = 0; i < 3; i++) {
        CHECK(result_ok(fs[i]) == &ia);
        cf_future_release(fs[i]);
    }

    /* test_initializer: many more tasks, all on initialized workers. */
    for (int i = 0; i < 30; i++) {
        cf_future *f = submit_ok(ex, task_get_init_status, NULL);
        const init_arg *got = (const init_arg *)result_ok(f);
        CHECK(got == &ia);
        CHECK_STREQ(got->status, "initialized");
        cf_future_release(f);
    }
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    /* Exactly once per worker, each in a different thread, none in this one. */
    CHECK_EQ_LL(atomic_load(&init_calls), 3);
    for (int i = 0; i < 3; i++) {
        CHECK(!pthread_equal(init_threads[i], pthread_self()));
        for (int k = i + 1; k < 3; k++) CHECK(!pthread_equal(init_threads[i], init_threads[k]));
    }
    cf_executor_free(ex);
    CHECK(tl_init == NULL);
    blocker_destroy(&b);

    /* One worker, sequential work: initialized once. */
    atomic_store(&init_calls, 0);
    o.max_workers = 1;
    ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    for (int i = 0; i < 10; i++) {
        cf_future *f = submit_ok(ex, task_get_init_status, NULL);
        CHECK(result_ok(f) == &ia);
        cf_future_release(f);
    }
    cf_executor_free(ex);
    CHECK_EQ_LL(atomic_load(&init_calls), 1);
}

/* ---- failing initializers ------------------------------------------------------------ */

static atomic_int task_runs;
static void *task_count(void *arg) {
    atomic_fetch_add(&task_runs, 1);
    return arg;
}

static atomic_int fail_calls;
static void init_fail(void *initarg) {
    atomic_fetch_add(&fail_calls, 1);
    const char *msg = (const char *)initarg; /* may be NULL */
    CHECK(cf_raise(5, msg) == NULL);
}

/* Succeeds for the first worker, fails for every later one. */
static void init_fail_after_first(void *initarg) {
    (void)initarg;
    if (atomic_fetch_add(&fail_calls, 1) > 0) cf_raise(6, "second worker fails");
}

static counter broken_cbs;
static void cb_broken(cf_future *f, void *ud) {
    (void)ud;
    void *r = NULL;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_BROKEN);
    counter_add(&broken_cbs, 1);
}

static void check_broken_future(cf_future *f) {
    void *r = (void *)&r;
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_BROKEN);
    CHECK(r == (void *)&r); /* untouched */
    int code = -999;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_BROKEN);
    CHECK(cf_future_done(f));
    CHECK(!cf_future_cancelled(f));
    CHECK_STATE(f, CF_STATE_FINISHED);
}

static void check_submit_broken(cf_executor *ex) {
    cf_future *f = SENTINEL_FUT;
    CHECK_STATUS(cf_submit(ex, task_count, NULL, &f), CF_BROKEN);
    CHECK(f == SENTINEL_FUT);
}

static void test_failing_initializer(const char *message) {
    atomic_init(&task_runs, 0);
    atomic_init(&fail_calls, 0);
    counter_init(&broken_cbs);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 2;
    o.name_prefix = "initfail";
    o.initializer = init_fail;
    o.initarg = (void *)message;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    CHECK_EQ_LL(atomic_load(&fail_calls), 0);

    /* The first submit is accepted (no worker has started yet); its future breaks. */
    cf_future *first = submit_ok(ex, task_count, NULL);
    CHECK_OK(cf_future_add_done_callback(first, cb_broken, NULL));
    /* More submits: each is either accepted (and then breaks) or refused as broken. */
    cf_future *more[5];
    for (int i = 0; i < 5; i++) {
        more[i] = SENTINEL_FUT;
        cf_status st = cf_submit(ex, task_count, NULL, &more[i]);
        if (st == CF_OK) {
            CHECK(more[i] != NULL && more[i] != SENTINEL_FUT);
        } else {
            CHECK_STATUS(st, CF_BROKEN);
            CHECK(more[i] == SENTINEL_FUT);
            more[i] = NULL;
        }
    }
    check_broken_future(first);
    for (int i = 0; i < 5; i++) {
        if (more[i] == NULL) continue;
        check_broken_future(more[i]);
        cf_future_release(more[i]);
    }
    /* From now on, submit is refused. */
    check_submit_broken(ex);
    check_submit_broken(ex);
    CHECK(counter_wait(&broken_cbs, 1, LONG_WAIT));
    CHECK(atomic_load(&fail_calls) >= 1);

    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    CHECK_EQ_LL(atomic_load(&task_runs), 0); /* no task ran on a broken pool */
    CHECK_EQ_LL(counter_get(&broken_cbs), 1);
    /* Still refused after shutdown (either status is an honest answer now). */
    cf_future *f = SENTINEL_FUT;
    cf_status st = cf_submit(ex, task_count, NULL, &f);
    CHECK(st == CF_BROKEN || st == CF_SHUTDOWN);
    CHECK(f == SENTINEL_FUT);
    cf_future_release(first);
    cf_executor_free(ex);
    counter_destroy(&broken_cbs);
}

static void test_second_worker_fails(void) {
    atomic_init(&task_runs, 0);
    atomic_init(&fail_calls, 0);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 2;
    o.initializer = init_fail_after_first;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));

    blocker b;
    blocker_init(&b);
    blocked_job j;
    int v = 3;
    blocked_job_init(&j, &b, &v);
    cf_future *running = submit_ok(ex, task_blocked, &j); /* worker 0: initialized fine */
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    cf_future *pending = submit_ok(ex, task_count, NULL); /* starts worker 1: init fails */
    check_broken_future(pending);
    check_submit_broken(ex);
    /* The task already running on the healthy worker is not affected. */
    CHECK(cf_future_running(running));
    gate_open(&b.g);
    CHECK(result_ok(running) == &v);
    CHECK_EQ_LL(atomic_load(&task_runs), 0);
    check_submit_broken(ex);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_future_release(running);
    cf_future_release(pending);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

int main(void) {
    watchdog_start(100);
    test_good_initializer();
    test_failing_initializer("error in initializer");
    test_failing_initializer(NULL);
    test_second_worker_fails();
    printf("test_initializer: ok\n");
    return 0;
}
