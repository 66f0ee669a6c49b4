#!/usr/bin/env bash
# Model checks of the concurrency core (src/rt/loom_tests.rs) with loom: every
# interleaving of each model's threads, up to LOOM_MAX_PREEMPTIONS preemptions (default
# 2; 3 is affordable too). Built with --cfg cfutures_loom in its own target directory
# (target/loom), so it never disturbs the normal build. Fails if any model fails.
#
#   bash scripts/loom.sh [FILTER]      e.g. bash scripts/loom.sh pool
#
# Each model runs in its own test process: when loom finds a deadlock it panics inside
# its coroutines, and the unwinding can abort the process ("panic in a destructor
# during cleanup"), which would hide every model after it. To see the interleaving of a
# failure: LOOM_LOG=trace LOOM_LOCATION=1 bash scripts/loom.sh NAME (large output).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2}
export RUSTFLAGS="--cfg cfutures_loom"
export CARGO_TARGET_DIR=${CFUTURES_LOOM_TARGET_DIR:-target/loom}
# Optimised (loom's bookkeeping is slow unoptimised) but without the release profile's
# LTO, which only lengthens the build of this test binary.
export CARGO_PROFILE_RELEASE_LTO=off
filter=${1:-loom}

start=$SECONDS
echo "==> loom: building (RUSTFLAGS=$RUSTFLAGS, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo test --release --lib --no-run

mapfile -t models < <(cargo test -q --release --lib "$filter" -- --list 2>/dev/null |
    sed -n 's/^\(.*loom_tests::.*\): test$/\1/p')
if [ "${#models[@]}" -eq 0 ]; then
    echo "loom: no model matches '$filter'" >&2
    exit 1
fi

echo "==> loom: ${#models[@]} models, LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
passed=0
failed=()
for m in "${models[@]}"; do
    t0=$SECONDS
    if cargo test -q --release --lib "$m" -- --exact --test-threads=1 --nocapture; then
        passed=$((passed + 1))
        echo "loom: $m ok ($((SECONDS - t0)) s)"
    else
        failed+=("$m")
        echo "loom: $m FAILED ($((SECONDS - t0)) s)"
    fi
done

echo "==> loom: $((SECONDS - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "loom: failed models:" >&2
    printf '    %s\n' "${failed[@]}" >&2
fi
echo "loom: ${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
