#!/bin/sh
# The demo pipeline (pipelines/mode.mk) end to end on a reduced emoji-vl run: every fourth
# calibration line, every fifth evaluation line, full precision, uniform 2 bits, MODE and MC-MoE at
# 2.5 bits. The table has its header and one row per variant, every number is finite, and no
# quantized variant has a text perplexity below full precision's (beyond 1% noise).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
cd "$MODE_ROOT"
run make --no-print-directory -s -f pipelines/mode.mk OUT="$T/demo" BIN="$MODE_BIN" CALIB_EVERY=4 EVAL_EVERY=5 UNIFORM=2 \
    METHODS="mode mcmoe" table
is "$rc" 0 "the reduced pipeline runs"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$T/err" | tail -n 20
has "$T/out" "full precision " "the full-precision row is labelled as in the README"
# one word per method below
sed 's/^full precision/full-precision/' "$T/out" >"$T/table"
is "$(sed -n 1p "$T/table" | awk '{print $1}')" method "a header"
is "$(sed 1d "$T/table" | awk '{print $1}' | tr '\n' ' ')" "full-precision uniform2 mode mcmoe " "one row per variant"
bad=$(sed 1d "$T/table" | awk '{ for (i = 2; i <= 5; i++) if ($i !~ /^[0-9.]+$/) print NR, i, $i; if ($6 !~ /^[0-9]+\/[0-9]+$/) print NR, 6, $6 }')
is "$bad" "" "every number is finite"
fp=$(awk '$1 == "full-precision" { print $4 }' "$T/table")
worse=$(sed 1d "$T/table" | awk -v fp="$fp" '$1 != "full-precision" && $4 < fp * 0.99 { print $1 }')
is "$worse" "" "no quantized variant beats full precision's text perplexity ($fp) beyond noise"
avg=$(awk '$1 == "mode" { print $2 }' "$T/table")
is "$avg" 2.500 "MODE at the 2.5-bit budget"
[ -s "$T/demo/freq.png" ] && [ -s "$T/demo/alloc-mode.png" ] && pass "the frequency and allocation heatmaps" || fail "the frequency and allocation heatmaps"
done_testing
