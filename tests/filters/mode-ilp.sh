#!/bin/sh
# mode-ilp: alloc stream, JSON summary and heatmap from the hand-made freq and sens streams; every
# method; budgets by average bits and by bytes; the documented failures. (GLPK = DP on random
# instances is tests/lib/test_ilp.c; the methods' objectives tests/lib/test_bitalloc.c.)
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
S=$MODE_FIXTURES/streams
MODEL=$MODE_FIXTURES/emoji-vl/model
mode-cat -J -o "$T/freq.ms" "$S/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$S/sens.jsonl"

run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/alloc.ms" --json "$T/s.json" --png "$T/a.png"
is "$rc" 0 "MODE at 3 bits on the hand-made streams"
mode-cat -c "$T/alloc.ms" >"$T/out"
has "$T/out" "alloc from mode-ilp, 4 records, ok" "one record per layer"
mode-cat "$T/alloc.ms" | sed -n 2p >"$T/rec"
has "$T/rec" '"bits":{"dtype":"i32","shape":[16]}' "16 widths per layer"
has "$T/s.json" '"avg_bits": 3.0' "summary: average bits"
has "$T/s.json" '"status": "optimal"' "summary: status"
has "$T/s.json" '"histogram"' "summary: histogram"
has "$T/s.json" '"lp_bound"' "summary: LP bound"
is "$(grep -c '"layer":' "$T/s.json")" 4 "summary: per-layer averages"
is "$(head -c 8 "$T/a.png" | od -An -tx1 | tr -d ' \n')" 89504e470d0a1a0a "a PNG picture"
mode-cat --header "$T/alloc.ms" >"$T/h"
has "$T/h" '"inputs":[{"magic":"MODE","version":1,"kind":"freq"' "provenance: the freq header"
has "$T/h" '"kind":"sens"' "provenance: the sens header"
mode-cat "$T/alloc.ms" | tail -n 1 >"$T/trailer"
has "$T/trailer" '"summary":{"method":"mode","scope":"layer"' "trailer summary"
# every layer averages 3 bits exactly
mode-cat --values "$T/alloc.ms" | sed '1d;$d' | sed 's/.*"bits":{"dtype":"i32","shape":\[16\],"data":\[\([0-9,]*\)\]}.*/\1/' | tr ',' '\n' | awk '{s+=$1; n++} END {print s/n}' >"$T/avg"
is "$(cat "$T/avg")" 3 "the widths average 3"

for m in text-vision freq-total freq-text-vision freq-text-key sens-only mcmoe; do
    run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 2.5 --method $m -o "$T/$m.ms"
    is "$rc" 0 "--method $m"
done
has "$T/err" "--method mcmoe on a sens stream of metric 'kl'" "mcmoe on a KL stream: a warning that it is not MC-MoE's"
# MC-MoE's budget per layer: at most 40 bits, one expert at least at 3 bits and one at 4
sed '1s/"metric":"kl"/"metric":"mcmoe"/; s/"metric":"kl","bits"/"metric":"mcmoe","bits"/' "$S/sens.jsonl" | mode-cat -J -o "$T/sens-mc.ms"
run mode-ilp -f "$T/freq.ms" -s "$T/sens-mc.ms" --avg-bits 2.5 --method mcmoe -o "$T/mc.ms" --json "$T/mc.json"
is "$rc" 0 "--method mcmoe on an mcmoe stream"
is "$(wc -c <"$T/err")" 0 "... without a warning"
mode-cat --values "$T/mc.ms" | sed '1d;$d' | sed 's/.*"bits":{"dtype":"i32","shape":\[16\],"data":\[\([0-9,]*\)\]}.*/\1/' |
    awk -F, '{ s = n3 = n4 = 0; for (i = 1; i <= NF; i++) { s += $i; n3 += $i == 3; n4 += $i == 4 } print (s <= 40 && n3 >= 1 && n4 >= 1) ? "ok" : "bad " $0 }' |
    sort | uniq -c | sed 's/^ *//' >"$T/mcok"
is "$(cat "$T/mcok")" "4 ok" "every layer: at most 40 bits, at least one expert at 3 and one at 4 bits"
run mode-ilp -f "$T/freq.ms" -s "$T/sens-mc.ms" --avg-bits 2.1 --method mcmoe -o "$T/x.ms"
is "$rc" 65 "mcmoe below what one expert at 3 and one at 4 bits need: exit 65"
has "$T/err" "an average of at least 2.1875" "names the least average (35 bits of 16 experts)"
sed 's/"prob":{"dtype":"f64","shape":\[16\],"data":\[[^]]*\]},//g' "$S/freq.jsonl" | mode-cat -J -o "$T/freq-old.ms"
run mode-ilp -f "$T/freq-old.ms" -s "$T/sens-mc.ms" --avg-bits 2.5 --method mcmoe -o "$T/x.ms"
is "$rc" 65 "mcmoe on a freq stream without router probabilities: exit 65"
has "$T/err" "run mode-route-trace and mode-vis-denoise again" "says what to do"
run mode-ilp -f "$T/freq-old.ms" -s "$T/sens.ms" --avg-bits 2.5 --method mode -o "$T/old-mode.ms"
is "$rc" 0 "the other methods read a freq stream without them"
# frequency alone (the proof of concept): no sens stream; the most frequent experts at 4 bits
for m in rank-all rank-text-vision rank-text-key rank-text-redundant; do
    run mode-ilp -f "$T/freq.ms" --avg-bits 2.5 --method $m -o "$T/$m.ms"
    is "$rc" 0 "--method $m without a sens stream"
done
# layer 0 of the fixture, class all: the 4 experts of the largest frequency take 4 bits
want=$(sed -n 2p "$S/freq.jsonl" | sed 's/.*"all":{"count":{"dtype":"i64","shape":\[16\],"data":\[\([0-9,]*\)\]}.*/\1/' |
    tr ',' '\n' | awk '{ print NR - 1, $1 }' | sort -k2,2nr -k1,1n | head -n 4 | awk '{ print $1 }' | sort -n | tr '\n' ' ')
got=$(mode-cat --values "$T/rank-all.ms" | sed -n 2p | sed 's/.*"bits":{"dtype":"i32","shape":\[16\],"data":\[\([0-9,]*\)\]}.*/\1/' |
    tr ',' '\n' | awk '$1 == 4 { print NR - 1 }' | tr '\n' ' ')
is "$got" "$want" "rank-all: the 4 most frequent experts of layer 0 at 4 bits, the rest at 2"
run mode-ilp -s "$T/sens.ms" --avg-bits 2.5 --method rank-all -o "$T/x.ms"
is "$rc" 64 "rank-all without a freq stream: exit 64"
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 2.5 --method mode -o "$T/mode.ms"
mode-cat --values "$T/mode.ms" | sed '1d;$d' >"$T/a1"
mode-cat --values "$T/text-vision.ms" | sed '1d;$d' >"$T/a2"
cmp -s "$T/a1" "$T/a2" && fail "denoising changes the allocation" || pass "denoising changes the allocation"
run mode-ilp -s "$T/sens.ms" --method sens-only --avg-bits 3 -o "$T/so.ms"
is "$rc" 0 "sens-only needs no freq stream"
run mode-ilp --method uniform --avg-bits 4 -m "$MODEL" -o "$T/u.ms"
is "$rc" 0 "uniform from the model alone"
mode-cat --values "$T/u.ms" | sed -n 2p >"$T/rec"
has "$T/rec" '"data":[4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4]}' "uniform: every expert at 4 bits"
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 --scope global -o "$T/g.ms" --json "$T/g.json"
is "$rc" 0 "--scope global"
has "$T/g.json" '"scope": "global"' "global summary"

# bytes (emoji-vl's experts: 128 x 96)
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" -m "$MODEL" --max-bytes 1000000 -o "$T/b.ms" --json "$T/b.json"
is "$rc" 0 "--max-bytes with the model"
bytes=$(sed -n 's/.*"bytes": \([0-9]*\).*/\1/p' "$T/b.json")
ok_bytes=$([ "$bytes" -le 1000000 ] && echo yes || echo no)
is "$ok_bytes" yes "packed bytes $bytes within the budget"

# failures
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 2.55 -o "$T/x.ms"
is "$rc" 65 "an average that 16 experts cannot meet: exit 65"
has "$T/err" "nearest feasible averages are 2.5 and 2.5625" "names the nearest feasible budgets"
[ ! -e "$T/x.ms" ] && pass "no output left behind" || fail "no output left behind"
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" -m "$MODEL" --max-bytes 1000 -o "$T/x.ms"
is "$rc" 65 "a byte budget below the smallest: exit 65"
has "$T/err" "smallest feasible budget is --max-bytes" "names the smallest budget"
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 --bits 2,3,8 -o "$T/x.ms"
is "$rc" 64 "a width the sens stream did not measure: exit 64"
run mode-ilp -f "$T/sens.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/x.ms"
is "$rc" 65 "a sens stream given as freq: exit 65"
has "$T/err" "expected kind 'freq'" "says which kind it wanted"
sed "1s/\"config\":\"57a1d758/\"config\":\"99a1d758/" "$S/sens.jsonl" | mode-cat -J -o "$T/sens-other.ms"
run mode-ilp -f "$T/freq.ms" -s "$T/sens-other.ms" --avg-bits 3 -o "$T/x.ms"
is "$rc" 65 "freq and sens from different models: exit 65"
has "$T/err" "config 57a1d758eb39" "the freq identity is printed"
has "$T/err" "config 99a1d758eb39" "the sens identity is printed"
# a sens stream with 8 experts per layer
awk 'NR==1 {print; next} /"end"/ {print; next} {
  n = 0; out = "";
  while (match($0, /"shape":\[16,3\],"data":\[[^]]*\]/)) {
    s = substr($0, RSTART, RLENGTH); split(substr(s, 24, length(s) - 24), v, ",");
    t = "\"shape\":[8,3],\"data\":["; for (i = 1; i <= 24; i++) t = t (i > 1 ? "," : "") v[i]; t = t "]";
    out = out substr($0, 1, RSTART - 1) t; $0 = substr($0, RSTART + RLENGTH) }
  print out $0 }' "$S/sens.jsonl" | mode-cat -J -o "$T/sens8.ms"
run mode-ilp -f "$T/freq.ms" -s "$T/sens8.ms" --avg-bits 3 -o "$T/x.ms"
is "$rc" 65 "streams with different expert counts: exit 65"
has "$T/err" "8 experts, but the other records or streams have 16" "both counts named"
run mode-ilp -f "$T/freq.ms" -s "$T/missing.ms" --avg-bits 3 -o "$T/x.ms"
is "$rc" 66 "a missing input: exit 66"
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" -o "$T/x.ms"
is "$rc" 64 "no budget: exit 64"
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 --max-bytes 5 -o "$T/x.ms"
is "$rc" 64 "two budgets: exit 64"
run mode-ilp -f "$T/freq.ms" --avg-bits 3 -o "$T/x.ms"
is "$rc" 64 "MODE without sens: exit 64"
run mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 --method magic -o "$T/x.ms"
is "$rc" 64 "unknown method: exit 64"
head -c 300 "$T/sens.ms" >"$T/trunc.ms"
run mode-ilp -f "$T/freq.ms" -s "$T/trunc.ms" --avg-bits 3 -o "$T/x.ms"
is "$rc" 65 "a truncated stream: exit 65"
done_testing
