#!/usr/bin/env bash
# Installs what the benchmark suite needs, only what is missing.
# Debian packages: anchors (Boost.Asio, Boost.Thread, GLib, oneTBB, libuv), the toolchain, gnuplot for the plot.
set -u
need=()
for p in g++ make pkg-config libboost-dev libboost-thread-dev libglib2.0-dev libtbb-dev libuv1-dev libthread-pool-dev gnuplot-nox; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        need+=("$p")
    fi
done
if [ ${#need[@]} -gt 0 ]; then
    echo "[bench] installing missing packages: ${need[*]}" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2 || echo "[bench] apt-get update failed" >&2
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 \
        || echo "[bench] apt-get install failed for some of: ${need[*]}" >&2
fi
# mpi4py (the anchor of bench/mpi.sh), built by pip against the installed Open MPI.
if command -v mpicc >/dev/null 2>&1 && ! python3 -c "import mpi4py" 2>/dev/null; then
    python3 -m pip install -q mpi4py >&2 || echo "[bench] pip install mpi4py failed" >&2
fi
