/* test_map_lazy.c: lazy maps with a bounded buffer (cf_map_lazy_new,
 * cf_map_bytes_lazy_new: Python 3.14's Executor.map(..., buffersize=)).
 *
 * Covers: results in input order on thread and process pools for many chunksize and
 * buffersize pairs, read with cf_map_next and cf_map_next_n, then CF_END; `next` is never
 * more than buffersize x chunksize items ahead of the reader, is called only in the
 * reading thread, and the first fill pulls exactly that many; byte maps on thread and
 * process pools, with inputs lent only until the next call of `next` (freed right
 * after: valgrind sees a late read), inputs on both sides of 64 KiB on a process pool,
 * and each result checked while it is lent; a failing item ends the map and `next` is
 * not called again (nor by cf_map_free); an endless input stops being pulled when the
 * reader stops; 10 million items with at most buffersize x chunksize alive at any time
 * (counted, not timed); a refill refused after cf_executor_shutdown gives CF_SHUTDOWN at
 * the first item not submitted, then CF_END; a lazy map on an executor already shut down
 * is CF_SHUTDOWN from cf_map_lazy_new; a byte input with NULL data and a length;
 * the map's timeout; bad arguments (buffersize 0, NULL ex/fn/next/out, NaN timeout, the
 * wrong reader for the map's kind).
 *
 * Compare CPython 3.14 Lib/concurrent/futures/_base.py Executor.map (buffersize) and
 * Lib/test/test_concurrent_futures/executor.py test_map_buffersize*. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

#include <stdint.h>

/* ---- an input that counts its pulls ------------------------------------------------- */

typedef struct feed {
    size_t n;          /* items to give; SIZE_MAX: endless */
    size_t pulled;     /* calls that gave an item */
    size_t calls;      /* every call, including the one that said "end" */
    long live;         /* pulled and not yet read back (the reader decrements) */
    long max_live;
    pthread_t thread;  /* the thread that must call next */
    bool wrong_thread;
    /* byte inputs: the buffer lent by the last call, freed at the next one */
    unsigned char *lent;
    size_t large_every; /* every large_every-th input is 70,000 bytes (0: never) */
    size_t null_at;     /* this input has NULL data and a length (SIZE_MAX: none) */
} feed;

static void feed_init(feed *f, size_t n) {
    memset(f, 0, sizeof *f);
    f->n = n;
    f->thread = pthread_self();
    f->null_at = SIZE_MAX;
}

static bool next_ptr(void *state, void **item) {
    feed *f = state;
    f->calls++;
    if (!pthread_equal(pthread_self(), f->thread)) f->wrong_thread = true;
    if (f->pulled >= f->n) return false;
    *item = (void *)(uintptr_t)f->pulled++;
    if (++f->live > f->max_live) f->max_live = f->live;
    return true;
}

static size_t byte_len(const feed *f, size_t i) {
    if (f->large_every && i % f->large_every == f->large_every - 1) return 70000;
    return i % 50;
}

static bool next_bytes(void *state, const void **data, size_t *len) {
    feed *f = state;
    f->calls++;
    if (!pthread_equal(pthread_self(), f->thread)) f->wrong_thread = true;
    free(f->lent); /* lent only until this call */
    f->lent = NULL;
    if (f->pulled >= f->n) return false;
    size_t i = f->pulled++;
    *len = byte_len(f, i);
    if (i == f->null_at) {
        *data = NULL;
        return true;
    }
    if (*len > 0) {
        f->lent = malloc(*len);
        CHECK(f->lent != NULL);
        px_fill(f->lent, *len, (unsigned)i);
    }
    *data = f->lent;
    return true;
}

static void feed_done(feed *f) {
    free(f->lent);
    f->lent = NULL;
    CHECK(!f->wrong_thread);
}

/* ---- tasks -------------------------------------------------------------------------- */

static uintptr_t expect(uintptr_t x) { return x * x + 1; }

static size_t g_fail_at = SIZE_MAX;
static void *square(void *arg) {
    uintptr_t x = (uintptr_t)arg;
    if (x == g_fail_at) return cf_raise(40 + (int)(x % 7), "lazy item failed");
    return (void *)expect(x);
}

static gate g_gate;
static void *gated(void *arg) {
    gate_wait(&g_gate);
    return square(arg);
}

static cf_executor *threads(size_t n) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = n;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    return ex;
}

/* The most items pulled ahead of `consumed` read ones. */
static size_t ahead(size_t chunksize, size_t buffersize) {
    size_t cs = chunksize ? chunksize : 1;
    return buffersize > SIZE_MAX / cs ? SIZE_MAX : cs * buffersize;
}

/* Reads n items in order (cf_map_next, or cf_map_next_n when `batch`), checking after
 * every read that `next` is at most buffersize x chunksize items ahead; then CF_END
 * twice, with no pull after the end was seen. */
static void read_all(cf_map *m, feed *f, size_t n, size_t chunksize, size_t buffersize,
                     bool batch) {
    size_t bound = ahead(chunksize, buffersize);
    void *vals[64];
    size_t i = 0;
    while (i < n) {
        size_t got = 1;
        int code = -1;
        const char *msg = "x";
        if (batch)
            CHECK_OK(cf_map_next_n(m, vals, 1 + i % 64, &got, &code, &msg));
        else
            CHECK_OK(cf_map_next(m, &vals[0], &code, &msg));
        CHECK(code == 0 && msg == NULL);
        CHECK(got >= 1);
        for (size_t k = 0; k < got; k++, i++) {
            if ((uintptr_t)vals[k] != expect(i)) {
                fprintf(stderr, "item %zu: got %zu\n", i, (size_t)(uintptr_t)vals[k]);
                CHECK(0);
            }
            f->live--;
        }
        if (f->pulled - i > bound) {
            fprintf(stderr, "pulled %zu with %zu read, bound %zu\n", f->pulled, i, bound);
            CHECK(0);
        }
        /* One read at a time: exactly one chunk more per chunk read back, as in Python
         * 3.14: the read that returns a chunk's last item pulls the next chunk, so the
         * buffer is full again after every read. */
        if (!batch && bound < SIZE_MAX / 2) {
            size_t cs = chunksize ? chunksize : 1;
            size_t want = (i / cs) * cs + bound;
            if (want > n) want = n;
            if (f->pulled != want) {
                fprintf(stderr, "pulled %zu after reading %zu items, expected %zu (chunksize "
                                "%zu, buffersize %zu)\n", f->pulled, i, want, cs, buffersize);
                CHECK(0);
            }
        }
    }
    CHECK(i == n);
    size_t calls = f->calls;
    void *r = &r;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    CHECK(r == (void *)&r);
    /* At most the call that says "end" (the last chunk may have been read without a
     * refill yet), then none. */
    CHECK(f->calls <= calls + 1);
    calls = f->calls;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    CHECK(f->calls == calls);
    CHECK(f->pulled == n);
}

/* ---- results in order --------------------------------------------------------------- */

static void order_on(cf_executor *ex, size_t n, const size_t *chunks, size_t nc,
                     const size_t *bufs, size_t nb) {
    for (size_t c = 0; c < nc; c++) {
        for (size_t b = 0; b < nb; b++) {
            for (int batch = 0; batch < 2; batch++) {
                feed f;
                feed_init(&f, n);
                cf_map *m = NULL;
                CHECK_OK(cf_map_lazy_new(ex, square, next_ptr, &f, chunks[c], bufs[b], PX_LONG,
                                         &m));
                /* The first fill: exactly buffersize chunks (or all of a short input). */
                size_t first = ahead(chunks[c], bufs[b]);
                CHECK(f.pulled == (first < n ? first : n));
                read_all(m, &f, n, chunks[c], bufs[b], batch);
                size_t calls = f.calls;
                cf_map_free(m);
                CHECK(f.calls == calls);
                feed_done(&f);
            }
        }
    }
}

static void test_order_threads(void) {
    px_phase("order on a thread pool");
    cf_executor *ex = threads(2);
    size_t chunks[] = {0, 1, 3, 7, 100, 1000, 5000};
    size_t bufs[] = {1, 2, 8, SIZE_MAX};
    order_on(ex, 1000, chunks, 7, bufs, 4);
    order_on(ex, 0, chunks, 2, bufs, 2); /* an empty input: CF_END at once */
    cf_executor_free(ex);
}

static void test_order_processes(void) {
    px_phase("order on a process pool");
    cf_executor *ex = px_pool(2, 0);
    size_t chunks[] = {1, 10};
    size_t bufs[] = {1, 4};
    order_on(ex, 300, chunks, 2, bufs, 2);
    cf_executor_free(ex);
    PX_CHECK_NO_CHILDREN();
}

/* ---- byte maps ------------------------------------------------------------------------ */

static void bytes_on(cf_executor *ex, size_t n, size_t chunksize, size_t buffersize,
                     size_t large_every) {
    feed f;
    feed_init(&f, n);
    f.large_every = large_every;
    cf_map *m = NULL;
    CHECK_OK(cf_map_bytes_lazy_new(ex, px_rev_xor, next_bytes, &f, chunksize, buffersize,
                                   PX_LONG, &m));
    size_t bound = ahead(chunksize, buffersize);
    for (size_t i = 0; i < n; i++) {
        cf_bytes b = {NULL, 0};
        int code = -1;
        CHECK_OK(cf_map_next_bytes(m, &b, &code, NULL));
        CHECK(code == 0);
        PX_CHECK_EQ(b.len, byte_len(&f, i));
        CHECK((b.len == 0) == (b.data == NULL));
        px_check_rev_xor(b.data, b.len, (unsigned)i); /* lent until the next read */
        CHECK(f.pulled <= i + 1 + bound);
    }
    cf_bytes b;
    CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_END);
    size_t calls = f.calls;
    cf_map_free(m);
    CHECK(f.calls == calls);
    feed_done(&f);
}

static void test_bytes(void) {
    px_phase("byte maps on a thread pool");
    cf_executor *ex = threads(2);
    bytes_on(ex, 500, 0, 3, 0);
    bytes_on(ex, 500, 7, 2, 0);
    bytes_on(ex, 60, 4, 2, 9);
    cf_executor_free(ex);
    px_phase("byte maps on a process pool");
    ex = px_pool(2, 0);
    bytes_on(ex, 300, 1, 4, 0);
    bytes_on(ex, 300, 16, 2, 0);
    bytes_on(ex, 40, 4, 3, 5); /* 70,000-byte inputs go alone */
    cf_executor_free(ex);
    PX_CHECK_NO_CHILDREN();
}

/* A byte input with NULL data and a length: CF_INVALID_ARGUMENT at its read (first
 * fill: from cf_map_bytes_lazy_new). */
static void test_bytes_null_input(void) {
    px_phase("byte input with NULL data");
    cf_executor *ex = threads(2);
    feed f;
    feed_init(&f, 100);
    f.null_at = 21; /* i % 50 == 21: a length */
    cf_map *m = NULL;
    CHECK_OK(cf_map_bytes_lazy_new(ex, px_rev_xor, next_bytes, &f, 5, 2, PX_LONG, &m));
    for (size_t i = 0; i < 20; i++) {
        cf_bytes b;
        CHECK_OK(cf_map_next_bytes(m, &b, NULL, NULL));
        px_check_rev_xor(b.data, b.len, (unsigned)i);
    }
    cf_bytes b;
    CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_END);
    CHECK(f.pulled == 22);
    cf_map_free(m);
    CHECK(f.pulled == 22);
    feed_done(&f);

    feed_init(&f, 100);
    f.null_at = 3;
    m = (cf_map *)&f;
    CHECK_STATUS(cf_map_bytes_lazy_new(ex, px_rev_xor, next_bytes, &f, 5, 2, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK(m == (cf_map *)&f);
    feed_done(&f);
    cf_executor_free(ex);
}

/* ---- a failing item; an endless input ------------------------------------------------ */

static void test_failure_stops_next(void) {
    px_phase("a failing item stops the calls of next");
    cf_executor *ex = threads(2);
    feed f;
    feed_init(&f, SIZE_MAX);
    g_fail_at = 150;
    cf_map *m = NULL;
    CHECK_OK(cf_map_lazy_new(ex, square, next_ptr, &f, 10, 3, PX_LONG, &m));
    for (size_t i = 0; i < 150; i++) {
        void *r;
        CHECK_OK(cf_map_next(m, &r, NULL, NULL));
        CHECK((uintptr_t)r == expect(i));
    }
    void *r;
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_TASK_FAILED);
    CHECK(code == 40 + 150 % 7);
    PX_CHECK_STREQ(msg, "lazy item failed");
    size_t calls = f.calls;
    CHECK(f.pulled <= 151 + 30);
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    void *vals[4];
    size_t got = 9;
    CHECK_STATUS(cf_map_next_n(m, vals, 4, &got, NULL, NULL), CF_END);
    CHECK(got == 0);
    cf_map_free(m);
    CHECK(f.calls == calls);
    g_fail_at = SIZE_MAX;
    feed_done(&f);
    cf_executor_free(ex);
}

static void test_endless_reader_stops(void) {
    px_phase("an endless input stops being pulled when the reader stops");
    cf_executor *ex = threads(2);
    size_t cases[][2] = {{1, 1}, {1, 4}, {16, 4}, {1000, 2}};
    for (size_t c = 0; c < 4; c++) {
        size_t cs = cases[c][0], bs = cases[c][1];
        feed f;
        feed_init(&f, SIZE_MAX);
        cf_map *m = NULL;
        CHECK_OK(cf_map_lazy_new(ex, square, next_ptr, &f, cs, bs, PX_LONG, &m));
        CHECK(f.pulled == cs * bs);
        size_t want = 5000 + c;
        for (size_t i = 0; i < want; i++) {
            void *r;
            CHECK_OK(cf_map_next(m, &r, NULL, NULL));
            CHECK((uintptr_t)r == expect(i));
            CHECK(f.pulled <= i + 1 + cs * bs);
        }
        size_t calls = f.calls;
        /* The workers finish what was submitted; nothing more is pulled meanwhile. */
        sleep_s(0.02);
        CHECK(f.calls == calls);
        CHECK(f.pulled <= want + cs * bs);
        cf_map_free(m);
        CHECK(f.calls == calls);
        feed_done(&f);
    }
    cf_executor_free(ex);
}

/* 10 million items (1 million under valgrind, CF_TEST_TIME_SCALE > 1), never more than
 * buffersize x chunksize alive in the map: counted by `next` (up) and the reader (down,
 * after each read). Read one by one (cf_map_next), so that a read holds at most one item
 * the test has not counted down yet. */
static void test_memory_flat(void) {
    px_phase("10 million items in bounded memory");
    size_t n = px_scale() > 1.0 ? 1000000 : 10000000;
    size_t cs = 4096, bs = 8;
    cf_executor *ex = threads(2);
    feed f;
    feed_init(&f, SIZE_MAX);
    cf_map *m = NULL;
    CHECK_OK(cf_map_lazy_new(ex, square, next_ptr, &f, cs, bs, PX_LONG, &m));
    for (size_t i = 0; i < n; i++) {
        void *r;
        cf_status st = cf_map_next(m, &r, NULL, NULL);
        if (st != CF_OK || (uintptr_t)r != expect(i)) {
            fprintf(stderr, "item %zu: %s, got %zu\n", i, cf_status_name(st), (size_t)(uintptr_t)r);
            CHECK(0);
        }
        f.live--;
    }
    /* + 1: the read that returns a chunk's last item pulls the next chunk before it
     * returns, and this test counts that item down only after the read returned (the
     * map no longer holds it). */
    if (f.max_live > (long)(cs * bs) + 1) {
        fprintf(stderr, "%ld items alive at once, bound %zu\n", f.max_live, cs * bs);
        CHECK(0);
    }
    CHECK(f.pulled >= n && f.pulled <= n + cs * bs);
    cf_map_free(m);
    feed_done(&f);
    cf_executor_free(ex);
}

/* ---- refills refused ------------------------------------------------------------------ */

static void test_refill_after_shutdown(void) {
    px_phase("a refill refused after shutdown");
    cf_executor *ex = threads(2);
    feed f;
    feed_init(&f, SIZE_MAX);
    cf_map *m = NULL;
    CHECK_OK(cf_map_lazy_new(ex, square, next_ptr, &f, 4, 3, PX_LONG, &m));
    CHECK(f.pulled == 12);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    /* Items 0..11 were submitted and run; reading item 3 lets a refill in, which is
     * refused (its 4 items were pulled, then dropped), and nothing more is pulled. */
    for (size_t i = 0; i < 12; i++) {
        void *r;
        int code = -1;
        CHECK_OK(cf_map_next(m, &r, &code, NULL));
        CHECK((uintptr_t)r == expect(i));
        CHECK(code == 0);
    }
    CHECK(f.pulled == 16);
    void *r;
    int code = -1;
    const char *msg = NULL;
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_SHUTDOWN);
    CHECK(code == 0);
    CHECK(msg != NULL);
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_END);
    CHECK(f.pulled == 16);
    cf_map_free(m);
    CHECK(f.pulled == 16);
    feed_done(&f);

    /* The first fill refused: no map, and the error from cf_map_lazy_new. */
    feed_init(&f, SIZE_MAX);
    m = (cf_map *)&f;
    CHECK_STATUS(cf_map_lazy_new(ex, square, next_ptr, &f, 4, 3, PX_LONG, &m), CF_SHUTDOWN);
    CHECK(m == (cf_map *)&f);
    CHECK(f.pulled <= 12); /* at most the first fill, pulled then dropped */
    feed_done(&f);
    cf_executor_free(ex);
}

/* ---- timeout ---------------------------------------------------------------------------- */

static void test_timeout(void) {
    px_phase("timeout");
    cf_executor *ex = threads(2);
    gate_init(&g_gate);
    feed f;
    feed_init(&f, 50);
    cf_map *m = NULL;
    double t0 = now_s();
    CHECK_OK(cf_map_lazy_new(ex, gated, next_ptr, &f, 5, 2, 0.05, &m));
    void *r;
    CHECK_STATUS(cf_map_next(m, &r, NULL, NULL), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.045);
    gate_open(&g_gate);
    cf_map_free(m); /* cancels what has not started; the started ones finish */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    cf_executor_free(ex);
    gate_destroy(&g_gate);
    feed_done(&f);
}

/* ---- bad arguments ---------------------------------------------------------------------- */

static void test_bad_arguments(void) {
    px_phase("bad arguments");
    cf_executor *ex = threads(1);
    feed f;
    feed_init(&f, 10);
    cf_map *m = (cf_map *)&f;
    CHECK_STATUS(cf_map_lazy_new(ex, square, next_ptr, &f, 1, 0, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_lazy_new(NULL, square, next_ptr, &f, 1, 1, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_lazy_new(ex, NULL, next_ptr, &f, 1, 1, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_lazy_new(ex, square, NULL, &f, 1, 1, PX_LONG, &m), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_lazy_new(ex, square, next_ptr, &f, 1, 1, PX_LONG, NULL),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_lazy_new(ex, square, next_ptr, &f, 1, 1, NAN, &m), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_bytes_lazy_new(ex, px_rev_xor, next_bytes, &f, 1, 0, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_bytes_lazy_new(NULL, px_rev_xor, next_bytes, &f, 1, 1, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_bytes_lazy_new(ex, NULL, next_bytes, &f, 1, 1, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_bytes_lazy_new(ex, px_rev_xor, NULL, &f, 1, 1, PX_LONG, &m),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_map_bytes_lazy_new(ex, px_rev_xor, next_bytes, &f, 1, 1, PX_LONG, NULL),
                 CF_INVALID_ARGUMENT);
    CHECK(m == (cf_map *)&f);
    CHECK(f.calls == 0); /* refused before anything was pulled */

    /* The reader must match the map's kind. */
    CHECK_OK(cf_map_lazy_new(ex, square, next_ptr, &f, 2, 2, PX_LONG, &m));
    cf_bytes b;
    CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_INVALID_ARGUMENT);
    read_all(m, &f, 10, 2, 2, false);
    cf_map_free(m);
    feed_done(&f);
    feed_init(&f, 3);
    CHECK_OK(cf_map_bytes_lazy_new(ex, px_rev_xor, next_bytes, &f, 2, 2, PX_LONG, &m));
    void *vals[2];
    size_t got;
    CHECK_STATUS(cf_map_next_n(m, vals, 2, &got, NULL, NULL), CF_INVALID_ARGUMENT);
    void *r;
    CHECK_OK(cf_map_next(m, &r, NULL, NULL)); /* as for cf_map_bytes_new: the data pointer */
    cf_map_free(m);
    feed_done(&f);
    cf_executor_free(ex);
}

int main(void) {
    px_watchdog(240);
    test_bad_arguments();
    test_order_threads();
    test_order_processes();
    test_bytes();
    test_bytes_null_input();
    test_failure_stops_next();
    test_endless_reader_stops();
    test_memory_flat();
    test_refill_after_shutdown();
    test_timeout();
    printf("test_map_lazy: ok\n");
    return 0;
}
