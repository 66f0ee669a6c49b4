/* test_fork_child.c: an executor used in a child that the program forked after making it.
 *
 * The header (cf_executor, "After fork()"): in such a child every call that would start
 * work on the executor returns CF_BROKEN at once, cf_executor_broken_reason names the
 * process the executor belongs to, shutdown does nothing and free releases the child's
 * handle without touching the parent's workers or processes; a new executor made in the
 * child works. CPython hangs here (a future that never finishes); preforking servers
 * that make a pool before they fork hit exactly this.
 *
 * Phases, for a thread pool and for a process pool, each with workers already running:
 *   1. fork; the child checks every call above and makes and uses a new executor of the
 *      same kind; the parent checks the child's exit status and that its own executor
 *      still works.
 *   2. fork while another thread submits to the pool as fast as it can (so the pool's
 *      lock is often held by a thread the child does not have): the child's cf_submit
 *      must still return CF_BROKEN, not hang (the child has a watchdog).
 *   3. (process pool) the parent frees its pool while a forked child is still alive:
 *      the free must not wait for the child, and leaves no process behind. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

#include <signal.h>
#include <sys/wait.h>

static void *t_double(void *arg) { return PX_I2P(PX_P2I(arg) * 2); }

static void *b_echo(const void *in, size_t len, size_t *out_len) {
    void *out = malloc(len ? len : 1);
    if (out && len) memcpy(out, in, len);
    *out_len = len;
    return out;
}

static atomic_int g_frees;
static void count_free(void *p) {
    (void)p;
    atomic_fetch_add(&g_frees, 1);
}

static bool next_three(void *state, void **item) {
    int *k = state;
    if (*k >= 3) return false;
    *item = PX_I2P(++*k);
    return true;
}

static void *then_fn(void *arg, cf_future *antecedent) {
    (void)antecedent;
    return arg;
}

/* Waits for `pid` up to `limit` seconds; returns its wait status, or fails the test
 * (after killing it) if it did not end in time. */
static int wait_child(pid_t pid, double limit) {
    double end = now_s() + limit;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        CHECK(r >= 0);
        if (r == pid) return status;
        if (now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "the child %d did not finish in %.0f s\n", (int)pid, limit);
            exit(1);
        }
        sleep_s(0.005);
    }
}

/* Children report success here (shared memory) rather than by their exit status: under
 * valgrind a child's status counts the leak records of its copy of the parent's
 * executor, which the child rightly leaves alone (see cf_executor_free). */
static atomic_int *g_child_ok;

static void child_succeeded(void) {
    atomic_store(g_child_ok, 1);
    _exit(0);
}

static void check_child_ok(pid_t pid) {
    int status = wait_child(pid, PX_LONG);
    if (!atomic_exchange(g_child_ok, 0)) {
        fprintf(stderr, "the child failed: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        exit(1);
    }
}

/* In the child: every call that would start work on `ex` is refused with CF_BROKEN. */
static void child_checks(cf_executor *ex, pid_t parent, bool process) {
    cf_future *f = NULL;
    CHECK_STATUS(cf_submit(ex, t_double, PX_I2P(21), &f), CF_BROKEN);
    CHECK(f == NULL);
    CHECK_STATUS(cf_submit_bytes(ex, b_echo, "abc", 3, &f), CF_BROKEN);
    CHECK(f == NULL);
    void *args[3] = {PX_I2P(1), PX_I2P(2), PX_I2P(3)};
    cf_map *m = NULL;
    CHECK_STATUS(cf_map_new(ex, t_double, args, 3, 1, CF_FOREVER, &m), CF_BROKEN);
    CHECK(m == NULL);
    CHECK_STATUS(cf_map_new(ex, t_double, args, 0, 1, CF_FOREVER, &m), CF_BROKEN);
    cf_bytes in[2] = {{"ab", 2}, {"c", 1}};
    CHECK_STATUS(cf_map_bytes_new(ex, b_echo, in, 2, 1, CF_FOREVER, &m), CF_BROKEN);
    CHECK(m == NULL);

    /* Part two of the API: an owned task is refused with nothing called, a lazy map and
     * a continuation on this executor are refused too. */
    cf_task task = CF_TASK_INIT;
    task.fn = t_double;
    task.arg = PX_I2P(1);
    task.arg_free = count_free;
    task.timeout = 10.0;
    CHECK_STATUS(cf_submit_task(ex, &task, &f), CF_BROKEN);
    CHECK(f == NULL && atomic_load(&g_frees) == 0);
    CHECK_STATUS(cf_submit_bytes_task(ex, b_echo, "abc", 3, 10.0, &f), CF_BROKEN);
    CHECK(f == NULL);
    int state = 0;
    CHECK_STATUS(cf_map_lazy_new(ex, t_double, next_three, &state, 1, 2, CF_FOREVER, &m),
                 CF_BROKEN);
    CHECK(m == NULL && state == 0);
    if (!process) {
        cf_future *p = NULL;
        CHECK_OK(cf_future_new(&p));
        CHECK_STATUS(cf_future_then(p, ex, then_fn, NULL, &f), CF_BROKEN);
        CHECK(f == NULL);
        cf_future_release(p);
    }

    const char *why = cf_executor_broken_reason(ex);
    CHECK(why != NULL);
    char pid_text[64];
    snprintf(pid_text, sizeof pid_text, "belongs to process %d,", (int)parent);
    PX_CHECK_CONTAINS(why, pid_text);
    PX_CHECK_CONTAINS(why, "after fork()");
    CHECK(cf_executor_worker_count(ex) == 0);

    /* Shutdown and free return at once and leave the parent's workers alone (the parent
     * checks that its executor still works afterwards). */
    CHECK_OK(cf_executor_shutdown(ex, true, true));
    cf_executor_free(ex);

    /* A new executor made here works. */
    cf_executor *fresh = NULL;
    if (process) {
        fresh = px_pool(1, 0);
    } else {
        CHECK_OK(cf_thread_pool_new(NULL, &fresh));
    }
    CHECK(cf_executor_broken_reason(fresh) == NULL);
    cf_future *g = NULL;
    CHECK_OK(cf_submit(fresh, t_double, PX_I2P(21), &g));
    void *r = NULL;
    CHECK_OK(cf_future_result(g, PX_TASK_LIMIT, &r));
    CHECK(PX_P2I(r) == 42);
    cf_future_release(g);
    cf_executor_free(fresh);
}

static cf_executor *make_pool(bool process) {
    cf_executor *ex = NULL;
    if (process) {
        ex = px_pool(2, 0);
    } else {
        cf_executor_options o = {.max_workers = 2};
        CHECK_OK(cf_thread_pool_new(&o, &ex));
    }
    /* Workers running before the fork. */
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, t_double, PX_I2P(5), &f));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, PX_TASK_LIMIT, &r));
    CHECK(PX_P2I(r) == 10);
    cf_future_release(f);
    CHECK(cf_executor_worker_count(ex) >= 1);
    return ex;
}

static void check_still_works(cf_executor *ex) {
    CHECK(cf_executor_broken_reason(ex) == NULL);
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, t_double, PX_I2P(50), &f));
    void *r = NULL;
    CHECK_OK(cf_future_result(f, PX_TASK_LIMIT, &r));
    CHECK(PX_P2I(r) == 100);
    cf_future_release(f);
}

static void phase_refused(bool process) {
    px_phase(process ? "refused (process pool)" : "refused (thread pool)");
    cf_executor *ex = make_pool(process);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm((unsigned)PX_LONG); /* the child dies by SIGALRM if anything hangs */
        child_checks(ex, parent, process);
        child_succeeded();
    }
    check_child_ok(pid);
    check_still_works(ex);
    cf_executor_free(ex);
}

/* ---- 2. fork while another thread holds the pool's lock now and then ----------------- */

typedef struct hammer {
    cf_executor *ex;
    atomic_int stop;
    atomic_int submitted;
} hammer;

static void *hammer_main(void *arg) {
    hammer *h = arg;
    while (!atomic_load(&h->stop)) {
        cf_future *f = NULL;
        CHECK_OK(cf_submit(h->ex, t_double, PX_I2P(1), &f));
        /* Each result is awaited, so that the queue stays short (the pool's lock is
         * still taken by this thread and the workers all the time). */
        void *r = NULL;
        CHECK_OK(cf_future_result(f, PX_TASK_LIMIT, &r));
        cf_future_release(f);
        px_add(&h->submitted, 1); /* wakes px_wait_ge */
    }
    return NULL;
}

static void phase_busy_fork(bool process) {
    px_phase(process ? "fork while submitting (process pool)" : "fork while submitting (thread pool)");
    cf_executor *ex = make_pool(process);
    hammer h = {.ex = ex};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, hammer_main, &h) == 0);
    CHECK(px_wait_ge(&h.submitted, 100, PX_LONG));
    /* Fewer under valgrind (CF_TEST_TIME_SCALE > 1), where each fork is slow. */
    int forks = px_scale() > 1.0 ? 3 : process ? 10 : 40;
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            alarm((unsigned)PX_LONG);
            cf_future *f = NULL;
            cf_status st = cf_submit(ex, t_double, PX_I2P(1), &f);
            if (st == CF_BROKEN && f == NULL) child_succeeded();
            _exit(3);
        }
        check_child_ok(pid);
    }
    atomic_store(&h.stop, 1);
    CHECK(pthread_join(t, NULL) == 0);
    check_still_works(ex);
    cf_executor_free(ex);
}

/* ---- 3. the parent frees its process pool while a forked child lives on -------------- */

static void phase_parent_frees_first(void) {
    px_phase("parent frees while the child lives");
    cf_executor *ex = make_pool(true);
    int release[2];
    CHECK(pipe(release) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm((unsigned)(2 * PX_LONG));
        close(release[1]);
        char c;
        while (read(release[0], &c, 1) < 0 && errno == EINTR) {
        }
        child_succeeded();
    }
    close(release[0]);
    /* The child holds its copy of the executor; the parent's free must not wait for it. */
    double t0 = now_s();
    cf_executor_free(ex);
    double took = now_s() - t0;
    close(release[1]); /* lets the child end */
    check_child_ok(pid);
    if (took > PX_LONG / 2) {
        fprintf(stderr, "cf_executor_free took %.1f s while a forked child lived\n", took);
        exit(1);
    }
    PX_CHECK_NO_CHILDREN();
}

int main(void) {
    px_no_core_dumps();
    px_watchdog(240);
    g_child_ok = px_shm_new(sizeof *g_child_ok);
    phase_refused(false);
    phase_refused(true);
    phase_busy_fork(false);
    phase_busy_fork(true);
    phase_parent_frees_first();
    printf("test_fork_child: OK\n");
    return 0;
}
