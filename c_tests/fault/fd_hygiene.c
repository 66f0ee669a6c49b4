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
 */
#define _GNU_SOURCE
#include "fault_util.h"

#define MAX_BASE 256

typedef struct base_fd {
    int fd;
    char target[120];
} base_fd;

typedef struct shared {
    int n_base;
    int base_sockets;
    base_fd base[MAX_BASE];
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

/* Number of mappings of the library's arenas (memfd "cfutures-arena") in process `pid`. */
static int arena_mappings(const char *pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/maps", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) n += strstr(line, "cfutures-arena") != NULL;
    fclose(f);
    return n;
}

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
    printf("fd_hygiene: %s\n", fault_soft_failures ? "FAILED" : "OK");
    return fault_soft_failures ? 1 : 0;
}
