/* Fault injection: memory pressure (RLIMIT_AS lowered in a forked child, or a task that
 * fills its worker's heap).
 *
 * Under memory pressure every cf_* call must return a status (CF_NO_MEMORY, CF_OS_ERROR)
 * or succeed, and every accepted future must finish exactly once with a clear status:
 * never a crash (SIGABRT from Rust's allocator included), never a hang. Each scenario
 * runs in its own child with the address-space limit set a little above what the child
 * already uses, so that one allocation the scenario provokes cannot be satisfied:
 *
 *   thread_stack     cf_submit must start a worker thread (8 MiB stack) with 4 MiB left
 *   bytes_input      cf_submit_bytes copies a 256 MiB input with 64 MiB left
 *   map_args         cf_map_new over 16M items (the caller's array exists) with 64 MiB left
 *   many_promises    cf_future_new until it returns CF_NO_MEMORY (8 MiB left): each
 *                    future is one small allocation, which must fail with a status
 *   queue_growth     cf_submit onto a blocked pool whose queue has room until
 *                    CF_NO_MEMORY (8 MiB left: the futures themselves run out); then
 *                    every accepted future completes with its own value
 *   wait_many        cf_wait on 100k pending promises with 4 MiB left (registering on
 *                    every future needs more): CF_NO_MEMORY with done/n_done untouched,
 *                    then the same futures complete and a wait on them works
 *   as_completed     the same for cf_as_completed_new (*out untouched)
 *   map_gated        cf_map_new (chunks of 2) over 2M items onto a blocked pool with
 *                    2 MiB left: CF_NO_MEMORY, and not one item runs
 *   map_lazy         cf_map_lazy_new (chunks of 2, buffersize SIZE_MAX) over an endless
 *                    input onto a blocked pool with 2 MiB left: its first fill runs out,
 *                    CF_NO_MEMORY, not one item runs, and `next` is not called after
 *   task_raise       a task fills its worker's heap, then calls cf_raise with a long
 *                    message: the future still finishes, with CF_TASK_FAILED, the task's
 *                    code and a fixed "out of memory" message
 *   map_chunk        the first item of a map chunk fills the worker's heap: the map
 *                    reports CF_NO_MEMORY (or a value) for it, then ends; nothing hangs
 *   process_result   a process-pool task returns 256 MiB; the parent has 32 MiB left
 *   owned_tasks      cf_submit_task (owned tasks with far deadlines, some with timeout 0),
 *                    cf_future_set_result_owned and cf_future_add_done_callback_owned
 *                    onto a blocked pool until CF_NO_MEMORY (8 MiB left): a refused call
 *                    calls no free function; at the end arg_free, result_free and
 *                    userdata_free ran exactly once for each accepted one
 *
 * After the failing call the limit is lifted and the same executor must still work.
 *
 * A child that dies by a signal fails the test: the report names the scenario and the
 * cf_* call that was running, and Rust's own message ("memory allocation of N bytes
 * failed") precedes it on stderr.
 *
 * Skipped (77) under AddressSanitizer, which cannot run with a lowered RLIMIT_AS.
 */
#define _GNU_SOURCE
#include "fault_util.h"

#ifndef FAULT_UNDER_ASAN

/* ---- which call is running (for the abort report) ------------------------------------- */

static const char *volatile g_call = "(none)";
static const char *volatile g_scenario = "?";

static void on_abort(int sig) {
    static const char a[] = "\n*** the library killed the process with signal ";
    static const char b[] = " in scenario ";
    static const char c[] = ", during ";
    char num[8];
    int n = 0, s = sig;
    do {
        num[n++] = (char)('0' + s % 10);
        s /= 10;
    } while (s > 0 && n < 7);
    ssize_t ig = write(2, a, sizeof a - 1);
    while (n > 0) ig = write(2, &num[--n], 1);
    ig = write(2, b, sizeof b - 1);
    ig = write(2, g_scenario, strlen(g_scenario));
    ig = write(2, c, sizeof c - 1);
    ig = write(2, g_call, strlen(g_call));
    ig = write(2, "\n", 1);
    (void)ig;
    signal(sig, SIG_DFL);
    raise(sig);
}

#define CALL(name, expr) (g_call = (name), (expr))

static void setup_child(const char *scenario) {
    g_scenario = scenario;
    signal(SIGABRT, on_abort);
    signal(SIGSEGV, on_abort);
    signal(SIGBUS, on_abort);
    fault_watchdog(60);
}

/* ---- address space -------------------------------------------------------------------- */

static size_t vm_size(void) {
    FILE *fp = fopen("/proc/self/status", "r");
    FCHECK(fp != NULL);
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, fp) != NULL)
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1) break;
    fclose(fp);
    FCHECK(kb > 0);
    return kb * 1024;
}

/* Limits the address space to what is mapped now plus `headroom` bytes. */
static void limit_as(size_t headroom) {
    struct rlimit rl;
    FCHECK(getrlimit(RLIMIT_AS, &rl) == 0);
    rl.rlim_cur = vm_size() + headroom;
    FCHECK(setrlimit(RLIMIT_AS, &rl) == 0);
}

static void unlimit_as(void) {
    struct rlimit rl;
    FCHECK(getrlimit(RLIMIT_AS, &rl) == 0);
    rl.rlim_cur = rl.rlim_max;
    FCHECK(setrlimit(RLIMIT_AS, &rl) == 0);
}

#define MiB ((size_t)1 << 20)

static bool is_memory_status(cf_status s) { return s == CF_NO_MEMORY || s == CF_OS_ERROR; }

static void *ident(void *a) { return a; }

static void *bytes_len(const void *in, size_t n, size_t *out_n) {
    (void)in;
    size_t *r = malloc(sizeof *r);
    if (r == NULL) return cf_raise(ENOMEM, "malloc");
    *r = n;
    *out_n = sizeof *r;
    return r;
}

/* The executor still works once the limit is gone. */
static void check_still_works(cf_executor *ex) {
    unlimit_as();
    g_call = "cf_submit (after the limit was lifted)";
    for (int i = 0; i < 20; i++) {
        cf_future *f = NULL;
        FCHECK_STATUS(cf_submit(ex, ident, (void *)(intptr_t)(i + 1), &f), CF_OK);
        void *r = NULL;
        FCHECK_STATUS(cf_future_result(f, 20.0, &r), CF_OK);
        FCHECK_EQ((intptr_t)r, i + 1);
        cf_future_release(f);
    }
}

static cf_executor *thread_pool(size_t workers) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = workers;
    cf_executor *ex = NULL;
    FCHECK_STATUS(cf_thread_pool_new(&o, &ex), CF_OK);
    return ex;
}

/* Starts the pool's first worker (so that a later submit needs no new thread). */
static void warm(cf_executor *ex) {
    cf_future *f = NULL;
    FCHECK_STATUS(cf_submit(ex, ident, NULL, &f), CF_OK);
    FCHECK_STATUS(cf_future_wait(f, 20.0), CF_OK);
    cf_future_release(f);
}

/* ---- scenarios ------------------------------------------------------------------------ */

static int sc_thread_stack(void *arg) {
    (void)arg;
    setup_child("thread_stack");
    cf_executor *ex = thread_pool(2);
    limit_as(4 * MiB);
    cf_future *f = (cf_future *)&ex;
    errno = 0;
    cf_status s = CALL("cf_submit (needs a new worker thread)", cf_submit(ex, ident, NULL, &f));
    fprintf(stderr, "   cf_submit with 4 MiB of address space left: %s (errno %d %s)\n",
            cf_status_name(s), errno, strerror(errno));
    if (s == CF_OK) {
        FCHECK_STATUS(cf_future_wait(f, 20.0), CF_OK);
        cf_future_release(f);
    } else {
        FCHECK_MSG(is_memory_status(s), "got %s", cf_status_name(s));
        FCHECK(f == (cf_future *)&ex);
    }
    check_still_works(ex);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    return 0;
}

static int sc_bytes_input(void *arg) {
    (void)arg;
    setup_child("bytes_input");
    cf_executor *ex = thread_pool(1);
    warm(ex);
    size_t n = 256 * MiB;
    void *big = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FCHECK(big != MAP_FAILED);
    limit_as(64 * MiB);
    cf_future *f = (cf_future *)&ex;
    cf_status s = CALL("cf_submit_bytes (copies a 256 MiB input)",
                       cf_submit_bytes(ex, bytes_len, big, n, &f));
    fprintf(stderr, "   cf_submit_bytes of 256 MiB with 64 MiB left: %s\n", cf_status_name(s));
    if (s == CF_OK) {
        FCHECK_STATUS(cf_future_wait(f, 20.0), CF_OK);
        cf_future_release(f);
    } else {
        FCHECK_MSG(is_memory_status(s), "got %s", cf_status_name(s));
        FCHECK(f == (cf_future *)&ex);
    }
    cf_bytes in[2] = {{big, n}, {big, 16}};
    cf_map *m = (cf_map *)&ex;
    s = CALL("cf_map_bytes_new (copies a 256 MiB input)", cf_map_bytes_new(ex, bytes_len, in, 2, 1, CF_FOREVER, &m));
    fprintf(stderr, "   cf_map_bytes_new with a 256 MiB input and 64 MiB left: %s\n", cf_status_name(s));
    if (s == CF_OK)
        cf_map_free(m);
    else
        FCHECK_MSG(is_memory_status(s), "got %s", cf_status_name(s));
    check_still_works(ex);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    munmap(big, n);
    return 0;
}

static int sc_map_args(void *arg) {
    (void)arg;
    setup_child("map_args");
    cf_executor *ex = thread_pool(1);
    warm(ex);
    size_t n = (size_t)16 << 20;
    void **args = mmap(NULL, n * sizeof *args, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FCHECK(args != MAP_FAILED);
    limit_as(64 * MiB);
    cf_map *m = (cf_map *)&ex;
    cf_status s = CALL("cf_map_new (16M items, chunksize 1)", cf_map_new(ex, ident, args, n, 1, CF_FOREVER, &m));
    fprintf(stderr, "   cf_map_new over 16M items with 64 MiB left: %s\n", cf_status_name(s));
    if (s == CF_OK)
        cf_map_free(m);
    else
        FCHECK_MSG(is_memory_status(s), "got %s", cf_status_name(s));
    s = CALL("cf_map_new (16M items, chunksize 4096)", cf_map_new(ex, ident, args, n, 4096, CF_FOREVER, &m));
    fprintf(stderr, "   cf_map_new over 16M items (chunks of 4096) with 64 MiB left: %s\n", cf_status_name(s));
    if (s == CF_OK)
        cf_map_free(m);
    else
        FCHECK_MSG(is_memory_status(s), "got %s", cf_status_name(s));
    check_still_works(ex);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    return 0;
}

/* Maps `n` pointers of scratch memory (touched now, so that it is counted before the
 * limit is set). */
static void **scratch(size_t n) {
    void **p = mmap(NULL, n * sizeof *p, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FCHECK(p != MAP_FAILED);
    memset(p, 0, n * sizeof *p);
    return p;
}

static int sc_many_promises(void *arg) {
    (void)arg;
    setup_child("many_promises");
    size_t cap = (size_t)4 << 20;
    cf_future **fs = (cf_future **)scratch(cap);
    limit_as(8 * MiB);
    size_t n = 0;
    cf_status s = CF_OK;
    g_call = "cf_future_new (until memory runs out)";
    while (n < cap) {
        cf_future *f = (cf_future *)&n;
        s = cf_future_new(&f);
        if (s != CF_OK) {
            FCHECK(f == (cf_future *)&n);
            break;
        }
        fs[n++] = f;
    }
    fprintf(stderr, "   cf_future_new: %zu promises, then %s\n", n, cf_status_name(s));
    /* 4M futures of ~100 bytes cannot fit in 8 MiB: the small allocation must fail. */
    FCHECK_MSG(s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    FCHECK(n > 0);
    /* Still at the limit: the futures made so far work, failing calls say so. */
    g_call = "cf_future_set_exception (at the limit)";
    s = cf_future_set_exception(fs[0], 5, "a message that must be copied somewhere");
    FCHECK_MSG(s == CF_OK || s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    if (s == CF_NO_MEMORY) FCHECK(!cf_future_done(fs[0]));
    g_call = "cf_future_set_result (at the limit)";
    for (size_t i = 1; i < n; i += 2) FCHECK_STATUS(cf_future_set_result(fs[i], (void *)i), CF_OK);
    g_call = "cf_future_result (at the limit)";
    for (size_t i = 1; i < n; i += 2) {
        void *r = NULL;
        FCHECK_STATUS(cf_future_result(fs[i], 0.0, &r), CF_OK);
        FCHECK(r == (void *)i);
    }
    g_call = "cf_future_release";
    for (size_t i = 0; i < n; i++) cf_future_release(fs[i]);
    unlimit_as();
    g_call = "cf_future_new (after the limit was lifted)";
    cf_future *f = NULL;
    FCHECK_STATUS(cf_future_new(&f), CF_OK);
    FCHECK_STATUS(cf_future_set_result(f, (void *)7), CF_OK);
    cf_future_release(f);
    return 0;
}

static atomic_int g_gate;
static atomic_long g_ran;
static void *gated(void *a) {
    while (!atomic_load(&g_gate)) fault_sleep(0.001);
    return a;
}
static void *counted(void *a) {
    atomic_fetch_add(&g_ran, 1);
    return a;
}

static int sc_queue_growth(void *arg) {
    (void)arg;
    setup_child("queue_growth");
    cf_executor *ex = thread_pool(1);
    size_t cap = (size_t)4 << 20;
    cf_future **fs = (cf_future **)scratch(cap);
    FCHECK_STATUS(cf_submit(ex, gated, NULL, &fs[0]), CF_OK);
    /* Grow the queue before the limit (to room for 512k tasks), so that what runs out
     * under it is the future's own small allocation, not the queue's array. */
    size_t n = 1;
    g_call = "cf_submit (before the limit)";
    for (; n < 300000; n++) FCHECK_STATUS(cf_submit(ex, ident, (void *)(intptr_t)n, &fs[n]), CF_OK);
    limit_as(8 * MiB);
    cf_status s = CF_OK;
    g_call = "cf_submit (queue growing until memory runs out)";
    while (n < cap) {
        cf_future *f = (cf_future *)&n;
        s = cf_submit(ex, ident, (void *)(intptr_t)n, &f);
        if (s != CF_OK) {
            FCHECK(f == (cf_future *)&n);
            break;
        }
        fs[n++] = f;
    }
    fprintf(stderr, "   cf_submit: %zu queued, then %s\n", n, cf_status_name(s));
    FCHECK_MSG(s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    /* The small allocations keep failing cleanly while the limit holds. */
    g_call = "cf_submit and cf_future_new (at the limit)";
    for (int i = 0; i < 1000; i++) {
        cf_future *f = (cf_future *)&n;
        s = cf_submit(ex, ident, (void *)(intptr_t)n, &f);
        FCHECK_MSG(s == CF_OK || s == CF_NO_MEMORY, "got %s", cf_status_name(s));
        if (s == CF_OK && n < cap) fs[n++] = f;
        else if (s == CF_OK) cf_future_release(f);
        cf_future *p = (cf_future *)&n;
        s = cf_future_new(&p);
        FCHECK_MSG(s == CF_OK || s == CF_NO_MEMORY, "got %s", cf_status_name(s));
        if (s == CF_OK) cf_future_release(p);
        else FCHECK(p == (cf_future *)&n);
    }
    unlimit_as();
    atomic_store(&g_gate, 1);
    g_call = "cf_future_result (draining the queue)";
    for (size_t i = 1; i < n; i++) {
        void *r = NULL;
        FCHECK_STATUS(cf_future_result(fs[i], 60.0, &r), CF_OK);
        FCHECK_EQ((intptr_t)r, (intptr_t)i);
        cf_future_release(fs[i]);
    }
    cf_future_release(fs[0]);
    check_still_works(ex);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    return 0;
}

static atomic_long g_arg_frees, g_result_frees, g_ud_frees, g_cb_runs;
static void owned_arg_free(void *p) {
    (void)p;
    atomic_fetch_add(&g_arg_frees, 1);
}
static void owned_result_free(void *p) {
    (void)p;
    atomic_fetch_add(&g_result_frees, 1);
}
static void owned_ud_free(void *p) {
    (void)p;
    atomic_fetch_add(&g_ud_frees, 1);
}
static void owned_cb(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    atomic_fetch_add(&g_cb_runs, 1);
}

static int sc_owned_tasks(void *arg) {
    (void)arg;
    setup_child("owned_tasks");
    cf_executor *ex = thread_pool(1);
    size_t cap = (size_t)4 << 20;
    cf_future **fs = (cf_future **)scratch(cap);
    FCHECK_STATUS(cf_submit(ex, gated, NULL, &fs[0]), CF_OK);
    cf_task t = CF_TASK_INIT;
    t.fn = ident;
    t.arg = (void *)(intptr_t)1;
    t.arg_free = owned_arg_free;
    t.result_free = owned_result_free;
    t.timeout = 600.0;
    /* room in the queue, and the timer's thread and heap, made before the limit */
    size_t n = 1;
    long accepted = 0, deadlines = 0;
    g_call = "cf_submit_task (before the limit)";
    for (; n < 200000; n++) {
        FCHECK_STATUS(cf_submit_task(ex, &t, &fs[n]), CF_OK);
        accepted++;
    }
    limit_as(8 * MiB);
    cf_status s = CF_OK;
    g_call = "cf_submit_task (until memory runs out)";
    while (n < cap) {
        cf_future *f = (cf_future *)&n;
        t.timeout = n % 7 == 0 ? 0.0 : n % 2 ? 600.0 : CF_FOREVER;
        long before = atomic_load(&g_arg_frees);
        s = cf_submit_task(ex, &t, &f);
        if (s != CF_OK) {
            FCHECK(f == (cf_future *)&n);
            FCHECK(atomic_load(&g_arg_frees) == before); /* nothing called */
            break;
        }
        accepted++;
        if (t.timeout == 0.0) deadlines++;
        fs[n++] = f;
    }
    fprintf(stderr, "   cf_submit_task: %ld accepted, then %s\n", accepted, cf_status_name(s));
    FCHECK_MSG(s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    g_call = "owned submits, results and callbacks (at the limit)";
    long values = 0, uds = 0;
    for (int i = 0; i < 1000; i++) {
        cf_future *f = (cf_future *)&n;
        long before = atomic_load(&g_arg_frees);
        t.timeout = i % 3 == 0 ? 0.0 : 600.0;
        s = cf_submit_task(ex, &t, &f);
        FCHECK_MSG(s == CF_OK || s == CF_NO_MEMORY, "got %s", cf_status_name(s));
        if (s == CF_OK) {
            accepted++;
            if (t.timeout == 0.0) deadlines++;
            if (n < cap) fs[n++] = f;
            else cf_future_release(f);
        } else {
            FCHECK(atomic_load(&g_arg_frees) == before);
        }
        cf_future *p = (cf_future *)&n;
        s = cf_future_new(&p);
        if (s != CF_OK) continue;
        long ud_before = atomic_load(&g_ud_frees);
        s = cf_future_add_done_callback_owned(p, owned_cb, &n, owned_ud_free);
        FCHECK_MSG(s == CF_OK || s == CF_NO_MEMORY, "got %s", cf_status_name(s));
        if (s == CF_OK) uds++;
        else FCHECK(atomic_load(&g_ud_frees) == ud_before);
        if (i % 2 == 0) {
            FCHECK_STATUS(cf_future_set_result_owned(p, &n, owned_result_free), CF_OK);
            values++;
        }
        cf_future_release(p);
    }
    unlimit_as();
    atomic_store(&g_gate, 1);
    g_call = "cf_future_result (draining the queue)";
    long ok = 0;
    for (size_t i = 1; i < n; i++) {
        void *r = NULL;
        cf_status st = cf_future_result(fs[i], 60.0, &r);
        FCHECK_MSG(st == CF_OK || st == CF_DEADLINE, "got %s", cf_status_name(st));
        if (st == CF_OK) ok++;
        cf_future_release(fs[i]);
    }
    cf_future_release(fs[0]);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    FCHECK_EQ(atomic_load(&g_arg_frees), accepted);
    FCHECK_EQ(ok, accepted - deadlines);
    FCHECK_EQ(atomic_load(&g_result_frees), ok + values);
    FCHECK_EQ(atomic_load(&g_ud_frees), uds);
    return 0;
}

enum { N_WAIT = 100000 };

/* N_WAIT pending promises, made before the limit. */
static cf_future **promises(void) {
    cf_future **fs = (cf_future **)scratch(N_WAIT);
    for (size_t i = 0; i < N_WAIT; i++) FCHECK_STATUS(cf_future_new(&fs[i]), CF_OK);
    return fs;
}

static int sc_wait_many(void *arg) {
    (void)arg;
    setup_child("wait_many");
    cf_future **fs = promises();
    bool *done = (bool *)scratch(N_WAIT / sizeof(void *) + 1);
    memset(done, 0x5a, N_WAIT);
    size_t n_done = 12345;
    limit_as(4 * MiB);
    /* A timeout of seconds, not milliseconds: on a loaded machine, registering 100k
     * futures can take longer than a short timeout, which then ends the wait before the
     * allocation that must fail (seen: CF_TIMEOUT instead of CF_NO_MEMORY). A library
     * that wrongly succeeds costs these 5 s and fails the check below. */
    cf_status s = CALL("cf_wait (100k pending futures, 4 MiB left)",
                       cf_wait(fs, N_WAIT, CF_ALL_COMPLETED, 5.0, done, &n_done));
    fprintf(stderr, "   cf_wait on 100k pending futures with 4 MiB left: %s\n", cf_status_name(s));
    FCHECK_MSG(s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    FCHECK(n_done == 12345);
    for (size_t i = 0; i < N_WAIT; i++) FCHECK(((unsigned char *)done)[i] == 0x5a);
    unlimit_as();
    /* Nothing was left registered that could disturb the futures: they complete and a
     * wait sees them. */
    g_call = "cf_wait (after the limit was lifted)";
    FCHECK_STATUS(cf_wait(fs, N_WAIT, CF_FIRST_COMPLETED, 0.0, done, &n_done), CF_TIMEOUT);
    FCHECK_STATUS(cf_future_set_result(fs[N_WAIT / 2], NULL), CF_OK);
    FCHECK_STATUS(cf_wait(fs, N_WAIT, CF_FIRST_COMPLETED, 10.0, done, &n_done), CF_OK);
    FCHECK_EQ(n_done, 1);
    FCHECK(done[N_WAIT / 2]);
    FCHECK_STATUS(cf_future_set_result(fs[N_WAIT / 2], NULL), CF_INVALID_STATE);
    for (size_t i = 0; i < N_WAIT; i++)
        if (i != N_WAIT / 2) FCHECK_STATUS(cf_future_set_result(fs[i], (void *)i), CF_OK);
    FCHECK_STATUS(cf_wait(fs, N_WAIT, CF_ALL_COMPLETED, 10.0, NULL, &n_done), CF_OK);
    FCHECK_EQ(n_done, N_WAIT);
    for (size_t i = 0; i < N_WAIT; i++) cf_future_release(fs[i]);
    return 0;
}

static int sc_as_completed(void *arg) {
    (void)arg;
    setup_child("as_completed");
    cf_future **fs = promises();
    limit_as(4 * MiB);
    cf_as_completed *it = (cf_as_completed *)&fs;
    cf_status s = CALL("cf_as_completed_new (100k pending futures, 4 MiB left)",
                       cf_as_completed_new(fs, N_WAIT, CF_FOREVER, &it));
    fprintf(stderr, "   cf_as_completed_new on 100k pending futures with 4 MiB left: %s\n",
            cf_status_name(s));
    FCHECK_MSG(s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    FCHECK(it == (cf_as_completed *)&fs);
    unlimit_as();
    g_call = "cf_as_completed (after the limit was lifted)";
    FCHECK_STATUS(cf_as_completed_new(fs, N_WAIT, 10.0, &it), CF_OK);
    FCHECK_STATUS(cf_future_set_result(fs[7], NULL), CF_OK);
    cf_future *f = NULL;
    FCHECK_STATUS(cf_as_completed_next(it, &f), CF_OK);
    FCHECK(f == fs[7]);
    for (size_t i = 0; i < N_WAIT; i++)
        if (i != 7) FCHECK_STATUS(cf_future_set_result(fs[i], NULL), CF_OK);
    size_t yielded = 1;
    while ((s = cf_as_completed_next(it, &f)) == CF_OK) yielded++;
    FCHECK_STATUS(s, CF_END);
    FCHECK_EQ(yielded, N_WAIT);
    cf_as_completed_free(it);
    for (size_t i = 0; i < N_WAIT; i++) cf_future_release(fs[i]);
    return 0;
}

static int sc_map_gated(void *arg) {
    (void)arg;
    setup_child("map_gated");
    cf_executor *ex = thread_pool(1);
    cf_future *gate = NULL;
    FCHECK_STATUS(cf_submit(ex, gated, NULL, &gate), CF_OK);
    /* The copy of the arguments (512 KiB) and the task list (1 MiB) fit; the 32k chunk
     * boxes and futures (small allocations, ~6 MiB in all) do not. */
    size_t n = (size_t)64 << 10;
    void **args = scratch(n);
    limit_as(2 * MiB);
    cf_map *m = (cf_map *)&ex;
    cf_status s = CALL("cf_map_new (64k items in chunks of 2, 2 MiB left)",
                       cf_map_new(ex, counted, args, n, 2, CF_FOREVER, &m));
    fprintf(stderr, "   cf_map_new over 64k items (chunks of 2) with 2 MiB left: %s\n", cf_status_name(s));
    FCHECK_MSG(s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    FCHECK(m == (cf_map *)&ex);
    unlimit_as();
    atomic_store(&g_gate, 1);
    FCHECK_STATUS(cf_future_wait(gate, 20.0), CF_OK);
    cf_future_release(gate);
    check_still_works(ex);
    g_call = "cf_executor_shutdown";
    FCHECK_STATUS(cf_executor_shutdown(ex, true, false), CF_OK);
    FCHECK_MSG(atomic_load(&g_ran) == 0, "%ld items of a refused map ran", (long)atomic_load(&g_ran));
    cf_executor_free(ex);
    return 0;
}

static long g_pulled;
static bool endless(void *state, void **item) {
    (void)state;
    *item = (void *)(uintptr_t)g_pulled++;
    return true;
}

static int sc_map_lazy(void *arg) {
    (void)arg;
    setup_child("map_lazy");
    cf_executor *ex = thread_pool(1);
    cf_future *gate = NULL;
    FCHECK_STATUS(cf_submit(ex, gated, NULL, &gate), CF_OK);
    limit_as(2 * MiB);
    cf_map *m = (cf_map *)&ex;
    cf_status s = CALL("cf_map_lazy_new (endless input, buffersize SIZE_MAX, 2 MiB left)",
                       cf_map_lazy_new(ex, counted, endless, NULL, 2, SIZE_MAX, CF_FOREVER, &m));
    fprintf(stderr, "   cf_map_lazy_new over an endless input with 2 MiB left: %s after %ld items\n",
            cf_status_name(s), g_pulled);
    FCHECK_MSG(s == CF_NO_MEMORY, "got %s", cf_status_name(s));
    FCHECK(m == (cf_map *)&ex);
    long pulled = g_pulled;
    unlimit_as();
    atomic_store(&g_gate, 1);
    FCHECK_STATUS(cf_future_wait(gate, 20.0), CF_OK);
    cf_future_release(gate);
    check_still_works(ex);
    g_call = "cf_executor_shutdown";
    FCHECK_STATUS(cf_executor_shutdown(ex, true, false), CF_OK);
    FCHECK_MSG(atomic_load(&g_ran) == 0, "%ld items of a refused lazy map ran", (long)atomic_load(&g_ran));
    FCHECK(g_pulled == pulled);
    cf_executor_free(ex);
    return 0;
}

/* ---- a task that exhausts its worker's heap -------------------------------------------- */

/* Blocks malloc'ed by `exhaust`, linked through their first word. */
static void *volatile g_ballast;

/* Allocates until malloc fails, at every size down to 1 byte, so that no free chunk is
 * left for the library's next small allocation. Needs the limit in place. */
static void exhaust(void) {
    for (size_t size = 1 << 16; size >= sizeof(void *); size /= 2) {
        void *p;
        while ((p = malloc(size)) != NULL) {
            *(void **)p = g_ballast;
            g_ballast = p;
        }
    }
}

static void release_ballast(void) {
    void *p = g_ballast;
    while (p != NULL) {
        void *next = *(void **)p;
        free(p);
        p = next;
    }
    g_ballast = NULL;
}

static const char long_message[] =
    "this message is long enough that copying it needs a fresh allocation, and there is none";

/* Set by the main thread once the limit is in place. */
static atomic_int g_go;

static void *raise_exhausted(void *a) {
    (void)a;
    while (!atomic_load(&g_go)) fault_sleep(0.001);
    exhaust();
    return cf_raise(42, long_message);
}

static void *exhaust_first(void *a) {
    if ((intptr_t)a == 0) {
        while (!atomic_load(&g_go)) fault_sleep(0.001);
        exhaust();
    }
    return a;
}

static void check_no_memory_message(const char *msg) {
    FCHECK(msg != NULL);
    FCHECK_MSG(strstr(msg, "out of memory") != NULL || strcmp(msg, long_message) == 0, "message: %s", msg);
}

static int sc_task_raise(void *arg) {
    (void)arg;
    setup_child("task_raise");
    cf_executor *ex = thread_pool(1);
    warm(ex);
    cf_future *f = NULL;
    g_call = "cf_submit (a task that will exhaust memory, then raise)";
    FCHECK_STATUS(cf_submit(ex, raise_exhausted, NULL, &f), CF_OK);
    limit_as(0);
    atomic_store(&g_go, 1);
    cf_status s;
    int code = 0;
    const char *msg = NULL;
    s = CALL("cf_future_exception (the task exhausted memory)", cf_future_exception(f, 30.0, &code, &msg));
    fprintf(stderr, "   a task that raised with its heap full: %s (code %d, %s)\n", cf_status_name(s), code,
            msg ? msg : "no message");
    FCHECK_STATUS(s, CF_TASK_FAILED);
    FCHECK_EQ(code, 42);
    check_no_memory_message(msg);
    FCHECK(cf_future_done(f));
    release_ballast();
    unlimit_as();
    /* The same answer later: the future finished once, for good. */
    FCHECK_STATUS(cf_future_exception(f, 0.0, &code, &msg), CF_TASK_FAILED);
    FCHECK_EQ(code, 42);
    cf_future_release(f);
    check_still_works(ex);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    return 0;
}

static int sc_map_chunk(void *arg) {
    (void)arg;
    setup_child("map_chunk");
    cf_executor *ex = thread_pool(1);
    warm(ex);
    void *args[8] = {0, (void *)1, (void *)2, (void *)3, (void *)4, (void *)5, (void *)6, (void *)7};
    cf_map *m = NULL;
    FCHECK_STATUS(cf_map_new(ex, exhaust_first, args, 8, 4, CF_FOREVER, &m), CF_OK);
    limit_as(0);
    atomic_store(&g_go, 1);
    void *r = NULL;
    int code = 0;
    const char *msg = NULL;
    cf_status s = CALL("cf_map_next (the first item exhausted memory)", cf_map_next(m, &r, &code, &msg));
    fprintf(stderr, "   a map chunk whose first item exhausted the heap: %s (code %d, %s)\n",
            cf_status_name(s), code, msg ? msg : "no message");
    size_t got = 0;
    if (s == CF_OK) {
        /* The chunk's results fitted after all: every item in order. */
        FCHECK(r == NULL);
        for (got = 1; (s = cf_map_next(m, &r, &code, &msg)) == CF_OK; got++) FCHECK(r == args[got]);
        FCHECK_STATUS(s, CF_END);
        FCHECK_EQ(got, 8);
    } else {
        FCHECK_STATUS(s, CF_NO_MEMORY);
        FCHECK_EQ(code, ENOMEM);
        check_no_memory_message(msg);
        FCHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_END);
    }
    release_ballast();
    unlimit_as();
    cf_map_free(m);
    check_still_works(ex);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    return 0;
}

static void *big_result(const void *in, size_t n, size_t *out_n) {
    (void)in;
    (void)n;
    size_t len = 256 * MiB;
    char *p = malloc(len);
    if (p == NULL) return cf_raise(ENOMEM, "the worker could not allocate");
    memset(p, 7, len);
    *out_n = len;
    return p;
}

static int sc_process_result(void *arg) {
    (void)arg;
    setup_child("process_result");
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    FCHECK_STATUS(cf_process_pool_new(&o, &ex), CF_OK);
    warm(ex); /* the worker exists, forked without the limit */
    limit_as(32 * MiB);
    cf_future *f = NULL;
    char in[8] = {0};
    cf_status s = CALL("cf_submit_bytes", cf_submit_bytes(ex, big_result, in, sizeof in, &f));
    FCHECK_MSG(s == CF_OK || is_memory_status(s), "got %s", cf_status_name(s));
    if (s == CF_OK) {
        int code = 0;
        const char *msg = NULL;
        s = CALL("cf_future_exception (a 256 MiB result into 32 MiB)", cf_future_exception(f, 30.0, &code, &msg));
        fprintf(stderr, "   a 256 MiB result from a worker with 32 MiB left: %s (code %d, %s)\n",
                cf_status_name(s), code, msg ? msg : "no message");
        FCHECK_MSG(s != CF_TIMEOUT, "the future never finished");
        FCHECK_MSG(s == CF_OK || s == CF_NO_MEMORY || s == CF_BROKEN || s == CF_OS_ERROR,
                   "got %s", cf_status_name(s));
        cf_future_release(f);
    }
    check_still_works(ex);
    g_call = "cf_executor_free";
    cf_executor_free(ex);
    FAULT_CHECK_NO_CHILDREN();
    return 0;
}

#endif /* !FAULT_UNDER_ASAN */

int main(int argc, char **argv) {
    setvbuf(stderr, NULL, _IONBF, 0);
#ifdef FAULT_UNDER_ASAN
    (void)argc;
    (void)argv;
    printf("memory: SKIPPED: AddressSanitizer cannot run with a lowered RLIMIT_AS\n");
    return FAULT_SKIP;
#else
    fault_no_core_dumps();
    struct {
        const char *name;
        int (*fn)(void *);
    } sc[] = {
        {"memory.thread_stack", sc_thread_stack},
        {"memory.bytes_input", sc_bytes_input},
        {"memory.map_args", sc_map_args},
        {"memory.many_promises", sc_many_promises},
        {"memory.queue_growth", sc_queue_growth},
        {"memory.wait_many", sc_wait_many},
        {"memory.as_completed", sc_as_completed},
        {"memory.map_gated", sc_map_gated},
        {"memory.map_lazy", sc_map_lazy},
        {"memory.task_raise", sc_task_raise},
        {"memory.map_chunk", sc_map_chunk},
        {"memory.process_result", sc_process_result},
        {"memory.owned_tasks", sc_owned_tasks},
    };
    int n = (int)(sizeof sc / sizeof sc[0]);
    /* `fault_memory NAME` runs one scenario in this process (no fork), e.g. under gdb to
     * see where an abort comes from: gdb -batch -ex run -ex bt --args fault_memory map_args */
    if (argc > 1) {
        for (int i = 0; i < n; i++)
            if (strcmp(sc[i].name + strlen("memory."), argv[1]) == 0) return sc[i].fn(NULL);
        fprintf(stderr, "no scenario %s\n", argv[1]);
        return 2;
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        fault_result r = fault_run(sc[i].name, sc[i].fn, NULL, 90);
        if (!fault_passed(r)) bad++;
    }
    printf("memory: %s (%d of %d scenarios failed, crashed or hung)\n", bad ? "FAILED" : "OK", bad, n);
    return bad ? 1 : 0;
#endif
}
