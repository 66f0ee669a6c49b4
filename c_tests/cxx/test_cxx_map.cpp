// map (eager, chunked, lazy over an endless range, timeout, a failing item, destroyed
// early, process pools), wait, as_completed, when_all, when_any.
#include "cxx_test.hpp"

#include <atomic>
#include <iterator>
#include <list>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// An endless input range 0, 1, 2, ... that counts what was pulled from it.
struct endless {
    std::atomic<long> *pulled;
    struct iterator {
        using iterator_category = std::input_iterator_tag;
        using value_type = long;
        using difference_type = std::ptrdiff_t;
        using pointer = const long *;
        using reference = long;
        std::atomic<long> *pulled;
        long i;
        long operator*() const {
            pulled->fetch_add(1);
            return i;
        }
        iterator &operator++() {
            i++;
            return *this;
        }
        bool operator==(const iterator &) const { return false; }
        bool operator!=(const iterator &) const { return true; }
    };
    iterator begin() const { return {pulled, 0}; }
    iterator end() const { return {pulled, -1}; }
};

void maps(cf::thread_pool &pool) {
    std::vector<int> v(1000);
    for (int i = 0; i < 1000; i++) v[i] = i;
    for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
        cf::map_options o;
        o.chunksize = chunk;
        long i = 0;
        for (auto r : pool.map([](int x) { return static_cast<long>(x) * x; }, v, o)) {
            CHECK(r == i * i);
            i++;
        }
        CHECK(i == 1000);
    }
    // Strings, an rvalue list, move-only results.
    std::vector<std::string> words;
    for (auto &&w : pool.map([](const std::string &s) { return s + s; }, std::list<std::string>{"a", "b"})) words.push_back(w);
    CHECK(words.size() == 2 && words[1] == "bb");
    int n = 0;
    for (auto p : pool.map([](int x) { return std::make_unique<int>(x); }, std::vector<int>{4, 5})) CHECK(*p == 4 + n++);
    // A failing item: its exception at its place, then the iteration ends.
    cf::map_options o3;
    o3.chunksize = 3;
    std::vector<int> got;
    bool threw = false;
    auto m = pool.map([](int x) { if (x == 5) throw std::range_error("five"); return x; }, v, o3);
    try {
        for (auto x : m) got.push_back(x);
    } catch (const std::range_error &e) {
        threw = std::string(e.what()) == "five";
    }
    CHECK(threw && got.size() == 5);
    CHECK(m.begin() == m.end());
    // Timeout: from the call.
    cf::map_options ot;
    ot.timeout = std::chrono::duration<double>(0.05);
    gate g;
    {
        auto slow = pool.map([&g](int x) { g.wait(); return x; }, std::vector<int>{1, 2}, ot);
        CHECK_THROWS(cf::timeout_error, slow.begin(), CHECK(e.status() == CF_TIMEOUT));
        g.open = true;
    }
    // buffersize over an endless range: pulls at most buffersize x chunksize ahead, and
    // stops pulling when the reader stops.
    std::atomic<long> pulled{0};
    endless inf{&pulled};
    cf::map_options ol;
    ol.buffersize = 4;
    ol.chunksize = 2;
    {
        auto lazy = pool.map([](long x) { return x * 10; }, inf, ol);
        CHECK(pulled <= 8);
        long k = 0;
        for (auto r : lazy) {
            CHECK(r == k * 10);
            if (++k == 25) break;
            CHECK(pulled <= k + 8 + 2);
        }
        long after = pulled;
        std::this_thread::sleep_for(20ms);
        CHECK(pulled == after);
    }
    long final_pulled = pulled;
    std::this_thread::sleep_for(10ms);
    CHECK(pulled == final_pulled && final_pulled <= 25 + 8 + 2);
    // Destroying a range early cancels what has not started; no leak (valgrind/ASan).
    {
        auto early = pool.map([](int x) { return std::string(100, char('a' + x % 26)); }, v);
        auto it = early.begin();
        CHECK((*it).size() == 100);
    }
}

void process_maps() {
    cf::process_pool pp;
    std::vector<std::string> in{"x", "yy", "zzz"};
    std::vector<std::size_t> lens;
    for (auto l : pp.map([](std::string s) { return s.size(); }, in)) lens.push_back(l);
    CHECK(lens.size() == 3 && lens[2] == 3);
    int k = 3;
    cf::map_options o;
    o.chunksize = 4;
    long i = 0;
    std::vector<int> v(50);
    for (int j = 0; j < 50; j++) v[j] = j;
    for (auto r : pp.map([k](int x) { return std::vector<int>(static_cast<std::size_t>(x % 5), k); }, v, o)) {
        CHECK(r.size() == static_cast<std::size_t>(i % 5));
        i++;
    }
    CHECK(i == 50);
    bool threw = false;
    try {
        for (auto r : pp.map([](int x) { if (x == 2) throw std::runtime_error("two"); return x; }, v, o)) (void)r;
    } catch (const cf::task_error &e) {
        threw = std::string(e.what()) == "two";
    }
    CHECK(threw);
    std::atomic<long> pulled{0};
    cf::map_options ol;
    ol.buffersize = 2;
    long n = 0;
    for (auto r : pp.map([](long x) { return -x; }, endless{&pulled}, ol)) {
        CHECK(r == -n);
        if (++n == 10) break;
    }
    CHECK(pulled <= 10 + 3);
}

void waits(cf::thread_pool &pool) {
    gate g;
    std::vector<cf::future<int>> fs;
    fs.push_back(pool.submit([] { return 1; }));
    fs.push_back(pool.submit([&g] { g.wait(); return 2; }));
    fs[0].wait();
    auto first = cf::wait(fs, cf::return_when::first_completed);
    CHECK(!first.done.empty() && first.done[0].result() == 1);
    auto partial = cf::wait(fs, cf::return_when::all_completed, 20ms);
    CHECK(partial.done.size() == 1 && partial.not_done.size() == 1);
    auto any = cf::when_any(fs);
    CHECK(any.result() == 0);
    auto all = cf::when_all(fs);
    CHECK(!all.done());
    // as_completed with a timeout: the done one, then timeout_error.
    {
        auto ac = cf::as_completed(fs, 30ms);
        auto it = ac.begin();
        CHECK((*it).result() == 1);
        CHECK_THROWS(cf::timeout_error, ++it, );
    }
    g.open = true;
    CHECK(all.result().size() == 2 && all.result()[1].result() == 2);
    int sum = 0, count = 0;
    for (const cf::future<int> &f : cf::as_completed(fs)) {
        sum += f.result();
        count++;
    }
    CHECK(sum == 3 && count == 2);
    // first_exception
    std::vector<cf::future<int>> mixed{pool.submit([]() -> int { throw std::logic_error("x"); }),
                                       pool.submit([] { std::this_thread::sleep_for(2s); return 1; })};
    auto fe = cf::wait(mixed, cf::return_when::first_exception);
    CHECK(fe.done.size() >= 1 && fe.done[0].exception() != nullptr);
    auto all2 = cf::when_all(std::vector<cf::future<int>>{});
    CHECK(all2.result().empty());
}

} // namespace

int main() {
    watchdog(120);
    {
        cf::thread_pool pool;
        maps(pool);
        waits(pool);
    }
    process_maps();
    std::printf("test_cxx_map: ok\n");
    return 0;
}
