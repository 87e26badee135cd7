#!/bin/sh
# mode-pack --resume after a kill -9 (issue 20): killed in the middle and after the last layer,
# the resumed checkpoint equals an uninterrupted run's, file for file, and warns as it did.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
S=$MODE_FIXTURES/streams
mode-tokenize -m "$M" -o "$T/calib.ms" "$E/calib/data.jsonl"
mode-cat -J -o "$T/freq.ms" "$S/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$S/sens.jsonl"
mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/a3.ms"
# a mixed 2/3/4-bit allocation; 4 samples give a few experts GPTQ and most the RTN fallback
pack() { mode-pack -m "$M" -a "$T/a3.ms" --samples 4 --format gptq "$@"; }

run pack -o "$T/ref" "$T/calib.ms"
is "$rc" 0 "an uninterrupted run"
cp "$T/err" "$T/ref.err"
rtn=$(sed -n 's/.*"rtn_fallback_experts": *\([0-9]*\).*/\1/p' "$T/ref/config.json")
is "$([ "${rtn:-0}" -gt 0 ] && [ "$rtn" -lt 64 ] && echo yes)" yes "it rounds $rtn of 64 experts to nearest, GPTQ the rest"
has "$T/ref.err" "mode-pack: warning: $rtn experts had fewer than 32 calibration tokens" "and warns of it"
has "$T/ref/README.md" "| round-to-nearest fallback | $rtn experts |" "the model card counts them"

# killed POINT NAME: a run on $T/NAME that MODE_PACK_DIE_AT=POINT kills with SIGKILL
killed() {
    set +e
    env MODE_PACK_DIE_AT="$1" mode-pack -m "$M" -a "$T/a3.ms" --samples 4 --format gptq -o "$T/$2" "$T/calib.ms" 2>/dev/null
    krc=$?
    set -e
    is "$krc" 137 "$2: killed by SIGKILL at $1"
    [ ! -e "$T/$2" ] && pass "$2: nothing at the output path" || fail "$2: nothing at the output path"
}

# resumed NAME ARGS...: $T/NAME finished by `pack ARGS`, equal to $T/ref file for file, with the
# same warnings, nothing left beside it
resumed() {
    o=$T/$1
    shift
    run pack "$@" -o "$o" "$T/calib.ms"
    is "$rc" 0 "$(basename "$o"): the next run succeeds"
    if diff -r "$T/ref" "$o" >"$T/diff" 2>&1; then
        pass "$(basename "$o"): every file equals the uninterrupted run's"
    else
        fail "$(basename "$o"): every file equals the uninterrupted run's"
        diag "$(head -5 "$T/diff")"
    fi
    same_file "$T/err" "$T/ref.err" "$(basename "$o"): the same warnings as the uninterrupted run"
    is "$(cd "$T" && ls -d "$(basename "$o")".resume "$(basename "$o")".tmp-?????? 2>/dev/null | tr '\n' ' ')" "" \
        "$(basename "$o"): no resume state or temporary left"
}

# in the middle: after layer 1 of 4
killed layer:1 mid
resumed mid --resume

# after the last layer: only the final write remains
killed layer:3 last
resumed last --resume

run env MODE_PACK_DIE_AT=layer:x mode-pack -m "$M" -a "$T/a3.ms" -o "$T/x" "$T/calib.ms"
is "$rc" 64 "MODE_PACK_DIE_AT=layer:x: exit 64"

done_testing
