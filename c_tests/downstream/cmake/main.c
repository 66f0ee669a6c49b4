/* Downstream check: a program built against the installed cfutures through
 * find_package(cfutures CONFIG REQUIRED) and cfutures::cfutures (or
 * cfutures::cfutures_static). Runs one task on a thread pool. */
#undef NDEBUG /* the checks below are asserts; keep them in Release builds */
#include <cfutures.h>

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void *add_one(void *arg) {
    return (void *)((intptr_t)arg + 1);
}

int main(void) {
    /* The header and the library are the same version. */
    assert(strcmp(cf_version(), CF_VERSION) == 0);

    cf_executor *pool = NULL;
    cf_status s = cf_thread_pool_new(NULL, &pool);
    assert(s == CF_OK && pool != NULL);

    cf_future *f = NULL;
    s = cf_submit(pool, add_one, (void *)(intptr_t)41, &f);
    assert(s == CF_OK && f != NULL);

    void *result = NULL;
    s = cf_future_result(f, CF_FOREVER, &result);
    assert(s == CF_OK);
    assert((intptr_t)result == 42);
    assert(cf_future_done(f));

    cf_future_release(f);
    cf_executor_free(pool);
    printf("downstream (cmake): cfutures %s, 41 + 1 = %d\n", cf_version(), (int)(intptr_t)result);
    return 0;
}
