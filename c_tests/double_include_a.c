/* Header hygiene: cfutures.h included twice in one translation unit (the include guard
 * works) and in two translation units linked into one program (double_include_b.c): the
 * header defines no object or non-inline function, so nothing is defined twice. Built
 * as C99 and C11 with -Wall -Wextra -Werror -pedantic; the program is not run. */
#include <cfutures.h>
#include <cfutures.h>

int double_include_a(void);

int double_include_a(void) {
    cf_status s = CF_TIMEOUT;
    return (int)s + CF_VERSION_MINOR;
}
