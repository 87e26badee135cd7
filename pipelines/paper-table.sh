#!/bin/sh
# pipelines/paper-table.sh OUT MAIN LADDER BUDGETS RESAMPLES SEED STEPS [THIRDS] — the tables of pipelines/paper.mk
# as Markdown: the main table (the variants of MAIN) and the ablation ladder (those of LADDER),
# from an experiment directory OUT (layout in paper.mk). Per variant METHOD@BITS: average bits and
# packed expert bytes (mode-ilp's summary), text and caption perplexity and caption exact match on
# the evaluation set (mode-eval), the paired bootstrap 95% interval of each perplexity difference
# against MODE (mode-eval --compare; * when the interval excludes zero), and the perplexities of
# the same variant calibrated on each third of the calibration set (min-max, and in how many of
# the three MODE's was lower), and for the ladder, each step against the one before it (STEPS:
# METHOD:PREVIOUS pairs). THIRDS: the calibration thirds run (default third1 third2 third3; empty:
# none, the thirds columns say so). Numbers as measured; nothing is estimated here.
set -eu
out=$1 main=$2 ladder=$3 budgets=$4 resamples=$5 seed=$6 steps=${7:-} sets=${8-third1 third2 third3}

num() { tr -d ' \n' <"$1" | sed -n "s/.*$2.*/\\1/p"; }
text_ppl() { num "$1" '"metrics":{"text":{[^}]*"perplexity":\([0-9.e+-]*\)}'; }
cap_ppl() { num "$1" '"metrics":{"text":{[^}]*},"answer":{[^}]*"perplexity":\([0-9.e+-]*\),'; }
exact() {
    em=$(num "$1" '"metrics":{"text":{[^}]*},"answer":{[^}]*"exact_match":\([0-9]*\),')
    n=$(num "$1" '"metrics":{"text":{[^}]*},"answer":{"records":\([0-9]*\),')
    echo "$em/$n"
}
meth() { echo "${1%@*}"; }
bud() { echo "${1#*@}"; }
# MODE at the variant's width, or at the first budget (paper.mk's ref)
ref() {
    b=$(bud "$1")
    for x in $budgets; do [ "$x" = "$b" ] && { echo "mode@$b"; return; }; done
    set -- $budgets
    echo "mode@$1"
}
label() {
    case $(meth "$1") in
    uniform) echo "uniform GPTQ $(bud "$1")" ;;
    mcmoe) echo "MC-MoE" ;;
    mode) echo "**MODE**" ;;
    rank-all) echo "(a) frequency of all tokens" ;;
    rank-text-vision) echo "(b) ½ text + ½ all image tokens" ;;
    rank-text-key) echo "(c) ½ text + ½ key image tokens" ;;
    rank-text-redundant) echo "(d) ½ text + ½ redundant image tokens" ;;
    freq-total) echo "freq-total: all-token frequency × δ_A" ;;
    freq-text-vision) echo "+ text-vision: (½ f_T + ½ f_V) × δ_A" ;;
    freq-text-key) echo "+ denoise: (½ f_T + ½ f_key) × δ_A" ;;
    *) echo "$1" ;;
    esac
}
# "diff [lo, hi]" of group g (text | answer) of a --compare report, * when the interval excludes 0
delta() {
    f=${3:-$out/all/cmp-$1.json}
    [ -f "$f" ] || { echo "—"; return; }
    tr -d ' \n' <"$f" | sed -n "s/.*\"$2\":{[^}]*\"difference\":\([^,]*\),\"ci95\":\[\([^],]*\),\([^]]*\)\],\"excludes_zero\":\([a-z]*\).*/\1 \2 \3 \4/p" |
        awk '{ printf "%+.3f [%+.3f, %+.3f]%s", $1, $2, $3, $4 == "true" ? " *" : "" }'
}
# min-max over the thirds of a perplexity (text_ppl | cap_ppl), and in how many MODE's was lower
thirds() {
    [ -n "$sets" ] || { echo "not run"; return; }
    v=$1 get=$2 r=$(ref "$1")
    vals="" lower=0 n=0
    for s in $sets; do
        n=$((n + 1))
        x=$($get "$out/$s/eval-$v.json")
        vals="$vals $x"
        if [ "$(meth "$v")" != mode ]; then
            y=$($get "$out/$s/eval-$r.json")
            lower=$(awk -v x="$x" -v y="$y" -v l="$lower" 'BEGIN { print l + (y < x) }')
        fi
    done
    echo "$vals" | awk -v m="$(meth "$v")" -v l="$lower" -v n="$n" '{
        lo = hi = $1; for (i = 2; i <= NF; i++) { if ($i < lo) lo = $i; if ($i > hi) hi = $i }
        printf "%.3f–%.3f", lo, hi; if (m != "mode") printf " (%d/%d)", l, n }'
}
mb() { awk -v b="${1:-0}" 'BEGIN { printf "%.3f", b / 1e6 }'; }
avg() { num "$out/all/alloc-$1.json" '"avg_bits":\([0-9.e+-]*\),"bytes"' | awk '{ printf "%.3f", $1 }'; }
bytes() { num "$out/all/alloc-$1.json" '"bytes":\([0-9]*\),'; }

row() {
    v=$1
    e=$out/all/eval-$v.json
    if [ "$(meth "$v")" = mode ]; then against="—"; else against="MODE $(bud "$(ref "$v")")"; fi
    printf '| %s | %s | %s | %.3f | %s | %s | %.3f | %s | %s | %s | %s |\n' "$(label "$v")" "$(avg "$v")" "$(mb "$(bytes "$v")")" \
        "$(text_ppl "$e")" "$(delta "$v" text)" "$against" "$(cap_ppl "$e")" "$(delta "$v" answer)" "$(exact "$e")" \
        "$(thirds "$v" text_ppl)" "$(thirds "$v" cap_ppl)"
}
header() {
    echo "| $1 | avg bits | experts MB | text ppl | Δ text ppl (95% CI) | against | caption ppl | Δ caption ppl (95% CI) | caption exact match | text ppl, thirds | caption ppl, thirds |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
}

# every report the tables read must be there: a missing one stops the table, no row is made up
for f in "$out/fp/eval.json" $(for v in $main $ladder; do
    echo "$out/all/alloc-$v.json"
    for s in all $sets; do echo "$out/$s/eval-$v.json"; done
    [ "$(meth "$v")" = mode ] || echo "$out/all/cmp-$v.json"
done) $(lb=$(set -- $ladder x; echo "${1#*@}"); for p in $steps; do echo "$out/all/step-${p%%:*}@$lb.json"; done); do
    [ -s "$f" ] || { echo "paper-table.sh: $f is missing (run make -f pipelines/paper.mk)" >&2; exit 1; }
done

fp=$out/fp/eval.json
any=$(set -- $main; echo "$1")
echo "### Main table"
echo
header method
printf '| full precision | 16 | %s | %.3f | — | — | %.3f | — | %s | — | — |\n' "$(mb "$(num "$out/all/alloc-$any.json" '"bytes_unquantized":\([0-9]*\),')")" \
    "$(text_ppl "$fp")" "$(cap_ppl "$fp")" "$(exact "$fp")"
for v in $main; do row "$v"; done
echo
echo "### Ablation ladder"
echo
header step
for v in $ladder; do row "$v"; done
if [ -n "$steps" ]; then
    lb=$(set -- $ladder; echo "${1#*@}")
    echo
    echo "### Each step of the ladder against the one before it"
    echo
    echo "| step | against | Δ text ppl (95% CI) | Δ caption ppl (95% CI) |"
    echo "|---|---|---|---|"
    for p in $steps; do
        a=${p%%:*}@$lb b=${p#*:}@$lb
        printf '| %s | %s | %s | %s |\n' "$(label "$a")" "$(label "$b")" "$(delta "$a" text "$out/all/step-$a.json")" \
            "$(delta "$a" answer "$out/all/step-$a.json")"
    done
fi
echo
echo "Δ: the variant's perplexity minus MODE's (the row named under \"against\"; in the last table, the"
echo "step's minus the previous step's), all calibrated on the whole calibration set; in brackets the"
echo "paired bootstrap 95% interval over the evaluation records ($resamples resamples, seed $seed,"
echo "mode-eval --compare); * marks an interval that excludes zero."
if [ -n "$sets" ]; then
    echo "Thirds: the same variant calibrated on each disjoint third of the calibration set, min–max of"
    echo "the perplexities, and in parentheses in how many of the thirds MODE's was lower."
else
    echo "Thirds: not run (THIRDS= was given)."
fi
