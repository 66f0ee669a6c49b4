/* Memory probes for reading P1-1MiB: what one MiB costs on this machine when it is
 * written into fresh private pages, into fresh shared-memory pages, into pages already
 * present, and what the P1 task itself (bytes_inc) costs per MiB. Prints
 *   PROBE name=NAME value=MS unit=ms/MiB
 * lines (medians of 5 rounds of 64 MiB each), which bench/run.sh records and
 * bench/report.py tabulates. libc only; nothing here touches cfutures. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define MIB ((size_t)1 << 20)
#define ROUNDS 5
#define PER_ROUND 64

static unsigned char *src;

/* Fresh pages: map 1 MiB (private anonymous, or shared: a memfd that another process
 * could map), populate it (as cfutures does for large copies), copy into it. */
static double fresh(int shared) {
    unsigned char *p[PER_ROUND];
    double t0 = now_s();
    for (int i = 0; i < PER_ROUND; i++) {
        int fd = -1;
        if (shared && ((fd = memfd_create("probe", MFD_CLOEXEC)) < 0 || ftruncate(fd, MIB) != 0))
            BENCH_FAIL("memfd");
        p[i] = mmap(NULL, MIB, PROT_READ | PROT_WRITE,
                    shared ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
        if (p[i] == MAP_FAILED) BENCH_FAIL("mmap");
        if (fd >= 0) close(fd);
        madvise(p[i], MIB, MADV_POPULATE_WRITE);
        memcpy(p[i], src, MIB);
    }
    double t = now_s() - t0;
    for (int i = 0; i < PER_ROUND; i++) munmap(p[i], MIB);
    return t;
}
static double fresh_private(void) { return fresh(0); }
static double fresh_shared(void) { return fresh(1); }

/* Pages already present: the same 1 MiB buffer written again and again. */
static double warm_copy(void) {
    unsigned char *p = malloc(MIB);
    memset(p, 1, MIB);
    double t0 = now_s();
    for (int i = 0; i < PER_ROUND; i++) {
        memcpy(p, src, MIB);
        __asm__ volatile("" ::"r"(p) : "memory");
    }
    double t = now_s() - t0;
    free(p);
    return t;
}

/* The P1 task's work (bench_cf's p1_inc without its malloc), called through a volatile
 * pointer so that it is compiled as in bench_cf: not inlined, length unknown. */
static void inc_n(const unsigned char *in, unsigned char *out, size_t n) { bytes_inc(in, out, n); }
static void (*volatile inc_fn)(const unsigned char *, unsigned char *, size_t) = inc_n;
static double task_work(void) {
    unsigned char *out = malloc(MIB);
    memset(out, 0, MIB);
    double t0 = now_s();
    for (int i = 0; i < PER_ROUND; i++) inc_fn(src, out, MIB);
    double t = now_s() - t0;
    CHECK(out[5] == (unsigned char)(src[5] + 1));
    free(out);
    return t;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void probe(const char *name, double (*fn)(void)) {
    double t[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) t[r] = fn() * 1e3 / PER_ROUND;
    qsort(t, ROUNDS, sizeof t[0], cmp);
    printf("PROBE name=%s value=%.4f unit=ms/MiB\n", name, t[ROUNDS / 2]);
}

int main(void) {
    bench_impl = "probe";
    bench_workload = "probe";
    src = malloc(MIB);
    fill_input(src, MIB, 1);
    probe("fresh_private", fresh_private);
    probe("fresh_shared", fresh_shared);
    probe("warm_copy", warm_copy);
    probe("task_work", task_work);
    free(src);
    return 0;
}
