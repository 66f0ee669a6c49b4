/* cf_mpi_pool_new from a program started without mpirun (a singleton): spawns 2 worker
 * processes running this same program (cf_mpi_worker_serve), runs the initializer in
 * each, results from both workers, bytes, cf_raise, shutdown; the workers exit. Bad
 * input: an initializer in no loaded object, max_workers too large. */
#include "mpi_util.h"

#include <stdint.h>

static intptr_t init_value = -1;

static void init(void *arg) {
    init_value = P2I(arg);
}

static void *get_init(void *arg) {
    sleep_ms(30); /* long enough that both workers take some */
    (void)arg;
    return I2P(init_value * 1000000 + (intptr_t)getpid());
}

static void *echo_len(const void *in, size_t len, size_t *out_len) {
    size_t *out = malloc(sizeof *out);
    (void)in;
    *out = len;
    *out_len = sizeof *out;
    return out;
}

static void *raiser(void *arg) {
    return cf_raise((int)P2I(arg), "spawned boom");
}

int main(int argc, char **argv) {
    if (cf_mpi_worker_serve(&argc, &argv)) {
        return 0;
    }
    mu_rank = 0;
    watchdog(120, "cf_mpi_pool_new");
    cf_executor *ex = NULL;
    cf_mpi_options bad = {0};
    bad.max_workers = CF_MAX_WORKERS + 1;
    CHECK_STATUS(cf_mpi_pool_new(&bad, &ex), CF_INVALID_ARGUMENT);
    void *heap = malloc(16);
    uintptr_t addr = (uintptr_t)heap;
    bad.max_workers = 2;
    memcpy(&bad.initializer, &addr, sizeof bad.initializer);
    CHECK_STATUS(cf_mpi_pool_new(&bad, &ex), CF_INVALID_ARGUMENT);
    CHECK_STATUS(cf_mpi_pool_new(NULL, NULL), CF_INVALID_ARGUMENT);
    free(heap);

    cf_mpi_options o = {0};
    o.max_workers = 2;
    o.initializer = init;
    o.initarg = I2P(7);
    CHECK_OK(cf_mpi_pool_new(&o, &ex));
    watchdog(120, "tasks on spawned workers");
    enum { N = 40 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        CHECK_OK(cf_submit(ex, get_init, NULL, &fs[i]));
    }
    intptr_t pids[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        void *r = NULL;
        CHECK_OK(cf_future_result(fs[i], 60, &r));
        CHECK(P2I(r) / 1000000 == 7); /* the initializer ran in that worker */
        intptr_t pid = P2I(r) % 1000000;
        CHECK(pid != (intptr_t)getpid());
        if (pids[0] == 0 || pids[0] == pid) {
            pids[0] = pid;
        } else {
            pids[1] = pid;
        }
        cf_future_release(fs[i]);
    }
    CHECK(pids[0] != 0 && pids[1] != 0); /* both workers ran tasks */
    cf_future *f;
    static unsigned char big[3 << 20];
    CHECK_OK(cf_submit_bytes(ex, echo_len, big, sizeof big, &f));
    cf_bytes b;
    CHECK_OK(cf_future_result_bytes(f, 60, &b));
    CHECK(b.len == sizeof(size_t) && *(const size_t *)b.data == sizeof big);
    cf_future_release(f);
    CHECK_OK(cf_submit(ex, raiser, I2P(5), &f));
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, 60, &code, &msg), CF_TASK_FAILED);
    CHECK(code == 5 && strcmp(msg, "spawned boom") == 0);
    cf_future_release(f);
    watchdog(120, "shutdown of the spawned pool");
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    cf_executor_free(ex);
    /* The workers exit: no process of ours is left (checked by the test's runner through
     * the process tree: each worker's pid is gone). */
    for (int k = 0; k < 2; k++) {
        double t0 = now_s();
        while (kill((pid_t)pids[k], 0) == 0 && now_s() - t0 < 30) {
            sleep_ms(20);
        }
        CHECK(kill((pid_t)pids[k], 0) != 0);
    }
    printf("test_mpi_spawn: ok (workers %ld and %ld)\n", (long)pids[0], (long)pids[1]);
    return 0;
}
