/* test_thread_pool.c: thread pool sizing, worker names and throughput.
 *
 * Covers: max_workers limits the number of workers (8 blocked tasks in a 3-worker pool give
 * 3 workers and only 3 started tasks); the default max_workers is min(32, cpus + 4) for
 * opts NULL and for zeroed options; max_workers == CF_MAX_WORKERS is accepted; worker
 * threads carry OS names "<prefix>_<n>" with n counting from 0 in each pool, truncated to
 * 15 bytes; the prefix is copied at creation; the default name is non-empty and is not
 * the main thread's; tasks run on worker threads; one worker runs tasks in submission
 * order; 10000 tasks all complete with the right results, also when submitted from
 * several threads at once.
 * Ports from CPython Lib/test/test_concurrent_futures/: test_thread_pool.py
 * test_saturation, test_default_workers; test_shutdown.py test_thread_names_assigned,
 * test_thread_names_default; executor.py test_submit. */
#define _GNU_SOURCE
#include <cfutures.h>

#include <sched.h>

#include "test_util.h"
#include "test_util_extra.h"

/* ---- sizing ------------------------------------------------------------------------ */

static void saturate(cf_executor *ex, size_t max, size_t ntasks) {
    blocker b;
    blocker_init(&b);
    blocked_job *jobs = calloc(ntasks, sizeof *jobs);
    cf_future **fs = calloc(ntasks, sizeof *fs);
    CHECK(jobs != NULL && fs != NULL);
    for (size_t i = 0; i < ntasks; i++) {
        blocked_job_init(&jobs[i], &b, (void *)(uintptr_t)(i + 1));
        fs[i] = submit_ok(ex, task_blocked, &jobs[i]);
        CHECK(cf_executor_worker_count(ex) <= max);
    }
    CHECK(counter_wait(&b.started, (long)max, LONG_WAIT));
    CHECK_EQ_LL(cf_executor_worker_count(ex), max);
    /* No more than `max` tasks run at once: the next queued one does not start. */
    CHECK_STATUS(cf_future_wait(fs[ntasks - 1], 0.1), CF_TIMEOUT);
    CHECK_EQ_LL(counter_get(&b.started), max);
    CHECK_EQ_LL(cf_executor_worker_count(ex), max);
    size_t running = 0, pending = 0;
    for (size_t i = 0; i < ntasks; i++) {
        if (cf_future_running(fs[i])) running++;
        if (cf_future_state(fs[i]) == CF_STATE_PENDING) pending++;
    }
    CHECK_EQ_LL(running, max);
    CHECK_EQ_LL(pending, ntasks - max);

    gate_open(&b.g);
    for (size_t i = 0; i < ntasks; i++) {
        CHECK(result_ok(fs[i]) == (void *)(uintptr_t)(i + 1));
        cf_future_release(fs[i]);
    }
    CHECK(cf_executor_worker_count(ex) <= max);
    CHECK_EQ_LL(counter_get(&b.started), ntasks);
    free(jobs);
    free(fs);
    blocker_destroy(&b);
}

static size_t default_for(long cpus) { return (size_t)(cpus + 4 < 32 ? cpus + 4 : 32); }

static void check_default_workers(cf_executor *ex) {
    size_t by_sysconf = default_for(online_cpus());
    size_t by_affinity = by_sysconf;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        by_affinity = default_for(CPU_COUNT(&set));
    if (by_affinity != by_sysconf)
        fprintf(stderr, "note: sysconf gives %zu default workers, affinity %zu\n", by_sysconf,
                by_affinity);
    size_t lo = by_sysconf < by_affinity ? by_sysconf : by_affinity;
    size_t hi = by_sysconf < by_affinity ? by_affinity : by_sysconf;
    size_t ntasks = hi + 4;

    blocker b;
    blocker_init(&b);
    blocked_job *jobs = calloc(ntasks, sizeof *jobs);
    cf_future **fs = calloc(ntasks, sizeof *fs);
    CHECK(jobs != NULL && fs != NULL);
    for (size_t i = 0; i < ntasks; i++) {
        blocked_job_init(&jobs[i], &b, NULL);
        fs[i] = submit_ok(ex, task_blocked, &jobs[i]);
    }
    CHECK(counter_wait(&b.started, (long)lo, LONG_WAIT));
    /* Give any further worker time to start, then count. */
    CHECK_STATUS(cf_future_wait(fs[ntasks - 1], 0.2), CF_TIMEOUT);
    size_t n = cf_executor_worker_count(ex);
    if (n != by_sysconf && n != by_affinity)
        fprintf(stderr, "default pool has %zu workers, expected %zu\n", n, by_sysconf);
    CHECK(n == by_sysconf || n == by_affinity);
    CHECK_EQ_LL(counter_get(&b.started), n);
    gate_open(&b.g);
    for (size_t i = 0; i < ntasks; i++) {
        result_ok(fs[i]);
        cf_future_release(fs[i]);
    }
    CHECK(cf_executor_worker_count(ex) <= n);
    free(jobs);
    free(fs);
    blocker_destroy(&b);
}

static void test_sizing(void) {
    /* 8 blocked tasks, 3 workers. */
    cf_executor *ex = make_pool(3, "three");
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    saturate(ex, 3, 8);
    cf_executor_free(ex);

    /* test_saturation: 4 workers, 15 * 4 tasks. */
    ex = make_pool(4, "sat");
    saturate(ex, 4, 60);
    cf_executor_free(ex);

    /* test_default_workers: min(32, cpus + 4), with opts NULL and with zeroed options.
     * cpus is sysconf(_SC_NPROCESSORS_ONLN); the header documents "the CPUs this process
     * may run on" (sched_getaffinity), so when the two differ either count is accepted. */
    for (int variant = 0; variant < 2; variant++) {
        cf_executor_options o;
        memset(&o, 0, sizeof o);
        ex = NULL;
        CHECK_OK(cf_thread_pool_new(variant == 0 ? NULL : &o, &ex));
        CHECK(ex != NULL);
        CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
        check_default_workers(ex);
        cf_executor_free(ex);
    }

    /* The ceiling itself is accepted (workers start lazily, so this is cheap). */
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = CF_MAX_WORKERS;
    ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    CHECK(ex != NULL);
    CHECK_EQ_LL(cf_executor_worker_count(ex), 0);
    cf_future *f = submit_ok(ex, task_identity, &o);
    CHECK(result_ok(f) == &o);
    cf_future_release(f);
    CHECK_EQ_LL(cf_executor_worker_count(ex), 1);
    cf_executor_free(ex);
}

/* ---- names ------------------------------------------------------------------------- */

typedef struct name_job {
    blocked_job bj; /* bj.b may be NULL: then the task does not block */
    char name[64];
    pthread_t thread;
} name_job;

static void *task_name(void *arg) {
    name_job *n = (name_job *)arg;
    n->thread = pthread_self();
    memset(n->name, 0, sizeof n->name);
    CHECK(pthread_getname_np(pthread_self(), n->name, sizeof n->name) == 0);
    if (n->bj.b != NULL) task_blocked(&n->bj);
    return n->name;
}

static void name_of_one_worker(cf_executor *ex, char *out, size_t outlen) {
    name_job n;
    memset(&n, 0, sizeof n);
    n.bj.b = NULL;
    cf_future *f = submit_ok(ex, task_name, &n);
    CHECK(result_ok(f) == n.name);
    cf_future_release(f);
    CHECK(!pthread_equal(n.thread, pthread_self()));
    snprintf(out, outlen, "%s", n.name);
}

static void test_names(void) {
    char name[64];

    /* One worker: "<prefix>_0". */
    cf_executor *ex = make_pool(1, "mypool");
    name_of_one_worker(ex, name, sizeof name);
    CHECK_STREQ(name, "mypool_0");
    name_of_one_worker(ex, name, sizeof name); /* the same (only) worker */
    CHECK_STREQ(name, "mypool_0");
    cf_executor_free(ex);

    /* test_thread_names_assigned: 3 busy workers are "SpecialPool_0".."_2" (at most 15 bytes:
     * "SpecialPool_0" is 13). */
    ex = make_pool(3, "SpecialPool");
    blocker b;
    blocker_init(&b);
    name_job jobs[3];
    cf_future *fs[3];
    for (int i = 0; i < 3; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        blocked_job_init(&jobs[i].bj, &b, NULL);
        fs[i] = submit_ok(ex, task_name, &jobs[i]);
    }
    CHECK(counter_wait(&b.started, 3, LONG_WAIT));
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        int k = -1;
        char want[32];
        for (int n = 0; n < 3; n++) {
            snprintf(want, sizeof want, "SpecialPool_%d", n);
            if (strcmp(jobs[i].name, want) == 0) k = n;
        }
        if (k < 0) fprintf(stderr, "unexpected worker name \"%s\"\n", jobs[i].name);
        CHECK(k >= 0);
        seen[k]++;
    }
    CHECK(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
    gate_open(&b.g);
    for (int i = 0; i < 3; i++) {
        result_ok(fs[i]);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    blocker_destroy(&b);

    /* Numbering is per pool: a second pool with the same prefix starts at 0 again. */
    cf_executor *e1 = make_pool(1, "pp");
    cf_executor *e2 = make_pool(1, "pp");
    name_of_one_worker(e1, name, sizeof name);
    CHECK_STREQ(name, "pp_0");
    name_of_one_worker(e2, name, sizeof name);
    CHECK_STREQ(name, "pp_0");
    cf_executor_free(e1);
    cf_executor_free(e2);

    /* A long prefix: the OS keeps the first 15 bytes of "<prefix>_0". */
    ex = make_pool(1, "averyveryverylongprefix");
    name_of_one_worker(ex, name, sizeof name);
    CHECK_STREQ(name, "averyveryverylo");
    cf_executor_free(ex);

    /* The prefix is copied: the caller's buffer can change before any worker starts. */
    char prefix[32];
    strcpy(prefix, "copied");
    ex = make_pool(1, prefix);
    memset(prefix, 'Z', sizeof prefix - 1);
    prefix[sizeof prefix - 1] = '\0';
    name_of_one_worker(ex, name, sizeof name);
    CHECK_STREQ(name, "copied_0");
    cf_executor_free(ex);

    /* test_thread_names_default: a default name, non-empty and not inherited from the
     * main thread. */
    char main_name[64];
    memset(main_name, 0, sizeof main_name);
    CHECK(pthread_getname_np(pthread_self(), main_name, sizeof main_name) == 0);
    ex = make_pool(1, NULL);
    name_of_one_worker(ex, name, sizeof name);
    CHECK(strlen(name) > 0);
    if (strcmp(name, main_name) == 0)
        fprintf(stderr, "default worker name \"%s\" is the main thread's\n", name);
    CHECK(strcmp(name, main_name) != 0);
    cf_executor_free(ex);
    ex = NULL;
    CHECK_OK(cf_thread_pool_new(NULL, &ex));
    char name2[64];
    name_of_one_worker(ex, name2, sizeof name2);
    CHECK(strlen(name2) > 0);
    CHECK(strcmp(name2, main_name) != 0);
    cf_executor_free(ex);
}

/* ---- throughput and order ---------------------------------------------------------- */

static void *task_affine(void *arg) { return (void *)((uintptr_t)arg * 2u + 1u); }

enum { NMANY = 10000 };

static void test_many(void) {
    cf_executor *ex = make_pool(4, "many");
    cf_future **fs = calloc(NMANY, sizeof *fs);
    CHECK(fs != NULL);
    for (uintptr_t i = 0; i < NMANY; i++) fs[i] = submit_ok(ex, task_affine, (void *)i);
    for (uintptr_t i = 0; i < NMANY; i++) {
        CHECK(result_ok(fs[i]) == (void *)(i * 2u + 1u));
        CHECK_STATE(fs[i], CF_STATE_FINISHED);
        cf_future_release(fs[i]);
    }
    CHECK(cf_executor_worker_count(ex) <= 4);
    cf_executor_free(ex);
    free(fs);
}

typedef struct submitter {
    cf_executor *ex;
    uintptr_t base;
    size_t n;
    cf_future **fs;
} submitter;

static void *submitter_main(void *arg) {
    submitter *s = (submitter *)arg;
    for (size_t i = 0; i < s->n; i++) s->fs[i] = submit_ok(s->ex, task_affine, (void *)(s->base + i));
    return NULL;
}

static void test_concurrent_submit(void) {
    enum { NT = 4, PER = 1000 };
    cf_executor *ex = make_pool(3, "csub");
    submitter s[NT];
    pthread_t th[NT];
    for (int t = 0; t < NT; t++) {
        s[t].ex = ex;
        s[t].base = (uintptr_t)t * PER;
        s[t].n = PER;
        s[t].fs = calloc(PER, sizeof(cf_future *));
        CHECK(s[t].fs != NULL);
        CHECK(pthread_create(&th[t], NULL, submitter_main, &s[t]) == 0);
    }
    for (int t = 0; t < NT; t++) CHECK(pthread_join(th[t], NULL) == 0);
    for (int t = 0; t < NT; t++) {
        for (size_t i = 0; i < PER; i++) {
            CHECK(result_ok(s[t].fs[i]) == (void *)((s[t].base + i) * 2u + 1u));
            cf_future_release(s[t].fs[i]);
        }
        free(s[t].fs);
    }
    CHECK(cf_executor_worker_count(ex) <= 3);
    cf_executor_free(ex);
}

static int fifo_log[100];
static atomic_int fifo_n;
static void *task_fifo(void *arg) {
    int k = atomic_fetch_add(&fifo_n, 1);
    if (k < 100) fifo_log[k] = (int)(uintptr_t)arg;
    return NULL;
}

static void test_fifo_one_worker(void) {
    atomic_init(&fifo_n, 0);
    cf_executor *ex = make_pool(1, "fifo");
    blocker b;
    blocker_init(&b);
    blocked_job j;
    blocked_job_init(&j, &b, NULL);
    cf_future *head = submit_ok(ex, task_blocked, &j);
    CHECK(counter_wait(&b.started, 1, LONG_WAIT));
    cf_future *fs[100];
    for (uintptr_t i = 0; i < 100; i++) fs[i] = submit_ok(ex, task_fifo, (void *)i);
    gate_open(&b.g);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK_EQ_LL(atomic_load(&fifo_n), 100);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ_LL(fifo_log[i], i);
        cf_future_release(fs[i]);
    }
    cf_future_release(head);
    cf_executor_free(ex);
    blocker_destroy(&b);
}

int main(void) {
    watchdog_start(100);
    test_sizing();
    test_names();
    test_many();
    test_concurrent_submit();
    test_fifo_one_worker();
    printf("test_thread_pool: ok\n");
    return 0;
}
