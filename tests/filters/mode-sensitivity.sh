#!/bin/sh
# mode-sensitivity on emoji-vl: the three metrics, the exact zeros, bits against sensitivity, key image
# tokens, GPTQ and its fallback, layer shards, and the documented failures. (The isolation of the
# quantized expert to one modality's tokens — other tokens bit-identical — is the runtime's
# override, tested in tests/lib/test_forward.c.)
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
# 6 text lines and 4 image lines of the calibration set
{ sed -n '1,6p' "$E/calib/data.jsonl"; sed -n '49,52p' "$E/calib/data.jsonl"; } >"$T/small.jsonl"
mode-tokenize -m "$M" --root "$E/calib" -o "$T/s.ms" "$T/small.jsonl"

run mode-sensitivity -m "$M" --metric layer -o "$T/layer.ms" "$T/s.ms"
is "$rc" 0 "layer metric"
mode-cat -c "$T/layer.ms" >"$T/out"
has "$T/out" "sens from mode-sensitivity, 4 records, ok" "one record per MoE layer"
mode-cat --values "$T/layer.ms" | sed '1d;$d' >"$T/recs"
# per layer: the mean over experts of delta_T falls from 2 to 3 to 4 bits
awk '{
    s = $0; sub(/.*"text":\{"dtype":"f64","shape":\[16,3\],"data":\[/, "", s); sub(/\].*/, "", s)
    n = split(s, v, ","); m2 = m3 = m4 = 0
    for (i = 1; i <= n; i += 3) { m2 += v[i]; m3 += v[i + 1]; m4 += v[i + 2] }
    print (m2 > m3 && m3 > m4) ? "falls" : "not " m2 " " m3 " " m4 }' "$T/recs" | sort | uniq -c | sed 's/^ *//' >"$T/fall"
is "$(cat "$T/fall")" "4 falls" "mean text sensitivity falls as bits rise, in every layer"
# delta_V is exactly 0 for the experts no image token selects
awk '{
    c = $0; sub(/.*"counts":\{"text":\{[^}]*\},"vision":\{"dtype":"i64","shape":\[16\],"data":\[/, "", c); sub(/\].*/, "", c)
    v = $0; sub(/.*"vision":\{"dtype":"f64","shape":\[16,3\],"data":\[/, "", v); sub(/\].*/, "", v)
    split(c, cn, ","); split(v, dv, ",")
    for (e = 1; e <= 16; e++) if (cn[e] == 0) { z++; if (dv[3 * e - 2] != 0 || dv[3 * e - 1] != 0 || dv[3 * e] != 0) bad++ }
} END { print z + 0, bad + 0 }' "$T/recs" >"$T/zero"
zeros=$(cut -d' ' -f1 "$T/zero") bad=$(cut -d' ' -f2 "$T/zero")
is "$bad" 0 "delta_V = 0 exactly for the $zeros (expert, layer) pairs no image token selects"
has "$T/recs" '"tokens":{"text":' "token counts per modality"

run mode-sensitivity -m "$M" --samples 6 --layers 3 -o "$T/kl.ms" "$T/s.ms"
is "$rc" 0 "kl metric on the 6 text samples, layer 3"
mode-cat --values "$T/kl.ms" | sed -n 2p >"$T/rec"
has "$T/rec" '"vision":{"dtype":"f64","shape":[16,3],"data":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]}' \
    "no image token: every delta_V is 0"
mode-cat --header "$T/kl.ms" >"$T/h"
has "$T/h" '"shards":[{"layers":[3,3]}]' "--layers writes its shard box"

# layer shards merge into the whole
mode-sensitivity -m "$M" --metric layer --layers 0-1 -o "$T/a.ms" "$T/s.ms"
mode-sensitivity -m "$M" --metric layer --layers 2-3 -o "$T/b.ms" "$T/s.ms"
mode-cat -s "$T/a.ms" "$T/b.ms" | mode-cat --values | sed '1d;$d' >"$T/merged"
same_file "$T/merged" "$T/recs" "layer shards merged = the whole run"

# key image tokens
mode-route-trace -m "$M" "$T/s.ms" | mode-vis-denoise --keep-out "$T/keep.ms" -o /dev/null
run mode-sensitivity -m "$M" --metric layer --vision-tokens key --keep "$T/keep.ms" -o "$T/key.ms" "$T/s.ms"
is "$rc" 0 "--vision-tokens key"
mode-cat --values "$T/key.ms" | sed -n 2p >"$T/rec"
has "$T/rec" '"tokens":{"text":' "counts"
# 4 images x 64 tokens, 13 key per image
has "$T/rec" '"vision":52}' "vision = the 52 key image tokens (13 of 64 per image)"

# GPTQ, and its fallback below --min-tokens
run mode-sensitivity -m "$M" --metric layer --quantizer gptq --layers 0 -o "$T/g.ms" "$T/s.ms"
is "$rc" 0 "--quantizer gptq"
mode-cat --values "$T/g.ms" | sed -n 2p >"$T/rec"
has "$T/rec" '"fallback":{"dtype":"u8","shape":[16],"data":[' "fallback flags"
run mode-sensitivity -m "$M" --metric layer --quantizer gptq --min-tokens 100000 --layers 0 -o "$T/f.ms" "$T/s.ms"
mode-cat --values "$T/f.ms" | sed -n 2p >"$T/rec"
has "$T/rec" '"fallback":{"dtype":"u8","shape":[16],"data":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}' "too few tokens: every expert falls back to RTN"

# MC-MoE's loss: always the modality-blind 'all'; one norm per batch of samples (8 by default):
# a sum of norms over smaller batches is never smaller (the triangle inequality), and is larger
# wherever two batches carry the error
run mode-sensitivity -m "$M" --metric mcmoe -o "$T/mc.ms" "$T/s.ms"
is "$rc" 0 "--metric mcmoe"
mode-cat --header "$T/mc.ms" >"$T/h"
has "$T/h" '"metric":"mcmoe","norm_samples":8' "the metric and its batch in the header"
mode-cat --values "$T/mc.ms" | sed '1d;$d' >"$T/mc8"
has "$T/mc8" '"metric":"mcmoe"' "records name the metric"
has "$T/mc8" '"all":{"dtype":"f64","shape":[16,3],"data":[' "and carry all without --all"
mode-sensitivity -m "$M" --metric mcmoe --norm-samples 1 -o "$T/mc1.ms" "$T/s.ms"
mode-cat --values "$T/mc1.ms" | sed '1d;$d' >"$T/mc1"
all() { sed 's/.*"all":{"dtype":"f64","shape":\[16,3\],"data":\[\([^]]*\)\].*/\1/' "$1" | tr ',' '\n'; }
all "$T/mc8" >"$T/a8"
all "$T/mc1" >"$T/a1"
is "$(paste "$T/a1" "$T/a8" | awk '$1 < $2 * (1 - 1e-12) { bad++ } $1 > $2 * (1 + 1e-9) { more++ } END { print NR, bad + 0, (more > 0 ? "larger" : "never larger") }')" \
    "192 0 larger" "per-sample norms sum to at least the per-batch ones, more where batches share the error (192 values)"
# the loss falls as the width grows, for every expert with a token
is "$(awk 'NR % 3 == 1 { a = $1 } NR % 3 == 2 { b = $1 } NR % 3 == 0 && a > 0 { n++; if (!(a > b && b > $1)) bad++ } END { print n, bad + 0 }' "$T/a8" | cut -d' ' -f2)" 0 \
    "2 bits > 3 bits > 4 bits for every selected expert"
run mode-sensitivity -m "$M" --norm-samples 4 -o "$T/x.ms" "$T/s.ms"
is "$rc" 64 "--norm-samples without mcmoe: exit 64"
run mode-sensitivity -m "$M" --metric mcmoe --norm-samples 0 -o "$T/x.ms" "$T/s.ms"
is "$rc" 64 "--norm-samples 0: exit 64"
run mode-sensitivity -m "$M" --metric squared -o "$T/x.ms" "$T/s.ms"
is "$rc" 64 "an unknown metric: exit 64"
has "$T/err" "is not kl, layer or mcmoe" "naming the three"

# failures
run mode-sensitivity -m "$M" --vision-tokens key -o "$T/x.ms" "$T/s.ms"
is "$rc" 64 "key without --keep: exit 64"
run mode-sensitivity -m "$M" --group-size 64 -o "$T/x.ms" "$T/s.ms"
is "$rc" 64 "a group that does not divide the expert width (96): exit 64"
has "$T/err" "does not divide" "says why"
run mode-sensitivity -m "$M" --bits 5 -o "$T/x.ms" "$T/s.ms"
is "$rc" 64 "5 bits: exit 64"
run mode-sensitivity -m "$M" -o "$T/x.ms" "$T/keep.ms"
is "$rc" 65 "a keep stream as samples: exit 65"
run mode-sensitivity -m "$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe" -o "$T/x.ms" "$T/s.ms"
is "$rc" 65 "samples of another model: exit 65"
[ ! -e "$T/x.ms" ] && pass "no output left behind" || fail "no output left behind"
# --device: a word that is none, and cuda without a GPU (exit 69, the reason named; with one, the
# run goes on to the missing model)
run mode-sensitivity --device gpu -m "$T/missing"
is "$rc" 64 "--device gpu: exit 64"
run mode-sensitivity --device cuda -m "$T/missing"
if [ "$rc" = 69 ]; then
    has "$T/err" "mode-sensitivity: --device cuda: CUDA is unavailable" "--device cuda without a GPU: exit 69, the reason named"
else
    is "$rc" 66 "--device cuda with a GPU goes on (to the missing model)"
fi
done_testing
