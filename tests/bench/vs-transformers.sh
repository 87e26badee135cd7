#!/bin/sh
# vs-transformers.sh — mode against transformers on the same work, and mode's scaling with threads
# (issue 21). A benchmark that prints a table; never a test.
#
#   tests/bench/vs-transformers.sh [--threads "1 2"] [--repeat N] [--venv DIR]
#
# The work: emoji-vl's evaluation set (tests/fixtures/emoji-vl/eval), split into its text records
# and its image records, tokenized once by mode-tokenize; on each, at each thread count:
#   eval   mode-eval, and transformers' forward with the loss of the scored tokens
#   route  mode-route-trace, and transformers' decoder with router logits (no lm_head)
# transformers reads the same token ids and resized pixels from mode-tokenize's stream
# (vs_transformers.py), float32, one record per forward. Times: CPU seconds (user + system) and wall
# seconds of the work, the median of --repeat runs for mode (transformers: one run after a warm-up
# forward, its process time around the loop, model loading excluded; mode's include loading the
# model, ~0.05 s here). transformers runs one record per forward, as it is used; mode runs its
# batches (--batch-tokens 16384): part of the difference is that. Also the sgemm rate and the
# full-width layer's rate at one thread (build/bench/bench_layer, when built).
#
# Python: torch, transformers, msgpack, numpy and pillow in the venv --venv (default
# $MODE_BENCH_VENV, else build/venv-bench, made with pip from PyPI when missing). Without it the
# mode side alone is printed, with a line saying why.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
THREADS="1 2"
REPEAT=3
VENV=${MODE_BENCH_VENV:-$ROOT/build/venv-bench}
while [ $# -gt 0 ]; do
    case $1 in
    --threads) THREADS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    *) echo "usage: $0 [--threads \"1 2\"] [--repeat N] [--venv DIR]" >&2; exit 64 ;;
    esac
done
BIN=$ROOT/bin
MODEL=$ROOT/tests/fixtures/emoji-vl/model
EVAL=$ROOT/tests/fixtures/emoji-vl/eval
W=$ROOT/build/bench/vs-transformers
mkdir -p "$W"
for p in mode-tokenize mode-eval mode-route-trace mode-cat; do
    [ -x "$BIN/$p" ] || { echo "$0: $BIN/$p is missing: run make first" >&2; exit 69; }
done
export MODE_PROGRESS=off

# the two sets, tokenized once
grep -v '"messages"' "$EVAL/data.jsonl" > "$W/text.jsonl"
grep '"messages"' "$EVAL/data.jsonl" > "$W/image.jsonl"
for s in text image; do
    "$BIN/mode-tokenize" -m "$MODEL" --root "$EVAL" -o "$W/$s.ms" "$W/$s.jsonl"
done

# python
PY=
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, transformers, msgpack, numpy, PIL' 2>/dev/null; then
    PY=$VENV/bin/python
elif [ ! -e "$VENV" ]; then
    echo "making $VENV (torch CPU, transformers, msgpack) ..." >&2
    if python3 -m venv "$VENV" >"$W/venv.log" 2>&1 &&
        "$VENV/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu torch >>"$W/venv.log" 2>&1 &&
        "$VENV/bin/pip" install -q transformers msgpack numpy pillow >>"$W/venv.log" 2>&1; then
        PY=$VENV/bin/python
    else
        echo "no transformers side: the venv could not be made (see $W/venv.log)" >&2
    fi
else
    echo "no transformers side: $VENV lacks torch, transformers, msgpack, numpy or pillow" >&2
fi

# CPU seconds and wall seconds of one command: "cpu wall" (median of REPEAT by cpu)
timed() {
    i=0
    : >"$W/times"
    while [ $i -lt "$REPEAT" ]; do
        /usr/bin/env time -f '%U %S %e' -o "$W/t1" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 70; }
        awk '{printf "%.3f %.3f\n", $1 + $2, $3}' "$W/t1" >>"$W/times"
        i=$((i + 1))
    done
    sort -n "$W/times" | awk -v n="$REPEAT" 'NR == int((n + 1) / 2)'
}
command -v time >/dev/null 2>&1 || [ -x /usr/bin/time ] || { echo "$0: GNU time is missing (apt-get install time)" >&2; exit 69; }

# the sgemm rate of this machine in the same run (bench_layer's CPU line, when built: make bench)
sgemm=
[ -x "$ROOT/build/bench/bench_layer" ] && sgemm=$("$ROOT/build/bench/bench_layer" --threads 1 1 2>/dev/null | grep '^cpu: layer [0-9]' || true)
{
    echo "# vs-transformers: $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    [ -n "$sgemm" ] && echo "# $sgemm"
    printf '%-6s %-6s %7s %7s %9s %9s %9s %9s %10s\n' work set threads tokens mode_cpu mode_wall tf_cpu tf_wall mode/tf_cpu
} | tee "$W/table.txt"
for T in $THREADS; do
    for s in text image; do
        tokens=$("$BIN/mode-cat" "$W/$s.ms" | tail -n 1 | sed -n 's/.*"tokens":\([0-9]*\).*/\1/p')
        for work in eval route; do
            if [ $work = eval ]; then
                m=$(timed "$BIN/mode-eval" --threads "$T" -m "$MODEL" -o /dev/null "$W/$s.ms")
            else
                m=$(timed "$BIN/mode-route-trace" --threads "$T" -m "$MODEL" -o /dev/null "$W/$s.ms")
            fi
            tcpu=- twall=- ratio=-
            if [ -n "$PY" ]; then
                j=$("$PY" "$ROOT/tests/bench/vs_transformers.py" "$MODEL" "$W/$s.ms" $work "$T" 2>>"$W/python.log" | tail -1)
                tcpu=$(printf '%s' "$j" | sed 's/.*"cpu_s": \([0-9.]*\).*/\1/')
                twall=$(printf '%s' "$j" | sed 's/.*"wall_s": \([0-9.]*\).*/\1/')
                echo "$j" >>"$W/transformers.jsonl"
                ratio=$(echo "$m $tcpu" | awk '{printf "%.2f", $1 / $3}')
            fi
            printf '%-6s %-6s %7s %7s %9s %9s %9s %9s %10s\n' $work $s "$T" "${tokens:-?}" $m "$tcpu" "$twall" "$ratio" | tee -a "$W/table.txt"
        done
    done
done
echo "table: $W/table.txt" >&2
