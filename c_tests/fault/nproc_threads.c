/* Fault injection: the OS refuses new threads (RLIMIT_NPROC), for thread pools.
 *
 * API.md: "If a worker cannot be started (the OS refuses a thread or process), nothing
 * is lost or completed twice: with at least one live worker the task stays queued; with
 * none, cf_submit returns CF_OS_ERROR and no future."
 *
 * Each scenario runs in a forked child that first makes RLIMIT_NPROC bite (as root: an
 * unused uid; otherwise a new user namespace; see fault_util.h) and measures how many
 * tasks already count. The test is skipped (exit 77) if the limit cannot be made to
 * refuse a thread here.
 *
 *   no_worker   limit = tasks in use: cf_submit, cf_submit_bytes, cf_map_new give
 *               CF_OS_ERROR (errno EAGAIN), write no future, start nothing; a submit
 *               from a promise's callback gets the same; the pool is not broken: once
 *               the limit is lifted, submits work.
 *   one_worker  limit = in use + 1: the first submit starts one worker (blocked on a
 *               gate); 40 more submits, each of which fails to start a worker, return
 *               CF_OK and stay queued; worker_count stays 1; once the gate opens every
 *               task completes exactly once with its value, including ones submitted by
 *               a task and by a done callback on that single worker.
 */
#define _GNU_SOURCE
#include "fault_util.h"

#define UID_BASE 61100

static void *ident(void *a) { return a; }

static void *bytes_rev(const void *in, size_t n, size_t *out_n) {
    *out_n = 0;
    (void)in;
    (void)n;
    return NULL;
}

/* ---- no worker can start -------------------------------------------------------------- */

typedef struct cb_submit {
    cf_executor *ex;
    cf_status got;
    int calls;
} cb_submit;

static void submit_from_callback(cf_future *f, void *ud) {
    (void)f;
    cb_submit *c = ud;
    cf_future *g = (cf_future *)c;
    c->got = cf_submit(c->ex, ident, NULL, &g);
    if (c->got == CF_OK) cf_future_release(g);
    else if (g != (cf_future *)c) c->got = 999; /* wrote its out-parameter */
    c->calls++;
}

static int scenario_no_worker(void *arg) {
    (void)arg;
    fault_watchdog(60);
    if (!fault_isolate_nproc(UID_BASE + 1)) return FAULT_SKIP;
    int in_use = fault_nproc_in_use();
    if (in_use < 0) return FAULT_SKIP;
    fprintf(stderr, "   tasks counted against RLIMIT_NPROC: %d\n", in_use);

    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 4;
    cf_executor *ex = NULL;
    FCHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_OK);

    fault_phase("no_worker: submits with threads refused");
    fault_set_nproc((rlim_t)in_use);
    for (int i = 0; i < 50; i++) {
        cf_future *f = (cf_future *)&o;
        errno = 0;
        cf_status s = cf_submit(ex, ident, (void *)(intptr_t)i, &f);
        FCHECK_STATUS(s, CF_OS_ERROR);
        FCHECK_MSG(errno == EAGAIN, "errno after CF_OS_ERROR is %d (%s), expected EAGAIN", errno,
                   strerror(errno));
        FCHECK_MSG(f == (cf_future *)&o, "a refused submit wrote its out-parameter");
        FCHECK_EQ(cf_executor_worker_count(ex), 0);
    }
    {
        cf_future *f = (cf_future *)&o;
        char buf[16] = "abc";
        FCHECK_STATUS(cf_submit_bytes(ex, bytes_rev, buf, sizeof buf, &f), CF_OS_ERROR);
        FCHECK(f == (cf_future *)&o);
        void *args[10] = {0};
        cf_map *m = (cf_map *)&o;
        FCHECK_STATUS(cf_map_new(ex, ident, args, 10, 0, CF_FOREVER, &m), CF_OS_ERROR);
        FCHECK(m == (cf_map *)&o);
        FCHECK_STATUS(cf_map_new(ex, ident, args, 10, 4, CF_FOREVER, &m), CF_OS_ERROR);
        FCHECK(m == (cf_map *)&o);
        FCHECK_EQ(cf_executor_worker_count(ex), 0);
    }

    fault_phase("no_worker: submit from a done callback with threads refused");
    {
        cf_future *p = NULL;
        FCHECK_STATUS(cf_future_new(&p), CF_OK);
        cb_submit c = {ex, CF_OK, 0};
        FCHECK_STATUS(cf_future_add_done_callback(p, submit_from_callback, &c), CF_OK);
        FCHECK_STATUS(cf_future_set_result(p, NULL), CF_OK);
        FCHECK_EQ(c.calls, 1);
        FCHECK_STATUS(c.got, CF_OS_ERROR);
        cf_future_release(p);
    }

    fault_phase("no_worker: the pool works once threads are allowed again");
    fault_unlimit_nproc();
    for (int i = 0; i < 20; i++) {
        cf_future *f = NULL;
        FCHECK_STATUS(cf_submit(ex, ident, (void *)(intptr_t)(i + 100), &f), CF_OK);
        void *r = NULL;
        FCHECK_STATUS(cf_future_result(f, 20.0, &r), CF_OK);
        FCHECK_EQ((intptr_t)r, i + 100);
        cf_future_release(f);
    }
    FCHECK(cf_executor_worker_count(ex) >= 1);
    fault_phase("no_worker: free");
    cf_executor_free(ex);
    return 0;
}

/* ---- exactly one worker can start ----------------------------------------------------- */

static atomic_int g_started, g_open, g_ran[64];

static void *gated(void *arg) {
    atomic_fetch_add(&g_started, 1);
    while (!atomic_load(&g_open)) fault_sleep(0.0005);
    atomic_fetch_add(&g_ran[(intptr_t)arg], 1);
    return arg;
}

static void *counted(void *arg) {
    atomic_fetch_add(&g_ran[(intptr_t)arg], 1);
    return arg;
}

static cf_executor *g_ex;
static cf_future *g_from_task, *g_from_cb;
static atomic_int g_from_task_status = -1, g_from_cb_status = -1;

/* Runs on the single worker: submits more work to its own pool. */
static void *submitter(void *arg) {
    atomic_fetch_add(&g_ran[(intptr_t)arg], 1);
    cf_future *f = NULL;
    cf_status s = cf_submit(g_ex, counted, (void *)(intptr_t)60, &f);
    if (s == CF_OK) g_from_task = f; /* before the status, as in cb_submitter */
    atomic_store(&g_from_task_status, (int)s);
    return arg;
}

static void cb_submitter(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    cf_future *g = NULL;
    cf_status s = cf_submit(g_ex, counted, (void *)(intptr_t)61, &g);
    /* The future first, then the status the main thread polls for (its atomic store
     * publishes the plain write before it). */
    if (s == CF_OK) g_from_cb = g;
    atomic_store(&g_from_cb_status, (int)s);
}

static int scenario_one_worker(void *arg) {
    (void)arg;
    fault_watchdog(60);
    if (!fault_isolate_nproc(UID_BASE + 2)) return FAULT_SKIP;
    int in_use = fault_nproc_in_use();
    if (in_use < 0) return FAULT_SKIP;

    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 4;
    FCHECK_STATUS(cf_thread_pool_new(&o, &g_ex), CF_OK);
    fault_set_nproc((rlim_t)in_use + 1);

    fault_phase("one_worker: the first submit starts the only worker");
    enum { N = 40 };
    cf_future *fs[N + 2];
    FCHECK_STATUS(cf_submit(g_ex, gated, (void *)(intptr_t)0, &fs[0]), CF_OK);
    double end = fault_now() + 20.0 * fault_scale();
    while (atomic_load(&g_started) == 0) {
        FCHECK_MSG(fault_now() < end, "the gated task never started");
        fault_sleep(0.001);
    }
    FCHECK_EQ(cf_executor_worker_count(g_ex), 1);

    fault_phase("one_worker: submits whose worker cannot start stay queued");
    for (int i = 1; i < N; i++) {
        errno = 0;
        cf_status s = cf_submit(g_ex, i == 5 ? submitter : counted, (void *)(intptr_t)i, &fs[i]);
        FCHECK_MSG(s == CF_OK, "submit %d with one live worker gave %s (errno %s)", i,
                   cf_status_name(s), strerror(errno));
        FCHECK(cf_future_state(fs[i]) == CF_STATE_PENDING);
    }
    FCHECK_STATUS(cf_future_add_done_callback(fs[7], cb_submitter, NULL), CF_OK);
    FCHECK_EQ(cf_executor_worker_count(g_ex), 1);
    for (int i = 1; i < N; i++) FCHECK_EQ(atomic_load(&g_ran[i]), 0);

    fault_phase("one_worker: the gate opens, the single worker runs the queue");
    atomic_store(&g_open, 1);
    for (int i = 0; i < N; i++) {
        void *r = NULL;
        cf_status s = cf_future_result(fs[i], 30.0, &r);
        FCHECK_MSG(s == CF_OK, "task %d: %s", i, cf_status_name(s));
        FCHECK_EQ((intptr_t)r, i);
    }
    FCHECK_STATUS((cf_status)atomic_load(&g_from_task_status), CF_OK);
    end = fault_now() + 20.0 * fault_scale();
    while (atomic_load(&g_from_cb_status) < 0) {
        FCHECK_MSG(fault_now() < end, "the callback on task 7 never ran");
        fault_sleep(0.001);
    }
    FCHECK_STATUS((cf_status)atomic_load(&g_from_cb_status), CF_OK);
    void *r = NULL;
    FCHECK_STATUS(cf_future_result(g_from_task, 30.0, &r), CF_OK);
    FCHECK_EQ((intptr_t)r, 60);
    FCHECK_STATUS(cf_future_result(g_from_cb, 30.0, &r), CF_OK);
    FCHECK_EQ((intptr_t)r, 61);
    for (int i = 0; i < N; i++) FCHECK_MSG(atomic_load(&g_ran[i]) == 1, "task %d ran %d times", i, atomic_load(&g_ran[i]));
    FCHECK_EQ(atomic_load(&g_ran[60]), 1);
    FCHECK_EQ(atomic_load(&g_ran[61]), 1);
    FCHECK(cf_executor_worker_count(g_ex) <= 1);

    fault_phase("one_worker: shutdown with wait, free");
    FCHECK_STATUS(cf_executor_shutdown(g_ex, true, false), CF_OK);
    FCHECK_EQ(cf_executor_worker_count(g_ex), 0);
    cf_executor_free(g_ex);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    cf_future_release(g_from_task);
    cf_future_release(g_from_cb);
    return 0;
}

int main(void) {
    setvbuf(stderr, NULL, _IONBF, 0);
    fault_result a = fault_run("nproc_threads.no_worker", scenario_no_worker, NULL, 90);
    fault_result b = fault_run("nproc_threads.one_worker", scenario_one_worker, NULL, 90);
    if (fault_skipped(a) && fault_skipped(b)) {
        printf("nproc_threads: SKIPPED: thread creation cannot be refused here\n");
        return FAULT_SKIP;
    }
    bool ok = (fault_passed(a) || fault_skipped(a)) && (fault_passed(b) || fault_skipped(b));
    printf("nproc_threads: %s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
