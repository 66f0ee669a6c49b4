/* The demo's prime count over an MPI job: rank 0 cuts [0, LIMIT) into ranges and sends
 * each as a byte task to the other ranks (cf_mpi_comm_executor); each answers with its
 * count, as bytes. Run it under mpirun:
 *
 *   mpirun -n 3 build/examples/mpi_primes [LIMIT]
 *   mpirun --hostfile hosts -n 8 build/examples/mpi_primes 50000000   (several machines)
 *
 * Every rank runs this same program; rank 0 prints the count, checked against a serial
 * count on rank 0 for small limits. */
#include <cfutures_mpi.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct range {
    uint32_t lo, hi;
} range;

static int is_prime(uint32_t n) {
    if (n < 2) return 0;
    for (uint32_t d = 2; d <= n / d; d++) {
        if (n % d == 0) return 0;
    }
    return 1;
}

/* A byte task: the input is a `range`, the result the count of its primes (uint64_t). */
static void *count_primes(const void *in, size_t in_len, size_t *out_len) {
    range r;
    if (in_len != sizeof r) return cf_raise(22, "count_primes: the input is not a range");
    memcpy(&r, in, sizeof r);
    uint64_t *count = malloc(sizeof *count);
    if (!count) return cf_raise(12, "count_primes: out of memory");
    *count = 0;
    for (uint32_t n = r.lo; n < r.hi; n++) *count += (uint64_t)is_prime(n);
    *out_len = sizeof *count;
    return count;
}

int main(int argc, char **argv) {
    int provided = 0, rank = 0, size = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    uint32_t limit = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 2000000;

    cf_executor *ex = NULL;
    cf_status s = cf_mpi_comm_executor(MPI_COMM_WORLD, 0, &ex);
    if (s == CF_END) { /* a worker rank: it served rank 0 until the executor ended */
        MPI_Finalize();
        return 0;
    }
    if (s != CF_OK) {
        fprintf(stderr, "cf_mpi_comm_executor: %s (run me under mpirun with 2 ranks or more)\n",
                cf_status_name(s));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    enum { N_RANGES = 64 };
    range ranges[N_RANGES];
    cf_bytes inputs[N_RANGES];
    for (int i = 0; i < N_RANGES; i++) {
        ranges[i].lo = (uint32_t)((uint64_t)limit * (uint64_t)i / N_RANGES);
        ranges[i].hi = (uint32_t)((uint64_t)limit * (uint64_t)(i + 1) / N_RANGES);
        inputs[i].data = &ranges[i];
        inputs[i].len = sizeof ranges[i];
    }
    double t0 = MPI_Wtime();
    cf_map *m = NULL;
    s = cf_map_bytes_new(ex, count_primes, inputs, N_RANGES, 1, 600, &m);
    if (s != CF_OK) {
        fprintf(stderr, "cf_map_bytes_new: %s\n", cf_status_name(s));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    uint64_t total = 0;
    for (int i = 0; i < N_RANGES; i++) {
        cf_bytes b;
        int code = 0;
        const char *msg = NULL;
        s = cf_map_next_bytes(m, &b, &code, &msg);
        if (s != CF_OK || b.len != sizeof(uint64_t)) {
            fprintf(stderr, "range %d: %s (%d: %s)\n", i, cf_status_name(s), code, msg ? msg : "");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        uint64_t c;
        memcpy(&c, b.data, sizeof c);
        total += c;
    }
    cf_map_free(m);
    double took = MPI_Wtime() - t0;
    cf_executor_free(ex); /* the worker ranks return CF_END now */
    printf("mpi_primes: %" PRIu64 " primes below %" PRIu32 " in %.3f s on %d worker ranks\n",
           total, limit, took, size - 1);
    if (limit <= 2000000) {
        uint64_t serial = 0;
        for (uint32_t n = 0; n < limit; n++) serial += (uint64_t)is_prime(n);
        if (serial != total) {
            fprintf(stderr, "mpi_primes: WRONG: the serial count is %" PRIu64 "\n", serial);
            MPI_Finalize();
            return 1;
        }
        printf("mpi_primes: matches the serial count\n");
    }
    MPI_Finalize();
    return 0;
}
