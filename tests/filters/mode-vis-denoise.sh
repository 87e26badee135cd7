#!/bin/sh
# mode-vis-denoise: freq and keep streams from a real trace of the tiny model, the methods and
# the keep ratio, shards, and the documented failures.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
S=$MODE_FIXTURES/streams
id=$(mode-cat -m "$HUB" | sed 's/.*"identity":{"arch":"[^"]*","config":"\([0-9a-f]*\)".*/\1/')
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/" "$S/samples.jsonl" | mode-cat -J -o "$T/samples.ms"
mode-route-trace -m "$HUB" -o "$T/trace.ms" "$T/samples.ms"

run mode-vis-denoise --keep-out "$T/keep.ms" --png "$T/f.png" -o "$T/freq.ms" "$T/trace.ms"
is "$rc" 0 "freq from a trace"
mode-cat -c "$T/freq.ms" "$T/keep.ms" >"$T/out"
has "$T/out" "freq from mode-vis-denoise, 4 records, ok" "one freq record per MoE layer"
has "$T/out" "keep from mode-vis-denoise, 4 records, ok" "one keep record per image sample and layer"
mode-cat --values "$T/freq.ms" | sed -n 2p >"$T/rec"
for c in text vision vision_key vision_redundant all; do
    has "$T/rec" "\"$c\":{\"count\":{\"dtype\":\"i64\",\"shape\":[16]" "class $c"
done
has "$T/rec" '"text":{"count":{"dtype":"i64","shape":[16],"data":[' "counts per expert"
# text tokens: 6 + 15 = 21 (the image sample has 16 tokens, one of them an image token)
has "$T/rec" '"tokens":21' "21 text tokens in the layer"
# every token selects 4 experts: count sums = 4 x tokens
sum=$(sed 's/.*"all":{"count":{"dtype":"i64","shape":\[16\],"data":\[\([0-9,]*\)\]}.*/\1/' "$T/rec" | tr ',' '\n' | awk '{s+=$1} END {print s}')
is "$sum" 88 "all-token pairs = 4 x 22 tokens"
has "$T/rec" '"all":{"count":{"dtype":"i64","shape":[16],"data":[' "the class all"
# prob: summed router probabilities before renormalisation, each below its renormalised weight,
# over 22 tokens x 4 experts: between 0 and the 22 of the weights
sums=$(sed 's/.*"all":{"count":{[^}]*},"weight":{"dtype":"f64","shape":\[16\],"data":\[\([^]]*\)\]},"prob":{"dtype":"f64","shape":\[16\],"data":\[\([^]]*\)\]}.*/\1 \2/' "$T/rec" |
    awk '{ n = split($1, w, ","); split($2, p, ","); for (i = 1; i <= n; i++) { sw += w[i]; sp += p[i]; if (p[i] > w[i]) bad++ } }
         END { printf "%.4f %s %d\n", sw, (sp > 0 && sp < sw ? "below" : "not below " sp), bad }')
is "$sums" "22.0000 below 0" "prob per class and expert: the router probabilities, below the renormalised weights (which sum to 22)"
is "$(head -c 8 "$T/f.png" | od -An -tx1 | tr -d ' \n')" 89504e470d0a1a0a "a PNG picture"
mode-cat --header "$T/freq.ms" >"$T/h"
has "$T/h" '"args":{"method":"attention","keep":0.2,"seed":1}' "method, ratio and seed in the header"
has "$T/h" '"kind":"trace"' "the trace header kept as provenance"

# one image token: key under every method and ratio
run mode-vis-denoise --method none -o "$T/none.ms" "$T/trace.ms"
is "$rc" 0 "--method none"
run mode-vis-denoise --method random --seed 7 -o "$T/r1.ms" "$T/trace.ms"
mode-vis-denoise --method random --seed 7 -o "$T/r2.ms" "$T/trace.ms"
same_file "$T/r1.ms" "$T/r2.ms" "--method random is reproducible"
run mode-vis-denoise --keep 1 -o "$T/k1.ms" "$T/trace.ms"
mode-cat --values "$T/k1.ms" | sed -n 2p >"$T/rec"
has "$T/rec" '"vision_redundant":{"count":{"dtype":"i64","shape":[16],"data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}' "--keep 1: nothing redundant"

# layer shards give the same freq records for their layers
mode-route-trace -m "$HUB" --layers 0-1 -o "$T/l01.ms" "$T/samples.ms"
mode-vis-denoise -o "$T/f01.ms" "$T/l01.ms"
mode-cat --header "$T/f01.ms" >"$T/h"
has "$T/h" '"shards":[{"layers":[0,1]}]' "a shard's freq keeps the box"
mode-cat --values "$T/f01.ms" | sed '1d;$d' >"$T/a"
mode-cat --values "$T/freq.ms" | sed '1d;$d' | head -n 2 >"$T/b"
same_file "$T/a" "$T/b" "layers 0-1 of a shard = of the whole"

# failures
run mode-vis-denoise -o "$T/x.ms" "$T/samples.ms"
is "$rc" 65 "a samples stream: exit 65"
has "$T/err" "expected kind 'trace'" "names the kind"
mode-cat -J -o "$T/hand.ms" "$S/trace.jsonl"
run mode-vis-denoise -o "$T/x.ms" "$T/hand.ms"
is "$rc" 64 "a trace without counts in its header and no -m: exit 64"
has "$T/err" "give -m DIR" "says what to do"
run mode-vis-denoise -m "$HUB" -o "$T/x.ms" "$T/hand.ms"
is "$rc" 65 "a trace made for another model: exit 65"
run mode-vis-denoise -m "$MODE_FIXTURES/emoji-vl/model" -o "$T/x.ms" "$T/hand.ms"
is "$rc" 0 "the hand-made trace with its model"
mode-cat --values "$T/x.ms" | sed -n 2p >"$T/rec"
grep -q '"prob"' "$T/rec" && fail "a trace without probs (older than them) gives no prob" || pass "a trace without probs (older than them) gives no prob"
run mode-vis-denoise --keep 0 -o "$T/x.ms" "$T/trace.ms"
is "$rc" 64 "--keep 0: exit 64"
run mode-vis-denoise --method magic -o "$T/x.ms" "$T/trace.ms"
is "$rc" 64 "unknown method: exit 64"
rm -f "$T/x.ms"
head -c 400 "$T/trace.ms" >"$T/trunc.ms"
run mode-vis-denoise -o "$T/x.ms" "$T/trunc.ms"
is "$rc" 65 "a truncated trace: exit 65"
[ ! -e "$T/x.ms" ] && pass "no output left behind" || fail "no output left behind"
run mode-vis-denoise -o "$T/x.ms" "$T/missing.ms"
is "$rc" 66 "a missing trace: exit 66"
done_testing
