#!/bin/sh
# The memory check before a batch runs (issue 22): a stage whose batch would need more memory than
# the process may still take says so before starting, with the number it needs, and exits 69
# (MODE_MEM_AVAILABLE stands in for a small machine); MODE_MEM_CHECK=off skips the check; with the
# memory there, the same run goes through.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
head -n 56 "$E/calib/data.jsonl" | tail -n 12 >"$T/c.jsonl"
mode-tokenize -m "$M" --root "$E/calib" -o "$T/c.ms" "$T/c.jsonl"
mode-ilp --avg-bits 3 --method uniform -m "$M" -o "$T/a.ms"
for st in route-trace eval sensitivity pack; do
    case $st in
    route-trace) set -- mode-route-trace -m "$M" -o "$T/out-$st" ;;
    eval) set -- mode-eval -m "$M" -o "$T/out-$st" ;;
    sensitivity) set -- mode-sensitivity -m "$M" --metric layer --all -o "$T/out-$st" ;;
    pack) set -- mode-pack -m "$M" -a "$T/a.ms" -o "$T/out-$st" ;;
    esac
    MODE_MEM_AVAILABLE=1000000 run "$@" "$T/c.ms"
    is "$rc" 69 "$st with 1 MB available: exit 69"
    has "$T/err" "out of memory (" "... out of memory"
    has "$T/err" "needed for a batch of 12 samples" "... the number it needs, for what"
    has "$T/err" "1.0 MB available" "... and what it has"
    [ ! -e "$T/out-$st" ] && pass "... no output" || fail "... no output"
    MODE_MEM_AVAILABLE=1000000 MODE_MEM_CHECK=off run "$@" "$T/c.ms"
    is "$rc" 0 "$st: MODE_MEM_CHECK=off runs it"
    rm -rf "$T/out-$st"
    run "$@" "$T/c.ms"
    is "$rc" 0 "$st with this machine's memory: exit 0"
done
# the need grows with the batch: 12 samples need more than 2
head -n 2 "$T/c.jsonl" >"$T/c2.jsonl"
mode-tokenize -m "$M" --root "$E/calib" -o "$T/c2.ms" "$T/c2.jsonl"
need() { MODE_MEM_AVAILABLE=1 mode-eval -m "$M" -o "$T/x" "$1" 2>&1 | sed -n 's/.*out of memory (\([0-9.]*\) MB needed.*/\1/p'; }
n12=$(need "$T/c.ms") n2=$(need "$T/c2.ms")
[ -n "$n12" ] && [ -n "$n2" ] && awk -v a="$n12" -v b="$n2" 'BEGIN { exit !(a > b) }' && pass "12 samples need more than 2 ($n12 > $n2 MB)" ||
    fail "12 samples need more than 2 ($n12, $n2)"
done_testing
