/* Isolating a crashing function with a process pool: the crash costs one future. */
#include <cfutures.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *risky(void *arg) { /* may crash on some inputs */
    intptr_t x = (intptr_t)arg;
    if (x == 13) abort();
    return (void *)(x * x);
}

int main(void) {
    cf_executor *ex;
    if (cf_process_pool_new(NULL, &ex) != CF_OK) return 1;
    cf_future *fs[20];
    for (intptr_t i = 0; i < 20; i++) {
        if (cf_submit(ex, risky, (void *)i, &fs[i]) != CF_OK) return 1;
    }
    int crashed = 0;
    for (int i = 0; i < 20; i++) {
        void *r;
        int code;
        const char *msg;
        if (cf_future_result(fs[i], CF_FOREVER, &r) == CF_OK) {
            printf("%d -> %ld\n", i, (long)(intptr_t)r);
        } else if (cf_future_exception(fs[i], 0, &code, &msg) == CF_BROKEN) {
            printf("%d crashed: %s\n", i, msg); /* "... killed by signal 6 (SIGABRT)" */
            crashed++;
        }
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex); /* waits; no child process is left behind */
    return crashed == 1 ? 0 : 1;
}
