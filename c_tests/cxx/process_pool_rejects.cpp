// Programs that a process pool must refuse at compile time (each CASE), and one it must
// accept (CASE good): see expect_compile.cmake.
#include <cfutures.hpp>

#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

int main() {
    cf::process_pool pp;
#if defined(CASE_capture_map)
    std::map<int, int> m{{1, 2}};
    return pp.submit([m] { return static_cast<int>(m.size()); }).result();
#elif defined(CASE_argument_ptr)
    return *pp.submit([](std::unique_ptr<int> p) { return *p; }, std::make_unique<int>(1)).result();
#elif defined(CASE_map_input)
    std::vector<std::map<int, int>> in(2);
    int n = 0;
    for (auto r : pp.map([](std::map<int, int> x) { return static_cast<int>(x.size()); }, in)) n += r;
    return n;
#elif defined(CASE_result_list)
    return static_cast<int>(pp.submit([] { return std::list<int>{1}; }).result().size());
#else
    int k = 2;
    std::vector<int> v{1, 2};
    auto a = pp.submit([k](std::string s, std::vector<int> x) { return s.size() + x.size() + k; }, std::string("s"), v);
    int n = 0;
    for (auto r : pp.map([k](std::string s) { return std::vector<double>(s.size(), k); }, std::vector<std::string>{"ab"}))
        n += static_cast<int>(r.size());
    return static_cast<int>(a.result()) + n;
#endif
}
