#!/bin/sh
# tests/bench/scale.sh — every stage of the MODE pipeline on a random Qwen3-VL-30B-A3B at full
# width (issue 22): what each stage costs in CPU, wall time and memory at the real model's shapes,
# how the cost grows with the calibration set, and what the full model would cost on this machine.
# `make scale` runs it (after building the programs); not part of make check.
#
# Environment (defaults in brackets):
#   SCALE_LAYERS [4]       decoder layers of the generated model (of 48; at least 3: see README-scale.md)
#   SCALE_SAMPLES [16]     calibration samples of the large run
#   SCALE_SMALL [SAMPLES/4] calibration samples of the small run (the exponent of cost in tokens)
#   SCALE_SEED [1]         seed of the model and of the calibration set
#   SCALE_OUT [build/scale] where everything goes
#   SCALE_THREADS [nproc]  BLAS threads of every stage
#   SCALE_KL_SECONDS [150] time limit of each run of the kl metric (see below)
#   SCALE_PERF [auto]      1: profile the large run of each heavy stage with perf (what dominates),
#                          0: do not (the split then comes from the flop counts), auto: 1 when perf works
#
# Steps:
#   1. build/bench/gen_qwen3vl writes the model into $OUT/model, build/bench/gen_calib the
#      calibration set into $OUT/calib (PNG images + data.jsonl): each once, kept while the
#      generator's source and the parameters (stamp files) are unchanged.
#   2. build/bench/bench_sgemm measures the OpenBLAS sgemm rate (the yardstick), at the start.
#   3. for the small then the large number of samples, under /usr/bin/time -v, each stage in turn:
#      tokenize, route-trace, vis-denoise, sensitivity --metric layer (every expert of every layer,
#      widths 2,3,4, --all, key image tokens), ilp (MODE, 3 bits average per layer), pack, eval (of
#      the packed checkpoint, on the calibration samples), and sensitivity --metric kl restricted to
#      what can finish: mode-sensitivity has no option to choose experts (only --layers and
#      --samples), so the kl run takes the last layer (--layers L-1, the fewest layers re-run per
#      expert), width 2 only, the text-only samples of the set, and stops after SCALE_KL_SECONDS:
#      its progress lines (done/total of the expert x width x modality units) give the rate and
#      the projected time of the whole sweep.
#   4. $OUT/table.txt: a row per stage and size (CPU s, wall s, peak RSS and peak anonymous memory
#      in MB, GFLOP counted from the shapes and token counts, GFLOP/s), the sgemm rate, the load of
#      the machine, the exponent of cost in tokens per stage, the split of each stage's CPU time
#      by part (perf), and the extrapolation to 48 layers and 128 samples. Logs, /usr/bin/time
#      output and perf data are in $OUT/logs.
# A stage that fails is recorded (its exit status and last lines of stderr, in the table and in
# $OUT/failures.txt); the stages that need its output are skipped, the others still run.
#
# FLOP counts (2 per multiply-add; matrix products only: norms, softmax, rope, GELU, SiLU and the
# quantizers' scalar work are not counted). Per image of P patches (t*h*w of its grid):
#   vision(P) = 2 P (3*2*16*16) 1152                                    patch embedding
#             + 27 [ 2 P (4*1152^2 + 2*1152*4304) + 4 P^2 1152 ]        blocks: qkv+proj+MLP, attention
#             + 4 * 2 (P/4) (4608^2 + 4608*2048)                        merger + 3 deepstack mergers
# Per decoder layer, over sequences of n_i tokens (N = sum n_i):
#   layer    = N [ 2*2048*(4096+512+512) + 2*4096*2048 + 2*2048*128 + 8*3*2*2048*768 ]
#              (q/k/v, o, router, top-8 experts x gate/up/down) + sum_i 2*32*128 n_i (n_i + 1)
#              (causal attention: q.k and p.v over the n(n+1)/2 pairs)
#   lm_head  = N * 2*2048*151936
# Stages (L layers, B = 3 candidate widths):
#   route-trace     V + L layer                                         (V = sum of vision(P))
#   sens layer      V + L layer + L * N*8 * (1 + B) * 3*2*2048*768      (each expert's tokens, full
#                                                                         precision and B widths)
#   pack            V + 2 L layer + L N*8*(2048^2 + 768^2)              (Hessians, f64)
#                   + (128 L - R) (gptq(1536, 2048) + gptq(2048, 768) + fac(2048) + fac(768))
#                   (R: experts rounded to nearest for want of tokens, from mode-pack's warning)
#                   gptq(r, c) = 2 (64 r c + r c (c - 128) / 2), fac(n) = 4 n^3 / 3 (bench_gptq's counts)
#   eval            V + L layer + lm_head
#   sens kl         (capture) L layer_K + lm_head_K, then per unit done: layer_K + lm_head_K
#                   (K: the text-only samples; one layer re-run from the last layer's input)
set -eu

L=${SCALE_LAYERS:-4}
S=${SCALE_SAMPLES:-16}
SMALL=${SCALE_SMALL:-$((S / 4 > 0 ? S / 4 : 1))}
SEED=${SCALE_SEED:-1}
OUT=${SCALE_OUT:-build/scale}
THREADS=${SCALE_THREADS:-$(nproc)}
KL_SECONDS=${SCALE_KL_SECONDS:-150}
PERF=${SCALE_PERF:-auto}
BIN=bin
GEN=build/bench
TOK=build/fixtures/qwen3-tokenizer.json
FULL_LAYERS=48
FULL_SAMPLES=128

die() { echo "scale.sh: $*" >&2; exit 1; }
[ "$L" -ge 1 ] && [ "$L" -le 48 ] || die "SCALE_LAYERS must be 1..48"
[ "$S" -ge 1 ] && [ "$SMALL" -ge 1 ] && [ "$SMALL" -le "$S" ] || die "need 1 <= SCALE_SMALL <= SCALE_SAMPLES"
for p in "$GEN/gen_qwen3vl" "$GEN/gen_calib" "$GEN/bench_sgemm" "$TOK" $BIN/mode-tokenize $BIN/mode-route-trace $BIN/mode-vis-denoise \
    $BIN/mode-sensitivity $BIN/mode-ilp $BIN/mode-pack $BIN/mode-eval $BIN/mode-cat; do
    [ -e "$p" ] || die "$p is missing (run it through make scale)"
done
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends time >/dev/null || die "cannot install the time package"
    else
        die "/usr/bin/time is missing: apt-get install time"
    fi
fi
if [ "$PERF" = auto ]; then
    PERF=0
    command -v perf >/dev/null 2>&1 && perf record -q -o /dev/null -F 10 -- true >/dev/null 2>&1 && PERF=1
fi

mkdir -p "$OUT/logs"
LOG=$OUT/logs
ROWS=$OUT/rows.tsv
FAIL=$OUT/failures.txt
: >"$ROWS"
: >"$FAIL"
: >"$LOG/load.txt"
note() { printf 'scale.sh: %s\n' "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
stamp_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# ---- the sgemm yardstick ----------------------------------------------------------------------
note "sgemm rate (OpenBLAS, $THREADS threads), load $(load)"
OPENBLAS_NUM_THREADS=$THREADS "$GEN/bench_sgemm" 3 "$THREADS" >"$LOG/sgemm.txt"
SGEMM_T=$(awk -v t="$THREADS" '$1 == "sgemm_gflops" && $2 == t { print $3 }' "$LOG/sgemm.txt" | tail -n 1)
SGEMM_1=$(awk '$1 == "sgemm_gflops" && $2 == 1 { print $3 }' "$LOG/sgemm.txt" | tail -n 1)
echo "start $(date +%T) $(load)" >>"$LOG/load.txt"

# ---- run NAME SIZE GFLOP CMD...: one stage under /usr/bin/time -v (and perf), a row in $ROWS ------
# Peak anonymous memory (RssAnon, sampled every second) beside time's peak RSS, which counts the
# checkpoint's mapped pages too (page cache: reclaimable, the same for every stage).
descendants() { for c in $(pgrep -P "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
run() {
    name=$1 size=$2 gflop=$3
    shift 3
    tag=$name-$size
    use_perf=0
    case $name in route-trace | sens-layer | pack | eval) [ "$PERF" = 1 ] && [ "$size" = "$S" ] && use_perf=1 ;; esac
    note "$tag: $* (load $(load))"
    if [ $use_perf = 1 ]; then
        perf record -q -F 5 -g --call-graph dwarf,16384 -o "$LOG/$tag.perf" -- /usr/bin/time -v -o "$LOG/$tag.time" "$@" >"$LOG/$tag.out" 2>"$LOG/$tag.err" &
    else
        /usr/bin/time -v -o "$LOG/$tag.time" "$@" >"$LOG/$tag.out" 2>"$LOG/$tag.err" &
    fi
    pid=$!
    anon=0
    while kill -0 "$pid" 2>/dev/null; do
        for c in $(descendants "$pid"); do
            a=$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$c/status" 2>/dev/null || true)
            [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
        done
        sleep 1
    done
    status=0
    wait "$pid" || status=$?
    if [ -s "$LOG/$tag.time" ]; then
        # time -v exits with the command's status; "Command exited with non-zero status N" when it failed
        st=$(sed -n 's/.*Exit status: \([0-9]*\).*/\1/p' "$LOG/$tag.time")
        [ -n "$st" ] && status=$st
    fi
    awk -v name="$name" -v size="$size" -v gflop="$gflop" -v anon="$anon" -v status="$status" -v tok="${TOKENS:-0}" '
        /User time/ { u = $NF } /System time/ { s = $NF } /Maximum resident/ { rss = $NF }
        /Elapsed \(wall clock\)/ { n = split($NF, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
        END { printf "%s\t%s\t%s\t%.2f\t%.2f\t%.0f\t%.0f\t%s\t%s\n", name, size, tok, u + s, w, rss / 1024, anon / 1024, gflop, status }
    ' "$LOG/$tag.time" >>"$ROWS"
    echo "$tag $(date +%T) $(load)" >>"$LOG/load.txt"
    if [ "$status" = 124 ] && [ "$name" = sens-kl ]; then
        note "$tag stopped at the limit (as planned): $(tail -n 1 "$LOG/$tag.err")"
        return 0
    fi
    if [ "$status" != 0 ]; then
        { echo "== $tag: exit $status: $*"; tail -n 5 "$LOG/$tag.err"; } >>"$FAIL"
        note "$tag FAILED (exit $status): $(tail -n 1 "$LOG/$tag.err")"
        return 1
    fi
    return 0
}

# ---- the model and the calibration set (once) --------------------------------------------------
M=$OUT/model
mstamp=$(stamp_of "layers=$L" "seed=$SEED" "$(sha256sum tests/bench/gen_qwen3vl.c)" "$(sha256sum "$TOK")")
if [ -f "$M/config.json" ] && [ "$(cat "$OUT/model.stamp" 2>/dev/null)" = "$mstamp" ]; then
    note "reusing $M ($L layers, seed $SEED)"
else
    rm -rf "$M" "$OUT/model.stamp"
    TOKENS=0
    run generate-model 0 0 "$GEN/gen_qwen3vl" -o "$M" --tokenizer "$TOK" --layers "$L" --seed "$SEED" || die "the generator failed"
    echo "$mstamp" >"$OUT/model.stamp"
fi
C=$OUT/calib
cstamp=$(stamp_of "samples=$S" "seed=$SEED" "$(sha256sum tests/bench/gen_calib.c)" "$(sha256sum "$TOK")")
if [ -f "$C/data.jsonl" ] && [ "$(cat "$OUT/calib.stamp" 2>/dev/null)" = "$cstamp" ]; then
    note "reusing $C ($S samples)"
else
    rm -rf "$C" "$OUT/calib.stamp"
    TOKENS=0
    run generate-calib 0 0 "$GEN/gen_calib" -o "$C" -n "$S" --tokenizer "$TOK" --seed "$SEED" || die "the calibration generator failed"
    echo "$cstamp" >"$OUT/calib.stamp"
fi

# ---- flop counts of a samples stream (GFLOP; see the top of this file) --------------------------
# prints: tokens images patches vision_gflop layer_gflop lmhead_gflop
sample_stats() {
    "$BIN/mode-cat" "$1" | awk '
    /"tokens":\{"dtype":"i32","shape":\[/ {
        s = $0; sub(/.*"tokens":\{"dtype":"i32","shape":\[/, "", s); n = s + 0
        N += n; attn += 2 * 32 * 128 * n * (n + 1)
        s = $0
        while (match(s, /"grid":\[[0-9]+,[0-9]+,[0-9]+\]/)) {
            g = substr(s, RSTART + 8, RLENGTH - 9); split(g, d, ","); P = d[1] * d[2] * d[3]
            V += 2 * P * 1536 * 1152 + 27 * (2 * P * (4 * 1152 * 1152 + 2 * 1152 * 4304) + 4 * P * P * 1152) \
                 + 4 * 2 * (P / 4) * (4608 * 4608 + 4608 * 2048)
            imgs++; patches += P
            s = substr(s, RSTART + RLENGTH)
        }
    }
    END {
        layer = N * (2 * 2048 * (4096 + 512 + 512) + 2 * 4096 * 2048 + 2 * 2048 * 128 + 8 * 3 * 2 * 2048 * 768) + attn
        printf "%d %d %d %.3f %.3f %.3f\n", N, imgs, patches, V / 1e9, layer / 1e9, N * 2 * 2048 * 151936 / 1e9
    }'
}
gflop_pack() { # N L layer vision experts-rounded-to-nearest
    awk -v N="$1" -v L="$2" -v layer="$3" -v V="$4" -v fb="$5" 'function gptq(r, c) { return 2 * (64 * r * c + r * c * (c - 128) / 2) }
        function fac(n) { return 4 * n * n * n / 3 }
        BEGIN { printf "%.3f\n", V + 2 * L * layer + (L * N * 8 * (2048 * 2048 + 768 * 768) + (128 * L - fb) * (gptq(1536, 2048) + gptq(2048, 768) + fac(2048) + fac(768))) / 1e9 }'
}
# set_gflop NAME SIZE GFLOP: replaces the GFLOP of that row
set_gflop() {
    awk -F'\t' -v OFS='\t' -v n="$1" -v s="$2" -v g="$3" '$1 == n && $2 == s { $8 = g } { print }' "$ROWS" >"$ROWS.tmp" && mv "$ROWS.tmp" "$ROWS"
}

# ---- the stages, small set then large ----------------------------------------------------------
LAST=$((L - 1))
for n in $SMALL $S; do
    D=$OUT/n$n
    mkdir -p "$D"
    head -n "$n" "$C/data.jsonl" >"$D/calib.jsonl"
    TOKENS=0
    run tokenize "$n" 0 "$BIN/mode-tokenize" -m "$M" --root "$C" -o "$D/samples.ms" "$D/calib.jsonl" || continue
    set -- $(sample_stats "$D/samples.ms")
    TOKENS=$1 IMGS=$2 PATCHES=$3 VIS=$4 LAYER=$5 HEAD=$6
    echo "$n $TOKENS $IMGS $PATCHES $VIS $LAYER $HEAD" >"$D/stats"
    TH="--threads $THREADS"
    g=$(awk -v V="$VIS" -v L="$L" -v l="$LAYER" 'BEGIN { printf "%.3f", V + L * l }')
    if run route-trace "$n" "$g" "$BIN/mode-route-trace" -m "$M" $TH -o "$D/trace.ms" "$D/samples.ms" &&
        run vis-denoise "$n" 0 "$BIN/mode-vis-denoise" --keep-out "$D/keep.ms" --png "$D/freq.png" -o "$D/freq.ms" "$D/trace.ms"; then
        g=$(awk -v V="$VIS" -v L="$L" -v l="$LAYER" -v N="$TOKENS" 'BEGIN { printf "%.3f", V + L * l + L * N * 8 * 4 * 3 * 2 * 2048 * 768 / 1e9 }')
        if run sens-layer "$n" "$g" "$BIN/mode-sensitivity" -m "$M" $TH --metric layer --bits 2,3,4 --all --vision-tokens key \
            --keep "$D/keep.ms" -o "$D/sens.ms" "$D/samples.ms" &&
            run ilp "$n" 0 "$BIN/mode-ilp" --method mode --avg-bits 3 --scope layer -m "$M" -f "$D/freq.ms" -s "$D/sens.ms" \
                -o "$D/alloc.ms" --json "$D/alloc.json"; then
            rm -rf "$D/packed" "$D/packed.resume"
            if run pack "$n" "$(gflop_pack "$TOKENS" "$L" "$LAYER" "$VIS" 0)" "$BIN/mode-pack" -m "$M" $TH -a "$D/alloc.ms" -o "$D/packed" "$D/samples.ms"; then
                # the experts with too few tokens were rounded to nearest, not GPTQ'd: their GPTQ flops out
                fb=$(sed -n 's/.*warning: \([0-9]*\) experts had fewer than.*/\1/p' "$LOG/pack-$n.err" | tail -n 1)
                set_gflop pack "$n" "$(gflop_pack "$TOKENS" "$L" "$LAYER" "$VIS" "${fb:-0}")"
                g=$(awk -v V="$VIS" -v L="$L" -v l="$LAYER" -v h="$HEAD" 'BEGIN { printf "%.3f", V + L * l + h }')
                run eval "$n" "$g" "$BIN/mode-eval" -m "$D/packed" $TH -o "$D/eval.json" "$D/samples.ms" || true
                [ "$n" = "$S" ] || rm -rf "$D/packed" # disk: keep only the large run's checkpoint
            fi
        fi
    fi
    # kl, restricted (see the top): the text-only samples of the set, the last layer, width 2
    awk '!/"type": "image"/' "$D/calib.jsonl" >"$D/kl.jsonl"
    if [ -s "$D/kl.jsonl" ] && "$BIN/mode-tokenize" -m "$M" -o "$D/kl.ms" "$D/kl.jsonl" 2>"$LOG/kl-tokenize-$n.err"; then
        set -- $(sample_stats "$D/kl.ms")
        TOKENS=$1 KLN=$1 KLLAYER=$5 KLHEAD=$6
        echo "$KLN $KLLAYER $KLHEAD" >"$D/kl.stats"
        run sens-kl "$n" 0 env MODE_PROGRESS=log MODE_PROGRESS_SECONDS=10 timeout "$KL_SECONDS" "$BIN/mode-sensitivity" -m "$M" $TH \
            --metric kl --layers "$LAST-$LAST" --bits 2 -o "$D/sens-kl.ms" "$D/kl.ms" || true
    fi
done
echo "end $(date +%T) $(load)" >>"$LOG/load.txt"

# ---- perf: each profiled stage's CPU time by part ----------------------------------------------
# Samples of the stage's main thread only (OpenBLAS's worker threads start from its pool, not from
# the caller, so their stacks do not say what the product was for; the main thread takes its share
# of every product). Parts: a function on the sample's stack, first match in this order. OpenBLAS's
# f64 kernels carry no unwind tables: a sample in one of them has lost its caller (GPTQ or the
# Hessians, the only f64 products) and is counted apart.
if [ "$PERF" = 1 ]; then
    for f in "$LOG"/*-"$S".perf; do
        [ -s "$f" ] || continue
        tag=$(basename "$f" .perf)
        perf script -i "$f" -F pid,tid,ip,sym 2>/dev/null | awk -v tag="$tag" '
        function flush() {
            if (!have) return
            part = "other"
            if (st ~ / (vision|mode_rt_vision|mode_vision_block_ref|merger|add_pos_embed) /) part = "vision tower"
            else if (st ~ / (mode_rt_logits|log_softmax|kl_sum) /) part = "lm_head + softmax"
            else if (st ~ / (mode_gptq_ref|mode_quant_gptq|mode_quant_gptq_f64|mode_gptq_rows|dpotrf_|dtrtri_|inverse_factor|factor) /) part = "GPTQ"
            else if (st ~ / (mode_hessian_add|mode_hessian_get|hessian_of|cblas_dsyrk) /) part = "Hessians"
            else if (st ~ / (quantize_expert|quant_proj|mode_quant_rtn|mode_quant_rtn_f64|mode_quant_params|mode_qmoe_expert_ref|mode_model_qexpert_f32|mode_model_qproj_f32) /) part = "quantize/dequantize"
            else if (st ~ / (attention|mode_attention_ref|mode_attention_ref_block|attn_scores|mode_rope_ref|attn_pass) /) part = "text attention"
            else if (st ~ / (moe|expert_forward|mode_text_moe_ref|experts_batched|dense_moe|mode_topk_ref|mode_moe_route_sort|expert_cb) /) part = "experts (MoE)"
            else if (st ~ / (mode_convert_ref|text_layer_load|expert_f32|expert_weights|mode_mat_to_f32|to_f32|bf16_f32|vis_block_load) /) part = "bf16 -> f32 weights"
            else if (st ~ / (mode_st_set_scan|mode_hash_scan|mode_model_open|mode_model_open_flags) /) part = "model open (scan)"
            else if (st ~ / (mode_gemm|mode_rmsnorm_ref) /) part = "text projections"
            else if (st ~ / (vfs_write|ksys_write|__x64_sys_write|__x64_sys_pwrite64|mode_write_all|copy_range|flush_shard|mode_st_writer_add) /) part = "writing output"
            else if (st ~ / (dgemm_kernel_[A-Z0-9]*|dtrsm_[a-zA-Z0-9_]*|dsyrk_[a-zA-Z0-9_]*|dgemv_[a-zA-Z0-9_]*|dtrmm_[a-zA-Z0-9_]*) /) part = "f64 BLAS, caller lost (GPTQ/Hessians)"
            n[part]++; tot++
            have = 0; st = " "
        }
        BEGIN { st = " " }
        /^ *[0-9]+\/[0-9]+ *$/ { flush(); split($1, a, "/"); have = (a[1] == a[2]); next }
        NF == 0 { flush(); next }
        { if (have) st = st $2 " " }
        END { flush(); for (p in n) printf "%s\t%s\t%.3f\n", tag, p, n[p] / tot }' >>"$OUT/parts.tsv.new" || true
    done
    [ -f "$OUT/parts.tsv.new" ] && mv "$OUT/parts.tsv.new" "$OUT/parts.tsv"
fi

# ---- the table ----------------------------------------------------------------------------------
KL_S=${KL_SECONDS}s sh tests/bench/scale-table.sh "$OUT" "$L" "$S" "$SMALL" "$THREADS" "$SGEMM_T" "$SGEMM_1" "$FULL_LAYERS" "$FULL_SAMPLES" >"$OUT/table.txt"
cat "$OUT/table.txt"
