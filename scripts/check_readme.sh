#!/usr/bin/env bash
# Checks that README.md shows examples/readme_example.c, examples/isolate_crash.c and
# examples/cxx_example.cpp verbatim: the ```c (```cpp) block that follows the line
# `<!-- BEGIN <file> -->`. The examples themselves are built and run by CTest
# (example.readme, example.readme_cxx), so the README's code is tested.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check() {
    local file=$1 lang=${2:-c}
    local marker="<!-- BEGIN $file -->"
    if ! grep -qxF "$marker" README.md; then
        echo "check_readme: README.md lacks the line: $marker" >&2
        exit 1
    fi
    local block
    block=$(awk -v marker="$marker" -v lang="$lang" '
        $0 == marker { found = 1; next }
        found == 1 && $0 == "```" lang { inside = 1; found = 2; next }
        inside && /^```$/ { exit }
        inside { print }
    ' README.md)
    if ! diff -u "$file" - <<<"$block"; then
        echo "check_readme: README.md's example differs from $file (diff above)" >&2
        exit 1
    fi
    echo "check_readme: README.md shows $file verbatim"
}

check examples/readme_example.c
check examples/isolate_crash.c
check examples/cxx_example.cpp cpp
