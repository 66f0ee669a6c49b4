// Two C++ anchors without cfutures, for W1, W2 and W5: `bench_stdcxx IMPL WORKLOAD N`
// with IMPL std-async (std::async(std::launch::async, ...), libstdc++: a thread per task)
// or thread-pool (Debian's libthread-pool-dev, thread_pool::ThreadPool::Submit, which
// gives a std::future). W5: neither has callbacks on futures; the task's last statement
// increments the counter (as for the Rust anchor). std::async W1 and W5 run at most
// 20000 tasks (a thread each: N = 1e6 would take minutes); the value is a rate.
#include <future>
#include <thread_pool/thread_pool.hpp>

#include <semaphore.h>

#include <cstring>
#include <memory>
#include <vector>

#include "common.h"

static BENCH_ATOMIC(long) w5_counter;
static long w5_target;
static sem_t w5_done;

static void count_one() {
    if (bench_add(&w5_counter, 1) + 1 == w5_target) sem_post(&w5_done);
}

template <class Submit> static void w1(long n, Submit submit) {
    std::vector<std::future<std::uintptr_t>> fs;
    fs.reserve(n);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) fs.push_back(submit([](std::uintptr_t x) { return x; }, std::uintptr_t(i)));
    for (auto &f : fs) sum += f.get();
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(n / t, "tasks/s", n);
}

template <class Submit> static void w2(long n, Submit submit) {
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) sum += submit([](std::uintptr_t x) { return x; }, std::uintptr_t(i)).get();
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(t / n * 1e6, "us/roundtrip", n);
}

template <class Submit> static void w5(long n, Submit submit) {
    sem_init(&w5_done, 0, 0);
    w5_target = n;
    bench_store(&w5_counter, 0);
    std::vector<std::future<std::uintptr_t>> keep; // std::async's future joins when destroyed
    keep.reserve(n);
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        keep.push_back(submit([](std::uintptr_t x) { count_one(); return x; }, std::uintptr_t(i)));
    while (sem_wait(&w5_done) != 0) {
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(bench_load(&w5_counter), n);
    bench_result(n / t, "tasks/s", n);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s std-async|thread-pool WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = argv[1];
    bench_workload = argv[2];
    long n = strtol(argv[3], NULL, 10);
    const char *w = argv[2];
    if (!strcmp(argv[1], "std-async")) {
        auto submit = [](auto fn, std::uintptr_t x) { return std::async(std::launch::async, fn, x); };
        if (n > 20000 && strcmp(w, "W2") != 0) n = 20000;
        if (!strcmp(w, "W1")) w1(n, submit);
        else if (!strcmp(w, "W2")) w2(n, submit);
        else if (!strcmp(w, "W5")) w5(n, submit);
        else bench_na("std::async anchors W1, W2 and W5");
    } else {
        auto pool = std::make_unique<thread_pool::ThreadPool>(bench_threads());
        auto submit = [&pool](auto fn, std::uintptr_t x) { return pool->Submit(fn, x); };
        if (!strcmp(w, "W1")) w1(n, submit);
        else if (!strcmp(w, "W2")) w2(n, submit);
        else if (!strcmp(w, "W5")) w5(n, submit);
        else bench_na("libthread-pool-dev anchors W1, W2 and W5");
    }
    return 0;
}
