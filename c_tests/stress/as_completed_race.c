/* A focused check of one race the randomized stress found: cf_as_completed_new on a
 * future that completes while the iterator is being set up.
 *
 *   as_completed_race [iterations] [seconds]
 *
 * Each iteration submits 64 trivial tasks and at once starts an as_completed over their
 * futures, so tasks finish while cf_as_completed_new scans them. Every future must be
 * yielded: cf_as_completed_next has a 5 s limit, and CF_TIMEOUT while a future not yet
 * yielded is done is a lost completion (with CF_FOREVER the caller would hang).
 * A second phase does the same with cf_wait (FIRST_COMPLETED), which must not lose it
 * either. Stops after `iterations` or `seconds`, whichever comes first.
 */
#define _GNU_SOURCE
#include <cfutures.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *ident(void *a) { return a; }

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 300000;
    double limit = argc > 2 ? atof(argv[2]) : 20.0;
    cf_executor_options o = {0};
    o.max_workers = 2;
    cf_executor *ex = NULL;
    if (cf_thread_pool_new(&o, &ex) != CF_OK) {
        fprintf(stderr, "as_completed_race: cf_thread_pool_new failed\n");
        return 1;
    }
    double start = now_s();
    long i = 0, lost = 0;
    enum { N = 64 };
    for (; i < iters && now_s() - start < limit / 2; i++) {
        cf_future *fs[N];
        for (int k = 0; k < N; k++) {
            if (cf_submit(ex, ident, (void *)(intptr_t)k, &fs[k]) != CF_OK) {
                fprintf(stderr, "as_completed_race: cf_submit failed\n");
                return 1;
            }
        }
        cf_as_completed *it = NULL;
        if (cf_as_completed_new(fs, N, 5.0, &it) != CF_OK) {
            fprintf(stderr, "as_completed_race: cf_as_completed_new failed\n");
            return 1;
        }
        int got = 0;
        cf_future *y = NULL;
        cf_status s;
        while ((s = cf_as_completed_next(it, &y)) == CF_OK) got++;
        if (s != CF_END || got != N) {
            int done = 0;
            for (int k = 0; k < N; k++) done += cf_future_done(fs[k]);
            fprintf(stderr,
                    "as_completed_race: FAILED at iteration %ld: cf_as_completed_next gave %s after "
                    "%d of %d futures, and %d of them are done -- a future that completed during "
                    "cf_as_completed_new was never yielded\n",
                    i, cf_status_name(s), got, N, done);
            lost++;
        }
        cf_as_completed_free(it);
        for (int k = 0; k < N; k++) cf_future_release(fs[k]);
        if (lost) break;
    }
    long waits = 0;
    double start2 = now_s();
    for (; lost == 0 && waits < iters && now_s() - start2 < limit / 2; waits++) {
        cf_future *f = NULL;
        if (cf_submit(ex, ident, (void *)(intptr_t)waits, &f) != CF_OK) return 1;
        bool done = false;
        size_t nd = 0;
        cf_status s = cf_wait(&f, 1, CF_FIRST_COMPLETED, 5.0, &done, &nd);
        if (s != CF_OK || !done || nd != 1) {
            fprintf(stderr, "as_completed_race: FAILED: cf_wait gave %s (done %d, n_done %zu)\n",
                    cf_status_name(s), (int)done, nd);
            lost++;
        }
        cf_future_release(f);
    }
    cf_executor_free(ex);
    if (lost) return 1;
    printf("as_completed_race: OK, %ld as_completed (x64) and %ld cf_wait iterations in %.1fs\n", i, waits,
           now_s() - start);
    return 0;
}
