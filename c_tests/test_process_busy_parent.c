/* test_process_busy_parent.c: a process pool in a busy multithreaded parent.
 *
 * Forking a multithreaded program is where process pools deadlock: a lock held by another
 * thread at the moment of fork (malloc's, stdio's, the library's own) stays held forever
 * in the child. Here a cfutures thread pool of 4 threads hammers malloc/free, stdio
 * (fprintf to a /dev/null FILE*, holding stdout's lock, now and then a line on stdout) and
 * the library's own locks (promises), while the main thread runs tasks on a process
 * pool with max_tasks_per_child = 1 (so a worker is forked for every task); each task
 * also calls malloc and printf. Every task must finish with the right result within the
 * time bound.
 *   Phase A: the process pool is made before the hammering starts; 200 tasks at once.
 *   Phase B: the process pool is made while the hammering runs (so the fork server is
 *   forked from the busy process); 20 tasks one by one, then 80 at once. (Fewer than in
 *   phase A: under AddressSanitizer the fork server then inherits the ~200 MB quarantine
 *   the hammer filled, and every worker fork copies it: ~0.1 s per task.)
 *
 * Ports from CPython Lib/test/test_concurrent_futures:
 *   test_deadlock.py: ExecutorDeadlockTest.test_shutdown_deadlock and
 *     test_gh105829_should_not_deadlock_if_wakeup_pipe_full (no deadlock under load);
 *   test_process_pool.py: ProcessPoolExecutorTest.test_max_tasks_early_shutdown;
 *   CPython's fork-with-threads DeprecationWarning (gh-84559) is the hazard tested. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

enum { NTASKS = 200, NB = 100, NSEQ = 20, NHAMMER = 4 };

typedef struct shared {
    atomic_int pids[NTASKS];
} shared;
static shared *S;

static FILE *g_devnull;

/* ---- the tasks (run in freshly forked workers) ------------------------------------- */

static uintptr_t work_sum(intptr_t i, unsigned char *buf, size_t sz) {
    uintptr_t s = 0;
    for (size_t k = 0; k < sz; k++) {
        buf[k] = (unsigned char)((k * 7u + (size_t)i) & 0xffu);
        s = s * 33u + buf[k];
    }
    return s;
}
static size_t work_size(intptr_t i) { return 1000u + (size_t)i * 13u; }

static void *t_work(void *arg) {
    intptr_t i = PX_P2I(arg);
    size_t sz = work_size(i);
    unsigned char *buf = malloc(sz);
    if (!buf) return cf_raise(ENOMEM, "malloc in a worker");
    uintptr_t s = work_sum(i, buf, sz);
    char *line = malloc(80);
    if (!line) {
        free(buf);
        return cf_raise(ENOMEM, "malloc in a worker");
    }
    snprintf(line, 80, "task %ld in worker %ld\n", (long)i, (long)getpid());
    printf("%s", line);
    fflush(stdout);
    fprintf(g_devnull, "%s", line);
    fflush(g_devnull);
    free(line);
    free(buf);
    if (i >= 0 && i < NTASKS) atomic_store(&S->pids[i], (int)getpid());
    return (void *)s;
}

static uintptr_t expected(intptr_t i) {
    size_t sz = work_size(i);
    unsigned char *buf = malloc(sz);
    CHECK(buf != NULL);
    uintptr_t s = work_sum(i, buf, sz);
    free(buf);
    return s;
}

/* ---- the hammer (threads of a cfutures thread pool, in the parent) ----------------- */

static atomic_int stop;
static atomic_int hammers_running;
static atomic_long hammer_iters;

static void *hammer(void *arg) {
    unsigned seed = (unsigned)PX_P2I(arg);
    void *keep[16] = {NULL};
    long it = 0;
    px_add(&hammers_running, 1);
    while (!atomic_load(&stop)) {
        seed = seed * 1103515245u + 12345u;
        size_t sz = 1 + (seed >> 8) % 4096;
        void *p = malloc(sz);
        if (p) memset(p, (int)(it & 0xff), sz);
        int slot = (int)(it % 16);
        free(keep[slot]);
        keep[slot] = p;
        fprintf(g_devnull, "hammer %ld: %zu bytes at %p\n", it, sz, p);
        if (it % 8 == 0) {
            /* Hold stdout's lock for a moment, as a writer would. */
            char tmp[64];
            flockfile(stdout);
            snprintf(tmp, sizeof tmp, "%ld", it);
            funlockfile(stdout);
        }
        if (it % 32 == 0) {
            /* The library's own locks. */
            cf_future *f = NULL;
            if (cf_future_new(&f) == CF_OK) {
                cf_future_set_result(f, p);
                cf_future_release(f);
            }
        }
        if (it % 200000 == 0) {
            printf("hammer %u: %ld iterations\n", (unsigned)PX_P2I(arg), it);
            fflush(stdout);
        }
        it++;
    }
    for (int i = 0; i < 16; i++) free(keep[i]);
    atomic_fetch_add(&hammer_iters, it);
    return NULL;
}

typedef struct hammering {
    cf_executor *tp;
    cf_future *fs[NHAMMER];
} hammering;

static void hammer_start(hammering *h) {
    atomic_store(&stop, 0);
    atomic_store(&hammers_running, 0);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = NHAMMER;
    o.name_prefix = "hammer";
    h->tp = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &h->tp));
    for (int i = 0; i < NHAMMER; i++) CHECK_OK(cf_submit(h->tp, hammer, PX_I2P(i + 1), &h->fs[i]));
    CHECK(px_wait_ge(&hammers_running, NHAMMER, PX_LONG));
}

static void hammer_stop(hammering *h) {
    long before = atomic_load(&hammer_iters);
    atomic_store(&stop, 1);
    for (int i = 0; i < NHAMMER; i++) {
        void *r;
        CHECK_OK(cf_future_result(h->fs[i], PX_LONG, &r));
        cf_future_release(h->fs[i]);
    }
    cf_executor_free(h->tp);
    CHECK(atomic_load(&hammer_iters) > before); /* they really were hammering */
}

/* ---- the test ---------------------------------------------------------------------- */

static void check_results_and_pids(cf_future **fs, int n) {
    long pids[NTASKS];
    for (int i = 0; i < n; i++) {
        CHECK((uintptr_t)px_result(fs[i]) == expected(i));
        cf_future_release(fs[i]);
        pids[i] = atomic_load(&S->pids[i]);
        CHECK(pids[i] > 0 && pids[i] != (long)getpid());
    }
    if (px_distinct(pids, (size_t)n) != (size_t)n)
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (pids[i] == pids[j])
                    fprintf(stderr, "   tasks %d and %d both ran in worker %ld\n", i, j, pids[i]);
    PX_CHECK_EQ(px_distinct(pids, (size_t)n), n); /* max_tasks_per_child = 1 */
}

static void phase_a(void) {
    px_phase("A: pool made first, then 4 threads hammer while 200 tasks run at once");
    memset(S, 0, sizeof *S);
    fflush(stdout);
    cf_executor *ex = px_pool(2, 1);
    hammering h;
    hammer_start(&h);
    double t0 = now_s();
    cf_future *fs[NTASKS];
    for (int i = 0; i < NTASKS; i++) fs[i] = px_submit(ex, t_work, PX_I2P(i));
    check_results_and_pids(fs, NTASKS);
    double took = now_s() - t0;
    hammer_stop(&h);
    cf_executor_free(ex);
    fprintf(stderr, "   200 tasks in %.2fs\n", took);
    CHECK(took < 3 * PX_LONG);
}

static void phase_b(void) {
    px_phase("B: pool made while 4 threads hammer; 20 tasks one by one, 80 at once");
    memset(S, 0, sizeof *S);
    hammering h;
    hammer_start(&h);
    double t0 = now_s();
    cf_executor *ex = px_pool(2, 1);
    cf_future *fs[NB];
    for (int i = 0; i < NB; i++) {
        fs[i] = px_submit(ex, t_work, PX_I2P(i));
        if (i < NSEQ) CHECK_OK(cf_future_wait(fs[i], PX_LONG));
    }
    check_results_and_pids(fs, NB);
    double took = now_s() - t0;
    hammer_stop(&h);
    cf_executor_free(ex);
    fprintf(stderr, "   100 tasks in %.2fs\n", took);
    CHECK(took < 3 * PX_LONG);
}

int main(void) {
    px_watchdog(110);
    S = px_shm_new(sizeof *S);
    g_devnull = fopen("/dev/null", "w");
    CHECK(g_devnull != NULL);
    phase_a();
    PX_CHECK_NO_CHILDREN();
    phase_b();
    PX_CHECK_NO_CHILDREN();
    fclose(g_devnull);
    px_shm_free(S, sizeof *S);
    fprintf(stderr, "test_process_busy_parent: all passed\n");
    return 0;
}
