/* More helpers for the C tests, on top of test_util.h: a counter that can be awaited
 * (mutex + condition variable, no polling), a watchdog that turns a hang into a failure,
 * a few CHECK variants that print the values they compare, and common tasks.
 *
 * Include after test_util.h. Every function here is `static inline` so that a test that
 * does not use one gets no unused-function warning. Define _GNU_SOURCE (or
 * _POSIX_C_SOURCE >= 200809L) before including any header. */
#ifndef CF_TEST_UTIL_EXTRA_H
#define CF_TEST_UTIL_EXTRA_H

#include "test_util.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/* Print both values when two integers differ. */
#define CHECK_EQ_LL(got, want)                                                         \
    do {                                                                               \
        long long got_ll_ = (long long)(got);                                          \
        long long want_ll_ = (long long)(want);                                        \
        if (got_ll_ != want_ll_) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (got %lld, expected %lld)\n", \
                    __FILE__, __LINE__, #got, #want, got_ll_, want_ll_);               \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Two C strings are equal (neither may be NULL). */
#define CHECK_STREQ(got, want)                                                         \
    do {                                                                               \
        const char *got_s_ = (got);                                                    \
        const char *want_s_ = (want);                                                  \
        if (got_s_ == NULL || want_s_ == NULL || strcmp(got_s_, want_s_) != 0) {       \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (got \"%s\", expected \"%s\")\n", \
                    __FILE__, __LINE__, #got, #want, got_s_ ? got_s_ : "(null)",       \
                    want_s_ ? want_s_ : "(null)");                                     \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* cf_state as a name, for messages. */
static inline const char *state_name(cf_state s) {
    if (s == CF_STATE_PENDING) return "PENDING";
    if (s == CF_STATE_RUNNING) return "RUNNING";
    if (s == CF_STATE_CANCELLED) return "CANCELLED";
    if (s == CF_STATE_FINISHED) return "FINISHED";
    return "(unknown state)";
}

#define CHECK_STATE(f, want)                                                           \
    do {                                                                               \
        cf_state got_st_ = cf_future_state(f);                                         \
        cf_state want_st_ = (want);                                                    \
        if (got_st_ != want_st_) {                                                     \
            fprintf(stderr, "%s:%d: cf_future_state(%s) is %s, expected %s\n", __FILE__, \
                    __LINE__, #f, state_name(got_st_), state_name(want_st_));          \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Timeouts used by the tests: generous, so that a loaded machine does not fail them. */
#define LONG_WAIT 30.0 /* seconds a test may wait for something that must happen */

/* ---- watchdog ---------------------------------------------------------------------- */

static inline void watchdog_fired_(int sig) {
    static const char msg[] = "watchdog: the test did not finish in time (hang?)\n";
    (void)sig;
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(3);
}

/* Turn a hang into a failure after `seconds`. Set CF_TEST_NO_WATCHDOG=1 to disable it
 * (e.g. under a slow tool like valgrind with a larger CTest timeout). */
static inline void watchdog_start(unsigned seconds) {
    const char *off = getenv("CF_TEST_NO_WATCHDOG");
    if (off != NULL && off[0] != '\0' && strcmp(off, "0") != 0) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watchdog_fired_;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
}

/* ---- counter: an integer that can be awaited without polling ------------------------ */

typedef struct counter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long value;
} counter;

static inline void counter_init(counter *c) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, &attr);
    pthread_condattr_destroy(&attr);
    c->value = 0;
}

static inline void counter_destroy(counter *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

static inline long counter_add(counter *c, long n) {
    pthread_mutex_lock(&c->mu);
    c->value += n;
    long v = c->value;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return v;
}

static inline long counter_get(counter *c) {
    pthread_mutex_lock(&c->mu);
    long v = c->value;
    pthread_mutex_unlock(&c->mu);
    return v;
}

/* Wait until the value is >= want, at most `limit` seconds. Returns 1 if it got there. */
static inline int counter_wait(counter *c, long want, double limit) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    double whole = (double)(long)limit;
    deadline.tv_sec += (time_t)whole;
    deadline.tv_nsec += (long)((limit - whole) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (c->value < want) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &deadline) == ETIMEDOUT) break;
    }
    int ok = c->value >= want;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* ---- common tasks -------------------------------------------------------------------- */

/* Returns its argument. */
static inline void *task_identity(void *arg) { return arg; }

/* Returns NULL, does nothing. */
static inline void *task_noop(void *arg) {
    (void)arg;
    return NULL;
}

/* A task that blocks on a gate: counts itself started, waits for the gate, counts itself
 * finished and returns `ret`. `ran` is set when the body starts, `thread` is the thread
 * that ran it. */
typedef struct blocker {
    gate g;
    counter started;
    counter finished;
} blocker;

static inline void blocker_init(blocker *b) {
    gate_init(&b->g);
    counter_init(&b->started);
    counter_init(&b->finished);
}

static inline void blocker_destroy(blocker *b) {
    gate_destroy(&b->g);
    counter_destroy(&b->started);
    counter_destroy(&b->finished);
}

typedef struct blocked_job {
    blocker *b;
    void *ret;
    atomic_int ran;
    pthread_t thread;
} blocked_job;

static inline void blocked_job_init(blocked_job *j, blocker *b, void *ret) {
    j->b = b;
    j->ret = ret;
    atomic_init(&j->ran, 0);
    memset(&j->thread, 0, sizeof j->thread);
}

static inline void *task_blocked(void *arg) {
    blocked_job *j = (blocked_job *)arg;
    j->thread = pthread_self();
    atomic_fetch_add(&j->ran, 1);
    counter_add(&j->b->started, 1);
    gate_wait(&j->b->g);
    counter_add(&j->b->finished, 1);
    return j->ret;
}

/* Seconds elapsed since `t0` (from now_s()). */
static inline double since(double t0) { return now_s() - t0; }

/* Number of online CPUs, at least 1. */
static inline long online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n;
}

/* Make a thread pool with the given max_workers (0 = default) and optional prefix. */
static inline cf_executor *make_pool(size_t max_workers, const char *prefix) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = max_workers;
    o.name_prefix = prefix;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    CHECK(ex != NULL);
    return ex;
}

/* Submit and check the call succeeded. */
static inline cf_future *submit_ok(cf_executor *ex, cf_fn fn, void *arg) {
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, fn, arg, &f));
    CHECK(f != NULL);
    return f;
}

/* Wait forever for f's result and check it succeeded. */
static inline void *result_ok(cf_future *f) {
    void *r = (void *)(uintptr_t)0xdeadbeefu;
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    return r;
}

#endif
