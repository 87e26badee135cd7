#!/bin/sh
# tests/bench/sensitivity.sh — wall time of mode-sensitivity on emoji-vl's calibration set: the kl
# sweep over the first 64 samples and the layer sweep over all 176 (RTN, widths 2,3,4, text and
# vision). Prints a table. Run from the repository root after make.
set -eu
E=tests/fixtures/emoji-vl
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
bin/mode-tokenize -m $E/model -o "$t/calib.ms" $E/calib/data.jsonl
printf '%-8s %8s %8s %10s\n' metric samples tokens seconds
for run in "kl 64" "layer 176"; do
    set -- $run
    bin/mode-sensitivity -m $E/model --metric "$1" --samples "$2" -o "$t/s.ms" "$t/calib.ms"
    bin/mode-cat "$t/s.ms" | tail -n 1 | sed 's/.*"seconds":\([0-9.]*\),"tokens":\([0-9]*\).*/\1 \2/' | {
        read -r s n
        printf '%-8s %8s %8s %10.1f\n' "$1" "$2" "$n" "$s"
    }
done
