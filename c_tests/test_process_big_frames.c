/* test_process_big_frames.c: tasks whose messages are larger than a worker's socket
 * buffer, both ways, several in flight at once.
 *
 * A process pool's proxy keeps several tasks in flight in its worker. A map chunk's
 * items (pointer items, or byte items that do not go through the shared-memory arena)
 * travel inline in the task's message, and its results inline in the answer. If the
 * proxy blocked sending the next chunk while the worker blocked sending the answer to
 * the previous one, both would wait for ever. This test sends such chunks on a pool of
 * one worker (every chunk in the same channel) and checks every result, under a
 * watchdog that turns a hang into a failure.
 *
 * Covers: cf_map_bytes_new with 60,000-byte inputs in chunks of 70 (4.2 MB each way per
 * chunk);
 * cf_map_new with 3 chunks of 400,000 pointer items (3.2 MB each way per chunk); byte
 * tasks submitted all at once whose inputs travel inline (below the arena's threshold)
 * and whose results are 16 times larger; then the pool still answers a small task.
 *
 * Ports from CPython Lib/test/test_concurrent_futures/test_deadlock.py:
 *   ExecutorDeadlockTest.test_crash_big_data (large data both ways without a deadlock),
 *   here with the data in chunks and in flight together. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

/* Inputs just below the arena's threshold (64 KiB) in chunks of 70: each chunk's
 * message and answer carry 4.2 MB. (Inputs of 64 KiB or more would each be a task of
 * their own, through the arena.) */
static void test_byte_chunks(cf_executor *ex) {
    px_phase("byte map, 60,000-byte items in chunks of 70");
    enum { N = 280, CHUNK = 70, SIZE = 60000 };
    unsigned char *in = malloc((size_t)N * SIZE);
    cf_bytes inputs[N];
    CHECK(in != NULL);
    for (int i = 0; i < N; i++) {
        px_fill(in + (size_t)i * SIZE, SIZE, (unsigned)i);
        inputs[i] = (cf_bytes){in + (size_t)i * SIZE, SIZE};
    }
    cf_map *m;
    CHECK_OK(cf_map_bytes_new(ex, px_rev_xor, inputs, N, CHUNK, PX_LONG, &m));
    for (int i = 0; i < N; i++) {
        cf_bytes b;
        CHECK_OK(cf_map_next_bytes(m, &b, NULL, NULL));
        CHECK(b.len == SIZE);
        px_check_rev_xor(b.data, b.len, (unsigned)i);
    }
    cf_bytes b;
    CHECK(cf_map_next_bytes(m, &b, NULL, NULL) == CF_END);
    cf_map_free(m);
    free(in);
}

static void *plus_one(void *arg) { return (void *)((uintptr_t)arg + 1); }

/* 1,200,000 pointer items in 3 chunks: 3.2 MB of items and of results per chunk. */
static void test_pointer_chunks(cf_executor *ex) {
    px_phase("pointer map, 3 chunks of 400,000 items");
    enum { N = 1200000, CHUNK = 400000 };
    void **args = malloc(N * sizeof *args);
    void **out = malloc(N * sizeof *out);
    CHECK(args != NULL && out != NULL);
    for (size_t i = 0; i < N; i++) args[i] = (void *)(uintptr_t)(i * 3);
    cf_map *m;
    CHECK_OK(cf_map_new(ex, plus_one, args, N, CHUNK, PX_LONG, &m));
    size_t got = 0;
    while (got < N) {
        size_t k = 0;
        CHECK_OK(cf_map_next_n(m, out + got, N - got, &k, NULL, NULL));
        got += k;
    }
    for (size_t i = 0; i < N; i++) CHECK(out[i] == (void *)(uintptr_t)(i * 3 + 1));
    void *r;
    CHECK(cf_map_next(m, &r, NULL, NULL) == CF_END);
    cf_map_free(m);
    free(out);
    free(args);
}

/* The input 16 times over. */
static void *sixteen_times(const void *in, size_t len, size_t *out_len) {
    unsigned char *out = malloc(16 * len);
    if (!out) return cf_raise(ENOMEM, "malloc");
    for (int k = 0; k < 16; k++) memcpy(out + k * len, in, len);
    *out_len = 16 * len;
    return out;
}

/* Inputs below the arena's threshold travel inline, several in one send; their results
 * are 16 times larger and travel inline too. */
static void test_small_inputs_large_results(cf_executor *ex) {
    px_phase("inline inputs of 60,000 bytes, results of 960,000, 24 at once");
    enum { N = 24, SIZE = 60000 };
    unsigned char *in = malloc(SIZE);
    CHECK(in != NULL);
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        px_fill(in, SIZE, (unsigned)i);
        CHECK_OK(cf_submit_bytes(ex, sixteen_times, in, SIZE, &fs[i]));
    }
    for (int i = 0; i < N; i++) {
        cf_bytes b;
        CHECK_OK(cf_future_result_bytes(fs[i], PX_LONG, &b));
        CHECK(b.len == 16 * (size_t)SIZE);
        px_fill(in, SIZE, (unsigned)i);
        for (int k = 0; k < 16; k++)
            CHECK(memcmp((const unsigned char *)b.data + k * SIZE, in, SIZE) == 0);
        cf_future_release(fs[i]);
    }
    free(in);
}

int main(void) {
    px_watchdog(100);
    cf_executor *ex = px_pool(1, 0);
    test_byte_chunks(ex);
    test_pointer_chunks(ex);
    test_small_inputs_large_results(ex);
    px_phase("a small task after them");
    cf_future *f = px_submit(ex, px_task_ident, PX_I2P(42));
    CHECK(px_result(f) == 42);
    cf_future_release(f);
    cf_executor_free(ex);
    PX_CHECK_NO_CHILDREN();
    fprintf(stderr, "test_process_big_frames: all passed\n");
    return 0;
}
