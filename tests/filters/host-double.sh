#!/bin/sh
# The filters' --device cuda paths without a GPU: the same filters linked against the host double
# of the CUDA entry points (kernels/host/host.c: every entry its C reference on host memory), so
# that what runs is the GPU paths' glue — mode_rt_device, the resident layers and vision blocks
# (lib/rtlayer.c, kernels/layer.cu compiled by g++) with the hooks they serve (pack's and
# sensitivity's captures and expert overrides), the fallbacks when the device has no memory,
# GPTQ's device dispatch — composed of the references. The CPU path computes the same references
# in the same order, so the outputs must be identical to the byte (timings aside); a filter that
# left the GPU unused would pass these comparisons, which is why runs with no device memory
# check that each filter took its resident paths (they warn when they fall back). The kernels themselves
# are tested on a GPU by tests/kernels/.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
H=${MODE_HOST_BIN:?run through make check}
E=$MODE_FIXTURES/emoji-vl
mode-tokenize -m "$E/model" -o "$T/calib.ms" "$E/calib/data.jsonl"
sed -n 551,750p "$E/eval/data.jsonl" >"$T/eval.jsonl" # text and image samples
mode-tokenize -m "$E/model" --root "$E/eval" -o "$T/eval.ms" "$T/eval.jsonl"
untimed() { sed 's/"seconds":[0-9.e+-]*//g; s/"tokens_per_second":[0-9.e+-]*//g' "$@"; }

# route-trace: every MoE layer resident (f32) and the vision blocks, over text and image samples
mode-route-trace --device cpu -m "$E/model" -o "$T/cpu.ms" "$T/calib.ms"
run "$H/mode-route-trace" --device cuda -m "$E/model" -o "$T/gpu.ms" "$T/calib.ms"
is "$rc" 0 "route-trace --device cuda runs"
same_file "$T/cpu.ms" "$T/gpu.ms" "route-trace: the resident layers' trace = the CPU's, to the byte"
# small batches: the device buffers are reused and regrown from batch to batch
mode-route-trace --device cpu --batch-tokens 700 --router-logits -m "$E/model" -o "$T/cpu-b.ms" "$T/calib.ms"
"$H/mode-route-trace" --device cuda --batch-tokens 700 --router-logits -m "$E/model" -o "$T/gpu-b.ms" "$T/calib.ms"
same_file "$T/cpu-b.ms" "$T/gpu-b.ms" "route-trace: batches of 700 tokens with router logits, the same"
# no device memory at all: everything falls back to the CPU, says so, and changes nothing
MODE_HOST_DEVICE_MB=0 run "$H/mode-route-trace" --device cuda -m "$E/model" -o "$T/gpu0.ms" "$T/calib.ms"
is "$rc" 0 "route-trace with no device memory still runs"
same_file "$T/cpu.ms" "$T/gpu0.ms" "route-trace: the fallback's trace is the CPU's"
has "$T/err" "4 of 4 MoE layer passes ran on the CPU: the GPU had no memory" "the layers' fallback is reported"
has "$T/err" "the vision blocks of 1 batches ran on the CPU" "the vision blocks' fallback is reported"
run "$H/mode-route-trace" --device cuda -m "$E/model" -o "$T/gpu.ms" "$T/calib.ms"
grep -q "ran on the CPU" "$T/err" && fail "no fallback reported when the device has room" || pass "no fallback reported when the device has room"

# eval: the resident layers' metrics
mode-eval --device cpu -m "$E/model" -o "$T/cpu.json" "$T/eval.ms"
run "$H/mode-eval" --device cuda -m "$E/model" -o "$T/gpu.json" "$T/eval.ms"
is "$rc" 0 "eval --device cuda runs"
untimed "$T/cpu.json" >"$T/cpu.u" && untimed "$T/gpu.json" >"$T/gpu.u"
same_file "$T/cpu.u" "$T/gpu.u" "eval: the metrics on the resident layers = the CPU's"
MODE_HOST_DEVICE_MB=0 run "$H/mode-eval" --device cuda -m "$E/model" -o "$T/gpu0.json" "$T/eval.ms"
has "$T/err" "MoE layer passes ran on the CPU" "eval: the layers were resident (without device memory they fall back)"

# pack: the vision blocks on the device, GPTQ through its device dispatch
mode-ilp --method uniform --avg-bits 3 -m "$E/model" -o "$T/u3.ms"
mode-pack --device cpu -m "$E/model" -a "$T/u3.ms" -o "$T/pk-cpu" "$T/calib.ms" 2>/dev/null
run "$H/mode-pack" --device cuda -m "$E/model" -a "$T/u3.ms" -o "$T/pk-gpu" "$T/calib.ms"
is "$rc" 0 "pack --device cuda runs"
same_file "$T/pk-cpu/model.safetensors" "$T/pk-gpu/model.safetensors" "pack: the checkpoint = the CPU's, to the byte"
MODE_HOST_DEVICE_MB=0 run "$H/mode-pack" --device cuda --samples 60 -m "$E/model" -a "$T/u3.ms" -o "$T/pk-gpu0" "$T/calib.ms"
has "$T/err" "the vision blocks of 1 batches ran on the CPU" "pack: the vision blocks were resident (without device memory they fall back)"
has "$T/err" "8 of 8 MoE layer passes ran on the CPU" "pack: both passes of each MoE layer were resident (the hooks served)"

# sensitivity (layer metric: the quick one)
mode-sensitivity --device cpu --metric layer --samples 60 -m "$E/model" -o "$T/s-cpu.ms" "$T/calib.ms"
run "$H/mode-sensitivity" --device cuda --metric layer --samples 60 -m "$E/model" -o "$T/s-gpu.ms" "$T/calib.ms"
is "$rc" 0 "sensitivity --device cuda runs"
mode-cat --values "$T/s-cpu.ms" | untimed >"$T/s-cpu.u" && mode-cat --values "$T/s-gpu.ms" | untimed >"$T/s-gpu.u"
same_file "$T/s-cpu.u" "$T/s-gpu.u" "sensitivity: the table = the CPU's"
MODE_HOST_DEVICE_MB=0 run "$H/mode-sensitivity" --device cuda --metric layer --samples 60 -m "$E/model" -o "$T/s-gpu0.ms" "$T/calib.ms"
has "$T/err" "vision blocks of" "sensitivity: the vision blocks were resident (without device memory they fall back)"
has "$T/err" "4 of 4 MoE layer passes ran on the CPU" "sensitivity: the capturing pass of each MoE layer was resident"
# sensitivity, KL metric: the overridden layer on the CPU (an override for some rows), the
# layers after it resident
mode-sensitivity --device cpu --metric kl --bits 2 --samples 60 --layers 2-3 -m "$E/model" -o "$T/k-cpu.ms" "$T/calib.ms"
"$H/mode-sensitivity" --device cuda --metric kl --bits 2 --samples 60 --layers 2-3 -m "$E/model" -o "$T/k-gpu.ms" "$T/calib.ms"
mode-cat --values "$T/k-cpu.ms" | untimed >"$T/k-cpu.u" && mode-cat --values "$T/k-gpu.ms" | untimed >"$T/k-gpu.u"
same_file "$T/k-cpu.u" "$T/k-gpu.u" "sensitivity --metric kl: the table = the CPU's"

# mode-bench: the harness (pools, cold copies, baseline, the mixed comparison) on a small layer;
# its numbers are the host's times of the references and are not looked at
mode-cat -J -o "$T/alloc.ms" "$MODE_FIXTURES/streams/alloc.jsonl"
run "$H/mode-bench" --alloc "$T/alloc.ms" --layer 1 --experts 16 --topk 2 --hidden 128 --width 96 --group 32 --iters 3 --pool 2 \
    --bits 2,3,4,mixed --tokens 1,70
is "$rc" 0 "mode-bench runs its table"
has "$T/out" "mode-bench: the host double" "mode-bench names the device"
is "$(grep -c -E '^(W[0-9]|bf16|mixed) +[0-9]+ (decode|prefill|qgemm) ' "$T/out")" 12 "mode-bench: 4 widths x (decode at 1; prefill and qgemm at 70)"
has "$T/out" "mixed at 70 tokens, qgemm:" "mode-bench: the mixed allocation against the byte-weighted uniform widths"
done_testing
