#!/usr/bin/env bash
# Checks that README.md shows examples/readme_example.c verbatim: the ```c block that
# follows the line `<!-- BEGIN examples/readme_example.c -->`. The example itself is
# built and run by CTest (example.readme), so the README's C code is tested.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

marker='<!-- BEGIN examples/readme_example.c -->'
if ! grep -qxF "$marker" README.md; then
    echo "check_readme: README.md lacks the line: $marker" >&2
    exit 1
fi
block=$(awk -v marker="$marker" '
    $0 == marker { found = 1; next }
    found == 1 && /^```c$/ { inside = 1; found = 2; next }
    inside && /^```$/ { exit }
    inside { print }
' README.md)
if ! diff -u examples/readme_example.c - <<<"$block"; then
    echo "check_readme: README.md's example differs from examples/readme_example.c (diff above)" >&2
    exit 1
fi
echo "check_readme: README.md shows examples/readme_example.c verbatim"
