#!/usr/bin/env bash
# Checks the layout of an installed cfutures (cmake --install build --prefix PREFIX).
#
# usage: check_install.sh PREFIX LIBDIR INCLUDEDIR VERSION
#   e.g. check_install.sh build/_stage lib include 0.1.0
set -euo pipefail

if [ "$#" -ne 4 ]; then
    echo "usage: $0 PREFIX LIBDIR INCLUDEDIR VERSION" >&2
    exit 2
fi
prefix=$1
libdir=$prefix/$2
incdir=$prefix/$3
version=$4
major=${version%%.*}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
failed=0

fail() {
    echo "check_install: $*" >&2
    failed=1
}

real=$libdir/libcfutures.so.$version
[ -f "$real" ] && [ ! -L "$real" ] || fail "$real is missing or not a regular file"
[ -x "$real" ] || fail "$real is not executable"
[ "$(readlink "$libdir/libcfutures.so.$major" || true)" = "libcfutures.so.$version" ] ||
    fail "$libdir/libcfutures.so.$major is not a symlink to libcfutures.so.$version"
[ "$(readlink "$libdir/libcfutures.so" || true)" = "libcfutures.so.$major" ] ||
    fail "$libdir/libcfutures.so is not a symlink to libcfutures.so.$major"
[ -f "$libdir/libcfutures.a" ] || fail "$libdir/libcfutures.a is missing"

if [ -f "$real" ]; then
    soname=$(objdump -p "$real" | awk '$1 == "SONAME" { print $2 }')
    [ "$soname" = "libcfutures.so.$major" ] ||
        fail "SONAME of $real is '$soname', expected libcfutures.so.$major (build.rs sets it)"
fi

cmp -s "$incdir/cfutures.h" "$root/include/cfutures.h" ||
    fail "$incdir/cfutures.h is missing or differs from include/cfutures.h"
cmp -s "$incdir/cfutures.hpp" "$root/include/cfutures.hpp" ||
    fail "$incdir/cfutures.hpp is missing or differs from include/cfutures.hpp"

for f in cmake/cfutures/cfuturesConfig.cmake cmake/cfutures/cfuturesConfigVersion.cmake \
    pkgconfig/cfutures.pc; do
    [ -f "$libdir/$f" ] || fail "$libdir/$f is missing"
done
if [ -f "$libdir/pkgconfig/cfutures.pc" ]; then
    abs_prefix=$(cd "$prefix" && pwd)
    grep -qx "prefix=$abs_prefix" "$libdir/pkgconfig/cfutures.pc" ||
        fail "cfutures.pc does not say prefix=$abs_prefix"
    grep -qx "Version: $version" "$libdir/pkgconfig/cfutures.pc" ||
        fail "cfutures.pc does not say Version: $version"
fi

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "check_install: $prefix has libcfutures.so.$version (SONAME libcfutures.so.$major)," \
    "its symlinks, libcfutures.a, cfutures.h, cfutures.hpp, the CMake package and cfutures.pc"
