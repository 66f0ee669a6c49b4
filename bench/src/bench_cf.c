/* cfutures side of the benchmark suite: `bench_cf WORKLOAD N`. See bench/README.md. */
#include <cfutures.h>

#include <pthread.h>
#include <semaphore.h>

#include "common.h"

#define OK(call)                                                                          \
    do {                                                                                  \
        cf_status s_ = (call);                                                            \
        if (s_ != CF_OK) BENCH_FAIL("%s returned %s", #call, cf_status_name(s_));         \
    } while (0)

static void *noop(void *arg) { return arg; }
static void *square(void *arg) {
    uintptr_t x = (uintptr_t)arg;
    return (void *)(x * x);
}
static void *w4_task(void *arg) { return (void *)(uintptr_t)w4_work((uintptr_t)arg); }

static cf_executor *pool_of(size_t workers) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = workers;
    o.name_prefix = "bench";
    cf_executor *ex;
    OK(cf_thread_pool_new(&o, &ex));
    return ex;
}

/* Starts the workers and touches the code paths before timing. */
static void warm_up(cf_executor *ex, int tasks) {
    cf_future *fs[256];
    if (tasks > 256) tasks = 256;
    for (int i = 0; i < tasks; i++) OK(cf_submit(ex, noop, (void *)(uintptr_t)i, &fs[i]));
    for (int i = 0; i < tasks; i++) {
        void *r;
        OK(cf_future_result(fs[i], CF_FOREVER, &r));
        cf_future_release(fs[i]);
    }
}

/* W1: submit n no-ops keeping every future, then collect every result. */
static void w1(long n) {
    cf_executor *ex = pool_of(bench_threads());
    warm_up(ex, 64);
    cf_future **fs = malloc(n * sizeof *fs);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) OK(cf_submit(ex, noop, (void *)(uintptr_t)i, &fs[i]));
    for (long i = 0; i < n; i++) {
        void *r;
        OK(cf_future_result(fs[i], CF_FOREVER, &r));
        sum += (uintptr_t)r;
        cf_future_release(fs[i]);
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    cf_executor_free(ex);
    free(fs);
    bench_result(n / t, "tasks/s", n);
}

/* W2: n round trips of submit one no-op, block on its result. */
static void w2(long n) {
    cf_executor *ex = pool_of(bench_threads());
    warm_up(ex, 16);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        cf_future *f;
        void *r;
        OK(cf_submit(ex, noop, (void *)(uintptr_t)i, &f));
        OK(cf_future_result(f, CF_FOREVER, &r));
        sum += (uintptr_t)r;
        cf_future_release(f);
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    cf_executor_free(ex);
    bench_result(t / n * 1e6, "us/roundtrip", n);
}

/* W3: x*x over n inputs with cf_map_new, chunksize BENCH_CHUNK, results in order, read
 * many at a time with cf_map_next_n (one_by_one: with cf_map_next, workload W3-1). */
static void w3_run(long n, bool one_by_one) {
    cf_executor *ex = pool_of(bench_threads());
    warm_up(ex, 64);
    void **args = malloc(n * sizeof *args);
    enum { BATCH = 4096 };
    void **batch = malloc(BATCH * sizeof *batch);
    for (long i = 0; i < n; i++) args[i] = (void *)(uintptr_t)i;
    double t0 = now_s();
    cf_map *m;
    OK(cf_map_new(ex, square, args, n, bench_chunk(), CF_FOREVER, &m));
    uint64_t sum = 0;
    long i = 0;
    while (i < n) {
        size_t got = 1;
        if (one_by_one) OK(cf_map_next(m, &batch[0], NULL, NULL));
        else OK(cf_map_next_n(m, batch, BATCH, &got, NULL, NULL));
        for (size_t k = 0; k < got; k++, i++) {
            uintptr_t r = (uintptr_t)batch[k];
            if (r != (uintptr_t)i * i) BENCH_FAIL("item %ld out of order", i);
            sum += r;
        }
    }
    void *r;
    cf_status s = cf_map_next(m, &r, NULL, NULL);
    cf_map_free(m);
    double t = now_s() - t0;
    CHECK(s == CF_END);
    CHECK_EQ_U64(sum, sum_sq_upto(n));
    cf_executor_free(ex);
    free(batch);
    free(args);
    bench_result(n / t, "items/s", n);
}
static void w3(long n) { w3_run(n, false); }
static void w3_1(long n) { w3_run(n, true); }

/* W3-lazy: W3 through cf_map_lazy_new, the inputs pulled from a counter by `next`, with
 * buffersize 4 x workers: at most that many chunks submitted ahead of the reader. */
typedef struct w3_feed {
    long i, n;
} w3_feed;
static bool w3_next(void *state, void **item) {
    w3_feed *f = state;
    if (f->i == f->n) return false;
    *item = (void *)(uintptr_t)f->i++;
    return true;
}
static void w3_lazy(long n) {
    int workers = bench_threads();
    cf_executor *ex = pool_of(workers);
    warm_up(ex, 64);
    enum { BATCH = 4096 };
    void **batch = malloc(BATCH * sizeof *batch);
    w3_feed feed = {0, n};
    double t0 = now_s();
    cf_map *m;
    OK(cf_map_lazy_new(ex, square, w3_next, &feed, bench_chunk(), 4 * (size_t)workers,
                       CF_FOREVER, &m));
    uint64_t sum = 0;
    long i = 0;
    while (i < n) {
        size_t got = 0;
        OK(cf_map_next_n(m, batch, BATCH, &got, NULL, NULL));
        for (size_t k = 0; k < got; k++, i++) {
            uintptr_t r = (uintptr_t)batch[k];
            if (r != (uintptr_t)i * i) BENCH_FAIL("item %ld out of order", i);
            sum += r;
        }
    }
    void *r;
    cf_status s = cf_map_next(m, &r, NULL, NULL);
    cf_map_free(m);
    double t = now_s() - t0;
    CHECK(s == CF_END);
    CHECK(feed.i == n);
    CHECK_EQ_U64(sum, sum_sq_upto(n));
    cf_executor_free(ex);
    free(batch);
    bench_result(n / t, "items/s", n);
}

/* W4: n spinning tasks, consumed in completion order with cf_as_completed. */
static void w4(long n) {
    cf_executor *ex = pool_of(bench_threads());
    warm_up(ex, 64);
    cf_future **fs = malloc(n * sizeof *fs);
    double t0 = now_s();
    for (long i = 0; i < n; i++) OK(cf_submit(ex, w4_task, (void *)(uintptr_t)i, &fs[i]));
    cf_as_completed *it;
    OK(cf_as_completed_new(fs, n, CF_FOREVER, &it));
    for (long i = 0; i < n; i++) cf_future_release(fs[i]); /* the iterator holds them */
    uint64_t sum = 0;
    long got = 0;
    cf_future *f;
    cf_status s;
    while ((s = cf_as_completed_next(it, &f)) == CF_OK) {
        void *r;
        OK(cf_future_result(f, 0, &r));
        sum += (uintptr_t)r;
        got++;
    }
    cf_as_completed_free(it);
    double t = now_s() - t0;
    CHECK(s == CF_END);
    CHECK_EQ_U64(got, n);
    CHECK_EQ_U64(sum, sum_w4(n));
    cf_executor_free(ex);
    free(fs);
    bench_result(n / t, "tasks/s", n);
}

/* W5: n tasks with one done callback each that increments a counter. */
static BENCH_ATOMIC(long) w5_counter;
static long w5_target;
static sem_t w5_done;
static void w5_cb(cf_future *f, void *u) {
    (void)f;
    (void)u;
    if (bench_add(&w5_counter, 1) + 1 == w5_target) sem_post(&w5_done);
}
static void w5(long n) {
    cf_executor *ex = pool_of(bench_threads());
    warm_up(ex, 64);
    sem_init(&w5_done, 0, 0);
    w5_target = n;
    bench_store(&w5_counter, 0);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        cf_future *f;
        OK(cf_submit(ex, noop, (void *)(uintptr_t)i, &f));
        OK(cf_future_add_done_callback(f, w5_cb, NULL));
        cf_future_release(f);
    }
    while (sem_wait(&w5_done) != 0) {
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(bench_load(&w5_counter), n);
    cf_executor_free(ex);
    bench_result(n / t, "tasks/s", n);
}

/* W6: four submitter threads, n/4 tasks each, each collecting its own results. */
#define W6_THREADS 4
typedef struct {
    cf_executor *ex;
    long n;
    uint64_t sum;
    pthread_barrier_t *start;
} w6_arg;
static void *w6_thread(void *p) {
    w6_arg *a = p;
    cf_future **fs = malloc(a->n * sizeof *fs);
    pthread_barrier_wait(a->start);
    for (long i = 0; i < a->n; i++) OK(cf_submit(a->ex, noop, (void *)(uintptr_t)i, &fs[i]));
    for (long i = 0; i < a->n; i++) {
        void *r;
        OK(cf_future_result(fs[i], CF_FOREVER, &r));
        a->sum += (uintptr_t)r;
        cf_future_release(fs[i]);
    }
    free(fs);
    return NULL;
}
static void w6(long n) {
    cf_executor *ex = pool_of(bench_threads());
    warm_up(ex, 64);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, W6_THREADS + 1);
    w6_arg args[W6_THREADS];
    pthread_t th[W6_THREADS];
    for (int k = 0; k < W6_THREADS; k++) {
        args[k] = (w6_arg){ex, n / W6_THREADS, 0, &start};
        pthread_create(&th[k], NULL, w6_thread, &args[k]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (int k = 0; k < W6_THREADS; k++) pthread_join(th[k], NULL);
    double t = now_s() - t0;
    for (int k = 0; k < W6_THREADS; k++) CHECK_EQ_U64(args[k].sum, sum_upto(n / W6_THREADS));
    cf_executor_free(ex);
    bench_result((double)(n / W6_THREADS * W6_THREADS) / t, "tasks/s", n);
}

/* W7: RSS per pending future, n queued behind a gate on a pool of one worker. */
static sem_t gate, gate_started;
static void *gate_task(void *arg) {
    sem_post(&gate_started);
    while (sem_wait(&gate) != 0) {
    }
    return arg;
}
static void w7(long n) {
    cf_executor *ex = pool_of(1);
    warm_up(ex, 4);
    sem_init(&gate, 0, 0);
    sem_init(&gate_started, 0, 0);
    cf_future *g;
    OK(cf_submit(ex, gate_task, NULL, &g));
    while (sem_wait(&gate_started) != 0) {
    }
    long rss0 = rss_bytes();
    cf_future **fs = malloc(n * sizeof *fs);
    for (long i = 0; i < n; i++) OK(cf_submit(ex, noop, NULL, &fs[i]));
    long rss1 = rss_bytes();
    long pending = 0;
    for (long i = 0; i < n; i++) pending += cf_future_state(fs[i]) == CF_STATE_PENDING;
    CHECK_EQ_U64(pending, n);
    sem_post(&gate);
    long done = 0;
    for (long i = 0; i < n; i++) {
        OK(cf_future_wait(fs[i], CF_FOREVER));
        done += cf_future_done(fs[i]);
        cf_future_release(fs[i]);
    }
    cf_future_release(g);
    CHECK_EQ_U64(done, n);
    cf_executor_free(ex);
    free(fs);
    bench_result((double)(rss1 - rss0) / n, "bytes/future", n);
}

/* W8: CPU used by an idle pool of 32 workers over N seconds. */
static rendezvous_t rv;
static void *rendezvous_task(void *arg) {
    return rendezvous_wait(&rv) ? arg : cf_raise(1, "rendezvous timed out");
}
static void w8(long seconds) {
    int workers = bench_idle_workers();
    cf_executor *ex = pool_of(workers);
    rendezvous_init(&rv, workers, 20.0);
    cf_future *fs[1024];
    for (int i = 0; i < workers; i++) OK(cf_submit(ex, rendezvous_task, NULL, &fs[i]));
    for (int i = 0; i < workers; i++) {
        void *r;
        OK(cf_future_result(fs[i], CF_FOREVER, &r));
        cf_future_release(fs[i]);
    }
    CHECK_EQ_U64(cf_executor_worker_count(ex), workers);
    double ms = idle_cpu_ms((double)seconds);
    CHECK_EQ_U64(cf_executor_worker_count(ex), workers);
    cf_executor_free(ex);
    bench_result(ms, "ms-cpu", seconds);
}

/* D1: deadline precision. N thread tasks with deadlines spread over 10 ms + i x 50 us
 * (N = 10,000: about half a second) that all overrun them: every task blocks on a gate
 * opened only once every future is done, so two run past their deadlines and the rest
 * pass theirs before they can start. A done callback records when each future finished;
 * its lateness is that time less its deadline (the time just before cf_submit_task plus
 * the timeout). D1-p50 and D1-p99 report the median and the 99th percentile, in ms.
 * D1-idle: the CPU (ms) of a pool of 2 workers, both held, with N tasks pending whose
 * deadlines are an hour away, over 10 s: it should be that of an idle pool (W8). */
static pthread_mutex_t d1_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t d1_cv = PTHREAD_COND_INITIALIZER;
static int d1_is_open;
static void *d1_held(void *arg) {
    pthread_mutex_lock(&d1_mu);
    while (!d1_is_open) pthread_cond_wait(&d1_cv, &d1_mu);
    pthread_mutex_unlock(&d1_mu);
    return arg;
}
static void d1_open(int v) {
    pthread_mutex_lock(&d1_mu);
    d1_is_open = v;
    pthread_cond_broadcast(&d1_cv);
    pthread_mutex_unlock(&d1_mu);
}
static double *d1_done_at;
static void d1_on_done(cf_future *f, void *ud) {
    (void)f;
    d1_done_at[(uintptr_t)ud] = now_s();
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static cf_executor *process_pool(void);
static void d1(const char *which, long n) {
    /* D1-proc-p50/p99: the same on a process pool (bench_threads() workers); a task that starts
     * blocks for ever (the gate is in the parent's memory), so each one running at its
     * deadline is killed with its worker, and the others never start. */
    bool proc = !strncmp(which, "D1-proc-", 8);
    cf_executor *ex = proc ? process_pool() : pool_of(bench_threads());
    warm_up(ex, 64);
    d1_open(0);
    cf_future **fs = malloc(n * sizeof *fs);
    if (!strcmp(which, "D1-idle")) {
        cf_task t = CF_TASK_INIT;
        t.fn = d1_held;
        t.timeout = 3600.0;
        for (long i = 0; i < n; i++) OK(cf_submit_task(ex, &t, &fs[i]));
        double ms = idle_cpu_ms(10.0);
        d1_open(1);
        OK(cf_executor_shutdown(ex, true, true));
        for (long i = 0; i < n; i++) cf_future_release(fs[i]);
        cf_executor_free(ex);
        free(fs);
        bench_result(ms, "ms-cpu", n);
        return;
    }
    double *deadline = malloc(n * sizeof *deadline);
    d1_done_at = malloc(n * sizeof *d1_done_at);
    for (long i = 0; i < n; i++) {
        cf_task t = CF_TASK_INIT;
        t.fn = d1_held;
        t.timeout = 0.010 + 50e-6 * (double)i;
        deadline[i] = now_s() + t.timeout;
        OK(cf_submit_task(ex, &t, &fs[i]));
        OK(cf_future_add_done_callback(fs[i], d1_on_done, (void *)(uintptr_t)i));
    }
    for (long i = 0; i < n; i++) {
        void *r;
        cf_status st = cf_future_result(fs[i], CF_FOREVER, &r);
        if (st != CF_DEADLINE) BENCH_FAIL("D1 future %ld: %s", i, cf_status_name(st));
    }
    d1_open(1);
    double *late = malloc(n * sizeof *late);
    for (long i = 0; i < n; i++) late[i] = (d1_done_at[i] - deadline[i]) * 1e3;
    qsort(late, n, sizeof *late, cmp_double);
    double v = strstr(which, "-p99") ? late[(n * 99) / 100] : late[n / 2];
    for (long i = 0; i < n; i++) cf_future_release(fs[i]);
    cf_executor_free(ex);
    free(fs);
    free(deadline);
    free(d1_done_at);
    free(late);
    bench_result(v, "ms-late", n);
}

/* P1: process pool, byte tasks. */
static void *p1_inc(const void *in, size_t len, size_t *out_len) {
    unsigned char *out = malloc(len ? len : 1);
    bytes_inc(in, out, len);
    *out_len = len;
    return out;
}

static cf_executor *process_pool(void) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = bench_threads();
    o.name_prefix = "benchproc";
    cf_executor *ex;
    OK(cf_process_pool_new(&o, &ex));
    /* warm up: start every worker process */
    unsigned char buf[100];
    fill_input(buf, sizeof buf, 1);
    cf_future *fs[64];
    int k = 4 * bench_threads();
    if (k > 64) k = 64;
    for (int i = 0; i < k; i++) OK(cf_submit_bytes(ex, p1_inc, buf, sizeof buf, &fs[i]));
    for (int i = 0; i < k; i++) {
        cf_bytes b;
        OK(cf_future_result_bytes(fs[i], CF_FOREVER, &b));
        CHECK(b.len == sizeof buf && check_output(b.data, b.len, 1));
        cf_future_release(fs[i]);
    }
    return ex;
}

/* n tasks of `size` bytes in and out with cf_submit_bytes + cf_future_result_bytes;
 * returns seconds. The clock stops once every result is in hand, as bench_py.py's does
 * (`[f.result() for f in fs]`); the results are checked and freed after it. */
static double p1_submit(cf_executor *ex, long n, size_t size) {
    unsigned char *in = malloc(n * size);
    for (long i = 0; i < n; i++) fill_input(in + i * size, size, i);
    cf_future **fs = malloc(n * sizeof *fs);
    cf_bytes *out = malloc(n * sizeof *out);
    double t0 = now_s();
    for (long i = 0; i < n; i++) OK(cf_submit_bytes(ex, p1_inc, in + i * size, size, &fs[i]));
    for (long i = 0; i < n; i++) OK(cf_future_result_bytes(fs[i], CF_FOREVER, &out[i]));
    double t = now_s() - t0;
    for (long i = 0; i < n; i++) {
        if (out[i].len != size || !check_output(out[i].data, size, i)) BENCH_FAIL("bad output %ld", i);
        cf_future_release(fs[i]);
    }
    free(out);
    free(fs);
    free(in);
    return t;
}

/* P1-1MiB-w4: as p1_submit, but with at most `window` tasks in flight: each result is
 * collected and released before the task `window` places later is submitted, as a
 * streaming caller would. Returns seconds. */
static double p1_window(cf_executor *ex, long n, size_t size, long window) {
    unsigned char *in = malloc(n * size);
    for (long i = 0; i < n; i++) fill_input(in + i * size, size, i);
    cf_future **fs = malloc(n * sizeof *fs);
    double t0 = now_s();
    for (long i = 0; i < n + window; i++) {
        long j = i - window; /* the task to collect now */
        if (j >= 0) {
            cf_bytes b;
            OK(cf_future_result_bytes(fs[j], CF_FOREVER, &b));
            if (b.len != size || !check_output(b.data, size, j)) BENCH_FAIL("bad output %ld", j);
            cf_future_release(fs[j]);
        }
        if (i < n) OK(cf_submit_bytes(ex, p1_inc, in + i * size, size, &fs[i]));
    }
    double t = now_s() - t0;
    free(fs);
    free(in);
    return t;
}

static double p1_map(cf_executor *ex, long n, size_t size, size_t chunk) {
    unsigned char *in = malloc(n * size);
    cf_bytes *inputs = malloc(n * sizeof *inputs);
    for (long i = 0; i < n; i++) {
        fill_input(in + i * size, size, i);
        inputs[i] = (cf_bytes){in + i * size, size};
    }
    cf_bytes *out = malloc(n * sizeof *out);
    double t0 = now_s();
    cf_map *m;
    OK(cf_map_bytes_new(ex, p1_inc, inputs, n, chunk, CF_FOREVER, &m));
    for (long i = 0; i < n; i++) OK(cf_map_next_bytes(m, &out[i], NULL, NULL));
    cf_bytes b;
    cf_status s = cf_map_next_bytes(m, &b, NULL, NULL);
    double t = now_s() - t0; /* every result in hand, as for p1_submit */
    CHECK(s == CF_END);
    for (long i = 0; i < n; i++)
        if (out[i].len != size || !check_output(out[i].data, size, i)) BENCH_FAIL("bad output %ld", i);
    cf_map_free(m);
    free(out);
    free(inputs);
    free(in);
    return t;
}

static void p1(const char *which, long n) {
    cf_executor *ex = process_pool();
    if (!strcmp(which, "P1-submit")) {
        double t = p1_submit(ex, n, 100);
        bench_result(n / t, "tasks/s", n);
    } else if (!strcmp(which, "P1-map1")) {
        double t = p1_map(ex, n, 100, 1);
        bench_result(n / t, "tasks/s", n);
    } else if (!strcmp(which, "P1-map100")) {
        double t = p1_map(ex, n, 100, 100);
        bench_result(n / t, "tasks/s", n);
    } else if (!strcmp(which, "P1-1MiB")) {
        double t = p1_submit(ex, n, 1 << 20);
        bench_result((double)n / t, "MiB/s", n); /* n MiB each way in t seconds */
    } else if (!strcmp(which, "P1-1MiB-map4")) {
        double t = p1_map(ex, n, 1 << 20, 4);
        bench_result((double)n / t, "MiB/s", n);
    } else if (!strcmp(which, "P1-1MiB-w4")) {
        double t = p1_window(ex, n, 1 << 20, 4);
        bench_result((double)n / t, "MiB/s", n);
    } else {
        BENCH_FAIL("unknown workload %s", which);
    }
    cf_executor_free(ex);
}

/* W9: a chain of n continuations, each adding 1 to its antecedent's result, on a pool of
 * 2 workers: the first link is a submitted task, each later one is chained with
 * cf_future_then to the one before (released at once), the last one's result read. */
static void *w9_add1(void *arg, cf_future *ante) {
    (void)arg;
    void *r;
    if (cf_future_result(ante, 0.0, &r) != CF_OK) return NULL;
    return (void *)((uintptr_t)r + 1);
}
static void w9(long n) {
    cf_executor *ex = pool_of(2);
    warm_up(ex, 64);
    double t0 = now_s();
    cf_future *prev;
    OK(cf_submit(ex, noop, (void *)(uintptr_t)0, &prev));
    for (long i = 0; i < n; i++) {
        cf_future *next;
        OK(cf_future_then(prev, ex, w9_add1, NULL, &next));
        cf_future_release(prev);
        prev = next;
    }
    void *r;
    OK(cf_future_result(prev, CF_FOREVER, &r));
    cf_future_release(prev);
    double t = now_s() - t0;
    CHECK_EQ_U64((uintptr_t)r, n);
    cf_executor_free(ex);
    bench_result(n / t, "links/s", n);
}

/* W10: fan-in. n no-op tasks submitted and one cf_when(CF_ALL_COMPLETED) over all of
 * them (W10), or n/10 groups of 10 tasks with one cf_when each (W10-g10); the timing
 * covers the submissions, the cf_when calls and waiting for every cf_when future. */
static void w10(long n, long group) {
    cf_executor *ex = pool_of(bench_threads());
    warm_up(ex, 64);
    long groups = n / group;
    cf_future **fs = malloc(n * sizeof *fs);
    cf_future **ws = malloc(groups * sizeof *ws);
    double t0 = now_s();
    for (long g = 0; g < groups; g++) {
        for (long i = g * group; i < (g + 1) * group; i++)
            OK(cf_submit(ex, noop, (void *)(uintptr_t)i, &fs[i]));
        OK(cf_when(fs + g * group, group, CF_ALL_COMPLETED, &ws[g]));
    }
    uint64_t sum = 0;
    for (long g = 0; g < groups; g++) {
        void *r;
        OK(cf_future_result(ws[g], CF_FOREVER, &r));
        if ((uintptr_t)r >= (uintptr_t)group) BENCH_FAIL("cf_when named %zu", (size_t)(uintptr_t)r);
        cf_future_release(ws[g]);
    }
    for (long i = 0; i < n; i++) {
        void *r;
        OK(cf_future_result(fs[i], 0.0, &r));
        sum += (uintptr_t)r;
        cf_future_release(fs[i]);
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    cf_executor_free(ex);
    free(fs);
    free(ws);
    bench_result(n / t, "tasks/s", n);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = "cfutures";
    bench_workload = argv[1];
    long n = strtol(argv[2], NULL, 10);
    CHECK(strcmp(cf_version(), CF_VERSION) == 0);
    const char *w = argv[1];
    if (!strcmp(w, "W1")) w1(n);
    else if (!strcmp(w, "W2")) w2(n);
    else if (!strcmp(w, "W3")) w3(n);
    else if (!strcmp(w, "W3-1")) w3_1(n);
    else if (!strcmp(w, "W3-lazy")) w3_lazy(n);
    else if (!strcmp(w, "W4")) w4(n);
    else if (!strcmp(w, "W5")) w5(n);
    else if (!strcmp(w, "W6")) w6(n);
    else if (!strcmp(w, "W7")) w7(n);
    else if (!strcmp(w, "W8")) w8(n);
    else if (!strncmp(w, "D1-", 3)) d1(w, n);
    else if (!strcmp(w, "W9")) w9(n);
    else if (!strcmp(w, "W10")) w10(n, n);
    else if (!strcmp(w, "W10-g10")) w10(n, 10);
    else if (!strncmp(w, "P1-", 3)) p1(w, n);
    else BENCH_FAIL("unknown workload %s", w);
    return 0;
}
