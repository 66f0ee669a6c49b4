/* test_process_shm.c: large byte payloads through the worker's shared-memory arena.
 *
 * src/rt/process.rs sends a byte input of at least 64 KiB (SHM_MIN) through a memfd
 * arena that the parent shares with each worker: the task reads its input in the arena,
 * its result goes back in the same slot when it fits (else through the socket).
 *
 * Covers: inputs of 0, 1, 100, 65535, 65536, 65537, 1 MiB, 5 MiB + 1 (which outgrows the
 * first 4 MiB arena, so it is replaced), then 1 MiB again, round-trip byte-exact; inputs
 * of 64 KiB and more reach the task inside a "cfutures-arena" mapping and smaller ones do
 * not (so this test fails if the arena path is not taken); results larger than the input
 * (3x, through the socket), smaller (8 bytes) and empty, for inputs that went through the
 * arena (1 MiB) and through the socket (1000 bytes); 40 large tasks at once on 2
 * workers (more than an arena holds: tasks wait for slots), mixed with small ones, all
 * results held at once, intact and in disjoint memory; 64 held 8-byte results of 1 MiB
 * inputs do not keep the inputs' memory in use (mallinfo2);
 * cf_map_bytes_new over large and small inputs with chunksize 1 and 4; workers killed by
 * SIGKILL and abort() while a large payload is in their arena, with large tasks
 * pipelined behind them on the same worker: exactly the killed tasks fail with CF_BROKEN
 * (message naming the signal), the others finish byte-exact on a new worker, and the
 * pool keeps working; forged answers from a worker (a result offset outside the arena, a
 * length larger than the slot, an arena result for a task sent through the socket, a
 * truncated answer) fail that task with CF_BROKEN, never a crash or a hang of the
 * parent; after cf_executor_free no arena is left mapped in this process and no child. */
#define _GNU_SOURCE
#include <cfutures.h>
#include <malloc.h>

#include "test_util.h"
#include "test_util_proc.h"

#define MIB ((size_t)1 << 20)

/* ---- data ------------------------------------------------------------------------- */

/* The output of px_rev_xor for an input px_fill'ed with `seed`, and its length. */
static void check_rev_xor(const cf_bytes *b, size_t len, unsigned seed) {
    PX_CHECK_EQ(b->len, len);
    if (len == 0) {
        CHECK(b->data == NULL);
        return;
    }
    px_check_rev_xor(b->data, len, seed);
}

/* ---- tasks (run in workers) ------------------------------------------------------- */

/* Is `p` inside a mapping of the library's arena memfd? (/proc/self/maps) */
static bool in_arena(const void *p) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL) return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
        if ((uintptr_t)p >= lo && (uintptr_t)p < hi) found = strstr(line, "cfutures-arena") != NULL;
    }
    fclose(f);
    return found;
}

/* px_rev_xor, except that inputs starting with "KILL" or "ABRT" kill the worker
 * (SIGKILL, abort) instead. */
static void *b_rev_xor(const void *in, size_t len, size_t *out_len) {
    if (in != NULL && len >= 4 && memcmp(in, "KILL", 4) == 0) raise(SIGKILL);
    if (in != NULL && len >= 4 && memcmp(in, "ABRT", 4) == 0) abort();
    return px_rev_xor(in, len, out_len);
}

/* The pool still works: `len` bytes of `buf` (refilled with `seed`) go through b_rev_xor
 * and come back right. */
static void expect_round_trip(cf_executor *ex, unsigned char *buf, size_t len, unsigned seed) {
    px_fill(buf, len, seed);
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_rev_xor, buf, len, &f));
    cf_bytes b;
    CHECK_OK(cf_future_result_bytes(f, PX_LONG, &b));
    check_rev_xor(&b, len, seed);
    cf_future_release(f);
}

/* One byte: 1 if the input is in the arena, 0 if not. */
static void *b_where(const void *in, size_t len, size_t *out_len) {
    (void)len;
    unsigned char *out = malloc(1);
    if (!out) return cf_raise(ENOMEM, "malloc");
    out[0] = in != NULL && in_arena(in);
    *out_len = 1;
    return out;
}

/* Forged answers: the frame layout of src/rt/process.rs (native endian): kind u32, 4
 * bytes of padding, payload length u64; a result (kind 7) whose tag 5 says "bytes in the
 * arena at offset u64, length u64". */
enum { K_RESULT = 7, O_BYTES_SHM = 5 };

static int my_channel(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) return -1;
    struct dirent *e;
    int fd = -1;
    while (fd < 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char t[64];
        ssize_t k = readlinkat(dirfd(d), e->d_name, t, sizeof t - 1);
        t[k > 0 ? k : 0] = '\0';
        if (strncmp(t, "socket:", 7) == 0) fd = atoi(e->d_name);
    }
    closedir(d);
    return fd;
}

/* The input's first byte chooses the forgery; the worker then waits to be killed (or,
 * for the truncated answer, exits). */
static void *b_forge(const void *in, size_t len, size_t *out_len) {
    (void)out_len;
    int fd = my_channel();
    if (fd < 0 || len == 0) return cf_raise(EBADF, "no channel");
    unsigned char m[16 + 17];
    memset(m, 0, sizeof m);
    uint32_t kind = K_RESULT;
    uint64_t plen = 17, off = 0, n = 16;
    size_t send = sizeof m;
    switch (((const unsigned char *)in)[0]) {
    case 'o': off = (uint64_t)1 << 40; break;          /* outside the arena */
    case 'l': n = (uint64_t)1 << 30; break;            /* longer than the slot */
    case 's': break;                                   /* for a task sent inline */
    case 't': send = 16 + 5; break;                    /* truncated */
    default: return cf_raise(EINVAL, "unknown forgery");
    }
    memcpy(m, &kind, 4);
    memcpy(m + 8, &plen, 8);
    m[16] = O_BYTES_SHM;
    memcpy(m + 17, &off, 8);
    memcpy(m + 25, &n, 8);
    if (write(fd, m, send) != (ssize_t)send) return cf_raise(EIO, "write");
    if (send < sizeof m) _exit(0);
    for (;;) pause();
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_sizes(cf_executor *ex) {
    px_phase("sizes 0 .. 5 MiB + 1, round trip and where the input lives");
    static const size_t sizes[] = {0, 1, 100, 65535, 65536, 65537, MIB, 5 * MIB + 1, MIB, 3 * MIB};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    unsigned char *buf = malloc(5 * MIB + 1);
    CHECK(buf != NULL);
    for (size_t k = 0; k < NS; k++) {
        px_fill(buf, sizes[k], (unsigned)k + 1);
        cf_future *f = NULL, *w = NULL;
        CHECK_OK(cf_submit_bytes(ex, b_rev_xor, sizes[k] ? buf : NULL, sizes[k], &f));
        CHECK_OK(cf_submit_bytes(ex, b_where, sizes[k] ? buf : NULL, sizes[k], &w));
        memset(buf, 0xEE, sizes[k]); /* copied at submit */
        cf_bytes b;
        CHECK_OK(cf_future_result_bytes(f, PX_LONG, &b));
        check_rev_xor(&b, sizes[k], (unsigned)k + 1);
        CHECK_OK(cf_future_result_bytes(w, PX_LONG, &b));
        PX_CHECK_EQ(b.len, 1);
        if (((const unsigned char *)b.data)[0] != (sizes[k] >= 65536)) {
            fprintf(stderr, "input of %zu bytes: in the arena = %d\n", sizes[k], ((const unsigned char *)b.data)[0]);
            CHECK(0);
        }
        cf_future_release(f);
        cf_future_release(w);
    }

    /* Through the socket (1000 bytes) and through the arena (1 MiB): a result that fits
     * in the task's input copy is returned in it, a larger one in a buffer of its own. */
    static const size_t in_sizes[] = {1000, MIB};
    for (size_t k = 0; k < sizeof in_sizes / sizeof in_sizes[0]; k++) {
        size_t n = in_sizes[k];
        px_phase(n == MIB ? "results larger, smaller than a 1 MiB input"
                          : "results larger, smaller than a 1000-byte input");
        px_fill(buf, n, 99);
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++) sum += buf[i];
        cf_future *t = NULL, *s = NULL;
        CHECK_OK(cf_submit_bytes(ex, px_triple, buf, n, &t));
        CHECK_OK(cf_submit_bytes(ex, px_sum, buf, n, &s));
        cf_bytes b;
        CHECK_OK(cf_future_result_bytes(t, PX_LONG, &b));
        px_check_triple(&b, n, 99);
        px_check_u64_result(s, sum);
        cf_future_release(t);
        cf_future_release(s);
    }
    free(buf);
}

/* Bytes the C allocator has handed out and not had back (all arenas, and mmap'ed
 * blocks). Under valgrind or a sanitizer, whose allocators glibc does not see, 0. */
static size_t malloc_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* A small result of a large input comes back in a buffer of its own: the future does
 * not keep the input's memory. 64 sums of 1 MiB inputs, all held: the inputs' 64 MiB
 * are freed as the answers arrive. */
static void test_small_results_free_inputs(cf_executor *ex) {
    px_phase("small results of large inputs do not keep the inputs");
    enum { N = 64 };
    unsigned char *buf = malloc(MIB);
    CHECK(buf != NULL);
    px_fill(buf, MIB, 7);
    uint64_t sum = 0;
    for (size_t i = 0; i < MIB; i++) sum += buf[i];
    size_t before = malloc_in_use();
    cf_future *fs[N];
    for (int i = 0; i < N; i++) CHECK_OK(cf_submit_bytes(ex, px_sum, buf, MIB, &fs[i]));
    for (int i = 0; i < N; i++) px_check_u64_result(fs[i], sum);
    size_t after = malloc_in_use();
    if (after > before + 16 * MIB) {
        fprintf(stderr, "%d held 8-byte results keep %zu bytes in use\n", N, after - before);
        CHECK(0);
    }
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    free(buf);
}

/* Orders results by address (for test_many). */
static int by_data(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const cf_bytes *)a)->data, y = (uintptr_t)((const cf_bytes *)b)->data;
    return (x > y) - (x < y);
}

static void test_many(cf_executor *ex) {
    px_phase("40 large tasks at once, mixed with small ones");
    enum { N = 60 };
    cf_future *fs[N];
    size_t lens[N];
    unsigned char *buf = malloc(3 * MIB);
    CHECK(buf != NULL);
    for (int i = 0; i < N; i++) {
        lens[i] = i % 3 == 2 ? (size_t)i * 11 : (i % 7 == 0 ? 3 * MIB - 5 : MIB + (size_t)i * 4097);
        px_fill(buf, lens[i], 500u + (unsigned)i);
        CHECK_OK(cf_submit_bytes(ex, b_rev_xor, lens[i] ? buf : NULL, lens[i], &fs[i]));
    }
    /* Every result is collected before any is checked or released: each stays intact
     * while later tasks run, and no two share memory (each is returned in its own
     * task's input copy or in a buffer of its own). */
    cf_bytes got[N], sorted[N];
    for (int i = 0; i < N; i++) CHECK_OK(cf_future_result_bytes(fs[i], PX_LONG, &got[i]));
    for (int i = 0; i < N; i++) check_rev_xor(&got[i], lens[i], 500u + (unsigned)i);
    memcpy(sorted, got, sizeof got);
    qsort(sorted, N, sizeof sorted[0], by_data);
    for (int i = 0; i + 1 < N; i++) {
        if (sorted[i].len == 0) continue;
        CHECK((const unsigned char *)sorted[i].data + sorted[i].len <= (const unsigned char *)sorted[i + 1].data);
    }
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    free(buf);
}

static void test_map(cf_executor *ex) {
    enum { N = 14 };
    static const size_t lens[N] = {MIB, 65536, 100, 5 * MIB + 1, 0, 65535, 2 * MIB, 1, 70000, MIB, MIB, 3, 65537, MIB};
    unsigned char *data[N];
    cf_bytes in[N];
    for (int i = 0; i < N; i++) {
        data[i] = malloc(lens[i] + 1);
        CHECK(data[i] != NULL);
        px_fill(data[i], lens[i], 900u + (unsigned)i);
        in[i].data = lens[i] ? data[i] : NULL;
        in[i].len = lens[i];
    }
    static const size_t chunks[] = {1, 4};
    for (size_t c = 0; c < 2; c++) {
        char phase[80];
        snprintf(phase, sizeof phase, "map_bytes over large and small inputs, chunksize %zu", chunks[c]);
        px_phase(phase);
        cf_map *m = NULL;
        CHECK_OK(cf_map_bytes_new(ex, b_rev_xor, in, N, chunks[c], PX_LONG, &m));
        for (int i = 0; i < N; i++) {
            cf_bytes b;
            CHECK_OK(cf_map_next_bytes(m, &b, NULL, NULL));
            check_rev_xor(&b, lens[i], 900u + (unsigned)i);
        }
        cf_bytes b;
        CHECK_STATUS(cf_map_next_bytes(m, &b, NULL, NULL), CF_END);
        cf_map_free(m);
    }
    for (int i = 0; i < N; i++) free(data[i]);
}

/* On a pool of `workers`: large tasks, some of which kill their worker while their input
 * is in its arena, with others pipelined behind them. */
static void test_kill(size_t workers) {
    char phase[80];
    snprintf(phase, sizeof phase, "workers killed holding large payloads, %zu worker(s)", workers);
    px_phase(phase);
    cf_executor *ex = px_pool(workers, 0);
    enum { N = 16 };
    cf_future *fs[N];
    size_t len = MIB + 12345;
    unsigned char *buf = malloc(len);
    CHECK(buf != NULL);
    for (int i = 0; i < N; i++) {
        px_fill(buf, len, 40u + (unsigned)i);
        if (i == 3 || i == 11) memcpy(buf, "KILL", 4);
        if (i == 7) memcpy(buf, "ABRT", 4);
        CHECK_OK(cf_submit_bytes(ex, b_rev_xor, buf, len, &fs[i]));
    }
    for (int i = 0; i < N; i++) {
        if (i == 3 || i == 7 || i == 11) {
            int code;
            const char *msg;
            CHECK_STATUS(px_outcome(fs[i], &code, &msg), CF_BROKEN);
            PX_CHECK_CONTAINS(msg, i == 7 ? "SIGABRT" : "SIGKILL");
            cf_bytes b;
            CHECK_STATUS(cf_future_result_bytes(fs[i], 0, &b), CF_BROKEN);
        } else {
            cf_bytes b;
            CHECK_OK(cf_future_result_bytes(fs[i], PX_LONG, &b));
            check_rev_xor(&b, len, 40u + (unsigned)i);
        }
        cf_future_release(fs[i]);
    }
    /* The pool still moves large payloads. */
    expect_round_trip(ex, buf, len, 7);
    free(buf);
    cf_executor_free(ex);
}

static void test_forged(cf_executor *ex) {
    static const struct {
        char kind;
        size_t len;
        const char *what;
    } cases[] = {
        {'o', MIB, "a result offset outside the arena"},
        {'l', MIB, "a result longer than its slot"},
        {'s', 100, "an arena result for a task sent through the socket"},
        {'t', MIB, "a truncated answer"},
    };
    unsigned char *buf = calloc(1, MIB);
    CHECK(buf != NULL);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char phase[120];
        snprintf(phase, sizeof phase, "forged answer: %s", cases[c].what);
        px_phase(phase);
        buf[0] = (unsigned char)cases[c].kind;
        cf_future *f = NULL;
        CHECK_OK(cf_submit_bytes(ex, b_forge, buf, cases[c].len, &f));
        int code;
        const char *msg;
        CHECK_STATUS(px_outcome(f, &code, &msg), CF_BROKEN);
        CHECK(msg != NULL);
        cf_future_release(f);
        /* The pool goes on. */
        expect_round_trip(ex, buf, MIB, 3);
    }
    free(buf);
}

int main(void) {
    px_watchdog(110);
    cf_executor *ex = px_pool(2, 0);
    test_sizes(ex);
    test_many(ex);
    test_small_results_free_inputs(ex);
    test_map(ex);
    test_forged(ex);
    cf_executor_free(ex);
    test_kill(1);
    test_kill(2);
    PX_CHECK_NO_CHILDREN();
    px_phase("no arena left mapped");
    CHECK(!in_arena(NULL));
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    char line[512];
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, "cfutures-arena") != NULL) {
            fprintf(stderr, "still mapped: %s", line);
            CHECK(0);
        }
    }
    fclose(f);
    fprintf(stderr, "test_process_shm: all passed\n");
    return 0;
}
