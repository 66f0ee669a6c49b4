/* Part of stress.c (included once, before do_op): the ops "then" and "when".
 *
 * then: cf_future_then on the current thread pool or inline (ex NULL; the only choice on
 * process pools, which must refuse it with CF_INVALID_ARGUMENT), on pending and done
 * antecedents (live futures, fresh promises, other continuations), cancelled now and
 * then, and in a private pool shut down before the antecedent is done. Every
 * continuation gets a done callback (then_cb) at once, which checks its outcome:
 *   - fn's value (fn ran exactly once, with the antecedent it was chained to, done), or
 *     fn's cf_raise code and message;
 *   - CF_CANCELLED only if a cancel was attempted or its pool was shut down with
 *     cancel_futures, and fn never ran;
 *   - CF_SHUTDOWN (code 0, a message) only if its pool was shut down, and fn never ran;
 *     exactly CF_SHUTDOWN, already when the shutdown returns, when the private pool was
 *     shut down while the antecedent was pending;
 *   - inline continuations of a promise are done when the call that completes it
 *     returns, and those of a done antecedent when cf_future_then returns.
 * At the end: every continuation's callback ran once; fn ran exactly when it finished.
 *
 * when: cf_when over random live sets (duplicates, done and pending, promises, an
 * already-done promise mixed in) with each return_when: once done, its index names a
 * done future, the first of its duplicates, that completes the condition (cf_wait on
 * the same futures says CF_OK at once); a condition that held before the call is
 * finished before cf_when returns, named by the lowest index of those done before (or
 * failed, for CF_FIRST_EXCEPTION). Over private promises completed one by one in a
 * random order (results, exceptions, cancels), the index is exactly known, and the
 * result is done exactly when the condition holds. Cancelling a pending one gives
 * CF_CANCELLED; released unread ones must not leak (valgrind/ASan runs). */

typedef struct then_rec {
    uintptr_t arg;   /* fn's argument: K_VALUE or K_FAIL, the record's index */
    uintptr_t ante;  /* the antecedent, as an identity */
    uintptr_t cont;  /* the continuation, as an identity */
    unsigned slot;   /* the pool slot (pool continuations) */
    bool on_pool;
    atomic_int calls;            /* fn calls */
    atomic_int cancel_attempted; /* someone called cf_future_cancel on it */
    atomic_int must_shutdown;    /* its (private) pool was shut down, antecedent pending */
    atomic_int cb_calls, cb_status;
} then_rec;

static then_rec *g_thens;
static size_t g_then_cap;
static atomic_size_t g_n_thens;

static atomic_long g_then_stats[6];        /* ok, failed, cancelled, shutdown, inline, pool */

static then_rec *new_then(bool value) {
    size_t i = atomic_fetch_add(&g_n_thens, 1);
    if (i >= g_then_cap) {
        atomic_fetch_sub(&g_n_thens, 1);
        return NULL;
    }
    then_rec *t = &g_thens[i];
    t->arg = make_arg(value ? K_VALUE : K_FAIL, false, 0, i);
    atomic_store(&t->cb_status, -1);
    return t;
}

static void *then_fn(void *arg, cf_future *ante) {
    uintptr_t a = (uintptr_t)arg;
    then_rec *t = &g_thens[arg_idx(a)];
    int calls = atomic_fetch_add(&t->calls, 1);
    REQUIRE(calls == 0, "then: fn of continuation %" PRIu64 " ran %d times", arg_idx(a), calls + 1);
    REQUIRE((uintptr_t)ante == t->ante, "then: fn got antecedent %p, chained to %p", (void *)ante,
            (void *)t->ante);
    REQUIRE(cf_future_done(ante), "then: fn ran before its antecedent was done");
    void *v = (void *)&v;
    cf_status s = cf_future_result(ante, 0.0, &v);
    REQUIRE(s != CF_TIMEOUT, "then: the antecedent's result timed out in fn");
    if (arg_kind(a) == K_FAIL) {
        char msg[96];
        fail_msg(a, msg, sizeof msg);
        return cf_raise(fail_code(a), msg);
    }
    return (void *)task_value(a);
}

static void then_cb(cf_future *f, void *ud) {
    then_rec *t = ud;
    size_t i = (size_t)(t - g_thens);
    REQUIRE((uintptr_t)f == t->cont, "then: callback of continuation %zu got another future", i);
    int cbs = atomic_fetch_add(&t->cb_calls, 1);
    REQUIRE(cbs == 0, "then: the callback of continuation %zu ran %d times", i, cbs + 1);
    void *v = (void *)&v;
    cf_status st = cf_future_result(f, 0.0, &v);
    int calls = atomic_load(&t->calls);
    int code = -7;
    const char *msg = NULL;
    switch (st) {
    case CF_OK:
        REQUIRE(arg_kind(t->arg) == K_VALUE, "then: continuation %zu succeeded, fn raised", i);
        REQUIRE((uintptr_t)v == task_value(t->arg), "then: continuation %zu value %p, fn gave %" PRIxPTR,
                i, v, task_value(t->arg));
        REQUIRE(calls == 1, "then: continuation %zu finished, fn ran %d times", i, calls);
        break;
    case CF_TASK_FAILED: {
        char want[96];
        fail_msg(t->arg, want, sizeof want);
        REQUIRE(cf_future_exception(f, 0.0, &code, &msg) == CF_TASK_FAILED, "then: exception");
        REQUIRE(arg_kind(t->arg) == K_FAIL && code == fail_code(t->arg) && msg != NULL &&
                    strcmp(msg, want) == 0,
                "then: continuation %zu failed with %d \"%s\"", i, code, msg ? msg : "(null)");
        REQUIRE(calls == 1, "then: continuation %zu failed, fn ran %d times", i, calls);
        break;
    }
    case CF_CANCELLED:
        REQUIRE(atomic_load(&t->cancel_attempted) ||
                    (t->on_pool && atomic_load(&g_cancel_shut[t->slot])),
                "then: continuation %zu (%s) cancelled, but nobody cancelled it", i,
                t->on_pool ? "pool" : "inline");
        REQUIRE(calls == 0, "then: continuation %zu cancelled, fn ran %d times", i, calls);
        break;
    case CF_SHUTDOWN:
        REQUIRE(t->on_pool && atomic_load(&g_slot_shut[t->slot]),
                "then: continuation %zu (%s, pool %u) gave CF_SHUTDOWN, its pool was not shut down",
                i, t->on_pool ? "pool" : "inline", t->slot);
        REQUIRE(cf_future_exception(f, 0.0, &code, &msg) == CF_SHUTDOWN && code == 0 && msg != NULL,
                "then: CF_SHUTDOWN outcome without code 0 and a message");
        REQUIRE(calls == 0, "then: continuation %zu shut down, fn ran %d times", i, calls);
        break;
    default:
        fail("then: continuation %zu (%s) gave %s", i, t->on_pool ? "pool" : "inline", sname(st));
    }
    if (atomic_load(&t->must_shutdown))
        REQUIRE(st == CF_SHUTDOWN, "then: continuation %zu: pool shut down while its antecedent "
                "was pending, outcome %s", i, sname(st));
    atomic_fetch_add(&g_then_stats[st == CF_OK ? 0 : st == CF_TASK_FAILED ? 1 : st == CF_CANCELLED ? 2 : 3], 1);
    atomic_store(&t->cb_status, (int)st);
}

/* cf_future_then(ante, ex, ...) with a new record; the continuation (a reference), or
 * NULL if no record was left or ex refused it (checked). */
static cf_future *chain(cf_future *ante, pool_ref *p, cf_executor *ex, rng *r, then_rec **out) {
    then_rec *t = new_then(chance(r, 850));
    if (t == NULL) return NULL;
    t->ante = (uintptr_t)ante;
    t->on_pool = ex != NULL;
    t->slot = p != NULL ? p->slot : 0;
    bool was_done = cf_future_done(ante);
    cf_future *c = (cf_future *)&t;
    cf_status s = cf_future_then(ante, ex, then_fn, (void *)t->arg, &c);
    if (s != CF_OK) {
        REQUIRE(c == (cf_future *)&t, "then: a failed cf_future_then wrote its out-parameter");
        REQUIRE(s == CF_SHUTDOWN && ex != NULL && atomic_load(&g_slot_shut[t->slot]),
                "cf_future_then gave %s", sname(s));
        return NULL;
    }
    REQUIRE(c != NULL && c != (cf_future *)&t, "cf_future_then gave CF_OK without a future");
    t->cont = (uintptr_t)c;
    if (ex == NULL && was_done)
        REQUIRE(cf_future_done(c) && atomic_load(&t->calls) + atomic_load(&t->cancel_attempted) >= 1,
                "then: an inline continuation of a done antecedent did not run before the call returned");
    REQUIRE(cf_future_add_done_callback(c, then_cb, t) == CF_OK, "then: add_done_callback");
    atomic_fetch_add(&g_then_stats[ex == NULL ? 4 : 5], 1);
    *out = t;
    return c;
}

static void cancel_cont(then_rec *t, cf_future *c) {
    atomic_store(&t->cancel_attempted, 1);
    bool was_finished = cf_future_done(c) && !cf_future_cancelled(c);
    bool ok = cf_future_cancel(c);
    if (ok) REQUIRE(cf_future_cancelled(c), "then: cancel true, not cancelled");
    if (was_finished) REQUIRE(!ok, "then: cancel of a finished continuation gave true");
}

/* Shutdown before the antecedent is done, in a pool of the op's own. */
static void then_private_pool(rng *r) {
    cf_executor_options o;
    memset(&o, 0, sizeof o);
    o.max_workers = 1 + rndn(r, 2);
    cf_executor *ex = NULL;
    REQUIRE(cf_thread_pool_new(&o, &ex) == CF_OK, "then: a private pool");
    unsigned slot = atomic_fetch_add(&g_next_slot, 1);
    REQUIRE(slot < MAX_POOLS, "too many pools");
    pool_ref pr = {.ex = ex, .slot = slot};
    cf_future *prom = NULL;
    REQUIRE(cf_future_new(&prom) == CF_OK, "cf_future_new");
    then_rec *ts[3] = {0};
    cf_future *cs[3] = {0};
    cf_future *ante = prom;
    int n = 1 + (int)rndn(r, 3);
    for (int k = 0; k < n; k++) { /* a chain: each link on the pool, antecedent pending */
        cs[k] = chain(ante, &pr, ex, r, &ts[k]);
        if (cs[k] == NULL) break;
        atomic_store(&ts[k]->must_shutdown, 1);
        ante = cs[k];
    }
    /* one on a done antecedent: it runs (before the shutdown) */
    then_rec *td = NULL;
    cf_future *done_one = NULL;
    if (chance(r, 500)) {
        cf_future *d = NULL;
        REQUIRE(cf_future_new(&d) == CF_OK, "cf_future_new");
        REQUIRE(cf_future_set_result(d, (void *)1) == CF_OK, "set_result");
        done_one = chain(d, &pr, ex, r, &td);
        cf_future_release(d);
        if (done_one != NULL) {
            cf_status s = cf_future_wait(done_one, CF_FOREVER);
            REQUIRE(s == CF_OK, "then: waiting for a continuation of a done antecedent: %s", sname(s));
            REQUIRE(atomic_load(&td->calls) == 1, "then: a continuation of a done antecedent "
                    "is done, fn ran %d times", atomic_load(&td->calls));
        }
    }
    bool cancel = chance(r, 500);
    if (cancel) atomic_store(&g_cancel_shut[slot], true);
    atomic_store(&g_slot_shut[slot], true);
    REQUIRE(cf_executor_shutdown(ex, chance(r, 500), cancel) == CF_OK, "then: shutdown");
    for (int k = 0; k < n && cs[k] != NULL; k++) {
        REQUIRE(cf_future_done(cs[k]), "then: link %d not done when the shutdown returned", k);
        REQUIRE(atomic_load(&ts[k]->cb_status) == CF_SHUTDOWN,
                "then: link %d of a pool shut down before its antecedent was done: %s", k,
                sname((cf_status)atomic_load(&ts[k]->cb_status)));
    }
    cf_future *x = (cf_future *)&x;
    cf_status s = cf_future_then(prom, ex, then_fn, NULL, &x);
    REQUIRE(s == CF_SHUTDOWN && x == (cf_future *)&x, "then on a shut pool gave %s", sname(s));
    if (chance(r, 500)) { /* never used again: may go now */
        cf_executor_free(ex);
        ex = NULL;
    }
    if (chance(r, 500))
        REQUIRE(cf_future_set_result(prom, NULL) == CF_OK, "set_result");
    else
        cf_future_cancel(prom);
    for (int k = 0; k < n && cs[k] != NULL; k++) {
        REQUIRE(atomic_load(&ts[k]->calls) == 0, "then: fn of a shut-down link ran");
        cf_future_release(cs[k]);
    }
    cf_future_release(done_one);
    cf_future_release(prom);
    if (ex != NULL) cf_executor_free(ex);
}

static void op_then(rng *r) {
    if (!g_process && chance(r, 100)) {
        then_private_pool(r);
        return;
    }
    pool_ref *p = get_pool();
    if (p == NULL) return;
    cf_executor *ex = p->ex;
    if (g_process) {
        cf_future *x = (cf_future *)&x;
        cf_future *d = NULL;
        REQUIRE(cf_future_new(&d) == CF_OK, "cf_future_new");
        cf_status s = cf_future_then(d, ex, then_fn, NULL, &x);
        REQUIRE(s == CF_INVALID_ARGUMENT && x == (cf_future *)&x,
                "cf_future_then on a process pool gave %s", sname(s));
        cf_future_release(d);
    }
    /* the antecedent: a live future (pending or done) or a promise of this op's */
    entry *e = NULL;
    cf_future *prom = NULL, *ante = chance(r, 600) ? pick_live(r, &e) : NULL;
    if (ante == NULL) {
        REQUIRE(cf_future_new(&prom) == CF_OK, "cf_future_new");
        if (chance(r, 200)) REQUIRE(cf_future_set_result(prom, (void *)2) == CF_OK, "set_result");
        ante = cf_future_retain(prom);
    }
    int n = 1 + (int)(chance(r, 300) ? rndn(r, 4) : 0);
    then_rec *ts[5] = {0};
    cf_future *cs[5] = {0};
    bool inl[5] = {0};
    cf_future *a = ante;
    for (int k = 0; k < n; k++) {
        bool use_pool = !g_process && chance(r, 600);
        inl[k] = !use_pool;
        cs[k] = chain(a, p, use_pool ? ex : NULL, r, &ts[k]);
        if (cs[k] == NULL) break;
        if (chance(r, 120)) cancel_cont(ts[k], cs[k]);
        a = cs[k];
    }
    if (prom != NULL && !cf_future_done(prom)) {
        uint32_t how = rndn(r, 10);
        cf_status s = how < 6   ? cf_future_set_result(prom, (void *)3)
                      : how < 9 ? cf_future_set_exception(prom, 5, "antecedent failed")
                                : (cf_future_cancel(prom) ? CF_OK : CF_INVALID_STATE);
        REQUIRE(s == CF_OK, "completing the antecedent promise: %s", sname(s));
        /* inline links run in this thread while it completes the promise */
        for (int k = 0; k < n && cs[k] != NULL && inl[k]; k++)
            REQUIRE(cf_future_done(cs[k]), "then: inline link %d of %d not done after its "
                    "antecedent promise was completed", k, n);
    }
    for (int k = 0; k < n && cs[k] != NULL; k++) {
        if (chance(r, 100)) cancel_cont(ts[k], cs[k]);
        if (chance(r, 300)) {
            cf_status s = cf_future_wait(cs[k], pick_timeout(r, 100));
            REQUIRE(s == CF_OK || s == CF_TIMEOUT, "then: wait gave %s", sname(s));
        }
    }
    for (int k = 0; k < n; k++) cf_future_release(cs[k]);
    cf_future_release(ante);
    cf_future_release(prom);
    put_pool(p);
}

static void check_thens(void) {
    size_t n = atomic_load(&g_n_thens);
    for (size_t i = 0; i < n; i++) {
        then_rec *t = &g_thens[i];
        if (t->cont == 0) continue; /* refused */
        REQUIRE(atomic_load(&t->cb_calls) == 1, "then: continuation %zu (%s) callback ran %d times "
                "(not done at the end?)", i, t->on_pool ? "pool" : "inline", atomic_load(&t->cb_calls));
        cf_status st = (cf_status)atomic_load(&t->cb_status);
        int want = st == CF_OK || st == CF_TASK_FAILED;
        REQUIRE(atomic_load(&t->calls) == want, "then: continuation %zu ended %s, fn ran %d times", i,
                sname(st), atomic_load(&t->calls));
    }
    if (g_verbose)
        fprintf(stderr, "  then: %zu continuations (inline %ld, pool %ld): ok %ld failed %ld "
                "cancelled %ld shutdown %ld\n", n, atomic_load(&g_then_stats[4]),
                atomic_load(&g_then_stats[5]), atomic_load(&g_then_stats[0]),
                atomic_load(&g_then_stats[1]), atomic_load(&g_then_stats[2]),
                atomic_load(&g_then_stats[3]));
}

/* ---- when ---------------------------------------------------------------------------- */

static bool is_failure(cf_future *f) {
    int code;
    const char *msg;
    cf_status s = cf_future_exception(f, 0.0, &code, &msg);
    return s != CF_OK && s != CF_CANCELLED && s != CF_TIMEOUT;
}

/* Checks a done cf_when result `w` over fs (n) against cf_wait on the same futures. */
static size_t check_when_index(cf_future *w, cf_future **fs, size_t n, cf_return_when rw,
                               const char *where) {
    void *v = (void *)&v;
    cf_status s = cf_future_result(w, 0.0, &v);
    REQUIRE(s == CF_OK, "%s: cf_when result gave %s", where, sname(s));
    size_t i = (size_t)(uintptr_t)v;
    if (n == 0) {
        REQUIRE(i == 0, "%s: cf_when over nothing gave %zu", where, i);
        return 0;
    }
    REQUIRE(i < n, "%s: cf_when index %zu of %zu", where, i, n);
    REQUIRE(cf_future_done(fs[i]), "%s: cf_when named %zu, which is not done", where, i);
    for (size_t j = 0; j < i; j++)
        REQUIRE(fs[j] != fs[i], "%s: cf_when named %zu, a duplicate of %zu", where, i, j);
    bool flags[SET_MAX];
    size_t nd = 0;
    s = cf_wait(fs, n, rw, 0.0, flags, &nd);
    REQUIRE(s == CF_OK, "%s: cf_when (return_when %u) done with index %zu, but cf_wait on the same "
            "futures gives %s (%zu of %zu done)", where, rw, i, sname(s), nd, n);
    if (rw == CF_FIRST_EXCEPTION && nd < n)
        REQUIRE(is_failure(fs[i]), "%s: FIRST_EXCEPTION named %zu, which did not fail, with %zu of "
                "%zu done", where, i, nd, n);
    return i;
}

/* cf_when over live futures (and an already-done promise). */
static void when_live(rng *r) {
    cf_future *fs[SET_MAX];
    entry *es[SET_MAX];
    size_t n = pick_set(r, fs, es, SET_MAX - 3);
    cf_future *extra = NULL;
    if (chance(r, 300)) { /* an already-done input, anywhere */
        REQUIRE(cf_future_new(&extra) == CF_OK, "cf_future_new");
        if (chance(r, 500)) cf_future_set_result(extra, NULL);
        else cf_future_set_exception(extra, 9, "done before");
        size_t at = rndn(r, (uint32_t)n + 1);
        for (size_t j = n; j > at; j--) fs[j] = fs[j - 1];
        fs[at] = cf_future_retain(extra);
        n++;
    }
    cf_return_when rw = (cf_return_when)rndn(r, 3);
    /* those done before the call, and the lowest such index (failed, for FIRST_EXCEPTION) */
    size_t lo_done = SIZE_MAX, lo_failed = SIZE_MAX;
    bool all = true;
    for (size_t i = 0; i < n; i++) {
        if (cf_future_done(fs[i])) {
            if (lo_done == SIZE_MAX) lo_done = i;
            if (lo_failed == SIZE_MAX && is_failure(fs[i])) lo_failed = i;
        } else {
            all = false;
        }
    }
    cf_future *w = (cf_future *)&w;
    cf_status s = cf_when(n ? fs : (chance(r, 500) ? NULL : fs), n, rw, &w);
    REQUIRE(s == CF_OK && w != NULL && w != (cf_future *)&w, "cf_when gave %s", sname(s));
    bool held = n == 0 || (rw == CF_FIRST_COMPLETED ? lo_done != SIZE_MAX
                           : rw == CF_ALL_COMPLETED ? all
                                                    : (all || lo_failed != SIZE_MAX));
    if (held) {
        REQUIRE(cf_future_done(w), "cf_when (return_when %u): the condition held before the call, "
                "the result is not done when it returns", rw);
        size_t i = check_when_index(w, fs, n, rw, "when");
        size_t bound = rw == CF_FIRST_COMPLETED ? lo_done
                       : rw == CF_ALL_COMPLETED ? 0
                       : lo_failed != SIZE_MAX  ? lo_failed
                                                : 0;
        if (n > 0)
            REQUIRE(i <= bound, "cf_when (return_when %u): index %zu, but %zu was done (or failed) "
                    "before the call", rw, i, bound);
    }
    uint32_t what = rndn(r, 10);
    if (what < 2) { /* cancel it */
        bool was_done = cf_future_done(w); /* finished: cf_when is never cancelled by others */
        bool c = cf_future_cancel(w);
        if (was_done) REQUIRE(!c, "cancel of a finished cf_when gave true");
        void *v = NULL;
        if (c) REQUIRE(cf_future_result(w, 0.0, &v) == CF_CANCELLED, "cancelled cf_when");
        else check_when_index(w, fs, n, rw, "when (cancel false)");
    } else if (what < 7) { /* wait for it */
        double t = pick_timeout(r, 200);
        s = cf_future_wait(w, t);
        REQUIRE(s == CF_OK || (s == CF_TIMEOUT && t >= 0), "cf_when: wait(%g) gave %s", t, sname(s));
        if (s == CF_OK) check_when_index(w, fs, n, rw, "when (waited)");
    } else if (chance(r, 500)) { /* release the inputs first: w keeps what it needs */
        for (size_t i = 0; i < n; i++) cf_future_release(fs[i]);
        n = 0;
    }
    for (size_t i = 0; i < n; i++) cf_future_release(fs[i]);
    cf_future_release(w);
    cf_future_release(extra);
}

/* cf_when over promises of this op's, completed in a random order: the index is known. */
static void when_exact(rng *r) {
    enum { N = 6 };
    cf_future *ps[N], *fs[2 * N]; /* each promise once, and at most one duplicate each */
    size_t k = 1 + rndn(r, N), n = 0;
    for (size_t i = 0; i < k; i++) REQUIRE(cf_future_new(&ps[i]) == CF_OK, "cf_future_new");
    size_t first[N];
    for (size_t i = 0; i < k; i++) {
        first[i] = n;
        fs[n++] = ps[i];
        if (chance(r, 150)) fs[n++] = ps[rndn(r, (uint32_t)i + 1)]; /* duplicate */
    }
    /* first index of each promise in fs */
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < n; j++)
            if (fs[j] == ps[i]) {
                first[i] = j;
                break;
            }
    cf_return_when rw = (cf_return_when)rndn(r, 3);
    size_t pre = rndn(r, 3) == 0 ? rndn(r, (uint32_t)k + 1) : 0; /* done before the call */
    size_t order[N];
    for (size_t i = 0; i < k; i++) order[i] = i;
    for (size_t i = k; i > 1; i--) {
        size_t j = rndn(r, (uint32_t)i), tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
    bool failed[N] = {0};
    for (size_t i = 0; i < k; i++) {
        uint32_t how = rndn(r, 10);
        failed[i] = how >= 6 && how < 9;
    }
    cf_future *w = NULL;
    size_t want = SIZE_MAX, lo_pre = SIZE_MAX, lo_pre_failed = SIZE_MAX;
    size_t done = 0;
    bool cancel_w = chance(r, 100);
    for (size_t step = 0; step <= k; step++) {
        if (step == pre) {
            if (pre > 0 && want == SIZE_MAX) { /* the condition held before the call */
                if (rw == CF_FIRST_COMPLETED) want = lo_pre;
                else if (rw == CF_FIRST_EXCEPTION && lo_pre_failed != SIZE_MAX) want = lo_pre_failed;
                else if (pre == k) want = lo_pre;
            }
            REQUIRE(cf_when(fs, n, rw, &w) == CF_OK, "cf_when");
            REQUIRE(cf_future_done(w) == (want != SIZE_MAX), "cf_when over %zu promises (%zu done "
                    "before, return_when %u): done %d, expected %d", k, pre, rw, cf_future_done(w),
                    want != SIZE_MAX);
            if (cancel_w) {
                bool c = cf_future_cancel(w);
                REQUIRE(c == (want == SIZE_MAX), "cf_when: cancel gave %d", c);
            }
        }
        if (step == k) break;
        size_t i = order[step];
        uint32_t how = rndn(r, 10);
        if (failed[i]) REQUIRE(cf_future_set_exception(ps[i], 3, "x") == CF_OK, "set_exception");
        else if (how < 8) REQUIRE(cf_future_set_result(ps[i], NULL) == CF_OK, "set_result");
        else REQUIRE(cf_future_cancel(ps[i]), "cancel a pending promise");
        done++;
        if (step < pre) {
            if (first[i] < lo_pre) lo_pre = first[i];
            if (failed[i] && first[i] < lo_pre_failed) lo_pre_failed = first[i];
        } else if (want == SIZE_MAX) {
            bool hit = rw == CF_FIRST_COMPLETED || done == k || (rw == CF_FIRST_EXCEPTION && failed[i]);
            if (hit) want = first[i];
        }
        if (step >= pre && !cancel_w)
            REQUIRE(cf_future_done(w) == (want != SIZE_MAX), "cf_when (return_when %u) over %zu "
                    "promises, %zu done: result done %d, expected %d", rw, k, done,
                    cf_future_done(w), want != SIZE_MAX);
    }
    if (!cancel_w || cf_future_done(w)) {
        if (!cf_future_cancelled(w)) {
            void *v = NULL;
            REQUIRE(cf_future_result(w, 0.0, &v) == CF_OK, "cf_when result");
            REQUIRE((size_t)(uintptr_t)v == want, "cf_when (return_when %u) over %zu promises (%zu "
                    "done before the call): index %zu, expected %zu", rw, k, pre,
                    (size_t)(uintptr_t)v, want);
            check_when_index(w, fs, n, rw, "when (exact)");
        } else {
            REQUIRE(cancel_w, "cf_when cancelled, nobody cancelled it");
        }
    }
    cf_future_release(w);
    for (size_t i = 0; i < k; i++) cf_future_release(ps[i]);
}

static void op_when(rng *r) {
    if (chance(r, 300)) when_exact(r);
    else when_live(r);
}
