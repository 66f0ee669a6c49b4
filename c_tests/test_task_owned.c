/* test_task_owned.c: tasks that own their data (cf_task, cf_submit_task), byte tasks
 * with a deadline (cf_submit_bytes_task), promises that own their result
 * (cf_future_set_result_owned) and done callbacks that own their userdata
 * (cf_future_add_done_callback_owned).
 *
 * The contract (API.md, Part two, "Tasks described in full"): arg_free is called exactly
 * once as soon as the task is done with arg (after fn(arg) returns, or when the task ends
 * without running: cancelled, cancelled by shutdown with cancel_futures, failed by a
 * broken pool, deadline passed first); result_free exactly once on a successful task's
 * result, when the future's last reference goes (or when a late thread-pool result is
 * discarded), never for a failed, cancelled or not-run task; on submit failure nothing is
 * called. Every path is counted here, on thread pools and process pools (where both
 * functions run in the parent, so the counters are plain parent memory). */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

static atomic_int arg_frees, result_frees, ran, cb_runs, ud_frees;

static void reset(void) {
    atomic_store(&arg_frees, 0);
    atomic_store(&result_frees, 0);
    atomic_store(&ran, 0);
    atomic_store(&cb_runs, 0);
    atomic_store(&ud_frees, 0);
}

/* Thread pools: arg and result are real malloc blocks (valgrind sees a missed free). */
static void free_arg(void *p) {
    CHECK(p != NULL);
    free(p);
    atomic_fetch_add(&arg_frees, 1);
}
static void free_result(void *p) {
    CHECK(p != NULL);
    free(p);
    atomic_fetch_add(&result_frees, 1);
}
static int *new_int(int v) {
    int *p = malloc(sizeof *p);
    CHECK(p != NULL);
    *p = v;
    return p;
}
static void *plus_one(void *arg) {
    atomic_fetch_add(&ran, 1);
    int *r = malloc(sizeof *r);
    CHECK(r != NULL);
    *r = *(int *)arg + 1;
    return r;
}
static void *fails(void *arg) {
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return cf_raise(EINVAL, "no");
}

/* Process pools: pointer-sized integers, counted in the parent. */
static void count_arg(void *p) {
    (void)p;
    atomic_fetch_add(&arg_frees, 1);
}
static void count_result(void *p) {
    CHECK((intptr_t)p >= 1);
    atomic_fetch_add(&result_frees, 1);
}
static void *proc_plus_one(void *arg) { return PX_I2P(PX_P2I(arg) + 1); }

static cf_future *submit(cf_executor *ex, cf_task *t) {
    cf_future *f = NULL;
    CHECK_OK(cf_submit_task(ex, t, &f));
    CHECK(f != NULL);
    return f;
}

static cf_task owned_task(cf_fn fn, void *arg) {
    cf_task t = CF_TASK_INIT;
    t.fn = fn;
    t.arg = arg;
    t.arg_free = free_arg;
    t.result_free = free_result;
    return t;
}

static gate g_block;
static void *block_on_gate(void *arg) {
    (void)arg;
    gate_wait(&g_block);
    return NULL;
}

static cf_executor *thread_pool(size_t n) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = n;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    return ex;
}

enum { N = 40 };

static void thread_ran(void) {
    px_phase("thread: ran");
    reset();
    cf_executor *ex = thread_pool(2);
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        cf_task t = owned_task(plus_one, new_int(i));
        fs[i] = submit(ex, &t);
    }
    for (int i = 0; i < N; i++) {
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[i], CF_FOREVER, &r));
        CHECK(*(int *)r == i + 1);
    }
    /* arg_free ran before each future finished; results are the futures' until released */
    CHECK(atomic_load(&arg_frees) == N);
    CHECK(atomic_load(&result_frees) == 0);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    cf_executor_free(ex);
    CHECK(atomic_load(&result_frees) == N);
    CHECK(atomic_load(&ran) == N);

    /* a failed task: arg freed, result_free never */
    reset();
    ex = thread_pool(1);
    cf_task t = owned_task(fails, new_int(0));
    cf_future *f = submit(ex, &t);
    void *r = NULL;
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_TASK_FAILED);
    CHECK(atomic_load(&arg_frees) == 1);
    cf_future_release(f);
    cf_executor_free(ex);
    CHECK(atomic_load(&result_frees) == 0);

    /* released unread: the result is freed when the worker drops the last reference */
    reset();
    ex = thread_pool(2);
    for (int i = 0; i < N; i++) {
        cf_task t2 = owned_task(plus_one, new_int(i));
        cf_future_release(submit(ex, &t2));
    }
    cf_executor_free(ex);
    CHECK(await_count(&result_frees, N, 10.0));
    CHECK(atomic_load(&arg_frees) == N);
    CHECK(atomic_load(&result_frees) == N);
}

static void thread_cancelled(void) {
    px_phase("thread: cancelled and shutdown");
    reset();
    gate_init(&g_block);
    cf_executor *ex = thread_pool(1);
    cf_future *blocker = NULL;
    CHECK_OK(cf_submit(ex, block_on_gate, NULL, &blocker));
    while (!cf_future_running(blocker)) sleep_s(0.001);
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        cf_task t = owned_task(plus_one, new_int(i));
        fs[i] = submit(ex, &t);
    }
    /* cancel the first half: arg_free runs at once, in this thread */
    for (int i = 0; i < N / 2; i++) {
        CHECK(cf_future_cancel(fs[i]));
        CHECK(atomic_load(&arg_frees) == i + 1);
    }
    /* shutdown with cancel_futures: the rest */
    CHECK_OK(cf_executor_shutdown(ex, false, true));
    CHECK(atomic_load(&arg_frees) == N);
    gate_open(&g_block);
    cf_executor_free(ex);
    for (int i = 0; i < N; i++) {
        CHECK(cf_future_cancelled(fs[i]));
        cf_future_release(fs[i]);
    }
    cf_future_release(blocker);
    CHECK(atomic_load(&ran) == 0);
    CHECK(atomic_load(&result_frees) == 0);
    gate_destroy(&g_block);
}

static void failing_init(void *a) {
    (void)a;
    cf_raise(1, "init failed");
}

static void thread_broken(void) {
    px_phase("thread: broken");
    reset();
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    o.initializer = failing_init;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    int accepted = 0;
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        cf_task t = owned_task(plus_one, new_int(i));
        cf_future *f = NULL;
        cf_status st = cf_submit_task(ex, &t, &f);
        if (st == CF_OK) {
            fs[accepted++] = f;
        } else {
            CHECK_STATUS(st, CF_BROKEN);
            CHECK(f == NULL);
            free(t.arg); /* still ours */
        }
    }
    for (int i = 0; i < accepted; i++) {
        void *r = NULL;
        CHECK_STATUS(cf_future_result(fs[i], CF_FOREVER, &r), CF_BROKEN);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    CHECK(accepted >= 1);
    CHECK(atomic_load(&arg_frees) == accepted);
    CHECK(atomic_load(&result_frees) == 0);
    CHECK(atomic_load(&ran) == 0);
}

static void *late_result(void *arg) {
    atomic_fetch_add(&ran, 1);
    gate_wait(&g_block);
    int *r = new_int(*(int *)arg + 1);
    return r;
}

static void thread_deadlines(void) {
    px_phase("thread: deadlines");
    reset();
    gate_init(&g_block);
    cf_executor *ex = thread_pool(1);
    /* timeout 0: finished at once, never runs */
    cf_task t = owned_task(plus_one, new_int(1));
    t.timeout = 0;
    cf_future *f = submit(ex, &t);
    CHECK(cf_future_done(f));
    void *r = NULL;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_DEADLINE);
    CHECK(atomic_load(&arg_frees) == 1);
    cf_future_release(f);

    /* running past its deadline: the future finishes, the late result is freed */
    t = owned_task(late_result, new_int(5));
    t.timeout = 0.05;
    f = submit(ex, &t);
    /* a task queued behind it whose deadline passes before it can start */
    cf_task q = owned_task(plus_one, new_int(7));
    q.timeout = 0.02;
    cf_future *fq = submit(ex, &q);
    while (cf_future_result(f, 0.1, &r) == CF_TIMEOUT) {
    }
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_DEADLINE);
    CHECK_STATUS(cf_future_result(fq, CF_FOREVER, &r), CF_DEADLINE);
    CHECK(atomic_load(&arg_frees) == 2); /* the queued task's; the running one still has its arg */
    CHECK(atomic_load(&result_frees) == 0);
    gate_open(&g_block);
    CHECK(await_count(&result_frees, 1, 10.0));
    CHECK(await_count(&arg_frees, 3, 10.0));
    cf_future_release(f);
    cf_future_release(fq);
    cf_executor_free(ex);
    CHECK(atomic_load(&ran) == 1);
    CHECK(atomic_load(&result_frees) == 1);
    gate_destroy(&g_block);
}

static void ud_free(void *p) {
    free(p);
    atomic_fetch_add(&ud_frees, 1);
}
static void on_done(cf_future *f, void *ud) {
    (void)f;
    CHECK(ud != NULL);
    /* the userdata is still alive while the callback runs */
    CHECK(*(int *)ud == 42);
    atomic_fetch_add(&cb_runs, 1);
}

static void promises(void) {
    px_phase("promises");
    reset();
    cf_future *p = NULL;
    CHECK_OK(cf_future_new(&p));
    CHECK_OK(cf_future_set_result_owned(p, new_int(3), free_result));
    void *r = NULL;
    CHECK_OK(cf_future_result(p, 0, &r));
    CHECK(*(int *)r == 3);
    CHECK(atomic_load(&result_frees) == 0);
    /* already done: freed at once */
    CHECK_STATUS(cf_future_set_result_owned(p, new_int(4), free_result), CF_INVALID_STATE);
    CHECK(atomic_load(&result_frees) == 1);
    cf_future *extra = cf_future_retain(p);
    cf_future_release(p);
    CHECK(atomic_load(&result_frees) == 1);
    cf_future_release(extra);
    CHECK(atomic_load(&result_frees) == 2);
    /* NULL: nothing called */
    int keep = 0;
    CHECK_STATUS(cf_future_set_result_owned(NULL, &keep, free_result), CF_INVALID_ARGUMENT);
    CHECK(atomic_load(&result_frees) == 2);

    /* owned callbacks: on a promise never completed, freed with it, never run */
    CHECK_OK(cf_future_new(&p));
    CHECK_OK(cf_future_add_done_callback_owned(p, on_done, new_int(42), ud_free));
    CHECK_OK(cf_future_add_done_callback_owned(p, on_done, new_int(42), ud_free));
    cf_future_release(p);
    CHECK(atomic_load(&cb_runs) == 0);
    CHECK(atomic_load(&ud_frees) == 2);
    /* completed: run, then freed */
    CHECK_OK(cf_future_new(&p));
    CHECK_OK(cf_future_add_done_callback_owned(p, on_done, new_int(42), ud_free));
    CHECK_OK(cf_future_set_result(p, NULL));
    CHECK(atomic_load(&cb_runs) == 1);
    CHECK(atomic_load(&ud_frees) == 3);
    /* on a done future: run at once, then freed */
    CHECK_OK(cf_future_add_done_callback_owned(p, on_done, new_int(42), ud_free));
    CHECK(atomic_load(&cb_runs) == 2);
    CHECK(atomic_load(&ud_frees) == 4);
    /* cancelled: run by the cancel, then freed */
    cf_future *c = NULL;
    CHECK_OK(cf_future_new(&c));
    CHECK_OK(cf_future_add_done_callback_owned(c, on_done, new_int(42), ud_free));
    CHECK(cf_future_cancel(c));
    CHECK(atomic_load(&cb_runs) == 3);
    CHECK(atomic_load(&ud_frees) == 5);
    /* bad input: nothing called */
    CHECK_STATUS(cf_future_add_done_callback_owned(NULL, on_done, &keep, ud_free),
                 CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_future_add_done_callback_owned(p, NULL, &keep, ud_free), CF_INVALID_ARGUMENT);
    CHECK(atomic_load(&ud_frees) == 5);
    cf_future_release(p);
    cf_future_release(c);
    CHECK(atomic_load(&ud_frees) == 5);
}

static void *bytes_upper(const void *in, size_t len, size_t *out_len) {
    char *o = malloc(len ? len : 1);
    CHECK(o != NULL);
    for (size_t i = 0; i < len; i++) o[i] = (char)(((const char *)in)[i] - 32);
    *out_len = len;
    return o;
}

static void bad_input_and_bytes(void) {
    px_phase("bad input, submit failure, bytes");
    reset();
    cf_executor *ex = thread_pool(1);
    cf_future *f = NULL;
    cf_task t = owned_task(plus_one, new_int(0));
    t.timeout = NAN;
    CHECK_STATUS(cf_submit_task(ex, &t, &f), CF_INVALID_ARGUMENT);
    t.timeout = CF_FOREVER;
    t.fn = NULL;
    CHECK_STATUS(cf_submit_task(ex, &t, &f), CF_INVALID_ARGUMENT);
    t.fn = plus_one;
    CHECK_STATUS(cf_submit_task(NULL, &t, &f), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit_task(ex, NULL, &f), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit_task(ex, &t, NULL), CF_INVALID_ARGUMENT);
    CHECK(f == NULL);

    /* byte tasks with a deadline */
    CHECK_OK(cf_submit_bytes_task(ex, bytes_upper, "abc", 3, 10.0, &f));
    cf_bytes b;
    CHECK_OK(cf_future_result_bytes(f, CF_FOREVER, &b));
    CHECK(b.len == 3 && memcmp(b.data, "ABC", 3) == 0);
    cf_future_release(f);
    CHECK_OK(cf_submit_bytes_task(ex, bytes_upper, "abc", 3, 0, &f));
    CHECK_STATUS(cf_future_result_bytes(f, 0, &b), CF_DEADLINE);
    cf_future_release(f);
    f = NULL;
    CHECK_STATUS(cf_submit_bytes_task(ex, bytes_upper, NULL, 3, 1, &f), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit_bytes_task(ex, bytes_upper, "a", 1, NAN, &f), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_submit_bytes_task(ex, NULL, "a", 1, 1, &f), CF_INVALID_ARGUMENT);
    CHECK(f == NULL);

    /* after shutdown: nothing is called, arg is still ours */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    t.timeout = 5;
    CHECK_STATUS(cf_submit_task(ex, &t, &f), CF_SHUTDOWN);
    t.timeout = 0;
    CHECK_STATUS(cf_submit_task(ex, &t, &f), CF_SHUTDOWN);
    CHECK(f == NULL);
    CHECK(atomic_load(&arg_frees) == 0);
    free(t.arg);
    cf_executor_free(ex);
    CHECK(atomic_load(&arg_frees) == 0);
    CHECK(atomic_load(&result_frees) == 0);
}

static cf_task proc_task(cf_fn fn, intptr_t arg) {
    cf_task t = CF_TASK_INIT;
    t.fn = fn;
    t.arg = PX_I2P(arg);
    t.arg_free = count_arg;
    t.result_free = count_result;
    return t;
}

static void process_pools(px_gate *g) {
    px_phase("process: ran, released unread");
    reset();
    cf_executor *ex = px_pool(2, 0);
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        cf_task t = proc_task(proc_plus_one, i);
        fs[i] = submit(ex, &t);
    }
    for (int i = 0; i < N; i++) CHECK(px_result(fs[i]) == i + 1);
    CHECK(atomic_load(&arg_frees) == N);
    CHECK(atomic_load(&result_frees) == 0);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    CHECK(atomic_load(&result_frees) == N);
    for (int i = 0; i < N; i++) {
        cf_task t = proc_task(proc_plus_one, i);
        cf_future_release(submit(ex, &t));
    }
    cf_executor_free(ex);
    CHECK(await_count(&result_frees, 2 * N, 10.0));
    CHECK(atomic_load(&arg_frees) == 2 * N);

    px_phase("process: cancelled, shutdown, deadline before start");
    reset();
    ex = px_pool(1, 0);
    cf_future *blocker = px_submit(ex, px_gate_task, g);
    CHECK(px_wait_ge(&g->started, 1, PX_LONG));
    int cancelled = 0;
    for (int i = 0; i < N; i++) {
        cf_task t = proc_task(proc_plus_one, i);
        if (i >= N - 5) t.timeout = 0.01; /* pass while the worker is held */
        fs[i] = submit(ex, &t);
    }
    for (int i = 0; i < N / 2; i++) {
        int before = atomic_load(&arg_frees);
        if (cf_future_cancel(fs[i])) {
            cancelled++;
            CHECK(atomic_load(&arg_frees) == before + 1);
        }
    }
    CHECK(cancelled >= 1); /* those not sent ahead to the held worker */
    void *r = NULL;
    for (int i = N - 5; i < N; i++) CHECK_STATUS(cf_future_result(fs[i], PX_LONG, &r), CF_DEADLINE);
    CHECK_OK(cf_executor_shutdown(ex, false, true));
    px_add(&g->open, 1);
    cf_executor_free(ex);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        CHECK(cf_future_done(fs[i]));
        if (cf_future_result(fs[i], 0, &r) == CF_OK) ok++;
    }
    CHECK(atomic_load(&arg_frees) == N);
    CHECK(atomic_load(&result_frees) == 0);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    CHECK(atomic_load(&result_frees) == ok);
    cf_future_release(blocker);

    px_phase("process: broken");
    reset();
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    o.initializer = failing_init;
    CHECK_OK(cf_process_pool_new(&o, &ex));
    int accepted = 0;
    for (int i = 0; i < N; i++) {
        cf_task t = proc_task(proc_plus_one, i);
        cf_future *f = NULL;
        cf_status st = cf_submit_task(ex, &t, &f);
        if (st == CF_OK) {
            fs[accepted++] = f;
        } else {
            CHECK_STATUS(st, CF_BROKEN);
        }
    }
    for (int i = 0; i < accepted; i++) {
        CHECK_STATUS(cf_future_result(fs[i], PX_LONG, &r), CF_BROKEN);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    CHECK(accepted >= 1);
    CHECK(atomic_load(&arg_frees) == accepted);
    CHECK(atomic_load(&result_frees) == 0);
}

int main(void) {
    px_watchdog(120);
    px_no_core_dumps();
    px_gate *g = px_shm_new(sizeof(px_gate));
    process_pools(g); /* first: pools fork while this process has no other threads */
    thread_ran();
    thread_cancelled();
    thread_broken();
    thread_deadlines();
    promises();
    bad_input_and_bytes();
    px_shm_free(g, sizeof(px_gate));
    printf("test_task_owned: ok\n");
    return 0;
}
