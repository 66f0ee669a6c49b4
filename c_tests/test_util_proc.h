/* Helpers for the process-pool tests (c_tests/test_process_*.c), on top of test_util.h.
 *
 * - Memory shared with worker processes (an anonymous MAP_SHARED mapping made BEFORE
 *   cf_process_pool_new, so that the fork server and every worker inherit it).
 * - Counters in that memory that can be awaited across processes without polling
 *   (Linux futex): px_add() bumps and wakes, px_wait_ge() sleeps until a value is reached.
 *   Nothing holds a lock, so a worker killed at any point cannot wedge the parent.
 * - Pid checks: is a process gone, wait (bounded) until every recorded worker pid is
 *   gone, and check that this process has no child left (no leaked process, no zombie).
 * - A watchdog that turns a hang into a failure naming the phase that hung.
 *
 * Define _GNU_SOURCE before including anything. Linux only. Every function is
 * `static inline`, so a test that does not use one gets no unused-function warning.
 * Tasks that run in workers must not use CHECK (a failed CHECK would exit the worker and
 * show up as CF_BROKEN): they report problems with cf_raise instead. */
#ifndef CF_TEST_UTIL_PROC_H
#define CF_TEST_UTIL_PROC_H

#include <cfutures.h>

#include "test_util.h"

#include <dirent.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

/* ---- integers in pointers, comparisons that print their values ---------------------- */

#define PX_I2P(x) ((void *)(intptr_t)(x))
#define PX_P2I(p) ((intptr_t)(p))

#define PX_CHECK_EQ(got, want)                                                          \
    do {                                                                                \
        long long px_got_ = (long long)(got);                                           \
        long long px_want_ = (long long)(want);                                         \
        if (px_got_ != px_want_) {                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (got %lld, expected %lld)\n",  \
                    __FILE__, __LINE__, #got, #want, px_got_, px_want_);                \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* `s` is not NULL and contains `sub`. */
#define PX_CHECK_CONTAINS(s, sub)                                                       \
    do {                                                                                \
        const char *px_s_ = (s);                                                        \
        const char *px_sub_ = (sub);                                                    \
        if (px_s_ == NULL || strstr(px_s_, px_sub_) == NULL) {                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s contains \"%s\" (got %s%s%s)\n",    \
                    __FILE__, __LINE__, #s, px_sub_, px_s_ ? "\"" : "",                 \
                    px_s_ ? px_s_ : "NULL", px_s_ ? "\"" : "");                          \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define PX_CHECK_STREQ(got, want)                                                       \
    do {                                                                                \
        const char *px_g_ = (got);                                                      \
        const char *px_w_ = (want);                                                     \
        if (px_g_ == NULL || strcmp(px_g_, px_w_) != 0) {                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s == \"%s\" (got %s%s%s)\n",          \
                    __FILE__, __LINE__, #got, px_w_, px_g_ ? "\"" : "",                 \
                    px_g_ ? px_g_ : "NULL", px_g_ ? "\"" : "");                          \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* ---- byte data: a seeded pattern, and byte tasks that reverse it XOR 0x5A ------------ */

static inline unsigned char px_pattern(size_t i, unsigned seed) {
    return (unsigned char)((i * 131u + seed * 7u + (i >> 8) + (i >> 16) + (i >> 24)) & 0xffu);
}
static inline void px_fill(unsigned char *buf, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) buf[i] = px_pattern(i, seed);
}

/* out[i] = in[len - 1 - i] ^ 0x5A. */
static inline void px_rev_xor_into(unsigned char *out, const void *in, size_t len) {
    const unsigned char *p = in;
    for (size_t i = 0; i < len; i++) out[i] = (unsigned char)(p[len - 1 - i] ^ 0x5Au);
}

/* Byte task: the input reversed, XOR 0x5A (NULL/0 for an empty input); raises EFAULT when
 * the input pointer does not match its length (NULL exactly when it is 0). */
static inline void *px_rev_xor(const void *in, size_t len, size_t *out_len) {
    if ((len == 0) != (in == NULL)) return cf_raise(EFAULT, "input pointer does not match its length");
    if (len == 0) {
        *out_len = 0;
        return NULL;
    }
    unsigned char *out = malloc(len);
    if (!out) return cf_raise(ENOMEM, "malloc");
    px_rev_xor_into(out, in, len);
    *out_len = len;
    return out;
}

/* Byte task: each byte b becomes b, b+1, b+2 (a result three times the input). */
static inline void *px_triple(const void *in, size_t len, size_t *out_len) {
    const unsigned char *p = in;
    unsigned char *out = malloc(3 * len + 1);
    if (!out) return cf_raise(ENOMEM, "malloc");
    for (size_t i = 0; i < len; i++) {
        out[3 * i] = p[i];
        out[3 * i + 1] = (unsigned char)(p[i] + 1u);
        out[3 * i + 2] = (unsigned char)(p[i] + 2u);
    }
    *out_len = 3 * len;
    return out;
}

/* Byte task: 8 bytes, the sum of the input bytes (a uint64_t). */
static inline void *px_sum(const void *in, size_t len, size_t *out_len) {
    const unsigned char *p = in;
    uint64_t *out = malloc(sizeof *out);
    if (!out) return cf_raise(ENOMEM, "malloc");
    *out = 0;
    for (size_t i = 0; i < len; i++) *out += p[i];
    *out_len = sizeof *out;
    return out;
}

/* Checks px_triple's output for `n` input bytes px_fill'ed with `seed`: each byte v as
 * v, v + 1, v + 2. */
static inline void px_check_triple(const cf_bytes *b, size_t n, unsigned seed) {
    PX_CHECK_EQ(b->len, 3 * n);
    const unsigned char *t = b->data;
    for (size_t i = 0; i < n; i++) {
        unsigned char v = px_pattern(i, seed);
        if (t[3 * i] != v || t[3 * i + 1] != (unsigned char)(v + 1u) ||
            t[3 * i + 2] != (unsigned char)(v + 2u)) {
            fprintf(stderr, "tripled byte %zu of %zu (seed %u) wrong\n", i, n, seed);
            CHECK(0);
        }
    }
}

/* Checks `len` bytes of px_rev_xor's output for an input px_fill'ed with `seed`. */
static inline void px_check_rev_xor(const unsigned char *out, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) {
        unsigned char want = (unsigned char)(px_pattern(len - 1 - i, seed) ^ 0x5Au);
        if (out[i] != want) {
            fprintf(stderr, "byte %zu of %zu (seed %u): got 0x%02x, expected 0x%02x\n", i, len,
                    seed, out[i], want);
            CHECK(out[i] == want);
        }
    }
}

/* ---- time bounds ------------------------------------------------------------------- */

/* Scale for the upper time bounds (never the lower ones): CF_TEST_TIME_SCALE=10 under
 * valgrind or on a very slow machine. */
static inline double px_scale(void) {
    const char *s = getenv("CF_TEST_TIME_SCALE");
    double v = s ? atof(s) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* A timeout for something that must happen: far above any hiccup of a loaded machine,
 * far below CTest's limit, so that a wrong library fails with CF_TIMEOUT, not a hang. */
#define PX_LONG (20.0 * px_scale())
/* How long a process may take to disappear once it has been told to. */
#define PX_GONE (10.0 * px_scale())
/* How long a task in a worker waits on a shared counter before giving up (the test then
 * fails instead of leaving the worker blocked forever). */
#define PX_TASK_LIMIT 60.0

/* Waits for a byte-task future whose result is one uint64_t (px_sum's, or a hash) and
 * checks that it is `want`. */
static inline void px_check_u64_result(cf_future *f, uint64_t want) {
    cf_bytes b;
    CHECK_OK(cf_future_result_bytes(f, PX_LONG, &b));
    PX_CHECK_EQ(b.len, 8);
    uint64_t got;
    memcpy(&got, b.data, 8);
    CHECK(got == want);
}

/* ---- progress, watchdog ------------------------------------------------------------ */

static const char *volatile px_phase_ = "start";

/* Name the current phase (printed on stderr, and by the watchdog if it hangs there). */
static inline void px_phase(const char *name) {
    px_phase_ = name;
    fprintf(stderr, "-- %s\n", name);
}

static inline void px_watchdog_fired_(int sig) {
    (void)sig;
    static const char a[] = "watchdog: the test did not finish in time, hung in phase: ";
    const char *p = px_phase_;
    ssize_t ignored = write(2, a, sizeof a - 1);
    ignored = write(2, p, strlen(p));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(3);
}

/* Turn a hang into a failure after `seconds` (scaled). CF_TEST_NO_WATCHDOG=1 disables
 * it. The alarm is not inherited by forked processes. */
static inline void px_watchdog(unsigned seconds) {
    const char *off = getenv("CF_TEST_NO_WATCHDOG");
    if (off != NULL && off[0] != '\0' && strcmp(off, "0") != 0) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = px_watchdog_fired_;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)((double)seconds * px_scale()));
}

/* No core files from workers that the tests crash on purpose. */
static inline void px_no_core_dumps(void) {
    struct rlimit rl;
    rl.rlim_cur = 0;
    rl.rlim_max = 0;
    if (getrlimit(RLIMIT_CORE, &rl) == 0) {
        rl.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &rl);
    }
}

/* ---- shared memory and cross-process counters ------------------------------------- */

/* Zeroed memory shared with every process forked later (call before the pool exists). */
static inline void *px_shm_new(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    return p;
}

static inline void px_shm_free(void *p, size_t size) { CHECK(munmap(p, size) == 0); }

static inline long px_futex_(atomic_int *a, int op, int val, const struct timespec *ts) {
    return syscall(SYS_futex, (void *)a, op, val, ts, NULL, 0);
}

/* Adds n to *a and wakes every process waiting on it; returns the new value. */
static inline int px_add(atomic_int *a, int n) {
    int v = atomic_fetch_add(a, n) + n;
    px_futex_(a, FUTEX_WAKE, INT_MAX, NULL);
    return v;
}

/* Waits until *a >= want, at most `limit` seconds; returns true if it got there.
 * Works across processes for memory from px_shm_new (and within one for any memory). */
static inline bool px_wait_ge(atomic_int *a, int want, double limit) {
    double end = now_s() + limit;
    for (;;) {
        int cur = atomic_load(a);
        if (cur >= want) return true;
        double left = end - now_s();
        if (left <= 0) return false;
        struct timespec ts;
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
        px_futex_(a, FUTEX_WAIT, cur, &ts);
    }
}

/* A gate in shared memory: tasks record their pid, count themselves in `started`, block
 * until `open` is at least 1, count themselves in `finished`. Once `started` >= n, n
 * tasks have recorded their pid (with one task: in pids[0]). */
typedef struct px_gate {
    atomic_int claimed; /* slots of pids[] taken */
    atomic_int started;
    atomic_int open;
    atomic_int finished;
    atomic_int pids[64]; /* pid of the k-th task to start, k < 64 */
} px_gate;

/* Runs in a worker: records its pid, waits for the gate, returns the worker's pid. */
static inline void *px_gate_task(void *arg) {
    px_gate *g = (px_gate *)arg;
    int k = atomic_fetch_add(&g->claimed, 1);
    if (k >= 0 && k < 64) atomic_store(&g->pids[k], (int)getpid());
    px_add(&g->started, 1);
    if (!px_wait_ge(&g->open, 1, PX_TASK_LIMIT)) return cf_raise(ETIMEDOUT, "gate never opened");
    px_add(&g->finished, 1);
    return PX_I2P(getpid());
}

/* ---- common tasks ------------------------------------------------------------------ */

static inline void *px_task_getpid(void *arg) {
    (void)arg;
    return PX_I2P(getpid());
}

static inline void *px_task_ident(void *arg) { return arg; }

/* ---- executors and futures --------------------------------------------------------- */

static inline cf_executor *px_pool(size_t max_workers, size_t max_tasks_per_child) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = max_workers;
    o.max_tasks_per_child = max_tasks_per_child;
    cf_executor *ex = NULL;
    CHECK_OK(cf_process_pool_new(&o, &ex));
    CHECK(ex != NULL);
    return ex;
}

static inline cf_future *px_submit(cf_executor *ex, cf_fn fn, void *arg) {
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, fn, arg, &f));
    CHECK(f != NULL);
    return f;
}

/* The integer result of f, which must succeed within PX_LONG. */
static inline intptr_t px_result_(cf_future *f, const char *file, int line) {
    void *r = NULL;
    cf_status st = cf_future_result(f, PX_LONG, &r);
    if (st != CF_OK) {
        int code = 0;
        const char *msg = NULL;
        if (st == CF_TASK_FAILED || st == CF_BROKEN) cf_future_exception(f, 0, &code, &msg);
        fprintf(stderr, "%s:%d: cf_future_result returned %s, expected CF_OK (code %d, %s)\n",
                file, line, cf_status_name(st), code, msg ? msg : "no message");
        exit(1);
    }
    return PX_P2I(r);
}
#define px_result(f) px_result_((f), __FILE__, __LINE__)

/* A status and its error: cf_future_exception within PX_LONG. */
static inline cf_status px_outcome(cf_future *f, int *code, const char **msg) {
    *code = 0;
    *msg = NULL;
    return cf_future_exception(f, PX_LONG, code, msg);
}

/* ---- pids -------------------------------------------------------------------------- */

/* Number of distinct values in v[0..n). */
static inline int px_cmp_long_(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}
static inline size_t px_distinct(const long *v, size_t n) {
    if (n == 0) return 0;
    long *c = malloc(n * sizeof *c);
    CHECK(c != NULL);
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, px_cmp_long_);
    size_t k = 1;
    for (size_t i = 1; i < n; i++) k += c[i] != c[i - 1];
    free(c);
    return k;
}

/* Reads state and parent of `pid` from /proc; false if there is no such process. */
static inline bool px_proc_stat(pid_t pid, char *state, long *ppid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (p == NULL) return false;
    char st = '?';
    long pp = -1;
    if (sscanf(p + 1, " %c %ld", &st, &pp) != 2) return false;
    *state = st;
    *ppid = pp;
    return true;
}

/* The process does not exist any more (it exited and was reaped). */
static inline bool px_pid_gone(pid_t pid) { return kill(pid, 0) == -1 && errno == ESRCH; }

/* Prints every process whose parent is this process. */
static inline void px_print_children(void) {
    DIR *d = opendir("/proc");
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0) continue;
        char st;
        long pp;
        if (px_proc_stat((pid_t)pid, &st, &pp) && pp == (long)getpid())
            fprintf(stderr, "    child %ld, state %c\n", pid, st);
    }
    closedir(d);
}

/* Waits (bounded polling: the kernel offers no way to await a process that is not our
 * child being reaped) until every pid in pids[0..n) is gone. On failure prints what is
 * left and returns false. pids <= 0 are skipped. */
static inline bool px_await_pids_gone(const long *pids, size_t n, double limit) {
    double end = now_s() + limit;
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++)
            if (pids[i] > 0 && !px_pid_gone((pid_t)pids[i])) left++;
        if (left == 0) return true;
        if (now_s() > end) break;
        sleep_s(0.002);
    }
    for (size_t i = 0; i < n; i++) {
        if (pids[i] <= 0 || px_pid_gone((pid_t)pids[i])) continue;
        char st = '?';
        long pp = -1;
        if (px_proc_stat((pid_t)pids[i], &st, &pp))
            fprintf(stderr, "    worker pid %ld still exists: state %c, parent %ld%s\n", pids[i],
                    st, pp,
                    st == 'Z' ? (pp == 1 ? " (a zombie left to init: its parent exited "
                                           "without reaping it)"
                                         : " (a zombie not reaped by its parent)")
                              : " (still running)");
        else
            fprintf(stderr, "    worker pid %ld still exists\n", pids[i]);
    }
    return false;
}

#define PX_CHECK_PIDS_GONE(pids, n)                                                     \
    do {                                                                                \
        if (!px_await_pids_gone((pids), (n), PX_GONE)) {                                \
            fprintf(stderr, "%s:%d: CHECK failed: worker processes %s gone within %.0fs\n", \
                    __FILE__, __LINE__, #pids, PX_GONE);                                \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* After cf_executor_free (and with nothing else forked by the test still around): this
 * process has no child at all. A child still running is waited for (bounded poll); a
 * child that is a zombie means the library left it unreaped, which fails at once. */
static inline void px_check_no_children_(const char *file, int line) {
    double end = now_s() + PX_GONE;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(-1, &status, WNOHANG);
        if (r == -1 && errno == ECHILD) return;
        if (r > 0) {
            fprintf(stderr,
                    "%s:%d: CHECK failed: the library left child %ld unreaped (a zombie; "
                    "status 0x%x)\n",
                    file, line, (long)r, (unsigned)status);
            exit(1);
        }
        if (r == -1) {
            fprintf(stderr, "%s:%d: waitpid failed: %s\n", file, line, strerror(errno));
            exit(1);
        }
        if (now_s() > end) {
            fprintf(stderr, "%s:%d: CHECK failed: a child process is still running %.0fs "
                            "after cf_executor_free:\n", file, line, PX_GONE);
            px_print_children();
            exit(1);
        }
        sleep_s(0.002);
    }
}
#define PX_CHECK_NO_CHILDREN() px_check_no_children_(__FILE__, __LINE__)

/* Number of open file descriptors of this process. */
static inline int px_count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

/* CPUs this process may run on (affinity) and CPUs online. */
static inline long px_cpus_affinity(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    return CPU_COUNT(&set);
}
static inline long px_cpus_online(void) { return sysconf(_SC_NPROCESSORS_ONLN); }

#endif
