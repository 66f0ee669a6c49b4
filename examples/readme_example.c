#include <cfutures.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>

/* A task: takes an integer through its void * argument and returns its square the
 * same way. It fails, like a Python function that raises, through cf_raise. */
static void *square(void *arg) {
    intptr_t x = (intptr_t)arg;
    if (x < 0) return cf_raise(EDOM, "negative input");
    return (void *)(intptr_t)(x * x);
}

int main(void) {
    cf_executor *pool;
    if (cf_thread_pool_new(NULL, &pool) != CF_OK) return 1; /* default size */

    intptr_t inputs[] = {7, -1};
    for (int i = 0; i < 2; i++) {
        cf_future *f;
        if (cf_submit(pool, square, (void *)(intptr_t)inputs[i], &f) != CF_OK) return 1;

        void *result;
        cf_status s = cf_future_result(f, CF_FOREVER, &result); /* waits */
        if (s == CF_OK) {
            printf("square(%d) = %d\n", (int)inputs[i], (int)(intptr_t)result);
        } else {
            int code;
            const char *message;
            cf_future_exception(f, 0, &code, &message); /* done: does not wait */
            printf("square(%d) failed: %s, code %d: %s\n", (int)inputs[i],
                   cf_status_name(s), code, message ? message : "");
        }
        cf_future_release(f);
    }

    cf_executor_free(pool); /* waits for running tasks, like leaving Python's `with` */
    return 0;
}
