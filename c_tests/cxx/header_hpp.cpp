// Header hygiene: cfutures.hpp compiles on its own (twice included) without a warning,
// and every template a program names instantiates. Compiled, never run.
#include <cfutures.hpp>
#include <cfutures.hpp>

#include <string>
#include <vector>

int header_hpp_check(cf::thread_pool &pool, cf::process_pool &pp);

int header_hpp_check(cf::thread_pool &pool, cf::process_pool &pp) {
    cf::future<int> f = pool.submit([] { return 1; });
    cf::future<void> v = pool.submit([] {});
    cf::future<std::string> s = pp.submit([](int x) { return std::to_string(x); }, 1);
    auto t = f.then([](const cf::future<int> &d) { return d.result(); });
    std::vector<cf::future<int>> fs{f, t};
    auto w = cf::wait(fs);
    auto all = cf::when_all(fs);
    auto any = cf::when_any(fs);
    int n = 0;
    for (auto &&r : pool.map([](int x) { return x; }, std::vector<int>{1})) n += r;
    for (auto &&r : cf::as_completed(fs)) n += r.result();
    cf::promise<double> p;
    p.set_result(1.0);
    v.wait();
    return n + static_cast<int>(w.done.size() + all.result().size() + any.result() + s.result().size());
}
