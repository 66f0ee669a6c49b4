/* test_version.c: cf_version() and the version macros of the header.
 *
 * Covers: cf_version() equals CF_VERSION and is static; CF_VERSION is "0.1.0" and agrees
 * with CF_VERSION_MAJOR/MINOR/PATCH; CF_VERSION_NUMBER == MAJOR*10000+MINOR*100+PATCH;
 * CF_VERSION_CHECK is true for this version and older ones, false for newer ones, and is
 * usable in #if; the constants CF_FOREVER (-1.0) and CF_MAX_WORKERS (1024). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

/* The macros must work in the preprocessor. */
#if !CF_VERSION_CHECK(0, 1, 0)
#error "CF_VERSION_CHECK(0, 1, 0) must hold for version 0.1.0"
#endif
#if CF_VERSION_CHECK(CF_VERSION_MAJOR + 1, 0, 0)
#error "CF_VERSION_CHECK of a newer major version must be false"
#endif
#if CF_VERSION_NUMBER != CF_VERSION_MAJOR * 10000 + CF_VERSION_MINOR * 100 + CF_VERSION_PATCH
#error "CF_VERSION_NUMBER disagrees with MAJOR/MINOR/PATCH"
#endif

int main(void) {
    /* The library's version string is the header's. */
    const char *v = cf_version();
    CHECK(v != NULL);
    CHECK_STREQ(v, CF_VERSION);
    CHECK_STREQ(v, "0.1.0");
    /* Static: the same string every time, still intact. */
    CHECK(cf_version() == v);
    CHECK_STREQ(cf_version(), "0.1.0");

    /* The string agrees with the numeric macros. */
    char buf[64];
    snprintf(buf, sizeof buf, "%d.%d.%d", CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH);
    CHECK_STREQ(buf, CF_VERSION);
    CHECK_EQ_LL(CF_VERSION_MAJOR, 0);
    CHECK_EQ_LL(CF_VERSION_MINOR, 1);
    CHECK_EQ_LL(CF_VERSION_PATCH, 0);
    CHECK_EQ_LL(CF_VERSION_NUMBER,
                CF_VERSION_MAJOR * 10000 + CF_VERSION_MINOR * 100 + CF_VERSION_PATCH);
    CHECK_EQ_LL(CF_VERSION_NUMBER, 100);

    /* The library's string parses to the same numbers. */
    int maj = -1, min = -1, pat = -1;
    CHECK(sscanf(v, "%d.%d.%d", &maj, &min, &pat) == 3);
    CHECK_EQ_LL(maj, CF_VERSION_MAJOR);
    CHECK_EQ_LL(min, CF_VERSION_MINOR);
    CHECK_EQ_LL(pat, CF_VERSION_PATCH);

    /* CF_VERSION_CHECK: at least the given version. */
    CHECK(CF_VERSION_CHECK(0, 0, 0));
    CHECK(CF_VERSION_CHECK(0, 0, 99));
    CHECK(CF_VERSION_CHECK(0, 1, 0));
    CHECK(CF_VERSION_CHECK(CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH));
    CHECK(!CF_VERSION_CHECK(CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH + 1));
    CHECK(!CF_VERSION_CHECK(CF_VERSION_MAJOR, CF_VERSION_MINOR + 1, 0));
    CHECK(!CF_VERSION_CHECK(CF_VERSION_MAJOR + 1, 0, 0));
    CHECK(!CF_VERSION_CHECK(0, 1, 1));
    CHECK(!CF_VERSION_CHECK(0, 2, 0));
    CHECK(!CF_VERSION_CHECK(1, 0, 0));

    /* Constants the API promises. */
    double forever = CF_FOREVER;
    CHECK(forever == -1.0);
    CHECK_EQ_LL(CF_MAX_WORKERS, 1024);

    printf("cfutures %s: ok\n", v);
    return 0;
}
