#!/bin/sh
# The packed checkpoint as loaders and model hubs read it (issue 24): quantization_config carries
# GPTQModel's meta (quantizer, with "gptqmodel:0.9.0" for v1, without which GPTQModel refuses an
# asymmetric v1 checkpoint; uri, damp_percent, true_sequential), pack_dtype and lm_head; every
# safetensors shard holds __metadata__ {"format": "pt"}; the model card has a Hugging Face YAML
# header, a title naming the source model (config's _name_or_path, a hub cache's repository, the
# directory's name, --base-model), the source's license only when its card has one, the model's
# expert count (the card gave none: its only count of experts, "1 experts", was the
# round-to-nearest one), the widths per layer and the --card-eval table, which --card-update
# replaces; and pipelines/pipe-example.sh runs from another directory without bin/ on PATH.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
S=$MODE_FIXTURES/streams
ln -s "$E/model" "$T/emoji-vl"
M=$T/emoji-vl
ver=$(mode-pack -V | sed 's/^mode-pack //')
mode-tokenize -m "$M" -o "$T/calib.ms" "$E/calib/data.jsonl"
mode-cat -J -o "$T/freq.ms" "$S/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$S/sens.jsonl"
mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/a3.ms"
# a few records of each kind, their images beside them
mkdir -p "$T/c" "$T/e"
{ grep -v '"image"' "$E/calib/data.jsonl" | head -n 4; grep '"image"' "$E/calib/data.jsonl" | head -n 4; } >"$T/c/data.jsonl"
{ grep -v '"image"' "$E/eval/data.jsonl" | head -n 4; grep '"image"' "$E/eval/data.jsonl" | head -n 4; } >"$T/e/data.jsonl"
ln -s "$E/calib/images" "$T/c/images"
ln -s "$E/eval/images" "$T/e/images"
mode-tokenize -m "$M" -o "$T/eval.ms" "$T/e/data.jsonl"
mode-eval -m "$M" -o "$T/fp.json" "$T/eval.ms"

pack() { # MODEL_DIR OPTIONS...: a mixed 2/3/4-bit pack on 16 samples; says why when it fails
    _m=$1
    shift
    run mode-pack -m "$_m" -a "$T/a3.ms" --samples 16 "$@"
    [ "$rc" -eq 0 ] || diag "mode-pack $*: exit $rc" "$(cat "$T/err")"
}
flat() { tr -d ' \n' 2>/dev/null <"$1" || :; echo; }
yaml() { sed -n '1{/^---$/!q;};2,/^---$/{/^---$/!p;}' "$1" 2>/dev/null; } # the card's YAML header

# v1, sharded
pack "$M" --format gptq --max-shard-size 1M -o "$T/v1" "$T/calib.ms"
flat "$T/v1/config.json" >"$T/v1.cfg"
has "$T/v1.cfg" "\"meta\":{\"damp_percent\":0.01,\"quantizer\":[\"mode:$ver\",\"gptqmodel:0.9.0\"],\"true_sequential\":true,\"uri\":\"https://arxiv.org/abs/2606.17118\"}" \
    "v1: meta names mode and the GPTQModel >= 0.9.0 v1 layout GPTQModel requires of sym=False; damping 0.01; true sequential"
has "$T/v1.cfg" '"pack_dtype":"int32"' "pack_dtype int32"
has "$T/v1.cfg" '"lm_head":false' "lm_head false"
# every shard: an 8-byte little-endian header length, then the JSON header
n=0 good=0
for f in "$T"/v1/model-*.safetensors; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    len=$(od -An -tu1 -N8 "$f" | awk '{ v = 0; for (i = NF; i >= 1; i--) v = v * 256 + $i; print v }')
    dd if="$f" bs=8 skip=1 count=$((len / 8)) 2>/dev/null | grep -qF '"__metadata__":{"format":"pt"}' && good=$((good + 1))
done
is "$good of $n" "$n of $n" "every shard's header holds __metadata__ {\"format\":\"pt\"}"
[ "$n" -ge 2 ] || diag "only $n shards: --max-shard-size should have made several"

# the model card
C=$T/v1/README.md
is "$(yaml "$C")" "base_model:
- emoji-vl
base_model_relation: quantized
library_name: gptqmodel
tags:
- mode
- gptq
- mixed-precision
- moe
- quantized
- qwen3_vl_moe" "the YAML header: base_model the directory's name as given, no license (the source has no card)"
is "$(grep -m1 '^# ' "$C")" "# emoji-vl, routed experts at 3 bits on average (GPTQ, \`mode\` allocation by mode)" "the title names the source model"
ne=$(sed -n 's/.*"num_experts": *\([0-9]*\).*/\1/p' "$E/model/config.json")
nl=$(sed -n 's/.*"num_hidden_layers": *\([0-9]*\).*/\1/p' "$E/model/config.json")
k=$(sed -n 's/.*"num_experts_per_tok": *\([0-9]*\).*/\1/p' "$E/model/config.json")
has "$C" "| routed experts | $ne per MoE layer (top-$k per token), in $nl of $nl decoder layers: $((ne * nl)) in all |" \
    "the expert count is the model's ($ne per layer, config.json)"
has "$C" "| layer | 2 bits | 3 bits | 4 bits | average |" "the allocation table's columns"
is "$(grep -c '^| [0-9]* | [0-9]* | [0-9]* | [0-9]* | [0-9.]* |$' "$C")" "$nl" "a row per MoE layer"
has "$C" 'model = GPTQModel.load("PATH")' "a GPTQModel loading snippet"
has "$C" "untested here" "... said to be untested"
has "$C" "vLLM's MoE GPTQ kernels take one width per layer" "where it can be served"
has "$C" "No evaluation given" "without --card-eval the card says there is no evaluation"

# --card-update: the evaluation section only
sed '/<!-- mode-eval begin -->/,/<!-- mode-eval end -->/d' "$C" >"$T/rest.before" 2>/dev/null || :
mode-eval -m "$T/v1" -o "$T/v1.json" "$T/eval.ms" 2>/dev/null || :
run mode-pack --card-update "$T/v1" --card-eval "$T/fp.json" --card-eval "$T/v1.json"
is "$rc" 0 "--card-update"
has "$C" "| | emoji-vl | v1 |" "the table has both evaluations, in order"
sed '/<!-- mode-eval begin -->/,/<!-- mode-eval end -->/d' "$C" >"$T/rest.after" 2>/dev/null || :
if [ "$rc" -eq 0 ] && cmp -s "$T/rest.before" "$T/rest.after"; then pass "the rest of the card is unchanged"; else fail "the rest of the card is unchanged"; fi
run mode-pack --card-update "$T/v1" --card-eval "$T/v1/config.json"
is "$rc" 65 "--card-eval with a file that is not mode-eval's output: exit 65"
has "$T/err" "v1/config.json: not mode-eval's JSON output" "... says so"
mkdir "$T/other"
printf '# a card\n' >"$T/other.md"
cp "$T/other.md" "$T/other/README.md"
run mode-pack --card-update "$T/other" --card-eval "$T/fp.json"
if [ "$rc" -eq 65 ] && cmp -s "$T/other/README.md" "$T/other.md"; then pass "--card-update on a card without the evaluation section: exit 65, the card left as it was"
else fail "--card-update on a card without the evaluation section: exit 65, the card left as it was"; diag "exit $rc"; fi
run mode-pack --card-update "$T/v1" -o "$T/x"
is "$rc $(cat "$T/err")" "64 mode-pack: --card-update DIR takes only --card-eval FILE: the rest of the card stays as it is" \
    "--card-update with packing options: exit 64"

# the identity of the evaluated weights: the v1 files read as v2 (only the config's format
# changed) are other weights, and say so
mkdir "$T/v1as2"
cp "$T"/v1/* "$T/v1as2/"
sed 's/"checkpoint_format": *"gptq"/"checkpoint_format": "gptq_v2"/' "$T/v1/config.json" >"$T/v1as2/config.json"
wid() { mode-cat -m "$1" | sed 's/.*"weights":"\([0-9a-f]*\)".*/\1/'; }
a=$(wid "$T/v1") b=$(wid "$T/v1as2")
if ! cmp -s "$T/v1/config.json" "$T/v1as2/config.json" && [ ${#a} -eq 64 ] && [ ${#b} -eq 64 ] && [ "$a" != "$b" ]; then
    pass "the same tensor bytes read as v1 and as v2: two weight identities"
else fail "the same tensor bytes read as v1 and as v2: two weight identities ($a, $b)"; fi

# v2, from a directory whose config names the model and whose card has a license; an evaluation
# for the card
mkdir "$T/src"
cp "$E/model/"* "$T/src/"
sed '1s/{/{"_name_or_path": "Org\/Emoji-VL",/' "$E/model/config.json" >"$T/src/config.json"
printf -- '---\nlicense: apache-2.0\npipeline_tag: image-text-to-text\nlanguage:\n- en\n---\n# Emoji-VL\n' >"$T/src/README.md"
pack "$T/src" --card-eval "$T/fp.json" -o "$T/v2" "$T/calib.ms"
flat "$T/v2/config.json" >"$T/v2.cfg"
has "$T/v2.cfg" "\"quantizer\":[\"mode:$ver\"]" "v2: meta.quantizer names mode alone"
is "$(yaml "$T/v2/README.md" | sed -n '1,6p')" "base_model:
- Org/Emoji-VL
base_model_relation: quantized
library_name: gptqmodel
license: apache-2.0
pipeline_tag: image-text-to-text" "base_model from config.json's _name_or_path; the source card's license and pipeline_tag, nothing else of it"
has "$T/v2/README.md" "# Org/Emoji-VL, routed experts" "the title names it"
ppl=$(flat "$T/fp.json" | sed 's/.*"metrics":{"text":{[^}]*"perplexity":\([0-9.e+-]*\)}.*/\1/')
has "$T/v2/README.md" "| | emoji-vl |" "the evaluation table: a column named by the evaluated model"
has "$T/v2/README.md" "| text perplexity | $(awk -v x="$ppl" 'BEGIN { printf "%.3f", x }') |" "... its text perplexity"
has "$T/v2/README.md" "| answer exact match | " "... its exact match"

# a Hugging Face cache snapshot; --base-model; true_sequential with --fp-inputs --attn-bits
H=$T/hub/models--Org--Emoji-VL-Hub/snapshots/0123abc
mkdir -p "$H"
cp "$E/model/"* "$H/"
pack "$H" -o "$T/hub-out" "$T/calib.ms"
is "$(yaml "$T/hub-out/README.md" | sed -n '1,2p')" "base_model:
- Org/Emoji-VL-Hub" "base_model: the snapshot's repository"
pack "$M" --base-model "Someone/Emoji VL" --fp-inputs --attn-bits 8 -o "$T/fp8" "$T/calib.ms"
is "$(yaml "$T/fp8/README.md" | sed -n '1,2p')" 'base_model:
- "Someone/Emoji VL"' "--base-model, quoted for YAML"
flat "$T/fp8/config.json" >"$T/fp8.cfg"
has "$T/fp8.cfg" '"true_sequential":false' "true_sequential false: the experts calibrated on the full-precision attention"

# pipelines/pipe-example.sh from another directory, bin/ not on PATH
mkdir "$T/elsewhere"
run sh -c "cd '$T/elsewhere' && PATH=/usr/bin:/bin && export PATH && sh '$MODE_ROOT/pipelines/pipe-example.sh' '$M' ../c/data.jsonl ../e/data.jsonl out 3"
is "$rc" 0 "pipe-example.sh runs from another directory without bin/ on PATH"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$T/err" | tail -n 5
has "$T/out" '"metrics":{"text":' "it prints the evaluation"
has "$T/elsewhere/out/packed/README.md" "| | packed |" "and puts it into the packed checkpoint's card"
done_testing
