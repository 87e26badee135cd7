#!/bin/sh
# mode-route-trace: records per sample and MoE layer, shards by layer and by sample that merge
# back into the whole, and the documented failures. (Agreement of the traced experts with
# transformers is in tests/lib/test_forward.c.)
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
id=$(mode-cat -m "$HUB" | sed 's/.*"identity":{"arch":"[^"]*","config":"\([0-9a-f]*\)".*/\1/')
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/" "$MODE_FIXTURES/streams/samples.jsonl" | mode-cat -J -o "$T/samples.ms"

run mode-route-trace -m "$HUB" -o "$T/trace.ms" "$T/samples.ms"
is "$rc" 0 "traces the hand-made samples"
mode-cat -c "$T/trace.ms" >"$T/out"
has "$T/out" "trace from mode-route-trace, 8 records, ok" "2 samples x 4 MoE layers"
mode-cat "$T/trace.ms" | sed -n 2p >"$T/rec1"
has "$T/rec1" '"experts":{"dtype":"i32","shape":[6,4]}' "top-4 experts per token"
mode-cat "$T/trace.ms" | grep '"id":"data.jsonl:2"' | head -n 1 >"$T/rec2"
has "$T/rec2" '"attn":{"dtype":"f32","shape":[1]}' "the image sample carries a score per image token"
grep -q '"attn"' "$T/rec1" && fail "no scores for a text-only sample" || pass "no scores for a text-only sample"
mode-cat --header "$T/trace.ms" >"$T/h"
has "$T/h" '"shards":[]' "a whole run is not a shard"
has "$T/h" '"inputs":[{"magic":"MODE","version":1,"kind":"samples"' "the samples header is kept as provenance"

# layer shards merge into the whole run, record for record
mode-route-trace -m "$HUB" --layers 0-1 -o "$T/l01.ms" "$T/samples.ms"
mode-route-trace -m "$HUB" --layers 2-3 -o "$T/l23.ms" "$T/samples.ms"
mode-cat --header "$T/l01.ms" >"$T/h"
has "$T/h" '"shards":[{"layers":[0,1]}]' "--layers writes its shard box"
mode-cat -s "$T/l01.ms" "$T/l23.ms" | mode-cat --values | sed 1d >"$T/merged"
mode-cat --values "$T/trace.ms" | sed 1d >"$T/whole"
same_file "$T/merged" "$T/whole" "layer shards merged = the whole trace"
mode-route-trace -m "$HUB" --samples 0 -o "$T/s0.ms" "$T/samples.ms"
mode-route-trace -m "$HUB" --samples 1-1 -o "$T/s1.ms" "$T/samples.ms"
# other batches change the order of float sums (weights and probs differ by ~1e-7), never the choices
strip='s/"weights":{[^}]*}//; s/"probs":{[^}]*}//; s/"attn":{[^}]*}//'
mode-cat -s "$T/s0.ms" "$T/s1.ms" | mode-cat --values | sed '1d;$d' | sed "$strip" | sort >"$T/merged"
sed '$d' "$T/whole" | sed "$strip" | sort >"$T/whole.sorted"
same_file "$T/merged" "$T/whole.sorted" "sample shards merged = the whole trace (experts of every token)"
run mode-cat -s "$T/l01.ms" "$T/trace.ms"
is "$rc" 65 "a shard and a whole run do not merge"
mode-route-trace -m "$HUB" --router-logits -o "$T/rl.ms" "$T/samples.ms"
mode-cat "$T/rl.ms" | sed -n 2p >"$T/out"
has "$T/out" '"router_logits":{"dtype":"f32","shape":[6,16]}' "--router-logits keeps (n_tok, n_expert) logits"
has "$T/rec1" '"probs":{"dtype":"f32","shape":[6,4]}' "the router probabilities of the selected experts"
# probs = softmax(router logits) at the selected experts, computed here from the logits; weights
# = probs renormalised over the top 4 (norm_topk_prob); worst deviation over every token of
# every record
mode-cat --values "$T/rl.ms" | sed '1d;$d' | awk '
function arr(name, a,   s) {
    s = $0; sub(".*\"" name "\":\\{[^}]*\"data\":\\[", "", s); sub("\\].*", "", s); return split(s, a, ",") }
{
    arr("experts", ex); arr("weights", w); arr("probs", p); n = arr("router_logits", l)
    for (t = 0; t < n / 16; t++) {
        mx = l[t * 16 + 1]; for (e = 2; e <= 16; e++) if (l[t * 16 + e] > mx) mx = l[t * 16 + e]
        z = 0; for (e = 1; e <= 16; e++) z += exp(l[t * 16 + e] - mx)
        sp = 0; for (j = 1; j <= 4; j++) sp += p[t * 4 + j]
        for (j = 1; j <= 4; j++) {
            want = exp(l[t * 16 + ex[t * 4 + j] + 1] - mx) / z
            d = p[t * 4 + j] - want; if (d < 0) d = -d; if (d > dp) dp = d
            d = w[t * 4 + j] - p[t * 4 + j] / sp; if (d < 0) d = -d; if (d > dw) dw = d
        }
        tokens++
    }
} END { printf "%d %s %s\n", tokens, (dp < 1e-6 ? "softmax" : "off " dp), (dw < 1e-6 ? "renormalised" : "off " dw) }' >"$T/pr"
is "$(cat "$T/pr")" "88 softmax renormalised" "probs are the softmax of the logits, weights those renormalised (88 token-layers)"
cat "$T/samples.ms" | mode-route-trace -m "$HUB" | mode-cat -c >"$T/out"
has "$T/out" "8 records, ok" "stdin to stdout"

# failures
run mode-route-trace "$T/samples.ms"
is "$rc" 64 "no model: exit 64"
run mode-route-trace -m "$HUB" --layers 2-1 "$T/samples.ms"
is "$rc" 64 "a reversed range: exit 64"
run mode-route-trace -m "$HUB" --layers 0-9 -o "$T/x.ms" "$T/samples.ms"
is "$rc" 64 "layers beyond the model: exit 64"
has "$T/err" "the model has layers 0-3" "... names the model's layers"
mode-cat -J -o "$T/alloc.ms" "$MODE_FIXTURES/streams/alloc.jsonl"
run mode-route-trace -m "$HUB" -o "$T/x.ms" "$T/alloc.ms"
is "$rc" 65 "wrong kind: exit 65"
has "$T/err" "expected kind 'samples', got 'alloc'" "... names both"
mode-cat -J -o "$T/emoji.ms" "$MODE_FIXTURES/streams/samples.jsonl"
run mode-route-trace -m "$HUB" -o "$T/x.ms" "$T/emoji.ms"
is "$rc" 65 "samples made for another model: exit 65"
size=$(wc -c <"$T/samples.ms")
head -c $((size - 3)) "$T/samples.ms" >"$T/trunc.ms"
run mode-route-trace -m "$HUB" -o "$T/trunc-trace.ms" "$T/trunc.ms"
is "$rc" 65 "truncated samples: exit 65"
ok_absent=0; [ -e "$T/trunc-trace.ms" ] || ok_absent=1
is "$ok_absent" 1 "... and no trace is left at the output path"
set +e
mode-route-trace -m "$HUB" "$T/samples.ms" >/dev/full 2>"$T/err"; rc=$?
set -e
is "$rc" 74 "stdout on a full disk: exit 74"
# --device: a word that is none, and cuda without a GPU (exit 69, the reason named; with one, the
# run goes on to the missing model)
run mode-route-trace --device gpu -m "$T/missing"
is "$rc" 64 "--device gpu: exit 64"
run mode-route-trace --device cuda -m "$T/missing"
if [ "$rc" = 69 ]; then
    has "$T/err" "mode-route-trace: --device cuda: CUDA is unavailable" "--device cuda without a GPU: exit 69, the reason named"
else
    is "$rc" 66 "--device cuda with a GPU goes on (to the missing model)"
fi
done_testing
