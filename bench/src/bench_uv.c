/* libuv anchor: uv_queue_work on libuv's thread pool (UV_THREADPOOL_SIZE = pool size),
 * each task's result handed back by its after-work callback on the loop thread (the
 * main thread, inside uv_run). The uv_work_t requests are the user's per-task handles.
 * `bench_uv WORKLOAD N`. */
#include <pthread.h>
#include <semaphore.h>
#include <uv.h>

#include "common.h"

typedef struct {
    uv_work_t req;
    uint64_t in, out;
} job_t;

typedef struct {
    uint64_t sum;
    long done;
} tally_t;

static void set_pool_size(int n) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d", n);
    setenv("UV_THREADPOOL_SIZE", buf, 1);
}

static void queue(uv_loop_t *loop, job_t *j, uv_work_cb work, uv_after_work_cb after) {
    int rc = uv_queue_work(loop, &j->req, work, after);
    if (rc != 0) BENCH_FAIL("uv_queue_work: %s", uv_strerror(rc));
}

static void echo_work(uv_work_t *r) {
    job_t *j = (job_t *)r;
    j->out = j->in;
}
static void tally_after(uv_work_t *r, int status) {
    if (status != 0) BENCH_FAIL("after-work status %d", status);
    job_t *j = (job_t *)r;
    tally_t *t = r->loop->data;
    t->sum += j->out;
    t->done++;
}

static void warm_up(uv_loop_t *loop, int tasks) {
    job_t *jobs = calloc(tasks, sizeof *jobs);
    tally_t t = {0, 0};
    loop->data = &t;
    for (int i = 0; i < tasks; i++) queue(loop, &jobs[i], echo_work, tally_after);
    uv_run(loop, UV_RUN_DEFAULT);
    free(jobs);
}

static void w1(long n) {
    set_pool_size(bench_threads());
    uv_loop_t *loop = uv_default_loop();
    warm_up(loop, 64);
    job_t *jobs = malloc(n * sizeof *jobs);
    tally_t t = {0, 0};
    loop->data = &t;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        jobs[i].in = i;
        queue(loop, &jobs[i], echo_work, tally_after);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    double dt = now_s() - t0;
    CHECK_EQ_U64(t.done, n);
    CHECK_EQ_U64(t.sum, sum_upto(n));
    free(jobs);
    bench_result(n / dt, "tasks/s", n);
}

static void w2(long n) {
    set_pool_size(bench_threads());
    uv_loop_t *loop = uv_default_loop();
    warm_up(loop, 16);
    job_t job;
    tally_t t = {0, 0};
    loop->data = &t;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        job.in = i;
        queue(loop, &job, echo_work, tally_after);
        uv_run(loop, UV_RUN_DEFAULT); /* returns once the after-work callback ran */
    }
    double dt = now_s() - t0;
    CHECK_EQ_U64(t.done, n);
    CHECK_EQ_U64(t.sum, sum_upto(n));
    bench_result(dt / n * 1e6, "us/roundtrip", n);
}

/* W3: one work request per chunk writing into the output array. */
static uint64_t *w3_in, *w3_out;
static long w3_n, w3_chunk;
static void w3_work(uv_work_t *r) {
    job_t *j = (job_t *)r;
    long lo = (long)j->in * w3_chunk, hi = lo + w3_chunk < w3_n ? lo + w3_chunk : w3_n;
    for (long i = lo; i < hi; i++) w3_out[i] = w3_in[i] * w3_in[i];
}
static void w3(long n) {
    set_pool_size(bench_threads());
    uv_loop_t *loop = uv_default_loop();
    warm_up(loop, 64);
    w3_n = n;
    w3_chunk = bench_chunk();
    w3_in = malloc(n * sizeof *w3_in);
    for (long i = 0; i < n; i++) w3_in[i] = i;
    long chunks = (n + w3_chunk - 1) / w3_chunk;
    job_t *jobs = malloc(chunks * sizeof *jobs);
    tally_t t = {0, 0};
    loop->data = &t;
    double t0 = now_s();
    w3_out = malloc(n * sizeof *w3_out);
    for (long c = 0; c < chunks; c++) {
        jobs[c].in = c;
        queue(loop, &jobs[c], w3_work, tally_after);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
        if (w3_out[i] != (uint64_t)i * i) BENCH_FAIL("item %ld wrong", i);
        sum += w3_out[i];
    }
    double dt = now_s() - t0;
    CHECK_EQ_U64(t.done, chunks);
    CHECK_EQ_U64(sum, sum_sq_upto(n));
    bench_result(n / dt, "items/s", n);
}

/* W4: after-work callbacks run on the loop in completion order. */
static void w4_work_cb(uv_work_t *r) {
    job_t *j = (job_t *)r;
    j->out = w4_work(j->in);
}
static void w4(long n) {
    set_pool_size(bench_threads());
    uv_loop_t *loop = uv_default_loop();
    warm_up(loop, 64);
    job_t *jobs = malloc(n * sizeof *jobs);
    tally_t t = {0, 0};
    loop->data = &t;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        jobs[i].in = i;
        queue(loop, &jobs[i], w4_work_cb, tally_after);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    double dt = now_s() - t0;
    CHECK_EQ_U64(t.done, n);
    CHECK_EQ_U64(t.sum, sum_w4(n));
    free(jobs);
    bench_result(n / dt, "tasks/s", n);
}

/* W5: the after-work callback is the done callback; it increments the counter.
 * uv_run returns when the counter has reached n (no pending requests left). */
static void noop_work(uv_work_t *r) { (void)r; }
static void count_after(uv_work_t *r, int status) {
    (void)status;
    ((tally_t *)r->loop->data)->done++;
}
static void w5(long n) {
    set_pool_size(bench_threads());
    uv_loop_t *loop = uv_default_loop();
    warm_up(loop, 64);
    job_t *jobs = malloc(n * sizeof *jobs);
    tally_t t = {0, 0};
    loop->data = &t;
    double t0 = now_s();
    for (long i = 0; i < n; i++) queue(loop, &jobs[i], noop_work, count_after);
    uv_run(loop, UV_RUN_DEFAULT);
    double dt = now_s() - t0;
    CHECK_EQ_U64(t.done, n);
    free(jobs);
    bench_result(n / dt, "tasks/s", n);
}

/* W6: four submitter threads, each with its own loop, sharing libuv's thread pool. */
#define W6_THREADS 4
typedef struct {
    long n;
    tally_t t;
    pthread_barrier_t *start;
} w6_arg;
static void *w6_thread(void *v) {
    w6_arg *a = v;
    uv_loop_t loop;
    uv_loop_init(&loop);
    loop.data = &a->t;
    job_t *jobs = malloc(a->n * sizeof *jobs);
    pthread_barrier_wait(a->start);
    for (long i = 0; i < a->n; i++) {
        jobs[i].in = i;
        queue(&loop, &jobs[i], echo_work, tally_after);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(jobs);
    return NULL;
}
static void w6(long n) {
    set_pool_size(bench_threads());
    warm_up(uv_default_loop(), 64);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, W6_THREADS + 1);
    w6_arg args[W6_THREADS];
    pthread_t th[W6_THREADS];
    for (int k = 0; k < W6_THREADS; k++) {
        args[k] = (w6_arg){n / W6_THREADS, {0, 0}, &start};
        pthread_create(&th[k], NULL, w6_thread, &args[k]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (int k = 0; k < W6_THREADS; k++) pthread_join(th[k], NULL);
    double dt = now_s() - t0;
    for (int k = 0; k < W6_THREADS; k++) {
        CHECK_EQ_U64(args[k].t.done, n / W6_THREADS);
        CHECK_EQ_U64(args[k].t.sum, sum_upto(n / W6_THREADS));
    }
    bench_result((double)(n / W6_THREADS * W6_THREADS) / dt, "tasks/s", n);
}

/* W7: one pool thread blocked on a gate; n requests queued (the uv_work_t array the
 * user must keep is counted, as the futures array is for cfutures). */
static sem_t gate, gate_started;
static void gate_work(uv_work_t *r) {
    (void)r;
    sem_post(&gate_started);
    while (sem_wait(&gate) != 0) {
    }
}
static void w7(long n) {
    set_pool_size(1);
    uv_loop_t *loop = uv_default_loop();
    warm_up(loop, 4);
    sem_init(&gate, 0, 0);
    sem_init(&gate_started, 0, 0);
    tally_t t = {0, 0};
    loop->data = &t;
    job_t g;
    queue(loop, &g, gate_work, count_after);
    while (sem_wait(&gate_started) != 0) {
    }
    long rss0 = rss_bytes();
    uv_work_t *reqs = malloc(n * sizeof *reqs);
    for (long i = 0; i < n; i++) {
        int rc = uv_queue_work(loop, &reqs[i], noop_work, count_after);
        if (rc != 0) BENCH_FAIL("uv_queue_work: %s", uv_strerror(rc));
    }
    long rss1 = rss_bytes();
    sem_post(&gate);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_EQ_U64(t.done, n + 1);
    free(reqs);
    bench_result((double)(rss1 - rss0) / n, "bytes/future", n);
}

static rendezvous_t rv;
static void rv_work(uv_work_t *r) { ((job_t *)r)->out = rendezvous_wait(&rv); }
static void w8(long seconds) {
    int workers = bench_idle_workers();
    set_pool_size(workers);
    uv_loop_t *loop = uv_default_loop();
    rendezvous_init(&rv, workers, 20.0);
    job_t jobs[1024];
    tally_t t = {0, 0};
    loop->data = &t;
    for (int i = 0; i < workers; i++) queue(loop, &jobs[i], rv_work, tally_after);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_EQ_U64(t.sum, workers);
    double ms = idle_cpu_ms((double)seconds);
    bench_result(ms, "ms-cpu", seconds);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD N\n", argv[0]);
        return 64;
    }
    bench_impl = "libuv";
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
