#!/bin/sh
# pipelines/table.sh OUT VARIANT... — the comparison table of an experiment directory: for each
# variant, its average bits and packed expert bytes (from mode-ilp's summary alloc-V.json; fp:
# the bf16 experts, labelled "full precision" as in the README) and mode-eval's metrics
# (eval-V.json). Prints text; numbers as measured.
set -eu
out=$1
shift
num() { tr -d ' \n' <"$1" | sed -n "s/.*$2.*/\\1/p"; }
printf '%-14s %9s %11s %12s %12s %10s\n' method "avg bits" "experts MB" "text ppl" "caption ppl" "exact match"
for v in "$@"; do
    e=$out/eval-$v.json
    tp=$(num "$e" '"metrics":{"text":{[^}]*"perplexity":\([0-9.e+-]*\)}')
    ap=$(num "$e" '"metrics":{"text":{[^}]*},"answer":{[^}]*"perplexity":\([0-9.e+-]*\),')
    em=$(num "$e" '"metrics":{"text":{[^}]*},"answer":{[^}]*"exact_match":\([0-9]*\),')
    n=$(num "$e" '"metrics":{"text":{[^}]*},"answer":{"records":\([0-9]*\),')
    if [ "$v" = fp ]; then
        bits=16
        any=$(ls "$out"/alloc-*.json | head -n 1)
        bytes=$(num "$any" '"bytes_unquantized":\([0-9]*\),')
        mb=$(awk -v b="${bytes:-0}" 'BEGIN { printf "%.3f", b / 1e6 }')
    else
        a=$out/alloc-$v.json
        bits=$(num "$a" '"avg_bits":\([0-9.e+-]*\),"bytes"')
        bytes=$(num "$a" '"bytes":\([0-9]*\),')
        mb=$(awk -v b="${bytes:-0}" 'BEGIN { printf "%.3f", b / 1e6 }')
    fi
    name=$v
    [ "$v" = fp ] && name="full precision"
    printf '%-14s %9s %11s %12.4f %12.4f %10s\n' "$name" "$(awk -v b="$bits" 'BEGIN { printf "%.3f", b }')" "$mb" "$tp" "$ap" "$em/$n"
done
