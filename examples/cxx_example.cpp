#include <cfutures.hpp>

#include <cstdio>
#include <stdexcept>
#include <vector>

// A task is any callable: its return value is the future's result, and an exception it
// throws is the one result() throws.
long square(long x) {
    if (x < 0) throw std::domain_error("negative input");
    return x * x;
}

int main() {
    cf::thread_pool pool; // default size; its destructor waits, like leaving Python's `with`

    for (long x : {7L, -1L}) {
        cf::future<long> f = pool.submit(square, x);
        try {
            std::printf("square(%ld) = %ld\n", x, f.result()); // waits
        } catch (const std::domain_error &e) {
            std::printf("square(%ld) failed: %s\n", x, e.what());
        }
    }

    std::vector<long> inputs{1, 2, 3, 4};
    for (long r : pool.map([](long x) { return x + 100; }, inputs)) std::printf("%ld ", r);
    std::printf("\n");
    return 0;
}
