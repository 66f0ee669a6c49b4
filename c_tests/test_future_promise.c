/* test_future_promise.c: futures completed by the caller (cf_future_new and the setters).
 *
 * Covers: cf_future_new gives a PENDING future; cf_future_set_running_or_notify_cancel
 * (CF_OK and RUNNING, CF_INVALID_STATE when called again or on a finished future,
 * CF_CANCELLED after cancel); cf_future_set_result / cf_future_set_exception on pending and
 * running futures; setting twice is CF_INVALID_STATE and keeps the first outcome; setting
 * a cancelled future is CF_INVALID_STATE; cancel of a running promise is false; cancel of a
 * pending one is true (again true); the exception message is copied; NULL message;
 * completing or cancelling a promise from another thread wakes threads waiting on it
 * (with CF_FOREVER and with a timeout); many promises completed concurrently.
 * Ports from CPython Lib/test/test_concurrent_futures/test_future.py: test_cancel,
 * test_multiple_set_result, test_multiple_set_exception, test_result_with_success,
 * test_result_with_cancel, test_exception_with_success, test_result_with_timeout,
 * test_exception_with_timeout. */
#define _GNU_SOURCE
#include <cfutures.h>

#include "test_util.h"
#include "test_util_extra.h"

#define SENTINEL_PTR ((void *)(uintptr_t)0x5e5e5e5eu)
static const char sentinel_msg[] = "untouched";

static cf_future *new_promise(void) {
    cf_future *f = NULL;
    CHECK_OK(cf_future_new(&f));
    CHECK(f != NULL);
    return f;
}

static void check_pending(cf_future *f) {
    CHECK_STATE(f, CF_STATE_PENDING);
    CHECK(!cf_future_done(f));
    CHECK(!cf_future_running(f));
    CHECK(!cf_future_cancelled(f));
    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_TIMEOUT);
    CHECK(r == SENTINEL_PTR);
    int code = -999;
    const char *msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TIMEOUT);
    CHECK_EQ_LL(code, -999);
    CHECK(msg == sentinel_msg);
    CHECK_STATUS(cf_future_wait(f, 0), CF_TIMEOUT);
}

static void test_set_result(void) {
    int a = 1, b = 2;
    cf_future *f = new_promise();
    check_pending(f);

    double t0 = now_s();
    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(f, 0.05, &r), CF_TIMEOUT);
    CHECK(since(t0) >= 0.04);
    CHECK(r == SENTINEL_PTR);

    CHECK_OK(cf_future_set_running_or_notify_cancel(f));
    CHECK_STATE(f, CF_STATE_RUNNING);
    CHECK(cf_future_running(f));
    CHECK(!cf_future_done(f));
    /* Called again: the future is no longer pending. */
    CHECK_STATUS(cf_future_set_running_or_notify_cancel(f), CF_INVALID_STATE);
    CHECK_STATE(f, CF_STATE_RUNNING);
    /* A running future cannot be cancelled. */
    CHECK(!cf_future_cancel(f));
    CHECK_STATE(f, CF_STATE_RUNNING);
    CHECK(!cf_future_cancelled(f));
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_TIMEOUT);

    CHECK_OK(cf_future_set_result(f, &a));
    CHECK_STATE(f, CF_STATE_FINISHED);
    CHECK(cf_future_done(f));
    CHECK(!cf_future_running(f));
    CHECK(!cf_future_cancelled(f));
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(r == &a);

    /* test_multiple_set_result: the second set fails and the first value stays. */
    CHECK_STATUS(cf_future_set_result(f, &b), CF_INVALID_STATE);
    CHECK_STATUS(cf_future_set_exception(f, 5, "too late"), CF_INVALID_STATE);
    CHECK_STATUS(cf_future_set_running_or_notify_cancel(f), CF_INVALID_STATE);
    CHECK(!cf_future_cancel(f));
    CHECK_STATE(f, CF_STATE_FINISHED);
    CHECK_OK(cf_future_result(f, CF_FOREVER, &r));
    CHECK(r == &a);
    int code = -1;
    const char *msg = sentinel_msg;
    CHECK_OK(cf_future_exception(f, 0, &code, &msg));
    CHECK_EQ_LL(code, 0);
    CHECK(msg == NULL);
    cf_future_release(f);

    /* set_result straight from PENDING (Python allows it), and a NULL result. */
    f = new_promise();
    CHECK_OK(cf_future_set_result(f, NULL));
    CHECK_STATE(f, CF_STATE_FINISHED);
    r = SENTINEL_PTR;
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(r == NULL);
    CHECK_STATUS(cf_future_set_result(f, &a), CF_INVALID_STATE);
    CHECK_OK(cf_future_result(f, 0, &r));
    CHECK(r == NULL);
    cf_future_release(f);
}

static void test_set_exception(void) {
    int a = 1;
    cf_future *f = new_promise();
    char buf[32];
    strcpy(buf, "promise failed");
    CHECK_OK(cf_future_set_exception(f, 17, buf));
    memset(buf, 'X', sizeof buf - 1); /* the library keeps its own copy */
    CHECK_STATE(f, CF_STATE_FINISHED);
    CHECK(cf_future_done(f));
    CHECK(!cf_future_cancelled(f));

    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_TASK_FAILED);
    CHECK(r == SENTINEL_PTR);
    int code = -1;
    const char *msg = NULL;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_TASK_FAILED);
    CHECK_EQ_LL(code, 17);
    CHECK_STREQ(msg, "promise failed");
    CHECK_OK(cf_future_wait(f, 0));

    /* test_multiple_set_exception: the first error stays. */
    CHECK_STATUS(cf_future_set_exception(f, 18, "second"), CF_INVALID_STATE);
    CHECK_STATUS(cf_future_set_result(f, &a), CF_INVALID_STATE);
    const char *msg2 = NULL;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg2), CF_TASK_FAILED);
    CHECK_EQ_LL(code, 17);
    CHECK_STREQ(msg2, "promise failed");
    CHECK_STREQ(msg, "promise failed"); /* the first message is still valid */
    cf_future_release(f);

    /* From RUNNING, with a NULL message. */
    f = new_promise();
    CHECK_OK(cf_future_set_running_or_notify_cancel(f));
    CHECK_OK(cf_future_set_exception(f, -4, NULL));
    msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TASK_FAILED);
    CHECK_EQ_LL(code, -4);
    CHECK(msg == NULL);
    cf_future_release(f);
}

static void test_cancel_promise(void) {
    int a = 1;
    /* test_cancel: pending -> true and CANCELLED; again -> true. */
    cf_future *f = new_promise();
    CHECK(cf_future_cancel(f));
    CHECK_STATE(f, CF_STATE_CANCELLED);
    CHECK(cf_future_cancelled(f));
    CHECK(cf_future_done(f));
    CHECK(!cf_future_running(f));
    CHECK(cf_future_cancel(f));
    CHECK_STATE(f, CF_STATE_CANCELLED);

    void *r = SENTINEL_PTR;
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_CANCELLED);
    CHECK_STATUS(cf_future_result(f, CF_FOREVER, &r), CF_CANCELLED);
    CHECK(r == SENTINEL_PTR);
    int code = -999;
    const char *msg = sentinel_msg;
    CHECK_STATUS(cf_future_exception(f, CF_FOREVER, &code, &msg), CF_CANCELLED);
    CHECK_OK(cf_future_wait(f, 0));

    /* Setting a cancelled future fails and changes nothing. */
    CHECK_STATUS(cf_future_set_result(f, &a), CF_INVALID_STATE);
    CHECK_STATUS(cf_future_set_exception(f, 1, "no"), CF_INVALID_STATE);
    CHECK_STATE(f, CF_STATE_CANCELLED);

    /* The worker side learns about the cancellation. */
    CHECK_STATUS(cf_future_set_running_or_notify_cancel(f), CF_CANCELLED);
    CHECK(cf_future_cancelled(f));
    CHECK(cf_future_done(f));
    CHECK(cf_future_cancel(f)); /* still cancelled */
    CHECK_STATUS(cf_future_set_result(f, &a), CF_INVALID_STATE);
    CHECK_STATUS(cf_future_result(f, 0, &r), CF_CANCELLED);
    CHECK(r == SENTINEL_PTR);
    cf_future_release(f);

    /* test_cancel: a finished future (result or error) cannot be cancelled. */
    f = new_promise();
    CHECK_OK(cf_future_set_result(f, &a));
    CHECK(!cf_future_cancel(f));
    CHECK_STATE(f, CF_STATE_FINISHED);
    cf_future_release(f);
    f = new_promise();
    CHECK_OK(cf_future_set_exception(f, 1, "err"));
    CHECK(!cf_future_cancel(f));
    CHECK_STATE(f, CF_STATE_FINISHED);
    cf_future_release(f);

    /* A promise released while pending (never completed) is simply freed. */
    f = new_promise();
    cf_future_release(f);
    f = new_promise();
    CHECK_OK(cf_future_set_running_or_notify_cancel(f));
    cf_future_release(f);
}

/* ---- completing from another thread ------------------------------------------------ */

typedef struct completer {
    cf_future *f;
    int action; /* 0 set_result, 1 set_exception, 2 cancel */
    void *value;
    counter *go;
} completer;

static void *completer_main(void *arg) {
    completer *c = (completer *)arg;
    /* Wait until the main thread says it is about to wait on the future. */
    CHECK(counter_wait(c->go, 1, LONG_WAIT));
    if (c->action == 0) CHECK_OK(cf_future_set_result(c->f, c->value));
    if (c->action == 1) CHECK_OK(cf_future_set_exception(c->f, 31, "from another thread"));
    if (c->action == 2) CHECK(cf_future_cancel(c->f));
    return NULL;
}

typedef struct waiter {
    cf_future *f;
    double timeout;
    cf_status st;
    void *result;
    counter *ready;
} waiter;

static void *waiter_main(void *arg) {
    waiter *w = (waiter *)arg;
    counter_add(w->ready, 1);
    w->st = cf_future_result(w->f, w->timeout, &w->result);
    return NULL;
}

static void test_cross_thread(void) {
    int value = 99;
    for (int action = 0; action < 3; action++) {
        for (int variant = 0; variant < 2; variant++) {
            cf_future *f = new_promise();
            counter go;
            counter_init(&go);
            completer c = {.f = f, .action = action, .value = &value, .go = &go};
            pthread_t t;
            CHECK(pthread_create(&t, NULL, completer_main, &c) == 0);
            counter_add(&go, 1);
            void *r = SENTINEL_PTR;
            cf_status st = cf_future_result(f, variant == 0 ? CF_FOREVER : LONG_WAIT, &r);
            if (action == 0) {
                CHECK_STATUS(st, CF_OK);
                CHECK(r == &value);
            } else if (action == 1) {
                CHECK_STATUS(st, CF_TASK_FAILED);
                CHECK(r == SENTINEL_PTR);
                int code = 0;
                const char *msg = NULL;
                CHECK_STATUS(cf_future_exception(f, 0, &code, &msg), CF_TASK_FAILED);
                CHECK_EQ_LL(code, 31);
                CHECK_STREQ(msg, "from another thread");
            } else {
                CHECK_STATUS(st, CF_CANCELLED);
                CHECK(r == SENTINEL_PTR);
            }
            CHECK(pthread_join(t, NULL) == 0);
            counter_destroy(&go);
            cf_future_release(f);
        }
    }

    /* Several waiters in other threads, woken by this thread's set_result. */
    enum { NW = 6 };
    cf_future *f = new_promise();
    counter ready;
    counter_init(&ready);
    waiter w[NW];
    pthread_t th[NW];
    for (int i = 0; i < NW; i++) {
        w[i] = (waiter){.f = f, .timeout = (i % 2) ? CF_FOREVER : LONG_WAIT, .st = CF_PANIC,
                        .result = SENTINEL_PTR, .ready = &ready};
        CHECK(pthread_create(&th[i], NULL, waiter_main, &w[i]) == 0);
    }
    CHECK(counter_wait(&ready, NW, LONG_WAIT));
    /* Give the waiters time to block; whether or not they have, they must get the value. */
    CHECK_STATUS(cf_future_wait(f, 0.05), CF_TIMEOUT);
    CHECK_OK(cf_future_set_result(f, &value));
    for (int i = 0; i < NW; i++) {
        CHECK(pthread_join(th[i], NULL) == 0);
        CHECK_STATUS(w[i].st, CF_OK);
        CHECK(w[i].result == &value);
    }
    counter_destroy(&ready);
    cf_future_release(f);
}

/* Many promises, each set by one of several threads while another thread waits. */
enum { NP = 400, NSETTERS = 4 };
static cf_future *many[NP];
static atomic_int setter_wins[NP];

static void *setter_main(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    for (int i = 0; i < NP; i++) {
        cf_status st = cf_future_set_result(many[i], (void *)(id + 1));
        if (st == CF_OK) {
            atomic_fetch_add(&setter_wins[i], 1);
        } else {
            CHECK_STATUS(st, CF_INVALID_STATE);
        }
    }
    return NULL;
}

static void test_racing_setters(void) {
    for (int i = 0; i < NP; i++) {
        many[i] = new_promise();
        atomic_init(&setter_wins[i], 0);
    }
    pthread_t th[NSETTERS];
    for (uintptr_t k = 0; k < NSETTERS; k++)
        CHECK(pthread_create(&th[k], NULL, setter_main, (void *)k) == 0);
    for (int i = 0; i < NP; i++) {
        void *r = NULL;
        CHECK_OK(cf_future_result(many[i], CF_FOREVER, &r));
        CHECK((uintptr_t)r >= 1 && (uintptr_t)r <= NSETTERS);
    }
    for (int k = 0; k < NSETTERS; k++) CHECK(pthread_join(th[k], NULL) == 0);
    for (int i = 0; i < NP; i++) {
        CHECK_EQ_LL(atomic_load(&setter_wins[i]), 1); /* exactly one setter won */
        cf_future_release(many[i]);
    }
}

int main(void) {
    watchdog_start(100);
    test_set_result();
    test_set_exception();
    test_cancel_promise();
    test_cross_thread();
    test_racing_setters();
    printf("test_future_promise: ok\n");
    return 0;
}
