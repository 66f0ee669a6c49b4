/* test_process_bytes_map.c: byte tasks and map on process pools.
 *
 * Covers: cf_submit_bytes with inputs of 0, 1, 100, 4095, 4096, 65536, 65537 bytes, 1 MiB
 * and 4 MiB + 3 travelling to a worker and results of other sizes (3 MiB, 8 bytes, 0)
 * travelling back, contents checked byte by byte; the input is copied at submit (the
 * caller's buffer is scribbled over at once); a 0-byte input reaches the task as NULL;
 * cf_future_result gives the data pointer; a NULL result (whatever *out_len says) is
 * NULL/0; cf_raise in a byte task; bad input (NULL data with a length, a pointer future
 * read as bytes); 200 byte tasks at once. cf_map_new over 10,000 items with chunksize
 * 0, 1, 7, 100 and 10,000, results in input order, then CF_END; a chunk runs on one
 * worker; a failing item stops the map at its position; a map timeout; an empty map.
 * cf_map_bytes_new over 10,000 inputs of varied sizes with chunksize 1 and 100, results
 * in order and still valid until cf_map_free; a 1 MiB input among small ones; inputs on
 * both sides of 64 KiB (which go alone, making chunks uneven) with chunksizes 2, 4 and
 * 40, and a failing item right after a large one; a failing item.
 *
 * Ports from CPython Lib/test/test_concurrent_futures:
 *   executor.py: ExecutorTest.test_map, test_map_exception, test_map_timeout;
 *   test_process_pool.py: ProcessPoolExecutorTest.test_map_chunksize (every chunksize
 *     gives the same results in order);
 *   test_deadlock.py: ExecutorDeadlockTest.test_crash_big_data (here without the crash:
 *     large inputs and results cross the pipe both ways without a deadlock). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

#define SENTINEL ((void *)(uintptr_t)0x7a7a7a7au)

typedef struct shared {
    px_gate gate;
} shared;
static shared *S;

/* ---- data ------------------------------------------------------------------------- */

/* ---- byte tasks (run in workers) --------------------------------------------------- */

static bool input_ok(const void *in, size_t len) { return len == 0 ? in == NULL : in != NULL; }

/* Reversed input XOR 0x5A, then the worker's pid as an int. */
static void *b_rev_xor_pid(const void *in, size_t len, size_t *out_len) {
    if (!input_ok(in, len)) return cf_raise(EFAULT, "input pointer does not match its length");
    unsigned char *out = malloc(len + sizeof(int));
    if (!out) return cf_raise(ENOMEM, "malloc");
    px_rev_xor_into(out, in, len);
    int pid = (int)getpid();
    memcpy(out + len, &pid, sizeof pid);
    *out_len = len + sizeof(int);
    return out;
}

static uint64_t fnv1a(const unsigned char *p, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
/* 8 bytes: the FNV-1a hash of the input. */
static void *b_hash(const void *in, size_t len, size_t *out_len) {
    uint64_t *out = malloc(sizeof *out);
    if (!out) return cf_raise(ENOMEM, "malloc");
    *out = fnv1a(in, len);
    *out_len = sizeof *out;
    return out;
}

/* Returns NULL but claims a length: taken as 0. */
static void *b_null(const void *in, size_t len, size_t *out_len) {
    (void)in;
    (void)len;
    *out_len = 5;
    return NULL;
}

/* Allocates a result, then fails with the input length as the code. */
static void *b_raise(const void *in, size_t len, size_t *out_len) {
    void *out = px_rev_xor(in, len, out_len);
    char msg[64];
    snprintf(msg, sizeof msg, "bytes task failed on %zu bytes", len);
    cf_raise((int)len, msg);
    return out;
}

/* For map_bytes: fails on the input "FAIL". */
static void *b_map_fail(const void *in, size_t len, size_t *out_len) {
    if (len == 4 && memcmp(in, "FAIL", 4) == 0) return cf_raise(EILSEQ, "bad item");
    return px_rev_xor(in, len, out_len);
}

/* ---- map functions (run in workers) ------------------------------------------------ */

static void *m_poly(void *arg) {
    intptr_t x = PX_P2I(arg);
    return PX_I2P(x * x - 3 * x + 7);
}
static void *m_fail_at_555(void *arg) {
    intptr_t x = PX_P2I(arg);
    if (x == 555) return cf_raise(77, "item 555");
    return PX_I2P(x + 1);
}

/* ---- checks ------------------------------------------------------------------------ */

/* ---- 1. byte tasks ----------------------------------------------------------------- */

static void test_bytes_sizes(cf_executor *ex) {
    px_phase("byte tasks: sizes 0 .. 4 MiB in and out");
    static const size_t sizes[] = {0, 1, 100, 4095, 4096, 65536, 65537, 1u << 20,
                                   (4u << 20) + 3};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    cf_future *fs[NS];
    size_t maxlen = sizes[NS - 1];
    unsigned char *buf = malloc(maxlen);
    CHECK(buf != NULL);
    for (size_t k = 0; k < NS; k++) {
        px_fill(buf, sizes[k], (unsigned)k);
        fs[k] = NULL;
        CHECK_OK(cf_submit_bytes(ex, b_rev_xor_pid, sizes[k] ? buf : NULL, sizes[k], &fs[k]));
        CHECK(fs[k] != NULL);
        memset(buf, 0xEE, maxlen); /* the input was copied at submit */
    }
    for (size_t k = 0; k < NS; k++) {
        cf_bytes b = {NULL, 12345};
        CHECK_OK(cf_future_result_bytes(fs[k], PX_LONG, &b));
        PX_CHECK_EQ(b.len, sizes[k] + sizeof(int));
        CHECK(b.data != NULL);
        px_check_rev_xor(b.data, sizes[k], (unsigned)k);
        int pid;
        memcpy(&pid, (const unsigned char *)b.data + sizes[k], sizeof pid);
        CHECK(pid > 0 && pid != (int)getpid());
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[k], 0, &r));
        CHECK(r == b.data);
        cf_bytes b2;
        CHECK_OK(cf_future_result_bytes(fs[k], 0, &b2));
        CHECK(b2.data == b.data && b2.len == b.len); /* lent, not copied again */
        cf_future_release(fs[k]);
    }

    /* An empty input given as a non-NULL pointer still reaches the task as NULL. */
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, px_rev_xor, buf, 0, &f));
    cf_bytes b = {buf, 99};
    CHECK_OK(cf_future_result_bytes(f, PX_LONG, &b));
    CHECK(b.data == NULL);
    PX_CHECK_EQ(b.len, 0);
    cf_future_release(f);

    /* Results larger and smaller than the input. */
    size_t mib = 1u << 20;
    px_fill(buf, mib, 77);
    CHECK_OK(cf_submit_bytes(ex, px_triple, buf, mib, &f));
    cf_future *h = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_hash, buf, mib, &h));
    uint64_t want_hash = fnv1a(buf, mib);
    memset(buf, 0, mib);
    CHECK_OK(cf_future_result_bytes(f, PX_LONG, &b));
    px_check_triple(&b, mib, 77);
    cf_future_release(f);
    px_check_u64_result(h, want_hash);
    cf_future_release(h);

    /* A NULL result is NULL/0 whatever *out_len says. */
    CHECK_OK(cf_submit_bytes(ex, b_null, "abc", 3, &f));
    b.data = buf;
    b.len = 1;
    CHECK_OK(cf_future_result_bytes(f, PX_LONG, &b));
    CHECK(b.data == NULL);
    PX_CHECK_EQ(b.len, 0);
    cf_future_release(f);

    /* cf_raise in a byte task (its buffer is freed by the library). */
    px_fill(buf, 300, 1);
    CHECK_OK(cf_submit_bytes(ex, b_raise, buf, 300, &f));
    int code;
    const char *msg;
    CHECK_STATUS(px_outcome(f, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, 300);
    PX_CHECK_STREQ(msg, "bytes task failed on 300 bytes");
    CHECK_STATUS(cf_future_result_bytes(f, 0, &b), CF_TASK_FAILED);
    cf_future_release(f);

    /* Bad input. */
    cf_future *sentinel = (cf_future *)(uintptr_t)0x5e5e5e5eu;
    f = sentinel;
    CHECK_STATUS(cf_submit_bytes(ex, px_rev_xor, NULL, 1, &f), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit_bytes(ex, NULL, buf, 1, &f), CF_INVALID_ARGUMENT);
    CHECK(f == sentinel);
    f = px_submit(ex, px_task_getpid, NULL);
    CHECK(px_result(f) > 0);
    CHECK_STATUS(cf_future_result_bytes(f, PX_LONG, &b), CF_INVALID_ARGUMENT);
    cf_future_release(f);
    free(buf);
}

static void test_bytes_many(cf_executor *ex) {
    px_phase("200 byte tasks at once");
    enum { N = 200 };
    cf_future *fs[N];
    unsigned char *buf = malloc(N * 37 + 1);
    CHECK(buf != NULL);
    for (int i = 0; i < N; i++) {
        size_t len = (size_t)i * 37;
        px_fill(buf, len, (unsigned)(1000 + i));
        CHECK_OK(cf_submit_bytes(ex, px_rev_xor, buf, len, &fs[i]));
    }
    for (int i = 0; i < N; i++) {
        cf_bytes b;
        CHECK_OK(cf_future_result_bytes(fs[i], PX_LONG, &b));
        PX_CHECK_EQ(b.len, (size_t)i * 37);
        px_check_rev_xor(b.data, b.len, (unsigned)(1000 + i));
        cf_future_release(fs[i]);
    }
    free(buf);
}

/* ---- 2. map ------------------------------------------------------------------------- */

enum { NMAP = 10000 };

static void test_map_chunksizes(cf_executor *ex) {
    static void *args[NMAP];
    for (int i = 0; i < NMAP; i++) args[i] = PX_I2P(i - 5000);
    static const size_t chunks[] = {1, 0, 7, 100, NMAP};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        char phase[80];
        snprintf(phase, sizeof phase, "map over %d items, chunksize %zu", NMAP, chunks[c]);
        px_phase(phase);
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, m_poly, args, NMAP, chunks[c], 3 * PX_LONG, &m));
        for (int i = 0; i < NMAP; i++) {
            void *r = NULL;
            int code = 1;
            const char *msg = "x";
            cf_status st = cf_map_next(m, &r, &code, &msg);
            if (st != CF_OK) fprintf(stderr, "item %d: %s\n", i, cf_status_name(st));
            CHECK_OK(st);
            intptr_t x = i - 5000;
            PX_CHECK_EQ(PX_P2I(r), x * x - 3 * x + 7);
            PX_CHECK_EQ(code, 0);
            CHECK(msg == NULL);
        }
        void *r = NULL;
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        cf_map_free(m);
    }

    px_phase("map: a chunk runs on one worker");
    cf_map *m = NULL;
    CHECK_OK(cf_map_new(ex, px_task_getpid, args, 1000, 100, PX_LONG, &m));
    long pids[1000];
    for (int i = 0; i < 1000; i++) {
        void *r = NULL;
        CHECK_OK(cf_map_next(m, &r, NULL, NULL));
        pids[i] = (long)PX_P2I(r);
        CHECK(pids[i] > 0 && pids[i] != (long)getpid());
        if (i % 100 != 0) PX_CHECK_EQ(pids[i], pids[i - 1]);
    }
    cf_map_free(m);

    px_phase("map: empty");
    CHECK_OK(cf_map_new(ex, m_poly, NULL, 0, 1, PX_LONG, &m));
    void *r = NULL;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    cf_map_free(m);
}

static void test_map_failure_and_timeout(cf_executor *ex) {
    static void *args[1000];
    for (int i = 0; i < 1000; i++) args[i] = PX_I2P(i);
    static const size_t chunks[] = {1, 10, 1000};
    for (size_t c = 0; c < 3; c++) {
        char phase[80];
        snprintf(phase, sizeof phase, "map: item 555 fails, chunksize %zu", chunks[c]);
        px_phase(phase);
        cf_map *m = NULL;
        CHECK_OK(cf_map_new(ex, m_fail_at_555, args, 1000, chunks[c], PX_LONG, &m));
        for (int i = 0; i < 555; i++) {
            void *r = NULL;
            CHECK_OK(cf_map_next(m, &r, NULL, NULL));
            PX_CHECK_EQ(PX_P2I(r), i + 1);
        }
        void *r = SENTINEL;
        int code = 0;
        const char *msg = NULL;
        CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_TASK_FAILED);
        PX_CHECK_EQ(code, 77);
        PX_CHECK_STREQ(msg, "item 555");
        CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_END);
        PX_CHECK_STREQ(msg, "item 555"); /* still valid until cf_map_free */
        cf_map_free(m);
    }

    px_phase("map: timeout");
    memset(&S->gate, 0, sizeof S->gate);
    void *gargs[3] = {&S->gate, &S->gate, &S->gate};
    cf_map *m = NULL;
    double t0 = now_s();
    CHECK_OK(cf_map_new(ex, px_gate_task, gargs, 3, 1, 0.3, &m));
    void *r = NULL;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.25);
    cf_map_free(m); /* cancels what has not started */
    px_add(&S->gate.open, 1);

    /* The pool is fine afterwards. */
    cf_future *f = px_submit(ex, m_poly, PX_I2P(2));
    PX_CHECK_EQ(px_result(f), 5);
    cf_future_release(f);
}
/* ---- 3. map_bytes ------------------------------------------------------------------- */

static void test_map_bytes(cf_executor *ex) {
    unsigned char *pool = malloc((size_t)NMAP * 50);
    CHECK(pool != NULL);
    cf_bytes *in = calloc(NMAP, sizeof *in);
    CHECK(in != NULL);
    for (int i = 0; i < NMAP; i++) {
        size_t len = (size_t)(i % 50);
        unsigned char *p = pool + (size_t)i * 50;
        px_fill(p, len, (unsigned)i);
        in[i].data = len ? p : NULL;
        in[i].len = len;
    }
    static const size_t chunks[] = {1, 100};
    for (size_t c = 0; c < 2; c++) {
        char phase[80];
        snprintf(phase, sizeof phase, "map_bytes over %d inputs, chunksize %zu", NMAP, chunks[c]);
        px_phase(phase);
        cf_map *m = NULL;
        CHECK_OK(cf_map_bytes_new(ex, px_rev_xor, in, NMAP, chunks[c], 3 * PX_LONG, &m));
        cf_bytes first = {NULL, 0};
        for (int i = 0; i < NMAP; i++) {
            cf_bytes b = {NULL, 0};
            int code = 1;
            const char *msg = "x";
            cf_status st = cf_map_next_bytes(m, &b, &code, &msg);
            if (st != CF_OK) fprintf(stderr, "item %d: %s\n", i, cf_status_name(st));
            CHECK_OK(st);
            PX_CHECK_EQ(b.len, (size_t)(i % 50));
            if (b.len == 0) CHECK(b.data == NULL);
            px_check_rev_xor(b.data, b.len, (unsigned)i);
            PX_CHECK_EQ(code, 0);
            CHECK(msg == NULL);
            if (i == 1) first = b;
        }
        cf_bytes b;
        CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_END);
        px_check_rev_xor(first.data, first.len, 1); /* lent until cf_map_free */
        void *r;
        CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
        cf_map_free(m);
    }

    px_phase("map_bytes: a 1 MiB input among small ones, chunksize 3");
    size_t mib = 1u << 20;
    unsigned char *big = malloc(mib);
    CHECK(big != NULL);
    px_fill(big, mib, 4242);
    cf_bytes in2[10];
    for (int i = 0; i < 10; i++) in2[i] = in[i];
    in2[4].data = big;
    in2[4].len = mib;
    cf_map *m = NULL;
    CHECK_OK(cf_map_bytes_new(ex, px_rev_xor, in2, 10, 3, PX_LONG, &m));
    memset(big, 0, mib); /* copied at cf_map_bytes_new */
    for (int i = 0; i < 10; i++) {
        cf_bytes b;
        CHECK_OK(cf_map_next_bytes(m, &b, NULL, NULL));
        if (i == 4) {
            PX_CHECK_EQ(b.len, mib);
            px_check_rev_xor(b.data, mib, 4242);
        } else {
            PX_CHECK_EQ(b.len, (size_t)i);
            px_check_rev_xor(b.data, b.len, (unsigned)i);
        }
    }
    cf_map_free(m);

    /* Items of 64 KiB or more are tasks of their own on a process pool (they travel
     * through shared memory), so chunks come out uneven: results stay in input order,
     * each checked byte by byte, for every chunksize. */
    px_phase("map_bytes: items on both sides of 64 KiB, chunksizes 2, 4 and 40");
    enum { NMIX = 40 };
    static const size_t mix_sizes[] = {0, 65535, 65536, 7, 200000, 1u << 20, 12, 65537};
    unsigned char *mixbuf = malloc(NMIX * (size_t)(1u << 20));
    CHECK(mixbuf != NULL);
    cf_bytes mix[NMIX];
    for (int i = 0; i < NMIX; i++) {
        size_t len = mix_sizes[(i * 3 + i / 8) % 8];
        unsigned char *p = mixbuf + (size_t)i * (1u << 20);
        px_fill(p, len, (unsigned)(1000 + i));
        mix[i] = (cf_bytes){len ? p : NULL, len};
    }
    static const size_t mix_chunks[] = {2, 4, 40};
    for (size_t c = 0; c < 3; c++) {
        CHECK_OK(cf_map_bytes_new(ex, px_rev_xor, mix, NMIX, mix_chunks[c], PX_LONG, &m));
        for (int i = 0; i < NMIX; i++) {
            cf_bytes b;
            CHECK_OK(cf_map_next_bytes(m, &b, NULL, NULL));
            PX_CHECK_EQ(b.len, mix[i].len);
            px_check_rev_xor(b.data, b.len, (unsigned)(1000 + i));
        }
        cf_bytes end;
        CHECK_STATUS(cf_map_next_bytes(m, &end, NULL, NULL), CF_END);
        cf_map_free(m);
    }

    px_phase("map_bytes: a failing item right after a large one, chunksize 3");
    mix[6] = (cf_bytes){"FAIL", 4};
    CHECK_OK(cf_map_bytes_new(ex, b_map_fail, mix, NMIX, 3, PX_LONG, &m));
    for (int i = 0; i < 6; i++) {
        cf_bytes b;
        CHECK_OK(cf_map_next_bytes(m, &b, NULL, NULL));
        PX_CHECK_EQ(b.len, mix[i].len);
        px_check_rev_xor(b.data, b.len, (unsigned)(1000 + i));
    }
    {
        cf_bytes b;
        int code = 0;
        CHECK_STATUS(cf_map_next_bytes(m, &b, &code, NULL), CF_TASK_FAILED);
        PX_CHECK_EQ(code, EILSEQ);
        CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_END);
    }
    cf_map_free(m);
    free(mixbuf);

    px_phase("map_bytes: a failing item");
    in2[4].data = "FAIL";
    in2[4].len = 4;
    CHECK_OK(cf_map_bytes_new(ex, b_map_fail, in2, 10, 2, PX_LONG, &m));
    for (int i = 0; i < 4; i++) {
        cf_bytes b;
        CHECK_OK(cf_map_next_bytes(m, &b, NULL, NULL));
        PX_CHECK_EQ(b.len, (size_t)i);
    }
    cf_bytes b;
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_map_next_bytes(m, &b, &code, &msg), CF_TASK_FAILED);
    PX_CHECK_EQ(code, EILSEQ);
    PX_CHECK_STREQ(msg, "bad item");
    CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_END);
    cf_map_free(m);

    /* A map made by cf_map_new is not read as bytes, and vice versa. */
    void *one[1] = {PX_I2P(1)};
    CHECK_OK(cf_map_new(ex, m_poly, one, 1, 1, PX_LONG, &m));
    CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_INVALID_ARGUMENT);
    cf_map_free(m);

    free(big);
    free(in);
    free(pool);
}

int main(void) {
    px_watchdog(110);
    S = px_shm_new(sizeof *S);
    cf_executor *ex = px_pool(2, 0);
    test_bytes_sizes(ex);
    test_bytes_many(ex);
    test_map_chunksizes(ex);
    test_map_failure_and_timeout(ex);
    test_map_bytes(ex);
    cf_executor_free(ex);
    PX_CHECK_NO_CHILDREN();
    px_shm_free(S, sizeof *S);
    fprintf(stderr, "test_process_bytes_map: all passed\n");
    return 0;
}
