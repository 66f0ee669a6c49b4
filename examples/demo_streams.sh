#!/usr/bin/env bash
# CTest example.demo.streams: the demo's output reaches a pipe as it goes, not only when
# the demo ends (a newcomer who runs `demo | tee log` must see progress).
#
#   bash examples/demo_streams.sh path/to/demo
#
# Runs the demo at its default size with its stdout into a file (not a terminal, so
# stdio would buffer it fully unless the demo asks otherwise) and waits for section 1's
# heading. That heading is printed before section 1 counts primes serially (about 1.5 s
# on this project's machine, and then seven more sections), so with line-buffered output
# it appears while the demo still runs; with full buffering it appears only at the end.
set -euo pipefail
demo=$1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$demo" >"$log" &
pid=$!
for _ in $(seq 1 600); do # up to 60 s for the first line
    if grep -q "^== 1\. Counting the primes" "$log"; then
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo_streams: section 1's heading arrived while the demo was still running"
            wait "$pid"
            exit 0
        fi
        echo "demo_streams: FAIL: section 1's heading arrived only when the demo had ended" >&2
        exit 1
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "demo_streams: FAIL: the demo ended before section 1's heading reached the file:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
kill "$pid" 2>/dev/null || true
echo "demo_streams: FAIL: gave up after 60 s waiting for section 1's heading in the output" >&2
exit 1
