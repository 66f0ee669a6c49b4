/* Helpers for the fault-injection tests in c_tests/fault/.
 *
 * - FCHECK*: a failed check prints file, line, the expression (and values) and exits 1.
 * - A watchdog (alarm) that turns a hang into a failure naming the phase that hung.
 * - Scenarios run in a forked child each (fault_run): resource limits and privilege
 *   drops stay in the child, a crash or a hang of one scenario is reported with its
 *   signal (and the child's process group is killed), and the others still run.
 * - RLIMIT_NPROC made to bite: as root in an otherwise unused uid, else in a new user
 *   namespace, with the number of tasks already counted found by calibration.
 * - Counting threads, children, and checking that no child process is left.
 *
 * Define _GNU_SOURCE before including anything. Linux only. Everything is static, and
 * functions are `static inline` so that a test not using one gets no warning. */
#ifndef CF_FAULT_UTIL_H
#define CF_FAULT_UTIL_H

#include <cfutures.h>

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FAULT_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FAULT_UNDER_ASAN 1
#endif
#endif

/* CTest's SKIP_RETURN_CODE for these tests. */
#define FAULT_SKIP 77

#define FCHECK(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define FCHECK_MSG(cond, ...)                                                           \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define FCHECK_STATUS(got, want)                                                        \
    do {                                                                                \
        cf_status fgot_ = (got);                                                        \
        cf_status fwant_ = (want);                                                      \
        if (fgot_ != fwant_) {                                                          \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (errno %d: %s)\n",      \
                    __FILE__, __LINE__, #got, cf_status_name(fgot_),                    \
                    cf_status_name(fwant_), errno, strerror(errno));                    \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define FCHECK_EQ(got, want)                                                            \
    do {                                                                                \
        long long fg_ = (long long)(got), fw_ = (long long)(want);                      \
        if (fg_ != fw_) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (got %lld, expected %lld)\n", \
                    __FILE__, __LINE__, #got, #want, fg_, fw_);                         \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* A failed check that lets the scenario go on (its other checks still run); the
 * scenario then ends with `return fault_soft_failures ? 1 : 0;`. */
static int fault_soft_failures __attribute__((unused));
#define FSOFT(cond, ...)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            fault_soft_failures++;                                                      \
        }                                                                               \
    } while (0)

static inline double fault_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void fault_sleep(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Scale for time limits: CF_TEST_TIME_SCALE=10 under valgrind or on a slow machine. */
static inline double fault_scale(void) {
    const char *s = getenv("CF_TEST_TIME_SCALE");
    double v = s ? atof(s) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* ---- phases and the watchdog ---------------------------------------------------------- */

static const char *volatile fault_phase_ = "start";

static inline void fault_phase(const char *name) {
    fault_phase_ = name;
    fprintf(stderr, "-- %s\n", name);
}

static inline void fault_watchdog_fired_(int sig) {
    (void)sig;
    static const char a[] = "watchdog: did not finish in time, hung in phase: ";
    const char *p = fault_phase_;
    ssize_t ignored = write(2, a, sizeof a - 1);
    ignored = write(2, p, strlen(p));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(3);
}

/* A hang becomes exit status 3 after `seconds` (scaled). Not inherited across fork. */
static inline void fault_watchdog(unsigned seconds) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fault_watchdog_fired_;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)((double)seconds * fault_scale()));
}

static inline void fault_no_core_dumps(void) {
    struct rlimit rl = {0, 0};
    if (getrlimit(RLIMIT_CORE, &rl) == 0) {
        rl.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &rl);
    }
}

/* ---- scenarios in child processes ----------------------------------------------------- */

typedef struct fault_result {
    int status;     /* wait status */
    bool hung;      /* killed by us after the time limit */
    double seconds; /* how long it ran */
} fault_result;

/* Runs fn(arg) in a forked child (its own process group), at most `limit` seconds
 * (scaled). The child's exit status is fn's return value. Prints a line saying how it
 * ended. A child still running at the limit is killed with its whole process group. */
static inline fault_result fault_run(const char *name, int (*fn)(void *), void *arg, double limit) {
    fault_result r = {0, false, 0};
    fflush(stdout);
    fflush(stderr);
    double start = fault_now();
    pid_t pid = fork();
    FCHECK(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        alarm(0);
        signal(SIGALRM, SIG_DFL);
        int rc = fn(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    setpgid(pid, pid); /* (also done by the child: whichever runs first) */
    double end = start + limit * fault_scale();
    for (;;) {
        int st = 0;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            r.status = st;
            break;
        }
        FCHECK(w == 0 || (w < 0 && errno == EINTR));
        if (fault_now() > end) {
            r.hung = true;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            r.status = st;
            break;
        }
        fault_sleep(0.005);
    }
    /* whatever the scenario left in its process group goes too */
    kill(-pid, SIGKILL);
    r.seconds = fault_now() - start;
    if (r.hung)
        fprintf(stderr, "== %s: HUNG (killed after %.0fs)\n", name, limit * fault_scale());
    else if (WIFSIGNALED(r.status))
        fprintf(stderr, "== %s: CRASHED with signal %d (%s) after %.2fs\n", name,
                WTERMSIG(r.status), strsignal(WTERMSIG(r.status)), r.seconds);
    else if (WEXITSTATUS(r.status) == FAULT_SKIP)
        fprintf(stderr, "== %s: skipped\n", name);
    else
        fprintf(stderr, "== %s: %s (exit %d) in %.2fs\n", name,
                WEXITSTATUS(r.status) == 0 ? "passed" : "FAILED", WEXITSTATUS(r.status), r.seconds);
    return r;
}

static inline bool fault_passed(fault_result r) {
    return !r.hung && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
}
static inline bool fault_skipped(fault_result r) {
    return !r.hung && WIFEXITED(r.status) && WEXITSTATUS(r.status) == FAULT_SKIP;
}

/* ---- threads and processes ------------------------------------------------------------ */

/* Tasks (threads) of this process, from /proc/self/task. */
static inline int fault_thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* Waits until this process has `n` threads (exited threads are released a little after
 * pthread_join returns, and count against RLIMIT_NPROC until then). */
static inline bool fault_await_threads(int n, double limit) {
    double end = fault_now() + limit;
    while (fault_thread_count() != n) {
        if (fault_now() > end) return false;
        fault_sleep(0.001);
    }
    return true;
}

/* Reads state and parent of `pid` from /proc/<pid>/stat. */
static inline bool fault_proc_stat(pid_t pid, char *state, long *ppid) {
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

/* The children of process `parent` (up to max), from /proc. */
static inline int fault_children_of(pid_t parent, pid_t *out, int max) {
    DIR *d = opendir("/proc");
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0) continue;
        char st;
        long pp;
        if (fault_proc_stat((pid_t)pid, &st, &pp) && pp == (long)parent) {
            if (n < max) out[n] = (pid_t)pid;
            n++;
        }
    }
    closedir(d);
    return n;
}

/* After cf_executor_free: this process has no child at all (running or zombie). */
static inline void fault_check_no_children_(const char *file, int line) {
    double end = fault_now() + 10.0 * fault_scale();
    for (;;) {
        int status = 0;
        pid_t r = waitpid(-1, &status, WNOHANG);
        if (r == -1 && errno == ECHILD) return;
        if (r > 0) {
            fprintf(stderr, "%s:%d: CHECK failed: child %ld was left unreaped (a zombie, status 0x%x)\n",
                    file, line, (long)r, (unsigned)status);
            exit(1);
        }
        if (fault_now() > end) {
            pid_t kids[16];
            int n = fault_children_of(getpid(), kids, 16);
            fprintf(stderr, "%s:%d: CHECK failed: %d child process(es) still running 10s after "
                            "cf_executor_free:", file, line, n);
            for (int i = 0; i < n && i < 16; i++) fprintf(stderr, " %ld", (long)kids[i]);
            fputc('\n', stderr);
            exit(1);
        }
        fault_sleep(0.002);
    }
}
#define FAULT_CHECK_NO_CHILDREN() fault_check_no_children_(__FILE__, __LINE__)

/* ---- RLIMIT_NPROC --------------------------------------------------------------------- */

/* Makes RLIMIT_NPROC apply to this freshly forked, single-threaded process: as root it
 * switches to `uid` (a uid nothing else on the system uses, so the count is ours alone;
 * root is exempt from RLIMIT_NPROC, and setuid drops the capabilities that exempt it);
 * otherwise it moves into a new user namespace, where the count starts afresh. Returns
 * false (with a message) when neither is possible. */
static inline bool fault_isolate_nproc(uid_t uid) {
    if (geteuid() == 0) {
        if (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 || setuid(uid) != 0) {
            fprintf(stderr, "cannot switch to uid %u: %s\n", (unsigned)uid, strerror(errno));
            return false;
        }
        prctl(PR_SET_DUMPABLE, 1); /* keep /proc/self readable after the uid change */
        return true;
    }
    if (unshare(CLONE_NEWUSER) != 0) {
        fprintf(stderr, "not root, and no new user namespace (%s): RLIMIT_NPROC cannot be "
                        "made to bite here\n", strerror(errno));
        return false;
    }
    return true;
}

static inline void fault_set_nproc(rlim_t soft) {
    struct rlimit rl;
    FCHECK(getrlimit(RLIMIT_NPROC, &rl) == 0);
    if (soft > rl.rlim_max) soft = rl.rlim_max;
    rl.rlim_cur = soft;
    FCHECK_MSG(setrlimit(RLIMIT_NPROC, &rl) == 0, "setrlimit(RLIMIT_NPROC, %lu): %s",
               (unsigned long)soft, strerror(errno));
}

/* Back to the hard limit (a soft limit may be raised up to it again). */
static inline void fault_unlimit_nproc(void) {
    struct rlimit rl;
    FCHECK(getrlimit(RLIMIT_NPROC, &rl) == 0);
    rl.rlim_cur = rl.rlim_max;
    FCHECK(setrlimit(RLIMIT_NPROC, &rl) == 0);
}

static inline void *fault_nop_thread_(void *arg) { return arg; }

/* How many tasks already count against RLIMIT_NPROC: the smallest limit that allows one
 * more thread, minus one. -1 (with a message) if thread creation is never refused. */
static inline int fault_nproc_in_use(void) {
    int threads = fault_thread_count();
    for (rlim_t lim = 1; lim < 4096; lim++) {
        fault_set_nproc(lim);
        pthread_t t;
        int rc = pthread_create(&t, NULL, fault_nop_thread_, NULL);
        if (rc == 0) {
            pthread_join(t, NULL);
            fault_unlimit_nproc();
            FCHECK(fault_await_threads(threads, 10.0));
            if (lim == 1) {
                fprintf(stderr, "RLIMIT_NPROC=1 did not refuse a thread: it is not enforced here\n");
                return -1;
            }
            return (int)lim - 1;
        }
        if (rc != EAGAIN) {
            fault_unlimit_nproc();
            fprintf(stderr, "pthread_create failed with %s, not EAGAIN\n", strerror(rc));
            return -1;
        }
    }
    fault_unlimit_nproc();
    return -1;
}

/* ---- memory shared with processes forked later ---------------------------------------- */

static inline void *fault_shm(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    FCHECK(p != MAP_FAILED);
    return p;
}

#endif
