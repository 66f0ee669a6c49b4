/* Byte tasks on thread pools: cf_submit_bytes and cf_future_result_bytes. The input is
 * copied at submit; the task's malloc'ed result is lent out while the future lives
 * and freed with it (run under valgrind to check that nothing leaks). No CPython
 * counterpart (Python pickles); modelled on executor.py's test_submit. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <cfutures.h>

#include "test_util.h"
#include "test_util_many.h"

/* ---- byte tasks ------------------------------------------------------------------------ */

static void *b_copy(const void *in, size_t in_len, size_t *out_len) {
    if (in_len == 0) {
        *out_len = 0;
        return NULL;
    }
    void *out = malloc(in_len);
    if (!out) return cf_raise(ENOMEM, "malloc");
    memcpy(out, in, in_len);
    *out_len = in_len;
    return out;
}

static gate g_started, g_release;
static atomic_int g_runs;

/* Signals that it started, waits for g_release, then copies its input. */
static void *b_gated_copy(const void *in, size_t in_len, size_t *out_len) {
    atomic_fetch_add(&g_runs, 1);
    gate_open(&g_started);
    gate_wait(&g_release);
    return b_copy(in, in_len, out_len);
}

/* Records what it was given; returns NULL (no result). */
static const void *g_seen_in;
static size_t g_seen_len;
static void *b_inspect(const void *in, size_t in_len, size_t *out_len) {
    g_seen_in = in;
    g_seen_len = in_len;
    *out_len = 0;
    return NULL;
}

/* Returns NULL but claims a length: the length is taken as 0. */
static void *b_null_with_len(const void *in, size_t in_len, size_t *out_len) {
    (void)in;
    (void)in_len;
    *out_len = 5;
    return NULL;
}

/* Fails with the code in the first byte and a message built on the stack. */
static void *b_raise(const void *in, size_t in_len, size_t *out_len) {
    (void)out_len;
    char msg[64];
    snprintf(msg, sizeof msg, "bytes failed (%zu)", in_len);
    return cf_raise(in_len ? ((const unsigned char *)in)[0] : 0, msg);
}

/* Allocates a result, then fails: the library frees the buffer (valgrind checks). */
static void *b_raise_after_malloc(const void *in, size_t in_len, size_t *out_len) {
    void *out = b_copy(in, in_len, out_len);
    cf_raise(EPROTO, "failed after malloc");
    return out;
}

/* Reverses its input and appends a checksum byte. */
static void *b_reverse_sum(const void *in, size_t in_len, size_t *out_len) {
    unsigned char *out = malloc(in_len + 1);
    if (!out) return cf_raise(ENOMEM, "malloc");
    const unsigned char *p = (const unsigned char *)in;
    unsigned char sum = 0;
    for (size_t i = 0; i < in_len; i++) {
        out[i] = p[in_len - 1 - i];
        sum = (unsigned char)(sum + p[i]);
    }
    out[in_len] = sum;
    *out_len = in_len + 1;
    return out;
}

static void check_bytes(cf_bytes b, const void *want, size_t want_len) {
    CHECK(b.len == want_len);
    if (want_len) {
        CHECK(b.data != NULL);
        CHECK(memcmp(b.data, want, want_len) == 0);
    }
}

/* ---- tests ------------------------------------------------------------------------------ */

/* The input is copied at submit: the caller overwrites (and frees) its buffer while
 * the task waits, and the task still sees the original bytes. */
static void test_input_copied(void) {
    cf_executor *ex = pool_new(1);
    gate_init(&g_started);
    gate_init(&g_release);
    char stack_buf[16] = "hello, world";
    char *heap_buf = malloc(32);
    CHECK(heap_buf != NULL);
    memcpy(heap_buf, "heap bytes 0123456789", 21);
    cf_future *f1 = NULL, *f2 = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_gated_copy, stack_buf, 12, &f1));
    CHECK(f1 != NULL);
    CHECK_OK(cf_submit_bytes(ex, b_gated_copy, heap_buf, 21, &f2));
    gate_wait(&g_started);
    memset(stack_buf, 'X', sizeof stack_buf);
    memset(heap_buf, 'Y', 32);
    free(heap_buf);
    gate_open(&g_release);
    cf_bytes b = {NULL, 0};
    CHECK_OK(cf_future_result_bytes(f1, LONG_TIMEOUT, &b));
    check_bytes(b, "hello, world", 12);
    CHECK_OK(cf_future_result_bytes(f2, LONG_TIMEOUT, &b));
    check_bytes(b, "heap bytes 0123456789", 21);
    cf_future_release(f1);
    cf_future_release(f2);
    cf_executor_free(ex);
    gate_destroy(&g_started);
    gate_destroy(&g_release);
}

/* in_len 0: `in` may be NULL (or anything); the task gets in_len 0 (and, as the
 * header documents, a NULL input). A task returning NULL gives data NULL, len 0. */
static void test_empty_input_and_null_result(void) {
    cf_executor *ex = pool_new(1);
    char dummy = 'd';
    const void *ins[2] = {NULL, &dummy};
    for (int k = 0; k < 2; k++) {
        g_seen_in = &dummy + 1;
        g_seen_len = 99;
        cf_future *f = NULL;
        CHECK_OK(cf_submit_bytes(ex, b_inspect, ins[k], 0, &f));
        cf_bytes b = {&dummy, 12345};
        CHECK_OK(cf_future_result_bytes(f, LONG_TIMEOUT, &b));
        CHECK(b.data == NULL && b.len == 0);
        CHECK(g_seen_len == 0);
        CHECK(g_seen_in == NULL);
        void *r = &dummy;
        CHECK_OK(cf_future_result(f, 0, &r));
        CHECK(r == NULL);
        cf_future_release(f);
    }
    /* b_copy on empty input returns NULL with *out_len 0. */
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_copy, NULL, 0, &f));
    cf_bytes b = {&dummy, 1};
    CHECK_OK(cf_future_result_bytes(f, LONG_TIMEOUT, &b));
    CHECK(b.data == NULL && b.len == 0);
    cf_future_release(f);
    /* NULL with a length claimed: the length is taken as 0. */
    CHECK_OK(cf_submit_bytes(ex, b_null_with_len, "abc", 3, &f));
    b.data = &dummy;
    b.len = 1;
    CHECK_OK(cf_future_result_bytes(f, LONG_TIMEOUT, &b));
    CHECK(b.data == NULL && b.len == 0);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* The result is lent out while the future lives: the same pointer every time,
 * cf_future_result gives the data pointer, and it survives the executor being freed
 * and the first reference being dropped while another is held. */
static void test_result_lent_while_future_lives(void) {
    cf_executor *ex = pool_new(2);
    const char *text = "the quick brown fox";
    size_t len = strlen(text);
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_reverse_sum, text, len, &f));
    cf_bytes b1 = {NULL, 0}, b2 = {NULL, 0};
    CHECK_OK(cf_future_result_bytes(f, CF_FOREVER, &b1));
    CHECK_OK(cf_future_result_bytes(f, 0.0, &b2));
    CHECK(b1.data == b2.data && b1.len == b2.len);
    CHECK(b1.len == len + 1);
    const unsigned char *d = (const unsigned char *)b1.data;
    unsigned char sum = 0;
    for (size_t i = 0; i < len; i++) {
        CHECK(d[i] == (unsigned char)text[len - 1 - i]);
        sum = (unsigned char)(sum + (unsigned char)text[i]);
    }
    CHECK(d[len] == sum);
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(r == b1.data);
    cf_executor_free(ex); /* futures outlive their executor */
    cf_future *g = cf_future_retain(f);
    CHECK(g == f);
    cf_future_release(f);
    CHECK_OK(cf_future_result_bytes(g, 0.0, &b2));
    CHECK(b2.data == b1.data && b2.len == len + 1);
    CHECK(memcmp(b2.data, d, len + 1) == 0);
    cf_future_release(g); /* frees the buffer */
}

/* cf_raise in a byte task: CF_TASK_FAILED with its code and message; the output
 * parameter is left untouched; a buffer returned anyway is freed by the library. */
static void test_task_failed(void) {
    cf_executor *ex = pool_new(2);
    unsigned char in[3] = {42, 1, 2};
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_raise, in, 3, &f));
    char sentinel = 's';
    cf_bytes b = {&sentinel, 777};
    CHECK_STATUS(cf_future_result_bytes(f, LONG_TIMEOUT, &b), CF_TASK_FAILED);
    CHECK(b.data == &sentinel && b.len == 777);
    int code = 0;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TASK_FAILED);
    CHECK(code == 42);
    CHECK(msg != NULL && strcmp(msg, "bytes failed (3)") == 0);
    void *r = &sentinel;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_TASK_FAILED);
    CHECK(r == &sentinel);
    cf_future_release(f);

    CHECK_OK(cf_submit_bytes(ex, b_raise_after_malloc, "abcdef", 6, &f));
    CHECK_STATUS(cf_future_result_bytes(f, LONG_TIMEOUT, &b), CF_TASK_FAILED);
    CHECK(b.data == &sentinel && b.len == 777);
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TASK_FAILED);
    CHECK(code == EPROTO);
    CHECK(msg != NULL && strcmp(msg, "failed after malloc") == 0);
    cf_future_release(f);

    /* Empty input: code 0 from b_raise. */
    CHECK_OK(cf_submit_bytes(ex, b_raise, NULL, 0, &f));
    CHECK_STATUS(cf_future_exception(f, LONG_TIMEOUT, &code, &msg), CF_TASK_FAILED);
    CHECK(code == 0 && strcmp(msg, "bytes failed (0)") == 0);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Timeout and cancellation of a byte future that has not started. */
static void test_timeout_and_cancel(void) {
    cf_executor *ex = pool_new(1);
    gate_init(&g_started);
    gate_init(&g_release);
    atomic_store(&g_runs, 0);
    cf_future *f1 = NULL, *f2 = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_gated_copy, "one", 3, &f1));
    gate_wait(&g_started);
    CHECK_OK(cf_submit_bytes(ex, b_gated_copy, "two", 3, &f2));
    char sentinel = 's';
    cf_bytes b = {&sentinel, 5};
    double t0 = now_s();
    CHECK_STATUS(cf_future_result_bytes(f1, 0.05, &b), CF_TIMEOUT);
    CHECK(now_s() - t0 >= 0.04);
    CHECK(b.data == &sentinel && b.len == 5);
    CHECK_STATUS(cf_future_result_bytes(f2, 0.0, &b), CF_TIMEOUT);
    CHECK(b.data == &sentinel && b.len == 5);
    CHECK(cf_future_cancel(f2));
    CHECK_STATUS(cf_future_result_bytes(f2, CF_FOREVER, &b), CF_CANCELLED);
    CHECK(b.data == &sentinel && b.len == 5);
    gate_open(&g_release);
    CHECK_OK(cf_future_result_bytes(f1, LONG_TIMEOUT, &b));
    check_bytes(b, "one", 3);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_runs) == 1); /* the cancelled one never ran */
    cf_future_release(f1);
    cf_future_release(f2);
    cf_executor_free(ex);
    gate_destroy(&g_started);
    gate_destroy(&g_release);
}

/* A large input and output (4 MiB). */
static void test_big(void) {
    cf_executor *ex = pool_new(2);
    size_t len = 4u << 20;
    unsigned char *in = malloc(len);
    CHECK(in != NULL);
    unsigned char sum = 0;
    for (size_t i = 0; i < len; i++) {
        in[i] = (unsigned char)(i * 2654435761u >> 24);
        sum = (unsigned char)(sum + in[i]);
    }
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_reverse_sum, in, len, &f));
    cf_bytes b = {NULL, 0};
    CHECK_OK(cf_future_result_bytes(f, LONG_TIMEOUT, &b));
    CHECK(b.len == len + 1);
    const unsigned char *d = (const unsigned char *)b.data;
    for (size_t i = 0; i < len; i++)
        if (d[i] != in[len - 1 - i]) CHECK(d[i] == in[len - 1 - i]);
    CHECK(d[len] == sum);
    free(in);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Many byte tasks, waited on with cf_wait and cf_as_completed, mixed with a promise. */
static void test_many_with_wait_and_as_completed(void) {
    enum { N = 200 };
    cf_executor *ex = pool_new(4);
    cf_future *fs[N + 1];
    char inputs[N][16];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        lens[i] = (size_t)snprintf(inputs[i], sizeof inputs[i], "in-%d", i * 7);
        CHECK_OK(cf_submit_bytes(ex, b_copy, inputs[i], lens[i], &fs[i]));
    }
    fs[N] = promise_new();
    completer c;
    completer_start(&c, &fs[N], NULL, 1, 0.02, COMPLETE_RESULT);
    size_t n_done = 0;
    CHECK_OK(cf_wait(fs, N + 1, CF_ALL_COMPLETED, LONG_TIMEOUT, NULL, &n_done));
    completer_join(&c);
    CHECK(n_done == N + 1);
    for (int i = 0; i < N; i++) {
        cf_bytes b;
        CHECK_OK(cf_future_result_bytes(fs[i], 0, &b));
        check_bytes(b, inputs[i], lens[i]);
    }
    cf_as_completed *it = NULL;
    CHECK_OK(cf_as_completed_new(fs, N + 1, LONG_TIMEOUT, &it));
    for (int k = 0; k < N + 1; k++) {
        cf_future *f = NULL;
        CHECK_OK(cf_as_completed_next(it, &f));
        CHECK(cf_future_done(f));
    }
    cf_future *f = NULL;
    CHECK_STATUS(cf_as_completed_next(it, &f), CF_END);
    cf_as_completed_free(it);
    release_all(fs, N + 1);
    cf_executor_free(ex);
}

/* Releasing a byte future before it ran: the task still runs, its result is freed
 * (valgrind checks). */
static void test_release_before_done(void) {
    cf_executor *ex = pool_new(1);
    gate_init(&g_started);
    gate_init(&g_release);
    atomic_store(&g_runs, 0);
    cf_future *f = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_gated_copy, "released early", 14, &f));
    cf_future *g = NULL;
    CHECK_OK(cf_submit_bytes(ex, b_gated_copy, "also released", 13, &g));
    gate_wait(&g_started);
    cf_future_release(f);
    cf_future_release(g);
    gate_open(&g_release);
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    CHECK(atomic_load(&g_runs) == 2);
    cf_executor_free(ex);
    gate_destroy(&g_started);
    gate_destroy(&g_release);
}

/* cf_future_result_bytes on a future with a pointer result (cf_submit, or a promise
 * completed with cf_future_set_result): CF_INVALID_ARGUMENT per the header, out
 * untouched. Failure statuses are reported as for cf_future_result. */
static void test_result_bytes_on_pointer_future(void) {
    cf_executor *ex = pool_new(1);
    cf_future *f = NULL;
    CHECK_OK(cf_submit(ex, task_ident, U2P(99), &f));
    CHECK_OK(cf_future_wait(f, LONG_TIMEOUT));
    char s = 's';
    cf_bytes b = {&s, 6};
    CHECK_STATUS(cf_future_result_bytes(f, 0, &b), CF_INVALID_ARGUMENT);
    CHECK(b.data == &s && b.len == 6);
    void *r = NULL;
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(P2U(r) == 99);
    cf_future_release(f);

    cf_future *p = promise_with_result(U2P(5));
    CHECK_STATUS(cf_future_result_bytes(p, 0, &b), CF_INVALID_ARGUMENT);
    CHECK(b.data == &s && b.len == 6);
    cf_future_release(p);

    p = promise_with_exception(7, "promise failed");
    CHECK_STATUS(cf_future_result_bytes(p, 0, &b), CF_TASK_FAILED);
    CHECK(b.data == &s && b.len == 6);
    cf_future_release(p);
    p = promise_cancelled();
    CHECK_STATUS(cf_future_result_bytes(p, 0, &b), CF_CANCELLED);
    cf_future_release(p);
    p = promise_new();
    CHECK_STATUS(cf_future_result_bytes(p, 0.0, &b), CF_TIMEOUT);
    CHECK(b.data == &s && b.len == 6);
    cf_future_release(p);
    cf_executor_free(ex);
}

static void test_bad_input(void) {
    cf_executor *ex = pool_new(1);
    cf_future *sentinel = (cf_future *)&ex;
    cf_future *f = sentinel;
    CHECK_STATUS(cf_submit_bytes(NULL, b_copy, "x", 1, &f), CF_INVALID_ARGUMENT);
    CHECK(f == sentinel);
    CHECK_STATUS(cf_submit_bytes(ex, NULL, "x", 1, &f), CF_INVALID_ARGUMENT);
    CHECK(f == sentinel);
    CHECK_STATUS(cf_submit_bytes(ex, b_copy, NULL, 1, &f), CF_INVALID_ARGUMENT);
    CHECK(f == sentinel);
    CHECK_STATUS(cf_submit_bytes(ex, b_copy, NULL, 100, &f), CF_INVALID_ARGUMENT);
    CHECK(f == sentinel);
    CHECK_STATUS(cf_submit_bytes(ex, b_copy, "x", 1, NULL), CF_INVALID_ARGUMENT);

    CHECK_OK(cf_submit_bytes(ex, b_copy, "ok", 2, &f));
    CHECK(f != sentinel && f != NULL);
    char s = 's';
    cf_bytes b = {&s, 9};
    CHECK_STATUS(cf_future_result_bytes(NULL, 0, &b), CF_INVALID_ARGUMENT);
    CHECK(b.data == &s && b.len == 9);
    CHECK_STATUS(cf_future_result_bytes(f, NAN, &b), CF_INVALID_ARGUMENT);
    CHECK(b.data == &s && b.len == 9);
    CHECK_STATUS(cf_future_result_bytes(f, LONG_TIMEOUT, NULL), CF_INVALID_ARGUMENT);
    CHECK_OK(cf_future_result_bytes(f, LONG_TIMEOUT, &b));
    check_bytes(b, "ok", 2);
    cf_future_release(f);

    /* After shutdown: CF_SHUTDOWN and no future, as cf_submit. */
    CHECK_OK(cf_executor_shutdown(ex, true, false));
    f = sentinel;
    CHECK_STATUS(cf_submit_bytes(ex, b_copy, "x", 1, &f), CF_SHUTDOWN);
    CHECK(f == sentinel);
    cf_executor_free(ex);
}

int main(void) {
    TEST(test_input_copied);
    TEST(test_empty_input_and_null_result);
    TEST(test_result_lent_while_future_lives);
    TEST(test_task_failed);
    TEST(test_timeout_and_cancel);
    TEST(test_big);
    TEST(test_many_with_wait_and_as_completed);
    TEST(test_release_before_done);
    TEST(test_result_bytes_on_pointer_future);
    TEST(test_bad_input);
    return 0;
}
