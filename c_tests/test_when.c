/* cf_when: for each return_when, the future finishes exactly when cf_wait on the same
 * futures returns, naming the index that completed the condition (promises completed in
 * chosen orders, duplicates, futures already done, n == 0, failures, cancelled inputs);
 * cancelling a cf_when future; references (the inputs released by the caller while
 * cf_when holds them); many cf_when at once on a thread pool; bad arguments. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"
#include "test_util_many.h"

#define N 5

static const cf_return_when MODES[3] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION,
                                        CF_ALL_COMPLETED};

/* Completes fs[i] as step says: 0 result, 1 exception, 2 cancel. */
static void complete(cf_future *f, int how) {
    if (how == 0) CHECK_OK(cf_future_set_result(f, NULL));
    if (how == 1) CHECK_OK(cf_future_set_exception(f, 3, "x"));
    if (how == 2) CHECK(cf_future_cancel(f));
}

static bool wait_says_done(cf_future **fs, size_t n, cf_return_when m) {
    cf_status s = cf_wait(fs, n, m, 0.0, NULL, NULL);
    CHECK(s == CF_OK || s == CF_TIMEOUT);
    return s == CF_OK;
}

static uintptr_t result_of(cf_future *w) {
    void *r = NULL;
    CHECK_OK(cf_future_result(w, 0.0, &r));
    return P2U(r);
}

/* Completes the distinct promises in `order` with `how`; after each step the cf_when
 * futures are done exactly when cf_wait says so, and name `want[m]` once done. `map`
 * gives the array fs (n entries, duplicates allowed) as indexes into the promises. */
static void scenario(const int *map, size_t n, const int *order, const int *how, size_t steps,
                     const int *predone, size_t npre) {
    cf_future *ps[N];
    for (int i = 0; i < N; i++) ps[i] = promise_new();
    for (size_t k = 0; k < npre; k++) complete(ps[predone[2 * k]], predone[2 * k + 1]);
    cf_future *fs[2 * N];
    for (size_t i = 0; i < n; i++) fs[i] = ps[map[i]];
    cf_future *w[3];
    bool was_done[3];
    for (int m = 0; m < 3; m++) {
        CHECK_OK(cf_when(fs, n, MODES[m], &w[m]));
        was_done[m] = cf_future_done(w[m]);
        CHECK(was_done[m] == wait_says_done(fs, n, MODES[m]));
    }
    /* The expected names, computed from the rules. */
    for (int m = 0; m < 3; m++) {
        if (!was_done[m]) continue;
        /* Done at the call: the lowest index among the candidates. */
        uintptr_t r = result_of(w[m]);
        cf_future *f = fs[r];
        CHECK(cf_future_done(f));
        for (size_t j = 0; j < r; j++) CHECK(fs[j] != f);
        if (MODES[m] == CF_FIRST_COMPLETED) {
            for (size_t j = 0; j < r; j++) CHECK(!cf_future_done(fs[j]));
        }
    }
    for (size_t s = 0; s < steps; s++) {
        complete(ps[order[s]], how[s]);
        for (int m = 0; m < 3; m++) {
            bool now = cf_future_done(w[m]);
            CHECK(now == wait_says_done(fs, n, MODES[m]));
            if (now && !was_done[m]) {
                /* Done by this step: named by the first index of the promise just
                 * completed. */
                uintptr_t r = result_of(w[m]);
                size_t first = 0;
                while (fs[first] != ps[order[s]]) first++;
                CHECK(r == first);
            }
            was_done[m] = now;
        }
    }
    for (int m = 0; m < 3; m++) cf_future_release(w[m]);
    for (int i = 0; i < N; i++) {
        if (!cf_future_done(ps[i])) complete(ps[i], 0);
        cf_future_release(ps[i]);
    }
}

static void test_against_wait(void) {
    const int plain[N] = {0, 1, 2, 3, 4};
    const int order[N] = {3, 1, 4, 0, 2};
    const int ok[N] = {0, 0, 0, 0, 0};
    const int fail_mid[N] = {0, 2, 1, 0, 1};
    const int cancel_all[N] = {2, 2, 2, 2, 2};
    scenario(plain, N, order, ok, N, NULL, 0);
    scenario(plain, N, order, fail_mid, N, NULL, 0);
    scenario(plain, N, order, cancel_all, N, NULL, 0);
    /* Duplicates: promise 2 listed at 0 and 3, promise 0 at 1 and 5. */
    const int dup[7] = {2, 0, 1, 2, 3, 0, 4};
    const int order2[N] = {2, 0, 4, 3, 1};
    scenario(dup, 7, order2, ok, N, NULL, 0);
    scenario(dup, 7, order2, fail_mid, N, NULL, 0);
    /* Already done at the call: promises 3 (result) and 1 (failed). */
    const int pre[4] = {3, 0, 1, 1};
    const int order3[3] = {4, 0, 2};
    scenario(plain, N, order3, ok, 3, pre, 2);
    const int pre_ok[4] = {3, 0, 1, 0};
    scenario(plain, N, order3, ok, 3, pre_ok, 2);
    scenario(dup, 7, order3, fail_mid, 3, pre_ok, 2);
}

static void test_already_done_names_lowest(void) {
    cf_future *fs[4] = {promise_new(), promise_with_result(NULL), promise_new(),
                        promise_with_exception(1, "e")};
    cf_future *w = NULL;
    CHECK_OK(cf_when(fs, 4, CF_FIRST_COMPLETED, &w));
    CHECK(result_of(w) == 1);
    cf_future_release(w);
    CHECK_OK(cf_when(fs, 4, CF_FIRST_EXCEPTION, &w));
    CHECK(result_of(w) == 3);
    cf_future_release(w);
    CHECK_OK(cf_future_set_result(fs[0], NULL));
    CHECK_OK(cf_future_set_result(fs[2], NULL));
    CHECK_OK(cf_when(fs, 4, CF_ALL_COMPLETED, &w));
    CHECK(result_of(w) == 0);
    cf_future_release(w);
    /* A duplicate done at the call is named by its first index. */
    cf_future *dup[3] = {fs[2], fs[2], fs[1]};
    CHECK_OK(cf_when(dup + 1, 2, CF_FIRST_COMPLETED, &w));
    CHECK(result_of(w) == 0);
    cf_future_release(w);
    release_all(fs, 4);

    /* n == 0: done at once with 0. */
    for (int m = 0; m < 3; m++) {
        CHECK_OK(cf_when(NULL, 0, MODES[m], &w));
        CHECK(cf_future_done(w));
        CHECK(result_of(w) == 0);
        cf_future_release(w);
    }
}

static void *gate_task_then_index(void *arg) {
    gate_wait((gate *)arg);
    return NULL;
}

static void test_cancel_and_references(void) {
    /* Cancelling drops the registrations: completing the inputs later touches nothing
     * and the inputs are freed (valgrind). */
    cf_future *a = promise_new(), *b = promise_new();
    cf_future *fs[2] = {a, b};
    cf_future *w = NULL;
    CHECK_OK(cf_when(fs, 2, CF_ALL_COMPLETED, &w));
    CHECK(cf_future_cancel(w));
    CHECK(cf_future_cancelled(w));
    CHECK_OK(cf_future_set_result(a, NULL));
    CHECK(cf_future_cancelled(w));
    cf_future_release(w);
    cf_future_release(a);
    cf_future_release(b); /* never completed: freed with no registration left */

    /* The inputs released by the caller at once: cf_when keeps them. */
    gate g;
    gate_init(&g);
    cf_executor *ex = pool_new(2);
    cf_future *t[3];
    for (int i = 0; i < 3; i++) CHECK_OK(cf_submit(ex, gate_task_then_index, &g, &t[i]));
    cf_future *all = NULL, *any = NULL;
    CHECK_OK(cf_when(t, 3, CF_ALL_COMPLETED, &all));
    CHECK_OK(cf_when(t, 3, CF_FIRST_COMPLETED, &any));
    release_all(t, 3);
    CHECK(!cf_future_done(all));
    gate_open(&g);
    void *r = NULL;
    CHECK_OK(cf_future_result(all, LONG_TIMEOUT, &r));
    CHECK(P2U(r) < 3);
    CHECK_OK(cf_future_result(any, LONG_TIMEOUT, &r));
    CHECK(P2U(r) < 3);
    cf_future_release(all);
    cf_future_release(any);
    cf_executor_free(ex);
    gate_destroy(&g);
}

static void *ident(void *arg) { return arg; }

/* Many at once, inputs completed by workers: every one finishes, with a valid index,
 * and cf_wait agrees. */
static void test_many_on_pool(void) {
    size_t n = time_scale() >= 10.0 ? 500 : 20000;
    cf_executor *ex = pool_new(2);
    cf_future **fs = malloc(n * sizeof *fs);
    CHECK(fs);
    for (size_t i = 0; i < n; i++) CHECK_OK(cf_submit(ex, ident, U2P(i), &fs[i]));
    cf_future *w[3];
    for (int m = 0; m < 3; m++) CHECK_OK(cf_when(fs, n, MODES[m], &w[m]));
    CHECK_OK(cf_future_wait(w[2], LONG_TIMEOUT));
    CHECK_OK(cf_wait(fs, n, CF_ALL_COMPLETED, 0.0, NULL, NULL));
    for (int m = 0; m < 3; m++) {
        CHECK_OK(cf_future_wait(w[m], LONG_TIMEOUT));
        CHECK(result_of(w[m]) < n);
        cf_future_release(w[m]);
    }
    release_all(fs, n);
    /* Groups of 10. */
    size_t groups = n / 10;
    cf_future **ws = malloc(groups * sizeof *ws);
    CHECK(ws);
    for (size_t i = 0; i < n; i++) CHECK_OK(cf_submit(ex, ident, U2P(i), &fs[i]));
    for (size_t k = 0; k < groups; k++) CHECK_OK(cf_when(fs + 10 * k, 10, CF_ALL_COMPLETED, &ws[k]));
    release_all(fs, n);
    CHECK_OK(cf_wait(ws, groups, CF_ALL_COMPLETED, LONG_TIMEOUT, NULL, NULL));
    for (size_t k = 0; k < groups; k++) CHECK(result_of(ws[k]) < 10);
    release_all(ws, groups);
    free(ws);
    free(fs);
    cf_executor_free(ex);
}

static void test_bad_arguments(void) {
    cf_future *p = promise_new();
    cf_future *fs[2] = {p, NULL};
    cf_future *w = NULL;
    CHECK_STATUS(cf_when(fs, 1, (cf_return_when)42, &w), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_when(NULL, 1, CF_ALL_COMPLETED, &w), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_when(fs, 1, CF_ALL_COMPLETED, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_when(fs, 2, CF_ALL_COMPLETED, &w), CF_INVALID_ARGUMENT);
    CHECK(w == NULL);
    cf_future_release(p);
}

int main(void) {
    test_against_wait();
    test_already_done_names_lowest();
    test_cancel_and_references();
    test_many_on_pool();
    test_bad_arguments();
    printf("test_when: ok\n");
    return 0;
}
