/* test_process_orphan.c: worker processes exit on their own when the parent process dies.
 *
 * The contract (API.md, Process pools): "Worker processes exit on their own when the
 * parent process dies; none is left behind."
 *
 * The test forks a child process; the child makes a process pool of 3 workers and starts
 * tasks that record their pids in shared memory. Then the child dies without freeing the
 * pool, in three ways: killed by SIGKILL while the tasks sleep (the child's main thread is
 * blocked in cf_future_result); killed by SIGKILL while the workers are idle; and by
 * _exit(0) while the tasks sleep. Each time every recorded worker pid, and every other
 * process the child made (its fork server), must be gone within a generous bound.
 *
 * This process makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so that the
 * orphaned descendants are reparented to it instead of to init: it can then reap them
 * (init in a container may not) and tell "all gone" by waitpid(-1) failing with ECHILD.
 * Anything left at the end is killed before the test fails.
 *
 * Ports from CPython Lib/test/test_concurrent_futures:
 *   test_process_pool.py / test_shutdown.py: ProcessPoolShutdownTest.test_processes_terminate
 *   and the parent-death handling of multiprocessing's workers (CPython has no direct test:
 *   its workers notice the dead parent through the broken call queue; here it is a
 *   guarantee). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

#include <sys/prctl.h>

enum { NW = 3 };

typedef struct shared {
    atomic_int claimed; /* slots of pids[] taken */
    atomic_int started; /* pids recorded */
    atomic_int pids[NW * 4];
    atomic_int child_ready;
    atomic_int child_error; /* the line in the child that failed, 0 if none */
} shared;
static shared *S;

/* ---- in the workers ---------------------------------------------------------------- */

static void record_pid(void) {
    int k = atomic_fetch_add(&S->claimed, 1);
    if (k >= 0 && k < NW * 4) atomic_store(&S->pids[k], (int)getpid());
    px_add(&S->started, 1);
}

/* Records its pid and sleeps long (the process should die well before it wakes). */
static void *t_record_and_sleep(void *arg) {
    (void)arg;
    record_pid();
    sleep_s(60.0);
    return PX_I2P(getpid());
}

/* Records its pid and waits until all NW tasks have started, so that each runs in its own
 * worker; then returns. */
static void *t_record_and_meet(void *arg) {
    (void)arg;
    record_pid();
    if (!px_wait_ge(&S->started, NW, PX_TASK_LIMIT)) return cf_raise(ETIMEDOUT, "never met");
    return PX_I2P(getpid());
}

/* ---- in the child ------------------------------------------------------------------ */

#define CHILD_CHECK(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            atomic_store(&S->child_error, __LINE__);                                   \
            px_add(&S->started, 1000);                                                 \
            px_add(&S->child_ready, 1000);                                             \
            _exit(2);                                                                  \
        }                                                                              \
    } while (0)

enum scenario { KILL_BUSY, KILL_IDLE, EXIT_BUSY };

static void child_main(enum scenario sc) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = NW;
    cf_executor *ex = NULL;
    CHILD_CHECK(cf_process_pool_new(&o, &ex) == CF_OK);
    cf_future *fs[NW];
    for (int i = 0; i < NW; i++)
        CHILD_CHECK(cf_submit(ex, sc == KILL_IDLE ? t_record_and_meet : t_record_and_sleep, NULL,
                              &fs[i]) == CF_OK);
    CHILD_CHECK(px_wait_ge(&S->started, NW, PX_LONG));
    if (sc == KILL_IDLE) {
        for (int i = 0; i < NW; i++) {
            void *r = NULL;
            CHILD_CHECK(cf_future_result(fs[i], PX_LONG, &r) == CF_OK);
        }
        CHILD_CHECK(cf_executor_worker_count(ex) == NW);
    }
    px_add(&S->child_ready, 1);
    if (sc == EXIT_BUSY) _exit(0); /* without freeing anything */
    /* Wait to be killed, blocked in the library. */
    void *r = NULL;
    cf_future_result(fs[0], CF_FOREVER, &r);
    for (;;) pause();
}

/* ---- in the test ------------------------------------------------------------------- */

/* Kills and reaps every child of this process (for the cleanup after a failure). */
static void kill_all_children(void) {
    for (int round = 0; round < 1000; round++) {
        DIR *d = opendir("/proc");
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                char *end;
                long pid = strtol(e->d_name, &end, 10);
                char st;
                long pp;
                if (*end == '\0' && pid > 0 && px_proc_stat((pid_t)pid, &st, &pp) &&
                    pp == (long)getpid())
                    kill((pid_t)pid, SIGKILL);
            }
            closedir(d);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        if (waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD) return;
        sleep_s(0.01);
    }
}

/* Reaps whatever is reparented to us until no descendant is left and every pid in
 * pids[0..n) is gone; bounded. */
static bool await_all_gone(const long *pids, size_t n, double limit) {
    double end = now_s() + limit;
    for (;;) {
        pid_t r;
        while ((r = waitpid(-1, NULL, WNOHANG)) > 0) {
        }
        bool no_children = r == -1 && errno == ECHILD;
        size_t left = 0;
        for (size_t i = 0; i < n; i++)
            if (!px_pid_gone((pid_t)pids[i])) left++;
        if (no_children && left == 0) return true;
        if (now_s() > end) break;
        sleep_s(0.002);
    }
    fprintf(stderr, "   still there after %.0fs:\n", limit);
    px_print_children();
    for (size_t i = 0; i < n; i++) {
        char st;
        long pp;
        if (!px_pid_gone((pid_t)pids[i]) && px_proc_stat((pid_t)pids[i], &st, &pp))
            fprintf(stderr, "    worker %ld: state %c, parent %ld\n", pids[i], st, pp);
    }
    return false;
}

static void run_scenario(enum scenario sc, const char *name) {
    px_phase(name);
    memset(S, 0, sizeof *S);
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        child_main(sc);
        _exit(0);
    }
    CHECK(px_wait_ge(&S->child_ready, 1, PX_LONG));
    if (atomic_load(&S->child_error) != 0) {
        fprintf(stderr, "   the child failed at line %d\n", atomic_load(&S->child_error));
        kill_all_children();
        CHECK(atomic_load(&S->child_error) == 0);
    }
    long pids[NW];
    for (int i = 0; i < NW; i++) {
        pids[i] = atomic_load(&S->pids[i]);
        CHECK(pids[i] > 0 && pids[i] != (long)child && pids[i] != (long)getpid());
    }
    if (px_distinct(pids, NW) != NW) kill_all_children();
    PX_CHECK_EQ(px_distinct(pids, NW), NW);

    int status = 0;
    if (sc == EXIT_BUSY) {
        CHECK(waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status));
    } else {
        for (int i = 0; i < NW; i++) CHECK(!px_pid_gone((pid_t)pids[i])); /* alive until now */
        CHECK(kill(child, SIGKILL) == 0);
        CHECK(waitpid(child, &status, 0) == child);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    }
    double t0 = now_s();
    if (!await_all_gone(pids, NW, PX_GONE)) {
        kill_all_children();
        fprintf(stderr, "%s:%d: CHECK failed: the workers of a dead parent exited within %.0fs\n",
                __FILE__, __LINE__, PX_GONE);
        exit(1);
    }
    fprintf(stderr, "   all gone %.3fs after the parent died\n", now_s() - t0);
}

int main(void) {
    px_watchdog(100);
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
    atexit(kill_all_children); /* a failed CHECK leaves nothing behind */
    S = px_shm_new(sizeof *S);
    run_scenario(KILL_BUSY, "the parent is killed (SIGKILL) while its workers run tasks");
    run_scenario(KILL_IDLE, "the parent is killed (SIGKILL) while its workers are idle");
    run_scenario(EXIT_BUSY, "the parent calls _exit(0) while its workers run tasks");
    px_shm_free(S, sizeof *S);
    fprintf(stderr, "test_process_orphan: all passed\n");
    return 0;
}
