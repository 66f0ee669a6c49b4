/* Header hygiene: cfutures.h compiles as the only include of a translation unit, as C99
 * and C11, with -Wall -Wextra -Werror -pedantic. It must bring in everything its own
 * declarations use (stdbool.h, stddef.h, stdint.h). Compiled, never run. */
#include <cfutures.h>

/* The types and constants API.md fixes are all there. */
int header_standalone_check(void);

int header_standalone_check(void) {
    cf_status s = CF_OK;
    cf_state st = CF_STATE_PENDING;
    cf_return_when w = CF_ALL_COMPLETED;
    cf_executor_options opts = {0};
    cf_bytes b = {0};
    cf_executor *ex = NULL;
    cf_future *f = NULL;
    cf_as_completed *it = NULL;
    cf_map *m = NULL;
    cf_fn fn = NULL;
    cf_bytes_fn bfn = NULL;
    cf_init_fn init = NULL;
    cf_callback cb = NULL;
    double forever = CF_FOREVER;
    size_t sz = sizeof opts + sizeof b;
    bool flag = true;
    (void)ex;
    (void)f;
    (void)it;
    (void)m;
    (void)fn;
    (void)bfn;
    (void)init;
    (void)cb;
    (void)forever;
    (void)flag;
    return (int)s + (int)st + (int)w + (int)(sz != 0) + CF_VERSION_MAJOR;
}
