#!/usr/bin/env bash
# Checks that a shared library exports only cf_* symbols:
#   nm -D --defined-only LIB
# may list cf_* symbols and version tags (type A), nothing else.
#
# usage: check_symbols.sh [LIB]   (default: build/lib/libcfutures.so)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

lib=${1:-build/lib/libcfutures.so}
if [ ! -e "$lib" ]; then
    echo "check_symbols: $lib does not exist (build first)" >&2
    exit 1
fi

syms=$(nm -D --defined-only "$lib")
ours=$(awk 'NF >= 3 && $3 ~ /^cf_/' <<<"$syms")
others=$(awk 'NF >= 3 && $2 != "A" && $3 !~ /^cf_/' <<<"$syms")

count=$(grep -c . <<<"$ours" || true)
if [ "$count" -eq 0 ]; then
    echo "check_symbols: $lib exports no cf_* symbol" >&2
    exit 1
fi
if ! grep -q ' cf_version$' <<<"$ours"; then
    echo "check_symbols: $lib does not export cf_version" >&2
    exit 1
fi
if [ -n "$others" ]; then
    echo "check_symbols: $lib exports symbols outside the cf_ prefix:" >&2
    echo "$others" >&2
    exit 1
fi
echo "check_symbols: $lib exports $count symbols, all cf_*"
