#!/bin/sh
# tests/bench/scale-table.sh — the table of tests/bench/scale.sh from what it left in OUT:
#   rows.tsv    stage, samples, tokens, CPU s, wall s, peak RSS MB, peak anon MB, GFLOP, exit status
#   nN/stats    samples tokens images patches vision_GFLOP layer_GFLOP lm_head_GFLOP (per set)
#   nN/kl.stats tokens layer_GFLOP lm_head_GFLOP of the kl run's samples; logs/sens-kl-N.err its progress
#   parts.tsv   stage-size, part, share of the main thread's perf samples (when profiled)
#   logs/sgemm.txt, logs/load.txt, model/config.json
# and the formulas of the extrapolation (printed with it).
#
#   tests/bench/scale-table.sh OUT L S SMALL THREADS SGEMM_T SGEMM_1 FULL_LAYERS FULL_SAMPLES
set -eu
OUT=$1 L=$2 S=$3 SMALL=$4 THREADS=$5 SGEMM_T=$6 SGEMM_1=$7 FL=$8 FS=$9
ROWS=$OUT/rows.tsv
model_gb=$(du -sb "$OUT/model" 2>/dev/null | awk '{ printf "%.2f", $1 / 1e9 }')
full_gb=62.14 # gen_qwen3vl's count for 48 layers

# kl: units done and total, seconds between the first and the last progress line
kl_progress() {
    f=$OUT/logs/sens-kl-$1.err
    [ -f "$f" ] || { echo "0 0 0"; return; }
    awk '/mode-sensitivity: / && match($0, /[0-9]+\/[0-9]+ \(/) {
            split(substr($0, RSTART, RLENGTH - 2), a, "/"); d = a[1]; t = a[2]
            sec = 0
            if (match($0, /%\), [0-9hms]+/)) {
                e = substr($0, RSTART + 4, RLENGTH - 4)
                while (match(e, /[0-9]+[hms]/)) {
                    v = substr(e, RSTART, RLENGTH - 1) + 0; u = substr(e, RSTART + RLENGTH - 1, 1)
                    sec += u == "h" ? v * 3600 : u == "m" ? v * 60 : v; e = substr(e, RSTART + RLENGTH) } }
            last = d " " t " " sec }
         END { print (last == "" ? "0 0 0" : last) }' "$f"
}

echo "MODE at full width: a random Qwen3-VL-30B-A3B-Instruct (published shapes), $L of $FL decoder layers ($model_gb GB bf16),"
echo "calibration sets of $SMALL and $S samples (tests/bench/scale.sh, $(date +%F))"
echo "machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo);" \
    "OpenBLAS sgemm 2048^3 measured at the start: $SGEMM_T GFLOP/s on $THREADS threads, $SGEMM_1 on 1"
awk '{ print $NF, $(NF-2) }' "$OUT/logs/load.txt" | awk '{ gsub(/,/, "", $2); if (n == 0 || $2 + 0 > mx) mx = $2 + 0; s += $2; n++ }
    END { printf "load average (1 min) sampled at each stage boundary: mean %.1f, max %.1f (other sessions share the machine)\n", s / n, mx }'
for n in $SMALL $S; do
    [ -f "$OUT/n$n/stats" ] && awk '{ printf "  %d samples: %d tokens, %d images (%d patches): vision %.0f GFLOP, a decoder layer %.0f GFLOP, lm_head %.0f GFLOP\n", $1, $2, $3, $4, $5, $6, $7 }' "$OUT/n$n/stats"
done
echo
printf '%-15s %7s %7s %9s %9s %8s %8s %10s %9s %9s %7s  %s\n' stage samples tokens "CPU s" "wall s" "RSS MB" "anon MB" GFLOP \
    "GFLOP/s" "GF/CPU-s" "%sgemm" status
# kl rows: GFLOP from the progress (capture + units done)
while IFS='	' read -r name size tok cpu wall rss anon gflop status; do
    st=ok
    [ "$status" = 0 ] || st="FAILED (exit $status)"
    if [ "$name" = tokenize ] && [ -f "$OUT/n$size/stats" ]; then tok=$(cut -d' ' -f2 "$OUT/n$size/stats"); fi
    if [ "$name" = sens-kl ]; then
        set -- $(kl_progress "$size")
        done_u=$1 total_u=$2
        if [ -f "$OUT/n$size/kl.stats" ]; then
            set -- $(cat "$OUT/n$size/kl.stats")
            tok=$1
            gflop=$(awk -v l="$2" -v h="$3" -v L="$L" -v d="$done_u" 'BEGIN { printf "%.3f", L * l + h + d * (l + h) }')
        fi
        [ "$status" = 124 ] && st="stopped at ${KL_S:-the limit}: $done_u of $total_u units"
        [ "$status" = 0 ] && st="ok: $done_u of $total_u units"
    fi
    awk -v name="$name" -v size="$size" -v tok="$tok" -v cpu="$cpu" -v wall="$wall" -v rss="$rss" -v anon="$anon" -v g="$gflop" \
        -v sg="$SGEMM_1" -v st="$st" 'BEGIN {
        if (g > 0 && wall > 0) { r = sprintf("%9.1f", g / wall); rc = sprintf("%9.1f", g / cpu); p = sprintf("%6.0f%%", 100 * g / cpu / sg) }
        else { r = sprintf("%9s", "-"); rc = sprintf("%9s", "-"); p = sprintf("%7s", "-") }
        printf "%-15s %7d %7d %9.1f %9.1f %8d %8d %10s %s %s %s  %s\n", name, size, tok, cpu, wall, rss, anon, (g > 0 ? sprintf("%.0f", g) : "-"), r, rc, p, st }'
done <"$ROWS"
cat <<'EOF'
  CPU s = user + system (all threads); RSS = /usr/bin/time's peak resident set, which counts the
  checkpoint's mapped pages (page cache); anon = peak anonymous memory (RssAnon, sampled each second):
  what the stage allocates. GFLOP/s = counted GFLOP / wall s; GF/CPU-s = per CPU-second, and
  %sgemm = that over the 1-thread sgemm rate (how close to the matrix-product peak the stage runs,
  whatever the load). The flop formulas are at the top of tests/bench/scale.sh.
EOF

# ---- exponents -----------------------------------------------------------------------------------
echo
echo "Cost against calibration tokens, from the two sets: exponent e in CPU s ~ tokens^e (wall in brackets)"
awk -F'\t' -v a="$SMALL" -v b="$S" '$9 == 0 && ($2 == a || $2 == b) && $1 != "sens-kl" { k = $1; if ($2 == a) { ca[k] = $4; wa[k] = $5 } else { cb[k] = $4; wb[k] = $5 } }
    END { for (k in cb) if (k in ca && ca[k] > 0 && wa[k] > 0) printf "%s %s %s %s %s\n", k, ca[k], cb[k], wa[k], wb[k] }' "$ROWS" >"$OUT/exp.tmp"
ta=$(cut -d' ' -f2 "$OUT/n$SMALL/stats" 2>/dev/null || echo 0)
tb=$(cut -d' ' -f2 "$OUT/n$S/stats" 2>/dev/null || echo 0)
if [ "$ta" -gt 0 ] && [ "$tb" -gt "$ta" ]; then
    awk -v ta="$ta" -v tb="$tb" '{ printf "  %-14s e = %5.2f  (%5.2f)   CPU %.1f s -> %.1f s for %d -> %d tokens\n", $1, log($3 / $2) / log(tb / ta), log($5 / $4) / log(tb / ta), $2, $3, ta, tb }' "$OUT/exp.tmp"
else
    echo "  (needs both sets)"
fi
rm -f "$OUT/exp.tmp"

# ---- parts ---------------------------------------------------------------------------------------
if [ -s "$OUT/parts.tsv" ]; then
    echo
    echo "Where the CPU time goes ($S samples; perf, 5 Hz, the main thread's samples; see scale.sh):"
    sort -t'	' -k1,1 -k3,3nr "$OUT/parts.tsv" | awk -F'\t' '{ if ($1 != p) { if (p != "") printf "\n"; printf "  %-16s", $1; p = $1 } printf " %s %.0f%%;", $2, 100 * $3 } END { printf "\n" }'
fi

# ---- extrapolation -------------------------------------------------------------------------------
echo
echo "Extrapolation to $FL layers and $FS samples (same mix of images and text), CPU seconds of the $S-sample run, part by part:"
cat <<EOF
  T' = sum over parts p of T * share_p * (layers' / $L)^a_p * (samples' / $S)^b_p, with
  a = 1 for the per-layer parts (text attention, text projections, experts, Hessians, GPTQ and the
  f64 BLAS whose caller perf lost, quantize/dequantize, bf16->f32 weights, writing output, other),
  0 for the vision tower and lm_head; b = 1 for the parts that follow the tokens (vision, text,
  lm_head, Hessians, other), 0 for GPTQ (and the lost f64 BLAS: GPTQ's in the profiles),
  quantization, weight conversion and output (per expert, not per token); model open (reading every tensor once) scales
  with the checkpoint, $model_gb -> $full_gb GB (and at $full_gb GB it no longer fits the page cache:
  disk-bound). Shares: perf's where profiled, else the flop shares. Measured exponents above say how
  far "linear in samples" holds.
EOF
awk -F'\t' -v S="$S" -v L="$L" -v FL="$FL" -v FSAMP="$FS" -v gb="$model_gb" -v fgb="$full_gb" -v out="$OUT" -v thr="$THREADS" '
    FILENAME ~ /parts.tsv$/ { sub(/-[0-9]+$/, "", $1); share[$1, $2] = $3; has[$1] = 1; next }
    FILENAME ~ /stats$/ { V = $5; lay = $6; head = $7; N = $2; next }
    $2 == S && $9 == 0 { cpu[$1] = $4; wall[$1] = $5; anon[$1] = $7 }
    END {
        fl = FL / L; fs = FSAMP / S
        split("route-trace sens-layer pack eval", st, " ")
        for (i = 1; i <= 4; i++) {
            k = st[i]; if (!(k in cpu)) { printf "  %-12s not measured\n", k; continue }
            T = cpu[k]; tot = 0; line = ""
            if (!(k in has)) { # flop shares
                vis = V; txt = (k == "pack" ? 2 : 1) * L * lay; hd = (k == "eval" ? head : 0)
                all = vis + txt + hd; share[k, "vision tower"] = vis / all; share[k, "text layers"] = txt / all; share[k, "lm_head + softmax"] = hd / all
                has[k] = 2
            }
            for (pk in share) {
                split(pk, q, SUBSEP); if (q[1] != k) continue
                p = q[2]; s = share[pk]
                a = (p == "vision tower" || p == "lm_head + softmax" || p == "model open (scan)") ? 0 : 1
                b = (p == "GPTQ" || p ~ /^f64 BLAS/ || p == "quantize/dequantize" || p == "bf16 -> f32 weights" || p == "model open (scan)" || p == "writing output") ? 0 : 1
                f = (a ? fl : 1) * (b ? fs : 1); if (p == "model open (scan)") f = fgb / gb
                x = T * s * f; tot += x; part[p] += x
            }
            grand += tot
            printf "  %-12s %8.0f CPU s measured -> %10.0f CPU s = %6.1f core-hours (%s)\n", k, T, tot, tot / 3600, (has[k] == 1 ? "perf shares" : "flop shares")
        }
        printf "  %-12s %21s %10.0f CPU s = %6.1f core-hours, %.1f h on %d cores of this machine with no other load\n", "total", "", grand, grand / 3600, grand / 3600 / thr, thr
        printf "  by part:"; n = 0
        for (p in part) order[++n] = p
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (part[order[j]] > part[order[i]]) { tmp = order[i]; order[i] = order[j]; order[j] = tmp }
        for (i = 1; i <= n; i++) printf "%s %s %.0f%%", (i > 1 ? ";" : ""), order[i], 100 * part[order[i]] / grand
        printf "\n"
    }' "$OUT/parts.tsv" "$OUT/n$S/stats" "$ROWS" 2>/dev/null || echo "  (no measurement to extrapolate from)"

# memory: anon ~ a + b tokens, from the two sets
echo
echo "Peak anonymous memory against tokens (anon = a + b * tokens, fitted on the two sets), at $FS samples:"
awk -F'\t' -v a="$SMALL" -v b="$S" -v ta="$ta" -v tb="$tb" -v FSAMP="$FS" -v S="$S" '$9 == 0 && $1 != "sens-kl" && $1 !~ /^generate/ {
        if ($2 == a) ma[$1] = $7; if ($2 == b) mb[$1] = $7 }
    END { if (tb <= ta) { print "  (needs both sets)"; exit }
        for (k in mb) if (k in ma) { sl = (mb[k] - ma[k]) / (tb - ta); c = mb[k] - sl * tb; t = tb * FSAMP / S
            printf "  %-14s %6.0f MB at %d tokens, %6.0f MB at %d: %.0f MB + %.3f MB/token -> %.1f GB at %d tokens\n", k, ma[k], ta, mb[k], tb, c, sl, (c + sl * t) / 1024, t } }' "$ROWS"

# kl
echo
echo "sensitivity --metric kl (restricted: the last layer, width 2, the text-only samples; stopped at the limit):"
for n in $SMALL $S; do
    [ -f "$OUT/n$n/kl.stats" ] || continue
    set -- $(kl_progress "$n")
    d=$1 t=$2 sec=$3
    set -- $(cat "$OUT/n$n/kl.stats")
    awk -v n="$n" -v d="$d" -v t="$t" -v sec="$sec" -v K="$1" -v lay="$2" -v head="$3" -v FL="$FL" -v FSAMP="$FS" -v S="$S" -v tb="$tb" '
    BEGIN {
        if (d < 2 || sec <= 0) { printf "  %d samples (%d text-only tokens): no rate measured (%d of %d units)\n", n, K, d, t; exit }
        u = sec / (d - 1)  # seconds per unit, between the first and the last progress line
        # one unit = one layer re-run + lm_head over K tokens; split by flops
        ul = u * lay / (lay + head); uh = u * head / (lay + head)
        N = tb * FSAMP / S       # tokens of the full calibration set
        units = FL * 128 * 3 * 2 # layers x experts x widths x modalities
        full = 128 * 3 * 2 * (FL * (FL + 1) / 2 * ul + FL * uh) * N / K
        printf "  %d samples (%d text-only tokens): %d of %d units, %.1f s a unit (a layer re-run + lm_head + KL over %d tokens): this restricted sweep %.0f s\n", n, K, d, t, u, K, t * u
        printf "    the whole sweep at %d layers and %d samples (%d tokens): sum over layers l of 768 units x ((%d - l) layers + lm_head) x N/K = %.2g s = %.1f years of this machine\n", FL, FSAMP, N, FL, full, full / 3600 / 24 / 365
    }'
done
if [ -s "$OUT/failures.txt" ]; then
    echo
    echo "Failures (logs in $OUT/logs):"
    sed 's/^/  /' "$OUT/failures.txt"
fi
