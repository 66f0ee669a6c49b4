/* Downstream check: a program built against the installed cfutures with
 *   cc main.c $(pkg-config --cflags --libs cfutures)
 * (see build.sh beside this file). Runs one task on a thread pool. */
#undef NDEBUG /* the checks below are asserts; keep them whatever the flags */
#include <cfutures.h>

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void *triple(void *arg) {
    return (void *)((intptr_t)arg * 3);
}

int main(void) {
    /* The header and the library are the same version. */
    assert(strcmp(cf_version(), CF_VERSION) == 0);

    cf_executor *pool = NULL;
    cf_status s = cf_thread_pool_new(NULL, &pool);
    assert(s == CF_OK && pool != NULL);

    cf_future *f = NULL;
    s = cf_submit(pool, triple, (void *)(intptr_t)14, &f);
    assert(s == CF_OK && f != NULL);

    void *result = NULL;
    s = cf_future_result(f, CF_FOREVER, &result);
    assert(s == CF_OK);
    assert((intptr_t)result == 42);

    cf_future_release(f);
    cf_executor_free(pool);
    printf("downstream (pkg-config): cfutures %s, 14 * 3 = %d\n", cf_version(),
           (int)(intptr_t)result);
    return 0;
}
