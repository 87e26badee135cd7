#!/bin/sh
# The vision tower's output as a stream of its own (issue 22): mode-route-trace --samples-out
# writes the samples with each image's embeddings and deepstack features in place of its pixels;
# the later stages read that stream and skip the tower, with results bit-identical to reading the
# tokenized samples (trace, eval, sensitivity records); the header names the weights, and a model
# with other weights, or a stream that carries embeddings without saying whose, is refused.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
# records: the body of a stream with tensors in full (header and trailer aside: provenance, seconds)
records() { mode-cat --values "$1" | sed '1d;$d'; }
head -n 60 "$E/calib/data.jsonl" >"$T/c.jsonl"
mode-tokenize -m "$M" --root "$E/calib" -o "$T/c.ms" "$T/c.jsonl"
[ "$(grep -c '"image"' "$T/c.jsonl")" -gt 0 ] && pass "the samples hold images" || fail "the samples hold images"

run mode-route-trace -m "$M" --samples-out "$T/ce.ms" -o "$T/t1.ms" "$T/c.ms"
is "$rc" 0 "route-trace --samples-out: exit 0"
mode-cat --header "$T/ce.ms" >"$T/h"
has "$T/h" '"kind":"samples"' "a samples stream"
has "$T/h" '"vision":"embeds"' "... whose args say its images are embeddings"
has "$T/h" '"alpha":"drop"' "... keeping the tokenizer's args"
w=$(mode-cat --header "$T/t1.ms" | grep -o '"weights":"[0-9a-f]*"' | head -n 1 | sed 's/.*:"\(.*\)"/\1/')
[ ${#w} -eq 64 ] && has "$T/h" "\"weights\":\"$w\"" "... naming the weights the trace used" || fail "... naming the weights the trace used"
records "$T/ce.ms" | grep -c '"embeds":' >"$T/n"
is "$(cat "$T/n")" "$(grep -c '"image"' "$T/c.jsonl")" "every image record carries embeddings"
if records "$T/ce.ms" | grep -q '"pixels":'; then fail "... and no pixels"; else pass "... and no pixels"; fi
a=$(wc -c <"$T/c.ms") b=$(wc -c <"$T/ce.ms")
[ "$b" -lt "$a" ] && pass "smaller than the pixels for emoji-vl ($b < $a bytes)" || fail "smaller than the pixels ($b, $a)"

# the same results from either stream
mode-route-trace -m "$M" -o "$T/t2.ms" "$T/ce.ms"
records "$T/t1.ms" >"$T/r1"
records "$T/t2.ms" >"$T/r2"
same_file "$T/r1" "$T/r2" "route-trace: the same trace records from the embeddings"
mode-eval -m "$M" -o "$T/e1.json" "$T/c.ms"
mode-eval -m "$M" -o "$T/e2.json" "$T/ce.ms"
sed 's/.*"metrics":\(.*\),"seconds".*/\1/' "$T/e1.json" >"$T/m1"
sed 's/.*"metrics":\(.*\),"seconds".*/\1/' "$T/e2.json" >"$T/m2"
has "$T/m1" '"perplexity"' "eval: metrics"
same_file "$T/m1" "$T/m2" "eval: the same metrics from the embeddings"
mode-sensitivity -m "$M" --metric layer --bits 2,4 --all -o "$T/s1.ms" "$T/c.ms"
mode-sensitivity -m "$M" --metric layer --bits 2,4 --all -o "$T/s2.ms" "$T/ce.ms"
records "$T/s1.ms" >"$T/r1"
records "$T/s2.ms" >"$T/r2"
same_file "$T/r1" "$T/r2" "sensitivity: the same records from the embeddings"

# other weights: the same config, one weight changed (the full-bytes fingerprint differs)
mkdir "$T/other"
cp "$M"/*.json "$T/other/"
cp "$M/model.safetensors" "$T/other/"
sz=$(wc -c <"$T/other/model.safetensors")
printf '\001' | dd of="$T/other/model.safetensors" bs=1 seek=$((sz - 3)) conv=notrunc 2>/dev/null
run mode-eval -m "$T/other" -o "$T/x.json" "$T/ce.ms"
is "$rc" 65 "embeddings of other weights: exit 65"
has "$T/err" "its images are the vision tower's output for weights ${w%"${w#????????????}"}" "... naming the weights they came from"
has "$T/err" "give the samples from mode-tokenize" "... and what to do"
[ ! -e "$T/x.json" ] && pass "... no output" || fail "... no output"

# embeddings in a stream whose header does not say whose
mode-cat --values "$T/ce.ms" | sed '1s/,"vision":"embeds"//' | mode-cat -J -o "$T/anon.ms"
run mode-route-trace -m "$M" -o "$T/x.ms" "$T/anon.ms"
is "$rc" 65 "embeddings without args.vision: exit 65"
has "$T/err" "has embeddings, but the header does not say whose" "... saying why"
done_testing
