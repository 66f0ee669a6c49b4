#!/usr/bin/env bash
# Checks that README.md shows examples/readme_example.c and examples/isolate_crash.c
# verbatim: the ```c block that follows the line `<!-- BEGIN <file> -->`. The example itself is
# built and run by CTest (example.readme), so the README's C code is tested.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check() {
    local file=$1
    local marker="<!-- BEGIN $file -->"
    if ! grep -qxF "$marker" README.md; then
        echo "check_readme: README.md lacks the line: $marker" >&2
        exit 1
    fi
    local block
    block=$(awk -v marker="$marker" '
        $0 == marker { found = 1; next }
        found == 1 && /^```c$/ { inside = 1; found = 2; next }
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
