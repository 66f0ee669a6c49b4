#!/usr/bin/env bash
# The whole test suite: installs cmake if it is missing (apt), builds with CMake in
# build/, runs every CTest test (C tests, header checks, install and downstream builds,
# exported symbols, examples), then the Rust tests. Exits non-zero on any failure.
#
#   bash scripts/test.sh
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_build_tools
configure_and_build

echo "==> ctest --test-dir $BUILD_DIR --output-on-failure -j2"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j2

# Same target directory and environment as the CMake build, so cargo reuses its
# dependencies and does not re-run build.rs for a changed environment.
echo "==> cargo test --release"
# With the features the CMake build used (the `mpi` one when CFUTURES_MPI is on).
features=()
if grep -q '^CFUTURES_MPI_ENABLED:INTERNAL=ON' "$BUILD_DIR/CMakeCache.txt"; then
    features=(--features mpi)
fi
CARGO_TARGET_DIR="$CFUTURES_ROOT/$BUILD_DIR/cargo" \
CFUTURES_HEADER_OUT="$CFUTURES_ROOT/$BUILD_DIR/generated/cfutures.h" \
CFUTURES_MPI_HEADER_OUT="$CFUTURES_ROOT/$BUILD_DIR/generated/cfutures_mpi.h" \
    cargo test --release "${features[@]}"
