#!/bin/sh
# Replays every fuzz target (built without libFuzzer) over its seed corpus and every regression
# input found by fuzzing: none may crash or trip a sanitizer (make SANITIZER=address check).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
for bin in "$MODE_ROOT"/build/fuzzcheck/fuzz_*; do
    case $bin in *.d) continue ;; esac
    t=$(basename "$bin")
    dirs=""
    for d in "$MODE_ROOT/tests/fuzz/corpus/$t" "$MODE_ROOT/tests/fuzz/regress/$t"; do [ -d "$d" ] && dirs="$dirs $d"; done
    # shellcheck disable=SC2086
    run "$bin" $dirs
    n=$(grep -c '^ok' "$T/out" || true)
    is "$rc" 0 "$t: $n inputs replayed"
    [ "$rc" -eq 0 ] || sed 's/^/# /' "$T/err" | tail -n 20
done
done_testing
