/* A focused check of one race the randomized stress found: two threads complete the same
 * promise at once.
 *
 *   promise_race [rounds] [seconds]
 *
 * Each round makes a promise and releases two threads that call cf_future_set_result
 * (one) and cf_future_set_exception (the other) on it at the same moment. Exactly one
 * must get CF_OK. The header says the other gets CF_INVALID_STATE "if f is already done
 * (finished or cancelled)": so right after that return, cf_future_done(f) must be true
 * and cf_future_result(f, 0) must not time out. Stops after `rounds` or `seconds`.
 */
#define _GNU_SOURCE
#include <cfutures.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static cf_future *_Atomic g_f;
static atomic_long g_round; /* -1: stop */
static atomic_int g_arrived, g_ok, g_bad_done, g_bad_result, g_bad_status;
static _Atomic cf_status g_bad_result_status;

static void *racer(void *arg) {
    int me = (int)(intptr_t)arg;
    for (long r = 1;; r++) {
        long cur;
        unsigned spins = 0;
        /* spin (both racers see the new round at about the same moment), yield now and
         * then so that the main thread gets to run on a machine with few CPUs */
        while ((cur = atomic_load(&g_round)) < r) {
            if (cur < 0) return NULL;
            if (++spins % 4096 == 0) sched_yield();
        }
        cf_future *f = atomic_load(&g_f);
        cf_status s = me == 0 ? cf_future_set_result(f, (void *)(intptr_t)r)
                              : cf_future_set_exception(f, 7, "racer");
        if (s == CF_OK) {
            atomic_fetch_add(&g_ok, 1);
        } else if (s == CF_INVALID_STATE) {
            if (!cf_future_done(f)) atomic_fetch_add(&g_bad_done, 1);
            void *v = NULL;
            cf_status rs = cf_future_result(f, 0.0, &v);
            if (rs == CF_TIMEOUT) {
                atomic_store(&g_bad_result_status, rs);
                atomic_fetch_add(&g_bad_result, 1);
            }
        } else {
            atomic_fetch_add(&g_bad_status, 1);
        }
        atomic_fetch_add(&g_arrived, 1);
    }
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 300000;
    double limit = argc > 2 ? atof(argv[2]) : 10.0;
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, racer, (void *)(intptr_t)i);
    double start = now_s();
    long r = 1;
    int failed = 0;
    for (; r <= rounds && now_s() - start < limit; r++) {
        cf_future *f = NULL;
        if (cf_future_new(&f) != CF_OK) return 1;
        atomic_store(&g_f, f);
        atomic_store(&g_arrived, 0);
        atomic_store(&g_ok, 0);
        atomic_store(&g_round, r);
        while (atomic_load(&g_arrived) < 2) sched_yield();
        if (atomic_load(&g_ok) != 1 || atomic_load(&g_bad_status) != 0) {
            fprintf(stderr, "promise_race: FAILED in round %ld: %d of the two racing sets got CF_OK\n", r,
                    atomic_load(&g_ok));
            failed = 1;
        }
        if (atomic_load(&g_bad_done) || atomic_load(&g_bad_result)) {
            fprintf(stderr,
                    "promise_race: FAILED in round %ld: the losing set got CF_INVALID_STATE (\"already "
                    "done\") while the promise was not done yet (cf_future_done false: %d, "
                    "cf_future_result(0) CF_TIMEOUT: %d): the winner's completion was not yet "
                    "visible\n",
                    r, atomic_load(&g_bad_done), atomic_load(&g_bad_result));
            failed = 1;
        }
        cf_future_release(f);
        if (failed) break;
    }
    atomic_store(&g_round, -1);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    if (failed) return 1;
    printf("promise_race: OK, %ld rounds in %.1fs\n", r - 1, now_s() - start);
    return 0;
}
