// Header hygiene: cfutures.h compiles as C++17 with -Wall -Wextra -Werror -pedantic, its
// declarations have C linkage, and a captureless lambda converts to the callback types.
// Compiled, never run.
#include <cfutures.h>
#include <cfutures.h>

#include <cstddef>
#include <type_traits>

static_assert(std::is_same<decltype(&cf_version), const char *(*)()>::value,
              "cf_version is const char *(void)");
static_assert(CF_OK == 0, "CF_OK is 0");
static_assert(CF_VERSION_NUMBER ==
                  CF_VERSION_MAJOR * 10000 + CF_VERSION_MINOR * 100 + CF_VERSION_PATCH,
              "CF_VERSION_NUMBER agrees with its parts");
static_assert(CF_VERSION_CHECK(CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH),
              "CF_VERSION_CHECK accepts the header's own version");

int header_cxx_check();

int header_cxx_check() {
    cf_fn fn = [](void *arg) -> void * { return arg; };
    cf_callback cb = [](cf_future *, void *) {};
    cf_init_fn init = [](void *) {};
    cf_bytes_fn bfn = [](const void *, std::size_t, std::size_t *out_len) -> void * {
        *out_len = 0;
        return nullptr;
    };
    cf_executor_options opts{};
    cf_executor *ex = nullptr;
    cf_future *f = nullptr;
    (void)fn;
    (void)cb;
    (void)init;
    (void)bfn;
    (void)ex;
    (void)f;
    return static_cast<int>(opts.max_workers) + static_cast<int>(CF_CANCELLED);
}
