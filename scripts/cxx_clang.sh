#!/usr/bin/env bash
# The C++ tests (c_tests/cxx) built with clang++ against this build's libcfutures, as a
# CMake project of their own, then run with ctest. Called by the CTest test cxx.clang.
#
#   bash scripts/cxx_clang.sh CLANGXX SOURCE_DIR BINARY_DIR LIBRARY
set -euo pipefail
clangxx=$1 src=$2 bin=$3 lib=$4
cmake -S "$src/c_tests/cxx" -B "$bin" -DCMAKE_CXX_COMPILER="$clangxx" -DCMAKE_BUILD_TYPE=Release \
    -DCFUTURES_INCLUDE_DIR="$src/include" -DCFUTURES_LIBRARY="$lib"
cmake --build "$bin" -j"$(nproc)"
ctest --test-dir "$bin" --output-on-failure -j2
