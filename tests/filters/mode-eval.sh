#!/bin/sh
# mode-eval: a run on the tiny model, its JSON report, per-record losses and their comparison,
# and every documented failure.
# (Agreement with transformers is tests/lib/test_forward.c.)
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
# the hand-made samples stream (a text record and a chat record with a 32x32 image), made for
# emoji-vl: first re-labelled for the tiny model, whose vocabulary and special tokens it fits
id=$(mode-cat -m "$HUB" | sed 's/.*"identity":{"arch":"[^"]*","config":"\([0-9a-f]*\)".*/\1/')
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/" "$MODE_FIXTURES/streams/samples.jsonl" | mode-cat -J -o "$T/samples.ms"
run mode-eval -m "$HUB" "$T/samples.ms"
is "$rc" 0 "mode-eval runs on a text and an image record"
has "$T/out" '"samples":2' "... reports 2 samples"
has "$T/out" '"text":{"records":1,"tokens":5,' "... the text record's 5 predictions"
has "$T/out" '"answer":{"records":1,"tokens":2,' "... the answer's 2 scored tokens"
has "$T/out" '"tokens":{"total":22,"text":21,"image":1}' "... and the token counts"
run mode-eval -m "$HUB" -o "$T/m.json" --logits "$T/logits.ms" "$T/samples.ms"
is "$rc" 0 "-o and --logits"
mode-cat -c "$T/logits.ms" >"$T/out"
has "$T/out" "logits from mode-eval, 2 records, ok" "--logits is a valid stream of 2 records"
mode-cat "$T/logits.ms" | sed -n 2p >"$T/out"
has "$T/out" '"logits":{"dtype":"f32","shape":[6,2048]}' "... with (n_tok, n_vocab) logits"
cat "$T/samples.ms" | mode-eval -m "$HUB" >"$T/out"
has "$T/out" '"samples_stream":"<stdin>"' "stdin is the default input"

# per-record losses, and the paired bootstrap of two evaluations
run mode-eval -m "$HUB" -o "$T/m1.json" --records "$T/r1.jsonl" "$T/samples.ms"
is "$rc" 0 "--records"
is "$(wc -l <"$T/r1.jsonl" | tr -d ' ')" 2 "one line per record"
has "$T/r1.jsonl" '{"sample":0,"id":"data.jsonl:1","class":"text","image":false,"tokens":5,"nll":' "a text record"
has "$T/r1.jsonl" '{"sample":1,"id":"data.jsonl:2","class":"answer","image":true,"tokens":2,"nll":' "an answer record with its image"
has "$T/r1.jsonl" '"exact":' "answers say whether they matched exactly"
nll=$(sed -n 1p "$T/r1.jsonl" | sed 's/.*"nll":\([^,}]*\).*/\1/')
has "$T/m1.json" "\"text\":{\"records\":1,\"tokens\":5,\"nll\":$nll," "the record's nll is the report's, digit for digit"
mode-eval -m "$HUB" -o "$T/m2.json" --records "$T/r2.jsonl" "$T/samples.ms"
run mode-eval --compare "$T/r1.jsonl" "$T/r2.jsonl" --resamples 500 --seed 3
is "$rc" 0 "--compare"
has "$T/out" '"resamples":500,"seed":3,' "resamples and seed in the report"
has "$T/out" '"difference":0.0,"ci95":[0.0,0.0],"excludes_zero":false' "a model against itself: no difference"
sed 's/"nll":\([0-9]\)/"nll":1\1/' "$T/r1.jsonl" >"$T/r3.jsonl"
run mode-eval --compare "$T/r3.jsonl" "$T/r2.jsonl"
has "$T/out" '"excludes_zero":true' "10 nats more on every record: the interval excludes 0"
sed '2s/"id":"data.jsonl:2"/"id":"other"/' "$T/r1.jsonl" >"$T/r4.jsonl"
run mode-eval --compare "$T/r4.jsonl" "$T/r2.jsonl"
is "$rc" 65 "--compare of different records: exit 65"
has "$T/err" "record 2 differs" "... names the first"
echo '{"sample":0}' >"$T/r5.jsonl"
run mode-eval --compare "$T/r5.jsonl" "$T/r2.jsonl"
is "$rc" 65 "a line that is not a record: exit 65"
has "$T/err" "r5.jsonl: line 1: id: missing" "... names file, line and field"
run mode-eval --compare "$T/absent.jsonl" "$T/r2.jsonl"
is "$rc" 66 "a missing file to compare: exit 66"
run mode-eval --compare "$T/r1.jsonl"
is "$rc" 64 "--compare with one file: exit 64"
run mode-eval --compare "$T/r1.jsonl" -m "$HUB" "$T/r2.jsonl"
is "$rc" 64 "--compare with a model: exit 64"
run mode-eval -m "$HUB" --seed 4 "$T/samples.ms"
is "$rc" 64 "--seed without --compare: exit 64"
run mode-eval -m "$HUB" --records - "$T/samples.ms"
is "$rc" 64 "--records - with the report on stdout: exit 64"

# failures
run mode-eval "$T/samples.ms"
is "$rc" 64 "no model: exit 64"
has "$T/err" "mode-eval: -m DIR is required" "... says so"
run mode-eval -m "$HUB" --threads 0 "$T/samples.ms"
is "$rc" 64 "bad --threads: exit 64"
run mode-eval -m "$T/nowhere" "$T/samples.ms"
is "$rc" 66 "missing model: exit 66"
run mode-eval -m "$HUB" "$T/absent.ms"
is "$rc" 66 "missing samples: exit 66"
mode-cat -J -o "$T/alloc.ms" "$MODE_FIXTURES/streams/alloc.jsonl"
run mode-eval -m "$HUB" "$T/alloc.ms"
is "$rc" 65 "wrong kind: exit 65"
has "$T/err" "expected kind 'samples', got 'alloc'" "... names both kinds"
run mode-eval -m "$HUB" <"$MODE_FIXTURES/streams/samples.jsonl"
is "$rc" 65 "JSON instead of a stream: exit 65"
mode-cat -J "$MODE_FIXTURES/streams/samples.jsonl" >"$T/emoji.ms"
run mode-eval -m "$HUB" "$T/emoji.ms"
is "$rc" 65 "a stream made for another model: exit 65"
has "$T/err" "made for model 'emoji-vl'" "... names the stream's model"
size=$(wc -c <"$T/samples.ms")
head -c $((size - 40)) "$T/samples.ms" >"$T/trunc.ms"
run mode-eval -m "$HUB" -o "$T/trunc.json" "$T/trunc.ms"
is "$rc" 65 "truncated samples: exit 65"
has "$T/err" "truncated" "... says so"
ok_absent=0; [ -e "$T/trunc.json" ] || ok_absent=1
is "$ok_absent" 1 "... and writes no report"
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/; 2s/\"data\":\[87,/\"data\":[99999,/" "$MODE_FIXTURES/streams/samples.jsonl" |
    mode-cat -J -o "$T/badtok.ms"
run mode-eval -m "$HUB" "$T/badtok.ms"
is "$rc" 65 "a token outside the vocabulary: exit 65"
has "$T/err" "record 1: token 0 is id 99999, outside the vocabulary of 2048" "... names record and token"
set +e
mode-eval -m "$HUB" "$T/samples.ms" >/dev/full 2>"$T/err"; rc=$?
set -e
is "$rc" 74 "stdout on a full disk: exit 74"
set +e
mode-eval -m "$HUB" "$T/samples.ms" >&- 2>"$T/err"; rc=$?
set -e
is "$rc" 74 "closed stdout: exit 74"
run mode-eval -m "$HUB" --logits - "$T/samples.ms"
is "$rc" 64 "--logits - with the report on stdout: exit 64"
# --device: a word that is none, and cuda without a GPU (exit 69, the reason named; with one, the
# run goes on to the missing model)
run mode-eval --device gpu -m "$T/missing"
is "$rc" 64 "--device gpu: exit 64"
run mode-eval --device cuda -m "$T/missing"
if [ "$rc" = 69 ]; then
    has "$T/err" "mode-eval: --device cuda: CUDA is unavailable" "--device cuda without a GPU: exit 69, the reason named"
else
    is "$rc" 66 "--device cuda with a GPU goes on (to the missing model)"
fi
done_testing
