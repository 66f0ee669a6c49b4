// Boost.Asio anchor: boost::asio::thread_pool, one std::packaged_task + std::future per
// task (how Asio users get a value back from a pool). `bench_asio WORKLOAD N`.
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <future>
#include <semaphore.h>
#include <thread>
#include <vector>

#include "common.h"

using boost::asio::thread_pool;

template <class F>
static std::future<uint64_t> submit(thread_pool &pool, F &&fn) {
    std::packaged_task<uint64_t()> task(std::forward<F>(fn));
    std::future<uint64_t> fut = task.get_future();
    boost::asio::post(pool, std::move(task));
    return fut;
}

static void warm_up(thread_pool &pool, int tasks) {
    std::vector<std::future<uint64_t>> fs;
    for (int i = 0; i < tasks; i++) fs.push_back(submit(pool, [i] { return (uint64_t)i; }));
    for (auto &f : fs) f.get();
}

static void w1(long n) {
    thread_pool pool(bench_threads());
    warm_up(pool, 64);
    std::vector<std::future<uint64_t>> fs;
    fs.reserve(n);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) fs.push_back(submit(pool, [i] { return (uint64_t)i; }));
    for (auto &f : fs) sum += f.get();
    fs.clear();
    fs.shrink_to_fit();
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    pool.join();
    bench_result(n / t, "tasks/s", n);
}

static void w2(long n) {
    thread_pool pool(bench_threads());
    warm_up(pool, 16);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) sum += submit(pool, [i] { return (uint64_t)i; }).get();
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    pool.join();
    bench_result(t / n * 1e6, "us/roundtrip", n);
}

// W3: one packaged_task per chunk of BENCH_CHUNK inputs writing into the output
// vector; futures awaited in order, results read in order.
static void w3(long n) {
    thread_pool pool(bench_threads());
    warm_up(pool, 64);
    long chunk = bench_chunk();
    std::vector<uint64_t> in(n);
    for (long i = 0; i < n; i++) in[i] = i;
    double t0 = now_s();
    std::vector<uint64_t> out(n);
    std::vector<std::future<uint64_t>> fs;
    for (long lo = 0; lo < n; lo += chunk) {
        long hi = lo + chunk < n ? lo + chunk : n;
        fs.push_back(submit(pool, [&in, &out, lo, hi] {
            for (long i = lo; i < hi; i++) out[i] = in[i] * in[i];
            return (uint64_t)hi;
        }));
    }
    uint64_t sum = 0;
    long i = 0;
    for (auto &f : fs) {
        long hi = (long)f.get();
        for (; i < hi; i++) {
            if (out[i] != (uint64_t)i * i) BENCH_FAIL("item %ld wrong", i);
            sum += out[i];
        }
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(i, n);
    CHECK_EQ_U64(sum, sum_sq_upto(n));
    pool.join();
    bench_result(n / t, "items/s", n);
}

// W5: Asio has no done callbacks on futures; its idiom is a completion handler that the
// posted function invokes when the work is done. Here it runs inline on the worker.
static std::atomic<long> w5_counter;
static sem_t w5_done;
static void w5(long n) {
    thread_pool pool(bench_threads());
    warm_up(pool, 64);
    sem_init(&w5_done, 0, 0);
    w5_counter = 0;
    auto handler = [n](uint64_t) {
        if (w5_counter.fetch_add(1) + 1 == n) sem_post(&w5_done);
    };
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        boost::asio::post(pool, [i, handler] { handler((uint64_t)i); });
    while (sem_wait(&w5_done) != 0) {
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(w5_counter.load(), n);
    pool.join();
    bench_result(n / t, "tasks/s", n);
}

static void w6(long n) {
    thread_pool pool(bench_threads());
    warm_up(pool, 64);
    const int K = 4;
    long per = n / K;
    std::vector<uint64_t> sums(K);
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> th;
    for (int k = 0; k < K; k++)
        th.emplace_back([&, k] {
            std::vector<std::future<uint64_t>> fs;
            fs.reserve(per);
            ready++;
            while (!go) {
            }
            for (long i = 0; i < per; i++) fs.push_back(submit(pool, [i] { return (uint64_t)i; }));
            uint64_t s = 0;
            for (auto &f : fs) s += f.get();
            sums[k] = s;
        });
    while (ready < K) {
    }
    double t0 = now_s();
    go = true;
    for (auto &t : th) t.join();
    double t = now_s() - t0;
    for (int k = 0; k < K; k++) CHECK_EQ_U64(sums[k], sum_upto(per));
    pool.join();
    bench_result((double)(per * K) / t, "tasks/s", n);
}

static sem_t gate, gate_started;
static void w7(long n) {
    thread_pool pool(1);
    warm_up(pool, 4);
    sem_init(&gate, 0, 0);
    sem_init(&gate_started, 0, 0);
    auto g = submit(pool, [] {
        sem_post(&gate_started);
        while (sem_wait(&gate) != 0) {
        }
        return (uint64_t)0;
    });
    while (sem_wait(&gate_started) != 0) {
    }
    long rss0 = rss_bytes();
    std::vector<std::future<uint64_t>> fs;
    fs.reserve(n);
    for (long i = 0; i < n; i++) fs.push_back(submit(pool, [] { return (uint64_t)1; }));
    long rss1 = rss_bytes();
    sem_post(&gate);
    uint64_t sum = 0;
    for (auto &f : fs) sum += f.get();
    g.get();
    CHECK_EQ_U64(sum, n);
    pool.join();
    bench_result((double)(rss1 - rss0) / n, "bytes/future", n);
}

static rendezvous_t rv;
static void w8(long seconds) {
    int workers = bench_idle_workers();
    thread_pool pool(workers);
    rendezvous_init(&rv, workers, 20.0);
    std::vector<std::future<uint64_t>> fs;
    for (int i = 0; i < workers; i++)
        fs.push_back(submit(pool, [] { return (uint64_t)rendezvous_wait(&rv); }));
    uint64_t ok = 0;
    for (auto &f : fs) ok += f.get();
    CHECK_EQ_U64(ok, workers);
    double ms = idle_cpu_ms((double)seconds);
    pool.join();
    bench_result(ms, "ms-cpu", seconds);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = "asio";
    bench_workload = argv[1];
    long n = strtol(argv[2], NULL, 10);
    std::string w = argv[1];
    if (w == "W1") w1(n);
    else if (w == "W2") w2(n);
    else if (w == "W3") w3(n);
    else if (w == "W4") bench_na("std::future has no completion-order wait (no when_any)");
    else if (w == "W5") w5(n);
    else if (w == "W6") w6(n);
    else if (w == "W7") w7(n);
    else if (w == "W8") w8(n);
    else bench_na("no process pool");
    return 0;
}
