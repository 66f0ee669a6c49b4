/* Fault injection: worker processes killed with SIGKILL at random points.
 *
 * A killer thread sends SIGKILL, every 1-4 ms, to a random worker process of the pool:
 * half the time one whose pid a task recorded in shared memory (a worker that is
 * running or has run tasks), half the time any child of the pool's fork server (which
 * also hits workers that are still starting). Before each kill it opens a pidfd and
 * checks that the process is a child of the fork server, so a recycled pid is never hit.
 *
 *   map1      cf_map_new over 100,000 items (chunksize 1): every item read is CF_OK with
 *             its value until the first CF_BROKEN (a killed worker, the message naming
 *             SIGKILL and a killed pid), after which the map gives CF_END (API: the map
 *             stops at the first failure).
 *   map50     the same with chunksize 50.
 *   submits   20,000 independent cf_submit futures, and here the killer also watches
 *             for the replacement of a worker it killed and kills that one while it is
 *             still starting: every one finishes (cf_wait
 *             ALL_COMPLETED, bounded), with its value or CF_BROKEN naming a killed
 *             worker; no more broken futures than kills; afterwards the pool still runs
 *             tasks (a kill never breaks the whole pool: API "the pool replaces the
 *             worker and goes on").
 *
 *   deadlines 2,000 tasks of cf_submit_task in waves of 100, while the killer (hunting
 *             replacements too) races the deadline machinery, which kills workers itself:
 *             quick tasks with deadlines of 2-40 ms (run, or expire queued, sent ahead or
 *             as their answer comes back), quick tasks with a 60 s deadline or none,
 *             endless loops under deadlines of 5-30 ms (killed at the deadline with their
 *             worker, unless the killer got there first), plain cf_submit tasks. Every
 *             future finishes exactly once (its done callback ran once) with its value,
 *             CF_DEADLINE (only a task with a deadline; ETIMEDOUT; "before it started"
 *             only if it never started), or CF_BROKEN naming SIGKILL and a worker the test
 *             killed (never one the deadline killed: that task's future is the timer's);
 *             an endless task never CF_OK; arg_free ran exactly once per task and
 *             result_free exactly once per CF_OK future (at most once for a task that
 *             ended in its worker after its deadline passed, never otherwise). Then the
 *             pool goes on: an endless task under a deadline is killed, tasks succeed.
 *
 * Each runs on a fresh pool of 3 workers in a child process; nothing may hang (a
 * watchdog turns a hang into a failure naming the phase), and after cf_executor_free no
 * child process may remain (waitpid(-1, WNOHANG) gives ECHILD).
 */
#define _GNU_SOURCE
#include "fault_util.h"

#define NMAX 100000
#define RING 1024
#define MAX_KILLS 4096

typedef struct shared {
    atomic_int ring[RING];
    atomic_uint ring_pos;
    atomic_int items_done;
    atomic_int started[NMAX]; /* pid that started item i */
    atomic_int finished[NMAX];
} shared;

static shared *g_sh;

static void *work(void *arg) {
    intptr_t i = (intptr_t)arg;
    int pid = (int)getpid();
    if (i >= 0 && i < NMAX) atomic_store(&g_sh->started[i], pid);
    unsigned k = atomic_fetch_add(&g_sh->ring_pos, 1);
    atomic_store(&g_sh->ring[k % RING], pid);
    if (i % 7 == 0) {
        double end = fault_now() + 50e-6;
        while (fault_now() < end) {
        }
    }
    if (i >= 0 && i < NMAX) atomic_store(&g_sh->finished[i], 1);
    atomic_fetch_add(&g_sh->items_done, 1);
    return (void *)(2 * i + 1);
}

/* ---- the killer ----------------------------------------------------------------------- */

static pid_t g_server;
static atomic_bool g_stop;
static int g_start_after; /* items done before the first kill */
static pthread_mutex_t g_kmu = PTHREAD_MUTEX_INITIALIZER;
static pid_t g_killed[MAX_KILLS];
static int g_n_killed;
static atomic_int g_kills_from_ring, g_kills_from_children;
static bool g_hunt_starts; /* also kill replacement workers while they start */

static bool was_killed(pid_t pid) {
    pthread_mutex_lock(&g_kmu);
    bool k = false;
    for (int i = 0; i < g_n_killed && !k; i++) k = g_killed[i] == pid;
    pthread_mutex_unlock(&g_kmu);
    return k;
}

/* A random child of the fork server, or 0. */
static pid_t random_server_child(unsigned *seed) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", (long)g_server, (long)g_server);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) return 0;
    long kids[64];
    int n = 0;
    while (n < 64 && fscanf(fp, "%ld", &kids[n]) == 1) n++;
    fclose(fp);
    return n ? (pid_t)kids[rand_r(seed) % (unsigned)n] : 0;
}

static bool kill_worker(pid_t pid) {
    if (pid <= 0 || pid == g_server) return false;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0) return false;
    char st;
    long pp;
    bool ok = fault_proc_stat(pid, &st, &pp) && pp == (long)g_server && st != 'Z';
    if (ok) ok = syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0) == 0;
    close(pfd);
    if (ok) {
        pthread_mutex_lock(&g_kmu);
        if (g_n_killed < MAX_KILLS) g_killed[g_n_killed++] = pid;
        pthread_mutex_unlock(&g_kmu);
    }
    return ok;
}

/* Right after a kill: watch the server's children for the replacement worker and kill
 * it as soon as it appears, while it is still starting (before it ran any task). */
static atomic_int g_kills_at_start;
static bool in_ring(pid_t pid) {
    for (int i = 0; i < RING; i++)
        if (atomic_load(&g_sh->ring[i]) == (int)pid) return true;
    return false;
}
static void kill_replacement(void) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", (long)g_server, (long)g_server);
    double end = fault_now() + 0.02;
    while (fault_now() < end && !atomic_load(&g_stop)) {
        FILE *fp = fopen(path, "r");
        if (fp == NULL) return;
        long pid;
        while (fscanf(fp, "%ld", &pid) == 1) {
            if (!was_killed((pid_t)pid) && !in_ring((pid_t)pid) && kill_worker((pid_t)pid)) {
                atomic_fetch_add(&g_kills_at_start, 1);
                fclose(fp);
                return;
            }
        }
        fclose(fp);
    }
}

static void *killer(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&g_stop) && atomic_load(&g_sh->items_done) < g_start_after) fault_sleep(0.0005);
    while (!atomic_load(&g_stop)) {
        fault_sleep((1 + rand_r(&seed) % 4) * 1e-3);
        if (g_n_killed >= MAX_KILLS) break;
        if (rand_r(&seed) % 2) {
            unsigned pos = atomic_load(&g_sh->ring_pos);
            if (pos == 0) continue;
            unsigned k = pos - 1 - (unsigned)rand_r(&seed) % (pos < 8 ? pos : 8);
            if (kill_worker((pid_t)atomic_load(&g_sh->ring[k % RING]))) {
                atomic_fetch_add(&g_kills_from_ring, 1);
                if (g_hunt_starts) kill_replacement();
            }
        } else {
            if (kill_worker(random_server_child(&seed))) {
                atomic_fetch_add(&g_kills_from_children, 1);
                if (g_hunt_starts) kill_replacement();
            }
        }
    }
    return NULL;
}

static pthread_t start_killer(int after, unsigned seed) {
    atomic_store(&g_stop, false);
    g_start_after = after;
    g_n_killed = 0;
    atomic_store(&g_kills_from_ring, 0);
    atomic_store(&g_kills_from_children, 0);
    atomic_store(&g_kills_at_start, 0);
    pthread_t t;
    FCHECK(pthread_create(&t, NULL, killer, (void *)(uintptr_t)seed) == 0);
    return t;
}

static void stop_killer(pthread_t t) {
    atomic_store(&g_stop, true);
    pthread_join(t, NULL);
    fprintf(stderr,
            "   %d workers killed (%d picked from task pids, %d from the server's children, %d "
            "replacements while starting)\n",
            g_n_killed, atomic_load(&g_kills_from_ring), atomic_load(&g_kills_from_children),
            atomic_load(&g_kills_at_start));
}

/* ---- pools ---------------------------------------------------------------------------- */

static cf_executor *new_pool(void) {
    memset(g_sh, 0, sizeof *g_sh);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 3;
    cf_executor *ex = NULL;
    FCHECK_STATUS(cf_process_pool_new(&o, &ex), CF_OK);
    pid_t kids[4];
    FCHECK_EQ(fault_children_of(getpid(), kids, 4), 1);
    g_server = kids[0];
    return ex;
}

/* A CF_BROKEN message must name SIGKILL and, when it names a worker pid, a killed one. */
static void check_broken_message(const char *msg, const char *what) {
    FSOFT(msg != NULL && strstr(msg, "SIGKILL") != NULL, "%s: CF_BROKEN message does not name SIGKILL: %s",
          what, msg ? msg : "(null)");
    const char *p = msg ? strstr(msg, "process ") : NULL;
    if (p != NULL) {
        long pid = strtol(p + strlen("process "), NULL, 10);
        if (pid > 0)
            FSOFT(was_killed((pid_t)pid), "%s: CF_BROKEN names process %ld, which the test did not kill: %s",
                  what, pid, msg);
    }
}

/* ---- scenarios ------------------------------------------------------------------------ */

static int run_map(size_t chunksize, unsigned seed) {
    fault_watchdog(150);
    g_sh = fault_shm(sizeof *g_sh);
    cf_executor *ex = new_pool();
    static void *args[NMAX];
    for (intptr_t i = 0; i < NMAX; i++) args[i] = (void *)i;
    fault_phase("map: 100,000 items while workers are killed");
    pthread_t k = start_killer(2000, seed);
    cf_map *m = NULL;
    cf_status st = cf_map_new(ex, work, args, NMAX, chunksize, 120.0, &m);
    if (st != CF_OK) {
        stop_killer(k);
        FSOFT(st == CF_OK,
              "cf_map_new gave %s: a worker killed while the items were being submitted broke the "
              "whole pool (API: the pool replaces the worker and goes on)",
              cf_status_name(st));
        cf_executor_free(ex);
        FAULT_CHECK_NO_CHILDREN();
        return 1;
    }
    size_t ok = 0;
    cf_status s = CF_OK;
    int code = 0;
    const char *msg = NULL;
    for (;;) {
        void *r = NULL;
        s = cf_map_next(m, &r, &code, &msg);
        if (s != CF_OK) break;
        FCHECK_MSG((intptr_t)r == 2 * (intptr_t)ok + 1, "map item %zu: %ld", ok, (long)(intptr_t)r);
        ok++;
    }
    stop_killer(k);
    fprintf(stderr, "   %zu items CF_OK, then %s%s%s\n", ok, cf_status_name(s), msg ? ": " : "", msg ? msg : "");
    FCHECK_MSG(s == CF_END || s == CF_BROKEN, "map item %zu gave %s (code %d, %s)", ok, cf_status_name(s), code,
               msg ? msg : "no message");
    if (s == CF_END) {
        FCHECK_EQ(ok, NMAX);
    } else {
        check_broken_message(msg, "map");
        void *r = NULL;
        FCHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_END);
    }
    fault_phase("map: free");
    cf_map_free(m);
    cf_executor_free(ex);
    FAULT_CHECK_NO_CHILDREN();
    return fault_soft_failures ? 1 : 0;
}

static int sc_map1(void *arg) {
    (void)arg;
    return run_map(1, 1);
}
static int sc_map50(void *arg) {
    (void)arg;
    return run_map(50, 2);
}

static int sc_submits(void *arg) {
    (void)arg;
    fault_watchdog(150);
    g_sh = fault_shm(sizeof *g_sh);
    cf_executor *ex = new_pool();
    enum { N = 20000 };
    static cf_future *fs[N];
    fault_phase("submits: 20,000 futures while workers are killed");
    g_hunt_starts = true;
    pthread_t k = start_killer(200, 3);
    int n = 0;
    for (; n < N; n++) {
        cf_status s = cf_submit(ex, work, (void *)(intptr_t)n, &fs[n]);
        if (s != CF_OK) {
            FSOFT(s == CF_OK, "submit %d gave %s: a kill broke the whole pool (API: the pool "
                              "replaces the worker and goes on)", n, cf_status_name(s));
            break;
        }
    }
    size_t nd = 0;
    cf_status s = cf_wait(fs, (size_t)n, CF_ALL_COMPLETED, 120.0, NULL, &nd);
    FCHECK_MSG(s == CF_OK, "cf_wait(ALL_COMPLETED): %s, %zu of %d done after 120 s", cf_status_name(s), nd, n);
    stop_killer(k);
    int broken = 0, ok = 0, other = 0;
    const char *first_other = NULL;
    for (int i = 0; i < n; i++) {
        int code = 0;
        const char *msg = NULL;
        s = cf_future_exception(fs[i], 0.0, &code, &msg);
        if (s == CF_OK) {
            void *r = NULL;
            FCHECK_STATUS(cf_future_result(fs[i], 0.0, &r), CF_OK);
            FCHECK_EQ((intptr_t)r, 2 * i + 1);
            ok++;
        } else if (s == CF_BROKEN) {
            broken++;
            if (msg != NULL && strstr(msg, "executor is broken") != NULL) {
                other++;
                if (first_other == NULL) first_other = msg;
            } else {
                check_broken_message(msg, "submit");
            }
        } else {
            FCHECK_MSG(false, "future %d ended %s (code %d, %s)", i, cf_status_name(s), code, msg ? msg : "no message");
        }
    }
    fprintf(stderr, "   %d futures CF_OK, %d CF_BROKEN\n", ok, broken);
    FSOFT(other == 0, "%d futures failed because the whole pool broke after a worker was killed "
                      "(first: \"%s\"); API: the pool replaces the worker and goes on", other,
          first_other ? first_other : "");
    FSOFT(broken <= g_n_killed, "%d futures broken, only %d workers killed", broken, g_n_killed);

    fault_phase("submits: the pool still runs tasks after the kills");
    /* A SIGKILL sent just before the killer stopped may still be on its way: kill()
     * returns before the process is gone, so an idle worker can take a task and then die
     * of it. That task is rightly CF_BROKEN (the worker died holding it); it is retried,
     * at most twice in all. Anything else, or more, means the pool did not recover. */
    int late_kills = 0;
    for (intptr_t i = 0; i < 100; i++) {
        cf_future *f = NULL;
        s = cf_submit(ex, work, (void *)i, &f);
        FSOFT(s == CF_OK, "submit after the kills: %s (the pool is broken)", cf_status_name(s));
        if (s != CF_OK) break;
        void *r = NULL;
        s = cf_future_result(f, 20.0, &r);
        if (s == CF_BROKEN && late_kills < 2) {
            int code = 0;
            const char *msg = NULL;
            FCHECK_STATUS(cf_future_exception(f, 0.0, &code, &msg), CF_BROKEN);
            check_broken_message(msg, "a task right after the kills");
            fprintf(stderr, "   a kill sent before the killer stopped landed late: %s\n", msg);
            late_kills++;
            cf_future_release(f);
            i--;
            continue;
        }
        FSOFT(s == CF_OK && (intptr_t)r == 2 * i + 1, "task after the kills: %s", cf_status_name(s));
        cf_future_release(f);
        if (s != CF_OK) break;
    }
    fault_phase("submits: free");
    for (int i = 0; i < n; i++) cf_future_release(fs[i]);
    cf_executor_free(ex);
    FAULT_CHECK_NO_CHILDREN();
    return fault_soft_failures ? 1 : 0;
}

/* ---- deadlines racing outside kills ------------------------------------------------- */

enum { DL_WAVES = 20, DL_WAVE = 100, DL_N = DL_WAVES * DL_WAVE };

static atomic_int g_dl_arg_frees[DL_N + 1], g_dl_result_frees[DL_N + 1], g_dl_callbacks[DL_N + 1];
static atomic_int g_dl_bad_free;

static void dl_arg_free(void *p) {
    intptr_t i = (intptr_t)p;
    if (i >= 1 && i <= DL_N)
        atomic_fetch_add(&g_dl_arg_frees[i], 1);
    else
        atomic_fetch_add(&g_dl_bad_free, 1);
}
static void dl_result_free(void *p) {
    intptr_t v = (intptr_t)p;
    if (v % 2 == 1 && (v - 1) / 2 >= 1 && (v - 1) / 2 <= DL_N)
        atomic_fetch_add(&g_dl_result_frees[(v - 1) / 2], 1);
    else
        atomic_fetch_add(&g_dl_bad_free, 1);
}
static void dl_callback(cf_future *f, void *ud) {
    (void)f;
    atomic_fetch_add(&g_dl_callbacks[(intptr_t)ud], 1);
}

/* An endless loop (30 s at most): ended by its deadline or a kill. */
static void *spin_work(void *arg) {
    intptr_t i = (intptr_t)arg;
    int pid = (int)getpid();
    atomic_store(&g_sh->started[i], pid);
    unsigned k = atomic_fetch_add(&g_sh->ring_pos, 1);
    atomic_store(&g_sh->ring[k % RING], pid);
    double end = fault_now() + 30.0;
    while (fault_now() < end) {
    }
    atomic_store(&g_sh->finished[i], 1);
    return (void *)(2 * i + 1);
}

/* The kind of task i: 0-3 quick, 2-40 ms deadline; 4-5 quick, owned, no deadline; 6
 * endless, 5-30 ms deadline; 7-8 quick, 60 s deadline; 9 plain cf_submit. */
static int dl_kind(intptr_t i) { return (int)(i % 10); }
static bool dl_has_deadline(intptr_t i) {
    int k = dl_kind(i);
    return k <= 3 || k == 6 || k == 7 || k == 8;
}

static cf_future *dl_submit(cf_executor *ex, intptr_t i, unsigned *seed) {
    int kind = dl_kind(i);
    cf_future *f = NULL;
    cf_status st;
    if (kind == 9) {
        st = cf_submit(ex, work, (void *)i, &f);
    } else {
        cf_task t = CF_TASK_INIT;
        t.fn = kind == 6 ? spin_work : work;
        t.arg = (void *)i;
        t.arg_free = dl_arg_free;
        t.result_free = dl_result_free;
        if (kind <= 3) t.timeout = 0.002 + 0.001 * (rand_r(seed) % 39);
        if (kind == 6) t.timeout = 0.005 + 0.001 * (rand_r(seed) % 26);
        if (kind == 7 || kind == 8) t.timeout = 60.0;
        st = cf_submit_task(ex, &t, &f);
    }
    FCHECK_MSG(st == CF_OK, "submit %ld gave %s: a kill broke the whole pool (API: the pool replaces the worker "
                            "and goes on)", (long)i, cf_status_name(st));
    FCHECK_STATUS(cf_future_add_done_callback(f, dl_callback, (void *)i), CF_OK);
    return f;
}

static int sc_deadlines(void *arg) {
    (void)arg;
    fault_watchdog(150);
    g_sh = fault_shm(sizeof *g_sh);
    cf_executor *ex = new_pool();
    static cf_future *fs[DL_N + 1];
    unsigned seed = 4;
    fault_phase("deadlines: 2,000 tasks with deadlines (some endless) while workers are killed");
    g_hunt_starts = true;
    pthread_t k = start_killer(50, 5);
    for (int w = 0; w < DL_WAVES; w++) {
        intptr_t first = 1 + (intptr_t)w * DL_WAVE;
        for (intptr_t i = first; i < first + DL_WAVE; i++) fs[i] = dl_submit(ex, i, &seed);
        size_t nd = 0;
        cf_status s = cf_wait(&fs[first], DL_WAVE, CF_ALL_COMPLETED, 60.0 * fault_scale(), NULL, &nd);
        FCHECK_MSG(s == CF_OK, "wave %d: cf_wait(ALL_COMPLETED): %s, %zu of %d done", w, cf_status_name(s), nd,
                   DL_WAVE);
    }
    stop_killer(k);
    int ok = 0, deadline = 0, deadline_killed = 0, deadline_died = 0, broken = 0, returned_late = 0;
    for (intptr_t i = 1; i <= DL_N; i++) {
        int code = 0;
        const char *msg = NULL;
        cf_status s = cf_future_exception(fs[i], 0.0, &code, &msg);
        bool started = atomic_load(&g_sh->started[i]) != 0, finished = atomic_load(&g_sh->finished[i]) != 0;
        if (s == CF_OK) {
            void *r = NULL;
            FCHECK_STATUS(cf_future_result(fs[i], 0.0, &r), CF_OK);
            FSOFT((intptr_t)r == 2 * i + 1 && dl_kind(i) != 6 && finished, "task %ld (kind %d): CF_OK with %ld%s",
                  (long)i, dl_kind(i), (long)(intptr_t)r, finished ? "" : ", but it never finished");
            ok++;
        } else if (s == CF_DEADLINE) {
            FSOFT(dl_has_deadline(i) && code == ETIMEDOUT && msg != NULL,
                  "task %ld (kind %d, no deadline: %d): CF_DEADLINE, code %d (%s)", (long)i, dl_kind(i),
                  !dl_has_deadline(i), code, msg ? msg : "-");
            if (msg != NULL && strstr(msg, "before it started") != NULL)
                FSOFT(!started, "task %ld (kind %d) started in worker %d (%s), but its CF_DEADLINE says: %s",
                      (long)i, dl_kind(i), atomic_load(&g_sh->started[i]),
                      was_killed(atomic_load(&g_sh->started[i])) ? "which the test killed" : "not killed by the test",
                      msg);
            /* its worker killed by the test while it ran, before the deadline's own kill */
            const char *died = msg != NULL ? strstr(msg, "in worker process ") : NULL;
            if (died != NULL && strstr(msg, "which died") != NULL) {
                long pid = strtol(died + strlen("in worker process "), NULL, 10);
                FSOFT(was_killed((pid_t)pid) && started, "task %ld: CF_DEADLINE names a worker the test did not kill: %s",
                      (long)i, msg);
                deadline_died++;
            }
            deadline++;
            deadline_killed += msg != NULL && strstr(msg, "which was killed") != NULL;
            returned_late += finished;
        } else if (s == CF_BROKEN) {
            FSOFT(msg == NULL || strstr(msg, "executor is broken") == NULL,
                  "task %ld: the whole pool broke after a worker was killed: %s", (long)i, msg);
            check_broken_message(msg, "deadline task");
            broken++;
        } else {
            FSOFT(false, "task %ld (kind %d) ended %s (code %d, %s)", (long)i, dl_kind(i), cf_status_name(s), code,
                  msg ? msg : "no message");
        }
    }
    fprintf(stderr,
            "   %d futures CF_OK, %d CF_DEADLINE (%d killed at the deadline, %d whose worker the test killed, %d "
            "ended late), %d CF_BROKEN\n",
            ok, deadline, deadline_killed, deadline_died, returned_late, broken);
    FSOFT(broken <= g_n_killed, "%d futures broken, only %d workers killed by the test", broken, g_n_killed);
    FSOFT(deadline_killed >= 1, "no endless task was killed at its deadline");
    FSOFT(g_n_killed >= 1, "the test killed no worker");

    fault_phase("deadlines: the pool goes on");
    {
        int late_kills = 0;
        for (int round = 0; round < 3; round++) {
            cf_task t = CF_TASK_INIT;
            t.fn = spin_work;
            t.arg = (void *)(intptr_t)(NMAX - 1);
            t.timeout = 0.05;
            cf_future *spin = NULL;
            FCHECK_STATUS(cf_submit_task(ex, &t, &spin), CF_OK);
            t.fn = work;
            t.arg = (void *)(intptr_t)(NMAX - 2);
            t.timeout = 60.0;
            cf_future *next = NULL;
            FCHECK_STATUS(cf_submit_task(ex, &t, &next), CF_OK);
            void *r = NULL;
            cf_status s = cf_future_result(spin, 20.0 * fault_scale(), &r);
            cf_status s2 = cf_future_result(next, 20.0 * fault_scale(), &r);
            /* (a SIGKILL sent just before the killer stopped may land late: see sc_submits) */
            if ((s == CF_BROKEN || s2 == CF_BROKEN) && late_kills < 2) {
                late_kills++;
                round--;
            } else {
                FSOFT(s == CF_DEADLINE, "an endless task under a 50 ms deadline after the kills: %s",
                      cf_status_name(s));
                FSOFT(s2 == CF_OK && (intptr_t)r == 2 * (NMAX - 2) + 1, "a task after it: %s", cf_status_name(s2));
            }
            cf_future_release(spin);
            cf_future_release(next);
        }
    }
    fault_phase("deadlines: free");
    for (intptr_t i = 1; i <= DL_N; i++) {
        FSOFT(atomic_load(&g_dl_callbacks[i]) == 1, "task %ld: its done callback ran %d times", (long)i,
              atomic_load(&g_dl_callbacks[i]));
    }
    /* the results of the CF_OK futures are freed as the futures go */
    bool was_ok[DL_N + 1], was_late[DL_N + 1];
    for (intptr_t i = 1; i <= DL_N; i++) {
        int code = 0;
        const char *msg = NULL;
        cf_status s = cf_future_exception(fs[i], 0.0, &code, &msg);
        was_ok[i] = s == CF_OK;
        was_late[i] = s == CF_DEADLINE && atomic_load(&g_sh->finished[i]) != 0;
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    FAULT_CHECK_NO_CHILDREN();
    int bad_arg = 0, bad_result = 0;
    for (intptr_t i = 1; i <= DL_N; i++) {
        if (dl_kind(i) == 9) continue;
        int af = atomic_load(&g_dl_arg_frees[i]), rf = atomic_load(&g_dl_result_frees[i]);
        if (af != 1 && bad_arg++ < 5) fprintf(stderr, "   task %ld: arg_free ran %d times\n", (long)i, af);
        bool rf_ok = was_ok[i] ? rf == 1 : was_late[i] ? rf <= 1 : rf == 0;
        if (!rf_ok && bad_result++ < 5)
            fprintf(stderr, "   task %ld (kind %d, %s): result_free ran %d times\n", (long)i, dl_kind(i),
                    was_ok[i] ? "CF_OK" : was_late[i] ? "late" : "not CF_OK", rf);
    }
    FSOFT(bad_arg == 0, "%d tasks' arg_free did not run exactly once", bad_arg);
    FSOFT(bad_result == 0, "%d tasks' result_free did not run as often as their outcome says", bad_result);
    FSOFT(atomic_load(&g_dl_bad_free) == 0, "%d free calls with a pointer no task had", atomic_load(&g_dl_bad_free));
    return fault_soft_failures ? 1 : 0;
}

int main(void) {
    setvbuf(stderr, NULL, _IONBF, 0);
    fault_no_core_dumps();
    fault_result r[4];
    r[0] = fault_run("kill_workers.map1", sc_map1, NULL, 180);
    r[1] = fault_run("kill_workers.map50", sc_map50, NULL, 180);
    r[2] = fault_run("kill_workers.submits", sc_submits, NULL, 180);
    r[3] = fault_run("kill_workers.deadlines", sc_deadlines, NULL, 180);
    bool ok = fault_passed(r[0]) && fault_passed(r[1]) && fault_passed(r[2]) && fault_passed(r[3]);
    printf("kill_workers: %s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
