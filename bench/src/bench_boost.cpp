// Boost.Thread side of the continuation benchmarks: `bench_boost WORKLOAD N`. See
// bench/README.md. W9: a chain of N `future::then` links on a basic_thread_pool of 2
// threads, each adding 1; W10: `when_all` over N futures (W10) or over groups of 10
// (W10-g10), the tasks submitted with `boost::async` on the pool.
#define BOOST_THREAD_VERSION 5
#define BOOST_THREAD_PROVIDES_EXECUTORS
#include <boost/thread/executors/basic_thread_pool.hpp>
#include <boost/thread/future.hpp>

#include <cstring>
#include <vector>

#include "common.h"

static void w9(long n) {
    boost::executors::basic_thread_pool pool(2);
    boost::future<long> f = boost::async(pool, [] { return 0L; });
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        f = f.then(pool, [](boost::future<long> a) { return a.get() + 1; });
    }
    long r = f.get();
    double t = now_s() - t0;
    CHECK_EQ_U64(r, n);
    bench_result(n / t, "links/s", n);
}

// W1, W2, W5 (the C++ face's anchors): boost::async on a basic_thread_pool of
// bench_threads() workers; W5's callback is a continuation run by the finishing thread
// (then with launch::sync semantics: boost::launch::sync), counting.
static void w1(long n) {
    boost::executors::basic_thread_pool pool(bench_threads());
    std::vector<boost::future<long>> fs;
    fs.reserve(n);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) fs.push_back(boost::async(pool, [i] { return i; }));
    for (auto &f : fs) sum += (uint64_t)f.get();
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(n / t, "tasks/s", n);
}

static void w2(long n) {
    boost::executors::basic_thread_pool pool(bench_threads());
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) sum += (uint64_t)boost::async(pool, [i] { return i; }).get();
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(t / n * 1e6, "us/roundtrip", n);
}

static BENCH_ATOMIC(long) w5_counter;
static void w5(long n) {
    boost::executors::basic_thread_pool pool(bench_threads());
    bench_store(&w5_counter, 0);
    std::vector<boost::future<void>> keep;
    keep.reserve(n);
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        keep.push_back(boost::async(pool, [i] { return i; }).then(boost::launch::sync, [](boost::future<long> f) {
            (void)f.get();
            bench_add(&w5_counter, 1);
        }));
    for (auto &f : keep) f.get();
    double t = now_s() - t0;
    CHECK_EQ_U64(bench_load(&w5_counter), n);
    bench_result(n / t, "tasks/s", n);
}

static void w10(long n, long group) {
    boost::executors::basic_thread_pool pool(bench_threads());
    long groups = n / group;
    std::vector<boost::future<std::vector<boost::future<long>>>> ws;
    ws.reserve(groups);
    double t0 = now_s();
    for (long g = 0; g < groups; g++) {
        std::vector<boost::future<long>> fs;
        fs.reserve(group);
        for (long i = g * group; i < (g + 1) * group; i++) {
            fs.push_back(boost::async(pool, [i] { return i; }));
        }
        ws.push_back(boost::when_all(fs.begin(), fs.end()));
    }
    uint64_t sum = 0;
    for (auto &w : ws) {
        for (auto &f : w.get()) sum += (uint64_t)f.get();
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(n / t, "tasks/s", n);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = "boost-thread";
    bench_workload = argv[1];
    long n = strtol(argv[2], NULL, 10);
    if (!strcmp(argv[1], "W1")) w1(n);
    else if (!strcmp(argv[1], "W2")) w2(n);
    else if (!strcmp(argv[1], "W5")) w5(n);
    else if (!strcmp(argv[1], "W9")) w9(n);
    else if (!strcmp(argv[1], "W10")) w10(n, n);
    else if (!strcmp(argv[1], "W10-g10")) w10(n, 10);
    else bench_na("Boost.Thread anchors W1, W2, W5 (the C++ rows) and W9, W10");
    return 0;
}
