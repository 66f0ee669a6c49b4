#!/usr/bin/env bash
# Builds main.c against an installed cfutures found through pkg-config, the way a
# Makefile-based project would:
#   cc main.c $(pkg-config --cflags --libs cfutures)
#
# usage: build.sh PREFIX LIBDIR OUTDIR
#   PREFIX  where cfutures is installed (cmake --install build --prefix PREFIX)
#   LIBDIR  the library directory relative to PREFIX (CMAKE_INSTALL_LIBDIR, e.g. lib)
#   OUTDIR  where to put the program, OUTDIR/app
# The program has no RPATH: run it with LD_LIBRARY_PATH=PREFIX/LIBDIR.
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 PREFIX LIBDIR OUTDIR" >&2
    exit 2
fi
prefix=$1
libdir=$2
outdir=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
# Only the staged copy may answer, never one installed on the machine.
export PKG_CONFIG_LIBDIR="$PKG_CONFIG_PATH"

version=$(pkg-config --modversion cfutures)
echo "pkg-config: cfutures $version"
echo "  cflags: $(pkg-config --cflags cfutures)"
echo "  libs:   $(pkg-config --libs cfutures)"
case " $(pkg-config --libs cfutures) " in
    *" -lcfutures "*) ;;
    *) echo "pkg-config --libs cfutures lacks -lcfutures" >&2; exit 1 ;;
esac

mkdir -p "$outdir"
# shellcheck disable=SC2046  # word splitting of pkg-config's output is intended
"${CC:-cc}" -std=c11 -Wall -Wextra -Werror -pedantic \
    "$here/main.c" -o "$outdir/app" $(pkg-config --cflags --libs cfutures)
echo "built $outdir/app"
# The same flags serve a C++ program (cfutures.hpp sits next to cfutures.h).
# shellcheck disable=SC2046
"${CXX:-c++}" -std=c++17 -Wall -Wextra -Werror -pedantic \
    "$here/main.cpp" -o "$outdir/app_cxx" $(pkg-config --cflags --libs cfutures)
echo "built $outdir/app_cxx"
