// C++20: co_await on a cf::future gives its result (or throws its exception), resuming
// in the thread that finished it, or at once when it is done. In C++17 there is nothing
// to test: the test says so and passes.
#include "cxx_test.hpp"

#include <stdexcept>
#include <string>

#ifdef CFUTURES_HPP_COROUTINES
#include <coroutine>

namespace {
/// The smallest coroutine type: starts at once, its result goes to a cf::promise.
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

task<std::string> twice(cf::thread_pool &pool, std::thread::id *resumed_in) {
    int x = co_await pool.submit([] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return 21;
    });
    *resumed_in = std::this_thread::get_id();
    std::string s = co_await pool.submit([x] { return std::to_string(x * 2); });
    co_return s;
}

task<int> done_at_once(std::thread::id *resumed_in) {
    cf::promise<int> p;
    p.set_result(5);
    int v = co_await p.get_future();
    *resumed_in = std::this_thread::get_id();
    co_return v;
}

task<int> throws(cf::thread_pool &pool) {
    int v = co_await pool.submit([]() -> int { throw std::invalid_argument("nope"); });
    co_return v;
}
} // namespace
#endif

int main() {
    watchdog(60);
#ifdef CFUTURES_HPP_COROUTINES
    cf::thread_pool pool;
    std::thread::id in;
    auto t = twice(pool, &in);
    CHECK(t.result.result() == "42");
    CHECK(in != std::this_thread::get_id());
    auto d = done_at_once(&in);
    CHECK(d.result.result() == 5 && in == std::this_thread::get_id());
    auto e = throws(pool);
    CHECK_THROWS(std::invalid_argument, e.result.result(), CHECK(std::string(e.what()) == "nope"));
    std::printf("test_cxx_coro: ok\n");
#else
    std::printf("test_cxx_coro: C++17 build, no coroutines: nothing to test\n");
#endif
    return 0;
}
