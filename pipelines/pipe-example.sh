#!/bin/sh
# pipelines/pipe-example.sh MODEL CALIB.jsonl EVAL.jsonl OUTDIR [BUDGET] — the MODE pipeline with
# plain pipes and files, stage by stage: tokenize, trace, denoise, sensitivity, ILP, pack, evaluate,
# and the evaluation into the packed checkpoint's model card. Runs from any directory: the programs
# are taken from the bin/ beside this script's directory when it holds them (a built checkout),
# else from PATH (installed).
set -eu
[ $# -ge 4 ] || { echo "usage: $0 MODEL CALIB.jsonl EVAL.jsonl OUTDIR [BUDGET]" >&2; exit 64; }
bin=$(cd "$(dirname "$0")/.." && pwd)/bin
[ -x "$bin/mode-pack" ] && PATH=$bin:$PATH
model=$1 calib=$2 eval=$3 out=$4 budget=${5:-2.5}
mkdir -p "$out"
mode-tokenize -m "$model" -o "$out/calib.ms" "$calib"
mode-route-trace -m "$model" "$out/calib.ms" |
    mode-vis-denoise --keep-out "$out/keep.ms" --png "$out/freq.png" -o "$out/freq.ms"
mode-sensitivity -m "$model" --vision-tokens key --keep "$out/keep.ms" -o "$out/sens.ms" "$out/calib.ms"
mode-ilp -f "$out/freq.ms" -s "$out/sens.ms" -m "$model" --avg-bits "$budget" --png "$out/bits.png" --json "$out/alloc.json" \
    -o "$out/alloc.ms"
mode-pack -m "$model" -a "$out/alloc.ms" -o "$out/packed" "$out/calib.ms"
mode-tokenize -m "$model" "$eval" | mode-eval -m "$out/packed" -o "$out/eval.json"
mode-pack --card-update "$out/packed" --card-eval "$out/eval.json"
cat "$out/eval.json"
