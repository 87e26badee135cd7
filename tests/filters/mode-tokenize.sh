#!/bin/sh
# mode-tokenize: the three input forms, the chat layout and score masks, images, per-line errors,
# --skip-bad, --max-tokens/--truncate; and, end to end, mode-tokenize | mode-eval on emoji-vl's
# evaluation set reproduces transformers' metrics (reference_metrics.json).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
IMG=$E/calib/images/1f976.png

# end to end: text perplexity 46.383 within 0.05%, caption perplexity 5.3096 within 0.1%, exact
# match 11 of 329 (+-1)
run mode-tokenize -m "$M" -o "$T/eval.ms" "$E/eval/data.jsonl"
is "$rc" 0 "tokenizes emoji-vl's evaluation set"
mode-eval -m "$M" -o "$T/eval.json" "$T/eval.ms"
# metric CLASS FIELD: from the report's top-level "metrics" (text, then answer)
metric() {
    tr -d ' \n' <"$T/eval.json" | sed 's/.*"metrics":{"text":{\([^}]*\)},"answer":{\([^}]*\)}.*/text:\1;answer:\2/' |
        tr ';' '\n' | grep "^$1:" | tr ',' '\n' | sed -n "s/.*\"$2\":\([0-9.e+-]*\)$/\1/p"
}
tp=$(metric text perplexity) ap=$(metric answer perplexity) em=$(metric answer exact_match) tt=$(metric text tokens) at=$(metric answer tokens)
is "$(awk -v x="$tp" 'BEGIN { d = (x - 46.3828883135474) / 46.3828883135474; print (d < 0 ? -d : d) <= 0.0005 ? "yes" : "no" }')" yes \
    "text perplexity $tp = 46.383 within 0.05%"
is "$(awk -v x="$ap" 'BEGIN { d = (x - 5.30961699873494) / 5.30961699873494; print (d < 0 ? -d : d) <= 0.001 ? "yes" : "no" }')" yes \
    "caption perplexity $ap = 5.3096 within 0.1%"
is "$(awk -v x="$em" 'BEGIN { print (x >= 10 && x <= 12) ? "yes" : "no" }')" yes "caption exact match $em of 329 (11 +- 1)"
is "$tt $at" "17518 3993" "scored tokens: 17518 text, 3993 caption"

# the three forms
mkdir -p "$T/in/img"
cp "$IMG" "$T/in/img/a.png"
cat >"$T/in/data.jsonl" <<'J'
{"text": "brass: an ornament"}
{"messages": [{"role": "user", "content": [{"type": "image", "image": "img/a.png"}, {"type": "text", "text": "What is this?"}]}, {"role": "assistant", "content": [{"type": "text", "text": "a cold face"}]}]}
{"image": "img/a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "a cold face"}]}

{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
J
run mode-tokenize -m "$M" -o "$T/s.ms" "$T/in/data.jsonl"
is "$rc" 0 "text, messages and LLaVA lines"
mode-cat -c "$T/s.ms" >"$T/out"
has "$T/out" "samples from mode-tokenize, 4 records, ok" "one record per non-blank line"
mode-cat --values "$T/s.ms" >"$T/v"
sed -n 2p "$T/v" >"$T/r1"
has "$T/r1" '"id":"data.jsonl:1"' "ids are file:line"
has "$T/r1" '"score":{"dtype":"u8","shape":[' "a score mask"
sed -n 3p "$T/v" | sed 's/.*"tokens":\({[^}]*}\).*/\1/' >"$T/t2"
sed -n 4p "$T/v" | sed 's/.*"tokens":\({[^}]*}\).*/\1/' >"$T/t3"
same_file "$T/t2" "$T/t3" "the LLaVA form tokenizes like the messages form"
has "$T/t2" '"data":[2035,' "starts with <|im_start|>"
has "$T/t2" ',198,2043,2046,2046,' "the user line, then <|vision_start|> and the image pads"
sed -n 3p "$T/v" >"$T/r2"
has "$T/r2" '"images":[{"grid":[1,16,16],"pixels":{"dtype":"u8","shape":[1,256,256,3]' "the image resized to 256x256 (emoji-vl's pixel bounds)"
has "$T/r2" '"source":"img/a.png"' "its path kept"
# the score mask of the chat sample covers "a cold face<|im_end|>" only
sc=$(sed 's/.*"score":{[^}]*"data":\[\([0-9,]*\)\]}.*/\1/' "$T/r2" | tr ',' '\n' | awk '$1 == 1' | wc -l)
printf '{"text": "a cold face"}\n' | mode-tokenize -m "$M" | mode-cat --values | sed -n 2p >"$T/raw"
n=$(sed 's/.*"tokens":{"dtype":"i32","shape":\[\([0-9]*\)\].*/\1/' "$T/raw")
is "$sc" "$((n + 1))" "the answer's $n tokens and <|im_end|> are scored, nothing else"
sed -n 5p "$T/v" >"$T/r4"
has "$T/r4" '"text":"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"' \
    "the rendered text of a three-message chat"
mode-tokenize -m "$M" --root "$T/in" -o "$T/s2.ms" <"$T/in/data.jsonl"
mode-cat --values "$T/s2.ms" | sed '1d;$d' | sed 's/"id":"[^"]*"//' >"$T/a"
sed '1d;$d' "$T/v" | sed 's/"id":"[^"]*"//' >"$T/b"
same_file "$T/a" "$T/b" "stdin with --root gives the same samples"
run mode-tokenize -m "$M" --no-text -o "$T/s3.ms" "$T/in/data.jsonl"
mode-cat --values "$T/s3.ms" | grep -c '"text":"' >"$T/n" || true
is "$(cat "$T/n")" 0 "--no-text leaves the rendered text out"

# errors, per line
printf '{"text": "fine"}\n{"text": \n' >"$T/in/bad.jsonl"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/bad.jsonl"
is "$rc" 65 "bad JSON: exit 65"
has "$T/err" "bad.jsonl:2: bad JSON" "names the file and line"
[ ! -e "$T/x.ms" ] && pass "no output left behind" || fail "no output left behind"
run mode-tokenize -m "$M" --skip-bad -o "$T/x.ms" "$T/in/bad.jsonl"
is "$rc" 0 "--skip-bad goes on"
has "$T/err" "bad.jsonl:2: skipped" "with a warning"
mode-cat "$T/x.ms" | tail -n 1 >"$T/tr"
has "$T/tr" '"skipped":1' "counted in the trailer"
printf '{"messages": [{"role": "user", "content": [{"type": "image", "image": "img/none.png"}]}]}\n' >"$T/in/missing.jsonl"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/missing.jsonl"
is "$rc" 66 "a missing image: exit 66"
has "$T/err" "missing.jsonl:1:" "names the line"
has "$T/err" "img/none.png" "and the image"
echo "not a picture" >"$T/in/img/fake.png"
printf '{"messages": [{"role": "user", "content": [{"type": "image", "image": "img/fake.png"}]}]}\n' >"$T/in/fake.jsonl"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/fake.jsonl"
is "$rc" 65 "an unreadable image: exit 65"
has "$T/err" "not a PNG or JPEG" "says why"
printf '{"prompt": "x"}\n' >"$T/in/nokey.jsonl"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/nokey.jsonl"
is "$rc" 65 "no known key: exit 65"
has "$T/err" "needs a string 'text', a list 'messages' or a list 'conversations'" "names the keys"
printf '{"text": "a <|vision_start|> in text"}\n' >"$T/in/marker.jsonl"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/marker.jsonl"
is "$rc" 65 "image markup inside text: exit 65"
has "$T/err" "images are given as image items" "says how to give images"
run mode-tokenize -m "$M" --max-tokens 20 -o "$T/x.ms" "$T/in/data.jsonl"
is "$rc" 65 "a sample over --max-tokens: exit 65"
has "$T/err" "more than --max-tokens 20" "says so"
run mode-tokenize -m "$M" --max-tokens 20 --truncate -o "$T/x.ms" "$T/in/data.jsonl"
is "$rc" 0 "--truncate cuts"
mode-cat "$T/x.ms" | sed -n 3p >"$T/r"
has "$T/r" '"images":[]' "an image that does not fit is dropped whole"
# limits (mode-tokenize(1), LIMITS)
{ printf '{"text": "'; head -c 16777216 /dev/zero | tr '\0' a; printf '"}\n{"text": "short"}\n'; } >"$T/in/long.jsonl"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/long.jsonl"
is "$rc" 65 "a line over 16 MiB: exit 65"
has "$T/err" "long.jsonl:1: a line of 16777228 bytes exceeds the limit of 16777216 bytes (MODE_TOKENIZE_MAX_LINE)" "names the line, its size and the limit"
run mode-tokenize -m "$M" --skip-bad -o "$T/x.ms" "$T/in/long.jsonl"
is "$rc" 0 "... skipped with --skip-bad"
rm -f "$T/in/long.jsonl" "$T/x.ms"
truncate -s 17179869185 "$T/in/huge.jsonl" # 16 GiB + 1 byte, sparse
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/huge.jsonl"
is "$rc" 65 "an input over 16 GiB: exit 65, refused by its size"
has "$T/err" "huge.jsonl: 17179869185 bytes, larger than the limit of 17179869184 bytes" "... saying so"
rm -f "$T/in/huge.jsonl"
cp "$MODE_FIXTURES/limits/16384x10923.png" "$T/in/img/big.png"
printf '{"text": "first"}\n{"messages": [{"role": "user", "content": [{"type": "image", "image": "img/big.png"}]}]}\n' >"$T/in/big.jsonl"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/big.jsonl"
is "$rc" 65 "an image of 16384 x 10923 pixels (PIL refuses it too): exit 65"
has "$T/err" "big.jsonl:2: $T/in/img/big.png: an image of 16384 x 10923 pixels is too large (the limits are 178956970 pixels, as PIL's, and 32768 a side)" \
    "names the line, the image, its size and the limits"
run mode-tokenize -o "$T/x.ms" "$T/in/data.jsonl"
is "$rc" 64 "no model: exit 64"
run mode-tokenize -m "$M" -o "$T/x.ms" "$T/in/none.jsonl"
is "$rc" 66 "a missing input: exit 66"
done_testing
