#!/bin/sh
# pipelines/slurm/plan.sh — the shards of a stage, one line each: "LABEL<TAB>FLAGS", in the order
# their streams must be merged (mode-cat -s concatenates records in input order).
#
#   plan.sh trace SAMPLES MODEL SHARDS layers|samples BATCH_TOKENS
#   plan.sh sens MODEL SHARDS
#
# Every shard runs exactly the arithmetic of the single-process run, so the merged stream has its
# bytes (pipelines/README.md, "Slurm"):
#   mode-route-trace reads its samples in batches: a batch takes samples while it holds fewer than
#   BATCH_TOKENS tokens (filters/common/input.c, mode_input_batch), and the floating-point sums of
#   a batch depend on which samples share it. Its records come batch by batch, layer by layer
#   within a batch. So a sample shard is always a run of whole batches of the single-process run,
#   and when the layers are split too, every batch is a shard of its own: (batch, layer range)
#   boxes in batch-major order give back the single process's record order.
#     layers   SHARDS layer ranges (at most one per layer), times the batches when there are several
#     samples  SHARDS runs of whole batches (at most one per batch), every layer
#   mode-sensitivity holds every sample in one batch and writes one record per layer: its shards
#   are SHARDS layer ranges.
# The layer count is config.json's num_hidden_layers (or N_LAYER from the environment); the token
# counts come from the samples stream, printed by mode-cat (MODE_CAT, default mode-cat on PATH).
set -eu
usage() {
    echo "usage: $0 trace SAMPLES MODEL SHARDS layers|samples BATCH_TOKENS" >&2
    echo "       $0 sens MODEL SHARDS" >&2
    exit 64
}
[ $# -ge 1 ] || usage
stage=$1
shift
case $stage in
trace) [ $# -eq 5 ] || usage; samples=$1 model=$2 shards=$3 by=$4 batch_tokens=$5 ;;
sens) [ $# -eq 2 ] || usage; model=$1 shards=$2 by=layers ;;
*) usage ;;
esac
case $shards in '' | *[!0-9]* | 0) echo "$0: SHARDS: '$shards' is not a positive count" >&2; exit 64 ;; esac
case $by in layers | samples) ;; *) echo "$0: '$by' is neither layers nor samples" >&2; exit 64 ;; esac

# decoder layers: the text config's num_hidden_layers (Qwen3-VL-MoE's vision config says depth)
n_layer=${N_LAYER:-}
if [ -z "$n_layer" ]; then
    [ -r "$model/config.json" ] || { echo "$0: $model/config.json: cannot read it (or set N_LAYER)" >&2; exit 66; }
    n_layer=$(tr ',{}' '\n\n\n' <"$model/config.json" | sed -n 's/^[[:space:]]*"num_hidden_layers"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\)[[:space:]]*$/\1/p' | sort -u)
    case $n_layer in
    '' | *[!0-9]*) echo "$0: $model/config.json: no single num_hidden_layers (set N_LAYER)" >&2; exit 65 ;;
    esac
fi

# "lo-hi" of range r of n items split into k contiguous, nearly equal ranges
range() { echo "$(($1 * $2 / $3))-$((($1 + 1) * $2 / $3 - 1))"; }

layer_ranges() { # k: prints min(k, n_layer) ranges
    k=$1
    [ "$k" -le "$n_layer" ] || { echo "$0: $stage: $n_layer layer(s): $n_layer layer range(s), not $k" >&2; k=$n_layer; }
    r=0
    while [ $r -lt "$k" ]; do
        range $r "$n_layer" "$k"
        r=$((r + 1))
    done
}

if [ "$stage" = sens ]; then
    for l in $(layer_ranges "$shards"); do printf 'layers-%s\t--layers %s\n' "$l" "$l"; done
    exit 0
fi

# the batches of the single-process run, "first-last" sample positions, from the token counts
[ -r "$samples" ] || { echo "$0: $samples: cannot read it" >&2; exit 66; }
batches=$("${MODE_CAT:-mode-cat}" "$samples" | awk -v bt="$batch_tokens" '
    BEGIN { key = "\"tokens\":{\"dtype\":\"i32\",\"shape\":["; i = 0; rows = 0 }
    NR > 1 && index($0, key) {
        # a record: its first "tokens" key is the sample'\''s tokens (a key cannot occur inside a
        # JSON string, whose quotes are escaped)
        n = substr($0, index($0, key) + length(key)) + 0
        if (rows == 0) first = i
        rows += n
        if (rows >= bt) { print first "-" i; rows = 0 }
        i++
    }
    END { if (rows > 0) print first "-" (i - 1) }')
[ -n "$batches" ] || { echo "$0: $samples: no sample" >&2; exit 65; }
nb=$(echo "$batches" | wc -l)

if [ "$by" = samples ]; then
    g=$shards
    [ "$g" -le "$nb" ] || g=$nb
    r=0
    while [ $r -lt "$g" ]; do
        b0=$((r * nb / g + 1)) b1=$(((r + 1) * nb / g))
        lo=$(echo "$batches" | sed -n "${b0}p")
        hi=$(echo "$batches" | sed -n "${b1}p")
        lo=${lo%-*} hi=${hi#*-}
        printf 'samples-%s-%s\t--samples %s-%s\n' "$lo" "$hi" "$lo" "$hi"
        r=$((r + 1))
    done
    [ "$shards" -le "$nb" ] || echo "$0: trace: $nb batch(es) of BATCH_TOKENS=$batch_tokens tokens: $g shard(s), not $shards" >&2
    exit 0
fi

ranges=$(layer_ranges "$shards")
if [ "$nb" -eq 1 ]; then
    for l in $ranges; do printf 'layers-%s\t--layers %s\n' "$l" "$l"; done
else
    for b in $batches; do
        for l in $ranges; do printf 'samples-%s.layers-%s\t--samples %s --layers %s\n' "$b" "$l" "$b" "$l"; done
    done
fi
