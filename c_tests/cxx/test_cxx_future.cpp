// cf::future, the error classes, adopt, then, add_done_callback, exceptions crossing a
// thread pool (the same object), move-only values, values destroyed exactly once.
#include "cxx_test.hpp"

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::atomic<int> made{0}, gone{0};
/// Counts its constructions and destructions (copies and moves too).
struct counted {
    int v;
    explicit counted(int x) : v(x) { made++; }
    counted(const counted &o) : v(o.v) { made++; }
    counted(counted &&o) noexcept : v(o.v) { made++; }
    ~counted() { gone++; }
};

/// An exception type with state.
struct my_error : std::runtime_error {
    int detail;
    std::vector<int> data;
    my_error(int d, std::vector<int> v) : std::runtime_error("my_error " + std::to_string(d)), detail(d), data(std::move(v)) {}
};

void *c_task(void *arg) { return arg; }
void *c_raises(void *) { return cf_raise(33, "negative input"); }

void errors() {
    cf::error e(CF_TIMEOUT, "x");
    CHECK(e.status() == CF_TIMEOUT && std::string(e.what()) == "x");
    cf::task_error t(7, "seven");
    CHECK(t.code() == 7 && t.status() == CF_TASK_FAILED && std::string(t.what()) == "seven");
    cf::timeout_error a(CF_TIMEOUT, "a");
    cf::cancelled_error b(CF_CANCELLED, "b");
    cf::broken_executor c(CF_BROKEN, "c");
    cf::shutdown_error d(CF_SHUTDOWN, "d");
    cf::invalid_state_error f(CF_INVALID_STATE, "f");
    cf::deadline_error g(CF_DEADLINE, "g");
    cf::broken_promise h(CF_BROKEN, "h");
    const cf::error *all[] = {&a, &b, &c, &d, &f, &g, &h};
    for (const cf::error *x : all) CHECK(x->what()[0] != '\0');
}

void basics(cf::thread_pool &pool) {
    cf::future<int> empty;
    CHECK(!empty.valid() && !empty.done());
    CHECK_THROWS(std::invalid_argument, empty.result(), );

    auto f = pool.submit([](int a, int b) { return a + b; }, 40, 2);
    CHECK(f.valid() && f.result() == 42 && f.done() && !f.running() && !f.cancelled());
    CHECK(f.native_handle() != nullptr && cf_future_done(f.native_handle()));
    CHECK(f.exception() == nullptr && f.exception(1s) == nullptr);
    auto copy = f;
    const int &r = copy.result();
    f = cf::future<int>();
    CHECK(r == 42); // valid while a copy lives
    auto moved = std::move(copy);
    CHECK(!copy.valid() && moved.result(0s) == 42);

    // void, strings, doubles, big values
    std::atomic<int> hit{0};
    cf::future<void> v = pool.submit([&hit] { hit++; });
    v.result();
    v.wait();
    CHECK(hit == 1);
    CHECK(pool.submit([] { return std::string(1000, 'x'); }).result().size() == 1000);
    CHECK(pool.submit([](double x) { return x / 2; }, 3.0).result() == 1.5);
    struct big {
        long a[8];
    };
    CHECK(pool.submit([] { return big{{1, 2, 3, 4, 5, 6, 7, 8}}; }).result().a[7] == 8);

    // move-only result and argument
    auto u = pool.submit([](std::unique_ptr<int> p) { return std::make_unique<int>(*p + 1); }, std::make_unique<int>(6));
    CHECK(*u.result() == 7);

    // timeouts, wait_for, running, cancel
    gate g;
    auto blocker = pool.submit([&g] { g.wait(); return 1; });
    await_true([&] { return blocker.running(); }, "the blocker runs");
    CHECK_THROWS(cf::timeout_error, blocker.result(10ms), CHECK(e.status() == CF_TIMEOUT));
    CHECK_THROWS(cf::timeout_error, blocker.result(-5s), );
    CHECK_THROWS(cf::timeout_error, blocker.exception(0ms), );
    CHECK(!blocker.wait_for(1ms) && !blocker.done() && !blocker.cancel());
    g.open = true;
    CHECK(blocker.wait_for(30s) && blocker.result() == 1);
}

void cancellation() {
    cf::executor_options o;
    o.max_workers = 1;
    cf::thread_pool one(o);
    gate g;
    auto blocker = one.submit([&g] { g.wait(); });
    await_true([&] { return blocker.running(); }, "blocker runs");
    int before_made = made, before_gone = gone;
    {
        counted c(5);
        auto queued = one.submit([c] { return c.v; });
        CHECK(queued.cancel() && queued.cancelled() && queued.done());
        CHECK_THROWS(cf::cancelled_error, queued.result(), CHECK(e.status() == CF_CANCELLED));
        CHECK_THROWS(cf::cancelled_error, queued.exception(), );
    }
    g.open = true;
    one.shutdown();
    // The capture of the task that never ran was destroyed exactly once.
    CHECK(made - before_made == gone - before_gone);
}

void exceptions(cf::thread_pool &pool) {
    auto f = pool.submit([]() -> int { throw my_error(9, {1, 2, 3}); });
    CHECK_THROWS(my_error, f.result(), CHECK(e.detail == 9 && e.data.size() == 3 && std::string(e.what()) == "my_error 9"));
    std::exception_ptr ep = f.exception();
    CHECK(ep != nullptr);
    // The same object every time.
    const my_error *first = nullptr;
    try {
        std::rethrow_exception(ep);
    } catch (const my_error &e) {
        first = &e;
    }
    try {
        f.result();
    } catch (const my_error &e) {
        CHECK(&e == first);
    }
    // A non-std exception.
    auto g = pool.submit([]() -> int { throw 17; });
    try {
        g.result();
        CHECK(false);
    } catch (int x) {
        CHECK(x == 17);
    }
    // A C task's cf_raise: task_error with its code and message.
    cf_future *raw = nullptr;
    CHECK(cf_submit(pool.native_handle(), c_raises, nullptr, &raw) == CF_OK);
    cf::future<void *> a = cf::adopt(raw);
    CHECK_THROWS(cf::task_error, a.result(), CHECK(e.code() == 33 && std::string(e.what()) == "negative input"));
    cf_future *raw2 = nullptr;
    int x = 5;
    CHECK(cf_submit(pool.native_handle(), c_task, &x, &raw2) == CF_OK);
    CHECK(cf::adopt(raw2).result() == &x);
    CHECK_THROWS(std::invalid_argument, cf::adopt(nullptr), );
    // A task's deadline (C API, through native_handle): deadline_error.
    cf_task t = CF_TASK_INIT;
    t.fn = c_task;
    t.timeout = 0;
    cf_future *late = nullptr;
    CHECK(cf_submit_task(pool.native_handle(), &t, &late) == CF_OK);
    CHECK_THROWS(cf::deadline_error, cf::adopt(late).result(), CHECK(e.status() == CF_DEADLINE));
}

void destroyed_once(cf::thread_pool &pool) {
    int m0 = made, g0 = gone;
    {
        std::vector<cf::future<counted>> fs;
        for (int i = 0; i < 100; i++) fs.push_back(pool.submit([i] { return counted(i); }));
        for (auto &f : fs) f.wait();
        CHECK(fs[3].result().v == 3); // one read, the others never
    }
    // Results released unread (and one released before it finished).
    { auto f = pool.submit([] { std::this_thread::sleep_for(5ms); return counted(1); }); }
    pool.shutdown();
    CHECK(made - m0 == gone - g0);
    CHECK(made - m0 >= 101);
}

void callbacks_and_then(cf::thread_pool &pool) {
    std::atomic<int> calls{0};
    auto f = pool.submit([] { return 5; });
    f.add_done_callback([&calls](const cf::future<int> &d) { calls += d.result(); });
    f.wait();
    await_true([&] { return calls.load() == 5; }, "the callback ran");
    // On a done future: at once, in this thread.
    std::thread::id here = std::this_thread::get_id(), ran_in;
    std::string big(100, 'y');
    f.add_done_callback([&ran_in, big](const cf::future<int> &) { ran_in = std::this_thread::get_id(); });
    CHECK(ran_in == here);

    auto t = f.then([](const cf::future<int> &d) { return d.result() * 2; });
    CHECK(t.result() == 10);
    auto s = f.then(pool, [](const cf::future<int> &d) { return std::to_string(d.result()); });
    CHECK(s.result() == "5");
    auto thrower = f.then([](const cf::future<int> &) -> int { throw my_error(1, {}); });
    CHECK_THROWS(my_error, thrower.result(), CHECK(e.detail == 1));
    // A continuation of a failed future reads its exception.
    auto failed = pool.submit([]() -> int { throw std::logic_error("bad"); });
    auto seen = failed.then([](const cf::future<int> &d) { return d.exception() != nullptr; });
    CHECK(seen.result());
    // void continuation, heap-held callable, move-only result.
    std::vector<int> capture(50, 1);
    auto vt = f.then(pool, [capture](const cf::future<int> &) { (void)capture; });
    vt.result();
    auto ut = f.then([](const cf::future<int> &d) { return std::make_unique<int>(d.result()); });
    CHECK(*ut.result() == 5);
    // Cancelling a continuation that has not run: it never runs.
    cf::promise<int> p;
    std::atomic<bool> ran{false};
    auto never = p.get_future().then([&ran](const cf::future<int> &) { ran = true; return std::string("x"); });
    CHECK(never.cancel() && never.cancelled());
    p.set_result(1);
    CHECK(!ran);
    // A process pool cannot run continuations.
    cf::process_pool pp;
    CHECK_THROWS(std::invalid_argument, f.then(pp, [](const cf::future<int> &) { return 1; }), );
}

void callback_exception_terminates() {
    pid_t pid = fork();
    if (pid == 0) {
        cf::promise<int> p;
        p.get_future().add_done_callback([](const cf::future<int> &) { throw 1; });
        p.set_result(1);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

} // namespace

int main() {
    watchdog(120);
    errors();
    {
        cf::thread_pool pool;
        basics(pool);
        exceptions(pool);
        callbacks_and_then(pool);
        destroyed_once(pool);
    }
    cancellation();
    callback_exception_terminates();
    std::printf("test_cxx_future: ok\n");
    return 0;
}
