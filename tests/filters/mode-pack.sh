#!/bin/sh
# mode-pack on emoji-vl: a uniform 4-bit pack evaluated by mode-eval within 1.5% of the full
# precision text perplexity; a mixed allocation from mode-ilp; the checkpoint's files and config;
# a run killed mid-way leaves nothing at the output path and --resume finishes it to the same
# bytes; the documented failures. (The packing layout and the bit-for-bit dequantisation are
# tests/lib/test_gptqpack.c.)
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
S=$MODE_FIXTURES/streams
mode-tokenize -m "$M" -o "$T/calib.ms" "$E/calib/data.jsonl"
mode-tokenize -m "$M" -o "$T/eval.ms" "$E/eval/data.jsonl"
mode-ilp --method uniform --avg-bits 4 -m "$M" -o "$T/u4.ms"

run mode-pack -m "$M" -a "$T/u4.ms" -o "$T/w4" "$T/calib.ms"
is "$rc" 0 "uniform 4-bit pack of emoji-vl"
for f in model.safetensors config.json README.md bits.png tokenizer.json preprocessor_config.json; do
    [ -s "$T/w4/$f" ] && pass "the checkpoint has $f" || fail "the checkpoint has $f"
done
[ ! -e "$T/w4.resume" ] && pass "no resume state left after success" || fail "no resume state left after success"
tr -d ' \n' <"$T/w4/config.json" >"$T/cfg"
has "$T/cfg" '"quant_method":"gptq"' "quantization_config: quant_method"
has "$T/cfg" '"checkpoint_format":"gptq_v2"' "checkpoint_format"
has "$T/cfg" '"+:^model\\.language_model\\.layers\\.0\\.mlp\\.experts\\.(0|1|2|3|4|5|6|7|8|9|10|11|12|13|14|15)\\.":{"bits":4}' \
    "dynamic rule: layer 0's experts at 4 bits"
has "$T/cfg" '"allocation":[{"bits":[4,4,4,4' "the allocation in the mode section"
mode-cat -m "$T/w4" >"$T/desc"
has "$T/desc" '"expert_layout":"gptq-packed (v2)"' "mode-cat -m reads the packed checkpoint"
has "$T/desc" '"I32":576' "qweight, qzeros, g_idx for 64 experts x 3 projections, all bound"
mode-eval -m "$T/w4" -o "$T/w4.json" "$T/eval.ms"
tp=$(tr -d ' \n' <"$T/w4.json" | sed 's/.*"metrics":{"text":{[^}]*"perplexity":\([0-9.e+-]*\)}.*/\1/')
is "$(awk -v x="$tp" 'BEGIN { print (x <= 46.3828883135474 * 1.015) ? "yes" : "no" }')" yes "W4 text perplexity $tp within 1.5% of full precision (46.383)"

# --attn-bits: the text attention packed too, described, loaded and evaluated
run mode-pack -m "$M" -a "$T/u4.ms" --attn-bits 8 -o "$T/a8" "$T/calib.ms"
is "$rc" 0 "--attn-bits 8"
tr -d ' \n' <"$T/a8/config.json" >"$T/cfg8"
has "$T/cfg8" '"+:^model\\.language_model\\.layers\\.\\d+\\.self_attn\\.(q|k|v|o)_proj":{"bits":8}' "dynamic rule: the attention at 8 bits"
has "$T/cfg8" '"attn_bits":8' "attn_bits in the mode section"
has "$T/a8/README.md" "| attention (q/k/v/o_proj) | 8 bits, GPTQ |" "the model card says so"
mode-cat -m "$T/a8" >"$T/desc8"
has "$T/desc8" '"I32":624' "qweight, qzeros, g_idx of 4 layers x 4 attention projections more, all bound"
has "$T/desc8" '"unused":[]' "the attention's full-precision weights are gone"
mode-eval -m "$T/a8" -o "$T/a8.json" "$T/eval.ms"
tp=$(tr -d ' \n' <"$T/a8.json" | sed 's/.*"metrics":{"text":{[^}]*"perplexity":\([0-9.e+-]*\)}.*/\1/')
is "$(awk -v x="$tp" -v w="$(tr -d ' \n' <"$T/w4.json" | sed 's/.*"metrics":{"text":{[^}]*"perplexity":\([0-9.e+-]*\)}.*/\1/')" \
    'BEGIN { print (x != w && x <= 46.3828883135474 * 1.015) ? "yes" : "no" }')" yes "W4 experts + W8 attention: text perplexity $tp, not W4's, within 1.5% of full precision"
run mode-pack -m "$M" -a "$T/u4.ms" --shared-bits 4 -o "$T/x" "$T/calib.ms"
is "$rc" 64 "--shared-bits on a model without shared experts: exit 64"
has "$T/err" "has no shared experts" "says why"
run mode-pack -m "$M" -a "$T/u4.ms" --attn-bits 5 -o "$T/x" "$T/calib.ms"
is "$rc" 64 "--attn-bits 5: exit 64"
run mode-pack -m "$M" -a "$T/u4.ms" --device gpu -o "$T/x" "$T/calib.ms"
is "$rc" 64 "--device gpu: exit 64"
run mode-pack -m "$T/missing" -a "$T/u4.ms" --device cuda -o "$T/x" "$T/calib.ms"
if [ "$rc" = 69 ]; then
    has "$T/err" "mode-pack: --device cuda: CUDA is unavailable" "--device cuda without a GPU: exit 69, the reason named"
else
    is "$rc" 66 "--device cuda with a GPU: goes on (to the missing model)"
fi
has "$T/cfg" '"gptq_device":"' "the config records the device GPTQ ran on"

# a mixed allocation (the hand-made freq/sens streams carry emoji-vl's identity)
mode-cat -J -o "$T/freq.ms" "$S/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$S/sens.jsonl"
mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/a3.ms"
run mode-pack -m "$M" -a "$T/a3.ms" --format gptq --samples 64 -o "$T/mix" "$T/calib.ms"
is "$rc" 0 "a mixed 2/3/4-bit allocation, v1 format"
mode-eval -m "$T/mix" -o "$T/mix.json" "$T/eval.ms" && pass "mode-eval runs on it" || fail "mode-eval runs on it"
has "$T/mix/README.md" "experts at 2 bits" "the model card counts the widths"

# killed mid-way: nothing at the output path; --resume finishes it, to the same bytes
mode-pack -m "$M" -a "$T/u4.ms" -o "$T/k" "$T/calib.ms" 2>/dev/null &
pid=$!
i=0
while [ ! -d "$T/k.resume/layer-000" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i + 1)); done
kill -TERM $pid 2>/dev/null
wait $pid 2>/dev/null || true
[ ! -e "$T/k" ] && pass "killed mid-way: no checkpoint at the output path" || fail "killed mid-way: no checkpoint at the output path"
[ -d "$T/k.resume" ] && pass "the resume state stays" || fail "the resume state stays"
ls "$T" | grep -q 'k.tmp' && fail "no temporary directory left" || pass "no temporary directory left"
run mode-pack -m "$M" -a "$T/u4.ms" -o "$T/k" "$T/calib.ms"
is "$rc" 73 "without --resume an interrupted run is not overwritten: exit 73"
has "$T/err" "continue it with --resume" "says how to continue"
run mode-pack -m "$M" -a "$T/a3.ms" -o "$T/k" --resume "$T/calib.ms"
is "$rc" 65 "--resume with another allocation: exit 65"
has "$T/err" "made from other inputs or options" "says why"
run mode-pack -m "$M" -a "$T/u4.ms" -o "$T/k" --resume "$T/calib.ms"
is "$rc" 0 "--resume finishes the run"
same_file "$T/k/model.safetensors" "$T/w4/model.safetensors" "the resumed checkpoint equals an uninterrupted one"

# failures
run mode-pack -m "$M" -a "$T/u4.ms" -o "$T/w4" "$T/calib.ms"
is "$rc" 73 "an existing output: exit 73"
run mode-pack -m "$M" -a "$T/missing.ms" -o "$T/x" "$T/calib.ms"
is "$rc" 66 "a missing alloc stream: exit 66"
run mode-pack -m "$M" -a "$T/calib.ms" -o "$T/x" "$T/calib.ms"
is "$rc" 65 "a samples stream as alloc: exit 65"
run mode-pack -m "$M" -a "$T/u4.ms" -o "$T/x" --group 64 "$T/calib.ms"
is "$rc" 64 "a group that does not divide 96: exit 64"
run mode-pack -m "$T/w4" -a "$T/u4.ms" -o "$T/x" "$T/calib.ms"
is "$rc" 64 "packing a packed checkpoint: exit 64"
[ ! -e "$T/x" ] && pass "no output left behind" || fail "no output left behind"
done_testing
