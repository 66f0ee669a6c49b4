/* cf_mpi_comm_executor under mpirun (2, 3 or 4 ranks; shared memory or TCP): results,
 * cf_raise, map order (eager and lazy, calls and bytes), as_completed, cf_wait with each
 * return_when, callbacks, continuations, deadlines, cancel before send, shutdown with
 * cancel_futures, CF_END on the workers (each executor), bad input. Rank 0 is root of
 * the first executor, the last rank of the second (another root). */
#include "mpi_util.h"

#include <errno.h>
#include <stdatomic.h>

static void *square(void *arg) {
    intptr_t x = P2I(arg);
    return I2P(x * x);
}

static void *which_rank(void *arg) {
    int r = -1;
    (void)arg;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return I2P(r);
}

static void *raiser(void *arg) {
    return cf_raise((int)P2I(arg), "boom from a rank");
}

static void *sleeper(void *arg) {
    sleep_ms((long)P2I(arg));
    return arg;
}

static void *reverse(const void *in, size_t len, size_t *out_len) {
    unsigned char *out = malloc(len ? len : 1);
    const unsigned char *p = in;
    for (size_t i = 0; i < len; i++) {
        out[i] = p[len - 1 - i];
    }
    *out_len = len;
    return out;
}

static atomic_int callbacks;
static void on_done(cf_future *f, void *ud) {
    (void)f;
    (void)ud;
    atomic_fetch_add(&callbacks, 1);
}

static void *plus_one(void *arg, cf_future *ante) {
    void *r = NULL;
    (void)arg;
    if (cf_future_result(ante, 0, &r) != CF_OK) {
        return NULL;
    }
    return I2P(P2I(r) + 1);
}

typedef struct counter {
    intptr_t next, end;
} counter;
static bool next_int(void *state, void **item) {
    counter *c = state;
    if (c->next >= c->end) {
        return false;
    }
    *item = I2P(c->next++);
    return true;
}

static void results(cf_executor *ex, int size) {
    watchdog(60, "results");
    cf_future *fs[64];
    for (intptr_t i = 0; i < 64; i++) {
        CHECK_OK(cf_submit(ex, square, I2P(i), &fs[i]));
    }
    for (intptr_t i = 0; i < 64; i++) {
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[i], 30, &r));
        CHECK(P2I(r) == i * i);
        cf_future_release(fs[i]);
    }
    /* The tasks ran on the other ranks, every one of them in time. */
    int seen[8] = {0};
    for (int round = 0; round < 200; round++) {
        cf_future *g[8];
        for (int i = 0; i < size - 1; i++) {
            CHECK_OK(cf_submit(ex, sleeper, I2P(20), &g[i]));
        }
        cf_future *w;
        CHECK_OK(cf_submit(ex, which_rank, NULL, &w));
        void *r = NULL;
        CHECK_OK(cf_future_result(w, 30, &r));
        CHECK(P2I(r) > 0 && P2I(r) < size);
        seen[P2I(r)] = 1;
        cf_future_release(w);
        for (int i = 0; i < size - 1; i++) {
            CHECK_OK(cf_future_wait(g[i], 30));
            cf_future_release(g[i]);
        }
        int all = 1;
        for (int k = 1; k < size; k++) {
            all &= seen[k];
        }
        if (all) {
            break;
        }
    }
    for (int k = 1; k < size; k++) {
        CHECK(seen[k]);
    }
    CHECK(cf_executor_worker_count(ex) == (size_t)(size - 1));
    /* Bytes: small, medium and 1 MiB. */
    size_t lens[] = {0, 1, 100, 5000, 70000, 1 << 20};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t n = lens[k];
        unsigned char *in = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) {
            in[i] = (unsigned char)(i * 7 + k);
        }
        cf_future *f;
        CHECK_OK(cf_submit_bytes(ex, reverse, in, n, &f));
        cf_bytes b;
        CHECK_OK(cf_future_result_bytes(f, 30, &b));
        CHECK(b.len == n);
        for (size_t i = 0; i < n; i++) {
            CHECK(((const unsigned char *)b.data)[i] == in[n - 1 - i]);
        }
        cf_future_release(f);
        free(in);
    }
}

static void failures(cf_executor *ex) {
    watchdog(60, "cf_raise");
    cf_future *f;
    CHECK_OK(cf_submit(ex, raiser, I2P(42), &f));
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, 30, &code, &msg), CF_TASK_FAILED);
    CHECK(code == 42);
    CHECK(msg && strcmp(msg, "boom from a rank") == 0);
    void *r;
    CHECK_STATUS(cf_future_result(f, 30, &r), CF_TASK_FAILED);
    cf_future_release(f);
}

static void maps(cf_executor *ex) {
    watchdog(60, "map");
    enum { N = 300 };
    void *args[N];
    for (intptr_t i = 0; i < N; i++) {
        args[i] = I2P(i);
    }
    cf_map *m;
    CHECK_OK(cf_map_new(ex, square, args, N, 7, -1, &m));
    for (intptr_t i = 0; i < N; i++) {
        void *r = NULL;
        int code;
        const char *msg;
        CHECK_OK(cf_map_next(m, &r, &code, &msg));
        CHECK(P2I(r) == i * i);
    }
    void *r;
    int code;
    const char *msg;
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_END);
    cf_map_free(m);

    counter c = {0, N};
    CHECK_OK(cf_map_lazy_new(ex, square, next_int, &c, 5, 4, -1, &m));
    for (intptr_t i = 0; i < N; i++) {
        CHECK_OK(cf_map_next(m, &r, &code, &msg));
        CHECK(P2I(r) == i * i);
    }
    CHECK_STATUS(cf_map_next(m, &r, &code, &msg), CF_END);
    cf_map_free(m);

    unsigned char data[50][10];
    cf_bytes in[50];
    for (int i = 0; i < 50; i++) {
        for (int j = 0; j < 10; j++) {
            data[i][j] = (unsigned char)(i + j);
        }
        in[i].data = data[i];
        in[i].len = (size_t)(i % 10);
    }
    CHECK_OK(cf_map_bytes_new(ex, reverse, in, 50, 4, -1, &m));
    for (int i = 0; i < 50; i++) {
        cf_bytes b;
        CHECK_OK(cf_map_next_bytes(m, &b, &code, &msg));
        CHECK(b.len == (size_t)(i % 10));
        for (size_t j = 0; j < b.len; j++) {
            CHECK(((const unsigned char *)b.data)[j] == data[i][b.len - 1 - j]);
        }
    }
    cf_map_free(m);
}

static void waits(cf_executor *ex) {
    watchdog(60, "as_completed and cf_wait");
    cf_future *fs[12];
    for (int i = 0; i < 12; i++) {
        CHECK_OK(cf_submit(ex, sleeper, I2P(5 * (12 - i)), &fs[i]));
    }
    cf_as_completed *it;
    CHECK_OK(cf_as_completed_new(fs, 12, 30, &it));
    int n = 0;
    cf_future *f;
    while (cf_as_completed_next(it, &f) == CF_OK) {
        CHECK(cf_future_done(f));
        cf_future_release(f);
        n++;
    }
    CHECK(n == 12);
    cf_as_completed_free(it);
    for (int i = 0; i < 12; i++) {
        cf_future_release(fs[i]);
    }

    /* FIRST_COMPLETED: one quick task among slow ones. */
    cf_future *w[3];
    bool done[3];
    size_t nd = 0;
    CHECK_OK(cf_submit(ex, sleeper, I2P(1), &w[0]));
    CHECK_OK(cf_submit(ex, sleeper, I2P(1500), &w[1]));
    CHECK_OK(cf_submit(ex, sleeper, I2P(1500), &w[2]));
    CHECK_OK(cf_wait(w, 3, CF_FIRST_COMPLETED, 30, done, &nd));
    CHECK(nd >= 1 && nd < 3 && done[0]);
    CHECK_OK(cf_wait(w, 3, CF_ALL_COMPLETED, 30, done, &nd));
    CHECK(nd == 3 && done[0] && done[1] && done[2]);
    for (int i = 0; i < 3; i++) {
        cf_future_release(w[i]);
    }
    /* FIRST_EXCEPTION: returns at the failure, before the slow task. */
    CHECK_OK(cf_submit(ex, raiser, I2P(7), &w[1]));
    CHECK_OK(cf_submit(ex, sleeper, I2P(2000), &w[0]));
    double t0 = now_s();
    CHECK_OK(cf_wait(w, 2, CF_FIRST_EXCEPTION, 30, done, &nd));
    CHECK(done[1] && !done[0]);
    CHECK(now_s() - t0 < 1.9);
    CHECK_OK(cf_future_wait(w[0], 30));
    cf_future_release(w[0]);
    cf_future_release(w[1]);
}

static void callbacks_and_then(cf_executor *ex) {
    watchdog(60, "callbacks, continuations, deadlines");
    cf_future *f, *c;
    CHECK_OK(cf_submit(ex, square, I2P(9), &f));
    CHECK_OK(cf_future_add_done_callback(f, on_done, NULL));
    CHECK_STATUS(cf_future_then(f, ex, plus_one, NULL, &c), CF_INVALID_ARGUMENT);
    CHECK_OK(cf_future_then(f, NULL, plus_one, NULL, &c));
    void *r = NULL;
    CHECK_OK(cf_future_result(c, 30, &r));
    CHECK(P2I(r) == 82);
    CHECK(atomic_load(&callbacks) == 1);
    CHECK_OK(cf_future_add_done_callback(f, on_done, NULL)); /* done: runs now */
    CHECK(atomic_load(&callbacks) == 2);
    cf_future_release(c);
    cf_future_release(f);

    /* A deadline passes while the task runs on a rank: CF_DEADLINE, result dropped. */
    cf_task t = CF_TASK_INIT;
    t.fn = sleeper;
    t.arg = I2P(800);
    t.timeout = 0.1;
    CHECK_OK(cf_submit_task(ex, &t, &f));
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, 30, &code, &msg), CF_DEADLINE);
    CHECK(code == ETIMEDOUT);
    cf_future_release(f);
    /* The rank is still in service afterwards. */
    CHECK_OK(cf_submit(ex, square, I2P(3), &f));
    CHECK_OK(cf_future_result(f, 30, &r));
    CHECK(P2I(r) == 9);
    cf_future_release(f);
}

/* Cancel before send: with every rank busy and its pipeline full, a queued task cancels. */
static void cancel_and_shutdown(cf_executor *ex, int size) {
    watchdog(60, "cancel and shutdown(cancel_futures)");
    int workers = size - 1;
    int n = workers * 9 + 6;
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    for (int i = 0; i < n; i++) {
        CHECK_OK(cf_submit(ex, sleeper, I2P(40), &fs[i]));
    }
    /* Wait until each rank has its pipeline full (those tasks count as running). */
    for (;;) {
        int started = 0;
        for (int i = 0; i < n; i++) {
            started += cf_future_running(fs[i]) || cf_future_done(fs[i]);
        }
        if (started >= workers * 8) {
            break;
        }
        sleep_ms(1);
    }
    CHECK(cf_future_cancel(fs[n - 1]));
    CHECK(cf_future_cancelled(fs[n - 1]));
    void *r;
    CHECK_STATUS(cf_future_result(fs[n - 1], 0, &r), CF_CANCELLED);
    /* Shutdown with cancel_futures: what was not sent is cancelled, the rest finishes. */
    CHECK_OK(cf_executor_shutdown(ex, true, true));
    int cancelled = 0, ok = 0;
    for (int i = 0; i < n; i++) {
        CHECK(cf_future_done(fs[i]));
        cf_status s = cf_future_result(fs[i], 0, &r);
        CHECK(s == CF_OK || s == CF_CANCELLED);
        cancelled += s == CF_CANCELLED;
        ok += s == CF_OK;
        cf_future_release(fs[i]);
    }
    if (!(cancelled >= 2 && ok >= workers)) {
        fprintf(stderr, "cancelled %d ok %d of %d\n", cancelled, ok, n);
    }
    CHECK(cancelled >= 2 && ok >= workers);
    cf_future *f;
    CHECK_STATUS(cf_submit(ex, square, I2P(1), &f), CF_SHUTDOWN);
    free(fs);
}

static void bad_input(cf_executor *ex) {
    watchdog(60, "bad input");
    /* A function pointer in no loaded object: heap memory. */
    void *heap = malloc(64);
    cf_fn bogus;
    uintptr_t addr = (uintptr_t)heap;
    memcpy(&bogus, &addr, sizeof bogus);
    cf_future *f = NULL;
    CHECK_STATUS(cf_submit(ex, bogus, NULL, &f), CF_INVALID_ARGUMENT);
    cf_bytes_fn bogus_b;
    memcpy(&bogus_b, &addr, sizeof bogus_b);
    CHECK_STATUS(cf_submit_bytes(ex, bogus_b, "x", 1, &f), CF_INVALID_ARGUMENT);
    cf_map *m;
    void *args[1] = {NULL};
    CHECK_STATUS(cf_map_new(ex, bogus, args, 1, 1, -1, &m), CF_INVALID_ARGUMENT);
    cf_task t = CF_TASK_INIT;
    t.fn = bogus;
    CHECK_STATUS(cf_submit_task(ex, &t, &f), CF_INVALID_ARGUMENT);
    free(heap);
    /* Ranks are not this process's children: no signal for them (MPI.md). */
    CHECK_STATUS(cf_executor_terminate_workers(ex), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_executor_kill_workers(ex), CF_INVALID_ARGUMENT);
    /* The executor still works after refusing them. */
    CHECK_OK(cf_submit(ex, square, I2P(5), &f));
    void *r;
    CHECK_OK(cf_future_result(f, 30, &r));
    CHECK(P2I(r) == 25);
    cf_future_release(f);
}

int main(int argc, char **argv) {
    int provided = 0, size = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &mu_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECK(provided == MPI_THREAD_MULTIPLE);
    CHECK(size >= 2 && size <= 8);
    watchdog(60, "bad communicator and root");
    cf_executor *ex = (cf_executor *)1;
    /* Bad input, on every rank, before anything collective: nothing hangs. */
    CHECK_STATUS(cf_mpi_comm_executor(MPI_COMM_NULL, 0, &ex), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_mpi_comm_executor(MPI_COMM_WORLD, size, &ex), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_mpi_comm_executor(MPI_COMM_WORLD, -1, &ex), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_mpi_comm_executor(MPI_COMM_SELF, 0, &ex), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL), CF_INVALID_ARGUMENT);
    CHECK(ex == (cf_executor *)1);

    /* The first executor: root 0. */
    cf_status s = cf_mpi_comm_executor(MPI_COMM_WORLD, 0, &ex);
    if (mu_rank == 0) {
        CHECK_OK(s);
        results(ex, size);
        failures(ex);
        maps(ex);
        waits(ex);
        callbacks_and_then(ex);
        cancel_and_shutdown(ex, size);
        cf_executor_free(ex);
    } else {
        CHECK_STATUS(s, CF_END);
        CHECK(ex == NULL);
    }
    /* The second: the last rank is root; freed without an explicit shutdown. */
    watchdog(60, "second executor");
    int root = size - 1;
    s = cf_mpi_comm_executor(MPI_COMM_WORLD, root, &ex);
    if (mu_rank == root) {
        CHECK_OK(s);
        bad_input(ex);
        cf_executor_free(ex);
    } else {
        CHECK_STATUS(s, CF_END);
        CHECK(ex == NULL);
    }
    watchdog(60, "MPI_Finalize");
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    if (mu_rank == 0) {
        printf("test_mpi_executor: %d ranks ok\n", size);
    }
    return 0;
}
