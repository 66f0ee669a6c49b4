#!/usr/bin/env bash
# The C tests under AddressSanitizer + UndefinedBehaviorSanitizer (STYLE.md section 7, row 6).
#
#   bash scripts/sanitize.sh            # every CTest test except those listed below
#   bash scripts/sanitize.sh -R wait    # extra arguments go to ctest (first pass only)
#
# Configures a separate Debug tree (ASAN_BUILD_DIR, default build-asan) in which every C
# program of the repository (tests, stress, fault, the fuzz corpus replay, examples) is
# compiled with -fsanitize=address,undefined -fno-omit-frame-pointer
# -fno-sanitize-recover=undefined (CFUTURES_SANITIZE, the default of Debug builds), checks
# with nm that a test binary really carries ASan (__asan_init) and UBSan
# (__ubsan_handle_*), then runs ctest there, two at a time. LeakSanitizer is on (the
# default of ASan on Linux): a leak at exit fails the test.
#
# The Rust library itself is not instrumented (that needs -Zsanitizer=address, nightly
# only); ASan still intercepts its malloc/free, so C code misusing memory the library
# owns, double frees and leaks of library objects are caught. When `rustc --version` says
# nightly, this script also runs `cargo test` with RUSTFLAGS=-Zsanitizer=address;
# otherwise it says that it skips it, and why.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}

# Tests that cannot run under ASan/UBSan, by CTest name (an anchored regex each):
EXCLUDE=(
    # RLIMIT_AS: ASan reserves terabytes of address space for its shadow memory at
    # start-up, so a process under an address-space limit cannot even start.
    # (fault/memory.c also skips itself, exit 77, when built with ASan.)
    'fault\.memory'
)
# Tests that crash a process-pool worker on purpose with SIGSEGV and check that its
# future names the signal: ASan's own SEGV handler would report the crash and _exit(1)
# instead (and LeakSanitizer would then report the dying worker's inherited heap), so
# they run in a second pass with handle_segv=0, where the kernel kills the worker as in
# a normal build. (test_process_crash restores SIG_DFL itself under ASan.)
SEGV_ON_PURPOSE=(
    'example\.demo\..*' # examples/demo.c (each run of it), section "process pool": a task raises SIGSEGV
)

# The MPI tests: Open MPI's own start-up and MPI_Finalize leave memory that
# LeakSanitizer reports (in libmpi, libopen-pal, and objects made through them; seen in
# mpi.spawn, where this library calls MPI_Init itself). They run in a pass of their own
# with detect_leaks=0: ASan's checks of every access and UBSan stay on.
NO_LEAK_CHECK=(
    'mpi\..*'
)

ensure_build_tools

echo "==> cmake -S . -B $ASAN_BUILD_DIR -DCMAKE_BUILD_TYPE=Debug -DCFUTURES_SANITIZE=ON"
cmake -S . -B "$ASAN_BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug -DCFUTURES_SANITIZE=ON
echo "==> cmake --build $ASAN_BUILD_DIR -j$(nproc)"
cmake --build "$ASAN_BUILD_DIR" -j"$(nproc)"

# The flags must really be there: a silently unsanitized build would pass everything.
probe="$ASAN_BUILD_DIR/c_tests/test_wait"
echo "==> nm $probe: __asan_init and __ubsan_handle_*"
syms=$(nm "$probe") # not `nm | grep -q`: with pipefail, grep -q's early exit fails nm
if ! grep -q '__asan_init' <<<"$syms"; then
    echo "sanitize: $probe has no __asan_init: the C tests are not built with ASan" >&2
    exit 1
fi
if ! grep -q '__ubsan_handle_' <<<"$syms"; then
    echo "sanitize: $probe has no __ubsan_handle_* symbol: the C tests are not built with UBSan" >&2
    exit 1
fi

join_re() {
    local IFS='|'
    echo "^($*)\$"
}
exclude_re=$(join_re "${EXCLUDE[@]}" "${SEGV_ON_PURPOSE[@]}" "${NO_LEAK_CHECK[@]}")
noleak_re=$(join_re "${NO_LEAK_CHECK[@]}")
segv_re=$(join_re "${SEGV_ON_PURPOSE[@]}")
# halt_on_error / abort_on_error: the first report ends the test (with a failure status);
# detect_leaks: LeakSanitizer at exit; print_stacktrace: UBSan reports with a stack.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"
# The tests' upper time bounds, loosened for the slower sanitized code.
export CF_TEST_TIME_SCALE=${CF_TEST_TIME_SCALE:-3}
echo "==> ctest --test-dir $ASAN_BUILD_DIR -j2 -E '$exclude_re' $*"
status=0
ctest --test-dir "$ASAN_BUILD_DIR" --output-on-failure -j2 -E "$exclude_re" "$@" || status=$?
if [ "$#" -eq 0 ]; then
    echo "==> ctest --test-dir $ASAN_BUILD_DIR -R '$segv_re' (ASAN_OPTIONS handle_segv=0)"
    ASAN_OPTIONS="$ASAN_OPTIONS:handle_segv=0" \
        ctest --test-dir "$ASAN_BUILD_DIR" --output-on-failure -j2 -R "$segv_re" || status=$?
    echo "==> ctest --test-dir $ASAN_BUILD_DIR -R '$noleak_re' (ASAN_OPTIONS detect_leaks=0)"
    ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" \
        ctest --test-dir "$ASAN_BUILD_DIR" --output-on-failure -j2 -R "$noleak_re" || status=$?
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: some tests failed under ASan/UBSan (see above)" >&2
    exit "$status"
fi

# Rust tests under ASan: nightly only.
rustc_version=$(rustc --version)
if [[ "$rustc_version" == *nightly* ]]; then
    echo "==> RUSTFLAGS=-Zsanitizer=address cargo test ($rustc_version)"
    host=$(rustc -vV | sed -n 's/^host: //p')
    # --target: build scripts and proc macros stay uninstrumented.
    CARGO_TARGET_DIR="$CFUTURES_ROOT/$ASAN_BUILD_DIR/cargo-asan" \
    RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
        cargo test --target "$host" --lib --tests
else
    echo "==> cargo test under -Zsanitizer=address: SKIPPED: $rustc_version is not a nightly" \
        "toolchain (-Z flags need nightly, and none can be installed here)"
fi
echo "==> sanitize: done"
