# shellcheck shell=bash
# Shared by scripts/setup.sh, scripts/test.sh and .ci/run; source it, do not run it.
# Sourcing it moves to the repository root.

CFUTURES_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$CFUTURES_ROOT"
BUILD_DIR=${BUILD_DIR:-build}

# Installs, with apt, what the CMake build needs and a fresh Debian machine with Rust
# may lack: cmake, plus make, g++ and pkg-config (the downstream pkg-config test) when
# missing. `apt-get update` runs once, and only if something is missing.
ensure_build_tools() {
    local pkgs=()
    command -v cmake >/dev/null 2>&1 || pkgs+=(cmake)
    command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || pkgs+=(make)
    command -v cc >/dev/null 2>&1 || pkgs+=(gcc)
    command -v c++ >/dev/null 2>&1 || pkgs+=(g++)
    command -v pkg-config >/dev/null 2>&1 || pkgs+=(pkg-config)
    command -v nm >/dev/null 2>&1 || pkgs+=(binutils)
    # The MPI executors (CFUTURES_MPI=ON, as .ci/run sets): Open MPI, and libclang for
    # the `mpi` crate's bindings.
    if [ "${CFUTURES_MPI:-AUTO}" = ON ]; then
        command -v mpicc >/dev/null 2>&1 || pkgs+=(libopenmpi-dev)
        command -v mpirun >/dev/null 2>&1 || pkgs+=(openmpi-bin)
        ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || pkgs+=(libclang-dev)
    fi
    if [ "${#pkgs[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    echo "==> installing ${pkgs[*]} with apt-get"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
}

# Configures and builds the CMake project (the Rust library through cargo, the C tests,
# the examples) in $BUILD_DIR.
configure_and_build() {
    echo "==> cmake -S . -B $BUILD_DIR -DCMAKE_BUILD_TYPE=Release -DCFUTURES_MPI=${CFUTURES_MPI:-AUTO}"
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCFUTURES_MPI="${CFUTURES_MPI:-AUTO}"
    echo "==> cmake --build $BUILD_DIR -j$(nproc)"
    cmake --build "$BUILD_DIR" -j"$(nproc)"
}
