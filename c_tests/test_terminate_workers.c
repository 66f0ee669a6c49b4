/* test_terminate_workers.c: cf_executor_terminate_workers (SIGTERM) and
 * cf_executor_kill_workers (SIGKILL), Python 3.14's terminate_workers()/kill_workers().
 *
 * The contract (API.md, Part two, "Stopping a process pool's workers"): process pools
 * only (a thread pool or NULL: CF_INVALID_ARGUMENT); shuts the executor down (a later
 * submit is CF_SHUTDOWN); cancels every task not started (callbacks run, arg_free too);
 * signals every live worker and returns once every worker is reaped; the futures of the
 * tasks that were running (also those sent ahead to a worker) finish with CF_BROKEN and
 * a message naming the signal; nothing pending, no zombie, no process left after
 * cf_executor_free; works after cf_executor_shutdown without wait; a second call is
 * CF_OK and does nothing more. A worker still in its initializer does not make it hang.
 *
 * Orders are made deterministic with gates in shared memory, not sleeps. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_proc.h"

enum { N = 12 };

typedef struct shared {
    px_gate a, b;     /* first and second holds of the workers */
    atomic_int ran[N];
    atomic_int init_started;
} shared;

static shared *sh;
static atomic_int arg_frees, callbacks;

static void count_arg(void *p) {
    (void)p;
    atomic_fetch_add(&arg_frees, 1);
}
static void count_callback(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    atomic_fetch_add(&callbacks, 1);
}

static void *counted(void *arg) {
    px_add(&sh->ran[PX_P2I(arg)], 1);
    return arg;
}

static cf_future *submit_counted(cf_executor *ex, int i) {
    cf_task t = CF_TASK_INIT;
    t.fn = counted;
    t.arg = PX_I2P(i);
    t.arg_free = count_arg;
    cf_future *f = NULL;
    CHECK_OK(cf_submit_task(ex, &t, &f));
    CHECK_OK(cf_future_add_done_callback(f, count_callback, NULL));
    return f;
}

static void check_broken_naming(cf_future *f, const char *sig) {
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_BROKEN);
    CHECK(msg != NULL);
    PX_CHECK_CONTAINS(msg, sig);
}

/* Number of futures in fs that are running now, once that number has held still for a
 * while (the proxies are all blocked on held workers then). */
static int settled_running(cf_future **fs, int n) {
    int last = -1, same = 0;
    for (int k = 0; k < 2000 && same < 5; k++) {
        int r = 0;
        for (int i = 0; i < n; i++) r += cf_future_running(fs[i]);
        same = r == last ? same + 1 : 0;
        last = r;
        sleep_s(0.01);
    }
    return last;
}

static void refused(void) {
    px_phase("refused: NULL and thread pools");
    CHECK_STATUS(cf_executor_terminate_workers(NULL), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_executor_kill_workers(NULL), CF_INVALID_ARGUMENT);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    CHECK_OK(cf_thread_pool_new(&o, &ex));
    CHECK_STATUS(cf_executor_terminate_workers(ex), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_executor_kill_workers(ex), CF_INVALID_ARGUMENT);
    /* the thread pool goes on */
    cf_future *f = px_submit(ex, px_task_ident, PX_I2P(7));
    CHECK(px_result(f) == 7);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* One worker held twice: when the first hold ends, its proxy takes the second one and
 * sends tasks ahead behind it (its only worker is busy, no other may start); the rest
 * stay queued. Then the signal. (One worker keeps it deterministic: with two, the
 * second would run some of the tasks at once.) */
static void stop_running_and_queued(int sig) {
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGKILL";
    px_phase(sig == SIGTERM ? "terminate: running, sent ahead, queued"
                            : "kill: running, sent ahead, queued");
    memset(sh, 0, sizeof *sh);
    atomic_store(&arg_frees, 0);
    atomic_store(&callbacks, 0);
    int fds_before = px_count_fds();
    cf_executor *ex = px_pool(1, 0);
    cf_future *held, *held2, *fs[N];
    held = px_submit(ex, px_gate_task, &sh->a);
    CHECK(px_wait_ge(&sh->a.started, 1, PX_LONG));
    held2 = px_submit(ex, px_gate_task, &sh->b);
    for (int i = 0; i < N; i++) fs[i] = submit_counted(ex, i);
    px_add(&sh->a.open, 1);
    CHECK(px_result(held) > 0);
    CHECK(px_wait_ge(&sh->b.started, 1, PX_LONG));
    int running = settled_running(fs, N);
    CHECK(running >= 1 && running < N); /* some sent ahead, some queued */
    bool was_running[N];
    for (int i = 0; i < N; i++) was_running[i] = cf_future_running(fs[i]);
    double t0 = now_s();
    cf_status st = sig == SIGTERM ? cf_executor_terminate_workers(ex)
                                  : cf_executor_kill_workers(ex);
    CHECK_OK(st);
    CHECK(now_s() - t0 < PX_LONG);
    /* returned once every worker is reaped: nothing pending, nothing running */
    CHECK(cf_executor_worker_count(ex) == 0);
    CHECK(cf_future_done(held2));
    check_broken_naming(held2, name);
    for (int i = 0; i < N; i++) {
        CHECK(cf_future_done(fs[i]));
        CHECK(atomic_load(&sh->ran[i]) == 0);
        if (was_running[i]) {
            check_broken_naming(fs[i], name);
        } else {
            CHECK(cf_future_cancelled(fs[i]));
        }
    }
    CHECK(atomic_load(&callbacks) == N);
    CHECK(atomic_load(&arg_frees) == N); /* each exactly once */
    /* later submits are refused; a second call does nothing more */
    cf_future *late = NULL;
    CHECK_STATUS(cf_submit(ex, px_task_ident, NULL, &late), CF_SHUTDOWN);
    CHECK_OK(cf_executor_terminate_workers(ex));
    CHECK_OK(cf_executor_kill_workers(ex));
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    cf_executor_free(ex);
    CHECK(atomic_load(&callbacks) == N);
    CHECK(atomic_load(&arg_frees) == N);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    cf_future_release(held);
    cf_future_release(held2);
    PX_CHECK_NO_CHILDREN();
    CHECK(px_count_fds() == fds_before);
}

/* After cf_executor_shutdown without wait, the running task is still signalled and the
 * queue (not cancelled by that shutdown) is cancelled. */
static void after_shutdown_nowait(void) {
    px_phase("kill after shutdown without wait");
    memset(sh, 0, sizeof *sh);
    atomic_store(&arg_frees, 0);
    atomic_store(&callbacks, 0);
    cf_executor *ex = px_pool(1, 0);
    cf_future *held = px_submit(ex, px_gate_task, &sh->a);
    CHECK(px_wait_ge(&sh->a.started, 1, PX_LONG));
    enum { Q = 3 };
    cf_future *fs[Q];
    for (int i = 0; i < Q; i++) fs[i] = submit_counted(ex, i);
    CHECK_OK(cf_executor_shutdown(ex, false, false));
    CHECK_OK(cf_executor_kill_workers(ex));
    CHECK(cf_future_done(held));
    check_broken_naming(held, "SIGKILL");
    for (int i = 0; i < Q; i++) CHECK(cf_future_cancelled(fs[i]));
    CHECK(atomic_load(&callbacks) == Q);
    CHECK(atomic_load(&arg_frees) == Q);
    cf_executor_free(ex);
    for (int i = 0; i < Q; i++) cf_future_release(fs[i]);
    cf_future_release(held);
    PX_CHECK_NO_CHILDREN();
}

/* An initializer that blocks until the test ends it (or 60 s). */
static void slow_init(void *arg) {
    (void)arg;
    px_add(&sh->init_started, 1);
    double end = now_s() + PX_TASK_LIMIT;
    while (now_s() < end) sleep_s(0.01);
}

/* A worker still in its initializer: no hang, the pool is not broken (CF_SHUTDOWN). */
static void during_initializer(void) {
    px_phase("terminate while a worker runs its initializer");
    memset(sh, 0, sizeof *sh);
    atomic_store(&arg_frees, 0);
    atomic_store(&callbacks, 0);
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    o.initializer = slow_init;
    cf_executor *ex = NULL;
    CHECK_OK(cf_process_pool_new(&o, &ex));
    cf_future *f = submit_counted(ex, 0);
    CHECK(px_wait_ge(&sh->init_started, 1, PX_LONG));
    double t0 = now_s();
    CHECK_OK(cf_executor_terminate_workers(ex));
    CHECK(now_s() - t0 < PX_LONG);
    CHECK(cf_future_done(f));
    CHECK(cf_future_cancelled(f));
    CHECK(atomic_load(&arg_frees) == 1);
    cf_future *late = NULL;
    CHECK_STATUS(cf_submit(ex, px_task_ident, NULL, &late), CF_SHUTDOWN);
    CHECK(cf_executor_broken_reason(ex) == NULL);
    cf_executor_free(ex);
    cf_future_release(f);
    PX_CHECK_NO_CHILDREN();
}

/* The stop racing worker replacement: with max_tasks_per_child 1 every task needs a new
 * worker, so a proxy is often starting one when the signal comes (the fork server then
 * refuses the start). Whatever a proxy held finishes with CF_BROKEN naming the signal,
 * never with another message. 60 rounds, the stop 0-3 ms after the submits. */
static void stop_racing_replacement(void) {
    px_phase("terminate/kill while workers are being replaced");
    enum { T = 24, ROUNDS = 60 };
    unsigned seed = 7;
    int broken = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int sig = round % 2 ? SIGKILL : SIGTERM;
        cf_executor *ex = px_pool(2, 1);
        cf_future *fs[T];
        for (int i = 0; i < T; i++) fs[i] = px_submit(ex, px_task_ident, PX_I2P(i));
        sleep_s((rand_r(&seed) % 4) * 1e-3);
        CHECK_OK(sig == SIGTERM ? cf_executor_terminate_workers(ex) : cf_executor_kill_workers(ex));
        for (int i = 0; i < T; i++) {
            CHECK(cf_future_done(fs[i]));
            int code = 0;
            const char *msg = NULL;
            cf_status st = cf_future_exception(fs[i], 0, &code, &msg);
            if (st == CF_BROKEN) {
                check_broken_naming(fs[i], sig == SIGTERM ? "SIGTERM" : "SIGKILL");
                broken++;
            } else if (st == CF_OK) {
                CHECK(px_result(fs[i]) == i);
            } else {
                CHECK_STATUS(st, CF_CANCELLED);
            }
            cf_future_release(fs[i]);
        }
        cf_executor_free(ex);
    }
    printf("test_terminate_workers: %d tasks held by proxies at the stop\n", broken);
    PX_CHECK_NO_CHILDREN();
}

int main(void) {
    px_watchdog(120);
    px_no_core_dumps();
    sh = px_shm_new(sizeof(shared));
    stop_running_and_queued(SIGTERM);
    stop_running_and_queued(SIGKILL);
    after_shutdown_nowait();
    during_initializer();
    stop_racing_replacement();
    refused();
    px_shm_free(sh, sizeof(shared));
    printf("test_terminate_workers: ok\n");
    return 0;
}
