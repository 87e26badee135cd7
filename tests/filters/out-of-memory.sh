#!/bin/sh
# Out of memory ends a run promptly with exit 69 and a message naming what was being allocated —
# regression: under a small `ulimit -v` route-trace, eval, pack, sensitivity and tokenize printed
# "out of memory" (or even finished) and then spun at 100% CPU forever, because OpenBLAS retries a
# failed mapping of its buffer without end and exit() waited for its worker threads. Each heavy
# filter runs under address-space limits that fail at different points (OpenBLAS's buffers, the
# vision activations, the deepstack, mapping the model), each within a generous timeout.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
if grep -q fsanitize "$MODE_ROOT/build/flags" 2>/dev/null; then
    echo "1..0 # SKIP a sanitizer build reserves terabytes of address space: ulimit -v cannot be tested"
    exit 0
fi
# OpenBLAS maps a 128 MiB buffer per worker thread when it starts: two threads whatever the
# machine, so that the limits below mean the same on 2 cores and on 64
export OPENBLAS_NUM_THREADS=2
mode-tokenize -m "$M" -o "$T/calib.ms" "$E/calib/data.jsonl"
mode-ilp --method uniform --avg-bits 4 -m "$M" -o "$T/u4.ms"

# limited KB CMD...: runs CMD under ulimit -v KB and a 120 s timeout (a hang shows as 124)
limited() {
    kb=$1; shift
    set +e
    (ulimit -v "$kb" && exec timeout 120 "$@") >"$T/out" 2>"$T/err"
    rc=$?
    set -e
}
oom() { # KB NAME CMD...
    kb=$1 name=$2; shift 2
    limited "$kb" "$@"
    is "$rc" 69 "$name under ulimit -v $kb: exit 69"
    has "$T/err" "out of memory (" "... saying out of memory, and for what"
}
for kb in 300000 400000 440000; do
    oom $kb mode-route-trace mode-route-trace -m "$M" -o "$T/o" "$T/calib.ms"
    oom $kb mode-eval mode-eval -m "$M" -o "$T/o" "$T/calib.ms"
    oom $kb mode-sensitivity mode-sensitivity -m "$M" --metric layer -o "$T/o" "$T/calib.ms"
    oom $kb mode-pack mode-pack -m "$M" -a "$T/u4.ms" -o "$T/pk$kb" "$T/calib.ms"
    ok=yes
    [ -e "$T/o" ] && ok=no
    [ -e "$T/pk$kb" ] && ok=no
    is "$ok" yes "... and no output left at $kb KB"
done
# mapping the model's weights fails: 69 too (it was 74, an I/O error)
oom 60000 mode-tokenize mode-tokenize -m "$M" -o "$T/o" "$E/calib/data.jsonl"
# a run that fits ends: OpenBLAS's worker threads may be spinning on a failed mapping of their
# own, and the exit must not wait for them
limited 100000 mode-tokenize -m "$M" -o "$T/t.ms" "$E/calib/data.jsonl"
case $rc in 0 | 69) pass "mode-tokenize under ulimit -v 100000 ends (exit $rc)" ;; *) fail "mode-tokenize under ulimit -v 100000 ends (exit $rc)" ;; esac
done_testing
