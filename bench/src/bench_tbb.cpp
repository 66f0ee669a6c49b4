// oneTBB anchor: tbb::task_group and tbb::parallel_for. TBB tasks have no per-task
// futures: results go into a preallocated array and the submitter waits for the whole
// group, so this is the ceiling rather than a like-for-like comparison. The waiting
// thread runs tasks itself (TBB's work stealing), the arena has `pool size` slots
// (main thread included). `bench_tbb WORKLOAD N`.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <memory>
#include <semaphore.h>
#include <thread>
#include <vector>

#include "common.h"

static void w1(long n) {
    tbb::task_arena arena(bench_threads());
    std::vector<uint64_t> res(n);
    uint64_t sum = 0;
    double t = 0;
    arena.execute([&] {
        tbb::task_group warm;
        for (int i = 0; i < 64; i++) warm.run([] {});
        warm.wait();
        double t0 = now_s();
        tbb::task_group tg;
        for (long i = 0; i < n; i++) tg.run([&res, i] { res[i] = (uint64_t)i; });
        tg.wait();
        for (long i = 0; i < n; i++) sum += res[i];
        t = now_s() - t0;
    });
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(n / t, "tasks/s", n);
}

static void w2(long n) {
    tbb::task_arena arena(bench_threads());
    uint64_t sum = 0;
    double t = 0;
    arena.execute([&] {
        tbb::task_group tg;
        uint64_t r = 0;
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            tg.run([&r, i] { r = (uint64_t)i; });
            tg.wait();
            sum += r;
        }
        t = now_s() - t0;
    });
    CHECK_EQ_U64(sum, sum_upto(n));
    bench_result(t / n * 1e6, "us/roundtrip", n);
}

static void w3(long n) {
    tbb::task_arena arena(bench_threads());
    long chunk = bench_chunk();
    std::vector<uint64_t> in(n), out;
    for (long i = 0; i < n; i++) in[i] = i;
    uint64_t sum = 0;
    double t = 0;
    arena.execute([&] {
        tbb::parallel_for(tbb::blocked_range<long>(0, 64, 1), [](const tbb::blocked_range<long> &) {});
        double t0 = now_s();
        out.resize(n);
        tbb::parallel_for(tbb::blocked_range<long>(0, n, chunk),
                          [&](const tbb::blocked_range<long> &r) {
                              for (long i = r.begin(); i != r.end(); i++) out[i] = in[i] * in[i];
                          });
        for (long i = 0; i < n; i++) {
            if (out[i] != (uint64_t)i * i) BENCH_FAIL("item %ld wrong", i);
            sum += out[i];
        }
        t = now_s() - t0;
    });
    CHECK_EQ_U64(sum, sum_sq_upto(n));
    bench_result(n / t, "items/s", n);
}

// W4 without completion order (TBB has none): the same spinning tasks in a task_group.
static void w4(long n) {
    tbb::task_arena arena(bench_threads());
    std::vector<uint64_t> res(n);
    uint64_t sum = 0;
    double t = 0;
    arena.execute([&] {
        double t0 = now_s();
        tbb::task_group tg;
        for (long i = 0; i < n; i++) tg.run([&res, i] { res[i] = w4_work((uint64_t)i); });
        tg.wait();
        for (long i = 0; i < n; i++) sum += res[i];
        t = now_s() - t0;
    });
    CHECK_EQ_U64(sum, sum_w4(n));
    bench_result(n / t, "tasks/s", n);
}

// W5: no done callbacks; the task body increments the counter.
static void w5(long n) {
    tbb::task_arena arena(bench_threads());
    std::atomic<long> counter{0};
    double t = 0;
    arena.execute([&] {
        double t0 = now_s();
        tbb::task_group tg;
        for (long i = 0; i < n; i++) tg.run([&counter] { counter.fetch_add(1); });
        tg.wait();
        t = now_s() - t0;
    });
    CHECK_EQ_U64(counter.load(), n);
    bench_result(n / t, "tasks/s", n);
}

// W6: four submitter threads share one arena, each with its own task_group.
static void w6(long n) {
    tbb::task_arena arena(bench_threads());
    const int K = 4;
    long per = n / K;
    std::vector<uint64_t> sums(K);
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> th;
    for (int k = 0; k < K; k++)
        th.emplace_back([&, k] {
            std::vector<uint64_t> res(per);
            ready++;
            while (!go) {
            }
            arena.execute([&] {
                tbb::task_group tg;
                for (long i = 0; i < per; i++) tg.run([&res, i] { res[i] = (uint64_t)i; });
                tg.wait();
            });
            uint64_t s = 0;
            for (long i = 0; i < per; i++) s += res[i];
            sums[k] = s;
        });
    while (ready < K) {
    }
    double t0 = now_s();
    go = true;
    for (auto &t : th) t.join();
    double t = now_s() - t0;
    for (int k = 0; k < K; k++) CHECK_EQ_U64(sums[k], sum_upto(per));
    bench_result((double)(per * K) / t, "tasks/s", n);
}

// W7: an arena of two slots (the main thread and one worker); the worker takes the
// gate task and blocks; n tasks wait in the main thread's deque until tg.wait().
static sem_t gate, gate_started;
static void w7(long n) {
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, 2);
    tbb::task_arena arena(2);
    std::atomic<long> ran{0};
    long rss0 = 0, rss1 = 0;
    sem_init(&gate, 0, 0);
    sem_init(&gate_started, 0, 0);
    arena.execute([&] {
        tbb::task_group tg;
        tg.run([] {
            sem_post(&gate_started);
            while (sem_wait(&gate) != 0) {
            }
        });
        while (sem_wait(&gate_started) != 0) {
        }
        rss0 = rss_bytes();
        for (long i = 0; i < n; i++) tg.run([&ran] { ran.fetch_add(1, std::memory_order_relaxed); });
        rss1 = rss_bytes();
        long before = ran.load();
        if (before > n / 100) BENCH_FAIL("%ld tasks ran before the gate opened", before);
        sem_post(&gate);
        tg.wait();
    });
    CHECK_EQ_U64(ran.load(), n);
    bench_result((double)(rss1 - rss0) / n, "bytes/future", n);
}

static rendezvous_t rv;
static void w8(long seconds) {
    int workers = bench_idle_workers();
    // The arena needs `workers` threads besides the main thread, which only waits.
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, workers + 1);
    tbb::task_arena arena(workers + 1, 1);
    rendezvous_init(&rv, workers, 20.0);
    std::atomic<int> ok{0}, finished{0};
    for (int i = 0; i < workers; i++)
        arena.enqueue([&] {
            ok += rendezvous_wait(&rv);
            finished++;
        });
    double end = now_s() + 25;
    while (finished.load() < workers && now_s() < end) usleep(1000);
    if (ok.load() != workers) {
        bench_na("TBB did not run the 32 rendezvous tasks at once");
        return;
    }
    double ms = idle_cpu_ms((double)seconds);
    bench_result(ms, "ms-cpu", seconds);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = "tbb";
    bench_workload = argv[1];
    long n = strtol(argv[2], NULL, 10);
    std::string w = argv[1];
    if (w == "W1") w1(n);
    else if (w == "W2") w2(n);
    else if (w == "W3") w3(n);
    else if (w == "W4") w4(n);
    else if (w == "W5") w5(n);
    else if (w == "W6") w6(n);
    else if (w == "W7") w7(n);
    else if (w == "W8") w8(n);
    else bench_na("no process pool");
    return 0;
}
