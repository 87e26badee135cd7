#!/bin/sh
# pipelines/paper-table.sh on a hand-made experiment directory (the files paper.mk would leave:
# mode-eval reports, mode-ilp summaries, mode-eval --compare reports): every number of a row comes
# from its file, the interval is marked when it excludes zero and only then, the thirds give
# min-max and the count of thirds where MODE was lower, the ladder's step table its own files.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
O=$T/paper
mkdir -p "$O/fp" "$O/all" "$O/third1" "$O/third2" "$O/third3"
# eval V TEXT_PPL CAPTION_PPL EXACT FILE
ev() {
    printf '{"model":{"name":"m"},"samples_stream":"e.ms","metrics":{"text":{"records":600,"tokens":17518,"nll":1.5,"perplexity":%s},"answer":{"records":329,"tokens":3993,"nll":2.5,"perplexity":%s,"exact_match":%s,"exact_match_rate":0.1},"by_modality":{}},"seconds":1.0}\n' \
        "$1" "$2" "$3" >"$4"
}
al() {
    printf '{\n  "method": "x",\n  "avg_bits": %s,\n  "bytes": %s,\n  "bytes_unquantized": 4718592,\n  "histogram": {}\n}\n' "$1" "$2" >"$3"
}
cmp_json() { # text diff lo hi excl, answer diff lo hi excl
    printf '{"a":"a","b":"b","resamples":100,"seed":1,"text":{"records":600,"tokens":17518,"perplexity_a":1.0,"perplexity_b":1.0,"difference":%s,"ci95":[%s,%s],"excludes_zero":%s,"a_lower_fraction":0.0},"answer":{"records":329,"tokens":3993,"perplexity_a":1.0,"perplexity_b":1.0,"difference":%s,"ci95":[%s,%s],"excludes_zero":%s,"a_lower_fraction":0.5,"exact_match_rate_a":0.1,"exact_match_rate_b":0.1,"exact_match_difference":0.0,"exact_match_ci95":[0.0,0.0]}}\n' \
        "$@" >"$T/cmp"
}
ev 46.383 5.310 11 "$O/fp/eval.json"
ev 51.465 5.433 11 "$O/all/eval-mcmoe@2.5.json"
ev 49.151 5.459 13 "$O/all/eval-mode@2.5.json"
ev 50.0 5.5 9 "$O/all/eval-rank-all@2.5.json"
al 2.5 875000 "$O/all/alloc-mcmoe@2.5.json"
al 2.5 875000 "$O/all/alloc-mode@2.5.json"
al 2.5 875000 "$O/all/alloc-rank-all@2.5.json"
cmp_json 2.313 1.914 2.713 true -0.026 -0.102 0.056 false
cp "$T/cmp" "$O/all/cmp-mcmoe@2.5.json"
cmp_json 0.849 0.1 1.6 true 0.041 -0.01 0.09 false
cp "$T/cmp" "$O/all/cmp-rank-all@2.5.json"
cmp_json -0.849 -1.6 -0.1 true -0.041 -0.09 0.01 false
cp "$T/cmp" "$O/all/step-mode@2.5.json"
# thirds: MC-MoE 52, 53, 51 against MODE 51, 54, 50 -> MODE lower in 2 of 3
i=0
for s in third1 third2 third3; do
    i=$((i + 1))
    mc=$(echo "52 53 51" | cut -d' ' -f$i) mo=$(echo "51 54 50" | cut -d' ' -f$i)
    ev "$mc" 5.4 10 "$O/$s/eval-mcmoe@2.5.json"
    ev "$mo" 5.45 10 "$O/$s/eval-mode@2.5.json"
    ev 55 5.6 10 "$O/$s/eval-rank-all@2.5.json"
done

run "$MODE_ROOT/pipelines/paper-table.sh" "$O" 'mcmoe@2.5 mode@2.5' 'rank-all@2.5 mode@2.5' '2.5' 100 1 'mode:rank-all'
is "$rc" 0 "the tables are written"
has "$T/out" "| full precision | 16 | 4.719 | 46.383 | — | — | 5.310 | — | 11/329 | — | — |" "the full-precision row"
has "$T/out" "| MC-MoE | 2.500 | 0.875 | 51.465 | +2.313 [+1.914, +2.713] * | MODE 2.5 | 5.433 | -0.026 [-0.102, +0.056] | 11/329 | 51.000–53.000 (2/3) | 5.400–5.400 (0/3) |" \
    "MC-MoE's row: its numbers, a starred text interval, an unstarred caption one, the thirds"
has "$T/out" "| **MODE** | 2.500 | 0.875 | 49.151 | — | — | 5.459 | — | 13/329 | 50.000–54.000 | 5.450–5.450 |" "MODE's row, compared with nothing"
has "$T/out" "| (a) frequency of all tokens | 2.500 | 0.875 | 50.000 | +0.849 [+0.100, +1.600] * | MODE 2.5 |" "a ladder row"
has "$T/out" "| **MODE** | (a) frequency of all tokens | -0.849 [-1.600, -0.100] * | -0.041 [-0.090, +0.010] |" "the step table"
has "$T/out" "(100 resamples, seed 1," "resamples and seed stated"
run "$MODE_ROOT/pipelines/paper-table.sh" "$O" 'mcmoe@2.5 mode@2.5' '' '2.5' 100 1 '' ''
has "$T/out" "| 11/329 | not run | not run |" "THIRDS empty: the spread is said not to have been run"
rm -r "$O/third3"
run "$MODE_ROOT/pipelines/paper-table.sh" "$O" 'mcmoe@2.5 mode@2.5' '' '2.5' 100 1 '' 'third1 third2'
has "$T/out" "| 52.000–53.000 (1/2) |" "two thirds: the range and count over those two"
rm "$O/third2/eval-mode@2.5.json"
run "$MODE_ROOT/pipelines/paper-table.sh" "$O" 'mcmoe@2.5 mode@2.5' '' '2.5' 100 1 '' 'third1 third2'
ok=0; [ "$rc" -ne 0 ] && ok=1
is "$ok" 1 "a missing report stops the table (no row made up)"
has "$T/err" "third2/eval-mode@2.5.json is missing" "... naming it"
done_testing
