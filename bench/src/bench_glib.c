/* GLib anchor: GThreadPool (exclusive, max_threads = pool size). GThreadPool has no
 * futures: as its users do, each task pushes its result (or its index) to a
 * GAsyncQueue that the submitter pops. Pointer 0 cannot be pushed, so values are
 * offset by one. `bench_glib WORKLOAD N`. */
#include <glib.h>
#include <pthread.h>
#include <semaphore.h>

#include "common.h"

static GThreadPool *new_pool(GFunc fn, gpointer user, int threads) {
    GError *err = NULL;
    GThreadPool *p = g_thread_pool_new(fn, user, threads, TRUE, &err);
    if (!p) BENCH_FAIL("g_thread_pool_new: %s", err ? err->message : "?");
    return p;
}

static void push(GThreadPool *p, gpointer data) {
    GError *err = NULL;
    if (!g_thread_pool_push(p, data, &err)) BENCH_FAIL("push: %s", err->message);
}

/* Task for W1, W2, W6: result = its value, pushed back on the queue. */
static void echo_task(gpointer data, gpointer user) { g_async_queue_push((GAsyncQueue *)user, data); }

static void warm_up(GThreadPool *p, GAsyncQueue *q, int tasks) {
    for (int i = 0; i < tasks; i++) push(p, GSIZE_TO_POINTER(i + 1));
    for (int i = 0; i < tasks; i++) g_async_queue_pop(q);
}

static void w1(long n) {
    GAsyncQueue *q = g_async_queue_new();
    GThreadPool *p = new_pool(echo_task, q, bench_threads());
    warm_up(p, q, 64);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) push(p, GSIZE_TO_POINTER(i + 1));
    for (long i = 0; i < n; i++) sum += GPOINTER_TO_SIZE(g_async_queue_pop(q)) - 1;
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    g_thread_pool_free(p, FALSE, TRUE);
    g_async_queue_unref(q);
    bench_result(n / t, "tasks/s", n);
}

static void w2(long n) {
    GAsyncQueue *q = g_async_queue_new();
    GThreadPool *p = new_pool(echo_task, q, bench_threads());
    warm_up(p, q, 16);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        push(p, GSIZE_TO_POINTER(i + 1));
        sum += GPOINTER_TO_SIZE(g_async_queue_pop(q)) - 1;
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_upto(n));
    g_thread_pool_free(p, FALSE, TRUE);
    g_async_queue_unref(q);
    bench_result(t / n * 1e6, "us/roundtrip", n);
}

/* W3: one pool task per chunk, writing into the output array; each pushes its chunk
 * number when done; the submitter pops one per chunk, then reads in order. */
static uint64_t *w3_in, *w3_out;
static long w3_n, w3_chunk;
static void w3_task(gpointer data, gpointer user) {
    long c = (long)GPOINTER_TO_SIZE(data) - 1;
    long lo = c * w3_chunk, hi = lo + w3_chunk < w3_n ? lo + w3_chunk : w3_n;
    for (long i = lo; i < hi; i++) w3_out[i] = w3_in[i] * w3_in[i];
    g_async_queue_push((GAsyncQueue *)user, data);
}
static void w3(long n) {
    GAsyncQueue *q = g_async_queue_new();
    GAsyncQueue *wq = g_async_queue_new();
    GThreadPool *wp = new_pool(echo_task, wq, bench_threads());
    warm_up(wp, wq, 64);
    g_thread_pool_free(wp, FALSE, TRUE);
    w3_n = n;
    w3_chunk = bench_chunk();
    w3_in = malloc(n * sizeof *w3_in);
    for (long i = 0; i < n; i++) w3_in[i] = i;
    GThreadPool *p = new_pool(w3_task, q, bench_threads());
    double t0 = now_s();
    w3_out = malloc(n * sizeof *w3_out);
    long chunks = (n + w3_chunk - 1) / w3_chunk;
    for (long c = 0; c < chunks; c++) push(p, GSIZE_TO_POINTER(c + 1));
    for (long c = 0; c < chunks; c++) g_async_queue_pop(q);
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
        if (w3_out[i] != (uint64_t)i * i) BENCH_FAIL("item %ld wrong", i);
        sum += w3_out[i];
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_sq_upto(n));
    g_thread_pool_free(p, FALSE, TRUE);
    bench_result(n / t, "items/s", n);
}

/* W4: results arrive on the GAsyncQueue in completion order. */
static void w4_task(gpointer data, gpointer user) {
    w4_work(GPOINTER_TO_SIZE(data) - 1);
    g_async_queue_push((GAsyncQueue *)user, data);
}
static void w4(long n) {
    GAsyncQueue *q = g_async_queue_new();
    GThreadPool *p = new_pool(w4_task, q, bench_threads());
    warm_up(p, q, 64);
    uint64_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) push(p, GSIZE_TO_POINTER(i + 1));
    for (long i = 0; i < n; i++) sum += GPOINTER_TO_SIZE(g_async_queue_pop(q)) - 1;
    double t = now_s() - t0;
    CHECK_EQ_U64(sum, sum_w4(n));
    g_thread_pool_free(p, FALSE, TRUE);
    bench_result(n / t, "tasks/s", n);
}

/* W5: no done callbacks in GThreadPool; the task's last statement increments the
 * counter (what its users write). */
static gint w5_counter;
static long w5_target;
static sem_t w5_done;
static void w5_task(gpointer data, gpointer user) {
    (void)data;
    (void)user;
    if (g_atomic_int_add(&w5_counter, 1) + 1 == w5_target) sem_post(&w5_done);
}
static void w5(long n) {
    GThreadPool *p = new_pool(w5_task, NULL, bench_threads());
    sem_init(&w5_done, 0, 0);
    w5_target = 64;
    for (long i = 0; i < 64; i++) push(p, GSIZE_TO_POINTER(i + 1));
    sem_wait(&w5_done);
    g_atomic_int_set(&w5_counter, 0);
    w5_target = n;
    double t0 = now_s();
    for (long i = 0; i < n; i++) push(p, GSIZE_TO_POINTER(i + 1));
    while (sem_wait(&w5_done) != 0) {
    }
    double t = now_s() - t0;
    CHECK_EQ_U64(g_atomic_int_get(&w5_counter), n);
    g_thread_pool_free(p, FALSE, TRUE);
    bench_result(n / t, "tasks/s", n);
}

/* W6: one shared pool, four submitters, each with its own result queue; the task's
 * data carries the submitter number in its high bits. */
#define W6_THREADS 4
static GAsyncQueue *w6_q[W6_THREADS];
static void w6_task(gpointer data, gpointer user) {
    (void)user;
    g_async_queue_push(w6_q[GPOINTER_TO_SIZE(data) >> 40], data);
}
typedef struct {
    GThreadPool *p;
    long n;
    int k;
    uint64_t sum;
    pthread_barrier_t *start;
} w6_arg;
static void *w6_thread(void *v) {
    w6_arg *a = v;
    pthread_barrier_wait(a->start);
    for (long i = 0; i < a->n; i++) push(a->p, GSIZE_TO_POINTER(((gsize)a->k << 40) | (i + 1)));
    for (long i = 0; i < a->n; i++)
        a->sum += (GPOINTER_TO_SIZE(g_async_queue_pop(w6_q[a->k])) & ((1ull << 40) - 1)) - 1;
    return NULL;
}
static void w6(long n) {
    for (int k = 0; k < W6_THREADS; k++) w6_q[k] = g_async_queue_new();
    GThreadPool *p = new_pool(w6_task, NULL, bench_threads());
    for (int i = 0; i < 64; i++) push(p, GSIZE_TO_POINTER(i + 1));
    for (int i = 0; i < 64; i++) g_async_queue_pop(w6_q[0]);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, W6_THREADS + 1);
    w6_arg args[W6_THREADS];
    pthread_t th[W6_THREADS];
    for (int k = 0; k < W6_THREADS; k++) {
        args[k] = (w6_arg){p, n / W6_THREADS, k, 0, &start};
        pthread_create(&th[k], NULL, w6_thread, &args[k]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (int k = 0; k < W6_THREADS; k++) pthread_join(th[k], NULL);
    double t = now_s() - t0;
    for (int k = 0; k < W6_THREADS; k++) CHECK_EQ_U64(args[k].sum, sum_upto(n / W6_THREADS));
    g_thread_pool_free(p, FALSE, TRUE);
    bench_result((double)(n / W6_THREADS * W6_THREADS) / t, "tasks/s", n);
}

/* W7: a pool of one thread blocked on a gate, n items queued. */
static sem_t gate, gate_started;
static gint w7_ran;
static void w7_task(gpointer data, gpointer user) {
    (void)user;
    if (GPOINTER_TO_SIZE(data) == 1) {
        sem_post(&gate_started);
        while (sem_wait(&gate) != 0) {
        }
    }
    g_atomic_int_inc(&w7_ran);
}
static void w7(long n) {
    GThreadPool *p = new_pool(w7_task, NULL, 1);
    sem_init(&gate, 0, 0);
    sem_init(&gate_started, 0, 0);
    push(p, GSIZE_TO_POINTER(1));
    while (sem_wait(&gate_started) != 0) {
    }
    long rss0 = rss_bytes();
    for (long i = 0; i < n; i++) push(p, GSIZE_TO_POINTER(2));
    long rss1 = rss_bytes();
    CHECK_EQ_U64(g_thread_pool_unprocessed(p), n);
    sem_post(&gate);
    g_thread_pool_free(p, FALSE, TRUE);
    CHECK_EQ_U64(g_atomic_int_get(&w7_ran), n + 1);
    bench_result((double)(rss1 - rss0) / n, "bytes/future", n);
}

static rendezvous_t rv;
static void w8_task(gpointer data, gpointer user) {
    (void)data;
    g_async_queue_push((GAsyncQueue *)user, GSIZE_TO_POINTER(1 + rendezvous_wait(&rv)));
}
static void w8(long seconds) {
    int workers = bench_idle_workers();
    GAsyncQueue *q = g_async_queue_new();
    GThreadPool *p = new_pool(w8_task, q, workers);
    rendezvous_init(&rv, workers, 20.0);
    for (int i = 0; i < workers; i++) push(p, GSIZE_TO_POINTER(1));
    long ok = 0;
    for (int i = 0; i < workers; i++) ok += GPOINTER_TO_SIZE(g_async_queue_pop(q)) - 1;
    CHECK_EQ_U64(ok, workers);
    CHECK_EQ_U64(g_thread_pool_get_num_threads(p), workers);
    double ms = idle_cpu_ms((double)seconds);
    CHECK_EQ_U64(g_thread_pool_get_num_threads(p), workers);
    g_thread_pool_free(p, FALSE, TRUE);
    bench_result(ms, "ms-cpu", seconds);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = "glib";
    bench_workload = argv[1];
    long n = strtol(argv[2], NULL, 10);
    const char *w = argv[1];
    if (!strcmp(w, "W1")) w1(n);
    else if (!strcmp(w, "W2")) w2(n);
    else if (!strcmp(w, "W3")) w3(n);
    else if (!strcmp(w, "W4")) w4(n);
    else if (!strcmp(w, "W5")) w5(n);
    else if (!strcmp(w, "W6")) w6(n);
    else if (!strcmp(w, "W7")) w7(n);
    else if (!strcmp(w, "W8")) w8(n);
    else bench_na("no process pool");
    return 0;
}
