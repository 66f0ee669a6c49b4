// cfutures' C++ face (include/cfutures.hpp) on the rows a C++ programmer compares:
// `bench_cxx WORKLOAD N`, impl cfutures-cxx. The same workloads as bench_cf.c (W1, W2, W5,
// W9), written with cf::thread_pool and lambdas: the wrapper's cost is the difference
// from the C API's row in the same run. See bench/README.md.
#include <cfutures.hpp>

#include <semaphore.h>

#include <cstring>
#include <vector>

#include "common.h"

static cf::executor_options opts(std::size_t workers) {
    cf::executor_options o;
    o.max_workers = workers;
    o.name_prefix = "bench";
    return o;
}

static void warm_up(cf::thread_pool &pool) {
    std::vector<cf::future<std::uintptr_t>> fs;
    for (std::uintptr_t i = 0; i < 64; i++) fs.push_back(pool.submit([](std::uintptr_t x) { return x; }, i));
    for (auto &f : fs) (void)f.result();
}

static void w1(long n) {
    cf::thread_pool pool(opts(bench_threads()));
    warm_up(pool);
    std::vector<cf::future<std::uintptr_t>> fs;
    fs.reserve(n);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) fs.push_back(pool.submit([](std::uintptr_t x) { return x; }, std::uintptr_t(i)));
    // Each future is read and released in turn, as bench_cf.c's W1 does.
    for (auto &f : fs) {
        cf::future<std::uintptr_t> g = std::move(f);
        sum += g.result();
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(n / t, "tasks/s", n);
}

static void w2(long n) {
    cf::thread_pool pool(opts(bench_threads()));
    warm_up(pool);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) sum += pool.submit([](std::uintptr_t x) { return x; }, std::uintptr_t(i)).result();
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(t / n * 1e6, "us/roundtrip", n);
}

static BENCH_ATOMIC(long) w5_counter;
static long w5_target;
static sem_t w5_done;

static void w5(long n) {
    cf::thread_pool pool(opts(bench_threads()));
    warm_up(pool);
    sem_init(&w5_done, 0, 0);
    w5_target = n;
    bench_store(&w5_counter, 0);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        pool.submit([](std::uintptr_t x) { return x; }, std::uintptr_t(i)).add_done_callback([](const cf::future<std::uintptr_t> &) {
            if (bench_add(&w5_counter, 1) + 1 == w5_target) sem_post(&w5_done);
        });
    }
    while (sem_wait(&w5_done) != 0) {
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(bench_load(&w5_counter), n);
    bench_result(n / t, "tasks/s", n);
}

static void w9(long n) {
    cf::thread_pool pool(opts(2));
    warm_up(pool);
    double t0 = now_s();
    cf::future<std::uintptr_t> f = pool.submit([] { return std::uintptr_t(0); });
    for (long i = 0; i < n; i++) f = f.then(pool, [](const cf::future<std::uintptr_t> &a) { return a.result() + 1; });
    std::uintptr_t r = f.result();
    double t = now_s() - t0;
    CHECK_EQ_U64(r, n);
    bench_result(n / t, "links/s", n);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = "cfutures-cxx";
    bench_workload = argv[1];
    long n = strtol(argv[2], NULL, 10);
    if (!strcmp(argv[1], "W1")) w1(n);
    else if (!strcmp(argv[1], "W2")) w2(n);
    else if (!strcmp(argv[1], "W5")) w5(n);
    else if (!strcmp(argv[1], "W9")) w9(n);
    else bench_na("the C++ face is measured on W1, W2, W5 and W9");
    return 0;
}
