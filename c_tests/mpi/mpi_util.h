/* Helpers of the MPI tests: CHECK macros that name the rank, and a watchdog that ends
 * a hung run with a message (mpirun then ends the job). */
#ifndef CF_MPI_UTIL_H
#define CF_MPI_UTIL_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <cfutures_mpi.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int mu_rank = -1;
static const char *mu_what = "";

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "rank %d: %s:%d: CHECK failed: %s\n", mu_rank, __FILE__,     \
                    __LINE__, #cond);                                                     \
            fflush(stderr);                                                               \
            _exit(1);                                                                     \
        }                                                                                 \
    } while (0)

#define CHECK_STATUS(got, want)                                                           \
    do {                                                                                  \
        cf_status got_ = (got);                                                           \
        cf_status want_ = (want);                                                         \
        if (got_ != want_) {                                                              \
            fprintf(stderr, "rank %d: %s:%d: %s returned %s, expected %s\n", mu_rank,    \
                    __FILE__, __LINE__, #got, cf_status_name(got_),                       \
                    cf_status_name(want_));                                               \
            fflush(stderr);                                                               \
            _exit(1);                                                                     \
        }                                                                                 \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS((expr), CF_OK)

static void mu_alarm(int sig) {
    char msg[256];
    int n = snprintf(msg, sizeof msg, "rank %d: WATCHDOG: no progress, hung in: %s\n",
                     mu_rank, mu_what);
    (void)sig;
    if (n > 0) {
        ssize_t w = write(2, msg, (size_t)n);
        (void)w;
    }
    _exit(3);
}

/* Arms a watchdog of `seconds` (re-armed by each call) and names the current step. */
static inline void watchdog(unsigned seconds, const char *what) {
    mu_what = what;
    signal(SIGALRM, mu_alarm);
    alarm(seconds);
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define P2I(p) ((intptr_t)(p))
#define I2P(i) ((void *)(intptr_t)(i))

#endif
