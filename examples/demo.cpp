// The C++ face of cfutures, section by section: a thread pool with lambdas, an
// exception crossing, map over a std::vector, as_completed, then and when_all, a process
// pool running a capturing lambda, and (C++20) a coroutine awaiting a future.
//
//   build/examples/demo_cxx [N]     (N: the size of the parallel sum, default 20000000)
#include <cfutures.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#ifdef CFUTURES_HPP_COROUTINES
#include <coroutine>
#endif

using namespace std::chrono_literals;

namespace {

void section(const char *name) { std::printf("\n== %s\n", name); }

[[noreturn]] void fail(const char *what) {
    std::fprintf(stderr, "demo_cxx: FAILED: %s\n", what);
    std::exit(1);
}

/// A sum of sqrt over [lo, hi): real work for the pools.
double sum_sqrt(long lo, long hi) {
    double s = 0;
    for (long i = lo; i < hi; i++) s += std::sqrt(static_cast<double>(i));
    return s;
}

struct parse_error : std::runtime_error {
    int line;
    parse_error(int l, const std::string &m) : std::runtime_error(m), line(l) {}
};

#ifdef CFUTURES_HPP_COROUTINES
/// A coroutine type that starts at once and hands its result to a cf::future.
template <class T> struct task {
    struct promise_type {
        cf::promise<T> out;
        task get_return_object() { return task{out.get_future()}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_value(T v) { out.set_result(std::move(v)); }
        void unhandled_exception() { out.set_exception(std::current_exception()); }
    };
    cf::future<T> result;
};

task<std::string> fetch_and_describe(cf::thread_pool &pool) {
    long n = co_await pool.submit([] { return 6L * 7L; });
    std::string s = co_await pool.submit([n] { return "the answer is " + std::to_string(n); });
    co_return s;
}
#endif

} // namespace

int main(int argc, char **argv) {
    const long n = argc > 1 ? std::atol(argv[1]) : 20000000L;
    const auto t0 = std::chrono::steady_clock::now();
    cf::thread_pool pool;

    section("thread pool: lambdas, any result type");
    const long parts = 16;
    std::vector<cf::future<double>> pieces;
    for (long p = 0; p < parts; p++)
        pieces.push_back(pool.submit([n, parts, p] { return sum_sqrt(n * p / parts, n * (p + 1) / parts); }));
    double total = 0;
    for (auto &f : pieces) total += f.result();
    const double expect = 2.0 / 3.0 * std::pow(static_cast<double>(n), 1.5);
    std::printf("sum of sqrt(i) for i < %ld: %.6g (about %.6g)\n", n, total, expect);
    if (std::fabs(total - expect) > 1e-3 * expect + 10) fail("the parallel sum");
    auto greeting = pool.submit([](std::string who) { return "hello, " + who; }, std::string("C++"));
    std::printf("%s\n", greeting.result().c_str());

    section("an exception crosses: the same object, with its state");
    auto bad = pool.submit([]() -> int { throw parse_error(42, "unexpected token"); });
    try {
        bad.result();
        fail("no exception");
    } catch (const parse_error &e) {
        std::printf("caught parse_error at line %d: %s\n", e.line, e.what());
    }

    section("map over a std::vector, in input order");
    std::vector<int> xs(10);
    std::iota(xs.begin(), xs.end(), 1);
    cf::map_options chunks;
    chunks.chunksize = 3;
    for (auto s : pool.map([](int x) { return std::to_string(x * x); }, xs, chunks)) std::printf("%s ", s.c_str());
    std::printf("\n");

    section("as_completed: in the order they finish");
    std::vector<cf::future<int>> sleepers;
    for (int ms : {60, 20, 40})
        sleepers.push_back(pool.submit([ms] {
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
            return ms;
        }));
    for (const cf::future<int> &f : cf::as_completed(sleepers, 30s)) std::printf("%d ms done\n", f.result());

    section("then and when_all");
    auto doubled = sleepers[0].then([](const cf::future<int> &f) { return f.result() * 2; });
    auto text = doubled.then(pool, [](const cf::future<int> &f) { return "doubled: " + std::to_string(f.result()); });
    std::printf("%s\n", text.result().c_str());
    auto all = cf::when_all(sleepers);
    int sum = 0;
    for (const auto &f : all.result(30s)) sum += f.result();
    std::printf("when_all: %zu futures, sum %d\n", all.result().size(), sum);
    if (sum != 120) fail("when_all");

    section("process pool: a capturing lambda runs in another process");
    cf::process_pool procs;
    const long parent = static_cast<long>(getpid());
    const long scale = 3;
    auto remote = procs.submit([scale, parent](long x) { return scale * x + (getpid() != parent ? 1 : 0); }, 10L);
    std::printf("3 * 10 + (ran in another process) = %ld\n", remote.result());
    if (remote.result() != 31) fail("the process pool");
    std::vector<std::string> words{"process", "pools", "copy", "strings"};
    for (auto len : procs.map([](std::string w) { return w.size(); }, words)) std::printf("%zu ", len);
    std::printf("\n");
    auto thrown = procs.submit([](int) -> int { throw std::runtime_error("thrown in a worker"); }, 0);
    try {
        thrown.result();
    } catch (const cf::task_error &e) {
        std::printf("cf::task_error from the worker: %s\n", e.what());
    }

#ifdef CFUTURES_HPP_COROUTINES
    section("C++20: a coroutine awaits futures");
    auto c = fetch_and_describe(pool);
    std::printf("%s\n", c.result.result(30s).c_str());
#else
    section("C++20 coroutines: not in this build (C++17)");
#endif

    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("\ndemo_cxx: all sections done in %.2f s\n", secs);
    return 0;
}
