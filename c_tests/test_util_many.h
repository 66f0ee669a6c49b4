/* Extra helpers for the tests of cf_wait, cf_as_completed_*, cf_map_* and byte tasks:
 * promises in a given state, a task that signals its start and then blocks, and a
 * thread that completes promises in a given order. Include after "test_util.h".
 * Every function is `static inline` so that a test that does not use one does not
 * trip -Wunused-function. */
#ifndef CF_TEST_UTIL_MANY_H
#define CF_TEST_UTIL_MANY_H

#include <cfutures.h>

#include "test_util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An integer carried in a pointer, and back. */
#define U2P(x) ((void *)(uintptr_t)(x))
#define P2U(p) ((uintptr_t)(p))

/* Scale for the upper time bounds (not the lower ones): CF_TEST_TIME_SCALE=10 under
 * valgrind or on a very slow machine. */
static inline double time_scale(void) {
    const char *s = getenv("CF_TEST_TIME_SCALE");
    double v = s ? atof(s) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* A generous upper bound for "at once": far above any scheduling hiccup, far below
 * the wait that a wrong implementation would do. */
#define AT_ONCE (1.0 * time_scale())

/* A timeout used where the call must return CF_OK long before it: if the library is
 * wrong the test fails with CF_TIMEOUT instead of hanging until CTest kills it. */
#define LONG_TIMEOUT (20.0 * time_scale())

/* A thread pool with `workers` workers (0: the default). */
static inline cf_executor *pool_new(size_t workers) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = workers;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    CHECK(ex != NULL);
    return ex;
}

static inline cf_future *promise_new(void) {
    cf_future *f = NULL;
    CHECK_OK(cf_future_new(&f));
    CHECK(f != NULL);
    CHECK(!cf_future_done(f));
    return f;
}

static inline cf_future *promise_with_result(void *result) {
    cf_future *f = promise_new();
    CHECK_OK(cf_future_set_result(f, result));
    CHECK(cf_future_done(f));
    return f;
}

static inline cf_future *promise_with_exception(int code, const char *msg) {
    cf_future *f = promise_new();
    CHECK_OK(cf_future_set_exception(f, code, msg));
    CHECK(cf_future_done(f));
    return f;
}

static inline cf_future *promise_cancelled(void) {
    cf_future *f = promise_new();
    CHECK(cf_future_cancel(f));
    CHECK(cf_future_cancelled(f));
    CHECK(cf_future_done(f));
    return f;
}

static inline void release_all(cf_future **fs, size_t n) {
    for (size_t i = 0; i < n; i++) cf_future_release(fs[i]);
}

/* A task that opens `started`, waits for `release`, then returns `result` (or fails
 * with fail_code/fail_msg when fail_msg is not NULL). */
typedef struct blocker {
    gate started;
    gate release;
    void *result;
    int fail_code;
    const char *fail_msg;
} blocker;

static inline void blocker_init(blocker *b, void *result) {
    gate_init(&b->started);
    gate_init(&b->release);
    b->result = result;
    b->fail_code = 0;
    b->fail_msg = NULL;
}
static inline void blocker_destroy(blocker *b) {
    gate_destroy(&b->started);
    gate_destroy(&b->release);
}
static inline void *blocker_task(void *arg) {
    blocker *b = (blocker *)arg;
    gate_open(&b->started);
    gate_wait(&b->release);
    if (b->fail_msg) return cf_raise(b->fail_code, b->fail_msg);
    return b->result;
}

/* Submit blocker_task(b) and wait until it runs. */
static inline cf_future *submit_blocker(cf_executor *ex, blocker *b) {
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, blocker_task, b, &f));
    CHECK(f != NULL);
    gate_wait(&b->started);
    CHECK(cf_future_running(f));
    return f;
}

/* Returns its argument. */
static inline void *task_ident(void *arg) { return arg; }

/* Fails with the code carried in arg and the message "task failed". */
static inline void *task_raise(void *arg) {
    return cf_raise((int)P2U(arg), "task failed");
}

/* A thread that completes promises, in the given order, after an optional delay. */
enum { COMPLETE_RESULT, COMPLETE_EXCEPTION, COMPLETE_CANCEL };

typedef struct completer {
    pthread_t th;
    cf_future *const *fs;
    const size_t *order; /* NULL: 0, 1, ..., n - 1 */
    size_t n;
    double delay; /* seconds before the first completion */
    int how;      /* COMPLETE_*; results are U2P(index + 1), codes index + 1 */
    atomic_int errors;
} completer;

static inline void *completer_main(void *arg) {
    completer *c = (completer *)arg;
    if (c->delay > 0) sleep_s(c->delay);
    for (size_t k = 0; k < c->n; k++) {
        size_t i = c->order ? c->order[k] : k;
        cf_future *f = c->fs[i];
        bool ok;
        switch (c->how) {
        case COMPLETE_EXCEPTION:
            ok = cf_future_set_exception(f, (int)(i + 1), "completer") == CF_OK;
            break;
        case COMPLETE_CANCEL:
            ok = cf_future_cancel(f);
            break;
        default:
            ok = cf_future_set_result(f, U2P(i + 1)) == CF_OK;
            break;
        }
        if (!ok) atomic_fetch_add(&c->errors, 1);
    }
    return NULL;
}

static inline void completer_start(completer *c, cf_future *const *fs, const size_t *order,
                                   size_t n, double delay, int how) {
    c->fs = fs;
    c->order = order;
    c->n = n;
    c->delay = delay;
    c->how = how;
    atomic_init(&c->errors, 0);
    CHECK(pthread_create(&c->th, NULL, completer_main, c) == 0);
}

static inline void completer_join(completer *c) {
    CHECK(pthread_join(c->th, NULL) == 0);
    CHECK(atomic_load(&c->errors) == 0);
}

/* A thread that opens a gate after a delay. */
typedef struct delayed_open {
    pthread_t th;
    gate *g;
    double delay;
} delayed_open;

static inline void *delayed_open_main(void *arg) {
    delayed_open *d = (delayed_open *)arg;
    sleep_s(d->delay);
    gate_open(d->g);
    return NULL;
}
static inline void delayed_open_start(delayed_open *d, gate *g, double delay) {
    d->g = g;
    d->delay = delay;
    CHECK(pthread_create(&d->th, NULL, delayed_open_main, d) == 0);
}
static inline void delayed_open_join(delayed_open *d) {
    CHECK(pthread_join(d->th, NULL) == 0);
}

/* n_done must equal the number of true entries in done[]. */
static inline size_t count_true(const bool *done, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += done[i] ? 1 : 0;
    return k;
}

#define TEST(name)                                                                     \
    do {                                                                               \
        double t0_ = now_s();                                                          \
        name();                                                                        \
        fprintf(stderr, "ok   %-55s %.3fs\n", #name, now_s() - t0_);                   \
    } while (0)

#endif
