#!/bin/sh
# mode-bench: its usage errors, the alloc stream it reads, and — without a GPU — exit 69 naming the
# reason; with a GPU, a small layer's table (every case timed, the baseline beside it).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
S=$MODE_FIXTURES/streams
mode-cat -J -o "$T/alloc.ms" "$S/alloc.jsonl"

run mode-bench --help
is "$rc" 0 "--help"
has "$T/out" "usage: mode-bench" "prints the usage"
run mode-bench --bits 5
is "$rc" 64 "--bits 5: exit 64"
has "$T/err" "mode-bench: --bits: '5' is not 2, 3, 4, 8, 16 or mixed" "says why"
run mode-bench --tokens 0
is "$rc" 64 "--tokens 0: exit 64"
run mode-bench --hidden 100
is "$rc" 64 "a hidden size that is no multiple of 32: exit 64"
run mode-bench --topk 9 --experts 8
is "$rc" 64 "top-9 of 8 experts: exit 64"
run mode-bench --layer 1
is "$rc" 64 "--layer without --alloc: exit 64"
run mode-bench --alloc "$T/missing.ms"
is "$rc" 66 "a missing alloc stream: exit 66"
run mode-bench --alloc "$T/alloc.ms"
is "$rc" 65 "an allocation of 16 experts for a layer of 128: exit 65"
has "$T/err" "layer 0 has 16 experts, --experts is 128" "says so"
run mode-bench --alloc "$T/alloc.ms" --layer 9 --experts 16
is "$rc" 65 "a layer the stream lacks: exit 65"

small="--experts 16 --topk 2 --hidden 128 --width 96 --group 32 --iters 5 --pool 4"
run mode-bench --alloc "$T/alloc.ms" --layer 1 $small --bits 2,3,4,16,mixed --tokens 1,100
if [ "$rc" = 69 ]; then
    has "$T/err" "mode-bench: CUDA is unavailable" "without a GPU: exit 69, the reason named"
else
    is "$rc" 0 "a small layer on the GPU"
    is "$(grep -c -E '^(W2|W3|W4|bf16|mixed) ' "$T/out")" 15 "five widths x (decode at 1 token, v0 and qgemm at 100) timed"
    has "$T/out" "prefill" "100 tokens take the prefill path"
    has "$T/out" "qgemm" "and the grouped GEMM path"
    has "$T/out" "mixed at 1 tokens" "the mixed allocation against the weighted uniform times"
fi
done_testing
