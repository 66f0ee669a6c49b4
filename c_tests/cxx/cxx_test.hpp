// Helpers of the C++ tests: CHECK and CHECK_THROWS print the file and line and exit 1;
// a watchdog ends a hung test (CF_TEST_NO_WATCHDOG=1 turns it off, as in the C tests).
#ifndef CF_CXX_TEST_HPP
#define CF_CXX_TEST_HPP

#include <cfutures.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                              \
        }                                                                              \
    } while (0)

/// `expr` must throw an `Exc`; `then` runs with it as `e`.
#define CHECK_THROWS(Exc, expr, then)                                                  \
    do {                                                                               \
        bool thrown_ = false;                                                          \
        try {                                                                          \
            (void)(expr);                                                              \
        } catch (const Exc &e) {                                                       \
            thrown_ = true;                                                            \
            (void)e;                                                                   \
            then;                                                                      \
        }                                                                              \
        if (!thrown_) {                                                                \
            std::fprintf(stderr, "%s:%d: %s did not throw %s\n", __FILE__, __LINE__, #expr, #Exc); \
            std::exit(1);                                                              \
        }                                                                              \
    } while (0)

inline void watchdog(unsigned seconds) {
    const char *off = std::getenv("CF_TEST_NO_WATCHDOG");
    if (off == nullptr || std::strcmp(off, "1") != 0) alarm(seconds);
}

/// Waits until `cond()` holds, up to 30 s (exits 1 then).
template <class F> void await_true(F cond, const char *what) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!cond()) {
        if (std::chrono::steady_clock::now() > until) {
            std::fprintf(stderr, "gave up waiting for: %s\n", what);
            std::exit(1);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

/// A one-shot gate tasks block on until the test opens it.
struct gate {
    std::atomic<bool> open{false};
    void wait() const {
        while (!open.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
};

#endif
