/* Fault injection: the OS refuses new processes (RLIMIT_NPROC), for process pools.
 *
 * Each scenario runs in a forked child that makes RLIMIT_NPROC bite (see fault_util.h);
 * the test is skipped (exit 77) if that is impossible here. The count is shared by the
 * test process and the pool's fork server (same uid), while the limit is each process's
 * own copy: to refuse the *server's* forks later, the test fills the free slots with
 * idle threads of its own, and frees them again to let forks succeed.
 *
 *   no_server     limit = tasks in use: cf_process_pool_new gives CF_OS_ERROR (EAGAIN),
 *                 writes no executor and leaves no child; with the limit lifted it works.
 *   no_worker     the server exists but every slot is taken: cf_submit gives CF_OS_ERROR
 *                 and no future (no worker at all); with one slot free (the worker can be
 *                 forked but its parent-side thread cannot start) still CF_OS_ERROR, and
 *                 the worker process forked for nothing must not linger (as a zombie of
 *                 the server it would hold an RLIMIT_NPROC slot until the pool is freed);
 *                 with slots free again submits work; free leaves no child.
 *   replacement   max_tasks_per_child = 1 (and a worker killed by SIGKILL): the first
 *                 task runs, then the replacement worker cannot be forked: the next
 *                 futures finish with a clear status (CF_BROKEN naming the failure) and
 *                 never hang; with slots free again tasks run; free leaves no child.
 */
#define _GNU_SOURCE
#include "fault_util.h"

#define UID_BASE 61200

static void *ident(void *a) { return a; }
static void *getpid_task(void *a) {
    (void)a;
    return (void *)(intptr_t)getpid();
}
static void *crash_task(void *a) {
    (void)a;
    raise(SIGKILL);
    return NULL;
}

/* ---- idle threads that take up RLIMIT_NPROC slots ------------------------------------- */

#define MAX_FILL 256
static pthread_t g_fill[MAX_FILL];
static int g_n_fill, g_n_released;
static atomic_int g_release;

static void *filler(void *arg) {
    int idx = (int)(intptr_t)arg;
    while (atomic_load(&g_release) <= idx) fault_sleep(0.001);
    return NULL;
}

/* Starts idle threads until the OS refuses one; returns how many started. */
static int fill_slots(void) {
    int started = 0;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 64 * 1024);
    while (g_n_fill < MAX_FILL) {
        int rc = pthread_create(&g_fill[g_n_fill], &a, filler, (void *)(intptr_t)g_n_fill);
        if (rc == EAGAIN) break;
        FCHECK_MSG(rc == 0, "pthread_create: %s", strerror(rc));
        g_n_fill++;
        started++;
    }
    pthread_attr_destroy(&a);
    FCHECK_MSG(g_n_fill < MAX_FILL, "RLIMIT_NPROC never refused a thread");
    return started;
}

/* Ends the k oldest idle threads and waits until the kernel has released them. */
static void free_slots(int k) {
    int threads = fault_thread_count();
    int target = g_n_released + k;
    if (target > g_n_fill) target = g_n_fill;
    atomic_store(&g_release, target);
    int freed = 0;
    for (; g_n_released < target; g_n_released++, freed++) pthread_join(g_fill[g_n_released], NULL);
    FCHECK(fault_await_threads(threads - freed, 10.0));
}

static void free_all_slots(void) { free_slots(g_n_fill - g_n_released); }

/* ---- scenarios ------------------------------------------------------------------------ */

static int scenario_no_server(void *arg) {
    (void)arg;
    fault_watchdog(60);
    if (!fault_isolate_nproc(UID_BASE + 1)) return FAULT_SKIP;
    int in_use = fault_nproc_in_use();
    if (in_use < 0) return FAULT_SKIP;
    fprintf(stderr, "   tasks counted against RLIMIT_NPROC: %d\n", in_use);

    fault_phase("no_server: cf_process_pool_new with fork refused");
    fault_set_nproc((rlim_t)in_use);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 2;
    cf_executor *ex = (cf_executor *)&o;
    errno = 0;
    FCHECK_STATUS(cf_process_pool_new(&o, &ex), CF_OS_ERROR);
    FCHECK_MSG(errno == EAGAIN, "errno %d (%s), expected EAGAIN", errno, strerror(errno));
    FCHECK_MSG(ex == (cf_executor *)&o, "a failed cf_process_pool_new wrote its out-parameter");
    FAULT_CHECK_NO_CHILDREN();
    FCHECK_EQ(fault_thread_count(), 1);

    fault_phase("no_server: works once fork is allowed again");
    fault_unlimit_nproc();
    FCHECK_STATUS(cf_process_pool_new(&o, &ex), CF_OK);
    cf_future *f = NULL;
    FCHECK_STATUS(cf_submit(ex, ident, (void *)(intptr_t)42, &f), CF_OK);
    void *r = NULL;
    FCHECK_STATUS(cf_future_result(f, 20.0, &r), CF_OK);
    FCHECK_EQ((intptr_t)r, 42);
    cf_future_release(f);
    cf_executor_free(ex);
    FAULT_CHECK_NO_CHILDREN();
    return 0;
}

static int scenario_no_worker(void *arg) {
    (void)arg;
    fault_watchdog(60);
    if (!fault_isolate_nproc(UID_BASE + 2)) return FAULT_SKIP;
    int in_use = fault_nproc_in_use();
    if (in_use < 0) return FAULT_SKIP;
    fault_set_nproc((rlim_t)in_use + 8);

    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 2;
    cf_executor *ex = NULL;
    FCHECK_STATUS(cf_process_pool_new(&o, &ex), CF_OK);

    fault_phase("no_worker: every slot taken, the server cannot fork a worker");
    int filled = fill_slots();
    fprintf(stderr, "   %d idle threads take the free slots\n", filled);
    for (int i = 0; i < 5; i++) {
        cf_future *f = (cf_future *)&o;
        errno = 0;
        cf_status s = cf_submit(ex, ident, (void *)(intptr_t)i, &f);
        FCHECK_STATUS(s, CF_OS_ERROR);
        FCHECK_MSG(errno == EAGAIN, "errno %d (%s), expected EAGAIN", errno, strerror(errno));
        FCHECK_MSG(f == (cf_future *)&o, "a refused submit wrote its out-parameter");
        FCHECK_EQ(cf_executor_worker_count(ex), 0);
    }

    fault_phase("no_worker: one slot: the worker forks, its parent-side thread cannot start");
    free_slots(1);
    {
        cf_future *f = (cf_future *)&o;
        cf_status s = cf_submit(ex, ident, (void *)(intptr_t)7, &f);
        if (s == CF_OK) {
            /* Also acceptable if the library found a way; then the task must complete. */
            void *r = NULL;
            FCHECK_STATUS(cf_future_result(f, 20.0, &r), CF_OK);
            FCHECK_EQ((intptr_t)r, 7);
            cf_future_release(f);
        } else {
            FCHECK_STATUS(s, CF_OS_ERROR);
            FCHECK(f == (cf_future *)&o);
            FCHECK_EQ(cf_executor_worker_count(ex), 0);
            /* The worker process that was forked for the thread that could not start must
             * not linger (running or as a zombie of the server, where it would keep
             * taking an RLIMIT_NPROC slot until the pool is freed). */
            pid_t server[4];
            FCHECK_EQ(fault_children_of(getpid(), server, 4), 1);
            pid_t orphans[16];
            double end = fault_now() + 3.0 * fault_scale();
            int n;
            while ((n = fault_children_of(server[0], orphans, 16)) != 0 && fault_now() < end)
                fault_sleep(0.005);
            for (int i = 0; i < n && i < 16; i++) {
                char st = '?';
                long pp = 0;
                fault_proc_stat(orphans[i], &st, &pp);
                fprintf(stderr, "   worker process %ld of the fork server: state %c\n", (long)orphans[i], st);
            }
            FSOFT(n == 0, "%d worker process(es) left behind by the submit that failed to "
                               "start a worker thread (3s later)", n);
        }
        fprintf(stderr, "   one free slot: cf_submit gave %s\n", cf_status_name(s));
    }

    fault_phase("no_worker: slots free again, submits work");
    free_all_slots();
    for (int i = 0; i < 10; i++) {
        cf_future *f = NULL;
        cf_status s = cf_submit(ex, ident, (void *)(intptr_t)(i + 100), &f);
        FCHECK_MSG(s == CF_OK, "submit %d after the slots were freed: %s (errno %s)", i,
                   cf_status_name(s), strerror(errno));
        void *r = NULL;
        FCHECK_STATUS(cf_future_result(f, 20.0, &r), CF_OK);
        FCHECK_EQ((intptr_t)r, i + 100);
        cf_future_release(f);
    }
    fault_phase("no_worker: free");
    cf_executor_free(ex);
    FAULT_CHECK_NO_CHILDREN();
    return fault_soft_failures ? 1 : 0;
}

/* A future that must finish within the limit with CF_OK or a failure that says why. */
static cf_status finished_with_reason(cf_future *f, const char *what) {
    int code = 0;
    const char *msg = NULL;
    cf_status s = cf_future_exception(f, 20.0 * fault_scale(), &code, &msg);
    FCHECK_MSG(s != CF_TIMEOUT, "%s: the future never finished (a hang)", what);
    if (s != CF_OK) {
        fprintf(stderr, "   %s: %s, code %d, \"%s\"\n", what, cf_status_name(s), code,
                msg ? msg : "(no message)");
        FCHECK_MSG(s == CF_BROKEN || s == CF_OS_ERROR, "%s: unexpected %s", what, cf_status_name(s));
        FCHECK_MSG(msg != NULL && msg[0] != '\0', "%s: %s without a message", what, cf_status_name(s));
    }
    return s;
}

static int scenario_replacement(void *arg) {
    (void)arg;
    fault_watchdog(90);
    if (!fault_isolate_nproc(UID_BASE + 3)) return FAULT_SKIP;
    int in_use = fault_nproc_in_use();
    if (in_use < 0) return FAULT_SKIP;
    fault_set_nproc((rlim_t)in_use + 8);

    for (int variant = 0; variant < 2; variant++) {
        /* variant 0: the worker retires after each task (max_tasks_per_child = 1);
         * variant 1: the worker is killed by SIGKILL while running a task. */
        cf_executor_options o;
        memset(&o, 0, sizeof o);
        o.max_workers = 1;
        o.max_tasks_per_child = variant == 0 ? 1 : 0;
        cf_executor *ex = NULL;
        FCHECK_STATUS(cf_process_pool_new(&o, &ex), CF_OK);

        fault_phase(variant == 0 ? "replacement: first task (worker retires after it)"
                                 : "replacement: a task kills its worker");
        cf_future *f = NULL;
        FCHECK_STATUS(cf_submit(ex, variant == 0 ? getpid_task : crash_task, NULL, &f), CF_OK);
        void *r = NULL;
        cf_status s = cf_future_result(f, 20.0, &r);
        FCHECK_STATUS(s, variant == 0 ? CF_OK : CF_BROKEN);
        cf_future_release(f);

        fault_phase("replacement: the replacement worker cannot be forked");
        int filled = fill_slots();
        fprintf(stderr, "   %d idle threads take the free slots\n", filled);
        cf_future *fs[6];
        for (int i = 0; i < 6; i++) {
            s = cf_submit(ex, ident, (void *)(intptr_t)(i + 1), &fs[i]);
            FCHECK_MSG(s == CF_OK, "submit with a live proxy: %s", cf_status_name(s));
        }
        int failed = 0;
        for (int i = 0; i < 6; i++) {
            s = finished_with_reason(fs[i], "task while replacement is refused");
            if (s == CF_OK) {
                FCHECK(cf_future_result(fs[i], 0, &r) == CF_OK);
                FCHECK_EQ((intptr_t)r, i + 1);
            } else {
                failed++;
            }
            cf_future_release(fs[i]);
        }
        FCHECK_MSG(failed >= 1, "no task failed although no worker process could be forked");

        fault_phase("replacement: slots free again, tasks run");
        free_all_slots();
        for (int i = 0; i < 5; i++) {
            FCHECK_STATUS(cf_submit(ex, ident, (void *)(intptr_t)(i + 50), &f), CF_OK);
            s = cf_future_result(f, 20.0, &r);
            FCHECK_MSG(s == CF_OK, "task after the slots were freed: %s", cf_status_name(s));
            FCHECK_EQ((intptr_t)r, i + 50);
            cf_future_release(f);
        }
        fault_phase("replacement: free");
        cf_executor_free(ex);
        FAULT_CHECK_NO_CHILDREN();
    }
    return 0;
}

int main(void) {
    setvbuf(stderr, NULL, _IONBF, 0);
    fault_no_core_dumps();
    fault_result r[3];
    r[0] = fault_run("nproc_fork.no_server", scenario_no_server, NULL, 90);
    r[1] = fault_run("nproc_fork.no_worker", scenario_no_worker, NULL, 90);
    r[2] = fault_run("nproc_fork.replacement", scenario_replacement, NULL, 120);
    bool all_skipped = true, ok = true;
    for (int i = 0; i < 3; i++) {
        all_skipped &= fault_skipped(r[i]);
        ok &= fault_passed(r[i]) || fault_skipped(r[i]);
    }
    if (all_skipped) {
        printf("nproc_fork: SKIPPED: fork cannot be refused here\n");
        return FAULT_SKIP;
    }
    printf("nproc_fork: %s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
