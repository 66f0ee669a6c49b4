// A C++ program outside this repository, built against an installed cfutures.
#include <cfutures.hpp>

#include <cstdio>
#include <string>

int main() {
    cf::thread_pool pool;
    auto f = pool.submit([](int x) { return std::to_string(x * x); }, 12);
    if (f.result() != "144") return 1;
    std::printf("downstream C++: %s\n", f.result().c_str());
    return 0;
}
