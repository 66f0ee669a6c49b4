// Executors: options (workers, names, initializer), submit's copies and moves, shutdown,
// broken pools, worker_count, process pools (capturing lambdas, strings and vectors by
// value, exceptions as task_error, the run-time check through executor&), and
// terminate_workers / kill_workers.
#include "cxx_test.hpp"

#include <atomic>
#include <map>
#include <pthread.h>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;

namespace {
std::atomic<int> copies{0};
struct probe {
    probe() = default;
    probe(const probe &) { copies++; }
    probe(probe &&) noexcept {}
    int operator()() const { return 1; }
};
} // namespace

int main() {
    watchdog(120);
    {
        cf::executor_options o;
        o.max_workers = 2;
        o.name_prefix = "cxxpool";
        std::atomic<int> inits{0};
        o.initializer = [&inits] { inits++; };
        cf::thread_pool pool(o);
        CHECK(pool.worker_count() == 0 && pool.native_handle() != nullptr);
        auto name = pool.submit([] {
            char buf[32] = {0};
            pthread_getname_np(pthread_self(), buf, sizeof buf);
            return std::string(buf);
        });
        CHECK(name.result().rfind("cxxpool_", 0) == 0);
        CHECK(pool.worker_count() >= 1 && inits >= 1);
        // submit moves an rvalue callable (no copy) and copies an lvalue one once.
        probe pr;
        copies = 0;
        CHECK(pool.submit(probe{}).result() == 1 && copies == 0);
        CHECK(pool.submit(pr).result() == 1 && copies == 1);
        // Any capture on a thread pool.
        std::map<int, std::string> m{{1, "one"}};
        CHECK(pool.submit([m](int k) { return m.at(k); }, 1).result() == "one");
        // A moved executor keeps working; the moved-from one refuses.
        cf::thread_pool moved = std::move(pool);
        CHECK(moved.submit([] { return 2; }).result() == 2);
        CHECK_THROWS(std::invalid_argument, pool.submit([] { return 1; }), );
        moved.shutdown();
        CHECK(moved.worker_count() == 0);
        CHECK_THROWS(cf::shutdown_error, moved.submit([] { return 1; }), CHECK(e.status() == CF_SHUTDOWN));
    }
    {
        // shutdown(wait, cancel_futures) cancels what is queued.
        cf::executor_options o;
        o.max_workers = 1;
        cf::thread_pool pool(o);
        gate g;
        auto b = pool.submit([&g] { g.wait(); });
        await_true([&] { return b.running(); }, "blocker runs");
        auto q = pool.submit([] { return 1; });
        pool.shutdown(false, true);
        CHECK(q.cancelled());
        g.open = true;
        b.result();
    }
    {
        // A throwing initializer breaks the pool.
        cf::executor_options o;
        o.initializer = [] { throw std::runtime_error("no init"); };
        cf::thread_pool pool(o);
        auto f = pool.submit([] { return 1; });
        CHECK_THROWS(cf::broken_executor, f.result(), CHECK(e.status() == CF_BROKEN));
        await_true([&] { return cf_executor_broken_reason(pool.native_handle()) != nullptr; }, "broken");
        CHECK_THROWS(cf::broken_executor, pool.submit([] { return 1; }), );
    }
    {
        cf::process_pool pp;
        int base = 100;
        std::string greeting = "hi"; // not captured: strings travel as arguments
        CHECK(pp.submit([base](int x) { return base + x; }, 5).result() == 105);
        CHECK(pp.submit([](std::string s, int n) { return s + std::to_string(n); }, greeting, 3).result() == "hi3");
        std::vector<double> v{1.5, 2.5};
        CHECK(pp.submit([](std::vector<double> xs) { return xs.size() * 1.0 + xs[1]; }, v).result() == 4.5);
        auto pid = pp.submit([] { return static_cast<long>(getpid()); });
        CHECK(pid.result() != static_cast<long>(getpid()));
        struct pt {
            double x, y, z;
        };
        CHECK(pp.submit([](pt p) { return pt{p.x * 2, p.y, p.z}; }, pt{1, 2, 3}).result().x == 2);
        pp.submit([] {}).result();
        auto bad = pp.submit([](int x) -> int { throw std::out_of_range("worker says " + std::to_string(x)); }, 4);
        CHECK_THROWS(cf::task_error, bad.result(), CHECK(e.code() == 0 && std::string(e.what()) == "worker says 4"));
        auto bad2 = pp.submit([](std::string s) -> std::string { throw std::runtime_error(s); }, std::string("big"));
        CHECK_THROWS(cf::task_error, bad2.result(), CHECK(std::string(e.what()) == "big"));
        // A worker that dies: broken_executor for that task only.
        auto dies = pp.submit([] { _exit(3); });
        CHECK_THROWS(cf::broken_executor, dies.result(), );
        CHECK(pp.submit([] { return 7; }).result() == 7);
        // Through executor&: the same check at run time.
        cf::executor &ex = pp;
        std::map<int, int> notrivial;
        CHECK_THROWS(std::invalid_argument, ex.submit([notrivial] { return 1; }), );
        CHECK_THROWS(std::invalid_argument, ex.map([](std::map<int, int> x) { return x.size(); }, std::vector<std::map<int, int>>{}), );
        CHECK(ex.submit([](int a) { return a * 3; }, 3).result() == 9);
        // cancel a process task that has not started
        cf::executor_options o1;
        o1.max_workers = 1;
        cf::process_pool one(o1);
        auto slow = one.submit([] { usleep(300000); return 1; });
        std::vector<cf::future<std::string>> queued;
        for (int i = 0; i < 20; i++) queued.push_back(one.submit([](int k) { return std::to_string(k); }, i));
        bool some_cancelled = false;
        for (auto &q : queued) some_cancelled |= q.cancel();
        CHECK(some_cancelled);
        for (auto &q : queued)
            if (!q.cancelled()) CHECK(!q.result().empty());
        CHECK(slow.result() == 1);
    }
    {
        // terminate_workers / kill_workers (Python 3.14).
        cf::process_pool pp;
        auto running = pp.submit([] { sleep(30); return 1; });
        await_true([&] { return running.running(); }, "sleeper runs");
        pp.terminate_workers();
        CHECK_THROWS(cf::broken_executor, running.result(), );
        CHECK_THROWS(cf::shutdown_error, pp.submit([] { return 1; }), );
        pp.terminate_workers(); /* again: nothing more */
        cf::process_pool pk;
        auto r2 = pk.submit([] { sleep(30); return 1; });
        await_true([&] { return r2.running(); }, "sleeper runs");
        pk.kill_workers();
        CHECK_THROWS(cf::broken_executor, r2.result(), );
    }
    std::printf("test_cxx_executor: ok\n");
    return 0;
}
