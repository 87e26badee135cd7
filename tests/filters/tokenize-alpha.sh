#!/bin/sh
# mode-tokenize --alpha drop|white (issue 24): transparency is dropped by default (a pixel keeps
# its stored colour, as transformers reads an image path) and composited onto white with
# --alpha white (as transformers 5.25 converts a PIL image); the choice is recorded in the
# header's args; an image without transparency gives the same record either way; a bad value
# is a usage error. The arithmetic itself is test_preprocess's (every PNG kind, exact).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
M=$MODE_FIXTURES/emoji-vl/model
mkdir -p "$T/in"
# 1-bit grey whose black is transparent (tRNS 0): white with --alpha white, black and white without
cp "$MODE_FIXTURES/preprocess-alpha/grey1_key0.png" "$T/in/key.png"
cp "$MODE_FIXTURES/preprocess/rgb_100x75.png" "$T/in/rgb.png"
cp "$MODE_FIXTURES/preprocess/rgba_64x64.png" "$T/in/rgba.png"
for i in key rgb rgba; do
    printf '{"messages": [{"role": "user", "content": [{"type": "image", "image": "%s.png"}]}]}\n' "$i" >"$T/in/$i.jsonl"
done
# pixels FILE: the distinct values of the first record's pixels, one a line
pixels() { mode-cat --values "$1" | sed -n 2p | sed 's/.*"pixels":{[^}]*"data":\[\([0-9,]*\)\].*/\1/' | tr , '\n' | sort -un; }

run mode-tokenize -m "$M" -o "$T/key-drop.ms" "$T/in/key.jsonl"
is "$rc" 0 "default: exit 0"
mode-cat --header "$T/key-drop.ms" >"$T/h"
has "$T/h" '"alpha":"drop"' "the header records alpha drop"
is "$(pixels "$T/key-drop.ms" | head -n 1)" 0 "... and the transparent black stays black"
run mode-tokenize -m "$M" --alpha white -o "$T/key-white.ms" "$T/in/key.jsonl"
is "$rc" 0 "--alpha white: exit 0"
mode-cat --header "$T/key-white.ms" >"$T/h"
has "$T/h" '"alpha":"white"' "the header records alpha white"
is "$(pixels "$T/key-white.ms")" 255 "... and every pixel is white"
run mode-tokenize -m "$M" --alpha drop -o "$T/key-drop2.ms" "$T/in/key.jsonl"
same_file "$T/key-drop.ms" "$T/key-drop2.ms" "--alpha drop is the default"

# an RGBA image: the records differ; an RGB one: they are the same
for i in rgb rgba; do
    mode-tokenize -m "$M" -o "$T/$i-drop.ms" "$T/in/$i.jsonl"
    mode-tokenize -m "$M" --alpha white -o "$T/$i-white.ms" "$T/in/$i.jsonl"
    mode-cat --values "$T/$i-drop.ms" | sed -n 2p >"$T/$i-drop.rec"
    mode-cat --values "$T/$i-white.ms" | sed -n 2p >"$T/$i-white.rec"
done
same_file "$T/rgb-drop.rec" "$T/rgb-white.rec" "an RGB image: the same record with either"
if cmp -s "$T/rgba-drop.rec" "$T/rgba-white.rec"; then fail "an RGBA image: the records differ"; else pass "an RGBA image: the records differ"; fi

# a bad value
run mode-tokenize -m "$M" --alpha black -o "$T/x.ms" "$T/in/key.jsonl"
is "$rc" 64 "--alpha black: exit 64"
is "$(cat "$T/err")" "mode-tokenize: --alpha: 'black' is neither drop nor white" "... naming the value"
[ ! -e "$T/x.ms" ] && pass "... no output" || fail "... no output"
done_testing
