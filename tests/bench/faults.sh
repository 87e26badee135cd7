#!/bin/sh
# tests/bench/faults.sh — page faults and time of the heavy filters at two calibration sizes
# (issue 21: page faults and system time should grow linearly with the tokens). Each filter runs
# on the first A and the first B records of emoji-vl's calibration set (tokenized with
# mode-tokenize) under /usr/bin/time; the table gives minor faults (%R), system, user and wall
# seconds, and the ratio B/A of each beside the ratio of the tokens (linear: the two agree; the
# faults also carry a constant part: the mapped model and libraries).
#
# Run from the repository root after make. Environment: SIZES (default "44 88"), THREADS (BLAS
# threads, default 1), KEEP=DIR keeps every output there (to compare two builds with cmp).
# Needs /usr/bin/time (Debian package time). Timings on a shared machine are noisy; faults are not.
set -eu
E=tests/fixtures/emoji-vl
SIZES=${SIZES:-44 88}
THREADS=${THREADS:-1}
[ -x /usr/bin/time ] || { echo "faults.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 69; }
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
out=${KEEP:-$t/out}
mkdir -p "$out"
M=$E/model
bin/mode-ilp --method uniform --avg-bits 4 -m $M -o "$t/u4.ms"
for n in $SIZES; do
    head -n "$n" $E/calib/data.jsonl >"$t/c$n.jsonl"
    bin/mode-tokenize -m $M --root $E/calib -o "$t/c$n.ms" "$t/c$n.jsonl"
done

# run NAME N CMD...: CMD under /usr/bin/time, one line "NAME N tokens faults sys user wall" to $t/rows
run()
{
    name=$1 n=$2
    shift 2
    tok=$(bin/mode-cat "$t/c$n.ms" | tail -n 1 | sed 's/.*"tokens":\([0-9]*\).*/\1/')
    /usr/bin/time -o "$t/time" -f '%R %S %U %e' "$@" 2>"$t/err" >/dev/null || {
        cat "$t/err" >&2
        echo "faults.sh: $name on $n records failed" >&2
        exit 70
    }
    echo "$name $n $tok $(cat "$t/time")" >>"$t/rows"
}

: >"$t/rows"
for n in $SIZES; do
    c=$t/c$n.ms
    run route-trace "$n" bin/mode-route-trace --threads "$THREADS" -m $M -o "$out/route-trace.$n.ms" "$c"
    run sens-layer "$n" bin/mode-sensitivity --threads "$THREADS" -m $M --metric layer -o "$out/sens-layer.$n.ms" "$c"
    run sens-kl-L0 "$n" bin/mode-sensitivity --threads "$THREADS" -m $M --metric kl --layers 0-0 -o "$out/sens-kl.$n.ms" "$c"
    rm -rf "$out/pack.$n"
    run pack "$n" bin/mode-pack --threads "$THREADS" -m $M -a "$t/u4.ms" -o "$out/pack.$n" "$c"
    run eval "$n" bin/mode-eval --threads "$THREADS" -m $M -o "$out/eval.$n.json" "$c"
done

set -- $SIZES
echo "faults.sh: $(date +%F) $(uname -m), $(nproc) cores, THREADS=$THREADS, sizes $1 and $2 records"
sort -s -k1,1 "$t/rows" | awk -v a="$1" -v b="$2" '
function r(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "-" }
BEGIN { printf "%-12s %7s %6s %9s %7s %7s %7s\n", "filter", "records", "tokens", "minflt", "sys s", "user s", "wall s" }
{
    printf "%-12s %7d %6d %9d %7.2f %7.2f %7.2f\n", $1, $2, $3, $4, $5, $6, $7
    if ($2 == a) { tok = $3; flt = $4; sys = $5; usr = $6; wal = $7 }
    if ($2 == b) printf "%-12s %7s %6s %9s %7s %7s %7s\n", "  ratio", b "/" a, r($3, tok), r($4, flt), r($5, sys), r($6, usr), r($7, wal)
}'
