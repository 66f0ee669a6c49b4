/* test_future_state.c: cf_future_state / done / running / cancelled through the life cycle.
 *
 * Covers: an executor future queued behind a busy worker is PENDING, then RUNNING while its
 * task runs (also as seen from inside the task), then FINISHED (success and failure); a
 * cancelled one is CANCELLED; promises go PENDING -> RUNNING -> FINISHED and
 * PENDING -> CANCELLED; the bool queries agree with the state at every step; another
 * thread watching a future only ever sees the state move forward.
 * Ports from CPython Lib/test/test_concurrent_futures/test_future.py: test_done,
 * test_running, test_cancelled. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

static void check_queries(cf_future *f, cf_state want) {
    CHECK_STATE(f, want);
    CHECK(cf_future_done(f) == (want == CF_STATE_FINISHED || want == CF_STATE_CANCELLED));
    CHECK(cf_future_running(f) == (want == CF_STATE_RUNNING));
    CHECK(cf_future_cancelled(f) == (want == CF_STATE_CANCELLED));
    CHECK_STATUS(cf_future_wait(f, 0),
                 (want == CF_STATE_FINISHED || want == CF_STATE_CANCELLED) ? CF_OK : CF_TIMEOUT);
}

/* A task that blocks, then looks at its own future (published by the main thread). */
static _Atomic(cf_future *) self_future;
static atomic_int self_state_seen;
static atomic_int self_running_seen;

typedef struct self_job {
    blocked_job inner;
} self_job;

static void *task_look_at_self(void *arg) {
    self_job *s = (self_job *)arg;
    task_blocked(&s->inner);
    cf_future *me = atomic_load(&self_future);
    atomic_store(&self_state_seen, (int)cf_future_state(me));
    atomic_store(&self_running_seen, cf_future_running(me) && !cf_future_done(me) ? 1 : 0);
    return NULL;
}

static void *task_fail(void *arg) {
    blocked_job *j = (blocked_job *)arg;
    task_blocked(j);
    return cf_raise(4, "failing");
}

/* Watches a future until it is done; fails if the state ever moves backwards. */
static int rank(cf_state s) {
    if (s == CF_STATE_PENDING) return 0;
    if (s == CF_STATE_RUNNING) return 1;
    if (s == CF_STATE_FINISHED || s == CF_STATE_CANCELLED) return 2;
    return -100;
}

typedef struct watcher {
    cf_future *f;
    int max_rank;
    int saw_running;
    counter *started;
} watcher;

static void *watcher_main(void *arg) {
    watcher *w = (watcher *)arg;
    w->max_rank = 0;
    w->saw_running = 0;
    counter_add(w->started, 1);
    double end = now_s() + LONG_WAIT;
    for (;;) {
        cf_state s = cf_future_state(w->f);
        int r = rank(s);
        CHECK(r >= 0);
        CHECK(r >= w->max_rank); /* never backwards */
        w->max_rank = r;
        if (r == 1) w->saw_running = 1;
        if (r == 2) {
            CHECK(cf_future_done(w->f));
            break;
        }
        CHECK(now_s() < end);
        sched_yield();
    }
    return NULL;
}

int main(void) {
    watchdog_start(100);
    cf_executor *ex = make_pool(1, "state");

    /* ---- executor future: PENDING -> RUNNING -> FINISHED ---- */
    blocker b1, b2;
    blocker_init(&b1);
    blocker_init(&b2);
    blocked_job j1;
    blocked_job_init(&j1, &b1, NULL);
    cf_future *head = submit_ok(ex, task_blocked, &j1);
    CHECK(counter_wait(&b1.started, 1, LONG_WAIT));
    check_queries(head, CF_STATE_RUNNING);

    self_job sj;
    blocked_job_init(&sj.inner, &b2, NULL);
    atomic_init(&self_state_seen, -1);
    atomic_init(&self_running_seen, -1);
    cf_future *f = submit_ok(ex, task_look_at_self, &sj);
    atomic_store(&self_future, f);
    check_queries(f, CF_STATE_PENDING);

    counter wstarted;
    counter_init(&wstarted);
    watcher w = {.f = f, .started = &wstarted};
    pthread_t wt;
    CHECK(pthread_create(&wt, NULL, watcher_main, &w) == 0);
    CHECK(counter_wait(&wstarted, 1, LONG_WAIT));

    gate_open(&b1.g); /* head finishes; f starts and blocks on b2 */
    CHECK(counter_wait(&b2.started, 1, LONG_WAIT));
    check_queries(head, CF_STATE_FINISHED);
    check_queries(f, CF_STATE_RUNNING);

    gate_open(&b2.g);
    void *r = (void *)&r;
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    CHECK(r == NULL);
    check_queries(f, CF_STATE_FINISHED);
    CHECK_EQ_LL(atomic_load(&self_state_seen), CF_STATE_RUNNING);
    CHECK_EQ_LL(atomic_load(&self_running_seen), 1);

    CHECK(pthread_join(wt, NULL) == 0);
    CHECK_EQ_LL(w.max_rank, 2);
    counter_destroy(&wstarted);
    cf_future_release(f);
    cf_future_release(head);

    /* ---- a failing task ends FINISHED too ---- */
    blocker b3;
    blocker_init(&b3);
    blocked_job j3;
    blocked_job_init(&j3, &b3, NULL);
    f = submit_ok(ex, task_fail, &j3);
    CHECK(counter_wait(&b3.started, 1, LONG_WAIT));
    check_queries(f, CF_STATE_RUNNING);
    gate_open(&b3.g);
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_TASK_FAILED);
    check_queries(f, CF_STATE_FINISHED);
    cf_future_release(f);

    /* ---- a queued executor future: PENDING -> CANCELLED ---- */
    blocker b4;
    blocker_init(&b4);
    blocked_job j4;
    blocked_job_init(&j4, &b4, NULL);
    head = submit_ok(ex, task_blocked, &j4);
    CHECK(counter_wait(&b4.started, 1, LONG_WAIT));
    f = submit_ok(ex, task_noop, NULL);
    check_queries(f, CF_STATE_PENDING);
    CHECK(cf_future_cancel(f));
    check_queries(f, CF_STATE_CANCELLED);
    gate_open(&b4.g);
    result_ok(head);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    check_queries(f, CF_STATE_CANCELLED); /* still cancelled after everything ran */
    cf_future_release(f);
    cf_future_release(head);

    /* ---- promises ---- */
    int v = 3;
    CHECK_OK(cf_future_new(&f));
    check_queries(f, CF_STATE_PENDING);
    CHECK_OK(cf_future_set_running_or_notify_cancel(f));
    check_queries(f, CF_STATE_RUNNING);
    CHECK_OK(cf_future_set_result(f, &v));
    check_queries(f, CF_STATE_FINISHED);
    cf_future_release(f);

    CHECK_OK(cf_future_new(&f));
    CHECK_OK(cf_future_set_exception(f, 1, "x"));
    check_queries(f, CF_STATE_FINISHED);
    cf_future_release(f);

    CHECK_OK(cf_future_new(&f));
    CHECK(cf_future_cancel(f));
    check_queries(f, CF_STATE_CANCELLED);
    CHECK_STATUS(cf_future_set_running_or_notify_cancel(f), CF_CANCELLED);
    check_queries(f, CF_STATE_CANCELLED);
    cf_future_release(f);

    /* A watched promise, completed from this thread. */
    CHECK_OK(cf_future_new(&f));
    counter_init(&wstarted);
    w = (watcher){.f = f, .started = &wstarted};
    CHECK(pthread_create(&wt, NULL, watcher_main, &w) == 0);
    CHECK(counter_wait(&wstarted, 1, LONG_WAIT));
    CHECK_OK(cf_future_set_running_or_notify_cancel(f));
    CHECK_OK(cf_future_set_result(f, &v));
    CHECK(pthread_join(wt, NULL) == 0);
    CHECK_EQ_LL(w.max_rank, 2);
    counter_destroy(&wstarted);
    cf_future_release(f);

    cf_executor_free(ex);
    blocker_destroy(&b1);
    blocker_destroy(&b2);
    blocker_destroy(&b3);
    blocker_destroy(&b4);
    printf("test_future_state: ok\n");
    return 0;
}
