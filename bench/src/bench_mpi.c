/* M1 and M2 (bench/README.md): byte tasks on the worker ranks of an MPI job, through
 * cf_mpi_comm_executor; rank 0 submits, the other ranks are the workers.
 *
 *   mpirun -n 4 bench_mpi M1 10000      10,000 tasks of 100 B: submit all, then each result
 *   mpirun -n 4 bench_mpi M2 64         64 tasks of 1 MiB in, 1 MiB out
 *
 * Prints "M1 <tasks/s>" or "M2 <MiB/s each way>", the best of REPS runs, and the CPU
 * time the worker ranks used (their waiting shows there). */
#include <cfutures_mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void *echo(const void *in, size_t len, size_t *out_len) {
    void *out = malloc(len ? len : 1);
    if (len) memcpy(out, in, len);
    *out_len = len;
    return out;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, cf_status s) {
    fprintf(stderr, "bench_mpi: %s: %s\n", what, cf_status_name(s));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv) {
    int provided = 0, rank = 0, size = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *which = argc > 1 ? argv[1] : "M1";
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 10000;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    size_t len = strcmp(which, "M2") == 0 ? (size_t)1 << 20 : 100;
    double best = 0, worker_cpu = 0;
    for (int rep = 0; rep < reps; rep++) {
        double c0 = cpu_s();
        cf_executor *ex = NULL;
        cf_status s = cf_mpi_comm_executor(MPI_COMM_WORLD, 0, &ex);
        if (s == CF_END) {
            double mine = cpu_s() - c0;
            MPI_Reduce(&mine, NULL, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
            continue;
        }
        if (s != CF_OK) die("cf_mpi_comm_executor", s);
        unsigned char *in = malloc(len);
        memset(in, 7, len);
        cf_future **fs = malloc(n * sizeof *fs);
        /* Warm up: every worker rank started. */
        for (int i = 0; i < 3 * (size - 1); i++) {
            cf_future *f;
            cf_bytes b;
            if ((s = cf_submit_bytes(ex, echo, in, 1, &f)) != CF_OK) die("warm-up", s);
            if ((s = cf_future_result_bytes(f, -1, &b)) != CF_OK) die("warm-up", s);
            cf_future_release(f);
        }
        double t0 = MPI_Wtime();
        for (size_t i = 0; i < n; i++) {
            if ((s = cf_submit_bytes(ex, echo, in, len, &fs[i])) != CF_OK) die("submit", s);
        }
        for (size_t i = 0; i < n; i++) {
            cf_bytes b;
            if ((s = cf_future_result_bytes(fs[i], -1, &b)) != CF_OK) die("result", s);
            if (b.len != len) die("result length", CF_BROKEN);
            cf_future_release(fs[i]);
        }
        double t = MPI_Wtime() - t0;
        cf_executor_free(ex);
        double none = 0;
        MPI_Reduce(&none, &worker_cpu, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        double rate = strcmp(which, "M2") == 0 ? (double)n * (double)len / (1 << 20) / t : (double)n / t;
        if (rate > best) best = rate;
        fprintf(stderr, "bench_mpi %s rep %d: %.0f %s, %.3f s; worker ranks' CPU %.2f s\n", which,
                rep, rate, strcmp(which, "M2") == 0 ? "MiB/s each way" : "tasks/s", t, worker_cpu);
        free(fs);
        free(in);
    }
    if (rank == 0) printf("%s %.0f\n", which, best);
    MPI_Finalize();
    return 0;
}
