#!/bin/sh
# Every EXAMPLES block of every manual page runs, in a directory holding the files the examples
# name (made from the vendored fixtures), and exits 0.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
S=$MODE_FIXTURES/streams
W=$T/work
mkdir -p "$W"
mode-cat -J -o "$W/samples.msgpack" "$S/samples.jsonl"
mode-cat -J -o "$W/alloc.msgpack" "$S/alloc.jsonl"
mode-cat -J -o "$W/trace-layers-0-1.msgpack" "$S/trace-a.jsonl"
mode-cat -J -o "$W/trace-layers-2-3.msgpack" "$S/trace-b.jsonl"
ln -s "$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe" "$W/model"
# a page whose examples need more files has a setup script: tests/filters/man-examples.d/PAGE.sh,
# sourced with $W (the work directory), $S and $MODE_FIXTURES set
for setup in "$MODE_ROOT"/tests/filters/man-examples.d/*.sh; do
    [ -e "$setup" ] && . "$setup"
done

for page in "$MODE_ROOT"/man/*.[1-8]; do
    name=$(basename "$page")
    # the literal blocks of the EXAMPLES section, mdoc escapes undone, one file per block
    awk -v out="$T/$name.ex" '
        /^\.Sh / { in_ex = ($2 == "EXAMPLES") }
        in_ex && /^\.Bd -literal/ { n++; lit = 1; next }
        lit && /^\.Ed/ { lit = 0; next }
        lit { gsub(/\\e/, "\\"); print > (out "." n) }
    ' "$page"
    for ex in "$T/$name".ex.*; do
        [ -e "$ex" ] || continue
        run sh -e -c "cd '$W' && . '$ex'"
        if [ "$rc" = 69 ] && grep -q "CUDA is unavailable" "$T/err"; then
            pass "$name: example $(basename "$ex" | sed 's/.*\.//') # SKIP needs a GPU"
            continue
        fi
        is "$rc" 0 "$name: example $(basename "$ex" | sed 's/.*\.//') runs"
        [ "$rc" -eq 0 ] || { diag "$(cat "$ex")"; sed 's/^/# /' "$T/err"; }
    done
done
done_testing
