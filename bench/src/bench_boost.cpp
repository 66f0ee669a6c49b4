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
    if (!strcmp(argv[1], "W9")) w9(n);
    else if (!strcmp(argv[1], "W10")) w10(n, n);
    else if (!strcmp(argv[1], "W10-g10")) w10(n, 10);
    else bench_na("Boost.Thread anchors only the continuation rows W9 and W10");
    return 0;
}
