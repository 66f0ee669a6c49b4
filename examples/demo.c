/*
 * cfutures demo: Python's concurrent.futures, from C.
 *
 *   demo [LIMIT]
 *
 * 1. Counts the primes below LIMIT (default 10000000) by trial division, once serially
 *    and once split into ranges that run as tasks on a thread pool of the default size,
 *    and prints both times and the speed-up.
 * 2. A done callback.
 * 3. A task that fails with cf_raise, and how the error surfaces.
 * 4. A promise: a future that another thread completes by hand.
 * 5. Cancelling a future that has not started.
 * 6. as_completed: the ranges of section 1, handled in the order they finish.
 * 7. map: the primality of every number below LIMIT / 10, in input order, 1000 numbers
 *    per task (chunksize), then the same with one number per task, and both times.
 * 8. A process pool: the prime count again in worker processes, and a function that
 *    crashes its worker (SIGSEGV) costing only its own future.
 *
 * Each section is one function `section_*` called from main(); each returns 0 on
 * success, so the demo doubles as a test (CTest runs it at its default size, several
 * times, and once small).
 *
 * Data handed to a task is complete before the task is submitted and outlives it: every
 * range is written before the loop that submits it, and every future is read before the
 * array it points into goes out of scope.
 *
 * The demo never waits without a limit: each wait gives up after PATIENCE seconds
 * (CF_DEMO_PATIENCE in the environment changes it) and says what it waited for.
 */
#define _POSIX_C_SOURCE 200809L

#include <cfutures.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------- */

/* Prints what failed and returns 1 from the calling section when `expr` is not CF_OK. */
#define TRY(expr)                                                                          \
    do {                                                                                   \
        cf_status try_status_ = (expr);                                                    \
        if (try_status_ != CF_OK) {                                                        \
            fprintf(stderr, "demo: %s failed: %s\n", #expr, cf_status_name(try_status_)); \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

/* Prints the broken expectation and returns 1 from the calling section. */
#define EXPECT(cond)                                                                       \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "demo: %s:%d: expected %s\n", __FILE__, __LINE__, #cond);      \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

/* How long any one wait of the demo may last, in seconds (see patience()). */
#define DEFAULT_PATIENCE 300.0

/* The limit of every wait: CF_DEMO_PATIENCE seconds, or DEFAULT_PATIENCE. */
static double patience(void) {
    static double p = 0;
    if (p == 0) {
        const char *env = getenv("CF_DEMO_PATIENCE");
        double v = env ? strtod(env, NULL) : 0;
        p = v > 0 ? v : DEFAULT_PATIENCE;
    }
    return p;
}

/* Like TRY for a call that waits up to patience(): on CF_TIMEOUT it says what it waited
 * for, so that a stuck demo fails with a message instead of hanging. */
#define AWAIT(expr, what)                                                                  \
    do {                                                                                   \
        cf_status await_status_ = (expr);                                                  \
        if (await_status_ == CF_TIMEOUT) {                                                 \
            fprintf(stderr, "demo: gave up after %.0f s waiting for %s\n", patience(),     \
                    what);                                                                 \
            return 1;                                                                      \
        }                                                                                  \
        if (await_status_ != CF_OK) {                                                      \
            fprintf(stderr, "demo: %s failed: %s\n", #expr, cf_status_name(await_status_)); \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A one-shot gate: tasks block in gate_wait until the demo opens it. Plain pthreads on
 * purpose: a pool worker that waits on a cfutures future may run other queued tasks of
 * its pool meanwhile, and section 5 needs a worker that is truly busy. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    int entered; /* how many threads reached gate_wait */
} gate;

static void gate_init(gate *g) {
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = 0;
    g->entered = 0;
}

/* The absolute CLOCK_REALTIME time patience() seconds from now (pthread_cond_timedwait). */
static struct timespec patience_deadline(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double p = patience();
    ts.tv_sec += (time_t)p;
    ts.tv_nsec += (long)((p - (double)(time_t)p) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Blocks until the gate opens, or gives up after patience() with a message (the task
 * then returns, so that the pool can still shut down). */
static void gate_wait(gate *g) {
    struct timespec until = patience_deadline();
    pthread_mutex_lock(&g->mu);
    g->entered++;
    pthread_cond_broadcast(&g->cv);
    int rc = 0;
    while (!g->open && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&g->cv, &g->mu, &until);
    if (!g->open) {
        fprintf(stderr, "demo: a task gave up after %.0f s waiting for the gate to open\n",
                patience());
    }
    pthread_mutex_unlock(&g->mu);
}

/* Blocks until `n` threads have reached gate_wait; 0, or -1 (with a message) when that
 * took longer than patience(). */
static int gate_await_entered(gate *g, int n) {
    struct timespec until = patience_deadline();
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    while (g->entered < n && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &until);
    }
    int entered = g->entered;
    pthread_mutex_unlock(&g->mu);
    if (entered < n) {
        fprintf(stderr, "demo: gave up after %.0f s waiting for %d task(s) to start\n",
                patience(), n);
        return -1;
    }
    return 0;
}

static void gate_open(gate *g) {
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_destroy(gate *g) {
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

/* ---- 1. real parallel work: counting primes ------------------------------------------ */

typedef struct prime_range {
    uint32_t lo; /* inclusive */
    uint32_t hi; /* exclusive */
} prime_range;

static int is_prime(uint32_t n) {
    if (n < 2) return 0;
    if (n % 2 == 0) return n == 2;
    for (uint32_t d = 3; d <= n / d; d += 2) {
        if (n % d == 0) return 0;
    }
    return 1;
}

/* A task (a cf_fn): counts the primes of one range. The count comes back as the
 * future's `void *` result, cast from an integer. */
static void *count_primes(void *arg) {
    const prime_range *r = arg;
    uintptr_t count = 0;
    for (uint32_t n = r->lo; n < r->hi; n++) count += (uintptr_t)is_prime(n);
    return (void *)count;
}

/* More ranges than workers: higher ranges cost more, small pieces balance the load. */
enum { N_RANGES = 64 };

static int section_parallel_primes(uint32_t limit) {
    printf("== 1. Counting the primes below %" PRIu32 ", serially and on a thread pool\n",
           limit);

    /* static: even on a failure path that returns early, a task still running reads
     * live memory. */
    static prime_range ranges[N_RANGES];
    for (uint32_t i = 0; i < N_RANGES; i++) {
        ranges[i].lo = (uint32_t)((uint64_t)limit * i / N_RANGES);
        ranges[i].hi = (uint32_t)((uint64_t)limit * (i + 1) / N_RANGES);
    }

    /* Serially, in this thread. */
    double t0 = now_seconds();
    uintptr_t serial = 0;
    for (int i = 0; i < N_RANGES; i++) serial += (uintptr_t)count_primes(&ranges[i]);
    double serial_s = now_seconds() - t0;

    /* In parallel: a thread pool of the default size (opts NULL: min(32, CPUs + 4)
     * workers), one task per range. ranges[] outlives the tasks: every result is
     * collected before this function returns. */
    cf_executor *pool = NULL;
    TRY(cf_thread_pool_new(NULL, &pool));
    cf_future *futures[N_RANGES];
    t0 = now_seconds();
    for (int i = 0; i < N_RANGES; i++) {
        TRY(cf_submit(pool, count_primes, &ranges[i], &futures[i]));
    }
    uintptr_t parallel = 0;
    for (int i = 0; i < N_RANGES; i++) {
        void *result = NULL;
        AWAIT(cf_future_result(futures[i], patience(), &result), "a prime count of section 1");
        parallel += (uintptr_t)result;
        cf_future_release(futures[i]);
    }
    double parallel_s = now_seconds() - t0;
    size_t workers = cf_executor_worker_count(pool);
    cf_executor_free(pool); /* the end of Python's `with`: shutdown(wait=True), then free */

    printf("  serial:   %8" PRIuPTR " primes in %.3f s\n", serial, serial_s);
    printf("  parallel: %8" PRIuPTR " primes in %.3f s (%d tasks on %zu worker threads)\n",
           parallel, parallel_s, (int)N_RANGES, workers);
    printf("  speed-up: %.2fx with %ld CPUs online\n",
           parallel_s > 0 ? serial_s / parallel_s : 0.0, sysconf(_SC_NPROCESSORS_ONLN));
    EXPECT(parallel == serial);
    return 0;
}

/* ---- 2. a done callback ------------------------------------------------------------------ */

typedef struct callback_record {
    pthread_t caller;   /* the thread that added the callback */
    atomic_int calls;   /* how often the callback ran */
    atomic_int in_caller; /* whether it ran in `caller` */
    atomic_uintptr_t result;
} callback_record;

/* A cf_callback: runs exactly once, after the future is done, in the thread that
 * finished it (or at once in the adding thread if the future was already done). */
static void on_done(cf_future *f, void *userdata) {
    callback_record *rec = userdata;
    void *result = NULL;
    /* The future is done: a timeout of 0 returns its outcome without waiting. */
    if (cf_future_result(f, 0, &result) == CF_OK) atomic_store(&rec->result, (uintptr_t)result);
    atomic_store(&rec->in_caller, pthread_equal(pthread_self(), rec->caller) ? 1 : 0);
    atomic_fetch_add(&rec->calls, 1);
}

typedef struct gated_range {
    gate *gate;
    prime_range range;
} gated_range;

static void *count_primes_after_gate(void *arg) {
    gated_range *g = arg;
    gate_wait(g->gate);
    return count_primes(&g->range);
}

static int section_done_callback(void) {
    printf("== 2. A done callback\n");
    cf_executor *pool = NULL;
    TRY(cf_thread_pool_new(NULL, &pool));

    static gate g;
    gate_init(&g);
    static gated_range task; /* static, like the records below: see section 1 */
    task = (gated_range){&g, {0, 1000}};
    cf_future *f = NULL;
    TRY(cf_submit(pool, count_primes_after_gate, &task, &f));

    /* The task is held at the gate, so the future is not done yet: the callback will
     * run in the worker thread that finishes the task. */
    static callback_record before;
    before = (callback_record){.caller = pthread_self()};
    TRY(cf_future_add_done_callback(f, on_done, &before));
    EXPECT(!cf_future_done(f));
    gate_open(&g);

    void *result = NULL;
    AWAIT(cf_future_result(f, patience(), &result), "the task of section 2");
    /* The callback runs after the future is done; shutting the pool down with wait
     * (cf_executor_free) returns once the worker, and so the callback, has finished. */
    cf_executor_free(pool);
    EXPECT(atomic_load(&before.calls) == 1);
    printf("  added while pending: ran %d time in %s, saw result %" PRIuPTR "\n",
           atomic_load(&before.calls),
           atomic_load(&before.in_caller) ? "this thread" : "the worker thread",
           (uintptr_t)atomic_load(&before.result));

    /* On a done future the callback runs at once, in this thread, before the call
     * returns. */
    static callback_record after;
    after = (callback_record){.caller = pthread_self()};
    TRY(cf_future_add_done_callback(f, on_done, &after));
    EXPECT(atomic_load(&after.calls) == 1 && atomic_load(&after.in_caller) == 1);
    printf("  added when done:     ran %d time in %s, saw result %" PRIuPTR "\n",
           atomic_load(&after.calls), atomic_load(&after.in_caller) ? "this thread" : "a worker",
           (uintptr_t)atomic_load(&after.result));
    EXPECT((uintptr_t)result == 168); /* there are 168 primes below 1000 */

    cf_future_release(f); /* futures outlive their executor */
    gate_destroy(&g);
    return 0;
}

/* ---- 3. a task that fails ---------------------------------------------------------------- */

/* A task that fails on bad input: cf_raise records an error code and a message in the
 * future (Python: raise) and returns NULL, so `return cf_raise(...)` reads naturally. */
static void *integer_sqrt(void *arg) {
    intptr_t x = (intptr_t)arg;
    if (x < 0) return cf_raise(EDOM, "square root of a negative number");
    intptr_t r = 0;
    while ((r + 1) * (r + 1) <= x) r++;
    return (void *)r;
}

static int section_failing_task(void) {
    printf("== 3. A task that fails with cf_raise\n");
    cf_executor *pool = NULL;
    TRY(cf_thread_pool_new(NULL, &pool));

    cf_future *ok = NULL, *bad = NULL;
    TRY(cf_submit(pool, integer_sqrt, (void *)(intptr_t)49, &ok));
    TRY(cf_submit(pool, integer_sqrt, (void *)(intptr_t)-49, &bad));

    void *result = NULL;
    cf_status s = cf_future_result(ok, patience(), &result);
    printf("  sqrt(49):  %s, result %" PRIdPTR "\n", cf_status_name(s), (intptr_t)result);
    EXPECT(s == CF_OK && (intptr_t)result == 7);

    /* Python: future.result() raises the task's exception. Here the status says it
     * failed and the result is not written. */
    result = NULL;
    s = cf_future_result(bad, patience(), &result);
    printf("  sqrt(-49): %s\n", cf_status_name(s));
    EXPECT(s == CF_TASK_FAILED && result == NULL);

    /* Python: future.exception(). The message lives as long as the future. */
    int code = 0;
    const char *message = NULL;
    s = cf_future_exception(bad, patience(), &code, &message);
    printf("  cf_future_exception: %s, code %d (%s), message \"%s\"\n", cf_status_name(s),
           code, code == EDOM ? "EDOM" : "?", message ? message : "(none)");
    EXPECT(s == CF_TASK_FAILED && code == EDOM && message != NULL);

    /* After a success, the exception is "none": code 0 and no message. */
    s = cf_future_exception(ok, patience(), &code, &message);
    EXPECT(s == CF_OK && code == 0 && message == NULL);

    cf_future_release(ok);
    cf_future_release(bad);
    cf_executor_free(pool);
    return 0;
}

/* ---- 4. a promise: a future completed by hand -------------------------------------------- */

/* A plain thread (not a pool worker) that produces a value and completes the promise. */
static void *producer_thread(void *arg) {
    cf_future *promise = arg; /* this thread's own reference, see cf_future_retain below */
    /* Python: Future.set_running_or_notify_cancel(): false if someone cancelled it. */
    if (cf_future_set_running_or_notify_cancel(promise) == CF_OK) {
        prime_range r = {0, 100000};
        cf_future_set_result(promise, count_primes(&r));
    }
    cf_future_release(promise);
    return NULL;
}

static int section_promise(void) {
    printf("== 4. A promise: a future completed by another thread\n");
    cf_future *promise = NULL;
    TRY(cf_future_new(&promise));
    EXPECT(cf_future_state(promise) == CF_STATE_PENDING);

    /* The producer gets its own reference, released when it is done with it. */
    pthread_t producer;
    EXPECT(pthread_create(&producer, NULL, producer_thread, cf_future_retain(promise)) == 0);

    /* The consumer waits exactly as for a future from cf_submit. */
    void *result = NULL;
    AWAIT(cf_future_result(promise, patience(), &result), "the promise of section 4");
    printf("  the producer's result: %" PRIuPTR " primes below 100000\n", (uintptr_t)result);
    EXPECT((uintptr_t)result == 9592);

    /* A promise is completed once: setting it again is Python's InvalidStateError. */
    cf_status s = cf_future_set_result(promise, NULL);
    printf("  setting it a second time: %s\n", cf_status_name(s));
    EXPECT(s == CF_INVALID_STATE);

    EXPECT(pthread_join(producer, NULL) == 0);
    cf_future_release(promise);
    return 0;
}

/* ---- 5. cancelling a future that has not started ----------------------------------------- */

static atomic_int second_task_ran;

static void *wait_at_gate(void *arg) {
    gate_wait(arg);
    return NULL;
}

static void *second_task(void *arg) {
    (void)arg;
    atomic_store(&second_task_ran, 1);
    return NULL;
}

static int section_cancel(void) {
    printf("== 5. Cancelling a future that has not started\n");
    /* One worker: while it is held at the gate, the next task can only wait in the queue. */
    cf_executor_options opts = {.max_workers = 1, .name_prefix = "demo-cancel"};
    cf_executor *pool = NULL;
    TRY(cf_thread_pool_new(&opts, &pool));

    gate g;
    gate_init(&g);
    cf_future *busy = NULL, *queued = NULL;
    TRY(cf_submit(pool, wait_at_gate, &g, &busy));
    EXPECT(gate_await_entered(&g, 1) == 0); /* the only worker is now inside the first task */
    TRY(cf_submit(pool, second_task, NULL, &queued));

    EXPECT(cf_future_running(busy));
    bool cancelled_queued = cf_future_cancel(queued);
    bool cancelled_busy = cf_future_cancel(busy);
    printf("  cancel(queued task):  %s, state %s\n", cancelled_queued ? "true" : "false",
           cf_future_cancelled(queued) ? "cancelled" : "not cancelled");
    printf("  cancel(running task): %s, it runs on\n", cancelled_busy ? "true" : "false");
    EXPECT(cancelled_queued && cf_future_cancelled(queued) && cf_future_done(queued));
    EXPECT(!cancelled_busy && !cf_future_cancelled(busy));

    gate_open(&g);
    void *result = NULL;
    AWAIT(cf_future_result(busy, patience(), &result), "the task held at the gate");
    cf_status s = cf_future_result(queued, patience(), &result);
    printf("  result of the cancelled future: %s\n", cf_status_name(s));
    EXPECT(s == CF_CANCELLED);

    cf_executor_free(pool);
    EXPECT(atomic_load(&second_task_ran) == 0); /* a cancelled task never runs */
    cf_future_release(busy);
    cf_future_release(queued);
    gate_destroy(&g);
    return 0;
}

/* ---- 6. as_completed: results in the order they finish -------------------------------- */

static int section_as_completed(uint32_t limit) {
    printf("\n== 6. as_completed: prime counts of 8 ranges, in the order they finish\n");
    enum { N = 8 };
    static prime_range ranges[N]; /* static: see section 1 */
    cf_executor *pool = NULL;
    TRY(cf_thread_pool_new(NULL, &pool));
    cf_future *futures[N];
    /* Every range is written before any task is submitted: a worker may start a task
     * the moment it is submitted, and must find its range complete. */
    for (int i = 0; i < N; i++) {
        /* Higher ranges hold bigger numbers: they take longer and tend to finish later. */
        ranges[i].lo = (uint32_t)((uint64_t)limit * i / N);
        ranges[i].hi = (uint32_t)((uint64_t)limit * (i + 1) / N);
    }
    /* Submitted highest first, so that completion order differs from submission order. */
    for (int i = 0; i < N; i++) {
        TRY(cf_submit(pool, count_primes, &ranges[N - 1 - i], &futures[i]));
    }
    cf_as_completed *it = NULL;
    TRY(cf_as_completed_new(futures, N, patience(), &it));
    cf_future *done = NULL;
    int yielded = 0;
    cf_status st;
    while ((st = cf_as_completed_next(it, &done)) == CF_OK) {
        int i = 0;
        while (futures[i] != done) i++; /* which range this is */
        void *count = NULL;
        TRY(cf_future_result(done, 0, &count));
        printf("  range %d [%" PRIu32 ", %" PRIu32 "): %" PRIuPTR " primes\n", N - 1 - i,
               ranges[N - 1 - i].lo, ranges[N - 1 - i].hi, (uintptr_t)count);
        yielded++;
    }
    cf_as_completed_free(it);
    if (st == CF_TIMEOUT) {
        fprintf(stderr, "demo: gave up after %.0f s waiting for the prime counts of section 6\n",
                patience());
        return 1; /* the futures and the pool are left to the exiting process */
    }
    for (int i = 0; i < N; i++) cf_future_release(futures[i]);
    cf_executor_free(pool);
    EXPECT(st == CF_END && yielded == N);
    return 0;
}

/* ---- 7. map: one function over many inputs, results in input order ------------------- */

static void *is_prime_task(void *arg) { return (void *)(uintptr_t)is_prime((uint32_t)(uintptr_t)arg); }

static int map_count(cf_executor *pool, void **args, size_t n, size_t chunksize,
                     uintptr_t *count) {
    cf_map *m = NULL;
    TRY(cf_map_new(pool, is_prime_task, args, n, chunksize, patience(), &m));
    void *r = NULL;
    uintptr_t c = 0;
    size_t got = 0;
    cf_status st;
    while ((st = cf_map_next(m, &r, NULL, NULL)) == CF_OK) {
        c += (uintptr_t)r;
        got++;
    }
    cf_map_free(m);
    if (st == CF_TIMEOUT) {
        fprintf(stderr, "demo: gave up after %.0f s waiting for the map of section 7\n",
                patience());
        return 1;
    }
    EXPECT(st == CF_END && got == n);
    *count = c;
    return 0;
}

static int section_map(uint32_t limit) {
    size_t n = limit / 10 < 2 ? 2 : limit / 10;
    printf("\n== 7. map: is_prime over the %zu numbers below %zu, in input order\n", n, n);
    void **args = malloc(n * sizeof *args);
    EXPECT(args != NULL);
    for (size_t i = 0; i < n; i++) args[i] = (void *)(uintptr_t)i;
    cf_executor *pool = NULL;
    TRY(cf_thread_pool_new(NULL, &pool));
    uintptr_t chunked = 0, single = 0;
    double t0 = now_seconds();
    int bad = map_count(pool, args, n, 1000, &chunked);
    double t1 = now_seconds();
    bad |= map_count(pool, args, n, 1, &single);
    double t2 = now_seconds();
    cf_executor_free(pool);
    free(args);
    if (bad) return 1;
    printf("  chunksize 1000: %" PRIuPTR " primes in %.3f s (%zu tasks)\n", chunked, t1 - t0,
           (n + 999) / 1000);
    printf("  chunksize 1:    %" PRIuPTR " primes in %.3f s (%zu tasks)\n", single, t2 - t1, n);
    EXPECT(chunked == single);
    return 0;
}

/* ---- 8. a process pool: parallel work and crash isolation ------------------------------ */

/* Workers are forked from the program as it is at cf_process_pool_new, so this global,
 * set before the pool is made, is visible in them. Ranges travel as integer indices. */
static uint32_t g_limit;
enum { P_RANGES = 16 };

static void *count_primes_in_worker(void *arg) {
    uintptr_t i = (uintptr_t)arg;
    prime_range r = {(uint32_t)((uint64_t)g_limit * i / P_RANGES),
                     (uint32_t)((uint64_t)g_limit * (i + 1) / P_RANGES)};
    return count_primes(&r);
}

static void *crash(void *arg) {
    (void)arg;
    raise(SIGSEGV); /* as a bad pointer would: the worker process dies */
    return NULL;
}

static int section_process_pool(uint32_t limit) {
    printf("\n== 8. A process pool: primes below %" PRIu32 " in worker processes, and a crash\n",
           limit);
    g_limit = limit;
    cf_executor *pool = NULL;
    TRY(cf_process_pool_new(NULL, &pool));
    cf_future *futures[P_RANGES];
    double t0 = now_seconds();
    for (uintptr_t i = 0; i < P_RANGES; i++) {
        TRY(cf_submit(pool, count_primes_in_worker, (void *)i, &futures[i]));
    }
    cf_future *crashed = NULL;
    TRY(cf_submit(pool, crash, NULL, &crashed));
    uintptr_t total = 0;
    for (int i = 0; i < P_RANGES; i++) {
        void *r = NULL;
        AWAIT(cf_future_result(futures[i], patience(), &r), "a prime count in a worker process");
        total += (uintptr_t)r;
        cf_future_release(futures[i]);
    }
    double t1 = now_seconds();
    int code = 0;
    const char *message = NULL;
    cf_status st = cf_future_exception(crashed, patience(), &code, &message);
    printf("  %" PRIuPTR " primes in %.3f s on %zu worker processes\n", total, t1 - t0,
           cf_executor_worker_count(pool));
    printf("  the crashing task: %s: %s\n", cf_status_name(st), message ? message : "(none)");
    /* The pool replaced the dead worker and goes on. */
    cf_future *after = NULL;
    void *r = NULL;
    TRY(cf_submit(pool, count_primes_in_worker, (void *)0, &after));
    AWAIT(cf_future_result(after, patience(), &r), "the task after the crash");
    printf("  and a task after the crash: %" PRIuPTR " primes in range 0\n", (uintptr_t)r);
    EXPECT(st == CF_BROKEN && message != NULL && strstr(message, "SIGSEGV") != NULL);
    cf_future_release(after);
    cf_future_release(crashed);
    cf_executor_free(pool); /* waits, and leaves no child process behind */
    return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    uint32_t limit = 10000000;
    if (argc > 1) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(argv[1], &end, 10);
        if (errno != 0 || end == argv[1] || *end != '\0' || v < 2 || v > UINT32_MAX) {
            fprintf(stderr, "usage: %s [LIMIT]   (count the primes below LIMIT, 2..%" PRIu32
                            ")\n", argv[0], UINT32_MAX);
            return 2;
        }
        limit = (uint32_t)v;
    }
    /* Line-buffered even into a pipe or a file: whoever runs `demo | tee log` sees each
     * section as it happens, not everything at the end. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("cfutures %s (header %s)\n\n", cf_version(), CF_VERSION);

    int failed = 0;
    failed |= section_parallel_primes(limit);
    failed |= section_done_callback();
    failed |= section_failing_task();
    failed |= section_promise();
    failed |= section_cancel();
    failed |= section_as_completed(limit);
    failed |= section_map(limit);
    failed |= section_process_pool(limit);

    if (failed) {
        fprintf(stderr, "\ndemo: some section failed\n");
        return 1;
    }
    printf("\ndemo: all sections done\n");
    return 0;
}
