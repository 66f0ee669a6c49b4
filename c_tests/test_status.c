/* test_status.c: status codes, their names and the state enum.
 *
 * Covers: the numeric values of every cf_status (CF_OK = 0 ... CF_OS_ERROR = 10, then
 * CF_PANIC) and cf_state; cf_status_name for every code, for unknown values
 * ("CF_UNKNOWN_STATUS", never NULL), returning static strings (same pointer on every call,
 * from any thread). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

typedef struct {
    cf_status s;
    long long value;
    const char *name;
} entry;

static const entry entries[] = {
    {CF_OK, 0, "CF_OK"},
    {CF_TIMEOUT, 1, "CF_TIMEOUT"},
    {CF_CANCELLED, 2, "CF_CANCELLED"},
    {CF_TASK_FAILED, 3, "CF_TASK_FAILED"},
    {CF_BROKEN, 4, "CF_BROKEN"},
    {CF_SHUTDOWN, 5, "CF_SHUTDOWN"},
    {CF_END, 6, "CF_END"},
    {CF_INVALID_ARGUMENT, 7, "CF_INVALID_ARGUMENT"},
    {CF_INVALID_STATE, 8, "CF_INVALID_STATE"},
    {CF_NO_MEMORY, 9, "CF_NO_MEMORY"},
    {CF_OS_ERROR, 10, "CF_OS_ERROR"},
    {CF_PANIC, 11, "CF_PANIC"},
    {CF_DEADLINE, 12, "CF_DEADLINE"},
};
#define N_ENTRIES (sizeof entries / sizeof entries[0])

static const char *names_seen_by_thread[N_ENTRIES];

static void *names_in_thread(void *arg) {
    (void)arg;
    for (size_t i = 0; i < N_ENTRIES; i++) names_seen_by_thread[i] = cf_status_name(entries[i].s);
    return NULL;
}

int main(void) {
    watchdog_start(60);

    /* Values are fixed by API.md; CF_PANIC follows CF_OS_ERROR. */
    for (size_t i = 0; i < N_ENTRIES; i++) CHECK_EQ_LL(entries[i].s, entries[i].value);
    CHECK_EQ_LL(CF_PANIC, CF_OS_ERROR + 1);

    /* Every name is right and static. */
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const char *n = cf_status_name(entries[i].s);
        CHECK(n != NULL);
        CHECK_STREQ(n, entries[i].name);
        CHECK(cf_status_name(entries[i].s) == n);
    }

    /* Names are distinct. */
    for (size_t i = 0; i < N_ENTRIES; i++)
        for (size_t j = i + 1; j < N_ENTRIES; j++)
            CHECK(strcmp(cf_status_name(entries[i].s), cf_status_name(entries[j].s)) != 0);

    /* Unknown values: a fixed name, never NULL, never a crash. */
    cf_status unknown[] = {(cf_status)(CF_DEADLINE + 1), (cf_status)13, (cf_status)42,
                           (cf_status)1000, (cf_status)0x7fffffff, (cf_status)-1};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *n = cf_status_name(unknown[i]);
        CHECK(n != NULL);
        CHECK_STREQ(n, "CF_UNKNOWN_STATUS");
    }

    /* The same static strings from another thread. */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, names_in_thread, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    for (size_t i = 0; i < N_ENTRIES; i++)
        CHECK(names_seen_by_thread[i] == cf_status_name(entries[i].s));

    /* cf_state values are fixed too. */
    CHECK_EQ_LL(CF_STATE_PENDING, 0);
    CHECK_EQ_LL(CF_STATE_RUNNING, 1);
    CHECK_EQ_LL(CF_STATE_CANCELLED, 2);
    CHECK_EQ_LL(CF_STATE_FINISHED, 3);

    printf("test_status: ok\n");
    return 0;
}
