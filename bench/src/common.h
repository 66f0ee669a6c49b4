/* Shared helpers for the C and C++ benchmark programs of cfutures' bench suite.
 *
 * Every program takes `WORKLOAD N` on its command line, runs that workload once (after
 * a short warm-up) and prints one machine-readable line on stdout:
 *
 *   RESULT workload=W1 impl=cfutures value=1234.5 unit=tasks/s n=1000000
 *   NA     workload=W4 impl=asio reason=...        (the anchor has no such operation)
 *
 * A failed correctness check prints `FAIL workload=... impl=... reason=...` and exits
 * with status 2, so that a broken build never reports a fast time.
 *
 * Environment: BENCH_THREADS (pool size; default: online CPUs), BENCH_CHUNK (W3
 * chunksize; default 1000), BENCH_IDLE_WORKERS (W8 pool size; default 32).
 */
#ifndef CF_BENCH_COMMON_H
#define CF_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
#include <atomic>
#define BENCH_ATOMIC(T) std::atomic<T>
#define bench_load(p) (p)->load()
#define bench_add(p, v) (p)->fetch_add(v)
#define bench_store(p, v) (p)->store(v)
#else
#include <stdatomic.h>
#define BENCH_ATOMIC(T) _Atomic T
#define bench_load(p) atomic_load(p)
#define bench_add(p, v) atomic_fetch_add(p, v)
#define bench_store(p, v) atomic_store(p, v)
#endif

static const char *bench_impl = "?";
static const char *bench_workload = "?";

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double now_s(void) { return (double)now_ns() * 1e-9; }

/* Busy-waits `ns` nanoseconds (W4's task body). */
static inline void spin_ns(uint64_t ns) {
    if (ns == 0) return;
    uint64_t end = now_ns() + ns;
    while (now_ns() < end) {
    }
}

/* W4's task: spin (i % 7) * 200 ns, return i. */
static inline uint64_t w4_work(uint64_t i) {
    spin_ns((i % 7) * 200);
    return i;
}

/* Resident set size of this process, from /proc/self/statm. */
static inline long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
    fclose(f);
    return res * sysconf(_SC_PAGESIZE);
}

/* User + system CPU time of this process (all threads), seconds. */
static inline double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static inline long env_long(const char *name, long def) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    return strtol(v, NULL, 10);
}

static inline int bench_threads(void) {
    long n = env_long("BENCH_THREADS", 0);
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static inline long bench_chunk(void) { return env_long("BENCH_CHUNK", 1000); }
static inline int bench_idle_workers(void) { return (int)env_long("BENCH_IDLE_WORKERS", 32); }

static inline void bench_result(double value, const char *unit, long n) {
    printf("RESULT workload=%s impl=%s value=%.6g unit=%s n=%ld\n", bench_workload,
           bench_impl, value, unit, n);
    fflush(stdout);
}

static inline void bench_na(const char *reason) {
    printf("NA workload=%s impl=%s reason=%s\n", bench_workload, bench_impl, reason);
    fflush(stdout);
}

#define BENCH_FAIL(...)                                                                   \
    do {                                                                                  \
        fprintf(stderr, "FAIL %s/%s at %s:%d: ", bench_workload, bench_impl, __FILE__,    \
                __LINE__);                                                                \
        fprintf(stderr, __VA_ARGS__);                                                     \
        fprintf(stderr, "\n");                                                            \
        printf("FAIL workload=%s impl=%s reason=check_failed_at_line_%d\n",              \
               bench_workload, bench_impl, __LINE__);                                     \
        fflush(stdout);                                                                   \
        exit(2);                                                                          \
    } while (0)

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) BENCH_FAIL("check failed: %s", #cond);                               \
    } while (0)

#define CHECK_EQ_U64(got, want)                                                           \
    do {                                                                                  \
        uint64_t g_ = (uint64_t)(got), w_ = (uint64_t)(want);                             \
        if (g_ != w_)                                                                     \
            BENCH_FAIL("%s = %llu, expected %llu", #got, (unsigned long long)g_,          \
                       (unsigned long long)w_);                                           \
    } while (0)

/* Sum of 0..n-1 and of their squares (the checks of W1..W6). */
static inline uint64_t sum_upto(uint64_t n) { return n * (n - 1) / 2; }
static inline uint64_t sum_sq_upto(uint64_t n) {
    /* (n-1) n (2n-1) / 6, exact in 64 bits for n <= ~2.6e6 */
    unsigned __int128 m = (unsigned __int128)(n - 1) * n * (2 * n - 1) / 6;
    return (uint64_t)m;
}
static inline uint64_t sum_w4(uint64_t n) { return sum_upto(n); }

/* A rendezvous of `parties` threads with a time limit (W8): every party increments the
 * counter and polls (sleeping 100 us) until all have arrived. Polling rather than a
 * barrier so that a pool that never starts `parties` threads (TBB may refuse) reports
 * it instead of hanging. Returns 1 if all arrived within `limit_s`. */
typedef struct {
    BENCH_ATOMIC(int) arrived;
    BENCH_ATOMIC(int) timed_out;
    int parties;
    double limit_s;
} rendezvous_t;

static inline void rendezvous_init(rendezvous_t *r, int parties, double limit_s) {
    bench_store(&r->arrived, 0);
    bench_store(&r->timed_out, 0);
    r->parties = parties;
    r->limit_s = limit_s;
}

static inline int rendezvous_wait(rendezvous_t *r) {
    bench_add(&r->arrived, 1);
    double end = now_s() + r->limit_s;
    while (bench_load(&r->arrived) < r->parties) {
        if (bench_load(&r->timed_out) || now_s() > end) {
            bench_store(&r->timed_out, 1);
            return 0;
        }
        usleep(100);
    }
    return 1;
}

/* W8's measurement, once the pool's `parties` workers have all been started and are
 * idle again: CPU time this process uses over `seconds` of sleep, in milliseconds. */
static inline double idle_cpu_ms(double seconds) {
    usleep(200000); /* let the last task's bookkeeping settle */
    double c0 = cpu_seconds();
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0) {
    }
    return (cpu_seconds() - c0) * 1e3;
}

/* P1's byte transform: every byte + 1. */
static inline void bytes_inc(const unsigned char *in, unsigned char *out, size_t n) {
    for (size_t k = 0; k < n; k++) out[k] = (unsigned char)(in[k] + 1);
}

static inline void fill_input(unsigned char *buf, size_t n, uint64_t seed) {
    for (size_t k = 0; k < n; k++) buf[k] = (unsigned char)((seed * 131 + k * 7) & 0xff);
}

/* Whether out[k] == fill_input's byte k + 1 for every k. The expected bytes repeat every
 * 256 (7 * 256 is a multiple of 256), so the check is a memcmp per 256 bytes against one
 * block: vectorized, like CPython's bytes comparison, rather than a byte loop that would
 * cost the harness more than the library's copying. */
static inline int check_output(const unsigned char *out, size_t n, uint64_t seed) {
    unsigned char block[256];
    for (size_t k = 0; k < sizeof block; k++)
        block[k] = (unsigned char)(((seed * 131 + k * 7) + 1) & 0xff);
    size_t k = 0;
    for (; k + sizeof block <= n; k += sizeof block)
        if (memcmp(out + k, block, sizeof block) != 0) return 0;
    return memcmp(out + k, block, n - k) == 0;
}

#endif
