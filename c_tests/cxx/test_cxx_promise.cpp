// cf::promise: set_result, set_exception, set_running_or_notify_cancel, setting twice,
// copies sharing one future, and the broken promise when the last copy goes unset.
#include "cxx_test.hpp"

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

using namespace std::chrono_literals;

int main() {
    watchdog(60);
    {
        cf::promise<std::string> p;
        auto f = p.get_future();
        CHECK(!f.done() && f.native_handle() == p.get_future().native_handle());
        cf::promise<std::string> copy = p;
        std::thread t([copy]() mutable { copy.set_result("from a thread"); });
        CHECK(f.result() == "from a thread");
        t.join();
        CHECK_THROWS(cf::invalid_state_error, p.set_result("again"), CHECK(e.status() == CF_INVALID_STATE));
        CHECK_THROWS(cf::invalid_state_error, p.set_exception(std::make_exception_ptr(1)), );
    }
    {
        cf::promise<int> p;
        CHECK(p.set_running_or_notify_cancel());
        CHECK(p.get_future().running());
        CHECK(!p.get_future().cancel());
        CHECK_THROWS(cf::invalid_state_error, p.set_running_or_notify_cancel(), );
        p.set_exception(std::make_exception_ptr(std::domain_error("dom")));
        CHECK_THROWS(std::domain_error, p.get_future().result(), CHECK(std::string(e.what()) == "dom"));
        CHECK_THROWS(std::invalid_argument, p.set_exception(nullptr), );
    }
    {
        cf::promise<int> p;
        auto f = p.get_future();
        CHECK(f.cancel());
        CHECK(!p.set_running_or_notify_cancel());
        CHECK_THROWS(cf::invalid_state_error, p.set_result(1), );
    }
    {
        cf::promise<void> p;
        auto f = p.get_future();
        p.set_result();
        f.result();
        cf::promise<std::unique_ptr<int>> u;
        u.set_result(std::make_unique<int>(3));
        CHECK(*u.get_future().result() == 3);
    }
    {
        // The last copy goes away unset: broken_promise, and a waiter wakes.
        cf::future<int> f;
        {
            cf::promise<int> p;
            f = p.get_future();
            cf::promise<int> q = p;
        }
        CHECK(f.wait_for(10s));
        CHECK_THROWS(cf::broken_promise, f.result(), CHECK(e.status() == CF_BROKEN));
        // A set promise is not broken by going away.
        cf::future<std::string> g;
        {
            cf::promise<std::string> p;
            g = p.get_future();
            p.set_result("kept");
        }
        CHECK(g.result() == "kept");
        // Moved from: get_future throws.
        cf::promise<int> a;
        cf::promise<int> b = std::move(a);
        CHECK_THROWS(std::invalid_argument, a.get_future(), );
        b.set_result(1);
    }
    std::printf("test_cxx_promise: ok\n");
    return 0;
}
