/* Process hygiene: the descriptors a worker process holds.
 *
 * Header: "Worker channels are private socket pairs", and (src/rt/process.rs) the fork
 * server closes every descriptor of the library at its start and each worker's end
 * right after forking it, "so no worker holds another worker's socket".
 *
 * Two process pools (A: 3 workers, max_tasks_per_child = 1, so every task runs in a new
 * worker; B: 2 workers, max_tasks_per_child = 2) and a thread pool are alive at the same
 * time; B is created while A's workers are busy being replaced, a third process pool C
 * is created and freed in the middle, and three threads submit concurrently (the thread
 * pool's tasks submit to A too). Several hundred tasks each inspect their own
 * /proc/self/fd and must find:
 *
 *   - exactly ONE socket (their own channel): no other worker's socket, no fork-server
 *     control socket, no socket of another pool;
 *   - no pidfd, and no other descriptor the test process did not have before the first
 *     pool was made (those are inherited legitimately: the program's own state).
 *
 * Every third task (and half of pool C's) is a byte task with a 128 KiB input, which travels through its
 * worker's shared-memory arena (a memfd the worker maps, then closes): it must also find
 * exactly one arena mapped (its own; none of another worker's or pool's, which would
 * happen if the parent's mappings were inherited by a fork server made later: a fourth
 * pool D keeps an idle worker with an arena while B and C are made).
 *
 * A task that finds anything else fails (cf_raise) with the counts and the list of
 * descriptors, and the test prints them. Also checked: each idle fork server holds one
 * socket (its control socket) and maps no arena; after everything is freed, the test process has exactly
 * the descriptors it started with, no arena mapping and no child process.
 *
 * Then deadlines (src/rt/process/deadline.rs), 25 rounds on one 2-worker pool: endless
 * tasks killed with their workers at their deadline, tasks sent ahead and skipped by the
 * worker, tasks sent again to a new worker. Every task with a deadline finds the same
 * descriptors as above and exactly one deadline watch mapped (its worker's own; the
 * watch's memfd closed), a task without one at most one watch (or that one memfd still
 * in flight, read ahead with the frame that brings it); between rounds, with the pool
 * idle, the fork server has no zombie child and maps no watch, each idle worker holds
 * one socket, and this process holds no more descriptors per round; after the free,
 * nothing is left. Last, 8 rounds of cf_executor_terminate_workers /
 * cf_executor_kill_workers (after shutdown without wait, or called twice, in some):
 * right after the call the fork server has no child, this process holds only what the
 * empty pool held (or, with the server reaped, what it started with) and maps no watch
 * or arena; every future is done with a status that fits; after the free, nothing left.
 */
#define _GNU_SOURCE
#include "fault_util.h"

#define MAX_BASE 256

typedef struct base_fd {
    int fd;
    char target[120];
} base_fd;

#define DL_TASKS 4096

typedef struct shared {
    int n_base;
    int base_sockets;
    base_fd base[MAX_BASE];
    atomic_int ran[DL_TASKS]; /* the deadline phases: task i started in a worker */
    atomic_int stop;          /* ends every spinning task (a safety net: they are killed) */
} shared;

static shared *g_sh;

static void fd_target(int dirfd_, const char *name, char *out, size_t n) {
    ssize_t k = readlinkat(dirfd_, name, out, n - 1);
    out[k > 0 ? k : 0] = '\0';
}

/* The test process's descriptors now, into g_sh->base. */
static void record_base(void) {
    DIR *d = opendir("/proc/self/fd");
    FCHECK(d != NULL);
    struct dirent *e;
    g_sh->n_base = 0;
    g_sh->base_sockets = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d)) continue;
        FCHECK(g_sh->n_base < MAX_BASE);
        base_fd *b = &g_sh->base[g_sh->n_base++];
        b->fd = fd;
        fd_target(dirfd(d), e->d_name, b->target, sizeof b->target);
        if (strncmp(b->target, "socket:", 7) == 0) g_sh->base_sockets++;
    }
    closedir(d);
}

static bool in_base(int fd, const char *target) {
    for (int i = 0; i < g_sh->n_base; i++)
        if (g_sh->base[i].fd == fd && strcmp(g_sh->base[i].target, target) == 0) return true;
    return false;
}

typedef struct fd_report {
    int sockets, pidfds, extra;
    int watch_fds; /* memfds of deadline watches (also counted in extra) */
    char list[1024];
} fd_report;

/* Classifies the descriptors of process `pid` ("self" for this one). */
static void inspect(const char *pid, fd_report *r) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/fd", pid);
    memset(r, 0, sizeof *r);
    DIR *d = opendir(path);
    if (d == NULL) {
        snprintf(r->list, sizeof r->list, "cannot open %s: %s", path, strerror(errno));
        r->extra = -1;
        return;
    }
    bool self = strcmp(pid, "self") == 0;
    struct dirent *e;
    size_t used = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (self && fd == dirfd(d)) continue;
        char t[120];
        fd_target(dirfd(d), e->d_name, t, sizeof t);
        bool socket = strncmp(t, "socket:", 7) == 0;
        bool pidfd = strstr(t, "pidfd") != NULL;
        r->sockets += socket;
        r->pidfds += pidfd;
        r->watch_fds += strstr(t, "cfutures-watch") != NULL;
        if (!socket && !pidfd && !in_base(fd, t)) r->extra++;
        if (socket || pidfd || !in_base(fd, t)) {
            int k = snprintf(r->list + used, sizeof r->list - used, "%s%d -> %s", used ? ", " : "", fd, t);
            if (k > 0 && (size_t)k < sizeof r->list - used) used += (size_t)k;
        }
    }
    closedir(d);
}

/* The task: runs in a worker process, looks at its own descriptors. */
static void *check_my_fds(void *arg) {
    (void)arg;
    fd_report r;
    inspect("self", &r);
    if (r.sockets != g_sh->base_sockets + 1 || r.pidfds != 0 || r.extra != 0) {
        char msg[1400];
        snprintf(msg, sizeof msg, "worker %ld holds %d socket(s) (expected %d), %d pidfd(s), %d other new fd(s): %s",
                 (long)getpid(), r.sockets, g_sh->base_sockets + 1, r.pidfds, r.extra, r.list);
        return cf_raise(1, msg);
    }
    return (void *)(intptr_t)getpid();
}

/* Number of mappings of process `pid` whose name contains `what`. */
static int mappings_of(const char *pid, const char *what) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/maps", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) n += strstr(line, what) != NULL;
    fclose(f);
    return n;
}

/* Number of mappings of the library's arenas (memfd "cfutures-arena") in process `pid`. */
static int arena_mappings(const char *pid) { return mappings_of(pid, "cfutures-arena"); }

/* Number of mappings of deadline watches (memfd "cfutures-watch", src/rt/process/deadline.rs)
 * in process `pid`. */
static int watch_mappings(const char *pid) { return mappings_of(pid, "cfutures-watch"); }

/* A byte task with a large input (which travels through the worker's shared-memory arena,
 * src/rt/process.rs): the same descriptor checks, and the worker maps at most one arena
 * (its own: none of another worker's, none of another pool's). */
static void *check_my_fds_bytes(const void *in, size_t len, size_t *out_len) {
    (void)in;
    (void)len;
    void *r = check_my_fds(NULL);
    int arenas = arena_mappings("self");
    if (arenas != 1) {
        char msg[128];
        snprintf(msg, sizeof msg, "worker %ld maps %d arenas (expected its own only)", (long)getpid(), arenas);
        return cf_raise(1, msg);
    }
    intptr_t *out = malloc(sizeof *out);
    if (out == NULL) return cf_raise(12, "malloc");
    *out = (intptr_t)r;
    *out_len = sizeof *out;
    return out;
}

/* ---- the workload --------------------------------------------------------------------- */

#define TASKS_A 400
#define TASKS_B 200
#define TASKS_T 100

static cf_executor *g_a, *g_b, *g_t;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_future *g_fs[2 * (TASKS_A + TASKS_B + TASKS_T)];
static int g_nfs;
static atomic_int g_b_ready;

static void keep(cf_future *f) {
    pthread_mutex_lock(&g_mu);
    FCHECK(g_nfs < (int)(sizeof g_fs / sizeof g_fs[0]));
    g_fs[g_nfs++] = f;
    pthread_mutex_unlock(&g_mu);
}

/* Every third task submitted is a byte task with a 128 KiB input. */
static atomic_int g_submits;
static unsigned char g_big[128 << 10];

static void submit_to(cf_executor *ex) {
    cf_future *f = NULL;
    cf_status s = atomic_fetch_add(&g_submits, 1) % 3 == 2
                      ? cf_submit_bytes(ex, check_my_fds_bytes, g_big, sizeof g_big, &f)
                      : cf_submit(ex, check_my_fds, NULL, &f);
    FCHECK_MSG(s == CF_OK, "submit: %s", cf_status_name(s));
    keep(f);
}

/* Thread-pool task: submits to process pool A from a thread of another pool. */
static void *submit_from_thread_pool(void *arg) {
    (void)arg;
    submit_to(g_a);
    return NULL;
}

static void *submitter_a(void *arg) {
    (void)arg;
    for (int i = 0; i < TASKS_A / 2; i++) submit_to(g_a);
    return NULL;
}

static void *submitter_b(void *arg) {
    (void)arg;
    while (!atomic_load(&g_b_ready)) fault_sleep(0.0005);
    for (int i = 0; i < TASKS_B; i++) {
        submit_to(g_b);
        if (i % 2 == 0) submit_to(g_a);
    }
    return NULL;
}

static cf_executor *process_pool(size_t workers, size_t mtpc) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = workers;
    o.max_tasks_per_child = mtpc;
    cf_executor *ex = NULL;
    FCHECK_STATUS(cf_process_pool_new(&o, &ex), CF_OK);
    return ex;
}

/* ---- deadlines and stopped workers --------------------------------------------------- */

static atomic_int g_arg_frees;
static void count_arg_free(void *p) {
    (void)p;
    atomic_fetch_add(&g_arg_frees, 1);
}

static void spin_for(double seconds) {
    double end = fault_now() + seconds;
    while (fault_now() < end && !atomic_load(&g_sh->stop)) {
    }
}

/* In a worker: the descriptor checks, and `watches` deadline watches mapped (-1: at most
 * one), no arena. Returns its index, or raises with what it found. */
static void *fds_and_watches(intptr_t i, int watches) {
    fd_report r;
    inspect("self", &r);
    int w = watch_mappings("self"), a = arena_mappings("self");
    /* A task without a deadline may run while the frame that brings its worker's watch
     * (K_WATCH, with the memfd) is already read ahead into the worker's receive buffer,
     * ahead of a task with a deadline sent after it: that one memfd, its own, is allowed
     * then (the worker maps it and closes it when it reaches the frame). */
    int in_flight = watches < 0 && w == 0 && r.watch_fds == 1 ? 1 : 0;
    if (r.sockets != g_sh->base_sockets + 1 || r.pidfds != 0 || r.extra != in_flight || a != 0 ||
        (watches < 0 ? w > 1 : w != watches)) {
        char msg[1400];
        snprintf(msg, sizeof msg,
                 "worker %ld (task %ld) holds %d socket(s) (expected %d), %d pidfd(s), %d other new fd(s), maps "
                 "%d watch(es) (expected %s) and %d arena(s): %s",
                 (long)getpid(), (long)i, r.sockets, g_sh->base_sockets + 1, r.pidfds, r.extra, w,
                 watches < 0 ? "at most 1" : "1", a, r.list);
        return cf_raise(1, msg);
    }
    return (void *)i;
}

/* A task with a deadline: it has its worker's watch (exactly one). */
static void *dl_check(void *arg) {
    atomic_fetch_add(&g_sh->ran[(intptr_t)arg], 1);
    return fds_and_watches((intptr_t)arg, 1);
}
/* A task without a deadline that holds its worker for 60 ms. */
static void *dl_block(void *arg) {
    atomic_fetch_add(&g_sh->ran[(intptr_t)arg], 1);
    spin_for(0.060);
    return fds_and_watches((intptr_t)arg, -1);
}
/* An endless loop (60 s, or until the test says stop): ended by its deadline or a signal. */
static void *dl_spin(void *arg) {
    atomic_fetch_add(&g_sh->ran[(intptr_t)arg], 1);
    spin_for(60.0);
    return arg;
}

static cf_future *submit_owned(cf_executor *ex, cf_fn fn, intptr_t i, double timeout) {
    FCHECK(i >= 0 && i < DL_TASKS);
    cf_task t = CF_TASK_INIT;
    t.fn = fn;
    t.arg = (void *)i;
    t.arg_free = count_arg_free;
    t.timeout = timeout;
    cf_future *f = NULL;
    FCHECK_STATUS(cf_submit_task(ex, &t, &f), CF_OK);
    return f;
}

/* The outcome of a future that must have its index as result. */
static void expect_ok(cf_future *f, intptr_t i, const char *what) {
    void *r = NULL;
    cf_status s = cf_future_result(f, 0, &r);
    int code = 0;
    const char *msg = NULL;
    if (s != CF_OK) cf_future_exception(f, 0, &code, &msg);
    FSOFT(s == CF_OK && (intptr_t)r == i, "%s %ld: %s (%s)", what, (long)i, cf_status_name(s), msg ? msg : "-");
}

/* The one child of this process right after a pool was made (no other pool is alive). */
static pid_t only_server(void) {
    pid_t kids[4];
    int n = fault_children_of(getpid(), kids, 4);
    FCHECK_EQ(n, 1);
    return kids[0];
}

/* The fork server `server` and its workers, once every killed worker is reaped (awaited:
 * the timer finishes a killed task's future before its proxy buries the worker): no
 * zombie, at most `max_workers` workers, each holding one socket and no other new
 * descriptor, mapping at most one watch; the server holds one socket and maps nothing.
 * Returns the number of workers. */
static int check_server_and_workers(pid_t server, int max_workers, const char *when) {
    pid_t kids[16];
    int n = 0, zombies = 0;
    double end = fault_now() + 10.0 * fault_scale();
    for (;;) {
        n = fault_children_of(server, kids, 16);
        zombies = 0;
        for (int i = 0; i < n && i < 16; i++) {
            char st;
            long pp;
            if (fault_proc_stat(kids[i], &st, &pp) && st == 'Z') zombies++;
        }
        if ((zombies == 0 && n <= max_workers) || fault_now() > end) break;
        fault_sleep(0.002);
    }
    FSOFT(zombies == 0 && n <= max_workers, "%s: the fork server has %d children, %d of them zombies (at most %d workers)",
          when, n, zombies, max_workers);
    char pid[24];
    fd_report r;
    for (int i = 0; i < n && i < 16; i++) {
        snprintf(pid, sizeof pid, "%ld", (long)kids[i]);
        inspect(pid, &r);
        int w = watch_mappings(pid);
        FSOFT(r.sockets == g_sh->base_sockets + 1 && r.pidfds == 0 && r.extra == 0 && w <= 1,
              "%s: idle worker %s holds %d socket(s), %d pidfd(s), %d other new fd(s), maps %d watches: %s", when, pid,
              r.sockets, r.pidfds, r.extra, w, r.list);
    }
    snprintf(pid, sizeof pid, "%ld", (long)server);
    inspect(pid, &r);
    FSOFT(r.sockets == g_sh->base_sockets + 1 && r.extra == 0,
          "%s: fork server %s holds %d socket(s) (expected %d), %d other new fd(s): %s", when, pid, r.sockets,
          g_sh->base_sockets + 1, r.extra, r.list);
    FSOFT(watch_mappings(pid) == 0 && arena_mappings(pid) == 0, "%s: fork server %s maps %d watches, %d arenas", when,
          pid, watch_mappings(pid), arena_mappings(pid));
    return n;
}

/* After every pool was freed: no child, the starting descriptors, no mapping of ours. */
static void check_all_gone(const char *when) {
    FAULT_CHECK_NO_CHILDREN();
    fd_report r;
    inspect("self", &r);
    FSOFT(r.sockets == g_sh->base_sockets && r.pidfds == 0 && r.extra == 0,
          "%s: the test process holds %d socket(s), %d pidfd(s), %d other new fd(s): %s", when, r.sockets, r.pidfds,
          r.extra, r.list);
    FSOFT(watch_mappings("self") == 0 && arena_mappings("self") == 0, "%s: the test process maps %d watches, %d arenas",
          when, watch_mappings("self"), arena_mappings("self"));
}

/* Rounds on one 2-worker pool, each: two blockers (60 ms, no deadline), four tasks with a
 * 20 ms deadline sent ahead behind them (the worker skips them, or the proxy drops them,
 * or the timer finds them queued), an endless task with a 100 ms deadline (killed with its
 * worker, or never started), and three tasks with a 60 s deadline behind it (sent again to
 * a new worker, each checking its descriptors and its one watch). */
enum { DL_ROUNDS = 25, DL_MAX_ROUNDS = 3 * DL_ROUNDS, DL_PER = 10 };

static void deadline_rounds(void) {
    fault_phase("deadlines: endless tasks killed with their workers, tasks skipped, 25 rounds (up to 75)");
    memset(g_sh->ran, 0, sizeof g_sh->ran);
    atomic_store(&g_arg_frees, 0);
    cf_executor *ex = process_pool(2, 0);
    pid_t server = only_server();
    int killed = 0, skipped_ahead = 0, not_started = 0, n_sub = 0;
    int overhead = -1, base_pid_extra = -1;
    /* Whether a 20 ms task is sent ahead to a busy worker (and skipped there) or held
     * in the queue depends on how the workers and their replacements were scheduled: in
     * some runs none of the first 25 rounds sends one ahead. More rounds, up to 75, until
     * one does. */
    int rounds = 0;
    for (int round = 0; round < DL_ROUNDS || (skipped_ahead == 0 && round < DL_MAX_ROUNDS); round++) {
        rounds++;
        intptr_t b = (intptr_t)round * DL_PER;
        cf_future *fs[DL_PER];
        fs[0] = submit_owned(ex, dl_block, b + 0, CF_FOREVER);
        fs[1] = submit_owned(ex, dl_block, b + 1, CF_FOREVER);
        for (int k = 2; k < 6; k++) fs[k] = submit_owned(ex, dl_check, b + k, 0.020);
        fs[6] = submit_owned(ex, dl_spin, b + 6, 0.100);
        for (int k = 7; k < DL_PER; k++) fs[k] = submit_owned(ex, dl_check, b + k, 60.0);
        n_sub += DL_PER;
        fault_sleep(0.008);
        bool ahead[DL_PER];
        for (int k = 0; k < DL_PER; k++) ahead[k] = cf_future_running(fs[k]);
        size_t nd = 0;
        cf_status s = cf_wait(fs, DL_PER, CF_ALL_COMPLETED, 30.0 * fault_scale(), NULL, &nd);
        FCHECK_MSG(s == CF_OK, "round %d: cf_wait: %s, %zu of %d done", round, cf_status_name(s), nd, DL_PER);
        expect_ok(fs[0], b + 0, "blocker");
        expect_ok(fs[1], b + 1, "blocker");
        for (int k = 2; k < 6; k++) {
            int code = 0;
            const char *msg = NULL;
            s = cf_future_exception(fs[k], 0, &code, &msg);
            if (s == CF_OK) {
                expect_ok(fs[k], b + k, "20 ms task that ran in time");
            } else {
                FSOFT(s == CF_DEADLINE && code == ETIMEDOUT && msg != NULL && strstr(msg, "before it started") != NULL &&
                          atomic_load(&g_sh->ran[b + k]) == 0,
                      "20 ms task %ld: %s (%s), ran %d", (long)(b + k), cf_status_name(s), msg ? msg : "-",
                      atomic_load(&g_sh->ran[b + k]));
                not_started++;
                skipped_ahead += ahead[k];
            }
        }
        {
            int code = 0;
            const char *msg = NULL;
            s = cf_future_exception(fs[6], 0, &code, &msg);
            int ran = atomic_load(&g_sh->ran[b + 6]);
            FSOFT(s == CF_DEADLINE && msg != NULL &&
                      strstr(msg, ran ? "which was killed (SIGKILL)" : "before it started") != NULL,
                  "endless task %ld (ran %d): %s (%s)", (long)(b + 6), ran, cf_status_name(s), msg ? msg : "-");
            killed += ran == 1;
        }
        for (int k = 7; k < DL_PER; k++) expect_ok(fs[k], b + k, "60 s task");
        for (int k = 0; k < DL_PER; k++) cf_future_release(fs[k]);

        /* every few rounds, with the pool idle: the server and its workers, and this
         * process's descriptors for the pool (its sockets less one per worker, its pidfds
         * and other new descriptors) the same as after the first round */
        if (round % 8 == 0 || round == DL_ROUNDS - 1) {
            char when[64];
            snprintf(when, sizeof when, "after deadline round %d", round);
            int workers = check_server_and_workers(server, 2, when);
            fd_report r;
            inspect("self", &r);
            int o = r.sockets - workers, pe = r.pidfds * 1000 + r.extra;
            if (overhead < 0) {
                overhead = o;
                base_pid_extra = pe;
            }
            FSOFT(o == overhead && pe == base_pid_extra,
                  "%s: this process holds %d socket(s) for %d worker(s), %d pidfd(s), %d other new fd(s) (after round 0: "
                  "%d sockets besides the workers', pidfds*1000+other %d): a descriptor leaks per round: %s",
                  when, r.sockets, workers, r.pidfds, r.extra, overhead, base_pid_extra, r.list);
            int w = watch_mappings("self");
            FSOFT(w <= workers, "%s: this process maps %d watches for %d workers", when, w, workers);
        }
    }
    fprintf(stderr,
            "   %d rounds: %d endless tasks killed with their workers, %d 20 ms tasks never started (%d of them sent "
            "ahead)\n",
            rounds, killed, not_started, skipped_ahead);
    FSOFT(killed >= DL_ROUNDS / 2, "only %d of %d endless tasks were killed running", killed, DL_ROUNDS);
    FSOFT(skipped_ahead >= 1, "no 20 ms task was sent ahead to a worker and skipped there in %d rounds", rounds);
    cf_executor_free(ex);
    FSOFT(atomic_load(&g_arg_frees) == n_sub, "arg_free called %d times for %d tasks", atomic_load(&g_arg_frees),
          n_sub);
    check_all_gone("after the deadline rounds");
}

/* cf_executor_terminate_workers / cf_executor_kill_workers on a pool with two workers
 * busy in endless loops (one of them under a 60 s deadline, so that its worker has a
 * watch), tasks sent ahead and queued (some with deadlines of 5 ms): right after the call
 * no worker is left (not even a zombie), this process holds only what the empty pool
 * held and maps no watch and no arena; after the free, nothing at all. Sometimes after
 * cf_executor_shutdown without wait, sometimes called twice. */
static void stop_rounds(void) {
    enum { ROUNDS = 8, PER = 18 };
    memset(g_sh->ran, 0, sizeof g_sh->ran);
    atomic_store(&g_arg_frees, 0);
    int n_sub = 0;
    for (int round = 0; round < ROUNDS; round++) {
        bool term = round % 2 == 0;
        const char *sig = term ? "SIGTERM" : "SIGKILL";
        char when[96];
        snprintf(when, sizeof when, "%s round %d", term ? "terminate_workers" : "kill_workers", round);
        fault_phase(when);
        cf_executor *ex = process_pool(2, 0);
        pid_t server = only_server();
        fd_report empty;
        inspect("self", &empty);
        intptr_t b = (intptr_t)round * PER;
        cf_future *fs[PER];
        fs[0] = submit_owned(ex, dl_spin, b + 0, CF_FOREVER);
        fs[1] = submit_owned(ex, dl_spin, b + 1, 60.0);
        for (int k = 2; k < PER; k++)
            fs[k] = submit_owned(ex, k % 3 == 0 ? dl_block : dl_check, b + k, k % 3 == 0 ? CF_FOREVER : k % 3 == 1 ? 60.0 : 0.005);
        n_sub += PER;
        /* the first endless task runs, and the second worker has started something */
        double end = fault_now() + 10.0 * fault_scale();
        for (;;) {
            int started = 0;
            for (int k = 0; k < PER; k++) started += atomic_load(&g_sh->ran[b + k]);
            if ((atomic_load(&g_sh->ran[b]) == 1 && started >= 2) || fault_now() > end) break;
            fault_sleep(0.001);
        }
        FCHECK(atomic_load(&g_sh->ran[b]) == 1);
        fault_sleep(0.005); /* tasks sent ahead */
        if (round % 3 == 2) FCHECK_STATUS(cf_executor_shutdown(ex, false, false), CF_OK);
        FCHECK_STATUS(term ? cf_executor_terminate_workers(ex) : cf_executor_kill_workers(ex), CF_OK);
        if (round % 4 == 3) FCHECK_STATUS(term ? cf_executor_kill_workers(ex) : cf_executor_terminate_workers(ex), CF_OK);
        /* returned once every worker is reaped (header): the fork server, if it is still
         * there (it may be reaped already: the shutdown's wait closes it), has no child
         * and is no zombie; this process holds what the empty pool held (or, once the
         * server is gone, what it started with) and maps no watch and no arena */
        pid_t kids[8];
        int n = fault_children_of(getpid(), kids, 8);
        FSOFT(n == 0 || (n == 1 && kids[0] == server), "%s: %d children after the call returned", when, n);
        if (n == 1) {
            char st = '?';
            long pp;
            FSOFT(fault_proc_stat(server, &st, &pp) && st != 'Z', "%s: the fork server is a zombie (%c)", when, st);
            int nw = fault_children_of(server, kids, 8);
            FSOFT(nw == 0, "%s: the fork server still has %d children after the call returned", when, nw);
        }
        fd_report r;
        inspect("self", &r);
        bool as_empty = r.sockets == empty.sockets && r.pidfds == empty.pidfds && r.extra == empty.extra;
        bool as_base = r.sockets == g_sh->base_sockets && r.pidfds == 0 && r.extra == 0;
        FSOFT(as_empty || (n == 0 && as_base),
              "%s: this process holds %d socket(s), %d pidfd(s), %d other new fd(s) (the empty pool: %d, %d, %d): %s",
              when, r.sockets, r.pidfds, r.extra, empty.sockets, empty.pidfds, empty.extra, r.list);
        FSOFT(watch_mappings("self") == 0 && arena_mappings("self") == 0, "%s: this process maps %d watches, %d arenas",
              when, watch_mappings("self"), arena_mappings("self"));
        FSOFT(cf_executor_worker_count(ex) == 0, "%s: %zu workers", when, cf_executor_worker_count(ex));
        int broken = 0, cancelled = 0, deadline = 0;
        for (int k = 0; k < PER; k++) {
            FSOFT(cf_future_done(fs[k]), "%s: task %d not done", when, k);
            int code = 0;
            const char *msg = NULL;
            cf_status s = cf_future_exception(fs[k], 0, &code, &msg);
            int ran = atomic_load(&g_sh->ran[b + k]);
            bool named = s == CF_BROKEN && msg != NULL && strstr(msg, sig) != NULL;
            bool ok;
            if (k < 2) /* endless: running, or sent ahead behind the other one */
                ok = named;
            else if (s == CF_OK)
                ok = ran == 1;
            else
                ok = named || (s == CF_CANCELLED && ran == 0) || (s == CF_DEADLINE && k % 3 == 2);
            FSOFT(ok, "%s: task %d: %s (%s), ran %d", when, k, cf_status_name(s), msg ? msg : "-", ran);
            if (s == CF_OK) expect_ok(fs[k], b + k, "task that ran before the workers were stopped");
            broken += s == CF_BROKEN;
            cancelled += s == CF_CANCELLED;
            deadline += s == CF_DEADLINE;
        }
        cf_future *late = NULL;
        FSOFT(cf_submit(ex, dl_check, NULL, &late) == CF_SHUTDOWN && late == NULL, "%s: a submit after it", when);
        fprintf(stderr, "   %d CF_BROKEN, %d CF_CANCELLED, %d CF_DEADLINE\n", broken, cancelled, deadline);
        for (int k = 0; k < PER; k++) cf_future_release(fs[k]);
        cf_executor_free(ex);
        check_all_gone(when);
    }
    FSOFT(atomic_load(&g_arg_frees) == n_sub, "arg_free called %d times for %d tasks", atomic_load(&g_arg_frees),
          n_sub);
}

int main(void) {
    setvbuf(stderr, NULL, _IONBF, 0);
    fault_watchdog(200);
    g_sh = fault_shm(sizeof *g_sh);
    record_base();
    fprintf(stderr, "   the test process starts with %d descriptor(s), %d of them sockets\n", g_sh->n_base,
            g_sh->base_sockets);

    fault_phase("pool A (max_tasks_per_child = 1) and a thread pool");
    g_a = process_pool(3, 1);
    cf_executor_options to;
    memset(&to, 0, sizeof to);
    to.max_workers = 3;
    FCHECK_STATUS(cf_thread_pool_new(&to, &g_t), CF_OK);
    for (int i = 0; i < 20; i++) submit_to(g_a);

    fault_phase("pool D's worker gets an arena, which this process maps while B and C are made");
    cf_executor *d = process_pool(1, 0);
    {
        cf_future *f = NULL;
        FCHECK_STATUS(cf_submit_bytes(d, check_my_fds_bytes, g_big, sizeof g_big, &f), CF_OK);
        FCHECK_STATUS(cf_future_wait(f, 60.0), CF_OK);
        keep(f);
    }
    FSOFT(arena_mappings("self") >= 1, "pool D's arena is not mapped in this process");

    pthread_t ta, tb;
#ifdef FAULT_UNDER_ASAN
    /* Under ASan the later pools are made while no other thread of ours runs: GCC's
     * libasan allocator is not fork-safe, and a fork server forked while another thread
     * is inside malloc would deadlock its workers (see c_tests/stress/stress.c). */
    g_b = process_pool(2, 2);
    cf_executor *c_early = process_pool(2, 0);
    fault_phase("submitters start (ASan build: pools B and C made before them)");
    FCHECK(pthread_create(&ta, NULL, submitter_a, NULL) == 0);
    FCHECK(pthread_create(&tb, NULL, submitter_b, NULL) == 0);
#else
    fault_phase("pool B created while A's workers are being replaced");
    FCHECK(pthread_create(&ta, NULL, submitter_a, NULL) == 0);
    FCHECK(pthread_create(&tb, NULL, submitter_b, NULL) == 0);
    g_b = process_pool(2, 2);
#endif
    atomic_store(&g_b_ready, 1);
    for (int i = 0; i < TASKS_T; i++) {
        cf_future *f = NULL;
        FCHECK_STATUS(cf_submit(g_t, submit_from_thread_pool, NULL, &f), CF_OK);
        keep(f);
        if (i == TASKS_T / 2) {
            fault_phase("pool C created, used and freed in the middle");
#ifdef FAULT_UNDER_ASAN
            cf_executor *c = c_early;
#else
            cf_executor *c = process_pool(2, 0);
#endif
            for (int k = 0; k < 10; k++) {
                cf_future *g = NULL;
                FCHECK_STATUS(k % 2 ? cf_submit(c, check_my_fds, NULL, &g)
                                    : cf_submit_bytes(c, check_my_fds_bytes, g_big, sizeof g_big, &g),
                              CF_OK);
                keep(g);
            }
            cf_executor_free(c);
        }
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cf_executor_free(d);

    fault_phase("every task's view of its descriptors");
    pthread_mutex_lock(&g_mu);
    int n = g_nfs;
    pthread_mutex_unlock(&g_mu);
    int bad = 0, tasks = 0, byte_tasks = 0;
    /* the thread pool's futures first: their tasks submit more to A */
    for (int i = 0; i < n; i++) FCHECK_STATUS(cf_future_wait(g_fs[i], 60.0), CF_OK);
    pthread_mutex_lock(&g_mu);
    n = g_nfs;
    pthread_mutex_unlock(&g_mu);
    long pids[2 * (TASKS_A + TASKS_B + TASKS_T)];
    int npids = 0;
    for (int i = 0; i < n; i++) {
        int code = 0;
        const char *msg = NULL;
        cf_status s = cf_future_exception(g_fs[i], 60.0, &code, &msg);
        FCHECK_MSG(s != CF_TIMEOUT, "a task never finished");
        if (s == CF_OK) {
            void *r = NULL;
            cf_bytes b;
            if (cf_future_result_bytes(g_fs[i], 0, &b) == CF_OK) {
                FCHECK(b.len == sizeof(intptr_t));
                intptr_t pid;
                memcpy(&pid, b.data, sizeof pid);
                r = (void *)pid;
                byte_tasks++;
            } else {
                FCHECK_STATUS(cf_future_result(g_fs[i], 0, &r), CF_OK);
            }
            if (r != NULL) {
                pids[npids++] = (long)(intptr_t)r;
                tasks++;
            }
        } else {
            if (bad < 10) fprintf(stderr, "   %s: %s\n", cf_status_name(s), msg ? msg : "(no message)");
            bad++;
        }
    }
    long distinct = 0;
    for (int i = 0; i < npids; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = pids[j] == pids[i];
        distinct += !seen;
    }
    fprintf(stderr, "   %d tasks saw clean descriptors, in %ld distinct worker processes; %d did not\n", tasks,
            distinct, bad);
    FSOFT(bad == 0, "%d worker(s) held descriptors they should not (see above)", bad);
    FSOFT(byte_tasks >= TASKS_A / 3, "only %d byte tasks (through the arenas) ran", byte_tasks);
    FSOFT(distinct >= TASKS_A / 2, "only %ld distinct workers: max_tasks_per_child = 1 did not replace them", distinct);

    fault_phase("the idle fork servers hold one socket each");
    pid_t servers[8];
    int ns = fault_children_of(getpid(), servers, 8);
    FSOFT(ns == 2, "%d children (expected the fork servers of A and B)", ns);
    for (int i = 0; i < ns && i < 8; i++) {
        char pid[24];
        snprintf(pid, sizeof pid, "%ld", (long)servers[i]);
        fd_report r;
        inspect(pid, &r);
        fprintf(stderr, "   fork server %s: %d socket(s), %d pidfd(s), %d other: %s\n", pid, r.sockets, r.pidfds,
                r.extra, r.list);
        FSOFT(r.sockets == g_sh->base_sockets + 1, "fork server %s holds %d sockets (expected %d): %s", pid,
              r.sockets, g_sh->base_sockets + 1, r.list);
        FSOFT(r.extra == 0, "fork server %s holds %d other new descriptors: %s", pid, r.extra, r.list);
        FSOFT(arena_mappings(pid) == 0, "fork server %s maps %d arenas", pid, arena_mappings(pid));
    }

    fault_phase("free everything");
    for (int i = 0; i < n; i++) cf_future_release(g_fs[i]);
    cf_executor_free(g_t);
    cf_executor_free(g_a);
    cf_executor_free(g_b);
    FAULT_CHECK_NO_CHILDREN();
    fd_report r;
    inspect("self", &r);
    FSOFT(arena_mappings("self") == 0, "after every pool was freed the test process maps %d arenas",
          arena_mappings("self"));
    FSOFT(r.sockets == g_sh->base_sockets && r.pidfds == 0 && r.extra == 0,
          "after every pool was freed the test process holds %d socket(s), %d pidfd(s), %d other new fd(s): %s",
          r.sockets, r.pidfds, r.extra, r.list);

    deadline_rounds();
    stop_rounds();
    printf("fd_hygiene: %s\n", fault_soft_failures ? "FAILED" : "OK");
    return fault_soft_failures ? 1 : 0;
}
