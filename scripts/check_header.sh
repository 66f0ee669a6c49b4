#!/usr/bin/env bash
# Header drift: the committed include/cfutures.h must be byte for byte what the Rust
# sources generate (build.rs writes that to $CFUTURES_HEADER_OUT, build/generated/cfutures.h
# in the CMake build).
#
# usage: check_header.sh [GENERATED] [COMMITTED]
#   defaults: build/generated/cfutures.h include/cfutures.h
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

generated=${1:-build/generated/cfutures.h}
committed=${2:-include/cfutures.h}
if [ ! -f "$generated" ]; then
    echo "check_header: $generated does not exist (build first)" >&2
    exit 1
fi
if cmake -E compare_files "$generated" "$committed"; then
    echo "check_header: $committed is what the sources generate"
    exit 0
fi
echo "check_header: $committed differs from what the sources generate ($generated):" >&2
diff -u "$committed" "$generated" | head -n 80 >&2 || true
echo "check_header: regenerate it with 'cmake --build build --target header'" \
    "(or CFUTURES_UPDATE_HEADER=1 cargo build) and commit it" >&2
exit 1
