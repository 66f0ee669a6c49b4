/* cf_map_bytes_new / cf_map_next_bytes: Executor.map over byte tasks on thread pools.
 * Modelled on CPython Lib/test/test_concurrent_futures/executor.py (test_map,
 * test_map_exception, test_map_timeout), with byte inputs and results. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <cfutures.h>

#include "test_util.h"
#include "test_util_many.h"

static atomic_int g_executed;
static atomic_int g_blocked;
static gate g_gate;
static bool g_block_marked; /* inputs starting with 'B' wait for g_gate */

/* Reverses its input; an input "FAIL..." fails with EBADMSG; empty gives NULL. */
static void *b_rev(const void *in, size_t in_len, size_t *out_len) {
    atomic_fetch_add(&g_executed, 1);
    const char *p = (const char *)in;
    if (g_block_marked && in_len > 0 && p[0] == 'B') {
        atomic_fetch_add(&g_blocked, 1);
        gate_wait(&g_gate);
    }
    if (in_len >= 4 && memcmp(p, "FAIL", 4) == 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "bad bytes: %.*s", (int)in_len, p);
        return cf_raise(EBADMSG, msg);
    }
    if (in_len == 0) {
        CHECK(in == NULL);
        *out_len = 0;
        return NULL;
    }
    char *out = malloc(in_len);
    if (!out) return cf_raise(ENOMEM, "malloc");
    for (size_t i = 0; i < in_len; i++) out[i] = p[in_len - 1 - i];
    *out_len = in_len;
    return out;
}

static void cfg_begin(void) {
    atomic_store(&g_executed, 0);
    atomic_store(&g_blocked, 0);
    g_block_marked = false;
    gate_init(&g_gate);
}
static void cfg_end(void) { gate_destroy(&g_gate); }

/* N inputs "item-<i>" repeated (i % 4) times; every 7th empty (data NULL). */
enum { N = 30 };
typedef struct inputs {
    cf_bytes b[N];
    char *store[N];
} inputs;

static void inputs_make(inputs *in) {
    for (size_t i = 0; i < N; i++) {
        in->store[i] = NULL;
        if (i % 7 == 0) {
            in->b[i].data = NULL;
            in->b[i].len = 0;
            continue;
        }
        char one[16];
        int k = snprintf(one, sizeof one, "item-%zu;", i);
        size_t reps = i % 4 + 1;
        in->store[i] = malloc((size_t)k * reps + 1);
        CHECK(in->store[i] != NULL);
        for (size_t r = 0; r < reps; r++) memcpy(in->store[i] + r * (size_t)k, one, (size_t)k);
        in->b[i].data = in->store[i];
        in->b[i].len = (size_t)k * reps;
    }
}
static void inputs_free(inputs *in) {
    for (size_t i = 0; i < N; i++) free(in->store[i]);
}

/* res is in reversed. */
static void check_reversed(cf_bytes res, cf_bytes in) {
    CHECK(res.len == in.len);
    if (in.len == 0) {
        CHECK(res.data == NULL);
        return;
    }
    const char *a = (const char *)res.data, *b = (const char *)in.data;
    CHECK(a != NULL);
    for (size_t i = 0; i < in.len; i++) CHECK(a[i] == b[in.len - 1 - i]);
}

/* Inputs in order, for many chunk sizes; results stay valid until cf_map_free. */
static void test_map_bytes_order(void) {
    size_t chunks[] = {0, 1, 2, 7, N - 1, N, N + 1, SIZE_MAX};
    inputs in;
    inputs_make(&in);
    cf_executor *ex = pool_new(4);
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        cfg_begin();
        cf_map *m = NULL;
        CHECK_OK(cf_map_bytes_new(ex, b_rev, in.b, N, chunks[c], LONG_TIMEOUT, &m));
        CHECK(m != NULL);
        cf_bytes got[N];
        for (size_t i = 0; i < N; i++) {
            int code = -1;
            const char *msg = NULL;
            CHECK_OK(cf_map_next_bytes(m, &got[i], &code, &msg));
            check_reversed(got[i], in.b[i]);
        }
        char s = 's';
        cf_bytes end = {&s, 3};
        CHECK_STATUS(cf_map_next_bytes(m, &end, NULL, NULL), CF_END);
        CHECK(end.data == &s && end.len == 3);
        CHECK_STATUS(cf_map_next_bytes(m, &end, NULL, NULL), CF_END);
        /* cf_map_next_n reads pointer maps only. */
        void *vals[4];
        size_t n_read = 5;
        CHECK_STATUS(cf_map_next_n(m, vals, 4, &n_read, NULL, NULL), CF_INVALID_ARGUMENT);
        CHECK(n_read == 5);
        /* Every earlier result is still valid until the map is freed. */
        for (size_t i = 0; i < N; i++) check_reversed(got[i], in.b[i]);
        cf_map_free(m);
        CHECK(atomic_load(&g_executed) == N);
        cfg_end();
    }
    cf_executor_free(ex);
    inputs_free(&in);
}

/* The inputs (the cf_bytes array and the bytes) are copied at cf_map_bytes_new. */
static void test_map_bytes_inputs_copied(void) {
    cfg_begin();
    g_block_marked = true;
    cf_executor *ex = pool_new(2);
    enum { M = 6 };
    char *bufs[M];
    cf_bytes *bs = malloc(M * sizeof *bs);
    CHECK(bs != NULL);
    for (int i = 0; i < M; i++) {
        bufs[i] = malloc(8);
        CHECK(bufs[i] != NULL);
        snprintf(bufs[i], 8, "B-%d", i); /* 'B': blocked until the gate opens */
        bs[i].data = bufs[i];
        bs[i].len = strlen(bufs[i]);
    }
    cf_map *m = NULL;
    CHECK_OK(cf_map_bytes_new(ex, b_rev, bs, M, 2, LONG_TIMEOUT, &m));
    for (int i = 0; i < M; i++) {
        memset(bufs[i], 'Z', 8);
        free(bufs[i]);
        bs[i].data = NULL;
        bs[i].len = 12345;
    }
    free(bs);
    gate_open(&g_gate);
    for (int i = 0; i < M; i++) {
        cf_bytes r;
        CHECK_OK(cf_map_next_bytes(m, &r, NULL, NULL));
        char want[8];
        int k = snprintf(want, sizeof want, "B-%d", i);
        cf_bytes w = {want, (size_t)k};
        check_reversed(r, w);
    }
    cf_bytes r;
    CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
    cfg_end();
}

/* A failing item: CF_OK before it, CF_TASK_FAILED with code and message at it, then
 * CF_END; for chunk sizes putting it at the start, middle and end of a chunk. */
static void test_map_bytes_failure(void) {
    enum { M = 12, FAIL = 5 };
    size_t chunks[6] = {0, 1, 2, 3, 5, M};
    char bufs[M][16];
    cf_bytes bs[M];
    for (int i = 0; i < M; i++) {
        int k = i == FAIL ? snprintf(bufs[i], sizeof bufs[i], "FAIL%d", i)
                          : snprintf(bufs[i], sizeof bufs[i], "ok%d", i);
        bs[i].data = bufs[i];
        bs[i].len = (size_t)k;
    }
    for (int c = 0; c < 6; c++) {
        cfg_begin();
        cf_executor *ex = pool_new(3);
        cf_map *m = NULL;
        CHECK_OK(cf_map_bytes_new(ex, b_rev, bs, M, chunks[c], LONG_TIMEOUT, &m));
        for (int i = 0; i < FAIL; i++) {
            cf_bytes r;
            cf_status st = cf_map_next_bytes(m, &r, NULL, NULL);
            if (st != CF_OK)
                fprintf(stderr, "chunksize %zu item %d: %s\n", chunks[c], i,
                        cf_status_name(st));
            CHECK_OK(st);
            check_reversed(r, bs[i]);
        }
        char s = 's';
        cf_bytes r = {&s, 1};
        int code = 0;
        const char *msg = NULL;
        CHECK_STATUS(cf_map_next_bytes(m, &r, &code, &msg), CF_TASK_FAILED);
        CHECK(r.data == &s && r.len == 1);
        CHECK(code == EBADMSG);
        CHECK(msg != NULL && strcmp(msg, "bad bytes: FAIL5") == 0);
        CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
        CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
        CHECK(msg != NULL && strcmp(msg, "bad bytes: FAIL5") == 0); /* until free */
        cf_map_free(m);
        cf_executor_free(ex);
        cfg_end();
    }
    /* code and message NULL. */
    cfg_begin();
    cf_executor *ex = pool_new(1);
    cf_map *m = NULL;
    CHECK_OK(cf_map_bytes_new(ex, b_rev, &bs[FAIL], 1, 0, LONG_TIMEOUT, &m));
    cf_bytes r;
    CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_TASK_FAILED);
    CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
    cfg_end();
}

/* Timeout from cf_map_bytes_new; free with items blocked cancels the rest. */
static void test_map_bytes_timeout_and_free(void) {
    cfg_begin();
    g_block_marked = true;
    cf_executor *ex = pool_new(1);
    cf_bytes bs[5] = {{"a", 1}, {"Bb", 2}, {"c", 1}, {"d", 1}, {"e", 1}};
    double t0 = now_s();
    cf_map *m = NULL;
    CHECK_OK(cf_map_bytes_new(ex, b_rev, bs, 5, 1, 0.5, &m));
    cf_bytes r;
    CHECK_OK(cf_map_next_bytes(m, &r, NULL, NULL));
    CHECK(r.len == 1 && ((const char *)r.data)[0] == 'a');
    char s = 's';
    r.data = &s;
    r.len = 4;
    CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_TIMEOUT);
    double el = now_s() - t0;
    CHECK(el >= 0.49 && el < 0.5 + AT_ONCE);
    CHECK(r.data == &s && r.len == 4);
    CHECK(await_count(&g_blocked, 1, LONG_TIMEOUT));
    t0 = now_s();
    cf_map_free(m);
    CHECK(now_s() - t0 < AT_ONCE);
    gate_open(&g_gate);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_executed) == 2); /* "c", "d", "e" were cancelled */
    cf_executor_free(ex);
    cfg_end();

    /* Freed before any next; freed after the end; NULL. */
    cfg_begin();
    inputs in;
    inputs_make(&in);
    ex = pool_new(2);
    CHECK_OK(cf_map_bytes_new(ex, b_rev, in.b, N, 3, CF_FOREVER, &m));
    cf_map_free(m);
    CHECK_OK(cf_map_bytes_new(ex, b_rev, in.b, N, 3, CF_FOREVER, &m));
    for (size_t i = 0; i < N; i++) CHECK_OK(cf_map_next_bytes(m, &r, NULL, NULL));
    CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
    cf_map_free(m);
    cf_map_free(NULL);
    cf_executor_free(ex);
    inputs_free(&in);
    cfg_end();
}

/* chunksize items per task, for byte maps too: one worker, the first item blocked,
 * the map freed: exactly the items of the first chunk run. */
static void test_map_bytes_batching(void) {
    cf_bytes bs[9] = {{"B0", 2}, {"x1", 2}, {"x2", 2}, {"x3", 2}, {"x4", 2},
                      {"x5", 2}, {"x6", 2}, {"x7", 2}, {"x8", 2}};
    size_t chunks[4] = {0, 1, 4, 9};
    int runs[4] = {1, 1, 4, 9};
    for (int c = 0; c < 4; c++) {
        cfg_begin();
        g_block_marked = true;
        cf_executor *ex = pool_new(1);
        cf_map *m = NULL;
        CHECK_OK(cf_map_bytes_new(ex, b_rev, bs, 9, chunks[c], CF_FOREVER, &m));
        CHECK(await_count(&g_blocked, 1, LONG_TIMEOUT));
        cf_map_free(m);
        gate_open(&g_gate);
        CHECK_OK(cf_executor_shutdown(ex, true, false));
        if (atomic_load(&g_executed) != runs[c])
            fprintf(stderr, "chunksize %zu: %d items ran, expected %d\n", chunks[c],
                    atomic_load(&g_executed), runs[c]);
        CHECK(atomic_load(&g_executed) == runs[c]);
        cf_executor_free(ex);
        cfg_end();
    }
}

/* n == 0: CF_END at once; inputs may be NULL then. */
static void test_map_bytes_empty(void) {
    cfg_begin();
    cf_executor *ex = pool_new(1);
    cf_bytes one = {"x", 1};
    for (int k = 0; k < 2; k++) {
        cf_map *m = NULL;
        CHECK_OK(cf_map_bytes_new(ex, b_rev, k ? &one : NULL, 0, 0, CF_FOREVER, &m));
        cf_bytes r;
        CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
        CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
        cf_map_free(m);
    }
    CHECK(atomic_load(&g_executed) == 0);
    cf_executor_free(ex);
    cfg_end();
}

static void test_map_bytes_bad_input(void) {
    cfg_begin();
    cf_executor *ex = pool_new(1);
    cf_bytes bs[3] = {{"a", 1}, {"b", 1}, {"c", 1}};
    cf_map *sentinel = (cf_map *)&ex;
    cf_map *m = sentinel;
    CHECK_STATUS(cf_map_bytes_new(NULL, b_rev, bs, 3, 1, CF_FOREVER, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_bytes_new(ex, NULL, bs, 3, 1, CF_FOREVER, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_bytes_new(ex, b_rev, NULL, 3, 1, CF_FOREVER, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_bytes_new(ex, b_rev, bs, 3, 1, NAN, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_STATUS(cf_map_bytes_new(ex, b_rev, bs, 3, 1, CF_FOREVER, NULL), CF_INVALID_ARGUMENT);
    /* An input with NULL data and a length, anywhere: nothing is submitted. */
    cf_bytes bad[3] = {{"a", 1}, {"b", 1}, {NULL, 4}};
    CHECK_STATUS(cf_map_bytes_new(ex, b_rev, bad, 3, 1, CF_FOREVER, &m), CF_INVALID_ARGUMENT);
    CHECK(m == sentinel);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_executed) == 0);

    char s = 's';
    cf_bytes r = {&s, 2};
    int code = 3;
    CHECK_STATUS(cf_map_next_bytes(NULL, &r, &code, NULL), CF_INVALID_ARGUMENT);
    CHECK(r.data == &s && r.len == 2 && code == 3);
    /* cf_map_next on a byte map gives the data pointer (header); a NULL result is
     * rejected and consumes nothing. */
    cf_executor *ex2 = pool_new(1);
    CHECK_OK(cf_map_bytes_new(ex2, b_rev, bs, 3, 1, LONG_TIMEOUT, &m));
    CHECK_STATUS(cf_map_next_bytes(m, NULL, &code, NULL), CF_INVALID_ARGUMENT);
    CHECK(code == 3);
    CHECK_STATUS(cf_map_next(m, NULL, NULL, NULL), CF_INVALID_ARGUMENT);
    void *p = NULL;
    CHECK_OK(cf_map_next(m, &p, NULL, NULL));
    CHECK(p != NULL && ((const char *)p)[0] == 'a');
    CHECK_OK(cf_map_next_bytes(m, &r, NULL, NULL));
    CHECK(r.len == 1 && ((const char *)r.data)[0] == 'b');
    CHECK(((const char *)p)[0] == 'a'); /* still valid until cf_map_free */
    CHECK_OK(cf_map_next(m, &p, NULL, NULL));
    CHECK(((const char *)p)[0] == 'c');
    CHECK_STATUS(cf_map_next_bytes(m, &r, NULL, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex2);
    CHECK(atomic_load(&g_executed) == 3);
    m = sentinel;

    CHECK_STATUS(cf_map_bytes_new(ex, b_rev, bs, 3, 1, CF_FOREVER, &m), CF_SHUTDOWN);
    CHECK(m == sentinel);
    cf_executor_free(ex);
    cfg_end();
}

int main(void) {
    TEST(test_map_bytes_order);
    TEST(test_map_bytes_inputs_copied);
    TEST(test_map_bytes_failure);
    TEST(test_map_bytes_timeout_and_free);
    TEST(test_map_bytes_batching);
    TEST(test_map_bytes_empty);
    TEST(test_map_bytes_bad_input);
    return 0;
}
