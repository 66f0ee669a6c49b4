#!/usr/bin/env bash
# Quick start: installs cmake if it is missing (apt), builds cfutures and its C tests
# and examples with CMake in build/, then runs the demo.
#
#   bash scripts/setup.sh
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_build_tools
configure_and_build

echo "==> $BUILD_DIR/examples/demo"
"$BUILD_DIR/examples/demo"
