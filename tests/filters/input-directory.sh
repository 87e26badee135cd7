#!/bin/sh
# Regression (issue 20): a directory given where a stream or file is read was opened, then failed
# on read(2) with EISDIR: exit 74 ("read failed: Is a directory"), an I/O error. It is a missing
# input: every filter exits 66 with "PATH: is a directory", for a path and for standard input.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
M=$MODE_FIXTURES/emoji-vl/model
D=$T/dir
mkdir "$D"

# refused PROG ARGS...: the run must exit 66 with exactly "PROG: $D: is a directory"
refused() {
    run "$@"
    is "$rc" 66 "$*: exit 66"
    is "$(cat "$T/err")" "$1: $D: is a directory" "... naming the directory"
}
refused mode-cat "$D"
refused mode-cat -c "$D"
refused mode-cat --header "$D"
refused mode-cat -s "$D"
refused mode-cat -J "$D"
refused mode-vis-denoise "$D"
refused mode-ilp --avg-bits 3 -f "$D" -s "$D"
refused mode-eval -m "$HUB" "$D"
refused mode-route-trace -m "$HUB" "$D"
refused mode-sensitivity -m "$HUB" "$D"
refused mode-pack -m "$HUB" -a "$D" -o "$T/packed"
refused mode-bench --alloc "$D"
refused mode-tokenize -m "$M" "$D"
is "$(ls "$T" | grep -c packed || true)" 0 "mode-pack leaves no output directory"

# a directory on standard input
for opt in "" -c -s -J; do
    set +e
    mode-cat $opt <"$D" >"$T/out" 2>"$T/err"
    rc=$?
    set -e
    is "$rc" 66 "mode-cat $opt <DIR: exit 66"
    is "$(cat "$T/err")" "mode-cat: <stdin>: is a directory" "... naming standard input"
done
set +e
mode-vis-denoise <"$D" >"$T/out" 2>"$T/err"
rc=$?
set -e
is "$rc" 66 "mode-vis-denoise <DIR: exit 66"
done_testing
