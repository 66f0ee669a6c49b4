/// @file cfutures.hpp
/// cfutures for C++: Python's concurrent.futures with lambdas, values of any type,
/// exceptions and std::chrono. Header-only, over libcfutures (C++17; `co_await` on a
/// future with C++20). Link with the same library as C programs: the CMake target
/// `cfutures::cfutures` or `pkg-config cfutures`.
///
/// Every object here wraps a handle of `cfutures.h`, reachable with `native_handle()`,
/// so any C function of the library can be used next to this header.
///
/// Ownership, in short: a `cf::future<T>` is a counted reference to one C future; the
/// value a task returned lives in the C future (in its result pointer when `T` is
/// trivially copyable and no larger than a pointer, otherwise in a heap box the C future
/// frees through `result_free`), so it is destroyed exactly once, with the last
/// reference, read or not. A task's callable and arguments are moved into the task and
/// destroyed once it is done with them, also when it never runs (`arg_free`). An
/// exception thrown by a task is kept as a `std::exception_ptr` in the C future's
/// failure (`cf_raise_payload`) and rethrown as the same object.
#ifndef CFUTURES_HPP
#define CFUTURES_HPP

#include "cfutures.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if __cplusplus >= 202002L && defined(__has_include)
#if __has_include(<coroutine>)
#include <coroutine>
/// Defined when `co_await` on a `cf::future` is available (C++20 with `<coroutine>`).
#define CFUTURES_HPP_COROUTINES 1
#endif
#endif


namespace cf {

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Every error of the library: `status()` is the C status code, `what()` a readable text.
struct error : std::runtime_error {
    error(cf_status status, const std::string &what) : std::runtime_error(what), status_(status) {}
    /// The C status code (`CF_TIMEOUT`, ...).
    cf_status status() const noexcept { return status_; }

private:
    cf_status status_;
};
/// CF_TIMEOUT: a wait's limit passed (Python's TimeoutError).
struct timeout_error : error {
    using error::error;
};
/// CF_CANCELLED: the future was cancelled (Python's CancelledError).
struct cancelled_error : error {
    using error::error;
};
/// CF_BROKEN: the executor broke (Python's BrokenExecutor); also a task whose worker
/// process died.
struct broken_executor : error {
    using error::error;
};
/// CF_SHUTDOWN: the executor was shut down (Python's RuntimeError from submit).
struct shutdown_error : error {
    using error::error;
};
/// CF_INVALID_STATE: e.g. setting a promise twice (Python's InvalidStateError).
struct invalid_state_error : error {
    using error::error;
};
/// CF_DEADLINE: the task's own time limit passed (not a wait's).
struct deadline_error : error {
    using error::error;
};
/// CF_TASK_FAILED raised by C code (`cf_raise`: `code()` and the message), or any
/// exception that crossed a process boundary (`what()` is its message, code 0).
struct task_error : error {
    task_error(int code, const std::string &what) : error(CF_TASK_FAILED, what), code_(code) {}
    /// The `cf_raise` code (0 for a C++ exception from a worker process).
    int code() const noexcept { return code_; }

private:
    int code_;
};
/// CF_BROKEN: the last copy of a promise went away while its future was pending.
struct broken_promise : error {
    using error::error;
};

/// Which condition `cf::wait` waits for (Python's FIRST_COMPLETED, ...).
enum class return_when { first_completed, first_exception, all_completed };

template <class T> class future;
template <class T> class promise;
class executor;
class process_pool;

namespace detail {

inline std::string status_text(cf_status s, const char *what) {
    std::string m = "cfutures: ";
    m += cf_status_name(s);
    if (what != nullptr && *what != '\0') {
        m += ": ";
        m += what;
    }
    return m;
}

/// The exception for a status, as an exception_ptr (never throws but bad_alloc).
inline std::exception_ptr error_for(cf_status s, int code, const char *message) {
    const std::string text = status_text(s, message);
    switch (s) {
    case CF_TIMEOUT:
        return std::make_exception_ptr(timeout_error(s, text));
    case CF_CANCELLED:
        return std::make_exception_ptr(cancelled_error(s, text));
    case CF_TASK_FAILED:
        return std::make_exception_ptr(task_error(code, message != nullptr ? message : text));
    case CF_BROKEN:
        return std::make_exception_ptr(broken_executor(s, text));
    case CF_SHUTDOWN:
        return std::make_exception_ptr(shutdown_error(s, text));
    case CF_INVALID_STATE:
        return std::make_exception_ptr(invalid_state_error(s, text));
    case CF_DEADLINE:
        return std::make_exception_ptr(deadline_error(s, text));
    case CF_NO_MEMORY:
        return std::make_exception_ptr(std::bad_alloc());
    case CF_INVALID_ARGUMENT:
        return std::make_exception_ptr(std::invalid_argument(text));
    case CF_OS_ERROR:
        return std::make_exception_ptr(
            std::system_error(code != 0 ? code : errno, std::generic_category(), text));
    default:
        return std::make_exception_ptr(error(s, text));
    }
}

/// Throws the exception of a call's status (CF_OS_ERROR with the saved errno).
[[noreturn]] inline void throw_status(cf_status s, const char *what = nullptr) {
    if (s == CF_OS_ERROR) {
        int e = errno;
        throw std::system_error(e, std::generic_category(), status_text(s, what));
    }
    std::rethrow_exception(error_for(s, 0, what));
}

inline void check(cf_status s, const char *what = nullptr) {
    if (s != CF_OK) throw_status(s, what);
}

/// A duration as the C API's seconds: negative or zero polls (0), as std's waits do.
template <class Rep, class Period> double seconds(std::chrono::duration<Rep, Period> d) {
    const double s = std::chrono::duration<double>(d).count();
    return s > 0 ? s : 0.0;
}

// --- values in a C result pointer -------------------------------------------------------

/// A value kept in the result pointer itself: trivially copyable, no larger than it.
template <class T>
struct is_inline
    : std::bool_constant<std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(void *) && alignof(T) <= alignof(void *)> {};
template <> struct is_inline<void> : std::true_type {};
template <class T> inline constexpr bool is_inline_v = is_inline<T>::value;

/// Copies the bytes of a trivially copyable `v` to `out` (sizeof(T) bytes), its padding
/// (and an empty class's one byte) as zeros, so that what travels to a worker process is
/// fully defined (memory checkers follow every byte).
template <class T> void bytes_of(const T &v, void *out) noexcept {
    if constexpr (std::is_empty_v<T>) {
        std::memset(out, 0, sizeof(T));
    } else {
#if defined(__has_builtin)
#if __has_builtin(__builtin_clear_padding)
        T copy = v;
        __builtin_clear_padding(&copy);
        std::memcpy(out, static_cast<const void *>(&copy), sizeof(T));
        return;
#endif
#endif
        std::memcpy(out, static_cast<const void *>(&v), sizeof(T));
    }
}

template <class T> void *pack(const T &v) noexcept {
    void *p = nullptr;
    bytes_of(v, &p);
    return p;
}

/// Storage for a trivially copyable object rebuilt from bytes.
template <class T> struct raw {
    alignas(T) unsigned char bytes[sizeof(T)];
    T &get() noexcept { return *std::launder(reinterpret_cast<T *>(bytes)); }
};

template <class T> raw<T> unpack(void *p) noexcept {
    raw<T> r;
    std::memcpy(r.bytes, static_cast<const void *>(&p), sizeof(T));
    return r;
}

/// A value of any type on the heap, freed by the C future (`result_free`).
template <class T> struct box {
    T value;
};
template <class T> void free_box(void *p) noexcept { delete static_cast<box<T> *>(p); }
template <class S> void free_state(void *p) noexcept { delete static_cast<S *>(p); }

// --- exceptions through a C failure -------------------------------------------------

/// Frees an exception payload; its address also marks a payload as this header's.
inline void free_exception(void *p) noexcept {
    delete static_cast<std::exception_ptr *>(p);
}

inline std::string what_of(const std::exception_ptr &e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception &x) {
        return x.what();
    } catch (...) {
        return "a C++ exception not derived from std::exception";
    }
}

/// Inside a catch block of a task: fails the task with the current exception object.
inline void *raise_current(const char *what) noexcept {
    std::exception_ptr *p = nullptr;
    try {
        p = new std::exception_ptr(std::current_exception());
    } catch (...) {
        p = nullptr;
    }
    if (p == nullptr) return cf_raise(ENOMEM, what);
    return cf_raise_payload(0, what, p, &free_exception);
}

/// Runs `fn` (which returns a result pointer) and turns an exception into a failure of
/// the running task: with its exception object here (`payload`), or only its message
/// in a worker process.
template <bool Payload, class Fn> void *guarded(Fn &&fn) noexcept {
    try {
        return fn();
    } catch (const std::exception &e) {
        return Payload ? raise_current(e.what()) : cf_raise(0, e.what());
    } catch (...) {
        const char *m = "a C++ exception not derived from std::exception";
        return Payload ? raise_current(m) : cf_raise(0, m);
    }
}

/// Finishes the promise `p` with the current exception (or `e`).
inline void fail_promise(cf_future *p, std::exception_ptr e) noexcept {
    if (!e) {
        (void)cf_future_set_exception(p, ENOMEM, "cfutures: out of memory for an exception");
        return;
    }
    std::string what;
    try {
        what = what_of(e);
    } catch (...) {
    }
    std::exception_ptr *payload = nullptr;
    try {
        payload = new std::exception_ptr(std::move(e));
    } catch (...) {
        payload = nullptr;
    }
    if (payload == nullptr) {
        (void)cf_future_set_exception(p, ENOMEM, "cfutures: out of memory for an exception");
        return;
    }
    (void)cf_future_set_exception_payload(p, 0, what.c_str(), payload, &free_exception);
}

/// The exception a done, failed future holds.
inline std::exception_ptr failure_of(cf_future *f, cf_status s) {
    if (s == CF_TASK_FAILED) {
        void *payload = nullptr;
        cf_free_fn pf = nullptr;
        if (cf_future_exception_payload(f, 0.0, &payload, &pf) == CF_TASK_FAILED && payload != nullptr &&
            pf == &free_exception)
            return *static_cast<std::exception_ptr *>(payload);
    }
    if (s == CF_TIMEOUT || s == CF_CANCELLED || s == CF_INVALID_ARGUMENT) return error_for(s, 0, nullptr);
    int code = 0;
    const char *message = nullptr;
    cf_status again = cf_future_exception(f, 0.0, &code, &message);
    if (again != s) return error_for(s, 0, nullptr);
    return error_for(s, code, message);
}

[[noreturn]] inline void throw_outcome(cf_future *f, cf_status s) { std::rethrow_exception(failure_of(f, s)); }

// --- values across a process boundary ---------------------------------------------------

template <class T> struct is_vector_of_trivial : std::false_type {};
template <class U, class A>
struct is_vector_of_trivial<std::vector<U, A>>
    : std::bool_constant<std::is_trivially_copyable_v<U> && std::is_same_v<A, std::allocator<U>>> {};

/// What may travel to a worker process by value.
template <class T>
inline constexpr bool transferable_v = std::is_trivially_copyable_v<T> || std::is_same_v<T, std::string> ||
                                       is_vector_of_trivial<T>::value;

/// A byte buffer from malloc (a byte task's result) being written.
struct writer {
    unsigned char *data = nullptr;
    std::size_t len = 0, cap = 0;
    writer() = default;
    writer(const writer &) = delete;
    writer &operator=(const writer &) = delete;
    ~writer() { std::free(data); }
    void put(const void *p, std::size_t n) {
        if (n == 0) return;
        if (len + n > cap) {
            std::size_t c = std::max<std::size_t>(64, std::max(cap * 2, len + n));
            void *q = std::realloc(data, c);
            if (q == nullptr) throw std::bad_alloc();
            data = static_cast<unsigned char *>(q);
            cap = c;
        }
        std::memcpy(data + len, p, n);
        len += n;
    }
    void put_size(std::size_t n) {
        std::uint64_t v = n;
        put(&v, sizeof v);
    }
    template <class T> void put_value(const T &v) {
        if constexpr (std::is_same_v<T, std::string>) {
            put_size(v.size());
            put(v.data(), v.size());
        } else if constexpr (is_vector_of_trivial<T>::value) {
            put_size(v.size());
            put(v.data(), v.size() * sizeof(typename T::value_type));
        } else {
            unsigned char b[sizeof(T)];
            bytes_of(v, b);
            put(b, sizeof(T));
        }
    }
    /// Hands the buffer over (to the library, which frees it with free).
    void *release(std::size_t *out_len) noexcept {
        void *d = data;
        *out_len = len;
        data = nullptr;
        len = cap = 0;
        return d;
    }
};

struct reader {
    const unsigned char *p;
    std::size_t left;
    void get(void *out, std::size_t n) {
        if (n > left) throw std::runtime_error("cfutures: a message from a worker process is truncated");
        if (n != 0) std::memcpy(out, p, n);
        p += n;
        left -= n;
    }
    std::size_t get_size() {
        std::uint64_t v = 0;
        get(&v, sizeof v);
        if (v > left) throw std::runtime_error("cfutures: a message from a worker process is truncated");
        return static_cast<std::size_t>(v);
    }
    /// Rebuilds a value in `out` (uninitialised storage for a trivially copyable T).
    template <class T> void get_into(raw<T> &out) { get(out.bytes, sizeof(T)); }
    template <class T> T get_value() {
        if constexpr (std::is_same_v<T, std::string>) {
            std::size_t n = get_size();
            std::string s(reinterpret_cast<const char *>(p), n);
            p += n;
            left -= n;
            return s;
        } else if constexpr (is_vector_of_trivial<T>::value) {
            using U = typename T::value_type;
            std::size_t n = get_size();
            if (sizeof(U) != 0 && n > left / sizeof(U))
                throw std::runtime_error("cfutures: a message from a worker process is truncated");
            T v(n);
            get(v.data(), n * sizeof(U));
            return v;
        } else {
            raw<T> r;
            get_into(r);
            return r.get();
        }
    }
};

// --- a task's callable and arguments ----------------------------------------------------

/// `F` with one argument, laid out as small as it can be (an empty `F` takes no room),
/// and trivially copyable when both are: a lambda and an integer fit in a pointer.
template <class F, class A, bool = std::is_empty_v<F> && !std::is_final_v<F>> struct bound1 : F {
    A a;
    bound1(F f, A x) : F(std::move(f)), a(std::move(x)) {}
    decltype(auto) operator()() { return std::invoke(static_cast<F &&>(*this), std::move(a)); }
};
template <class F, class A> struct bound1<F, A, false> {
    F f;
    A a;
    bound1(F g, A x) : f(std::move(g)), a(std::move(x)) {}
    decltype(auto) operator()() { return std::invoke(std::move(f), std::move(a)); }
};
/// `F` with no argument.
template <class F> struct bound0 {
    F f;
    decltype(auto) operator()() { return std::invoke(std::move(f)); }
};
/// The general form: any callable, any arguments (kept on the heap).
template <class F, class... A> struct boundn {
    F f;
    std::tuple<A...> args;
    decltype(auto) operator()() { return std::apply(std::move(f), std::move(args)); }
};

template <class F, class... A> struct binder {
    using type = boundn<F, A...>;
    template <class G, class... B> static type make(G &&g, B &&...b) {
        return type{std::forward<G>(g), std::tuple<A...>(std::forward<B>(b)...)};
    }
};
template <class F> struct binder<F> {
    using type = bound0<F>;
    template <class G> static type make(G &&g) { return type{std::forward<G>(g)}; }
};
template <class F, class A> struct binder<F, A> {
    using type = bound1<F, A>;
    template <class G, class B> static type make(G &&g, B &&b) {
        return type(F(std::forward<G>(g)), A(std::forward<B>(b)));
    }
};

/// The result pointer for a value returned by a task: inline, or a new box.
template <class R, class S> void *produce(S &s) {
    if constexpr (std::is_void_v<R>) {
        s();
        return nullptr;
    } else if constexpr (is_inline_v<R>) {
        R r = s();
        return pack(r);
    } else {
        return new box<R>{s()};
    }
}

/// A task whose state is inline in `arg` (thread or process pool).
template <class S, class R, bool Payload> void *run_inline(void *arg) {
    raw<S> s = unpack<S>(arg);
    return guarded<Payload>([&] { return produce<R>(s.get()); });
}
/// A task whose state is on the heap (freed by `arg_free`).
template <class S, class R> void *run_heap(void *arg) {
    return guarded<true>([&] { return produce<R>(*static_cast<S *>(arg)); });
}

/// Process pool, byte task: [callable bytes][arguments] in, the result's bytes out.
template <class F, class R, class... A> void *run_bytes(const void *in, std::size_t len, std::size_t *out_len) {
    void *result = nullptr;
    *out_len = 0;
    guarded<false>([&]() -> void * {
        reader r{static_cast<const unsigned char *>(in), len};
        raw<F> f;
        r.get_into(f);
        std::tuple<A...> args{r.get_value<A>()...};
        writer w;
        if constexpr (std::is_void_v<R>) {
            std::apply(std::move(f.get()), std::move(args));
        } else {
            w.put_value(std::apply(std::move(f.get()), std::move(args)));
        }
        result = w.release(out_len);
        return nullptr;
    });
    return result;
}

template <class R> class future_access;

/// Tells which executors cannot run a continuation or a closure of this process.
inline void not_a_process_pool(bool process, const char *what) {
    if (process) throw std::invalid_argument(std::string("cf::") + what + ": needs a thread pool: " + what +
                                             "'s function reads this process's memory, which a worker process "
                                             "cannot (cf_future_then gives CF_INVALID_ARGUMENT)");
}

} // namespace detail

// ---------------------------------------------------------------------------------------
// Futures
// ---------------------------------------------------------------------------------------

/// The eventual outcome of a task or a promise: Python's Future, as a counted handle.
///
/// Copies share one future (a reference, as in Python); every member is const and safe
/// to call from any thread. `T` is an object type (copyable or not) or void. The value
/// is destroyed with the last copy of the future, read or not.
template <class T> class future {
    static_assert(std::is_void_v<T> || (std::is_object_v<T> && !std::is_array_v<T>),
                  "cf::future<T>: T must be an object type (not an array, not a reference) or void: "
                  "a task or continuation that returns a reference must return a value instead");

public:
    /// An empty future: valid() is false; every other member but the assignments,
    /// valid() and native_handle() then throws std::invalid_argument (or returns
    /// false, for the bool queries).
    future() noexcept = default;
    future(const future &o) noexcept
        : f_(o.f_ != nullptr ? cf_future_retain(o.f_) : nullptr),
          src_(o.src_ != nullptr ? cf_future_retain(o.src_) : nullptr) {}
    future(future &&o) noexcept : f_(std::exchange(o.f_, nullptr)), src_(std::exchange(o.src_, nullptr)) {}
    future &operator=(const future &o) noexcept {
        if (this != &o) {
            future copy(o);
            swap(copy);
        }
        return *this;
    }
    future &operator=(future &&o) noexcept {
        if (this != &o) {
            future moved(std::move(o));
            swap(moved);
        }
        return *this;
    }
    ~future() {
        if (src_ != nullptr) cf_future_release(src_);
        if (f_ != nullptr) cf_future_release(f_);
    }

    /// True unless default-constructed or moved from.
    bool valid() const noexcept { return f_ != nullptr; }

    /// Waits without limit, then gives a reference to the value (valid while any copy of
    /// this future lives), or throws what the task threw: its own exception object on a
    /// thread pool, cf::task_error across a process boundary or from C's cf_raise,
    /// cancelled_error, broken_executor, deadline_error...
    decltype(auto) result() const { return get(CF_FOREVER); }
    /// As result(), waiting at most `timeout` (zero or negative: polls): timeout_error.
    template <class Rep, class Period> decltype(auto) result(std::chrono::duration<Rep, Period> timeout) const {
        return get(detail::seconds(timeout));
    }
    /// Waits, then gives the task's exception (nullptr after success); throws
    /// cancelled_error for a cancelled future.
    std::exception_ptr exception() const { return exc(CF_FOREVER); }
    /// As exception(), waiting at most `timeout`: timeout_error.
    template <class Rep, class Period>
    std::exception_ptr exception(std::chrono::duration<Rep, Period> timeout) const {
        return exc(detail::seconds(timeout));
    }
    /// Waits until done (finished or cancelled).
    void wait() const { detail::check(cf_future_wait(handle(), CF_FOREVER)); }
    /// Waits at most `timeout`; true when done.
    template <class Rep, class Period> bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
        cf_status s = cf_future_wait(handle(), detail::seconds(timeout));
        if (s == CF_TIMEOUT) return false;
        detail::check(s);
        return true;
    }
    /// Finished (with a value or an error) or cancelled.
    bool done() const noexcept { return cf_future_done(f_); }
    /// Its task runs now.
    bool running() const noexcept { return cf_future_running(src_ != nullptr ? src_ : f_); }
    /// It was cancelled.
    bool cancelled() const noexcept { return cf_future_cancelled(f_); }
    /// Cancels it if it has not started (Python's cancel()); true if it is now cancelled.
    /// Its callbacks run in this thread before it returns.
    bool cancel() const noexcept {
        if (src_ != nullptr) {
            cf_future_cancel(src_);
            return cf_future_cancelled(f_);
        }
        return cf_future_cancel(f_);
    }

    /// Calls `fn(const cf::future<T>&)` exactly once when the future is done: in the
    /// thread that finishes or cancels it, or at once in this thread if it is done. `fn`
    /// is moved into the future and destroyed after its call (or with the future, if it
    /// never finishes). An exception escaping `fn` calls std::terminate.
    template <class F> void add_done_callback(F &&fn) const;

    /// A future of `fn(*this)`'s result, run once this one is done, in the thread that
    /// finishes it (or at once in this thread if it is done). An exception `fn` throws
    /// is the new future's.
    template <class F> auto then(F &&fn) const;
    /// As then(fn), but `fn` runs on a worker of `ex`, which must be a thread pool
    /// (std::invalid_argument for a process pool).
    template <class F> auto then(executor &ex, F &&fn) const;

    /// The C future (borrowed: valid while this handle holds it).
    cf_future *native_handle() const noexcept { return f_; }

    void swap(future &o) noexcept {
        std::swap(f_, o.f_);
        std::swap(src_, o.src_);
    }

#ifdef CFUTURES_HPP_COROUTINES
    /// `co_await fut` gives `fut.result()`, resuming in the thread that finished the
    /// future (or at once if it is done).
    auto operator co_await() const {
        struct awaiter {
            future fut;
            std::atomic<bool> armed{false};
            bool await_ready() const noexcept { return fut.done(); }
            bool await_suspend(std::coroutine_handle<> h) {
                resume_at_ = h;
                cf_status s = cf_future_add_done_callback(fut.native_handle(), &awaiter::fire, this);
                if (s != CF_OK) detail::throw_status(s);
                // The callback may have run already (in this thread): then do not suspend.
                return !armed.exchange(true, std::memory_order_acq_rel);
            }
            decltype(auto) await_resume() const { return fut.result(); }
            static void fire(cf_future *, void *self) noexcept {
                auto *a = static_cast<awaiter *>(self);
                if (a->armed.exchange(true, std::memory_order_acq_rel)) a->resume_at_.resume();
            }
            std::coroutine_handle<> resume_at_{};
        };
        return awaiter{*this};
    }
#endif

private:
    template <class> friend class future;
    template <class> friend class promise;
    template <class> friend class detail::future_access;
    friend class executor;
    friend class process_pool;

    /// Takes over one reference of `f` (and of `src`, the task whose outcome `f` is
    /// filled from).
    explicit future(cf_future *f, cf_future *src = nullptr) noexcept : f_(f), src_(src) {}

    cf_future *handle() const {
        if (f_ == nullptr) throw std::invalid_argument("cf::future: empty (default-constructed or moved from)");
        return f_;
    }

    decltype(auto) get(double timeout) const {
        cf_future *f = handle();
        if constexpr (std::is_void_v<T>) {
            void *v = nullptr;
            cf_status s = cf_future_result(f, timeout, &v);
            if (s != CF_OK) detail::throw_outcome(f, s);
        } else if constexpr (detail::is_inline_v<T>) {
            void *const *slot = nullptr;
            cf_status s = cf_future_result_ref(f, timeout, &slot);
            if (s != CF_OK) detail::throw_outcome(f, s);
            // The result pointer's bytes are the value's (see detail::pack).
            return static_cast<const T &>(*std::launder(reinterpret_cast<const T *>(slot)));
        } else {
            void *v = nullptr;
            cf_status s = cf_future_result(f, timeout, &v);
            if (s != CF_OK) detail::throw_outcome(f, s);
            return static_cast<const T &>(static_cast<detail::box<T> *>(v)->value);
        }
    }

    std::exception_ptr exc(double timeout) const {
        cf_future *f = handle();
        int code = 0;
        const char *message = nullptr;
        cf_status s = cf_future_exception(f, timeout, &code, &message);
        if (s == CF_OK) return nullptr;
        if (s == CF_TIMEOUT || s == CF_CANCELLED) detail::throw_status(s);
        return detail::failure_of(f, s);
    }

    cf_future *f_ = nullptr;
    cf_future *src_ = nullptr;
};

/// Takes over one reference of a C future (whose result is a pointer: not a byte
/// task's) as a cf::future<void*>. std::invalid_argument for NULL.
inline future<void *> adopt(cf_future *f);

namespace detail {

/// Makes futures from C handles (for the free functions below).
template <class T> class future_access {
public:
    static future<T> make(cf_future *f, cf_future *src = nullptr) noexcept { return future<T>(f, src); }
    /// Borrowed view: a future over `f` that does not own a reference.
    static void forget(future<T> &fut) noexcept {
        fut.f_ = nullptr;
        fut.src_ = nullptr;
    }
};

/// Calls `fn(view)` with a future<T> over the borrowed `f`.
template <class T, class Fn> decltype(auto) with_view(cf_future *f, Fn &&fn) {
    struct guard {
        future<T> view;
        ~guard() { future_access<T>::forget(view); }
    } g{future_access<T>::make(f)};
    return fn(static_cast<const future<T> &>(g.view));
}

template <class T, class S> void callback_inline(cf_future *f, void *ud) noexcept {
    raw<S> s = unpack<S>(ud);
    with_view<T>(f, [&](const future<T> &v) { s.get()(v); });
}
template <class T, class S> void callback_heap(cf_future *f, void *ud) noexcept {
    with_view<T>(f, [&](const future<T> &v) { (*static_cast<S *>(ud))(v); });
}
inline void noop_callback(cf_future *, void *) noexcept {}

/// A new promise's C future, or bad_alloc.
inline cf_future *new_promise() {
    cf_future *p = nullptr;
    check(cf_future_new(&p));
    return p;
}

/// Finishes promise `p` with `value` (taking it over); false if it was already done.
template <class T> bool set_value(cf_future *p, T &&value) {
    using V = std::decay_t<T>;
    if constexpr (is_inline_v<V>) {
        return cf_future_set_result(p, pack(value)) == CF_OK;
    } else {
        auto *b = new box<V>{std::forward<T>(value)};
        return cf_future_set_result_owned(p, b, &free_box<V>) == CF_OK;
    }
}

/// When `src` (the task that fills promise `p`) ends without filling it: cancelled,
/// shut down, broken: passes that on.
inline void pass_on_end(cf_future *src, cf_future *p) noexcept {
    if (cf_future_done(p)) return;
    if (cf_future_cancelled(src)) {
        cf_future_cancel(p);
        return;
    }
    int code = 0;
    const char *message = nullptr;
    cf_status s = cf_future_exception(src, 0.0, &code, &message);
    if (s == CF_OK) s = CF_BROKEN; // the task ended without filling its promise
    try {
        fail_promise(p, failure_of(src, s));
    } catch (...) {
        (void)cf_future_set_exception(p, code, message);
    }
}

template <class R, class S, class View> void *produce_with(S &s, const View &v) {
    if constexpr (std::is_void_v<R>) {
        s(v);
        return nullptr;
    } else if constexpr (is_inline_v<R>) {
        R r = s(v);
        return pack(r);
    } else {
        return new box<R>{s(v)};
    }
}
/// The state of a continuation whose result is boxed: the callable and the promise.
template <class S> struct then_state {
    S fn;
    cf_future *promise;
    ~then_state() { cf_future_release(promise); }
};

template <class T, class S, class R> void *then_inline_fn(void *arg, cf_future *ante) {
    raw<S> s = unpack<S>(arg);
    return guarded<true>(
        [&] { return with_view<T>(ante, [&](const future<T> &v) { return produce_with<R>(s.get(), v); }); });
}
template <class T, class S, class R> void *then_heap_fn(void *arg, cf_future *ante) {
    return guarded<true>([&] {
        return with_view<T>(ante, [&](const future<T> &v) { return produce_with<R>(*static_cast<S *>(arg), v); });
    });
}
template <class T, class S, class R> void *then_promise_fn(void *arg, cf_future *ante) {
    auto *st = static_cast<then_state<S> *>(arg);
    try {
        with_view<T>(ante, [&](const future<T> &v) { (void)set_value(st->promise, st->fn(v)); });
    } catch (...) {
        fail_promise(st->promise, std::current_exception());
    }
    return nullptr;
}
/// Done callback on the continuation's own C future: a continuation that never ran.
template <class S> void then_promise_end(cf_future *out, void *arg) noexcept {
    pass_on_end(out, static_cast<then_state<S> *>(arg)->promise);
}

} // namespace detail

// ---------------------------------------------------------------------------------------
// Promises
// ---------------------------------------------------------------------------------------

/// A future completed by hand (Python's Future()). Copies share one future. When the
/// last copy goes away while the future is pending, it finishes with
/// cf::broken_promise, so that no waiter hangs.
template <class T> class promise {
    struct state {
        std::atomic<long> refs{1};
        cf_future *f = nullptr;
    };

public:
    /// A new pending future; std::bad_alloc when memory runs out.
    promise() : s_(new state) {
        try {
            s_->f = detail::new_promise();
        } catch (...) {
            delete s_;
            throw;
        }
    }
    promise(const promise &o) noexcept : s_(o.s_) {
        if (s_ != nullptr) s_->refs.fetch_add(1, std::memory_order_relaxed);
    }
    promise(promise &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    promise &operator=(promise o) noexcept {
        std::swap(s_, o.s_);
        return *this;
    }
    ~promise() {
        if (s_ == nullptr || s_->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        if (!cf_future_done(s_->f)) {
            std::exception_ptr e;
            try {
                e = std::make_exception_ptr(
                    broken_promise(CF_BROKEN, "cfutures: broken promise: the last cf::promise went away unset"));
            } catch (...) {
            }
            detail::fail_promise(s_->f, e);
        }
        cf_future_release(s_->f);
        delete s_;
    }

    /// The promise's future (the same one every time).
    future<T> get_future() const { return detail::future_access<T>::make(cf_future_retain(h())); }
    /// Marks it running unless it was cancelled (false then); invalid_state_error if it
    /// is already running or done.
    bool set_running_or_notify_cancel() {
        cf_status s = cf_future_set_running_or_notify_cancel(h());
        if (s == CF_CANCELLED) return false;
        detail::check(s);
        return true;
    }
    /// Finishes it with `value`; invalid_state_error if it is done (the value is then
    /// destroyed).
    template <class U = T, std::enable_if_t<!std::is_void_v<U>, int> = 0>
    void set_result(std::conditional_t<std::is_void_v<T>, int, T> value) {
        if (!detail::set_value(h(), std::move(value)))
            throw invalid_state_error(CF_INVALID_STATE, "cfutures: CF_INVALID_STATE: the future is already done");
    }
    /// promise<void>: finishes it.
    template <class U = T, std::enable_if_t<std::is_void_v<U>, int> = 0> void set_result() {
        detail::check(cf_future_set_result(h(), nullptr), "the future is already done");
    }
    /// Fails it with `e`: result() rethrows `e`. invalid_state_error if it is done;
    /// std::invalid_argument for a null `e`.
    void set_exception(std::exception_ptr e) {
        if (!e) throw std::invalid_argument("cf::promise::set_exception: a null exception_ptr");
        cf_future *f = h();
        if (cf_future_done(f))
            throw invalid_state_error(CF_INVALID_STATE, "cfutures: CF_INVALID_STATE: the future is already done");
        std::string what = detail::what_of(e);
        auto *payload = new std::exception_ptr(std::move(e));
        detail::check(cf_future_set_exception_payload(f, 0, what.c_str(), payload, &detail::free_exception),
                      "the future is already done");
    }

private:
    cf_future *h() const {
        if (s_ == nullptr) throw std::invalid_argument("cf::promise: moved from");
        return s_->f;
    }
    state *s_;
};

// ---------------------------------------------------------------------------------------
// Executors
// ---------------------------------------------------------------------------------------

/// Options of a new executor (Python's constructor arguments).
struct executor_options {
    std::size_t max_workers = 0;            ///< 0: Python's default
    std::string name_prefix;                ///< empty: the default names
    std::function<void()> initializer;      ///< throwing breaks the pool, as in Python
    std::size_t max_tasks_per_child = 0;    ///< process pools
};

/// Options of map (Python's map arguments).
struct map_options {
    std::optional<std::chrono::duration<double>> timeout; ///< from the call, as in Python
    std::size_t chunksize = 1;
    std::size_t buffersize = 0; ///< 0: every input at once; n: lazy, n tasks ahead
};

namespace detail {
template <class Fn, class Rng, class In, class R, bool Travel> class map_range;
template <class T> class as_completed_range;

inline void run_initializer(void *arg) {
    try {
        (*static_cast<std::function<void()> *>(arg))();
    } catch (const std::exception &e) {
        cf_raise(0, e.what());
    } catch (...) {
        cf_raise(0, "a C++ exception not derived from std::exception");
    }
}

template <class F, class... Args> struct submit_traits {
    using R = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
    static_assert(!std::is_reference_v<R>,
                  "cf::executor::submit: the callable returns a reference; a task's value is kept by the "
                  "future, so return a value (or a pointer, or std::reference_wrapper)");
};

/// A process pool's check of one type, for a readable error naming it.
template <class T, class Role> struct must_travel {
    static constexpr bool value = transferable_v<T>;
};
struct the_callable_and_its_captures;
struct an_argument;
struct the_result;
struct a_map_input;
} // namespace detail

/// An executor: Python's Executor. Not copyable; movable. Its destructor is
/// shutdown(true): every accepted task runs to its end first, as leaving Python's with.
class executor {
public:
    executor(const executor &) = delete;
    executor &operator=(const executor &) = delete;
    executor(executor &&o) noexcept
        : ex_(std::exchange(o.ex_, nullptr)), process_(o.process_), init_(std::move(o.init_)) {}
    executor &operator=(executor &&o) noexcept {
        if (this != &o) {
            cf_executor_free(ex_);
            ex_ = std::exchange(o.ex_, nullptr);
            process_ = o.process_;
            init_ = std::move(o.init_);
        }
        return *this;
    }
    ~executor() { cf_executor_free(ex_); }

    /// Runs `fn(args...)` on a worker and gives its future, like std::async: the callable
    /// and the arguments are copied or moved into the task (a lambda may capture
    /// anything on a thread pool) and destroyed once the task is done with them, also
    /// when it never runs. On a process pool each must be able to travel by value (see
    /// process_pool::submit): otherwise std::invalid_argument, at run time here.
    /// shutdown_error after shutdown, broken_executor on a broken pool.
    template <class F, class... Args>
    auto submit(F &&fn, Args &&...args) -> future<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
        using R = typename detail::submit_traits<F, Args...>::R;
        if (process_) {
            if constexpr (detail::transferable_v<std::decay_t<F>> && (detail::transferable_v<std::decay_t<Args>> && ...) &&
                          (std::is_void_v<R> || detail::transferable_v<R>)) {
                return submit_process<R, std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(fn),
                                                                                  std::forward<Args>(args)...);
            } else {
                throw std::invalid_argument(
                    "cf::executor::submit on a process pool: the callable, every argument and the result must "
                    "be trivially copyable, std::string or std::vector of a trivially copyable type to travel "
                    "to a worker process");
            }
        }
        return submit_thread<R, std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(fn),
                                                                         std::forward<Args>(args)...);
    }

    /// Runs `fn(item)` for each item of `inputs`; the results come back in input order
    /// through the returned input range (see the header's Map section).
    template <class F, class Range> auto map(F &&fn, Range &&inputs, map_options options = {});

    /// Python's shutdown(wait, cancel_futures). From one of its own workers the wait is
    /// skipped (a worker cannot wait for itself).
    void shutdown(bool wait = true, bool cancel_futures = false) {
        if (ex_ != nullptr) (void)cf_executor_shutdown(ex_, wait, cancel_futures);
    }
    /// How many workers are alive now.
    std::size_t worker_count() const noexcept { return cf_executor_worker_count(ex_); }
    /// The C executor (borrowed).
    cf_executor *native_handle() const noexcept { return ex_; }

protected:
    executor(bool process, const executor_options *o) : process_(process) {
        cf_executor_options c{};
        if (o != nullptr) {
            c.max_workers = o->max_workers;
            c.name_prefix = o->name_prefix.empty() ? nullptr : o->name_prefix.c_str();
            c.max_tasks_per_child = o->max_tasks_per_child;
            if (o->initializer) {
                init_ = std::make_unique<std::function<void()>>(o->initializer);
                c.initializer = &detail::run_initializer;
                c.initarg = init_.get();
            }
        }
        cf_status s = process ? cf_process_pool_new(&c, &ex_) : cf_thread_pool_new(&c, &ex_);
        if (s != CF_OK) detail::throw_status(s, "cannot make the executor");
    }

    cf_executor *live() const {
        if (ex_ == nullptr) throw std::invalid_argument("cf::executor: moved from");
        return ex_;
    }

    void submit_status(cf_status s) const {
        if (s == CF_BROKEN) {
            const char *why = cf_executor_broken_reason(ex_);
            throw broken_executor(s, detail::status_text(s, why != nullptr ? why : "the executor is broken"));
        }
        if (s == CF_SHUTDOWN) throw shutdown_error(s, detail::status_text(s, "the executor was shut down"));
        detail::throw_status(s);
    }

    template <class R, class F, class... A, class G, class... B> future<R> submit_thread(G &&g, B &&...b) {
        using S = typename detail::binder<F, A...>::type;
        cf_executor *ex = live();
        cf_future *out = nullptr;
        if constexpr (detail::is_inline_v<S> && detail::is_inline_v<R>) {
            // Nothing to free: the C task itself (cf_submit's hot path, no allocation here).
            S s = detail::binder<F, A...>::make(std::forward<G>(g), std::forward<B>(b)...);
            cf_status st = cf_submit(ex, &detail::run_inline<S, R, true>, detail::pack(s), &out);
            if (st != CF_OK) submit_status(st);
        } else {
            cf_task t = CF_TASK_INIT;
            std::unique_ptr<S> heap;
            if constexpr (detail::is_inline_v<S>) {
                S s = detail::binder<F, A...>::make(std::forward<G>(g), std::forward<B>(b)...);
                t.fn = &detail::run_inline<S, R, true>;
                t.arg = detail::pack(s);
            } else {
                heap.reset(new S(detail::binder<F, A...>::make(std::forward<G>(g), std::forward<B>(b)...)));
                t.fn = &detail::run_heap<S, R>;
                t.arg = heap.get();
                t.arg_free = &detail::free_state<S>;
            }
            if constexpr (!detail::is_inline_v<R>) t.result_free = &detail::free_box<R>;
            cf_status st = cf_submit_task(ex, &t, &out);
            if (st != CF_OK) submit_status(st);
            (void)heap.release(); // the task owns it now
        }
        return future<R>(out);
    }

    template <class R, class F, class... A, class G, class... B> future<R> submit_process(G &&g, B &&...b) {
        cf_executor *ex = live();
        if constexpr (sizeof...(A) <= 1 && detail::is_inline_v<typename detail::binder<F, A...>::type> &&
                      std::is_trivially_copyable_v<typename detail::binder<F, A...>::type> &&
                      detail::is_inline_v<R>) {
            // Pointer-sized in and out: a plain C task, as cf_submit on a process pool.
            using S = typename detail::binder<F, A...>::type;
            S s = detail::binder<F, A...>::make(std::forward<G>(g), std::forward<B>(b)...);
            cf_future *out = nullptr;
            cf_status st = cf_submit(ex, &detail::run_inline<S, R, false>, detail::pack(s), &out);
            if (st != CF_OK) submit_status(st);
            return future<R>(out);
        } else {
            detail::writer w;
            F f(std::forward<G>(g));
            w.put_value(f);
            (w.put_value(static_cast<const A &>(A(std::forward<B>(b)))), ...);
            cf_future *p = detail::new_promise();
            cf_future *src = nullptr;
            cf_status st = cf_submit_bytes(ex, &detail::run_bytes<F, R, A...>, w.data, w.len, &src);
            if (st != CF_OK) {
                cf_future_release(p);
                submit_status(st);
            }
            st = cf_future_add_done_callback_owned(src, &decode_answer<R>, cf_future_retain(p), &release_future);
            if (st != CF_OK) {
                cf_future_release(p); // the retained one: nothing was called
                cf_future_cancel(src);
                cf_future_release(src);
                cf_future_release(p);
                detail::throw_status(st);
            }
            return future<R>(p, src);
        }
    }

    /// Done callback of a process pool's byte task: decodes its answer into the promise.
    template <class R> static void decode_answer(cf_future *src, void *p_) noexcept {
        auto *p = static_cast<cf_future *>(p_);
        cf_bytes b{nullptr, 0};
        cf_status s = cf_future_result_bytes(src, 0.0, &b);
        if (s != CF_OK) {
            detail::pass_on_end(src, p);
            return;
        }
        try {
            if constexpr (std::is_void_v<R>) {
                (void)cf_future_set_result(p, nullptr);
            } else {
                detail::reader r{static_cast<const unsigned char *>(b.data), b.len};
                (void)detail::set_value(p, r.get_value<R>());
            }
        } catch (...) {
            detail::fail_promise(p, std::current_exception());
        }
    }
    static void release_future(void *p) noexcept { cf_future_release(static_cast<cf_future *>(p)); }

    template <class F, class Rng, class In, class R, bool P> friend class detail::map_range;
    template <class> friend class future;

    cf_executor *ex_ = nullptr;
    bool process_ = false;
    std::unique_ptr<std::function<void()>> init_;
};

/// A pool of threads: Python's ThreadPoolExecutor.
class thread_pool : public executor {
public:
    /// Python's defaults; throws as executor_options says.
    thread_pool() : executor(false, nullptr) {}
    explicit thread_pool(const executor_options &options) : executor(false, &options) {}
};

/// A pool of worker processes forked from this program: Python's ProcessPoolExecutor.
///
/// Through submit and map, the callable, every argument and every result travel by
/// value to a worker: each must be trivially copyable, std::string or std::vector of a
/// trivially copyable type; a lambda qualifies when its captures do. Anything else is a
/// compile-time error (a static_assert saying "trivially copyable"). Pointers and
/// references (a lambda capturing by reference, too) travel as addresses: they mean the
/// worker's copy of the program as it was when the pool was made, as in C. An
/// exception thrown in a worker comes back as cf::task_error with its what().
class process_pool : public executor {
public:
    process_pool() : executor(true, nullptr) {}
    explicit process_pool(const executor_options &options) : executor(true, &options) {}

    /// As executor::submit, checked at compile time.
    template <class F, class... Args> auto submit(F &&fn, Args &&...args) {
        using R = typename detail::submit_traits<F, Args...>::R;
        static_assert(detail::must_travel<std::decay_t<F>, detail::the_callable_and_its_captures>::value,
                      "cf::process_pool::submit: the callable must be trivially copyable to travel to a worker "
                      "process: a lambda may capture only trivially copyable values (by value); see the type in "
                      "must_travel<...> above");
        static_assert((detail::must_travel<std::decay_t<Args>, detail::an_argument>::value && ...),
                      "cf::process_pool::submit: every argument must be trivially copyable, std::string or "
                      "std::vector of a trivially copyable type to travel to a worker process; see the type in "
                      "must_travel<...> above");
        static_assert(std::is_void_v<R> || detail::must_travel<R, detail::the_result>::value,
                      "cf::process_pool::submit: the result must be trivially copyable, std::string or "
                      "std::vector of a trivially copyable type to travel back from a worker process; see the "
                      "type in must_travel<...> above");
        return executor::submit(std::forward<F>(fn), std::forward<Args>(args)...);
    }
    /// As executor::map, checked at compile time.
    template <class F, class Range> auto map(F &&fn, Range &&inputs, map_options options = {});

    /// Python 3.14's terminate_workers(): shuts down, cancels what has not started and
    /// sends SIGTERM to every worker (running tasks fail with broken_executor).
    void terminate_workers() { detail::check(cf_executor_terminate_workers(live())); }
    /// Python 3.14's kill_workers(): as terminate_workers, with SIGKILL.
    void kill_workers() { detail::check(cf_executor_kill_workers(live())); }
};

// ---------------------------------------------------------------------------------------
// future<T>: callbacks and continuations (they need executor)
// ---------------------------------------------------------------------------------------

template <class T> template <class F> void future<T>::add_done_callback(F &&fn) const {
    using S = std::decay_t<F>;
    static_assert(std::is_invocable_v<S &, const future<T> &>,
                  "cf::future::add_done_callback: fn must be callable as fn(const cf::future<T>&)");
    cf_future *f = handle();
    if constexpr (detail::is_inline_v<S>) {
        S s(std::forward<F>(fn));
        detail::check(cf_future_add_done_callback(f, &detail::callback_inline<T, S>, detail::pack(s)));
    } else {
        auto heap = std::make_unique<S>(std::forward<F>(fn));
        detail::check(
            cf_future_add_done_callback_owned(f, &detail::callback_heap<T, S>, heap.get(), &detail::free_state<S>));
        (void)heap.release();
    }
}

namespace detail {
template <class T, class F>
auto then_on(cf_future *ante, cf_executor *ex, F &&fn) -> future<std::invoke_result_t<std::decay_t<F> &, const future<T> &>> {
    using S = std::decay_t<F>;
    using R = std::invoke_result_t<S &, const future<T> &>;
    static_assert(!std::is_reference_v<R>, "cf::future::then: the continuation returns a reference; return a value");
    cf_future *out = nullptr;
    if constexpr (is_inline_v<R> && is_inline_v<S>) {
        S s(std::forward<F>(fn));
        check(cf_future_then(ante, ex, &then_inline_fn<T, S, R>, pack(s), &out));
        return future_access<R>::make(out);
    } else if constexpr (is_inline_v<R>) {
        auto heap = std::make_unique<S>(std::forward<F>(fn));
        check(cf_future_then(ante, ex, &then_heap_fn<T, S, R>, heap.get(), &out));
        // The callable goes with the continuation's future: after it ran, or never.
        cf_status s = cf_future_add_done_callback_owned(out, &noop_callback, heap.get(), &free_state<S>);
        if (s != CF_OK) {
            if (cf_future_cancel(out)) {
                cf_future_release(out);
                throw_status(s);
            }
            (void)heap.release(); // out of memory while it runs: it must stay alive
            return future_access<R>::make(out);
        }
        (void)heap.release();
        return future_access<R>::make(out);
    } else {
        cf_future *p = new_promise();
        std::unique_ptr<then_state<S>> st;
        try {
            st.reset(new then_state<S>{S(std::forward<F>(fn)), cf_future_retain(p)});
        } catch (...) {
            cf_future_release(p);
            throw;
        }
        cf_status s = cf_future_then(ante, ex, &then_promise_fn<T, S, R>, st.get(), &out);
        if (s != CF_OK) {
            st.reset();
            cf_future_release(p);
            throw_status(s);
        }
        s = cf_future_add_done_callback_owned(out, &then_promise_end<S>, st.get(), &free_state<then_state<S>>);
        if (s != CF_OK) {
            if (cf_future_cancel(out)) {
                st.reset();
                cf_future_release(out);
                cf_future_release(p);
                throw_status(s);
            }
            (void)st.release(); // out of memory while it runs: it must stay alive
        }
        (void)st.release();
        return future_access<R>::make(p, out);
    }
}
} // namespace detail

template <class T> template <class F> auto future<T>::then(F &&fn) const {
    return detail::then_on<T>(handle(), nullptr, std::forward<F>(fn));
}
template <class T> template <class F> auto future<T>::then(executor &ex, F &&fn) const {
    detail::not_a_process_pool(ex.process_, "future::then");
    return detail::then_on<T>(handle(), ex.live(), std::forward<F>(fn));
}

inline future<void *> adopt(cf_future *f) {
    if (f == nullptr) throw std::invalid_argument("cf::adopt: NULL future");
    return detail::future_access<void *>::make(f);
}

// ---------------------------------------------------------------------------------------
// Map
// ---------------------------------------------------------------------------------------

namespace detail {

/// A chunk's outcome: its values in order, then the failure that stopped it, if any.
template <class R> struct chunk_result {
    std::vector<R> values;
    std::exception_ptr error;
};

/// Thread pool: a chunk of inputs and the shared callable.
template <class Fn, class In, class R> struct chunk_task {
    std::shared_ptr<Fn> fn;
    std::vector<In> items;
    static void *run(void *arg) {
        auto *t = static_cast<chunk_task *>(arg);
        try {
            auto *b = new box<chunk_result<R>>();
            std::unique_ptr<box<chunk_result<R>>> own(b);
            b->value.values.reserve(t->items.size());
            for (In &item : t->items) {
                try {
                    b->value.values.push_back(std::invoke(*t->fn, std::move(item)));
                } catch (...) {
                    b->value.error = std::current_exception();
                    break;
                }
            }
            return own.release();
        } catch (...) {
            return raise_current("cfutures: out of memory in a map chunk");
        }
    }
};

/// Process pool: [callable][n][items] in, [k][values][failed][message] out.
template <class Fn, class In, class R> void *run_chunk_bytes(const void *in, std::size_t len, std::size_t *out_len) {
    void *result = nullptr;
    *out_len = 0;
    guarded<false>([&]() -> void * {
        reader r{static_cast<const unsigned char *>(in), len};
        raw<Fn> f;
        r.get_into(f);
        std::size_t n = r.get_size();
        std::vector<R> values;
        std::string failure;
        bool failed = false;
        for (std::size_t i = 0; i < n; i++) {
            In item = r.get_value<In>();
            try {
                values.push_back(std::invoke(f.get(), std::move(item)));
            } catch (const std::exception &e) {
                failed = true;
                failure = e.what();
                break;
            } catch (...) {
                failed = true;
                failure = "a C++ exception not derived from std::exception";
                break;
            }
        }
        writer w;
        w.put_size(values.size());
        for (const R &v : values) w.put_value(v);
        unsigned char flag = failed ? 1 : 0;
        w.put(&flag, 1);
        w.put_value(failure);
        result = w.release(out_len);
        return nullptr;
    });
    return result;
}

/// The range `map` returns (see executor::map). `Travel`: the types may go to a worker
/// process (only then is the process form compiled).
template <class Fn, class Rng, class In, class R, bool Travel> class map_range {
    using It = decltype(std::begin(std::declval<Rng &>()));
    using End = decltype(std::end(std::declval<Rng &>()));
    struct pending {
        cf_future *f;
    };

public:
    class iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        using pointer = void;
        using reference = R;
        iterator() = default;
        /// The item's result (moved out: read each item once), or its exception, after
        /// which the iteration ends.
        R operator*() const { return m_->take(); }
        iterator &operator++() {
            m_->advance();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator &a, const iterator &b) noexcept { return a.at_end() == b.at_end(); }
        friend bool operator!=(const iterator &a, const iterator &b) noexcept { return !(a == b); }

    private:
        friend class map_range;
        explicit iterator(map_range *m) : m_(m) {}
        bool at_end() const noexcept { return m_ == nullptr || m_->ended_; }
        map_range *m_ = nullptr;
    };

    map_range(executor &ex, Fn fn, Rng &&inputs, const map_options &o)
        : ex_(ex.live()), process_(ex.process_), fn_(std::make_shared<Fn>(std::move(fn))), inputs_(std::forward<Rng>(inputs)),
          it_(std::begin(inputs_)), end_(std::end(inputs_)), chunksize_(o.chunksize == 0 ? 1 : o.chunksize),
          buffersize_(o.buffersize) {
        if (o.timeout) {
            has_deadline_ = true;
            deadline_ = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::max(*o.timeout, std::chrono::duration<double>(0)));
        }
        try {
            if (buffersize_ == 0) {
                while (submit_chunk()) {
                }
            } else {
                for (std::size_t i = 0; i < buffersize_ && submit_chunk(); i++) {
                }
            }
        } catch (...) {
            cancel_all();
            throw;
        }
    }
    map_range(const map_range &) = delete;
    map_range &operator=(const map_range &) = delete;
    ~map_range() { cancel_all(); }

    /// Waits for the first item (timeout_error when the map's timeout passed).
    iterator begin() {
        if (!started_) {
            started_ = true;
            advance_to_item();
        }
        return iterator(this);
    }
    iterator end() noexcept { return iterator(); }

private:
    friend class iterator;

    /// Pulls up to chunksize inputs and submits them; false at the end of the input.
    bool submit_chunk() {
        if (inputs_done_) return false;
        std::vector<In> items;
        while (items.size() < chunksize_ && it_ != end_) {
            items.push_back(static_cast<In>(*it_));
            ++it_;
        }
        if (it_ == end_) inputs_done_ = true;
        if (items.empty()) return false;
        cf_future *f = nullptr;
        if (process_) {
            if constexpr (Travel) {
            writer w;
            w.put_value(*fn_);
            w.put_size(items.size());
            for (const In &x : items) w.put_value(x);
            cf_status s = cf_submit_bytes(ex_, &run_chunk_bytes<Fn, In, R>, w.data, w.len, &f);
            if (s != CF_OK) submit_failed(s);
            }
        } else {
            using C = chunk_task<Fn, In, R>;
            auto t = std::make_unique<C>(C{fn_, std::move(items)});
            cf_task task = CF_TASK_INIT;
            task.fn = &C::run;
            task.arg = t.get();
            task.arg_free = &free_state<C>;
            task.result_free = &free_box<chunk_result<R>>;
            cf_status s = cf_submit_task(ex_, &task, &f);
            if (s != CF_OK) submit_failed(s);
            (void)t.release();
        }
        queue_.push_back(pending{f});
        return !inputs_done_;
    }

    [[noreturn]] void submit_failed(cf_status s) {
        if (s == CF_SHUTDOWN) throw shutdown_error(s, status_text(s, "the executor was shut down"));
        if (s == CF_BROKEN) throw broken_executor(s, status_text(s, cf_executor_broken_reason(ex_)));
        throw_status(s);
    }

    double remaining() const {
        if (!has_deadline_) return CF_FOREVER;
        auto left = deadline_ - std::chrono::steady_clock::now();
        double s = std::chrono::duration<double>(left).count();
        return s > 0 ? s : 0.0;
    }

    /// Reads the next chunk's outcome into cur_ (waiting for it).
    void load_chunk() {
        cf_future *f = queue_.front().f;
        cur_.values.clear();
        cur_.error = nullptr;
        pos_ = 0;
        if (process_) {
            cf_bytes b{nullptr, 0};
            cf_status s = cf_future_result_bytes(f, remaining(), &b);
            if (s == CF_TIMEOUT) timed_out();
            if (s != CF_OK) {
                cur_.error = failure_of(f, s);
            } else {
                reader r{static_cast<const unsigned char *>(b.data), b.len};
                std::size_t k = r.get_size();
                cur_.values.reserve(k);
                if constexpr (Travel) {
                    for (std::size_t i = 0; i < k; i++) cur_.values.push_back(r.get_value<R>());
                }
                unsigned char flag = 0;
                r.get(&flag, 1);
                std::string message = r.get_value<std::string>();
                if (flag != 0) cur_.error = std::make_exception_ptr(task_error(0, message));
            }
        } else {
            void *v = nullptr;
            cf_status s = cf_future_result(f, remaining(), &v);
            if (s == CF_TIMEOUT) timed_out();
            if (s != CF_OK) {
                cur_.error = failure_of(f, s);
            } else {
                // Only this range reads the chunk: its values are moved out.
                cur_ = std::move(static_cast<box<chunk_result<R>> *>(v)->value);
            }
        }
        queue_.pop_front();
        cf_future_release(f);
    }

    [[noreturn]] void timed_out() {
        cancel_all();
        ended_ = true;
        throw timeout_error(CF_TIMEOUT, "cfutures: CF_TIMEOUT: the map's timeout passed");
    }

    /// Makes the next item current, or ends the iteration.
    void advance_to_item() {
        while (pos_ >= cur_.values.size() && !cur_.error) {
            if (have_chunk_ && buffersize_ != 0) {
                // A chunk read in full lets one more in (Python 3.14's buffersize).
                have_chunk_ = false;
                try {
                    submit_chunk();
                } catch (...) {
                    refill_error_ = std::current_exception();
                    inputs_done_ = true;
                }
            }
            if (queue_.empty()) {
                if (refill_error_) {
                    cur_.error = std::exchange(refill_error_, nullptr);
                    break;
                }
                ended_ = true;
                return;
            }
            load_chunk();
            have_chunk_ = true;
        }
    }

    void advance() {
        if (ended_) return;
        if (pos_ < cur_.values.size()) pos_++;
        advance_to_item();
    }

    R take() {
        if (ended_) throw std::out_of_range("cf::map: dereferencing the end of the range");
        if (pos_ < cur_.values.size()) return std::move(cur_.values[pos_]);
        // The item failed: the iteration ends here, what has not started is cancelled.
        std::exception_ptr e = cur_.error;
        cancel_all();
        ended_ = true;
        std::rethrow_exception(e);
    }

    void cancel_all() noexcept {
        for (pending &p : queue_) {
            cf_future_cancel(p.f);
            cf_future_release(p.f);
        }
        queue_.clear();
        inputs_done_ = true;
    }

    cf_executor *ex_;
    bool process_;
    std::shared_ptr<Fn> fn_;
    Rng inputs_;
    It it_;
    End end_;
    std::size_t chunksize_, buffersize_;
    bool has_deadline_ = false;
    std::chrono::steady_clock::time_point deadline_{};
    std::deque<pending> queue_;
    chunk_result<R> cur_;
    std::size_t pos_ = 0;
    bool inputs_done_ = false, started_ = false, ended_ = false, have_chunk_ = false;
    std::exception_ptr refill_error_;
};

/// The inputs a map keeps: a reference to an lvalue range (read lazily), the range
/// itself for an rvalue; without buffersize everything is read during the call.
template <class Range> using kept_range_t = std::conditional_t<std::is_lvalue_reference_v<Range>, Range, std::remove_reference_t<Range>>;

template <class F, class Range> struct map_types {
    using Fn = std::decay_t<F>;
    using In = std::decay_t<decltype(*std::begin(std::declval<Range &>()))>;
    using R = std::invoke_result_t<Fn &, In>;
    static_assert(!std::is_void_v<R>, "cf::executor::map: fn must return a value (it returns void)");
    static_assert(!std::is_reference_v<R>, "cf::executor::map: fn returns a reference; return a value");
};

template <bool Travel, class F, class Range>
auto make_map(executor &ex, F &&fn, Range &&inputs, const map_options &o) {
    using T = map_types<F, Range>;
    using M = map_range<typename T::Fn, kept_range_t<Range>, typename T::In, typename T::R, Travel>;
    return std::make_unique<M>(ex, typename T::Fn(std::forward<F>(fn)), std::forward<Range>(inputs), o);
}

/// What map returns: an owning handle to the range (movable), itself a range.
template <class M> class map_handle {
public:
    explicit map_handle(std::unique_ptr<M> m) : m_(std::move(m)) {}
    auto begin() { return m_->begin(); }
    auto end() { return m_->end(); }

private:
    std::unique_ptr<M> m_;
};
template <class M> map_handle(std::unique_ptr<M>) -> map_handle<M>;

} // namespace detail

template <class F, class Range> auto executor::map(F &&fn, Range &&inputs, map_options options) {
    using T = detail::map_types<F, Range>;
    constexpr bool travel = detail::transferable_v<typename T::Fn> && detail::transferable_v<typename T::In> &&
                            detail::transferable_v<typename T::R>;
    if constexpr (!travel) {
        if (process_)
            throw std::invalid_argument(
                "cf::executor::map on a process pool: the callable, the inputs and the results must be trivially "
                "copyable, std::string or std::vector of a trivially copyable type to travel to a worker process");
    }
    return detail::map_handle(
        detail::make_map<travel>(*this, std::forward<F>(fn), std::forward<Range>(inputs), options));
}

template <class F, class Range> auto process_pool::map(F &&fn, Range &&inputs, map_options options) {
    using T = detail::map_types<F, Range>;
    static_assert(detail::must_travel<typename T::Fn, detail::the_callable_and_its_captures>::value,
                  "cf::process_pool::map: the callable must be trivially copyable to travel to a worker process: "
                  "a lambda may capture only trivially copyable values (by value)");
    static_assert(detail::must_travel<typename T::In, detail::a_map_input>::value,
                  "cf::process_pool::map: each input must be trivially copyable, std::string or std::vector of a "
                  "trivially copyable type to travel to a worker process");
    static_assert(detail::must_travel<typename T::R, detail::the_result>::value,
                  "cf::process_pool::map: the result must be trivially copyable, std::string or std::vector of a "
                  "trivially copyable type to travel back from a worker process");
    return detail::map_handle(detail::make_map<true>(*this, std::forward<F>(fn), std::forward<Range>(inputs), options));
}

// ---------------------------------------------------------------------------------------
// Waiting on many
// ---------------------------------------------------------------------------------------

/// What cf::wait gives: the futures done at return, and the others (in input order).
template <class T> struct wait_result {
    std::vector<future<T>> done, not_done;
};

namespace detail {
inline cf_return_when to_c(return_when w) {
    switch (w) {
    case return_when::first_completed:
        return CF_FIRST_COMPLETED;
    case return_when::first_exception:
        return CF_FIRST_EXCEPTION;
    case return_when::all_completed:
        break;
    }
    return CF_ALL_COMPLETED;
}
template <class T> std::vector<cf_future *> handles(const std::vector<future<T>> &fs) {
    std::vector<cf_future *> h;
    h.reserve(fs.size());
    for (const future<T> &f : fs) {
        if (!f.valid()) throw std::invalid_argument("cfutures: an empty cf::future in a list of futures");
        h.push_back(f.native_handle());
    }
    return h;
}
template <class T> wait_result<T> wait_impl(const std::vector<future<T>> &fs, return_when when, double timeout) {
    std::vector<cf_future *> h = handles(fs);
    std::unique_ptr<bool[]> done(new bool[fs.size() + 1]());
    cf_status s = cf_wait(h.data(), h.size(), to_c(when), timeout, done.get(), nullptr);
    if (s != CF_OK && s != CF_TIMEOUT) throw_status(s);
    wait_result<T> r;
    for (std::size_t i = 0; i < fs.size(); i++) (done[i] ? r.done : r.not_done).push_back(fs[i]);
    return r;
}

/// The range as_completed returns.
template <class T> class as_completed_range {
public:
    class iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = future<T>;
        using difference_type = std::ptrdiff_t;
        using pointer = const future<T> *;
        using reference = const future<T> &;
        iterator() = default;
        /// The next done future: valid until the next ++.
        const future<T> &operator*() const { return r_->current_; }
        const future<T> *operator->() const { return &r_->current_; }
        iterator &operator++() {
            r_->next();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator &a, const iterator &b) noexcept { return a.at_end() == b.at_end(); }
        friend bool operator!=(const iterator &a, const iterator &b) noexcept { return !(a == b); }

    private:
        friend class as_completed_range;
        explicit iterator(as_completed_range *r) : r_(r) {}
        bool at_end() const noexcept { return r_ == nullptr || r_->ended_; }
        as_completed_range *r_ = nullptr;
    };

    as_completed_range(const std::vector<future<T>> &fs, double timeout) : fs_(fs) {
        std::vector<cf_future *> h = handles(fs_);
        index_.reserve(h.size());
        for (std::size_t i = 0; i < h.size(); i++) index_.emplace_back(h[i], i);
        std::sort(index_.begin(), index_.end());
        check(cf_as_completed_new(h.data(), h.size(), timeout, &it_));
    }
    as_completed_range(as_completed_range &&o) noexcept
        : fs_(std::move(o.fs_)), index_(std::move(o.index_)), it_(std::exchange(o.it_, nullptr)),
          current_(std::move(o.current_)), started_(o.started_), ended_(o.ended_) {}
    as_completed_range(const as_completed_range &) = delete;
    as_completed_range &operator=(const as_completed_range &) = delete;
    ~as_completed_range() { cf_as_completed_free(it_); }

    /// Waits for the first done future (timeout_error once the timeout has passed).
    iterator begin() {
        if (!started_) {
            started_ = true;
            next();
        }
        return iterator(this);
    }
    iterator end() noexcept { return iterator(); }

private:
    void next() {
        if (ended_) return;
        cf_future *f = nullptr;
        cf_status s = cf_as_completed_next(it_, &f);
        if (s == CF_END) {
            ended_ = true;
            current_ = future<T>();
            return;
        }
        if (s == CF_TIMEOUT) throw timeout_error(s, "cfutures: CF_TIMEOUT: as_completed's timeout passed");
        check(s);
        auto at = std::lower_bound(index_.begin(), index_.end(), std::make_pair(f, std::size_t{0}));
        current_ = fs_[at->second];
    }

    std::vector<future<T>> fs_;
    std::vector<std::pair<cf_future *, std::size_t>> index_;
    cf_as_completed *it_ = nullptr;
    future<T> current_;
    bool started_ = false, ended_ = false;
};
} // namespace detail

/// Waits until the condition holds (Python's concurrent.futures.wait).
template <class T>
wait_result<T> wait(const std::vector<future<T>> &fs, return_when when = return_when::all_completed) {
    return detail::wait_impl(fs, when, CF_FOREVER);
}
/// As wait, at most `timeout`; never throws timeout_error: look at not_done.
template <class T, class Rep, class Period>
wait_result<T> wait(const std::vector<future<T>> &fs, return_when when, std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_impl(fs, when, detail::seconds(timeout));
}

/// The futures in the order they become done (Python's as_completed): an input range
/// whose iterator gives `const future<T>&`, valid until the next ++.
template <class T> detail::as_completed_range<T> as_completed(const std::vector<future<T>> &fs) {
    return detail::as_completed_range<T>(fs, CF_FOREVER);
}
/// As as_completed; begin() and ++ throw timeout_error once `timeout` has passed since
/// the call.
template <class T, class Rep, class Period>
detail::as_completed_range<T> as_completed(const std::vector<future<T>> &fs, std::chrono::duration<Rep, Period> timeout) {
    return detail::as_completed_range<T>(fs, detail::seconds(timeout));
}

/// A future done when every input is done; its result is the inputs, each done
/// (cf_when with CF_ALL_COMPLETED, then a continuation).
template <class T> future<std::vector<future<T>>> when_all(std::vector<future<T>> fs) {
    std::vector<cf_future *> h = detail::handles(fs);
    cf_future *w = nullptr;
    detail::check(cf_when(h.data(), h.size(), CF_ALL_COMPLETED, &w));
    future<std::size_t> all = detail::future_access<std::size_t>::make(w);
    return all.then([fs = std::move(fs)](const future<std::size_t> &) mutable { return std::move(fs); });
}

/// A future done when the first input is done; its result is that input's index.
template <class T> future<std::size_t> when_any(std::vector<future<T>> fs) {
    std::vector<cf_future *> h = detail::handles(fs);
    cf_future *w = nullptr;
    detail::check(cf_when(h.data(), h.size(), CF_FIRST_COMPLETED, &w));
    return detail::future_access<std::size_t>::make(w);
}

} // namespace cf

#endif // CFUTURES_HPP
