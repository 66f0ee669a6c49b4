/* Small test helpers shared by the C tests. Each test is its own executable; a failed
 * CHECK prints the file, line and expression and exits with status 1. */
#ifndef CF_TEST_UTIL_H
#define CF_TEST_UTIL_H

#include <cfutures.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Compare two cf_status values and print both names on mismatch. */
#define CHECK_STATUS(got, want)                                                        \
    do {                                                                               \
        cf_status got_ = (got);                                                        \
        cf_status want_ = (want);                                                      \
        if (got_ != want_) {                                                           \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__, \
                    #got, cf_status_name(got_), cf_status_name(want_));               \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS((expr), CF_OK)

/* Monotonic clock in seconds. */
static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_s(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A one-shot gate that tasks can block on until the test opens it. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
} gate;

static inline void gate_init(gate *g) {
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = 0;
}
static inline void gate_open(gate *g) {
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}
static inline void gate_wait(gate *g) {
    pthread_mutex_lock(&g->mu);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}
static inline void gate_destroy(gate *g) {
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

/* Wait (polling with short sleeps, bounded by `limit` seconds) until *counter >= want.
 * For conditions the API gives no way to await, e.g. a callback having run. */
static inline int await_count(atomic_int *counter, int want, double limit) {
    double end = now_s() + limit;
    while (atomic_load(counter) < want) {
        if (now_s() > end) return 0;
        sleep_s(0.001);
    }
    return 1;
}

#endif
